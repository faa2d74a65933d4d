//! One writer per model at a time: an advisory lock on `<model>/.lock`, held for the few
//! milliseconds a commit or an alias move takes (never while downloading or validating).
//! The kernel (or the NFS server, on EFS) drops it if the holder dies, so a crash cannot wedge it.

use std::fs::{File, OpenOptions};
use std::io;
use std::path::Path;

#[derive(Debug)]
pub struct ModelLock {
    file: File,
}

impl ModelLock {
    /// Blocks until the lock on `model_dir` is ours.
    pub fn acquire(model_dir: &Path) -> io::Result<Self> {
        std::fs::create_dir_all(model_dir)?;
        let file = OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(model_dir.join(".lock"))?;
        file.lock()?;
        Ok(Self { file })
    }
}

impl Drop for ModelLock {
    fn drop(&mut self) {
        let _ = self.file.unlock();
    }
}
