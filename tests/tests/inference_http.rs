//! The inference router on a real local HTTP port: Open Inference Protocol routes, answers checked
//! against probabilities computed here without tract, JSON errors, and hot reload of the alias.

use std::sync::Arc;
use std::time::Duration;

use modelpipe_core::ModelName;
use modelpipe_registry::Registry;
use modelpipe_testkit::onnx_build::LinearSoftmax;
use modelpipe_tests::{serving, wait_for};
use serde_json::{Value, json};

fn iris() -> ModelName {
    "iris".parse().unwrap()
}

fn commit(registry: &Registry, model: &LinearSoftmax) -> u64 {
    serving::commit(registry, &iris(), &model.to_bytes())
}

fn publish(registry: &Registry, version: u64) {
    serving::publish(registry, &iris(), version)
}

struct Served {
    _dir: tempfile::TempDir,
    registry: Registry,
    base: String,
    http: reqwest::Client,
}

async fn serve(versions: &[LinearSoftmax], env: &[(&str, &str)]) -> Served {
    let dir = tempfile::tempdir().unwrap();
    let registry = Registry::open(dir.path()).unwrap();
    for model in versions {
        let v = commit(&registry, model);
        publish(&registry, v);
    }
    let base = serving::serve(&registry, env).await;
    Served {
        _dir: dir,
        registry,
        base,
        http: reqwest::Client::new(),
    }
}

impl Served {
    async fn get(&self, path: &str) -> (u16, Value) {
        let response = self
            .http
            .get(format!("{}{path}", self.base))
            .send()
            .await
            .unwrap();
        (response.status().as_u16(), response.json().await.unwrap())
    }

    async fn post(&self, path: &str, body: impl Into<reqwest::Body>) -> (u16, Value) {
        let response = self
            .http
            .post(format!("{}{path}", self.base))
            .body(body)
            .send()
            .await
            .unwrap();
        (response.status().as_u16(), response.json().await.unwrap())
    }

    async fn infer(&self, path: &str, body: &Value) -> (u16, Value) {
        self.post(path, body.to_string()).await
    }
}

const ROWS: [[f32; 4]; 2] = [[5.1, 3.5, 1.4, 0.2], [6.7, 3.0, 5.2, 2.3]];

fn request(data: Value) -> Value {
    json!({"id": "r1", "inputs": [{"name": "input", "shape": [2, 4], "datatype": "FP32", "data": data}]})
}

