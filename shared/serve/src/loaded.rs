//! A version in memory: its file hash-checked against the manifest, loaded, warmed up. Requests
//! hold an `Arc<LoadedModel>` while they run, so a swapped-out version is freed when the last
//! request using it ends, and the heap pages it used go back to the system then.

use std::time::{Duration, Instant};

use tracing::{info, warn};
use tract_onnx::prelude::Tensor;

use modelpipe_core::model_name::ModelName;
use modelpipe_engine::{Engine, EngineError, EngineKind, Limits, Spinning, TRACT_VERSION};
use modelpipe_registry::{
    ARTIFACT_FILE, MODEL_FILE, Manifest, OPTIMIZED_FILE, Registry, RegistryError,
};

#[derive(Debug)]
pub struct LoadedModel {
    pub manifest: Manifest,
    pub engine: Engine,
    /// The file the engine was loaded from: the compiled artifact or `model.onnx`.
    pub loaded_from: &'static str,
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
    /// Verifies, loads and warms `version` of `model` (blocking, CPU-bound) in the engine its
    /// manifest records, held to `limits`. tract loads the compiled artifact when the version has
    /// one this tract can read and whose SHA-256 matches the manifest, else `model.onnx`.
    /// `model.onnx` is checked against its manifest either way (on another thread while the
    /// artifact loads): a version whose file was altered is never served.
    pub fn load(
        registry: &Registry,
        model: &ModelName,
        version: u64,
        limits: &Limits,
    ) -> Result<Self, LoadError> {
        let started = Instant::now();
        let engine_error = |error| LoadError::Engine {
            model: model.clone(),
            version,
            error,
        };
        let manifest = registry.manifest(model, version)?;
        let kind = manifest.engine_kind();
        let (verified, from_artifact) = std::thread::scope(|scope| {
            let verified = scope.spawn(|| registry.verified_local_model(&manifest));
            let from_artifact = match kind {
                EngineKind::Tract => load_artifact(registry, &manifest),
                // Opening the library (a 35 MB dlopen) overlaps the hash check; a failure to
                // open it is reported by the load below.
                EngineKind::Onnxruntime => {
                    let _ = modelpipe_engine::onnxruntime::available();
                    None
                }
            };
            (
                verified.join().expect("the hash check does not panic"),
                from_artifact,
            )
        });
        let file = verified?;
        let from_optimized = match kind {
            EngineKind::Onnxruntime => load_optimized(registry, &manifest, &file, limits),
            EngineKind::Tract => None,
        };
        let (engine, loaded_from) = match (from_artifact, from_optimized) {
            (Some(engine), _) => (engine, ARTIFACT_FILE),
            (None, Some(engine)) => (engine, OPTIMIZED_FILE),
            (None, None) => {
                let smoke = manifest.smoke_shapes.as_deref();
                let layout = manifest.layout();
                let engine =
                    Engine::load_with(kind, &file, layout, limits, Spinning::Allowed, smoke)
                        .map_err(engine_error)?;
                (engine, MODEL_FILE)
            }
        };
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
            loaded_from,
            load_time: started.elapsed(),
            warm_run,
            warm_elements,
            _release: ReleaseMemory,
        })
    }

    pub fn version(&self) -> u64 {
        self.manifest.version
    }

    /// What the model cache counts for this version: its file size (the order of its weights)
    /// for every plan in memory, each holding its own packed copy.
    pub fn memory_cost(&self) -> u64 {
        self.manifest.size * self.engine.resident_plans().max(1) as u64
    }

    /// Whether a run on `inputs` is expected to be short enough to do inline, scaling the
    /// warm-up run by the number of input elements.
    pub fn runs_quickly(&self, inputs: &[Tensor]) -> bool {
        let elements: usize = inputs.iter().map(Tensor::len).sum();
        let scale = elements as f64 / self.warm_elements.max(1) as f64;
        self.warm_run.mul_f64(scale.max(1.0)) < INLINE_RUN
    }
}

/// The engine from the version's compiled artifact, or `None` (and why, logged) when it has
/// none, was written by another tract, does not match its manifest or does not load: a bad
/// artifact is never used, the model is loaded from `model.onnx` instead.
fn load_artifact(registry: &Registry, manifest: &Manifest) -> Option<Engine> {
    let (model, version) = (&manifest.model, manifest.version);
    let artifact = manifest.artifact.as_ref()?;
    if artifact.tract != TRACT_VERSION {
        info!(%model, version, written_by = %artifact.tract, running = TRACT_VERSION, "artifact from another tract version: loading model.onnx");
        return None;
    }
    let path = match registry.verified_local_artifact(manifest) {
        Ok(path) => path?,
        Err(error) => {
            warn!(%model, version, %error, "artifact refused: loading model.onnx");
            return None;
        }
    };
    let smoke = manifest.smoke_shapes.as_deref();
    match Engine::load_artifact(&path, &manifest.signature, manifest.layout(), smoke) {
        Ok(engine) => Some(engine),
        Err(error) => {
            warn!(%model, version, %error, "artifact does not load: loading model.onnx");
            None
        }
    }
}

