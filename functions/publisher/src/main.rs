//! The publisher Lambda: `{"action": "publish" | "rollback" | "set-alias", ...}` in, the alias
//! moved and `{"model", "alias", "version", "previous"}` out; `{"action": "status" | "history"}`
//! answer what `modelctl status|history` show; `{"action": "rollout-…"}` starts, advances
//! (the schedule's tick), pauses, resumes, aborts, promotes or reports guarded rollouts. Every
//! move is held to the model's signer policy (`SIGNING_POLICY`, or the model's contract).
//! Refusals are function errors.

use lambda_runtime::{Diagnostic, Error, LambdaEvent, service_fn};
use modelpipe_config::Config;
use modelpipe_registry::publish::{PublishError, PublisherQuery, PublisherRequest, answer, apply};
use modelpipe_registry::rollout::actions::{self as rollout, RolloutRequest};
use serde_json::Value;

#[tokio::main]
async fn main() -> Result<(), Error> {
    modelpipe_config::telemetry::init_lambda();
    let config = Config::from_env()?;
    let registry = config.open_registry()?;
    let registry = &registry;
    lambda_runtime::run(service_fn(move |event: LambdaEvent<Value>| async move {
        let refused = |e: PublishError| {
            tracing::warn!(error = %e, "refused");
            Diagnostic { error_type: "PublishError".into(), error_message: e.to_string() }
        };
        let (registry, request_id) = (registry.clone(), event.context.request_id);
        let handled = if RolloutRequest::is_rollout(&event.payload) {
            let request: RolloutRequest = serde_json::from_value(event.payload)
                .map_err(|e| refused(PublishError::BadRequest(e.to_string())))?;
            let answered = tokio::task::spawn_blocking(move || {
                rollout::apply(&registry, &request, Some(&request_id))
            })
            .await
            .map_err(|e| Diagnostic { error_type: "Panic".into(), error_message: e.to_string() })?;
            return match answered {
                Ok(answer) => Ok(serde_json::to_value(answer).expect("answers serialise")),
                Err(e) => {
                    tracing::warn!(error = %e, "refused");
                    Err(Diagnostic { error_type: "RolloutError".into(), error_message: e.to_string() })
                }
            };
        } else if PublisherQuery::is_query(&event.payload) {
            let query: PublisherQuery = serde_json::from_value(event.payload)
                .map_err(|e| refused(PublishError::BadRequest(e.to_string())))?;
            tokio::task::spawn_blocking(move || answer(&registry, &query)).await
        } else {
            let request = PublisherRequest::from_json(event.payload).map_err(refused)?;
            tokio::task::spawn_blocking(move || {
                let response = apply(&registry, &request, Some(&request_id))?;
                tracing::info!(model = %response.model, alias = %response.alias, from = ?response.previous, to = response.version, "alias moved");
                Ok(serde_json::to_value(response).expect("answers serialise"))
            })
            .await
        };
        let answer = handled
            .map_err(|e| Diagnostic { error_type: "Panic".into(), error_message: e.to_string() })?
            .map_err(refused)?;
        Ok::<_, Diagnostic>(answer)
    }))
    .await
}
