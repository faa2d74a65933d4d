//! The model registry: a directory (the EFS mount in AWS, any folder locally) laid out as
//!
//! ```text
//! <root>/<model>/versions/<N>/model.onnx      immutable once committed
//! <root>/<model>/versions/<N>/manifest.json
//! <root>/<model>/aliases/<alias>.json
//! <root>/<model>/history.jsonl                every alias move, append-only
//! <root>/<model>/rejections.jsonl             every refused upload, append-only
//! <root>/<model>/uploads/<key hash>.json      the latest event handled per S3 key
//! <root>/<model>/staging/                     uploads being checked, never read as versions
//! ```
//!
//! Reads take no lock and never see a partial file. Writes go through [`Locked`], which holds the
//! model's lock, so version numbers are allocated once and alias moves are serialised. This module
//! knows nothing of S3, tract or HTTP.

mod atomic;
mod lock;
pub mod records;

use std::collections::BTreeMap;
use std::fs;
use std::io;
use std::path::{Path, PathBuf};

use serde::de::DeserializeOwned;

pub use self::records::*;
use crate::digest::{sha256_bytes, sha256_file};
use crate::model_name::{AliasName, ModelName};
use crate::signature::Signature;
use lock::ModelLock;

#[derive(Debug, thiserror::Error)]
pub enum RegistryError {
    #[error("registry I/O on {path}: {source}")]
    Io { path: PathBuf, source: io::Error },
    #[error("registry file {path} is not valid: {message}")]
    Corrupt { path: PathBuf, message: String },
    #[error("model {model} has no version {version}")]
    NoSuchVersion { model: ModelName, version: u64 },
    #[error("model {model} v{version}: model.onnx no longer matches its manifest ({detail})")]
    Tampered {
        model: ModelName,
        version: u64,
        detail: String,
    },
}

fn io_at(path: &Path) -> impl FnOnce(io::Error) -> RegistryError + '_ {
    move |source| RegistryError::Io {
        path: path.to_path_buf(),
        source,
    }
}

pub type Result<T, E = RegistryError> = std::result::Result<T, E>;

/// The facts about a version known before it has a number.
#[derive(Debug, Clone)]
pub struct NewVersion {
    pub sha256: String,
    pub size: u64,
    pub source: Source,
    pub signature: Signature,
    pub signature_change: Option<String>,
}

/// What [`Locked::commit`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Commit {
    Created(u64),
    /// The same bytes were already version N: nothing was written.
    AlreadyPresent(u64),
}

impl Commit {
    pub fn version(self) -> u64 {
        match self {
            Self::Created(v) | Self::AlreadyPresent(v) => v,
        }
    }
}

/// An upload being written and checked: `<model>/staging/upload-XXXX/model.onnx`. Dropped
/// without being committed, it removes itself.
#[derive(Debug)]
pub struct Staging {
    dir: tempfile::TempDir,
}

impl Staging {
    pub fn model_path(&self) -> PathBuf {
        self.dir.path().join(MODEL_FILE)
    }
}

pub const MODEL_FILE: &str = "model.onnx";
const MANIFEST_FILE: &str = "manifest.json";

#[derive(Debug, Clone)]
pub struct Registry {
    root: PathBuf,
}

