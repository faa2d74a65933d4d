//! One model load in a fresh process, as the inference function does it after the hash check:
//! `load_probe VERSION_DIR onnx|artifact trim|keep`. Loads the version (from `model.onnx` or the
//! compiled artifact, in the layout its manifest records), warms it with one run, hands freed
//! heap back to the system (`trim`, as modelpipe does) or not (`keep`), then runs it 5 more
//! times; prints one JSON line: load_ms, first_run_ms, run_ms (median of the 5), rss_mb and
//! peak_mb (VmRSS and VmHWM at the end).

use std::path::PathBuf;
use std::time::Instant;

use modelpipe_engine::{Engine, use_threads};
use modelpipe_registry::{ARTIFACT_FILE, MODEL_FILE, Manifest};
use modelpipe_serve::loaded::release_freed_memory;
use serde_json::json;

fn status_mb(field: &str) -> f64 {
    let status = std::fs::read_to_string("/proc/self/status").expect("/proc/self/status");
    status
        .lines()
        .find_map(|line| line.strip_prefix(field))
        .and_then(|rest| {
            rest.trim()
                .trim_end_matches("kB")
                .trim()
                .parse::<f64>()
                .ok()
        })
        .map(|kb| kb / 1024.0)
        .unwrap_or_else(|| panic!("no {field} in /proc/self/status"))
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let [dir, source, memory] = args.as_slice() else {
        panic!("usage: load_probe VERSION_DIR onnx|artifact trim|keep");
    };
    let dir = PathBuf::from(dir);
    let manifest: Manifest =
        serde_json::from_slice(&std::fs::read(dir.join("manifest.json")).expect("manifest"))
            .expect("manifest JSON");
    let layout = manifest.layout();
    use_threads(Some(1));
    let started = Instant::now();
    let engine = match source.as_str() {
        "onnx" => Engine::load_onnx(&dir.join(MODEL_FILE), layout),
        "artifact" => {
            let artifact = dir.join(ARTIFACT_FILE);
            let smoke = manifest.smoke_shapes.as_deref();
            Engine::load_artifact(&artifact, &manifest.signature, layout, smoke)
        }
        other => panic!("source {other}: onnx or artifact"),
    }
    .expect("load");
    let load_ms = started.elapsed().as_secs_f64() * 1e3;
    let first = Instant::now();
    engine.smoke_test().expect("first run");
    let first_run_ms = first.elapsed().as_secs_f64() * 1e3;
    match memory.as_str() {
        "trim" => release_freed_memory(),
        "keep" => {}
        other => panic!("memory {other}: trim or keep"),
    }
    let inputs = engine.smoke_inputs().expect("inputs");
    let mut runs: Vec<f64> = (0..5)
        .map(|_| {
            let started = Instant::now();
            std::hint::black_box(engine.run(inputs.clone()).expect("run"));
            started.elapsed().as_secs_f64() * 1e3
        })
        .collect();
    runs.sort_by(f64::total_cmp);
    println!(
        "{}",
        json!({
            "load_ms": load_ms,
            "first_run_ms": first_run_ms,
            "run_ms": runs[2],
            "rss_mb": status_mb("VmRSS:"),
            "peak_mb": status_mb("VmHWM:"),
        })
    );
}
