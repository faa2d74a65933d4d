//! Cold start, warm latency and memory of the inference function against the Python handler,
//! both driven through the same Runtime API endpoint with the same API Gateway events:
//! - cold start: process spawned → first answer received (modelpipe preloads the model at init;
//!   Python imports onnxruntime and numpy and creates the session at import);
//! - warm: event handed out → answer received, what Lambda bills;
//! - peak RSS with the model loaded and answering, and (modelpipe) while `live` moves to another
//!   version and the function adopts it after an answer.
//!
//! modelpipe runs twice: on versions committed for tract (artifact, layout chosen at ingest) and
//! on the same versions committed for ONNX Runtime (`engine=onnxruntime`; the library opened from
//! beside `bootstrap`), so each engine's function is measured whichever the validator would
//! choose. The CNNs are also served with the binary tensor extension (the input's bytes instead
//! of 150,528 JSON numbers), against the Python handler reading binary too.

use modelpipe_core::ModelName;
use modelpipe_registry::Registry;
use modelpipe_tests::serving::publish;
use serde_json::Value;

use super::{Setup, Target};
use crate::function::{Function, Launch};
use crate::models::{BenchModel, parse_answer};
use crate::stats::{Rounds, quantile, us};
use modelpipe_tests::lambda_env::Answer;

#[derive(Default)]
struct Side {
    cold_ms: Rounds,
    init_ms: Rounds,
    p50_us: Rounds,
    p99_us: Rounds,
    peak_mb: Rounds,
    swap_peak_mb: Rounds,
    worst_difference: f32,
}

impl Side {
    fn row(&self, model: &str, runtime: &str, swap: &str) -> String {
        format!(
            "| {model} | {runtime} | {} | {} | {} | {} | {} | {swap} |\n",
            self.init_ms.show(1),
            self.cold_ms.show(1),
            self.p50_us.show(0),
            self.p99_us.show(0),
            self.peak_mb.show(1),
        )
    }

    /// Cold start (spawn → first answer), init, then `invocations` warm events and the peak RSS;
    /// returns the first and the last answer.
    async fn measure(
        &mut self,
        function: &Function,
        event: &Value,
        invocations: usize,
    ) -> (Answer, Answer) {
        let first = function.invoke(event.clone()).await;
        self.cold_ms
            .push((first.posted - function.spawned).as_secs_f64() * 1e3);
        self.init_ms
            .push(function.init_time().await.as_secs_f64() * 1e3);
        let mut durations = Vec::with_capacity(invocations);
        let mut last = None;
        for _ in 0..invocations {
            let answer = function.invoke(event.clone()).await;
            durations.push(us(answer.latency));
            last = Some(answer);
        }
        self.p50_us.push(quantile(&durations, 0.5));
        self.p99_us.push(quantile(&durations, 0.99));
        self.peak_mb.push(function.peak_rss_mb());
        (first, last.expect("at least one warm invocation"))
    }

    /// Checks an answer against the model's reference and keeps the worst difference seen.
    fn check(&mut self, model: &BenchModel, answer: &Answer) -> Option<u64> {
        let (output, version) = parse_answer(answer.body.as_ref().expect("an answer"));
        let difference = model.difference(&output);
        assert!(
            difference < 1e-3,
            "{}: an answer differs from the reference",
            model.name
        );
        self.worst_difference = self.worst_difference.max(difference);
        version
    }
}

fn warm_invocations(model: &BenchModel) -> usize {
    model.scale(2000, 40, 20)
}

