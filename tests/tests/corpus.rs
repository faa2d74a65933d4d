//! The corpus of real converter output (`tests/corpus`, written once by
//! `scripts/make_corpus.py`: skl2onnx, onnxmltools with XGBoost and LightGBM, torch with both
//! exporters): every model goes through `modelctl dev` as a user's upload does — `aws s3 cp`, the
//! validator, the registry, inference over HTTP — and must answer as onnxruntime answered when
//! the corpus was made.

use std::path::PathBuf;

use modelpipe_core::ModelName;
use modelpipe_registry::{Registry, UploadStatus};
use modelpipe_tests::dev::{Dev, WAIT};
use modelpipe_tests::{wait_for, workspace_root};
use serde_json::{Value, json};

struct Case {
    name: String,
    dir: PathBuf,
    case: Value,
}

fn cases() -> Vec<Case> {
    let root = workspace_root().join("tests/corpus");
    let mut cases: Vec<Case> = std::fs::read_dir(&root)
        .expect("tests/corpus")
        .flatten()
        .filter(|e| e.path().join("case.json").is_file())
        .map(|e| Case {
            name: e.file_name().to_string_lossy().replace('_', "-"),
            dir: e.path(),
            case: serde_json::from_slice(&std::fs::read(e.path().join("case.json")).unwrap())
                .unwrap(),
        })
        .collect();
    cases.sort_by(|a, b| a.name.cmp(&b.name));
    assert!(cases.len() >= 20, "the corpus has {} cases", cases.len());
    cases
}

/// The request for a case's inputs. A float input holding NaN (JSON has none) travels as a
/// binary tensor; every other input as JSON.
fn request(case: &Value) -> (Vec<u8>, Option<usize>) {
    let mut binary = Vec::new();
    let inputs: Vec<Value> = case["inputs"]
        .as_array()
        .unwrap()
        .iter()
        .map(|input| {
            let data = input["data"].as_array().unwrap();
            if !data.iter().any(Value::is_null) {
                return input.clone();
            }
            assert_eq!(input["datatype"], "FP32");
            let start = binary.len();
            for x in data {
                binary.extend_from_slice(&(x.as_f64().unwrap_or(f64::NAN) as f32).to_le_bytes());
            }
            json!({
                "name": input["name"], "datatype": "FP32", "shape": input["shape"],
                "parameters": {"binary_data_size": binary.len() - start},
            })
        })
        .collect();
    let mut body = serde_json::to_vec(&json!({ "inputs": inputs })).unwrap();
    if binary.is_empty() {
        return (body, None);
    }
    let json_length = body.len();
    body.extend_from_slice(&binary);
    (body, Some(json_length))
}

/// `got` matches onnxruntime's `want`: floats to 1e-4 + 1e-3·|want| (both engines compute in FP32
/// but sum in other orders), labels exactly.
fn assert_same(case: &str, got: &Value, want: &Value) {
    let name = &want["name"];
    assert_eq!(got["datatype"], want["datatype"], "{case} {name}");
    assert_eq!(got["shape"], want["shape"], "{case} {name}");
    let (got, want) = (
        got["data"].as_array().unwrap(),
        want["data"].as_array().unwrap(),
    );
    assert_eq!(got.len(), want.len(), "{case} {name}");
    for (i, (g, w)) in got.iter().zip(want).enumerate() {
        match (g.as_f64(), w.as_f64()) {
            (Some(g), Some(w)) if w.fract() != 0.0 || g.fract() != 0.0 => assert!(
                (g - w).abs() <= 1e-4 + 1e-3 * w.abs(),
                "{case} {name}[{i}]: {g} vs onnxruntime's {w}"
            ),
            _ => assert_eq!(g, w, "{case} {name}[{i}]"),
        }
    }
}

/// Every output of the case is in `answer`, as onnxruntime gave it.
fn assert_answers(name: &str, answer: &Value, case: &Value) {
    for want in case["outputs"].as_array().unwrap() {
        let got = answer["outputs"]
            .as_array()
            .unwrap()
            .iter()
            .find(|o| o["name"] == want["name"])
            .unwrap_or_else(|| panic!("{name}: no output {} in {answer}", want["name"]));
        assert_same(name, got, want);
    }
}

async fn infer(dev: &Dev, model: &str, case: &Value) -> (u16, Value) {
    let (body, json_length) = request(case);
    let mut post = dev
        .http
        .post(format!("{}/v2/models/{model}/infer", dev.base))
        .body(body);
    if let Some(length) = json_length {
        post = post
            .header("content-type", "application/octet-stream")
            .header("inference-header-content-length", length.to_string());
    }
    let response = post.send().await.unwrap();
    (response.status().as_u16(), response.json().await.unwrap())
}

/// Waits until the validator has finished with `key` of `model`: published or rejected.
async fn finished(registry: &Registry, model: &str, key: &str) -> UploadStatus {
    let model: ModelName = model.parse().unwrap();
    wait_for(
        &format!("the validator's outcome for {key}"),
        WAIT,
        || async {
            registry
                .upload_record(&model, key)
                .unwrap()
                .map(|r| r.status)
                .filter(|s| matches!(s, UploadStatus::Published | UploadStatus::Rejected))
        },
    )
    .await
}

