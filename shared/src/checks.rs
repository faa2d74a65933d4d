//! The validator's checks on a staged model file, shared by the validator Lambda and
//! `modelctl validate`: it loads in tract, runs, keeps the signature its clients rely on, and
//! reproduces its golden examples. Reading from S3 and writing the registry happen elsewhere.

use std::path::Path;

use crate::contract::Contract;
use crate::engine::{Engine, EngineError};
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