fn assert_probabilities(answer: &Value, model: &LinearSoftmax) {
    let output = &answer["outputs"][0];
    assert_eq!(output["name"], "probabilities");
    assert_eq!(output["datatype"], "FP32");
    assert_eq!(output["shape"], json!([2, 3]));
    let got: Vec<f64> = output["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_f64().unwrap())
        .collect();
    let want: Vec<f64> = ROWS.iter().flat_map(|row| model.predict(row)).collect();
    for (g, w) in got.iter().zip(&want) {
        assert!((g - w).abs() < 1e-5, "got {got:?}, want {want:?}");
    }
}

#[tokio::test]
async fn live_inference_matches_probabilities_computed_independently() {
    let v1 = LinearSoftmax::iris(1);
    let s = serve(std::slice::from_ref(&v1), &[]).await;
    let flat: Vec<f32> = ROWS.iter().flatten().copied().collect();
    let (status, answer) = s
        .infer("/v2/models/iris/infer", &request(json!(flat)))
        .await;
    assert_eq!(status, 200, "{answer}");
    assert_eq!(
        (
            answer["model_name"].as_str(),
            answer["model_version"].as_str(),
            answer["id"].as_str()
        ),
        (Some("iris"), Some("1"), Some("r1"))
    );
    assert_probabilities(&answer, &v1);
    let (status, nested) = s
        .infer("/v2/models/iris/infer", &request(json!(ROWS)))
        .await;
    assert_eq!(status, 200);
    assert_eq!(nested["outputs"], answer["outputs"]);
}

#[tokio::test]
async fn each_input_shape_gets_its_own_plan_once_and_the_cache_counts_them() {
    let v1 = LinearSoftmax::iris(1);
    let s = serve(std::slice::from_ref(&v1), &[]).await;
    let plans = || async {
        let (status, meta) = s.get("/v2/models/iris").await;
        assert_eq!(status, 200, "{meta}");
        assert_eq!(meta["engine"]["loaded_from"], "model.nnef.tar", "{meta}");
        meta["engine"]["plans"].as_u64().unwrap()
    };
    let batch = |rows: usize| {
        let data: Vec<f32> = ROWS.iter().cycle().take(rows).flatten().copied().collect();
        json!({"inputs": [{"name": "input", "shape": [rows, 4], "datatype": "FP32", "data": data}]})
    };
    // Two rows: a plan beside the one the load made for the smoke input (one row).
    let (status, answer) = s
        .infer("/v2/models/iris/infer", &request(json!(ROWS)))
        .await;
    assert_eq!(status, 200, "{answer}");
    assert_probabilities(&answer, &v1);
    assert_eq!(plans().await, 2);
    for rows in [2, 1, 2, 1] {
        let (status, answer) = s.infer("/v2/models/iris/infer", &batch(rows)).await;
        assert_eq!(status, 200, "{answer}");
        assert_eq!(answer["outputs"][0]["shape"], json!([rows, 3]));
    }
    assert_eq!(plans().await, 2, "shapes seen before reuse their plans");
    let (status, answer) = s.infer("/v2/models/iris/infer", &batch(3)).await;
    assert_eq!(status, 200, "{answer}");
    let want: Vec<f64> = ROWS
        .iter()
        .cycle()
        .take(3)
        .flat_map(|row| v1.predict(row))
        .collect();
    let got: Vec<f64> = serde_json::from_value(answer["outputs"][0]["data"].clone()).unwrap();
    for (g, w) in got.iter().zip(&want) {
        assert!((g - w).abs() < 1e-5, "got {got:?}, want {want:?}");
    }
    assert_eq!(plans().await, 3);
}

#[tokio::test]
async fn a_pinned_version_answers_from_that_version() {
    let (v1, v2) = (LinearSoftmax::iris(1), LinearSoftmax::iris(2));
    let s = serve(&[v1.clone(), v2.clone()], &[]).await;
    let (status, answer) = s
        .infer("/v2/models/iris/versions/1/infer", &request(json!(ROWS)))
        .await;
    assert_eq!(status, 200, "{answer}");
    assert_eq!(answer["model_version"], "1");
    assert_probabilities(&answer, &v1);
    let (_, live) = s
        .infer("/v2/models/iris/infer", &request(json!(ROWS)))
        .await;
    assert_eq!(live["model_version"], "2");
    assert_probabilities(&live, &v2);
}

#[tokio::test]
async fn health_and_metadata_routes_answer() {
    let s = serve(&[LinearSoftmax::iris(1), LinearSoftmax::iris(2)], &[]).await;
    assert_eq!(s.get("/v2/health/live").await, (200, json!({"live": true})));
    assert_eq!(s.get("/v2/health/ready").await.0, 200);
    assert_eq!(s.get("/v2").await.1["name"], "modelpipe");
    let (status, meta) = s.get("/v2/models/iris").await;
    assert_eq!(status, 200);
    assert_eq!(meta["name"], "iris");
    assert_eq!(meta["platform"], "onnx");
    assert_eq!(meta["versions"], json!(["1", "2"]));
    assert_eq!(
        meta["inputs"],
        json!([{"name": "input", "datatype": "FP32", "shape": [-1, 4]}])
    );
    assert_eq!(
        meta["outputs"],
        json!([{"name": "probabilities", "datatype": "FP32", "shape": [-1, 3]}])
    );
    assert_eq!(s.get("/v2/models/iris/ready").await.0, 200);
    assert_eq!(
        s.get("/v2/models/iris/versions/1").await.1["versions"],
        json!(["1"])
    );
    assert_eq!(s.get("/v2/models/iris/versions/1/ready").await.0, 200);
}

#[tokio::test]
async fn bad_requests_get_clear_json_errors_and_the_model_keeps_serving() {
    let s = serve(&[LinearSoftmax::iris(1)], &[("MAX_REQUEST_BYTES", "4096")]).await;
    let cases = [
        (
            json!({"inputs": [{"name": "input", "shape": [1, 5], "datatype": "FP32", "data": [1, 2, 3, 4, 5]}]}),
            "shape [1,5], the model expects [-1,4]",
        ),
        (
            json!({"inputs": [{"name": "input", "shape": [1, 4], "datatype": "INT64", "data": [1, 2, 3, 4]}]}),
            "datatype INT64, the model expects FP32",
        ),
        (
            json!({"inputs": [{"name": "input", "shape": [2, 4], "datatype": "FP32", "data": [1, 2, 3, 4]}]}),
            "4 elements in data, shape [2,4] needs 8",
        ),
        (
            json!({"inputs": [{"name": "x", "shape": [1, 4], "datatype": "FP32", "data": [1, 2, 3, 4]}]}),
            "model has no input 'x'",
        ),
        (json!({"inputs": []}), "missing input 'input'"),
        (
            json!({"inputs": [{"name": "input", "shape": [1, 4], "datatype": "FP32", "data": [1, 2, 3, "x"]}]}),
            "element 3",
        ),
        (
            json!({"inputs": [{"name": "input", "shape": [1, 4], "datatype": "FP32", "data": [1, 2, 3, 4]}], "outputs": [{"name": "nope"}]}),
            "no output 'nope'",
        ),
        (json!({"nothing": true}), "not a valid inference request"),
    ];
    for (body, message) in cases {
        let (status, answer) = s.infer("/v2/models/iris/infer", &body).await;
        assert_eq!(status, 400, "{body} -> {answer}");
        assert!(
            answer["error"].as_str().unwrap().contains(message),
            "{answer} should say {message}"
        );
    }
    assert_eq!(s.post("/v2/models/iris/infer", "{not json").await.0, 400);
    let (status, answer) = s.post("/v2/models/iris/infer", vec![b' '; 5000]).await;
    assert_eq!(status, 413, "{answer}");
    assert!(
        answer["error"]
            .as_str()
            .unwrap()
            .contains("larger than 4096 bytes")
    );
    for path in [
        "/v2/models/nope/infer",
        "/v2/models/iris/versions/9/infer",
        "/v2/models/Bad%20Name/infer",
    ] {
        let (status, answer) = s.infer(path, &request(json!(ROWS))).await;
        assert_eq!(status, 404, "{path}: {answer}");
        assert!(answer["error"].is_string());
    }
    assert_eq!(s.get("/v2/models/nope").await.0, 404);
    assert_eq!(s.get("/v2/nowhere").await.0, 404);
    assert_eq!(
        s.infer("/v2/models/iris/infer", &request(json!(ROWS)))
            .await
            .0,
        200
    );
}

#[tokio::test]
async fn an_alias_move_is_served_without_failing_a_request() {
    let (v1, v2) = (LinearSoftmax::iris(1), LinearSoftmax::iris(2));
    let s = Arc::new(serve(std::slice::from_ref(&v1), &[("RELOAD_CHECK_MS", "20")]).await);
    assert_eq!(
        s.infer("/v2/models/iris/infer", &request(json!(ROWS)))
            .await
            .1["model_version"],
        "1"
    );
    let v2_version = commit(&s.registry, &v2);
    let client = {
        let s = s.clone();
        tokio::spawn(async move {
            let mut seen = Vec::new();
            while seen.last().map(String::as_str) != Some("2") {
                let (status, answer) = s
                    .infer("/v2/models/iris/infer", &request(json!(ROWS)))
                    .await;
                assert_eq!(status, 200, "{answer}");
                seen.push(answer["model_version"].as_str().unwrap().to_string());
                assert!(seen.len() < 5000, "v2 was never served");
            }
            seen
        })
    };
    publish(&s.registry, v2_version);
    let seen = tokio::time::timeout(Duration::from_secs(60), client)
        .await
        .unwrap()
        .unwrap();
    let first_v2 = seen.iter().position(|v| v == "2").unwrap();
    assert!(
        seen[..first_v2].iter().all(|v| v == "1") && seen[first_v2..].iter().all(|v| v == "2"),
        "{seen:?}"
    );
    assert_probabilities(
        &s.infer("/v2/models/iris/infer", &request(json!(ROWS)))
            .await
            .1,
        &v2,
    );
}

#[tokio::test]
async fn a_version_that_fails_to_load_is_never_swapped_in() {
    let v1 = LinearSoftmax::iris(1);
    let s = serve(std::slice::from_ref(&v1), &[("RELOAD_CHECK_MS", "20")]).await;
    assert_eq!(
        s.infer("/v2/models/iris/infer", &request(json!(ROWS)))
            .await
            .1["model_version"],
        "1"
    );
    let v2 = commit(&s.registry, &LinearSoftmax::iris(2));
    publish(&s.registry, v2);
    // Altered on disk after the publisher checked it: the inference side must notice.
    std::fs::write(
        s.registry.model_file(&iris(), v2).unwrap(),
        b"corrupted after publish",
    )
    .unwrap();
    let error = wait_for(
        "the failed load to show in metadata",
        Duration::from_secs(30),
        || async {
            let (status, answer) = s
                .infer("/v2/models/iris/infer", &request(json!(ROWS)))
                .await;
            assert_eq!(
                (status, answer["model_version"].as_str()),
                (200, Some("1")),
                "{answer}"
            );
            let meta = s.get("/v2/models/iris").await.1;
            meta["load_error"]["error"].as_str().map(str::to_string)
        },
    )
    .await;
    assert!(error.contains("no longer matches its manifest"), "{error}");
    let meta = s.get("/v2/models/iris").await.1;
    assert_eq!(
        (
            meta["live_version"].as_str(),
            meta["loaded_version"].as_str()
        ),
        (Some("2"), Some("1"))
    );
    assert_probabilities(
        &s.infer("/v2/models/iris/infer", &request(json!(ROWS)))
            .await
            .1,
        &v1,
    );
}

/// The versions of `model` in memory, as its metadata reports them.
async fn resident(s: &Served, model: &str) -> Vec<String> {
    let (status, meta) = s.get(&format!("/v2/models/{model}")).await;
    assert_eq!(status, 200, "{meta}");
    serde_json::from_value(meta["resident_versions"].clone()).unwrap()
}

#[tokio::test]
async fn a_small_model_cache_evicts_the_least_recently_used_model() {
    let bytes = LinearSoftmax::iris(1).to_bytes();
    // Room for two models, each with two plans: the load's (batch 1) and these requests' (2).
    let budget = (4 * bytes.len()).to_string();
    let s = serve(&[], &[("MODEL_CACHE_BYTES", &budget)]).await;
    for model in ["a", "b", "c"] {
        let name: ModelName = model.parse().unwrap();
        let version = serving::commit(&s.registry, &name, &bytes);
        serving::publish(&s.registry, &name, version);
    }
    let infer = |model: &'static str| {
        let s = &s;
        async move {
            let (status, answer) = s
                .infer(&format!("/v2/models/{model}/infer"), &request(json!(ROWS)))
                .await;
            assert_eq!(status, 200, "{answer}");
        }
    };
    infer("a").await;
    infer("b").await;
    infer("a").await; // b is now the least recently used
    infer("c").await;
    assert_eq!(
        (
            resident(&s, "a").await,
            resident(&s, "b").await,
            resident(&s, "c").await
        ),
        (vec!["1".to_string()], vec![], vec!["1".to_string()])
    );
    // An evicted model loads again on its next request; pinned versions share the cache.
    let (status, answer) = s
        .infer("/v2/models/b/versions/1/infer", &request(json!(ROWS)))
        .await;
    assert_eq!((status, answer["model_version"].as_str()), (200, Some("1")));
    infer("b").await;
    assert_eq!(resident(&s, "b").await, ["1"]);
    assert_eq!(
        resident(&s, "a").await,
        Vec::<String>::new(),
        "a was least recently used"
    );
}

