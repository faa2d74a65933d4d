//! A fleet adopting new versions, on emulated Lambda (`modelpipe_tests::lambda_env`: Runtime and
//! Extensions API, each environment frozen between invocations), running the real inference
//! binary on one registry directory (figures in BENCHMARKS.md):
//!
//! 1. a MobileNetV2-shaped CNN, 4 environments, 2 callers: the callers' latency in the windows
//!    in which the fleet adopts a new version against steady, over several moves, and failures;
//! 2. a small model, 16 environments, 2 callers: how long until the fleet is on the new version
//!    and the registry bytes each adoption read per second, with `ADOPT_SPREAD_MS=0` and with a
//!    spread;
//! 3. one environment's cold start (spawn → first answer) with the CNN in ONNX Runtime: from
//!    `model.onnx`, from the graph optimised at ingest, and the Python handler (awslambdaric,
//!    `bench/python/handler.py`, from `bench/.venv`), interleaved;
//! 4. a ~1 GB model (a 16,384 × 16,384 linear layer) in ONNX Runtime: one environment's resident
//!    memory and its peak while it adopts a second version, with a 10,240 MB and a 2,048 MB
//!    function (where the old version is freed before the new one loads).
//!
//! `cargo run -p modelpipe-bench --bin fleet_bench [-- --inference target/debug/inference]`
//! (the binary cargo built last; the figures name it).

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;
use clap::Parser;
use modelpipe_core::ModelName;
use modelpipe_engine::EngineKind;
use modelpipe_registry::Registry;
use modelpipe_testkit::commit::{Compile, commit_checked};
use modelpipe_testkit::onnx_build::{Mlp, mobilenet_v2};
use modelpipe_tests::lambda_env::{Callers, Environment, Fleet, FleetAnswer, Launch, unix_micros};
use modelpipe_tests::serving::{commit_in, publish};
use modelpipe_tests::{http_api_event, venv_onnxruntime_library};
use serde_json::{Value, json};

#[derive(Parser)]
struct Args {
    /// The inference function binary.
    #[arg(long, default_value = "target/debug/inference")]
    inference: PathBuf,
    /// Moves of the CNN's alias (each one a swap window).
    #[arg(long, default_value_t = 4)]
    moves: usize,
    /// Seconds of steady traffic before each move.
    #[arg(long, default_value_t = 6)]
    steady_seconds: u64,
    /// Environments and callers of the CNN's swap windows.
    #[arg(long, default_value_t = 4)]
    environments: usize,
    #[arg(long, default_value_t = 2)]
    callers: usize,
    /// Pin environment n to CPU n % (the machine's CPUs), one engine thread each: as Lambda
    /// gives every environment its own vCPU (meaningful with no more environments than CPUs).
    #[arg(long)]
    pin: bool,
    /// Rounds of the cold-start comparison.
    #[arg(long, default_value_t = 5)]
    cold_rounds: usize,
    /// Sections to run (swap, spread, cold, large); all but large by default.
    #[arg(long, value_delimiter = ',')]
    only: Vec<String>,
}

/// The version that answered, from the API Gateway response (JSON, or the binary tensor
/// extension's JSON header before the tensor bytes, base64 in the response).
fn version_of(answer: &FleetAnswer) -> Option<u64> {
    let response: Value = serde_json::from_slice(answer.answer.body.as_ref().ok()?).ok()?;
    if response["statusCode"] != 200 {
        return None;
    }
    let body = response["body"].as_str()?;
    let payload: Value = if response["isBase64Encoded"] == true {
        let bytes = BASE64.decode(body).ok()?;
        let header: usize = response["headers"]["inference-header-content-length"]
            .as_str()?
            .parse()
            .ok()?;
        serde_json::from_slice(bytes.get(..header)?).ok()?
    } else {
        serde_json::from_str(body).ok()?
    };
    payload["model_version"].as_str()?.parse().ok()
}

