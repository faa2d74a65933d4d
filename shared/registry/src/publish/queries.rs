//! The publisher's read-only actions, so an operator with only `lambda:InvokeFunction` (and no
//! access to EFS) can see what `modelctl status` and `modelctl history` show locally:
//!
//! ```text
//! {"action":"status",  "model":"iris"}     model optional: every model
//! {"action":"history", "model":"iris"}
//! ```

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use super::PublishError;
use crate::{AliasRecord, HistoryEntry, Manifest, Registry};
use modelpipe_core::model_name::{AliasName, ModelName};

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "action", rename_all = "kebab-case", deny_unknown_fields)]
pub enum PublisherQuery {
    Status {
        #[serde(default, skip_serializing_if = "Option::is_none")]
        model: Option<ModelName>,
    },
    History {
        model: ModelName,
    },
}

impl PublisherQuery {
    /// Whether `payload` asks for a query rather than an alias move.
    pub fn is_query(payload: &serde_json::Value) -> bool {
        matches!(
            payload.get("action").and_then(|a| a.as_str()),
            Some("status" | "history")
        )
    }
}

/// One model's aliases and versions.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ModelStatus {
    pub model: ModelName,
    pub aliases: BTreeMap<AliasName, AliasRecord>,
    pub versions: Vec<Manifest>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StatusAnswer {
    pub models: Vec<ModelStatus>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HistoryAnswer {
    pub model: ModelName,
    pub history: Vec<HistoryEntry>,
}

/// The status of `model`, or of every model (blocking: reads the registry).
pub fn status(
    registry: &Registry,
    model: Option<&ModelName>,
) -> Result<StatusAnswer, PublishError> {
    let models = match model {
        Some(model) => vec![model.clone()],
        None => registry.models()?,
    };
    let mut answer = StatusAnswer { models: Vec::new() };
    for model in models {
        let versions = registry
            .versions(&model)?
            .into_iter()
            .map(|v| registry.manifest(&model, v))
            .collect::<Result<Vec<_>, _>>()?;
        if versions.is_empty() {
            return Err(PublishError::BadRequest(format!(
                "model {model} has no versions"
            )));
        }
        answer.models.push(ModelStatus {
            aliases: registry.aliases(&model)?,
            model,
            versions,
        });
    }
    Ok(answer)
}

pub fn history(registry: &Registry, model: &ModelName) -> Result<HistoryAnswer, PublishError> {
    Ok(HistoryAnswer {
        model: model.clone(),
        history: registry.history(model)?,
    })
}

/// Answers a query as the publisher's JSON.
pub fn answer(
    registry: &Registry,
    query: &PublisherQuery,
) -> Result<serde_json::Value, PublishError> {
    let value = match query {
        PublisherQuery::Status { model } => serde_json::to_value(status(registry, model.as_ref())?),
        PublisherQuery::History { model } => serde_json::to_value(history(registry, model)?),
    };
    Ok(value.expect("answers serialise"))
}
