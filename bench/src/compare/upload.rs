//! Upload complete → first answer from the new version: `modelctl dev` (the whole pipeline on
//! one machine: S3 endpoint, validator, publisher, inference) with the stock `aws` CLI as the
//! uploader, RELOAD_CHECK_MS=100. Every cycle uploads a new model (new random weights): a new
//! version is validated, committed, published, noticed and loaded. A client sends a request
//! every 10 ms (binary tensor data) and the clock stops at the first answer naming the version.

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use super::{Setup, Target};
use crate::models::{BenchModel, generate};
use crate::stats::{Rounds, ms};

const RELOAD_CHECK_MS: u64 = 100;

struct Dev(Child);

impl Drop for Dev {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// The model's input as an Open Inference Protocol request with binary tensor data.
fn binary_request(model: &BenchModel) -> (Vec<u8>, usize) {
    let data: Vec<u8> = model.input.iter().flat_map(|x| x.to_le_bytes()).collect();
    let header = serde_json::json!({"inputs": [{
        "name": model.input_name, "shape": model.input_shape, "datatype": "FP32",
        "parameters": {"binary_data_size": data.len()},
    }]})
    .to_string();
    let header_len = header.len();
    let mut body = header.into_bytes();
    body.extend(data);
    (body, header_len)
}

async fn answering_version(
    http: &reqwest::Client,
    url: &str,
    request: &(Vec<u8>, usize),
) -> Option<u64> {
    let response = http
        .post(url)
        .header("content-type", "application/octet-stream")
        .header("inference-header-content-length", request.1.to_string())
        .body(request.0.clone())
        .send()
        .await
        .ok()?;
    if !response.status().is_success() {
        return None;
    }
    let body: serde_json::Value = response.json().await.ok()?;
    body["model_version"].as_str()?.parse().ok()
}

fn upload(s3_port: u16, file: &Path, model: &str) {
    let status = Command::new("aws")
        .args([
            "--endpoint-url",
            &format!("http://127.0.0.1:{s3_port}"),
            "s3",
            "cp",
            "--quiet",
        ])
        .arg(file)
        .arg(format!("s3://models/models/{model}/model.onnx"))
        .env("AWS_ACCESS_KEY_ID", "modelpipe")
        .env("AWS_SECRET_ACCESS_KEY", "modelpipe")
        .env("AWS_DEFAULT_REGION", "us-east-1")
        .status()
        .expect("run the aws CLI");
    assert!(status.success(), "aws s3 cp failed");
}

pub async fn run(setup: &Setup, targets: &mut Vec<Target>) -> String {
    let cycles = setup.upload_cycles;
    let data = setup.work.join("dev");
    let (s3_port, http_port) = (modelpipe_tests::free_port(), modelpipe_tests::free_port());
    let log = std::fs::File::create(setup.logs.join("modelctl-dev.log")).expect("dev log");
    let _dev = Dev(Command::new(setup.built("modelctl"))
        .args(["dev", "--data"])
        .arg(&data)
        .args(["--s3-addr", &format!("127.0.0.1:{s3_port}")])
        .args(["--http-addr", &format!("127.0.0.1:{http_port}")])
        .args(["--reload-check-ms", &RELOAD_CHECK_MS.to_string()])
        .env("RUST_LOG", "warn")
        .stdout(Stdio::null())
        .stderr(log)
        .spawn()
        .expect("start modelctl dev"));
    let http = reqwest::Client::new();
    let base = format!("http://127.0.0.1:{http_port}");
    modelpipe_tests::wait_for("modelctl dev", Duration::from_secs(60), || {
        let (http, url) = (http.clone(), format!("{base}/v2/health/live"));
        async move {
            http.get(url)
                .send()
                .await
                .ok()
                .filter(|r| r.status().is_success())
        }
    })
    .await;

    let mut out = format!(
        "`modelctl dev` (profiling build), `aws s3 cp` (AWS CLI v1), RELOAD_CHECK_MS={RELOAD_CHECK_MS}, \
         {cycles} uploads of new weights per model; ms, median (min–max), and the 90th percentile.\n\n"
    );
    out += "| model | bytes | upload complete → first answer from it | p90 | `aws s3 cp` start → first answer |\n";
    out += "|---|---:|---:|---:|---:|\n";
    for model in &setup.models {
        let url = format!("{base}/v2/models/{}/infer", model.name);
        let request = binary_request(model);
        let files: Vec<_> = (0..cycles)
            .map(|cycle| {
                let path = setup
                    .work
                    .join(format!("upload-{}-{cycle}.onnx", model.name));
                std::fs::write(&path, generate(model.name, 100 + cycle as u32))
                    .expect("model file");
                path
            })
            .collect();
        let (mut after_upload, mut total) = (Rounds::default(), Rounds::default());
        for (cycle, file) in files.iter().enumerate() {
            let version = cycle as u64 + 1;
            let started = Instant::now();
            upload(s3_port, file, model.name);
            let uploaded = Instant::now();
            loop {
                if answering_version(&http, &url, &request).await == Some(version) {
                    break;
                }
                assert!(
                    uploaded.elapsed() < Duration::from_secs(60),
                    "{} v{version} never answered: see {}",
                    model.name,
                    setup.logs.join("modelctl-dev.log").display()
                );
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
            after_upload.push(ms(uploaded.elapsed()));
            total.push(ms(started.elapsed()));
        }
        if model.name == "cnn" {
            let median = after_upload.median();
            targets.push(Target {
                what: format!("upload complete → first answer, {}", model.label),
                goal: format!("≤ 500 ms at RELOAD_CHECK_MS={RELOAD_CHECK_MS}"),
                measured: format!("{median:.0} ms"),
                met: median <= 500.0,
            });
        }
        out += &format!(
            "| {} | {} | {} | {:.0} | {} |\n",
            model.label,
            model.bytes(),
            after_upload.show(0),
            after_upload.quantile(0.9),
            total.show(0)
        );
    }
    out
}