pub async fn run(setup: &Setup, targets: &mut Vec<Target>) -> String {
    let mut out = String::new();
    out += &format!(
        "Both runtimes answer the same API Gateway HTTP API events (Open Inference Protocol JSON) \
         from the same Runtime API endpoint, {threads} compute thread(s) each; {rounds} rounds, \
         the two runtimes interleaved; each cell is the median over rounds (min–max). Warm \
         latency per round: {mlp} MLP / {cnn} MobileNet / {resnet} ResNet invocations. \
         \"modelpipe, tract\" serves versions committed for tract (compiled artifact, layout \
         chosen at ingest); \"modelpipe, onnxruntime\" the same versions committed with \
         engine=onnxruntime (which the validator chooses for the CNNs). The first two rows are the floor: \
         a function that answers every event at once in each runtime (the Python one still \
         imports onnxruntime and builds the MLP's session at import, as the handler module does), \
         i.e. the Runtime API round trip over loopback that both pay before any work.\n\n",
        threads = setup.cpus,
        rounds = setup.rounds,
        mlp = warm_invocations(&setup.models[0]),
        cnn = warm_invocations(&setup.models[1]),
        resnet = warm_invocations(&setup.models[2]),
    );
    out += "| model | runtime | init (ms) | cold start → first answer (ms) | warm p50 (µs) | warm p99 (µs) | peak RSS (MB) | peak RSS during a swap (MB) |\n";
    out += "|---|---|---:|---:|---:|---:|---:|---:|\n";
    let (mut rust_floor, mut python_floor) = (Side::default(), Side::default());
    for _ in 0..setup.rounds {
        measure_empty(setup, true, &mut rust_floor).await;
        measure_empty(setup, false, &mut python_floor).await;
    }
    for (runtime, side) in [
        ("Rust lambda_runtime (modelpipe's)", &rust_floor),
        ("Python awslambdaric", &python_floor),
    ] {
        out += &side.row("none: a handler that answers at once", runtime, "");
    }
    let mut ratios = String::new();
    let mut binary = String::new();
    for model in &setup.models {
        let json_event = model.event();
        let variants: &[(&str, Option<&Registry>)] = &[
            ("modelpipe, tract", Some(&setup.registry)),
            ("modelpipe, onnxruntime", Some(&setup.onnxruntime)),
            ("Python + onnxruntime", None),
        ];
        let dirs = [&setup.registry_dir, &setup.onnxruntime_dir];
        let mut sides: Vec<Side> = variants.iter().map(|_| Side::default()).collect();
        let mut binary_sides: Vec<Side> = variants.iter().map(|_| Side::default()).collect();
        let binary_event = (model.name != "mlp").then(|| model.binary_event());
        for round in 0..setup.rounds {
            // Each runtime goes first, second and third in turn.
            for turn in 0..variants.len() {
                let i = (round + turn) % variants.len();
                let events = std::iter::once((&json_event, &mut sides[i]))
                    .chain(binary_event.as_ref().map(|e| (e, &mut binary_sides[i])));
                for (event, side) in events {
                    match variants[i].1 {
                        Some(registry) => {
                            measure_ours(setup, model, registry, dirs[i], event, side).await
                        }
                        None => measure_python(setup, model, event, side).await,
                    }
                }
            }
        }
        for ((label, _), side) in variants.iter().zip(&sides) {
            let swap = if label.starts_with("modelpipe") {
                side.swap_peak_mb.show(1)
            } else {
                "n/a: a new model is a redeploy (a cold start)".to_string()
            };
            out += &side.row(model.label, label, &swap);
        }
        let python = &sides[2];
        // The function the validator would deploy for this model: ONNX Runtime for the CNNs.
        let chosen = if model.name == "mlp" {
            &sides[0]
        } else {
            &sides[1]
        };
        let cold = chosen.cold_ms.ratio_to(&python.cold_ms);
        targets.push(Target {
            what: format!("cold start → first answer, {}", model.label),
            goal: "≤ 0.5× Python".into(),
            measured: format!("{cold:.2}×"),
            met: cold <= 0.5,
        });
        if model.name == "mlp" {
            for (label, ours, python) in [
                ("p50", &sides[0].p50_us, &python.p50_us),
                ("p99", &sides[0].p99_us, &python.p99_us),
            ] {
                let ratio = ours.ratio_to(python);
                targets.push(Target {
                    what: format!("warm latency {label}, {}", model.label),
                    goal: "≤ 0.3× Python".into(),
                    measured: format!("{ratio:.2}×"),
                    met: ratio <= 0.3,
                });
            }
        }
        for ((label, _), side) in variants.iter().zip(&sides).take(2) {
            ratios += &format!(
                "| {} | {label} | {:.2}× | {:.2}× | {:.2}× | {:.2}× | {:.2e} / {:.2e} |\n",
                model.label,
                side.cold_ms.ratio_to(&python.cold_ms),
                side.p50_us.ratio_to(&python.p50_us),
                side.p99_us.ratio_to(&python.p99_us),
                side.peak_mb.ratio_to(&python.peak_mb),
                side.worst_difference,
                python.worst_difference,
            );
        }
        if binary_event.is_some() {
            let python = &binary_sides[2];
            for ((label, _), side) in variants.iter().zip(&binary_sides) {
                binary += &format!(
                    "| {} | {label} | {} | {} | {:.2}× |\n",
                    model.label,
                    side.p50_us.show(0),
                    side.p99_us.show(0),
                    side.p50_us.ratio_to(&python.p50_us),
                );
            }
            let ratio = binary_sides[1].p50_us.ratio_to(&python.p50_us);
            targets.push(Target {
                what: format!("served p50 with binary tensors, {}", model.label),
                goal: "≤ 1.1× Python (binary)".into(),
                measured: format!("{ratio:.2}×"),
                met: ratio <= 1.1,
            });
        }
    }
    out += "\nmodelpipe / Python (lower is better; targets: cold start ≤ 0.5×, MLP warm p50 and p99 ≤ 0.3×):\n\n";
    out += "| model | modelpipe serving | cold start | warm p50 | warm p99 | peak RSS | answers vs tract's reference (max relative difference, modelpipe / Python) |\n";
    out += "|---|---|---:|---:|---:|---:|---|\n";
    out += &ratios;
    out += "\nThe CNNs with the binary tensor extension (input and output as little-endian bytes, base64 through API Gateway), same rounds:\n\n";
    out += "| model | runtime | warm p50 (µs) | warm p99 (µs) | p50 / Python's |\n|---|---|---:|---:|---:|\n";
    out += &binary;
    out
}

