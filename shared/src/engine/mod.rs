//! The one place that drives tract: load an ONNX file (or the artifact compiled from it at
//! ingest) into a model, read its signature, run it through plans specialised per input shape.
//! Panics inside tract (hostile models can trigger them) become errors here.

mod artifact;
mod layout;
mod plans;

use std::panic::{AssertUnwindSafe, catch_unwind};
use std::path::Path;
use std::time::{Duration, Instant};

use tract_onnx::prelude::*;

pub use self::artifact::TRACT_VERSION;
pub use self::layout::{Layout, LayoutChoice};
pub use self::plans::MAX_SHAPE_PLANS;
use self::plans::Plans;
use crate::signature::{DataType, Signature, TensorSpec};

#[derive(Debug, Clone, thiserror::Error)]
pub enum EngineError {
    #[error("not a loadable ONNX model: {0}")]
    Load(String),
    #[error("inference failed: {0}")]
    Run(String),
    #[error("{0} '{1}' has datatype {2:?}, which modelpipe cannot serve")]
    UnsupportedType(&'static str, String, DatumType),
}

/// A model ready to run, with the signature read from it.
pub struct Engine {
    plans: Plans,
    signature: Signature,
    /// Time spent parsing (or reading the artifact), decluttering and planning for the smoke
    /// input's shapes.
    pub load_time: Duration,
}

impl std::fmt::Debug for Engine {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Engine")
            .field("signature", &self.signature)
            .finish_non_exhaustive()
    }
}

fn guarded<T>(
    what: fn(String) -> EngineError,
    f: impl FnOnce() -> TractResult<T>,
) -> Result<T, EngineError> {
    match catch_unwind(AssertUnwindSafe(f)) {
        Ok(Ok(value)) => Ok(value),
        Ok(Err(e)) => Err(what(format!("{e:#}"))),
        Err(panic) => {
            let message = panic
                .downcast_ref::<String>()
                .cloned()
                .or_else(|| panic.downcast_ref::<&str>().map(|s| s.to_string()))
                .unwrap_or_else(|| "unknown panic".into());
            Err(what(format!("tract panicked: {message}")))
        }
    }
}

