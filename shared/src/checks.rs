//! The validator's checks on a staged model file, shared by the validator Lambda and
//! `modelctl validate`: it loads in tract, runs, keeps the signature its clients rely on, and
//! reproduces its golden examples. Reading from S3 and writing the registry happen elsewhere.

use std::path::Path;
use std::time::{Duration, Instant};

use tract_onnx::prelude::Tensor;
use tract_onnx::tract_core::internal::Approximation;

use crate::contract::Contract;
use crate::digest::sha256_file;
use crate::engine::{Engine, EngineError, LayoutChoice, TRACT_VERSION};
use crate::registry::{ARTIFACT_FILE, Artifact};
use crate::signature::Signature;

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
}

/// A model that passed every check.
#[derive(Debug)]
pub struct Checked {
    pub engine: Engine,
    /// Set when the signature changed from live and the upload allowed it: what changed.
    pub signature_change: Option<String>,
}

impl Checked {
    pub fn signature(&self) -> &Signature {
        self.engine.signature()
    }

    /// What ingest adds to a checked model so that loads are fast: the faster convolution
    /// layout, and the compiled artifact written as `dir/model.nnef.tar`, read back and run
    /// against the ONNX model before it is recorded. Neither is needed to serve the model: a
    /// failure leaves the plain layout or no artifact, and says why.
    pub fn compile(&self, dir: &Path) -> Compiled {
        let layout = self.engine.choose_layout().unwrap_or_else(|e| {
            tracing::warn!(error = %e, "layout trial failed; keeping the plain layout");
            LayoutChoice::fastest(0, None)
        });
        let path = dir.join(ARTIFACT_FILE);
        match self.write_artifact(&path, &layout) {
            Ok((artifact, artifact_load)) => Compiled {
                layout,
                artifact: Some(artifact),
                artifact_load: Some(artifact_load),
                no_artifact: None,
            },
            Err(reason) => {
                let _ = std::fs::remove_file(&path);
                Compiled {
                    layout,
                    artifact: None,
                    artifact_load: None,
                    no_artifact: Some(reason),
                }
            }
        }
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
        let reloaded = Engine::load_artifact(path, self.signature(), layout.layout)
            .map_err(|e| format!("reading it back: {e}"))?;
        let load = started.elapsed();
        let inputs = self.engine.smoke_inputs().map_err(|e| e.to_string())?;
        let expected = self.engine.run(inputs.clone()).map_err(|e| e.to_string())?;
        let actual = reloaded
            .run(inputs)
            .map_err(|e| format!("running it: {e}"))?;
        same_outputs(&expected, &actual)?;
        let (sha256, size) = sha256_file(path).map_err(|e| e.to_string())?;
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

/// The ingest-time additions to a checked model (see [`Checked::compile`]).
#[derive(Debug, Clone)]
pub struct Compiled {
    pub layout: LayoutChoice,
    pub artifact: Option<Artifact>,
    /// How long reading the artifact back took.
    pub artifact_load: Option<Duration>,
    /// Why no artifact was recorded.
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
    let engine = Engine::load(path).map_err(CheckError::Load)?;
    engine.smoke_test().map_err(CheckError::Smoke)?;
    if let Some(contract) = expect.contract {
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
        signature_change,
    })
}
