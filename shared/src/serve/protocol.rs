//! Open Inference Protocol v2 JSON bodies and their tensors: request inputs become tract tensors
//! checked against the model's signature; output tensors become JSON. Every refusal names the
//! tensor and what was expected, and is a client error, never a crash.

use serde::{Deserialize, Serialize};
use serde_json::Value;
use tract_onnx::prelude::{Datum, Tensor, f16};

use crate::engine::{data_type, datum_type};
use crate::signature::{DataType, Shape, TensorSpec};

#[derive(Debug, Deserialize)]
pub struct InferRequest {
    #[serde(default)]
    pub id: Option<String>,
    #[serde(default)]
    pub parameters: Option<Value>,
    pub inputs: Vec<RequestInput>,
    #[serde(default)]
    pub outputs: Option<Vec<RequestOutput>>,
}

#[derive(Debug, Deserialize)]
pub struct RequestInput {
    pub name: String,
    pub shape: Vec<i64>,
    pub datatype: String,
    #[serde(default)]
    pub parameters: Option<Value>,
    #[serde(default)]
    pub data: Value,
}

#[derive(Debug, Deserialize)]
pub struct RequestOutput {
    pub name: String,
    #[serde(default)]
    pub parameters: Option<Value>,
}

#[derive(Debug, Serialize, Deserialize)]
pub struct InferResponse {
    pub model_name: String,
    pub model_version: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub id: Option<String>,
    pub outputs: Vec<ResponseOutput>,
}

#[derive(Debug, Serialize, Deserialize)]
pub struct ResponseOutput {
    pub name: String,
    pub datatype: DataType,
    pub shape: Vec<usize>,
    pub data: Value,
}

/// Elements that travel as JSON values.
trait JsonElement: Datum + Sized {
    fn from_json(value: &Value) -> Option<Self>;
    fn to_json(&self) -> Value;
}

macro_rules! json_ints {
    ($($t:ty),*) => {$(
        impl JsonElement for $t {
            fn from_json(value: &Value) -> Option<Self> {
                value.as_i64().and_then(|v| <$t>::try_from(v).ok())
                    .or_else(|| value.as_u64().and_then(|v| <$t>::try_from(v).ok()))
            }
            fn to_json(&self) -> Value {
                Value::from(*self)
            }
        }
    )*};
}
json_ints!(u8, u16, u32, u64, i8, i16, i32, i64);

impl JsonElement for f32 {
    fn from_json(value: &Value) -> Option<Self> {
        value.as_f64().map(|v| v as f32)
    }
    fn to_json(&self) -> Value {
        Value::from(*self)
    }
}

impl JsonElement for f64 {
    fn from_json(value: &Value) -> Option<Self> {
        value.as_f64()
    }
    fn to_json(&self) -> Value {
        Value::from(*self)
    }
}

impl JsonElement for f16 {
    fn from_json(value: &Value) -> Option<Self> {
        value.as_f64().map(f16::from_f64)
    }
    fn to_json(&self) -> Value {
        Value::from(self.to_f32())
    }
}

impl JsonElement for bool {
    fn from_json(value: &Value) -> Option<Self> {
        value.as_bool()
    }
    fn to_json(&self) -> Value {
        Value::from(*self)
    }
}

impl JsonElement for String {
    fn from_json(value: &Value) -> Option<Self> {
        value.as_str().map(str::to_string)
    }
    fn to_json(&self) -> Value {
        Value::from(self.as_str())
    }
}

/// Calls `$f::<T>` with the Rust element type of a [`DataType`].
macro_rules! with_element {
    ($dt:expr, $f:ident ( $($arg:expr),* )) => {
        match $dt {
            DataType::Bool => $f::<bool>($($arg),*),
            DataType::Uint8 => $f::<u8>($($arg),*),
            DataType::Uint16 => $f::<u16>($($arg),*),
            DataType::Uint32 => $f::<u32>($($arg),*),
            DataType::Uint64 => $f::<u64>($($arg),*),
            DataType::Int8 => $f::<i8>($($arg),*),
            DataType::Int16 => $f::<i16>($($arg),*),
            DataType::Int32 => $f::<i32>($($arg),*),
            DataType::Int64 => $f::<i64>($($arg),*),
            DataType::Fp16 => $f::<f16>($($arg),*),
            DataType::Fp32 => $f::<f32>($($arg),*),
            DataType::Fp64 => $f::<f64>($($arg),*),
            DataType::Bytes => $f::<String>($($arg),*),
        }
    };
}

/// Flattens `data` (flat or nested, row-major) into its leaves.
pub(crate) fn leaves<'a>(data: &'a Value, out: &mut Vec<&'a Value>) {
    match data {
        Value::Array(items) => items.iter().for_each(|item| leaves(item, out)),
        leaf => out.push(leaf),
    }
}

fn parse_datatype(name: &str, datatype: &str) -> Result<DataType, String> {
    serde_json::from_value(Value::from(datatype))
        .map_err(|_| format!("tensor '{name}' has unknown datatype {datatype:?}"))
}

