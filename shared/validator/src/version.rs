//! A staged model file to the version it becomes: the engine's checks, the files ingest prepares
//! beside it so that it loads fast, and the facts its manifest records. The validator's `check`
//! and `commit` stages and `modelctl bake` and `validate` take this one path.

use std::path::Path;

use modelpipe_core::digest::Digest;
use modelpipe_engine::checks::{CheckError, Checked, Compiled, Expectations, check_model};
use modelpipe_engine::contract::Contract;
use modelpipe_registry::drift::Monitoring;
use modelpipe_registry::rollout::Plan;
use modelpipe_registry::{NewVersion, Source};
use modelpipe_signing::{SignatureError, Signer, SignerPolicy};

/// A model's `contract.json`, its default rollout checked as a plan and its signer policy as a
/// policy.
pub fn read_contract(bytes: &[u8]) -> Result<Contract, String> {
    let contract = Contract::parse(bytes)?;
    if let Some(rollout) = &contract.rollout {
        Plan::requested(rollout).map_err(|e| format!("contract.json rollout: {e}"))?;
    }
    signer_policy(&contract)?;
    monitoring(&contract)?;
    Ok(contract)
}

/// The capture and drift settings a contract names (unset: the deployment's defaults).
pub fn monitoring(contract: &Contract) -> Result<Monitoring, String> {
    let Some(value) = &contract.monitoring else {
        return Ok(Monitoring::default());
    };
    let monitoring: Monitoring = serde_json::from_value(value.clone())
        .map_err(|e| format!("contract.json monitoring: {e}"))?;
    monitoring
        .check()
        .map_err(|e| format!("contract.json {e}"))?;
    Ok(monitoring)
}

/// The signer policy a contract names, if any.
pub fn signer_policy(contract: &Contract) -> Result<Option<SignerPolicy>, String> {
    let Some(signing) = &contract.signing else {
        return Ok(None);
    };
    SignerPolicy::from_json(&signing.to_string())
        .map(Some)
        .map_err(|e| format!("contract.json signing: {e}"))
}

/// Why a model's signature keeps it from going live.
#[derive(Debug, thiserror::Error)]
pub enum SignatureRefusal {
    #[error("it is not signed, and the model's signer policy requires a signature")]
    Unsigned,
    #[error("the signer policy: {0}")]
    Policy(String),
    #[error(transparent)]
    Signature(#[from] SignatureError),
}

/// Who signed the model whose SHA-256 is `sha256`, given its signature `bundle` (none:
/// unsigned) and the model's `policy`: the signer, none when unsigned and none is required, or
/// why it may not go live. The validator's stage, `modelctl bake` and `validate` all ask this;
/// the validator also waits for a signature still to come.
pub fn check_signature(
    bundle: Option<&[u8]>,
    sha256: &str,
    policy: Option<&SignerPolicy>,
) -> Result<Option<Signer>, SignatureRefusal> {
    let Some(bundle) = bundle else {
        return match policy {
            Some(p) if p.required => Err(SignatureRefusal::Unsigned),
            _ => Ok(None),
        };
    };
    let trust = policy
        .cloned()
        .unwrap_or_default()
        .trust()
        .map_err(SignatureRefusal::Policy)?;
    Ok(Some(modelpipe_signing::verify(bundle, sha256, &trust)?))
}

/// Checks the model file at `path` (blocking, CPU-bound), then writes what ingest prepares for
/// it into `dir` (see [`Checked::compile`]).
pub fn check_and_prepare(
    path: &Path,
    dir: &Path,
    expect: Expectations<'_>,
) -> Result<(Checked, Option<Compiled>), CheckError> {
    let checked = check_model(path, expect)?;
    let compiled = checked.compile(dir);
    Ok((checked, compiled))
}

/// The version a checked model becomes: its bytes' digest and source, its signature, the engine
/// choice, and what ingest prepared for it.
pub fn new_version(
    checked: &Checked,
    digest: Digest,
    source: Source,
    compiled: Option<Compiled>,
) -> NewVersion {
    let (layout, artifact, optimized) = match compiled {
        Some(compiled) => (compiled.layout, compiled.artifact, compiled.optimized),
        None => (None, None, None),
    };
    NewVersion {
        digest,
        source,
        signature: checked.signature().clone(),
        signature_change: checked.signature_change.clone(),
        layout,
        artifact,
        optimized,
        engine: Some(checked.choice.clone()),
        smoke_shapes: checked.engine.smoke_shapes().map(<[Vec<usize>]>::to_vec),
        signer: None,
    }
}
