//! `modelctl rollout start|status|advance|pause|resume|abort|promote`: the publisher's rollout
//! actions, on a registry directly or through the deployed publisher Lambda.

use std::collections::BTreeMap;

use clap::Subcommand;
use modelpipe_core::{AliasName, ModelName};
use modelpipe_registry::rollout::actions::{
    self, Operator, RolloutAnswer, RolloutReport, RolloutRequest,
};

use crate::target::{CliResult, Target};

#[derive(Subcommand)]
pub enum RolloutCommand {
    /// Roll CANDIDATE out against the version ALIAS points at, step by step on evidence.
    Start {
        model: ModelName,
        candidate: u64,
        #[arg(long, default_value = "live")]
        alias: AliasName,
        /// canary (5 %, 25 %, 50 %) or shadow (100 % shadowed first).
        #[arg(long, default_value = "canary")]
        plan: String,
        /// A plan setting: steps=5,25,50 · shadow=PERCENT · bake=5m · min-requests=N ·
        /// max-error-increase=0.01 · max-p99-ratio=1.5 · min-agreement=0.99 · max-drift=0.2
        /// (fails a candidate whose inputs drifted further from its baseline).
        #[arg(long = "set", value_name = "KEY=VALUE", value_parser = setting)]
        settings: Vec<(String, String)>,
    },
    /// Every rollout of MODEL (or of all models), its split and the current step's evidence.
    Status {
        model: Option<ModelName>,
    },
    /// Run the controller once, as the schedule does.
    Advance {
        model: Option<ModelName>,
    },
    /// Stop the controller; the split stays as it is.
    Pause(OperatorArgs),
    Resume(OperatorArgs),
    /// Send the candidate no more traffic; the alias stays on stable.
    Abort(OperatorArgs),
    /// Point the alias at the candidate now.
    Promote(OperatorArgs),
}

#[derive(clap::Args)]
pub struct OperatorArgs {
    model: ModelName,
    #[arg(long, default_value = "live")]
    alias: AliasName,
    /// Act only if the rollout is still at this generation (as `status` showed it).
    #[arg(long)]
    generation: Option<u64>,
    #[arg(long)]
    reason: Option<String>,
}

impl From<OperatorArgs> for Operator {
    fn from(args: OperatorArgs) -> Self {
        Self {
            model: args.model,
            alias: args.alias,
            generation: args.generation,
            reason: args.reason,
        }
    }
}

fn setting(text: &str) -> Result<(String, String), String> {
    let (key, value) = text
        .split_once('=')
        .ok_or_else(|| format!("{text:?} is not KEY=VALUE"))?;
    Ok((key.trim().to_string(), value.trim().to_string()))
}

pub async fn run(target: &Target, command: RolloutCommand) -> CliResult {
    let request = match command {
        RolloutCommand::Start {
            model,
            candidate,
            alias,
            plan,
            settings,
        } => RolloutRequest::Start {
            model,
            alias,
            candidate,
            plan,
            settings: settings.into_iter().collect::<BTreeMap<_, _>>(),
            reason: Some(format!("modelctl rollout start v{candidate}")),
        },
        RolloutCommand::Status { model } => RolloutRequest::Status { model },
        RolloutCommand::Advance { model } => RolloutRequest::Advance { model },
        RolloutCommand::Pause(args) => RolloutRequest::Pause(args.into()),
        RolloutCommand::Resume(args) => RolloutRequest::Resume(args.into()),
        RolloutCommand::Abort(args) => RolloutRequest::Abort(args.into()),
        RolloutCommand::Promote(args) => RolloutRequest::Promote(args.into()),
    };
    let payload = serde_json::to_value(&request).expect("requests serialise");
    let answer: RolloutAnswer = target
        .call(payload, move |registry| {
            actions::apply(registry, &request, None)
        })
        .await?;
    if answer.rollouts.is_empty() {
        println!("no rollouts");
    }
    for report in &answer.rollouts {
        print_report(report);
    }
    Ok(())
}

pub fn print_report(report: &RolloutReport) {
    let r = &report.rollout;
    println!(
        "{}:{} rollout {} (generation {}): v{} → v{}  {:?}, step {} of {}, {:.2} % to the candidate, {:.2} % shadowed",
        r.model,
        r.alias,
        r.id,
        r.generation,
        r.stable,
        r.candidate,
        r.state,
        r.step + 1,
        r.plan.steps.len(),
        f64::from(r.weight) / 100.0,
        f64::from(r.shadow) / 100.0,
    );
    println!("  {}: {}", report.did, report.detail);
    if let Some(e) = &report.evaluation {
        let p99 = |p: Option<f64>| p.map_or("-".into(), |ms| format!("{ms:.3} ms"));
        println!(
            "  evidence (step {}, {:.1} s, {} instances): stable {} requests, {:.2} % errors, p99 {} · candidate {} requests, {:.2} % errors, p99 {}",
            e.step + 1,
            e.baked_ms as f64 / 1000.0,
            e.instances,
            e.stable.requests,
            e.stable.error_rate * 100.0,
            p99(e.stable.p99_ms),
            e.candidate.requests,
            e.candidate.error_rate * 100.0,
            p99(e.candidate.p99_ms),
        );
        if let Some(shadow) = &e.shadow {
            let share = |a: Option<f64>| a.map_or("-".into(), |a| format!("{:.2} %", a * 100.0));
            let diff = |d: Option<f64>| d.map_or("-".into(), |d| format!("{d:.3e}"));
            println!(
                "  shadow: {} runs ({} failed, {} skipped), {} rows compared, agreement {}, |Δ| p50 {} p99 {}",
                shadow.runs,
                shadow.errors,
                shadow.skipped,
                shadow.rows,
                share(shadow.agreement),
                diff(shadow.abs_diff_p50),
                diff(shadow.abs_diff_p99),
            );
        }
        if let Some(drift) = &e.drift {
            let over: Vec<String> = drift
                .over
                .iter()
                .map(|(f, d)| format!("{f} {d:.3}"))
                .collect();
            println!(
                "  drift: {} candidate rows; over max-drift: {}",
                drift.rows,
                if over.is_empty() {
                    "none".into()
                } else {
                    over.join(", ")
                }
            );
        }
    }
}
