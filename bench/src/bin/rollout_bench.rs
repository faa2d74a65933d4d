//! Guarded rollouts on the request path, measured (figures in BENCHMARKS.md):
//!
//! 1. the split alone — reading the caller's key and choosing its arm — per request;
//! 2. what a request pays end to end (in-process router, sequential) when a rollout splits the
//!    alias, against the same model with no rollout: the split, the arm's evidence, the headers;
//! 3. shadow's cost to the caller: p50/p99 with one client (as a Lambda environment serves) and
//!    two, no rollout vs every request shadowed on a candidate of the same size (the shadow runs
//!    on a blocking thread after the answer, at most one at a time).
//!
//! `cargo run --profile profiling -p modelpipe-bench --bin rollout_bench [SECONDS_PER_PHASE]`

use std::collections::BTreeMap;
use std::hint::black_box;
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::body::Body;
use axum::http::{HeaderMap, HeaderValue, Request};
use modelpipe_config::Config;
use modelpipe_core::{AliasName, ModelName};
use modelpipe_registry::Registry;
use modelpipe_registry::rollout::actions::{RolloutRequest, apply};
use modelpipe_serve::split::{Split, routing_key};
use modelpipe_serve::{Inference, SwapPolicy, router};
use modelpipe_testkit::onnx_build::{Mlp, mobilenet_v2};
use modelpipe_tests::serving::{commit, publish};
use serde_json::{Map, json};
use tower::ServiceExt;

fn config() -> Config {
    Config::from_lookup(|_| None).unwrap()
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    sorted[((sorted.len() - 1) as f64 * p).round() as usize]
}

fn us(d: Duration) -> f64 {
    d.as_secs_f64() * 1e6
}

/// A registry with `stable` live as v1 and `candidate` as v2 of `model`; with `settings`, a
/// rollout of v2 started.
fn registry(
    model: &ModelName,
    stable: &[u8],
    candidate: &[u8],
    settings: Option<&[(&str, &str)]>,
) -> (tempfile::TempDir, Registry) {
    let dir = tempfile::tempdir().unwrap();
    let registry = Registry::open(dir.path()).unwrap();
    let v1 = commit(&registry, model, stable);
    commit(&registry, model, candidate);
    publish(&registry, model, v1);
    if let Some(settings) = settings {
        let request = RolloutRequest::Start {
            model: model.clone(),
            alias: AliasName::live(),
            candidate: 2,
            plan: "canary".into(),
            settings: settings
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect::<BTreeMap<_, _>>(),
            reason: None,
        };
        apply(&registry, &request, None).unwrap();
    }
    (dir, registry)
}

/// A request body for input `input` of `shape` (made once: binary tensor data).
#[derive(Clone)]
struct Payload {
    bytes: bytes::Bytes,
    header_length: usize,
}

impl Payload {
    fn new(shape: &[usize]) -> Self {
        let count: usize = shape.iter().product();
        let json = json!({"inputs": [{"name": "input", "shape": shape, "datatype": "FP32", "parameters": {"binary_data_size": count * 4}}]});
        let mut bytes = serde_json::to_vec(&json).unwrap();
        let header_length = bytes.len();
        bytes.extend((0..count).flat_map(|i| ((i % 7) as f32 * 0.1).to_le_bytes()));
        Self {
            bytes: bytes.into(),
            header_length,
        }
    }

    /// The request of caller `key`.
    fn request(&self, key: usize) -> Request<Body> {
        Request::post("/v2/models/m/infer")
            .header("routing-key", format!("user-{key}"))
            .header("inference-header-content-length", self.header_length)
            .body(Body::from(self.bytes.clone()))
            .unwrap()
    }
}

async fn answer(app: &axum::Router, request: Request<Body>) {
    let response = app.clone().oneshot(request).await.unwrap();
    assert!(response.status().is_success(), "{}", response.status());
    axum::body::to_bytes(response.into_body(), usize::MAX)
        .await
        .unwrap();
}

/// 1: the key read from a header (or made up) and the arm chosen, per request.
fn split_alone() {
    let model: ModelName = "m".parse().unwrap();
    let (a, b) = (
        Mlp::new(&[16, 32, 4], 1).to_bytes(),
        Mlp::new(&[16, 32, 4], 2).to_bytes(),
    );
    let (_dir, registry) = registry(&model, &a, &b, Some(&[("steps", "50")]));
    let rollout = registry
        .rollout(&model, &AliasName::live())
        .unwrap()
        .unwrap();
    let split = Split {
        rollout: Arc::new(rollout),
        candidate_ready: true,
    };
    let parameters = Map::new();
    let n = 2_000_000;
    let headers: Vec<HeaderMap> = (0..1000)
        .map(|i| {
            let mut h = HeaderMap::new();
            h.insert("content-type", HeaderValue::from_static("application/json"));
            h.insert(
                "routing-key",
                HeaderValue::from_str(&format!("customer-{i:08}")).unwrap(),
            );
            h
        })
        .collect();
    let empty = HeaderMap::new();
    for (what, headers) in [("header key", Some(&headers)), ("no key (random)", None)] {
        let mut best = Duration::MAX;
        for _ in 0..5 {
            let t = Instant::now();
            for i in 0..n {
                let h = headers.map_or(&empty, |h| &h[i % h.len()]);
                let key = routing_key(&split.rollout.sticky_key, h, &parameters);
                black_box(split.route(&key));
            }
            best = best.min(t.elapsed() / n as u32);
        }
        println!(
            "split alone, {what}: {:.0} ns a request",
            best.as_secs_f64() * 1e9
        );
    }
}

