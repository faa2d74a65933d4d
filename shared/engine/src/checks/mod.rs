//! The validator's checks on a staged model file, shared by the validator Lambda and
//! `modelctl validate`: it stays within the limits, loads and runs in an engine ([`engines`]
//! chooses which), keeps the signature its clients rely on, and reproduces its golden examples.
//! Reading from S3 and writing the registry happen elsewhere.

pub mod engines;

use std::path::Path;
use std::time::{Duration, Instant};

use tract_onnx::prelude::Tensor;
use tract_onnx::tract_core::internal::Approximation;

use self::engines::{Chosen, EngineChoice};
use crate::contract::Contract;
use crate::{Engine, EngineError, EngineKind, Layout, LayoutChoice, Limits, TRACT_VERSION};
use modelpipe_core::digest::Digest;
use modelpipe_core::prepared::{ARTIFACT_FILE, Artifact, OPTIMIZED_FILE, Optimized};
use modelpipe_core::signature::Signature;

/// Why a model was refused: one sentence a data scientist can act on.
#[derive(Debug, Clone, thiserror::Error)]
pub enum CheckError {
    #[error("the file is empty")]
    Empty,
    #[error("{0}")]
    Load(EngineError),
    #[error("smoke test on zero inputs failed: {0}")]
    Smoke(EngineError),
    #[error("signature differs from the contract: {}", .0.join("; "))]
    Contract(Vec<String>),
    #[error("signature differs from live v{live_version}: {} (upload with metadata allow-signature-change=true to accept)", problems.join("; "))]
    SignatureChanged {
        live_version: u64,
        problems: Vec<String>,
    },
    #[error("{0}")]
    Golden(String),
}

/// What a staged model is checked against.
#[derive(Debug, Default, Clone, Copy)]
pub struct Expectations<'a> {
    /// The version currently behind the target alias, and its signature.
    pub live: Option<(u64, &'a Signature)>,
    pub contract: Option<&'a Contract>,
    pub allow_signature_change: bool,
    /// The engine the upload asks for (`engine=` metadata); none: chosen by measurement.
    pub engine: Option<EngineKind>,
    pub limits: Limits,
}

/// A model that passed every check.
#[derive(Debug)]
pub struct Checked {
    pub engine: Engine,
    /// Which engine serves it, and why.
    pub choice: EngineChoice,
    /// tract's layout, when the engine choice already timed it.
    layout: Option<LayoutChoice>,
    /// Set when the signature changed from live and the upload allowed it: what changed.
    pub signature_change: Option<String>,
    /// The file that was checked, and the limits it was checked with.
    path: std::path::PathBuf,
    limits: Limits,
}

impl Checked {
    pub fn signature(&self) -> &Signature {
        self.engine.signature()
    }

    /// What ingest adds to a model so that loads are fast. For tract: the faster convolution
    /// layout, and the compiled artifact written as `dir/model.nnef.tar`, read back and run
    /// against the ONNX model before it is recorded. For ONNX Runtime: its optimised graph
    /// ([`Self::optimize`]). None is needed to serve the model: a failure leaves the plain
    /// layout or no file, and says why.
    pub fn compile(&self, dir: &Path) -> Option<Compiled> {
        if self.engine.kind() == EngineKind::Onnxruntime {
            return Some(self.optimize(dir));
        }
        let layout = self.layout.clone().unwrap_or_else(|| {
            self.engine.choose_layout().unwrap_or_else(|e| {
                tracing::warn!(error = %e, "layout trial failed; keeping the plain layout");
                LayoutChoice::fastest(0, None)
            })
        });
        let path = dir.join(ARTIFACT_FILE);
        Some(match self.write_artifact(&path, &layout) {
            Ok((artifact, artifact_load)) => Compiled {
                layout: Some(layout),
                artifact: Some(artifact),
                artifact_load: Some(artifact_load),
                ..Compiled::default()
            },
            Err(reason) => {
                let _ = std::fs::remove_file(&path);
                Compiled {
                    layout: Some(layout),
                    no_artifact: Some(reason),
                    ..Compiled::default()
                }
            }
        })
    }

