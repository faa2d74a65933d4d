//! Raw compute: one run of the model on the fixed input, tract against onnxruntime, at 1 and 2
//! threads, no handler around either. tract is driven as modelpipe serves it and with the levers
//! that may help it: a concrete input shape (the MLP's batch is symbolic as exported) and the
//! `conv_nhwc` layout transform (convolutions in channels-last order).

use std::path::Path;
use std::process::Command;
use std::time::Instant;

use modelpipe::engine::{Engine, use_threads};
use tract_onnx::prelude::*;

use super::Setup;
use crate::models::BenchModel;
use crate::stats::{Rounds, median, us};

type Run = Box<dyn Fn() -> Vec<f32>>;

fn runs_per_sample(model: &BenchModel) -> usize {
    if model.name == "mlp" { 5000 } else { 30 }
}

/// The ways of driving tract compared for `model`: (label, run).
fn tract_variants(model: &BenchModel) -> Vec<(&'static str, Run)> {
    let path = model.files[0].clone();
    let engine = Engine::load(&path).expect("load");
    let input = model.input_tensor();
    let served: Run = Box::new(move || first_output(engine.run(vec![input.clone()]).expect("run")));
    let mut variants = vec![("as served", served)];
    let concrete = |nhwc: bool| -> Run {
        let plan = plan(&path, model, nhwc).expect("plan");
        let input = model.input_tensor();
        Box::new(move || {
            first_output(
                plan.run(tvec![input.clone().into()])
                    .expect("run")
                    .into_iter()
                    .map(|v| v.into_tensor())
                    .collect(),
            )
        })
    };
    if model.name == "mlp" {
        variants.push(("concrete input shape", concrete(false)));
    } else {
        variants.push(("conv_nhwc", concrete(true)));
    }
    variants
}

/// tract with the input fact set to the model's concrete shape, optionally through `conv_nhwc`
/// (declutter, transform, declutter again, then optimise).
fn plan(path: &Path, model: &BenchModel, nhwc: bool) -> TractResult<Arc<TypedRunnableModel>> {
    let fact = f32::fact(&model.input_shape);
    let mut typed = tract_onnx::onnx()
        .model_for_path(path)?
        .with_input_fact(0, fact.into())?
        .into_typed()?
        .into_decluttered()?;
    if nhwc {
        let transform = tract_onnx::tract_core::transform::get_transform("conv_nhwc")?
            .expect("tract has conv_nhwc");
        transform.transform(&mut typed)?;
        typed = typed.into_decluttered()?;
    }
    typed.into_optimized()?.into_runnable()
}

fn first_output(outputs: Vec<Tensor>) -> Vec<f32> {
    outputs[0]
        .to_plain_array_view::<f32>()
        .expect("float output")
        .iter()
        .copied()
        .collect()
}

/// Median µs of `n` runs.
fn time_runs(run: &Run, n: usize) -> f64 {
    let samples: Vec<f64> = (0..n)
        .map(|_| {
            let started = Instant::now();
            std::hint::black_box(run());
            us(started.elapsed())
        })
        .collect();
    median(&samples)
}

/// onnxruntime's median µs of `n` runs, measured by `ort_raw.py` in its own process; also
/// checks its output against the reference.
fn onnxruntime(setup: &Setup, model: &BenchModel, threads: usize, n: usize) -> f64 {
    let input = setup.work.join(format!("{}-input.f32", model.name));
    if !input.exists() {
        model.write_raw_input(&input);
    }
    let output = Command::new(&setup.python)
        .arg(setup.python_dir.join("ort_raw.py"))
        .arg(&model.files[0])
        .arg(threads.to_string())
        .arg(n.to_string())
        .arg(&input)
        .output()
        .expect("run ort_raw.py");
    assert!(
        output.status.success(),
        "ort_raw.py failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    let answer: serde_json::Value =
        serde_json::from_slice(&output.stdout).expect("ort_raw.py JSON");
    let values: Vec<f32> = answer["output"]
        .as_array()
        .expect("output")
        .iter()
        .map(|x| x.as_f64().expect("number") as f32)
        .collect();
    assert!(
        model.difference(&values) < 1e-3,
        "{}: onnxruntime disagrees with tract",
        model.name
    );
    let runs: Vec<f64> = answer["run_us"]
        .as_array()
        .expect("run_us")
        .iter()
        .map(|x| x.as_f64().expect("number"))
        .collect();
    median(&runs)
}

pub fn run(setup: &Setup) -> String {
    let mut out = format!(
        "One run on the fixed input, medians of {} (MLP) / {} (CNN) runs per round, {} rounds \
         interleaved; cells are the median over rounds (min–max) in µs, and tract / onnxruntime. \
         Every variant's output is checked against the reference.\n\n",
        runs_per_sample(&setup.models[0]),
        runs_per_sample(&setup.models[1]),
        setup.rounds
    );
    out += "| model | threads | onnxruntime (µs) | tract variant | tract (µs) | tract / onnxruntime |\n";
    out += "|---|---:|---:|---|---:|---:|\n";
    let thread_counts: Vec<usize> = [1, 2].into_iter().filter(|&t| t <= setup.cpus).collect();
    for model in &setup.models {
        let variants = tract_variants(model);
        for (label, run) in &variants {
            assert!(
                model.difference(&run()) < 1e-3,
                "{}: tract {label} disagrees",
                model.name
            );
        }
        let n = runs_per_sample(model);
        for &threads in &thread_counts {
            let mut ort = Rounds::default();
            let mut tract: Vec<Rounds> = vec![Rounds::default(); variants.len()];
            for _ in 0..setup.rounds {
                use_threads(Some(threads));
                for ((_, run), rounds) in variants.iter().zip(&mut tract) {
                    rounds.push(time_runs(run, n));
                }
                ort.push(onnxruntime(setup, model, threads, n));
            }
            for ((label, _), rounds) in variants.iter().zip(&tract) {
                let decimals = if ort.median() >= 100.0 { 0 } else { 1 };
                out += &format!(
                    "| {} | {threads} | {} | {label} | {} | {:.2}× |\n",
                    model.label,
                    ort.show(decimals),
                    rounds.show(decimals),
                    rounds.ratio_to(&ort)
                );
            }
        }
    }
    use_threads(Some(1));
    out
}
