//! Guarded rollouts: a candidate version served to a growing share of an alias's traffic (and,
//! in shadow, run beside the stable version without answering), promoted or rolled back by the
//! evidence inference records. The rollout is a registry object beside its alias:
//!
//! ```text
//! <root>/<model>/rollouts/<alias>.json                         the alias's latest rollout
//! <root>/<model>/rollouts.jsonl                                every decision, with its numbers
//! <root>/<model>/rollouts/<alias>/<id>/step-<k>/<instance>.json what one inference instance saw
//! ```
//!
//! Every change is a compare-and-swap on the rollout's `generation`, under the model's lock; the
//! alias (`stable`) is moved only by promotion. [`plan`] is what a rollout goes through,
//! [`evidence`] what inference records, [`gates`] the pure decision, [`transition`] the state
//! machine, [`actions`] the publisher's rollout actions.

pub mod actions;
pub mod evidence;
pub mod gates;
pub mod plan;
pub mod split;
pub mod transition;

use serde::{Deserialize, Serialize};

pub use self::evidence::{ArmStats, Histogram, InstanceEvidence, ShadowStats, StepEvidence};
pub use self::gates::{Decision, Evaluation};
pub use self::plan::{Gates, Plan, Step};
pub use self::transition::Did;
use crate::{Locked, Registry, Result};
use modelpipe_core::model_name::{AliasName, ModelName};
use modelpipe_core::time::Timestamp;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RolloutState {
    /// Written by `rollout-start`; the candidate's file is being checked. No traffic yet.
    Preparing,
    /// The controller moves it through its steps.
    Running,
    /// An operator stopped the controller; the split stays as it is.
    Paused,
    /// The alias points at the candidate.
    Promoted,
    /// The candidate gets no traffic; the alias never moved.
    RolledBack,
}

impl RolloutState {
    /// Whether the rollout still holds its alias (another one cannot start).
    pub fn is_active(self) -> bool {
        matches!(self, Self::Preparing | Self::Running | Self::Paused)
    }
}

/// `rollouts/<alias>.json`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Rollout {
    /// 1 for a model's first rollout on this alias, then one more each time.
    pub id: u64,
    pub model: ModelName,
    pub alias: AliasName,
    /// The version the alias points at; untouched until promotion.
    pub stable: u64,
    pub candidate: u64,
    pub state: RolloutState,
    /// The index in `plan.steps` of the step being baked.
    pub step: usize,
    /// Of 10,000 requests, how many the candidate answers.
    pub weight: u32,
    /// Of 10,000 requests stable answers, how many are also run on the candidate.
    pub shadow: u32,
    /// The request parameter (`parameters.<sticky_key>`) or header (`_` as `-`) whose value
    /// keeps a caller on one arm; requests without one are split at random.
    pub sticky_key: String,
    /// Mixed into the hash so each rollout splits callers afresh.
    pub salt: String,
    pub plan: Plan,
    /// Incremented by every write; a write expecting another generation is refused.
    pub generation: u64,
    pub started_at: Timestamp,
    /// When the current step began (its bake time counts from here).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub step_started_at: Option<Timestamp>,
    pub updated_at: Timestamp,
    /// Why it is in its state.
    pub reason: String,
}

impl Rollout {
    /// What inference should do now: no traffic to the candidate unless the rollout runs or is
    /// paused mid-way.
    pub fn routes_traffic(&self) -> bool {
        matches!(self.state, RolloutState::Running | RolloutState::Paused)
            && (self.weight > 0 || self.shadow > 0)
    }
}

/// Who made a rollout decision.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Actor {
    /// The publisher's `rollout-advance` (a schedule in AWS, a tick in `modelctl dev`).
    Controller,
    Operator,
    /// The registry, repairing a rollout an alias move (or a crash mid-promotion) left behind.
    Registry,
}

/// One line of `rollouts.jsonl`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RolloutEvent {
    pub id: u64,
    pub alias: AliasName,
    /// The generation this decision wrote.
    pub generation: u64,
    pub action: Did,
    pub by: Actor,
    pub state: RolloutState,
    pub step: usize,
    pub weight: u32,
    pub shadow: u32,
    pub stable: u64,
    pub candidate: u64,
    pub reason: String,
    /// The numbers the controller decided on.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub evidence: Option<Evaluation>,
    pub at: Timestamp,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub request_id: Option<String>,
}

impl RolloutEvent {
    pub fn of(rollout: &Rollout, action: Did, by: Actor, evidence: Option<Evaluation>) -> Self {
        Self {
            id: rollout.id,
            alias: rollout.alias.clone(),
            generation: rollout.generation,
            action,
            by,
            state: rollout.state,
            step: rollout.step,
            weight: rollout.weight,
            shadow: rollout.shadow,
            stable: rollout.stable,
            candidate: rollout.candidate,
            reason: rollout.reason.clone(),
            evidence,
            at: rollout.updated_at,
            request_id: None,
        }
    }
}

