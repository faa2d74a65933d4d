//! ONNX Runtime through the `ort` crate, loaded at run time (`load-dynamic`) from the
//! `libonnxruntime.so` that the `onnxruntime` wheel ships: beside the function's executable in
//! the Lambda zip, or where [`library_path`] finds one. The library is opened on the first ONNX
//! Runtime model only: a process that serves tract models never maps it.
//!
//! Tensors cross as tract tensors (the router's type): numeric ones byte for byte, strings as
//! strings; a ZipMap output (a classifier's sequence of maps) comes back as the FP32
//! `[batch, classes]` tensor of its probabilities, columns in class-label order.

use std::path::{Path, PathBuf};
use std::sync::{Mutex, OnceLock};

use ort::memory::Allocator;
use ort::session::Session;
use ort::session::builder::GraphOptimizationLevel;
use ort::value::{
    DynMapValueType, DynTensor, DynTensorValueType, DynValue, TensorElementType, ValueType,
};
use tract_onnx::prelude::{DatumType, Tensor};

use super::graph::{Graph, ZipMapOutput};
use super::{EngineError, data_type, datum_type, tensor_of};
use modelpipe_core::signature::ClassLabels;
use modelpipe_core::signature::{DataType, Signature, TensorSpec};

/// The variable that names the library when it is somewhere [`library_path`] does not look
/// (ort's own name for it).
pub const LIBRARY_VARIABLE: &str = "ORT_DYLIB_PATH";

const LIBRARY_FILE: &str = "libonnxruntime.so";

/// Where the ONNX Runtime library is: `ORT_DYLIB_PATH`; else `libonnxruntime.so` beside the
/// executable (the Lambda zip's layout) or in its `lib/`; else `/opt/lib` (a Lambda layer, the
/// container image); else the `onnxruntime` wheel of a Python virtual environment
/// (`$VIRTUAL_ENV`, or `.venv` in the working directory or a parent of it), else the one `python3`
/// would import: what `modelctl dev` users have after `pip install onnxruntime`.
pub fn library_path() -> Result<PathBuf, String> {
    if let Some(path) = std::env::var_os(LIBRARY_VARIABLE).filter(|p| !p.is_empty()) {
        return Ok(PathBuf::from(path));
    }
    let mut places: Vec<PathBuf> = Vec::new();
    if let Some(dir) = std::env::current_exe()
        .ok()
        .and_then(|exe| exe.parent().map(Path::to_path_buf))
    {
        places.push(dir.join(LIBRARY_FILE));
        places.push(dir.join("lib").join(LIBRARY_FILE));
    }
    places.push(PathBuf::from("/opt/lib").join(LIBRARY_FILE));
    if let Some(found) = places.iter().find(|p| p.is_file()) {
        return Ok(found.clone());
    }
    let here = std::env::current_dir().unwrap_or_default();
    let venvs = std::env::var_os("VIRTUAL_ENV")
        .map(PathBuf::from)
        .into_iter()
        .chain(here.ancestors().map(|dir| dir.join(".venv")));
    for venv in venvs {
        if let Some(found) = wheel_library(&venv) {
            return Ok(found);
        }
    }
    if let Some(found) = python_wheel_library() {
        return Ok(found);
    }
    Err(format!(
        "no ONNX Runtime library: looked for {LIBRARY_FILE} beside the executable, in /opt/lib and in the onnxruntime wheel of $VIRTUAL_ENV, a .venv here or above, or python3; set {LIBRARY_VARIABLE} to its path"
    ))
}

/// The library of the onnxruntime package `python3` would import (found without importing it).
fn python_wheel_library() -> Option<PathBuf> {
    let script = "import importlib.util as u; s = u.find_spec('onnxruntime'); print(s.submodule_search_locations[0] if s else '')";
    let output = std::process::Command::new("python3")
        .args(["-c", script])
        .stderr(std::process::Stdio::null())
        .output()
        .ok()?;
    let package = String::from_utf8(output.stdout).ok()?;
    let capi = Path::new(package.trim()).join("capi");
    library_in(&capi)
}

fn library_in(dir: &Path) -> Option<PathBuf> {
    std::fs::read_dir(dir)
        .ok()?
        .flatten()
        .map(|f| f.path())
        .find(|path| {
            path.file_name()
                .and_then(|n| n.to_str())
                .is_some_and(|n| n.starts_with(LIBRARY_FILE))
        })
}

