//! The publisher's three alias actions (publish, rollback, set-alias), applied to the registry
//! under the model's lock through [`Locked::move_alias`], the one way an alias moves (which ends
//! the alias's running rollout, if any). The publisher Lambda, the validator's local hop and
//! `modelctl` all call [`apply`]. [`queries`] are its read-only actions.

mod queries;

use serde::{Deserialize, Serialize};

pub use self::queries::{
    HistoryAnswer, ModelStatus, PublisherQuery, StatusAnswer, answer, history, status,
};

use crate::{AliasAction, AliasMove, Locked, MoveError, Registry, RegistryError};
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
    Move(#[from] MoveError),
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
    let moved = locked.move_alias(
        AliasMove {
            alias,
            version: target,
            action,
            reason,
            request_id,
        },
        None,
    )?;
    Ok(PublisherResponse {
        model: model.clone(),
        alias: alias.clone(),
        version: moved.version,
        previous: moved.previous,
    })
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
    locked.restore_history(alias, Some(&current))?;
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
