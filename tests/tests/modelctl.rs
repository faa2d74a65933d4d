//! `modelctl` as users run it: `dev` as a child process driven by the stock `aws` CLI (single-part
//! and multipart uploads, object tags) and curl-like HTTP calls, `rollback`/`status`/`history` on
//! its registry, `demo`, and `validate`.

use std::process::{Command, Output};

use modelpipe_testkit::onnx_build::LinearSoftmax;
use modelpipe_tests::dev::{Dev, WAIT, aws, tag, upload};
use modelpipe_tests::{binary, wait_for};
use serde_json::{Value, json};

fn modelctl(args: &[&str]) -> Output {
    Command::new(binary("modelctl"))
        .args(args)
        .output()
        .expect("run modelctl")
}

async fn infer(http: &reqwest::Client, base: &str) -> Option<String> {
    let body = json!({"inputs": [{"name": "input", "shape": [1, 4], "datatype": "FP32", "data": [5.1, 3.5, 1.4, 0.2]}]});
    let response = http
        .post(format!("{base}/v2/models/iris/infer"))
        .json(&body)
        .send()
        .await
        .ok()?;
    if !response.status().is_success() {
        return None;
    }
    let answer: Value = response.json().await.ok()?;
    answer["model_version"].as_str().map(str::to_string)
}

#[tokio::test]
async fn dev_serves_the_lifecycle_to_the_stock_aws_cli() {
    let data = tempfile::tempdir().unwrap();
    let mut dev = Dev::start(data.path(), &["--reload-check-ms", "100"]).await;
    let (endpoint, base, http) = (dev.endpoint.clone(), dev.base.clone(), dev.http.clone());

    let files = tempfile::tempdir().unwrap();
    let write = |name: &str, bytes: &[u8]| {
        let path = files.path().join(name);
        std::fs::write(&path, bytes).unwrap();
        path
    };
    upload(
        &endpoint,
        &write("v1.onnx", &LinearSoftmax::iris(1).to_bytes()),
        "models/iris/model.onnx",
        &[],
    );
    wait_for("v1 to answer", WAIT, || async {
        infer(&http, &base).await.filter(|v| v == "1")
    })
    .await;
    assert_eq!(
        tag(&endpoint, "models/iris/model.onnx", "modelpipe-status").as_deref(),
        Some("published")
    );

    // With an S3 SHA-256 checksum and the sha256 metadata: both are checked against the bytes.
    let v2_bytes = LinearSoftmax::iris(2).to_bytes();
    let metadata = format!("sha256={}", modelpipe_core::digest::sha256_bytes(&v2_bytes));
    let checked = [
        "--checksum-algorithm",
        "SHA256",
        "--metadata",
        metadata.as_str(),
    ];
    upload(
        &endpoint,
        &write("v2.onnx", &v2_bytes),
        "models/iris/model.onnx",
        &checked,
    );
    wait_for("v2 to answer", WAIT, || async {
        infer(&http, &base).await.filter(|v| v == "2")
    })
    .await;

    // Over 8 MB: the CLI switches to a multipart upload.
    let big = LinearSoftmax {
        input: "x".into(),
        output: "y".into(),
        weights: vec![vec![0.001; 2304]; 1024],
        bias: vec![0.0; 2304],
        batch: None,
    };
    let big_file = write("big.onnx", &big.to_bytes());
    assert!(std::fs::metadata(&big_file).unwrap().len() > 9_000_000);
    upload(&endpoint, &big_file, "models/big/model.onnx", &[]);
    let status = wait_for("the multipart upload's outcome", WAIT, || async {
        tag(&endpoint, "models/big/model.onnx", "modelpipe-status")
    })
    .await;
    assert_eq!(status, "published");
    let meta: Value = http
        .get(format!("{base}/v2/models/big"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(meta["inputs"][0]["shape"], json!([-1, 1024]));

    let v2 = LinearSoftmax::iris(2).to_bytes();
    upload(
        &endpoint,
        &write("broken.onnx", &v2[..v2.len() / 2]),
        "models/iris/model.onnx",
        &[],
    );
    let status = wait_for("the rejection tag", WAIT, || async {
        tag(&endpoint, "models/iris/model.onnx", "modelpipe-status").filter(|s| s != "published")
    })
    .await;
    assert_eq!(status, "rejected");
    assert!(
        tag(&endpoint, "models/iris/model.onnx", "modelpipe-reason")
            .unwrap()
            .contains("not a loadable ONNX model")
    );
    assert_eq!(infer(&http, &base).await.as_deref(), Some("2"));

    let registry = data.path().join("registry");
    let registry = registry.to_str().unwrap();
    let out = modelctl(&["rollback", "iris", "--registry", registry]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stdout).contains("iris:live v2 → v1"));
    wait_for("v1 again after rollback", WAIT, || async {
        infer(&http, &base).await.filter(|v| v == "1")
    })
    .await;

    let status = modelctl(&["status", "iris", "--registry", registry]);
    let status = String::from_utf8_lossy(&status.stdout);
    assert!(status.contains("live       → v1"), "{status}");
    let history = modelctl(&["history", "iris", "--registry", registry]);
    assert_eq!(String::from_utf8_lossy(&history.stdout).lines().count(), 3);

    let exit = dev.interrupt();
    assert!(
        exit.success(),
        "modelctl dev should stop cleanly on Ctrl-C: {exit}"
    );
}

#[test]
fn demo_runs_the_lifecycle_and_exits_zero() {
    let out = modelctl(&["demo"]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "demo failed: {stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    for step in [
        "v1 uploaded and live",
        "v2 hot-reloaded",
        "broken upload rejected",
        "rolled back to v1",
        "v2 canary promoted on evidence",
    ] {
        assert!(
            stdout.contains(&format!("✔ {step}")),
            "missing step {step:?} in:\n{stdout}"
        );
    }
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        !stdout.contains('\u{1b}') && !stderr.contains('\u{1b}'),
        "a log sent to a pipe has no colour escapes:\n{stdout}{stderr}"
    );
}

