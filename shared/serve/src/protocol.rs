//! Open Inference Protocol v2 inference bodies: the JSON request with the binary tensor data
//! extension's framing (`Inference-Header-Content-Length` bytes of JSON, then each input's
//! `binary_data_size` bytes in input order), and the response, JSON or binary per output as the
//! request asked (`binary_data_output`, or an output's `binary_data`). Values themselves are
//! `tensors`' business.

use std::ops::Range;

use bytes::Bytes;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value, json};
use tract_onnx::prelude::Tensor;

use modelpipe_core::signature::{DataType, Signature};
use modelpipe_engine::tensors::{
    InputTensor, TensorData, append_binary, json_data, output_datatype,
};

/// The header that says how many bytes of the body are JSON; the rest is binary tensor data.
pub const HEADER_CONTENT_LENGTH: &str = "inference-header-content-length";

#[derive(Debug, Deserialize)]
pub struct InferRequest {
    #[serde(default)]
    pub id: Option<String>,
    #[serde(default)]
    pub parameters: Map<String, Value>,
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
    pub parameters: Map<String, Value>,
    #[serde(default)]
    pub data: Option<Value>,
}

#[derive(Debug, Deserialize)]
pub struct RequestOutput {
    pub name: String,
    #[serde(default)]
    pub parameters: Map<String, Value>,
}

/// A request body split into its JSON part and the binary data each input points at.
#[derive(Debug)]
pub struct ParsedRequest {
    pub request: InferRequest,
    body: Bytes,
    /// For each of `request.inputs`, its bytes in `body` when sent as binary data.
    binary: Vec<Option<Range<usize>>>,
}

/// Parameters that ask for Triton features modelpipe does not have; refused rather than ignored,
/// since ignoring them would give an answer the client did not ask for.
const UNSUPPORTED: [(&str, &str); 2] = [
    ("shared_memory_region", "the shared memory extension"),
    ("classification", "the classification extension"),
];

fn refuse_unsupported(what: &str, parameters: &Map<String, Value>) -> Result<(), String> {
    match UNSUPPORTED
        .iter()
        .find(|(key, _)| parameters.contains_key(*key))
    {
        Some((key, feature)) => Err(format!(
            "{what} asks for '{key}': modelpipe does not support {feature}"
        )),
        None => Ok(()),
    }
}

fn flag(what: &str, parameters: &Map<String, Value>, key: &str) -> Result<Option<bool>, String> {
    match parameters.get(key) {
        None => Ok(None),
        Some(Value::Bool(b)) => Ok(Some(*b)),
        Some(other) => Err(format!(
            "{what}: parameter '{key}' must be true or false, not {other}"
        )),
    }
}

/// Splits `body` as the binary extension frames it; `header_length` is the header's value.
pub fn parse(body: Bytes, header_length: Option<&str>) -> Result<ParsedRequest, String> {
    let json_length = match header_length {
        None => body.len(),
        Some(raw) => {
            let n: usize = raw.trim().parse().map_err(|_| {
                format!("header Inference-Header-Content-Length is not a byte count: {raw:?}")
            })?;
            if n > body.len() {
                return Err(format!(
                    "header Inference-Header-Content-Length says {n} bytes of JSON, the body has only {}",
                    body.len()
                ));
            }
            n
        }
    };
    let request: InferRequest = serde_json::from_slice(&body[..json_length])
        .map_err(|e| format!("request body is not a valid inference request: {e}"))?;
    refuse_unsupported("the request", &request.parameters)?;
    let mut offset = json_length;
    let mut binary = Vec::with_capacity(request.inputs.len());
    for input in &request.inputs {
        let what = format!("input '{}'", input.name);
        refuse_unsupported(&what, &input.parameters)?;
        let size = match input.parameters.get("binary_data_size") {
            None => None,
            Some(v) => Some(v.as_u64().ok_or_else(|| {
                format!("{what}: binary_data_size must be a byte count, not {v}")
            })?),
        };
        let range = match (size, &input.data) {
            (Some(_), Some(_)) => {
                return Err(format!(
                    "{what} has both 'data' and binary_data_size; send one"
                ));
            }
            (None, None) => return Err(format!("{what} has no 'data' and no binary data")),
            (None, Some(_)) => None,
            (Some(size), None) => {
                let end = usize::try_from(size)
                    .ok()
                    .and_then(|size| offset.checked_add(size))
                    .filter(|&end| end <= body.len())
                    .ok_or_else(|| {
                        format!(
                            "{what}: binary_data_size {size} runs past the end of the body ({} bytes of binary data left)",
                            body.len() - offset
                        )
                    })?;
                let range = offset..end;
                offset = end;
                Some(range)
            }
        };
        binary.push(range);
    }
    if offset != body.len() {
        return Err(format!(
            "the body has {} bytes of binary data that no input's binary_data_size accounts for",
            body.len() - offset
        ));
    }
    for output in request.outputs.iter().flatten() {
        let what = format!("output '{}'", output.name);
        refuse_unsupported(&what, &output.parameters)?;
        flag(&what, &output.parameters, "binary_data")?;
    }
    flag("the request", &request.parameters, "binary_data_output")?;
    Ok(ParsedRequest {
        request,
        body,
        binary,
    })
}

