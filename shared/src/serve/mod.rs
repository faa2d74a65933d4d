//! The inference side: models from the registry served over the Open Inference Protocol v2.
//! [`Inference`] owns what is loaded; [`router`] is the one HTTP router, served by lambda_http in
//! Lambda and by a plain TCP listener locally.

pub mod live;
pub mod loaded;
pub mod protocol;
mod router;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::OnceCell;

pub use self::live::{LiveError, LiveModel, SwapPolicy};
pub use self::loaded::{LoadError, LoadedModel};
pub use self::router::router;
use crate::config::Config;
use crate::model_name::ModelName;
use crate::registry::Registry;

pub struct Inference {
    registry: Registry,
    reload_check: Duration,
    policy: SwapPolicy,
    max_request_bytes: usize,
    live: Mutex<HashMap<ModelName, Arc<LiveModel>>>,
    /// Versions asked for by number; each loads once, however many requests ask at once.
    pinned: Mutex<HashMap<(ModelName, u64), Arc<OnceCell<Arc<LoadedModel>>>>>,
}

impl Inference {
    pub fn new(registry: Registry, config: &Config, policy: SwapPolicy) -> Self {
        Self {
            registry,
            reload_check: config.reload_check,
            policy,
            max_request_bytes: config.max_request_bytes,
            live: Mutex::default(),
            pinned: Mutex::default(),
        }
    }

    pub fn registry(&self) -> &Registry {
        &self.registry
    }

    fn live_model(&self, model: &ModelName) -> Arc<LiveModel> {
        self.live
            .lock()
            .expect("live map")
            .entry(model.clone())
            .or_insert_with(|| Arc::new(LiveModel::new(model.clone())))
            .clone()
    }

    /// The version behind `live`, loading it on first use and noticing alias moves.
    pub async fn live(&self, model: &ModelName) -> Result<Arc<LoadedModel>, LiveError> {
        self.live_model(model)
            .get(&self.registry, self.reload_check, self.policy)
            .await
    }

    /// What the live slot of `model` holds now, without loading or checking anything.
    pub fn live_status(
        &self,
        model: &ModelName,
    ) -> (Option<Arc<LoadedModel>>, Option<live::LoadFailure>) {
        let slot = self.live.lock().expect("live map").get(model).cloned();
        slot.map(|s| (s.current(), s.failure()))
            .unwrap_or((None, None))
    }

    /// Exactly `version` of `model`: the live one if it is that version, else loaded on demand.
    pub async fn pinned(
        &self,
        model: &ModelName,
        version: u64,
    ) -> Result<Arc<LoadedModel>, LoadError> {
        if let (Some(current), _) = self.live_status(model)
            && current.version() == version
        {
            return Ok(current);
        }
        let cell = self
            .pinned
            .lock()
            .expect("pinned map")
            .entry((model.clone(), version))
            .or_default()
            .clone();
        let loaded = cell
            .get_or_try_init(|| async {
                let (registry, model) = (self.registry.clone(), model.clone());
                tokio::task::spawn_blocking(move || LoadedModel::load(&registry, &model, version))
                    .await
                    .unwrap_or_else(|e| Err(LoadError::Registry(format!("load task failed: {e}"))))
                    .map(Arc::new)
            })
            .await?;
        Ok(loaded.clone())
    }

    /// Loads each model's live version now (the Lambda init phase, outside the handler).
    pub async fn preload(&self, models: &[ModelName]) -> Result<(), LiveError> {
        for model in models {
            let loaded = self.live(model).await?;
            tracing::info!(model = %model, version = loaded.version(), ms = loaded.load_time.as_millis() as u64, "preloaded");
        }
        Ok(())
    }
}