#[test]
fn validate_reports_a_good_model_and_refuses_a_bad_one() {
    let dir = tempfile::tempdir().unwrap();
    let good = dir.path().join("good.onnx");
    std::fs::write(&good, LinearSoftmax::iris(1).to_bytes()).unwrap();
    let artifact = dir.path().join("good.nnef.tar");
    let out = modelctl(&[
        "validate",
        good.to_str().unwrap(),
        "--artifact",
        artifact.to_str().unwrap(),
        "--engine",
        "tract",
    ]);
    assert!(out.status.success());
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(stdout.contains("input  input FP32 [-1,4]"), "{stdout}");
    assert!(
        stdout.contains("engine: tract (engine=tract in the upload's metadata)"),
        "{stdout}"
    );
    assert!(
        stdout.contains("layout plain (no convolution); artifact"),
        "{stdout}"
    );
    // The artifact written is one the engine reads back to the model's signature.
    let checked = modelpipe_engine::checks::check_model(&good, Default::default()).unwrap();
    modelpipe_engine::Engine::load_artifact(
        &artifact,
        checked.signature(),
        Default::default(),
        None,
    )
    .unwrap();
    let bad = dir.path().join("bad.onnx");
    std::fs::write(&bad, b"garbage").unwrap();
    let out = modelctl(&["validate", bad.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("rejected: not a loadable ONNX model"));
}

#[tokio::test]
async fn efs_check_reports_cold_read_times_from_the_efs_api() {
    let (endpoint, _moto) = modelpipe_tests::moto().await;
    let dir = tempfile::tempdir().unwrap();
    let registry = modelpipe_registry::Registry::open(dir.path()).unwrap();
    // 3000×3000 FP32 weights: 36 MB, 11.45 s at the 3 MiB/s of reads a tiny bursting file
    // system is left with when its credits run out.
    let big: modelpipe_core::ModelName = "big".parse().unwrap();
    let iris: modelpipe_core::ModelName = "iris".parse().unwrap();
    for (model, bytes) in [
        (
            &big,
            modelpipe_testkit::onnx_build::Mlp::new(&[3000, 3000], 1).to_bytes(),
        ),
        (&iris, LinearSoftmax::iris(1).to_bytes()),
    ] {
        let version = modelpipe_tests::serving::commit(&registry, model, &bytes);
        modelpipe_tests::serving::publish(&registry, model, version);
    }
    let create = |args: &[&str]| {
        // Creation tokens are unique per account: moto may outlive one run.
        let token = modelpipe_tests::unique_bucket(args[0]);
        let mut all = vec!["efs", "create-file-system", "--creation-token", &token];
        all.extend_from_slice(&args[1..]);
        let out = aws(&endpoint, &all);
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let created: Value = serde_json::from_slice(&out.stdout).unwrap();
        created["FileSystemId"].as_str().unwrap().to_string()
    };
    let bursting = create(&["bursting", "--throughput-mode", "bursting"]);
    let provisioned = create(&[
        "provisioned",
        "--throughput-mode",
        "provisioned",
        "--provisioned-throughput-in-mibps",
        "100",
    ]);
    let check = |id: &str| {
        let out = Command::new(binary("modelctl"))
            .args(["efs-check", "--file-system-id", id, "--registry"])
            .arg(dir.path())
            .env("AWS_ENDPOINT_URL", &endpoint)
            .env("AWS_ACCESS_KEY_ID", "testing")
            .env("AWS_SECRET_ACCESS_KEY", "testing")
            .env("AWS_REGION", "us-east-1")
            .env("AWS_EC2_METADATA_DISABLED", "true")
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).unwrap()
    };

    let report = check(&bursting);
    assert!(report.contains("bursting throughput"), "{report}");
    assert!(report.contains("300 MiB/s with burst credits"), "{report}");
    assert!(report.contains("3 MiB/s credits exhausted"), "{report}");
    let line = |model: &str| {
        report
            .lines()
            .find(|l| l.trim_start().starts_with(model))
            .unwrap_or_else(|| panic!("no line for {model}: {report}"))
            .to_string()
    };
    let big_line = line("big");
    assert!(big_line.contains("0.11 s with burst credits"), "{big_line}");
    assert!(
        big_line.contains("11.45 s credits exhausted WARNING"),
        "{big_line}"
    );
    assert!(!line("iris").contains("WARNING"), "{report}");
    assert!(report.contains("cannot be preloaded"), "{report}");

    let report = check(&provisioned);
    assert!(report.contains("300 MiB/s provisioned"), "{report}");
    assert!(!report.contains("WARNING"), "{report}");
}