#[tokio::test]
async fn every_corpus_model_goes_live_and_answers_as_onnxruntime_does() {
    let data = tempfile::tempdir().unwrap();
    let dev = Dev::start(data.path(), &[]).await;
    let registry = Registry::open(data.path().join("registry")).unwrap();
    // One `aws s3 cp --recursive` of the whole corpus, laid out as models/<name>/model.onnx.
    let uploads = tempfile::tempdir().unwrap();
    let cases = cases();
    for Case { name, dir, .. } in &cases {
        std::fs::create_dir(uploads.path().join(name)).unwrap();
        std::fs::copy(
            dir.join("model.onnx"),
            uploads.path().join(name).join("model.onnx"),
        )
        .unwrap();
    }
    let out = dev.aws(&[
        "s3",
        "cp",
        "--recursive",
        uploads.path().to_str().unwrap(),
        "s3://models/models/",
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let mut engines = Vec::new();
    for Case { name, case, .. } in cases {
        let key = format!("models/{name}/model.onnx");
        let status = finished(&registry, &name, &key).await;
        let rejection = registry.rejections(&name.parse().unwrap()).unwrap();
        assert_eq!(status, UploadStatus::Published, "{name}: {rejection:?}");

        let (code, answer) = infer(&dev, &name, &case).await;
        assert_eq!(code, 200, "{name}: {answer}");
        assert_eq!(answer["model_version"], "1", "{name}");
        assert_answers(&name, &answer, &case);

        let (_, metadata) = dev.get(&format!("/v2/models/{name}")).await;
        for want in case["outputs"].as_array().unwrap() {
            let spec = metadata["outputs"]
                .as_array()
                .unwrap()
                .iter()
                .find(|o| o["name"] == want["name"])
                .unwrap();
            // A ZipMap output is served as [batch, classes] FP32, labels in the metadata.
            if let Some(labels) = want.get("class_labels") {
                assert_eq!(&spec["class_labels"], labels, "{name}");
                assert_eq!(spec["datatype"], "FP32", "{name}");
                assert_eq!(spec["shape"][1], labels.as_array().unwrap().len(), "{name}");
            } else {
                assert!(spec.get("class_labels").is_none(), "{name}");
            }
        }
        let engine = metadata["engine_choice"]["engine"]
            .as_str()
            .unwrap()
            .to_string();
        assert_eq!(metadata["engine"]["name"], engine, "{name}: {metadata}");
        engines.push((name, engine));
    }
    // Both engines serve part of this corpus (which one is measured per model).
    eprintln!("engines chosen: {engines:?}");
    assert!(
        engines.iter().any(|(_, e)| e == "onnxruntime"),
        "{engines:?}"
    );
}

#[test]
fn requests_with_nan_travel_as_binary_tensors() {
    let case = json!({"inputs": [{"name": "X", "datatype": "FP32", "shape": [1, 2], "data": [1.5, null]}]});
    let (body, json_length) = request(&case);
    let length = json_length.unwrap();
    let header: Value = serde_json::from_slice(&body[..length]).unwrap();
    assert_eq!(header["inputs"][0]["parameters"]["binary_data_size"], 8);
    let tail = &body[length..];
    assert_eq!(f32::from_le_bytes(tail[..4].try_into().unwrap()), 1.5);
    assert!(f32::from_le_bytes(tail[4..].try_into().unwrap()).is_nan());
}

/// tract's side of the corpus: every model tract can load, committed with `engine=tract` and
/// served over HTTP, answers as onnxruntime did. This is where tract needs modelpipe's help with
/// converter output: unnamed batch dimensions, ZipMap outputs, symbolic-integer labels.
#[tokio::test]
async fn every_corpus_model_tract_loads_answers_as_onnxruntime_does_in_tract() {
    use modelpipe_engine::EngineKind;
    use modelpipe_engine::checks::{Expectations, check_model};
    use modelpipe_tests::serving;

    let dir = tempfile::tempdir().unwrap();
    let registry = Registry::open(dir.path()).unwrap();
    let tract = Expectations {
        engine: Some(EngineKind::Tract),
        ..Default::default()
    };
    let mut served = Vec::new();
    for Case { name, dir, case } in cases() {
        let path = dir.join("model.onnx");
        if check_model(&path, tract).is_err() {
            continue;
        }
        let model = name.parse().unwrap();
        let version = serving::commit_in(
            &registry,
            &model,
            &std::fs::read(&path).unwrap(),
            Some(EngineKind::Tract),
        );
        serving::publish(&registry, &model, version);
        served.push((name, case));
    }
    let names: Vec<&str> = served.iter().map(|(n, _)| n.as_str()).collect();
    // Forests, boosting, MLPs (sklearn, XGBoost, LightGBM, torch), a CNN, a transformer.
    for expected in [
        "sk-rf-clf",
        "sk-mlp-clf",
        "xgb-clf",
        "lgbm-clf",
        "torch-cnn-legacy",
        "torch-encoder-dynamo",
    ] {
        assert!(
            names.contains(&expected),
            "tract no longer loads {expected}: {names:?}"
        );
    }
    let base = serving::serve(&registry, &[]).await;
    let http = reqwest::Client::new();
    for (name, case) in &served {
        let (body, json_length) = request(case);
        let mut post = http
            .post(format!("{base}/v2/models/{name}/infer"))
            .body(body);
        if let Some(length) = json_length {
            post = post.header("inference-header-content-length", length.to_string());
        }
        let response = post.send().await.unwrap();
        assert_eq!(response.status(), 200, "{name}");
        let answer: Value = response.json().await.unwrap();
        assert_answers(name, &answer, case);
        let metadata: Value = http
            .get(format!("{base}/v2/models/{name}"))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        assert_eq!(metadata["engine"]["name"], "tract", "{name}");
    }
}
