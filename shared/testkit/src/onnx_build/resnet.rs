//! A ResNet-18-shaped CNN (the published layer plan: a 7×7 stem, max pooling, four stages of two
//! basic blocks of 3×3 convolutions with identity or 1×1 projection shortcuts, ReLU), with
//! pseudo-random weights: ~11.7 M parameters, ~47 MB, 1×3×224×224 in, 1000 logits out. Where
//! mobilenet_v2 is depthwise convolutions, this is dense ones: most of its time is matmuls.

use super::cnn::CnnBuilder;
use super::{ints_attribute, node};

/// Output channels of each stage; every stage but the first halves the resolution.
const STAGES: [usize; 4] = [64, 128, 256, 512];

/// The model's bytes; `seed` picks the weights.
pub fn resnet18(seed: u32) -> Vec<u8> {
    let mut b = CnnBuilder::new(seed);
    let stem = b.conv("input", (3, 64), 7, 2, 1);
    let stem = b.relu(&stem);
    let mut x = b.fresh("maxpool");
    b.push_node(node(
        "MaxPool",
        &[&stem],
        &[&x],
        vec![
            ints_attribute("kernel_shape", &[3, 3]),
            ints_attribute("strides", &[2, 2]),
            ints_attribute("pads", &[1, 1, 1, 1]),
        ],
    ));
    let mut channels = 64;
    for (stage, c_out) in STAGES.into_iter().enumerate() {
        for block in 0..2 {
            let stride = if stage > 0 && block == 0 { 2 } else { 1 };
            let h = b.conv(&x, (channels, c_out), 3, stride, 1);
            let h = b.relu(&h);
            let h = b.conv(&h, (c_out, c_out), 3, 1, 1);
            let shortcut = if stride != 1 || channels != c_out {
                b.conv(&x, (channels, c_out), 1, stride, 1)
            } else {
                x.clone()
            };
            let sum = b.add(&h, &shortcut);
            x = b.relu(&sum);
            channels = c_out;
        }
    }
    b.classifier("resnet18", &x, channels)
}