    /// ONNX Runtime's optimised graph, written as `dir/model.optimized.onnx` (see
    /// [`crate::onnxruntime::save_optimized`]), loaded back and run against the model. It is
    /// kept when it answers as the model does, loads faster than `model.onnx` and runs within
    /// [`OPTIMIZED_RUN_MARGIN`] of it (a convolutional model loses the CPU's layout pass, which
    /// runs only at load, and runs slower without it: it keeps loading `model.onnx`). Each is
    /// loaded once more here, one after the other, the library already open.
    fn optimize(&self, dir: &Path) -> Compiled {
        let path = dir.join(OPTIMIZED_FILE);
        match self.write_optimized(&path) {
            Ok(optimized) => Compiled {
                optimized: Some(optimized),
                ..Compiled::default()
            },
            Err(reason) => {
                let _ = std::fs::remove_file(&path);
                Compiled {
                    no_artifact: Some(reason),
                    ..Compiled::default()
                }
            }
        }
    }

    fn write_optimized(&self, path: &Path) -> Result<Optimized, String> {
        let model = &self.path;
        let size = std::fs::metadata(model).map_err(|e| e.to_string())?.len();
        if size > self.limits.compare_max_bytes {
            // Timing it would hold a second copy beside the one checked.
            return Err(format!(
                "the model is {} MB, more than the {} MB ingest loads twice",
                size >> 20,
                self.limits.compare_max_bytes >> 20
            ));
        }
        crate::onnxruntime::save_optimized(model, path).map_err(|e| e.to_string())?;
        let (limits, smoke) = (self.limits, self.engine.smoke_shapes());
        let spinning = crate::Spinning::Off;
        let timed = |load: &dyn Fn() -> Result<Engine, EngineError>| {
            let started = Instant::now();
            load().map(|engine| (engine, started.elapsed()))
        };
        let (_, model_load) = timed(&|| {
            Engine::load_with(
                EngineKind::Onnxruntime,
                model,
                Layout::Plain,
                &limits,
                spinning,
                smoke,
            )
        })
        .map_err(|e| format!("loading model.onnx again: {e}"))?;
        let (reloaded, load) =
            timed(&|| Engine::load_optimized(model, path, &limits, spinning, smoke))
                .map_err(|e| format!("reading it back: {e}"))?;
        let inputs = self.engine.smoke_inputs().map_err(|e| e.to_string())?;
        let expected = self.engine.run(inputs.clone()).map_err(|e| e.to_string())?;
        let actual = reloaded
            .run(inputs.clone())
            .map_err(|e| format!("running it: {e}"))?;
        same_outputs(&expected, &actual)?;
        let (run, model_run) = (
            fastest_run(&reloaded, &inputs)?,
            fastest_run(&self.engine, &inputs)?,
        );
        worth_keeping(load, run, model_load, model_run)?;
        let Digest { sha256, size } = Digest::of_file(path).map_err(|e| e.to_string())?;
        Ok(Optimized {
            sha256,
            size,
            onnxruntime: crate::onnxruntime::build().map_err(|e| e.to_string())?,
            load_ms: load.as_millis() as u64,
            run_us: run.as_micros() as u64,
            model_load_ms: model_load.as_millis() as u64,
            model_run_us: model_run.as_micros() as u64,
        })
    }

