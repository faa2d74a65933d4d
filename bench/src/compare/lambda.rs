//! Cold start, warm latency and memory of the inference function against the Python handler,
//! both driven through the same Runtime API endpoint with the same API Gateway events:
//! - cold start: process spawned → first answer received (modelpipe preloads the model at init;
//!   Python imports onnxruntime and numpy and creates the session at import);
//! - warm: event handed out → answer received, what Lambda bills;
//! - peak RSS with the model loaded and answering, and (modelpipe) while `live` moves to another
//!   version and the request that notices it loads it.

use modelpipe::ModelName;
use modelpipe_tests::serving::publish;

use super::{Setup, Target};
use crate::function::{Function, Launch};
use crate::models::{BenchModel, parse_answer};
use crate::stats::{Rounds, quantile, us};

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

fn warm_invocations(model: &BenchModel) -> usize {
    if model.name == "mlp" { 2000 } else { 40 }
}

pub async fn run(setup: &Setup, targets: &mut Vec<Target>) -> String {
    let mut out = String::new();
    out += &format!(
        "Both runtimes answer the same API Gateway HTTP API events (Open Inference Protocol JSON) \
         from the same Runtime API endpoint, {threads} compute thread(s) each; {rounds} rounds, \
         the two runtimes interleaved; each cell is the median over rounds (min–max). Warm \
         latency per round: {mlp} MLP / {cnn} CNN invocations. The first two rows are the floor: \
         a function that answers every event at once in each runtime (the Python one still \
         imports onnxruntime and builds the MLP's session at import, as the handler module does), \
         i.e. the Runtime API round trip over loopback that both pay before any work.\n\n",
        threads = setup.threads,
        rounds = setup.rounds,
        mlp = warm_invocations(&setup.models[0]),
        cnn = warm_invocations(&setup.models[1]),
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
        out += &format!(
            "| none: a handler that answers at once | {runtime} | {} | {} | {} | {} | {} | |\n",
            side.init_ms.show(1),
            side.cold_ms.show(1),
            side.p50_us.show(0),
            side.p99_us.show(0),
            side.peak_mb.show(1),
        );
    }
    let mut ratios = String::new();
    for model in &setup.models {
        let (mut ours, mut python) = (Side::default(), Side::default());
        for round in 0..setup.rounds {
            let python_first = round % 2 == 1;
            if python_first {
                measure_python(setup, model, &mut python).await;
            }
            measure_ours(setup, model, &mut ours).await;
            if !python_first {
                measure_python(setup, model, &mut python).await;
            }
        }
        out += &format!(
            "| {} | modelpipe | {} | {} | {} | {} | {} | {} |\n",
            model.label,
            ours.init_ms.show(1),
            ours.cold_ms.show(1),
            ours.p50_us.show(0),
            ours.p99_us.show(0),
            ours.peak_mb.show(1),
            ours.swap_peak_mb.show(1),
        );
        out += &format!(
            "| {} | Python + onnxruntime | {} | {} | {} | {} | {} | n/a: a new model is a redeploy (a cold start) |\n",
            model.label,
            python.init_ms.show(1),
            python.cold_ms.show(1),
            python.p50_us.show(0),
            python.p99_us.show(0),
            python.peak_mb.show(1),
        );
        let cold = ours.cold_ms.ratio_to(&python.cold_ms);
        targets.push(Target {
            what: format!("cold start → first answer, {}", model.label),
            goal: "≤ 0.5× Python".into(),
            measured: format!("{cold:.2}×"),
            met: cold <= 0.5,
        });
        if model.name == "mlp" {
            for (label, ours, python) in [
                ("p50", &ours.p50_us, &python.p50_us),
                ("p99", &ours.p99_us, &python.p99_us),
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
        ratios += &format!(
            "| {} | {:.2}× | {:.2}× | {:.2}× | {:.2}× | {:.2e} / {:.2e} |\n",
            model.label,
            ours.cold_ms.ratio_to(&python.cold_ms),
            ours.p50_us.ratio_to(&python.p50_us),
            ours.p99_us.ratio_to(&python.p99_us),
            ours.peak_mb.ratio_to(&python.peak_mb),
            ours.worst_difference,
            python.worst_difference,
        );
    }
    out += "\nmodelpipe / Python (lower is better; targets: cold start ≤ 0.5×, MLP warm p50 and p99 ≤ 0.3×):\n\n";
    out += "| model | cold start | warm p50 | warm p99 | peak RSS | answers vs tract's reference (max relative difference, modelpipe / Python) |\n";
    out += "|---|---:|---:|---:|---:|---|\n";
    out += &ratios;
    out
}

async fn measure_ours(setup: &Setup, model: &BenchModel, side: &mut Side) {
    let name: ModelName = model.name.parse().expect("model name");
    publish(&setup.registry, &name, 1);
    let function = Function::start(
        Launch {
            name: "inference",
            program: &setup.bootstrap("inference"),
            args: &[],
            dir: None,
            env: vec![
                ("MODEL_ROOT", setup.registry_dir.display().to_string()),
                ("PRELOAD_MODELS", model.name.to_string()),
                ("RELOAD_CHECK_MS", "100".to_string()),
            ],
        },
        &setup.logs,
    )
    .await;
    let first = function.invoke(model.event()).await;
    side.cold_ms
        .push((first.received - function.spawned).as_secs_f64() * 1e3);
    side.init_ms
        .push(function.init_time().await.as_secs_f64() * 1e3);
    let check = |body: &[u8], expected_version: u64| {
        let (output, version) = parse_answer(body);
        assert_eq!(
            version,
            Some(expected_version),
            "modelpipe answered from another version"
        );
        output
    };
    let output = check(first.body.as_ref().unwrap(), 1);
    side.worst_difference = side.worst_difference.max(model.difference(&output));
    let durations = warm(&function, model).await;
    side.p50_us.push(quantile(&durations, 0.5));
    side.p99_us.push(quantile(&durations, 0.99));
    side.peak_mb.push(function.peak_rss_mb());

    // The swap: live moves to v2; requests go on until one is answered by v2.
    function.reset_peak();
    publish(&setup.registry, &name, 2);
    loop {
        let answer = function.invoke(model.event()).await;
        let (_, version) = parse_answer(answer.body.as_ref().unwrap());
        if version == Some(2) {
            break;
        }
    }
    side.swap_peak_mb.push(function.peak_rss_mb());
}

async fn measure_python(setup: &Setup, model: &BenchModel, side: &mut Side) {
    let function = Function::start(
        Launch {
            name: "python-handler",
            program: &setup.python,
            args: &["-m", "awslambdaric", "handler.handler"],
            dir: Some(&setup.python_dir),
            env: vec![
                ("MODEL_PATH", model.files[0].display().to_string()),
                ("MODEL_NAME", model.name.to_string()),
                ("THREADS", setup.threads.to_string()),
                ("PYTHONPATH", setup.python_dir.display().to_string()),
            ],
        },
        &setup.logs,
    )
    .await;
    let first = function.invoke(model.event()).await;
    side.cold_ms
        .push((first.received - function.spawned).as_secs_f64() * 1e3);
    side.init_ms
        .push(function.init_time().await.as_secs_f64() * 1e3);
    let (output, _) = parse_answer(first.body.as_ref().unwrap());
    side.worst_difference = side.worst_difference.max(model.difference(&output));
    let durations = warm(&function, model).await;
    side.p50_us.push(quantile(&durations, 0.5));
    side.p99_us.push(quantile(&durations, 0.99));
    side.peak_mb.push(function.peak_rss_mb());
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
    let function = Function::start(launch, &setup.logs).await;
    let event = setup.models[0].event();
    let first = function.invoke(event.clone()).await;
    side.cold_ms
        .push((first.received - function.spawned).as_secs_f64() * 1e3);
    side.init_ms
        .push(function.init_time().await.as_secs_f64() * 1e3);
    let mut durations = Vec::new();
    for _ in 0..2000 {
        durations.push(us(function.invoke(event.clone()).await.duration));
    }
    side.p50_us.push(quantile(&durations, 0.5));
    side.p99_us.push(quantile(&durations, 0.99));
    side.peak_mb.push(function.peak_rss_mb());
}

/// Warm invocations' durations in µs; the last answer is checked against the reference.
async fn warm(function: &Function, model: &BenchModel) -> Vec<f64> {
    let event = model.event();
    let mut durations = Vec::new();
    let mut last = None;
    for _ in 0..warm_invocations(model) {
        let answer = function.invoke(event.clone()).await;
        durations.push(us(answer.duration));
        last = Some(answer);
    }
    let (output, _) = parse_answer(last.expect("invocations").body.as_ref().unwrap());
    assert!(
        model.difference(&output) < 1e-3,
        "{}: a warm answer differs from the reference",
        model.name
    );
    durations
}