/// The engine from ONNX Runtime's graph optimised at ingest, or `None` (and why, logged) when
/// the version has none, another ONNX Runtime build wrote it, it does not match its manifest or
/// does not load: then the model is loaded from `model.onnx`.
fn load_optimized(
    registry: &Registry,
    manifest: &Manifest,
    model_file: &std::path::Path,
    limits: &Limits,
) -> Option<Engine> {
    let (model, version) = (&manifest.model, manifest.version);
    let optimized = manifest.optimized.as_ref()?;
    match modelpipe_engine::onnxruntime::build() {
        Ok(build) if build == optimized.onnxruntime => {}
        Ok(build) => {
            info!(%model, version, written_by = %optimized.onnxruntime, running = %build, "optimised graph from another ONNX Runtime: loading model.onnx");
            return None;
        }
        Err(_) => return None, // the model.onnx load says why
    }
    let path = match registry.verified_local_optimized(manifest) {
        Ok(path) => path?,
        Err(error) => {
            warn!(%model, version, %error, "optimised graph refused: loading model.onnx");
            return None;
        }
    };
    let smoke = manifest.smoke_shapes.as_deref();
    match Engine::load_optimized(model_file, &path, limits, Spinning::Allowed, smoke) {
        Ok(engine) => Some(engine),
        Err(error) => {
            warn!(%model, version, %error, "optimised graph does not load: loading model.onnx");
            None
        }
    }
}

#[cfg(test)]
mod tests {
    use std::path::PathBuf;

    use tract_onnx::prelude::Tensor;
    use tract_onnx::tract_core::internal::Approximation;

    use super::*;
    use modelpipe_core::digest::Digest;
    use modelpipe_testkit::commit::{Compile, commit_checked};
    use modelpipe_testkit::onnx_build::{Mlp, Weights, small_cnn};

    struct Fixture {
        dir: tempfile::TempDir,
        registry: Registry,
        model: ModelName,
        onnx: Vec<u8>,
    }

    /// A directory registry holding `small_cnn` as v1, served by tract and compiled as the
    /// validator compiles it, or not (a version committed before artifacts existed).
    fn fixture(compile: Compile) -> Fixture {
        fixture_in(EngineKind::Tract, compile)
    }

    /// [`fixture`], served by `engine` (ONNX Runtime: its graph optimised at ingest, or not).
    fn fixture_in(engine: EngineKind, compile: Compile) -> Fixture {
        let dir = tempfile::tempdir().unwrap();
        let registry = Registry::open(dir.path()).unwrap();
        let model: ModelName = "cnn".parse().unwrap();
        let onnx = small_cnn(3);
        let version = commit_checked(&registry, &model, &onnx, Some(engine), compile);
        let manifest = registry.manifest(&model, version).unwrap();
        if engine == EngineKind::Tract {
            assert_eq!(manifest.artifact.is_some(), compile == Compile::Yes);
        }
        Fixture {
            dir,
            registry,
            model,
            onnx,
        }
    }

    impl Fixture {
        fn version_file(&self, name: &str) -> PathBuf {
            self.dir.path().join("cnn/versions/1").join(name)
        }

        fn edit_manifest(&self, edit: impl FnOnce(&mut serde_json::Value)) {
            let path = self.version_file("manifest.json");
            let mut manifest: serde_json::Value =
                serde_json::from_slice(&std::fs::read(&path).unwrap()).unwrap();
            edit(&mut manifest);
            std::fs::write(&path, serde_json::to_vec(&manifest).unwrap()).unwrap();
        }

        fn load(&self) -> LoadedModel {
            LoadedModel::load(&self.registry, &self.model, 1, &Limits::default()).unwrap()
        }

        /// With one byte of `file` (a prepared file) flipped, the version loads `model.onnx`,
        /// answers as it does, and fsck warns about the file without counting an error.
        fn assert_a_corrupt_file_is_never_used(&self, file: &str) {
            let path = self.version_file(file);
            let mut bytes = std::fs::read(&path).unwrap();
            let middle = bytes.len() / 2;
            bytes[middle] ^= 0xff;
            std::fs::write(&path, &bytes).unwrap();
            let loaded = self.load();
            assert_eq!(loaded.loaded_from, MODEL_FILE);
            self.assert_answers_as_onnx(&loaded);
            let report = self
                .registry
                .fsck(
                    modelpipe_registry::fsck::Leftovers::Report,
                    std::time::Duration::from_secs(3600),
                )
                .unwrap();
            assert_eq!(report.errors(), 0, "{:?}", report.findings);
            assert!(
                report.findings.iter().any(|f| f.message.contains(file)),
                "{:?}",
                report.findings
            );
        }

        /// The loaded version answers as the ONNX file does.
        fn assert_answers_as_onnx(&self, loaded: &LoadedModel) {
            let onnx = self.dir.path().join("reference.onnx");
            std::fs::write(&onnx, &self.onnx).unwrap();
            let reference = Engine::load(&onnx).unwrap();
            let data = Weights::new(9).take(2 * 3 * 16 * 16, 1.0);
            let input = Tensor::from_shape(&[2, 3, 16, 16], &data).unwrap();
            let expected = reference.run(vec![input.clone()]).unwrap();
            let actual = loaded.engine.run(vec![input]).unwrap();
            expected[0]
                .close_enough(&actual[0], Approximation::Approximate)
                .unwrap();
        }
    }

