//! The three models every comparison uses, generated (no downloads here): a tabular MLP
//! 4→64→64→3, a MobileNetV2-shaped CNN (depthwise convolutions, ~14 MB) and a ResNet-18-shaped
//! one (dense convolutions, ~47 MB), both 1×3×224×224 in; each in two versions (different
//! random weights), with one fixed input, tract's answer to it, and the requests and API Gateway
//! events that carry it.

use std::path::{Path, PathBuf};

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;
use modelpipe_engine::Engine;
use modelpipe_testkit::onnx_build::{Mlp, mobilenet_v2, resnet18};
use serde_json::{Value, json};
use tract_onnx::prelude::Tensor;

pub struct BenchModel {
    /// The model's name in the registry and in request paths.
    pub name: &'static str,
    pub label: &'static str,
    /// Version 1 and version 2 (the upload a swap or an upload cycle brings in).
    pub files: [PathBuf; 2],
    pub input_name: String,
    pub output_name: String,
    pub input_shape: Vec<usize>,
    pub input: Vec<f32>,
    /// tract's output for `input` from version 1, flattened: the answer every runtime must give.
    pub reference: Vec<f32>,
}

/// A new model file of `name` from `seed`.
pub fn generate(name: &str, seed: u32) -> Vec<u8> {
    match name {
        "mlp" => Mlp::new(&[4, 64, 64, 3], seed).to_bytes(),
        "cnn" => mobilenet_v2(seed),
        "resnet" => resnet18(seed),
        other => panic!("no generator for {other}"),
    }
}

impl BenchModel {
    pub fn all(dir: &Path) -> Vec<BenchModel> {
        [
            ("mlp", "MLP 4→64→64→3"),
            ("cnn", "MobileNetV2-shaped CNN"),
            ("resnet", "ResNet-18-shaped CNN"),
        ]
        .into_iter()
        .map(|(name, label)| Self::new(name, label, dir))
        .collect()
    }

    fn new(name: &'static str, label: &'static str, dir: &Path) -> Self {
        let files = [1, 2].map(|seed| {
            let path = dir.join(format!("{name}-v{seed}.onnx"));
            std::fs::write(&path, generate(name, seed)).expect("write model");
            path
        });
        let engine = Engine::load(&files[0]).expect("generated models load");
        let spec = &engine.signature().inputs[0];
        let input_shape: Vec<usize> = spec.shape.iter().map(|&d| d.max(1) as usize).collect();
        let elements: usize = input_shape.iter().product();
        // Deterministic values in [0, 1): no zeros, no repeated pattern a kernel could exploit.
        let mut state = 0x2545F491u32;
        let input: Vec<f32> = (0..elements)
            .map(|_| {
                state ^= state << 13;
                state ^= state >> 17;
                state ^= state << 5;
                (state >> 8) as f32 / (1u32 << 24) as f32
            })
            .collect();
        let tensor = Tensor::from_shape(&input_shape, &input).expect("input tensor");
        let output = engine.run(vec![tensor]).expect("generated models run");
        let reference = output[0]
            .to_plain_array_view::<f32>()
            .expect("float output")
            .iter()
            .copied()
            .collect();
        Self {
            name,
            label,
            files,
            input_name: spec.name.clone(),
            output_name: engine.signature().outputs[0].name.clone(),
            input_shape,
            input,
            reference,
        }
    }

    /// Runs of it that take about as long as one another (for per-sample counts).
    pub fn scale(&self, mlp: usize, cnn: usize, resnet: usize) -> usize {
        match self.name {
            "mlp" => mlp,
            "cnn" => cnn,
            _ => resnet,
        }
    }

    pub fn bytes(&self) -> u64 {
        std::fs::metadata(&self.files[0]).expect("model file").len()
    }

    pub fn input_tensor(&self) -> Tensor {
        Tensor::from_shape(&self.input_shape, &self.input).expect("input tensor")
    }

    /// The input as an Open Inference Protocol JSON request.
    pub fn json_request(&self) -> String {
        json!({"inputs": [{
            "name": self.input_name,
            "shape": self.input_shape,
            "datatype": "FP32",
            "data": self.input,
        }]})
        .to_string()
    }

