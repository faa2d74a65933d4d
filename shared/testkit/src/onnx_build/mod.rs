//! Real ONNX models written with tract's own protobuf types: the examples `modelctl demo` ships,
//! the models tests upload and serve, and the models benchmarks measure. Each builder also knows
//! what its model computes where a test needs answers computed without tract.

mod cnn;
pub mod hostile;
mod identity;
mod linear;
mod mlp;
mod mobilenet;
mod resnet;

use prost::Message;
use tract_onnx::pb::{
    AttributeProto, GraphProto, ModelProto, NodeProto, OperatorSetIdProto, TensorProto,
    TensorShapeProto, TypeProto, ValueInfoProto, attribute_proto::AttributeType,
    tensor_proto::DataType as PbType, tensor_shape_proto::Dimension,
    tensor_shape_proto::dimension::Value as Dim, type_proto,
};

pub use self::identity::Identity;
pub use self::linear::LinearSoftmax;
pub use self::mlp::Mlp;
pub use self::mobilenet::{mobilenet_v2, small_cnn};
pub use self::resnet::resnet18;

/// Deterministic pseudo-random weights in [-1, 1) (xorshift), so a seed names a model.
pub struct Weights(u32);

impl Weights {
    pub fn new(seed: u32) -> Self {
        Self(seed.wrapping_mul(2654435761).wrapping_add(1))
    }

    pub fn next(&mut self) -> f32 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 17;
        self.0 ^= self.0 << 5;
        (self.0 % 2000) as f32 / 1000.0 - 1.0
    }

    pub fn take(&mut self, n: usize, scale: f32) -> Vec<f32> {
        (0..n).map(|_| self.next() * scale).collect()
    }
}

/// A model of one graph, opset 13.
fn model_bytes(graph: GraphProto) -> Vec<u8> {
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

pub(crate) fn node(
    op: &str,
    inputs: &[&str],
    outputs: &[&str],
    attribute: Vec<AttributeProto>,
) -> NodeProto {
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

fn ints_attribute(name: &str, values: &[i64]) -> AttributeProto {
    AttributeProto {
        name: name.into(),
        r#type: AttributeType::Ints as i32,
        ints: values.to_vec(),
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
    typed_value_info(name, PbType::Float, dims)
}

fn typed_value_info(name: &str, elem_type: PbType, dims: Vec<Dim>) -> ValueInfoProto {
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
                elem_type: elem_type as i32,
                shape: Some(shape),
            })),
            ..Default::default()
        }),
        ..Default::default()
    }
}
