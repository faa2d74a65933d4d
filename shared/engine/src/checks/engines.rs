//! Which engine serves a model, decided at ingest by measurement: the model is loaded in every
//! engine that can load it, each runs the same probe inputs (zeros, a varied input, the
//! contract's golden examples), the answers are compared, the runs timed, and the decision is
//! recorded in the manifest with its numbers. ONNX Runtime is the reference: when the engines
//! disagree, it serves.

use std::path::Path;
use std::time::{Duration, Instant};

use tract_onnx::prelude::{DatumType, Tensor};

use crate::{Engine, EngineError, EngineKind, Layout, LayoutChoice, Limits, Spinning};
pub use modelpipe_core::engine_choice::{Agreement, EngineChoice, Trial};
use modelpipe_core::signature::Signature;

/// Float outputs agree when `|tract − onnxruntime| ≤ ABS_TOLERANCE + REL_TOLERANCE·|onnxruntime|`.
/// Both engines compute in the model's float type; what differs is the order of summation
/// (blocked matmuls, fused kernels, tree sums), which moves an FP32 result by a few ulps per
/// thousand terms — about 1e-6 relative for the models here. 1e-3 relative (plus 1e-4 for
/// values near zero) is a hundred times that, and still far below any difference that changes
/// a prediction. Integers, strings and booleans (labels) must be equal.
pub const REL_TOLERANCE: f64 = 1e-3;
pub const ABS_TOLERANCE: f64 = 1e-4;

/// tract is kept when its fastest run is within this factor of ONNX Runtime's, or slower by no
/// more than [`NEGLIGIBLE_US`]: near a tie its lighter start wins (no 35 MB library to open at a
/// cold start — 30–90 ms here — and a smaller heap).
const TRACT_MARGIN: f64 = 1.1;

/// A difference per run no caller can see: the Lambda Runtime API round trip alone is ~100 µs
/// (BENCHMARKS.md, the floor rows), before the request's JSON.
const NEGLIGIBLE_US: u64 = 20;

/// The `conv_nhwc` layout made convolutions at most ~1.7× faster here (NOTES): a plain tract
/// plan slower than twice ONNX Runtime's is not worth the layout trial.
const LAYOUT_WORTH_TRYING: f64 = 2.0;

/// Timed rounds on the smoke input's shape (the agreement's first two probes count): at least
/// [`MIN_ROUNDS`], at most [`MAX_ROUNDS`], stopping once they have taken [`TIMING_BUDGET`]. A
/// model that runs in milliseconds gets all five; a CNN 3×: its gap is far beyond the noise, and
/// the upload is live sooner.
const MIN_ROUNDS: usize = 3;
const MAX_ROUNDS: usize = 5;
const TIMING_BUDGET: Duration = Duration::from_millis(150);

/// Each engine's fastest run so far, and how many rounds and how long they took.
#[derive(Debug, Clone, Copy)]
struct Timing {
    tract: Duration,
    onnxruntime: Duration,
    rounds: usize,
    spent: Duration,
}

impl Timing {
    fn new() -> Self {
        Self {
            tract: Duration::MAX,
            onnxruntime: Duration::MAX,
            rounds: 0,
            spent: Duration::ZERO,
        }
    }

    fn add(&mut self, tract: Duration, onnxruntime: Duration) {
        self.tract = self.tract.min(tract);
        self.onnxruntime = self.onnxruntime.min(onnxruntime);
        self.rounds += 1;
        self.spent += tract + onnxruntime;
    }

    fn enough(&self) -> bool {
        self.rounds >= MAX_ROUNDS || (self.rounds >= MIN_ROUNDS && self.spent > TIMING_BUDGET)
    }
}

/// Runs `engine` on `inputs`, timed.
fn timed_run(engine: &Engine, inputs: Vec<Tensor>) -> (Result<Vec<Tensor>, EngineError>, Duration) {
    let started = Instant::now();
    let result = engine.run(inputs);
    (result, started.elapsed())
}

/// The engine chosen for a model, and tract's layout trial when the choice ran one (tract
/// within 2× of ONNX Runtime).
pub struct Chosen {
    pub engine: Engine,
    pub choice: EngineChoice,
    pub layout: Option<LayoutChoice>,
}

