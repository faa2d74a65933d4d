//! Runs tests/python/test_tritonclient.py: the stock Python `tritonclient[http]` against the
//! inference server, JSON and binary tensors, answers checked against onnxruntime on the same
//! model files, and every model of the corpus of converter output (tests/corpus). The registry and
//! server are set up here; the Python suite's verdict is the test's.

use modelpipe_core::ModelName;
use modelpipe_engine::EngineKind;
use modelpipe_registry::Registry;
use modelpipe_testkit::onnx_build::{Identity, LinearSoftmax, Mlp};
use modelpipe_tests::{serving, tool, workspace_root};

fn name(s: &str) -> ModelName {
    s.parse().unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tritonclient_suite_passes_against_the_server() {
    let dir = tempfile::tempdir().unwrap();
    let registry = Registry::open(dir.path()).unwrap();
    let models = [
        ("iris", LinearSoftmax::iris(1).to_bytes()),
        ("iris", LinearSoftmax::iris(2).to_bytes()),
        ("mlp", Mlp::new(&[4, 64, 64, 3], 3).to_bytes()),
        ("identity", Identity::all_types(3).to_bytes()),
    ];
    for (model, bytes) in &models {
        let version = serving::commit(&registry, &name(model), bytes);
        serving::publish(&registry, &name(model), version);
    }
    let identity = Identity::all_types(3).to_bytes();
    let version = serving::commit_in(
        &registry,
        &name("identity-ort"),
        &identity,
        Some(EngineKind::Onnxruntime),
    );
    serving::publish(&registry, &name("identity-ort"), version);
    // The corpus of converter output, each in the engine the validator chooses for it.
    let mut corpus = Vec::new();
    for entry in std::fs::read_dir(workspace_root().join("tests/corpus")).unwrap() {
        let dir = entry.unwrap().path();
        let model = dir.file_name().unwrap().to_string_lossy().replace('_', "-");
        let bytes = std::fs::read(dir.join("model.onnx")).unwrap();
        let version = serving::commit_in(&registry, &name(&model), &bytes, None);
        serving::publish(&registry, &name(&model), version);
        corpus.push(format!("{model}={}", dir.display()));
    }
    let base = serving::serve(&registry, &[]).await;
    let output = tokio::process::Command::new(tool("python"))
        .arg(workspace_root().join("tests/python/test_tritonclient.py"))
        .env("MODELPIPE_URL", base.trim_start_matches("http://"))
        .env("MODELPIPE_REGISTRY", dir.path())
        .env("MODELPIPE_CORPUS", corpus.join(","))
        .output()
        .await
        .expect("run python (scripts/setup.sh installs it in .venv)");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        output.status.success(),
        "tritonclient suite failed:\n{stderr}"
    );
    assert!(stderr.contains("OK"), "{stderr}");
}
