//! A Lambda Runtime API endpoint for benchmarks: the four routes a runtime client uses
//! (`invocation/next`, `…/response`, `…/error`, `init/error`), served on loopback, one function
//! process per endpoint. It timestamps what the Lambda service measures: the first poll (the
//! end of init) and, per invocation, event handed out → answer received (the billed duration).
//! `cargo lambda watch` (what the tests use) starts binaries itself and adds its own proxying,
//! which is why the benchmarks drive processes through this instead.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use axum::Router;
use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, HeaderValue};
use axum::routing::{get, post};
use serde_json::Value;
use tokio::sync::{Notify, mpsc, oneshot};

/// What a function answered to one event.
#[derive(Debug)]
pub struct Answer {
    /// The response body, or the error the function reported.
    pub body: Result<Bytes, String>,
    /// From the event handed to the function to its answer received.
    pub duration: Duration,
    pub received: Instant,
}

struct Pending {
    event: Value,
    answered: oneshot::Sender<Answer>,
}

#[derive(Default)]
struct Shared {
    queue: tokio::sync::Mutex<Option<mpsc::UnboundedReceiver<Pending>>>,
    first_poll: OnceLock<Instant>,
    init_error: OnceLock<String>,
    changed: Notify,
    in_flight: Mutex<HashMap<String, (Instant, oneshot::Sender<Answer>)>>,
    next_id: Mutex<u64>,
}

pub struct RuntimeApi {
    address: SocketAddr,
    events: mpsc::UnboundedSender<Pending>,
    shared: Arc<Shared>,
    server: tokio::task::JoinHandle<()>,
}

impl RuntimeApi {
    pub async fn start() -> Self {
        let (events, queue) = mpsc::unbounded_channel();
        let shared = Arc::new(Shared::default());
        *shared.queue.lock().await = Some(queue);
        let app = Router::new()
            .route("/2018-06-01/runtime/invocation/next", get(next))
            .route(
                "/2018-06-01/runtime/invocation/{id}/response",
                post(response),
            )
            .route("/2018-06-01/runtime/invocation/{id}/error", post(error))
            .route("/2018-06-01/runtime/init/error", post(init_error))
            .with_state(shared.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind the runtime API");
        let address = listener.local_addr().expect("runtime API address");
        let server = tokio::spawn(async move {
            axum::serve(listener, app)
                .await
                .expect("runtime API serves");
        });
        Self {
            address,
            events,
            shared,
            server,
        }
    }

    /// `AWS_LAMBDA_RUNTIME_API` for the function: host:port, as Lambda sets it.
    pub fn address(&self) -> String {
        self.address.to_string()
    }

    /// When the function first asked for an event (its init finished), or its init error.
    pub async fn ready(&self, timeout: Duration) -> Result<Instant, String> {
        tokio::time::timeout(timeout, async {
            loop {
                let notified = self.shared.changed.notified();
                if let Some(error) = self.shared.init_error.get() {
                    return Err(format!("init failed: {error}"));
                }
                if let Some(at) = self.shared.first_poll.get() {
                    return Ok(*at);
                }
                notified.await;
            }
        })
        .await
        .map_err(|_| format!("no poll for an event within {timeout:?}"))?
    }

    /// Queues `event` for the function and waits for its answer.
    pub async fn invoke(&self, event: Value, timeout: Duration) -> Result<Answer, String> {
        let (answered, answer) = oneshot::channel();
        self.events
            .send(Pending { event, answered })
            .map_err(|_| "runtime API stopped".to_string())?;
        let init_failed = async {
            loop {
                let notified = self.shared.changed.notified();
                if let Some(error) = self.shared.init_error.get() {
                    return format!("init failed: {error}");
                }
                notified.await;
            }
        };
        tokio::select! {
            answer = tokio::time::timeout(timeout, answer) => match answer {
                Ok(Ok(answer)) => Ok(answer),
                Ok(Err(_)) => Err("the runtime API dropped the invocation".into()),
                Err(_) => Err(format!("no answer within {timeout:?}")),
            },
            error = init_failed => Err(error),
        }
    }
}

impl Drop for RuntimeApi {
    fn drop(&mut self) {
        self.server.abort();
    }
}

async fn next(State(shared): State<Arc<Shared>>) -> (HeaderMap, Bytes) {
    if shared.first_poll.set(Instant::now()).is_ok() {
        shared.changed.notify_waiters();
    }
    let mut queue = shared.queue.lock().await;
    let pending = queue
        .as_mut()
        .expect("queue")
        .recv()
        .await
        .expect("the benchmark keeps the runtime API open");
    let id = {
        let mut next_id = shared.next_id.lock().unwrap();
        *next_id += 1;
        format!("bench-{}", *next_id)
    };
    let body = Bytes::from(serde_json::to_vec(&pending.event).expect("event serialises"));
    let mut headers = HeaderMap::new();
    let deadline = std::time::SystemTime::now() + Duration::from_secs(900);
    let deadline_ms = deadline
        .duration_since(std::time::UNIX_EPOCH)
        .expect("after 1970")
        .as_millis();
    let header = |value: String| HeaderValue::from_str(&value).expect("header value");
    headers.insert("lambda-runtime-aws-request-id", header(id.clone()));
    headers.insert(
        "lambda-runtime-deadline-ms",
        header(deadline_ms.to_string()),
    );
    headers.insert(
        "lambda-runtime-invoked-function-arn",
        header("arn:aws:lambda:us-east-1:123456789012:function:bench".into()),
    );
    headers.insert(
        "lambda-runtime-trace-id",
        header("Root=1-5759e988-bd862e3fe1be46a994272793;Parent=53995c3f42cd8ad8;Sampled=0".into()),
    );
    headers.insert("content-type", HeaderValue::from_static("application/json"));
    shared
        .in_flight
        .lock()
        .unwrap()
        .insert(id, (Instant::now(), pending.answered));
    (headers, body)
}

fn answer(shared: &Shared, id: &str, body: Result<Bytes, String>) {
    let received = Instant::now();
    if let Some((handed_out, answered)) = shared.in_flight.lock().unwrap().remove(id) {
        let _ = answered.send(Answer {
            body,
            duration: received - handed_out,
            received,
        });
    }
}

async fn response(State(shared): State<Arc<Shared>>, Path(id): Path<String>, body: Bytes) {
    answer(&shared, &id, Ok(body));
}

async fn error(State(shared): State<Arc<Shared>>, Path(id): Path<String>, body: Bytes) {
    answer(
        &shared,
        &id,
        Err(String::from_utf8_lossy(&body).into_owned()),
    );
}

async fn init_error(State(shared): State<Arc<Shared>>, body: Bytes) {
    let _ = shared
        .init_error
        .set(String::from_utf8_lossy(&body).into_owned());
    shared.changed.notify_waiters();
}
