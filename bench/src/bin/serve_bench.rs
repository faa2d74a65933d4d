//! The inference path, measured (figures in BENCHMARKS.md):
//!
//! 1. handler overhead over raw tract — the router answering in-process (body parsing, tensor
//!    decoding, the blocking-pool hop, encoding) against `Engine::run` alone, for a small MLP and
//!    a MobileNetV2-shaped CNN, JSON and binary bodies, medians of interleaved rounds;
//! 2. tract on 1 thread vs every core (`multithread-mm`);
//! 3. p50/p99 over a local HTTP port with concurrent clients, steady vs while versions swap;
//! 4. what the request that notices an alias move pays under the Lambda (after-answer) policy,
//!    and the adoption after its answer;
//! 5. peak RSS during a swap vs with one model resident.
//!
//! `cargo run --profile profiling -p modelpipe-bench --bin serve_bench [SECONDS_PER_PHASE]`

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use axum::body::Body;
use axum::http::Request;
use modelpipe_config::Config;
use modelpipe_core::ModelName;
use modelpipe_engine::{Engine, use_threads};
use modelpipe_registry::Registry;
use modelpipe_serve::{Inference, SwapPolicy, router};
use modelpipe_testkit::onnx_build::{Mlp, mobilenet_v2};
use modelpipe_tests::serving::{commit, publish};
use serde_json::json;
use tower::ServiceExt;
use tract_onnx::prelude::{Tensor, tract_ndarray};

fn config(env: &[(&str, &str)]) -> Config {
    Config::from_lookup(|n| {
        env.iter()
            .find(|(k, _)| *k == n)
            .map(|(_, v)| v.to_string())
    })
    .unwrap()
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    sorted[((sorted.len() - 1) as f64 * p).round() as usize]
}

