//! A function process started as Lambda starts one, in an emulated execution environment
//! ([`modelpipe_tests::lambda_env`]: Runtime and Extensions API, frozen between invocations);
//! its memory read from `/proc` (peak resident set, resettable to measure one phase).

use std::path::Path;
use std::time::{Duration, Instant};

use modelpipe_tests::lambda_env::{Answer, Environment, Launch as EnvironmentLaunch};
use serde_json::Value;

/// How long any one event may take before the benchmark gives up on the function.
const INVOKE_TIMEOUT: Duration = Duration::from_secs(120);

pub struct Function {
    environment: Environment,
    /// Just before the process was spawned.
    pub spawned: Instant,
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
    pub async fn start(launch: Launch<'_>) -> Self {
        let environment = Environment::launch(EnvironmentLaunch {
            program: launch.program,
            args: launch.args,
            dir: launch.dir,
            name: launch.name,
            env: &launch.env,
        })
        .await;
        Self {
            spawned: environment.spawned,
            environment,
        }
    }

    /// Time from spawn to the end of init (the function waiting for its first event).
    pub async fn init_time(&self) -> Duration {
        self.environment.init_time(INVOKE_TIMEOUT).await
    }

    /// Sends `event` once the environment is free; panics (with the function's log) unless the
    /// function answers it. Returns when the answer is posted, as a caller sees it.
    pub async fn invoke(&self, event: Value) -> Answer {
        self.environment.until_free(INVOKE_TIMEOUT).await;
        let answer = self
            .environment
            .invoke(event, INVOKE_TIMEOUT)
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        if let Err(error) = &answer.body {
            panic!(
                "the function reported an error: {error}\n{}",
                self.environment.log_tail()
            );
        }
        answer
    }

    /// Waits until the environment has finished its last invocation (its extensions included)
    /// and is frozen.
    pub async fn until_free(&self) {
        self.environment.until_free(INVOKE_TIMEOUT).await;
    }

    /// Peak resident set (VmHWM) since start or the last [`Self::reset_peak`], in MB.
    pub fn peak_rss_mb(&self) -> f64 {
        self.status_kb("VmHWM:") / 1e3
    }

    /// Makes the peak start again from the current resident set.
    pub fn reset_peak(&self) {
        std::fs::write(format!("/proc/{}/clear_refs", self.environment.pid()), "5")
            .expect("reset the peak resident set (/proc/PID/clear_refs)");
    }

    fn status_kb(&self, field: &str) -> f64 {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.environment.pid()))
            .expect("the function is running");
        status
            .lines()
            .find_map(|line| line.strip_prefix(field))
            .and_then(|kb| kb.trim().trim_end_matches("kB").trim().parse().ok())
            .unwrap_or_else(|| panic!("{field} in /proc/PID/status"))
    }
}