impl Registry {
    pub fn open(root: impl Into<PathBuf>) -> Result<Self> {
        let root = root.into();
        fs::create_dir_all(&root).map_err(io_at(&root))?;
        Ok(Self { root })
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    fn model_dir(&self, model: &ModelName) -> PathBuf {
        self.root.join(model.as_str())
    }

    fn version_dir(&self, model: &ModelName, version: u64) -> PathBuf {
        self.model_dir(model)
            .join("versions")
            .join(version.to_string())
    }

    pub fn model_file(&self, model: &ModelName, version: u64) -> PathBuf {
        self.version_dir(model, version).join(MODEL_FILE)
    }

    fn alias_path(&self, model: &ModelName, alias: &AliasName) -> PathBuf {
        self.model_dir(model)
            .join("aliases")
            .join(format!("{alias}.json"))
    }

    fn history_path(&self, model: &ModelName) -> PathBuf {
        self.model_dir(model).join("history.jsonl")
    }

    fn rejections_path(&self, model: &ModelName) -> PathBuf {
        self.model_dir(model).join("rejections.jsonl")
    }

    fn upload_path(&self, model: &ModelName, key: &str) -> PathBuf {
        let digest = sha256_bytes(key.as_bytes());
        self.model_dir(model)
            .join("uploads")
            .join(format!("{}.json", &digest[..32]))
    }

    /// Models with at least one committed version, sorted.
    pub fn models(&self) -> Result<Vec<ModelName>> {
        let mut models: Vec<ModelName> = list_dir(&self.root)?
            .into_iter()
            .filter_map(|name| name.parse().ok())
            .filter(|model| self.model_dir(model).join("versions").is_dir())
            .collect();
        models.sort();
        Ok(models)
    }

    /// Committed versions of `model`, ascending; empty if the model is unknown.
    pub fn versions(&self, model: &ModelName) -> Result<Vec<u64>> {
        let dir = self.model_dir(model).join("versions");
        let mut versions: Vec<u64> = list_dir(&dir)?
            .into_iter()
            .filter_map(|name| name.parse().ok())
            .filter(|v| self.version_dir(model, *v).join(MANIFEST_FILE).is_file())
            .collect();
        versions.sort_unstable();
        Ok(versions)
    }

    pub fn manifest(&self, model: &ModelName, version: u64) -> Result<Manifest> {
        let path = self.version_dir(model, version).join(MANIFEST_FILE);
        read_json(&path)?.ok_or_else(|| RegistryError::NoSuchVersion {
            model: model.clone(),
            version,
        })
    }

    /// The manifest of `version`, after checking that its file still has the recorded size and
    /// SHA-256 (reads the whole file).
    pub fn verified_manifest(&self, model: &ModelName, version: u64) -> Result<Manifest> {
        let manifest = self.manifest(model, version)?;
        let path = self.model_file(model, version);
        let (sha256, size) = sha256_file(&path).map_err(|e| RegistryError::Tampered {
            model: model.clone(),
            version,
            detail: format!("cannot read {}: {e}", path.display()),
        })?;
        if size != manifest.size || sha256 != manifest.sha256 {
            return Err(RegistryError::Tampered {
                model: model.clone(),
                version,
                detail: format!(
                    "{size} bytes with sha256 {}…, manifest says {} bytes with {}…",
                    &sha256[..12],
                    manifest.size,
                    &manifest.sha256[..manifest.sha256.len().min(12)]
                ),
            });
        }
        Ok(manifest)
    }

    pub fn alias(&self, model: &ModelName, alias: &AliasName) -> Result<Option<AliasRecord>> {
        read_json(&self.alias_path(model, alias))
    }

    pub fn aliases(&self, model: &ModelName) -> Result<BTreeMap<AliasName, AliasRecord>> {
        let dir = self.model_dir(model).join("aliases");
        let mut aliases = BTreeMap::new();
        for name in list_dir(&dir)? {
            let Some(alias) = name
                .strip_suffix(".json")
                .and_then(|a| a.parse::<AliasName>().ok())
            else {
                continue;
            };
            if let Some(record) = self.alias(model, &alias)? {
                aliases.insert(alias, record);
            }
        }
        Ok(aliases)
    }

    /// Every alias move, oldest first. A line torn by a crash is skipped.
    pub fn history(&self, model: &ModelName) -> Result<Vec<HistoryEntry>> {
        read_jsonl(&self.history_path(model))
    }

    pub fn rejections(&self, model: &ModelName) -> Result<Vec<Rejection>> {
        read_jsonl(&self.rejections_path(model))
    }

    pub fn upload_record(&self, model: &ModelName, key: &str) -> Result<Option<UploadRecord>> {
        read_json(&self.upload_path(model, key))
    }

    /// A new, empty staging directory for an upload of `model`, on the registry's filesystem so
    /// that committing it is a rename.
    pub fn stage(&self, model: &ModelName) -> Result<Staging> {
        let parent = self.model_dir(model).join("staging");
        fs::create_dir_all(&parent).map_err(io_at(&parent))?;
        let dir = tempfile::Builder::new()
            .prefix("upload-")
            .tempdir_in(&parent)
            .map_err(io_at(&parent))?;
        Ok(Staging { dir })
    }

    /// Removes staging directories older than `age`: what crashed ingests left behind.
    pub fn sweep_staging(&self, model: &ModelName, age: std::time::Duration) -> Result<usize> {
        let parent = self.model_dir(model).join("staging");
        let mut removed = 0;
        for name in list_dir(&parent)? {
            let path = parent.join(&name);
            let old = fs::metadata(&path)
                .and_then(|m| m.modified())
                .ok()
                .and_then(|t| t.elapsed().ok())
                .is_some_and(|elapsed| elapsed > age);
            if old && fs::remove_dir_all(&path).is_ok() {
                removed += 1;
            }
        }
        Ok(removed)
    }

    /// Takes the model's write lock (blocking: call from a blocking context).
    pub fn lock(&self, model: &ModelName) -> Result<Locked<'_>> {
        let dir = self.model_dir(model);
        let lock = ModelLock::acquire(&dir).map_err(io_at(&dir))?;
        Ok(Locked {
            registry: self,
            model: model.clone(),
            _lock: lock,
        })
    }
}

