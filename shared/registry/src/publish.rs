//! Moving aliases: the publisher's three actions (publish, rollback, set-alias), applied to the
//! registry under the model's lock. The publisher Lambda, the validator's local hop and `modelctl`
//! all call [`apply`]; nothing else writes an alias but a rollout's promotion
//! ([`crate::rollout`]). A move ends the alias's running rollout, if any. [`queries`] are its read-only actions.

mod queries;

use serde::{Deserialize, Serialize};

pub use self::queries::{
    HistoryAnswer, ModelStatus, PublisherQuery, StatusAnswer, answer, history, status,
};

use crate::{AliasAction, AliasRecord, HistoryEntry, Locked, Registry, RegistryError, now};
use modelpipe_core::model_name::{AliasName, ModelName};

/// The publisher's payload.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "action", rename_all = "kebab-case", deny_unknown_fields)]
pub enum PublisherRequest {
    Publish {
        model: ModelName,
        version: u64,
        #[serde(default)]
        alias: AliasName,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        reason: Option<String>,
    },
    /// Back to the version the alias pointed at before its current one, per history.
    Rollback {
        model: ModelName,
        #[serde(default)]
        alias: AliasName,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        reason: Option<String>,
    },
    SetAlias {
        model: ModelName,
        alias: AliasName,
        version: u64,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        reason: Option<String>,
    },
}

impl PublisherRequest {
    /// Parses a payload, with an error that says what is wrong with it.
    pub fn from_json(payload: serde_json::Value) -> Result<Self, PublishError> {
        serde_json::from_value(payload).map_err(|e| PublishError::BadRequest(e.to_string()))
    }

    pub fn model(&self) -> &ModelName {
        match self {
            Self::Publish { model, .. }
            | Self::Rollback { model, .. }
            | Self::SetAlias { model, .. } => model,
        }
    }
}

/// The publisher's answer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PublisherResponse {
    pub model: ModelName,
    pub alias: AliasName,
    pub version: u64,
    pub previous: Option<u64>,
}

#[derive(Debug, thiserror::Error)]
pub enum PublishError {
    #[error("bad publisher request: {0}")]
    BadRequest(String),
    #[error("cannot roll back {model}:{alias}: {why}")]
    NothingToRollBack {
        model: ModelName,
        alias: AliasName,
        why: String,
    },
    #[error(transparent)]
    Conflict(#[from] crate::rollout::Conflict),
    #[error(transparent)]
    Registry(#[from] RegistryError),
}

/// Applies one request (blocking: takes the model's lock and may hash a large file).
pub fn apply(
    registry: &Registry,
    request: &PublisherRequest,
    request_id: Option<&str>,
) -> Result<PublisherResponse, PublishError> {
    let locked = registry.lock(request.model())?;
    let (model, alias, target, action, reason) = match request {
        PublisherRequest::Publish {
            model,
            version,
            alias,
            reason,
        } => (
            model,
            alias,
            *version,
            AliasAction::Publish,
            reason
                .clone()
                .unwrap_or_else(|| format!("publish v{version}")),
        ),
        PublisherRequest::SetAlias {
            model,
            alias,
            version,
            reason,
        } => (
            model,
            alias,
            *version,
            AliasAction::SetAlias,
            reason
                .clone()
                .unwrap_or_else(|| format!("set to v{version}")),
        ),
        PublisherRequest::Rollback {
            model,
            alias,
            reason,
        } => {
            let target = rollback_target(&locked, model, alias)?;
            (
                model,
                alias,
                target,
                AliasAction::Rollback,
                reason
                    .clone()
                    .unwrap_or_else(|| format!("rollback to v{target}")),
            )
        }
    };
    let response = move_alias(&locked, model, alias, target, action, reason, request_id)?;
    // A rollout on this alias ends: its stable version is no longer what the alias serves.
    crate::rollout::actions::reconciled(&locked, alias)?;
    Ok(response)
}

/// Points `alias` at `version` after checking the version's file against its manifest, then
/// records the move. Moving an alias to where it already points changes nothing.
pub(crate) fn move_alias(
    locked: &Locked<'_>,
    model: &ModelName,
    alias: &AliasName,
    version: u64,
    action: AliasAction,
    reason: String,
    request_id: Option<&str>,
) -> Result<PublisherResponse, PublishError> {
    let registry = locked.registry();
    let manifest = registry.verified_manifest(model, version)?;
    let current = registry.alias(model, alias)?;
    reconcile_history(locked, model, alias, current.as_ref())?;
    let previous = current.as_ref().map(|c| c.version);
    if previous == Some(version) {
        return Ok(PublisherResponse {
            model: model.clone(),
            alias: alias.clone(),
            version,
            previous,
        });
    }
    let at = now();
    let record = AliasRecord {
        version,
        sha256: manifest.sha256,
        updated_at: at.clone(),
        previous,
        reason: reason.clone(),
    };
    // Alias first, history second: a crash in between is repaired by `reconcile_history`.
    locked.write_alias(alias, &record)?;
    locked.append_history(&HistoryEntry {
        alias: alias.clone(),
        from: previous,
        to: version,
        action,
        reason,
        at,
        request_id: request_id.map(str::to_string),
    })?;
    Ok(PublisherResponse {
        model: model.clone(),
        alias: alias.clone(),
        version,
        previous,
    })
}

/// If a crash lost the history line of the alias's last move, restores it from the alias file.
fn reconcile_history(
    locked: &Locked<'_>,
    model: &ModelName,
    alias: &AliasName,
    current: Option<&AliasRecord>,
) -> Result<(), PublishError> {
    let Some(current) = current else {
        return Ok(());
    };
    let history = locked.registry().history(model)?;
    let last = history
        .iter()
        .rev()
        .find(|e| &e.alias == alias)
        .map(|e| e.to);
    if last != Some(current.version) {
        locked.append_history(&HistoryEntry {
            alias: alias.clone(),
            from: current.previous,
            to: current.version,
            action: AliasAction::Recovered,
            reason: format!("restored from aliases/{alias}.json: {}", current.reason),
            at: current.updated_at.clone(),
            request_id: None,
        })?;
    }
    Ok(())
}

/// Replays the alias's history as a stack (publish and set-alias push, rollback pops): the
/// rollback target is the entry under the top. Rolling back twice goes back two versions.
fn rollback_target(
    locked: &Locked<'_>,
    model: &ModelName,
    alias: &AliasName,
) -> Result<u64, PublishError> {
    let registry = locked.registry();
    let nothing = |why: &str| PublishError::NothingToRollBack {
        model: model.clone(),
        alias: alias.clone(),
        why: why.to_string(),
    };
    let current = registry
        .alias(model, alias)?
        .ok_or_else(|| nothing("the alias does not exist"))?;
    reconcile_history(locked, model, alias, Some(&current))?;
    let mut stack: Vec<u64> = Vec::new();
    for entry in registry
        .history(model)?
        .into_iter()
        .filter(|e| &e.alias == alias)
    {
        match entry.action {
            AliasAction::Rollback => {
                stack.pop();
                if stack.last() != Some(&entry.to) {
                    stack.push(entry.to);
                }
            }
            _ => stack.push(entry.to),
        }
    }
    match stack.len() {
        0 | 1 => Err(nothing(&format!(
            "v{} is the first version it pointed at",
            current.version
        ))),
        n => Ok(stack[n - 2]),
    }
}

#[cfg(test)]
mod tests;
