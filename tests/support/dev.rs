//! `modelctl dev` as users run it: a child process on free loopback ports, driven by the stock
//! `aws` CLI (uploads, object tags) and plain HTTP.

use std::path::Path;
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::{binary, free_port, wait_for};

/// How long a test waits for anything `modelctl dev` does.
pub const WAIT: Duration = Duration::from_secs(60);

/// Spawns `modelctl dev` on `data` and two free loopback ports (S3, HTTP), its command
/// completed by `configure` (environment, output, more arguments), and waits until its
/// inference API answers (its S3 endpoint is bound before). A free port can be taken between
/// its choice and dev's bind (an outgoing connection elsewhere may get it): dev then exits at
/// once, and is started again on two other ports.
pub async fn spawn(data: &Path, mut configure: impl FnMut(&mut Command)) -> (Child, u16, u16) {
    let http = reqwest::Client::new();
    for _ in 0..3 {
        let (s3_port, http_port) = (free_port(), free_port());
        let mut command = Command::new(binary("modelctl"));
        command
            .args(["dev", "--data", data.to_str().unwrap()])
            .args(["--s3-addr", &format!("127.0.0.1:{s3_port}")])
            .args(["--http-addr", &format!("127.0.0.1:{http_port}")]);
        configure(&mut command);
        let mut child = command.spawn().expect("start modelctl dev");
        let deadline = Instant::now() + WAIT;
        let health = format!("http://127.0.0.1:{http_port}/v2/health/live");
        loop {
            if let Some(status) = child.try_wait().expect("modelctl dev's status") {
                eprintln!("modelctl dev exited before answering ({status}): again on other ports");
                break;
            }
            if http.get(&health).send().await.is_ok() {
                return (child, s3_port, http_port);
            }
            assert!(
                Instant::now() < deadline,
                "timed out after {WAIT:?} waiting for modelctl dev's inference API"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
    panic!("modelctl dev exited three times before answering");
}

/// A running `modelctl dev`, killed when dropped.
pub struct Dev {
    child: Child,
    pub s3_port: u16,
    /// `http://127.0.0.1:PORT` of the S3 endpoint.
    pub endpoint: String,
    /// `http://127.0.0.1:PORT` of the inference API.
    pub base: String,
    pub http: reqwest::Client,
}

impl Dev {
    /// Starts `modelctl dev` on `data` with `extra` arguments and waits for its inference API.
    pub async fn start(data: &Path, extra: &[&str]) -> Self {
        Self::start_with_env(data, extra, &[]).await
    }

    /// [`Self::start`] with environment variables set for it.
    pub async fn start_with_env(data: &Path, extra: &[&str], env: &[(&str, &str)]) -> Self {
        let (child, s3_port, http_port) = spawn(data, |command| {
            command
                .envs(env.iter().copied())
                .args(extra)
                .stdout(Stdio::null())
                .stderr(Stdio::null());
        })
        .await;
        Self {
            child,
            s3_port,
            endpoint: format!("http://127.0.0.1:{s3_port}"),
            base: format!("http://127.0.0.1:{http_port}"),
            http: reqwest::Client::new(),
        }
    }

    /// Stops it with SIGINT (Ctrl-C) and waits for it to exit.
    pub fn interrupt(&mut self) -> std::process::ExitStatus {
        let _ = Command::new("kill")
            .args(["-INT", &self.child.id().to_string()])
            .status();
        self.child.wait().expect("wait for modelctl dev")
    }

    /// Stops it with SIGTERM (as Lambda stops an environment) and waits for it to exit.
    pub fn terminate(&mut self) -> std::process::ExitStatus {
        let _ = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status();
        self.child.wait().expect("wait for modelctl dev")
    }

    /// Runs the stock `aws` CLI against the S3 endpoint.
    pub fn aws(&self, args: &[&str]) -> Output {
        aws(&self.endpoint, args)
    }

    /// `aws s3 cp FILE s3://models/KEY EXTRA...`, which must succeed.
    pub fn upload(&self, file: &Path, key: &str, extra: &[&str]) {
        upload(&self.endpoint, file, key, extra)
    }

    /// The object tag `name` of `key` in bucket `models`, once it has one.
    pub fn tag(&self, key: &str, name: &str) -> Option<String> {
        tag(&self.endpoint, key, name)
    }

    /// Waits for the validator's outcome on `key` (`published`, `registered` or `rejected`,
    /// tagged on the object) and returns it with the rejection reason, if any.
    pub async fn outcome(&self, key: &str) -> (String, Option<String>) {
        let status = wait_for(&format!("the outcome of {key}"), WAIT, || async {
            self.tag(key, "modelpipe-status")
        })
        .await;
        (status, self.tag(key, "modelpipe-reason"))
    }

    /// [`Self::outcome`] of a new upload to `key`, whose previous upload was tagged `previous`:
    /// waits for the tag to change.
    pub async fn outcome_after(&self, key: &str, previous: &str) -> (String, Option<String>) {
        let status = wait_for(&format!("a new outcome of {key}"), WAIT, || async {
            self.tag(key, "modelpipe-status").filter(|s| s != previous)
        })
        .await;
        (status, self.tag(key, "modelpipe-reason"))
    }

    /// `GET` on the inference API: status and JSON body.
    pub async fn get(&self, path: &str) -> (u16, Value) {
        let response = self
            .http
            .get(format!("{}{path}", self.base))
            .send()
            .await
            .unwrap();
        (response.status().as_u16(), response.json().await.unwrap())
    }

    /// `GET /metrics`: the Prometheus text.
    pub async fn metrics(&self) -> String {
        let response = self
            .http
            .get(format!("{}/metrics", self.base))
            .send()
            .await
            .unwrap();
        response.text().await.unwrap()
    }

    /// `POST` of a JSON body on the inference API: status and JSON body.
    pub async fn post(&self, path: &str, body: &Value) -> (u16, Value) {
        let response = self
            .http
            .post(format!("{}{path}", self.base))
            .json(body)
            .send()
            .await
            .unwrap();
        (response.status().as_u16(), response.json().await.unwrap())
    }
}

impl Drop for Dev {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Runs the stock `aws` CLI against `endpoint` with `modelctl dev`'s credentials.
pub fn aws(endpoint: &str, args: &[&str]) -> Output {
    Command::new("aws")
        .arg("--endpoint-url")
        .arg(endpoint)
        .args(args)
        .env("AWS_ACCESS_KEY_ID", "modelpipe")
        .env("AWS_SECRET_ACCESS_KEY", "modelpipe")
        .env("AWS_DEFAULT_REGION", "us-east-1")
        .env("AWS_EC2_METADATA_DISABLED", "true")
        .output()
        .expect("the aws CLI must be installed")
}

/// `aws s3 cp FILE s3://models/KEY EXTRA...`, which must succeed.
pub fn upload(endpoint: &str, file: &Path, key: &str, extra: &[&str]) {
    let target = format!("s3://models/{key}");
    let mut args = vec!["s3", "cp", file.to_str().unwrap(), target.as_str()];
    args.extend_from_slice(extra);
    let out = aws(endpoint, &args);
    assert!(
        out.status.success(),
        "aws s3 cp failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// The object tag `name` of `key` in bucket `models`.
pub fn tag(endpoint: &str, key: &str, name: &str) -> Option<String> {
    let out = aws(
        endpoint,
        &[
            "s3api",
            "get-object-tagging",
            "--bucket",
            "models",
            "--key",
            key,
        ],
    );
    let tags: Value = serde_json::from_slice(&out.stdout).ok()?;
    tags["TagSet"]
        .as_array()?
        .iter()
        .find(|t| t["Key"] == name)
        .and_then(|t| t["Value"].as_str().map(str::to_string))
}

/// The sum of Prometheus `name{…}` samples in `text` whose labels include `labels`.
pub fn metric(text: &str, name: &str, labels: &[(&str, &str)]) -> f64 {
    text.lines()
        .filter(|line| line.starts_with(&format!("{name}{{")))
        .filter(|line| {
            labels
                .iter()
                .all(|(k, v)| line.contains(&format!("{k}=\"{v}\"")))
        })
        .map(|line| line.rsplit(' ').next().unwrap().parse::<f64>().unwrap())
        .sum()
}
