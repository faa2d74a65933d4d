//! Tensor values in both encodings of the Open Inference Protocol: JSON `data` (flat or nested,
//! row-major) and the binary tensor data extension (elements back to back in little-endian order,
//! BOOL one byte each, BYTES each preceded by its length as a 4-byte little-endian integer).
//! A request tensor is checked against the model's signature before any value is read, and every
//! refusal names the tensor and what was expected. Framing (which bytes belong to which tensor)
//! is `protocol`'s job, not this module's.

use serde_json::Value;
use tract_onnx::prelude::{Datum, DatumType, Tensor, f16};

use crate::{data_type, datum_type};
use modelpipe_core::signature::{DataType, Shape, TensorSpec};

// The binary extension is little-endian; so is every Lambda architecture (x86_64, arm64).
const _: () = assert!(cfg!(target_endian = "little"));

/// Where a request tensor's values are.
#[derive(Debug, Clone, Copy)]
pub enum TensorData<'a> {
    Json(&'a Value),
    Binary(&'a [u8]),
}

/// One input tensor as a request gives it.
#[derive(Debug, Clone, Copy)]
pub struct InputTensor<'a> {
    pub name: &'a str,
    pub datatype: &'a str,
    pub shape: &'a [i64],
    pub data: TensorData<'a>,
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

pub fn parse_datatype(name: &str, datatype: &str) -> Result<DataType, String> {
    serde_json::from_value(Value::from(datatype))
        .map_err(|_| format!("tensor '{name}' has unknown datatype {datatype:?}"))
}

/// Checks a request input against the model's spec and builds its tensor.
pub fn decode_input(input: &InputTensor, spec: &TensorSpec) -> Result<Tensor, String> {
    let name = input.name;
    let datatype = parse_datatype(name, input.datatype)?;
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
            Shape(input.shape),
            Shape(&spec.shape)
        ));
    }
    let shape: Vec<usize> = input.shape.iter().map(|&d| d as usize).collect();
    let count = shape
        .iter()
        .try_fold(1usize, |acc, &d| acc.checked_mul(d))
        .ok_or_else(|| format!("input '{name}': shape {} is too large", Shape(input.shape)))?;
    match input.data {
        TensorData::Json(data) => decode_json(name, datatype, &shape, count, data),
        TensorData::Binary(bytes) => decode_binary(name, datatype, &shape, count, bytes),
    }
}

fn decode_json(
    name: &str,
    datatype: DataType,
    shape: &[usize],
    count: usize,
    data: &Value,
) -> Result<Tensor, String> {
    let mut values = Vec::new();
    leaves(data, &mut values);
    if values.len() != count {
        return Err(format!(
            "input '{name}' has {} elements in data, shape {} needs {count}",
            values.len(),
            Shape(shape),
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
        tensor_of(shape, elements)
    }
    with_element!(datatype, build(name, datatype, shape, &values))
}

fn tensor_of<T: Datum>(shape: &[usize], elements: Vec<T>) -> Result<Tensor, String> {
    tract_onnx::prelude::tract_ndarray::ArrayD::from_shape_vec(shape, elements)
        .map(Tensor::from)
        .map_err(|e| e.to_string())
}

fn decode_binary(
    name: &str,
    datatype: DataType,
    shape: &[usize],
    count: usize,
    bytes: &[u8],
) -> Result<Tensor, String> {
    match datatype {
        DataType::Bytes => {
            let elements = split_bytes_elements(name, bytes)?;
            if elements.len() != count {
                return Err(format!(
                    "input '{name}' has {} BYTES elements in its binary data, shape {} needs {count}",
                    elements.len(),
                    Shape(shape)
                ));
            }
            let strings = elements
                .into_iter()
                .enumerate()
                .map(|(i, e)| {
                    String::from_utf8(e.to_vec()).map_err(|_| {
                        format!("input '{name}': BYTES element {i} is not UTF-8 text, which ONNX strings must be")
                    })
                })
                .collect::<Result<Vec<_>, _>>()?;
            tensor_of(shape, strings)
        }
        DataType::Bool => {
            check_binary_size(name, datatype, shape, count, 1, bytes)?;
            let elements = bytes
                .iter()
                .enumerate()
                .map(|(i, &b)| match b {
                    0 => Ok(false),
                    1 => Ok(true),
                    other => Err(format!(
                        "input '{name}': BOOL element {i} is byte {other}, not 0 or 1"
                    )),
                })
                .collect::<Result<Vec<_>, _>>()?;
            tensor_of(shape, elements)
        }
        _ => {
            let dt = datum_type(datatype);
            check_binary_size(name, datatype, shape, count, dt.size_of(), bytes)?;
            // SAFETY: every bit pattern is a valid value of these integer and float types, and the
            // length was checked against the shape just above.
            unsafe { Tensor::from_raw_dt(dt, shape, bytes) }.map_err(|e| e.to_string())
        }
    }
}

fn check_binary_size(
    name: &str,
    datatype: DataType,
    shape: &[usize],
    count: usize,
    element: usize,
    bytes: &[u8],
) -> Result<(), String> {
    let needed = count.checked_mul(element);
    if needed != Some(bytes.len()) {
        return Err(format!(
            "input '{name}' has {} bytes of binary data, shape {} of {datatype} needs {}",
            bytes.len(),
            Shape(shape),
            needed.map_or("more than can be addressed".to_string(), |n| n.to_string())
        ));
    }
    Ok(())
}

/// Splits length-prefixed BYTES elements.
fn split_bytes_elements<'a>(name: &str, mut bytes: &'a [u8]) -> Result<Vec<&'a [u8]>, String> {
    let mut elements = Vec::new();
    while !bytes.is_empty() {
        let truncated = || {
            format!(
                "input '{name}': BYTES element {} is truncated (each element is a 4-byte little-endian length, then that many bytes)",
                elements.len()
            )
        };
        let (length, rest) = bytes.split_first_chunk::<4>().ok_or_else(truncated)?;
        let length = u32::from_le_bytes(*length) as usize;
        if rest.len() < length {
            return Err(truncated());
        }
        let (element, rest) = rest.split_at(length);
        elements.push(element);
        bytes = rest;
    }
    Ok(elements)
}

