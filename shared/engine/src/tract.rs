//! tract: parse (through [`super::graph`]'s rewrite, so converter output loads), type,
//! declutter, then one plan per concrete input shape ([`super::plans`]) in the convolution
//! layout chosen at ingest ([`super::layout`]); or read the NNEF artifact compiled at ingest
//! ([`super::artifact`]).

use std::path::Path;
use std::time::Instant;

use tract_onnx::prelude::*;
use tract_onnx::tract_core::internal::bail;

use super::graph::{Graph, rewrite_for_tract};
use super::layout;
use super::plans::{self, Plans};
use super::{EngineError, MAX_TENSOR_BYTES, data_type, guarded, shapes_of};
use crate::{Layout, LayoutChoice};
use modelpipe_core::signature::{Signature, TensorSpec};

pub(super) struct TractModel {
    plans: Plans,
}

/// Timed runs of each layout when choosing one.
const LAYOUT_TRIALS: usize = 2;

impl TractModel {
    /// Parses, types and declutters the ONNX model at `path` (whose outline is `graph`).
    pub(super) fn load_onnx(
        path: &Path,
        graph: &Graph,
        layout: Layout,
    ) -> Result<(Self, Signature), EngineError> {
        let typed = guarded(EngineError::Load, || {
            let onnx = tract_onnx::onnx();
            let mut proto = onnx.proto_model_for_path(path)?;
            rewrite_for_tract(&mut proto, graph);
            let dir = path.parent().and_then(Path::to_str);
            let parsed = onnx.parse(&proto, dir)?;
            if !parsed.unresolved_inputs.is_empty() {
                bail!(
                    "Could not resolve inputs at top-level: {:?}",
                    parsed.unresolved_inputs
                )
            }
            parsed.model.into_typed()
        })?;
        let signature = read_signature(&typed, graph)?;
        check_tensor_sizes(&typed)?;
        let decluttered = guarded(EngineError::Load, || typed.into_decluttered())?;
        Ok((Self::new(decluttered, layout)?, signature))
    }

    /// Reads an artifact compiled at ingest; its inputs and outputs must be `signature`'s.
    pub(super) fn load_artifact(
        path: &Path,
        signature: &Signature,
        layout: Layout,
    ) -> Result<Self, EngineError> {
        let model = guarded(EngineError::Load, || super::artifact::read(path))?;
        let found = read_signature(&model, &Graph::default())?;
        if !same_tensors(&found, signature) {
            return Err(EngineError::Load(format!(
                "the artifact's inputs and outputs ({}) differ from the manifest's ({})",
                describe(&found),
                describe(signature)
            )));
        }
        check_tensor_sizes(&model)?;
        Self::new(model, layout)
    }

    fn new(model: TypedModel, layout: Layout) -> Result<Self, EngineError> {
        let plans = guarded(EngineError::Load, || Plans::new(model, layout))?;
        Ok(Self { plans })
    }

    /// Builds the plan for inputs of these shapes now, so that the first request finds it.
    pub(super) fn plan_for(&self, inputs: &[Tensor]) -> Result<(), EngineError> {
        guarded(EngineError::Load, || self.plans.get(shapes_of(inputs))).map(|_| ())
    }

    pub(super) fn write_artifact(&self, path: &Path) -> Result<(), EngineError> {
        guarded(EngineError::Load, || {
            super::artifact::write(self.plans.model(), path)
        })
    }

    /// Times the plain plan against the `conv_nhwc` one on `inputs` (interleaved, the fastest
    /// of [`LAYOUT_TRIALS`] runs each after a warm-up) and keeps the faster. A model without
    /// convolutions stays plain, untried.
    pub(super) fn choose_layout(&self, inputs: &[Tensor]) -> Result<LayoutChoice, EngineError> {
        let shapes = shapes_of(inputs);
        let plain = guarded(EngineError::Run, || self.plans.get(shapes.clone()))?;
        let nhwc = if layout::has_convolution(self.plans.model()) {
            // A model the transform cannot rewrite keeps the plain layout.
            guarded(EngineError::Load, || {
                plans::build(
                    plans::specialise(self.plans.model(), &shapes)?,
                    Layout::Nhwc,
                )
            })
            .ok()
        } else {
            None
        };
        let values = || {
            inputs
                .iter()
                .cloned()
                .map(TValue::from)
                .collect::<TVec<_>>()
        };
        let time = |plan: &plans::Plan| -> Result<u64, EngineError> {
            let started = Instant::now();
            guarded(EngineError::Run, || plan.run(values()))?;
            Ok(started.elapsed().as_micros() as u64)
        };
        if let Some(nhwc) = &nhwc {
            time(nhwc)?;
        }
        let (mut plain_us, mut nhwc_us) = (u64::MAX, nhwc.as_ref().map(|_| u64::MAX));
        for _ in 0..LAYOUT_TRIALS {
            plain_us = plain_us.min(time(&plain)?);
            if let (Some(plan), Some(best)) = (&nhwc, nhwc_us.as_mut()) {
                *best = (*best).min(time(plan)?);
            }
        }
        Ok(LayoutChoice::fastest(plain_us, nhwc_us))
    }