/// 2: end to end, sequential, in-process: the same MLP with and without a 50 % rollout.
async fn end_to_end(rounds: usize) {
    let model: ModelName = "m".parse().unwrap();
    let (a, b) = (
        Mlp::new(&[16, 32, 4], 1).to_bytes(),
        Mlp::new(&[16, 32, 4], 2).to_bytes(),
    );
    let (_d1, plain) = registry(&model, &a, &b, None);
    let (_d2, split) = registry(&model, &a, &b, Some(&[("steps", "50")]));
    let apps = [plain, split].map(|r| {
        router(Arc::new(Inference::new(
            r,
            &config(),
            SwapPolicy::AfterAnswer {
                offset: Duration::ZERO,
            },
        )))
    });
    let payload = Payload::new(&[1, 16]);
    for app in &apps {
        for i in 0..200 {
            answer(app, payload.request(i)).await;
        }
    }
    let iterations = 4000;
    let mut medians = [Vec::new(), Vec::new()];
    for _ in 0..rounds {
        for (app, out) in apps.iter().zip(medians.iter_mut()) {
            let t = Instant::now();
            for i in 0..iterations {
                answer(app, payload.request(i)).await;
            }
            out.push(t.elapsed() / iterations as u32);
        }
    }
    let [mut plain, mut split] = medians;
    plain.sort();
    split.sort();
    let (p, s) = (percentile(&plain, 0.5), percentile(&split, 0.5));
    println!(
        "end to end, MLP 16-32-4: no rollout {:.2} µs | 50 % rollout {:.2} µs | difference {:+.2} µs a request",
        us(p),
        us(s),
        us(s) - us(p)
    );
}

/// 3: caller latency with `clients` concurrent clients for `seconds`, with and without every
/// request shadowed.
async fn shadow(
    name: &str,
    stable: Vec<u8>,
    candidate: Vec<u8>,
    shape: &[usize],
    seconds: u64,
    clients: usize,
) {
    let payload = Payload::new(shape);
    let model: ModelName = "m".parse().unwrap();
    let shadow_settings: &[(&str, &str)] = &[
        ("shadow", "100"),
        ("steps", "50"),
        ("bake", "1h"),
        ("min-requests", "1000000000"),
    ];
    for (what, settings) in [
        ("no rollout", None),
        ("100 % shadowed", Some(shadow_settings)),
    ] {
        let (_dir, registry) = registry(&model, &stable, &candidate, settings);
        let inference = Arc::new(Inference::new(
            registry,
            &config(),
            SwapPolicy::AfterAnswer {
                offset: Duration::ZERO,
            },
        ));
        let app = router(inference.clone());
        for i in 0..50 {
            answer(&app, payload.request(i)).await;
        }
        let deadline = Instant::now() + Duration::from_secs(seconds);
        let tasks: Vec<_> = (0..clients)
            .map(|c| {
                let (app, payload) = (app.clone(), payload.clone());
                tokio::spawn(async move {
                    let mut latencies = Vec::new();
                    let mut i = c * 1_000_000;
                    while Instant::now() < deadline {
                        let t = Instant::now();
                        answer(&app, payload.request(i)).await;
                        latencies.push(t.elapsed());
                        i += 1;
                    }
                    latencies
                })
            })
            .collect();
        let mut all = Vec::new();
        for task in tasks {
            all.extend(task.await.unwrap());
        }
        all.sort();
        inference.flush_evidence();
        let runs = inference
            .registry()
            .step_evidence(&model, &AliasName::live(), 1, 0)
            .map(|(e, _)| (e.shadow.runs.requests, e.shadow.skipped))
            .unwrap_or_default();
        println!(
            "shadow {name}, {clients} clients: {what}: {} requests, p50 {:.3} ms, p99 {:.3} ms; shadow runs {}, skipped {}",
            all.len(),
            percentile(&all, 0.5).as_secs_f64() * 1e3,
            percentile(&all, 0.99).as_secs_f64() * 1e3,
            runs.0,
            runs.1
        );
    }
}

#[tokio::main]
async fn main() {
    let seconds: u64 = std::env::args()
        .nth(1)
        .map_or(10, |s| s.parse().expect("SECONDS_PER_PHASE"));
    split_alone();
    end_to_end(7).await;
    let (a, b) = (
        Mlp::new(&[16, 256, 256, 4], 1).to_bytes(),
        Mlp::new(&[16, 256, 256, 4], 2).to_bytes(),
    );
    shadow(
        "MLP 16-256-256-4",
        a.clone(),
        b.clone(),
        &[1, 16],
        seconds,
        2,
    )
    .await;
    let (c, d) = (mobilenet_v2(1), mobilenet_v2(2));
    // One client: a Lambda environment's one request at a time, the shadow run of the previous
    // request still going (as it would resume on the next thaw).
    shadow(
        "MobileNetV2-shaped CNN",
        c.clone(),
        d.clone(),
        &[1, 3, 224, 224],
        seconds,
        1,
    )
    .await;
    shadow(
        "MobileNetV2-shaped CNN",
        c,
        d,
        &[1, 3, 224, 224],
        seconds,
        2,
    )
    .await;
}
