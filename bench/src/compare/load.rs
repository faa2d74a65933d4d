//! Loading a model, each load in a fresh process: modelpipe from `model.onnx` (every version
//! before ingest compiled them, and the fallback) and from the compiled artifact, with and
//! without handing the allocator's free pages back after the load (`malloc_trim`), against
//! onnxruntime's session creation. One thread each; the version's recorded layout.

use std::path::Path;
use std::process::Command;

use serde_json::Value;

use super::Setup;
use crate::models::BenchModel;
use crate::stats::Rounds;

#[derive(Default)]
struct Probe {
    load_ms: Rounds,
    first_run_ms: Rounds,
    run_ms: Rounds,
    rss_mb: Rounds,
    peak_mb: Rounds,
}

impl Probe {
    fn push(&mut self, answer: &Value) {
        let field = |name: &str| {
            answer[name]
                .as_f64()
                .unwrap_or_else(|| panic!("{name} in {answer}"))
        };
        self.load_ms.push(field("load_ms"));
        self.first_run_ms.push(field("first_run_ms"));
        self.run_ms.push(field("run_ms"));
        self.rss_mb.push(field("rss_mb"));
        self.peak_mb.push(field("peak_mb"));
    }

    fn row(&self, model: &str, what: &str, ort: &Probe) -> String {
        format!(
            "| {model} | {what} | {} | {:.2}× | {} | {} | {} | {} |\n",
            self.load_ms.show(1),
            self.load_ms.ratio_to(&ort.load_ms),
            self.first_run_ms.show(1),
            self.run_ms.show(2),
            self.rss_mb.show(1),
            self.peak_mb.show(1),
        )
    }
}

fn json_line(command: &mut Command, what: &str) -> Value {
    let output = command.output().unwrap_or_else(|e| panic!("{what}: {e}"));
    assert!(
        output.status.success(),
        "{what} failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    serde_json::from_slice(&output.stdout).unwrap_or_else(|e| panic!("{what} output: {e}"))
}

fn probe(setup: &Setup, version_dir: &Path, source: &str, memory: &str) -> Value {
    json_line(
        Command::new(setup.built("load_probe"))
            .arg(version_dir)
            .args([source, memory]),
        "load_probe",
    )
}

fn onnxruntime(setup: &Setup, model: &BenchModel) -> Value {
    json_line(
        Command::new(&setup.python)
            .arg(setup.python_dir.join("ort_load.py"))
            .arg(&model.files[0]),
        "ort_load.py",
    )
}

pub fn run(setup: &Setup) -> String {
    let mut out = format!(
        "Each load in a fresh process, {} rounds interleaved, median (min–max). load: parse (or \
         read the artifact), declutter, plan for the input shape; modelpipe's after its hash check, \
         which both sources share. first run: the warm-up run a load ends with. run: median of 5 \
         runs after it. RSS at the end, and the peak. onnxruntime: session creation, one thread; \
         `import onnxruntime` is extra (median {{import}} ms).\n\n",
        setup.rounds
    );
    out += "| model | load | load (ms) | / onnxruntime | first run (ms) | run (ms) | RSS (MB) | peak RSS (MB) |\n";
    out += "|---|---|---:|---:|---:|---:|---:|---:|\n";
    let mut import_ms = Rounds::default();
    for model in &setup.models {
        let version_dir = setup
            .registry_dir
            .join(model.name)
            .join("versions")
            .join("1");
        let variants = [
            ("modelpipe, model.onnx (before)", "onnx", "trim"),
            ("modelpipe, artifact", "artifact", "trim"),
            ("modelpipe, artifact, no malloc_trim", "artifact", "keep"),
        ];
        let mut ours: Vec<Probe> = variants.iter().map(|_| Probe::default()).collect();
        let mut ort = Probe::default();
        for _ in 0..setup.rounds {
            for ((_, source, memory), probe_rounds) in variants.iter().zip(&mut ours) {
                probe_rounds.push(&probe(setup, &version_dir, source, memory));
            }
            let answer = onnxruntime(setup, model);
            ort.push(&answer);
            import_ms.push(answer["import_ms"].as_f64().expect("import_ms"));
        }
        for ((label, _, _), probe_rounds) in variants.iter().zip(&ours) {
            out += &probe_rounds.row(model.label, label, &ort);
        }
        out += &ort.row(model.label, "onnxruntime session", &ort);
    }
    out.replace("{import}", &format!("{:.0}", import_ms.median()))
}
