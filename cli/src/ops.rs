//! The operator's commands: status, history, rollback, promote — on a registry (directory or S3)
//! with the publisher's own code, or through the deployed publisher — and the validator's checks
//! offline.

use std::path::PathBuf;

use modelpipe_core::digest::Digest;
use modelpipe_core::{AliasName, ModelName};
use modelpipe_engine::checks::Expectations;
use modelpipe_engine::contract::Contract;
use modelpipe_registry::Signer;
use modelpipe_registry::fsck::{Leftovers, Severity};
use modelpipe_registry::publish::{
    self, HistoryAnswer, ModelStatus, PublisherQuery, PublisherRequest, PublisherResponse,
    StatusAnswer, apply,
};
use modelpipe_registry::rollout::actions::{
    self as rollout_actions, RolloutAnswer, RolloutRequest,
};
use modelpipe_registry::{Location, Registry};
use modelpipe_signing::SignerPolicy;
use modelpipe_validator::version::{
    check_and_prepare, check_signature, read_contract, signer_policy,
};

use crate::target::{CliResult, Target};

pub async fn status(target: &Target, model: Option<ModelName>) -> CliResult {
    let rollout_request = RolloutRequest::Status {
        model: model.clone(),
    };
    let query = PublisherQuery::Status {
        model: model.clone(),
    };
    let payload = serde_json::to_value(&query).expect("queries serialise");
    let answer: StatusAnswer = target
        .call(payload, move |registry| {
            publish::status(registry, model.as_ref())
        })
        .await?;
    if answer.models.is_empty() {
        println!("no models yet");
    }
    // The split and latest evidence of each alias's rollout, from the same target.
    let payload = serde_json::to_value(&rollout_request).expect("requests serialise");
    let rollouts: RolloutAnswer = target
        .call(payload, move |registry| {
            rollout_actions::apply(registry, &rollout_request, None)
        })
        .await?;
    for status in answer.models {
        print_status(&status);
        for report in rollouts
            .rollouts
            .iter()
            .filter(|r| r.rollout.model == status.model)
        {
            crate::rollout::print_report(report);
        }
    }
    Ok(())
}

fn print_status(status: &ModelStatus) {
    println!("{}", status.model);
    for (alias, record) in &status.aliases {
        println!(
            "  {alias:<10} → v{:<4} since {}  ({})",
            record.version, record.updated_at, record.reason
        );
    }
    println!(
        "  {:<8} {:>12}  {:<14} {:<24} source",
        "version", "bytes", "sha256", "validated"
    );
    for manifest in &status.versions {
        let marks: Vec<&str> = status
            .aliases
            .iter()
            .filter(|(_, r)| r.version == manifest.version)
            .map(|(a, _)| a.as_str())
            .collect();
        println!(
            "  v{:<7} {:>12}  {:<14} {:<24} {}{}",
            manifest.version,
            manifest.size,
            &manifest.sha256[..12.min(manifest.sha256.len())],
            manifest.validated_at,
            manifest.source.key,
            if marks.is_empty() {
                String::new()
            } else {
                format!("  [{}]", marks.join(", "))
            }
        );
        if let Some(signer) = &manifest.signer {
            println!(
                "           signed by {} ({:?}, {})",
                signer.identity, signer.method, signer.trusted
            );
        }
    }
}

pub async fn history(target: &Target, model: ModelName) -> CliResult {
    let query = PublisherQuery::History {
        model: model.clone(),
    };
    let payload = serde_json::to_value(&query).expect("queries serialise");
    let answer: HistoryAnswer = target
        .call(payload, move |registry| publish::history(registry, &model))
        .await?;
    if answer.history.is_empty() {
        return Err(format!("model {} has no history", answer.model));
    }
    for entry in answer.history {
        let from = entry.from.map_or("-".to_string(), |v| format!("v{v}"));
        println!(
            "{}  {:<8} {:>5} → v{:<4} {:?}  {}",
            entry.at, entry.alias, from, entry.to, entry.action, entry.reason
        );
    }
    Ok(())
}

pub async fn move_alias(
    target: &Target,
    request: PublisherRequest,
) -> CliResult<PublisherResponse> {
    let payload = serde_json::to_value(&request).expect("requests serialise");
    let response: PublisherResponse = target
        .call(payload, move |registry| apply(registry, &request, None))
        .await?;
    let from = response
        .previous
        .map_or("-".to_string(), |v| format!("v{v}"));
    println!(
        "{}:{} {} → v{}",
        response.model, response.alias, from, response.version
    );
    Ok(response)
}

pub async fn rollback(
    target: &Target,
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
    move_alias(target, request).await
}

