//! The local copies of an S3 registry's model files (Lambda's `/tmp`, 512 MB to 10 GB): named
//! by SHA-256, verified when downloaded and again when reused, least recently used removed first
//! past the budget. Staged uploads live beside them, on the same filesystem.

use std::fs;
use std::io;
use std::path::{Path, PathBuf};
use std::time::SystemTime;

use modelpipe_core::digest::Digest;

/// `MODEL_FILE_CACHE_BYTES` and where the files go.
#[derive(Debug, Clone)]
pub struct FileCacheConfig {
    pub dir: PathBuf,
    /// Unset: 80 % of the filesystem holding `dir`.
    pub bytes: Option<u64>,
}

impl Default for FileCacheConfig {
    fn default() -> Self {
        Self {
            dir: std::env::temp_dir().join("modelpipe"),
            bytes: None,
        }
    }
}

impl FileCacheConfig {
    pub fn budget(&self) -> u64 {
        self.bytes
            .or_else(|| filesystem_size(&self.dir).map(|size| size / 5 * 4))
            .unwrap_or(512 * 1024 * 1024)
    }
}

/// Total size of the filesystem holding `dir` (or its nearest existing parent).
fn filesystem_size(dir: &Path) -> Option<u64> {
    let existing = dir.ancestors().find(|p| p.exists())?;
    let path = std::ffi::CString::new(existing.as_os_str().as_encoded_bytes()).ok()?;
    let mut stat = std::mem::MaybeUninit::<libc::statvfs>::uninit();
    // SAFETY: `path` is NUL-terminated and `stat` is written by statvfs before being read.
    let stat = unsafe {
        if libc::statvfs(path.as_ptr(), stat.as_mut_ptr()) != 0 {
            return None;
        }
        stat.assume_init()
    };
    Some(stat.f_blocks as u64 * stat.f_frsize as u64)
}

#[derive(Debug)]
pub struct FileCache {
    root: PathBuf,
    budget: u64,
}

impl FileCache {
    pub fn new(root: PathBuf, budget: u64) -> io::Result<Self> {
        fs::create_dir_all(root.join("models"))?;
        Ok(Self { root, budget })
    }

    pub fn staging_dir(&self, model: &str) -> PathBuf {
        self.root.join("staging").join(model)
    }

    pub fn path_for(&self, sha256: &str) -> PathBuf {
        self.root.join("models").join(format!("{sha256}.onnx"))
    }

    /// Whether the copy at `path` exists and still has the expected bytes; a copy that does not
    /// is removed.
    pub fn reuse(&self, path: &Path, expected: &Digest) -> io::Result<bool> {
        match Digest::of_file(path) {
            Ok(actual) if &actual == expected => {
                // Marks it recently used.
                fs::File::open(path)?.set_modified(SystemTime::now())?;
                Ok(true)
            }
            Ok(_) => {
                fs::remove_file(path)?;
                Ok(false)
            }
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(false),
            Err(e) => Err(e),
        }
    }

    /// Removes the least recently used copies until `incoming` more bytes fit in the budget
    /// (all of them, if it alone is larger).
    pub fn make_room(&self, incoming: u64) -> io::Result<()> {
        let mut copies: Vec<(SystemTime, u64, PathBuf)> = fs::read_dir(self.root.join("models"))?
            .filter_map(|entry| {
                let entry = entry.ok()?;
                let meta = entry.metadata().ok()?;
                Some((meta.modified().ok()?, meta.len(), entry.path()))
            })
            .collect();
        copies.sort();
        let mut total: u64 = copies.iter().map(|(_, size, _)| size).sum();
        for (_, size, path) in copies {
            if total + incoming <= self.budget {
                break;
            }
            // A model already loaded keeps working: tract holds its own copy of the weights.
            fs::remove_file(&path)?;
            total -= size;
        }
        Ok(())
    }

    pub fn temp_file(&self) -> io::Result<tempfile::NamedTempFile> {
        tempfile::Builder::new()
            .prefix(".download-")
            .tempfile_in(self.root.join("models"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn make_room_removes_least_recently_used_copies_first() {
        let dir = tempfile::tempdir().unwrap();
        let cache = FileCache::new(dir.path().to_path_buf(), 10).unwrap();
        let old = cache.path_for("aa");
        let new = cache.path_for("bb");
        fs::write(&old, b"12345").unwrap();
        fs::write(&new, b"12345").unwrap();
        fs::File::open(&old)
            .unwrap()
            .set_modified(SystemTime::UNIX_EPOCH)
            .unwrap();
        cache.make_room(5).unwrap();
        assert!(!old.exists() && new.exists());
        cache.make_room(100).unwrap();
        assert!(!new.exists());
    }

    #[test]
    fn a_copy_that_no_longer_matches_is_not_reused() {
        let dir = tempfile::tempdir().unwrap();
        let cache = FileCache::new(dir.path().to_path_buf(), 100).unwrap();
        let digest = Digest::of_bytes(b"model");
        let path = cache.path_for(&digest.sha256);
        fs::write(&path, b"model").unwrap();
        assert!(cache.reuse(&path, &digest).unwrap());
        fs::write(&path, b"mode!").unwrap();
        assert!(!cache.reuse(&path, &digest).unwrap());
        assert!(!path.exists());
    }
}
