//! A function process started as Lambda starts one: a clean environment with the variables the
//! Lambda service sets, `AWS_LAMBDA_RUNTIME_API` pointing at a [`RuntimeApi`]; its memory read
//! from `/proc` (peak resident set, resettable to measure one phase).

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::runtime_api::{Answer, RuntimeApi};

/// How long any one event may take before the benchmark gives up on the function.
const INVOKE_TIMEOUT: Duration = Duration::from_secs(120);

pub struct Function {
    api: RuntimeApi,
    child: Child,
    /// Just before the process was spawned.
    pub spawned: Instant,
    pub log: PathBuf,
}

/// What to run: a program, its arguments and working directory, and its own variables.
pub struct Launch<'a> {
    pub name: &'a str,
    pub program: &'a Path,
    pub args: &'a [&'a str],
    pub dir: Option<&'a Path>,
    pub env: Vec<(&'a str, String)>,
}

impl Function {
    pub async fn start(launch: Launch<'_>, logs: &Path) -> Self {
        let api = RuntimeApi::start().await;
        let log_path = logs.join(format!(
            "{}-{}.log",
            launch.name,
            api.address().replace(':', "-")
        ));
        let log = std::fs::File::create(&log_path).expect("function log");
        let mut command = Command::new(launch.program);
        command
            .args(launch.args)
            .env_clear()
            .env("PATH", std::env::var_os("PATH").unwrap_or_default())
            .env("AWS_LAMBDA_RUNTIME_API", api.address())
            .env("AWS_LAMBDA_FUNCTION_NAME", launch.name)
            .env("AWS_LAMBDA_FUNCTION_VERSION", "$LATEST")
            .env("AWS_LAMBDA_FUNCTION_MEMORY_SIZE", "3008")
            .env(
                "AWS_LAMBDA_LOG_GROUP_NAME",
                format!("/aws/lambda/{}", launch.name),
            )
            .env("AWS_LAMBDA_LOG_STREAM_NAME", "bench")
            .env("AWS_REGION", "us-east-1")
            .env("LANG", "C.UTF-8")
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("function log"))
            .stderr(log);
        if let Some(dir) = launch.dir {
            command.current_dir(dir);
        }
        for (key, value) in launch.env {
            command.env(key, value);
        }
        let spawned = Instant::now();
        let child = command
            .spawn()
            .unwrap_or_else(|e| panic!("start {}: {e}", launch.program.display()));
        Self {
            api,
            child,
            spawned,
            log: log_path,
        }
    }

    /// Time from spawn to the first poll for an event: the function's init.
    pub async fn init_time(&self) -> Duration {
        let ready = self
            .api
            .ready(INVOKE_TIMEOUT)
            .await
            .unwrap_or_else(|e| self.fail(&e));
        ready - self.spawned
    }

    /// Sends `event`; panics (with the function's log) unless the function answers it.
    pub async fn invoke(&self, event: Value) -> Answer {
        let answer = self
            .api
            .invoke(event, INVOKE_TIMEOUT)
            .await
            .unwrap_or_else(|e| self.fail(&e));
        if let Err(error) = &answer.body {
            self.fail(&format!("the function reported an error: {error}"));
        }
        answer
    }

    fn fail(&self, what: &str) -> ! {
        let log = std::fs::read_to_string(&self.log).unwrap_or_default();
        let tail: String = log
            .lines()
            .rev()
            .take(30)
            .collect::<Vec<_>>()
            .into_iter()
            .rev()
            .collect::<Vec<_>>()
            .join("\n");
        panic!("{}: {what}\n--- its log ---\n{tail}", self.log.display());
    }

    /// Peak resident set (VmHWM) since start or the last [`Self::reset_peak`], in MB.
    pub fn peak_rss_mb(&self) -> f64 {
        self.status_kb("VmHWM:") / 1e3
    }

    /// Makes the peak start again from the current resident set.
    pub fn reset_peak(&self) {
        std::fs::write(format!("/proc/{}/clear_refs", self.child.id()), "5")
            .expect("reset the peak resident set (/proc/PID/clear_refs)");
    }

    fn status_kb(&self, field: &str) -> f64 {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.child.id()))
            .expect("the function is running");
        status
            .lines()
            .find_map(|line| line.strip_prefix(field))
            .and_then(|kb| kb.trim().trim_end_matches("kB").trim().parse().ok())
            .unwrap_or_else(|| panic!("{field} in /proc/PID/status"))
    }
}

impl Drop for Function {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