    pub(super) fn layout(&self) -> Layout {
        self.plans.layout()
    }

    pub(super) fn resident_plans(&self) -> usize {
        self.plans.resident()
    }

    pub(super) fn plans_built(&self) -> usize {
        self.plans.built()
    }

    pub(super) fn run(&self, inputs: Vec<Tensor>) -> Result<Vec<Tensor>, EngineError> {
        let plan = guarded(EngineError::Run, || self.plans.get(shapes_of(&inputs)))?;
        let inputs: TVec<TValue> = inputs.into_iter().map(TValue::from).collect();
        let outputs = guarded(EngineError::Run, || plan.run(inputs))?;
        outputs
            .into_iter()
            .map(|value| served_tensor(value.into_tensor()))
            .collect()
    }
}

/// Symbolic-dimension integers (tract's TDim, e.g. an MLPClassifier's label picked from class
/// ids) are served as the INT64 the ONNX model declares.
fn served_tensor(tensor: Tensor) -> Result<Tensor, EngineError> {
    if tensor.datum_type() == DatumType::TDim {
        return tensor
            .cast_to::<i64>()
            .map(|t| t.into_owned())
            .map_err(|e| EngineError::Run(format!("{e:#}")));
    }
    Ok(tensor)
}

/// Refuses a model whose typed graph declares a tensor over [`MAX_TENSOR_BYTES`], before anything
/// of that size is allocated.
fn check_tensor_sizes(typed: &TypedModel) -> Result<(), EngineError> {
    for node in typed.nodes() {
        for (slot, outlet) in node.outputs.iter().enumerate() {
            let fact = &outlet.fact;
            let elements = fact
                .shape
                .iter()
                .map(|d| d.to_i64().unwrap_or(1).max(0) as u64)
                .try_fold(1u64, |n, d| n.checked_mul(d));
            let bytes = elements.and_then(|n| n.checked_mul(fact.datum_type.size_of() as u64));
            if bytes.is_none_or(|b| b > MAX_TENSOR_BYTES) {
                return Err(EngineError::TooLarge(format!(
                    "node '{}' output {slot} has shape {:?} of {:?}: larger than the {} MiB allowed for one tensor",
                    node.name,
                    fact.shape,
                    fact.datum_type,
                    MAX_TENSOR_BYTES >> 20
                )));
            }
        }
    }
    Ok(())
}

/// Same number, datatypes and shapes of inputs and outputs (names are the manifest's; a
/// dimension the manifest leaves open, -1, takes any size: it records outputs as widely as
/// either engine read them).
fn same_tensors(found: &Signature, manifest: &Signature) -> bool {
    let same = |found: &[TensorSpec], manifest: &[TensorSpec]| {
        found.len() == manifest.len()
            && found.iter().zip(manifest).all(|(f, m)| {
                f.datatype == m.datatype
                    && f.shape.len() == m.shape.len()
                    && f.shape
                        .iter()
                        .zip(&m.shape)
                        .all(|(&f, &m)| m == -1 || f == m)
            })
    };
    same(&found.inputs, &manifest.inputs) && same(&found.outputs, &manifest.outputs)
}

fn describe(signature: &Signature) -> String {
    let list = |specs: &[TensorSpec]| {
        specs
            .iter()
            .map(|s| {
                format!(
                    "{} {}",
                    s.datatype,
                    modelpipe_core::signature::Shape(&s.shape)
                )
            })
            .collect::<Vec<_>>()
            .join(", ")
    };
    format!("{} → {}", list(&signature.inputs), list(&signature.outputs))
}

/// The signature of `model`; outputs that were a ZipMap in the file (see `graph`) carry its
/// class labels.
fn read_signature(model: &TypedModel, graph: &Graph) -> Result<Signature, EngineError> {
    let spec =
        |kind: &'static str, outlet: OutletId, name: String| -> Result<TensorSpec, EngineError> {
            let fact = model
                .outlet_fact(outlet)
                .map_err(|e| EngineError::Load(e.to_string()))?;
            let datum = match fact.datum_type {
                DatumType::TDim => DatumType::I64,
                other => other,
            };
            let datatype =
                data_type(datum).ok_or(EngineError::UnsupportedType(kind, name.clone(), datum))?;
            let shape = fact
                .shape
                .iter()
                .map(|d| d.to_i64().unwrap_or(-1))
                .collect();
            let class_labels = graph.zipmap(&name).map(|z| z.labels.clone());
            Ok(TensorSpec {
                name,
                datatype,
                shape,
                class_labels,
            })
        };
    let load_err = |e: TractError| EngineError::Load(e.to_string());
    let inputs = model
        .input_outlets()
        .map_err(load_err)?
        .iter()
        .map(|&o| spec("input", o, model.node(o.node).name.clone()))
        .collect::<Result<_, _>>()?;
    let outputs = model
        .output_outlets()
        .map_err(load_err)?
        .iter()
        .map(|&o| {
            let name = model
                .outlet_label(o)
                .map(str::to_string)
                .unwrap_or_else(|| model.node(o.node).name.clone());
            spec("output", o, name)
        })
        .collect::<Result<_, _>>()?;
    Ok(Signature { inputs, outputs })
}
