//! The data layout a model's convolutions run in, chosen per model at ingest: tract's
//! `conv_nhwc` transform (channel-last convolutions, depthwise ones lowered to a dedicated
//! kernel) against the plain plan, each timed on the smoke input. Which one is faster depends on
//! the model (NOTES: mobilenet 13.4 vs 20.5 ms; resnet-like models gain less).

use serde::{Deserialize, Serialize};
use tract_onnx::prelude::*;
use tract_onnx::tract_core::internal::TractErrorContext;
use tract_onnx::tract_core::ops::cnn::Conv;
use tract_onnx::tract_core::transform::get_transform;

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

/// Whether the layout can matter: the model has a convolution.
pub(super) fn has_convolution(model: &TypedModel) -> bool {
    model.nodes().iter().any(|node| node.op_is::<Conv>())
}

/// `model` (decluttered, concrete input shapes) rewritten for `layout`.
pub(super) fn apply(model: TypedModel, layout: Layout) -> TractResult<TypedModel> {
    match layout {
        Layout::Plain => Ok(model),
        Layout::Nhwc => {
            let transform =
                get_transform("conv_nhwc")?.context("this tract has no conv_nhwc transform")?;
            let mut model = model;
            transform.transform(&mut model)?;
            // Folds the axis moves the rewrite leaves between consecutive convolutions.
            model.into_decluttered()
        }
    }
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
