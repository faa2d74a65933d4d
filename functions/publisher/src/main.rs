//! The publisher Lambda: `{"action": "publish" | "rollback" | "set-alias", ...}` in, the alias
//! moved and `{"model", "alias", "version", "previous"}` out; refusals are function errors.

use lambda_runtime::{Diagnostic, Error, LambdaEvent, service_fn};
use modelpipe::config::Config;
use modelpipe::publish::{PublishError, PublisherRequest, PublisherResponse, apply};
use serde_json::Value;

#[tokio::main]
async fn main() -> Result<(), Error> {
    modelpipe::telemetry::init_lambda();
    let config = Config::from_env()?;
    let registry = config.open_registry()?;
    let registry = &registry;
    lambda_runtime::run(service_fn(move |event: LambdaEvent<Value>| async move {
        let refused = |e: PublishError| {
            tracing::warn!(error = %e, "refused");
            Diagnostic { error_type: "PublishError".into(), error_message: e.to_string() }
        };
        let request = PublisherRequest::from_json(event.payload).map_err(refused)?;
        let (registry, request_id) = (registry.clone(), event.context.request_id);
        let response: PublisherResponse =
            tokio::task::spawn_blocking(move || apply(&registry, &request, Some(&request_id))).await.map_err(|e| Diagnostic { error_type: "Panic".into(), error_message: e.to_string() })?.map_err(refused)?;
        tracing::info!(model = %response.model, alias = %response.alias, from = ?response.previous, to = response.version, "alias moved");
        Ok::<_, Diagnostic>(response)
    }))
    .await
}