fn median(mut samples: Vec<Duration>) -> Duration {
    samples.sort();
    percentile(&samples, 0.5)
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

/// A request body for `input` of `shape`, JSON or binary; returns (body, header length).
fn body(shape: &[usize], values: &[f32], binary: bool) -> (Vec<u8>, Option<usize>) {
    if !binary {
        let json = json!({"inputs": [{"name": "input", "shape": shape, "datatype": "FP32", "data": values}]});
        return (serde_json::to_vec(&json).unwrap(), None);
    }
    let json = json!({
        "inputs": [{"name": "input", "shape": shape, "datatype": "FP32", "parameters": {"binary_data_size": values.len() * 4}}],
        "parameters": {"binary_data_output": true}
    });
    let mut bytes = serde_json::to_vec(&json).unwrap();
    let length = bytes.len();
    bytes.extend(values.iter().flat_map(|f| f.to_le_bytes()));
    (bytes, Some(length))
}

fn request(uri: &str, body: &(Vec<u8>, Option<usize>)) -> Request<Body> {
    let mut builder = Request::post(uri);
    if let Some(length) = body.1 {
        builder = builder.header("inference-header-content-length", length);
    }
    builder.body(Body::from(body.0.clone())).unwrap()
}

/// A temporary registry holding `models` as versions 1, 2, ... of `name`, the first one live.
struct Fixture {
    _dir: tempfile::TempDir,
    registry: Registry,
    model: ModelName,
    versions: Vec<u64>,
}

fn fixture(name: &str, models: &[Vec<u8>]) -> Fixture {
    let dir = tempfile::tempdir().unwrap();
    let registry = Registry::open(dir.path()).unwrap();
    let model: ModelName = name.parse().unwrap();
    let versions: Vec<u64> = models
        .iter()
        .map(|b| commit(&registry, &model, b))
        .collect();
    publish(&registry, &model, versions[0]);
    Fixture {
        _dir: dir,
        registry,
        model,
        versions,
    }
}

/// 1 and 2: overhead of the handler over tract, and tract's thread count.
async fn overhead(name: &str, bytes: Vec<u8>, shape: &[usize], rounds: usize) {
    let Fixture {
        _dir,
        registry,
        model,
        versions,
    } = fixture(name, &[bytes]);
    let v = versions[0];
    let app = router(Arc::new(Inference::new(
        registry.clone(),
        &config(&[]),
        SwapPolicy::Background,
    )));
    let engine = Engine::load(&registry.model_file(&model, v).unwrap()).unwrap();
    let count: usize = shape.iter().product();
    let values: Vec<f32> = (0..count).map(|i| ((i % 255) as f32) / 255.0).collect();
    let tensor =
        Tensor::from(tract_ndarray::ArrayD::from_shape_vec(shape, values.clone()).unwrap());
    let uri = format!("/v2/models/{name}/infer");
    let bodies = [body(shape, &values, false), body(shape, &values, true)];
    let (mut raw, mut json_t, mut binary_t) = (Vec::new(), Vec::new(), Vec::new());
    let iterations = if count > 1000 { 5 } else { 2000 };
    for round in 0..rounds + 2 {
        let t = Instant::now();
        for _ in 0..iterations {
            engine.run(vec![tensor.clone()]).unwrap();
        }
        let r = t.elapsed() / iterations as u32;
        let handler = |i: usize| {
            let app = app.clone();
            let req = &bodies[i];
            let uri = uri.clone();
            async move {
                let t = Instant::now();
                for _ in 0..iterations {
                    let response = app.clone().oneshot(request(&uri, req)).await.unwrap();
                    assert!(response.status().is_success());
                    axum::body::to_bytes(response.into_body(), usize::MAX)
                        .await
                        .unwrap();
                }
                t.elapsed() / iterations as u32
            }
        };
        let j = handler(0).await;
        let b = handler(1).await;
        if round >= 2 {
            raw.push(r);
            json_t.push(j);
            binary_t.push(b);
        }
    }
    let (raw, json_t, binary_t) = (median(raw), median(json_t), median(binary_t));
    let over = |h: Duration| (h.as_secs_f64() / raw.as_secs_f64() - 1.0) * 100.0;
    println!(
        "overhead {name} {shape:?}: tract {:.4} ms | handler JSON {:.4} ms (+{:.1} %) | handler binary {:.4} ms (+{:.1} %)",
        ms(raw),
        ms(json_t),
        over(json_t),
        ms(binary_t),
        over(binary_t)
    );
}

fn threads(bytes: &[u8], shape: &[usize], rounds: usize) {
    let file = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(file.path(), bytes).unwrap();
    let engine = Engine::load(file.path()).unwrap();
    let tensor = Tensor::from(tract_ndarray::ArrayD::<f32>::zeros(shape));
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    let (mut one, mut all) = (Vec::new(), Vec::new());
    for _ in 0..rounds {
        for (n, out) in [(1, &mut one), (cores, &mut all)] {
            use_threads(Some(n));
            let t = Instant::now();
            for _ in 0..10 {
                engine.run(vec![tensor.clone()]).unwrap();
            }
            out.push(t.elapsed() / 10);
        }
    }
    use_threads(Some(1));
    let (one, all) = (median(one), median(all));
    println!(
        "threads mobilenet: 1 thread {:.2} ms | {cores} threads {:.2} ms ({:.2}x)",
        ms(one),
        ms(all),
        one.as_secs_f64() / all.as_secs_f64()
    );
}

/// 3: latency over HTTP with `clients` concurrent clients, steady, then while swapping.
async fn swaps(seconds: u64, clients: usize, swap_every: Duration) {
    let Fixture {
        _dir,
        registry,
        model,
        versions,
    } = fixture("cnn", &[mobilenet_v2(1), mobilenet_v2(2)]);
    let inference = Arc::new(Inference::new(
        registry.clone(),
        &config(&[("RELOAD_CHECK_MS", "50")]),
        SwapPolicy::Background,
    ));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!(
        "http://{}/v2/models/cnn/infer",
        listener.local_addr().unwrap()
    );
    tokio::spawn(async move { axum::serve(listener, router(inference)).await.unwrap() });
    let values: Vec<f32> = (0..3 * 224 * 224).map(|i| (i % 7) as f32 / 7.0).collect();
    let (payload, length) = body(&[1, 3, 224, 224], &values, true);
    let http = reqwest::Client::new();
    let send = || {
        http.post(&url)
            .header("inference-header-content-length", length.unwrap())
            .body(payload.clone())
            .send()
    };
    send().await.unwrap();
    let phase = |swapping: bool| {
        let stop = Arc::new(AtomicBool::new(false));
        let tasks: Vec<_> = (0..clients)
            .map(|_| {
                let (stop, http, url, payload) =
                    (stop.clone(), http.clone(), url.clone(), payload.clone());
                tokio::spawn(async move {
                    let mut latencies = Vec::new();
                    while !stop.load(Ordering::Relaxed) {
                        let t = Instant::now();
                        let r = http
                            .post(&url)
                            .header("inference-header-content-length", length.unwrap())
                            .body(payload.clone())
                            .send()
                            .await
                            .unwrap();
                        assert!(r.status().is_success());
                        r.bytes().await.unwrap();
                        latencies.push(t.elapsed());
                    }
                    latencies
                })
            })
            .collect();
        let (registry, model, versions) = (registry.clone(), model.clone(), versions.clone());
        async move {
            let started = Instant::now();
            let mut swaps = 0;
            while started.elapsed() < Duration::from_secs(seconds) {
                tokio::time::sleep(swap_every.min(Duration::from_secs(seconds))).await;
                if swapping {
                    swaps += 1;
                    publish(&registry, &model, versions[swaps % 2]);
                }
            }
            stop.store(true, Ordering::Relaxed);
            let mut all = Vec::new();
            for t in tasks {
                all.extend(t.await.unwrap());
            }
            all.sort();
            (all, swaps)
        }
    };
    let (steady, _) = phase(false).await;
    let (swapping, swaps) = phase(true).await;
    let (s50, s99) = (percentile(&steady, 0.5), percentile(&steady, 0.99));
    let (w50, w99) = (percentile(&swapping, 0.5), percentile(&swapping, 0.99));
    println!(
        "swaps mobilenet, {clients} clients, HTTP binary: steady p50 {:.1} ms p99 {:.1} ms ({} requests) | {swaps} swaps: p50 {:.1} ms p99 {:.1} ms ({} requests) | p99 ratio {:.2}",
        ms(s50),
        ms(s99),
        steady.len(),
        ms(w50),
        ms(w99),
        swapping.len(),
        w99.as_secs_f64() / s99.as_secs_f64()
    );
}

/// 4: under the Lambda policy, the request that notices a move (answered by the version in
/// memory) vs a steady one, and the adoption that follows the answer.
async fn after_answer_cost(name: &str, versions: [Vec<u8>; 2], shape: &[usize]) {
    let Fixture {
        _dir,
        registry,
        model,
        versions: v,
    } = fixture(name, &versions);
    let inference = Arc::new(Inference::new(
        registry.clone(),
        &config(&[("RELOAD_CHECK_MS", "0")]),
        SwapPolicy::AfterAnswer {
            offset: Duration::ZERO,
        },
    ));
    let app = router(inference.clone());
    let count: usize = shape.iter().product();
    let b = body(shape, &vec![0.5; count], true);
    let uri = format!("/v2/models/{name}/infer");
    let call = || async {
        let t = Instant::now();
        let response = app.clone().oneshot(request(&uri, &b)).await.unwrap();
        axum::body::to_bytes(response.into_body(), usize::MAX)
            .await
            .unwrap();
        t.elapsed()
    };
    call().await;
    let (mut steady, mut noticing, mut adopting) = (Vec::new(), Vec::new(), Vec::new());
    for i in 0..6 {
        steady.push(call().await);
        publish(&registry, &model, v[(i + 1) % 2]);
        noticing.push(call().await);
        let t = Instant::now();
        assert_eq!(inference.adopt().await.len(), 1, "the move is adopted");
        adopting.push(t.elapsed());
    }
    println!(
        "after-answer swap {name}: steady request {:.2} ms | request that notices the move {:.2} ms | adoption after its answer {:.1} ms",
        ms(median(steady)),
        ms(median(noticing)),
        ms(median(adopting))
    );
}

fn rss_kib(field: &str) -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    status
        .lines()
        .find(|l| l.starts_with(field))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse().ok())
        .unwrap()
}