async fn measure_ours(
    setup: &Setup,
    model: &BenchModel,
    registry: &Registry,
    registry_dir: &std::path::Path,
    event: &Value,
    side: &mut Side,
) {
    let name: ModelName = model.name.parse().expect("model name");
    publish(registry, &name, 1);
    let function = Function::start(Launch {
        name: "inference",
        program: &setup.bootstrap("inference"),
        args: &[],
        dir: None,
        env: vec![
            ("MODEL_ROOT", registry_dir.display().to_string()),
            ("PRELOAD_MODELS", model.name.to_string()),
            ("RELOAD_CHECK_MS", "100".to_string()),
            // One environment: nothing to spread.
            ("ADOPT_SPREAD_MS", "0".to_string()),
        ],
    })
    .await;
    let (first, last) = side
        .measure(&function, event, warm_invocations(model))
        .await;
    for answer in [first, last] {
        let version = side.check(model, &answer);
        assert_eq!(version, Some(1), "modelpipe answered from another version");
    }

    // The swap: live moves to v2; requests go on until one is answered by v2.
    function.reset_peak();
    publish(registry, &name, 2);
    loop {
        let answer = function.invoke(model.event()).await;
        let (_, version) = parse_answer(answer.body.as_ref().unwrap());
        if version == Some(2) {
            break;
        }
    }
    side.swap_peak_mb.push(function.peak_rss_mb());
}

async fn measure_python(setup: &Setup, model: &BenchModel, event: &Value, side: &mut Side) {
    let function = Function::start(Launch {
        name: "python-handler",
        program: &setup.python,
        args: &["-m", "awslambdaric", "handler.handler"],
        dir: Some(&setup.python_dir),
        env: vec![
            ("MODEL_PATH", model.files[0].display().to_string()),
            ("MODEL_NAME", model.name.to_string()),
            ("THREADS", setup.cpus.to_string()),
            ("PYTHONPATH", setup.python_dir.display().to_string()),
        ],
    })
    .await;
    let (first, last) = side
        .measure(&function, event, warm_invocations(model))
        .await;
    side.check(model, &first);
    side.check(model, &last);
}

/// The floor: a function that answers every event at once, in Rust with lambda_runtime
/// (`empty_function`) or in Python with awslambdaric (`handler.empty`).
async fn measure_empty(setup: &Setup, rust: bool, side: &mut Side) {
    let empty_function = setup.built("empty_function");
    let launch = if rust {
        Launch {
            name: "empty-rust",
            program: &empty_function,
            args: &[],
            dir: None,
            env: vec![],
        }
    } else {
        Launch {
            name: "empty-python",
            program: &setup.python,
            args: &["-m", "awslambdaric", "handler.empty"],
            dir: Some(&setup.python_dir),
            env: vec![
                ("MODEL_PATH", setup.models[0].files[0].display().to_string()),
                ("PYTHONPATH", setup.python_dir.display().to_string()),
            ],
        }
    };
    let function = Function::start(launch).await;
    side.measure(&function, &setup.models[0].event(), 2000)
        .await;
}
