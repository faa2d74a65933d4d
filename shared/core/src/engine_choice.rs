//! What ingest decided for a version and why, as its manifest records it: the engine that serves
//! it ([`EngineChoice`], with each engine's trial and how their answers compared) and, for
//! tract, the layout its convolutions run in ([`LayoutChoice`]). The engines make these
//! decisions (`modelpipe-engine`); the registry stores them; serving reads them back.

use serde::{Deserialize, Serialize};

/// Which engine runs a model.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum EngineKind {
    Tract,
    Onnxruntime,
}

impl EngineKind {
    pub const ALL: [EngineKind; 2] = [EngineKind::Tract, EngineKind::Onnxruntime];

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Tract => "tract",
            Self::Onnxruntime => "onnxruntime",
        }
    }
}

impl std::fmt::Display for EngineKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

impl std::str::FromStr for EngineKind {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        match s.trim().to_ascii_lowercase().as_str() {
            "tract" => Ok(Self::Tract),
            "onnxruntime" | "ort" => Ok(Self::Onnxruntime),
            other => Err(format!("engine {other:?} is not tract or onnxruntime")),
        }
    }
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Layout {
    /// The model's own layout (channel-first for ONNX convolutions).
    #[default]
    Plain,
    /// Convolutions rewritten channel-last by tract's `conv_nhwc` transform.
    Nhwc,
}

/// The layout chosen at ingest and the timings that chose it (recorded in the manifest).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LayoutChoice {
    pub layout: Layout,
    /// Fastest smoke run of the plain plan, µs.
    pub plain_us: u64,
    /// Fastest smoke run with `conv_nhwc`, µs; none when the model has no convolution (or the
    /// transform could not be applied).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub nhwc_us: Option<u64>,
}

impl LayoutChoice {
    /// Picks the faster of the two timings.
    pub fn fastest(plain_us: u64, nhwc_us: Option<u64>) -> Self {
        let layout = match nhwc_us {
            Some(nhwc) if nhwc < plain_us => Layout::Nhwc,
            _ => Layout::Plain,
        };
        Self {
            layout,
            plain_us,
            nhwc_us,
        }
    }
}

/// The decision recorded in the manifest (`engine`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EngineChoice {
    pub engine: EngineKind,
    /// Why, in one sentence.
    pub reason: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tract: Option<Trial>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub onnxruntime: Option<Trial>,
    /// Present when both engines ran the probes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub agreement: Option<Agreement>,
}

/// One engine's trial: how long it took to load and its fastest run on the smoke input, or why
/// it could not serve the model.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Trial {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub load_ms: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub run_us: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

impl Trial {
    pub fn failed(error: &impl std::fmt::Display) -> Self {
        Self {
            load_ms: None,
            run_us: None,
            error: Some(error.to_string()),
        }
    }
}

/// How the engines' answers compared on the probes.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Agreement {
    pub agree: bool,
    /// Probe inputs both engines ran.
    pub probes: usize,
    /// Largest absolute difference between float outputs.
    pub max_abs_diff: f64,
    /// The first difference beyond the tolerance, when they disagree.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub difference: Option<String>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_faster_layout_wins_and_plain_is_kept_without_a_trial() {
        assert_eq!(LayoutChoice::fastest(100, Some(80)).layout, Layout::Nhwc);
        assert_eq!(LayoutChoice::fastest(80, Some(100)).layout, Layout::Plain);
        assert_eq!(LayoutChoice::fastest(80, None).layout, Layout::Plain);
    }
}
