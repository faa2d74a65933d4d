//! The publisher Lambda: `{"action": "publish" | "rollback" | "set-alias", ...}` in, the alias
//! moved and `{"model", "alias", "version", "previous"}` out; `{"action": "status" | "history"}`
//! answer what `modelctl status|history` show; `{"action": "rollout-…"}` starts, advances
//! (the schedule's tick), pauses, resumes, aborts, promotes or reports guarded rollouts;
//! `{"action": "drift"}` (the schedule's too) compares each version's live traffic with its
//! baseline and sets `modelpipe_feature_drift` (EMF lines, flushed after each invocation). Every
//! move is held to the model's signer policy (`SIGNING_POLICY`, or the model's contract).
//! Refusals are function errors.

use std::time::SystemTime;

use lambda_runtime::{Diagnostic, Error, LambdaEvent, Runtime, service_fn};
use metrics_cloudwatch_embedded::lambda::MetricsLayer;
use modelpipe_config::{Config, MonitoringConfig};
use modelpipe_registry::Registry;
use modelpipe_registry::drift::DriftRequest;
use modelpipe_registry::publish::{PublishError, PublisherQuery, PublisherRequest, answer, apply};
use modelpipe_registry::rollout::actions::{self as rollout, RolloutRequest};
use serde_json::Value;

#[tokio::main]
async fn main() -> Result<(), Error> {
    modelpipe_config::telemetry::init_lambda();
    let config = Config::from_env()?;
    let metrics = metrics_cloudwatch_embedded::Builder::new()
        .cloudwatch_namespace(config.metrics_namespace.clone())
        .init()?;
    let registry = config.open_registry()?;
    let (registry, monitoring) = (&registry, &config.monitoring);
    let handler = service_fn(move |event: LambdaEvent<Value>| {
        let (registry, monitoring) = (registry.clone(), monitoring.clone());
        async move {
            let request_id = event.context.request_id;
            tokio::task::spawn_blocking(move || {
                handle(&registry, &monitoring, event.payload, &request_id)
            })
            .await
            .map_err(|e| Diagnostic {
                error_type: "Panic".into(),
                error_message: e.to_string(),
            })?
        }
    });
    Runtime::new(handler)
        .layer(MetricsLayer::new(metrics))
        .run()
        .await
}

/// One event, answered or refused (blocking: takes locks and may hash a large file).
fn handle(
    registry: &Registry,
    monitoring: &MonitoringConfig,
    payload: Value,
    request_id: &str,
) -> Result<Value, Diagnostic> {
    let refused = |error_type: &str, e: &dyn std::fmt::Display| {
        tracing::warn!(error = %e, "refused");
        Diagnostic {
            error_type: error_type.into(),
            error_message: e.to_string(),
        }
    };
    let bad =
        |e: serde_json::Error| refused("PublishError", &PublishError::BadRequest(e.to_string()));
    let answered = if RolloutRequest::is_rollout(&payload) {
        let request: RolloutRequest = serde_json::from_value(payload).map_err(bad)?;
        let answer = rollout::apply(registry, &request, Some(request_id))
            .map_err(|e| refused("RolloutError", &e))?;
        serde_json::to_value(answer)
    } else if DriftRequest::is_drift(&payload) {
        let request: DriftRequest = serde_json::from_value(payload).map_err(bad)?;
        let settings = |own| monitoring.drift_settings(own);
        let reports = request
            .apply(registry, &settings, SystemTime::now())
            .map_err(|e| refused("DriftError", &e))?;
        for report in &reports {
            let flagged = report.flagged_names();
            if !flagged.is_empty() {
                tracing::warn!(model = %report.model, version = report.version, ?flagged, "drift");
            }
        }
        serde_json::to_value(reports)
    } else if PublisherQuery::is_query(&payload) {
        let query: PublisherQuery = serde_json::from_value(payload).map_err(bad)?;
        Ok(answer(registry, &query).map_err(|e| refused("PublishError", &e))?)
    } else {
        let request =
            PublisherRequest::from_json(payload).map_err(|e| refused("PublishError", &e))?;
        let response =
            apply(registry, &request, Some(request_id)).map_err(|e| refused("PublishError", &e))?;
        tracing::info!(model = %response.model, alias = %response.alias, from = ?response.previous, to = response.version, "alias moved");
        serde_json::to_value(response)
    };
    Ok(answered.expect("answers serialise"))
}
