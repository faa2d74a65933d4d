//! The machine and the versions a report was measured with.

use std::path::Path;

use super::{Setup, version_of};

fn cpu_model() -> String {
    std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|c| {
            c.lines().find_map(|l| {
                l.strip_prefix("model name")
                    .map(|v| v.trim_start_matches([' ', '\t', ':']).to_string())
            })
        })
        .unwrap_or_else(|| "unknown CPU".into())
}

fn memory_gb() -> f64 {
    std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|m| {
            m.lines()
                .find_map(|l| l.strip_prefix("MemTotal:"))
                .and_then(|kb| kb.trim().trim_end_matches("kB").trim().parse::<f64>().ok())
        })
        .map_or(0.0, |kb| kb / 1e6)
}

/// The version of `package` locked in Cargo.lock.
fn locked(root: &Path, package: &str) -> String {
    let lock = std::fs::read_to_string(root.join("Cargo.lock")).unwrap_or_default();
    let marker = format!("name = \"{package}\"\nversion = \"");
    lock.split_once(&marker)
        .and_then(|(_, rest)| rest.split('"').next())
        .unwrap_or("unknown")
        .to_string()
}

pub fn describe(setup: &Setup) -> String {
    let root = modelpipe_tests::workspace_root();
    let python_versions = version_of(
        &setup.python,
        &[
            "-c",
            "import sys, onnxruntime, numpy, importlib.metadata as m; \
             print(f'Python {sys.version.split()[0]}, onnxruntime {onnxruntime.__version__}, numpy {numpy.__version__}, awslambdaric {m.version(\"awslambdaric\")}')",
        ],
    );
    format!(
        "- Machine: {} ({} vCPUs), {:.0} GB RAM, Linux {}\n\
         - modelpipe: {}, tract-onnx {}, lambda_runtime {}; functions from `scripts/package.sh` (`cargo lambda build --profile lambda`, zig, glibc 2.30 target, `-C target-cpu=x86-64-v3`), `modelctl` and the harness from the `profiling` profile (generic x86-64)\n\
         - Baseline: {}\n\
         - Upload client: {}\n",
        cpu_model(),
        setup.cpus,
        memory_gb(),
        version_of(Path::new("uname"), &["-r"]),
        version_of(Path::new("rustc"), &["-V"]),
        locked(&root, "tract-onnx"),
        locked(&root, "lambda_runtime"),
        python_versions,
        version_of(Path::new("aws"), &["--version"]),
    )
}
