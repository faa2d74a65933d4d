//! The bounds on the work one model may cost an engine, set by the contract's variables (the
//! config crate reads them; the engines honour them): here, so that a function that reads its
//! configuration does not link the engines.

use std::time::Duration;

/// Bounds on the work one model may cost before any engine runs it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// `MAX_MODEL_NODES`: graphs with more nodes (subgraphs counted) are refused unread.
    pub max_nodes: usize,
    /// `MODEL_LOAD_BUDGET_MS`: how long one engine may take to load a model; past it the engine
    /// is given up on (its thread finishes in the background, bounded by `max_nodes`).
    pub load_budget: Duration,
    /// Models larger than this are not loaded in both engines at once to be compared: ONNX
    /// Runtime, the reference, is loaded alone (tract if it cannot), so ingest holds one
    /// engine's copy. In Lambda a quarter of the function's memory; unbounded elsewhere.
    pub compare_max_bytes: u64,
}

/// The default node limit. The largest real exports are a few thousand nodes (BERT-large and
/// GPT-2 medium from torch: ~2,500–5,000; this corpus's transformer encoder: 106); tract took
/// 2.3 s to load 10,000 chained nodes here and 16 s for 20,000 (ONNX Runtime 0.2 and 0.5 s),
/// its load time growing faster than linearly.
pub const MAX_MODEL_NODES: usize = 10_000;

/// The default load budget: a ResNet loads in under 0.3 s in either engine, the largest graph
/// the node limit lets through (10,000 nodes) in 2.3 s in tract; 30 s leaves room for a slower
/// Lambda and keeps the validator well inside its 15 minutes.
pub const MODEL_LOAD_BUDGET: Duration = Duration::from_secs(30);

impl Default for Limits {
    fn default() -> Self {
        Self {
            max_nodes: MAX_MODEL_NODES,
            load_budget: MODEL_LOAD_BUDGET,
            compare_max_bytes: u64::MAX,
        }
    }
}
