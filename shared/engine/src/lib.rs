//! The one place that runs models. Two engines stand behind [`Engine`]: tract ([`tract`], pure
//! Rust, with per-shape plans, layouts and an ingest-time artifact) and ONNX Runtime
//! ([`onnxruntime`], the reference implementation, for what tract cannot load or runs slower).
//! Which one serves a version is decided at ingest ([`checks`]) and recorded in its manifest. Every load first reads the file's outline ([`graph`]) and is bounded by [`Limits`];
//! panics inside an engine (hostile models can trigger them) become errors here.

//!
//! The crate also holds what decides whether a model may serve: [`checks`] (load, smoke run,
//! signature, golden examples, the engine choice), [`contract`] (the golden examples' file) and
//! [`tensors`] (Open Inference Protocol tensor data to and from engine tensors, for requests and
//! golden examples alike) and [`features`] (a request's tensors as drift statistics' features).

mod artifact;
pub mod checks;
pub mod contract;
pub mod features;
pub mod graph;
mod layout;
pub mod onnxruntime;
mod plans;
pub mod tensors;
mod tract;

use std::panic::{AssertUnwindSafe, catch_unwind};
use std::path::Path;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use tract_onnx::prelude::*;

pub use self::artifact::TRACT_VERSION;
pub use self::graph::Graph;
use self::onnxruntime::OrtModel;
pub use self::onnxruntime::Spinning;
pub use self::plans::MAX_SHAPE_PLANS;
use self::tract::TractModel;
pub use modelpipe_core::engine_choice::{EngineKind, Layout, LayoutChoice};
pub use modelpipe_core::limits::{Limits, MAX_MODEL_NODES, MODEL_LOAD_BUDGET};
pub use modelpipe_core::signature::ClassLabels;
use modelpipe_core::signature::{DataType, Signature};

#[derive(Debug, Clone, thiserror::Error)]
pub enum EngineError {
    #[error("not a loadable ONNX model: {0}")]
    Load(String),
    #[error("inference failed: {0}")]
    Run(String),
    #[error("{0} '{1}' has datatype {2:?}, which modelpipe cannot serve")]
    UnsupportedType(&'static str, String, DatumType),
    /// The model declares a tensor too large to allocate: refused whichever engine would run it.
    #[error("{0}")]
    TooLarge(String),
    /// The model exceeds [`Limits::max_nodes`]: refused whichever engine would run it.
    #[error("{0}")]
    Limit(String),
    /// The engine did not load the model within [`Limits::load_budget`].
    #[error("{0}")]
    TooSlow(String),
    #[error("ONNX Runtime is not available: {0}")]
    Unavailable(String),
}

impl EngineError {
    /// The reason without the variant's prefix, to be joined with other engines' reasons.
    pub fn detail(&self) -> String {
        match self {
            Self::Load(why) | Self::Run(why) => why.clone(),
            other => other.to_string(),
        }
    }

    /// Whether the error is about the model itself, so that no other engine should be tried.
    pub fn refuses_the_model(&self) -> bool {
        matches!(self, Self::TooLarge(_) | Self::Limit(_))
    }
}

/// A model ready to run in one engine, with the signature read from it.
pub struct Engine {
    backend: Backend,
    signature: Signature,
    /// The shapes of the smoke input (and the warm-up): the declared ones, dynamic dimensions 1,
    /// unless [`Self::smoke_test_finding_shapes`] had to find others.
    smoke_shapes: Vec<Vec<usize>>,
    /// Sizes the graph's constants name (see [`Graph::lengths`]).
    lengths: Vec<usize>,
    /// Time spent reading the file (or artifact) and preparing it, planned for the smoke input.
    pub load_time: Duration,
}

enum Backend {
    Tract(TractModel),
    Onnxruntime(OrtModel),
}

impl std::fmt::Debug for Engine {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Engine")
            .field("kind", &self.kind())
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
            Err(what(format!("the engine panicked: {message}")))
        }
    }
}

/// The largest tensor a model may declare (an input, a weight or an intermediate result, with
/// dynamic dimensions taken as 1), the default `MAX_MODEL_BYTES`: past it, a hostile or mistaken
/// model would exhaust the function's memory on its first run instead of being refused.
pub const MAX_TENSOR_BYTES: u64 = 2 << 30;

/// Threads each engine runs a model on (set by [`use_threads`]).
static THREADS: AtomicUsize = AtomicUsize::new(1);

