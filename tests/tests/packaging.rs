//! The Lambda zips as `scripts/package.sh` assembles them (`scripts/lambda_zip.py`, here on the
//! debug binaries): the functions that run models carry `libonnxruntime.so` beside `bootstrap`,
//! and the inference function unpacked from its zip serves an ONNX Runtime model with no
//! variable naming the library, opening it only when such a model is loaded.

use std::path::Path;
use std::process::Command;

use aws_sdk_lambda::primitives::Blob;
use modelpipe_core::ModelName;
use modelpipe_engine::EngineKind;
use modelpipe_registry::Registry;
use modelpipe_testkit::onnx_build::LinearSoftmax;
use modelpipe_tests::{
    aws_config, binary, http_api_event, local_aws_env, serving, start_executable, start_watch,
    venv_onnxruntime_library, workspace_root,
};
use serde_json::{Value, json};

/// Runs `python3 ARGS...`, which must succeed; its standard output.
fn python3(args: &[&std::ffi::OsStr]) -> String {
    let out = Command::new("python3").args(args).output().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

fn zip_entries(zip: &Path) -> Vec<String> {
    let list = "import sys, zipfile; print('\\n'.join(zipfile.ZipFile(sys.argv[1]).namelist()))";
    python3(&["-c".as_ref(), list.as_ref(), zip.as_os_str()])
        .lines()
        .map(str::to_string)
        .collect()
}

fn unzip(zip: &Path, into: &Path) {
    python3(&[
        "-m".as_ref(),
        "zipfile".as_ref(),
        "-e".as_ref(),
        zip.as_os_str(),
        into.as_os_str(),
    ]);
    // zipfile does not restore modes; Lambda does (the zip records 0755).
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(
        into.join("bootstrap"),
        std::fs::Permissions::from_mode(0o755),
    )
    .unwrap();
}

/// Whether the process `pid` has mapped ONNX Runtime.
fn maps_onnxruntime(pid: u32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/maps"))
        .unwrap()
        .contains("libonnxruntime")
}

#[tokio::test]
async fn the_inference_zip_serves_an_onnxruntime_model_with_no_configuration() {
    let dir = tempfile::tempdir().unwrap();
    let zips = dir.path().join("zips");
    let bins = dir.path().join("bins");
    std::fs::create_dir(&bins).unwrap();
    for name in ["validator", "publisher", "inference"] {
        std::fs::copy(binary(name), bins.join(name)).unwrap();
    }
    let script = workspace_root().join("scripts/lambda_zip.py");
    let library = venv_onnxruntime_library();
    python3(&[
        script.as_os_str(),
        bins.as_os_str(),
        zips.as_os_str(),
        "--onnxruntime".as_ref(),
        library.as_os_str(),
    ]);
    for (name, with_library) in [
        ("validator", true),
        ("publisher", false),
        ("inference", true),
    ] {
        let entries = zip_entries(&zips.join(name).join("bootstrap.zip"));
        let expected: Vec<&str> = if with_library {
            vec!["bootstrap", "libonnxruntime.so"]
        } else {
            vec!["bootstrap"]
        };
        assert_eq!(entries, expected, "{name}");
    }
    let task = dir.path().join("task");
    unzip(&zips.join("inference/bootstrap.zip"), &task);

    // A tract model and one only ONNX Runtime loads (skl2onnx's StandardScaler → Scaler).
    let registry = Registry::open(dir.path().join("registry")).unwrap();
    let (iris, scaler): (ModelName, ModelName) =
        ("iris".parse().unwrap(), "scaler".parse().unwrap());
    let v = serving::commit(&registry, &iris, &LinearSoftmax::iris(1).to_bytes());
    serving::publish(&registry, &iris, v);
    let corpus = workspace_root().join("tests/corpus/sk_logreg_scaler");
    let onnx = std::fs::read(corpus.join("model.onnx")).unwrap();
    let v = serving::commit_in(&registry, &scaler, &onnx, None);
    assert_eq!(
        registry.manifest(&scaler, v).unwrap().engine_kind(),
        EngineKind::Onnxruntime
    );
    serving::publish(&registry, &scaler, v);

    let watch = start_watch().await;
    let mut env = local_aws_env();
    env.extend([
        ("MODEL_ROOT", registry.location().to_string()),
        // Nothing to find a library with but the zip: no PATH (no python3), no ORT_DYLIB_PATH,
        // and the working directory is the unpacked zip's.
        ("PATH", String::new()),
    ]);
    let function = start_executable(&watch, "inference", &task.join("bootstrap"), &env);
    let lambda = aws_sdk_lambda::Client::new(&aws_config(&watch.endpoint()).await);
    let invoke = |path: String, body: Value| {
        let lambda = lambda.clone();
        async move {
            let event = http_api_event("POST", &path, Some(&body.to_string()));
            let response = lambda
                .invoke()
                .function_name("inference")
                .payload(Blob::new(event.to_string()))
                .send()
                .await
                .unwrap();
            let answer: Value =
                serde_json::from_slice(response.payload().unwrap().as_ref()).unwrap();
            let body: Value = serde_json::from_str(answer["body"].as_str().unwrap()).unwrap();
            (answer["statusCode"].as_u64().unwrap(), body)
        }
    };

    let request = json!({"inputs": [{"name": "input", "shape": [1, 4], "datatype": "FP32", "data": [5.1, 3.5, 1.4, 0.2]}]});
    let (status, answer) = invoke("/v2/models/iris/infer".into(), request).await;
    assert_eq!(status, 200, "{answer}");
    assert!(
        !maps_onnxruntime(function.pid()),
        "a function serving only tract models opened ONNX Runtime"
    );

    let case: Value =
        serde_json::from_slice(&std::fs::read(corpus.join("case.json")).unwrap()).unwrap();
    let request = json!({"inputs": case["inputs"]});
    let (status, answer) = invoke("/v2/models/scaler/infer".into(), request).await;
    assert_eq!(status, 200, "{answer}");
    let want = &case["outputs"][1];
    assert_eq!(want["name"], "output_probability");
    let got = answer["outputs"]
        .as_array()
        .unwrap()
        .iter()
        .find(|o| o["name"] == "output_probability")
        .unwrap();
    assert_eq!(got["shape"], want["shape"], "{answer}");
    for (g, w) in got["data"]
        .as_array()
        .unwrap()
        .iter()
        .zip(want["data"].as_array().unwrap())
    {
        let (g, w) = (g.as_f64().unwrap(), w.as_f64().unwrap());
        assert!((g - w).abs() <= 1e-4 + 1e-3 * w.abs(), "{g} vs {w}");
    }
    let maps = std::fs::read_to_string(format!("/proc/{}/maps", function.pid())).unwrap();
    let task = std::fs::canonicalize(&task).unwrap();
    assert!(
        maps.contains(&format!("{}/libonnxruntime.so", task.display())),
        "ONNX Runtime was not opened from the unpacked zip"
    );
}
