//! The model registry: a directory (the EFS mount in AWS, any folder locally, or one baked into
//! an image) or an S3 prefix, laid out as
//!
//! ```text
//! <root>/<model>/versions/<N>/model.onnx      immutable once committed
//! <root>/<model>/versions/<N>/manifest.json
//! <root>/<model>/versions/<N>/model.nnef.tar  compiled at ingest (optional, in the manifest)
//! <root>/<model>/aliases/<alias>.json
//! <root>/<model>/history.jsonl                every alias move, append-only
//! <root>/<model>/rejections.jsonl             every refused upload, append-only
//! <root>/<model>/uploads/<key hash>.json      the latest event handled per S3 key
//! <root>/<model>/rollouts/…                   guarded rollouts (see [`rollout`])
//! <root>/<model>/monitoring.json, drift/…     capture settings, drift profiles (see [`drift`])
//! <root>/<model>/staging/                     uploads being checked (directory registries)
//! ```
//!
//! Reads take no lock and never see a partial file. Writes go through [`Locked`], which holds the
//! model's lock, so version numbers are allocated once and alias moves are serialised. Where the
//! files live is a [`Store`]; every rule about versions and aliases is here, once. This module
//! knows nothing of tract or HTTP.

mod atomic;
mod baked;
mod dir_store;
pub mod drift;
pub mod environment_files;
pub use self::environment_files::DEFAULT_PARALLEL_READS;
pub mod fsck;
mod lock;
mod moves;
pub mod publish;
pub mod records;
pub mod rollout;
mod s3_store;
mod signing;
pub use self::signing::Expired;
pub mod store;

use std::collections::BTreeMap;
use std::fs;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use serde::de::DeserializeOwned;

use self::dir_store::DirStore;
pub use self::moves::{AliasMove, MoveError, Moved, Promotion};
pub use self::records::*;
use self::s3_store::S3Store;
pub use self::s3_store::{FileCacheConfig, is_not_found as is_s3_not_found, s3_client};
pub use self::store::{LocalCopy, Location, Store};
use modelpipe_core::digest::{Digest, sha256_bytes};
use modelpipe_core::engine_choice::{EngineChoice, LayoutChoice};
use modelpipe_core::model_name::{AliasName, ModelName};
use modelpipe_core::signature::Signature;
use modelpipe_signing::SignerPolicy;

#[derive(Debug, thiserror::Error)]
pub enum RegistryError {
    #[error("registry I/O on {location}: {source}")]
    Io { location: String, source: io::Error },
    #[error("registry file {location} is not valid: {message}")]
    Corrupt { location: String, message: String },
    #[error("model {model} has no version {version}")]
    NoSuchVersion { model: ModelName, version: u64 },
    #[error("model {model} has no live version")]
    NotLive { model: ModelName },
    #[error("model {model} v{version}: {file} no longer matches its manifest ({detail})")]
    Tampered {
        model: ModelName,
        version: u64,
        file: &'static str,
        detail: String,
    },
    #[error(
        "the registry at {0} is read-only (baked into the image): nothing can be written to it"
    )]
    ReadOnly(String),
}

pub type Result<T, E = RegistryError> = std::result::Result<T, E>;

/// The facts about a version known before it has a number.
#[derive(Debug, Clone, Default)]
pub struct NewVersion {
    /// The staged model file's.
    pub digest: Digest,
    pub source: Source,
    pub signature: Signature,
    pub signature_change: Option<String>,
    pub layout: Option<LayoutChoice>,
    /// Set when the staging directory holds [`ARTIFACT_FILE`].
    pub artifact: Option<Artifact>,
    /// Set when the staging directory holds [`OPTIMIZED_FILE`].
    pub optimized: Option<Optimized>,
    /// Set when the staging directory holds [`SIGNATURE_FILE`], verified.
    pub signer: Option<Signer>,
    /// The engine chosen at ingest; none: tract.
    pub engine: Option<EngineChoice>,
    /// The smoke test's input shapes, when not the declared ones with dynamic dimensions 1.
    pub smoke_shapes: Option<Vec<Vec<usize>>>,
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

/// An upload being written and checked, in a local directory (`<model>/staging/upload-XXXX/` of
/// a directory registry, so that committing it is a rename). Dropped without being committed, it
/// removes itself.
#[derive(Debug)]
pub struct Staging {
    dir: tempfile::TempDir,
}

impl Staging {
    pub fn model_path(&self) -> PathBuf {
        self.dir.path().join(MODEL_FILE)
    }