/// Lets both engines spread a run over `threads` threads (tract's default is one). Lambda gives
/// a function more vCPUs as its memory grows; `None` uses them all. Returns the thread count.
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
    THREADS.store(threads, Ordering::Relaxed);
    threads
}

/// Reads the outline of the model at `path` (mapped, not copied) and holds it to `limits`'
/// node bound.
pub fn outline(path: &Path, limits: &Limits) -> Result<Graph, EngineError> {
    let io = |e: std::io::Error| EngineError::Load(format!("{}: {e}", path.display()));
    let file = std::fs::File::open(path).map_err(io)?;
    // SAFETY: the file is neither written nor truncated while mapped: a version's files are
    // immutable once committed, and a staged upload is complete before it is checked (tract
    // maps the same file the same way).
    let map = unsafe { memmap2::Mmap::map(&file) }.map_err(io)?;
    let graph = Graph::read(bytes::Bytes::from_owner(map)).map_err(EngineError::Load)?;
    if graph.nodes > limits.max_nodes {
        return Err(EngineError::Limit(format!(
            "the graph has {} nodes, more than MAX_MODEL_NODES ({})",
            graph.nodes, limits.max_nodes
        )));
    }
    Ok(graph)
}

/// Runs `load` on a thread of its own and waits at most `budget` for it.
fn within_budget<T: Send + 'static>(
    engine: EngineKind,
    budget: Duration,
    load: impl FnOnce() -> Result<T, EngineError> + Send + 'static,
) -> Result<T, EngineError> {
    let (sender, receiver) = std::sync::mpsc::channel();
    std::thread::Builder::new()
        .name(format!("load-{engine}"))
        .spawn(move || {
            let _ = sender.send(load());
        })
        .map_err(|e| EngineError::Load(format!("cannot start a loading thread: {e}")))?;
    match receiver.recv_timeout(budget) {
        Ok(result) => result,
        Err(std::sync::mpsc::RecvTimeoutError::Timeout) => Err(EngineError::TooSlow(format!(
            "{engine} did not load the model within MODEL_LOAD_BUDGET_MS ({} ms)",
            budget.as_millis()
        ))),
        Err(std::sync::mpsc::RecvTimeoutError::Disconnected) => {
            Err(EngineError::Load(format!("{engine} stopped while loading")))
        }
    }
}

impl Engine {
    /// Loads the ONNX model at `path` in tract, convolutions plain, with the default limits.
    pub fn load(path: &Path) -> Result<Self, EngineError> {
        Self::load_onnx(path, Layout::Plain)
    }

    /// Loads the ONNX model at `path` in tract, with the default limits.
    pub fn load_onnx(path: &Path, layout: Layout) -> Result<Self, EngineError> {
        Self::load_with(
            EngineKind::Tract,
            path,
            layout,
            &Limits::default(),
            Spinning::Allowed,
            None,
        )
    }

    /// Loads the ONNX model at `path` in `kind`, held to `limits`, and plans it for the smoke
    /// input (of `smoke` shapes when given: those the manifest recorded). `layout` is tract's;
    /// `spinning` ONNX Runtime's.
    pub fn load_with(
        kind: EngineKind,
        path: &Path,
        layout: Layout,
        limits: &Limits,
        spinning: Spinning,
        smoke: Option<&[Vec<usize>]>,
    ) -> Result<Self, EngineError> {
        Self::load_from(kind, path, path, layout, limits, spinning, smoke)
    }

    /// Loads in ONNX Runtime the graph it optimised at ingest (`optimized`, see
    /// [`checks::Checked::optimize`]) of the ONNX model at `path`, held to `limits`.
    pub fn load_optimized(
        path: &Path,
        optimized: &Path,
        limits: &Limits,
        spinning: Spinning,
        smoke: Option<&[Vec<usize>]>,
    ) -> Result<Self, EngineError> {
        let kind = EngineKind::Onnxruntime;
        Self::load_from(
            kind,
            path,
            optimized,
            Layout::Plain,
            limits,
            spinning,
            smoke,
        )
    }