    fn write_artifact(
        &self,
        path: &Path,
        layout: &LayoutChoice,
    ) -> Result<(Artifact, Duration), String> {
        self.engine
            .write_artifact(path)
            .map_err(|e| e.to_string())?;
        let started = Instant::now();
        let smoke = self.engine.smoke_shapes();
        let reloaded = Engine::load_artifact(path, self.signature(), layout.layout, smoke)
            .map_err(|e| format!("reading it back: {e}"))?;
        let load = started.elapsed();
        let inputs = self.engine.smoke_inputs().map_err(|e| e.to_string())?;
        let expected = self.engine.run(inputs.clone()).map_err(|e| e.to_string())?;
        let actual = reloaded
            .run(inputs)
            .map_err(|e| format!("running it: {e}"))?;
        same_outputs(&expected, &actual)?;
        let Digest { sha256, size } = Digest::of_file(path).map_err(|e| e.to_string())?;
        Ok((
            Artifact {
                sha256,
                size,
                tract: TRACT_VERSION.to_string(),
            },
            load,
        ))
    }
}

/// How much slower than `model.onnx` an optimised graph may run and still be kept (a run on
/// the smoke input; a few µs either way are noise).
pub const OPTIMIZED_RUN_MARGIN: f64 = 1.1;

/// Whether an optimised graph that loads in `load` and runs in `run` is worth serving in place
/// of `model.onnx` (`model_load`, `model_run`): faster to load, about as fast to run.
fn worth_keeping(
    load: Duration,
    run: Duration,
    model_load: Duration,
    model_run: Duration,
) -> Result<(), String> {
    let ms = |d: Duration| d.as_secs_f64() * 1e3;
    if load >= model_load {
        return Err(format!(
            "it loads in {:.1} ms, model.onnx in {:.1} ms: no faster",
            ms(load),
            ms(model_load)
        ));
    }
    if run > model_run.mul_f64(OPTIMIZED_RUN_MARGIN) + Duration::from_micros(20) {
        return Err(format!(
            "it runs in {:.2} ms, model.onnx in {:.2} ms (the CPU's layout pass only runs at load): slower to serve",
            ms(run),
            ms(model_run)
        ));
    }
    Ok(())
}

/// The fastest of a few runs of `engine` on `inputs` (at most 20, or 0.5 s): sub-millisecond
/// runs vary by tens of µs from one to the next on a shared machine.
fn fastest_run(engine: &Engine, inputs: &[Tensor]) -> Result<Duration, String> {
    let started = Instant::now();
    let mut fastest = Duration::MAX;
    for _ in 0..20 {
        let run = Instant::now();
        engine.run(inputs.to_vec()).map_err(|e| e.to_string())?;
        fastest = fastest.min(run.elapsed());
        if started.elapsed() > Duration::from_millis(500) {
            break;
        }
    }
    Ok(fastest)
}

/// The ingest-time additions to a checked model (see [`Checked::compile`]).
#[derive(Debug, Clone, Default)]
pub struct Compiled {
    /// tract's convolution layout.
    pub layout: Option<LayoutChoice>,
    /// tract's compiled artifact.
    pub artifact: Option<Artifact>,
    /// How long reading the artifact back took.
    pub artifact_load: Option<Duration>,
    /// ONNX Runtime's optimised graph.
    pub optimized: Option<Optimized>,
    /// Why no artifact or optimised graph was recorded.
    pub no_artifact: Option<String>,
}

/// The artifact's outputs on the smoke input equal the ONNX model's (to float rounding: the
/// chosen layout may order the sums differently).
fn same_outputs(expected: &[Tensor], actual: &[Tensor]) -> Result<(), String> {
    if expected.len() != actual.len() {
        return Err(format!(
            "it gives {} outputs where the model gives {}",
            actual.len(),
            expected.len()
        ));
    }
    for (i, (e, a)) in expected.iter().zip(actual).enumerate() {
        e.close_enough(a, Approximation::Approximate)
            .map_err(|err| format!("its output {i} differs from the model's: {err}"))?;
    }
    Ok(())
}

