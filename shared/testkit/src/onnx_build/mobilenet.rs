//! A MobileNetV2-shaped CNN (the published layer plan: inverted residual blocks of pointwise
//! expansion, 3×3 depthwise convolution and linear projection, ReLU6 as `Clip`), with
//! pseudo-random weights: ~3.5 M parameters, ~14 MB, 1×3×224×224 in, 1000 logits out. Real
//! weights cannot be downloaded here; the cost of running it does not depend on their values.

use super::Dim;
use super::cnn::CnnBuilder;

/// `(expansion, channels, repeats, stride)` of each stage, as in the MobileNetV2 paper.
const STAGES: [(usize, usize, usize, usize); 7] = [
    (1, 16, 1, 1),
    (6, 24, 2, 2),
    (6, 32, 3, 2),
    (6, 64, 4, 2),
    (6, 96, 3, 1),
    (6, 160, 3, 2),
    (6, 320, 1, 1),
];

/// A convolution followed by ReLU6, or linear.
fn conv(
    b: &mut CnnBuilder,
    input: &str,
    channels: (usize, usize),
    kernel: usize,
    stride: usize,
    group: usize,
    relu6: bool,
) -> String {
    let out = b.conv(input, channels, kernel, stride, group);
    if relu6 { b.relu6(&out) } else { out }
}

/// The model's bytes; `seed` picks the weights.
pub fn mobilenet_v2(seed: u32) -> Vec<u8> {
    let mut b = CnnBuilder::new(seed);
    let mut x = conv(&mut b, "input", (3, 32), 3, 2, 1, true);
    let mut channels = 32;
    for (expansion, c_out, repeats, stride) in STAGES {
        for i in 0..repeats {
            let stride = if i == 0 { stride } else { 1 };
            let hidden = channels * expansion;
            let mut h = x.clone();
            if expansion != 1 {
                h = conv(&mut b, &h, (channels, hidden), 1, 1, 1, true);
            }
            h = conv(&mut b, &h, (hidden, hidden), 3, stride, hidden, true);
            h = conv(&mut b, &h, (hidden, c_out), 1, 1, 1, false);
            if stride == 1 && channels == c_out {
                h = b.add(&x, &h);
            }
            x = h;
            channels = c_out;
        }
    }
    x = conv(&mut b, &x, (channels, 1280), 1, 1, 1, true);
    b.classifier("mobilenet_v2", &x, 1280)
}

/// One inverted residual block of the same ops on a 1×3×16×16-sized input with a symbolic batch
/// `N` (→ N×4): small enough for unit tests of layouts, artifacts and per-shape plans.
pub fn small_cnn(seed: u32) -> Vec<u8> {
    let mut b = CnnBuilder::new(seed);
    let x = conv(&mut b, "input", (3, 16), 3, 2, 1, true);
    let h = conv(&mut b, &x, (16, 16), 3, 1, 16, true);
    let h = conv(&mut b, &h, (16, 16), 1, 1, 1, false);
    let sum = b.add(&x, &h);
    let y = conv(&mut b, &sum, (16, 4), 1, 1, 1, false);
    b.pool(&y, "logits");
    let batch = || Dim::DimParam("N".into());
    b.graph(
        "small_cnn",
        vec![
            batch(),
            Dim::DimValue(3),
            Dim::DimValue(16),
            Dim::DimValue(16),
        ],
        vec![batch(), Dim::DimValue(4)],
    )
}
