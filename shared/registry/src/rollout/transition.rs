//! The rollout state machine, as one pure function: what a rollout becomes after an input
//! (an operator's command, the controller's judgement of a step, the check of both files, or
//! where its alias now points), and what that did. No lock, no I/O, no clock: [`super::actions`]
//! reads the rollout, calls [`transition`], and writes the result with a compare-and-swap.
//!
//! ```text
//! preparing ──checked──▶ running ──pass──▶ running (next step) ──pass (last)──▶ promoted
//!     │                   │  ▲                                   operator promote ─▶ promoted
//!     └──check failed──▶ rolled_back ◀──fail / abort / alias moved elsewhere
//! running|preparing ──pause──▶ paused ──resume──▶ running (or preparing, if it never started)
//! ```

use serde::{Deserialize, Serialize};

use super::gates::Decision;
use super::{Rollout, RolloutState, Step};
use modelpipe_core::time::Timestamp;

/// What an input did to a rollout: the report's `did` and the log line's `action`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Did {
    /// A new rollout was written as `preparing`.
    Start,
    /// Both files checked: the first step began.
    Running,
    /// A step passed: the next one began.
    Step,
    /// The step needs more time or evidence; nothing changed.
    Wait,
    Paused,
    Resumed,
    Aborted,
    Promoted,
    RolledBack,
    /// Ended because its alias was moved elsewhere while it ran.
    Superseded,
    /// Nothing changed.
    None,
}

impl Did {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Start => "start",
            Self::Running => "running",
            Self::Step => "step",
            Self::Wait => "wait",
            Self::Paused => "paused",
            Self::Resumed => "resumed",
            Self::Aborted => "aborted",
            Self::Promoted => "promoted",
            Self::RolledBack => "rolled_back",
            Self::Superseded => "superseded",
            Self::None => "none",
        }
    }

    /// Whether the rollout record changes.
    pub fn writes(self) -> bool {
        !matches!(self, Self::Wait | Self::None)
    }
}

impl std::fmt::Display for Did {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

impl PartialEq<&str> for Did {
    fn eq(&self, other: &&str) -> bool {
        self.as_str() == *other
    }
}

/// An operator's command on a rollout.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Command {
    Pause,
    /// Hands a paused rollout back to the controller (`rollout-resume`).
    HandBack,
    Abort,
    /// Promotes the candidate now (`rollout-promote`).
    PromoteCandidate,
}

