use std::path::{Path, PathBuf};

use tract_onnx::prelude::*;
use tract_onnx::tract_core::internal::Approximation;

use super::*;
use modelpipe_testkit::onnx_build::{Mlp, Weights, small_cnn};

fn write(dir: &Path, name: &str, bytes: &[u8]) -> PathBuf {
    let path = dir.join(name);
    std::fs::write(&path, bytes).unwrap();
    path
}

/// A batch of `n` pseudo-random 3×16×16 images.
fn images(n: usize, seed: u32) -> Tensor {
    let data = Weights::new(seed).take(n * 3 * 16 * 16, 1.0);
    Tensor::from_shape(&[n, 3, 16, 16], &data).unwrap()
}

fn assert_close(a: &Tensor, b: &Tensor) {
    a.close_enough(b, Approximation::Approximate).unwrap();
}

#[test]
fn a_symbolic_batch_gets_one_plan_per_shape_bounded_and_answers_as_one_row_at_a_time() {
    let dir = tempfile::tempdir().unwrap();
    let engine = Engine::load(&write(dir.path(), "cnn.onnx", &small_cnn(1))).unwrap();
    assert_eq!(engine.signature().inputs[0].shape, [-1, 3, 16, 16]);
    // The smoke input's shape (batch 1) is planned at load.
    assert_eq!((engine.plans_built(), engine.resident_plans()), (1, 1));

    let batch = images(3, 7);
    let together = engine.run(vec![batch.clone()]).unwrap().remove(0);
    assert_eq!(together.shape(), [3, 4]);
    assert_eq!(engine.plans_built(), 2);
    for row in 0..3 {
        let one = batch.slice(0, row, row + 1).unwrap();
        let alone = engine.run(vec![one]).unwrap().remove(0);
        assert_close(&alone, &together.slice(0, row, row + 1).unwrap());
    }
    // Batch 1 again: no new plan.
    assert_eq!(engine.plans_built(), 2);

    for n in [2, 4, 5, 6] {
        engine.run(vec![images(n, 1)]).unwrap();
    }
    assert_eq!(engine.plans_built(), 6);
    assert_eq!(engine.resident_plans(), MAX_SHAPE_PLANS);
}

#[test]
fn inputs_no_plan_fits_are_errors() {
    let dir = tempfile::tempdir().unwrap();
    let mlp = Mlp::new(&[4, 8, 3], 1);
    let engine = Engine::load(&write(dir.path(), "mlp.onnx", &mlp.to_bytes())).unwrap();
    for shape in [&[2, 5][..], &[2, 4, 1]] {
        let wrong = Tensor::zero::<f32>(shape).unwrap();
        assert!(engine.run(vec![wrong]).is_err(), "{shape:?}");
    }
    let right = Tensor::zero::<f32>(&[2, 4]).unwrap();
    assert_eq!(engine.run(vec![right]).unwrap()[0].shape(), [2, 3]);
}

#[test]
fn the_artifact_reloads_to_the_same_answers_in_either_layout() {
    let dir = tempfile::tempdir().unwrap();
    let onnx = Engine::load(&write(dir.path(), "cnn.onnx", &small_cnn(1))).unwrap();
    let artifact = dir.path().join("model.nnef.tar");
    onnx.write_artifact(&artifact).unwrap();
    let input = images(2, 3);
    let expected = onnx.run(vec![input.clone()]).unwrap();
    for layout in [Layout::Plain, Layout::Nhwc] {
        let reloaded = Engine::load_artifact(&artifact, onnx.signature(), layout, None).unwrap();
        assert_eq!(reloaded.layout(), layout);
        assert_eq!(reloaded.signature(), onnx.signature());
        let actual = reloaded.run(vec![input.clone()]).unwrap();
        assert_close(&expected[0], &actual[0]);
    }
}

#[test]
fn an_artifact_of_other_tensors_or_corrupt_bytes_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let cnn = Engine::load(&write(dir.path(), "cnn.onnx", &small_cnn(1))).unwrap();
    let mlp = Mlp::new(&[4, 8, 3], 1);
    let mlp = Engine::load(&write(dir.path(), "mlp.onnx", &mlp.to_bytes())).unwrap();
    let artifact = dir.path().join("model.nnef.tar");
    mlp.write_artifact(&artifact).unwrap();
    let err = Engine::load_artifact(&artifact, cnn.signature(), Layout::Plain, None).unwrap_err();
    assert!(
        err.to_string().contains("differ from the manifest"),
        "{err}"
    );

    let bytes = std::fs::read(&artifact).unwrap();
    let truncated = write(dir.path(), "truncated.tar", &bytes[..bytes.len() / 2]);
    assert!(Engine::load_artifact(&truncated, mlp.signature(), Layout::Plain, None).is_err());
    let garbage = write(dir.path(), "garbage.tar", &vec![0x5a; bytes.len()]);
    assert!(Engine::load_artifact(&garbage, mlp.signature(), Layout::Plain, None).is_err());
}

#[test]
fn convolutions_are_timed_in_both_layouts_and_dense_models_are_left_plain() {
    let dir = tempfile::tempdir().unwrap();
    let cnn = Engine::load(&write(dir.path(), "cnn.onnx", &small_cnn(1))).unwrap();
    let choice = cnn.choose_layout().unwrap();
    let nhwc = choice.nhwc_us.expect("a CNN is tried channel-last");
    assert_eq!(
        choice.layout,
        LayoutChoice::fastest(choice.plain_us, Some(nhwc)).layout
    );

    let mlp = Mlp::new(&[4, 8, 3], 1);
    let mlp = Engine::load(&write(dir.path(), "mlp.onnx", &mlp.to_bytes())).unwrap();
    let choice = mlp.choose_layout().unwrap();
    assert_eq!((choice.layout, choice.nhwc_us), (Layout::Plain, None));
}

#[test]
fn the_nhwc_layout_answers_as_the_plain_one() {
    let dir = tempfile::tempdir().unwrap();
    let path = write(dir.path(), "cnn.onnx", &small_cnn(2));
    let plain = Engine::load_onnx(&path, Layout::Plain).unwrap();
    let nhwc = Engine::load_onnx(&path, Layout::Nhwc).unwrap();
    let input = images(3, 5);
    let a = plain.run(vec![input.clone()]).unwrap();
    let b = nhwc.run(vec![input]).unwrap();
    assert_close(&a[0], &b[0]);
}

#[test]
fn outputs_are_widened_where_the_engines_read_them_differently_and_inputs_are_kept() {
    let dir = tempfile::tempdir().unwrap();
    let mlp = Mlp::new(&[4, 8, 3], 1);
    let mut engine = Engine::load(&write(dir.path(), "mlp.onnx", &mlp.to_bytes())).unwrap();
    assert_eq!(engine.signature().outputs[0].shape, [-1, 3]);
    let mut other = engine.signature().clone();
    other.outputs[0].shape = vec![-1, -1];
    other.inputs[0].shape = vec![-1, -1];
    engine.widen_outputs(&other);
    assert_eq!(engine.signature().outputs[0].shape, [-1, -1]);
    assert_eq!(engine.signature().inputs[0].shape, [-1, 4]);
}
