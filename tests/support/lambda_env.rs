//! Lambda execution environments on this machine, for tests and benchmarks: one function
//! process per [`Environment`], behind its own Runtime API and Extensions API endpoint, frozen
//! as Lambda freezes it. Once the runtime and every registered extension wait in their `next`
//! call, the process is stopped (SIGSTOP), so nothing in it runs between invocations; an
//! invocation continues it (SIGCONT) and hands the event to the runtime and INVOKE to the
//! extensions. The caller's answer is what the runtime posts, the moment it posts it; the
//! environment takes no new event until it is frozen again. A [`Fleet`] of environments shares
//! callers the way Lambda does: each invocation goes to a free environment.
//!
//! Left out: SHUTDOWN (internal extensions cannot register for it), the Logs and Telemetry
//! APIs, timeouts, and starting environments on demand (a fleet counts the invocations that
//! found none free: there Lambda would have started one).

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use axum::body::Bytes;
use axum::extract::{Path as UrlPath, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde_json::{Value, json};
use tokio::sync::{Notify, oneshot};

/// Wall-clock microseconds since the epoch: comparable with times a function logs.
pub fn unix_micros() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("after 1970")
        .as_micros() as u64
}

/// What the function answered to one invocation.
#[derive(Debug, Clone)]
pub struct Answer {
    pub request_id: String,
    /// The response the runtime posted, or the error it reported.
    pub body: Result<Bytes, String>,
    /// From the event handed out to the answer posted: what the caller waited.
    pub latency: Duration,
    /// When the answer was posted (see [`unix_micros`]), and the same on this process's clock.
    pub posted_us: u64,
    pub posted: Instant,
}

/// One invocation as the environment saw it, for after-the-fact checks.
#[derive(Debug, Clone)]
pub struct Invocation {
    pub request_id: String,
    pub handed_us: u64,
    pub posted_us: Option<u64>,
    /// When the runtime and every extension had asked for their next event (the freeze).
    pub frozen_us: Option<u64>,
}

#[derive(Default)]
struct Lifecycle {
    /// The runtime's pending `invocation/next`.
    runtime_waiting: Option<oneshot::Sender<(String, Value)>>,
    /// Registered extensions by identifier, and the pending `event/next` of each.
    extensions: HashMap<String, Option<oneshot::Sender<Value>>>,
    /// When the runtime and its extensions first waited for an event: init is over, and
    /// registration with it.
    initialised: Option<Instant>,
    init_error: Option<String>,
    /// The invocation whose answer is awaited.
    answering: Option<(String, Instant, oneshot::Sender<Answer>)>,
    /// An invocation is under way (handed out, not yet frozen after it).
    busy: bool,
    frozen: bool,
    invocations: Vec<Invocation>,
    next_id: u64,
}

struct Shared {
    state: Mutex<Lifecycle>,
    changed: Notify,
    pid: Mutex<Option<i32>>,
    name: String,
}

impl Shared {
    /// Freezes the process if the runtime and every extension wait for their next event.
    fn freeze_if_idle(&self, state: &mut Lifecycle) {
        let all_waiting =
            state.runtime_waiting.is_some() && state.extensions.values().all(Option::is_some);
        if !all_waiting || state.frozen || state.answering.is_some() {
            return;
        }
        state.initialised.get_or_insert_with(Instant::now);
        if let Some(pid) = *self.pid.lock().expect("pid") {
            // SAFETY: a plain signal to our own child.
            unsafe { libc::kill(pid, libc::SIGSTOP) };
        }
        state.frozen = true;
        if state.busy {
            state.busy = false;
            if let Some(last) = state.invocations.last_mut() {
                last.frozen_us = Some(unix_micros());
            }
        }
        self.changed.notify_waiters();
    }
}

/// One execution environment: a function process and the APIs it talks to.
pub struct Environment {
    shared: Arc<Shared>,
    child: Child,
    server: tokio::task::JoinHandle<()>,
    log: Arc<Mutex<Vec<String>>>,
    /// Just before the process was spawned.
    pub spawned: Instant,
}

/// What to run in an environment: a program, its arguments and working directory, its log
/// stream name (`AWS_LAMBDA_LOG_STREAM_NAME`, unique per environment) and its own variables.
pub struct Launch<'a> {
    pub program: &'a Path,
    pub args: &'a [&'a str],
    pub dir: Option<&'a Path>,
    pub name: &'a str,
    pub env: &'a [(&'a str, String)],
}

