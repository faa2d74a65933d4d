//! `modelctl demo`: the lifecycle end to end on the example models, through the S3 protocol and
//! the inference API only (rollback and the rollout through the publisher logic, as `modelctl
//! rollback` and `modelctl rollout start` do).
//! Each step checks its outcome; the first that fails ends the demo with its name.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use aws_sdk_s3::primitives::ByteStream;
use serde_json::{Value, json};

use modelpipe_registry::rollout::RolloutState;
use modelpipe_registry::rollout::actions::{self as rollout, RolloutAnswer, RolloutRequest};

use crate::dev::{BUCKET, DevOptions, DevStack, s3_client};

pub const IRIS_V1: &[u8] = include_bytes!("../../examples/models/iris-v1.onnx");
pub const IRIS_V2: &[u8] = include_bytes!("../../examples/models/iris-v2.onnx");
const KEY: &str = "models/iris/model.onnx";
const ROW: [f32; 4] = [5.9, 3.0, 5.1, 1.8];

struct Demo {
    s3: aws_sdk_s3::Client,
    http: reqwest::Client,
    base: String,
    rows: Vec<(String, String)>,
}

fn step_failed(step: &str, why: impl std::fmt::Display) -> String {
    format!("step '{step}' failed: {why}")
}

impl Demo {
    async fn upload(&self, step: &str, bytes: &[u8]) -> Result<Instant, String> {
        let started = Instant::now();
        self.s3
            .put_object()
            .bucket(BUCKET)
            .key(KEY)
            .body(ByteStream::from(bytes.to_vec()))
            .send()
            .await
            .map_err(|e| step_failed(step, aws_sdk_s3::error::DisplayErrorContext(e)))?;
        Ok(started)
    }

    async fn predict(&self) -> Result<(String, Vec<f64>), String> {
        self.predict_as(None)
            .await
            .map(|(version, p, _)| (version, p))
    }

    /// A prediction for the caller `key` (its `routing-key`): version, probabilities, and the
    /// arm of a rollout that routed it.
    async fn predict_as(
        &self,
        key: Option<&str>,
    ) -> Result<(String, Vec<f64>, Option<String>), String> {
        let body = json!({"inputs": [{"name": "input", "shape": [1, 4], "datatype": "FP32", "data": ROW}]});
        let mut request = self
            .http
            .post(format!("{}/v2/models/iris/infer", self.base))
            .json(&body);
        if let Some(key) = key {
            request = request.header("routing-key", key);
        }
        let response = request.send().await.map_err(|e| e.to_string())?;
        let arm = response
            .headers()
            .get("modelpipe-arm")
            .and_then(|v| v.to_str().ok())
            .map(str::to_string);
        let status = response.status();
        let answer: Value = response.json().await.map_err(|e| e.to_string())?;
        if !status.is_success() {
            return Err(format!("HTTP {status}: {answer}"));
        }
        let probabilities = answer["outputs"][0]["data"]
            .as_array()
            .map(|a| a.iter().filter_map(Value::as_f64).collect())
            .unwrap_or_default();
        Ok((
            answer["model_version"]
                .as_str()
                .unwrap_or_default()
                .to_string(),
            probabilities,
            arm,
        ))
    }

