//! `modelctl bake DIR MODEL=FILE...`: a registry directory to bake into a container image. Each
//! file gets the validator's checks (loads in tract, runs, signature compatible with the version
//! before it, `--contract` golden examples) before anything is written; then each becomes the next
//! version of its model with `live` on it, and `baked.json` marks the directory read-only: the
//! inference function serves it without hot reload, and the publisher refuses to move its aliases.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use modelpipe_core::digest::Digest;
use modelpipe_core::signature::Signature;
use modelpipe_core::{AliasName, ModelName};
use modelpipe_engine::checks::{Expectations, check_model};
use modelpipe_engine::contract::Contract;
use modelpipe_registry::publish::{PublisherRequest, apply};
use modelpipe_registry::{BAKED_MARKER, NewVersion, PREPARED_FILES, Registry, Source, now};

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

struct Prepared {
    model: ModelName,
    file: PathBuf,
    version: NewVersion,
    /// What `version` records of the engine choice and the compilation, for the summary line.
    summary: String,
    /// Holds the compiled artifact until the version is committed.
    compiled_dir: tempfile::TempDir,
}

/// Checks every file, then commits each as the next version of its model with `live` on it,
/// then marks the directory baked: all or nothing up to the commits.
pub fn bake(dir: &Path, models: &[ModelFile], contracts: &[ModelFile]) -> CliResult {
    if models.is_empty() {
        return Err("nothing to bake: give at least one MODEL=FILE".into());
    }
    let contract_of = read_contracts(contracts)?;
    let registry = Registry::open(dir).map_err(|e| e.to_string())?;
    // Check every file before writing anything: a bake is all or nothing.
    let checked = check_all(&registry, models, &contract_of)?;
    let marker = dir.join(BAKED_MARKER);
    if marker.exists() {
        std::fs::remove_file(&marker).map_err(|e| format!("{}: {e}", marker.display()))?;
    }
    // Reopened: a registry that was baked before is read-only until its marker is gone.
    let registry = Registry::open(dir).map_err(|e| e.to_string())?;
    let live = commit_all(&registry, checked)?;
    seal(dir, &registry, &live)?;
    println!(
        "baked {} into {} (read-only; serve it with MODEL_ROOT={})",
        models.len(),
        dir.display(),
        dir.display()
    );
    Ok(())
}

/// `--contract MODEL=FILE`s, parsed.
fn read_contracts(contracts: &[ModelFile]) -> CliResult<BTreeMap<ModelName, Contract>> {
    let mut contract_of = BTreeMap::new();
    for c in contracts {
        let bytes = std::fs::read(&c.file).map_err(|e| format!("{}: {e}", c.file.display()))?;
        contract_of.insert(c.model.clone(), Contract::parse(&bytes)?);
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
/// the file before it on the command line, as a later upload would be); nothing is written.
fn check_all(
    registry: &Registry,
    models: &[ModelFile],
    contract_of: &BTreeMap<ModelName, Contract>,
) -> CliResult<Vec<Prepared>> {
    let mut previous = live_signatures(registry)?;
    let limits = crate::ops::limits_from_env()?;
    let mut checked = Vec::new();
    let mut next_version = BTreeMap::new();
    for ModelFile { model, file } in models {
        if !file.is_file() {
            return Err(format!("{model}={}: no such file", file.display()));
        }
        let before = previous.get(model).map(|(v, s)| (*v, s));
        let result = check_model(
            file,
            Expectations {
                live: before,
                contract: contract_of.get(model),
                limits,
                ..Default::default()
            },
        )
        .map_err(|e| format!("{model}={}: rejected: {e}", file.display()))?;
        let signature = result.signature().clone();
        let compiled_dir = tempfile::tempdir().map_err(|e| e.to_string())?;
        let compiled = result.compile(compiled_dir.path());
        let summary = format!(
            "{}; {}",
            crate::ops::describe_choice(&result.choice),
            crate::ops::describe_compiled(compiled.as_ref())
        );
        let digest = Digest::of_file(file).map_err(|e| e.to_string())?;
        let source = Source {
            key: file.display().to_string(),
            ..Default::default()
        };
        let new = result.new_version(digest, source, compiled);
        drop(result);
        let version = match next_version.get(model) {
            Some(&v) => v,
            None => registry
                .versions(model)
                .map_err(|e| e.to_string())?
                .last()
                .map_or(1, |v| v + 1),
        };
        next_version.insert(model.clone(), version + 1);
        previous.insert(model.clone(), (version, signature));
        checked.push(Prepared {
            model: model.clone(),
            file: file.clone(),
            version: new,
            summary,
            compiled_dir,
        });
    }
    Ok(checked)
}

/// Commits each checked file and moves `live` to it; the live version of each model.
fn commit_all(registry: &Registry, checked: Vec<Prepared>) -> CliResult<BTreeMap<String, u64>> {
    let mut live = BTreeMap::new();
    for Prepared {
        model,
        file,
        version,
        summary,
        compiled_dir,
    } in checked
    {
        let version = commit(registry, &model, &file, version, &compiled_dir)?;
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
        live.insert(model.to_string(), version);
    }
    Ok(live)
}

/// Leaves only committed versions in the directory and writes the marker that makes it
/// read-only.
fn seal(dir: &Path, registry: &Registry, live: &BTreeMap<String, u64>) -> CliResult {
    for model in registry.models().map_err(|e| e.to_string())? {
        // Only committed versions go into the image.
        let _ = std::fs::remove_dir_all(dir.join(model.as_str()).join("staging"));
        let _ = std::fs::remove_file(dir.join(model.as_str()).join(".lock"));
    }
    let stamp = serde_json::json!({
        "baked_at": now(),
        "modelctl": env!("CARGO_PKG_VERSION"),
        "live": live,
    });
    let marker = dir.join(BAKED_MARKER);
    std::fs::write(&marker, serde_json::to_vec_pretty(&stamp).expect("json"))
        .map_err(|e| format!("{}: {e}", marker.display()))
}

fn commit(
    registry: &Registry,
    model: &ModelName,
    file: &Path,
    version: NewVersion,
    compiled_dir: &tempfile::TempDir,
) -> CliResult<u64> {
    let staging = registry.stage(model).map_err(|e| e.to_string())?;
    std::fs::copy(file, staging.model_path()).map_err(|e| format!("{}: {e}", file.display()))?;
    for file in PREPARED_FILES {
        let prepared = compiled_dir.path().join(file);
        if prepared.is_file() {
            std::fs::copy(&prepared, staging.dir().join(file))
                .map_err(|e| format!("{file}: {e}"))?;
        }
    }
    Ok(registry
        .commit(model, staging, version)
        .map_err(|e| e.to_string())?
        .version())
}
