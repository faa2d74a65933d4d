//! The data layout a model's convolutions run in, chosen per model at ingest: tract's
//! `conv_nhwc` transform (channel-last convolutions, depthwise ones lowered to a dedicated
//! kernel) against the plain plan, each timed on the smoke input. Which one is faster depends on
//! the model (NOTES: mobilenet 13.4 vs 20.5 ms; resnet-like models gain less).

use crate::Layout;
use tract_onnx::prelude::*;
use tract_onnx::tract_core::internal::TractErrorContext;
use tract_onnx::tract_core::ops::cnn::Conv;
use tract_onnx::tract_core::transform::get_transform;

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
