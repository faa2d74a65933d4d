//! A model's signature: the names, datatypes and shapes of its inputs and outputs, in the Open
//! Inference Protocol's vocabulary (`FP32`, `-1` for a dynamic dimension), and the rule that says
//! whether a new version can replace an old one without breaking its clients.

use std::fmt;

use serde::{Deserialize, Serialize};

/// A tensor datatype, named as the Open Inference Protocol names it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "UPPERCASE")]
pub enum DataType {
    Bool,
    Uint8,
    Uint16,
    Uint32,
    Uint64,
    Int8,
    Int16,
    Int32,
    Int64,
    Fp16,
    Fp32,
    Fp64,
    Bytes,
}

impl DataType {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Bool => "BOOL",
            Self::Uint8 => "UINT8",
            Self::Uint16 => "UINT16",
            Self::Uint32 => "UINT32",
            Self::Uint64 => "UINT64",
            Self::Int8 => "INT8",
            Self::Int16 => "INT16",
            Self::Int32 => "INT32",
            Self::Int64 => "INT64",
            Self::Fp16 => "FP16",
            Self::Fp32 => "FP32",
            Self::Fp64 => "FP64",
            Self::Bytes => "BYTES",
        }
    }
}

impl fmt::Display for DataType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One input or output. `shape` uses -1 for a dimension the model leaves open.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TensorSpec {
    pub name: String,
    pub datatype: DataType,
    pub shape: Vec<i64>,
    /// A classifier's probabilities (a ZipMap output in the file): the class label of each
    /// column, in order.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub class_labels: Option<ClassLabels>,
}

impl TensorSpec {
    /// Does a tensor of this spec take every tensor `required` allows? Each dimension must be
    /// dynamic here or equal to the required one: a fixed dim where -1 was promised would break
    /// clients that send other sizes.
    fn accepts(&self, required: &TensorSpec) -> Result<(), String> {
        if self.datatype != required.datatype {
            return Err(format!(
                "datatype {} instead of {}",
                self.datatype, required.datatype
            ));
        }
        let fits = self.shape.len() == required.shape.len()
            && self
                .shape
                .iter()
                .zip(&required.shape)
                .all(|(&have, &want)| have == -1 || have == want);
        if !fits {
            return Err(format!(
                "shape {} instead of {}",
                Shape(&self.shape),
                Shape(&required.shape)
            ));
        }
        Ok(())
    }
}

/// Formats a shape as `[1,-1,4]`.
pub struct Shape<'a, D = i64>(pub &'a [D]);

impl<D: fmt::Display> fmt::Display for Shape<'_, D> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("[")?;
        for (i, dim) in self.0.iter().enumerate() {
            if i > 0 {
                f.write_str(",")?;
            }
            write!(f, "{dim}")?;
        }
        f.write_str("]")
    }
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Signature {
    pub inputs: Vec<TensorSpec>,
    pub outputs: Vec<TensorSpec>,
}

impl Signature {
    /// Every way this signature fails to honour `required` (the live version's, or a contract's),
    /// each as a sentence; empty when compatible. Extra outputs are allowed, extra inputs are not
    /// (a client would not send them).
    pub fn incompatibilities(&self, required: &Signature, required_by: &str) -> Vec<String> {
        let mut problems = Vec::new();
        for (kind, mine, theirs) in [
            ("input", &self.inputs, &required.inputs),
            ("output", &self.outputs, &required.outputs),
        ] {
            for want in theirs {
                match mine.iter().find(|have| have.name == want.name) {
                    None => problems.push(format!(
                        "{kind} '{}' of {required_by} is missing",
                        want.name
                    )),
                    Some(have) => {
                        if let Err(why) = have.accepts(want) {
                            problems
                                .push(format!("{kind} '{}' has {why} ({required_by})", want.name));
                        }
                    }
                }
            }
        }
        for have in &self.inputs {
            if !required.inputs.iter().any(|want| want.name == have.name) {
                problems.push(format!(
                    "input '{}' is not an input of {required_by}",
                    have.name
                ));
            }
        }
        problems
    }
}

/// A classifier's class labels, in the order of its probability columns.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum ClassLabels {
    Int64(Vec<i64>),
    String(Vec<String>),
}

impl ClassLabels {
    pub fn len(&self) -> usize {
        match self {
            Self::Int64(labels) => labels.len(),
            Self::String(labels) => labels.len(),
        }
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(name: &str, datatype: DataType, shape: &[i64]) -> TensorSpec {
        TensorSpec {
            name: name.into(),
            datatype,
            shape: shape.to_vec(),
            class_labels: None,
        }
    }

    fn sig(input: TensorSpec, output: TensorSpec) -> Signature {
        Signature {
            inputs: vec![input],
            outputs: vec![output],
        }
    }

    #[test]
    fn same_signature_is_compatible_and_widening_a_dim_is_allowed() {
        let live = sig(
            spec("x", DataType::Fp32, &[1, 4]),
            spec("y", DataType::Fp32, &[1, 3]),
        );
        assert!(live.incompatibilities(&live, "live v1").is_empty());
        let wider = sig(
            spec("x", DataType::Fp32, &[-1, 4]),
            spec("y", DataType::Fp32, &[-1, 3]),
        );
        assert!(wider.incompatibilities(&live, "live v1").is_empty());
    }

    #[test]
    fn changed_shape_datatype_or_name_is_reported_with_names() {
        let live = sig(
            spec("x", DataType::Fp32, &[-1, 4]),
            spec("y", DataType::Fp32, &[-1, 3]),
        );
        let narrower = sig(
            spec("x", DataType::Fp32, &[1, 4]),
            spec("y", DataType::Fp32, &[-1, 3]),
        );
        assert_eq!(
            narrower.incompatibilities(&live, "live v2"),
            ["input 'x' has shape [1,4] instead of [-1,4] (live v2)"]
        );
        let retyped = sig(
            spec("x", DataType::Fp64, &[-1, 4]),
            spec("y", DataType::Fp32, &[-1, 3]),
        );
        assert_eq!(retyped.incompatibilities(&live, "live v2").len(), 1);
        let renamed = sig(
            spec("z", DataType::Fp32, &[-1, 4]),
            spec("y", DataType::Fp32, &[-1, 3]),
        );
        assert_eq!(renamed.incompatibilities(&live, "live v2").len(), 2);
    }
}
