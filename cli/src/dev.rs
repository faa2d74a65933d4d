//! `modelctl dev`: the whole pipeline in one process. An S3-protocol endpoint (s3s over files)
//! that the stock `aws` CLI talks to; each created object handed to the validator as the S3 event
//! AWS would send, the validator reading it back through aws-sdk-s3 from that endpoint; the
//! publisher called in-process; the inference router on a local HTTP port.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, SystemTime};

use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto::Builder as ConnBuilder;
use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusHandle};
use modelpipe_aws::{S3Capture, S3Uploads};
use modelpipe_config::{Config, MonitoringConfig};
use modelpipe_registry::Registry;
use modelpipe_registry::drift::DriftRequest;
use modelpipe_registry::rollout::actions::{self as rollout, RolloutRequest};
use modelpipe_serve::{Inference, SwapPolicy, router};
use modelpipe_validator::s3_event::{CreatedObject, object_created_event};
use modelpipe_validator::validator::{LocalPublisher, Outcome, Validator};
use s3s::auth::SimpleAuth;
use s3s::service::S3ServiceBuilder;
use tokio::net::TcpListener;
use tokio::sync::{mpsc, watch};
use tracing::{error, info, warn};

use crate::local_s3::LocalS3;

pub const BUCKET: &str = "models";
pub const ACCESS_KEY: &str = "modelpipe";
pub const SECRET_KEY: &str = "modelpipe";

pub struct DevOptions {
    pub data: PathBuf,
    pub s3_addr: SocketAddr,
    pub http_addr: SocketAddr,
    pub reload_check: Duration,
    /// How often the rollout controller runs.
    pub rollout_tick: Duration,
}

/// A running stack; [`DevStack::stop`] shuts it down and waits for it.
pub struct DevStack {
    /// Held while running: one `modelctl dev` per data folder.
    _data_lock: std::fs::File,
    pub s3_addr: SocketAddr,
    pub http_addr: SocketAddr,
    pub registry: Registry,
    stop: watch::Sender<bool>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
    stop_s3: watch::Sender<bool>,
    s3_task: tokio::task::JoinHandle<()>,
}

pub fn registry_dir(data: &Path) -> PathBuf {
    data.join("registry")
}

/// An aws-sdk-s3 client for the local endpoint, with the dev credentials.
pub async fn s3_client(addr: SocketAddr) -> aws_sdk_s3::Client {
    let config = aws_config::defaults(aws_config::BehaviorVersion::latest())
        .region(aws_config::Region::new("us-east-1"))
        .credentials_provider(aws_sdk_s3::config::Credentials::new(
            ACCESS_KEY,
            SECRET_KEY,
            None,
            None,
            "modelctl-dev",
        ))
        .endpoint_url(format!("http://{addr}"))
        .load()
        .await;
    modelpipe_aws::s3_client(&config)
}

impl DevStack {
    pub async fn start(options: DevOptions) -> std::io::Result<Self> {
        std::fs::create_dir_all(&options.data)?;
        let data_lock = std::fs::File::create(options.data.join(".dev.lock"))?;
        if data_lock.try_lock().is_err() {
            return Err(std::io::Error::other(format!(
                "another modelctl dev is using {}",
                options.data.display()
            )));
        }
        // MODEL_CACHE_BYTES, PRELOAD_MODELS, MAX_REQUEST_BYTES, MAX_MODEL_BYTES, SIGNING_POLICY,
        // SIGNATURE_WAIT_MS work as in Lambda.
        let config = Config {
            model_root: modelpipe_registry::Location::Dir(registry_dir(&options.data)),
            reload_check: options.reload_check,
            // The evidence on its own disk: written as often as the alias is checked.
            evidence_write: options.reload_check,
            ..Config::from_env().map_err(std::io::Error::other)?
        };
        let registry = config.open_registry().map_err(std::io::Error::other)?;
        // This process is now the registry's only writer: whatever staging holds was left by a
        // crash (kill -9, power loss) and can go.
        for path in registry
            .remove_leftovers(Duration::ZERO)
            .map_err(std::io::Error::other)?
        {
            info!(path = %path.display(), "removed a crashed ingest's leftover");
        }
        let objects = options.data.join("s3");
        std::fs::create_dir_all(objects.join(BUCKET))?;
        let (created_tx, created_rx) = mpsc::unbounded_channel();
        let local_s3 = LocalS3::new(&objects, &options.data.join("s3-tags"), created_tx)?;
        let service = {
            let mut builder = S3ServiceBuilder::new(local_s3);
            builder.set_auth(SimpleAuth::from_single(ACCESS_KEY, SECRET_KEY));
            builder.build()
        };
        let s3_listener = TcpListener::bind(options.s3_addr).await?;
        let http_listener = TcpListener::bind(options.http_addr).await?;
        let (s3_addr, http_addr) = (s3_listener.local_addr()?, http_listener.local_addr()?);
        let (stop, stopped) = watch::channel(false);
        // The S3 endpoint stops last: inference writes what it holds there when it stops.
        let (stop_s3, s3_stopped) = watch::channel(false);
        let s3_task = tokio::spawn(serve_s3(s3_listener, service, s3_stopped));
        let mut tasks = Vec::new();

        let validator = Validator::new(
            registry.clone(),
            S3Uploads::new(s3_client(s3_addr).await),
            LocalPublisher(registry.clone()),
            &config,
        );
        tasks.push(tokio::spawn(validate_uploads(
            validator,
            created_rx,
            options.rollout_tick,
            stopped.clone(),
        )));

        tasks.push(tokio::spawn(run_schedule(
            registry.clone(),
            config.monitoring.clone(),
            options.rollout_tick,
            stopped.clone(),
        )));

        tasks.extend(serve_inference(&registry, &config, s3_addr, http_listener, &stopped).await);
        Ok(Self {
            _data_lock: data_lock,
            s3_addr,
            http_addr,
            registry,
            stop,
            tasks,
            stop_s3,
            s3_task,
        })
    }

