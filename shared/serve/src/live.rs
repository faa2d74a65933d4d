//! Hot reload of one model's alias. The slot holds the number of the version serving requests;
//! the alias is re-read on the request path at most every `RELOAD_CHECK_MS`; a new version is
//! loaded, verified and warmed through the cache while the old one keeps serving, then the
//! number is swapped atomically and the old version dropped from the cache (freed when its last
//! request ends). One load per model at a time, so at most one extra version is resident during
//! a swap; a failed load is never swapped in, is kept for metadata, and is not retried for
//! [`RETRY_BACKOFF`](super::cache::RETRY_BACKOFF).

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tracing::{info, warn};

use super::cache::ModelCache;
use super::loaded::{LoadError, LoadedModel};
use modelpipe_core::model_name::{AliasName, ModelName};
use modelpipe_registry::AliasRecord;

/// Who pays for loading a new version.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SwapPolicy {
    /// The request that notices the move loads it and answers from it (Lambda: the process is
    /// frozen between invocations, so a background load would only progress while requests
    /// run; see docs/hot-swap.md).
    Blocking,
    /// A background task loads it while requests keep being served by the old version (a
    /// long-running server).
    Background,
}

/// A load that failed, kept so metadata can show it until a load succeeds.
#[derive(Debug, Clone)]
pub struct LoadFailure {
    pub version: u64,
    pub error: String,
}

pub struct LiveModel {
    model: ModelName,
    alias: AliasName,
    /// A preloaded model: its versions are kept in the cache, outside the budget.
    keep: bool,
    /// The version serving requests; 0 until the first load (versions start at 1).
    version: AtomicU64,
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
    pub fn new(model: ModelName, keep: bool) -> Self {
        Self {
            model,
            alias: AliasName::live(),
            keep,
            version: AtomicU64::new(0),
            next_check: Mutex::new(Instant::now()),
            loading: Arc::new(tokio::sync::Mutex::new(())),
            failure: Mutex::new(None),
        }
    }

    /// The version serving requests, once one has been loaded.
    pub fn version(&self) -> Option<u64> {
        Some(self.version.load(Ordering::Acquire)).filter(|&v| v != 0)
    }

    pub fn failure(&self) -> Option<LoadFailure> {
        self.failure.lock().expect("failure lock").clone()
    }

    fn not_ready(&self, error: impl ToString) -> LiveError {
        LiveError::NotReady {
            model: self.model.clone(),
            error: error.to_string(),
        }
    }

    /// The version to serve this request with, after noticing an alias move if a check is due.
    pub async fn get(
        self: &Arc<Self>,
        cache: &Arc<ModelCache>,
        every: Option<Duration>,
        policy: SwapPolicy,
    ) -> Result<Arc<LoadedModel>, LiveError> {
        let Some(version) = self.version() else {
            return self.first_load(cache, every, policy).await;
        };
        if self.check_due(every) {
            self.notice_move(cache, version, policy).await;
        }
        let version = self.version().unwrap_or(version);
        if let Some(loaded) = cache.get(&self.model, version) {
            return Ok(loaded);
        }
        // Evicted while no request used it: this request loads it again (one load for all).
        let loaded = cache
            .load(&self.model, version, self.keep)
            .await
            .map_err(|e| self.not_ready(e))?;
        cache.trim();
        Ok(loaded)
    }

    async fn notice_move(
        self: &Arc<Self>,
        cache: &Arc<ModelCache>,
        current: u64,
        policy: SwapPolicy,
    ) {
        let target = match self.read_alias(cache).await {
            Ok(Some(alias)) => alias.version,
            Ok(None) => return,
            Err(e) => {
                warn!(model = %self.model, error = %e, "cannot read the alias; serving the loaded version");
                return;
            }
        };
        if target == current || cache.recent_failure(&self.model, target).is_some() {
            return;
        }
        let Ok(guard) = self.loading.clone().try_lock_owned() else {
            return; // a load is already running
        };
        match policy {
            // A failed load is logged and kept for metadata by `swap_to`; the old version serves.
            SwapPolicy::Blocking => {
                let _ = self.swap_to(cache, target).await;
                drop(guard);
            }
            SwapPolicy::Background => {
                let (this, cache) = (self.clone(), cache.clone());
                tokio::spawn(async move {
                    let _ = this.swap_to(&cache, target).await;
                    drop(guard);
                });
            }
        }
    }

    async fn first_load(
        self: &Arc<Self>,
        cache: &Arc<ModelCache>,
        every: Option<Duration>,
        policy: SwapPolicy,
    ) -> Result<Arc<LoadedModel>, LiveError> {
        let guard = self.loading.lock().await;
        if self.version().is_some() {
            // Another request loaded it while this one waited.
            drop(guard);
            return Box::pin(self.get(cache, every, policy)).await;
        }
        let version = match self.read_alias(cache).await {
            Ok(Some(alias)) => alias.version,
            Ok(None) => return Err(LiveError::NotFound(self.model.clone())),
            Err(e) => return Err(self.not_ready(e)),
        };
        if let Some(every) = every {
            *self.next_check.lock().expect("check lock") = Instant::now() + every;
        }
        let loaded = self
            .swap_to(cache, version)
            .await
            .map_err(|e| self.not_ready(e))?;
        Ok(loaded)
    }

    /// The alias record, read off the request's thread: on an S3 registry it is a (conditional)
    /// round trip.
    async fn read_alias(&self, cache: &ModelCache) -> Result<Option<AliasRecord>, String> {
        let (registry, model, alias) = (
            cache.registry().clone(),
            self.model.clone(),
            self.alias.clone(),
        );
        tokio::task::spawn_blocking(move || registry.alias(&model, &alias))
            .await
            .map_err(|e| e.to_string())?
            .map_err(|e| e.to_string())
    }

    /// Claims the next alias check if one is due; never, when hot reload is off.
    fn check_due(&self, every: Option<Duration>) -> bool {
        let Some(every) = every else {
            return false;
        };
        let mut next = self.next_check.lock().expect("check lock");
        let now = Instant::now();
        if now < *next {
            return false;
        }
        *next = now + every;
        true
    }

    /// Loads `version` and makes it the one serving; the previous one leaves the cache. Call
    /// with `loading` held.
    async fn swap_to(
        &self,
        cache: &ModelCache,
        version: u64,
    ) -> Result<Arc<LoadedModel>, LoadError> {
        match cache.load(&self.model, version, self.keep).await {
            Ok(loaded) => {
                let previous = self.version.swap(version, Ordering::AcqRel);
                if previous != 0 && previous != version {
                    cache.remove(&self.model, previous);
                    info!(model = %self.model, from = previous, to = version, ms = loaded.load_time.as_millis() as u64, "inference swapped to the new live version");
                }
                *self.failure.lock().expect("failure lock") = None;
                cache.trim();
                Ok(loaded)
            }
            Err(e) => {
                warn!(model = %self.model, version, error = %e, "load failed; the previous version keeps serving");
                *self.failure.lock().expect("failure lock") = Some(LoadFailure {
                    version,
                    error: e.to_string(),
                });
                Err(e)
            }
        }
    }
}
