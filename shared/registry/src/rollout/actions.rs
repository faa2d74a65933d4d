//! The publisher's rollout actions (blocking: they take the model's lock and may hash a file):
//!
//! ```text
//! {"action":"rollout-start",   "model":"iris", "candidate":4, "plan":"canary", "settings":{"bake":"60s"}}
//! {"action":"rollout-advance", "model":"iris"}        model optional: every model
//! {"action":"rollout-pause" | "rollout-resume" | "rollout-abort" | "rollout-promote", "model":"iris"}
//! {"action":"rollout-status",  "model":"iris"}        model optional
//! ```
//!
//! `alias` defaults to `live`; the operator's actions take an optional `generation` and are
//! refused if the rollout has moved past it. The controller (`rollout-advance`) decides on
//! evidence read without the lock, then writes only if the rollout is still at the generation
//! it judged: two advances at once act once, and an operator's change always wins.

use std::collections::BTreeMap;
use std::time::{Duration, SystemTime};

use serde::{Deserialize, Serialize};
use tracing::info;

use super::gates::{self, Decision, Evaluation};
use super::plan::PlanOptions;
use super::{Actor, Conflict, Rollout, RolloutState};
use crate::publish::{PublishError, move_alias};
use crate::{AliasAction, Locked, Registry, RegistryError, now};
use modelpipe_core::digest::sha256_bytes;
use modelpipe_core::model_name::{AliasName, ModelName};

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "action", rename_all = "kebab-case", deny_unknown_fields)]
pub enum RolloutRequest {
    RolloutStart {
        model: ModelName,
        #[serde(default)]
        alias: AliasName,
        candidate: u64,
        #[serde(default = "canary")]
        plan: String,
        #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
        settings: BTreeMap<String, String>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        reason: Option<String>,
    },
    RolloutAdvance {
        #[serde(default, skip_serializing_if = "Option::is_none")]
        model: Option<ModelName>,
    },
    RolloutPause(Operator),
    RolloutResume(Operator),
    RolloutAbort(Operator),
    RolloutPromote(Operator),
    RolloutStatus {
        #[serde(default, skip_serializing_if = "Option::is_none")]
        model: Option<ModelName>,
    },
}

fn canary() -> String {
    "canary".into()
}

/// An operator's action on one rollout.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Operator {
    pub model: ModelName,
    #[serde(default)]
    pub alias: AliasName,
    /// Act only if the rollout is still at this generation.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub generation: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
}

impl RolloutRequest {
    /// Whether `payload` asks for a rollout action.
    pub fn is_rollout(payload: &serde_json::Value) -> bool {
        payload
            .get("action")
            .and_then(|a| a.as_str())
            .is_some_and(|a| a.starts_with("rollout-"))
    }
}

/// One rollout after an action, what the action did, and the numbers it judged.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RolloutReport {
    pub rollout: Rollout,
    /// `started`, `step`, `promoted`, `rolled_back`, `wait`, `paused`, … or `none`.
    pub did: String,
    pub detail: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub evaluation: Option<Evaluation>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RolloutAnswer {
    pub rollouts: Vec<RolloutReport>,
}

