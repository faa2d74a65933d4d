//! The inference Lambda: Open Inference Protocol v2 behind API Gateway (HTTP API or REST API).
//! `PRELOAD_MODELS` are loaded here, during init, outside the handler. Per-version metrics are
//! EMF lines on stdout (CloudWatch turns them into metrics), written after each invocation.

use std::sync::Arc;

use lambda_http::Error;
use modelpipe_config::Config;
use modelpipe_serve::{Inference, SwapPolicy, router};

fn main() -> Result<(), Error> {
    // REST API events carry the stage in their path; the routes are the same on every stage.
    if std::env::var_os("AWS_LAMBDA_HTTP_IGNORE_STAGE_IN_PATH").is_none() {
        // SAFETY: no other thread exists yet (the runtime is built below).
        unsafe { std::env::set_var("AWS_LAMBDA_HTTP_IGNORE_STAGE_IN_PATH", "true") };
    }
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?
        .block_on(run())
}

async fn run() -> Result<(), Error> {
    modelpipe_config::telemetry::init_lambda();
    let config = Config::from_env()?;
    let metrics = metrics_cloudwatch_embedded::Builder::new()
        .cloudwatch_namespace(config.metrics_namespace.clone())
        .init()?;
    modelpipe_serve::metrics::describe();
    let registry = config.open_registry()?;
    // One request at a time per environment: its run can have every vCPU (with concurrent
    // requests, as in `modelctl dev`, they already keep the cores busy; see BENCHMARKS.md).
    let threads = modelpipe_engine::use_threads(None);
    tracing::info!(threads, "engine threads");
    // Lambda freezes the process between invocations: the request that notices a move loads it.
    let inference = Arc::new(Inference::new(registry, &config, SwapPolicy::Blocking));
    inference.preload().await;
    metrics_cloudwatch_embedded::lambda::service::run_http(metrics, router(inference)).await
}
