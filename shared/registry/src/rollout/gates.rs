//! The controller's decision for a running step, as a pure function of the plan, the step's
//! summed evidence and how long it has baked. The candidate side is the candidate arm plus its
//! shadow runs; both sides are judged over the same step, never against absolute thresholds.
//!
//! Failures are checked first, as soon as both sides have `min_requests`; a pass also needs the
//! bake time, and the shadow's comparisons when the step shadows. Anything short of that waits:
//! too little data never passes.

use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::evidence::{ArmStats, StepEvidence};
use super::plan::{Gates, Step};

#[derive(Debug, Clone, PartialEq)]
pub enum Decision {
    /// Not enough evidence yet, and why.
    Wait(String),
    Pass,
    /// The candidate is worse than stable, and how.
    Fail(String),
}

/// The numbers a decision was made on, as the rollout log and `modelctl rollout status` show.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Evaluation {
    pub step: usize,
    pub baked_ms: u64,
    /// Inference instances whose evidence was summed.
    pub instances: usize,
    pub stable: ArmSummary,
    /// The candidate arm with its shadow runs.
    pub candidate: ArmSummary,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub shadow: Option<ShadowSummary>,
    /// The candidate's drift, when the plan gates on it and a report since the step began exists.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub drift: Option<DriftSummary>,
}

/// The candidate's traffic against its baseline, from the publisher's drift report.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DriftSummary {
    pub rows: u64,
    /// Features further than the gate's `max_drift` (and than sampling noise), with their L∞.
    pub over: Vec<(String, f64)>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ArmSummary {
    pub requests: u64,
    pub errors: u64,
    pub error_rate: f64,
    /// Of the model's run, in milliseconds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub p99_ms: Option<f64>,
}

impl ArmSummary {
    fn of(stats: &ArmStats) -> Self {
        Self {
            requests: stats.requests,
            errors: stats.errors,
            error_rate: if stats.requests == 0 {
                0.0
            } else {
                stats.errors as f64 / stats.requests as f64
            },
            p99_ms: stats.latency_us.quantile(0.99).map(|us| us / 1000.0),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ShadowSummary {
    pub runs: u64,
    pub errors: u64,
    pub skipped: u64,
    pub rows: u64,
    /// Share of compared rows that agreed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub agreement: Option<f64>,
    /// Quantiles of |candidate − stable| over regression outputs.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub abs_diff_p50: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub abs_diff_p99: Option<f64>,
}

/// Requests each arm needs in a step before their p99s are compared.
pub const LATENCY_SAMPLES: u64 = 100;

/// Summarises a step's evidence.
pub fn summarise(
    step_index: usize,
    evidence: &StepEvidence,
    instances: usize,
    baked: Duration,
) -> Evaluation {
    let mut candidate = evidence.candidate.clone();
    candidate.merge(&evidence.shadow.runs);
    let shadow = &evidence.shadow;
    let shadowed = shadow.runs.requests > 0 || shadow.skipped > 0;
    Evaluation {
        step: step_index,
        baked_ms: baked.as_millis() as u64,
        instances,
        stable: ArmSummary::of(&evidence.stable),
        candidate: ArmSummary::of(&candidate),
        shadow: shadowed.then(|| ShadowSummary {
            runs: shadow.runs.requests,
            errors: shadow.runs.errors,
            skipped: shadow.skipped,
            rows: shadow.rows,
            agreement: (shadow.rows > 0).then(|| shadow.agreed_rows as f64 / shadow.rows as f64),
            abs_diff_p50: shadow.abs_diff.quantile(0.5),
            abs_diff_p99: shadow.abs_diff.quantile(0.99),
        }),
        drift: None,
    }
}

/// The decision on a step (`step`, the plan's) from its evaluation.
pub fn decide(step: &Step, gates: &Gates, evaluation: &Evaluation) -> Decision {
    let (stable, candidate) = (&evaluation.stable, &evaluation.candidate);
    let needed = step.min_requests.max(1);
    if stable.requests >= needed && candidate.requests >= needed {
        if candidate.error_rate > stable.error_rate + gates.max_error_rate_increase {
            return Decision::Fail(format!(
                "candidate error rate {:.2} % over {} requests, stable {:.2} % over {} (at most {:.2} points more allowed)",
                candidate.error_rate * 100.0,
                candidate.requests,
                stable.error_rate * 100.0,
                stable.requests,
                gates.max_error_rate_increase * 100.0
            ));
        }
        // Over fewer runs a p99 is the slowest one or two: one cold cache would decide.
        let latency_judged = stable.requests.min(candidate.requests) >= LATENCY_SAMPLES;
        if latency_judged && let (Some(c), Some(s)) = (candidate.p99_ms, stable.p99_ms) {
            let limit = s * gates.max_p99_ratio + gates.p99_slack_ms;
            if c > limit {
                return Decision::Fail(format!(
                    "candidate p99 {c:.3} ms, stable {s:.3} ms (at most {limit:.3} ms allowed)"
                ));
            }
        }
    }
    let shadow = evaluation.shadow.as_ref();
    if step.shadow > 0
        && let Some(shadow) = shadow
        && shadow.rows >= needed
        && let Some(agreement) = shadow.agreement
        && agreement < gates.min_agreement
    {
        return Decision::Fail(format!(
            "shadow agreement {:.2} % over {} rows (at least {:.2} % needed)",
            agreement * 100.0,
            shadow.rows,
            gates.min_agreement * 100.0
        ));
    }
    if let (Some(limit), Some(drift)) = (gates.max_drift, &evaluation.drift)
        && let Some((feature, distance)) = drift.over.first()
    {
        return Decision::Fail(format!(
            "candidate inputs drifted: {feature} is {distance:.3} from its baseline (at most {limit} allowed) over {} rows",
            drift.rows
        ));
    }
    if evaluation.baked_ms < step.min_bake_ms {
        return Decision::Wait(format!(
            "baking: {:.1} s of {:.1} s",
            evaluation.baked_ms as f64 / 1000.0,
            step.min_bake_ms as f64 / 1000.0
        ));
    }
    for (arm, requests) in [
        ("stable", stable.requests),
        ("candidate", candidate.requests),
    ] {
        if requests < needed {
            return Decision::Wait(format!(
                "{arm} has answered {requests} of the {needed} requests the step needs"
            ));
        }
    }
    if gates.max_drift.is_some() && evaluation.drift.is_none() {
        return Decision::Wait(
            "max-drift: no drift report of the candidate since the step began (is capture on? the model's monitoring.capture_share or CAPTURE_SHARE)".into(),
        );
    }
    if step.shadow > 0 {
        let rows = shadow.map_or(0, |s| s.rows);
        if rows < needed {
            return Decision::Wait(format!(
                "the shadow has compared {rows} of the {needed} answers the step needs"
            ));
        }
    }
    Decision::Pass
}
