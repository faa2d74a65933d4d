//! A version in memory: its file hash-checked against the manifest, loaded, warmed up. Requests
//! hold an `Arc<LoadedModel>` while they run, so a swapped-out version is freed when the last
//! request using it ends.

use std::time::{Duration, Instant};

use crate::engine::{Engine, EngineError};
use crate::model_name::ModelName;
use crate::registry::{Manifest, Registry, RegistryError};

#[derive(Debug)]
pub struct LoadedModel {
    pub manifest: Manifest,
    pub engine: Engine,
    /// Hash check + load + warm-up.
    pub load_time: Duration,
}

#[derive(Debug, Clone, thiserror::Error)]
pub enum LoadError {
    #[error("{0}")]
    Registry(String),
    #[error("model {model} v{version}: {error}")]
    Engine {
        model: ModelName,
        version: u64,
        error: EngineError,
    },
}

impl From<RegistryError> for LoadError {
    fn from(e: RegistryError) -> Self {
        Self::Registry(e.to_string())
    }
}

impl LoadedModel {
    /// Verifies, loads and warms `version` of `model` (blocking, CPU-bound).
    pub fn load(registry: &Registry, model: &ModelName, version: u64) -> Result<Self, LoadError> {
        let started = Instant::now();
        let manifest = registry.verified_manifest(model, version)?;
        let engine_error = |error| LoadError::Engine {
            model: model.clone(),
            version,
            error,
        };
        let engine = Engine::load(&registry.model_file(model, version)).map_err(engine_error)?;
        engine.smoke_test().map_err(engine_error)?;
        Ok(Self {
            manifest,
            engine,
            load_time: started.elapsed(),
        })
    }

    pub fn version(&self) -> u64 {
        self.manifest.version
    }
}
