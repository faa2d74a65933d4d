//! `modelctl bake DIR MODEL=FILE...`: a registry directory to bake into a container image. Each
//! file gets the validator's checks and preparation (`modelpipe_validator::version`:
//! loads, runs, signature compatible with the version before it, `--contract` golden examples,
//! the engine choice) before anything is written; then each is staged (`Registry::stage_copy`) and becomes the next version of its
//! model with `live` on it (the publisher's publish, held to the model's signer policy: a
//! `FILE.sig` beside each file is verified as an upload's), and the registry is sealed read-only
//! (`Registry::seal`): the inference function serves it without hot reload, and the publisher
//! refuses to move its aliases.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use modelpipe_core::digest::Digest;
use modelpipe_core::signature::Signature;
use modelpipe_core::{AliasName, ModelName};
use modelpipe_engine::checks::Expectations;
use modelpipe_engine::contract::Contract;
use modelpipe_registry::publish::{PublisherRequest, apply};
use modelpipe_registry::{NewVersion, Registry, Source};
use modelpipe_registry::{SIGNATURE_FILE, Signer};
use modelpipe_signing::{SIGNATURE_SUFFIX, SignerPolicy};
use modelpipe_validator::version::{
    check_and_prepare, check_signature, new_version, read_contract, signer_policy,
};

use crate::target::CliResult;

/// `MODEL=FILE` on the command line.
#[derive(Debug, Clone)]
pub struct ModelFile {
    pub model: ModelName,
    pub file: PathBuf,
}

impl std::str::FromStr for ModelFile {
    type Err = String;

    fn from_str(arg: &str) -> Result<Self, String> {
        let (model, file) = arg
            .split_once('=')
            .ok_or_else(|| format!("{arg:?}: expected MODEL=FILE"))?;
        Ok(Self {
            model: model.parse().map_err(|e| format!("{arg:?}: {e}"))?,
            file: PathBuf::from(file),
        })
    }
}

/// A file checked as the validator checks it, with what ingest prepared for it in a directory
/// of its own: staged and committed only once every file has passed.
struct Ready {
    model: ModelName,
    file: PathBuf,
    prepared: tempfile::TempDir,
    version: NewVersion,
    /// What `version` records of the engine choice and the compilation, for the summary line.
    summary: String,
}

/// Checks every file, then commits each as the next version of its model with `live` on it,
/// then seals the directory: all or nothing up to the commits.
pub fn bake(dir: &Path, models: &[ModelFile], contracts: &[ModelFile]) -> CliResult {
    if models.is_empty() {
        return Err("nothing to bake: give at least one MODEL=FILE".into());
    }
    let contract_of = read_contracts(contracts)?;
    // As in the validator and publisher: a contract's `signing`, else SIGNING_POLICY.
    let mut policy_of = BTreeMap::new();
    for (model, contract) in &contract_of {
        policy_of.insert(model.clone(), signer_policy(contract)?);
    }
    let default = modelpipe_config::signing_policy(std::env::var("SIGNING_POLICY").ok())
        .map_err(|e| e.to_string())?;
    let registry = Registry::open(dir).map_err(|e| e.to_string())?;
    // Check every file before writing anything: a bake is all or nothing.
    let policy = |model: &ModelName| {
        let own = policy_of.get(model).cloned().flatten();
        own.or_else(|| default.clone())
    };
    let ready = check_all(&registry, models, &contract_of, &policy)?;
    // A registry that was baked before is read-only until unsealed.
    let registry = Registry::unseal(dir)
        .map_err(|e| e.to_string())?
        .with_signing_default(default.clone());
    record_policies(&registry, &policy_of)?;
    commit_all(&registry, ready)?;
    registry
        .seal(env!("CARGO_PKG_VERSION"))
        .map_err(|e| e.to_string())?;
    println!(
        "baked {} into {} (read-only; serve it with MODEL_ROOT={})",
        models.len(),
        dir.display(),
        dir.display()
    );
    Ok(())
}

/// `--contract MODEL=FILE`s, read as the validator reads `contract.json`.
fn read_contracts(contracts: &[ModelFile]) -> CliResult<BTreeMap<ModelName, Contract>> {
    let mut contract_of = BTreeMap::new();
    for c in contracts {
        let bytes = std::fs::read(&c.file).map_err(|e| format!("{}: {e}", c.file.display()))?;
        contract_of.insert(c.model.clone(), read_contract(&bytes)?);
    }
    Ok(contract_of)
}

/// Each model's live version and its signature, as the registry holds them now.
fn live_signatures(registry: &Registry) -> CliResult<BTreeMap<ModelName, (u64, Signature)>> {
    let mut previous = BTreeMap::new();
    for model in registry.models().map_err(|e| e.to_string())? {
        if let Some(alias) = registry
            .alias(&model, &AliasName::live())
            .map_err(|e| e.to_string())?
        {
            let manifest = registry
                .manifest(&model, alias.version)
                .map_err(|e| e.to_string())?;
            previous.insert(model, (alias.version, manifest.signature));
        }
    }
    Ok(previous)
}