#[tokio::test]
async fn preloaded_models_are_in_memory_before_any_request_and_a_missing_one_breaks_nothing() {
    let s = serve(
        &[LinearSoftmax::iris(1)],
        &[
            ("PRELOAD_MODELS", "iris,absent"),
            ("MODEL_CACHE_BYTES", "0"),
        ],
    )
    .await;
    let (_, meta) = s.get("/v2/models/iris").await;
    assert_eq!(meta["loaded_version"], "1", "{meta}");
    assert_eq!(
        resident(&s, "iris").await,
        ["1"],
        "kept despite a zero cache budget"
    );
    assert_eq!(s.get("/v2/models/absent").await.0, 404);
    let (status, answer) = s
        .infer("/v2/models/iris/infer", &request(json!(ROWS)))
        .await;
    assert_eq!(status, 200, "{answer}");
}

/// Sends `request` raw on a new connection, leaves the connection open (the body unfinished),
/// and returns the first bytes of the answer.
async fn answer_to_unfinished(address: &str, request: &[u8]) -> String {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut socket = tokio::net::TcpStream::connect(address).await.unwrap();
    socket.write_all(request).await.unwrap();
    let mut answer = vec![0u8; 512];
    let n = socket.read(&mut answer).await.unwrap();
    String::from_utf8_lossy(&answer[..n]).into_owned()
}

