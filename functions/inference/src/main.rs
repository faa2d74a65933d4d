//! The inference Lambda: Open Inference Protocol v2 behind API Gateway (HTTP API or REST API).
//! `PRELOAD_MODELS` are loaded here, during init, outside the handler. A new version of a model
//! is adopted after an answer, never on a caller's time ([`after_answer`]), and so are sampled
//! requests written to `CAPTURE_BUCKET`; on SIGTERM (Lambda's shutdown of an environment with an
//! extension) what is held is written before the process exits. Per-version metrics are EMF
//! lines on stdout (CloudWatch turns them into metrics), written after each invocation.

mod after_answer;

use std::sync::Arc;

use lambda_http::Error;
use lambda_runtime::Runtime;
use lambda_runtime::layers::TracingLayer;
use metrics_cloudwatch_embedded::lambda::MetricsLayer;
use modelpipe_aws::{S3Capture, s3_client};
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
    let mut inference = Inference::new(registry, &config, policy);
    if let Some(bucket) = &config.monitoring.bucket {
        let aws = aws_config::load_from_env().await;
        inference = inference.with_capture_sink(Arc::new(S3Capture::new(s3_client(&aws), bucket)));
    }
    let inference = Arc::new(inference);
    inference.preload().await;
    tokio::spawn(flush_on_shutdown(inference.clone()));
    let (extension, answered) = after_answer::register(inference.clone()).await?;
    let runtime = Runtime::new(lambda_http::Adapter::from(router(inference)))
        .layer(TracingLayer::new())
        .layer(MetricsLayer::new(metrics))
        .layer(answered);
    tokio::try_join!(runtime.run(), extension)?;
    Ok(())
}

/// Lambda sends SIGTERM before it shuts down an environment that has an extension, and allows
/// an internal extension's process 300 ms: what the environment holds is written, then it exits.
async fn flush_on_shutdown(inference: Arc<Inference>) {
    let Ok(mut terminate) =
        tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
    else {
        tracing::warn!("no SIGTERM handler: what this environment holds is lost at shutdown");
        return;
    };
    terminate.recv().await;
    inference.flush().await;
    tracing::info!("shutdown: evidence, captured records and drift profiles written");
    std::process::exit(0);
}
