//! A rollout as an upload's metadata (`rollout=canary`, `rollout-<setting>=…`) or a model's
//! `contract.json` (`"rollout": {"plan": …, "settings": {…}}`) names it; the registry's
//! `rollout::plan` turns it into a plan, or says why it cannot.

use serde::{Deserialize, Serialize};

/// A rollout plan by name (`canary` or `shadow`) and the settings that replace its defaults.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RequestedRollout {
    pub plan: String,
    #[serde(default, skip_serializing_if = "std::collections::BTreeMap::is_empty")]
    pub settings: std::collections::BTreeMap<String, String>,
}