/// 5: resident memory with one model, and its peak while a second version is loaded and swapped in.
async fn memory() {
    let Fixture {
        _dir,
        registry,
        model,
        versions: v,
    } = fixture("cnn", &[mobilenet_v2(1), mobilenet_v2(2)]);
    let inference = Arc::new(Inference::new(
        registry.clone(),
        &config(&[("RELOAD_CHECK_MS", "0")]),
        SwapPolicy::AfterAnswer {
            offset: Duration::ZERO,
        },
    ));
    modelpipe_serve::loaded::release_freed_memory();
    let before = rss_kib("VmRSS:");
    inference.live(&model).await.unwrap();
    let one = rss_kib("VmRSS:");
    publish(&registry, &model, v[1]);
    std::fs::write("/proc/self/clear_refs", "5").unwrap(); // resets VmHWM to the current RSS
    inference.live(&model).await.unwrap(); // notices the move
    inference.adopt().await; // what the function does after that answer
    let swapped = inference.live(&model).await.unwrap();
    assert_eq!(swapped.version(), v[1]);
    drop(swapped);
    let peak = rss_kib("VmHWM:");
    let after = rss_kib("VmRSS:");
    let (one, peak, after) = (
        one.saturating_sub(before),
        peak.saturating_sub(before),
        after.saturating_sub(before),
    );
    let mb = |kib: u64| kib as f64 / 1024.0;
    println!(
        "memory mobilenet (14 MB file), RSS over the {:.1} MB before any load: one model +{:.1} MB | peak during a swap +{:.1} MB ({:.2}x one model) | after the swap +{:.1} MB",
        mb(before),
        mb(one),
        mb(peak),
        peak as f64 / one as f64,
        mb(after)
    );
}

#[tokio::main(flavor = "multi_thread")]
async fn main() {
    let seconds: u64 = std::env::args()
        .nth(1)
        .map_or(10, |s| s.parse().expect("seconds"));
    memory().await;
    let mlp = Mlp::new(&[4, 64, 64, 3], 1).to_bytes();
    overhead("mlp", mlp.clone(), &[1, 4], 7).await;
    overhead("mlp", mlp, &[64, 4], 7).await;
    overhead("mobilenet", mobilenet_v2(1), &[1, 3, 224, 224], 7).await;
    threads(&mobilenet_v2(1), &[1, 3, 224, 224], 7);
    after_answer_cost(
        "mlp",
        [
            Mlp::new(&[4, 64, 64, 3], 1).to_bytes(),
            Mlp::new(&[4, 64, 64, 3], 2).to_bytes(),
        ],
        &[1, 4],
    )
    .await;
    after_answer_cost(
        "mobilenet",
        [mobilenet_v2(1), mobilenet_v2(2)],
        &[1, 3, 224, 224],
    )
    .await;
    for threads in [
        1,
        std::thread::available_parallelism().map_or(1, |n| n.get()),
    ] {
        use_threads(Some(threads));
        println!("(tract on {threads} thread(s))");
        swaps(seconds, 4, Duration::from_millis(1000)).await;
    }
}
