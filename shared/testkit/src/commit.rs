//! The one way a test or a benchmark puts a version into a registry: stage, write the bytes,
//! describe the version (unchecked, or checked as the validator checks it), commit under the
//! model's lock.

use modelpipe_core::ModelName;
use modelpipe_core::digest::Digest;
use modelpipe_engine::EngineKind;
use modelpipe_engine::checks::{Expectations, check_model};
use modelpipe_registry::{NewVersion, Registry};
use modelpipe_validator::version::new_version;

/// Whether a checked version gets what ingest adds for tract (the layout trial and the compiled
/// artifact), or is committed as a version from before artifacts existed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Compile {
    Yes,
    No,
}

/// Commits `bytes` as the next version of `model` without loading them (a version whose
/// signature is empty); returns its number. For tests of the registry's own rules.
pub fn commit_bytes(registry: &Registry, model: &ModelName, bytes: &[u8]) -> u64 {
    let staging = registry.stage(model).expect("stage");
    std::fs::write(staging.model_path(), bytes).expect("write the staged model");
    let new = NewVersion {
        digest: Digest::of_bytes(bytes),
        ..Default::default()
    };
    registry
        .commit(model, staging, new)
        .expect("commit")
        .version()
}

/// Commits the ONNX model `bytes` as the validator would (checked; `engine` forces one, as the
/// upload metadata does), with no contract; returns the version's number. Panics when the
/// model fails its checks.
pub fn commit_checked(
    registry: &Registry,
    model: &ModelName,
    bytes: &[u8],
    engine: Option<EngineKind>,
    compile: Compile,
) -> u64 {
    let staging = registry.stage(model).expect("stage");
    std::fs::write(staging.model_path(), bytes).expect("write the staged model");
    let expect = Expectations {
        engine,
        ..Default::default()
    };
    let checked = check_model(&staging.model_path(), expect).expect("the model passes its checks");
    let compiled = match compile {
        Compile::Yes => checked.compile(staging.dir()),
        Compile::No => None,
    };
    let new = new_version(
        &checked,
        Digest::of_bytes(bytes),
        Default::default(),
        compiled,
    );
    drop(checked);
    registry
        .commit(model, staging, new)
        .expect("commit")
        .version()
}
