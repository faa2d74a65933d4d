//! The validator's checks on real ONNX files built by `onnx_build`, read by tract.

use modelpipe_core::signature::DataType;
use modelpipe_engine::checks::{CheckError, Expectations, check_model};
use modelpipe_engine::contract::Contract;
use modelpipe_testkit::onnx_build::LinearSoftmax;

fn write(dir: &tempfile::TempDir, name: &str, bytes: &[u8]) -> std::path::PathBuf {
    let path = dir.path().join(name);
    std::fs::write(&path, bytes).unwrap();
    path
}

#[test]
fn a_valid_model_passes_with_its_signature_read_from_the_file() {
    let dir = tempfile::tempdir().unwrap();
    let path = write(&dir, "m.onnx", &LinearSoftmax::iris(1).to_bytes());
    let checked = check_model(&path, Expectations::default()).unwrap();
    let signature = checked.signature();
    assert_eq!(signature.inputs.len(), 1);
    assert_eq!(
        (
            signature.inputs[0].name.as_str(),
            signature.inputs[0].datatype
        ),
        ("input", DataType::Fp32)
    );
    assert_eq!(signature.inputs[0].shape, [-1, 4]);
    assert_eq!(
        (
            signature.outputs[0].name.as_str(),
            signature.outputs[0].shape.as_slice()
        ),
        ("probabilities", [-1i64, 3].as_slice())
    );
}

#[test]
fn empty_random_and_truncated_files_are_refused_with_reasons() {
    let dir = tempfile::tempdir().unwrap();
    let empty = write(&dir, "empty.onnx", b"");
    assert!(matches!(
        check_model(&empty, Expectations::default()),
        Err(CheckError::Empty)
    ));
    let random: Vec<u8> = (0..4096u32)
        .map(|i| (i.wrapping_mul(2654435761) >> 13) as u8)
        .collect();
    let random = write(&dir, "random.onnx", &random);
    let err = check_model(&random, Expectations::default()).unwrap_err();
    assert!(matches!(err, CheckError::Load(_)), "{err}");
    let bytes = LinearSoftmax::iris(1).to_bytes();
    let truncated = write(&dir, "truncated.onnx", &bytes[..bytes.len() * 2 / 3]);
    let err = check_model(&truncated, Expectations::default()).unwrap_err();
    assert!(
        err.to_string().starts_with("not a loadable ONNX model"),
        "{err}"
    );
}

#[test]
fn a_model_producing_nan_fails_the_smoke_test() {
    let dir = tempfile::tempdir().unwrap();
    let mut model = LinearSoftmax::iris(1);
    model.bias[0] = f32::NAN;
    let path = write(&dir, "nan.onnx", &model.to_bytes());
    let err = check_model(&path, Expectations::default()).unwrap_err();
    assert!(err.to_string().contains("not finite"), "{err}");
}

#[test]
fn a_signature_change_against_live_is_refused_unless_allowed() {
    let dir = tempfile::tempdir().unwrap();
    let live = check_model(
        &write(&dir, "live.onnx", &LinearSoftmax::iris(1).to_bytes()),
        Expectations::default(),
    )
    .unwrap();
    let mut wider = LinearSoftmax::iris(2);
    wider.weights.push(vec![0.5, 0.5, 0.5]);
    let path = write(&dir, "wider.onnx", &wider.to_bytes());
    let expect = Expectations {
        live: Some((3, live.signature())),
        ..Default::default()
    };
    let err = check_model(&path, expect).unwrap_err();
    assert_eq!(
        err.to_string(),
        "signature differs from live v3: input 'input' has shape [-1,5] instead of [-1,4] (live v3) \
         (upload with metadata allow-signature-change=true to accept)"
    );
    let allowed = check_model(
        &path,
        Expectations {
            allow_signature_change: true,
            ..expect
        },
    )
    .unwrap();
    assert_eq!(
        allowed.signature_change.as_deref(),
        Some("input 'input' has shape [-1,5] instead of [-1,4] (live v3)")
    );
}