    /// An API Gateway HTTP API event carrying [`Self::json_request`].
    pub fn event(&self) -> Value {
        modelpipe_tests::http_api_event(
            "POST",
            &format!("/v2/models/{}/infer", self.name),
            Some(&self.json_request()),
        )
    }

    /// An API Gateway HTTP API event carrying the input with the binary tensor extension (JSON
    /// header, then the tensor's little-endian bytes; base64 in the event, as API Gateway sends
    /// binary bodies), asking for the output in binary too.
    pub fn binary_event(&self) -> Value {
        let header = json!({
            "inputs": [{"name": self.input_name, "shape": self.input_shape, "datatype": "FP32",
                        "parameters": {"binary_data_size": self.input.len() * 4}}],
            "outputs": [{"name": self.output_name, "parameters": {"binary_data": true}}],
        })
        .to_string();
        let mut body = header.clone().into_bytes();
        body.extend(self.input.iter().flat_map(|x| x.to_le_bytes()));
        let path = format!("/v2/models/{}/infer", self.name);
        let mut event = modelpipe_tests::http_api_event("POST", &path, None);
        event["body"] = BASE64.encode(&body).into();
        event["isBase64Encoded"] = true.into();
        event["headers"]["content-type"] = "application/octet-stream".into();
        event["headers"]["inference-header-content-length"] = header.len().to_string().into();
        event
    }

    /// Writes the input as raw little-endian f32 to `path`, its shape to `path.shape`.
    pub fn write_raw_input(&self, path: &Path) {
        let bytes: Vec<u8> = self.input.iter().flat_map(|x| x.to_le_bytes()).collect();
        std::fs::write(path, bytes).expect("raw input");
        let shape: Vec<String> = self.input_shape.iter().map(usize::to_string).collect();
        std::fs::write(format!("{}.shape", path.display()), shape.join(",")).expect("raw shape");
    }

    /// The largest difference between `output` and the reference, relative to the reference's
    /// largest magnitude; panics if the lengths differ.
    pub fn difference(&self, output: &[f32]) -> f32 {
        assert_eq!(
            output.len(),
            self.reference.len(),
            "{}: output length",
            self.name
        );
        let scale = self.reference.iter().fold(1e-6f32, |m, x| m.max(x.abs()));
        let worst = output
            .iter()
            .zip(&self.reference)
            .fold(0f32, |m, (a, b)| m.max((a - b).abs()));
        worst / scale
    }
}

/// An answer's first output, and the version it names (modelpipe's answers only), from an API
/// Gateway response whose body is an Open Inference Protocol response, JSON or binary (a base64
/// body whose JSON header's length is in `inference-header-content-length`).
pub fn parse_answer(response: &[u8]) -> (Vec<f32>, Option<u64>) {
    let response: Value = serde_json::from_slice(response).expect("API Gateway response JSON");
    assert_eq!(response["statusCode"], 200, "answer: {response}");
    let raw = response["body"].as_str().expect("a string body");
    let (body, data) = if response["isBase64Encoded"] == true {
        let bytes = BASE64.decode(raw).expect("a base64 body");
        let headers = &response["headers"];
        let length: usize = headers["inference-header-content-length"]
            .as_str()
            .or_else(|| headers["Inference-Header-Content-Length"].as_str())
            .expect("a binary answer says its JSON length")
            .parse()
            .expect("a length");
        let body: Value = serde_json::from_slice(&bytes[..length]).expect("a JSON header");
        let data = bytes[length..]
            .chunks_exact(4)
            .map(|b| f32::from_le_bytes(b.try_into().expect("4 bytes")))
            .collect();
        (body, data)
    } else {
        let body: Value = serde_json::from_str(raw).expect("a JSON body");
        let data = body["outputs"][0]["data"]
            .as_array()
            .unwrap_or_else(|| panic!("no output data in {body}"))
            .iter()
            .map(|x| x.as_f64().expect("numbers") as f32)
            .collect();
        (body, data)
    };
    let version = body["model_version"]
        .as_str()
        .and_then(|v| v.parse().ok())
        .or_else(|| body["model_version"].as_u64());
    (data, version)
}
