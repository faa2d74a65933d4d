//! A version in memory: its file hash-checked against the manifest, loaded, warmed up. Requests
//! hold an `Arc<LoadedModel>` while they run, so a swapped-out version is freed when the last
//! request using it ends, and the heap pages it used go back to the system then.

use std::time::{Duration, Instant};

use tract_onnx::prelude::Tensor;

use crate::engine::{Engine, EngineError};
use crate::model_name::ModelName;
use crate::registry::{Manifest, Registry, RegistryError};

#[derive(Debug)]
pub struct LoadedModel {
    pub manifest: Manifest,
    pub engine: Engine,
    /// Hash check + load + warm-up.
    pub load_time: Duration,
    /// The warm-up run, and how many input elements it had: a cost estimate for requests.
    warm_run: Duration,
    warm_elements: usize,
    // Last, so it runs after the model's memory has been freed.
    _release: ReleaseMemory,
}

/// Hands freed heap pages back to the system. glibc keeps them otherwise: after a load or an
/// unload, tens of MB of a CNN's RSS would be allocator slack (BENCHMARKS.md).
#[derive(Debug)]
struct ReleaseMemory;

/// Returns the heap pages glibc holds free to the system.
pub fn release_freed_memory() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: malloc_trim only returns free pages; it touches no live allocation.
    unsafe {
        libc::malloc_trim(0);
    }
}

impl Drop for ReleaseMemory {
    fn drop(&mut self) {
        release_freed_memory();
    }
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

/// A run expected to take less than this is done on the request's own thread: the hop to the
/// blocking pool would cost more than the run (serve_bench: ~35 µs around a 10 µs MLP).
const INLINE_RUN: Duration = Duration::from_micros(200);

impl LoadedModel {
    /// Verifies, loads and warms `version` of `model` (blocking, CPU-bound).
    pub fn load(registry: &Registry, model: &ModelName, version: u64) -> Result<Self, LoadError> {
        let started = Instant::now();
        let (manifest, file) = registry.verified_local_file(model, version)?;
        let engine_error = |error| LoadError::Engine {
            model: model.clone(),
            version,
            error,
        };
        let engine = Engine::load(&file).map_err(engine_error)?;
        let warm_elements = engine
            .smoke_inputs()
            .map_err(engine_error)?
            .iter()
            .map(Tensor::len)
            .sum();
        let warm = Instant::now();
        engine.smoke_test().map_err(engine_error)?;
        let warm_run = warm.elapsed();
        release_freed_memory();
        Ok(Self {
            manifest,
            engine,
            load_time: started.elapsed(),
            warm_run,
            warm_elements,
            _release: ReleaseMemory,
        })
    }

    pub fn version(&self) -> u64 {
        self.manifest.version
    }

    /// Whether a run on `inputs` is expected to be short enough to do inline, scaling the
    /// warm-up run by the number of input elements.
    pub fn runs_quickly(&self, inputs: &[Tensor]) -> bool {
        let elements: usize = inputs.iter().map(Tensor::len).sum();
        let scale = elements as f64 / self.warm_elements.max(1) as f64;
        self.warm_run.mul_f64(scale.max(1.0)) < INLINE_RUN
    }
}