/// Why no engine can serve the model: each tried engine's error.
#[derive(Debug)]
pub struct NoEngine {
    pub errors: Vec<(EngineKind, EngineError)>,
}

impl NoEngine {
    /// The one error to report: a refusal of the model itself if any engine made one, else
    /// every engine's reason.
    pub fn error(&self) -> EngineError {
        if let Some((_, e)) = self.errors.iter().find(|(_, e)| e.refuses_the_model()) {
            return e.clone();
        }
        let describe = |(kind, e): &(EngineKind, EngineError)| format!("{kind}: {}", e.detail());
        let all = || {
            self.errors
                .iter()
                .map(describe)
                .collect::<Vec<_>>()
                .join("; ")
        };
        match self.errors.as_slice() {
            [(_, only)] => only.clone(),
            errors if errors.iter().all(|(_, e)| matches!(e, EngineError::Run(_))) => {
                EngineError::Run(all())
            }
            _ => EngineError::Load(all()),
        }
    }
}

/// Loads the model at `path` in `forced` or in every engine, smoke-tests each, compares them on
/// the probes `extra_probes` adds to the zero input and a varied one, and picks one. A model
/// over `limits.compare_max_bytes` is loaded in one engine only: ONNX Runtime, the reference,
/// else tract (two copies at once would not fit the function's memory).
pub fn choose(
    path: &Path,
    limits: &Limits,
    forced: Option<EngineKind>,
    extra_probes: impl Fn(&Signature) -> Vec<Vec<Tensor>>,
) -> Result<Chosen, NoEngine> {
    let size = std::fs::metadata(path).map_or(0, |m| m.len());
    let one_at_a_time = forced.is_none() && size > limits.compare_max_bytes;
    let loaded = load_engines(path, limits, forced, one_at_a_time);
    let mut engines = Vec::new();
    let mut errors = Vec::new();
    for (kind, result) in loaded {
        match result {
            Ok(engine) => engines.push(engine),
            Err(e) => errors.push((kind, e)),
        }
    }
    // A refusal of the model itself (too large, over a limit) stands whatever else loaded it.
    if engines.is_empty() || errors.iter().any(|(_, e)| e.refuses_the_model()) {
        return Err(NoEngine { errors });
    }
    let failed = |kind| {
        errors
            .iter()
            .find(|(k, _)| *k == kind)
            .map(|(_, e)| Trial::failed(e))
    };
    if engines.len() == 1 {
        let engine = engines.remove(0);
        let kind = engine.kind();
        let reason = match (forced, errors.first()) {
            (Some(_), _) => format!("engine={kind} in the upload's metadata"),
            (None, Some((other, error))) => format!("{other} cannot serve it: {error}"),
            (None, None) => format!(
                "the model is {} MB, more than the {} MB two engines are compared at (a quarter of the function's memory): {kind}, the reference, serves without a comparison",
                size >> 20,
                limits.compare_max_bytes >> 20
            ),
        };
        let trial = Some(Trial {
            load_ms: Some(engine.load_time.as_millis() as u64),
            run_us: None,
            error: None,
        });
        let (tract, onnxruntime) = match kind {
            EngineKind::Tract => (trial, failed(EngineKind::Onnxruntime)),
            EngineKind::Onnxruntime => (failed(EngineKind::Tract), trial),
        };
        return Ok(Chosen {
            engine,
            choice: EngineChoice {
                engine: kind,
                reason,
                tract,
                onnxruntime,
                agreement: None,
            },
            layout: None,
        });
    }
    let onnxruntime = engines.pop().expect("two engines");
    let tract = engines.pop().expect("two engines");
    Ok(compare(tract, onnxruntime, extra_probes))
}