    /// [`Self::load_with`], the outline (limits, ZipMap outputs) read from `path` and the engine
    /// loaded from `source`: the same file, or ONNX Runtime's optimised graph of it.
    fn load_from(
        kind: EngineKind,
        path: &Path,
        source: &Path,
        layout: Layout,
        limits: &Limits,
        spinning: Spinning,
        smoke: Option<&[Vec<usize>]>,
    ) -> Result<Self, EngineError> {
        let started = Instant::now();
        let graph = outline(path, limits)?;
        let optimized = source != path;
        let path = source.to_path_buf();
        let threads = THREADS.load(Ordering::Relaxed);
        let smoke = smoke.map(<[Vec<usize>]>::to_vec);
        within_budget(kind, limits.load_budget, move || {
            let (backend, signature) = match kind {
                EngineKind::Tract => {
                    let (model, signature) = TractModel::load_onnx(&path, &graph, layout)?;
                    (Backend::Tract(model), signature)
                }
                EngineKind::Onnxruntime => {
                    let (model, signature) =
                        OrtModel::load(&path, &graph, threads, spinning, optimized)?;
                    (Backend::Onnxruntime(model), signature)
                }
            };
            Self::ready(backend, signature, smoke, graph.lengths, started)
        })
    }

    /// Reads the tract artifact compiled at ingest for a model whose manifest records
    /// `signature`. An artifact whose inputs or outputs differ from it is refused.
    pub fn load_artifact(
        path: &Path,
        signature: &Signature,
        layout: Layout,
        smoke: Option<&[Vec<usize>]>,
    ) -> Result<Self, EngineError> {
        let started = Instant::now();
        let model = TractModel::load_artifact(path, signature, layout)?;
        let smoke = smoke.map(<[Vec<usize>]>::to_vec);
        Self::ready(
            Backend::Tract(model),
            signature.clone(),
            smoke,
            Vec::new(),
            started,
        )
    }

    /// Refuses declared inputs over [`MAX_TENSOR_BYTES`] (tract checks every tensor it
    /// types), then plans the smoke input's shapes, so the first request of that shape finds its
    /// plan ready.
    fn ready(
        backend: Backend,
        signature: Signature,
        smoke: Option<Vec<Vec<usize>>>,
        lengths: Vec<usize>,
        started: Instant,
    ) -> Result<Self, EngineError> {
        for spec in &signature.inputs {
            let elements = spec
                .shape
                .iter()
                .try_fold(1u64, |n, &d| n.checked_mul(d.max(1) as u64));
            let element = datum_type(spec.datatype).size_of() as u64;
            if elements
                .and_then(|n| n.checked_mul(element))
                .is_none_or(|b| b > MAX_TENSOR_BYTES)
            {
                return Err(EngineError::TooLarge(format!(
                    "input '{}' has shape {}: larger than the {} MiB allowed for one tensor",
                    spec.name,
                    modelpipe_core::signature::Shape(&spec.shape),
                    MAX_TENSOR_BYTES >> 20
                )));
            }
        }
        let engine = Self {
            smoke_shapes: smoke.unwrap_or_else(|| smoke_shapes(&signature, 1)),
            backend,
            signature,
            lengths,
            load_time: Duration::ZERO,
        };
        if let Backend::Tract(model) = &engine.backend {
            model.plan_for(&engine.smoke_inputs()?)?;
        }
        Ok(Self {
            load_time: started.elapsed(),
            ..engine
        })
    }

    pub fn kind(&self) -> EngineKind {
        match self.backend {
            Backend::Tract(_) => EngineKind::Tract,
            Backend::Onnxruntime(_) => EngineKind::Onnxruntime,
        }
    }

    /// Writes tract's decluttered model as an NNEF tar at `path` (see [`Self::load_artifact`]).
    pub fn write_artifact(&self, path: &Path) -> Result<(), EngineError> {
        match &self.backend {
            Backend::Tract(model) => model.write_artifact(path),
            Backend::Onnxruntime(_) => Err(EngineError::Load(
                "only tract models have a compiled artifact".into(),
            )),
        }
    }

    /// Times tract's plain plan against the `conv_nhwc` one on the smoke input and keeps the
    /// faster; ONNX Runtime models have no layout to choose.
    pub fn choose_layout(&self) -> Result<LayoutChoice, EngineError> {
        match &self.backend {
            Backend::Tract(model) => model.choose_layout(&self.smoke_inputs()?),
            Backend::Onnxruntime(_) => Ok(LayoutChoice::fastest(0, None)),
        }
    }

    /// The convolution layout tract's plans use (plain for ONNX Runtime).
    pub fn layout(&self) -> Layout {
        match &self.backend {
            Backend::Tract(model) => model.layout(),
            Backend::Onnxruntime(_) => Layout::Plain,
        }
    }

    /// Plans in memory: tract's, one per input shape seen (at most [`MAX_SHAPE_PLANS`] + 1),
    /// each holding its own copy of the packed weights; ONNX Runtime's one session.
    pub fn resident_plans(&self) -> usize {
        match &self.backend {
            Backend::Tract(model) => model.resident_plans(),
            Backend::Onnxruntime(_) => 1,
        }
    }

