//! A registry filled with real models and the inference router serving it on a local port, as
//! `modelctl dev` serves it, for tests that talk HTTP to it.

use std::sync::Arc;

use modelpipe_config::Config;
use modelpipe_core::{AliasName, ModelName};
use modelpipe_engine::EngineKind;
use modelpipe_registry::Registry;
use modelpipe_registry::publish::{PublisherRequest, apply};
use modelpipe_serve::{Inference, SwapPolicy, router};
use modelpipe_testkit::commit::{Compile, commit_checked};

/// Commits `bytes` as the next version of `model` served by tract, compiled (the validator's
/// commit, without S3).
pub fn commit(registry: &Registry, model: &ModelName, bytes: &[u8]) -> u64 {
    commit_checked(
        registry,
        model,
        bytes,
        Some(EngineKind::Tract),
        Compile::Yes,
    )
}

/// Commits `bytes` as a version committed before ingest compiled models: no layout chosen, no
/// artifact (inference loads `model.onnx`).
pub fn commit_uncompiled(registry: &Registry, model: &ModelName, bytes: &[u8]) -> u64 {
    commit_checked(registry, model, bytes, Some(EngineKind::Tract), Compile::No)
}

/// Commits `bytes` as the validator does: in `engine`, or the engine the checks choose.
pub fn commit_in(
    registry: &Registry,
    model: &ModelName,
    bytes: &[u8],
    engine: Option<EngineKind>,
) -> u64 {
    commit_checked(registry, model, bytes, engine, Compile::Yes)
}

/// Moves `live` of `model` to `version`, as the publisher does.
pub fn publish(registry: &Registry, model: &ModelName, version: u64) {
    apply(
        registry,
        &PublisherRequest::Publish {
            model: model.clone(),
            version,
            alias: AliasName::live(),
            reason: None,
        },
        None,
    )
    .unwrap();
}

/// Serves `registry` on a free local port with the configuration `env` gives; returns the base
/// URL. `PRELOAD_MODELS` are loaded first, as in Lambda's init. The server runs until the test's
/// runtime ends.
pub async fn serve(registry: &Registry, env: &[(&str, &str)]) -> String {
    let env: Vec<(String, String)> = env
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    let config =
        Config::from_lookup(|name| env.iter().find(|(k, _)| k == name).map(|(_, v)| v.clone()))
            .unwrap();
    let inference = Arc::new(Inference::new(
        registry.clone(),
        &config,
        SwapPolicy::Background,
    ));
    inference.preload().await;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, router(inference)).await.unwrap() });
    base
}