/// Each engine's load and smoke test of the model at `path`: `forced`'s alone, or every engine
/// at once on threads of their own, or (`one_at_a_time`) ONNX Runtime, then tract only if it
/// could not.
fn load_engines(
    path: &Path,
    limits: &Limits,
    forced: Option<EngineKind>,
    one_at_a_time: bool,
) -> Vec<(EngineKind, Result<Engine, EngineError>)> {
    let load = |kind| {
        let mut engine = Engine::load_with(kind, path, Layout::Plain, limits, Spinning::Off, None)?;
        engine.smoke_test_finding_shapes().map_err(|e| {
            EngineError::Run(format!(
                "{} (on the zero input, dynamic dimensions 1)",
                e.detail()
            ))
        })?;
        Ok(engine)
    };
    if one_at_a_time {
        let mut loaded = Vec::new();
        for kind in [EngineKind::Onnxruntime, EngineKind::Tract] {
            let result = load(kind);
            let served = result.is_ok();
            loaded.push((kind, result));
            if served {
                break;
            }
        }
        loaded
    } else {
        let kinds: Vec<EngineKind> = forced.map_or(EngineKind::ALL.to_vec(), |k| vec![k]);
        std::thread::scope(|scope| {
            let loads: Vec<_> = kinds
                .iter()
                .map(|&kind| scope.spawn(move || load(kind)))
                .collect();
            kinds
                .iter()
                .zip(loads)
                .map(|(&kind, load)| (kind, load.join().expect("engine loads do not panic")))
                .collect()
        })
    }
}

/// The engine the measurements pick: ONNX Runtime when the answers differ (it is the
/// reference); else tract when its fastest run is within [`TRACT_MARGIN`] of ONNX Runtime's or
/// [`NEGLIGIBLE_US`] of it; else ONNX Runtime.
pub fn decide(agree: bool, tract_us: u64, onnxruntime_us: u64) -> EngineKind {
    let close = tract_us as f64 <= TRACT_MARGIN * onnxruntime_us as f64
        || tract_us <= onnxruntime_us + NEGLIGIBLE_US;
    if agree && close {
        EngineKind::Tract
    } else {
        EngineKind::Onnxruntime
    }
}

/// Both engines loaded: agreement first, then speed.
fn compare(
    mut tract: Engine,
    mut onnxruntime: Engine,
    extra_probes: impl Fn(&Signature) -> Vec<Vec<Tensor>>,
) -> Chosen {
    let mut timing = Timing::new();
    let agreement = agreement(&tract, &onnxruntime, &extra_probes, &mut timing);
    let (tract_us, onnxruntime_us) = time_both(&tract, &onnxruntime, timing);
    let worth_a_layout = (tract_us as f64) < LAYOUT_WORTH_TRYING * onnxruntime_us as f64;
    // Kept for `Checked::compile` when tract serves, so the trial is not run twice.
    let layout = worth_a_layout.then(|| tract.choose_layout().ok()).flatten();
    let tract_best = layout
        .as_ref()
        .and_then(|l| l.nhwc_us)
        .map_or(tract_us, |nhwc| nhwc.min(tract_us));
    let trial = |engine: &Engine, run_us| Trial {
        load_ms: Some(engine.load_time.as_millis() as u64),
        run_us: Some(run_us),
        error: None,
    };
    let (tract_trial, onnxruntime_trial) = (
        trial(&tract, tract_best),
        trial(&onnxruntime, onnxruntime_us),
    );
    let kind = decide(agreement.agree, tract_best, onnxruntime_us);
    let (tract_reading, onnxruntime_reading) =
        (tract.signature().clone(), onnxruntime.signature().clone());
    tract.widen_outputs(&onnxruntime_reading);
    onnxruntime.widen_outputs(&tract_reading);
    let reason = if !agreement.agree {
        format!(
            "the engines disagree ({}): onnxruntime, the reference, serves",
            agreement
                .difference
                .as_deref()
                .unwrap_or("different answers")
        )
    } else if kind == EngineKind::Tract {
        format!("tract is as fast or close: {tract_best} µs vs {onnxruntime_us} µs")
    } else {
        format!("onnxruntime is faster: {onnxruntime_us} µs vs {tract_best} µs")
    };
    let engine = match kind {
        EngineKind::Tract => tract,
        EngineKind::Onnxruntime => onnxruntime,
    };
    Chosen {
        engine,
        choice: EngineChoice {
            engine: kind,
            reason,
            tract: Some(tract_trial),
            onnxruntime: Some(onnxruntime_trial),
            agreement: Some(agreement),
        },
        layout: layout.filter(|_| kind == EngineKind::Tract),
    }
}

