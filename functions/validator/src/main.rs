//! The validator Lambda: S3 ObjectCreated events in, versions committed and published.

use aws_lambda_events::s3::S3Event;
use lambda_runtime::{Diagnostic, Error, LambdaEvent, service_fn};
use modelpipe_aws::{LambdaPublisher, S3Uploads, s3_client};
use modelpipe_config::Config;
use modelpipe_validator::validator::Validator;

#[tokio::main]
async fn main() -> Result<(), Error> {
    modelpipe_config::telemetry::init_lambda();
    let config = Config::from_env()?;
    let registry = config.open_registry()?;
    // The engines are timed on as many threads as the inference function gives them
    // (ENGINE_THREADS, every vCPU by default: give both functions the same memory).
    let threads = modelpipe_engine::use_threads(config.engine_threads);
    tracing::info!(threads, "engine threads");
    let function = config
        .publisher_function
        .clone()
        .ok_or("PUBLISHER_FUNCTION is not set")?;
    let aws = aws_config::load_from_env().await;
    let publisher = LambdaPublisher::new(aws_sdk_lambda::Client::new(&aws), function);
    let validator = Validator::new(
        registry,
        S3Uploads::new(s3_client(&aws)),
        publisher,
        &config,
    );
    let validator = &validator;
    lambda_runtime::run(service_fn(move |event: LambdaEvent<S3Event>| async move {
        // An error makes Lambda retry the event; rejections are outcomes, not errors.
        validator
            .handle_event(&event.payload)
            .await
            .map_err(|e| Diagnostic {
                error_type: "ValidatorError".into(),
                error_message: e.to_string(),
            })
    }))
    .await
}
