//! Data capture and drift as users meet them: `modelctl dev` fed by the stock `aws` CLI and plain
//! HTTP (JSON and binary tensors); the captured objects fetched with `aws s3 cp` and read by a
//! reader written from SageMaker's capture record shape (`tests/support/capture_reader.py`);
//! `modelctl drift` on baselines uploaded as `baseline.jsonl`; and the real inference binary in
//! emulated Lambda environments (frozen between invocations, shut down with SIGTERM) writing to
//! moto's S3; and the publisher's merge of past drift windows on an S3-hosted registry.

use std::collections::BTreeSet;
use std::io::Read;
use std::path::Path;
use std::process::Command;
use std::time::Duration;

use base64::Engine as _;
use modelpipe_core::time::Timestamp;
use modelpipe_drift::Profile;
use modelpipe_registry::Registry;
use modelpipe_registry::drift::{DriftRequest, DriftSettings, WindowProfile, window_of};
use modelpipe_registry::rollout::split::bucket;
use modelpipe_testkit::onnx_build::{LinearSoftmax, Weights};
use modelpipe_tests::dev::{Dev, WAIT};
use modelpipe_tests::lambda_env::Environment;
use modelpipe_tests::serving::{commit, publish};
use modelpipe_tests::{
    aws_config, binary, http_api_event, local_aws_env, moto, tool, unique_bucket, wait_for,
    workspace_root,
};
use serde_json::{Value, json};

/// `rows` iris-like rows: four features, each uniform over its own range; `shift` is added to
/// the third.
fn rows(draws: &mut Weights, rows: usize, shift: f32) -> Vec<f32> {
    let ranges = [(4.0, 8.0), (2.0, 4.5), (1.0, 7.0), (0.0, 2.5)];
    (0..rows)
        .flat_map(|_| {
            ranges
                .iter()
                .enumerate()
                .map(|(j, (lo, hi))| {
                    let u = (draws.next() + 1.0) / 2.0;
                    lo + u * (hi - lo) + if j == 2 { shift } else { 0.0 }
                })
                .collect::<Vec<_>>()
        })
        .collect()
}

fn json_request(id: &str, data: &[f32]) -> Value {
    json!({"id": id, "inputs": [{"name": "input", "shape": [data.len() / 4, 4], "datatype": "FP32", "data": data}]})
}

/// A binary-tensor request: its JSON header and the raw little-endian FP32 data after it.
fn binary_request(id: &str, data: &[f32]) -> (Vec<u8>, usize) {
    let header = json!({"id": id, "inputs": [{"name": "input", "shape": [data.len() / 4, 4], "datatype": "FP32",
        "parameters": {"binary_data_size": data.len() * 4}}]});
    let mut body = serde_json::to_vec(&header).unwrap();
    let header_length = body.len();
    body.extend(data.iter().flat_map(|v| v.to_le_bytes()));
    (body, header_length)
}

async fn post(dev: &Dev, model: &str, body: Vec<u8>, header_length: Option<usize>) {
    let mut request = dev
        .http
        .post(format!("{}/v2/models/{model}/infer", dev.base))
        .body(body);
    request = match header_length {
        Some(length) => request
            .header("content-type", "application/octet-stream")
            .header("inference-header-content-length", length),
        None => request.header("content-type", "application/json"),
    };
    let response = request.send().await.unwrap();
    assert_eq!(response.status(), 200, "{}", response.text().await.unwrap());
}

fn write(dir: &Path, name: &str, bytes: &[u8]) -> std::path::PathBuf {
    let path = dir.join(name);
    std::fs::write(&path, bytes).unwrap();
    path
}

/// Uploads `model`'s contract (capture `share`), optional baseline, then the model, and waits
/// for it to go live.
async fn deploy(dev: &Dev, files: &Path, model: &str, share: f64, baseline: Option<&[u8]>) {
    let contract = json!({"monitoring": {"capture_share": share}});
    let contract = write(
        files,
        &format!("{model}.contract.json"),
        contract.to_string().as_bytes(),
    );
    // dev's validator takes uploads in the order they were made: the contract and the
    // baseline are there when the model is checked.
    dev.upload(&contract, &format!("models/{model}/contract.json"), &[]);
    if let Some(baseline) = baseline {
        let path = write(files, &format!("{model}.baseline.jsonl"), baseline);
        dev.upload(&path, &format!("models/{model}/baseline.jsonl"), &[]);
    }
    let onnx = write(
        files,
        &format!("{model}.onnx"),
        &LinearSoftmax::iris(1).to_bytes(),
    );
    dev.upload(&onnx, &format!("models/{model}/model.onnx"), &[]);
    let (status, reason) = dev.outcome(&format!("models/{model}/model.onnx")).await;
    assert_eq!(status, "published", "{reason:?}");
}

