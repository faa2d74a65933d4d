//! The inference side: models from the registry served over the Open Inference Protocol v2.
//! [`cache`] holds the versions in memory, [`live`] follows each model's alias, [`Inference`]
//! ties them to the configuration, and [`router`] is the one HTTP router, served by lambda_http
//! in Lambda and by a plain TCP listener locally.

pub mod cache;
pub mod live;
pub mod loaded;
pub mod protocol;
mod router;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

pub use self::cache::{ModelCache, Residency, Resident};
pub use self::live::{LiveError, LiveModel, LoadFailure, SwapPolicy};
pub use self::loaded::{LoadError, LoadedModel};
pub use self::router::router;
use modelpipe_config::Config;
use modelpipe_core::model_name::ModelName;
use modelpipe_registry::Registry;

pub struct Inference {
    cache: Arc<ModelCache>,
    /// How often a request may look at the alias; `None`: never (a registry baked into the
    /// image cannot change).
    reload_check: Option<Duration>,
    policy: SwapPolicy,
    max_request_bytes: usize,
    preload: Vec<ModelName>,
    live: Mutex<HashMap<ModelName, Arc<LiveModel>>>,
}

/// What a model's live slot holds now.
#[derive(Debug, Clone, Default)]
pub struct LiveStatus {
    /// The version serving requests, if it is in memory.
    pub loaded: Option<u64>,
    pub failure: Option<LoadFailure>,
}

impl Inference {
    pub fn new(registry: Registry, config: &Config, policy: SwapPolicy) -> Self {
        Self {
            reload_check: (!registry.is_baked()).then_some(config.reload_check),
            cache: Arc::new(ModelCache::new(
                registry,
                config.model_cache_bytes,
                config.limits,
            )),
            policy,
            max_request_bytes: config.max_request_bytes,
            preload: config.preload_models.clone(),
            live: Mutex::default(),
        }
    }

    pub fn registry(&self) -> &Registry {
        self.cache.registry()
    }

    pub fn cache(&self) -> &ModelCache {
        &self.cache
    }

    /// Whether and how alias moves are noticed, for metadata.
    pub fn hot_reload(&self) -> serde_json::Value {
        match self.reload_check {
            Some(every) => serde_json::json!({
                "enabled": true,
                "check_ms": every.as_millis() as u64,
            }),
            None => serde_json::json!({
                "enabled": false,
                "reason": format!(
                    "the registry at {} is baked into the image: its aliases never move; deploy a new image to change models",
                    self.registry().location()
                ),
            }),
        }
    }

    fn live_model(&self, model: &ModelName) -> Arc<LiveModel> {
        self.live
            .lock()
            .expect("live map")
            .entry(model.clone())
            .or_insert_with(|| {
                let residency = if self.preload.contains(model) {
                    Residency::Preloaded
                } else {
                    Residency::OnDemand
                };
                Arc::new(LiveModel::new(model.clone(), residency))
            })
            .clone()
    }

    /// The version behind `live`, loading it on first use and noticing alias moves.
    pub async fn live(&self, model: &ModelName) -> Result<Arc<LoadedModel>, LiveError> {
        let result = self
            .live_model(model)
            .get(&self.cache, self.reload_check, self.policy)
            .await;
        if let Err(LiveError::NotFound(_)) = result {
            // Names that were never models must not accumulate.
            self.live.lock().expect("live map").remove(model);
        }
        result
    }

    /// What the live slot of `model` holds now, without loading or checking anything.
    pub fn live_status(&self, model: &ModelName) -> LiveStatus {
        let Some(slot) = self.live.lock().expect("live map").get(model).cloned() else {
            return LiveStatus::default();
        };
        LiveStatus {
            loaded: slot.version().filter(|&v| self.cache.is_resident(model, v)),
            failure: slot.failure(),
        }
    }

    /// Exactly `version` of `model`, from the cache or loaded into it.
    pub async fn pinned(
        &self,
        model: &ModelName,
        version: u64,
    ) -> Result<Arc<LoadedModel>, LoadError> {
        let loaded = self.cache.load(model, version, Residency::OnDemand).await?;
        self.cache.trim();
        Ok(loaded)
    }

    /// Loads each model's live version now (the Lambda init phase, outside the handler). A
    /// model that cannot be loaded yet (not uploaded, or its load failed) is logged and left to
    /// load on its first request: one missing model must not take the others down with init.
    pub async fn preload(&self) {
        for model in &self.preload {
            match self.live(model).await {
                Ok(loaded) => {
                    tracing::info!(model = %model, version = loaded.version(), ms = loaded.load_time.as_millis() as u64, "preloaded")
                }
                Err(e) => {
                    tracing::warn!(model = %model, error = %e, "PRELOAD_MODELS: not preloaded")
                }
            }
        }
    }
}