    pub fn dir(&self) -> &Path {
        self.dir.path()
    }
}

pub const MODEL_FILE: &str = "model.onnx";
pub use modelpipe_core::prepared::{ARTIFACT_FILE, OPTIMIZED_FILE, PREPARED_FILES, SIGNATURE_FILE};
const MANIFEST_FILE: &str = "manifest.json";
/// Written by `modelctl bake` at the root of a registry baked into an image.
pub(crate) const BAKED_MARKER: &str = "baked.json";

#[derive(Debug, Clone)]
pub struct Registry {
    store: Arc<dyn Store>,
    location: Location,
    baked: bool,
    /// The signer policy of models whose `contract.json` names none (`SIGNING_POLICY`).
    signing_default: Option<Arc<SignerPolicy>>,
    /// Where inference environments write their files (see [`environment_files`]).
    telemetry: Arc<dyn Store>,
    telemetry_location: Location,
    parallel_reads: usize,
}

impl Registry {
    /// A registry in a directory, created if missing.
    pub fn open(root: impl Into<PathBuf>) -> Result<Self> {
        Self::open_at(&Location::Dir(root.into()), &FileCacheConfig::default())
    }

    /// The registry at `MODEL_ROOT`; `files` bounds the local copies of an S3 registry.
    pub fn open_at(location: &Location, files: &FileCacheConfig) -> Result<Self> {
        let store: Arc<dyn Store> =
            match location {
                Location::Dir(root) => Arc::new(DirStore::open(root.clone()).map_err(
                    |source| RegistryError::Io {
                        location: root.display().to_string(),
                        source,
                    },
                )?),
                Location::S3 { bucket, prefix } => {
                    return Self::open_s3(bucket, prefix, files, None);
                }
            };
        let baked = matches!(location, Location::Dir(root) if root.join(BAKED_MARKER).is_file());
        Ok(Self::over(store, location.clone(), baked))
    }

    /// A registry under `s3://bucket/prefix`, with the SDK configuration `sdk` (for local
    /// endpoints) or else the standard one from the environment.
    pub fn open_s3(
        bucket: &str,
        prefix: &str,
        files: &FileCacheConfig,
        sdk: Option<aws_config::SdkConfig>,
    ) -> Result<Self> {
        let prefix = match prefix.trim_matches('/') {
            "" => String::new(),
            trimmed => format!("{trimmed}/"),
        };
        let location = Location::S3 {
            bucket: bucket.to_string(),
            prefix: prefix.clone(),
        };
        let store: Arc<dyn Store> = Arc::new(
            S3Store::connect(bucket, &prefix, files, sdk).map_err(|source| RegistryError::Io {
                location: location.to_string(),
                source,
            })?,
        );
        Ok(Self::over(store, location, false))
    }

    /// A registry over `store` at `location`, its environments' files beside it.
    fn over(store: Arc<dyn Store>, location: Location, baked: bool) -> Self {
        Self {
            telemetry: store.clone(),
            telemetry_location: location.clone(),
            store,
            location,
            baked,
            signing_default: None,
            parallel_reads: environment_files::DEFAULT_PARALLEL_READS,
        }
    }

    pub fn location(&self) -> &Location {
        &self.location
    }

    /// The root directory of a directory registry.
    pub fn dir(&self) -> Option<&Path> {
        match &self.location {
            Location::Dir(root) => Some(root),
            Location::S3 { .. } => None,
        }
    }

    /// Baked into a container image by `modelctl bake`: read-only, its aliases never move.
    pub fn is_baked(&self) -> bool {
        self.baked
    }

    /// The path of a version's file in a directory registry.
    pub fn model_file(&self, model: &ModelName, version: u64) -> Option<PathBuf> {
        self.dir()
            .map(|root| root.join(version_dir(model, version)).join(MODEL_FILE))
    }

    fn io_error(&self, key: &str) -> impl FnOnce(io::Error) -> RegistryError + '_ {
        io_error(&*self.store, key)
    }

    fn read_json<T: DeserializeOwned>(&self, key: &str) -> Result<Option<T>> {
        read_json(&*self.store, key)
    }

    /// Every line that parses: a line torn by a crash is skipped.
    fn read_jsonl<T: DeserializeOwned>(&self, key: &str) -> Result<Vec<T>> {
        let bytes = self.store.read(key).map_err(self.io_error(key))?;
        Ok(String::from_utf8_lossy(&bytes.unwrap_or_default())
            .lines()
            .filter_map(|line| serde_json::from_str(line).ok())
            .collect())
    }

    fn list(&self, dir: &str) -> Result<Vec<String>> {
        self.store.list(dir).map_err(self.io_error(dir))
    }

