//! Data capture's cost to callers, measured (figures in BENCHMARKS.md): one client, as a Lambda
//! environment serves (one request at a time, the after-answer work — profiling, encoding,
//! gzip, the object's write — done between requests, off the caller's clock), with capture at
//! 0 %, 10 % and 100 %, interleaved round by round so the machine's noise falls on all three.
//! Also: the memory held (the capture buffer's high-water mark), the after-answer work per
//! request, record and object sizes, and the objects an environment writes per minute.
//!
//! `cargo run --profile profiling -p modelpipe-bench --bin capture_bench [SECONDS_PER_PHASE] [ROUNDS]`

use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use axum::body::Body;
use axum::http::Request;
use modelpipe_bench::stats::quantile;
use modelpipe_config::Config;
use modelpipe_core::ModelName;
use modelpipe_registry::Registry;
use modelpipe_serve::capture::CaptureSink;
use modelpipe_serve::{Inference, SwapPolicy, router};
use modelpipe_testkit::onnx_build::{Mlp, mobilenet_v2};
use modelpipe_tests::serving::{commit, publish};
use serde_json::json;
use tower::ServiceExt;

/// Counts what it is given and keeps nothing: the bench measures the caller, not S3.
#[derive(Default)]
struct Counted {
    objects: AtomicU64,
    bytes: AtomicU64,
}

impl CaptureSink for Counted {
    fn put(
        &self,
        _key: String,
        gzipped: Vec<u8>,
    ) -> Pin<Box<dyn Future<Output = Result<(), String>> + Send + '_>> {
        self.objects.fetch_add(1, Ordering::Relaxed);
        self.bytes
            .fetch_add(gzipped.len() as u64, Ordering::Relaxed);
        Box::pin(async { Ok(()) })
    }
}

/// Distinct binary-tensor bodies (distinct bodies: the share is sampled by the body's hash).
fn bodies(shape: &[usize], n: usize) -> Vec<(bytes::Bytes, usize)> {
    let count: usize = shape.iter().product();
    (0..n)
        .map(|k| {
            let header = json!({"inputs": [{"name": "input", "shape": shape, "datatype": "FP32",
                "parameters": {"binary_data_size": count * 4}}]});
            let mut bytes = serde_json::to_vec(&header).unwrap();
            let header_length = bytes.len();
            bytes.extend((0..count).flat_map(|i| (((i + k) % 97) as f32 * 0.01).to_le_bytes()));
            (bytes.into(), header_length)
        })
        .collect()
}

struct Phase {
    share: f64,
    app: axum::Router,
    inference: Arc<Inference>,
    sink: Arc<Counted>,
    latencies_us: Vec<f64>,
    after_us: Vec<f64>,
    held_max: u64,
}

async fn request(app: &axum::Router, (bytes, header_length): &(bytes::Bytes, usize)) {
    let request = Request::post("/v2/models/m/infer")
        .header("inference-header-content-length", *header_length)
        .body(Body::from(bytes.clone()))
        .unwrap();
    let response = app.clone().oneshot(request).await.unwrap();
    assert!(response.status().is_success(), "{}", response.status());
    axum::body::to_bytes(response.into_body(), usize::MAX)
        .await
        .unwrap();
}