/// The OIP datatype of an output tensor, or why it has none.
pub fn output_datatype(name: &str, tensor: &Tensor) -> Result<DataType, String> {
    data_type(tensor.datum_type()).ok_or_else(|| {
        format!(
            "output '{name}' has datatype {:?}, which the protocol cannot carry",
            tensor.datum_type()
        )
    })
}

/// An output tensor's values as flat JSON `data`, row-major.
pub fn json_data(name: &str, tensor: &Tensor) -> Result<Value, String> {
    let datatype = output_datatype(name, tensor)?;
    fn values<T: JsonElement>(tensor: &Tensor) -> Result<Vec<Value>, String> {
        let view = tensor
            .to_plain_array_view::<T>()
            .map_err(|e| e.to_string())?;
        Ok(view.iter().map(T::to_json).collect())
    }
    Ok(Value::Array(with_element!(datatype, values(tensor))?))
}

/// Appends an output tensor's values in the binary extension's layout; returns how many bytes.
pub fn append_binary(name: &str, tensor: &Tensor, out: &mut Vec<u8>) -> Result<usize, String> {
    let start = out.len();
    match tensor.datum_type() {
        DatumType::String => {
            let view = tensor
                .to_plain_array_view::<String>()
                .map_err(|e| e.to_string())?;
            for s in view.iter() {
                let length = u32::try_from(s.len())
                    .map_err(|_| format!("output '{name}' has a BYTES element over 4 GiB"))?;
                out.extend_from_slice(&length.to_le_bytes());
                out.extend_from_slice(s.as_bytes());
            }
        }
        _ => {
            output_datatype(name, tensor)?;
            // tract tensors are contiguous, row-major; these types are their little-endian bytes
            // and a bool is one 0/1 byte.
            out.extend_from_slice(tensor.as_bytes());
        }
    }
    Ok(out.len() - start)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn spec(datatype: DataType, shape: &[i64]) -> TensorSpec {
        TensorSpec {
            name: "x".into(),
            datatype,
            shape: shape.to_vec(),
            class_labels: None,
        }
    }

    fn input<'a>(datatype: &'a str, shape: &'a [i64], data: TensorData<'a>) -> InputTensor<'a> {
        InputTensor {
            name: "x",
            datatype,
            shape,
            data,
        }
    }

    fn floats(t: &Tensor) -> Vec<f32> {
        t.to_plain_array_view::<f32>()
            .unwrap()
            .iter()
            .copied()
            .collect()
    }

    #[test]
    fn nested_flat_and_binary_data_give_the_same_tensor() {
        let s = spec(DataType::Fp32, &[-1, 2]);
        let flat_json = json!([1, 2, 3, 4.5]);
        let nested_json = json!([[1, 2], [3, 4.5]]);
        let flat = decode_input(&input("FP32", &[2, 2], TensorData::Json(&flat_json)), &s).unwrap();
        let nested =
            decode_input(&input("FP32", &[2, 2], TensorData::Json(&nested_json)), &s).unwrap();
        let raw: Vec<u8> = [1f32, 2.0, 3.0, 4.5]
            .iter()
            .flat_map(|f| f.to_le_bytes())
            .collect();
        let binary = decode_input(&input("FP32", &[2, 2], TensorData::Binary(&raw)), &s).unwrap();
        assert_eq!(flat, nested);
        assert_eq!(flat, binary);
        assert_eq!(flat.shape(), &[2, 2]);
        assert_eq!(floats(&flat), [1.0, 2.0, 3.0, 4.5]);
        let mut out = Vec::new();
        assert_eq!(append_binary("y", &binary, &mut out), Ok(16));
        assert_eq!(out, raw);
    }

    #[test]
    fn each_integer_type_round_trips_and_rejects_out_of_range() {
        let s = spec(DataType::Int64, &[3]);
        let data = json!([-1, 0, 9007199254740993i64]);
        let t = decode_input(&input("INT64", &[3], TensorData::Json(&data)), &s).unwrap();
        assert_eq!(json_data("x", &t).unwrap(), data);
        let s8 = spec(DataType::Uint8, &[1]);
        let big = json!([300]);
        let err = decode_input(&input("UINT8", &[1], TensorData::Json(&big)), &s8).unwrap_err();
        assert!(
            err.contains("element 0 (300) is not a valid UINT8"),
            "{err}"
        );
    }

    #[test]
    fn bytes_elements_are_length_prefixed_both_ways() {
        let s = spec(DataType::Bytes, &[-1]);
        let mut raw = Vec::new();
        for word in ["", "héllo", "x"] {
            raw.extend_from_slice(&(word.len() as u32).to_le_bytes());
            raw.extend_from_slice(word.as_bytes());
        }
        let t = decode_input(&input("BYTES", &[3], TensorData::Binary(&raw)), &s).unwrap();
        assert_eq!(json_data("x", &t).unwrap(), json!(["", "héllo", "x"]));
        let mut out = Vec::new();
        append_binary("x", &t, &mut out).unwrap();
        assert_eq!(out, raw);
        let err =
            decode_input(&input("BYTES", &[3], TensorData::Binary(&raw[..9])), &s).unwrap_err();
        assert!(err.contains("BYTES element 1 is truncated"), "{err}");
        let err = decode_input(&input("BYTES", &[2], TensorData::Binary(&raw)), &s).unwrap_err();
        assert!(err.contains("3 BYTES elements"), "{err}");
        let bad_utf8 = [1, 0, 0, 0, 0xff];
        let err =
            decode_input(&input("BYTES", &[1], TensorData::Binary(&bad_utf8)), &s).unwrap_err();
        assert!(err.contains("not UTF-8"), "{err}");
    }

    #[test]
    fn binary_bool_fp16_and_int_tensors_decode_exactly() {
        let b = decode_input(
            &input("BOOL", &[3], TensorData::Binary(&[1, 0, 1])),
            &spec(DataType::Bool, &[3]),
        )
        .unwrap();
        assert_eq!(json_data("b", &b).unwrap(), json!([true, false, true]));
        let err = decode_input(
            &input("BOOL", &[1], TensorData::Binary(&[2])),
            &spec(DataType::Bool, &[1]),
        )
        .unwrap_err();
        assert!(err.contains("byte 2, not 0 or 1"), "{err}");
        let half: Vec<u8> = [1.5f32, -2.0]
            .iter()
            .flat_map(|f| f16::from_f32(*f).to_bits().to_le_bytes())
            .collect();
        let h = decode_input(
            &input("FP16", &[2], TensorData::Binary(&half)),
            &spec(DataType::Fp16, &[2]),
        )
        .unwrap();
        assert_eq!(json_data("h", &h).unwrap(), json!([1.5, -2.0]));
        let ints: Vec<u8> = [-7i16, 300].iter().flat_map(|i| i.to_le_bytes()).collect();
        let i = decode_input(
            &input("INT16", &[2], TensorData::Binary(&ints)),
            &spec(DataType::Int16, &[2]),
        )
        .unwrap();
        assert_eq!(json_data("i", &i).unwrap(), json!([-7, 300]));
        let mut out = Vec::new();
        append_binary("i", &i, &mut out).unwrap();
        assert_eq!(out, ints);
    }

    #[test]
    fn mismatches_are_named() {
        let zeros = json!([0, 0, 0, 0]);
        fn decode(datatype: &str, shape: &[i64], data: TensorData) -> String {
            decode_input(
                &input(datatype, shape, data),
                &spec(DataType::Fp32, &[-1, 4]),
            )
            .unwrap_err()
        }
        assert_eq!(
            decode("FP64", &[1, 4], TensorData::Json(&zeros)),
            "input 'x' has datatype FP64, the model expects FP32"
        );
        assert_eq!(
            decode("FP32", &[1, 5], TensorData::Json(&json!([0, 0, 0, 0, 0]))),
            "input 'x' has shape [1,5], the model expects [-1,4]"
        );
        assert_eq!(
            decode("FP32", &[2, 4], TensorData::Json(&zeros)),
            "input 'x' has 4 elements in data, shape [2,4] needs 8"
        );
        assert_eq!(
            decode("FP32", &[2, 4], TensorData::Binary(&[0; 12])),
            "input 'x' has 12 bytes of binary data, shape [2,4] of FP32 needs 32"
        );
        assert!(decode("FLOAT", &[1, 4], TensorData::Json(&zeros)).contains("unknown datatype"));
        assert!(
            decode("FP32", &[1, 4], TensorData::Json(&json!([0, "a", 0, 0]))).contains("element 1")
        );
    }
}
