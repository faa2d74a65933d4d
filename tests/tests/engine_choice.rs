//! The engine decision at ingest, on real models: what only ONNX Runtime loads goes to it, the
//! measured choice follows the measurements, a planted disagreement hands the model to the
//! reference, `engine=` forces one, and the node limit and load budget bound the work. The
//! validator-level cases go through `modelctl dev` with the stock `aws` CLI.

use std::time::Duration;

use modelpipe_engine::checks::engines::{EngineChoice, decide};
use modelpipe_engine::checks::{CheckError, Expectations, check_model};
use modelpipe_engine::{EngineKind, Limits};
use modelpipe_testkit::onnx_build::{LinearSoftmax, Mlp, hostile, mobilenet_v2};
use modelpipe_tests::dev::Dev;
use modelpipe_tests::workspace_root;
use serde_json::json;

fn write(dir: &tempfile::TempDir, name: &str, bytes: &[u8]) -> std::path::PathBuf {
    let path = dir.path().join(name);
    std::fs::write(&path, bytes).unwrap();
    path
}

fn choose(path: &std::path::Path) -> EngineChoice {
    check_model(path, Expectations::default()).unwrap().choice
}

#[test]
fn a_model_only_onnxruntime_loads_goes_to_onnxruntime_with_tracts_reason() {
    let path = workspace_root().join("tests/corpus/sk_logreg_scaler/model.onnx");
    let choice = choose(&path);
    assert_eq!(choice.engine, EngineKind::Onnxruntime);
    let tract_error = choice.tract.unwrap().error.unwrap();
    assert!(tract_error.contains("Scaler"), "{tract_error}");
    assert!(
        choice.reason.starts_with("tract cannot serve it"),
        "{}",
        choice.reason
    );
    assert!(choice.agreement.is_none());
}

/// Above `compare_max_bytes` (a quarter of the validator's memory in Lambda) ingest holds one
/// engine's copy: ONNX Runtime alone, and the manifest's reason says why nothing was compared;
/// a model ONNX Runtime cannot load falls to tract, still one at a time.
#[test]
fn a_model_too_large_to_hold_twice_is_loaded_in_one_engine_with_the_reason() {
    let dir = tempfile::tempdir().unwrap();
    let small = Limits {
        compare_max_bytes: 1,
        ..Limits::default()
    };
    let mlp = write(&dir, "mlp.onnx", &Mlp::new(&[4, 64, 3], 1).to_bytes());
    let expect = Expectations {
        limits: small,
        ..Default::default()
    };
    let checked = check_model(&mlp, expect).unwrap();
    let choice = &checked.choice;
    assert_eq!(choice.engine, EngineKind::Onnxruntime);
    assert!(
        choice.reason.contains("without a comparison"),
        "{}",
        choice.reason
    );
    assert!(
        choice.tract.is_none() && choice.agreement.is_none(),
        "{choice:?}"
    );
    // Its optimised graph is not timed either: that would hold a second copy.
    let out = tempfile::tempdir().unwrap();
    let compiled = checked.compile(out.path()).unwrap();
    assert!(compiled.optimized.is_none());
    assert!(compiled.no_artifact.unwrap().contains("loads twice"));
    // Under the bound, both engines are compared as before.
    let both = choose(&mlp);
    assert!(both.agreement.is_some(), "{both:?}");
}

#[test]
fn when_both_load_the_choice_is_the_measured_one_and_the_numbers_are_recorded() {
    let dir = tempfile::tempdir().unwrap();
    // A small MLP (tract's strength) and a MobileNetV2-shaped CNN (ONNX Runtime's).
    let mlp = write(&dir, "mlp.onnx", &Mlp::new(&[4, 64, 64, 3], 1).to_bytes());
    let cnn = write(&dir, "cnn.onnx", &mobilenet_v2(1));
    for path in [&mlp, &cnn] {
        let choice = choose(path);
        let agreement = choice
            .agreement
            .clone()
            .expect("both engines ran the probes");
        assert!(agreement.agree, "{agreement:?}");
        assert!(agreement.probes >= 2, "{agreement:?}");
        let tract_us = choice.tract.as_ref().and_then(|t| t.run_us).unwrap();
        let ort_us = choice.onnxruntime.as_ref().and_then(|t| t.run_us).unwrap();
        assert_eq!(choice.engine, decide(true, tract_us, ort_us), "{choice:?}");
    }
    // ONNX Runtime runs this CNN ~2.5-3× faster than tract here (BENCHMARKS.md): far beyond
    // the 10 % margin that keeps tract, whatever the noise.
    assert_eq!(choose(&cnn).engine, EngineKind::Onnxruntime);
}

#[test]
fn a_sequence_length_baked_by_the_exporter_is_found_for_the_smoke_test_and_recorded() {
    // torch's legacy exporter declared the sequence dynamic but reshapes to the example's 7.
    let path = workspace_root().join("tests/corpus/torch_encoder_legacy/model.onnx");
    let checked = check_model(&path, Expectations::default()).unwrap();
    assert_eq!(checked.engine.smoke_shapes(), Some(&[vec![1, 7]][..]));
    let version = modelpipe_validator::version::new_version(
        &checked,
        Default::default(),
        Default::default(),
        None,
    );
    assert_eq!(version.smoke_shapes, Some(vec![vec![1, 7]]));
    // A model that runs at 1 records nothing.
    let dynamo = workspace_root().join("tests/corpus/torch_encoder_dynamo/model.onnx");
    let checked = check_model(&dynamo, Expectations::default()).unwrap();
    assert_eq!(checked.engine.smoke_shapes(), None);
}