/// The validator's checks on every file, each against the version before it (the live one, or
/// the file before it on the command line, as a later upload would be); nothing is committed.
fn check_all(
    registry: &Registry,
    models: &[ModelFile],
    contract_of: &BTreeMap<ModelName, Contract>,
    policy_of: &dyn Fn(&ModelName) -> Option<SignerPolicy>,
) -> CliResult<Vec<Ready>> {
    let mut previous = live_signatures(registry)?;
    let limits = crate::ops::limits_from_env()?;
    let mut ready = Vec::new();
    let mut next_version = BTreeMap::new();
    for ModelFile { model, file } in models {
        let rejected =
            |e: &dyn std::fmt::Display| format!("{model}={}: rejected: {e}", file.display());
        if !file.is_file() {
            return Err(format!("{model}={}: no such file", file.display()));
        }
        let prepared = tempfile::tempdir().map_err(|e| e.to_string())?;
        let digest = Digest::of_file(file).map_err(|e| format!("{}: {e}", file.display()))?;
        let signer = signer_of(
            file,
            &digest.sha256,
            policy_of(model).as_ref(),
            prepared.path(),
        )
        .map_err(|e| rejected(&e))?;
        let expect = Expectations {
            live: previous.get(model).map(|(v, s)| (*v, s)),
            contract: contract_of.get(model),
            limits,
            ..Default::default()
        };
        let (checked, compiled) =
            check_and_prepare(file, prepared.path(), expect).map_err(|e| rejected(&e))?;
        let summary = format!(
            "{}; {}",
            crate::ops::describe_choice(&checked.choice),
            crate::ops::describe_compiled(compiled.as_ref())
        );
        let source = Source {
            key: file.display().to_string(),
            ..Default::default()
        };
        let mut version = new_version(&checked, digest, source, compiled);
        version.signer = signer;
        // The next file of this model is checked against this one, as its upload would be.
        let number = match next_version.get(model) {
            Some(&v) => v,
            None => registry
                .versions(model)
                .map_err(|e| e.to_string())?
                .last()
                .map_or(1, |v| v + 1),
        };
        next_version.insert(model.clone(), number + 1);
        previous.insert(model.clone(), (number, checked.signature().clone()));
        ready.push(Ready {
            model: model.clone(),
            file: file.clone(),
            prepared,
            version,
            summary,
        });
    }
    Ok(ready)
}

/// The signature beside `file` (`FILE.sig`, as `model_signing` names it) checked as the validator
/// checks an upload's, and staged into `prepared` to be kept with the version.
fn signer_of(
    file: &Path,
    sha256: &str,
    policy: Option<&SignerPolicy>,
    prepared: &Path,
) -> CliResult<Option<Signer>> {
    let path = PathBuf::from(format!("{}{SIGNATURE_SUFFIX}", file.display()));
    let bundle = match std::fs::read(&path) {
        Ok(bundle) => Some(bundle),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
        Err(e) => return Err(format!("{}: {e}", path.display())),
    };
    let signer = check_signature(bundle.as_deref(), sha256, policy)
        .map_err(|e| format!("{}: {e}", path.display()))?;
    if let (Some(bundle), Some(_)) = (&bundle, &signer) {
        std::fs::write(prepared.join(SIGNATURE_FILE), bundle).map_err(|e| e.to_string())?;
    }
    Ok(signer)
}

/// Records each `--contract`'s signer policy in the registry, as the validator does on an
/// upload: the baked registry's moves are held to it.
fn record_policies(
    registry: &Registry,
    policy_of: &BTreeMap<ModelName, Option<SignerPolicy>>,
) -> CliResult {
    for (model, policy) in policy_of {
        registry
            .lock(model)
            .and_then(|locked| locked.write_signer_policy(policy.as_ref()))
            .map_err(|e| e.to_string())?;
    }
    Ok(())
}

/// Stages and commits each checked file and moves `live` to it.
fn commit_all(registry: &Registry, ready: Vec<Ready>) -> CliResult {
    for Ready {
        model,
        file,
        prepared,
        version,
        summary,
    } in ready
    {
        let staging = registry
            .stage_copy(&model, &file, prepared.path())
            .map_err(|e| e.to_string())?;
        let version = registry
            .commit(&model, staging, version)
            .map_err(|e| e.to_string())?
            .version();
        apply(
            registry,
            &PublisherRequest::Publish {
                model: model.clone(),
                version,
                alias: AliasName::live(),
                reason: Some(format!("modelctl bake {}", file.display())),
            },
            None,
        )
        .map_err(|e| e.to_string())?;
        println!("{model} v{version} ← {} (live; {summary})", file.display());
    }
    Ok(())
}
