//! Hostile models, for the tests that prove the validator refuses each in bounded time and
//! memory: well-formed protobuf that lies about sizes, loops, or asks for what is not there.

use tract_onnx::pb::TensorProto;
use tract_onnx::pb::tensor_proto::DataLocation;

use super::{Dim, GraphProto, PbType, float_tensor, ints_attribute, model_bytes, node, value_info};

fn graph(
    nodes: Vec<tract_onnx::pb::NodeProto>,
    input: Vec<i64>,
    initializer: Vec<TensorProto>,
) -> Vec<u8> {
    model_bytes(GraphProto {
        name: "hostile".into(),
        node: nodes,
        input: vec![value_info(
            "x",
            input.into_iter().map(Dim::DimValue).collect(),
        )],
        output: vec![value_info("y", vec![])],
        initializer,
        ..Default::default()
    })
}

/// `y = Relu(x)` on an input declared `[1, 100000, 100000]`: 40 GB of zeros to smoke-test.
pub fn huge_input() -> Vec<u8> {
    graph(
        vec![node("Relu", &["x"], &["y"], vec![])],
        vec![1, 100_000, 100_000],
        vec![],
    )
}

/// `y = x + w` where the initializer `w` claims 10^10 floats and carries 4 bytes.
pub fn lying_initializer() -> Vec<u8> {
    let w = TensorProto {
        name: "w".into(),
        dims: vec![100_000, 100_000],
        data_type: PbType::Float as i32,
        raw_data: vec![0; 4],
        ..Default::default()
    };
    graph(
        vec![node("Add", &["x", "w"], &["y"], vec![])],
        vec![1, 4],
        vec![w],
    )
}

/// `y = x + w` where `w` is "external data" at a path outside the model's directory.
pub fn external_data(location: &str) -> Vec<u8> {
    let mut w = float_tensor("w", &[4], vec![]);
    w.data_location = Some(DataLocation::External as i32);
    w.external_data = vec![tract_onnx::pb::StringStringEntryProto {
        key: "location".into(),
        value: location.into(),
    }];
    graph(
        vec![node("Add", &["x", "w"], &["y"], vec![])],
        vec![1, 4],
        vec![w],
    )
}

/// `a = Relu(b)`, `b = Relu(a)`, `y = Add(x, a)`: a cycle.
pub fn cyclic() -> Vec<u8> {
    graph(
        vec![
            node("Relu", &["b"], &["a"], vec![]),
            node("Relu", &["a"], &["b"], vec![]),
            node("Add", &["x", "a"], &["y"], vec![]),
        ],
        vec![1, 4],
        vec![],
    )
}

/// `y = NoSuchOp(x)`.
pub fn unsupported_op() -> Vec<u8> {
    graph(
        vec![node("NoSuchOp", &["x"], &["y"], vec![])],
        vec![1, 4],
        vec![],
    )
}

/// `depth` Relu nodes in a chain.
pub fn deep_chain(depth: usize) -> Vec<u8> {
    let names: Vec<String> = (0..=depth)
        .map(|i| match i {
            0 => "x".to_string(),
            i if i == depth => "y".to_string(),
            i => format!("h{i}"),
        })
        .collect();
    let nodes = names
        .windows(2)
        .map(|pair| node("Relu", &[&pair[0]], &[&pair[1]], vec![]))
        .collect();
    graph(nodes, vec![1, 4], vec![])
}

/// `y = x + RandomUniform(shape=[1,4], seed=1)`: a valid model whose answers depend on the
/// engine's random generator, so tract and ONNX Runtime disagree on it (the planted
/// disagreement).
pub fn random_noise() -> Vec<u8> {
    let seed = tract_onnx::pb::AttributeProto {
        name: "seed".into(),
        r#type: tract_onnx::pb::attribute_proto::AttributeType::Float as i32,
        f: 1.0,
        ..Default::default()
    };
    graph(
        vec![
            node(
                "RandomUniform",
                &[],
                &["noise"],
                vec![seed, ints_attribute("shape", &[1, 4])],
            ),
            node("Add", &["x", "noise"], &["y"], vec![]),
        ],
        vec![1, 4],
        vec![],
    )
}