/// `lib/python3.*/site-packages/onnxruntime/capi/libonnxruntime.so*` under `venv`.
pub fn wheel_library(venv: &Path) -> Option<PathBuf> {
    std::fs::read_dir(venv.join("lib"))
        .ok()?
        .flatten()
        .find_map(|python| library_in(&python.path().join("site-packages/onnxruntime/capi")))
}

/// The process's ONNX Runtime, opened once; the error says why there is none.
fn environment() -> Result<&'static ort::environment::Environment, EngineError> {
    static ENVIRONMENT: OnceLock<Result<ort::environment::Environment, String>> = OnceLock::new();
    ENVIRONMENT
        .get_or_init(|| {
            let path = library_path()?;
            let builder = ort::init_from(&path)
                .map_err(|e| format!("cannot open ONNX Runtime at {}: {e}", path.display()))?;
            builder
                .with_name("modelpipe")
                .build()
                .map_err(|e| format!("cannot start ONNX Runtime from {}: {e}", path.display()))
        })
        .as_ref()
        .map_err(|e| EngineError::Unavailable(e.clone()))
}

/// Whether this process can use ONNX Runtime, opening it if it has not yet.
pub fn available() -> Result<(), EngineError> {
    environment().map(|_| ())
}

/// The ONNX Runtime build this process runs (`git-branch=…, git-commit-id=…`), opening the
/// library if it has not yet: what an optimised graph written by it is recorded with.
pub fn build() -> Result<String, EngineError> {
    environment()?;
    let info = ort::info();
    let info = info.strip_prefix("ORT Build Info: ").unwrap_or(info);
    Ok(info.split(", ").take(2).collect::<Vec<_>>().join(", "))
}

/// Writes the model at `path` to `out` as ONNX Runtime optimises it at the extended level:
/// every graph rewrite that does not depend on the CPU. The layout level's NCHWc blocking
/// does (16 floats on AVX-512, 8 on AVX2), so it is not in the file; the file is loaded with
/// optimisation off, which skips that pass too: worth it where the layout does not pay (no
/// convolutions), which ingest measures ([`crate::checks::Checked::compile`]).
pub fn save_optimized(path: &Path, out: &Path) -> Result<(), EngineError> {
    let env = environment()?;
    Session::builder(env)
        .map_err(ort_error("onnxruntime session"))?
        .with_optimization_level(GraphOptimizationLevel::Level2)
        .and_then(|b| b.with_intra_threads(1))
        .and_then(|b| b.with_optimized_model_path(out))
        .map_err(|e| EngineError::Load(format!("onnxruntime session options: {e}")))?
        .commit_from_file(path)
        .map_err(|e| EngineError::Load(format!("optimising the graph: {e}")))?;
    Ok(())
}

/// How the session's worker threads wait between runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Spinning {
    /// Spin briefly after a run (ONNX Runtime's default): lowest latency for back-to-back requests.
    Allowed,
    /// Sleep at once: for ingest, where tract is timed right after and spinning threads would
    /// take its cores.
    Off,
}

pub(super) struct OrtModel {
    /// `run` needs the session mutably; requests to one version take turns (each run already
    /// uses every thread it was given).
    session: Mutex<Session>,
    outputs: Vec<OutputKind>,
}

enum OutputKind {
    Tensor,
    ZipMap(ClassLabels),
}

fn ort_error(what: &str) -> impl Fn(ort::Error) -> EngineError + '_ {
    move |e| EngineError::Load(format!("{what}: {e}"))
}

impl OrtModel {
    /// A session for the model at `path` (whose outline is `graph`) on `threads` intra-op
    /// threads, optimised fully, or not at all for a graph [`save_optimized`] wrote.
    pub(super) fn load(
        path: &Path,
        graph: &Graph,
        threads: usize,
        spinning: Spinning,
        optimized: bool,
    ) -> Result<(Self, Signature), EngineError> {
        let env = environment()?;
        let allow = spinning == Spinning::Allowed;
        let level = if optimized {
            GraphOptimizationLevel::Disable
        } else {
            GraphOptimizationLevel::All
        };
        let session = Session::builder(env)
            .map_err(ort_error("onnxruntime session"))?
            .with_optimization_level(level)
            .and_then(|b| b.with_intra_threads(threads))
            .and_then(|b| b.with_inter_threads(1))
            .and_then(|b| b.with_intra_op_spinning(allow))
            .map_err(|e| EngineError::Load(format!("onnxruntime session options: {e}")))?
            .commit_from_file(path)
            .map_err(|e| EngineError::Load(e.to_string()))?;
        let inputs = session
            .inputs()
            .iter()
            .map(|outlet| tensor_spec("input", outlet.name(), outlet.dtype()))
            .collect::<Result<_, _>>()?;
        let mut outputs = Vec::new();
        let mut kinds = Vec::new();
        for outlet in session.outputs() {
            match (outlet.dtype(), graph.zipmap(outlet.name())) {
                (ValueType::Sequence(item), Some(zipmap))
                    if matches!(**item, ValueType::Map { .. }) =>
                {
                    outputs.push(zipmap_spec(zipmap));
                    kinds.push(OutputKind::ZipMap(zipmap.labels.clone()));
                }
                (dtype, _) => {
                    outputs.push(tensor_spec("output", outlet.name(), dtype)?);
                    kinds.push(OutputKind::Tensor);
                }
            }
        }
        Ok((
            Self {
                session: Mutex::new(session),
                outputs: kinds,
            },
            Signature { inputs, outputs },
        ))
    }

