//! The three real function binaries under `cargo lambda watch`'s Lambda runtime API, with S3 on
//! moto_server: a real-shaped S3 event (URL-encoded key) invoked on the validator, which reads the
//! object through aws-sdk-s3 and reaches the publisher through aws-sdk-lambda's Invoke against
//! watch; the inference binary answering API Gateway HTTP API and REST API events.

use std::time::Duration;

use aws_sdk_lambda::primitives::Blob;
use aws_sdk_s3::primitives::ByteStream;
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;
use modelpipe_core::{AliasName, ModelName};
use modelpipe_registry::{FileCacheConfig, Registry};
use modelpipe_testkit::onnx_build::LinearSoftmax;
use modelpipe_tests::{
    Server, aws_config, http_api_event, local_aws_env, moto, rest_api_event, s3_put_event,
    start_function, start_watch, unique_bucket, wait_for,
};
use serde_json::{Value, json};

struct Stack {
    _moto: Option<Server>,
    moto_endpoint: String,
    _watch: Server,
    _functions: Vec<Server>,
    _dir: tempfile::TempDir,
    registry: Registry,
    s3: aws_sdk_s3::Client,
    lambda: aws_sdk_lambda::Client,
    bucket: String,
    sequencer: u64,
}

impl Stack {
    /// The functions over a registry directory (EFS in AWS).
    async fn start() -> Self {
        Self::start_with(false).await
    }

    /// The functions over `MODEL_ROOT=s3://<bucket>/registry` (`on_s3`) or a directory.
    async fn start_with(on_s3: bool) -> Self {
        let (moto_endpoint, moto_guard) = moto().await;
        let watch = start_watch().await;
        let dir = tempfile::tempdir().unwrap();
        let s3 = modelpipe_aws::s3_client(&aws_config(&moto_endpoint).await);
        let bucket = unique_bucket("lambda");
        s3.create_bucket().bucket(&bucket).send().await.unwrap();
        let registry = if on_s3 {
            let files = FileCacheConfig {
                dir: dir.path().join("test-copies"),
                bytes: None,
            };
            let sdk = aws_config(&moto_endpoint).await;
            Registry::open_s3(&bucket, "registry", &files, Some(sdk)).unwrap()
        } else {
            Registry::open(dir.path().join("registry")).unwrap()
        };
        let mut env = local_aws_env();
        env.extend([
            // As verbose as it gets, for the test that no secret or request body is logged.
            ("RUST_LOG", "debug".to_string()),
            ("MODEL_ROOT", registry.location().to_string()),
            ("AWS_ENDPOINT_URL_S3", moto_endpoint.clone()),
            // Staging and the S3 registry's local copies, as Lambda's /tmp.
            ("TMPDIR", dir.path().display().to_string()),
        ]);
        let mut validator_env = env.clone();
        validator_env.extend([
            ("PUBLISHER_FUNCTION", "publisher".to_string()),
            ("AWS_ENDPOINT_URL_LAMBDA", watch.endpoint()),
        ]);
        // As the CDK app deploys them: inference writes its rollout evidence and drift profiles
        // under the upload bucket's telemetry/ (it may not write the registry); the publisher
        // reads them there.
        let telemetry = ("TELEMETRY_ROOT", format!("s3://{bucket}/telemetry"));
        let mut publisher_env = env.clone();
        publisher_env.push(telemetry.clone());
        let mut inference_env = env.clone();
        inference_env.extend([
            ("RELOAD_CHECK_MS", "0".to_string()),
            // One environment: no fleet to spread its loads over.
            ("ADOPT_SPREAD_MS", "0".to_string()),
            telemetry,
        ]);
        let functions = vec![
            start_function(&watch, "validator", &validator_env),
            start_function(&watch, "publisher", &publisher_env),
            start_function(&watch, "inference", &inference_env),
        ];
        let lambda = aws_sdk_lambda::Client::new(&aws_config(&watch.endpoint()).await);
        Self {
            _moto: moto_guard,
            moto_endpoint,
            _watch: watch,
            _functions: functions,
            _dir: dir,
            registry,
            s3,
            lambda,
            bucket,
            sequencer: 0x20,
        }
    }