/// Checks a request input against the model's spec and builds its tensor.
pub fn decode_input(input: &RequestInput, spec: &TensorSpec) -> Result<Tensor, String> {
    let name = &input.name;
    let datatype = parse_datatype(name, &input.datatype)?;
    if datatype != spec.datatype {
        return Err(format!(
            "input '{name}' has datatype {datatype}, the model expects {}",
            spec.datatype
        ));
    }
    let fits = input.shape.len() == spec.shape.len()
        && input
            .shape
            .iter()
            .zip(&spec.shape)
            .all(|(&have, &want)| have >= 0 && (want < 0 || have == want));
    if !fits {
        return Err(format!(
            "input '{name}' has shape {}, the model expects {}",
            Shape(&input.shape),
            Shape(&spec.shape)
        ));
    }
    let shape: Vec<usize> = input.shape.iter().map(|&d| d as usize).collect();
    let expected = shape.iter().try_fold(1usize, |acc, &d| acc.checked_mul(d));
    let mut values = Vec::new();
    leaves(&input.data, &mut values);
    if expected != Some(values.len()) {
        return Err(format!(
            "input '{name}' has {} elements in data, shape {} needs {}",
            values.len(),
            Shape(&input.shape),
            expected.map_or("more than can be addressed".to_string(), |n| n.to_string())
        ));
    }
    fn build<T: JsonElement>(
        name: &str,
        datatype: DataType,
        shape: &[usize],
        values: &[&Value],
    ) -> Result<Tensor, String> {
        let elements = values
            .iter()
            .enumerate()
            .map(|(i, v)| {
                T::from_json(v).ok_or_else(|| {
                    format!("input '{name}': element {i} ({v}) is not a valid {datatype}")
                })
            })
            .collect::<Result<Vec<T>, String>>()?;
        let array = tract_onnx::prelude::tract_ndarray::ArrayD::from_shape_vec(shape, elements)
            .map_err(|e| e.to_string())?;
        Ok(Tensor::from(array))
    }
    with_element!(datatype, build(name, datatype, &shape, &values))
}

/// Turns an output tensor into its JSON form (flat `data`, row-major).
pub fn encode_output(name: &str, tensor: &Tensor) -> Result<ResponseOutput, String> {
    let datatype = data_type(tensor.datum_type()).ok_or_else(|| {
        format!(
            "output '{name}' has datatype {:?}, which has no JSON form",
            tensor.datum_type()
        )
    })?;
    fn values<T: JsonElement>(tensor: &Tensor) -> Result<Vec<Value>, String> {
        let view = tensor
            .to_plain_array_view::<T>()
            .map_err(|e| e.to_string())?;
        Ok(view.iter().map(T::to_json).collect())
    }
    debug_assert_eq!(datum_type(datatype), tensor.datum_type());
    let data = with_element!(datatype, values(tensor))?;
    Ok(ResponseOutput {
        name: name.to_string(),
        datatype,
        shape: tensor.shape().to_vec(),
        data: Value::Array(data),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(datatype: DataType, shape: &[i64]) -> TensorSpec {
        TensorSpec {
            name: "x".into(),
            datatype,
            shape: shape.to_vec(),
        }
    }

    fn input(datatype: &str, shape: &[i64], data: Value) -> RequestInput {
        RequestInput {
            name: "x".into(),
            shape: shape.to_vec(),
            datatype: datatype.into(),
            parameters: None,
            data,
        }
    }

    #[test]
    fn nested_and_flat_data_give_the_same_tensor() {
        let s = spec(DataType::Fp32, &[-1, 2]);
        let flat = decode_input(
            &input("FP32", &[2, 2], serde_json::json!([1, 2, 3, 4.5])),
            &s,
        )
        .unwrap();
        let nested = decode_input(
            &input("FP32", &[2, 2], serde_json::json!([[1, 2], [3, 4.5]])),
            &s,
        )
        .unwrap();
        assert_eq!(flat, nested);
        assert_eq!(flat.shape(), &[2, 2]);
        assert_eq!(
            flat.to_plain_array_view::<f32>()
                .unwrap()
                .iter()
                .copied()
                .collect::<Vec<_>>(),
            [1.0, 2.0, 3.0, 4.5]
        );
    }

    #[test]
    fn each_integer_type_round_trips_and_rejects_out_of_range() {
        let s = spec(DataType::Int64, &[3]);
        let t = decode_input(
            &input(
                "INT64",
                &[3],
                serde_json::json!([-1, 0, 9007199254740993i64]),
            ),
            &s,
        )
        .unwrap();
        let out = encode_output("x", &t).unwrap();
        assert_eq!(out.data, serde_json::json!([-1, 0, 9007199254740993i64]));
        let s8 = spec(DataType::Uint8, &[1]);
        let err = decode_input(&input("UINT8", &[1], serde_json::json!([300])), &s8).unwrap_err();
        assert!(
            err.contains("element 0 (300) is not a valid UINT8"),
            "{err}"
        );
    }

    #[test]
    fn mismatches_are_named() {
        let s = spec(DataType::Fp32, &[-1, 4]);
        let wrong_type =
            decode_input(&input("FP64", &[1, 4], serde_json::json!([0, 0, 0, 0])), &s).unwrap_err();
        assert_eq!(
            wrong_type,
            "input 'x' has datatype FP64, the model expects FP32"
        );
        let wrong_shape = decode_input(
            &input("FP32", &[1, 5], serde_json::json!([0, 0, 0, 0, 0])),
            &s,
        )
        .unwrap_err();
        assert_eq!(
            wrong_shape,
            "input 'x' has shape [1,5], the model expects [-1,4]"
        );
        let wrong_count =
            decode_input(&input("FP32", &[2, 4], serde_json::json!([0, 0, 0, 0])), &s).unwrap_err();
        assert_eq!(
            wrong_count,
            "input 'x' has 4 elements in data, shape [2,4] needs 8"
        );
        let unknown = decode_input(
            &input("FLOAT", &[1, 4], serde_json::json!([0, 0, 0, 0])),
            &s,
        )
        .unwrap_err();
        assert!(unknown.contains("unknown datatype"));
        let not_number = decode_input(
            &input("FP32", &[1, 4], serde_json::json!([0, "a", 0, 0])),
            &s,
        )
        .unwrap_err();
        assert!(not_number.contains("element 1"));
    }
}
