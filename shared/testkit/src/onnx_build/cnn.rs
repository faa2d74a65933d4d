//! What the generated CNNs share: convolutions with folded batch norm (weights and bias from a
//! seeded generator), activations, the classifier head (global average pooling, a 1000-way
//! `Gemm`) and the graph around them.

use super::{
    Dim, GraphProto, NodeProto, TensorProto, Weights, float_tensor, int_attribute, ints_attribute,
    model_bytes, node, value_info,
};

pub(super) struct CnnBuilder {
    weights: Weights,
    nodes: Vec<NodeProto>,
    initializers: Vec<TensorProto>,
    count: usize,
}

impl CnnBuilder {
    pub(super) fn new(seed: u32) -> Self {
        Self {
            weights: Weights::new(seed),
            nodes: Vec::new(),
            initializers: vec![
                float_tensor("zero", &[], vec![0.0]),
                float_tensor("six", &[], vec![6.0]),
            ],
            count: 0,
        }
    }

    pub(super) fn fresh(&mut self, prefix: &str) -> String {
        self.count += 1;
        format!("{prefix}{}", self.count)
    }

    /// A `kernel`×`kernel` convolution with bias (batch norm folded in), "same" padding.
    pub(super) fn conv(
        &mut self,
        input: &str,
        (c_in, c_out): (usize, usize),
        kernel: usize,
        stride: usize,
        group: usize,
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
        out
    }

    pub(super) fn push_node(&mut self, node: NodeProto) {
        self.nodes.push(node);
    }

    pub(super) fn relu(&mut self, input: &str) -> String {
        let out = self.fresh("relu");
        self.nodes.push(node("Relu", &[input], &[&out], vec![]));
        out
    }

    /// ReLU6, as `Clip(x, 0, 6)`.
    pub(super) fn relu6(&mut self, input: &str) -> String {
        let out = self.fresh("relu6_");
        self.nodes
            .push(node("Clip", &[input, "zero", "six"], &[&out], vec![]));
        out
    }

    pub(super) fn add(&mut self, a: &str, b: &str) -> String {
        let out = self.fresh("add");
        self.nodes.push(node("Add", &[a, b], &[&out], vec![]));
        out
    }

    /// Global average pooling and flattening: `N×C×H×W` → `N×C`, named `output`.
    pub(super) fn pool(&mut self, input: &str, output: &str) {
        let pooled = self.fresh("pooled");
        self.nodes
            .push(node("GlobalAveragePool", &[input], &[&pooled], vec![]));
        self.nodes.push(node(
            "Flatten",
            &[&pooled],
            &[output],
            vec![int_attribute("axis", 1)],
        ));
    }

    /// The ImageNet classifier on `channels` feature maps: 1×3×224×224 `input` → 1×1000
    /// `logits`; the model's bytes.
    pub(super) fn classifier(mut self, name: &str, features: &str, channels: usize) -> Vec<u8> {
        self.pool(features, "features");
        let scale = (3.0 / channels as f32).sqrt();
        self.initializers.push(float_tensor(
            "fc_w",
            &[channels as i64, 1000],
            self.weights.take(channels * 1000, scale),
        ));
        self.initializers
            .push(float_tensor("fc_b", &[1000], self.weights.take(1000, 0.05)));
        self.nodes.push(node(
            "Gemm",
            &["features", "fc_w", "fc_b"],
            &["logits"],
            vec![],
        ));
        self.graph(
            name,
            [1, 3, 224, 224].map(Dim::DimValue).to_vec(),
            vec![Dim::DimValue(1), Dim::DimValue(1000)],
        )
    }

    /// The model's bytes: `input` of `input_dims` → `logits` of `output_dims`.
    pub(super) fn graph(self, name: &str, input_dims: Vec<Dim>, output_dims: Vec<Dim>) -> Vec<u8> {
        model_bytes(GraphProto {
            name: name.into(),
            node: self.nodes,
            initializer: self.initializers,
            input: vec![value_info("input", input_dims)],
            output: vec![value_info("logits", output_dims)],
            ..Default::default()
        })
    }
}

#[cfg(test)]
mod tests {
    use modelpipe_core::signature::Shape;
    use modelpipe_engine::Engine;

    #[test]
    fn the_generated_cnns_load_as_imagenet_classifiers_of_their_published_size() {
        let dir = tempfile::tempdir().unwrap();
        // Parameters of the published models: 3.5 M and 11.7 M floats.
        for (name, bytes, params) in [
            ("mobilenet_v2", super::super::mobilenet_v2(1), 3.5e6),
            ("resnet18", super::super::resnet18(1), 11.7e6),
        ] {
            let floats = bytes.len() as f64 / 4.0;
            assert!(
                (floats / params - 1.0).abs() < 0.03,
                "{name}: {floats} floats"
            );
            let path = dir.path().join(format!("{name}.onnx"));
            std::fs::write(&path, &bytes).unwrap();
            let engine = Engine::load(&path).unwrap();
            let signature = engine.signature();
            assert_eq!(
                Shape(&signature.inputs[0].shape).to_string(),
                "[1,3,224,224]"
            );
            assert_eq!(Shape(&signature.outputs[0].shape).to_string(), "[1,1000]");
        }
    }
}
