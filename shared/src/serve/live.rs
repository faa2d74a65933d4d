//! Hot reload of one model's alias: the version behind `live` held in an `ArcSwap`, the alias
//! re-read on the request path at most every `RELOAD_CHECK_MS`, the new version loaded, verified
//! and warmed before it replaces the old one, one load at a time, a failed load never swapped in
//! (the old version keeps serving and the failure is kept for metadata).

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use arc_swap::ArcSwapOption;
use tracing::{info, warn};

use super::loaded::{LoadError, LoadedModel};
use crate::model_name::{AliasName, ModelName};
use crate::registry::Registry;

/// Who pays for loading a new version.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SwapPolicy {
    /// The request that notices the move loads it and answers from it (Lambda: the process is
    /// frozen between invocations, so a background load would stall until the next one).
    Blocking,
    /// A background task loads it while requests keep being served by the old version (a
    /// long-running local server).
    Background,
}

/// A load that failed, kept so metadata can show it and retries back off.
#[derive(Debug, Clone)]
pub struct LoadFailure {
    pub version: u64,
    pub error: String,
    pub at: Instant,
}

/// How long a version that failed to load is left alone before it is tried again.
pub const RETRY_BACKOFF: Duration = Duration::from_secs(10);

pub struct LiveModel {
    model: ModelName,
    alias: AliasName,
    current: ArcSwapOption<LoadedModel>,
    next_check: Mutex<Instant>,
    loading: Arc<tokio::sync::Mutex<()>>,
    failure: Mutex<Option<LoadFailure>>,
}

#[derive(Debug, thiserror::Error)]
pub enum LiveError {
    #[error("model '{0}' not found")]
    NotFound(ModelName),
    #[error("model '{model}' is not ready: {error}")]
    NotReady { model: ModelName, error: String },
}

impl LiveModel {
    pub fn new(model: ModelName) -> Self {
        Self {
            model,
            alias: AliasName::live(),
            current: ArcSwapOption::empty(),
            next_check: Mutex::new(Instant::now()),
            loading: Arc::new(tokio::sync::Mutex::new(())),
            failure: Mutex::new(None),
        }
    }

    pub fn current(&self) -> Option<Arc<LoadedModel>> {
        self.current.load_full()
    }

    pub fn failure(&self) -> Option<LoadFailure> {
        self.failure.lock().expect("failure lock").clone()
    }

    /// The version to serve this request with, after noticing an alias move if a check is due.
    pub async fn get(
        self: &Arc<Self>,
        registry: &Registry,
        every: Duration,
        policy: SwapPolicy,
    ) -> Result<Arc<LoadedModel>, LiveError> {
        let Some(current) = self.current() else {
            return self.first_load(registry, every).await;
        };
        if self.check_due(every) {
            match registry.alias(&self.model, &self.alias) {
                Ok(Some(alias))
                    if alias.version != current.version() && !self.backing_off(alias.version) =>
                {
                    match policy {
                        SwapPolicy::Blocking => {
                            if let Ok(guard) = self.loading.clone().try_lock_owned() {
                                self.load_and_swap(registry, alias.version).await;
                                drop(guard);
                            }
                        }
                        SwapPolicy::Background => {
                            if let Ok(guard) = self.loading.clone().try_lock_owned() {
                                let (this, registry) = (self.clone(), registry.clone());
                                tokio::spawn(async move {
                                    this.load_and_swap(&registry, alias.version).await;
                                    drop(guard);
                                });
                            }
                        }
                    }
                }
                Ok(_) => {}
                Err(e) => {
                    warn!(model = %self.model, error = %e, "cannot read the alias; serving the loaded version")
                }
            }
        }
        Ok(self.current().unwrap_or(current))
    }

    async fn first_load(
        self: &Arc<Self>,
        registry: &Registry,
        every: Duration,
    ) -> Result<Arc<LoadedModel>, LiveError> {
        let _guard = self.loading.lock().await;
        if let Some(current) = self.current() {
            return Ok(current);
        }
        let alias = match registry.alias(&self.model, &self.alias) {
            Ok(Some(alias)) => alias,
            Ok(None) => return Err(LiveError::NotFound(self.model.clone())),
            Err(e) => {
                return Err(LiveError::NotReady {
                    model: self.model.clone(),
                    error: e.to_string(),
                });
            }
        };
        if let Some(failure) = self
            .failure()
            .filter(|f| f.version == alias.version && f.at.elapsed() < RETRY_BACKOFF)
        {
            return Err(LiveError::NotReady {
                model: self.model.clone(),
                error: failure.error,
            });
        }
        *self.next_check.lock().expect("check lock") = Instant::now() + every;
        self.load_and_swap(registry, alias.version).await;
        self.current().ok_or_else(|| LiveError::NotReady {
            model: self.model.clone(),
            error: self
                .failure()
                .map(|f| f.error)
                .unwrap_or_else(|| "load failed".into()),
        })
    }

    /// Claims the next alias check if one is due.
    fn check_due(&self, every: Duration) -> bool {
        let mut next = self.next_check.lock().expect("check lock");
        let now = Instant::now();
        if now < *next {
            return false;
        }
        *next = now + every;
        true
    }

    fn backing_off(&self, version: u64) -> bool {
        self.failure()
            .is_some_and(|f| f.version == version && f.at.elapsed() < RETRY_BACKOFF)
    }

    /// Loads `version` off the async threads and swaps it in on success. Call with `loading` held.
    async fn load_and_swap(&self, registry: &Registry, version: u64) {
        let (registry, model) = (registry.clone(), self.model.clone());
        let loaded =
            tokio::task::spawn_blocking(move || LoadedModel::load(&registry, &model, version))
                .await
                .unwrap_or_else(|e| Err(LoadError::Registry(format!("load task failed: {e}"))));
        match loaded {
            Ok(loaded) => {
                let previous = self.current().map(|c| c.version());
                info!(model = %self.model, from = ?previous, to = version, ms = loaded.load_time.as_millis() as u64, "inference reloaded");
                self.current.store(Some(Arc::new(loaded)));
                *self.failure.lock().expect("failure lock") = None;
            }
            Err(e) => {
                warn!(model = %self.model, version, error = %e, "load failed; the previous version keeps serving");
                *self.failure.lock().expect("failure lock") = Some(LoadFailure {
                    version,
                    error: e.to_string(),
                    at: Instant::now(),
                });
            }
        }
    }
}
