//! The validator Lambda: S3 ObjectCreated events in (models, their signatures, their contracts),
//! versions committed and published; `{"action": "expire-uploads"}` (the schedule) rejects
//! uploads whose signature did not arrive within `SIGNATURE_WAIT_MS`.

use aws_lambda_events::s3::S3Event;
use lambda_runtime::{Diagnostic, Error, LambdaEvent, service_fn};
use modelpipe_aws::{LambdaPublisher, S3Uploads, s3_client};
use modelpipe_config::Config;
use modelpipe_validator::validator::Validator;
use serde_json::Value;

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
    lambda_runtime::run(service_fn(move |event: LambdaEvent<Value>| async move {
        let failed = |e: &dyn std::fmt::Display| Diagnostic {
            error_type: "ValidatorError".into(),
            error_message: e.to_string(),
        };
        // An error makes Lambda retry the event; rejections are outcomes, not errors.
        let outcomes =
            if event.payload.get("action").and_then(Value::as_str) == Some("expire-uploads") {
                validator.expire_uploads().await
            } else {
                let s3_event: S3Event =
                    serde_json::from_value(event.payload).map_err(|e| failed(&e))?;
                validator.handle_event(&s3_event).await
            };
        outcomes.map_err(|e| failed(&e))
    }))
    .await
}