#[derive(Debug, thiserror::Error)]
pub enum RolloutError {
    #[error("bad rollout request: {0}")]
    BadRequest(String),
    #[error("{model}:{alias} has no rollout")]
    NoRollout { model: ModelName, alias: AliasName },
    #[error(
        "{model}:{alias} already has rollout {id} ({state:?}, v{candidate}); abort or promote it first"
    )]
    AlreadyRunning {
        model: ModelName,
        alias: AliasName,
        id: u64,
        state: RolloutState,
        candidate: u64,
    },
    #[error("rollout {id} of {model}:{alias} is {state:?}: {why}")]
    WrongState {
        model: ModelName,
        alias: AliasName,
        id: u64,
        state: RolloutState,
        why: String,
    },
    #[error(transparent)]
    Conflict(#[from] Conflict),
    #[error(transparent)]
    Publish(#[from] PublishError),
    #[error(transparent)]
    Registry(#[from] RegistryError),
}

pub type RolloutResult<T> = Result<T, RolloutError>;

/// Applies one rollout request.
pub fn apply(
    registry: &Registry,
    request: &RolloutRequest,
    request_id: Option<&str>,
) -> RolloutResult<RolloutAnswer> {
    let one = |report| RolloutAnswer {
        rollouts: vec![report],
    };
    match request {
        RolloutRequest::RolloutStart {
            model,
            alias,
            candidate,
            plan,
            settings,
            reason,
        } => {
            let plan = PlanOptions::with_settings(plan, settings)
                .and_then(|options| options.build())
                .map_err(RolloutError::BadRequest)?;
            let reason = reason
                .clone()
                .unwrap_or_else(|| format!("rollout of v{candidate}"));
            start(registry, model, alias, *candidate, plan, reason, request_id).map(one)
        }
        RolloutRequest::RolloutAdvance { model } => {
            let mut rollouts = Vec::new();
            for model in models(registry, model.as_ref())? {
                for rollout in registry.rollouts(&model)? {
                    if rollout.state.is_active() {
                        rollouts.push(advance(registry, &model, &rollout.alias, request_id)?);
                    }
                }
            }
            Ok(RolloutAnswer { rollouts })
        }
        RolloutRequest::RolloutPause(op) => {
            operate(registry, op, Command::Pause, request_id).map(one)
        }
        RolloutRequest::RolloutResume(op) => {
            operate(registry, op, Command::Resume, request_id).map(one)
        }
        RolloutRequest::RolloutAbort(op) => {
            operate(registry, op, Command::Abort, request_id).map(one)
        }
        RolloutRequest::RolloutPromote(op) => {
            operate(registry, op, Command::Promote, request_id).map(one)
        }
        RolloutRequest::RolloutStatus { model } => {
            let mut rollouts = Vec::new();
            for model in models(registry, model.as_ref())? {
                for rollout in registry.rollouts(&model)? {
                    let evaluation = match rollout.state {
                        RolloutState::Running | RolloutState::Paused => {
                            Some(evaluate(registry, &rollout)?.1)
                        }
                        _ => None,
                    };
                    rollouts.push(RolloutReport {
                        did: "none".into(),
                        detail: rollout.reason.clone(),
                        rollout,
                        evaluation,
                    });
                }
            }
            Ok(RolloutAnswer { rollouts })
        }
    }
}

fn models(registry: &Registry, model: Option<&ModelName>) -> RolloutResult<Vec<ModelName>> {
    Ok(match model {
        Some(model) => vec![model.clone()],
        None => registry.models()?,
    })
}

fn report(rollout: Rollout, did: &str, evaluation: Option<Evaluation>) -> RolloutReport {
    RolloutReport {
        detail: rollout.reason.clone(),
        did: did.to_string(),
        rollout,
        evaluation,
    }
}

/// Starts a rollout of `candidate` against the version `alias` points at: written as
/// `preparing`, both files checked against their manifests, then `running` at the first step.
pub fn start(
    registry: &Registry,
    model: &ModelName,
    alias: &AliasName,
    candidate: u64,
    plan: super::Plan,
    reason: String,
    request_id: Option<&str>,
) -> RolloutResult<RolloutReport> {
    let rollout = {
        let locked = registry.lock(model)?;
        let previous = reconciled(&locked, alias)?;
        if let Some(previous) = previous.as_ref().filter(|r| r.state.is_active()) {
            return Err(RolloutError::AlreadyRunning {
                model: model.clone(),
                alias: alias.clone(),
                id: previous.id,
                state: previous.state,
                candidate: previous.candidate,
            });
        }
        let stable = registry
            .alias(model, alias)?
            .ok_or_else(|| {
                RolloutError::BadRequest(format!(
                    "{model}:{alias} does not exist; publish a first version instead"
                ))
            })?
            .version;
        registry.manifest(model, candidate)?;
        if candidate == stable {
            return Err(RolloutError::BadRequest(format!(
                "{model}:{alias} already points at v{candidate}"
            )));
        }
        let id = previous.as_ref().map_or(1, |r| r.id + 1);
        let started_at = now();
        let rollout = Rollout {
            id,
            model: model.clone(),
            alias: alias.clone(),
            stable,
            candidate,
            state: RolloutState::Preparing,
            step: 0,
            weight: 0,
            shadow: 0,
            sticky_key: "routing_key".into(),
            salt: sha256_bytes(format!("{model}/{alias}/{id}/{started_at}").as_bytes())[..16]
                .to_string(),
            plan,
            generation: 0,
            started_at: started_at.clone(),
            step_started_at: None,
            updated_at: started_at,
            reason,
        };
        locked.swap_rollout(
            previous.map(|r| r.generation),
            rollout,
            "start",
            Actor::Operator,
            None,
            request_id,
        )??
    };
    info!(model = %model, alias = %alias, id = rollout.id, stable = rollout.stable, candidate, "rollout started");
    prepare(registry, rollout, Actor::Operator, request_id)
}

/// Checks both versions' files against their manifests (outside the lock: a large file takes a
/// while to hash), then starts the first step if the rollout has not moved meanwhile.
fn prepare(
    registry: &Registry,
    rollout: Rollout,
    by: Actor,
    request_id: Option<&str>,
) -> RolloutResult<RolloutReport> {
    let checked = registry
        .verified_manifest(&rollout.model, rollout.stable)
        .and_then(|_| registry.verified_manifest(&rollout.model, rollout.candidate));
    let expected = rollout.generation;
    let (next, did) = match checked {
        Ok(_) => {
            let step = &rollout.plan.steps[0];
            let next = Rollout {
                state: RolloutState::Running,
                step: 0,
                weight: step.weight,
                shadow: step.shadow,
                step_started_at: Some(now()),
                reason: format!("step 1 of {}: {}", rollout.plan.steps.len(), describe(step)),
                ..rollout
            };
            (next, "running")
        }
        Err(e) => {
            let next = Rollout {
                state: RolloutState::RolledBack,
                weight: 0,
                shadow: 0,
                reason: format!("not started: {e}"),
                ..rollout
            };
            (next, "rolled_back")
        }
    };
    let locked = registry.lock(&next.model)?;
    match locked.swap_rollout(Some(expected), next, did, by, None, request_id)? {
        Ok(written) => Ok(report(written, did, None)),
        // Prepared meanwhile by the other side (the starter, or an advance finishing a start it
        // found preparing), or paused or aborted: that change stands, and the rollout exists.
        Err(conflict) => superseded(&locked, &conflict, None),
    }
}

/// The report of a change dropped because the rollout moved since it was read: the rollout as
/// it is now.
fn superseded(
    locked: &Locked<'_>,
    conflict: &Conflict,
    evaluation: Option<Evaluation>,
) -> RolloutResult<RolloutReport> {
    let current = locked
        .registry()
        .rollout(&conflict.model, &conflict.alias)?
        .expect("a conflicting rollout exists");
    Ok(RolloutReport {
        did: "none".into(),
        detail: conflict.to_string(),
        rollout: current,
        evaluation,
    })
}

fn describe(step: &super::Step) -> String {
    let percent = |basis: u32| f64::from(basis) / 100.0;
    match (step.weight, step.shadow) {
        (0, shadow) => format!("{} % of requests shadowed", percent(shadow)),
        (weight, 0) => format!("{} % of requests to the candidate", percent(weight)),
        (weight, shadow) => format!(
            "{} % to the candidate, {} % shadowed",
            percent(weight),
            percent(shadow)
        ),
    }
}

/// The step's summed evidence, judged.
fn evaluate(registry: &Registry, rollout: &Rollout) -> RolloutResult<(Decision, Evaluation)> {
    let (evidence, instances) =
        registry.step_evidence(&rollout.model, &rollout.alias, rollout.id, rollout.step)?;
    let baked = rollout
        .step_started_at
        .as_deref()
        .and_then(|at| humantime::parse_rfc3339(at).ok())
        .and_then(|at| SystemTime::now().duration_since(at).ok())
        .unwrap_or(Duration::ZERO);
    let evaluation = gates::summarise(rollout.step, &evidence, instances, baked);
    let step = &rollout.plan.steps[rollout.step];
    Ok((
        gates::decide(step, &rollout.plan.gates, &evaluation),
        evaluation,
    ))
}

/// The controller's move on one rollout.
fn advance(
    registry: &Registry,
    model: &ModelName,
    alias: &AliasName,
    request_id: Option<&str>,
) -> RolloutResult<RolloutReport> {
    let Some(rollout) = registry.rollout(model, alias)? else {
        return Err(RolloutError::NoRollout {
            model: model.clone(),
            alias: alias.clone(),
        });
    };
    let current_alias = registry.alias(model, alias)?.map(|a| a.version);
    if rollout.state.is_active() && current_alias != Some(rollout.stable) {
        let locked = registry.lock(model)?;
        let repaired = reconciled(&locked, alias)?.expect("the rollout exists");
        return Ok(report(repaired, "none", None));
    }
    match rollout.state {
        RolloutState::Preparing => prepare(registry, rollout, Actor::Controller, request_id),
        RolloutState::Running => {
            let (decision, evaluation) = evaluate(registry, &rollout)?;
            decided(registry, rollout, decision, evaluation, request_id)
        }
        RolloutState::Paused => Ok(report(rollout, "none", None)),
        RolloutState::Promoted | RolloutState::RolledBack => Ok(report(rollout, "none", None)),
    }
}

/// Carries out the controller's decision, if the rollout is still where it was judged.
fn decided(
    registry: &Registry,
    rollout: Rollout,
    decision: Decision,
    evaluation: Evaluation,
    request_id: Option<&str>,
) -> RolloutResult<RolloutReport> {
    let locked = registry.lock(&rollout.model)?;
    let expected = rollout.generation;
    let steps = rollout.plan.steps.len();
    let write = |next: Rollout, did: &str| -> RolloutResult<RolloutReport> {
        match locked.swap_rollout(
            Some(expected),
            next,
            did,
            Actor::Controller,
            Some(evaluation.clone()),
            request_id,
        )? {
            Ok(written) => {
                info!(model = %written.model, alias = %written.alias, id = written.id, did, reason = %written.reason, "rollout decision");
                Ok(report(written, did, Some(evaluation.clone())))
            }
            // Someone (an operator, another advance) changed it after it was judged: their
            // change stands and this decision is dropped.
            Err(conflict) => superseded(&locked, &conflict, Some(evaluation.clone())),
        }
    };
    match decision {
        Decision::Wait(why) => {
            let current = locked.registry().rollout(&rollout.model, &rollout.alias)?;
            if current.as_ref().map(|r| r.generation) != Some(expected) {
                // Changed since it was judged: the wait is about a rollout that is gone.
                return write(rollout.clone(), "wait");
            }
            log_first_wait(&locked, &rollout, &why, &evaluation, request_id)?;
            Ok(RolloutReport {
                did: "wait".into(),
                detail: why,
                rollout,
                evaluation: Some(evaluation),
            })
        }
        Decision::Fail(why) => write(
            Rollout {
                state: RolloutState::RolledBack,
                weight: 0,
                shadow: 0,
                reason: format!("rolled back at step {}: {why}", rollout.step + 1),
                ..rollout.clone()
            },
            "rolled_back",
        ),
        Decision::Pass if rollout.step + 1 < steps => {
            let step = rollout.step + 1;
            let plan_step = &rollout.plan.steps[step];
            write(
                Rollout {
                    step,
                    weight: plan_step.weight,
                    shadow: plan_step.shadow,
                    step_started_at: Some(now()),
                    reason: format!(
                        "step {} of {steps}: {} (step {} passed)",
                        step + 1,
                        describe(plan_step),
                        step
                    ),
                    ..rollout.clone()
                },
                "step",
            )
        }
        Decision::Pass => {
            // Promotion moves the alias before its compare-and-swap: check the generation first.
            let current = locked.registry().rollout(&rollout.model, &rollout.alias)?;
            if current.as_ref().map(|r| r.generation) != Some(expected) {
                return write(rollout.clone(), "promoted");
            }
            promote(
                &locked,
                rollout.clone(),
                format!("promoted: all {steps} steps passed"),
                Actor::Controller,
                Some(evaluation.clone()),
                request_id,
            )
            .map(|written| report(written, "promoted", Some(evaluation.clone())))
        }
    }
}

/// Logs a wait once per step: the first one, with its numbers and `why`.
fn log_first_wait(
    locked: &Locked<'_>,
    rollout: &Rollout,
    why: &str,
    evaluation: &Evaluation,
    request_id: Option<&str>,
) -> RolloutResult<()> {
    let logged = locked
        .registry()
        .rollout_log(&rollout.model)?
        .iter()
        .rev()
        .find(|e| e.id == rollout.id && e.alias == rollout.alias)
        .is_some_and(|e| e.action == "wait" && e.step == rollout.step);
    if !logged {
        let mut event =
            super::RolloutEvent::of(rollout, "wait", Actor::Controller, Some(evaluation.clone()));
        event.reason = why.to_string();
        event.at = now();
        event.request_id = request_id.map(str::to_string);
        locked.append_rollout_event(&event)?;
    }
    Ok(())
}

/// Moves the alias to the candidate, then marks the rollout promoted (a crash in between is
/// repaired by [`reconciled`]).
fn promote(
    locked: &Locked<'_>,
    rollout: Rollout,
    reason: String,
    by: Actor,
    evidence: Option<Evaluation>,
    request_id: Option<&str>,
) -> RolloutResult<Rollout> {
    move_alias(
        locked,
        &rollout.model,
        &rollout.alias,
        rollout.candidate,
        AliasAction::Promote,
        format!("rollout {}: {reason}", rollout.id),
        request_id,
    )?;
    let expected = rollout.generation;
    let next = Rollout {
        state: RolloutState::Promoted,
        weight: 0,
        shadow: 0,
        reason,
        ..rollout
    };
    Ok(locked.swap_rollout(Some(expected), next, "promoted", by, evidence, request_id)??)
}

enum Command {
    Pause,
    Resume,
    Abort,
    Promote,
}

/// An operator's pause, resume, abort or promote.
fn operate(
    registry: &Registry,
    op: &Operator,
    command: Command,
    request_id: Option<&str>,
) -> RolloutResult<RolloutReport> {
    let locked = registry.lock(&op.model)?;
    let rollout = reconciled(&locked, &op.alias)?.ok_or_else(|| RolloutError::NoRollout {
        model: op.model.clone(),
        alias: op.alias.clone(),
    })?;
    if let Some(expected) = op.generation
        && expected != rollout.generation
    {
        return Err(Conflict {
            model: op.model.clone(),
            alias: op.alias.clone(),
            id: rollout.id,
            expected,
            found: rollout.generation,
        }
        .into());
    }
    let wrong = |why: &str| RolloutError::WrongState {
        model: op.model.clone(),
        alias: op.alias.clone(),
        id: rollout.id,
        state: rollout.state,
        why: why.to_string(),
    };
    let reason = |default: &str| op.reason.clone().unwrap_or_else(|| default.to_string());
    let expected = Some(rollout.generation);
    let (next, did) = match command {
        Command::Pause => match rollout.state {
            RolloutState::Running | RolloutState::Preparing => (
                Rollout {
                    state: RolloutState::Paused,
                    reason: reason("paused by an operator"),
                    ..rollout
                },
                "paused",
            ),
            _ => return Err(wrong("only a running rollout can be paused")),
        },
        Command::Resume => match rollout.state {
            RolloutState::Paused => (
                Rollout {
                    state: if rollout.step_started_at.is_some() {
                        RolloutState::Running
                    } else {
                        RolloutState::Preparing
                    },
                    reason: reason("resumed by an operator"),
                    ..rollout
                },
                "resumed",
            ),
            _ => return Err(wrong("only a paused rollout can be resumed")),
        },
        Command::Abort => {
            if !rollout.state.is_active() {
                return Err(wrong("it has already ended"));
            }
            (
                Rollout {
                    state: RolloutState::RolledBack,
                    weight: 0,
                    shadow: 0,
                    reason: reason("aborted by an operator"),
                    ..rollout
                },
                "aborted",
            )
        }
        Command::Promote => {
            if !rollout.state.is_active() {
                return Err(wrong("it has already ended"));
            }
            let written = promote(
                &locked,
                rollout,
                reason("promoted by an operator"),
                Actor::Operator,
                None,
                request_id,
            )?;
            return Ok(report(written, "promoted", None));
        }
    };
    let written = locked.swap_rollout(expected, next, did, Actor::Operator, None, request_id)??;
    info!(model = %written.model, alias = %written.alias, id = written.id, did, "rollout changed by an operator");
    Ok(report(written, did, None))
}

/// The alias's rollout under the lock, ended first if the alias was moved under it: promoted if
/// it now points at the candidate (a crash between promotion's two writes), rolled back
/// otherwise (a publish, rollback or set-alias while it ran).
pub(crate) fn reconciled(
    locked: &Locked<'_>,
    alias: &AliasName,
) -> Result<Option<Rollout>, PublishError> {
    let registry = locked.registry();
    let model = locked.model();
    let Some(rollout) = registry.rollout(model, alias)? else {
        return Ok(None);
    };
    let current = registry.alias(model, alias)?.map(|a| a.version);
    if !rollout.state.is_active() || current == Some(rollout.stable) {
        return Ok(Some(rollout));
    }
    let expected = rollout.generation;
    let next = match current {
        Some(version) if version == rollout.candidate => Rollout {
            state: RolloutState::Promoted,
            weight: 0,
            shadow: 0,
            reason: format!("{alias} points at the candidate v{version}: promoted"),
            ..rollout
        },
        other => Rollout {
            state: RolloutState::RolledBack,
            weight: 0,
            shadow: 0,
            reason: format!(
                "ended: {alias} was moved to {} while the rollout ran",
                other.map_or("nothing".into(), |v| format!("v{v}"))
            ),
            ..rollout
        },
    };
    let did = match next.state {
        RolloutState::Promoted => "promoted",
        _ => "superseded",
    };
    Ok(Some(locked.swap_rollout(
        Some(expected),
        next,
        did,
        Actor::Registry,
        None,
        None,
    )??))
}
