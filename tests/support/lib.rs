//! Test harness shared by the end-to-end tests: real servers started as child processes
//! (moto_server for the AWS APIs, `cargo lambda watch` for the Lambda runtime API), polled until
//! ready, killed when dropped; and S3 events shaped exactly as AWS sends them.

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use modelpipe_validator::s3_event::{CreatedObject, object_created_event};

pub mod dev;
pub mod lambda_env;
pub mod serving;
pub mod signing;

pub fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("workspace root")
        .to_path_buf()
}

pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("free port")
        .port()
}

/// A command installed by `.ci/run` in the workspace's `.venv`, or else found on PATH.
pub fn tool(name: &str) -> PathBuf {
    let venv = workspace_root().join(".venv/bin").join(name);
    if venv.exists() {
        venv
    } else {
        PathBuf::from(name)
    }
}

/// Polls `check` every 20 ms until it returns `Some`, or panics after `timeout` saying `what`.
pub async fn wait_for<T, F, Fut>(what: &str, timeout: Duration, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(value) = check().await {
            return value;
        }
        assert!(
            Instant::now() < deadline,
            "timed out after {timeout:?} waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

async fn answers(url: &str) -> bool {
    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(2))
        .build()
        .expect("http client");
    client.get(url).send().await.is_ok()
}

async fn listening(port: u16) -> bool {
    tokio::net::TcpStream::connect(("127.0.0.1", port))
        .await
        .is_ok()
}

/// A child process killed (and reaped) on drop.
pub struct Server {
    child: Child,
    pub port: u16,
}

impl Server {
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    pub fn endpoint(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    fn assert_alive(&mut self, what: &str) {
        if let Ok(Some(status)) = self.child.try_wait() {
            panic!("{what} exited early with {status}");
        }
    }

    /// Stops the process with SIGINT (the graceful path) and waits for it.
    pub fn interrupt(&mut self) -> std::process::ExitStatus {
        let _ = Command::new("kill")
            .args(["-INT", &self.child.id().to_string()])
            .status();
        self.child.wait().expect("wait for child")
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The moto endpoint to use: `MODELPIPE_MOTO_ENDPOINT` when `.ci/run` started one for the whole
/// run, else a `moto_server` of this test's own (kept alive by the returned guard).
pub async fn moto() -> (String, Option<Server>) {
    match std::env::var("MODELPIPE_MOTO_ENDPOINT") {
        Ok(endpoint) if !endpoint.is_empty() => (endpoint, None),
        _ => {
            let server = start_moto().await;
            (server.endpoint(), Some(server))
        }
    }
}

/// A bucket name no other test uses.
pub fn unique_bucket(prefix: &str) -> String {
    static NEXT: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
    let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    format!("{prefix}-{}-{n}", std::process::id())
}

/// `moto_server` on a free loopback port, ready to answer.
pub async fn start_moto() -> Server {
    let port = free_port();
    let child = Command::new(tool("moto_server"))
        .args(["-H", "127.0.0.1", "-p", &port.to_string()])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("moto_server must be installed (pip install 'moto[server]'; .ci/run does it)");
    let mut server = Server { child, port };
    let url = format!("{}/moto-api/", server.endpoint());
    let deadline = Instant::now() + Duration::from_secs(30);
    while !answers(&url).await {
        server.assert_alive("moto_server");
        assert!(
            Instant::now() < deadline,
            "moto_server did not answer within 30 s"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    server
}

/// `cargo lambda watch --only-lambda-apis`: the Lambda runtime and invoke APIs, into which
/// [`start_function`] plugs this workspace's function binaries.
///
/// The binaries come from `target/debug`, built by `cargo build --workspace` (as .ci/run does):
/// watch's own `cargo run --bin NAME` would rebuild the dependencies with one package's feature
/// set, which costs minutes on a clean machine.
pub async fn start_watch() -> Server {
    let port = free_port();
    let child = Command::new(tool("cargo-lambda"))
        .args([
            "lambda",
            "watch",
            "--only-lambda-apis",
            "-A",
            "127.0.0.1",
            "-P",
            &port.to_string(),
        ])
        .current_dir(workspace_root())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("cargo-lambda must be installed (pip install cargo-lambda; .ci/run does it)");
    let mut server = Server { child, port };
    let deadline = Instant::now() + Duration::from_secs(60);
    // With --only-lambda-apis, `GET /` is not answered: a listening port is the ready signal.
    while !listening(port).await {
        server.assert_alive("cargo lambda watch");
        assert!(
            Instant::now() < deadline,
            "cargo lambda watch did not answer within 60 s"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    server
}

/// Where cargo put this workspace's binaries.
pub fn binary(name: &str) -> PathBuf {
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| workspace_root().join("target"));
    let path = target.join("debug").join(name);
    assert!(
        path.exists(),
        "{} is missing: run `cargo build --workspace` first",
        path.display()
    );
    path
}

/// Starts the function binary `name` against `watch`'s runtime API, as Lambda would; its log
/// (stdout and stderr) goes to `<MODELPIPE_FUNCTION_LOGS or the temp dir>/<name>-<pid>.log`,
/// see [`function_log`].
pub fn start_function(watch: &Server, name: &str, env: &[(&str, String)]) -> Server {
    start_executable(watch, name, &binary(name), env)
}

/// [`start_function`] for the executable at `path` (an unpacked Lambda zip's `bootstrap`), run
/// in its own directory as Lambda runs it in `/var/task`.
pub fn start_executable(watch: &Server, name: &str, path: &Path, env: &[(&str, String)]) -> Server {
    let log = std::fs::File::create(function_log(watch, name)).expect("function log");
    let log = std::sync::Arc::new(std::sync::Mutex::new(log));
    let mut command = Command::new(path);
    if let Some(dir) = path.parent() {
        command.current_dir(dir);
    }
    command
        .env_clear()
        .env("PATH", std::env::var_os("PATH").unwrap_or_default())
        .env(
            "AWS_LAMBDA_RUNTIME_API",
            format!("http://127.0.0.1:{}/.rt/{name}", watch.port),
        )
        .env("AWS_LAMBDA_FUNCTION_NAME", name)
        .env("AWS_LAMBDA_FUNCTION_VERSION", "$LATEST")
        .env("AWS_LAMBDA_FUNCTION_MEMORY_SIZE", "512")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    for (key, value) in env {
        command.env(key, value);
    }
    let mut child = command.spawn().expect("start function binary");
    each_output_line(&mut child, move |line| {
        use std::io::Write as _;
        let _ = writeln!(log.lock().expect("function log"), "{line}");
    });
    let mut server = Server {
        child,
        port: watch.port,
    };
    server.assert_alive(name);
    server
}

/// Hands every line `child` writes to stdout or stderr to `sink` whole, as Lambda sends a
/// function's output to CloudWatch Logs: each stream a line at a time, so a line written in
/// pieces on one stream is never cut by the other's.
pub fn each_output_line(child: &mut Child, sink: impl Fn(String) + Send + Sync + 'static) {
    let sink = std::sync::Arc::new(sink);
    let stdout: Box<dyn std::io::Read + Send> = Box::new(child.stdout.take().expect("stdout"));
    let stderr: Box<dyn std::io::Read + Send> = Box::new(child.stderr.take().expect("stderr"));
    for stream in [stdout, stderr] {
        let sink = sink.clone();
        std::thread::spawn(move || {
            use std::io::BufRead as _;
            for line in std::io::BufReader::new(stream)
                .lines()
                .map_while(Result::ok)
            {
                sink(line);
            }
        });
    }
}

/// The `libonnxruntime.so` of the onnxruntime wheel in the workspace's `.venv` (scripts/setup.sh
/// installs it).
pub fn venv_onnxruntime_library() -> PathBuf {
    modelpipe_engine::onnxruntime::wheel_library(&workspace_root().join(".venv"))
        .expect("onnxruntime in .venv (bash scripts/setup.sh; scripts/requirements-test.txt)")
}

/// The secret key the functions get: distinctive, so a test can prove no log line carries it.
pub const SECRET_KEY: &str = "never-logged-secret-7f3a91";

/// Where [`start_function`] writes the log of function `name` running under `watch`.
pub fn function_log(watch: &Server, name: &str) -> PathBuf {
    std::env::temp_dir().join(format!("modelpipe-{name}-{}.log", watch.port))
}

/// The environment an AWS SDK client needs to talk to a local endpoint and nothing else.
pub fn local_aws_env() -> Vec<(&'static str, String)> {
    vec![
        ("AWS_REGION", "us-east-1".into()),
        ("AWS_ACCESS_KEY_ID", "testing".into()),
        ("AWS_SECRET_ACCESS_KEY", SECRET_KEY.into()),
        ("AWS_EC2_METADATA_DISABLED", "true".into()),
        ("AWS_MAX_ATTEMPTS", "1".into()),
    ]
}

pub async fn aws_config(endpoint: &str) -> aws_config::SdkConfig {
    aws_config::defaults(aws_config::BehaviorVersion::latest())
        .region(aws_config::Region::new("us-east-1"))
        .credentials_provider(aws_sdk_s3::config::Credentials::new(
            "testing", "testing", None, None, "tests",
        ))
        .endpoint_url(endpoint)
        .load()
        .await
}

/// An aws-sdk-s3 client for a `modelctl dev` S3 endpoint on `port` (its credentials
/// `modelpipe`/`modelpipe`), once the endpoint answers.
pub async fn dev_s3_client(port: u16) -> aws_sdk_s3::Client {
    let config = aws_config::defaults(aws_config::BehaviorVersion::latest())
        .region(aws_config::Region::new("us-east-1"))
        .credentials_provider(aws_sdk_s3::config::Credentials::new(
            "modelpipe",
            "modelpipe",
            None,
            None,
            "modelctl-dev",
        ))
        .endpoint_url(format!("http://127.0.0.1:{port}"))
        .load()
        .await;
    let s3 = modelpipe_aws::s3_client(&config);
    wait_for(
        "modelctl dev's S3 endpoint",
        Duration::from_secs(60),
        || async { s3.list_buckets().send().await.ok() },
    )
    .await;
    s3
}

/// An S3 ObjectCreated:Put event as AWS sends it: one record, the key URL-encoded.
pub fn s3_put_event(
    bucket: &str,
    key: &str,
    size: u64,
    etag: &str,
    sequencer: &str,
) -> serde_json::Value {
    object_created_event(&CreatedObject {
        event_name: "ObjectCreated:Put",
        bucket: bucket.into(),
        key: key.into(),
        size,
        etag: etag.into(),
        sequencer: sequencer.into(),
    })
}

/// An API Gateway HTTP API (payload 2.0, `$default` stage) event.
pub fn http_api_event(method: &str, path: &str, body: Option<&str>) -> serde_json::Value {
    serde_json::json!({
        "version": "2.0",
        "routeKey": "$default",
        "rawPath": path,
        "rawQueryString": "",
        "headers": {"content-type": "application/json", "host": "abc123.execute-api.us-east-1.amazonaws.com"},
        "requestContext": {
            "accountId": "123456789012", "apiId": "abc123", "domainName": "abc123.execute-api.us-east-1.amazonaws.com",
            "domainPrefix": "abc123",
            "http": {"method": method, "path": path, "protocol": "HTTP/1.1", "sourceIp": "192.0.2.1", "userAgent": "tests"},
            "requestId": "JKJaXmPLvHcESHA=", "routeKey": "$default", "stage": "$default",
            "time": "28/Nov/2026:00:00:00 +0000", "timeEpoch": 1795737600000u64
        },
        "body": body,
        "isBase64Encoded": false
    })
}

/// An API Gateway REST API (v1, proxy integration) event on stage `prod`.
pub fn rest_api_event(method: &str, path: &str, body: Option<&str>) -> serde_json::Value {
    serde_json::json!({
        "resource": "/{proxy+}",
        "path": path,
        "httpMethod": method,
        "headers": {"Content-Type": "application/json", "Host": "abc123.execute-api.us-east-1.amazonaws.com"},
        "multiValueHeaders": {"Content-Type": ["application/json"], "Host": ["abc123.execute-api.us-east-1.amazonaws.com"]},
        "queryStringParameters": null,
        "multiValueQueryStringParameters": null,
        "pathParameters": {"proxy": path.trim_start_matches('/')},
        "stageVariables": null,
        "requestContext": {
            "accountId": "123456789012", "resourceId": "abcdef", "stage": "prod", "requestId": "c6af9ac6-7b61-11e6-9a41-93e8deadbeef",
            "identity": {"sourceIp": "192.0.2.1", "userAgent": "tests"}, "resourcePath": "/{proxy+}", "httpMethod": method,
            "apiId": "abc123", "protocol": "HTTP/1.1", "path": format!("/prod{path}")
        },
        "body": body,
        "isBase64Encoded": false
    })
}