async fn run(name: &str, model_bytes: &[u8], shape: &[usize], seconds: f64, rounds: usize) {
    let model: ModelName = "m".parse().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let registry = Registry::open(dir.path()).unwrap();
    let v1 = commit(&registry, &model, model_bytes);
    publish(&registry, &model, v1);
    let bodies = bodies(shape, 1000);
    let mut phases: Vec<Phase> = [0.0, 0.1, 1.0]
        .into_iter()
        .map(|share| {
            let config =
                Config::from_lookup(|n| (n == "CAPTURE_SHARE").then(|| share.to_string())).unwrap();
            let sink = Arc::new(Counted::default());
            let inference = Arc::new(
                Inference::new(
                    registry.clone(),
                    &config,
                    SwapPolicy::AfterAnswer {
                        offset: Duration::ZERO,
                    },
                )
                .with_capture_sink(sink.clone()),
            );
            Phase {
                share,
                app: router(inference.clone()),
                inference,
                sink,
                latencies_us: Vec::new(),
                after_us: Vec::new(),
                held_max: 0,
            }
        })
        .collect();
    for phase in &phases {
        for body in bodies.iter().take(50) {
            request(&phase.app, body).await;
            phase.inference.after_answer().await;
        }
    }
    let mut next = 0;
    for _ in 0..rounds {
        for phase in &mut phases {
            let until = Instant::now() + Duration::from_secs_f64(seconds);
            while Instant::now() < until {
                let started = Instant::now();
                request(&phase.app, &bodies[next % bodies.len()]).await;
                phase
                    .latencies_us
                    .push(started.elapsed().as_secs_f64() * 1e6);
                next += 1;
                phase.held_max = phase.held_max.max(phase.inference.capture().held_bytes());
                let after = Instant::now();
                phase.inference.after_answer().await;
                phase.after_us.push(after.elapsed().as_secs_f64() * 1e6);
            }
        }
    }
    let baseline_p99 = quantile(&phases[0].latencies_us, 0.99);
    let baseline_p50 = quantile(&phases[0].latencies_us, 0.5);
    for phase in &phases {
        phase
            .inference
            .capture()
            .flush(phase.inference.registry())
            .await;
        let records = phase.inference.capture().written_total();
        let (p50, p99) = (
            quantile(&phase.latencies_us, 0.5),
            quantile(&phase.latencies_us, 0.99),
        );
        let requests = phase.latencies_us.len();
        let busy_s =
            (phase.latencies_us.iter().sum::<f64>() + phase.after_us.iter().sum::<f64>()) / 1e6;
        let objects = phase.sink.objects.load(Ordering::Relaxed);
        let gz = phase.sink.bytes.load(Ordering::Relaxed);
        let sampled = phase.inference.capture().sampled_total();
        // An environment serving back to back: requests a minute, and the objects its records
        // fill (1 MiB uncompressed each, or one a minute by age when fewer).
        let per_minute = requests as f64 / busy_s * 60.0;
        let raw_per_record =
            phase.inference.capture().record_bytes_total() as f64 / sampled.max(1) as f64;
        let objects_per_minute = if sampled == 0 {
            0.0
        } else {
            (per_minute * phase.share * raw_per_record / (1 << 20) as f64).max(1.0)
        };
        println!(
            "{name} capture {:>3} %: {requests} requests, p50 {p50:.1} µs ({:+.1} %), p99 {p99:.1} µs ({:+.1} %); after-answer mean {:.1} µs; sampled {sampled}, written {records} in {objects} objects ({:.0} B a record raw, {:.0} B gzip); buffer high-water {} KiB; {:.0} requests/min/env → {:.2} objects/min/env",
            phase.share * 100.0,
            (p50 / baseline_p50 - 1.0) * 100.0,
            (p99 / baseline_p99 - 1.0) * 100.0,
            phase.after_us.iter().sum::<f64>() / phase.after_us.len() as f64,
            raw_per_record,
            gz as f64 / sampled.max(1) as f64,
            phase.held_max / 1024,
            per_minute,
            objects_per_minute,
        );
    }
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let mut args = std::env::args().skip(1);
    let seconds: f64 = args
        .next()
        .map_or(3.0, |s| s.parse().expect("seconds per phase"));
    let rounds: usize = args.next().map_or(5, |s| s.parse().expect("rounds"));
    run(
        "MLP 16-256-256-4",
        &Mlp::new(&[16, 256, 256, 4], 1).to_bytes(),
        &[1, 16],
        seconds,
        rounds,
    )
    .await;
    run(
        "MobileNetV2-shaped CNN",
        &mobilenet_v2(1),
        &[1, 3, 224, 224],
        seconds,
        rounds,
    )
    .await;
}
