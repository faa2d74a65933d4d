//! The operator's commands on a registry directory: status, history, rollback, promote, and the
//! validator's checks offline. Alias moves go through `modelpipe::publish::apply`, the same code
//! as the publisher Lambda.

use std::path::Path;

use modelpipe::checks::{Expectations, check_model};
use modelpipe::contract::Contract;
use modelpipe::publish::{PublisherRequest, PublisherResponse, apply};
use modelpipe::registry::Registry;
use modelpipe::{AliasName, ModelName};

pub type CliResult<T = ()> = Result<T, String>;

pub fn open(registry: &Path) -> CliResult<Registry> {
    if !registry.is_dir() {
        return Err(format!(
            "no registry at {} (start `modelctl dev` or pass --registry DIR)",
            registry.display()
        ));
    }
    Registry::open(registry).map_err(|e| e.to_string())
}

pub fn status(registry: &Registry, model: Option<&ModelName>) -> CliResult {
    let models = match model {
        Some(model) => vec![model.clone()],
        None => registry.models().map_err(|e| e.to_string())?,
    };
    if models.is_empty() {
        println!("no models yet");
    }
    for model in models {
        let versions = registry.versions(&model).map_err(|e| e.to_string())?;
        if versions.is_empty() {
            return Err(format!("model {model} has no versions"));
        }
        let aliases = registry.aliases(&model).map_err(|e| e.to_string())?;
        println!("{model}");
        for (alias, record) in &aliases {
            println!(
                "  {alias:<10} → v{:<4} since {}  ({})",
                record.version, record.updated_at, record.reason
            );
        }
        println!(
            "  {:<8} {:>12}  {:<14} {:<24} source",
            "version", "bytes", "sha256", "validated"
        );
        for version in versions {
            let manifest = registry
                .manifest(&model, version)
                .map_err(|e| e.to_string())?;
            let marks: Vec<&str> = aliases
                .iter()
                .filter(|(_, r)| r.version == version)
                .map(|(a, _)| a.as_str())
                .collect();
            println!(
                "  v{:<7} {:>12}  {:<14} {:<24} {}{}",
                version,
                manifest.size,
                &manifest.sha256[..12],
                manifest.validated_at,
                manifest.source.key,
                if marks.is_empty() {
                    String::new()
                } else {
                    format!("  [{}]", marks.join(", "))
                }
            );
        }
    }
    Ok(())
}

pub fn history(registry: &Registry, model: &ModelName) -> CliResult {
    let history = registry.history(model).map_err(|e| e.to_string())?;
    if history.is_empty() {
        return Err(format!("model {model} has no history"));
    }
    for entry in history {
        let from = entry.from.map_or("-".to_string(), |v| format!("v{v}"));
        println!(
            "{}  {:<8} {:>5} → v{:<4} {:?}  {}",
            entry.at, entry.alias, from, entry.to, entry.action, entry.reason
        );
    }
    Ok(())
}

pub fn move_alias(registry: &Registry, request: PublisherRequest) -> CliResult<PublisherResponse> {
    let response = apply(registry, &request, None).map_err(|e| e.to_string())?;
    let from = response
        .previous
        .map_or("-".to_string(), |v| format!("v{v}"));
    println!(
        "{}:{} {} → v{}",
        response.model, response.alias, from, response.version
    );
    Ok(response)
}

pub fn rollback(
    registry: &Registry,
    model: ModelName,
    alias: AliasName,
    to: Option<u64>,
) -> CliResult<PublisherResponse> {
    let request = match to {
        None => PublisherRequest::Rollback {
            model,
            alias,
            reason: Some("modelctl rollback".into()),
        },
        Some(version) => PublisherRequest::SetAlias {
            model,
            alias,
            version,
            reason: Some(format!("modelctl rollback --to {version}")),
        },
    };
    move_alias(registry, request)
}

pub fn validate(file: &Path, contract: Option<&Path>) -> CliResult {
    let contract = match contract {
        Some(path) => Some(Contract::parse(
            &std::fs::read(path).map_err(|e| format!("{}: {e}", path.display()))?,
        )?),
        None => None,
    };
    if !file.is_file() {
        return Err(format!("{}: no such file", file.display()));
    }
    let checked = check_model(
        file,
        Expectations {
            contract: contract.as_ref(),
            ..Default::default()
        },
    )
    .map_err(|e| format!("rejected: {e}"))?;
    let (sha256, size) = modelpipe::digest::sha256_file(file).map_err(|e| e.to_string())?;
    println!("ok: {} ({size} bytes, sha256 {sha256})", file.display());
    println!("  loads in {:?}", checked.engine.load_time);
    for (kind, specs) in [
        ("input ", &checked.signature().inputs),
        ("output", &checked.signature().outputs),
    ] {
        for spec in specs {
            println!(
                "  {kind} {} {} {}",
                spec.name,
                spec.datatype,
                modelpipe::signature::Shape(&spec.shape)
            );
        }
    }
    if let Some(contract) = &contract {
        println!(
            "  contract: signature matches, {} golden example(s) pass",
            contract.examples.len()
        );
    }
    Ok(())
}
