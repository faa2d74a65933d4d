//! The one place that drives tract: load an ONNX file into a runnable plan, read its signature,
//! run it. Panics inside tract (hostile models can trigger them) become errors here.

use std::panic::{AssertUnwindSafe, catch_unwind};
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tract_onnx::prelude::*;

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
    plan: Arc<TypedRunnableModel>,
    signature: Signature,
    /// Time spent parsing and optimising.
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
    /// Parses, types, optimises and plans the model at `path`.
    pub fn load(path: &Path) -> Result<Self, EngineError> {
        let started = Instant::now();
        let typed = guarded(EngineError::Load, || {
            tract_onnx::onnx().model_for_path(path)?.into_typed()
        })?;
        let signature = read_signature(&typed)?;
        check_tensor_sizes(&typed)?;
        let plan = guarded(EngineError::Load, || {
            typed.into_optimized()?.into_runnable()
        })?;
        Ok(Self {
            plan,
            signature,
            load_time: started.elapsed(),
        })
    }

    pub fn signature(&self) -> &Signature {
        &self.signature
    }

    /// Runs the model on inputs given in signature order; outputs come in signature order.
    pub fn run(&self, inputs: Vec<Tensor>) -> Result<Vec<Tensor>, EngineError> {
        let inputs: TVec<TValue> = inputs.into_iter().map(TValue::from).collect();
        let outputs = guarded(EngineError::Run, || self.plan.run(inputs))?;
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
