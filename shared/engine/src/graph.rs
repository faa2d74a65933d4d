//! What an ONNX file declares, read before any engine sees it: how many nodes it has (the bound
//! on an engine's work), which outputs are a ZipMap (a classifier's sequence of maps) and with
//! which class labels, whether a weight lives outside the file; and the rewrite tract needs to
//! load what converters write (dimensions named, ZipMap removed). Nothing here runs the model.

use std::collections::HashMap;

use modelpipe_core::signature::ClassLabels;
use prost::Message;

use tract_onnx::pb;
use tract_onnx::pb::tensor_shape_proto::dimension::Value as Dim;
use tract_onnx::pb::type_proto::Value as PbType;

/// The ONNX messages down to what [`Graph::read`] needs: prost skips every other field (the
/// weights above all) without copying it.
#[derive(Clone, PartialEq, Message)]
struct ModelOutline {
    #[prost(message, optional, tag = "7")]
    graph: Option<GraphOutline>,
}

#[derive(Clone, PartialEq, Message)]
struct GraphOutline {
    #[prost(message, repeated, tag = "1")]
    node: Vec<NodeOutline>,
    #[prost(message, repeated, tag = "5")]
    initializer: Vec<InitializerOutline>,
    #[prost(message, repeated, tag = "12")]
    output: Vec<NamedOutline>,
}

#[derive(Clone, PartialEq, Message)]
struct NodeOutline {
    #[prost(string, repeated, tag = "1")]
    input: Vec<String>,
    #[prost(string, repeated, tag = "2")]
    output: Vec<String>,
    #[prost(string, tag = "4")]
    op_type: String,
    #[prost(message, repeated, tag = "5")]
    attribute: Vec<AttributeOutline>,
}

#[derive(Clone, PartialEq, Message)]
struct AttributeOutline {
    #[prost(string, tag = "1")]
    name: String,
    #[prost(message, optional, tag = "5")]
    t: Option<InitializerOutline>,
    #[prost(message, optional, tag = "6")]
    g: Option<GraphOutline>,
    #[prost(int64, repeated, tag = "8")]
    ints: Vec<i64>,
    #[prost(bytes = "vec", repeated, tag = "9")]
    strings: Vec<Vec<u8>>,
    #[prost(message, repeated, tag = "11")]
    graphs: Vec<GraphOutline>,
}

#[derive(Clone, PartialEq, Message)]
struct InitializerOutline {
    #[prost(int64, repeated, tag = "1")]
    dims: Vec<i64>,
    #[prost(int32, tag = "2")]
    data_type: i32,
    #[prost(int64, repeated, tag = "7")]
    int64_data: Vec<i64>,
    #[prost(string, tag = "8")]
    name: String,
    /// Shares the file's buffer: weights are not copied.
    #[prost(bytes = "bytes", tag = "9")]
    raw_data: bytes::Bytes,
    #[prost(int32, tag = "14")]
    data_location: i32,
}

impl InitializerOutline {
    /// The values of a short 1-D INT64 tensor (a Reshape's target shape, say).
    fn short_ints(&self) -> Option<Vec<i64>> {
        let short = self.dims.len() == 1 && (1..=8).contains(&self.dims[0]);
        if !short || self.data_type != pb::tensor_proto::DataType::Int64 as i32 {
            return None;
        }
        if !self.int64_data.is_empty() {
            return Some(self.int64_data.clone());
        }
        let values: Vec<i64> = self
            .raw_data
            .chunks_exact(8)
            .map(|b| i64::from_le_bytes(b.try_into().expect("8 bytes")))
            .collect();
        (values.len() as i64 == self.dims[0]).then_some(values)
    }
}

#[derive(Clone, PartialEq, Message)]
struct NamedOutline {
    #[prost(string, tag = "1")]
    name: String,
}

/// A graph output made by a ZipMap node: served as the FP32 `[batch, classes]` tensor the
/// ZipMap was given, under the output's own name.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ZipMapOutput {
    /// The graph output's name.
    pub output: String,
    /// The probabilities tensor the ZipMap reads.
    pub probabilities: String,
    pub labels: ClassLabels,
}

/// What the file declares (see the module doc).
#[derive(Debug, Clone, Default)]
pub struct Graph {
    /// Nodes, counting those of subgraphs (If, Loop, Scan bodies).
    pub nodes: usize,
    pub zipmaps: Vec<ZipMapOutput>,
    /// Sizes the graph's short integer constants name (2 to 4096, smallest first, at most
    /// [`MAX_LENGTHS`]): where a model declares a dimension dynamic but an exporter baked one
    /// size into its reshapes, that size is among them.
    pub lengths: Vec<usize>,
}

/// Candidate sizes kept from a graph's constants.
pub const MAX_LENGTHS: usize = 8;

