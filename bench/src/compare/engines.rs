//! The engine decision per model: every model of the committed corpus of converter output
//! (`tests/corpus`) and the three generated ones, checked as the validator checks an upload. The
//! figures are the validator's own trial, recorded in each manifest: load time and fastest run
//! on the smoke input in tract and in ONNX Runtime, and the engine chosen.

use std::collections::BTreeMap;
use std::path::PathBuf;

use modelpipe_engine::checks::{Expectations, check_model};
use modelpipe_engine::use_threads;

use super::Setup;
use crate::stats::Rounds;

#[derive(Default)]
struct Row {
    tract_load_ms: Rounds,
    tract_run_us: Rounds,
    ort_load_ms: Rounds,
    ort_run_us: Rounds,
    chosen: BTreeMap<String, usize>,
    tract_error: Option<String>,
}

fn models(setup: &Setup) -> Vec<(String, PathBuf)> {
    let corpus = modelpipe_tests::workspace_root().join("tests/corpus");
    let mut models: Vec<(String, PathBuf)> = std::fs::read_dir(&corpus)
        .expect("tests/corpus")
        .flatten()
        .map(|e| {
            (
                e.file_name().to_string_lossy().into_owned(),
                e.path().join("model.onnx"),
            )
        })
        .collect();
    models.sort();
    models.extend(
        setup
            .models
            .iter()
            .map(|m| (format!("generated: {}", m.label), m.files[0].clone())),
    );
    models
}

pub fn run(setup: &Setup) -> String {
    let threads = use_threads(None);
    let mut out = format!(
        "`check_model` as the validator runs it ({threads} thread(s) per engine, as the \
         validator function uses every vCPU), {rounds} rounds; medians (min–max). Runs are the \
         fastest of up to 5 interleaved runs on the smoke input (batch 1). A model rejected in \
         every round is listed with the reason.\n\n\
         | model | tract load (ms) | tract run (µs) | onnxruntime load (ms) | onnxruntime run (µs) | chosen |\n\
         |---|---:|---:|---:|---:|---|\n",
        rounds = setup.rounds,
    );
    for (name, path) in models(setup) {
        let mut row = Row::default();
        let mut rejected = None;
        for _ in 0..setup.rounds {
            let checked = match check_model(&path, Expectations::default()) {
                Ok(checked) => checked,
                Err(e) => {
                    rejected = Some(e.to_string());
                    continue;
                }
            };
            let choice = checked.choice;
            *row.chosen.entry(choice.engine.to_string()).or_default() += 1;
            for (trial, load, run) in [
                (&choice.tract, &mut row.tract_load_ms, &mut row.tract_run_us),
                (
                    &choice.onnxruntime,
                    &mut row.ort_load_ms,
                    &mut row.ort_run_us,
                ),
            ] {
                let Some(trial) = trial else { continue };
                trial.load_ms.inspect(|&ms| load.push(ms as f64));
                trial.run_us.inspect(|&us| run.push(us as f64));
            }
            row.tract_error = choice.tract.and_then(|t| t.error);
        }
        if row.chosen.is_empty() {
            let reason: String = rejected.unwrap_or_default().chars().take(120).collect();
            out += &format!("| {name} | | | | | rejected: {reason} |\n");
            continue;
        }
        let cell = |r: &Rounds, decimals| {
            if r.is_empty() {
                "—".to_string()
            } else {
                r.show(decimals)
            }
        };
        let tract_load = match &row.tract_error {
            Some(error) if row.tract_load_ms.is_empty() => {
                let op = error
                    .split("Unimplemented(")
                    .nth(1)
                    .and_then(|s| s.split(')').next())
                    .unwrap_or("cannot load");
                format!("— ({op})")
            }
            _ => cell(&row.tract_load_ms, 1),
        };
        let chosen: Vec<String> = row
            .chosen
            .iter()
            .map(|(engine, n)| format!("{engine} ({n}/{})", setup.rounds))
            .collect();
        out += &format!(
            "| {name} | {tract_load} | {} | {} | {} | {} |\n",
            cell(&row.tract_run_us, 0),
            cell(&row.ort_load_ms, 1),
            cell(&row.ort_run_us, 0),
            chosen.join(", "),
        );
    }
    out
}