/// An API Gateway event carrying `input` with the binary tensor extension, as API Gateway sends
/// a binary body (base64), asking for binary outputs.
fn binary_event(model: &str, shape: &[usize], input: &[f32]) -> Value {
    let header = json!({
        "inputs": [{"name": "input", "shape": shape, "datatype": "FP32",
                    "parameters": {"binary_data_size": input.len() * 4}}],
        "parameters": {"binary_data_output": true},
    })
    .to_string();
    let mut body = header.clone().into_bytes();
    body.extend(input.iter().flat_map(|x| x.to_le_bytes()));
    let mut event = http_api_event("POST", &format!("/v2/models/{model}/infer"), None);
    event["body"] = BASE64.encode(&body).into();
    event["isBase64Encoded"] = true.into();
    event["headers"]["content-type"] = "application/octet-stream".into();
    event["headers"]["inference-header-content-length"] = header.len().to_string().into();
    event
}

fn quantile(mut values: Vec<f64>, q: f64) -> f64 {
    if values.is_empty() {
        return f64::NAN;
    }
    values.sort_by(f64::total_cmp);
    values[((values.len() - 1) as f64 * q).round() as usize]
}

/// Waits until every environment has answered from `version` after `since`.
async fn until_fleet_on(
    fleet: &Fleet,
    answers: &Callers,
    version: u64,
    since: Instant,
) -> Duration {
    loop {
        let on: std::collections::HashSet<usize> = answers
            .lock()
            .unwrap()
            .iter()
            .filter(|(a, at)| *at >= since && version_of(a) == Some(version))
            .map(|(a, _)| a.environment)
            .collect();
        if on.len() == fleet.environments.len() {
            return since.elapsed();
        }
        assert!(
            since.elapsed() < Duration::from_secs(120),
            "the fleet did not reach v{version}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

fn registry_with(
    model: &ModelName,
    versions: &[Vec<u8>],
    engine: EngineKind,
) -> (tempfile::TempDir, Registry, Vec<u64>) {
    let dir = tempfile::tempdir().unwrap();
    let registry = Registry::open(dir.path()).unwrap();
    let numbers = versions
        .iter()
        .map(|bytes| commit_in(&registry, model, bytes, Some(engine)))
        .collect();
    (dir, registry, numbers)
}

fn env(dir: &tempfile::TempDir, model: &str, spread_ms: u64) -> Vec<(&'static str, String)> {
    vec![
        ("MODEL_ROOT", dir.path().display().to_string()),
        ("PRELOAD_MODELS", model.to_string()),
        ("RELOAD_CHECK_MS", "100".to_string()),
        ("ADOPT_SPREAD_MS", spread_ms.to_string()),
        (
            "ORT_DYLIB_PATH",
            venv_onnxruntime_library().display().to_string(),
        ),
        ("RUST_LOG", "info".to_string()),
    ]
}

/// 1: the CNN, 4 environments, 2 callers, `moves` moves between two versions.
async fn swap_window(args: &Args) {
    let model: ModelName = "cnn".parse().unwrap();
    let (dir, registry, v) = registry_with(
        &model,
        &[mobilenet_v2(1), mobilenet_v2(2)],
        EngineKind::Onnxruntime,
    );
    publish(&registry, &model, v[0]);
    let cpus = std::thread::available_parallelism().map_or(1, |n| n.get());
    let mut env = env(&dir, "cnn", 2000);
    if args.pin {
        env.push(("ENGINE_THREADS", "1".to_string()));
    }
    let pinned = args.pin.then_some(cpus);
    let fleet = Fleet::start_on(&args.inference, "cnn", args.environments, &env, pinned).await;
    let input: Vec<f32> = (0..3 * 224 * 224)
        .map(|i| (i % 255) as f32 / 255.0)
        .collect();
    let event = binary_event("cnn", &[1, 3, 224, 224], &input);
    let stop = Arc::new(AtomicBool::new(false));
    let (tasks, answers) = fleet.callers(args.callers, &event, &stop);
    tokio::time::sleep(Duration::from_secs(2)).await; // warm-up, not counted
    answers.lock().unwrap().clear();
    let mut windows = Vec::new();
    let mut fleet_times = Vec::new();
    for m in 0..args.moves {
        tokio::time::sleep(Duration::from_secs(args.steady_seconds)).await;
        let target = v[(m + 1) % 2];
        let moved = Instant::now();
        publish(&registry, &model, target);
        let took = until_fleet_on(&fleet, &answers, target, moved).await;
        fleet_times.push(took.as_secs_f64());
        windows.push((moved, Instant::now()));
    }
    stop.store(true, Ordering::Relaxed);
    for task in tasks {
        task.await.unwrap();
    }
    let answers = std::mem::take(&mut *answers.lock().unwrap());
    let in_window = |at: Instant, latency: Duration| {
        let asked = at - latency;
        windows.iter().any(|(from, to)| asked <= *to && at >= *from)
    };
    let (mut steady, mut swapping, mut failed) = (Vec::new(), Vec::new(), 0);
    for (answer, at) in &answers {
        if version_of(answer).is_none() {
            failed += 1;
        }
        let ms = answer.answer.latency.as_secs_f64() * 1e3;
        if in_window(*at, answer.answer.latency) {
            swapping.push(ms);
        } else {
            steady.push(ms);
        }
    }
    let max = |v: &[f64]| v.iter().copied().fold(0.0, f64::max);
    // Invocations that found every environment busy (two adopting, two answering): in Lambda
    // they would go to a new environment; here they wait, and the wait is not in their latency.
    let queued: Vec<f64> = answers
        .iter()
        .map(|(a, _)| a.queued.as_secs_f64() * 1e3)
        .filter(|&ms| ms > 0.5)
        .collect();
    let adoptions: Vec<f64> = fleet
        .environments
        .iter()
        .flat_map(|e| e.logged("adopted after the answer"))
        .filter_map(|l| l["fields"]["took_ms"].as_f64())
        .collect();
    println!(
        "cnn fleet ({} environments{}, {} callers, binary tensors, {} moves, spread 2 s, RELOAD_CHECK_MS 100, ONNX Runtime, {}): \
         steady p50 {:.1} ms p99 {:.1} ms max {:.1} ms ({} answers) | swap windows p50 {:.1} ms p99 {:.1} ms max {:.1} ms ({} answers) | \
         p99 ratio {:.2}, max ratio {:.2} | failed {failed} | adoptions after the answer: {} (median {:.0} ms) | fleet on the new version after {:.2}–{:.2} s | invocations that found no environment free: {} (waited {} times over 0.5 ms, at most {:.0} ms)",
        args.environments,
        if args.pin {
            " pinned one per CPU, 1 engine thread each"
        } else {
            ""
        },
        args.callers,
        args.moves,
        args.inference.display(),
        quantile(steady.clone(), 0.5),
        quantile(steady.clone(), 0.99),
        max(&steady),
        steady.len(),
        quantile(swapping.clone(), 0.5),
        quantile(swapping.clone(), 0.99),
        max(&swapping),
        swapping.len(),
        quantile(swapping.clone(), 0.99) / quantile(steady.clone(), 0.99),
        max(&swapping) / max(&steady),
        adoptions.len(),
        quantile(adoptions.clone(), 0.5),
        fleet_times.iter().copied().fold(f64::INFINITY, f64::min),
        fleet_times.iter().copied().fold(0.0, f64::max),
        fleet.found_none_free.load(Ordering::Relaxed),
        queued.len(),
        max(&queued),
    );
}

/// 2: a small model on 16 environments: the registry reads of one move, with and without a spread.
async fn spread(args: &Args, spread_ms: u64) {
    let model: ModelName = "mlp".parse().unwrap();
    let versions = [
        Mlp::new(&[64, 512, 512, 8], 1).to_bytes(),
        Mlp::new(&[64, 512, 512, 8], 2).to_bytes(),
    ];
    let (dir, registry, v) = registry_with(&model, &versions, EngineKind::Tract);
    publish(&registry, &model, v[0]);
    let fleet = Fleet::start(&args.inference, "mlp", 16, &env(&dir, "mlp", spread_ms)).await;
    let request = json!({"inputs": [{"name": "input", "shape": [1, 64], "datatype": "FP32", "data": vec![0.5f32; 64]}]});
    let event = http_api_event("POST", "/v2/models/mlp/infer", Some(&request.to_string()));
    let stop = Arc::new(AtomicBool::new(false));
    let (tasks, answers) = fleet.callers(2, &event, &stop);
    tokio::time::sleep(Duration::from_secs(2)).await;
    let moved = Instant::now();
    let moved_us = unix_micros();
    publish(&registry, &model, v[1]);
    let took = until_fleet_on(&fleet, &answers, v[1], moved).await;
    stop.store(true, Ordering::Relaxed);
    for task in tasks {
        task.await.unwrap();
    }
    let failed = answers
        .lock()
        .unwrap()
        .iter()
        .filter(|(a, _)| version_of(a).is_none())
        .count();
    // What one adoption reads: model.onnx (its hash is checked) and the artifact it loads.
    let manifest = registry.manifest(&model, v[1]).unwrap();
    let bytes = manifest.size + manifest.artifact.as_ref().map_or(0, |a| a.size);
    let mut starts: Vec<u64> = fleet
        .environments
        .iter()
        .flat_map(|e| e.logged("adopted after the answer"))
        .filter_map(|l| l["fields"]["started_us"].as_u64())
        .map(|us| us.saturating_sub(moved_us))
        .collect();
    starts.sort_unstable();
    // The most registry bytes begun in any 250 ms, as a rate.
    let peak = starts
        .iter()
        .map(|&s| {
            starts
                .iter()
                .filter(|&&t| t >= s && t < s + 250_000)
                .count()
        })
        .max()
        .unwrap_or(0);
    println!(
        "mlp fleet (16 environments, 2 callers, ADOPT_SPREAD_MS {spread_ms}, RELOAD_CHECK_MS 100): {} adoptions of {:.2} MB, \
         first {:.0} ms and last {:.0} ms after the move; most begun in 250 ms: {peak} ({:.1} MB/s) | whole fleet on v2 after {:.2} s | failed {failed}",
        starts.len(),
        bytes as f64 / 1e6,
        starts.first().copied().unwrap_or(0) as f64 / 1e3,
        starts.last().copied().unwrap_or(0) as f64 / 1e3,
        peak as f64 * bytes as f64 / 1e6 / 0.25,
        took.as_secs_f64(),
    );
}

/// A registry holding `bytes` as v1 of `model`, served by ONNX Runtime, live; with what ingest
/// prepares (`Compile::Yes`: the optimised graph, if worth keeping) or not. Whether it was kept.
fn ort_registry(model: &ModelName, bytes: &[u8], compile: Compile) -> (tempfile::TempDir, bool) {
    let dir = tempfile::tempdir().unwrap();
    let registry = Registry::open(dir.path()).unwrap();
    let v = commit_checked(
        &registry,
        model,
        bytes,
        Some(EngineKind::Onnxruntime),
        compile,
    );
    publish(&registry, model, v);
    let kept = registry.manifest(model, v).unwrap().optimized.is_some();
    (dir, kept)
}

/// Spawn → first answer of one environment launched by `launch`, answering `event`.
async fn cold_start(launch: Launch<'_>, event: &Value) -> f64 {
    let environment = Environment::launch(launch).await;
    environment.until_free(Duration::from_secs(60)).await;
    let answer = environment
        .invoke(event.clone(), Duration::from_secs(60))
        .await
        .expect("an answer");
    let response: Value = serde_json::from_slice(answer.body.as_ref().unwrap()).unwrap();
    assert_eq!(response["statusCode"], 200, "{response}");
    (answer.posted - environment.spawned).as_secs_f64() * 1e3
}

/// 3: spawn → first answer of one environment: the CNN in ONNX Runtime against the Python
/// handler, and a real transformer encoder (torch's dynamo export) from `model.onnx` and from
/// the graph optimised at ingest.
async fn cold(args: &Args) {
    let threads = std::thread::available_parallelism()
        .map_or(1, |n| n.get())
        .to_string();
    let modelpipe_env = |dir: &tempfile::TempDir, model: &str| {
        let mut env = env(dir, model, 0);
        env.push(("ENGINE_THREADS", threads.clone()));
        env
    };
    let modelpipe = |env| Launch {
        program: &args.inference,
        args: &[],
        dir: None,
        name: "cold",
        env,
    };
    let cnn: ModelName = "cnn".parse().unwrap();
    let (cnn_plain, _) = ort_registry(&cnn, &mobilenet_v2(1), Compile::No);
    let (cnn_prepared, cnn_kept) = ort_registry(&cnn, &mobilenet_v2(1), Compile::Yes);
    let encoder: ModelName = "encoder".parse().unwrap();
    let root = modelpipe_tests::workspace_root();
    let encoder_bytes =
        std::fs::read(root.join("tests/corpus/torch_encoder_dynamo/model.onnx")).unwrap();
    let (encoder_plain, _) = ort_registry(&encoder, &encoder_bytes, Compile::No);
    let (encoder_prepared, encoder_kept) = ort_registry(&encoder, &encoder_bytes, Compile::Yes);
    let python = root.join("bench/.venv/bin/python");
    let python_dir = root.join("bench/python");
    let cnn_file = cnn_plain.path().join("cnn/versions/1/model.onnx");
    let input: Vec<f32> = (0..3 * 224 * 224)
        .map(|i| (i % 255) as f32 / 255.0)
        .collect();
    let cnn_event = binary_event("cnn", &[1, 3, 224, 224], &input);
    let tokens = json!({"inputs": [{"name": "tokens", "shape": [3, 5], "datatype": "INT64",
        "data": [23, 47, 3, 14, 34, 18, 1, 23, 29, 18, 8, 19, 13, 49, 15]}]});
    let encoder_event = http_api_event(
        "POST",
        "/v2/models/encoder/infer",
        Some(&tokens.to_string()),
    );
    let python_env = vec![
        ("MODEL_PATH", cnn_file.display().to_string()),
        ("MODEL_NAME", "cnn".to_string()),
        ("THREADS", threads.clone()),
        ("PYTHONPATH", python_dir.display().to_string()),
    ];
    let (cnn_plain_env, cnn_prepared_env) = (
        modelpipe_env(&cnn_plain, "cnn"),
        modelpipe_env(&cnn_prepared, "cnn"),
    );
    let (encoder_plain_env, encoder_prepared_env) = (
        modelpipe_env(&encoder_plain, "encoder"),
        modelpipe_env(&encoder_prepared, "encoder"),
    );
    let mut times: [Vec<f64>; 5] = Default::default();
    for _ in 0..args.cold_rounds {
        times[0].push(cold_start(modelpipe(&cnn_plain_env), &cnn_event).await);
        times[1].push(cold_start(modelpipe(&cnn_prepared_env), &cnn_event).await);
        let python = Launch {
            program: &python,
            args: &["-m", "awslambdaric", "handler.handler"],
            dir: Some(&python_dir),
            name: "cold",
            env: &python_env,
        };
        times[2].push(cold_start(python, &cnn_event).await);
        times[3].push(cold_start(modelpipe(&encoder_plain_env), &encoder_event).await);
        times[4].push(cold_start(modelpipe(&encoder_prepared_env), &encoder_event).await);
    }
    let [
        cnn_ms,
        cnn_prepared_ms,
        python_ms,
        encoder_ms,
        encoder_prepared_ms,
    ] = times.map(|t| quantile(t, 0.5));
    println!(
        "cold start → first answer, ONNX Runtime, {threads} threads, median of {} interleaved rounds ({}): \
         CNN: modelpipe {cnn_ms:.1} ms, as ingest prepares it {cnn_prepared_ms:.1} ms (optimised graph kept: {cnn_kept}), \
         Python handler {python_ms:.1} ms: ratio {:.2} | transformer encoder (torch dynamo export): \
         from model.onnx {encoder_ms:.1} ms, as ingest prepares it {encoder_prepared_ms:.1} ms (optimised graph kept: {encoder_kept}): ratio {:.2}",
        args.cold_rounds,
        args.inference.display(),
        cnn_prepared_ms / python_ms,
        encoder_prepared_ms / encoder_ms,
    );
}

/// 5: warm latency of one environment, the CNN in ONNX Runtime, against the Python handler:
/// event handed out → answer posted, binary tensors, rounds interleaved.
async fn warm(args: &Args) {
    let threads = std::thread::available_parallelism()
        .map_or(1, |n| n.get())
        .to_string();
    let cnn: ModelName = "cnn".parse().unwrap();
    let (dir, _) = ort_registry(&cnn, &mobilenet_v2(1), Compile::No);
    let mut modelpipe_env = env(&dir, "cnn", 0);
    modelpipe_env.push(("ENGINE_THREADS", threads.clone()));
    let root = modelpipe_tests::workspace_root();
    let python = root.join("bench/.venv/bin/python");
    let python_dir = root.join("bench/python");
    let python_env = vec![
        (
            "MODEL_PATH",
            dir.path()
                .join("cnn/versions/1/model.onnx")
                .display()
                .to_string(),
        ),
        ("MODEL_NAME", "cnn".to_string()),
        ("THREADS", threads.clone()),
        ("PYTHONPATH", python_dir.display().to_string()),
    ];
    let input: Vec<f32> = (0..3 * 224 * 224)
        .map(|i| (i % 255) as f32 / 255.0)
        .collect();
    let event = binary_event("cnn", &[1, 3, 224, 224], &input);
    let modelpipe = Environment::launch(Launch {
        program: &args.inference,
        args: &[],
        dir: None,
        name: "warm",
        env: &modelpipe_env,
    })
    .await;
    let python = Environment::launch(Launch {
        program: &python,
        args: &["-m", "awslambdaric", "handler.handler"],
        dir: Some(&python_dir),
        name: "warm",
        env: &python_env,
    })
    .await;
    let mut latency: [Vec<f64>; 2] = Default::default();
    for round in 0..args.cold_rounds * 4 {
        for (environment, times) in [&modelpipe, &python].into_iter().zip(latency.iter_mut()) {
            for _ in 0..25 {
                environment.until_free(Duration::from_secs(60)).await;
                let answer = environment
                    .invoke(event.clone(), Duration::from_secs(60))
                    .await
                    .unwrap();
                if round > 0 {
                    times.push(answer.latency.as_secs_f64() * 1e3);
                }
            }
        }
    }
    let [m, p] = latency;
    println!(
        "warm, CNN in ONNX Runtime, {threads} threads, binary tensors, {} answers each ({}): modelpipe p50 {:.2} ms p99 {:.2} ms | Python handler p50 {:.2} ms p99 {:.2} ms | ratios p50 {:.2} p99 {:.2}",
        m.len(),
        args.inference.display(),
        quantile(m.clone(), 0.5),
        quantile(m.clone(), 0.99),
        quantile(p.clone(), 0.5),
        quantile(p.clone(), 0.99),
        quantile(m.clone(), 0.5) / quantile(p.clone(), 0.5),
        quantile(m.clone(), 0.99) / quantile(p.clone(), 0.99),
    );
}

/// 4: a ~1 GB model adopted by one environment, with memory to hold both versions and without.
async fn large(args: &Args) {
    let model: ModelName = "big".parse().unwrap();
    let width = 16_384;
    let linear = |seed: usize| {
        modelpipe_testkit::onnx_build::LinearSoftmax {
            input: "x".into(),
            output: "y".into(),
            weights: (0..width)
                .map(|i| {
                    (0..width)
                        .map(|o| ((i * 31 + o * 17 + seed) % 97) as f32 * 1e-4)
                        .collect()
                })
                .collect(),
            bias: vec![0.0; width],
            batch: None,
        }
        .to_bytes()
    };
    let dir = tempfile::tempdir().unwrap();
    let registry = Registry::open(dir.path()).unwrap();
    let v: Vec<u64> = [1, 2]
        .map(|seed| {
            let bytes = linear(seed);
            commit_checked(
                &registry,
                &model,
                &bytes,
                Some(EngineKind::Onnxruntime),
                Compile::No,
            )
        })
        .to_vec();
    let size = registry.manifest(&model, v[0]).unwrap().size;
    let request = json!({"inputs": [{"name": "x", "shape": [1, width], "datatype": "FP32", "data": vec![0.5f32; width]}]});
    let event = http_api_event("POST", "/v2/models/big/infer", Some(&request.to_string()));
    for memory_mb in [10_240, 2_048] {
        publish(&registry, &model, v[0]);
        let mut env = env(&dir, "big", 0);
        env.push(("AWS_LAMBDA_FUNCTION_MEMORY_SIZE", memory_mb.to_string()));
        let environment = Environment::launch(Launch {
            program: &args.inference,
            args: &[],
            dir: None,
            name: "large",
            env: &env,
        })
        .await;
        environment.until_free(Duration::from_secs(120)).await;
        let status = |field: &str| {
            let status =
                std::fs::read_to_string(format!("/proc/{}/status", environment.pid())).unwrap();
            let kb: f64 = status
                .lines()
                .find_map(|l| l.strip_prefix(field))
                .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
                .unwrap();
            kb / 1024.0
        };
        let (init_peak, resident) = (status("VmHWM:"), status("VmRSS:"));
        std::fs::write(format!("/proc/{}/clear_refs", environment.pid()), "5").unwrap();
        publish(&registry, &model, v[1]);
        environment
            .invoke(event.clone(), Duration::from_secs(120))
            .await
            .unwrap();
        environment.until_free(Duration::from_secs(120)).await;
        let (peak, after) = (status("VmHWM:"), status("VmRSS:"));
        let answer = environment
            .invoke(event.clone(), Duration::from_secs(120))
            .await
            .unwrap();
        let response: Value = serde_json::from_slice(answer.body.as_ref().unwrap()).unwrap();
        let body: Value = serde_json::from_str(response["body"].as_str().unwrap()).unwrap();
        assert_eq!(body["model_version"], v[1].to_string(), "{body}");
        let freed_first = !environment
            .logged("freeing the old version before loading the new: both would not fit")
            .is_empty();
        println!(
            "~1 GB model ({:.0} MB file, ONNX Runtime), {memory_mb} MB function: init peak {init_peak:.0} MB, resident {resident:.0} MB | \
             adopting v2: peak {peak:.0} MB, resident after {after:.0} MB | freed the old version first: {freed_first}",
            size as f64 / 1e6
        );
    }
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let args = Args::parse();
    let wanted = |section: &str| args.only.is_empty() || args.only.iter().any(|s| s == section);
    if wanted("swap") {
        swap_window(&args).await;
    }
    if wanted("spread") {
        spread(&args, 0).await;
        spread(&args, 3000).await;
    }
    if wanted("cold") {
        cold(&args).await;
    }
    if args.only.iter().any(|s| s == "warm") {
        warm(&args).await;
    }
    if args.only.iter().any(|s| s == "large") {
        large(&args).await;
    }
}