    /// Polls predictions until `version` answers; returns its probabilities.
    async fn wait_for_version(&self, step: &str, version: &str) -> Result<Vec<f64>, String> {
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            if let Ok((answered, probabilities)) = self.predict().await
                && answered == version
            {
                return Ok(probabilities);
            }
            if Instant::now() > deadline {
                return Err(step_failed(
                    step,
                    format!("v{version} did not answer within 60 s"),
                ));
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    async fn tags(&self) -> Vec<(String, String)> {
        match self
            .s3
            .get_object_tagging()
            .bucket(BUCKET)
            .key(KEY)
            .send()
            .await
        {
            Ok(tagging) => tagging
                .tag_set()
                .iter()
                .map(|t| (t.key().to_string(), t.value().to_string()))
                .collect(),
            Err(_) => Vec::new(),
        }
    }

    fn record(&mut self, step: &str, result: String) {
        println!("✔ {step}: {result}");
        self.rows.push((step.to_string(), result));
    }
}

fn fmt_probabilities(p: &[f64]) -> String {
    let parts: Vec<String> = p.iter().map(|x| format!("{x:.3}")).collect();
    format!("[{}]", parts.join(", "))
}

pub async fn run() -> Result<(), String> {
    let data = tempfile::tempdir().map_err(|e| e.to_string())?;
    let loopback = |port| SocketAddr::from(([127, 0, 0, 1], port));
    let stack = DevStack::start(DevOptions {
        data: data.path().to_path_buf(),
        s3_addr: loopback(0),
        http_addr: loopback(0),
        reload_check: Duration::from_millis(100),
        rollout_tick: Duration::from_secs(1),
    })
    .await
    .map_err(|e| step_failed("start the stack", e))?;
    println!(
        "modelpipe demo: S3 endpoint http://{}  inference http://{}  (RELOAD_CHECK_MS=100)\n",
        stack.s3_addr, stack.http_addr
    );
    let mut demo = Demo {
        s3: s3_client(stack.s3_addr).await,
        http: reqwest::Client::new(),
        base: format!("http://{}", stack.http_addr),
        rows: Vec::new(),
    };
    let result = steps(&mut demo, &stack).await;
    stack.stop().await;
    result?;
    println!("\n{:<34} result", "step");
    for (step, result) in &demo.rows {
        println!("{step:<34} {result}");
    }
    Ok(())
}

async fn steps(demo: &mut Demo, stack: &DevStack) -> Result<(), String> {
    let started = demo.upload("upload v1", IRIS_V1).await?;
    let p = demo.wait_for_version("v1 live", "1").await?;
    demo.record(
        "v1 uploaded and live",
        format!(
            "{} ms to first answer, p = {}",
            started.elapsed().as_millis(),
            fmt_probabilities(&p)
        ),
    );

    let started = demo.upload("upload v2", IRIS_V2).await?;
    let p = demo.wait_for_version("v2 hot-reloaded", "2").await?;
    demo.record(
        "v2 hot-reloaded",
        format!(
            "{} ms from upload to first v2 answer, p = {}",
            started.elapsed().as_millis(),
            fmt_probabilities(&p)
        ),
    );

    demo.upload("upload a broken model", &IRIS_V2[..IRIS_V2.len() / 2])
        .await?;
    let deadline = Instant::now() + Duration::from_secs(60);
    let reason = loop {
        let tags = demo.tags().await;
        let get = |k: &str| {
            tags.iter()
                .find(|(key, _)| key == k)
                .map(|(_, v)| v.clone())
        };
        if get("modelpipe-status").as_deref() == Some("rejected") {
            break get("modelpipe-reason").unwrap_or_default();
        }
        if Instant::now() > deadline {
            return Err(step_failed(
                "broken upload rejected",
                "no rejection tag within 60 s",
            ));
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    let (version, _) = demo
        .predict()
        .await
        .map_err(|e| step_failed("v2 keeps serving", e))?;
    if version != "2" {
        return Err(step_failed(
            "v2 keeps serving",
            format!("v{version} answered"),
        ));
    }
    demo.record(
        "broken upload rejected",
        format!("v2 keeps serving; reason: {reason}"),
    );

    let started = Instant::now();
    let target = crate::target::Target::Registry(stack.registry.clone());
    let model: modelpipe_core::ModelName = "iris".parse().expect("valid name");
    crate::ops::rollback(&target, model, Default::default(), None)
        .await
        .map_err(|e| step_failed("rollback", e))?;
    demo.wait_for_version("v1 serving again", "1").await?;
    demo.record(
        "rolled back to v1",
        format!("{} ms to first v1 answer", started.elapsed().as_millis()),
    );

    canary(demo, stack, &target).await
}

/// v2 again, as a guarded rollout: 10 %, then 50 % of callers, promoted by the controller on
/// the evidence their requests leave.
async fn canary(
    demo: &mut Demo,
    stack: &DevStack,
    target: &crate::target::Target,
) -> Result<(), String> {
    const STEP: &str = "v2 canary promoted on evidence";
    let started = Instant::now();
    let request = RolloutRequest::Start {
        model: "iris".parse().expect("valid name"),
        alias: Default::default(),
        candidate: 2,
        plan: "canary".into(),
        // A demo is short and its machine busy: latency is left to real rollouts' defaults.
        settings: [
            ("steps", "10,50"),
            ("bake", "0s"),
            ("min-requests", "20"),
            ("max-p99-ratio", "1000"),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect(),
        reason: Some("modelctl demo".into()),
    };
    let payload = serde_json::to_value(&request).expect("requests serialise");
    let _: RolloutAnswer = target
        .call(payload, move |registry| {
            rollout::apply(registry, &request, None)
        })
        .await
        .map_err(|e| step_failed(STEP, e))?;
    let deadline = Instant::now() + Duration::from_secs(60);
    let (mut requests, mut on_candidate) = (0, 0);
    loop {
        let key = format!("customer-{}", requests % 200);
        let (_, _, arm) = demo
            .predict_as(Some(&key))
            .await
            .map_err(|e| step_failed(STEP, e))?;
        requests += 1;
        on_candidate += usize::from(arm.as_deref() == Some("candidate"));
        let rollout = stack
            .registry
            .rollout(&"iris".parse().expect("valid name"), &Default::default())
            .map_err(|e| step_failed(STEP, e))?;
        match rollout.map(|r| (r.state, r.reason)) {
            Some((RolloutState::Promoted, _)) => break,
            Some((RolloutState::RolledBack, reason)) => return Err(step_failed(STEP, reason)),
            _ if Instant::now() > deadline => {
                return Err(step_failed(STEP, "not promoted within 60 s"));
            }
            _ => {}
        }
    }
    demo.wait_for_version(STEP, "2").await?;
    demo.record(
        STEP,
        format!(
            "{} ms: 10 % → 50 % → live; {requests} requests, {on_candidate} answered by the candidate",
            started.elapsed().as_millis()
        ),
    );
    Ok(())
}