fn rollout_key(model: &ModelName, alias: &AliasName) -> String {
    format!("{model}/rollouts/{alias}.json")
}

fn step_dir(model: &ModelName, alias: &AliasName, id: u64, step: usize) -> String {
    format!("{model}/rollouts/{alias}/{id}/step-{step}")
}

fn log_key(model: &ModelName) -> String {
    format!("{model}/rollouts.jsonl")
}

impl Registry {
    /// The alias's latest rollout, whatever its state.
    pub fn rollout(&self, model: &ModelName, alias: &AliasName) -> Result<Option<Rollout>> {
        self.read_json(&rollout_key(model, alias))
    }

    /// Every alias's latest rollout.
    pub fn rollouts(&self, model: &ModelName) -> Result<Vec<Rollout>> {
        let mut rollouts = Vec::new();
        for name in self.list(&format!("{model}/rollouts"))? {
            let Some(alias) = name
                .strip_suffix(".json")
                .and_then(|a| a.parse::<AliasName>().ok())
            else {
                continue;
            };
            rollouts.extend(self.rollout(model, &alias)?);
        }
        Ok(rollouts)
    }

    /// Every rollout decision, oldest first.
    pub fn rollout_log(&self, model: &ModelName) -> Result<Vec<RolloutEvent>> {
        self.read_jsonl(&log_key(model))
    }

    /// What every inference instance recorded for one step, summed, and how many instances.
    pub fn step_evidence(
        &self,
        model: &ModelName,
        alias: &AliasName,
        id: u64,
        step: usize,
    ) -> Result<(StepEvidence, usize)> {
        let mut total = StepEvidence::default();
        let instances = self.each_environment_file(
            &step_dir(model, alias, id, step),
            |instance: InstanceEvidence| total.merge(&instance.evidence),
        )?;
        Ok((total, instances))
    }

    /// Replaces what one inference instance recorded for one step (each instance writes only its
    /// own file, so this takes no lock).
    pub fn write_step_evidence(
        &self,
        model: &ModelName,
        alias: &AliasName,
        id: u64,
        step: usize,
        evidence: &InstanceEvidence,
    ) -> Result<()> {
        let key = format!(
            "{}/{}.json",
            step_dir(model, alias, id, step),
            evidence.instance
        );
        self.write_environment_file(&key, &crate::to_json(evidence))
    }
}

/// A rollout write refused because the record moved on since it was read.
#[derive(Debug, thiserror::Error)]
#[error(
    "rollout {id} of {model}:{alias} is at generation {found}, not {expected}: someone changed it first"
)]
pub struct Conflict {
    pub model: ModelName,
    pub alias: AliasName,
    pub id: u64,
    pub expected: u64,
    pub found: u64,
}

impl Locked<'_> {
    /// Writes `rollout` as generation `expected + 1` if the stored one is still at `expected`
    /// (`None`: there must be none), and logs the decision. Returns the record as written.
    pub fn swap_rollout(
        &self,
        expected: Option<u64>,
        mut rollout: Rollout,
        action: Did,
        by: Actor,
        evidence: Option<Evaluation>,
        request_id: Option<&str>,
    ) -> Result<Result<Rollout, Conflict>> {
        let current = self.registry.rollout(&self.model, &rollout.alias)?;
        let found = current.as_ref().map(|r| r.generation);
        if found != expected {
            return Ok(Err(Conflict {
                model: self.model.clone(),
                alias: rollout.alias.clone(),
                id: rollout.id,
                expected: expected.unwrap_or(0),
                found: found.unwrap_or(0),
            }));
        }
        rollout.generation = found.unwrap_or(0) + 1;
        rollout.updated_at = Timestamp::now();
        // Record first, log second: a lost log line leaves the record's `reason` as the account.
        self.write(
            &rollout_key(&self.model, &rollout.alias),
            &crate::to_json(&rollout),
        )?;
        let mut event = RolloutEvent::of(&rollout, action, by, evidence);
        event.request_id = request_id.map(str::to_string);
        self.append(&log_key(&self.model), &crate::to_line(&event))?;
        Ok(Ok(rollout))
    }

    /// Logs a decision that changed nothing (the controller waiting, with its numbers).
    pub fn append_rollout_event(&self, event: &RolloutEvent) -> Result<()> {
        self.append(&log_key(&self.model), &crate::to_line(event))
    }
}

#[cfg(test)]
mod tests;
