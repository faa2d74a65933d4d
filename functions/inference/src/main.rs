//! The inference Lambda: Open Inference Protocol v2 behind API Gateway (HTTP API or REST API).
//! `PRELOAD_MODELS` are loaded here, during init, outside the handler. A new version of a model
//! is adopted after an answer, never on a caller's time ([`after_answer`]). Per-version metrics
//! are EMF lines on stdout (CloudWatch turns them into metrics), written after each invocation.

mod after_answer;

use std::sync::Arc;

use lambda_http::Error;
use lambda_runtime::Runtime;
use lambda_runtime::layers::TracingLayer;
use metrics_cloudwatch_embedded::lambda::MetricsLayer;
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
    let threads = modelpipe_engine::use_threads(config.engine_threads);
    // The log stream names this execution environment: no two share one.
    let environment = std::env::var("AWS_LAMBDA_LOG_STREAM_NAME").unwrap_or_default();
    let policy = SwapPolicy::after_answer(config.adopt_spread, &environment);
    tracing::info!(threads, ?policy, "engine threads and adoption offset");
    let inference = Arc::new(Inference::new(registry, &config, policy));
    inference.preload().await;
    let (extension, answered) = after_answer::register(inference.clone()).await?;
    let runtime = Runtime::new(lambda_http::Adapter::from(router(inference)))
        .layer(TracingLayer::new())
        .layer(MetricsLayer::new(metrics))
        .layer(answered);
    tokio::try_join!(runtime.run(), extension)?;
    Ok(())
}