    /// Writes a file only the publisher or the validator writes, without the model's lock (a
    /// version's drift report, baseline, monitoring settings); refused when baked.
    pub(crate) fn write_unlocked(&self, key: &str, bytes: &[u8]) -> Result<()> {
        if self.baked {
            return Err(RegistryError::ReadOnly(self.location.to_string()));
        }
        self.store.write(key, bytes).map_err(self.io_error(key))
    }

    /// Models with at least one committed version, sorted.
    pub fn models(&self) -> Result<Vec<ModelName>> {
        let mut models = Vec::new();
        for model in self.list("")?.into_iter().filter_map(|n| n.parse().ok()) {
            if !self.list(&format!("{model}/versions"))?.is_empty() {
                models.push(model);
            }
        }
        models.sort();
        Ok(models)
    }

    /// Committed versions of `model` (those with a manifest), ascending; empty if the model is
    /// unknown.
    pub fn versions(&self, model: &ModelName) -> Result<Vec<u64>> {
        let dir = format!("{model}/versions");
        let files = self.store.list_files(&dir).map_err(self.io_error(&dir))?;
        let mut versions: Vec<u64> = files
            .iter()
            .filter_map(|f| f.strip_suffix(&format!("/{MANIFEST_FILE}"))?.parse().ok())
            .collect();
        versions.sort_unstable();
        Ok(versions)
    }

    pub fn manifest(&self, model: &ModelName, version: u64) -> Result<Manifest> {
        let key = format!("{}/{MANIFEST_FILE}", version_dir(model, version));
        self.read_json(&key)?
            .ok_or_else(|| RegistryError::NoSuchVersion {
                model: model.clone(),
                version,
            })
    }

    fn tampered(
        &self,
        model: &ModelName,
        version: u64,
        file: &'static str,
        detail: String,
    ) -> RegistryError {
        RegistryError::Tampered {
            model: model.clone(),
            version,
            file,
            detail,
        }
    }

    /// Checks that `file` of the version `manifest` describes has the `expected` size and
    /// SHA-256 recorded for it.
    fn check_digest(
        &self,
        manifest: &Manifest,
        file: &'static str,
        expected: &Digest,
        actual: &Digest,
    ) -> Result<()> {
        if actual != expected {
            let (sha256, expected_sha256) = (&actual.sha256, &expected.sha256);
            return Err(self.tampered(
                &manifest.model,
                manifest.version,
                file,
                format!(
                    "{} bytes with sha256 {}…, manifest says {} bytes with {}…",
                    actual.size,
                    &sha256[..12.min(sha256.len())],
                    expected.size,
                    &expected_sha256[..expected_sha256.len().min(12)]
                ),
            ));
        }
        Ok(())
    }

    /// The manifest of `version`, after checking that its file still has the recorded size and
    /// SHA-256 (a directory registry reads the whole file; S3 compares its stored checksum).
    pub fn verified_manifest(&self, model: &ModelName, version: u64) -> Result<Manifest> {
        let manifest = self.manifest(model, version)?;
        let key = model_key(model, version);
        let digest = self.store.digest(&key).map_err(|e| {
            self.tampered(
                model,
                version,
                MODEL_FILE,
                format!("cannot read {}: {e}", self.store.describe(&key)),
            )
        })?;
        self.check_digest(&manifest, MODEL_FILE, &manifest.digest(), &digest)?;
        Ok(manifest)
    }

    /// The manifest of `version` and its file on local disk, checked against the manifest's
    /// size and SHA-256 (an S3 registry downloads it to its local cache first).
    pub fn verified_local_file(
        &self,
        model: &ModelName,
        version: u64,
    ) -> Result<(Manifest, PathBuf)> {
        let manifest = self.manifest(model, version)?;
        let path = self.verified_local_model(&manifest)?;
        Ok((manifest, path))
    }

    /// The model file of the version `manifest` describes, on local disk and checked against
    /// the manifest's size and SHA-256.
    pub fn verified_local_model(&self, manifest: &Manifest) -> Result<PathBuf> {
        self.verified_local_copy(manifest, MODEL_FILE, &manifest.digest())
    }

    /// The compiled artifact of the version `manifest` describes, on local disk and checked
    /// against the manifest's size and SHA-256; `None` if the version has none.
    pub fn verified_local_artifact(&self, manifest: &Manifest) -> Result<Option<PathBuf>> {
        let Some(artifact) = &manifest.artifact else {
            return Ok(None);
        };
        self.verified_local_copy(manifest, ARTIFACT_FILE, &artifact.digest())
            .map(Some)
    }

