//! schemathesis (pip, installed by scripts/setup.sh) against the Open Inference Protocol spec in
//! `tests/openapi/`, on the router serving a real model: valid and invalid requests generated
//! from the spec, and not one answer may be a server error. The seed is fixed so a failure
//! replays; `MODELPIPE_SCHEMATHESIS_EXAMPLES` runs longer (default 60 per operation).

use std::process::Command;

use modelpipe_registry::Registry;
use modelpipe_testkit::onnx_build::LinearSoftmax;
use modelpipe_tests::serving::{commit, publish, serve};
use modelpipe_tests::{tool, workspace_root};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn generated_requests_never_get_a_server_error() {
    let dir = tempfile::tempdir().unwrap();
    let registry = Registry::open(dir.path()).unwrap();
    let iris = "iris".parse().unwrap();
    let version = commit(&registry, &iris, &LinearSoftmax::iris(1).to_bytes());
    publish(&registry, &iris, version);
    let base = serve(&registry, &[]).await;
    let examples = std::env::var("MODELPIPE_SCHEMATHESIS_EXAMPLES").unwrap_or_else(|_| "60".into());
    let spec = workspace_root().join("tests/openapi/open-inference-protocol-v2.yaml");
    let out = tokio::task::spawn_blocking(move || {
        Command::new(tool("schemathesis"))
            .arg("run")
            .arg(spec)
            .args(["--url", &base, "--checks", "not_a_server_error"])
            .args([
                "--max-examples",
                &examples,
                "--seed",
                "20261128",
                "--workers",
                "2",
            ])
            .args(["--phases", "examples,coverage,fuzzing"])
            .env("SCHEMATHESIS_TELEMETRY", "false")
            .current_dir(dir.path())
            .output()
            .expect("schemathesis must be installed (scripts/setup.sh puts it in .venv)")
    })
    .await
    .unwrap();
    let report = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "schemathesis found server errors:\n{report}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(report.contains("passed"), "{report}");
    eprintln!("{report}");
}
