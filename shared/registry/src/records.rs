//! The JSON documents the registry keeps: what a version is (manifest), where an alias points,
//! every alias move (history), what became of each uploaded key (upload record) and why an upload
//! was refused (rejection).

use serde::{Deserialize, Serialize};

use modelpipe_core::digest::Digest;
use modelpipe_core::engine_choice::EngineChoice;
use modelpipe_core::engine_choice::{EngineKind, Layout, LayoutChoice};
use modelpipe_core::model_name::{AliasName, ModelName};
pub use modelpipe_core::prepared::{Artifact, Optimized};
pub use modelpipe_core::requested_rollout::RequestedRollout;
use modelpipe_core::signature::Signature;
use modelpipe_core::time::Timestamp;
pub use modelpipe_signing::Signer;

/// Where a version's bytes came from.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Source {
    pub bucket: String,
    pub key: String,
    pub version_id: Option<String>,
    pub etag: Option<String>,
    pub sequencer: Option<String>,
}

/// `versions/<N>/manifest.json`: immutable once committed.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Manifest {
    pub model: ModelName,
    pub version: u64,
    pub sha256: String,
    pub size: u64,
    pub source: Source,
    pub signature: Signature,
    /// Set when the upload carried `allow-signature-change=true` and the signature did change.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub signature_change: Option<String>,
    pub validated_at: String,
    /// The convolution layout chosen at ingest; absent in versions committed before it was.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub layout: Option<LayoutChoice>,
    /// `model.nnef.tar` beside `model.onnx`, compiled at ingest; absent when none was written.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub artifact: Option<Artifact>,
    /// `model.optimized.onnx` beside `model.onnx`: the graph ONNX Runtime optimised at ingest
    /// (extended level), which it loads faster; absent when none was kept.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub optimized: Option<Optimized>,
    /// The engine that serves this version and why, chosen at ingest; absent in versions
    /// committed before there was a choice, which tract serves.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub engine: Option<EngineChoice>,
    /// The input shapes the smoke test ran and inference warms up on, when the declared ones
    /// with dynamic dimensions 1 do not run (an export that baked a sequence length).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub smoke_shapes: Option<Vec<Vec<usize>>>,
    /// Who signed it (`model.onnx.sig` beside it); absent: unsigned.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub signer: Option<Signer>,
}

impl Manifest {
    /// The engine that serves this version.
    pub fn engine_kind(&self) -> EngineKind {
        self.engine.as_ref().map_or(EngineKind::Tract, |c| c.engine)
    }

    /// The convolution layout tract's plans use.
    pub fn layout(&self) -> Layout {
        self.layout.as_ref().map(|c| c.layout).unwrap_or_default()
    }
}

impl Manifest {
    /// The model file's.
    pub fn digest(&self) -> Digest {
        Digest {
            sha256: self.sha256.clone(),
            size: self.size,
        }
    }
}

/// `aliases/<alias>.json`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AliasRecord {
    pub version: u64,
    pub sha256: String,
    pub updated_at: Timestamp,
    pub previous: Option<u64>,
    pub reason: String,
}

/// What moved an alias.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum AliasAction {
    Publish,
    Rollback,
    SetAlias,
    /// A rollout's candidate, promoted by its controller or an operator.
    Promote,
    /// Written when a move's history line was lost to a crash and is restored from the alias file.
    Recovered,
}

/// One line of `history.jsonl`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HistoryEntry {
    pub alias: AliasName,
    pub from: Option<u64>,
    pub to: u64,
    pub action: AliasAction,
    pub reason: String,
    pub at: Timestamp,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub request_id: Option<String>,
}

/// What became of the latest event seen for one object key: the gate that makes duplicate
/// events no-ops and keeps an older upload from replacing a newer one.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct UploadRecord {
    pub key: String,
    /// The bucket of an upload that waits for its signature (to tag it when it expires).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bucket: Option<String>,
    pub sequencer: Option<String>,
    pub status: UploadStatus,
    pub version: Option<u64>,
    /// The alias this upload publishes to; none when it only registers a version.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub alias: Option<AliasName>,
    /// Upload metadata `rollout=`: the alias moves by a guarded rollout, not at once.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rollout: Option<RequestedRollout>,
    pub updated_at: Timestamp,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum UploadStatus {
    /// Committed as a version, its publish not yet confirmed: a redelivered event resumes it.
    Committed,
    Published,
    /// Handed to a guarded rollout of its alias.
    RollingOut,
    /// Checked as far as its signature, which its model's policy requires and which has not
    /// arrived: its `.sig` object's event resumes it, until `SIGNATURE_WAIT_MS` rejects it.
    AwaitingSignature,
    Registered,
    Rejected,
}

impl UploadStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Committed => "committed",
            Self::Published => "published",
            Self::RollingOut => "rolling-out",
            Self::AwaitingSignature => "awaiting-signature",
            Self::Registered => "registered",
            Self::Rejected => "rejected",
        }
    }
}

/// One line of `rejections.jsonl`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Rejection {
    pub key: String,
    pub sequencer: Option<String>,
    pub sha256: Option<String>,
    pub reason: String,
    pub at: String,
}

/// Now, as RFC 3339 with milliseconds, UTC.
pub fn now() -> String {
    humantime::format_rfc3339_millis(std::time::SystemTime::now()).to_string()
}

/// Orders two S3 event sequencers for one key: hexadecimal numbers of possibly different lengths.
pub fn sequencer_cmp(a: &str, b: &str) -> std::cmp::Ordering {
    let a = a.trim_start_matches('0').to_ascii_uppercase();
    let b = b.trim_start_matches('0').to_ascii_uppercase();
    a.len().cmp(&b.len()).then_with(|| a.cmp(&b))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::cmp::Ordering::*;

    #[test]
    fn sequencers_compare_as_hex_numbers() {
        assert_eq!(
            sequencer_cmp("0055AED6DCD90281E5", "0055AED6DCD90281E6"),
            Less
        );
        assert_eq!(sequencer_cmp("0A", "9"), Greater);
        assert_eq!(sequencer_cmp("00ff", "FF"), Equal);
    }
}