    /// Invokes a function; a function error (watch answers it with HTTP 500) is `Err`.
    async fn invoke(&self, function: &str, payload: &Value) -> Result<Value, String> {
        let response = self
            .lambda
            .invoke()
            .function_name(function)
            .payload(Blob::new(payload.to_string()))
            .send()
            .await
            .map_err(|e| format!("{}", aws_sdk_lambda::error::DisplayErrorContext(&e)))?;
        let body: Value = serde_json::from_slice(response.payload().unwrap().as_ref()).unwrap();
        match response.function_error() {
            Some(_) => Err(body.to_string()),
            None => Ok(body),
        }
    }

    /// Uploads to moto and invokes the validator with the event S3 would send.
    async fn upload(&mut self, key: &str, bytes: Vec<u8>) -> Value {
        self.upload_with(key, bytes, &[]).await
    }

    /// [`Self::upload`] with object metadata (`aws s3 cp --metadata`).
    async fn upload_with(&mut self, key: &str, bytes: Vec<u8>, metadata: &[(&str, &str)]) -> Value {
        let size = bytes.len() as u64;
        let mut put = self
            .s3
            .put_object()
            .bucket(&self.bucket)
            .key(key)
            .body(ByteStream::from(bytes));
        for (name, value) in metadata {
            put = put.metadata(*name, *value);
        }
        let put = put.send().await.unwrap();
        self.sequencer += 1;
        let event = s3_put_event(
            &self.bucket,
            key,
            size,
            put.e_tag().unwrap(),
            &format!("{:018X}", self.sequencer),
        );
        self.invoke("validator", &event)
            .await
            .expect("the validator answers")
    }

    /// `POST /v2/models/iris/infer` through an HTTP API event; returns (status, body).
    async fn infer(&self, row: [f32; 4]) -> (u16, Value) {
        let body = json!({"inputs": [{"name": "input", "shape": [1, 4], "datatype": "FP32", "data": row}]}).to_string();
        let answer = self
            .invoke(
                "inference",
                &http_api_event("POST", "/v2/models/iris/infer", Some(&body)),
            )
            .await
            .unwrap();
        let status = answer["statusCode"].as_u64().unwrap() as u16;
        (
            status,
            serde_json::from_str(answer["body"].as_str().unwrap()).unwrap(),
        )
    }

    /// Infers until `version` answers: after a move the function answers from the version in
    /// memory and adopts the new one after that answer. Every answer on the way is a 200.
    async fn infer_until(&self, version: &str) -> Value {
        wait_for(
            &format!("v{version} to answer"),
            Duration::from_secs(30),
            || async {
                let (status, answer) = self.infer(ROW).await;
                assert_eq!(status, 200, "{answer}");
                (answer["model_version"] == version).then_some(answer)
            },
        )
        .await
    }

    /// `GET /v2/models/iris` through an HTTP API event.
    async fn metadata(&self) -> Value {
        let answer = self
            .invoke("inference", &http_api_event("GET", "/v2/models/iris", None))
            .await
            .unwrap();
        assert_eq!(answer["statusCode"], 200, "{answer}");
        serde_json::from_str(answer["body"].as_str().unwrap()).unwrap()
    }

    fn live(&self) -> u64 {
        self.registry
            .alias(&"iris".parse::<ModelName>().unwrap(), &AliasName::live())
            .unwrap()
            .unwrap()
            .version
    }
}

const ROW: [f32; 4] = [5.9, 3.0, 5.1, 1.8];