impl Environment {
    /// Starts `binary` as environment `name` with `env`, and waits for its init to end (the
    /// runtime and its extensions waiting for an event).
    pub async fn start(binary: &Path, name: &str, env: &[(&str, String)]) -> Self {
        let environment = Self::launch(Launch {
            program: binary,
            args: &[],
            dir: None,
            name,
            env,
        })
        .await;
        environment.wait_frozen(Duration::from_secs(60)).await;
        environment
    }

    /// Starts the process as Lambda does (a clean environment with the variables the service
    /// sets) and returns at once; [`Self::init_time`] waits for its init.
    pub async fn launch(launch: Launch<'_>) -> Self {
        let shared = Arc::new(Shared {
            state: Mutex::default(),
            changed: Notify::new(),
            pid: Mutex::new(None),
            name: launch.name.to_string(),
        });
        let app = Router::new()
            .route("/2018-06-01/runtime/invocation/next", get(runtime_next))
            .route(
                "/2018-06-01/runtime/invocation/{id}/response",
                post(response),
            )
            .route("/2018-06-01/runtime/invocation/{id}/error", post(error))
            .route("/2018-06-01/runtime/init/error", post(init_error))
            .route("/2020-01-01/extension/register", post(register))
            .route("/2020-01-01/extension/event/next", get(extension_next))
            .route("/2020-01-01/extension/init/error", post(init_error))
            .route("/2020-01-01/extension/exit/error", post(init_error))
            .with_state(shared.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind the environment's APIs");
        let address: SocketAddr = listener.local_addr().expect("address");
        let server = tokio::spawn(async move {
            axum::serve(listener, app).await.expect("APIs serve");
        });
        let mut command = Command::new(launch.program);
        command
            .args(launch.args)
            .env_clear()
            .env("PATH", std::env::var_os("PATH").unwrap_or_default())
            .env("AWS_LAMBDA_RUNTIME_API", address.to_string())
            .env("AWS_LAMBDA_FUNCTION_NAME", "inference")
            .env("AWS_LAMBDA_FUNCTION_VERSION", "$LATEST")
            .env("AWS_LAMBDA_FUNCTION_MEMORY_SIZE", "2048")
            .env("AWS_LAMBDA_LOG_GROUP_NAME", "/aws/lambda/inference")
            .env("AWS_LAMBDA_LOG_STREAM_NAME", launch.name)
            .env("AWS_REGION", "us-east-1")
            .env("LANG", "C.UTF-8")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        if let Some(dir) = launch.dir {
            command.current_dir(dir);
        }
        for (key, value) in launch.env {
            command.env(key, value);
        }
        let spawned = Instant::now();
        let mut child = command
            .spawn()
            .unwrap_or_else(|e| panic!("start {}: {e}", launch.program.display()));
        *shared.pid.lock().expect("pid") = Some(child.id() as i32);
        let log = Arc::new(Mutex::new(Vec::new()));
        let lines = log.clone();
        crate::each_output_line(&mut child, move |line| {
            lines.lock().expect("log").push(line);
        });
        Self {
            shared,
            child,
            server,
            log,
            spawned,
        }
    }

    /// From spawn to the end of init (the runtime and its extensions waiting for an event).
    pub async fn init_time(&self, timeout: Duration) -> Duration {
        self.wait_frozen(timeout).await;
        let initialised = self.shared.state.lock().expect("state").initialised;
        initialised.expect("frozen after init") - self.spawned
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    pub fn name(&self) -> &str {
        &self.shared.name
    }

    /// The lines the function has written to stdout and stderr so far.
    pub fn log(&self) -> Vec<String> {
        self.log.lock().expect("log").clone()
    }

    /// The log lines that parse as JSON with `message` as their message.
    pub fn logged(&self, message: &str) -> Vec<Value> {
        self.log()
            .iter()
            .filter_map(|line| serde_json::from_str::<Value>(line).ok())
            .filter(|line| line["fields"]["message"] == message || line["message"] == message)
            .collect()
    }

    /// The last lines the function wrote, for a failure's message.
    pub fn log_tail(&self) -> String {
        let log = self.log();
        let tail = &log[log.len().saturating_sub(30)..];
        format!("--- its log ends ---\n{}", tail.join("\n"))
    }

    pub fn invocations(&self) -> Vec<Invocation> {
        self.shared.state.lock().expect("state").invocations.clone()
    }

    /// Whether it is frozen and takes an event.
    pub fn is_free(&self) -> bool {
        let state = self.shared.state.lock().expect("state");
        state.frozen && !state.busy
    }

    async fn wait_frozen(&self, timeout: Duration) {
        let deadline = Instant::now() + timeout;
        loop {
            let notified = self.shared.changed.notified();
            {
                let state = self.shared.state.lock().expect("state");
                if let Some(error) = &state.init_error {
                    panic!(
                        "environment {}: {error}\n{}",
                        self.shared.name,
                        self.log_tail()
                    );
                }
                if state.frozen && !state.busy {
                    return;
                }
            }
            assert!(
                Instant::now() < deadline,
                "environment {} did not wait for an event within {timeout:?}\n{}",
                self.shared.name,
                self.log_tail()
            );
            let _ = tokio::time::timeout(Duration::from_millis(100), notified).await;
        }
    }

    /// Hands `event` to the function (it must be free) and returns its answer, as soon as the
    /// runtime posts it; the environment stays busy until it is frozen again.
    pub async fn invoke(&self, event: Value, timeout: Duration) -> Result<Answer, String> {
        let (answered, answer) = oneshot::channel();
        {
            let mut state = self.shared.state.lock().expect("state");
            assert!(state.frozen && !state.busy, "invoke a free environment");
            state.next_id += 1;
            // A request id is a path segment of the runtime's answer: letters, digits, dashes.
            let tag: String = self
                .shared
                .name
                .chars()
                .filter(char::is_ascii_alphanumeric)
                .collect();
            let id = format!("{tag}-{}", state.next_id);
            let now = Instant::now();
            state.busy = true;
            state.frozen = false;
            state.invocations.push(Invocation {
                request_id: id.clone(),
                handed_us: unix_micros(),
                posted_us: None,
                frozen_us: None,
            });
            state.answering = Some((id.clone(), now, answered));
            if let Some(pid) = *self.shared.pid.lock().expect("pid") {
                // SAFETY: a plain signal to our own child.
                unsafe { libc::kill(pid, libc::SIGCONT) };
            }
            let deadline_ms = unix_micros() / 1000 + 900_000;
            let invoke = json!({
                "eventType": "INVOKE",
                "deadlineMs": deadline_ms,
                "requestId": id,
                "invokedFunctionArn": "arn:aws:lambda:us-east-1:123456789012:function:inference",
                "tracing": {"type": "X-Amzn-Trace-Id", "value": "Root=1-5759e988-bd862e3fe1be46a994272793;Sampled=0"}
            });
            for waiting in state.extensions.values_mut() {
                let _ = waiting
                    .take()
                    .expect("frozen means waiting")
                    .send(invoke.clone());
            }
            let runtime = state.runtime_waiting.take().expect("frozen means waiting");
            let _ = runtime.send((id, event));
        }
        match tokio::time::timeout(timeout, answer).await {
            Ok(Ok(answer)) => Ok(answer),
            Ok(Err(_)) => Err(format!(
                "environment {} dropped the invocation",
                self.shared.name
            )),
            Err(_) => Err(format!(
                "environment {}: no answer within {timeout:?}\n{}",
                self.shared.name,
                self.log_tail()
            )),
        }
    }

    /// Waits until the environment is frozen and free again after its last invocation.
    pub async fn until_free(&self, timeout: Duration) {
        self.wait_frozen(timeout).await;
    }

    /// Shuts the environment down as Lambda does one with an extension: SIGTERM to the thawed
    /// process, then SIGKILL if it has not exited within `grace`. Its exit status, or `None`
    /// when it had to be killed.
    pub async fn shut_down(&mut self, grace: Duration) -> Option<std::process::ExitStatus> {
        let pid = self.child.id() as i32;
        // SAFETY: plain signals to our own child. SIGTERM is pending when SIGCONT thaws it.
        unsafe {
            libc::kill(pid, libc::SIGTERM);
            libc::kill(pid, libc::SIGCONT);
        }
        self.shared.state.lock().expect("state").frozen = false;
        let deadline = Instant::now() + grace;
        while Instant::now() < deadline {
            if let Ok(Some(status)) = self.child.try_wait() {
                return Some(status);
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
        None
    }
}

impl Drop for Environment {
    fn drop(&mut self) {
        // SAFETY: plain signals to our own child.
        unsafe { libc::kill(self.child.id() as i32, libc::SIGCONT) };
        let _ = self.child.kill();
        let _ = self.child.wait();
        self.server.abort();
    }
}

async fn runtime_next(State(shared): State<Arc<Shared>>) -> Response {
    let (sender, event) = oneshot::channel();
    {
        let mut state = shared.state.lock().expect("state");
        state.runtime_waiting = Some(sender);
        shared.freeze_if_idle(&mut state);
    }
    let Ok((id, event)) = event.await else {
        return StatusCode::GONE.into_response();
    };
    let header = |value: String| HeaderValue::from_str(&value).expect("header value");
    let mut headers = HeaderMap::new();
    headers.insert("lambda-runtime-aws-request-id", header(id));
    headers.insert(
        "lambda-runtime-deadline-ms",
        header((unix_micros() / 1000 + 900_000).to_string()),
    );
    headers.insert(
        "lambda-runtime-invoked-function-arn",
        header("arn:aws:lambda:us-east-1:123456789012:function:inference".into()),
    );
    headers.insert(
        "lambda-runtime-trace-id",
        header("Root=1-5759e988-bd862e3fe1be46a994272793;Sampled=0".into()),
    );
    headers.insert("content-type", HeaderValue::from_static("application/json"));
    (headers, serde_json::to_vec(&event).expect("event")).into_response()
}

fn answer(shared: &Shared, id: &str, body: Result<Bytes, String>) -> StatusCode {
    let mut state = shared.state.lock().expect("state");
    let posted_us = unix_micros();
    match state.answering.take() {
        Some((expected, handed, answered)) if expected == id => {
            if let Some(last) = state.invocations.last_mut() {
                last.posted_us = Some(posted_us);
            }
            let _ = answered.send(Answer {
                request_id: id.to_string(),
                body,
                latency: handed.elapsed(),
                posted_us,
                posted: Instant::now(),
            });
            shared.freeze_if_idle(&mut state);
            StatusCode::ACCEPTED
        }
        other => {
            state.answering = other;
            StatusCode::BAD_REQUEST
        }
    }
}

async fn response(
    State(shared): State<Arc<Shared>>,
    UrlPath(id): UrlPath<String>,
    body: Bytes,
) -> StatusCode {
    answer(&shared, &id, Ok(body))
}

async fn error(
    State(shared): State<Arc<Shared>>,
    UrlPath(id): UrlPath<String>,
    body: Bytes,
) -> StatusCode {
    answer(
        &shared,
        &id,
        Err(String::from_utf8_lossy(&body).into_owned()),
    )
}

async fn init_error(State(shared): State<Arc<Shared>>, body: Bytes) -> StatusCode {
    shared.state.lock().expect("state").init_error =
        Some(String::from_utf8_lossy(&body).into_owned());
    shared.changed.notify_waiters();
    StatusCode::ACCEPTED
}

async fn register(State(shared): State<Arc<Shared>>, headers: HeaderMap) -> Response {
    let mut state = shared.state.lock().expect("state");
    if state.initialised.is_some() {
        // Lambda takes registrations during init only.
        return (StatusCode::FORBIDDEN, "Extension.RegistrationAfterInit").into_response();
    }
    let name = headers
        .get("lambda-extension-name")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("unnamed")
        .to_string();
    let id = format!("{name}-{}", state.extensions.len() + 1);
    state.extensions.insert(id.clone(), None);
    let mut response = Json(json!({
        "functionName": "inference",
        "functionVersion": "$LATEST",
        "handler": "bootstrap",
        "accountId": "123456789012"
    }))
    .into_response();
    response.headers_mut().insert(
        "lambda-extension-identifier",
        HeaderValue::from_str(&id).expect("header value"),
    );
    response
}

async fn extension_next(State(shared): State<Arc<Shared>>, headers: HeaderMap) -> Response {
    let id = headers
        .get("lambda-extension-identifier")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_string();
    let (sender, event) = oneshot::channel();
    {
        let mut state = shared.state.lock().expect("state");
        let Some(waiting) = state.extensions.get_mut(&id) else {
            return (
                StatusCode::FORBIDDEN,
                "Extension.UnknownExtensionIdentifier",
            )
                .into_response();
        };
        *waiting = Some(sender);
        shared.freeze_if_idle(&mut state);
    }
    match event.await {
        Ok(event) => Json(event).into_response(),
        Err(_) => StatusCode::GONE.into_response(),
    }
}

/// What a [`Fleet`] invocation came back with, and where it ran.
#[derive(Debug, Clone)]
pub struct FleetAnswer {
    pub environment: usize,
    pub answer: Answer,
    /// How long it waited for a free environment (Lambda would have started one).
    pub queued: Duration,
}

/// What [`Fleet::callers`] got back: each answer and when it came back.
pub type Callers = Arc<Mutex<Vec<(FleetAnswer, Instant)>>>;

/// Environments sharing callers: an invocation takes the free environment that has been free
/// longest (so every environment serves), or waits for one.
pub struct Fleet {
    pub environments: Vec<Environment>,
    /// Free environments, the longest free first.
    free: Mutex<std::collections::VecDeque<usize>>,
    freed: Notify,
    /// Invocations that found no environment free.
    pub found_none_free: std::sync::atomic::AtomicUsize,
}

impl Fleet {
    /// `count` environments of `binary`, started one after another, named `<prefix>-<n>`.
    pub async fn start(
        binary: &Path,
        prefix: &str,
        count: usize,
        env: &[(&str, String)],
    ) -> Arc<Self> {
        Self::start_on(binary, prefix, count, env, None).await
    }

    /// [`Self::start`], environment `n` pinned (`taskset`) to CPU `n % cpus` when `cpus` is
    /// given: as Lambda gives each environment vCPUs of its own, when there are enough.
    pub async fn start_on(
        binary: &Path,
        prefix: &str,
        count: usize,
        env: &[(&str, String)],
        cpus: Option<usize>,
    ) -> Arc<Self> {
        let taskset = Path::new("taskset");
        let binary_arg = binary.display().to_string();
        let mut environments = Vec::new();
        for n in 0..count {
            let name = format!("2026/12/04/[$LATEST]{prefix}{n:04}");
            let cpu = cpus.map(|cpus| (n % cpus).to_string());
            let launch = match &cpu {
                None => Launch {
                    program: binary,
                    args: &[],
                    dir: None,
                    name: &name,
                    env,
                },
                Some(cpu) => Launch {
                    program: taskset,
                    args: &["-c", cpu, &binary_arg],
                    dir: None,
                    name: &name,
                    env,
                },
            };
            let environment = Environment::launch(launch).await;
            environment.wait_frozen(Duration::from_secs(60)).await;
            environments.push(environment);
        }
        Arc::new(Self {
            free: Mutex::new((0..count).collect()),
            environments,
            freed: Notify::new(),
            found_none_free: Default::default(),
        })
    }

    /// `count` callers invoking the fleet with `event` back to back until `stop`; every answer,
    /// with when it came back, in the list returned (shared while they run).
    pub fn callers(
        self: &Arc<Self>,
        count: usize,
        event: &Value,
        stop: &Arc<std::sync::atomic::AtomicBool>,
    ) -> (Vec<tokio::task::JoinHandle<()>>, Callers) {
        let answers = Callers::default();
        let tasks = (0..count)
            .map(|_| {
                let (fleet, event, stop, answers) =
                    (self.clone(), event.clone(), stop.clone(), answers.clone());
                tokio::spawn(async move {
                    while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                        let answer = fleet
                            .invoke(event.clone(), Duration::from_secs(60))
                            .await
                            .expect("an answer");
                        answers
                            .lock()
                            .expect("answers")
                            .push((answer, Instant::now()));
                    }
                })
            })
            .collect();
        (tasks, answers)
    }

    /// Invokes a free environment with `event`; gives the environment back once it is frozen.
    pub async fn invoke(
        self: &Arc<Self>,
        event: Value,
        timeout: Duration,
    ) -> Result<FleetAnswer, String> {
        let asked = Instant::now();
        let mut counted = false;
        let environment = loop {
            let notified = self.freed.notified();
            if let Some(n) = self.free.lock().expect("free").pop_front() {
                break n;
            }
            if !counted {
                counted = true;
                self.found_none_free
                    .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            }
            tokio::time::timeout(timeout, notified)
                .await
                .map_err(|_| format!("no environment free within {timeout:?}"))?;
        };
        let queued = asked.elapsed();
        let answer = self.environments[environment].invoke(event, timeout).await;
        let fleet = self.clone();
        tokio::spawn(async move {
            fleet.environments[environment]
                .until_free(Duration::from_secs(120))
                .await;
            fleet.free.lock().expect("free").push_back(environment);
            fleet.freed.notify_one();
        });
        Ok(FleetAnswer {
            environment,
            answer: answer?,
            queued,
        })
    }
}