#[test]
fn dev_refuses_to_listen_beyond_loopback() {
    for flag in ["--s3-addr", "--http-addr"] {
        let out = modelctl(&["dev", flag, "0.0.0.0:9000"]);
        assert!(!out.status.success());
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains("binds loopback addresses only"), "{err}");
    }
}

#[tokio::test]
async fn ten_concurrent_uploads_through_dev_become_ten_versions_live_at_the_latest() {
    let data = tempfile::tempdir().unwrap();
    let dev = Dev::start(data.path(), &[]).await;
    let s3 = modelpipe_tests::dev_s3_client(dev.s3_port).await;
    let keys: Vec<String> = (0..10)
        .map(|i| format!("models/iris/upload-{i}.onnx"))
        .collect();
    let puts = keys.iter().enumerate().map(|(i, key)| {
        s3.put_object()
            .bucket("models")
            .key(key)
            .body(LinearSoftmax::iris(200 + i as u32).to_bytes().into())
            .send()
    });
    for put in futures::future::join_all(puts).await {
        put.unwrap();
    }
    let registry = modelpipe_registry::Registry::open(data.path().join("registry")).unwrap();
    let iris: modelpipe_core::ModelName = "iris".parse().unwrap();
    let records = wait_for("all ten uploads handled", WAIT, || async {
        let records: Vec<_> = keys
            .iter()
            .filter_map(|k| registry.upload_record(&iris, k).unwrap())
            .filter(|r| r.status == modelpipe_registry::UploadStatus::Published)
            .collect();
        (records.len() == keys.len()).then_some(records)
    })
    .await;
    assert_eq!(
        registry.versions(&iris).unwrap(),
        (1..=10).collect::<Vec<u64>>()
    );
    let history = registry.history(&iris).unwrap();
    assert_eq!(history.len(), 10);
    for pair in history.windows(2) {
        assert_eq!(pair[1].from, Some(pair[0].to), "{history:?}");
    }
    let latest = records
        .iter()
        .max_by(|a, b| {
            modelpipe_registry::sequencer_cmp(
                a.sequencer.as_deref().unwrap(),
                b.sequencer.as_deref().unwrap(),
            )
        })
        .unwrap();
    let live = registry
        .alias(&iris, &modelpipe_core::AliasName::live())
        .unwrap()
        .unwrap();
    assert_eq!(
        Some(live.version),
        latest.version,
        "live is the upload with the latest sequencer"
    );
}

