//! A model that returns each of its inputs unchanged, one input and output per datatype: what a
//! client sends is what it must get back, exactly, whatever the encoding.

use super::{Dim, GraphProto, PbType, model_bytes, node, typed_value_info};
use modelpipe_core::signature::DataType;

/// `y_<type> = Identity(x_<type>)` for each datatype, each of shape `[N, width]`.
#[derive(Debug, Clone)]
pub struct Identity {
    pub datatypes: Vec<DataType>,
    pub width: i64,
}

impl Identity {
    /// One of every datatype the protocol and tract share.
    pub fn all_types(width: i64) -> Self {
        use DataType::*;
        Self {
            datatypes: vec![
                Bool, Uint8, Uint16, Uint32, Uint64, Int8, Int16, Int32, Int64, Fp16, Fp32, Fp64,
                Bytes,
            ],
            width,
        }
    }

    pub fn input_name(datatype: DataType) -> String {
        format!("x_{}", datatype.as_str().to_lowercase())
    }

    pub fn output_name(datatype: DataType) -> String {
        format!("y_{}", datatype.as_str().to_lowercase())
    }

    pub fn to_bytes(&self) -> Vec<u8> {
        let dims = || vec![Dim::DimParam("N".into()), Dim::DimValue(self.width)];
        let names: Vec<(String, String, PbType)> = self
            .datatypes
            .iter()
            .map(|&dt| (Self::input_name(dt), Self::output_name(dt), pb_type(dt)))
            .collect();
        let graph = GraphProto {
            name: "identity".into(),
            node: names
                .iter()
                .map(|(x, y, _)| node("Identity", &[x], &[y], vec![]))
                .collect(),
            input: names
                .iter()
                .map(|(x, _, t)| typed_value_info(x, *t, dims()))
                .collect(),
            output: names
                .iter()
                .map(|(_, y, t)| typed_value_info(y, *t, dims()))
                .collect(),
            ..Default::default()
        };
        model_bytes(graph)
    }
}

fn pb_type(datatype: DataType) -> PbType {
    match datatype {
        DataType::Bool => PbType::Bool,
        DataType::Uint8 => PbType::Uint8,
        DataType::Uint16 => PbType::Uint16,
        DataType::Uint32 => PbType::Uint32,
        DataType::Uint64 => PbType::Uint64,
        DataType::Int8 => PbType::Int8,
        DataType::Int16 => PbType::Int16,
        DataType::Int32 => PbType::Int32,
        DataType::Int64 => PbType::Int64,
        DataType::Fp16 => PbType::Float16,
        DataType::Fp32 => PbType::Float,
        DataType::Fp64 => PbType::Double,
        DataType::Bytes => PbType::String,
    }
}