/// The engines' answers on the probes: zeros (the smoke input), a varied input, and the extra
/// probes (golden examples). A probe both engines refuse is skipped; one refused by only one
/// engine is a disagreement.
fn agreement(
    tract: &Engine,
    onnxruntime: &Engine,
    extra_probes: &impl Fn(&Signature) -> Vec<Vec<Tensor>>,
    timing: &mut Timing,
) -> Agreement {
    let mut result = Agreement {
        agree: true,
        probes: 0,
        max_abs_diff: 0.0,
        difference: None,
    };
    let (a, b) = (tract.signature(), onnxruntime.signature());
    let names = |s: &Signature| {
        let list = |specs: &[modelpipe_core::signature::TensorSpec]| {
            specs
                .iter()
                .map(|t| (t.name.clone(), t.datatype))
                .collect::<Vec<_>>()
        };
        (list(&s.inputs), list(&s.outputs))
    };
    if names(a) != names(b) {
        result.agree = false;
        result.difference = Some(format!(
            "tract reads the signature as {a:?}, onnxruntime as {b:?}"
        ));
        return result;
    }
    // The zero and the varied input have the smoke input's shape: their runs are timed too.
    let mut probes: Vec<(Vec<Tensor>, bool)> = Vec::new();
    probes.extend(onnxruntime.smoke_inputs().ok().map(|p| (p, true)));
    probes.extend(varied_inputs(onnxruntime).map(|p| (p, true)));
    probes.extend(extra_probes(b).into_iter().map(|p| (p, false)));
    for (inputs, timed) in probes {
        let (got, tract_took) = timed_run(tract, inputs.clone());
        let (want, onnxruntime_took) = timed_run(onnxruntime, inputs);
        match (got, want) {
            (Err(_), Err(_)) => continue,
            (Ok(got), Ok(want)) => {
                if timed {
                    timing.add(tract_took, onnxruntime_took);
                }
                result.probes += 1;
                for ((spec, got), want) in b.outputs.iter().zip(&got).zip(&want) {
                    match difference(got, want) {
                        Ok(diff) => result.max_abs_diff = result.max_abs_diff.max(diff),
                        Err(why) => {
                            result.agree = false;
                            result
                                .difference
                                .get_or_insert(format!("output '{}' {why}", spec.name));
                        }
                    }
                }
            }
            (Err(e), Ok(_)) | (Ok(_), Err(e)) => {
                result.probes += 1;
                result.agree = false;
                result
                    .difference
                    .get_or_insert(format!("only one engine ran a probe: {e}"));
            }
        }
    }
    result
}

/// A deterministic input with varied values, so that a model whose answers on zeros happen to
/// agree is still compared: floats in [0, 1); other types keep the smoke input's values (an
/// integer input is often an index, which an arbitrary value would overrun).
fn varied_inputs(engine: &Engine) -> Option<Vec<Tensor>> {
    let mut state: u32 = 0x9e37_79b9;
    let mut next = move || {
        state ^= state << 13;
        state ^= state >> 17;
        state ^= state << 5;
        (state >> 8) as f32 / (1u32 << 24) as f32
    };
    let smoke = engine.smoke_inputs().ok()?;
    let varied = smoke
        .into_iter()
        .map(|tensor| match tensor.datum_type() {
            DatumType::F32 | DatumType::F64 | DatumType::F16 => {
                let values: Vec<f32> = (0..tensor.len()).map(|_| next()).collect();
                Tensor::from_shape(tensor.shape(), &values)
                    .and_then(|t| t.cast_to_dt(tensor.datum_type()).map(|t| t.into_owned()))
                    .unwrap_or(tensor)
            }
            _ => tensor,
        })
        .collect();
    Some(varied)
}

/// The largest absolute difference between two float tensors within the tolerance, 0 for
/// equal exact ones; or why they differ.
pub fn difference(got: &Tensor, want: &Tensor) -> Result<f64, String> {
    if got.shape() != want.shape() {
        return Err(format!(
            "has shape {:?} in tract, {:?} in onnxruntime",
            got.shape(),
            want.shape()
        ));
    }
    let as_f64 = |t: &Tensor| {
        t.cast_to::<f64>().ok().and_then(|t| {
            t.to_plain_array_view::<f64>()
                .ok()
                .map(|v| v.iter().copied().collect::<Vec<_>>())
        })
    };
    let float = |t: &Tensor| {
        matches!(
            t.datum_type(),
            DatumType::F16 | DatumType::F32 | DatumType::F64
        )
    };
    if !(float(got) && float(want)) {
        return if got == want {
            Ok(0.0)
        } else {
            Err("differs exactly (labels, integers or strings)".into())
        };
    }
    let (Some(got), Some(want)) = (as_f64(got), as_f64(want)) else {
        return Err("cannot be compared".into());
    };
    let mut largest: f64 = 0.0;
    for (i, (g, w)) in got.iter().zip(&want).enumerate() {
        let diff = (g - w).abs();
        if diff.is_nan() && !(g.is_nan() && w.is_nan())
            || diff > ABS_TOLERANCE + REL_TOLERANCE * w.abs()
        {
            return Err(format!("element {i} is {g} in tract, {w} in onnxruntime"));
        }
        if diff.is_finite() {
            largest = largest.max(diff);
        }
    }
    Ok(largest)
}