/// `modelctl fsck`: prints every finding; fails when a guarantee is broken.
pub fn fsck(location: &Location, repair: bool, leftover_age: std::time::Duration) -> CliResult {
    if let Location::Dir(dir) = location
        && !dir.is_dir()
    {
        return Err(format!("no registry at {}", dir.display()));
    }
    let registry = Registry::open_at(location, &Default::default()).map_err(|e| e.to_string())?;
    let leftovers = if repair {
        Leftovers::Remove
    } else {
        Leftovers::Report
    };
    let report = registry
        .fsck(leftovers, leftover_age)
        .map_err(|e| e.to_string())?;
    for finding in &report.findings {
        let what = match (finding.severity, finding.repaired) {
            (_, true) => "removed",
            (Severity::Error, _) => "ERROR",
            (Severity::Warning, _) => "warning",
            (Severity::Leftover, _) => "leftover",
        };
        println!("{what:<8} {}: {}", finding.model, finding.message);
    }
    println!(
        "{}: {} models, {} versions, {} aliases, {} rollouts checked; {} errors",
        registry.location(),
        report.models,
        report.versions,
        report.aliases,
        report.rollouts,
        report.errors()
    );
    match report.errors() {
        0 => Ok(()),
        n => Err(format!("{n} consistency errors")),
    }
}

/// `modelctl validate`'s arguments.
#[derive(Debug, Clone, clap::Args)]
pub struct ValidateArgs {
    file: PathBuf,
    #[arg(long)]
    contract: Option<PathBuf>,
    /// Also write the compiled artifact (model.nnef.tar) the validator would store.
    #[arg(long)]
    artifact: Option<PathBuf>,
    /// Use this engine instead of choosing one (as upload metadata engine= does).
    #[arg(long)]
    engine: Option<modelpipe_engine::EngineKind>,
    #[command(flatten)]
    signing: SigningArgs,
}

/// `modelctl validate`'s signature options: the file's OpenSSF signature, checked offline as the
/// validator checks an upload's.
#[derive(Debug, Clone, clap::Args)]
pub struct SigningArgs {
    /// The model's signature bundle (`model_signing sign … --signature FILE`).
    #[arg(long)]
    signature: Option<PathBuf>,
    /// A PEM public key or CA root certificate that may sign it (repeatable); none: the
    /// contract's `signing` policy.
    #[arg(long = "signer")]
    signers: Vec<PathBuf>,
    /// A certificate identity allowed to sign (repeatable; with a CA root).
    #[arg(long = "identity")]
    identities: Vec<String>,
}

impl SigningArgs {
    /// The policy these options name, else the contract's.
    fn policy(&self, contract: Option<&Contract>) -> CliResult<Option<SignerPolicy>> {
        if self.signers.is_empty() {
            return Ok(contract.map(signer_policy).transpose()?.flatten());
        }
        let mut policy = SignerPolicy {
            required: true,
            identities: self.identities.clone(),
            ..Default::default()
        };
        for path in &self.signers {
            let pem =
                std::fs::read_to_string(path).map_err(|e| format!("{}: {e}", path.display()))?;
            match pem.contains("BEGIN CERTIFICATE") {
                true => policy.ca_roots.push(pem),
                false => policy.keys.push(pem),
            }
        }
        policy.trust()?;
        Ok(Some(policy))
    }

    /// Who signed the file whose SHA-256 is `sha256`, if it is signed; an error when the
    /// signature does not verify or a required one is missing.
    fn check(&self, sha256: &str, contract: Option<&Contract>) -> CliResult<Option<Signer>> {
        let policy = self.policy(contract)?;
        let bundle = match &self.signature {
            Some(path) => {
                Some(std::fs::read(path).map_err(|e| format!("{}: {e}", path.display()))?)
            }
            None => None,
        };
        check_signature(bundle.as_deref(), sha256, policy.as_ref())
            .map_err(|e| format!("rejected: {e}"))
    }
}

