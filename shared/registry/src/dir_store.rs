//! The registry in a directory: EFS in AWS, a local folder for `modelctl`, or a read-only folder
//! baked into a container image. Small files are replaced atomically ([`atomic`]), versions
//! appear by renaming a staged directory, and writers serialise on an advisory lock ([`lock`]).
//! Every write is checked to land inside the root: a symlink planted in the registry cannot
//! send one elsewhere.

use std::fs;
use std::io;
use std::path::{Path, PathBuf};

use super::atomic;
use super::lock::ModelLock;
use super::store::{LocalCopy, LockGuard, Store};
use modelpipe_core::digest::Digest;

#[derive(Debug, Clone)]
pub struct DirStore {
    root: PathBuf,
}

impl DirStore {
    pub fn open(root: PathBuf) -> io::Result<Self> {
        fs::create_dir_all(&root)?;
        // Resolved once: the root itself may be a symlink (a mount point, say); nothing under it may.
        let root = root.canonicalize()?;
        Ok(Self { root })
    }

    fn path(&self, key: &str) -> PathBuf {
        self.root.join(key)
    }

    /// The path of `key` for writing: refused if a symlink under the root would take the write
    /// outside it, or if the file itself is a symlink.
    fn write_path(&self, key: &str) -> io::Result<PathBuf> {
        let path = self.path(key);
        let escapes = || {
            io::Error::new(
                io::ErrorKind::PermissionDenied,
                format!(
                    "{} leads outside the registry through a symlink",
                    path.display()
                ),
            )
        };
        if fs::symlink_metadata(&path).is_ok_and(|m| m.file_type().is_symlink()) {
            return Err(escapes());
        }
        let existing = path
            .ancestors()
            .skip(1)
            .find(|p| p.exists())
            .unwrap_or(&self.root);
        if !existing.canonicalize()?.starts_with(&self.root) {
            return Err(escapes());
        }
        Ok(path)
    }
}

impl Store for DirStore {
    fn describe(&self, key: &str) -> String {
        self.path(key).display().to_string()
    }

    fn read(&self, key: &str) -> io::Result<Option<Vec<u8>>> {
        match fs::read(self.path(key)) {
            Ok(bytes) => Ok(Some(bytes)),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(e),
        }
    }

    fn list(&self, dir: &str) -> io::Result<Vec<String>> {
        list_dir(&self.path(dir))
    }

    fn list_files(&self, dir: &str) -> io::Result<Vec<String>> {
        let mut files = Vec::new();
        let mut pending = vec![String::new()];
        while let Some(relative) = pending.pop() {
            let path = self.path(dir).join(&relative);
            for name in list_dir(&path)? {
                let is_dir = path.join(&name).is_dir();
                let child = if relative.is_empty() {
                    name
                } else {
                    format!("{relative}/{name}")
                };
                if is_dir {
                    pending.push(child);
                } else {
                    files.push(child);
                }
            }
        }
        Ok(files)
    }

    fn write(&self, key: &str, bytes: &[u8]) -> io::Result<()> {
        atomic::write_file(&self.write_path(key)?, bytes)
    }

    fn append_line(&self, key: &str, line: &str) -> io::Result<()> {
        atomic::append_line(&self.write_path(key)?, line)
    }

    fn remove(&self, key: &str) -> io::Result<()> {
        let path = self.write_path(key)?;
        match fs::remove_file(&path) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => return Err(e),
        }
        // Fails while anything is left in it, as it should.
        if let Some(parent) = path.parent()
            && parent != self.root
        {
            let _ = fs::remove_dir(parent);
        }
        Ok(())
    }

    fn lock(&self, model: &str) -> io::Result<LockGuard> {
        self.write_path(&format!("{model}/.lock"))?;
        Ok(Box::new(ModelLock::acquire(&self.path(model))?))
    }

    fn staging_dir(&self, model: &str) -> io::Result<PathBuf> {
        self.write_path(&format!("{model}/staging/upload"))?;
        Ok(self.path(model).join("staging"))
    }

    fn commit_version(&self, staged: &Path, version_dir: &str, _sha256: &str) -> io::Result<bool> {
        let target = self.write_path(version_dir)?;
        let parent = target.parent().expect("a version directory has a parent");
        fs::create_dir_all(parent)?;
        match fs::rename(staged, &target) {
            Ok(()) => {
                atomic::sync_dir(parent)?;
                Ok(true)
            }
            // Taken despite the lock (a writer that ignores it).
            Err(e) if target.exists() && e.kind() != io::ErrorKind::NotFound => Ok(false),
            Err(e) => Err(e),
        }
    }

    fn digest(&self, key: &str) -> io::Result<Digest> {
        Digest::of_file(&self.path(key))
    }

    fn local_copy(&self, key: &str, _expected: &Digest) -> io::Result<LocalCopy> {
        Ok(LocalCopy {
            path: self.path(key),
            verified: false,
        })
    }
}

/// Names in `dir`, or none if it does not exist.
fn list_dir(dir: &Path) -> io::Result<Vec<String>> {
    match fs::read_dir(dir) {
        Ok(entries) => Ok(entries
            .filter_map(|e| e.ok()?.file_name().into_string().ok())
            .collect()),
        Err(e)
            if matches!(
                e.kind(),
                io::ErrorKind::NotFound | io::ErrorKind::NotADirectory
            ) =>
        {
            Ok(Vec::new())
        }
        Err(e) => Err(e),
    }
}

/// Removes `model`'s staging directory and lock file: what only a writer uses.
pub(crate) fn remove_writer_files(root: &Path, model: &str) -> io::Result<()> {
    let dir = root.join(model);
    match fs::remove_dir_all(dir.join("staging")) {
        Err(e) if e.kind() != io::ErrorKind::NotFound => return Err(e),
        _ => {}
    }
    match fs::remove_file(dir.join(".lock")) {
        Err(e) if e.kind() != io::ErrorKind::NotFound => Err(e),
        _ => Ok(()),
    }
}