impl Graph {
    /// Reads the outline of the ONNX model in `bytes`; refuses a model whose weights live in
    /// other files (the registry keeps one file per version, and a path in a model must never
    /// make an engine read outside it).
    pub fn read(bytes: impl Into<bytes::Bytes>) -> Result<Self, String> {
        let model =
            ModelOutline::decode(bytes.into()).map_err(|e| format!("not an ONNX model: {e}"))?;
        let graph = model.graph.ok_or("the model has no graph")?;
        let mut nodes = 0;
        count_nodes(&graph, &mut nodes)?;
        let constants = graph.initializer.iter().chain(
            graph
                .node
                .iter()
                .flat_map(|n| &n.attribute)
                .filter_map(|a| a.t.as_ref()),
        );
        let mut lengths: Vec<usize> = constants
            .filter_map(InitializerOutline::short_ints)
            .flatten()
            .filter(|v| (2..=4096).contains(v))
            .map(|v| v as usize)
            .collect();
        lengths.sort_unstable();
        lengths.dedup();
        lengths.truncate(MAX_LENGTHS);
        let outputs: Vec<&str> = graph.output.iter().map(|o| o.name.as_str()).collect();
        let zipmaps = graph
            .node
            .iter()
            .filter(|node| node.op_type == "ZipMap")
            .filter(|node| node.output.len() == 1 && outputs.contains(&node.output[0].as_str()))
            .filter_map(|node| {
                let labels = class_labels(node)?;
                Some(ZipMapOutput {
                    output: node.output[0].clone(),
                    probabilities: node.input.first()?.clone(),
                    labels,
                })
            })
            .collect();
        Ok(Self {
            nodes,
            zipmaps,
            lengths,
        })
    }

    pub fn zipmap(&self, output: &str) -> Option<&ZipMapOutput> {
        self.zipmaps.iter().find(|z| z.output == output)
    }
}

fn count_nodes(graph: &GraphOutline, nodes: &mut usize) -> Result<(), String> {
    if let Some(external) = graph
        .initializer
        .iter()
        .find(|i| i.data_location == pb::tensor_proto::DataLocation::External as i32)
    {
        return Err(format!(
            "initializer '{}' keeps its data in another file (ONNX external data); save the model with its weights inside the .onnx file",
            external.name
        ));
    }
    *nodes += graph.node.len();
    for attribute in graph.node.iter().flat_map(|n| &n.attribute) {
        for sub in attribute.g.iter().chain(&attribute.graphs) {
            count_nodes(sub, nodes)?;
        }
    }
    Ok(())
}

fn class_labels(node: &NodeOutline) -> Option<ClassLabels> {
    node.attribute.iter().find_map(|a| match a.name.as_str() {
        "classlabels_int64s" => Some(ClassLabels::Int64(a.ints.clone())),
        "classlabels_strings" => Some(ClassLabels::String(
            a.strings
                .iter()
                .map(|s| String::from_utf8_lossy(s).into_owned())
                .collect(),
        )),
        _ => None,
    })
}

/// The symbol every input's unnamed first dimension gets: converters leave the batch dimension
/// unnamed on every input, and the inputs of one request share it.
const BATCH: &str = "N";

/// Rewrites `model` into what tract loads: every input dimension that has neither a size nor a
/// name gets a name (tract stops at "Source node without a determined fact" otherwise), and each
/// ZipMap output becomes the probabilities tensor it was given, under the output's name.
pub fn rewrite_for_tract(model: &mut pb::ModelProto, graph: &Graph) {
    let Some(proto) = model.graph.as_mut() else {
        return;
    };
    let initializers: Vec<String> = proto.initializer.iter().map(|i| i.name.clone()).collect();
    for (index, input) in proto.input.iter_mut().enumerate() {
        // Old IR versions list initializers as inputs too: those have sizes of their own.
        if initializers.contains(&input.name) {
            continue;
        }
        let Some(PbType::TensorType(tensor)) = input.r#type.as_mut().and_then(|t| t.value.as_mut())
        else {
            continue;
        };
        for (axis, dim) in tensor.shape.iter_mut().flat_map(|s| &mut s.dim).enumerate() {
            if dim.value.is_none() {
                dim.value = Some(Dim::DimParam(if axis == 0 {
                    BATCH.to_string()
                } else {
                    format!("unk_{index}_{axis}")
                }));
            }
        }
    }
    for zipmap in &graph.zipmaps {
        remove_zipmap(proto, zipmap);
    }
}