pub fn validate(args: &ValidateArgs) -> CliResult {
    let ValidateArgs {
        file,
        contract,
        artifact,
        engine,
        signing,
    } = args;
    let (engine, artifact) = (*engine, artifact.as_deref());
    let contract = match contract {
        Some(path) => Some(read_contract(
            &std::fs::read(path).map_err(|e| format!("{}: {e}", path.display()))?,
        )?),
        None => None,
    };
    if !file.is_file() {
        return Err(format!("{}: no such file", file.display()));
    }
    let dir = tempfile::tempdir().map_err(|e| e.to_string())?;
    let expect = Expectations {
        contract: contract.as_ref(),
        engine,
        limits: limits_from_env()?,
        ..Default::default()
    };
    let (checked, compiled) =
        check_and_prepare(file, dir.path(), expect).map_err(|e| format!("rejected: {e}"))?;
    let digest = Digest::of_file(file).map_err(|e| e.to_string())?;
    let signer = signing.check(&digest.sha256, contract.as_ref())?;
    println!(
        "ok: {} ({} bytes, sha256 {})",
        file.display(),
        digest.size,
        digest.sha256
    );
    if let Some(signer) = signer {
        println!(
            "  signed by {} ({:?}, {})",
            signer.identity, signer.method, signer.trusted
        );
    }
    println!("  engine: {}", describe_choice(&checked.choice));
    println!("  loads in {:?}", checked.engine.load_time);
    if let Some(shapes) = checked.engine.smoke_shapes() {
        println!(
            "  smoke input shapes {shapes:?}: the declared dynamic dimensions do not run at 1 (a baked length?)"
        );
    }
    println!("  compiled: {}", describe_compiled(compiled.as_ref()));
    if let Some(out) = artifact {
        if compiled.and_then(|c| c.artifact).is_none() {
            return Err(format!("no artifact to write to {}", out.display()));
        }
        std::fs::copy(dir.path().join(modelpipe_registry::ARTIFACT_FILE), out)
            .map_err(|e| format!("{}: {e}", out.display()))?;
        println!("  artifact written to {}", out.display());
    }
    for (kind, specs) in [
        ("input ", &checked.signature().inputs),
        ("output", &checked.signature().outputs),
    ] {
        for spec in specs {
            println!(
                "  {kind} {} {} {}",
                spec.name,
                spec.datatype,
                modelpipe_core::signature::Shape(&spec.shape)
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

/// `MAX_MODEL_NODES` and `MODEL_LOAD_BUDGET_MS`, as the validator reads them.
pub fn limits_from_env() -> CliResult<modelpipe_engine::Limits> {
    modelpipe_config::Config::from_env()
        .map(|config| config.limits)
        .map_err(|e| e.to_string())
}

/// The engine chosen, why, and each engine's figures, in one line.
pub fn describe_choice(choice: &modelpipe_engine::checks::engines::EngineChoice) -> String {
    let trial = |name: &str, trial: &Option<modelpipe_engine::checks::engines::Trial>| match trial {
        None => None,
        Some(t) => Some(match (&t.error, t.load_ms, t.run_us) {
            (Some(error), _, _) => format!("{name} failed: {error}"),
            (None, Some(load), Some(run)) => format!("{name} loads in {load} ms, runs in {run} µs"),
            (None, Some(load), None) => format!("{name} loads in {load} ms"),
            _ => format!("{name} not timed"),
        }),
    };
    let mut parts = vec![format!("{} ({})", choice.engine, choice.reason)];
    parts.extend(trial("tract", &choice.tract));
    parts.extend(trial("onnxruntime", &choice.onnxruntime));
    if let Some(agreement) = &choice.agreement {
        parts.push(format!(
            "{} on {} probes (max |Δ| {:.2e})",
            if agreement.agree { "agree" } else { "DISAGREE" },
            agreement.probes,
            agreement.max_abs_diff
        ));
    }
    parts.join("; ")
}

/// What ingest prepared to load faster, in one line: tract's layout and artifact, or ONNX
/// Runtime's optimised graph.
pub fn describe_compiled(compiled: Option<&modelpipe_engine::checks::Compiled>) -> String {
    let Some(compiled) = compiled else {
        return "nothing compiled".into();
    };
    let Some(layout) = &compiled.layout else {
        return match (&compiled.optimized, &compiled.no_artifact) {
            (Some(optimized), _) => format!(
                "onnxruntime's optimised graph {:.1} MB, loads in {} ms (model.onnx {} ms)",
                optimized.size as f64 / 1e6,
                optimized.load_ms,
                optimized.model_load_ms
            ),
            (None, Some(reason)) => format!("no optimised graph: {reason}"),
            (None, None) => "no optimised graph".into(),
        };
    };
    let ms = |us: u64| format!("{:.1} ms", us as f64 / 1000.0);
    let layout = match layout.nhwc_us {
        Some(nhwc) => format!(
            "layout {:?} (plain {}, nhwc {})",
            layout.layout,
            ms(layout.plain_us),
            ms(nhwc)
        ),
        None => "layout plain (no convolution)".to_string(),
    }
    .to_lowercase();
    let artifact = match (
        &compiled.artifact,
        compiled.artifact_load,
        &compiled.no_artifact,
    ) {
        (Some(artifact), Some(load), _) => format!(
            "artifact {:.1} MB, loads in {:.0} ms",
            artifact.size as f64 / 1e6,
            load.as_secs_f64() * 1000.0
        ),
        (_, _, Some(reason)) => format!("no artifact: {reason}"),
        _ => "no artifact".to_string(),
    };
    format!("{layout}; {artifact}")
}
