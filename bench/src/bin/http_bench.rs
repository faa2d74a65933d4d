//! The served path over loopback HTTP — the router `modelctl dev` serves, in process here —
//! against the raw engine (the same loaded model's `Engine::run`) and a plain Python
//! `http.server` around ONNX Runtime (`bench/python/http_server.py`, from `bench/.venv`), the
//! same binary-tensor requests from the same client, one at a time, rounds interleaved
//! (figures in BENCHMARKS.md):
//!
//! - a MobileNetV2-shaped CNN served by ONNX Runtime, every vCPU (`ENGINE_THREADS` unset);
//! - a 4→64→64→3 MLP, in the engine ingest chooses.
//!
//! `cargo build --release -p modelpipe-bench --bin http_bench && target/release/http_bench`

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use modelpipe_core::ModelName;
use modelpipe_engine::{EngineKind, Limits};
use modelpipe_registry::Registry;
use modelpipe_serve::LoadedModel;
use modelpipe_testkit::onnx_build::{Mlp, mobilenet_v2};
use modelpipe_tests::serving::{commit_in, publish, serve};
use modelpipe_tests::{free_port, workspace_root};
use serde_json::json;
use tract_onnx::prelude::Tensor;

/// Rounds of 25 requests per side (the first is warm-up, not counted).
const ROUNDS: usize = 9;

fn quantile(mut values: Vec<f64>, q: f64) -> f64 {
    values.sort_by(f64::total_cmp);
    values[((values.len() - 1) as f64 * q).round() as usize]
}

/// A binary-tensor request body and its JSON header's length.
fn body(shape: &[usize], values: &[f32]) -> (Vec<u8>, usize) {
    let header = json!({
        "inputs": [{"name": "input", "shape": shape, "datatype": "FP32",
                    "parameters": {"binary_data_size": values.len() * 4}}],
        "parameters": {"binary_data_output": true}
    });
    let mut bytes = serde_json::to_vec(&header).unwrap();
    let length = bytes.len();
    bytes.extend(values.iter().flat_map(|f| f.to_le_bytes()));
    (bytes, length)
}

struct Python(Child);

impl Drop for Python {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

async fn post(client: &reqwest::Client, url: &str, body: &(Vec<u8>, usize)) -> Duration {
    let started = Instant::now();
    let response = client
        .post(url)
        .header("inference-header-content-length", body.1)
        .body(body.0.clone())
        .send()
        .await
        .unwrap();
    assert!(
        response.status().is_success(),
        "{url}: {}",
        response.status()
    );
    response.bytes().await.unwrap();
    started.elapsed()
}

async fn compare(name: &str, bytes: Vec<u8>, engine: Option<EngineKind>, shape: &[usize]) {
    let model: ModelName = name.parse().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let registry = Registry::open(dir.path()).unwrap();
    let version = commit_in(&registry, &model, &bytes, engine);
    publish(&registry, &model, version);
    let served = serve(&registry, &[("PRELOAD_MODELS", name)]).await;
    let served_url = format!("{served}/v2/models/{name}/infer");
    let raw = LoadedModel::load(&registry, &model, version, &Limits::default()).unwrap();
    let kind = raw.engine.kind();
    let threads = std::thread::available_parallelism().map_or(1, |n| n.get());
    let port = free_port();
    let file = dir
        .path()
        .join(format!("{name}/versions/{version}/model.onnx"));
    let root = workspace_root();
    let _python = Python(
        Command::new(root.join("bench/.venv/bin/python"))
            .arg(root.join("bench/python/http_server.py"))
            .args([
                file.display().to_string(),
                port.to_string(),
                threads.to_string(),
            ])
            .stdout(Stdio::null())
            .spawn()
            .expect("bench/.venv: bench/run.sh installs it"),
    );
    let python_url = format!("http://127.0.0.1:{port}/v2/models/{name}/infer");
    let count: usize = shape.iter().product();
    let values: Vec<f32> = (0..count).map(|i| (i % 255) as f32 / 255.0).collect();
    let request = body(shape, &values);
    let client = reqwest::Client::new();
    let ready = Instant::now();
    while tokio::net::TcpStream::connect(("127.0.0.1", port))
        .await
        .is_err()
    {
        assert!(
            ready.elapsed() < Duration::from_secs(60),
            "the Python server did not start"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let input = Tensor::from_shape(shape, &values).unwrap();
    let mut times: [Vec<f64>; 3] = Default::default();
    for round in 0..ROUNDS {
        for _ in 0..25 {
            let took = post(&client, &served_url, &request).await;
            if round > 0 {
                times[0].push(took.as_secs_f64() * 1e3);
            }
        }
        for _ in 0..25 {
            let took = post(&client, &python_url, &request).await;
            if round > 0 {
                times[1].push(took.as_secs_f64() * 1e3);
            }
        }
        for _ in 0..25 {
            let started = Instant::now();
            raw.engine.run(vec![input.clone()]).unwrap();
            if round > 0 {
                times[2].push(started.elapsed().as_secs_f64() * 1e3);
            }
        }
    }
    let [served, python, raw] = times.map(|t| (quantile(t.clone(), 0.5), quantile(t, 0.99)));
    println!(
        "{name} ({kind}, {threads} threads, binary tensors over loopback HTTP, {} requests each): \
         served p50 {:.3} ms p99 {:.3} ms | Python http.server p50 {:.3} ms p99 {:.3} ms | raw engine p50 {:.3} ms p99 {:.3} ms | \
         served/Python p50 {:.2} p99 {:.2} | served over raw p50 +{:.3} ms (+{:.1} %)",
        (ROUNDS - 1) * 25,
        served.0,
        served.1,
        python.0,
        python.1,
        raw.0,
        raw.1,
        served.0 / python.0,
        served.1 / python.1,
        served.0 - raw.0,
        (served.0 / raw.0 - 1.0) * 100.0,
    );
}

#[tokio::main]
async fn main() {
    modelpipe_engine::use_threads(None);
    compare(
        "cnn",
        mobilenet_v2(1),
        Some(EngineKind::Onnxruntime),
        &[1, 3, 224, 224],
    )
    .await;
    compare(
        "mlp",
        Mlp::new(&[4, 64, 64, 3], 1).to_bytes(),
        None,
        &[1, 4],
    )
    .await;
}