/// What happened to a rollout.
#[derive(Debug, Clone)]
pub enum Input<'a> {
    /// An operator's command, with their reason (the default when none).
    Operator(Command, Option<&'a str>),
    /// Both versions' files were checked against their manifests: `Err` says why not.
    Checked(Result<(), String>),
    /// The controller's judgement of the current step.
    Judged(&'a Decision),
    /// Where the rollout's alias points now.
    AliasAt(Option<u64>),
    /// The candidate may not go live (the model's signer policy refuses it), and why.
    CandidateRefused(&'a str),
}

/// A rollout after an input.
#[derive(Debug, Clone, PartialEq)]
pub struct Transition {
    /// The record to write (the input's rollout unchanged when `did` does not write).
    pub next: Rollout,
    pub did: Did,
    /// The alias must move to the candidate before `next` is written (a promotion).
    pub moves_alias: bool,
    /// What to tell the caller: `next`'s reason, or why the controller waits.
    pub detail: String,
}

/// Why an input was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Refused {
    /// The rollout moved on since the actor read it.
    #[error("the rollout is at generation {found}, not {expected}")]
    Stale { expected: u64, found: u64 },
    /// The command does not apply to the rollout's state.
    #[error("{0}")]
    WrongState(&'static str),
}

/// What `rollout` becomes after `input` from an actor who read it at generation `seen`; `now`
/// starts a step's bake time.
pub fn transition(
    rollout: &Rollout,
    seen: u64,
    input: Input<'_>,
    now: Timestamp,
) -> Result<Transition, Refused> {
    if seen != rollout.generation {
        return Err(Refused::Stale {
            expected: seen,
            found: rollout.generation,
        });
    }
    let state = rollout.state;
    let to = |next: Rollout, did: Did| Transition {
        detail: next.reason.clone(),
        next,
        did,
        moves_alias: false,
    };
    let unchanged = || to(rollout.clone(), Did::None);
    Ok(match input {
        Input::AliasAt(at) => alias_at(rollout, at).map_or_else(unchanged, |(n, d)| to(n, d)),
        Input::Checked(Ok(())) if state == RolloutState::Preparing => {
            to(begin_step(rollout, 0, now, String::new()), Did::Running)
        }
        Input::Checked(Err(why)) if state == RolloutState::Preparing => to(
            ended(
                rollout,
                RolloutState::RolledBack,
                format!("not started: {why}"),
            ),
            Did::RolledBack,
        ),
        Input::Judged(decision) if state == RolloutState::Running => judged(rollout, decision, now),
        Input::CandidateRefused(why) if state.is_active() => to(
            ended(
                rollout,
                RolloutState::RolledBack,
                format!("rolled back: v{} may not go live: {why}", rollout.candidate),
            ),
            Did::RolledBack,
        ),
        // The controller leaves a rollout it does not drive (paused, ended) as it is.
        Input::Checked(_) | Input::Judged(_) | Input::CandidateRefused(_) => unchanged(),
        Input::Operator(command, reason) => {
            let reason = |default: &str| reason.unwrap_or(default).to_string();
            operated(rollout, command, reason)?
        }
    })
}

/// A rollout whose alias no longer points at its stable version ends: promoted if it points at
/// the candidate (a crash between promotion's two writes), superseded otherwise (a publish,
/// rollback or set-alias while it ran).
fn alias_at(rollout: &Rollout, at: Option<u64>) -> Option<(Rollout, Did)> {
    if !rollout.state.is_active() || at == Some(rollout.stable) {
        return None;
    }
    let alias = &rollout.alias;
    Some(match at {
        Some(version) if version == rollout.candidate => (
            ended(
                rollout,
                RolloutState::Promoted,
                format!("{alias} points at the candidate v{version}: promoted"),
            ),
            Did::Promoted,
        ),
        other => (
            ended(
                rollout,
                RolloutState::RolledBack,
                format!(
                    "ended: {alias} was moved to {} while the rollout ran",
                    other.map_or("nothing".into(), |v| format!("v{v}"))
                ),
            ),
            Did::Superseded,
        ),
    })
}

fn judged(rollout: &Rollout, decision: &Decision, now: Timestamp) -> Transition {
    let steps = rollout.plan.steps.len();
    let (next, did) = match decision {
        Decision::Wait(why) => {
            return Transition {
                next: rollout.clone(),
                did: Did::Wait,
                moves_alias: false,
                detail: why.clone(),
            };
        }
        Decision::Fail(why) => (
            ended(
                rollout,
                RolloutState::RolledBack,
                format!("rolled back at step {}: {why}", rollout.step + 1),
            ),
            Did::RolledBack,
        ),
        Decision::Pass if rollout.step + 1 < steps => (
            begin_step(
                rollout,
                rollout.step + 1,
                now,
                format!(" (step {} passed)", rollout.step + 1),
            ),
            Did::Step,
        ),
        Decision::Pass => (
            ended(
                rollout,
                RolloutState::Promoted,
                format!("promoted: all {steps} steps passed"),
            ),
            Did::Promoted,
        ),
    };
    Transition {
        detail: next.reason.clone(),
        moves_alias: did == Did::Promoted,
        next,
        did,
    }
}

fn operated(
    rollout: &Rollout,
    command: Command,
    reason: impl Fn(&str) -> String,
) -> Result<Transition, Refused> {
    use RolloutState::*;
    let (next, did) = match (command, rollout.state) {
        (Command::Pause, Running | Preparing) => (
            Rollout {
                state: Paused,
                reason: reason("paused by an operator"),
                ..rollout.clone()
            },
            Did::Paused,
        ),
        (Command::Pause, _) => {
            return Err(Refused::WrongState("only a running rollout can be paused"));
        }
        (Command::HandBack, Paused) => (
            Rollout {
                // A rollout paused while preparing has not begun a step: it prepares again.
                state: if rollout.step_started_at.is_some() {
                    Running
                } else {
                    Preparing
                },
                reason: reason("resumed by an operator"),
                ..rollout.clone()
            },
            Did::Resumed,
        ),
        (Command::HandBack, _) => {
            return Err(Refused::WrongState("only a paused rollout can be resumed"));
        }
        (Command::Abort | Command::PromoteCandidate, Promoted | RolledBack) => {
            return Err(Refused::WrongState("it has already ended"));
        }
        (Command::Abort, _) => (
            ended(rollout, RolledBack, reason("aborted by an operator")),
            Did::Aborted,
        ),
        (Command::PromoteCandidate, _) => (
            ended(rollout, Promoted, reason("promoted by an operator")),
            Did::Promoted,
        ),
    };
    Ok(Transition {
        detail: next.reason.clone(),
        moves_alias: did == Did::Promoted,
        next,
        did,
    })
}

/// The rollout, running step `step` from `now`.
fn begin_step(rollout: &Rollout, step: usize, now: Timestamp, passed: String) -> Rollout {
    let plan_step = &rollout.plan.steps[step];
    Rollout {
        state: RolloutState::Running,
        step,
        weight: plan_step.weight,
        shadow: plan_step.shadow,
        step_started_at: Some(now),
        reason: format!(
            "step {} of {}: {}{passed}",
            step + 1,
            rollout.plan.steps.len(),
            describe(plan_step)
        ),
        ..rollout.clone()
    }
}

/// The rollout, ended in `state`: the candidate gets no more traffic.
fn ended(rollout: &Rollout, state: RolloutState, reason: String) -> Rollout {
    Rollout {
        state,
        weight: 0,
        shadow: 0,
        reason,
        ..rollout.clone()
    }
}

fn describe(step: &Step) -> String {
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

#[cfg(test)]
mod tests;