/// Removes the ZipMap node and renames its probabilities tensor to the output's name, so the
/// nodes that read the probabilities (a label's ArgMax) still do.
fn remove_zipmap(graph: &mut pb::GraphProto, zipmap: &ZipMapOutput) {
    graph
        .node
        .retain(|n| !(n.op_type == "ZipMap" && n.output.first() == Some(&zipmap.output)));
    let renames = HashMap::from([(zipmap.probabilities.as_str(), zipmap.output.as_str())]);
    let rename = |name: &mut String| {
        if let Some(new) = renames.get(name.as_str()) {
            *name = new.to_string();
        }
    };
    for node in &mut graph.node {
        node.input.iter_mut().for_each(rename);
        node.output.iter_mut().for_each(rename);
    }
    graph.value_info.retain(|v| v.name != zipmap.probabilities);
    if let Some(output) = graph.output.iter_mut().find(|o| o.name == zipmap.output) {
        // Typed float, shape left to tract's inference (the ZipMap's sequence type is not a tensor).
        output.r#type = Some(pb::TypeProto {
            value: Some(PbType::TensorType(pb::type_proto::Tensor {
                elem_type: pb::tensor_proto::DataType::Float as i32,
                shape: None,
            })),
            ..Default::default()
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn zipmap_model() -> pb::ModelProto {
        let attribute = pb::AttributeProto {
            name: "classlabels_int64s".into(),
            ints: vec![0, 1, 2],
            ..Default::default()
        };
        let node = |op: &str, input: &str, output: &str, attribute: Vec<pb::AttributeProto>| {
            pb::NodeProto {
                op_type: op.into(),
                input: vec![input.into()],
                output: vec![output.into()],
                attribute,
                ..Default::default()
            }
        };
        let unnamed = pb::TypeProto {
            value: Some(PbType::TensorType(pb::type_proto::Tensor {
                elem_type: pb::tensor_proto::DataType::Float as i32,
                shape: Some(pb::TensorShapeProto {
                    dim: vec![
                        Default::default(),
                        pb::tensor_shape_proto::Dimension {
                            value: Some(Dim::DimValue(3)),
                            ..Default::default()
                        },
                    ],
                }),
            })),
            ..Default::default()
        };
        pb::ModelProto {
            graph: Some(pb::GraphProto {
                node: vec![
                    node("Softmax", "x", "probabilities", vec![]),
                    node("ArgMax", "probabilities", "label", vec![]),
                    node(
                        "ZipMap",
                        "probabilities",
                        "output_probability",
                        vec![attribute],
                    ),
                ],
                input: vec![pb::ValueInfoProto {
                    name: "x".into(),
                    r#type: Some(unnamed),
                    ..Default::default()
                }],
                output: ["label", "output_probability"]
                    .map(|name| pb::ValueInfoProto {
                        name: name.into(),
                        ..Default::default()
                    })
                    .to_vec(),
                ..Default::default()
            }),
            ..Default::default()
        }
    }

    #[test]
    fn zipmap_outputs_and_their_labels_are_found_and_removed_for_tract() {
        let mut model = zipmap_model();
        let graph = Graph::read(model.encode_to_vec()).unwrap();
        assert_eq!(graph.nodes, 3);
        assert_eq!(
            graph.zipmaps,
            [ZipMapOutput {
                output: "output_probability".into(),
                probabilities: "probabilities".into(),
                labels: ClassLabels::Int64(vec![0, 1, 2]),
            }]
        );
        rewrite_for_tract(&mut model, &graph);
        let proto = model.graph.unwrap();
        let ops: Vec<_> = proto.node.iter().map(|n| n.op_type.as_str()).collect();
        assert_eq!(ops, ["Softmax", "ArgMax"]);
        assert_eq!(proto.node[0].output, ["output_probability"]);
        assert_eq!(proto.node[1].input, ["output_probability"]);
        let Some(PbType::TensorType(input)) = proto.input[0].r#type.clone().unwrap().value else {
            panic!("input lost its type");
        };
        let dims: Vec<_> = input
            .shape
            .unwrap()
            .dim
            .into_iter()
            .map(|d| d.value)
            .collect();
        assert_eq!(
            dims,
            [Some(Dim::DimParam("N".into())), Some(Dim::DimValue(3))]
        );
    }

    #[test]
    fn external_weights_are_refused_and_subgraph_nodes_counted() {
        let mut model = zipmap_model();
        let body = model.graph.clone().unwrap();
        let proto = model.graph.as_mut().unwrap();
        proto.node.push(pb::NodeProto {
            op_type: "If".into(),
            attribute: vec![pb::AttributeProto {
                name: "then_branch".into(),
                g: Some(body),
                ..Default::default()
            }],
            ..Default::default()
        });
        assert_eq!(Graph::read(model.encode_to_vec()).unwrap().nodes, 7);
        model
            .graph
            .as_mut()
            .unwrap()
            .initializer
            .push(pb::TensorProto {
                name: "w".into(),
                data_location: Some(pb::tensor_proto::DataLocation::External as i32),
                ..Default::default()
            });
        let err = Graph::read(model.encode_to_vec()).unwrap_err();
        assert!(err.contains("initializer 'w'"), "{err}");
    }
}