    /// ONNX Runtime's optimised graph of the version `manifest` describes, on local disk and
    /// checked against the manifest's size and SHA-256; `None` if the version has none.
    pub fn verified_local_optimized(&self, manifest: &Manifest) -> Result<Option<PathBuf>> {
        let Some(optimized) = &manifest.optimized else {
            return Ok(None);
        };
        self.verified_local_copy(manifest, OPTIMIZED_FILE, &optimized.digest())
            .map(Some)
    }

    /// `file` of the version `manifest` describes on local disk, with the `expected` SHA-256
    /// and size (checked by the store while copying, or here).
    fn verified_local_copy(
        &self,
        manifest: &Manifest,
        file: &'static str,
        expected: &Digest,
    ) -> Result<PathBuf> {
        let (model, version) = (&manifest.model, manifest.version);
        let key = format!("{}/{file}", version_dir(model, version));
        let cannot = |e: io::Error| {
            self.tampered(
                model,
                version,
                file,
                format!("cannot read {}: {e}", self.store.describe(&key)),
            )
        };
        let copy = self.store.local_copy(&key, expected).map_err(cannot)?;
        if !copy.verified {
            let actual = Digest::of_file(&copy.path).map_err(cannot)?;
            self.check_digest(manifest, file, expected, &actual)?;
        }
        Ok(copy.path)
    }

    pub fn alias(&self, model: &ModelName, alias: &AliasName) -> Result<Option<AliasRecord>> {
        self.read_json(&alias_key(model, alias))
    }

    pub fn aliases(&self, model: &ModelName) -> Result<BTreeMap<AliasName, AliasRecord>> {
        let mut aliases = BTreeMap::new();
        for name in self.list(&format!("{model}/aliases"))? {
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
        self.read_jsonl(&format!("{model}/history.jsonl"))
    }

    pub fn rejections(&self, model: &ModelName) -> Result<Vec<Rejection>> {
        self.read_jsonl(&format!("{model}/rejections.jsonl"))
    }

    pub fn upload_record(&self, model: &ModelName, key: &str) -> Result<Option<UploadRecord>> {
        self.read_json(&upload_key(model, key))
    }

    /// Every upload record of `model`: the latest event handled per key.
    pub fn upload_records(&self, model: &ModelName) -> Result<Vec<UploadRecord>> {
        let dir = format!("{model}/uploads");
        let mut records = Vec::new();
        for name in self.store.list_files(&dir).map_err(self.io_error(&dir))? {
            if name.ends_with(".json") {
                records.extend(self.read_json(&format!("{dir}/{name}"))?);
            }
        }
        Ok(records)
    }

    /// A new, empty staging directory for an upload of `model`.
    pub fn stage(&self, model: &ModelName) -> Result<Staging> {
        let parent = self
            .store
            .staging_dir(model.as_str())
            .map_err(self.io_error(&format!("{model}/staging")))?;
        let io_error = |source| RegistryError::Io {
            location: parent.display().to_string(),
            source,
        };
        fs::create_dir_all(&parent).map_err(io_error)?;
        let dir = tempfile::Builder::new()
            .prefix("upload-")
            .tempdir_in(&parent)
            .map_err(io_error)?;
        Ok(Staging { dir })
    }

    /// A new staging directory holding a copy of `model_file` and of the files ingest prepared
    /// for it in `prepared` (any of [`PREPARED_FILES`] there).
    pub fn stage_copy(
        &self,
        model: &ModelName,
        model_file: &Path,
        prepared: &Path,
    ) -> Result<Staging> {
        let staging = self.stage(model)?;
        let copy = |from: &Path, to: PathBuf| {
            fs::copy(from, &to)
                .map(drop)
                .map_err(|source| RegistryError::Io {
                    location: to.display().to_string(),
                    source,
                })
        };
        copy(model_file, staging.model_path())?;
        for file in PREPARED_FILES {
            let path = prepared.join(file);
            if path.is_file() {
                copy(&path, staging.dir().join(file))?;
            }
        }
        Ok(staging)
    }

    /// Commits a staged upload as the next version of `model`, under the model's lock (see
    /// [`Locked::commit`]; blocking).
    pub fn commit(&self, model: &ModelName, staging: Staging, new: NewVersion) -> Result<Commit> {
        self.lock(model)?.commit(staging, new)
    }

    /// Takes the model's write lock (blocking: call from a blocking context).
    pub fn lock(&self, model: &ModelName) -> Result<Locked<'_>> {
        if self.baked {
            return Err(RegistryError::ReadOnly(self.location.to_string()));
        }
        let guard = self
            .store
            .lock(model.as_str())
            .map_err(self.io_error(&format!("{model}/.lock")))?;
        Ok(Locked {
            registry: self,
            model: model.clone(),
            _guard: guard,
        })
    }
}