/// Each engine's fastest run on the smoke input: `timing` (the probes' runs) completed with
/// interleaved rounds until it is [`Timing::enough`] (the smoke tests warmed both up).
fn time_both(tract: &Engine, onnxruntime: &Engine, mut timing: Timing) -> (u64, u64) {
    let time = |engine: &Engine| {
        let inputs = engine.smoke_inputs().ok()?;
        let (result, took) = timed_run(engine, inputs);
        result.ok().map(|_| took)
    };
    while !timing.enough() {
        // The smoke input ran before: a run failing now leaves the figures as they are.
        let (Some(tract_took), Some(onnxruntime_took)) = (time(tract), time(onnxruntime)) else {
            break;
        };
        timing.add(tract_took, onnxruntime_took);
    }
    let micros = |d: Duration| d.as_micros().min(u64::MAX as u128) as u64;
    (micros(timing.tract), micros(timing.onnxruntime))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn floats_agree_within_the_tolerance_and_labels_exactly() {
        let a = Tensor::from_shape(&[2], &[1.0f32, 100.0]).unwrap();
        let near = Tensor::from_shape(&[2], &[1.00001f32, 100.05]).unwrap();
        let far = Tensor::from_shape(&[2], &[1.01f32, 100.0]).unwrap();
        assert!(difference(&a, &near).unwrap() > 0.0);
        let err = difference(&a, &far).unwrap_err();
        assert!(err.contains("element 0"), "{err}");
        let labels = Tensor::from_shape(&[2], &[1i64, 2]).unwrap();
        let other = Tensor::from_shape(&[2], &[1i64, 3]).unwrap();
        assert_eq!(difference(&labels, &labels.clone()), Ok(0.0));
        assert!(difference(&labels, &other).is_err());
        let wide = Tensor::from_shape(&[1, 2], &[1i64, 2]).unwrap();
        assert!(difference(&labels, &wide).unwrap_err().contains("shape"));
    }

    #[test]
    fn disagreement_picks_the_reference_and_a_near_tie_keeps_tract() {
        assert_eq!(decide(true, 5, 8), EngineKind::Tract);
        assert_eq!(decide(true, 105, 100), EngineKind::Tract);
        assert_eq!(decide(true, 130, 100), EngineKind::Onnxruntime);
        // Slower by a third, but by 12 µs: no caller sees it, the lighter start wins.
        assert_eq!(decide(true, 37, 25), EngineKind::Tract);
        assert_eq!(decide(true, 37_000, 12_000), EngineKind::Onnxruntime);
        assert_eq!(decide(false, 5, 8), EngineKind::Onnxruntime);
    }

    #[test]
    fn a_refusal_of_the_model_outranks_other_reasons() {
        let errors = NoEngine {
            errors: vec![
                (EngineKind::Tract, EngineError::Load("no Scaler".into())),
                (
                    EngineKind::Onnxruntime,
                    EngineError::Limit("too many nodes".into()),
                ),
            ],
        };
        assert!(matches!(errors.error(), EngineError::Limit(_)));
        let both = NoEngine {
            errors: vec![
                (EngineKind::Tract, EngineError::Load("no Scaler".into())),
                (
                    EngineKind::Onnxruntime,
                    EngineError::Load("bad proto".into()),
                ),
            ],
        };
        let message = both.error().to_string();
        assert!(
            message.starts_with("not a loadable ONNX model: tract: "),
            "{message}"
        );
        assert!(message.contains("onnxruntime: "), "{message}");
    }
}