/// Only signed models go live under a bucket-wide `SIGNING_POLICY`, through `modelctl dev` and
/// the stock `aws` CLI: a signed model goes live with its signer in the metadata, an unsigned
/// one waits and is rejected (recorded and tagged) when no signature comes; `modelctl validate
/// --signature` says the same offline.
#[tokio::test]
async fn dev_publishes_only_models_signed_by_the_policys_keys() {
    let signers = modelpipe_tests::signing::Signers::new();
    let policy = json!({"required": true, "keys": [signers.pem("p256.pub")]}).to_string();
    let data = tempfile::tempdir().unwrap();
    let env = [
        ("SIGNING_POLICY", policy.as_str()),
        ("SIGNATURE_WAIT_MS", "1500"),
    ];
    let tick = ["--reload-check-ms", "100", "--rollout-tick-ms", "200"];
    let dev = Dev::start_with_env(data.path(), &tick, &env).await;
    let files = tempfile::tempdir().unwrap();
    let model = files.path().join("model.onnx");
    std::fs::write(&model, LinearSoftmax::iris(1).to_bytes()).unwrap();
    let signature = files.path().join("model.onnx.sig");
    std::fs::write(&signature, signers.sign_with_key("p256", &model)).unwrap();

    // As documented: the signature, then the model (the other order is tested in validator_s3).
    dev.upload(&signature, "models/iris/model.onnx.sig", &[]);
    dev.upload(&model, "models/iris/model.onnx", &[]);
    assert_eq!(dev.outcome("models/iris/model.onnx").await.0, "published");
    let (code, metadata) = dev.get("/v2/models/iris").await;
    assert_eq!(code, 200);
    let key = format!(
        "sha256:{}",
        modelpipe_core::digest::sha256_bytes(signers.pem("p256.pub").as_bytes())
    );
    assert_eq!(metadata["signer"]["method"], "key");
    assert_eq!(metadata["signer"]["trusted"], key.as_str());

    // Another model with no signature at all: rejected once SIGNATURE_WAIT_MS has passed.
    dev.upload(&model, "models/unsigned/model.onnx", &[]);
    assert_eq!(
        dev.outcome("models/unsigned/model.onnx").await.0,
        "awaiting-signature"
    );
    let (status, reason) = dev
        .outcome_after("models/unsigned/model.onnx", "awaiting-signature")
        .await;
    assert_eq!(status, "rejected");
    assert!(reason.unwrap().contains("no signature arrived"));

    // Offline, with the same key and with one the policy does not list.
    let validate = |signer: &str| {
        let signer = files.path().join(signer);
        std::fs::write(
            &signer,
            signers.pem(signer.file_name().unwrap().to_str().unwrap()),
        )
        .unwrap();
        modelctl(&[
            "validate",
            model.to_str().unwrap(),
            "--signature",
            signature.to_str().unwrap(),
            "--signer",
            signer.to_str().unwrap(),
        ])
    };
    let out = validate("p256.pub");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stdout).contains(&format!("signed by {key}")));
    let out = validate("other.pub");
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("does not list"));
}

/// `modelctl bake` holds each file to the signer policy as the validator holds an upload:
/// `FILE.sig` beside it is verified and kept; an unsigned file fails the bake with the reason.
#[test]
fn bake_keeps_only_signed_models_under_a_signing_policy() {
    let signers = modelpipe_tests::signing::Signers::new();
    let dir = tempfile::tempdir().unwrap();
    let contract = dir.path().join("contract.json");
    let policy = json!({"signing": {"required": true, "keys": [signers.pem("p384.pub")]}});
    std::fs::write(&contract, policy.to_string()).unwrap();
    let model = dir.path().join("model.onnx");
    std::fs::write(&model, LinearSoftmax::iris(1).to_bytes()).unwrap();
    let baked = dir.path().join("baked");
    let bake = || {
        modelctl(&[
            "bake",
            baked.to_str().unwrap(),
            &format!("iris={}", model.display()),
            "--contract",
            &format!("iris={}", contract.display()),
        ])
    };
    let out = bake();
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("requires a signature"), "{err}");
    assert!(!baked.join("iris").exists(), "a failed bake writes nothing");

    let bundle = signers.sign_with_key("p384", &model);
    std::fs::write(dir.path().join("model.onnx.sig"), &bundle).unwrap();
    let out = bake();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let registry = modelpipe_registry::Registry::open(&baked).unwrap();
    let manifest = registry.manifest(&"iris".parse().unwrap(), 1).unwrap();
    assert_eq!(
        manifest.signer.unwrap().bundle_sha256,
        modelpipe_core::digest::sha256_bytes(&bundle)
    );
    assert_eq!(
        std::fs::read(baked.join("iris/versions/1/model.onnx.sig")).unwrap(),
        bundle
    );
}