    pub async fn stop(self) {
        let _ = self.stop.send(true);
        for task in self.tasks {
            let _ = task.await;
        }
        let _ = self.stop_s3.send(true);
        let _ = self.s3_task.await;
    }
}

/// The inference server (with `/metrics`) and its after-answer work; captured records go to
/// the dev bucket (or `CAPTURE_BUCKET`) on the embedded endpoint.
async fn serve_inference(
    registry: &Registry,
    config: &Config,
    s3_addr: SocketAddr,
    listener: TcpListener,
    stopped: &watch::Receiver<bool>,
) -> Vec<tokio::task::JoinHandle<()>> {
    prometheus();
    let bucket = config
        .monitoring
        .bucket
        .clone()
        .unwrap_or_else(|| BUCKET.into());
    let sink = S3Capture::new(s3_client(s3_addr).await, bucket);
    let inference = Arc::new(
        Inference::new(registry.clone(), config, SwapPolicy::Background)
            .with_capture_sink(Arc::new(sink)),
    );
    inference.preload().await;
    let after = tokio::spawn(after_answers(inference.clone(), stopped.clone()));
    let mut http_stopped = stopped.clone();
    let server = tokio::spawn(async move {
        let shutdown = async move {
            let _ = http_stopped.wait_for(|s| *s).await;
        };
        let app = router(inference.clone())
            .merge(axum::Router::new().route("/metrics", axum::routing::get(prometheus_metrics)));
        if let Err(e) = axum::serve(listener, app)
            .with_graceful_shutdown(shutdown)
            .await
        {
            error!(error = %e, "inference server failed");
        }
        // Every request is answered: what they left is written before the S3 endpoint stops.
        inference.flush().await;
    });
    vec![after, server]
}

/// The process's Prometheus recorder, installed by the first stack started in it.
fn prometheus() -> Option<&'static PrometheusHandle> {
    static HANDLE: OnceLock<Option<PrometheusHandle>> = OnceLock::new();
    HANDLE
        .get_or_init(|| match PrometheusBuilder::new().install_recorder() {
            Ok(handle) => {
                modelpipe_serve::metrics::describe();
                Some(handle)
            }
            Err(e) => {
                warn!(error = %e, "no Prometheus metrics: another recorder is installed");
                None
            }
        })
        .as_ref()
}

/// `GET /metrics`: the per-version metrics as Prometheus text.
async fn prometheus_metrics() -> axum::response::Response {
    use axum::response::IntoResponse;
    match prometheus() {
        Some(handle) => {
            handle.run_upkeep();
            (
                [(
                    axum::http::header::CONTENT_TYPE,
                    "text/plain; version=0.0.4",
                )],
                handle.render(),
            )
                .into_response()
        }
        None => (
            axum::http::StatusCode::SERVICE_UNAVAILABLE,
            "no metrics recorder",
        )
            .into_response(),
    }
}

async fn serve_s3(
    listener: TcpListener,
    service: s3s::service::S3Service,
    mut stopped: watch::Receiver<bool>,
) {
    let http = ConnBuilder::new(TokioExecutor::new());
    let graceful = hyper_util::server::graceful::GracefulShutdown::new();
    loop {
        let socket = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((socket, _)) => socket,
                Err(e) => {
                    warn!(error = %e, "S3 endpoint: accept failed");
                    continue;
                }
            },
            _ = stopped.wait_for(|s| *s) => break,
        };
        // A GetObject's body is written after its header: with Nagle's algorithm on, it waited
        // for the client's delayed ACK (a 44 ms median for a 2 KB GET here, 2 ms without).
        if let Err(e) = socket.set_nodelay(true) {
            warn!(error = %e, "S3 endpoint: TCP_NODELAY not set");
        }
        let connection = http
            .serve_connection(TokioIo::new(socket), service.clone())
            .into_owned();
        let connection = graceful.watch(connection);
        tokio::spawn(async move {
            let _ = connection.await;
        });
    }
    tokio::select! {
        () = graceful.shutdown() => {}
        () = tokio::time::sleep(Duration::from_secs(5)) => {}
    }
}

