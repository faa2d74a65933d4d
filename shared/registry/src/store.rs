//! Where the registry's files live, as the few operations the registry needs: a directory
//! ([`super::dir_store::DirStore`]: EFS, a local folder, or one baked into an image) or an S3
//! prefix ([`super::s3_store::S3Store`]). Keys are relative, `/`-separated
//! (`iris/aliases/live.json`); the layout and every rule about versions and aliases stay in
//! [`super::Registry`], which is the same over both.

use std::any::Any;
use std::fmt;
use std::io;
use std::path::{Path, PathBuf};
use std::str::FromStr;

use modelpipe_core::digest::Digest;

/// A model file available on the local filesystem, for tract to load.
#[derive(Debug, Clone)]
pub struct LocalCopy {
    pub path: PathBuf,
    /// The store checked its SHA-256 against the manifest while producing it.
    pub verified: bool,
}

/// Held while a model's writes are serialised; dropping it releases the lock.
pub type LockGuard = Box<dyn Any + Send>;

pub trait Store: Send + Sync + fmt::Debug {
    /// `key` as a user would find it (`/mnt/models/iris/…`, `s3://bucket/prefix/iris/…`).
    fn describe(&self, key: &str) -> String;

    /// The whole object, or `None` if it does not exist.
    fn read(&self, key: &str) -> io::Result<Option<Vec<u8>>>;

    /// Names directly under `dir` (files and sub-directories); empty if there are none.
    fn list(&self, dir: &str) -> io::Result<Vec<String>>;

    /// Paths of every file under `dir`, relative to it.
    fn list_files(&self, dir: &str) -> io::Result<Vec<String>>;

    /// Replaces `key` with `bytes` so that readers see the old or the new content, never a mix.
    fn write(&self, key: &str, bytes: &[u8]) -> io::Result<()>;

    /// Appends one line to a log, ending a torn last line first.
    fn append_line(&self, key: &str, line: &str) -> io::Result<()>;

    /// Removes the file at `key` if there is one (and, in a directory, its directory once
    /// empty).
    fn remove(&self, key: &str) -> io::Result<()>;

    /// Takes `model`'s write lock, waiting for it (blocking). A crashed holder never wedges it.
    fn lock(&self, model: &str) -> io::Result<LockGuard>;

    /// A local directory where uploads of `model` are staged while they are checked.
    fn staging_dir(&self, model: &str) -> io::Result<PathBuf>;

    /// Makes the staged directory (holding `model.onnx` and `manifest.json`) the version
    /// directory `version_dir`, whole or not at all. `Ok(false)`: that number is taken.
    fn commit_version(&self, staged: &Path, version_dir: &str, sha256: &str) -> io::Result<bool>;

    /// SHA-256 (hex) and size of the file at `key`.
    fn digest(&self, key: &str) -> io::Result<Digest>;

    /// The file at `key` on local disk; `expected` is what the manifest recorded for it.
    fn local_copy(&self, key: &str, expected: &Digest) -> io::Result<LocalCopy>;
}

/// `MODEL_ROOT`: a directory, or `s3://bucket/prefix`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Location {
    Dir(PathBuf),
    S3 { bucket: String, prefix: String },
}

impl FromStr for Location {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, String> {
        let Some(rest) = text.strip_prefix("s3://") else {
            if text.is_empty() {
                return Err("an empty path".into());
            }
            return Ok(Self::Dir(PathBuf::from(text)));
        };
        let (bucket, prefix) = rest.split_once('/').unwrap_or((rest, ""));
        if bucket.is_empty() {
            return Err("no bucket name after s3://".into());
        }
        let prefix = prefix.trim_matches('/');
        Ok(Self::S3 {
            bucket: bucket.to_string(),
            prefix: if prefix.is_empty() {
                String::new()
            } else {
                format!("{prefix}/")
            },
        })
    }
}

impl fmt::Display for Location {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Dir(path) => write!(f, "{}", path.display()),
            Self::S3 { bucket, prefix } => {
                write!(f, "s3://{bucket}/{}", prefix.trim_end_matches('/'))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn locations_parse_directories_and_s3_prefixes() {
        assert_eq!(
            "/mnt/models".parse::<Location>().unwrap(),
            Location::Dir("/mnt/models".into())
        );
        assert_eq!(
            "s3://bucket/a/b/".parse::<Location>().unwrap(),
            Location::S3 {
                bucket: "bucket".into(),
                prefix: "a/b/".into()
            }
        );
        let bare = "s3://bucket".parse::<Location>().unwrap();
        assert_eq!(
            bare,
            Location::S3 {
                bucket: "bucket".into(),
                prefix: String::new()
            }
        );
        assert_eq!(bare.to_string(), "s3://bucket/");
        assert!("s3:///x".parse::<Location>().is_err());
    }
}