/// Write access to one model, holding its lock.
pub struct Locked<'a> {
    registry: &'a Registry,
    model: ModelName,
    _lock: ModelLock,
}

impl Locked<'_> {
    pub fn registry(&self) -> &Registry {
        self.registry
    }

    /// Makes a staged upload the next version, or returns the version that already has these
    /// bytes. The manifest is written inside the staging directory, which is then renamed to
    /// `versions/<N>`: the version appears whole or not at all.
    pub fn commit(&self, staging: Staging, new: NewVersion) -> Result<Commit> {
        let registry = self.registry;
        for version in registry.versions(&self.model)? {
            if registry.manifest(&self.model, version)?.sha256 == new.sha256 {
                return Ok(Commit::AlreadyPresent(version));
            }
        }
        let versions_dir = registry.model_dir(&self.model).join("versions");
        fs::create_dir_all(&versions_dir).map_err(io_at(&versions_dir))?;
        // Numbers are never reused, even those of a directory left broken by hand.
        let mut version = list_dir(&versions_dir)?
            .iter()
            .filter_map(|n| n.parse::<u64>().ok())
            .max()
            .unwrap_or(0)
            + 1;
        let staged = staging.dir.keep();
        loop {
            let manifest = Manifest {
                model: self.model.clone(),
                version,
                sha256: new.sha256.clone(),
                size: new.size,
                source: new.source.clone(),
                signature: new.signature.clone(),
                signature_change: new.signature_change.clone(),
                validated_at: now(),
            };
            let manifest_path = staged.join(MANIFEST_FILE);
            atomic::write_file(&manifest_path, &to_json(&manifest))
                .map_err(io_at(&manifest_path))?;
            let target = versions_dir.join(version.to_string());
            match fs::rename(&staged, &target) {
                Ok(()) => break,
                // Taken despite the lock (a writer that ignores it): try the next number.
                Err(e) if target.exists() && e.kind() != io::ErrorKind::NotFound => version += 1,
                Err(e) => {
                    let _ = fs::remove_dir_all(&staged);
                    return Err(io_at(&target)(e));
                }
            }
        }
        atomic::sync_dir(&versions_dir).map_err(io_at(&versions_dir))?;
        Ok(Commit::Created(version))
    }

    pub fn write_alias(&self, alias: &AliasName, record: &AliasRecord) -> Result<()> {
        let path = self.registry.alias_path(&self.model, alias);
        atomic::write_file(&path, &to_json(record)).map_err(io_at(&path))
    }

    pub fn append_history(&self, entry: &HistoryEntry) -> Result<()> {
        let path = self.registry.history_path(&self.model);
        atomic::append_line(&path, &to_line(entry)).map_err(io_at(&path))
    }

    pub fn append_rejection(&self, rejection: &Rejection) -> Result<()> {
        let path = self.registry.rejections_path(&self.model);
        atomic::append_line(&path, &to_line(rejection)).map_err(io_at(&path))
    }

    pub fn write_upload_record(&self, record: &UploadRecord) -> Result<()> {
        let path = self.registry.upload_path(&self.model, &record.key);
        atomic::write_file(&path, &to_json(record)).map_err(io_at(&path))
    }
}

fn to_json(value: &impl serde::Serialize) -> Vec<u8> {
    let mut bytes = serde_json::to_vec_pretty(value).expect("registry records serialise");
    bytes.push(b'\n');
    bytes
}

fn to_line(value: &impl serde::Serialize) -> String {
    serde_json::to_string(value).expect("registry records serialise")
}

/// Names in `dir`, or none if it does not exist.
fn list_dir(dir: &Path) -> Result<Vec<String>> {
    match fs::read_dir(dir) {
        Ok(entries) => Ok(entries
            .filter_map(|e| e.ok()?.file_name().into_string().ok())
            .collect()),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(Vec::new()),
        Err(e) => Err(io_at(dir)(e)),
    }
}

fn read_json<T: DeserializeOwned>(path: &Path) -> Result<Option<T>> {
    match fs::read(path) {
        Ok(bytes) => serde_json::from_slice(&bytes)
            .map(Some)
            .map_err(|e| RegistryError::Corrupt {
                path: path.to_path_buf(),
                message: e.to_string(),
            }),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(io_at(path)(e)),
    }
}

fn read_jsonl<T: DeserializeOwned>(path: &Path) -> Result<Vec<T>> {
    match fs::read_to_string(path) {
        Ok(text) => Ok(text
            .lines()
            .filter_map(|line| serde_json::from_str(line).ok())
            .collect()),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(Vec::new()),
        Err(e) => Err(io_at(path)(e)),
    }
}

#[cfg(test)]
mod tests;