fn io_error(store: &dyn Store, key: &str) -> impl FnOnce(io::Error) -> RegistryError + use<> {
    let location = store.describe(key);
    move |source| RegistryError::Io { location, source }
}

fn read_json<T: DeserializeOwned>(store: &dyn Store, key: &str) -> Result<Option<T>> {
    let Some(bytes) = store.read(key).map_err(io_error(store, key))? else {
        return Ok(None);
    };
    serde_json::from_slice(&bytes)
        .map(Some)
        .map_err(|e| RegistryError::Corrupt {
            location: store.describe(key),
            message: e.to_string(),
        })
}

fn version_dir(model: &ModelName, version: u64) -> String {
    format!("{model}/versions/{version}")
}

fn model_key(model: &ModelName, version: u64) -> String {
    format!("{}/{MODEL_FILE}", version_dir(model, version))
}

fn alias_key(model: &ModelName, alias: &AliasName) -> String {
    format!("{model}/aliases/{alias}.json")
}

fn upload_key(model: &ModelName, key: &str) -> String {
    let digest = sha256_bytes(key.as_bytes());
    format!("{model}/uploads/{}.json", &digest[..32])
}

/// Write access to one model, holding its lock.
pub struct Locked<'a> {
    registry: &'a Registry,
    model: ModelName,
    _guard: store::LockGuard,
}

impl Locked<'_> {
    pub fn registry(&self) -> &Registry {
        self.registry
    }

    pub fn model(&self) -> &ModelName {
        &self.model
    }

    fn write(&self, key: &str, bytes: &[u8]) -> Result<()> {
        self.registry
            .store
            .write(key, bytes)
            .map_err(self.registry.io_error(key))
    }

    fn append(&self, key: &str, line: &str) -> Result<()> {
        self.registry
            .store
            .append_line(key, line)
            .map_err(self.registry.io_error(key))
    }

    /// Makes a staged upload the next version, or returns the version that already has these
    /// bytes. The manifest is written beside the staged file, and the store makes both the
    /// version directory at once: the version appears whole or not at all.
    pub fn commit(&self, staging: Staging, new: NewVersion) -> Result<Commit> {
        let registry = self.registry;
        for version in registry.versions(&self.model)? {
            if registry.manifest(&self.model, version)?.sha256 == new.digest.sha256 {
                return Ok(Commit::AlreadyPresent(version));
            }
        }
        // Numbers are never reused, even those of a directory left incomplete.
        let mut version = registry
            .list(&format!("{}/versions", self.model))?
            .iter()
            .filter_map(|n| n.parse::<u64>().ok())
            .max()
            .unwrap_or(0)
            + 1;
        let staged = staging.dir.path();
        loop {
            let manifest = Manifest {
                model: self.model.clone(),
                version,
                sha256: new.digest.sha256.clone(),
                size: new.digest.size,
                source: new.source.clone(),
                signature: new.signature.clone(),
                signature_change: new.signature_change.clone(),
                validated_at: now(),
                layout: new.layout.clone(),
                artifact: new.artifact.clone(),
                optimized: new.optimized.clone(),
                signer: new.signer.clone(),
                engine: new.engine.clone(),
                smoke_shapes: new.smoke_shapes.clone(),
            };
            let manifest_path = staged.join(MANIFEST_FILE);
            atomic::write_file(&manifest_path, &to_json(&manifest)).map_err(|source| {
                RegistryError::Io {
                    location: manifest_path.display().to_string(),
                    source,
                }
            })?;
            let target = version_dir(&self.model, version);
            // A directory store renames `staged` away; dropping `staging` then finds nothing.
            if registry
                .store
                .commit_version(staged, &target, &new.digest.sha256)
                .map_err(registry.io_error(&target))?
            {
                return Ok(Commit::Created(version));
            }
            version += 1;
        }
    }

    pub fn append_rejection(&self, rejection: &Rejection) -> Result<()> {
        self.append(
            &format!("{}/rejections.jsonl", self.model),
            &to_line(rejection),
        )
    }

    pub fn write_upload_record(&self, record: &UploadRecord) -> Result<()> {
        self.write(&upload_key(&self.model, &record.key), &to_json(record))
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

#[cfg(test)]
mod tests;