/// One output to send back: its index in the signature and whether as binary data.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct WantedOutput {
    pub index: usize,
    pub binary: bool,
}

impl ParsedRequest {
    /// The request's body as it came.
    pub fn body(&self) -> &Bytes {
        &self.body
    }

    /// `application/octet-stream` when some input came as binary data, else `application/json`.
    pub fn content_type(&self) -> &'static str {
        if self.binary.iter().any(Option::is_some) {
            "application/octet-stream"
        } else {
            "application/json"
        }
    }

    /// The request's inputs, each with where its values are.
    pub fn inputs(&self) -> impl Iterator<Item = InputTensor<'_>> {
        self.request
            .inputs
            .iter()
            .zip(&self.binary)
            .map(|(input, range)| InputTensor {
                name: &input.name,
                datatype: &input.datatype,
                shape: &input.shape,
                data: match (range, &input.data) {
                    (Some(range), _) => TensorData::Binary(&self.body[range.clone()]),
                    (None, Some(data)) => TensorData::Json(data),
                    // `parse` refused inputs with neither.
                    (None, None) => TensorData::Json(&Value::Null),
                },
            })
    }

    /// The outputs to return, in the order asked (all of them, in signature order, by default).
    pub fn wanted_outputs(&self, signature: &Signature) -> Result<Vec<WantedOutput>, String> {
        let default_binary = self
            .request
            .parameters
            .get("binary_data_output")
            .and_then(Value::as_bool)
            .unwrap_or(false);
        match &self.request.outputs {
            None => Ok((0..signature.outputs.len())
                .map(|index| WantedOutput {
                    index,
                    binary: default_binary,
                })
                .collect()),
            Some(requested) => requested
                .iter()
                .map(|r| {
                    let index = signature
                        .outputs
                        .iter()
                        .position(|o| o.name == r.name)
                        .ok_or_else(|| format!("model has no output '{}'", r.name))?;
                    let binary = r
                        .parameters
                        .get("binary_data")
                        .and_then(Value::as_bool)
                        .unwrap_or(default_binary);
                    Ok(WantedOutput { index, binary })
                })
                .collect(),
        }
    }
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
    #[serde(skip_serializing_if = "Option::is_none")]
    pub parameters: Option<Value>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub data: Option<Value>,
}

/// A response body: JSON, followed by binary tensor data when any output is sent that way.
#[derive(Debug)]
pub struct ResponseBody {
    pub bytes: Vec<u8>,
    /// The `Inference-Header-Content-Length` value, when there is binary data.
    pub json_length: Option<usize>,
}

/// One output tensor to put in the response.
pub struct Output<'a> {
    pub name: &'a str,
    pub tensor: &'a Tensor,
    pub binary: bool,
}

