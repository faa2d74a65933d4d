//! modelpipe side by side with the Python onnxruntime handler: the shared setup (models, a
//! registry holding them, the shipped function binaries, the Python venv) and one module per
//! comparison, each returning its part of the report.

pub mod compute;
pub mod engines;
pub mod ingest;
pub mod lambda;
pub mod load;
pub mod machine;
pub mod packages;
pub mod upload;

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;

use modelpipe_core::ModelName;
use modelpipe_engine::EngineKind;
use modelpipe_registry::Registry;
use modelpipe_tests::serving::{commit, commit_in, publish};

use crate::models::BenchModel;

/// A goal from the benchmark brief and whether this run met it.
pub struct Target {
    pub what: String,
    pub goal: String,
    pub measured: String,
    pub met: bool,
}

pub fn targets_table(targets: &[Target]) -> String {
    let mut out = String::from("| target | goal | measured | met |\n|---|---|---|---|\n");
    for t in targets {
        out += &format!(
            "| {} | {} | {} | {} |\n",
            t.what,
            t.goal,
            t.measured,
            if t.met { "yes" } else { "**no**" }
        );
    }
    out
}

pub struct Setup {
    pub rounds: usize,
    pub upload_cycles: usize,
    /// CPUs this process may use: the compute threads both runtimes get in the handler
    /// comparison, as the inference function uses every vCPU Lambda gives it.
    pub cpus: usize,
    pub work: PathBuf,
    pub logs: PathBuf,
    pub models: Vec<BenchModel>,
    /// A directory registry holding versions 1 and 2 of every model, `live` on 1, committed as
    /// the validator commits them for tract (layout chosen, artifact compiled).
    pub registry: Registry,
    pub registry_dir: PathBuf,
    /// The same versions committed with `engine=onnxruntime`: the function serves them through
    /// ONNX Runtime (the library beside its `bootstrap`).
    pub onnxruntime: Registry,
    pub onnxruntime_dir: PathBuf,
    pub python: PathBuf,
    pub python_dir: PathBuf,
    target: PathBuf,
    _work: tempfile::TempDir,
}

impl Setup {
    pub fn new(rounds: usize, upload_cycles: usize) -> Self {
        let root = modelpipe_tests::workspace_root();
        let target = std::env::var_os("CARGO_TARGET_DIR")
            .map(PathBuf::from)
            .unwrap_or_else(|| root.join("target"));
        let python = root.join("bench/.venv/bin/python");
        assert!(
            python.exists(),
            "{} is missing: run bench/run.sh",
            python.display()
        );
        let work_dir = tempfile::tempdir().expect("work dir");
        let work = work_dir.path().to_path_buf();
        let logs = target.join("bench-logs");
        let _ = std::fs::remove_dir_all(&logs);
        std::fs::create_dir_all(&logs).expect("logs dir");
        let models_dir = work.join("models");
        std::fs::create_dir_all(&models_dir).expect("models dir");
        let models = BenchModel::all(&models_dir);
        let registry_dir = work.join("registry");
        let registry = Registry::open(&registry_dir).expect("registry");
        let onnxruntime_dir = work.join("registry-onnxruntime");
        let onnxruntime = Registry::open(&onnxruntime_dir).expect("registry");
        for model in &models {
            let name: ModelName = model.name.parse().expect("model name");
            for file in &model.files {
                let bytes = std::fs::read(file).expect("model file");
                commit(&registry, &name, &bytes);
                commit_in(&onnxruntime, &name, &bytes, Some(EngineKind::Onnxruntime));
            }
            publish(&registry, &name, 1);
            publish(&onnxruntime, &name, 1);
        }
        let cpus = std::thread::available_parallelism().map_or(1, |n| n.get());
        let setup = Self {
            rounds,
            upload_cycles,
            cpus,
            work,
            logs,
            models,
            registry,
            registry_dir,
            onnxruntime,
            onnxruntime_dir,
            python,
            python_dir: root.join("bench/python"),
            target,
            _work: work_dir,
        };
        for name in packages::FUNCTIONS {
            setup.unpack(name);
        }
        setup
    }

    /// A binary of this workspace built with the `profiling` profile (`modelctl`, the harness's).
    pub fn built(&self, name: &str) -> PathBuf {
        let path = self.target.join("profiling").join(name);
        assert!(
            path.exists(),
            "{} is missing: run bench/run.sh",
            path.display()
        );
        path
    }

    /// The Lambda zip `cargo lambda build` wrote for function `name`.
    pub fn zip(&self, name: &str) -> PathBuf {
        self.target.join("lambda").join(name).join("bootstrap.zip")
    }

    /// The `bootstrap` binary inside [`Self::zip`], unpacked: what Lambda runs.
    pub fn bootstrap(&self, name: &str) -> PathBuf {
        self.work.join("lambda").join(name).join("bootstrap")
    }

    fn unpack(&self, name: &str) {
        let zip = self.zip(name);
        assert!(
            zip.exists(),
            "{} is missing: run bench/run.sh",
            zip.display()
        );
        let dir = self.work.join("lambda").join(name);
        let status = Command::new("python3")
            .args(["-m", "zipfile", "-e"])
            .arg(&zip)
            .arg(&dir)
            .status()
            .expect("python3 -m zipfile");
        assert!(status.success(), "unzip {}", zip.display());
        let bootstrap = self.bootstrap(name);
        std::fs::set_permissions(&bootstrap, std::fs::Permissions::from_mode(0o755))
            .expect("make bootstrap executable");
    }
}

/// Runs `program args` and returns its first line of output (stdout, else stderr).
pub fn version_of(program: &Path, args: &[&str]) -> String {
    Command::new(program)
        .args(args)
        .output()
        .ok()
        .map(|o| {
            let text = if o.stdout.is_empty() {
                o.stderr
            } else {
                o.stdout
            };
            String::from_utf8_lossy(&text)
                .lines()
                .next()
                .unwrap_or("")
                .trim()
                .to_string()
        })
        .unwrap_or_else(|| "unknown".into())
}