fn assert_answer(answer: &Value, version: &str, model: &LinearSoftmax) {
    assert_eq!(answer["model_version"], version, "{answer}");
    let got: Vec<f64> = answer["outputs"][0]["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_f64().unwrap())
        .collect();
    let want = model.predict(&ROW);
    assert!(
        got.iter().zip(&want).all(|(g, w)| (g - w).abs() < 1e-5),
        "got {got:?}, want {want:?}"
    );
}

#[tokio::test]
async fn an_upload_goes_live_through_the_three_functions_and_rolls_back() {
    lifecycle(Stack::start().await).await;
}

#[tokio::test]
async fn the_three_functions_share_an_s3_hosted_registry() {
    let stack = Stack::start_with(true).await;
    let registry_objects = |stack: &Stack| {
        let (s3, bucket) = (stack.s3.clone(), stack.bucket.clone());
        async move {
            let listed = s3
                .list_objects_v2()
                .bucket(bucket)
                .prefix("registry/iris/")
                .send()
                .await
                .unwrap();
            listed
                .contents()
                .iter()
                .map(|o| o.key().unwrap().to_string())
                .collect::<Vec<_>>()
        }
    };
    let objects = registry_objects(&stack).await;
    assert!(objects.is_empty(), "{objects:?}");
    let stack = lifecycle(stack).await;
    let objects = registry_objects(&stack).await;
    for key in [
        "registry/iris/versions/1/model.onnx",
        "registry/iris/versions/1/manifest.json",
        "registry/iris/versions/1/model.nnef.tar",
        "registry/iris/versions/2/model.onnx",
        "registry/iris/aliases/live.json",
        "registry/iris/history.jsonl",
        "registry/iris/rejections.jsonl",
    ] {
        assert!(
            objects.iter().any(|o| o == key),
            "{key} missing from {objects:?}"
        );
    }
    // ONNX Runtime's optimised graph travels with its version when ingest kept it.
    let manifest = stack
        .registry
        .manifest(&"iris".parse().unwrap(), 2)
        .unwrap();
    assert_eq!(
        objects
            .iter()
            .any(|o| o == "registry/iris/versions/2/model.optimized.onnx"),
        manifest.optimized.is_some(),
        "{objects:?}"
    );
    assert!(
        !objects.iter().any(|o| o.ends_with(".lock")),
        "every lease is released: {objects:?}"
    );
    // `modelctl` reads and moves the S3 registry directly, with the standard AWS environment.
    let registry = format!("s3://{}/registry", stack.bucket);
    let env = [
        ("AWS_ENDPOINT_URL", stack.moto_endpoint.clone()),
        ("TMPDIR", stack._dir.path().display().to_string()),
    ];
    let (ok, out, err) = modelctl(&["status", "iris", "--registry", &registry], &env);
    assert!(ok, "{err}");
    assert!(out.contains("live       → v1"), "{out}");
    let (ok, out, err) = modelctl(&["promote", "iris", "2", "--registry", &registry], &env);
    assert!(ok, "{err}");
    assert_eq!(out.trim(), "iris:live v1 → v2");
    assert_eq!(stack.live(), 2);
}

/// Upload v1 → live and answering, v2 → hot-swapped, a bad upload → rejected while v2 serves,
/// rollback → v1 answers, refusals; the history records each move.
async fn lifecycle(mut stack: Stack) -> Stack {
    let (v1, v2) = (LinearSoftmax::iris(1), LinearSoftmax::iris(2));

    // v1 in tract (compiled: the artifact path), v2 in ONNX Runtime (the library found beside
    // the workspace's .venv, as `modelctl dev` users have it).
    let outcome = stack
        .upload_with(
            "models/iris/first model+v1.onnx",
            v1.to_bytes(),
            &[("engine", "tract")],
        )
        .await;
    assert_eq!(
        outcome,
        json!([{"outcome": "published", "model": "iris", "version": 1, "alias": "live"}])
    );
    assert_eq!(stack.live(), 1);
    let (status, answer) = stack.infer(ROW).await;
    assert_eq!(status, 200, "{answer}");
    assert_answer(&answer, "1", &v1);
    // The validator compiled it; the inference function loaded the artifact, not the ONNX file.
    let manifest = stack
        .registry
        .manifest(&"iris".parse().unwrap(), 1)
        .unwrap();
    assert!(manifest.artifact.is_some(), "{manifest:?}");
    let metadata = stack.metadata().await;
    assert_eq!(
        metadata["engine"]["loaded_from"], "model.nnef.tar",
        "{metadata}"
    );

    let outcome = stack
        .upload_with(
            "models/iris/model.onnx",
            v2.to_bytes(),
            &[("engine", "onnxruntime")],
        )
        .await;
    assert_eq!(outcome[0]["version"], 2, "{outcome}");
    assert_answer(&stack.infer_until("2").await, "2", &v2);
    let metadata = stack.metadata().await;
    assert_eq!(metadata["engine"]["name"], "onnxruntime", "{metadata}");
    // ONNX Runtime's optimised graph when ingest kept it (its timings decide), else model.onnx.
    let manifest = stack
        .registry
        .manifest(&"iris".parse().unwrap(), 2)
        .unwrap();
    let expected_file = match manifest.optimized {
        Some(_) => "model.optimized.onnx",
        None => "model.onnx",
    };
    assert_eq!(
        metadata["engine"]["loaded_from"], expected_file,
        "{metadata}"
    );

    let outcome = stack
        .upload("models/iris/model.onnx", b"definitely not onnx".to_vec())
        .await;
    assert_eq!(outcome[0]["outcome"], "rejected", "{outcome}");
    assert!(
        outcome[0]["reason"]
            .as_str()
            .unwrap()
            .contains("not a loadable ONNX model")
    );
    assert_eq!(stack.live(), 2);
    assert_answer(&stack.infer(ROW).await.1, "2", &v2);

    let rollback = stack
        .invoke(
            "publisher",
            &json!({"action": "rollback", "model": "iris", "alias": "live"}),
        )
        .await
        .unwrap();
    assert_eq!(
        rollback,
        json!({"model": "iris", "alias": "live", "version": 1, "previous": 2})
    );
    assert_answer(&stack.infer_until("1").await, "1", &v1);

    let refused = stack
        .invoke(
            "publisher",
            &json!({"action": "publish", "model": "iris", "version": 9}),
        )
        .await
        .unwrap_err();
    assert!(refused.contains("model iris has no version 9"), "{refused}");
    let refused = stack
        .invoke("publisher", &json!({"action": "promote", "model": "iris"}))
        .await
        .unwrap_err();
    assert!(refused.contains("unknown variant `promote`"), "{refused}");
    assert_eq!(stack.live(), 1);

    let history: Vec<(Option<u64>, u64)> = stack
        .registry
        .history(&"iris".parse().unwrap())
        .unwrap()
        .iter()
        .map(|e| (e.from, e.to))
        .collect();
    assert_eq!(history, [(None, 1), (Some(1), 2), (Some(2), 1)]);

    // Debug-level logs of all three name what happened, never the credentials or a request body.
    let body =
        json!({"inputs": [{"name": "input", "shape": [1, 4], "datatype": "FP32", "data": ROW}]})
            .to_string();
    for (function, expected) in [
        ("validator", "version committed"),
        ("publisher", "alias moved"),
        ("inference", "swapped"),
    ] {
        let log = std::fs::read_to_string(modelpipe_tests::function_log(&stack._watch, function))
            .unwrap();
        assert!(log.contains(expected), "{function} logged no {expected:?}");
        assert!(
            !log.contains(modelpipe_tests::SECRET_KEY),
            "{function} logged the secret key"
        );
        assert!(
            !log.contains(&body) && !log.contains("5.9,3.0,5.1,1.8"),
            "{function} logged a request body"
        );
    }
    stack
}

#[tokio::test]
async fn the_inference_function_answers_rest_api_events_and_json_errors() {
    let mut stack = Stack::start().await;
    stack
        .upload("models/iris/model.onnx", LinearSoftmax::iris(1).to_bytes())
        .await;
    let answer = stack
        .invoke("inference", &rest_api_event("GET", "/v2/models/iris", None))
        .await
        .unwrap();
    assert_eq!(answer["statusCode"], 200, "{answer}");
    let metadata: Value = serde_json::from_str(answer["body"].as_str().unwrap()).unwrap();
    assert_eq!(
        (metadata["name"].as_str(), metadata["platform"].as_str()),
        (Some("iris"), Some("onnx"))
    );

    let bad = json!({"inputs": [{"name": "input", "shape": [1, 3], "datatype": "FP32", "data": [1, 2, 3]}]}).to_string();
    let answer = stack
        .invoke(
            "inference",
            &http_api_event("POST", "/v2/models/iris/infer", Some(&bad)),
        )
        .await
        .unwrap();
    assert_eq!(answer["statusCode"], 400, "{answer}");
    let error: Value = serde_json::from_str(answer["body"].as_str().unwrap()).unwrap();
    assert_eq!(
        error["error"],
        "input 'input' has shape [1,3], the model expects [-1,4]"
    );
    let answer = stack
        .invoke(
            "inference",
            &http_api_event("GET", "/v2/models/absent/ready", None),
        )
        .await
        .unwrap();
    assert_eq!(answer["statusCode"], 404, "{answer}");
}

/// An inference body in the binary tensor data extension: JSON, then the input's f32 bytes.
fn binary_infer_body(rows: &[[f32; 4]]) -> (Vec<u8>, usize) {
    let header = json!({
        "inputs": [{"name": "input", "shape": [rows.len(), 4], "datatype": "FP32", "parameters": {"binary_data_size": rows.len() * 16}}],
        "parameters": {"binary_data_output": true}
    });
    let mut body = serde_json::to_vec(&header).unwrap();
    let json_length = body.len();
    body.extend(rows.iter().flatten().flat_map(|f| f.to_le_bytes()));
    (body, json_length)
}

/// Checks a binary answer from an API Gateway response event against the model's own maths.
fn assert_binary_answer(answer: &Value, headers: &Value, rows: &[[f32; 4]], model: &LinearSoftmax) {
    assert_eq!(answer["statusCode"], 200, "{answer}");
    assert_eq!(answer["isBase64Encoded"], true, "{answer}");
    let body = BASE64.decode(answer["body"].as_str().unwrap()).unwrap();
    let json_length: usize = headers.as_str().unwrap().parse().unwrap();
    let header: Value = serde_json::from_slice(&body[..json_length]).unwrap();
    assert_eq!(
        header["outputs"][0]["parameters"]["binary_data_size"],
        rows.len() * 12
    );
    let got: Vec<f32> = body[json_length..]
        .chunks_exact(4)
        .map(|b| f32::from_le_bytes(b.try_into().unwrap()))
        .collect();
    let want: Vec<f64> = rows.iter().flat_map(|r| model.predict(r)).collect();
    assert_eq!(got.len(), want.len());
    for (g, w) in got.iter().zip(&want) {
        assert!((*g as f64 - w).abs() < 1e-5, "got {got:?}, want {want:?}");
    }
}

#[tokio::test]
async fn binary_tensors_travel_base64_through_http_and_rest_api_events() {
    let mut stack = Stack::start().await;
    let model = LinearSoftmax::iris(1);
    stack
        .upload("models/iris/model.onnx", model.to_bytes())
        .await;
    let rows = [[5.1, 3.5, 1.4, 0.2], [6.7, 3.0, 5.2, 2.3]];
    let (body, json_length) = binary_infer_body(&rows);
    let encoded = BASE64.encode(&body);

    let mut v2 = http_api_event("POST", "/v2/models/iris/infer", Some(&encoded));
    v2["isBase64Encoded"] = json!(true);
    v2["headers"]["content-type"] = json!("application/octet-stream");
    v2["headers"]["inference-header-content-length"] = json!(json_length.to_string());
    let answer = stack.invoke("inference", &v2).await.unwrap();
    assert_binary_answer(
        &answer,
        &answer["headers"]["inference-header-content-length"],
        &rows,
        &model,
    );

    let mut v1 = rest_api_event("POST", "/v2/models/iris/infer", Some(&encoded));
    v1["isBase64Encoded"] = json!(true);
    v1["headers"]["Inference-Header-Content-Length"] = json!(json_length.to_string());
    v1["multiValueHeaders"]["Inference-Header-Content-Length"] = json!([json_length.to_string()]);
    let answer = stack.invoke("inference", &v1).await.unwrap();
    assert_binary_answer(
        &answer,
        &answer["multiValueHeaders"]["inference-header-content-length"][0],
        &rows,
        &model,
    );
}

/// `modelctl` with `env` added to a clean AWS environment; returns (success, stdout, stderr).
fn modelctl(args: &[&str], env: &[(&str, String)]) -> (bool, String, String) {
    let mut command = std::process::Command::new(modelpipe_tests::binary("modelctl"));
    command
        .args(args)
        .env_clear()
        .envs(local_aws_env())
        .envs(env.iter().cloned());
    let out = command.output().expect("run modelctl");
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[tokio::test]
async fn modelctl_operates_through_the_deployed_publisher() {
    let mut stack = Stack::start().await;
    for seed in [1, 2] {
        stack
            .upload(
                "models/iris/model.onnx",
                LinearSoftmax::iris(seed).to_bytes(),
            )
            .await;
    }
    assert_eq!(stack.live(), 2);
    // Nothing but the Lambda API: no registry path is given or reachable through the flags.
    let env = [("AWS_ENDPOINT_URL", stack._watch.endpoint())];
    let remote = |args: &[&str]| {
        let mut args = args.to_vec();
        args.extend(["--publisher-function", "publisher"]);
        modelctl(&args, &env)
    };

    let (ok, out, err) = remote(&["status", "iris"]);
    assert!(ok, "{err}");
    assert!(out.contains("live       → v2"), "{out}");
    assert!(out.contains("v1") && out.contains("[live]"), "{out}");

    let (ok, out, err) = remote(&["rollback", "iris"]);
    assert!(ok, "{err}");
    assert_eq!(out.trim(), "iris:live v2 → v1");
    assert_eq!(stack.live(), 1);

    let (ok, out, err) = remote(&["promote", "iris", "2", "--alias", "staging"]);
    assert!(ok, "{err}");
    assert_eq!(out.trim(), "iris:staging - → v2");

    let (ok, _, err) = remote(&["promote", "iris", "9"]);
    assert!(!ok);
    assert!(err.contains("model iris has no version 9"), "{err}");
    assert_eq!(stack.live(), 1, "a refused promote changes nothing");

    let (ok, out, err) = remote(&["history", "iris"]);
    assert!(ok, "{err}");
    let moves: Vec<&str> = out.lines().collect();
    assert_eq!(moves.len(), 4, "{out}");
    assert!(
        moves[2].contains("v2 → v1") && moves[2].contains("Rollback"),
        "{out}"
    );
    assert!(
        moves[3].contains("staging") && moves[3].contains("SetAlias"),
        "{out}"
    );

    // The publisher's drift action: the live version, no baseline yet (no dataset uploaded,
    // no traffic captured).
    let (ok, out, err) = remote(&["drift", "iris"]);
    assert!(ok, "{err}");
    assert!(out.starts_with("iris v1: no baseline yet"), "{out}");
}

#[tokio::test]
async fn a_baked_registry_is_served_read_only_without_hot_reload() {
    let dir = tempfile::tempdir().unwrap();
    let (v1, v2) = (LinearSoftmax::iris(1), LinearSoftmax::iris(2));
    let file = |name: &str, bytes: Vec<u8>| {
        let path = dir.path().join(name);
        std::fs::write(&path, bytes).unwrap();
        format!("iris={}", path.display())
    };
    let (good1, good2) = (
        file("v1.onnx", v1.to_bytes()),
        file("v2.onnx", v2.to_bytes()),
    );
    let bad = file("bad.onnx", b"not a model".to_vec());
    let baked = dir.path().join("baked");
    let baked_arg = baked.display().to_string();

    // One bad file fails the whole bake, before anything is written.
    let (ok, _, err) = modelctl(&["bake", &baked_arg, &good1, &bad], &[]);
    assert!(!ok);
    assert!(
        err.contains("bad.onnx: rejected") && err.contains("not a loadable ONNX model"),
        "{err}"
    );
    assert!(!baked.join("iris").exists() && !baked.join("baked.json").exists());

    let (ok, out, err) = modelctl(&["bake", &baked_arg, &good1, &good2], &[]);
    assert!(ok, "{err}");
    assert!(out.contains("iris v2"), "{out}");
    assert!(baked.join("baked.json").is_file());
    assert!(!baked.join("iris/staging").exists());

    let watch = start_watch().await;
    let mut env = local_aws_env();
    env.extend([
        ("MODEL_ROOT", baked_arg.clone()),
        ("RELOAD_CHECK_MS", "0".to_string()),
    ]);
    let _functions = [
        start_function(&watch, "inference", &env),
        start_function(&watch, "publisher", &env),
    ];
    let lambda = aws_sdk_lambda::Client::new(&aws_config(&watch.endpoint()).await);
    let invoke = |function: &'static str, payload: Value| {
        let lambda = lambda.clone();
        async move {
            let response = lambda
                .invoke()
                .function_name(function)
                .payload(Blob::new(payload.to_string()))
                .send()
                .await;
            match response {
                Ok(r) => {
                    Ok(serde_json::from_slice::<Value>(r.payload().unwrap().as_ref()).unwrap())
                }
                Err(e) => Err(format!(
                    "{}",
                    aws_sdk_lambda::error::DisplayErrorContext(&e)
                )),
            }
        }
    };
    let body =
        json!({"inputs": [{"name": "input", "shape": [1, 4], "datatype": "FP32", "data": ROW}]})
            .to_string();
    let infer = || {
        invoke(
            "inference",
            http_api_event("POST", "/v2/models/iris/infer", Some(&body)),
        )
    };
    let answer = infer().await.unwrap();
    assert_answer(
        &serde_json::from_str(answer["body"].as_str().unwrap()).unwrap(),
        "2",
        &v2,
    );

    let metadata = invoke("inference", http_api_event("GET", "/v2/models/iris", None))
        .await
        .unwrap();
    let metadata: Value = serde_json::from_str(metadata["body"].as_str().unwrap()).unwrap();
    assert_eq!(metadata["hot_reload"]["enabled"], false, "{metadata}");
    // The bake chose and compiled each version as the validator would; the image serves the
    // engine it chose, tract from the artifact.
    let manifest: Value = serde_json::from_slice(
        &std::fs::read(baked.join("iris/versions/2/manifest.json")).unwrap(),
    )
    .unwrap();
    let engine = manifest["engine"]["engine"].as_str().unwrap();
    assert_eq!(metadata["engine"]["name"], engine, "{metadata}");
    let from_artifact = baked.join("iris/versions/2/model.nnef.tar").is_file();
    assert_eq!(from_artifact, engine == "tract", "{manifest}");
    let expected_file = if from_artifact {
        "model.nnef.tar"
    } else {
        "model.onnx"
    };
    assert_eq!(
        metadata["engine"]["loaded_from"], expected_file,
        "{metadata}"
    );
    assert!(
        metadata["hot_reload"]["reason"]
            .as_str()
            .unwrap()
            .contains("baked into the image")
    );

    let refused = invoke("publisher", json!({"action": "rollback", "model": "iris"}))
        .await
        .unwrap_err();
    assert!(refused.contains("read-only"), "{refused}");
    // Even an alias edited in place is never looked at again: nothing in the image moves.
    let alias = baked.join("iris/aliases/live.json");
    let original = std::fs::read_to_string(&alias).unwrap();
    let edited = original.replace("\"version\": 2", "\"version\": 1");
    assert_ne!(edited, original);
    std::fs::write(&alias, edited).unwrap();
    let answer = infer().await.unwrap();
    assert_answer(
        &serde_json::from_str(answer["body"].as_str().unwrap()).unwrap(),
        "2",
        &v2,
    );
}

/// `POST /v2/models/iris/infer` with routing key `key` through an HTTP API event: the status
/// and the arm header.
async fn infer_as(stack: &Stack, key: &str) -> (u16, Option<String>) {
    let body =
        json!({"inputs": [{"name": "input", "shape": [1, 4], "datatype": "FP32", "data": ROW}]})
            .to_string();
    let mut event = http_api_event("POST", "/v2/models/iris/infer", Some(&body));
    event["headers"]["routing-key"] = json!(key);
    let answer = stack.invoke("inference", &event).await.unwrap();
    let arm = answer["headers"]["modelpipe-arm"]
        .as_str()
        .map(str::to_string);
    (answer["statusCode"].as_u64().unwrap() as u16, arm)
}

#[tokio::test]
async fn a_canary_through_the_three_functions_promoted_by_the_publishers_advance_with_emf_metrics()
{
    let mut stack = Stack::start().await;
    stack
        .upload("models/iris/model.onnx", LinearSoftmax::iris(1).to_bytes())
        .await;
    let outcome = stack
        .upload_with(
            "models/iris/model.onnx",
            LinearSoftmax::iris(2).to_bytes(),
            &[
                ("rollout", "canary"),
                ("rollout-steps", "50"),
                ("rollout-bake", "0s"),
                ("rollout-min-requests", "10"),
            ],
        )
        .await;
    assert_eq!(
        outcome,
        json!([{"outcome": "rolling-out", "model": "iris", "version": 2, "alias": "live", "rollout": 1}])
    );
    assert_eq!(stack.live(), 1);

    // Both arms answer; each caller always from the same one.
    let mut arms = std::collections::HashMap::new();
    for round in 0..2 {
        for i in 0..40 {
            let key = format!("user-{i}");
            let (status, arm) = infer_as(&stack, &key).await;
            assert_eq!(status, 200);
            let arm = arm.expect("a routed answer names its arm");
            if round == 1 {
                assert_eq!(arms[&key], arm, "{key} changed arms");
            }
            arms.insert(key, arm);
        }
    }
    assert!(arms.values().any(|a| a == "candidate") && arms.values().any(|a| a == "stable"));

    // The publisher reads the evidence inference wrote (its status shows it) …
    let status = json!({"action": "rollout-status", "model": "iris"});
    modelpipe_tests::wait_for(
        "the evidence of both arms",
        modelpipe_tests::dev::WAIT,
        || async {
            let answer = stack.invoke("publisher", &status).await.unwrap();
            let evaluation = &answer["rollouts"][0]["evaluation"];
            (evaluation["stable"]["requests"].as_u64()? >= 10
                && evaluation["candidate"]["requests"].as_u64()? >= 10)
                .then_some(())
        },
    )
    .await;
    // The evidence travelled through the upload bucket's telemetry/: the inference function
    // wrote nothing into the registry.
    let listed = stack
        .s3
        .list_objects_v2()
        .bucket(&stack.bucket)
        .prefix("telemetry/iris/rollouts/live/")
        .send()
        .await
        .unwrap();
    assert!(!listed.contents().is_empty(), "{listed:?}");
    let rollouts = stack.registry.dir().unwrap().join("iris/rollouts/live");
    let in_registry: Vec<_> = walk(&rollouts)
        .into_iter()
        .filter(|p| p.to_string_lossy().contains("/step-"))
        .collect();
    assert!(in_registry.is_empty(), "{in_registry:?}");
    // … and two advances at once (two schedule ticks) promote once.
    let advance = json!({"action": "rollout-advance"});
    let (a, b) = tokio::join!(
        stack.invoke("publisher", &advance),
        stack.invoke("publisher", &advance)
    );
    let did: Vec<String> = [a.unwrap(), b.unwrap()]
        .iter()
        .flat_map(|answer| answer["rollouts"].as_array().cloned().unwrap_or_default())
        .map(|report| report["did"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(
        did.iter().filter(|d| *d == "promoted").count(),
        1,
        "{did:?}"
    );
    assert_eq!(stack.live(), 2);
    let log = stack
        .registry
        .rollout_log(&"iris".parse().unwrap())
        .unwrap();
    assert_eq!(log.iter().filter(|e| e.action == "promoted").count(), 1);

    // The inference function's log carries EMF documents per arm and version, with no caller's
    // key. Each invocation's are written once its answer has been posted, so the last may trail.
    let emf = || {
        let log =
            std::fs::read_to_string(modelpipe_tests::function_log(&stack._watch, "inference"))
                .unwrap();
        let documents: Vec<Value> = log
            .lines()
            .filter_map(|line| serde_json::from_str::<Value>(line).ok())
            .filter(|doc| doc["_aws"]["CloudWatchMetrics"].is_array())
            .collect();
        (log, documents)
    };
    let count = |documents: &[Value], arm: &str, version: &str| -> u64 {
        documents
            .iter()
            .filter(|d| d["arm"] == arm && d["version"] == version && d["model"] == "iris")
            .filter_map(|d| d["modelpipe_requests_total"].as_u64())
            .sum()
    };
    let (log, documents) = modelpipe_tests::wait_for(
        "every request's EMF line",
        modelpipe_tests::dev::WAIT,
        || async {
            let (log, documents) = emf();
            let total = count(&documents, "candidate", "2") + count(&documents, "stable", "1");
            (total >= 80).then_some((log, documents))
        },
    )
    .await;
    let requests = |arm: &str, version: &str| count(&documents, arm, version);
    let candidates = arms.values().filter(|a| *a == "candidate").count() as u64;
    assert_eq!(requests("candidate", "2"), 2 * candidates, "{documents:?}");
    assert_eq!(requests("stable", "1"), 2 * (40 - candidates));
    let request_doc = documents
        .iter()
        .find(|d| d["modelpipe_requests_total"].is_u64())
        .unwrap();
    let directive = &request_doc["_aws"]["CloudWatchMetrics"][0];
    assert_eq!(directive["Namespace"], "modelpipe");
    let mut dimensions: Vec<&str> = directive["Dimensions"][0]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| d.as_str().unwrap())
        .collect();
    dimensions.sort_unstable();
    assert_eq!(dimensions, ["alias", "arm", "model", "version"]);
    assert!(
        documents
            .iter()
            .any(|d| d["modelpipe_model_load_seconds"].is_array()
                || d["modelpipe_model_load_seconds"].is_number())
    );
    assert!(
        !log.contains("\"user-1\""),
        "a routing key reached the logs"
    );
}

/// Every file under `dir`, recursively (none if it does not exist).
fn walk(dir: &std::path::Path) -> Vec<std::path::PathBuf> {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return Vec::new();
    };
    entries
        .flatten()
        .flat_map(|entry| match entry.file_type() {
            Ok(kind) if kind.is_dir() => walk(&entry.path()),
            _ => vec![entry.path()],
        })
        .collect()
}