fn contract_for(expected: Vec<f64>, tolerance: f64) -> Contract {
    let row = [5.1f32, 3.5, 1.4, 0.2];
    let json = serde_json::json!({
        "inputs": [{"name": "input", "datatype": "FP32", "shape": [-1, 4]}],
        "outputs": [{"name": "probabilities", "datatype": "FP32", "shape": [-1, 3]}],
        "examples": [{
            "inputs": [{"name": "input", "datatype": "FP32", "shape": [1, 4], "data": row}],
            "outputs": [{"name": "probabilities", "data": [expected]}],
            "tolerance": tolerance
        }]
    });
    Contract::parse(json.to_string().as_bytes()).unwrap()
}

#[test]
fn golden_examples_pass_within_tolerance_and_fail_outside_it() {
    let dir = tempfile::tempdir().unwrap();
    let model = LinearSoftmax::iris(1);
    let path = write(&dir, "m.onnx", &model.to_bytes());
    let expected = model.predict(&[5.1, 3.5, 1.4, 0.2]);
    let good = contract_for(expected.clone(), 1e-5);
    check_model(
        &path,
        Expectations {
            contract: Some(&good),
            ..Default::default()
        },
    )
    .unwrap();
    let shifted: Vec<f64> = expected.iter().map(|p| p + 0.01).collect();
    let bad = contract_for(shifted, 1e-3);
    let err = check_model(
        &path,
        Expectations {
            contract: Some(&bad),
            ..Default::default()
        },
    )
    .unwrap_err();
    assert!(
        err.to_string()
            .starts_with("golden example 1: output 'probabilities' element 0"),
        "{err}"
    );
}

#[test]
fn a_contract_signature_mismatch_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let path = write(&dir, "m.onnx", &LinearSoftmax::iris(1).to_bytes());
    let contract = Contract::parse(
        br#"{"inputs": [{"name": "features", "datatype": "FP32", "shape": [-1, 4]}]}"#,
    )
    .unwrap();
    let err = check_model(
        &path,
        Expectations {
            contract: Some(&contract),
            ..Default::default()
        },
    )
    .unwrap_err();
    assert!(
        err.to_string()
            .contains("input 'features' of the contract is missing"),
        "{err}"
    );
}

/// Each hostile model is refused with a reason, in bounded time and memory, and the next check
/// still works (the checks run in this one process, as the validator's do).
#[test]
fn hostile_models_are_refused_without_exhausting_the_process() {
    use modelpipe_testkit::onnx_build::hostile;
    let dir = tempfile::tempdir().unwrap();
    // A file the model points at from outside the staging directory.
    let secret = dir.path().join("secret.bin");
    std::fs::write(&secret, [0u8; 16]).unwrap();
    let staging = dir.path().join("staging");
    std::fs::create_dir(&staging).unwrap();
    let cases: Vec<(&str, Vec<u8>, &str)> = vec![
        ("huge_input", hostile::huge_input(), "larger than"),
        (
            "lying_initializer",
            hostile::lying_initializer(),
            "not a loadable ONNX model",
        ),
        (
            "external_data",
            hostile::external_data("../secret.bin"),
            "external data",
        ),
        (
            "external_data_absolute",
            hostile::external_data(secret.to_str().unwrap()),
            "external data",
        ),
        ("cyclic", hostile::cyclic(), "not a loadable ONNX model"),
        (
            "unsupported_op",
            hostile::unsupported_op(),
            "not a loadable ONNX model",
        ),
    ];
    for (name, bytes, reason) in cases {
        let path = staging.join(format!("{name}.onnx"));
        std::fs::write(&path, bytes).unwrap();
        let refused = check_model(&path, Default::default())
            .err()
            .unwrap_or_else(|| panic!("{name} was accepted"));
        assert!(refused.to_string().contains(reason), "{name}: {refused}");
    }
    // A deep but honest chain loads (no recursion blows the stack).
    let deep = write(&dir, "deep.onnx", &hostile::deep_chain(2_000));
    check_model(&deep, Default::default()).unwrap();
    let good = write(&dir, "good.onnx", &LinearSoftmax::iris(1).to_bytes());
    check_model(&good, Default::default()).unwrap();
}
