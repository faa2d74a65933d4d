//! Raw compute: one run of the model on the fixed input, tract against onnxruntime, at 1, 2 and
//! 4 threads, no handler around either. tract is driven as modelpipe serves it now and as it
//! served before this comparison's levers: the MLP through one generic plan for its symbolic
//! batch (now: a plan per concrete shape), the CNNs in both convolution layouts (plain was the
//! only one; now the one chosen at ingest, recorded in the manifest, is served).

use std::process::Command;
use std::time::Instant;

use modelpipe_core::ModelName;
use modelpipe_engine::{Engine, Layout, use_threads};
use tract_onnx::prelude::*;

use super::Setup;
use crate::models::BenchModel;
use crate::stats::{Rounds, median, us};

type Run = Box<dyn Fn() -> Vec<f32>>;

fn runs_per_sample(model: &BenchModel) -> usize {
    model.scale(5000, 30, 10)
}

/// The ways of driving tract compared for `model`: (label, run).
fn tract_variants(setup: &Setup, model: &BenchModel) -> Vec<(String, Run)> {
    let path = &model.files[0];
    let name: ModelName = model.name.parse().expect("model name");
    let chosen = setup
        .registry
        .manifest(&name, 1)
        .expect("manifest")
        .layout
        .map(|choice| choice.layout)
        .unwrap_or_default();
    let engine_run = |layout: Layout| -> Run {
        let engine = Engine::load_onnx(path, layout).expect("load");
        let input = model.input_tensor();
        Box::new(move || first_output(engine.run(vec![input.clone()]).expect("run")))
    };
    if model.name == "mlp" {
        let plan = generic_plan(path).expect("plan");
        let input = model.input_tensor();
        let generic: Run = Box::new(move || {
            first_output(
                plan.run(tvec![input.clone().into()])
                    .expect("run")
                    .into_iter()
                    .map(|v| v.into_tensor())
                    .collect(),
            )
        });
        return vec![
            ("one generic plan, symbolic batch (before)".into(), generic),
            (
                "plan for the concrete shape (served)".into(),
                engine_run(Layout::Plain),
            ),
        ];
    }
    [Layout::Plain, Layout::Nhwc]
        .into_iter()
        .map(|layout| {
            let mut label = match layout {
                Layout::Plain => "plain (before)",
                Layout::Nhwc => "conv_nhwc",
            }
            .to_string();
            if layout == chosen {
                label += " ← chosen at ingest, served";
            }
            (label, engine_run(layout))
        })
        .collect()
}

/// The model optimised as it is, its batch left symbolic.
fn generic_plan(path: &std::path::Path) -> TractResult<Arc<TypedRunnableModel>> {
    tract_onnx::onnx()
        .model_for_path(path)?
        .into_optimized()?
        .into_runnable()
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
        "One run on the fixed input, medians of {} (MLP) / {} (MobileNet) / {} (ResNet) runs per \
         round, {} rounds interleaved; cells are the median over rounds (min–max) in µs, and \
         tract / onnxruntime. Every variant's output is checked against the reference. This \
         machine has {} vCPUs: 4 threads oversubscribe it (shown for the shape of the curve; on \
         Lambda, threads = vCPUs).\n\n",
        runs_per_sample(&setup.models[0]),
        runs_per_sample(&setup.models[1]),
        runs_per_sample(&setup.models[2]),
        setup.rounds,
        setup.cpus,
    );
    out += "| model | threads | onnxruntime (µs) | tract variant | tract (µs) | tract / onnxruntime |\n";
    out += "|---|---:|---:|---|---:|---:|\n";
    for model in &setup.models {
        let variants = tract_variants(setup, model);
        for (label, run) in &variants {
            assert!(
                model.difference(&run()) < 1e-3,
                "{}: tract {label} disagrees",
                model.name
            );
        }
        let n = runs_per_sample(model);
        for threads in [1, 2, 4] {
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