    /// Runs on inputs in signature order; outputs in signature order.
    pub(super) fn run(
        &self,
        signature: &Signature,
        inputs: Vec<Tensor>,
    ) -> Result<Vec<Tensor>, EngineError> {
        let run_err = |e: ort::Error| EngineError::Run(e.to_string());
        let values = signature
            .inputs
            .iter()
            .zip(inputs)
            .map(|(spec, tensor)| Ok((spec.name.as_str(), to_ort(&tensor)?)))
            .collect::<Result<Vec<_>, EngineError>>()?;
        let mut session = self.session.lock().expect("onnxruntime session lock");
        let mut outputs = session.run(values).map_err(run_err)?;
        signature
            .outputs
            .iter()
            .zip(&self.outputs)
            .map(|(spec, kind)| {
                let value = outputs.remove(spec.name.as_str()).ok_or_else(|| {
                    EngineError::Run(format!("onnxruntime gave no output '{}'", spec.name))
                })?;
                match kind {
                    OutputKind::Tensor => from_ort(&spec.name, value),
                    OutputKind::ZipMap(labels) => from_zipmap(&spec.name, value, labels),
                }
            })
            .collect()
    }
}

fn element_type(ty: TensorElementType) -> Option<DataType> {
    Some(match ty {
        TensorElementType::Bool => DataType::Bool,
        TensorElementType::Uint8 => DataType::Uint8,
        TensorElementType::Uint16 => DataType::Uint16,
        TensorElementType::Uint32 => DataType::Uint32,
        TensorElementType::Uint64 => DataType::Uint64,
        TensorElementType::Int8 => DataType::Int8,
        TensorElementType::Int16 => DataType::Int16,
        TensorElementType::Int32 => DataType::Int32,
        TensorElementType::Int64 => DataType::Int64,
        TensorElementType::Float16 => DataType::Fp16,
        TensorElementType::Float32 => DataType::Fp32,
        TensorElementType::Float64 => DataType::Fp64,
        TensorElementType::String => DataType::Bytes,
        _ => return None,
    })
}

fn ort_element(dt: DataType) -> TensorElementType {
    match dt {
        DataType::Bool => TensorElementType::Bool,
        DataType::Uint8 => TensorElementType::Uint8,
        DataType::Uint16 => TensorElementType::Uint16,
        DataType::Uint32 => TensorElementType::Uint32,
        DataType::Uint64 => TensorElementType::Uint64,
        DataType::Int8 => TensorElementType::Int8,
        DataType::Int16 => TensorElementType::Int16,
        DataType::Int32 => TensorElementType::Int32,
        DataType::Int64 => TensorElementType::Int64,
        DataType::Fp16 => TensorElementType::Float16,
        DataType::Fp32 => TensorElementType::Float32,
        DataType::Fp64 => TensorElementType::Float64,
        DataType::Bytes => TensorElementType::String,
    }
}

fn tensor_spec(
    kind: &'static str,
    name: &str,
    dtype: &ValueType,
) -> Result<TensorSpec, EngineError> {
    let unsupported = || {
        EngineError::Load(format!(
            "{kind} '{name}' is {dtype}, which modelpipe cannot serve"
        ))
    };
    let ValueType::Tensor { ty, shape, .. } = dtype else {
        return Err(unsupported());
    };
    let datatype = element_type(*ty).ok_or_else(unsupported)?;
    Ok(TensorSpec {
        name: name.to_string(),
        datatype,
        shape: shape.iter().map(|&d| if d < 0 { -1 } else { d }).collect(),
        class_labels: None,
    })
}

