//! A MobileNetV2-shaped CNN (the published layer plan: inverted residual blocks of pointwise
//! expansion, 3×3 depthwise convolution and linear projection, ReLU6 as `Clip`), with
//! pseudo-random weights: ~3.5 M parameters, ~14 MB, 1×3×224×224 in, 1000 logits out. Real
//! weights cannot be downloaded here; the cost of running it does not depend on their values.

use super::{
    Dim, GraphProto, NodeProto, TensorProto, Weights, float_tensor, int_attribute, ints_attribute,
    model_bytes, node, value_info,
};

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

struct Builder {
    weights: Weights,
    nodes: Vec<NodeProto>,
    initializers: Vec<TensorProto>,
    count: usize,
}

impl Builder {
    fn fresh(&mut self, prefix: &str) -> String {
        self.count += 1;
        format!("{prefix}{}", self.count)
    }

    /// A convolution with bias (batch norm folded in), optionally followed by ReLU6.
    fn conv(
        &mut self,
        input: &str,
        (c_in, c_out): (usize, usize),
        kernel: usize,
        stride: usize,
        group: usize,
        relu6: bool,
    ) -> String {
        let (w, b, out) = (self.fresh("w"), self.fresh("b"), self.fresh("conv"));
        let fan_in = c_in / group * kernel * kernel;
        let scale = (3.0 / fan_in as f32).sqrt();
        let k = kernel as i64;
        self.initializers.push(float_tensor(
            &w,
            &[c_out as i64, (c_in / group) as i64, k, k],
            self.weights.take(c_out * fan_in, scale),
        ));
        self.initializers.push(float_tensor(
            &b,
            &[c_out as i64],
            self.weights.take(c_out, 0.05),
        ));
        let pad = k / 2;
        self.nodes.push(node(
            "Conv",
            &[input, &w, &b],
            &[&out],
            vec![
                ints_attribute("kernel_shape", &[k, k]),
                ints_attribute("strides", &[stride as i64, stride as i64]),
                ints_attribute("pads", &[pad, pad, pad, pad]),
                int_attribute("group", group as i64),
            ],
        ));
        if !relu6 {
            return out;
        }
        let clipped = self.fresh("relu6_");
        self.nodes
            .push(node("Clip", &[&out, "zero", "six"], &[&clipped], vec![]));
        clipped
    }
}

/// The model's bytes; `seed` picks the weights.
pub fn mobilenet_v2(seed: u32) -> Vec<u8> {
    let mut b = Builder {
        weights: Weights::new(seed),
        nodes: Vec::new(),
        initializers: vec![
            float_tensor("zero", &[], vec![0.0]),
            float_tensor("six", &[], vec![6.0]),
        ],
        count: 0,
    };
    let mut x = b.conv("input", (3, 32), 3, 2, 1, true);
    let mut channels = 32;
    for (expansion, c_out, repeats, stride) in STAGES {
        for i in 0..repeats {
            let stride = if i == 0 { stride } else { 1 };
            let hidden = channels * expansion;
            let mut h = x.clone();
            if expansion != 1 {
                h = b.conv(&h, (channels, hidden), 1, 1, 1, true);
            }
            h = b.conv(&h, (hidden, hidden), 3, stride, hidden, true);
            h = b.conv(&h, (hidden, c_out), 1, 1, 1, false);
            if stride == 1 && channels == c_out {
                let sum = b.fresh("add");
                b.nodes.push(node("Add", &[&x, &h], &[&sum], vec![]));
                h = sum;
            }
            x = h;
            channels = c_out;
        }
    }
    x = b.conv(&x, (channels, 1280), 1, 1, 1, true);
    b.nodes
        .push(node("GlobalAveragePool", &[&x], &["pooled"], vec![]));
    b.nodes.push(node(
        "Flatten",
        &["pooled"],
        &["features"],
        vec![int_attribute("axis", 1)],
    ));
    let scale = (3.0f32 / 1280.0).sqrt();
    b.initializers.push(float_tensor(
        "fc_w",
        &[1280, 1000],
        b.weights.take(1280 * 1000, scale),
    ));
    b.initializers
        .push(float_tensor("fc_b", &[1000], b.weights.take(1000, 0.05)));
    b.nodes.push(node(
        "Gemm",
        &["features", "fc_w", "fc_b"],
        &["logits"],
        vec![],
    ));
    let graph = GraphProto {
        name: "mobilenet_v2".into(),
        node: b.nodes,
        initializer: b.initializers,
        input: vec![value_info(
            "input",
            [1, 3, 224, 224].map(Dim::DimValue).to_vec(),
        )],
        output: vec![value_info(
            "logits",
            vec![Dim::DimValue(1), Dim::DimValue(1000)],
        )],
        ..Default::default()
    };
    model_bytes(graph)
}
