//! The features of a request, as drift statistics see them: a tensor of shape `[rows, …]` is
//! `rows` rows; when a row holds at most [`MAX_COLUMNS`] values each column is a feature
//! (`x[0]`, `x[1]`, …; a single column is `x`), otherwise the tensor is one feature `x` over its
//! values (at most [`MAX_VALUES`] of them, evenly strided: an image is summarised, not sketched
//! pixel by pixel). BYTES tensors are categories; booleans and integers are numbers. Outputs are
//! named `output.<name>`.

use serde::Deserialize;
use tract_onnx::prelude::{DatumType, Tensor};

use crate::Engine;
use crate::contract::{ExampleInput, decode_inputs};
use modelpipe_core::signature::TensorSpec;
use modelpipe_drift::Profile;

/// Columns above which a tensor's row is one feature.
pub const MAX_COLUMNS: usize = 32;
/// Values of one wide tensor observed per request.
pub const MAX_VALUES: usize = 4096;

/// One line of a baseline dataset: an Open Inference Protocol request with JSON data (other
/// fields, such as `id`, `parameters` and `outputs`, are allowed and unused).
#[derive(Deserialize)]
struct BaselineRequest {
    inputs: Vec<ExampleInput>,
}

/// The profile of a baseline dataset (`baseline.jsonl`: one OIP request per line) as `engine`
/// sees it: each request's inputs, run for its outputs. Blank lines are skipped; the first line
/// that does not parse, decode or run is the error, with its number.
pub fn profile_requests(engine: &Engine, jsonl: &[u8]) -> Result<Profile, String> {
    let signature = engine.signature();
    let mut profile = Profile::default();
    let text = std::str::from_utf8(jsonl).map_err(|e| format!("is not UTF-8: {e}"))?;
    for (index, line) in text
        .lines()
        .enumerate()
        .filter(|(_, l)| !l.trim().is_empty())
    {
        let at = |why: String| format!("line {}: {why}", index + 1);
        let request: BaselineRequest =
            serde_json::from_str(line).map_err(|e| at(format!("not an inference request: {e}")))?;
        let inputs = decode_inputs(&request.inputs, signature).map_err(at)?;
        let outputs = engine.run(inputs.clone()).map_err(|e| at(e.to_string()))?;
        observe_request(
            &mut profile,
            names(&signature.inputs).zip(&inputs),
            names(&signature.outputs).zip(&outputs),
        );
    }
    if profile.is_empty() {
        return Err("holds no request".into());
    }
    Ok(profile)
}

fn names(specs: &[TensorSpec]) -> impl Iterator<Item = &str> {
    specs.iter().map(|s| s.name.as_str())
}

/// Adds one request's named inputs and outputs to `profile`; its rows are the first input's.
pub fn observe_request<'a>(
    profile: &mut Profile,
    inputs: impl IntoIterator<Item = (&'a str, &'a Tensor)>,
    outputs: impl IntoIterator<Item = (&'a str, &'a Tensor)>,
) {
    let mut first = true;
    for (name, tensor) in inputs {
        if std::mem::take(&mut first) {
            profile.rows += rows(tensor) as u64;
        }
        observe(profile, name, tensor);
    }
    for (name, tensor) in outputs {
        observe(profile, &format!("output.{name}"), tensor);
    }
}

fn rows(tensor: &Tensor) -> usize {
    match tensor.shape() {
        [] => 1,
        [n, ..] => *n,
    }
}

/// Adds `tensor`'s values under `name`.
pub fn observe(profile: &mut Profile, name: &str, tensor: &Tensor) {
    let len = tensor.len();
    if len == 0 {
        return;
    }
    let width = len / rows(tensor).max(1);
    if tensor.datum_type() == DatumType::String {
        let Ok(view) = tensor.to_plain_array_view::<String>() else {
            return;
        };
        let Some(values) = view.as_slice() else {
            return;
        };
        each_feature(name, width, len, |feature, index| {
            profile.feature(feature).add_category(&values[index]);
        });
        return;
    }
    let Ok(numbers) = tensor.cast_to::<f64>() else {
        return;
    };
    let Ok(view) = numbers.to_plain_array_view::<f64>() else {
        return;
    };
    let Some(values) = view.as_slice() else {
        return;
    };
    each_feature(name, width, len, |feature, index| {
        profile.feature(feature).add_number(values[index]);
    });
}

/// Calls `add(feature, index)` for each value observed: per column when the row is narrow,
/// else a stride over the whole tensor.
fn each_feature(name: &str, width: usize, len: usize, mut add: impl FnMut(&str, usize)) {
    if width == 1 || width > MAX_COLUMNS {
        let step = len.div_ceil(MAX_VALUES).max(1);
        (0..len).step_by(step).for_each(|index| add(name, index));
        return;
    }
    let columns: Vec<String> = (0..width).map(|j| format!("{name}[{j}]")).collect();
    for index in 0..len {
        add(&columns[index % width], index);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn narrow_rows_are_columns_wide_ones_one_feature_and_outputs_are_named() {
        let mut profile = Profile::default();
        let x = Tensor::from_shape(&[2, 3], &[1f32, 2., 3., 4., 5., 6.]).unwrap();
        let image = Tensor::zero::<f32>(&[1, 3, 64, 64]).unwrap();
        let label = Tensor::from_shape(&[2], &[7i64, 8]).unwrap();
        observe_request(
            &mut profile,
            [("x", &x), ("image", &image)],
            [("label", &label)],
        );
        assert_eq!(profile.rows, 2);
        let names: Vec<&str> = profile.features.keys().map(String::as_str).collect();
        assert_eq!(names, ["image", "output.label", "x[0]", "x[1]", "x[2]"]);
        assert_eq!(profile.features["x[1]"].count, 2);
        let sketch = profile.features["x[1]"].sketch.as_ref().unwrap();
        assert!((sketch.quantile(1.0).unwrap() - 5.0).abs() < 0.05);
        assert_eq!(profile.features["image"].count, MAX_VALUES as u64);
        assert_eq!(profile.features["output.label"].count, 2);
    }

    #[test]
    fn strings_are_categories() {
        let mut profile = Profile::default();
        let words: Tensor = tract_onnx::prelude::tract_ndarray::arr2(&[
            ["a".to_string()],
            ["b".into()],
            ["a".into()],
        ])
        .into();
        observe(&mut profile, "word", &words);
        let categories = profile.features["word"].categories.as_ref().unwrap();
        assert_eq!(categories.top["a"], 2);
        assert_eq!(categories.top["b"], 1);
    }
}