#[test]
fn a_planted_disagreement_hands_the_model_to_the_reference() {
    let dir = tempfile::tempdir().unwrap();
    let path = write(&dir, "noise.onnx", &hostile::random_noise());
    let choice = choose(&path);
    assert_eq!(choice.engine, EngineKind::Onnxruntime);
    let agreement = choice.agreement.unwrap();
    assert!(!agreement.agree);
    assert!(
        agreement
            .difference
            .as_deref()
            .unwrap()
            .contains("output 'y'"),
        "{agreement:?}"
    );
    assert!(choice.reason.contains("disagree"), "{}", choice.reason);
}

#[test]
fn the_forced_engine_is_the_only_one_tried() {
    let dir = tempfile::tempdir().unwrap();
    let path = write(&dir, "cnn.onnx", &mobilenet_v2(1));
    for engine in EngineKind::ALL {
        let expect = Expectations {
            engine: Some(engine),
            ..Default::default()
        };
        let checked = check_model(&path, expect).unwrap();
        assert_eq!(checked.engine.kind(), engine);
        assert_eq!(checked.choice.engine, engine);
        assert_eq!(
            checked.choice.reason,
            format!("engine={engine} in the upload's metadata")
        );
    }
    let scaler = workspace_root().join("tests/corpus/sk_logreg_scaler/model.onnx");
    let expect = Expectations {
        engine: Some(EngineKind::Tract),
        ..Default::default()
    };
    let refused = check_model(&scaler, expect).unwrap_err();
    assert!(refused.to_string().contains("Scaler"), "{refused}");
}

#[test]
fn the_node_limit_refuses_unread_and_the_load_budget_gives_up_on_a_slow_engine() {
    let dir = tempfile::tempdir().unwrap();
    let chain = write(&dir, "chain.onnx", &hostile::deep_chain(20_000));
    let refused = check_model(&chain, Expectations::default()).unwrap_err();
    assert!(matches!(refused, CheckError::Load(_)), "{refused:?}");
    assert_eq!(
        refused.to_string(),
        "the graph has 20000 nodes, more than MAX_MODEL_NODES (10000)"
    );
    // 10,000 chained nodes: tract took 2.3 s to load them here (its load grows faster than
    // linearly), ONNX Runtime 0.2 s. With a budget of 1 s tract is given up on; ONNX Runtime serves.
    let chain = write(&dir, "chain10k.onnx", &hostile::deep_chain(10_000));
    let expect = Expectations {
        limits: Limits {
            max_nodes: 10_000,
            load_budget: Duration::from_secs(1),
            ..Limits::default()
        },
        ..Default::default()
    };
    let checked = check_model(&chain, expect).unwrap();
    assert_eq!(checked.choice.engine, EngineKind::Onnxruntime);
    let tract_error = checked.choice.tract.unwrap().error.unwrap();
    assert!(
        tract_error.contains("did not load the model within MODEL_LOAD_BUDGET_MS (1000 ms)"),
        "{tract_error}"
    );
}

#[tokio::test]
async fn through_dev_engine_metadata_is_honoured_and_a_huge_graph_leaves_live_serving() {
    let data = tempfile::tempdir().unwrap();
    let dev = Dev::start(data.path(), &[]).await;
    let files = tempfile::tempdir().unwrap();
    let iris = write(&files, "iris.onnx", &LinearSoftmax::iris(1).to_bytes());
    let key = "models/iris/model.onnx";
    dev.upload(&iris, key, &["--metadata", "engine=onnxruntime"]);
    assert_eq!(dev.outcome(key).await.0, "published");
    let (_, metadata) = dev.get("/v2/models/iris").await;
    assert_eq!(
        metadata["engine_choice"]["engine"], "onnxruntime",
        "{metadata}"
    );
    assert_eq!(
        metadata["engine_choice"]["reason"],
        "engine=onnxruntime in the upload's metadata"
    );
    let request = json!({"inputs": [{"name": "input", "shape": [1, 4], "datatype": "FP32", "data": [5.1, 3.5, 1.4, 0.2]}]});
    let (status, answer) = dev.post("/v2/models/iris/infer", &request).await;
    assert_eq!(status, 200, "{answer}");
    let (_, metadata) = dev.get("/v2/models/iris").await;
    assert_eq!(metadata["engine"]["name"], "onnxruntime", "{metadata}");

    // An engine modelpipe does not have: refused, saying which ones it has.
    let v2 = write(&files, "iris2.onnx", &LinearSoftmax::iris(2).to_bytes());
    dev.upload(&v2, key, &["--metadata", "engine=tensorrt"]);
    let (status, reason) = dev.outcome_after(key, "published").await;
    assert_eq!(status, "rejected");
    assert!(reason.unwrap().contains("is not tract or onnxruntime"));

    // 20,000 chained nodes (a 458 KB file that took tract 16 s to load): refused unread.
    let chain = write(&files, "chain.onnx", &hostile::deep_chain(20_000));
    dev.upload(&chain, "models/iris/chain.onnx", &[]);
    let (status, reason) = dev.outcome("models/iris/chain.onnx").await;
    assert_eq!(status, "rejected");
    assert!(
        reason.unwrap().contains("more than MAX_MODEL_NODES"),
        "the reason names the limit"
    );
    let (status, answer) = dev.post("/v2/models/iris/infer", &request).await;
    assert_eq!(status, 200, "{answer}");
    assert_eq!(answer["model_version"], "1");
}