/// Encodes the response for `outputs`.
pub fn encode_response(
    model_name: &str,
    model_version: u64,
    id: Option<String>,
    outputs: &[Output],
) -> Result<ResponseBody, String> {
    let mut binary = Vec::new();
    let outputs = outputs
        .iter()
        .map(|o| {
            let datatype = output_datatype(o.name, o.tensor)?;
            let (parameters, data) = if o.binary {
                let size = append_binary(o.name, o.tensor, &mut binary)?;
                (Some(json!({ "binary_data_size": size })), None)
            } else {
                (None, Some(json_data(o.name, o.tensor)?))
            };
            Ok(ResponseOutput {
                name: o.name.to_string(),
                datatype,
                shape: o.tensor.shape().to_vec(),
                parameters,
                data,
            })
        })
        .collect::<Result<Vec<_>, String>>()?;
    let response = InferResponse {
        model_name: model_name.to_string(),
        model_version: model_version.to_string(),
        id,
        outputs,
    };
    let mut bytes = serde_json::to_vec(&response).map_err(|e| e.to_string())?;
    let json_length = (!binary.is_empty() || response.outputs.iter().any(|o| o.data.is_none()))
        .then_some(bytes.len());
    bytes.extend_from_slice(&binary);
    Ok(ResponseBody { bytes, json_length })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn binary_request(json: Value, binary: &[u8]) -> (Bytes, String) {
        let mut body = serde_json::to_vec(&json).unwrap();
        let length = body.len().to_string();
        body.extend_from_slice(binary);
        (Bytes::from(body), length)
    }

    #[test]
    fn binary_inputs_take_their_bytes_in_order() {
        let (body, length) = binary_request(
            json!({"inputs": [
                {"name": "a", "shape": [2], "datatype": "UINT8", "parameters": {"binary_data_size": 2}},
                {"name": "b", "shape": [1], "datatype": "UINT8", "data": [9]},
                {"name": "c", "shape": [3], "datatype": "UINT8", "parameters": {"binary_data_size": 3}}
            ]}),
            &[1, 2, 3, 4, 5],
        );
        let parsed = parse(body, Some(&length)).unwrap();
        let data: Vec<String> = parsed
            .inputs()
            .map(|i| match i.data {
                TensorData::Binary(b) => format!("{b:?}"),
                TensorData::Json(v) => v.to_string(),
            })
            .collect();
        assert_eq!(data, ["[1, 2]", "[9]", "[3, 4, 5]"]);
    }

    #[test]
    fn framing_errors_are_refused_with_the_reason() {
        let input = |size: u64| json!({"inputs": [{"name": "a", "shape": [2], "datatype": "UINT8", "parameters": {"binary_data_size": size}}]});
        let cases = [
            (input(3), vec![1, 2], "runs past the end of the body"),
            (
                input(1),
                vec![1, 2],
                "1 bytes of binary data that no input's binary_data_size accounts for",
            ),
            (
                json!({"inputs": [{"name": "a", "shape": [1], "datatype": "UINT8", "data": [1], "parameters": {"binary_data_size": 1}}]}),
                vec![1],
                "both 'data' and binary_data_size",
            ),
            (
                json!({"inputs": [{"name": "a", "shape": [1], "datatype": "UINT8"}]}),
                vec![],
                "no 'data' and no binary data",
            ),
            (
                json!({"inputs": [], "outputs": [{"name": "y", "parameters": {"classification": 2}}]}),
                vec![],
                "does not support the classification extension",
            ),
            (
                json!({"inputs": [], "parameters": {"binary_data_output": "yes"}}),
                vec![],
                "must be true or false",
            ),
        ];
        for (json, binary, message) in cases {
            let (body, length) = binary_request(json.clone(), &binary);
            let err = parse(body, Some(&length)).unwrap_err();
            assert!(err.contains(message), "{json}: {err}");
        }
        let err = parse(Bytes::from_static(b"{}"), Some("10")).unwrap_err();
        assert!(err.contains("the body has only 2"), "{err}");
        let err = parse(Bytes::from_static(b"{}"), Some("x")).unwrap_err();
        assert!(err.contains("not a byte count"), "{err}");
    }

    #[test]
    fn outputs_are_binary_when_asked_per_output_or_for_all() {
        let signature: Signature = serde_json::from_value(json!({
            "inputs": [],
            "outputs": [{"name": "y", "datatype": "FP32", "shape": [1]}, {"name": "z", "datatype": "FP32", "shape": [1]}]
        }))
        .unwrap();
        let wanted = |json: Value| {
            parse(Bytes::from(json.to_string()), None)
                .unwrap()
                .wanted_outputs(&signature)
        };
        let all_binary = wanted(json!({"inputs": [], "parameters": {"binary_data_output": true}}));
        assert_eq!(
            all_binary.unwrap(),
            [
                WantedOutput {
                    index: 0,
                    binary: true
                },
                WantedOutput {
                    index: 1,
                    binary: true
                }
            ]
        );
        let mixed = wanted(
            json!({"inputs": [], "parameters": {"binary_data_output": true},
            "outputs": [{"name": "z", "parameters": {"binary_data": false}}, {"name": "y"}]}),
        );
        assert_eq!(
            mixed.unwrap(),
            [
                WantedOutput {
                    index: 1,
                    binary: false
                },
                WantedOutput {
                    index: 0,
                    binary: true
                }
            ]
        );
        let unknown = wanted(json!({"inputs": [], "outputs": [{"name": "w"}]}));
        assert_eq!(unknown.unwrap_err(), "model has no output 'w'");
    }

    #[test]
    fn a_binary_response_is_json_then_the_tensor_bytes() {
        let y = Tensor::from(tract_onnx::prelude::tract_ndarray::arr1(&[1f32, -2.0]));
        let z = Tensor::from(tract_onnx::prelude::tract_ndarray::arr1(&[7i64]));
        let body = encode_response(
            "m",
            3,
            Some("r".into()),
            &[
                Output {
                    name: "y",
                    tensor: &y,
                    binary: true,
                },
                Output {
                    name: "z",
                    tensor: &z,
                    binary: false,
                },
            ],
        )
        .unwrap();
        let json_length = body.json_length.unwrap();
        let header: Value = serde_json::from_slice(&body.bytes[..json_length]).unwrap();
        assert_eq!(
            header,
            json!({"model_name": "m", "model_version": "3", "id": "r", "outputs": [
                {"name": "y", "datatype": "FP32", "shape": [2], "parameters": {"binary_data_size": 8}},
                {"name": "z", "datatype": "INT64", "shape": [1], "data": [7]}
            ]})
        );
        let tail: Vec<u8> = [1f32, -2.0].iter().flat_map(|f| f.to_le_bytes()).collect();
        assert_eq!(&body.bytes[json_length..], tail);
        let plain = encode_response(
            "m",
            3,
            None,
            &[Output {
                name: "z",
                tensor: &z,
                binary: false,
            }],
        )
        .unwrap();
        assert_eq!(plain.json_length, None);
    }
}