/// Hands each created object to the validator, one at a time, in the order they were created;
/// every `tick` (the schedule in AWS), rejects the uploads whose signature never came.
async fn validate_uploads(
    validator: Validator<S3Uploads, LocalPublisher>,
    mut created: mpsc::UnboundedReceiver<CreatedObject>,
    tick: Duration,
    mut stopped: watch::Receiver<bool>,
) {
    let mut ticks = tokio::time::interval(tick);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        let object = tokio::select! {
            object = created.recv() => match object {
                Some(object) => Some(object),
                None => break,
            },
            _ = ticks.tick() => None,
            _ = stopped.wait_for(|s| *s) => break,
        };
        let Some(object) = object else {
            match validator.expire_uploads().await {
                Ok(outcomes) => outcomes.into_iter().for_each(log_outcome),
                Err(e) => warn!(error = %e, "expiring uploads that wait for a signature failed"),
            }
            continue;
        };
        let event = object_created_event(&object);
        let event = match serde_json::from_value(event) {
            Ok(event) => event,
            Err(e) => {
                error!(error = %e, "could not build the S3 event");
                continue;
            }
        };
        match validator.handle_event(&event).await {
            Ok(outcomes) => outcomes.into_iter().for_each(log_outcome),
            Err(e) => {
                error!(key = %object.key, error = %e, "validation failed; upload the object again to retry")
            }
        }
    }
}

/// One validator outcome, as `modelctl dev` logs it.
fn log_outcome(outcome: Outcome) {
    match outcome {
        Outcome::Published {
            model,
            version,
            alias,
        } => info!("{model}: v{version} published to {alias}"),
        Outcome::RollingOut {
            model,
            version,
            alias,
            rollout,
        } => {
            info!("{model}: v{version} rolling out to {alias} (rollout {rollout})")
        }
        Outcome::Registered { model, version } => {
            info!("{model}: v{version} registered (no alias moved)")
        }
        Outcome::Rejected { model, key, reason } => {
            error!("{model}: REJECTED {key}: {reason}")
        }
        Outcome::AwaitingSignature { model, key } => {
            warn!("{model}: {key} waits for its signature ({key}.sig)")
        }
        Outcome::ContractRead {
            model,
            signed_by_policy,
        } => info!("{model}: contract read (signer policy: {signed_by_policy})"),
        Outcome::Ignored { .. } | Outcome::Duplicate { .. } | Outcome::Stale { .. } => {}
    }
}

/// How often `modelctl dev` does what Lambda does after each answer.
const AFTER_ANSWER_TICK: Duration = Duration::from_millis(200);

/// What Lambda does after each answer (the after-answer extension), on a timer here:
/// captured requests recorded and written when due (adoption runs in the background already).
async fn after_answers(inference: Arc<Inference>, mut stopped: watch::Receiver<bool>) {
    let mut ticks = tokio::time::interval(AFTER_ANSWER_TICK);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = ticks.tick() => {}
            _ = stopped.wait_for(|s| *s) => break,
        }
        inference.capture().process(inference.registry()).await;
    }
}

/// The publisher's schedule (EventBridge's in AWS), every `every`: the rollout controller
/// (`rollout-advance` over every model; decisions are logged, waits are not), then the drift
/// reports (`drift`; flagged features are logged).
async fn run_schedule(
    registry: Registry,
    monitoring: MonitoringConfig,
    every: Duration,
    mut stopped: watch::Receiver<bool>,
) {
    let mut ticks = tokio::time::interval(every);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = ticks.tick() => {}
            _ = stopped.wait_for(|s| *s) => break,
        }
        let controller = registry.clone();
        let advanced = tokio::task::spawn_blocking(move || {
            rollout::apply(&controller, &RolloutRequest::Advance { model: None }, None)
        })
        .await;
        match advanced {
            Ok(Ok(answer)) => {
                for report in answer.rollouts {
                    let r = &report.rollout;
                    if !matches!(report.did.as_str(), "wait" | "none") {
                        info!(
                            "{}: rollout {} {}: {}",
                            r.model, r.id, report.did, report.detail
                        );
                    }
                }
            }
            Ok(Err(e)) => warn!(error = %e, "rollout controller failed"),
            Err(e) => warn!(error = %e, "rollout controller panicked"),
        }
        let (registry, monitoring) = (registry.clone(), monitoring.clone());
        let reported = tokio::task::spawn_blocking(move || {
            let settings = |own| monitoring.drift_settings(own);
            DriftRequest::default().apply(&registry, &settings, SystemTime::now())
        })
        .await;
        match reported {
            Ok(Ok(reports)) => {
                for report in &reports {
                    let flagged = report.flagged_names();
                    if !flagged.is_empty() {
                        info!(
                            "{} v{}: drift in {}",
                            report.model,
                            report.version,
                            flagged.join(", ")
                        );
                    }
                }
            }
            Ok(Err(e)) => warn!(error = %e, "drift reports failed"),
            Err(e) => warn!(error = %e, "drift reports panicked"),
        }
    }
}