/// The largest tensor a model may declare (an input, a weight or an intermediate result, with
/// dynamic dimensions taken as 1), the default `MAX_MODEL_BYTES`: past it, a hostile or mistaken
/// model would exhaust the function's memory on its first run instead of being refused.
pub const MAX_TENSOR_BYTES: u64 = 2 << 30;

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
                return Err(EngineError::Load(format!(
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

/// Lets tract spread matmuls and element-wise work over `threads` threads (one thread is
/// tract's default). Lambda gives a function more vCPUs as its memory grows; `None` uses them all.
/// Returns the thread count in effect.
pub fn use_threads(threads: Option<usize>) -> usize {
    let threads = threads
        .or_else(|| std::thread::available_parallelism().ok().map(|n| n.get()))
        .unwrap_or(1)
        .max(1);
    let executor = if threads > 1 {
        tract_linalg::multithread::Executor::multithread(threads)
    } else {
        tract_linalg::multithread::Executor::SingleThread
    };
    tract_linalg::multithread::set_default_executor(executor);
    threads
}

impl Engine {
    /// Parses, types, declutters and plans the ONNX model at `path`, its convolutions plain.
    pub fn load(path: &Path) -> Result<Self, EngineError> {
        Self::load_onnx(path, Layout::Plain)
    }

    /// Parses, types, declutters and plans the ONNX model at `path`.
    pub fn load_onnx(path: &Path, layout: Layout) -> Result<Self, EngineError> {
        let started = Instant::now();
        let typed = guarded(EngineError::Load, || {
            tract_onnx::onnx().model_for_path(path)?.into_typed()
        })?;
        let signature = read_signature(&typed)?;
        check_tensor_sizes(&typed)?;
        let decluttered = guarded(EngineError::Load, || typed.into_decluttered())?;
        Self::ready(decluttered, signature, layout, started)
    }

    /// Reads the artifact compiled at ingest for a model whose manifest records `signature`.
    /// An artifact whose inputs or outputs differ from it is refused.
    pub fn load_artifact(
        path: &Path,
        signature: &Signature,
        layout: Layout,
    ) -> Result<Self, EngineError> {
        let started = Instant::now();
        let model = guarded(EngineError::Load, || artifact::read(path))?;
        let found = read_signature(&model)?;
        if !same_tensors(&found, signature) {
            return Err(EngineError::Load(format!(
                "the artifact's inputs and outputs ({}) differ from the manifest's ({})",
                describe(&found),
                describe(signature)
            )));
        }
        check_tensor_sizes(&model)?;
        Self::ready(model, signature.clone(), layout, started)
    }

    /// Plans the decluttered `model` for the smoke input's shapes, so that the first request of
    /// that shape finds its plan ready.
    fn ready(
        model: TypedModel,
        signature: Signature,
        layout: Layout,
        started: Instant,
    ) -> Result<Self, EngineError> {
        let plans = guarded(EngineError::Load, || Plans::new(model, layout))?;
        let engine = Self {
            plans,
            signature,
            load_time: Duration::ZERO,
        };
        let shapes = shapes_of(&engine.smoke_inputs()?);
        guarded(EngineError::Load, || engine.plans.get(shapes))?;
        Ok(Self {
            load_time: started.elapsed(),
            ..engine
        })
    }

    /// Writes the decluttered model as an NNEF tar at `path` (see [`Self::load_artifact`]).
    pub fn write_artifact(&self, path: &Path) -> Result<(), EngineError> {
        guarded(EngineError::Load, || {
            artifact::write(self.plans.model(), path)
        })
    }

    /// Times the plain plan against the `conv_nhwc` one on the smoke input (interleaved, the
    /// fastest of [`LAYOUT_TRIALS`] runs each after a warm-up) and keeps the faster. A model
    /// without convolutions stays plain, untried.
    pub fn choose_layout(&self) -> Result<LayoutChoice, EngineError> {
        let inputs = self.smoke_inputs()?;
        let shapes = shapes_of(&inputs);
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

    /// The convolution layout its plans use.
    pub fn layout(&self) -> Layout {
        self.plans.layout()
    }

    /// Plans in memory (one per input shape seen, at most [`MAX_SHAPE_PLANS`] +1); each holds
    /// its own copy of the packed weights.
    pub fn resident_plans(&self) -> usize {
        self.plans.resident()
    }

    /// Plans built since the load, evicted ones included.
    pub fn plans_built(&self) -> usize {
        self.plans.built()
    }

    pub fn signature(&self) -> &Signature {
        &self.signature
    }

    /// Runs the model on inputs given in signature order; outputs come in signature order.
    pub fn run(&self, inputs: Vec<Tensor>) -> Result<Vec<Tensor>, EngineError> {
        let plan = guarded(EngineError::Run, || self.plans.get(shapes_of(&inputs)))?;
        let inputs: TVec<TValue> = inputs.into_iter().map(TValue::from).collect();
        let outputs = guarded(EngineError::Run, || plan.run(inputs))?;
        Ok(outputs.into_iter().map(TValue::into_tensor).collect())
    }

    /// Zero-filled inputs of the declared shapes, dynamic dimensions set to 1.
    pub fn smoke_inputs(&self) -> Result<Vec<Tensor>, EngineError> {
        self.signature
            .inputs
            .iter()
            .map(|spec| {
                let shape: Vec<usize> = spec
                    .shape
                    .iter()
                    .map(|&d| if d < 0 { 1 } else { d as usize })
                    .collect();
                let elements = shape.iter().product();
                Ok(match spec.datatype {
                    // Neither has a numeric zero in tract; "" and false stand in for it.
                    DataType::Bytes => tensor_of(&shape, vec![String::new(); elements]),
                    DataType::Bool => tensor_of(&shape, vec![false; elements]),
                    other => {
                        let dt = datum_type(other);
                        guarded(EngineError::Run, || Tensor::zero_dt(dt, &shape))?
                    }
                })
            })
            .collect()
    }

    /// One run on [`Self::smoke_inputs`]: proves the plan executes and warms it up.
    /// Float outputs must be finite.
    pub fn smoke_test(&self) -> Result<(), EngineError> {
        let outputs = self.run(self.smoke_inputs()?)?;
        for (tensor, spec) in outputs.iter().zip(&self.signature.outputs) {
            if !is_finite(tensor) {
                return Err(EngineError::Run(format!(
                    "output '{}' is not finite (NaN or infinity) on a zero input",
                    spec.name
                )));
            }
        }
        Ok(())
    }
}

/// Timed runs of each layout when choosing one.
const LAYOUT_TRIALS: usize = 2;

fn shapes_of(inputs: &[Tensor]) -> Vec<TVec<usize>> {
    inputs.iter().map(|t| t.shape().into()).collect()
}

/// Same number, datatypes and shapes of inputs and outputs (names are the manifest's).
fn same_tensors(a: &Signature, b: &Signature) -> bool {
    let same = |a: &[TensorSpec], b: &[TensorSpec]| {
        a.len() == b.len()
            && a.iter()
                .zip(b)
                .all(|(a, b)| a.datatype == b.datatype && a.shape == b.shape)
    };
    same(&a.inputs, &b.inputs) && same(&a.outputs, &b.outputs)
}

fn describe(signature: &Signature) -> String {
    let list = |specs: &[TensorSpec]| {
        specs
            .iter()
            .map(|s| format!("{} {}", s.datatype, crate::signature::Shape(&s.shape)))
            .collect::<Vec<_>>()
            .join(", ")
    };
    format!("{} → {}", list(&signature.inputs), list(&signature.outputs))
}

fn tensor_of<T: Datum>(shape: &[usize], elements: Vec<T>) -> Tensor {
    tract_ndarray::ArrayD::from_shape_vec(shape, elements)
        .expect("as many elements as the shape holds")
        .into()
}

/// True unless a float tensor holds a NaN or an infinity.
pub fn is_finite(tensor: &Tensor) -> bool {
    fn all<T: Datum>(tensor: &Tensor, finite: fn(&T) -> bool) -> bool {
        tensor
            .to_plain_array_view::<T>()
            .map(|view| view.iter().all(finite))
            .unwrap_or(true)
    }
    match tensor.datum_type() {
        DatumType::F16 => all::<f16>(tensor, |x| x.is_finite()),
        DatumType::F32 => all::<f32>(tensor, |x| x.is_finite()),
        DatumType::F64 => all::<f64>(tensor, |x| x.is_finite()),
        _ => true,
    }
}

fn read_signature(model: &TypedModel) -> Result<Signature, EngineError> {
    let spec =
        |kind: &'static str, outlet: OutletId, name: String| -> Result<TensorSpec, EngineError> {
            let fact = model
                .outlet_fact(outlet)
                .map_err(|e| EngineError::Load(e.to_string()))?;
            let datatype = data_type(fact.datum_type).ok_or(EngineError::UnsupportedType(
                kind,
                name.clone(),
                fact.datum_type,
            ))?;
            let shape = fact
                .shape
                .iter()
                .map(|d| d.to_i64().unwrap_or(-1))
                .collect();
            Ok(TensorSpec {
                name,
                datatype,
                shape,
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

pub fn data_type(dt: DatumType) -> Option<DataType> {
    Some(match dt {
        DatumType::Bool => DataType::Bool,
        DatumType::U8 => DataType::Uint8,
        DatumType::U16 => DataType::Uint16,
        DatumType::U32 => DataType::Uint32,
        DatumType::U64 => DataType::Uint64,
        DatumType::I8 => DataType::Int8,
        DatumType::I16 => DataType::Int16,
        DatumType::I32 => DataType::Int32,
        DatumType::I64 => DataType::Int64,
        DatumType::F16 => DataType::Fp16,
        DatumType::F32 => DataType::Fp32,
        DatumType::F64 => DataType::Fp64,
        DatumType::String => DataType::Bytes,
        _ => return None,
    })
}

pub fn datum_type(dt: DataType) -> DatumType {
    match dt {
        DataType::Bool => DatumType::Bool,
        DataType::Uint8 => DatumType::U8,
        DataType::Uint16 => DatumType::U16,
        DataType::Uint32 => DatumType::U32,
        DataType::Uint64 => DatumType::U64,
        DataType::Int8 => DatumType::I8,
        DataType::Int16 => DatumType::I16,
        DataType::Int32 => DatumType::I32,
        DataType::Int64 => DatumType::I64,
        DataType::Fp16 => DatumType::F16,
        DataType::Fp32 => DatumType::F32,
        DataType::Fp64 => DatumType::F64,
        DataType::Bytes => DatumType::String,
    }
}

#[cfg(test)]
mod tests;
