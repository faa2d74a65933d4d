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
use std::time::Duration;

use serde::{Deserialize, Serialize};
use tracing::info;

use super::gates::{self, Decision, Evaluation};
use super::transition::{Command, Did, Input, Refused, transition};
use super::{Actor, Conflict, Plan, Rollout, RolloutState};
use crate::{AliasAction, AliasMove, Locked, MoveError, Promotion, Registry, RegistryError};
use modelpipe_core::digest::sha256_bytes;
use modelpipe_core::model_name::{AliasName, ModelName};
use modelpipe_core::requested_rollout::RequestedRollout;
use modelpipe_core::time::Timestamp;

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "action", deny_unknown_fields)]
pub enum RolloutRequest {
    #[serde(rename = "rollout-start")]
    Start {
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
    #[serde(rename = "rollout-advance")]
    Advance {
        #[serde(default, skip_serializing_if = "Option::is_none")]
        model: Option<ModelName>,
    },
    #[serde(rename = "rollout-pause")]
    Pause(Operator),
    /// Hands a paused rollout back to the controller.
    #[serde(rename = "rollout-resume")]
    Resume(Operator),
    #[serde(rename = "rollout-abort")]
    Abort(Operator),
    /// Promotes the candidate now.
    #[serde(rename = "rollout-promote")]
    Promote(Operator),
    #[serde(rename = "rollout-status")]
    Status {
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
    pub did: Did,
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
    Move(#[from] MoveError),
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
    let operate = |op, command| operate(registry, op, command, request_id).map(one);
    match request {
        RolloutRequest::Start {
            model,
            alias,
            candidate,
            plan,
            settings,
            reason,
        } => {
            let requested = RequestedRollout {
                plan: plan.clone(),
                settings: settings.clone(),
            };
            let plan = Plan::requested(&requested).map_err(RolloutError::BadRequest)?;
            let reason = reason
                .clone()
                .unwrap_or_else(|| format!("rollout of v{candidate}"));
            start(registry, model, alias, *candidate, plan, reason, request_id).map(one)
        }
        RolloutRequest::Advance { model } => {
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
        RolloutRequest::Pause(op) => operate(op, Command::Pause),
        RolloutRequest::Resume(op) => operate(op, Command::HandBack),
        RolloutRequest::Abort(op) => operate(op, Command::Abort),
        RolloutRequest::Promote(op) => operate(op, Command::PromoteCandidate),
        RolloutRequest::Status { model } => {
            status(registry, model.as_ref()).map(|rollouts| RolloutAnswer { rollouts })
        }
    }
}

fn models(registry: &Registry, model: Option<&ModelName>) -> RolloutResult<Vec<ModelName>> {
    Ok(match model {
        Some(model) => vec![model.clone()],
        None => registry.models()?,
    })
}

/// Every rollout as it is, with the current step's numbers where it routes traffic.
fn status(registry: &Registry, model: Option<&ModelName>) -> RolloutResult<Vec<RolloutReport>> {
    let mut rollouts = Vec::new();
    for model in models(registry, model)? {
        for rollout in registry.rollouts(&model)? {
            let evaluation = match rollout.state {
                RolloutState::Running | RolloutState::Paused => {
                    Some(evaluate(registry, &rollout)?.1)
                }
                _ => None,
            };
            rollouts.push(report(rollout, Did::None, evaluation));
        }
    }
    Ok(rollouts)
}

fn report(rollout: Rollout, did: Did, evaluation: Option<Evaluation>) -> RolloutReport {
    RolloutReport {
        detail: rollout.reason.clone(),
        did,
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
    plan: Plan,
    reason: String,
    request_id: Option<&str>,
) -> RolloutResult<RolloutReport> {
    let rollout = {
        let locked = registry.lock(model)?;
        let previous = locked.settle_rollout(alias)?;
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
        // The candidate will answer callers: it must satisfy the model's signer policy now.
        locked.admit(alias, &registry.manifest(model, candidate)?)?;
        if candidate == stable {
            return Err(RolloutError::BadRequest(format!(
                "{model}:{alias} already points at v{candidate}"
            )));
        }
        let id = previous.as_ref().map_or(1, |r| r.id + 1);
        let started_at = Timestamp::now();
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
            started_at,
            step_started_at: None,
            updated_at: started_at,
            reason,
        };
        locked.swap_rollout(
            previous.map(|r| r.generation),
            rollout,
            Did::Start,
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
        .and_then(|_| registry.verified_manifest(&rollout.model, rollout.candidate))
        .map(drop)
        .map_err(|e| e.to_string());
    let locked = registry.lock(&rollout.model)?;
    let current = current(&locked, &rollout.alias)?;
    act(
        &locked,
        current,
        rollout.generation,
        Input::Checked(checked),
        by,
        None,
        request_id,
    )
}

/// The step's summed evidence, judged.
fn evaluate(registry: &Registry, rollout: &Rollout) -> RolloutResult<(Decision, Evaluation)> {
    let (evidence, instances) =
        registry.step_evidence(&rollout.model, &rollout.alias, rollout.id, rollout.step)?;
    let baked = rollout
        .step_started_at
        .map_or(Duration::ZERO, Timestamp::elapsed);
    let mut evaluation = gates::summarise(rollout.step, &evidence, instances, baked);
    if let Some(limit) = rollout.plan.gates.max_drift {
        evaluation.drift = candidate_drift(registry, rollout, limit)?;
    }
    let step = &rollout.plan.steps[rollout.step];
    Ok((
        gates::decide(step, &rollout.plan.gates, &evaluation),
        evaluation,
    ))
}

/// The candidate's features further than `limit` from its baseline, per the publisher's latest
/// drift report, if that report was made since the step began and had a baseline to compare.
fn candidate_drift(
    registry: &Registry,
    rollout: &Rollout,
    limit: f64,
) -> RolloutResult<Option<gates::DriftSummary>> {
    let Some(report) = registry.drift_report_stored(&rollout.model, rollout.candidate)? else {
        return Ok(None);
    };
    let current = rollout
        .step_started_at
        .is_none_or(|began| report.computed_at >= began);
    if !current || report.baseline.is_none() || report.live_rows == 0 {
        return Ok(None);
    }
    let mut over: Vec<(String, f64)> = report
        .features
        .iter()
        .filter(|f| f.distance > limit.max(f.noise))
        .map(|f| (f.feature.clone(), f.distance))
        .collect();
    over.sort_by(|a, b| b.1.total_cmp(&a.1));
    Ok(Some(gates::DriftSummary {
        rows: report.live_rows,
        over,
    }))
}

/// The controller's move on one rollout: judged on evidence read without the lock, carried out
/// only if the rollout is still at the generation it judged.
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
        let settled = locked.settle_rollout(alias)?.expect("the rollout exists");
        return Ok(report(settled, Did::None, None));
    }
    match rollout.state {
        RolloutState::Preparing => prepare(registry, rollout, Actor::Controller, request_id),
        RolloutState::Running => {
            let (decision, evaluation) = evaluate(registry, &rollout)?;
            let locked = registry.lock(model)?;
            let current = current(&locked, alias)?;
            act(
                &locked,
                current,
                rollout.generation,
                Input::Judged(&decision),
                Actor::Controller,
                Some(evaluation),
                request_id,
            )
        }
        RolloutState::Paused | RolloutState::Promoted | RolloutState::RolledBack => {
            Ok(report(rollout, Did::None, None))
        }
    }
}

/// An operator's pause, resume, abort or promote.
fn operate(
    registry: &Registry,
    op: &Operator,
    command: Command,
    request_id: Option<&str>,
) -> RolloutResult<RolloutReport> {
    let locked = registry.lock(&op.model)?;
    let rollout = locked
        .settle_rollout(&op.alias)?
        .ok_or_else(|| RolloutError::NoRollout {
            model: op.model.clone(),
            alias: op.alias.clone(),
        })?;
    let seen = op.generation.unwrap_or(rollout.generation);
    let input = Input::Operator(command, op.reason.as_deref());
    act(
        &locked,
        rollout,
        seen,
        input,
        Actor::Operator,
        None,
        request_id,
    )
}

/// The alias's rollout, read under the lock.
fn current(locked: &Locked<'_>, alias: &AliasName) -> RolloutResult<Rollout> {
    let model = locked.model();
    locked
        .registry()
        .rollout(model, alias)?
        .ok_or_else(|| RolloutError::NoRollout {
            model: model.clone(),
            alias: alias.clone(),
        })
}

/// Applies `input` from `by`, who read the rollout at generation `seen`, to the rollout as it
/// is under the lock (`current`), and writes what it did. An operator's stale generation is an
/// error; anyone else's change is dropped, and the rollout as it is now reported: the change
/// that came first stands.
fn act(
    locked: &Locked<'_>,
    current: Rollout,
    seen: u64,
    input: Input<'_>,
    by: Actor,
    evaluation: Option<Evaluation>,
    request_id: Option<&str>,
) -> RolloutResult<RolloutReport> {
    let from_operator = matches!(input, Input::Operator(..));
    let transition = match transition(&current, seen, input, Timestamp::now()) {
        Ok(transition) => transition,
        Err(Refused::Stale { expected, found }) => {
            let conflict = Conflict {
                model: current.model.clone(),
                alias: current.alias.clone(),
                id: current.id,
                expected,
                found,
            };
            if from_operator {
                return Err(conflict.into());
            }
            return Ok(RolloutReport {
                detail: conflict.to_string(),
                did: Did::None,
                rollout: current,
                evaluation,
            });
        }
        Err(Refused::WrongState(why)) => {
            return Err(RolloutError::WrongState {
                model: current.model,
                alias: current.alias,
                id: current.id,
                state: current.state,
                why: why.to_string(),
            });
        }
    };
    let did = transition.did;
    if !did.writes() {
        if did == Did::Wait {
            log_first_wait(
                locked,
                &current,
                &transition.detail,
                evaluation.as_ref(),
                request_id,
            )?;
        }
        return Ok(RolloutReport {
            rollout: current,
            did,
            detail: transition.detail,
            evaluation,
        });
    }
    let promoted = transition.moves_alias.then(|| {
        let evaluation = evaluation.clone();
        promote_candidate(
            locked,
            &current,
            transition.clone(),
            by,
            evaluation,
            request_id,
        )
    });
    let (next, did) = match promoted {
        Some(Ok(written)) => return Ok(changed(written, did, by, evaluation)),
        None => (transition.next, did),
        // The candidate no longer satisfies the model's signer policy: the controller ends the
        // rollout with the reason (an operator's promote is refused instead).
        Some(Err(RolloutError::Move(MoveError::Refused { why, .. }))) if !from_operator => {
            let ended = super::transition::transition(
                &current,
                seen,
                Input::CandidateRefused(&why),
                Timestamp::now(),
            )
            .expect("read under the lock at its generation");
            (ended.next, ended.did)
        }
        Some(Err(e)) => return Err(e),
    };
    let written =
        locked.swap_rollout(Some(seen), next, did, by, evaluation.clone(), request_id)??;
    Ok(changed(written, did, by, evaluation))
}

/// The report of a change written, logged.
fn changed(written: Rollout, did: Did, by: Actor, evaluation: Option<Evaluation>) -> RolloutReport {
    info!(model = %written.model, alias = %written.alias, id = written.id, %did, by = ?by, reason = %written.reason, "rollout changed");
    report(written, did, evaluation)
}

/// Moves the alias to the candidate, which writes the rollout as promoted (a crash in between
/// is repaired by [`Locked::settle_rollout`]).
fn promote_candidate(
    locked: &Locked<'_>,
    rollout: &Rollout,
    transition: super::transition::Transition,
    by: Actor,
    evidence: Option<Evaluation>,
    request_id: Option<&str>,
) -> RolloutResult<Rollout> {
    let moved = locked.move_alias(
        AliasMove {
            alias: &rollout.alias,
            version: rollout.candidate,
            action: AliasAction::Promote,
            reason: format!("rollout {}: {}", rollout.id, transition.next.reason),
            request_id,
        },
        Some(Promotion {
            transition,
            by,
            evidence,
        }),
    )?;
    Ok(moved.rollout.expect("a promotion writes its rollout"))
}

/// Logs a wait once per step: the first one, with its numbers and `why`.
fn log_first_wait(
    locked: &Locked<'_>,
    rollout: &Rollout,
    why: &str,
    evaluation: Option<&Evaluation>,
    request_id: Option<&str>,
) -> RolloutResult<()> {
    let logged = locked
        .registry()
        .rollout_log(&rollout.model)?
        .iter()
        .rev()
        .find(|e| e.id == rollout.id && e.alias == rollout.alias)
        .is_some_and(|e| e.action == Did::Wait && e.step == rollout.step);
    if !logged {
        let mut event =
            super::RolloutEvent::of(rollout, Did::Wait, Actor::Controller, evaluation.cloned());
        event.reason = why.to_string();
        event.at = Timestamp::now();
        event.request_id = request_id.map(str::to_string);
        locked.append_rollout_event(&event)?;
    }
    Ok(())
}