/// The FP32 `[batch, classes]` tensor a ZipMap output is served as.
pub(super) fn zipmap_spec(zipmap: &ZipMapOutput) -> TensorSpec {
    TensorSpec {
        name: zipmap.output.clone(),
        datatype: DataType::Fp32,
        shape: vec![-1, zipmap.labels.len() as i64],
        class_labels: Some(zipmap.labels.clone()),
    }
}

fn to_ort(tensor: &Tensor) -> Result<DynValue, EngineError> {
    let run_err = |e: ort::Error| EngineError::Run(format!("input: {e}"));
    let shape: Vec<i64> = tensor.shape().iter().map(|&d| d as i64).collect();
    if tensor.datum_type() == DatumType::String {
        let strings = tensor
            .to_plain_array_view::<String>()
            .map_err(|e| EngineError::Run(e.to_string()))?;
        let strings: Vec<String> = strings.iter().cloned().collect();
        let value = ort::value::Tensor::from_string_array((shape, &*strings)).map_err(run_err)?;
        return Ok(value.into_dyn());
    }
    let datatype = data_type(tensor.datum_type()).ok_or_else(|| {
        EngineError::Run(format!(
            "a {:?} tensor has no ONNX Runtime type",
            tensor.datum_type()
        ))
    })?;
    let mut value =
        DynTensor::new(&Allocator::default(), ort_element(datatype), shape).map_err(run_err)?;
    let bytes = tensor.as_bytes();
    if !bytes.is_empty() {
        // SAFETY: the new tensor has the same element type and shape, so exactly `bytes.len()`
        // bytes of CPU memory (the default allocator's) to fill.
        unsafe {
            std::ptr::copy_nonoverlapping(
                bytes.as_ptr(),
                value.data_ptr_mut().cast::<u8>(),
                bytes.len(),
            );
        }
    }
    Ok(value.into_dyn())
}

fn from_ort(name: &str, value: DynValue) -> Result<Tensor, EngineError> {
    let run_err = |e: ort::Error| EngineError::Run(format!("output '{name}': {e}"));
    let tensor = value.downcast::<DynTensorValueType>().map_err(run_err)?;
    let shape: Vec<usize> = tensor.shape().iter().map(|&d| d as usize).collect();
    let ty = *tensor.data_type();
    if ty == TensorElementType::String {
        let (_, strings) = tensor.try_extract_strings().map_err(run_err)?;
        return Ok(tensor_of(&shape, strings));
    }
    let datatype = element_type(ty).ok_or_else(|| {
        EngineError::Run(format!(
            "output '{name}' is a {ty} tensor, which modelpipe cannot serve"
        ))
    })?;
    let elements: usize = shape.iter().product();
    let length = ty.byte_size(elements).expect("a numeric type");
    let bytes: &[u8] = if length == 0 {
        &[]
    } else {
        // SAFETY: a CPU tensor of `elements` elements of `ty` holds `length` bytes.
        unsafe { std::slice::from_raw_parts(tensor.data_ptr().cast::<u8>(), length) }
    };
    // SAFETY: every bit pattern is a value of these types (BOOL: ONNX Runtime writes 0 or 1).
    unsafe { Tensor::from_raw_dt(datum_type(datatype), &shape, bytes) }
        .map_err(|e| EngineError::Run(e.to_string()))
}

/// A sequence of one map per row (class label → probability) as `[rows, classes]`.
fn from_zipmap(name: &str, value: DynValue, labels: &ClassLabels) -> Result<Tensor, EngineError> {
    let run_err = |e: ort::Error| EngineError::Run(format!("output '{name}': {e}"));
    let rows = value
        .try_extract_sequence::<DynMapValueType>()
        .map_err(run_err)?;
    let mut probabilities = Vec::with_capacity(rows.len() * labels.len());
    for row in &rows {
        match labels {
            ClassLabels::Int64(labels) => {
                let map = row.try_extract_map::<i64, f32>().map_err(run_err)?;
                probabilities.extend(labels.iter().map(|l| map.get(l).copied().unwrap_or(0.0)));
            }
            ClassLabels::String(labels) => {
                let map = row.try_extract_map::<String, f32>().map_err(run_err)?;
                probabilities.extend(labels.iter().map(|l| map.get(l).copied().unwrap_or(0.0)));
            }
        }
    }
    Ok(tensor_of(&[rows.len(), labels.len()], probabilities))
}