#[tokio::test]
async fn an_oversized_body_is_refused_with_413_before_it_is_read() {
    let s = serve(&[LinearSoftmax::iris(1)], &[("MAX_REQUEST_BYTES", "1000")]).await;
    let address = s.base.trim_start_matches("http://").to_string();

    // A declared length over the limit and not one byte of body sent: the answer cannot have
    // waited for the body.
    let answer = answer_to_unfinished(
        &address,
        b"POST /v2/models/iris/infer HTTP/1.1\r\nhost: x\r\ncontent-type: application/json\r\ncontent-length: 1000000000\r\n\r\n",
    )
    .await;
    assert!(answer.starts_with("HTTP/1.1 413"), "{answer}");
    assert!(answer.contains("larger than 1000 bytes"), "{answer}");

    // No declared length (chunked): refused once past the limit, though the body never ends.
    let chunked = format!(
        "POST /v2/models/iris/infer HTTP/1.1\r\nhost: x\r\ntransfer-encoding: chunked\r\n\r\n7d0\r\n{}\r\n",
        " ".repeat(2000)
    );
    let answer = answer_to_unfinished(&address, chunked.as_bytes()).await;
    assert!(answer.starts_with("HTTP/1.1 413"), "{answer}");
    // The model keeps serving.
    let (status, _) = s
        .infer("/v2/models/iris/infer", &request(json!(ROWS)))
        .await;
    assert_eq!(status, 200);
}
