//! `models/<model>/contract.json`: what every version of a model must accept and produce, and
//! golden examples it must reproduce within a tolerance.
//!
//! ```json
//! {"inputs":  [{"name": "x", "datatype": "FP32", "shape": [-1, 4]}],
//!  "outputs": [{"name": "y", "datatype": "FP32", "shape": [-1, 3]}],
//!  "examples": [{"inputs":  [{"name": "x", "datatype": "FP32", "shape": [1, 4], "data": [5.1, 3.5, 1.4, 0.2]}],
//!                "outputs": [{"name": "y", "data": [0.97, 0.02, 0.01]}],
//!                "tolerance": 0.01}]}
//! ```

use serde::Deserialize;
use serde_json::Value;
use tract_onnx::prelude::Tensor;

use crate::Engine;
use crate::tensors::{InputTensor, TensorData, decode_input, json_data, leaves};
use modelpipe_core::requested_rollout::RequestedRollout;
use modelpipe_core::signature::{Signature, TensorSpec};

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Contract {
    #[serde(default)]
    pub inputs: Vec<TensorSpec>,
    #[serde(default)]
    pub outputs: Vec<TensorSpec>,
    #[serde(default)]
    pub examples: Vec<Example>,
    /// The model's default rollout: uploads without `rollout=` metadata are rolled out by this
    /// plan instead of published (`rollout=none` on an upload publishes it at once).
    #[serde(default)]
    pub rollout: Option<RequestedRollout>,
    /// The model's signer policy (`modelpipe_signing::SignerPolicy`), read and checked by the
    /// validator, which holds uploads and alias moves to it.
    #[serde(default)]
    pub signing: Option<Value>,
    /// The model's capture share and drift threshold (`modelpipe_registry::drift::Monitoring`),
    /// checked and recorded by the validator.
    #[serde(default)]
    pub monitoring: Option<Value>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Example {
    pub inputs: Vec<ExampleInput>,
    pub outputs: Vec<ExpectedOutput>,
    /// Largest absolute difference accepted per element.
    #[serde(default = "default_tolerance")]
    pub tolerance: f64,
}

#[derive(Debug, Clone, Deserialize)]
pub struct ExampleInput {
    pub name: String,
    pub datatype: String,
    pub shape: Vec<i64>,
    pub data: Value,
}

#[derive(Debug, Clone, Deserialize)]
pub struct ExpectedOutput {
    pub name: String,
    #[serde(default)]
    pub shape: Option<Vec<usize>>,
    pub data: Value,
}

fn default_tolerance() -> f64 {
    1e-5
}

impl Contract {
    /// The contract's JSON, read (its `rollout` is checked as a plan by the validator, which
    /// knows rollout plans: see `modelpipe_validator::version::read_contract`).
    pub fn parse(bytes: &[u8]) -> Result<Self, String> {
        serde_json::from_slice(bytes).map_err(|e| format!("contract.json is not valid: {e}"))
    }

    /// The signature the contract requires (the parts it names).
    pub fn signature(&self) -> Signature {
        Signature {
            inputs: self.inputs.clone(),
            outputs: self.outputs.clone(),
        }
    }

    /// The inputs of every example that decodes for `signature` (to compare engines on).
    pub fn example_inputs(&self, signature: &Signature) -> Vec<Vec<Tensor>> {
        self.examples
            .iter()
            .filter_map(|example| example.inputs_for(signature).ok())
            .collect()
    }

    /// Runs every example; the first that does not match is reported.
    pub fn check_examples(&self, engine: &Engine) -> Result<(), String> {
        for (index, example) in self.examples.iter().enumerate() {
            example
                .check(engine)
                .map_err(|why| format!("golden example {}: {why}", index + 1))?;
        }
        Ok(())
    }
}

impl Example {
    /// The example's inputs decoded for `signature`, in its order.
    fn inputs_for(&self, signature: &Signature) -> Result<Vec<Tensor>, String> {
        decode_inputs(&self.inputs, signature)
    }

    fn check(&self, engine: &Engine) -> Result<(), String> {
        let signature = engine.signature();
        let inputs = self.inputs_for(signature)?;
        let outputs = engine.run(inputs).map_err(|e| e.to_string())?;
        for expected in &self.outputs {
            let position = signature
                .outputs
                .iter()
                .position(|o| o.name == expected.name)
                .ok_or_else(|| format!("the model has no output '{}'", expected.name))?;
            let actual = &outputs[position];
            if let Some(shape) = &expected.shape
                && shape.as_slice() != actual.shape()
            {
                return Err(format!(
                    "output '{}' has shape {:?}, expected {:?}",
                    expected.name,
                    actual.shape(),
                    shape
                ));
            }
            let data = json_data(&expected.name, actual)?;
            compare(&expected.name, &data, &expected.data, self.tolerance)?;
        }
        Ok(())
    }
}

/// Named JSON inputs (an example's, a baseline request's) decoded for `signature`, in its order.
pub(crate) fn decode_inputs(
    given: &[ExampleInput],
    signature: &Signature,
) -> Result<Vec<Tensor>, String> {
    signature
        .inputs
        .iter()
        .map(|spec| {
            let given = given
                .iter()
                .find(|i| i.name == spec.name)
                .ok_or_else(|| format!("gives no input '{}'", spec.name))?;
            let input = InputTensor {
                name: &given.name,
                datatype: &given.datatype,
                shape: &given.shape,
                data: TensorData::Json(&given.data),
            };
            decode_input(&input, spec)
        })
        .collect()
}

fn compare(name: &str, actual: &Value, expected: &Value, tolerance: f64) -> Result<(), String> {
    let mut want = Vec::new();
    leaves(expected, &mut want);
    let mut got = Vec::new();
    leaves(actual, &mut got);
    if want.len() != got.len() {
        return Err(format!(
            "output '{name}' has {} elements, expected {}",
            got.len(),
            want.len()
        ));
    }
    for (i, (g, w)) in got.iter().zip(&want).enumerate() {
        let close = match (g.as_f64(), w.as_f64()) {
            (Some(g), Some(w)) => (g - w).abs() <= tolerance,
            _ => g == w,
        };
        if !close {
            return Err(format!(
                "output '{name}' element {i} is {g}, expected {w} ± {tolerance}"
            ));
        }
    }
    Ok(())
}