    /// Plans built since the load, evicted ones included.
    pub fn plans_built(&self) -> usize {
        match &self.backend {
            Backend::Tract(model) => model.plans_built(),
            Backend::Onnxruntime(_) => 1,
        }
    }

    pub fn signature(&self) -> &Signature {
        &self.signature
    }

    /// Widens each output dimension this engine knows but `other` (another engine's reading of
    /// the same model) leaves open, or reads differently, to -1: the signature a version records
    /// does not depend on which engine read it, so a later version served by the other engine is
    /// not refused for a signature change that is only the engines' (tract infers output sizes
    /// that ONNX Runtime takes from the file's declarations). Inputs, which requests are checked
    /// against, keep this engine's reading.
    pub fn widen_outputs(&mut self, other: &Signature) {
        for (mine, theirs) in self.signature.outputs.iter_mut().zip(&other.outputs) {
            if mine.name != theirs.name || mine.shape.len() != theirs.shape.len() {
                continue;
            }
            for (dim, their) in mine.shape.iter_mut().zip(&theirs.shape) {
                if dim != their {
                    *dim = -1;
                }
            }
        }
    }

    /// Runs the model on inputs given in signature order; outputs come in signature order.
    pub fn run(&self, inputs: Vec<Tensor>) -> Result<Vec<Tensor>, EngineError> {
        match &self.backend {
            Backend::Tract(model) => model.run(inputs),
            Backend::Onnxruntime(model) => {
                let signature = &self.signature;
                guarded(EngineError::Run, || Ok(model.run(signature, inputs)))?
            }
        }
    }

    /// The smoke input's shapes when they are not the declared ones with dynamic dimensions 1
    /// (the manifest records them, so that inference warms up on them too).
    pub fn smoke_shapes(&self) -> Option<&[Vec<usize>]> {
        (self.smoke_shapes != smoke_shapes(&self.signature, 1)).then_some(&self.smoke_shapes)
    }

    /// Zero-filled inputs of the smoke shapes (the declared ones, dynamic dimensions 1).
    pub fn smoke_inputs(&self) -> Result<Vec<Tensor>, EngineError> {
        self.signature
            .inputs
            .iter()
            .zip(&self.smoke_shapes)
            .map(|(spec, shape)| {
                let elements = shape.iter().product();
                Ok(match spec.datatype {
                    // Neither has a numeric zero in tract; "" and false stand in for it.
                    DataType::Bytes => tensor_of(shape, vec![String::new(); elements]),
                    DataType::Bool => tensor_of(shape, vec![false; elements]),
                    other => {
                        let dt = datum_type(other);
                        guarded(EngineError::Run, || Tensor::zero_dt(dt, shape))?
                    }
                })
            })
            .collect()
    }

    /// One run on [`Self::smoke_inputs`]: proves the model executes and warms it up.
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

impl Engine {
    /// [`Self::smoke_test`]; when the zero input with dynamic dimensions 1 fails to run, tries
    /// the sizes the graph's constants name for the dynamic dimensions after the first (the
    /// batch stays 1) and keeps the first that runs. A torch export can declare a sequence axis
    /// dynamic while its reshapes hold the example's length: it runs at that length only.
    pub fn smoke_test_finding_shapes(&mut self) -> Result<(), EngineError> {
        let first = match self.smoke_test() {
            Ok(()) => return Ok(()),
            Err(e @ EngineError::Run(_)) => e,
            Err(other) => return Err(other),
        };
        let declared = std::mem::take(&mut self.smoke_shapes);
        for length in self.lengths.clone() {
            self.smoke_shapes = smoke_shapes(&self.signature, length);
            if self.smoke_shapes != declared && self.smoke_test().is_ok() {
                return Ok(());
            }
        }
        self.smoke_shapes = declared;
        Err(first)
    }
}

/// The declared input shapes, a dynamic first dimension 1 and other dynamic ones `length`.
fn smoke_shapes(signature: &Signature, length: usize) -> Vec<Vec<usize>> {
    signature
        .inputs
        .iter()
        .map(|spec| {
            spec.shape
                .iter()
                .enumerate()
                .map(|(axis, &d)| match (d < 0, axis) {
                    (false, _) => d as usize,
                    (true, 0) => 1,
                    (true, _) => length,
                })
                .collect()
        })
        .collect()
}

fn shapes_of(inputs: &[Tensor]) -> Vec<TVec<usize>> {
    inputs.iter().map(|t| t.shape().into()).collect()
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