fn python_reader(dir: &Path) -> Value {
    let output = Command::new(tool("python3"))
        .arg(workspace_root().join("tests/support/capture_reader.py"))
        .arg(dir)
        .output()
        .expect("run the capture reader");
    assert!(
        output.status.success(),
        "the SageMaker-schema reader refused a record: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    serde_json::from_slice(&output.stdout).unwrap()
}

#[tokio::test]
async fn captured_records_are_sagemakers_shape_one_per_sampled_request_none_lost_on_a_clean_stop() {
    let data = tempfile::tempdir().unwrap();
    let files = tempfile::tempdir().unwrap();
    // The default flush age (a minute) is never reached: every record is written at the stop.
    let mut dev = Dev::start(data.path(), &[]).await;
    deploy(&dev, files.path(), "iris", 0.5, None).await;

    let mut draws = Weights::new(7);
    let mut sampled: BTreeSet<String> = BTreeSet::new();
    let mut sent = Vec::new();
    for i in 0..160 {
        let (id, body, header_length) = if i % 5 == 4 {
            let id = format!("b-{i}");
            let (body, length) = binary_request(&id, &rows(&mut draws, 2, 0.0));
            (id, body, Some(length))
        } else {
            let id = format!("j-{i}");
            let body = serde_json::to_vec(&json_request(&id, &rows(&mut draws, 1, 0.0))).unwrap();
            (id, body, None)
        };
        // The documented sampling: the split's hash of the body under "capture/<model>".
        if bucket("capture/iris", &body) < 5_000 {
            sampled.insert(id.clone());
        }
        post(&dev, "iris", body.clone(), header_length).await;
        sent.push((id, body, header_length.is_some()));
    }
    assert!(
        (50..110).contains(&sampled.len()),
        "{} of 160 sampled at 50 %",
        sampled.len()
    );
    let metrics = dev.metrics().await;
    let counted = format!(
        "modelpipe_capture_sampled_total{{model=\"iris\",version=\"1\"}} {}",
        sampled.len()
    );
    assert!(metrics.contains(&counted), "{counted} in\n{metrics}");

    // A clean stop (SIGTERM, as Lambda stops an environment) writes what it holds.
    assert!(dev.terminate().success());
    let dev = Dev::start(data.path(), &[]).await;
    let fetched = tempfile::tempdir().unwrap();
    let copied = dev.aws(&[
        "s3",
        "cp",
        "--recursive",
        "s3://models/capture/",
        fetched.path().to_str().unwrap(),
    ]);
    assert!(
        copied.status.success(),
        "{}",
        String::from_utf8_lossy(&copied.stderr)
    );

    let read = python_reader(fetched.path());
    assert_eq!(
        read["records"],
        sampled.len(),
        "one record per sampled request"
    );
    for file in read["files"].as_array().unwrap() {
        let parts: Vec<&str> = file.as_str().unwrap().split('/').collect();
        assert_eq!(&parts[..2], ["iris", "1"], "{file}");
        assert_eq!(
            parts[2..6].iter().map(|p| p.len()).collect::<Vec<_>>(),
            [4, 2, 2, 2],
            "yyyy/mm/dd/hh: {file}"
        );
        assert!(parts[6].ends_with(".jsonl.gz"), "{file}");
    }
    let events = read["events"].as_array().unwrap();
    let ids: BTreeSet<String> = events
        .iter()
        .map(|e| e["inferenceId"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(ids, sampled, "exactly the sampled requests");
    for event in events {
        let id = event["inferenceId"].as_str().unwrap();
        let (_, body, binary) = sent.iter().find(|(sent, ..)| sent == id).unwrap();
        let input = &event["input"];
        if *binary {
            assert_eq!(input["encoding"], "BASE64");
            assert_eq!(input["content_type"], "application/octet-stream");
            let decoded = base64::engine::general_purpose::STANDARD
                .decode(input["data"].as_str().unwrap())
                .unwrap();
            assert_eq!(&decoded, body, "{id}: the body as sent");
        } else {
            assert_eq!(input["encoding"], "JSON");
            assert_eq!(input["data"].as_str().unwrap().as_bytes(), body, "{id}");
        }
        let output: Value =
            serde_json::from_str(event["output"]["data"].as_str().unwrap()).unwrap();
        assert_eq!(
            (output["id"].as_str(), output["model_version"].as_str()),
            (Some(id), Some("1"))
        );
        let ours = &event["modelpipe"];
        assert_eq!(
            (ours["model"].as_str(), ours["version"].as_u64()),
            (Some("iris"), Some(1))
        );
        assert_eq!(ours["alias"], "live");
    }
}

/// `modelctl drift MODEL` on dev's registry: its table's lines.
fn drift_table(data: &Path, model: &str, picture: &Path) -> String {
    let registry = data.join("registry");
    let output = Command::new(binary("modelctl"))
        .args(["drift", model, "--registry", registry.to_str().unwrap()])
        .args(["--picture", picture.to_str().unwrap()])
        .output()
        .expect("run modelctl drift");
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8(output.stdout).unwrap()
}

/// The table's input features marked as drifted.
fn drifted_inputs(table: &str) -> Vec<String> {
    table
        .lines()
        .filter(|l| l.starts_with("input[") && l.ends_with("DRIFTED"))
        .map(|l| l.split_whitespace().next().unwrap().to_string())
        .collect()
}

#[tokio::test]
async fn the_same_distribution_is_not_flagged_and_a_shifted_feature_is_alone() {
    let data = tempfile::tempdir().unwrap();
    let files = tempfile::tempdir().unwrap();
    let dev = Dev::start_with_env(
        data.path(),
        &["--rollout-tick-ms", "200"],
        &[("CAPTURE_FLUSH_MS", "200")],
    )
    .await;
    // One baseline dataset for both models: 300 requests of 4 rows.
    let mut draws = Weights::new(11);
    let baseline: Vec<u8> = (0..300)
        .flat_map(|i| {
            let mut line = json_request(&format!("b{i}"), &rows(&mut draws, 4, 0.0)).to_string();
            line.push('\n');
            line.into_bytes()
        })
        .collect();
    for model in ["steady", "shifted"] {
        deploy(&dev, files.path(), model, 1.0, Some(&baseline)).await;
    }
    // Live traffic from other draws: the same distribution, and the third feature moved by 2.
    let mut draws = Weights::new(23);
    for i in 0..150 {
        for (model, shift) in [("steady", 0.0), ("shifted", 2.0)] {
            let body = json_request(&format!("{model}-{i}"), &rows(&mut draws, 4, shift));
            post(&dev, model, serde_json::to_vec(&body).unwrap(), None).await;
        }
    }
    for model in ["steady", "shifted"] {
        let picture = files.path().join(format!("{model}.svg"));
        let table = wait_for(
            &format!("{model}'s 600 live rows profiled"),
            WAIT,
            || async {
                let table = drift_table(data.path(), model, &picture);
                table.contains("live 600 rows").then_some(table)
            },
        )
        .await;
        assert!(
            table.contains(&format!(
                "baseline 1200 rows (uploaded models/{model}/baseline.jsonl)"
            )),
            "{table}"
        );
        let expected: Vec<String> = match model {
            "steady" => vec![],
            _ => vec!["input[2]".into()],
        };
        assert_eq!(drifted_inputs(&table), expected, "{table}");
        let svg = std::fs::read_to_string(&picture).unwrap();
        assert!(
            svg.starts_with("<svg") && svg.contains("input[2]"),
            "a picture of each feature"
        );
    }
    // The publisher's schedule (dev's tick) exports the same: the alarm's metric and each
    // feature's distance. The reports of all 600 rows (`modelctl drift` wrote them, and every
    // tick since writes the same) say what the gauges must reach; an earlier tick saw fewer
    // rows, and a scrape may fall between two models of one tick.
    let registry = Registry::open(data.path().join("registry")).unwrap();
    let reports = wait_for("both models' reports of 600 rows", WAIT, || async {
        let reports: Vec<_> = ["shifted", "steady"]
            .iter()
            .filter_map(|m| {
                registry
                    .drift_report_stored(&m.parse().unwrap(), 1)
                    .unwrap()
            })
            .filter(|report| report.live_rows == 600)
            .collect();
        (reports.len() == 2).then_some(reports)
    })
    .await;
    let gauge = |text: &str, model: &str, feature: Option<&str>| -> Option<f64> {
        let line = match feature {
            None => format!("modelpipe_model_drift{{model=\"{model}\"}} "),
            Some(f) => format!(
                "modelpipe_feature_drift{{model=\"{model}\",version=\"1\",feature=\"{f}\"}} "
            ),
        };
        text.lines()
            .find_map(|l| l.strip_prefix(&line))
            .map(|value| value.parse().unwrap())
    };
    let text = wait_for("the drift gauges of every row", WAIT, || async {
        let text = dev.metrics().await;
        let current = reports.iter().all(|report| {
            let model = report.model.as_str();
            gauge(&text, model, None) == Some(report.max_flagged_distance())
                && report
                    .features
                    .iter()
                    .all(|f| gauge(&text, model, Some(&f.feature)) == Some(f.distance))
        });
        current.then_some(text)
    })
    .await;
    assert_eq!(gauge(&text, "steady", None), Some(0.0), "{text}");
    let shifted = |feature| gauge(&text, "shifted", Some(feature)).unwrap();
    assert!(shifted("input[2]") > 0.2, "{text}");
    assert!(shifted("input[0]") < 0.1, "{text}");
    assert_eq!(
        gauge(&text, "shifted", None),
        Some(shifted("input[2]")),
        "the model's drift is its most drifted flagged feature: {text}"
    );
}

/// Every captured record under `capture/iris/1/` of `bucket`: (key, the records' request ids).
async fn records_in(s3: &aws_sdk_s3::Client, bucket: &str) -> Vec<(String, Vec<String>)> {
    let listed = s3
        .list_objects_v2()
        .bucket(bucket)
        .prefix("capture/iris/1/")
        .send()
        .await
        .unwrap();
    let mut objects = Vec::new();
    for object in listed.contents() {
        let key = object.key().unwrap().to_string();
        let body = s3
            .get_object()
            .bucket(bucket)
            .key(&key)
            .send()
            .await
            .unwrap();
        let gzipped = body.body.collect().await.unwrap().into_bytes();
        let mut text = String::new();
        flate2::read::GzDecoder::new(&gzipped[..])
            .read_to_string(&mut text)
            .unwrap();
        let ids = text
            .lines()
            .map(|l| {
                let record: Value = serde_json::from_str(l).unwrap();
                record["eventMetadata"]["inferenceId"]
                    .as_str()
                    .unwrap()
                    .to_string()
            })
            .collect();
        objects.push((key, ids));
    }
    objects
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn in_lambda_records_are_written_after_the_answer_before_the_freeze_and_on_sigterm() {
    let (endpoint, _moto) = moto().await;
    let s3 = modelpipe_aws::s3_client(&aws_config(&endpoint).await);
    let bucket = unique_bucket("capture");
    s3.create_bucket().bucket(&bucket).send().await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let registry = Registry::open(dir.path()).unwrap();
    let model = "iris".parse().unwrap();
    let v1 = commit(&registry, &model, &LinearSoftmax::iris(1).to_bytes());
    publish(&registry, &model, v1);
    let mut env: Vec<(&str, String)> = local_aws_env();
    env.extend([
        ("MODEL_ROOT", dir.path().display().to_string()),
        ("PRELOAD_MODELS", "iris".into()),
        ("CAPTURE_SHARE", "1".into()),
        ("CAPTURE_BUCKET", bucket.clone()),
        ("AWS_ENDPOINT_URL", endpoint.clone()),
        ("RUST_LOG", "info".into()),
    ]);
    let request = |i: usize| {
        let body = json_request(
            &format!("req-{i}"),
            &[5.1, 3.5, 1.4, 0.2 + i as f32 / 100.0],
        );
        http_api_event("POST", "/v2/models/iris/infer", Some(&body.to_string()))
    };
    let timeout = Duration::from_secs(60);

    // Records due at once (by size: CAPTURE_OBJECT_BYTES=1): each is written after its answer
    // and before the environment freezes, so the object is there once the environment is frozen.
    let mut eager_env = env.clone();
    eager_env.push(("CAPTURE_OBJECT_BYTES", "1".into()));
    let eager = Environment::start(
        &binary("inference"),
        "2026/12/05/[$LATEST]eager",
        &eager_env,
    )
    .await;
    eager.invoke(request(0), timeout).await.unwrap();
    eager.until_free(timeout).await;
    let written = records_in(&s3, &bucket).await;
    assert_eq!(written.len(), 1, "{written:?}: {}", eager.log_tail());
    let (key, ids) = &written[0];
    assert_eq!(ids, &["req-0"]);
    assert!(
        key.contains("/2026-12-05---LATEST-eager-"),
        "the environment in the key: {key}"
    );
    drop(eager);

    // Not due (the default minute): held across invocations and freezes, written on SIGTERM.
    let mut lazy = Environment::start(&binary("inference"), "2026/12/05/[$LATEST]lazy", &env).await;
    for i in 1..=5 {
        lazy.invoke(request(i), timeout).await.unwrap();
        lazy.until_free(timeout).await;
    }
    assert_eq!(
        records_in(&s3, &bucket).await.len(),
        1,
        "nothing more before the shutdown"
    );
    let status = lazy.shut_down(Duration::from_secs(2)).await;
    assert!(
        status.is_some_and(|s| s.success()),
        "exited cleanly within Lambda's grace: {status:?}"
    );
    let ids: BTreeSet<String> = records_in(&s3, &bucket)
        .await
        .into_iter()
        .filter(|(key, _)| key.contains("lazy"))
        .flat_map(|(_, ids)| ids)
        .collect();
    let expected: BTreeSet<String> = (1..=5).map(|i| format!("req-{i}")).collect();
    assert_eq!(ids, expected, "no record lost on a clean shutdown");
}

/// The publisher's schedule on an S3-hosted registry (moto): a fleet's profiles of a past
/// window, read 16 at once, become one object and the environments' objects are deleted; the
/// windows a report reads are left as they are.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn on_an_s3_registry_a_past_windows_profiles_become_one_object() {
    let (endpoint, _moto) = moto().await;
    let sdk = aws_config(&endpoint).await;
    let s3 = modelpipe_aws::s3_client(&sdk);
    let bucket = unique_bucket("drift");
    s3.create_bucket().bucket(&bucket).send().await.unwrap();
    let files = tempfile::tempdir().unwrap();
    let cache = modelpipe_registry::FileCacheConfig {
        dir: files.path().to_path_buf(),
        bytes: None,
    };
    let registry = Registry::open_s3(&bucket, "registry", &cache, Some(sdk)).unwrap();
    let model: modelpipe_core::ModelName = "iris".parse().unwrap();
    let window = Duration::from_secs(3600);
    let now = std::time::SystemTime::now();
    let current = window_of(now, window);
    let fleet = 40;
    tokio::task::spawn_blocking(move || {
        let v1 = commit(&registry, &model, &LinearSoftmax::iris(1).to_bytes());
        publish(&registry, &model, v1);
        for w in [current - 2, current] {
            for e in 0..fleet {
                let mut profile = Profile::default();
                for row in 0..10 {
                    profile.rows += 1;
                    profile.feature("input[0]").add_number(f64::from(row + e));
                }
                let file = WindowProfile {
                    environment: format!("env-{e}"),
                    updated_at: Timestamp::now(),
                    profile,
                };
                registry.write_window_profile(&model, 1, w, &file).unwrap();
            }
        }
        let settings = |_| DriftSettings {
            threshold: 0.1,
            window,
            baseline_rows: 1_000_000,
        };
        let reports = DriftRequest::default()
            .apply(&registry, &settings, now)
            .unwrap();
        assert_eq!(reports[0].live_rows, 10 * fleet as u64);
        let (past, environments) = registry.window_profile(&model, 1, current - 2).unwrap();
        assert_eq!(
            (past.rows, environments),
            (10 * fleet as u64, fleet as usize)
        );
        registry
    })
    .await
    .unwrap();
    let keys = |prefix: String| {
        let s3 = s3.clone();
        let bucket = bucket.clone();
        async move {
            let listed = s3
                .list_objects_v2()
                .bucket(bucket)
                .prefix(prefix)
                .send()
                .await
                .unwrap();
            listed.contents().len()
        }
    };
    let drift = "registry/iris/drift/1";
    assert_eq!(keys(format!("{drift}/windows/{}/", current - 2)).await, 0);
    assert_eq!(
        keys(format!("{drift}/merged/{}.json", current - 2)).await,
        1
    );
    assert_eq!(
        keys(format!("{drift}/windows/{current}/")).await,
        fleet as usize
    );
}
