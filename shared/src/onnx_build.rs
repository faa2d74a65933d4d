//! Small, real ONNX models written with tract's own protobuf types: the examples `modelctl demo`
//! ships and the models the tests upload. A linear layer followed by a softmax, so two versions
//! with different weights give answers a test can tell apart and compute by hand.

use prost::Message;
use tract_onnx::pb::{
    AttributeProto, GraphProto, ModelProto, NodeProto, OperatorSetIdProto, TensorProto,
    TensorShapeProto, TypeProto, ValueInfoProto, attribute_proto::AttributeType,
    tensor_proto::DataType as PbType, tensor_shape_proto::Dimension,
    tensor_shape_proto::dimension::Value as Dim, type_proto,
};

/// `y = softmax(x · W + b)` with `x: [batch, inputs]`, `W: [inputs, outputs]`.
#[derive(Debug, Clone)]
pub struct LinearSoftmax {
    pub input: String,
    pub output: String,
    /// `weights[i][o]`.
    pub weights: Vec<Vec<f32>>,
    pub bias: Vec<f32>,
    /// `None`: a dynamic batch dimension (`N`); `Some(n)`: fixed.
    pub batch: Option<i64>,
}

impl LinearSoftmax {
    /// An iris-like classifier (4 features, 3 classes) whose weights depend on `seed`.
    pub fn iris(seed: u32) -> Self {
        let mut state = seed.wrapping_mul(2654435761).wrapping_add(1);
        let mut next = move || {
            state ^= state << 13;
            state ^= state >> 17;
            state ^= state << 5;
            (state % 2000) as f32 / 1000.0 - 1.0
        };
        let weights = (0..4).map(|_| (0..3).map(|_| next()).collect()).collect();
        let bias = (0..3).map(|_| next()).collect();
        Self {
            input: "input".into(),
            output: "probabilities".into(),
            weights,
            bias,
            batch: None,
        }
    }

    pub fn inputs(&self) -> usize {
        self.weights.len()
    }

    pub fn outputs(&self) -> usize {
        self.bias.len()
    }

    /// The expected output for one row, computed here without tract (f64 arithmetic).
    pub fn predict(&self, row: &[f32]) -> Vec<f64> {
        let logits: Vec<f64> = (0..self.outputs())
            .map(|o| {
                self.bias[o] as f64
                    + row
                        .iter()
                        .zip(&self.weights)
                        .map(|(x, w)| *x as f64 * w[o] as f64)
                        .sum::<f64>()
            })
            .collect();
        let max = logits.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
        let exps: Vec<f64> = logits.iter().map(|l| (l - max).exp()).collect();
        let total: f64 = exps.iter().sum();
        exps.iter().map(|e| e / total).collect()
    }

    pub fn to_bytes(&self) -> Vec<u8> {
        let (n_in, n_out) = (self.inputs() as i64, self.outputs() as i64);
        let batch = match self.batch {
            Some(n) => Dim::DimValue(n),
            None => Dim::DimParam("N".into()),
        };
        let graph = GraphProto {
            name: "linear_softmax".into(),
            node: vec![
                node("Gemm", &[&self.input, "W", "B"], &["logits"], vec![]),
                node(
                    "Softmax",
                    &["logits"],
                    &[&self.output],
                    vec![int_attribute("axis", 1)],
                ),
            ],
            initializer: vec![
                float_tensor(
                    "W",
                    &[n_in, n_out],
                    self.weights.iter().flatten().copied().collect(),
                ),
                float_tensor("B", &[n_out], self.bias.clone()),
            ],
            input: vec![value_info(
                &self.input,
                vec![batch.clone(), Dim::DimValue(n_in)],
            )],
            output: vec![value_info(&self.output, vec![batch, Dim::DimValue(n_out)])],
            ..Default::default()
        };
        ModelProto {
            ir_version: 8,
            producer_name: "modelpipe".into(),
            opset_import: vec![OperatorSetIdProto {
                domain: String::new(),
                version: 13,
            }],
            graph: Some(graph),
            ..Default::default()
        }
        .encode_to_vec()
    }
}

fn node(op: &str, inputs: &[&str], outputs: &[&str], attribute: Vec<AttributeProto>) -> NodeProto {
    NodeProto {
        op_type: op.into(),
        name: format!("{op}_{}", outputs[0]),
        input: inputs.iter().map(|s| s.to_string()).collect(),
        output: outputs.iter().map(|s| s.to_string()).collect(),
        attribute,
        ..Default::default()
    }
}

fn int_attribute(name: &str, value: i64) -> AttributeProto {
    AttributeProto {
        name: name.into(),
        r#type: AttributeType::Int as i32,
        i: value,
        ..Default::default()
    }
}

fn float_tensor(name: &str, dims: &[i64], data: Vec<f32>) -> TensorProto {
    TensorProto {
        name: name.into(),
        dims: dims.to_vec(),
        data_type: PbType::Float as i32,
        float_data: data,
        ..Default::default()
    }
}

fn value_info(name: &str, dims: Vec<Dim>) -> ValueInfoProto {
    let shape = TensorShapeProto {
        dim: dims
            .into_iter()
            .map(|d| Dimension {
                value: Some(d),
                ..Default::default()
            })
            .collect(),
    };
    ValueInfoProto {
        name: name.into(),
        r#type: Some(TypeProto {
            value: Some(type_proto::Value::TensorType(type_proto::Tensor {
                elem_type: PbType::Float as i32,
                shape: Some(shape),
            })),
            ..Default::default()
        }),
        ..Default::default()
    }
}
