//! What a rollout goes through: steps (a weight and a shadow share, baked for a minimum time and
//! a minimum number of requests per arm) and the gates every step must pass. Named plans
//! (`canary`, `shadow`) with overrides are how uploads and `modelctl rollout start` choose one.

use std::collections::BTreeMap;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use modelpipe_core::requested_rollout::RequestedRollout;

/// Weights and shares are out of this many requests.
pub const BASIS: u32 = 10_000;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Plan {
    /// `canary`, `shadow`, or `custom`.
    pub name: String,
    pub steps: Vec<Step>,
    pub gates: Gates,
}

impl Plan {
    /// The plan `requested` names, with its settings; or why there is none (the one check an
    /// upload's `rollout=` metadata, a contract's `rollout` and `rollout-start` all get).
    pub fn requested(requested: &RequestedRollout) -> Result<Self, String> {
        PlanOptions::with_settings(&requested.plan, &requested.settings)
            .and_then(|options| options.build())
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Step {
    /// Of 10,000 requests, how many the candidate answers during this step.
    pub weight: u32,
    /// Of 10,000 requests stable answers, how many also run on the candidate.
    pub shadow: u32,
    /// The step passes no earlier than this long after it began.
    pub min_bake_ms: u64,
    /// Nor before each compared arm has answered this many requests in the step.
    pub min_requests: u64,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Gates {
    /// The candidate fails when its error rate exceeds stable's over the same step by more
    /// than this (0.01: one point).
    pub max_error_rate_increase: f64,
    /// The candidate fails when its p99 latency exceeds stable's × this ratio plus
    /// `p99_slack_ms` over the same step.
    pub max_p99_ratio: f64,
    pub p99_slack_ms: f64,
    /// In shadow, the candidate fails when fewer of its answers agree with stable's (the same
    /// top-1 class; a regression within 1e-4 + 1e-3·|stable|) than this share.
    pub min_agreement: f64,
    /// When set, the candidate fails when a feature of the traffic it answered drifted further
    /// than this (L∞) from its baseline — beyond sampling noise — in the publisher's latest drift
    /// report; a step does not pass before such a report exists.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_drift: Option<f64>,
}

impl Default for Gates {
    fn default() -> Self {
        Self {
            max_error_rate_increase: 0.01,
            max_p99_ratio: 1.5,
            p99_slack_ms: 5.0,
            min_agreement: 0.99,
            max_drift: None,
        }
    }
}

/// How a plan's steps are built: `steps` as percentages of traffic, each baked `bake` for
/// `min_requests` per arm; a shadow plan runs `shadow_percent` of requests on the candidate at
/// weight 0 first.
#[derive(Debug, Clone, PartialEq)]
pub struct PlanOptions {
    pub name: String,
    pub steps: Vec<f64>,
    pub shadow_percent: f64,
    pub bake: Duration,
    pub min_requests: u64,
    pub gates: Gates,
}

impl PlanOptions {
    /// The named plan's defaults: `canary` (5 %, 25 %, 50 %, then promotion) or `shadow`
    /// (100 % shadowed first, then the canary's steps).
    pub fn named(name: &str) -> Result<Self, String> {
        let shadow_percent = match name {
            "canary" => 0.0,
            "shadow" => 100.0,
            other => {
                return Err(format!(
                    "unknown rollout plan {other:?}: use canary or shadow"
                ));
            }
        };
        Ok(Self {
            name: name.to_string(),
            steps: vec![5.0, 25.0, 50.0],
            shadow_percent,
            bake: Duration::from_secs(300),
            min_requests: 100,
            gates: Gates::default(),
        })
    }

    /// The named plan with these settings instead of its defaults: `steps` (percentages,
    /// comma-separated), `shadow` (percent), `bake` (a duration: `90s`, `5m`), `min-requests`,
    /// `max-error-increase`, `max-p99-ratio`, `min-agreement`, `max-drift` (upload metadata spells them
    /// `rollout-steps` and so on). An unknown setting is refused.
    pub fn with_settings(name: &str, settings: &BTreeMap<String, String>) -> Result<Self, String> {
        const KNOWN: [&str; 8] = [
            "steps",
            "shadow",
            "bake",
            "min-requests",
            "max-error-increase",
            "max-p99-ratio",
            "min-agreement",
            "max-drift",
        ];
        if let Some(unknown) = settings.keys().find(|k| !KNOWN.contains(&k.as_str())) {
            return Err(format!(
                "unknown rollout setting {unknown:?}: use {}",
                KNOWN.join(", ")
            ));
        }
        let mut options = Self::named(name.trim())?;
        let get = |key: &str| settings.get(key).map(|v| v.trim());
        let number = |key: &str, text: &str| -> Result<f64, String> {
            text.parse::<f64>()
                .ok()
                .filter(|n| n.is_finite() && *n >= 0.0)
                .ok_or_else(|| format!("rollout {key}={text:?} is not a non-negative number"))
        };
        if let Some(text) = get("steps") {
            options.steps = text
                .split(',')
                .map(|step| number("steps", step.trim()))
                .collect::<Result<_, _>>()?;
        }
        if let Some(text) = get("shadow") {
            options.shadow_percent = number("shadow", text)?;
        }
        if let Some(text) = get("bake") {
            options.bake = humantime::parse_duration(text)
                .map_err(|e| format!("rollout bake={text:?}: {e}"))?;
        }
        if let Some(text) = get("min-requests") {
            options.min_requests = text
                .parse()
                .map_err(|_| format!("rollout min-requests={text:?} is not a whole number"))?;
        }
        if let Some(text) = get("max-error-increase") {
            options.gates.max_error_rate_increase = number("max-error-increase", text)?;
        }
        if let Some(text) = get("max-p99-ratio") {
            options.gates.max_p99_ratio = number("max-p99-ratio", text)?;
        }
        if let Some(text) = get("min-agreement") {
            options.gates.min_agreement = number("min-agreement", text)?;
        }
        if let Some(text) = get("max-drift") {
            options.gates.max_drift = Some(number("max-drift", text)?);
        }
        Ok(options)
    }

    pub fn build(&self) -> Result<Plan, String> {
        let basis = |percent: f64, what: &str| -> Result<u32, String> {
            if !(0.0..=100.0).contains(&percent) {
                return Err(format!("{what} {percent} is not a percentage (0 to 100)"));
            }
            Ok((percent * f64::from(BASIS) / 100.0).round() as u32)
        };
        let step = |weight, shadow| Step {
            weight,
            shadow,
            min_bake_ms: self.bake.as_millis() as u64,
            min_requests: self.min_requests,
        };
        let mut steps = Vec::new();
        let shadow = basis(self.shadow_percent, "the shadow share")?;
        if shadow > 0 {
            steps.push(step(0, shadow));
        }
        let mut last = 0;
        for &percent in &self.steps {
            let weight = basis(percent, "a step")?;
            if weight <= last || weight >= BASIS {
                return Err(format!(
                    "rollout steps must rise and stay under 100 %: {:?}",
                    self.steps
                ));
            }
            steps.push(step(weight, 0));
            last = weight;
        }
        if steps.is_empty() {
            return Err("a rollout needs at least one step".into());
        }
        if !(0.0..=1.0).contains(&self.gates.min_agreement) {
            return Err(format!(
                "min agreement {} is not a share (0 to 1)",
                self.gates.min_agreement
            ));
        }
        if let Some(limit) = self.gates.max_drift
            && !(0.0..=1.0).contains(&limit)
        {
            return Err(format!("max drift {limit} is not an L∞ distance (0 to 1)"));
        }
        Ok(Plan {
            name: self.name.clone(),
            steps,
            gates: self.gates.clone(),
        })
    }
}