/// Runs every check on the model file at `path` (blocking, CPU-bound).
pub fn check_model(path: &Path, expect: Expectations<'_>) -> Result<Checked, CheckError> {
    if std::fs::metadata(path)
        .map(|m| m.len() == 0)
        .unwrap_or(false)
    {
        return Err(CheckError::Empty);
    }
    let probes = |signature: &Signature| {
        expect
            .contract
            .map(|c| c.example_inputs(signature))
            .unwrap_or_default()
    };
    let Chosen {
        engine,
        choice,
        layout,
    } = engines::choose(path, &expect.limits, expect.engine, probes).map_err(|none| match none
        .error()
    {
        run @ EngineError::Run(_) => CheckError::Smoke(run),
        other => CheckError::Load(other),
    })?;
    // A contract that names no tensors (only examples or a rollout plan) fixes no signature.
    if let Some(contract) = expect
        .contract
        .filter(|c| !c.inputs.is_empty() || !c.outputs.is_empty())
    {
        let problems = engine
            .signature()
            .incompatibilities(&contract.signature(), "the contract");
        if !problems.is_empty() {
            return Err(CheckError::Contract(problems));
        }
    }
    let mut signature_change = None;
    if let Some((live_version, live)) = expect.live {
        let problems = engine
            .signature()
            .incompatibilities(live, &format!("live v{live_version}"));
        if !problems.is_empty() {
            if !expect.allow_signature_change {
                return Err(CheckError::SignatureChanged {
                    live_version,
                    problems,
                });
            }
            signature_change = Some(problems.join("; "));
        }
    }
    if let Some(contract) = expect.contract {
        contract
            .check_examples(&engine)
            .map_err(CheckError::Golden)?;
    }
    Ok(Checked {
        engine,
        choice,
        layout,
        signature_change,
        path: path.to_path_buf(),
        limits: expect.limits,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use modelpipe_testkit::onnx_build::Mlp;

    #[test]
    fn an_optimised_graph_is_kept_only_when_it_loads_faster_and_runs_about_as_fast() {
        let ms = Duration::from_millis;
        let us = Duration::from_micros;
        assert!(worth_keeping(ms(10), us(100), ms(30), us(100)).is_ok());
        // Within the margin (10 % and 20 µs of noise).
        assert!(worth_keeping(ms(10), us(130), ms(30), us(100)).is_ok());
        let slower_run = worth_keeping(ms(10), us(16_000), ms(30), us(8_000)).unwrap_err();
        assert!(slower_run.contains("slower to serve"), "{slower_run}");
        let slower_load = worth_keeping(ms(30), us(100), ms(30), us(100)).unwrap_err();
        assert!(slower_load.contains("no faster"), "{slower_load}");
    }

    /// Whatever the timings decide, ingest records a graph that matches its file and answers as
    /// the model does, or none and says why, leaving no file behind.
    #[test]
    fn ingest_records_the_optimised_graph_it_keeps_or_says_why_not() {
        let dir = tempfile::tempdir().unwrap();
        let model = dir.path().join("model.onnx");
        std::fs::write(&model, Mlp::new(&[16, 256, 256, 4], 1).to_bytes()).unwrap();
        let expect = Expectations {
            engine: Some(EngineKind::Onnxruntime),
            ..Default::default()
        };
        let checked = check_model(&model, expect).unwrap();
        let out = tempfile::tempdir().unwrap();
        let compiled = checked.compile(out.path()).expect("onnxruntime prepares");
        let file = out.path().join(OPTIMIZED_FILE);
        match (&compiled.optimized, &compiled.no_artifact) {
            (Some(optimized), None) => {
                assert_eq!(Digest::of_file(&file).unwrap(), optimized.digest());
                assert!(optimized.load_ms <= optimized.model_load_ms);
                assert_eq!(optimized.onnxruntime, crate::onnxruntime::build().unwrap());
            }
            (None, Some(reason)) => {
                assert!(
                    reason.contains("no faster") || reason.contains("slower to serve"),
                    "{reason}"
                );
                assert!(!file.exists());
            }
            other => panic!("{other:?}"),
        }
        assert!(compiled.layout.is_none() && compiled.artifact.is_none());
    }
}