    #[test]
    fn a_compiled_version_loads_from_its_artifact_in_the_recorded_layout() {
        let f = fixture(Compile::Yes);
        let loaded = f.load();
        assert_eq!(loaded.loaded_from, ARTIFACT_FILE);
        let recorded = loaded.manifest.layout.clone().expect("layout recorded");
        assert_eq!(loaded.engine.layout(), recorded.layout);
        assert!(recorded.nhwc_us.is_some(), "a CNN is tried in both layouts");
        let artifact = loaded.manifest.artifact.clone().expect("artifact recorded");
        assert_eq!(artifact.tract, TRACT_VERSION);
        assert_eq!(
            Digest::of_file(&f.version_file(ARTIFACT_FILE)).unwrap(),
            artifact.digest()
        );
        f.assert_answers_as_onnx(&loaded);
    }

    /// An ONNX Runtime version with its optimised graph, as ingest records it when the graph
    /// is worth keeping (whether it is depends on timings: decided by `worth_keeping`).
    fn optimized_fixture() -> Fixture {
        let f = fixture_in(EngineKind::Onnxruntime, Compile::No);
        let path = f.version_file(OPTIMIZED_FILE);
        modelpipe_engine::onnxruntime::save_optimized(&f.version_file(MODEL_FILE), &path).unwrap();
        let Digest { sha256, size } = Digest::of_file(&path).unwrap();
        let build = modelpipe_engine::onnxruntime::build().unwrap();
        f.edit_manifest(|m| {
            m["optimized"] = serde_json::json!({
                "sha256": sha256, "size": size, "onnxruntime": build,
                "load_ms": 1, "run_us": 1, "model_load_ms": 2, "model_run_us": 1,
            })
        });
        f
    }

    #[test]
    fn an_onnxruntime_version_loads_the_graph_optimised_at_ingest() {
        let f = optimized_fixture();
        let loaded = f.load();
        assert_eq!(loaded.loaded_from, OPTIMIZED_FILE);
        let optimized = loaded.manifest.optimized.clone().expect("recorded");
        assert_eq!(
            optimized.onnxruntime,
            modelpipe_engine::onnxruntime::build().unwrap()
        );
        assert_eq!(
            Digest::of_file(&f.version_file(OPTIMIZED_FILE)).unwrap(),
            optimized.digest()
        );
        f.assert_answers_as_onnx(&loaded);
        // Without one (not worth keeping, or committed before), model.onnx.
        let plain = fixture_in(EngineKind::Onnxruntime, Compile::No);
        assert_eq!(plain.load().loaded_from, MODEL_FILE);
    }

    #[test]
    fn a_corrupt_or_foreign_optimised_graph_is_never_used() {
        optimized_fixture().assert_a_corrupt_file_is_never_used(OPTIMIZED_FILE);

        let f = optimized_fixture();
        f.edit_manifest(|m| m["optimized"]["onnxruntime"] = "git-branch=rel-1.0.0".into());
        assert_eq!(f.load().loaded_from, MODEL_FILE);
    }

    #[test]
    fn a_corrupt_artifact_is_never_used() {
        fixture(Compile::Yes).assert_a_corrupt_file_is_never_used(ARTIFACT_FILE);
    }

    #[test]
    fn an_artifact_of_another_tract_or_of_another_model_is_never_used() {
        let f = fixture(Compile::Yes);
        f.edit_manifest(|m| m["artifact"]["tract"] = "0.0.1".into());
        assert_eq!(f.load().loaded_from, MODEL_FILE);

        // Another model's artifact, its hash recorded: consistent bytes, wrong tensors.
        let f = fixture(Compile::Yes);
        let mlp = f.dir.path().join("mlp.onnx");
        std::fs::write(&mlp, Mlp::new(&[4, 8, 3], 1).to_bytes()).unwrap();
        let path = f.version_file(ARTIFACT_FILE);
        Engine::load(&mlp).unwrap().write_artifact(&path).unwrap();
        let Digest { sha256, size } = Digest::of_file(&path).unwrap();
        f.edit_manifest(|m| {
            m["artifact"]["sha256"] = sha256.into();
            m["artifact"]["size"] = size.into();
        });
        let loaded = f.load();
        assert_eq!(loaded.loaded_from, MODEL_FILE);
        f.assert_answers_as_onnx(&loaded);
    }

    #[test]
    fn a_version_without_an_artifact_loads_its_onnx_file() {
        let f = fixture(Compile::No);
        assert!(!f.version_file(ARTIFACT_FILE).exists());
        let loaded = f.load();
        assert_eq!(loaded.loaded_from, MODEL_FILE);
        assert_eq!(loaded.engine.layout(), modelpipe_engine::Layout::Plain);
        f.assert_answers_as_onnx(&loaded);
    }
}
