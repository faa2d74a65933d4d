//! The versions in memory, one cache for the live slots and for pinned-version requests. The
//! cache is the only long-lived owner of a [`LoadedModel`]; a request holds an `Arc` while it
//! runs, so a version dropped from the cache is freed when its last request ends.
//!
//! - One load per version, however many requests ask for it at once (single flight).
//! - `MODEL_CACHE_BYTES` bounds the models loaded on demand: past it, the least recently used
//!   version that no request is using is dropped. A model's cost is its file size, the same order
//!   as its weights in memory (BENCHMARKS.md has measured figures), once per plan it holds (one
//!   per input shape seen, see [`modelpipe_engine::MAX_SHAPE_PLANS`]).
//! - Versions of `PRELOAD_MODELS` are kept: outside the budget and never evicted.
//! - A version that failed to load is not retried for [`RETRY_BACKOFF`].
//!
//! It decides nothing about aliases: `live` says which version each model should serve.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use lru::LruCache;
use tokio::sync::OnceCell;
use tracing::{info, warn};

use super::loaded::{LoadError, LoadedModel};
use modelpipe_core::model_name::ModelName;
use modelpipe_engine::Limits;
use modelpipe_registry::Registry;

/// How long a version that failed to load is left alone before it is tried again.
pub const RETRY_BACKOFF: Duration = Duration::from_secs(10);

type Key = (ModelName, u64);

#[derive(Default)]
struct Slot {
    model: OnceCell<Arc<LoadedModel>>,
    kept: AtomicBool,
    failure: Mutex<Option<(LoadError, Instant)>>,
}

impl Slot {
    fn recent_failure(&self) -> Option<LoadError> {
        let failure = self.failure.lock().expect("failure lock");
        failure
            .as_ref()
            .filter(|(_, at)| at.elapsed() < RETRY_BACKOFF)
            .map(|(e, _)| e.clone())
    }
}

/// Whether a version counts against the cache's budget.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Residency {
    /// Loaded on demand: evicted, least recently used first, when the budget is exceeded.
    OnDemand,
    /// A `PRELOAD_MODELS` model's: kept outside the budget.
    Preloaded,
}

pub struct ModelCache {
    registry: Registry,
    budget: Option<u64>,
    /// What one load may cost an engine.
    limits: Limits,
    slots: Mutex<LruCache<Key, Arc<Slot>>>,
}

/// What the cache holds, for metadata and tests.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Resident {
    pub model: ModelName,
    pub version: u64,
    pub kept: bool,
}

impl ModelCache {
    pub fn new(registry: Registry, budget: Option<u64>, limits: Limits) -> Self {
        Self {
            registry,
            budget,
            limits,
            slots: Mutex::new(LruCache::unbounded()),
        }
    }

    pub fn registry(&self) -> &Registry {
        &self.registry
    }

    fn slot(&self, model: &ModelName, version: u64) -> Arc<Slot> {
        let mut slots = self.slots.lock().expect("cache lock");
        slots
            .get_or_insert((model.clone(), version), Default::default)
            .clone()
    }

    /// The version loaded, marked most recently used; `None` if it is not in memory.
    pub fn get(&self, model: &ModelName, version: u64) -> Option<Arc<LoadedModel>> {
        let mut slots = self.slots.lock().expect("cache lock");
        slots
            .get(&(model.clone(), version))
            .and_then(|slot| slot.model.get().cloned())
    }

    /// The version, loading it (verified, warmed) if it is not in memory. Concurrent callers for
    /// one version share one load. Does not evict: call [`Self::trim`] once the caller has put
    /// the result where it belongs.
    pub async fn load(
        &self,
        model: &ModelName,
        version: u64,
        residency: Residency,
    ) -> Result<Arc<LoadedModel>, LoadError> {
        let slot = self.slot(model, version);
        if residency == Residency::Preloaded {
            slot.kept.store(true, Ordering::Relaxed);
        }
        if let Some(loaded) = slot.model.get() {
            return Ok(loaded.clone());
        }
        if let Some(error) = slot.recent_failure() {
            return Err(error);
        }
        let loaded = slot
            .model
            .get_or_try_init(|| async {
                // A caller that waited on a load which failed retries it here: don't, for a while.
                if let Some(error) = slot.recent_failure() {
                    return Err(error);
                }
                let (registry, name, limits) = (self.registry.clone(), model.clone(), self.limits);
                let loaded = tokio::task::spawn_blocking(move || {
                    LoadedModel::load(&registry, &name, version, &limits)
                })
                .await
                .unwrap_or_else(|e| Err(LoadError::Registry(format!("load task failed: {e}"))));
                match loaded {
                    Ok(loaded) => {
                        info!(model = %loaded.manifest.model, version, ms = loaded.load_time.as_millis() as u64, bytes = loaded.manifest.size, engine = %loaded.engine.kind(), from = loaded.loaded_from, "model loaded");
                        crate::metrics::load(&loaded.manifest.model, version, loaded.load_time);
                        Ok(Arc::new(loaded))
                    }
                    Err(e) => {
                        warn!(model = %model, version, error = %e, "model load failed");
                        *slot.failure.lock().expect("failure lock") =
                            Some((e.clone(), Instant::now()));
                        Err(e)
                    }
                }
            })
            .await?;
        Ok(loaded.clone())
    }

    /// Whether `version` is in memory (without marking it used).
    pub fn is_resident(&self, model: &ModelName, version: u64) -> bool {
        let slots = self.slots.lock().expect("cache lock");
        slots
            .peek(&(model.clone(), version))
            .is_some_and(|slot| slot.model.get().is_some())
    }

    /// Drops `version` from the cache (a live version that was replaced); requests still using
    /// it keep it until they end.
    pub fn remove(&self, model: &ModelName, version: u64) {
        self.slots
            .lock()
            .expect("cache lock")
            .pop(&(model.clone(), version));
    }

    /// The failure that keeps `version` from being retried, if it is recent.
    pub fn recent_failure(&self, model: &ModelName, version: u64) -> Option<LoadError> {
        let slots = self.slots.lock().expect("cache lock");
        slots
            .peek(&(model.clone(), version))
            .and_then(|slot| slot.recent_failure())
    }

    /// Evicts least recently used versions that no request is using until the models loaded on
    /// demand fit the budget.
    pub fn trim(&self) {
        let Some(budget) = self.budget else { return };
        let mut slots = self.slots.lock().expect("cache lock");
        let cost = |slot: &Slot| match slot.model.get() {
            Some(loaded) if !slot.kept.load(Ordering::Relaxed) => loaded.memory_cost(),
            _ => 0,
        };
        let mut on_demand: u64 = slots.iter().map(|(_, slot)| cost(slot)).sum();
        if on_demand <= budget {
            return;
        }
        // Least recently used first; a version whose `Arc` is held elsewhere is serving a request.
        let evictable: Vec<(Key, u64)> = slots
            .iter()
            .rev()
            .filter(|(_, slot)| {
                cost(slot) > 0 && slot.model.get().is_some_and(|m| Arc::strong_count(m) == 1)
            })
            .map(|(key, slot)| (key.clone(), cost(slot)))
            .collect();
        for (key, bytes) in evictable {
            if on_demand <= budget {
                break;
            }
            slots.pop(&key);
            on_demand -= bytes;
            info!(model = %key.0, version = key.1, bytes, "evicted from the model cache");
        }
        if on_demand > budget {
            warn!(
                bytes = on_demand,
                budget, "models in use exceed MODEL_CACHE_BYTES; evicting as their requests end"
            );
        }
    }

    /// The versions in memory, most recently used first.
    pub fn resident(&self) -> Vec<Resident> {
        let slots = self.slots.lock().expect("cache lock");
        slots
            .iter()
            .filter(|(_, slot)| slot.model.get().is_some())
            .map(|((model, version), slot)| Resident {
                model: model.clone(),
                version: *version,
                kept: slot.kept.load(Ordering::Relaxed),
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use modelpipe_testkit::commit::commit_bytes;
    use modelpipe_testkit::onnx_build::LinearSoftmax;

    fn name(s: &str) -> ModelName {
        s.parse().unwrap()
    }

    /// A registry holding one real model (a version 1) under each of `models`; returns its size.
    fn registry_with(models: &[&str]) -> (tempfile::TempDir, Registry, u64) {
        let dir = tempfile::tempdir().unwrap();
        let registry = Registry::open(dir.path()).unwrap();
        let bytes = LinearSoftmax::iris(1).to_bytes();
        for model in models {
            commit_bytes(&registry, &name(model), &bytes);
        }
        (dir, registry, bytes.len() as u64)
    }

    fn resident(cache: &ModelCache) -> Vec<String> {
        let mut names: Vec<String> = cache
            .resident()
            .iter()
            .map(|r| r.model.to_string())
            .collect();
        names.sort();
        names
    }

    async fn load_and_trim(cache: &ModelCache, model: &str) {
        cache
            .load(&name(model), 1, Residency::OnDemand)
            .await
            .unwrap();
        cache.trim();
    }

    #[tokio::test]
    async fn the_least_recently_used_version_is_evicted_first() {
        let (_dir, registry, size) = registry_with(&["a", "b", "c"]);
        let cache = ModelCache::new(registry, Some(2 * size), Limits::default());
        load_and_trim(&cache, "a").await;
        load_and_trim(&cache, "b").await;
        assert!(cache.get(&name("a"), 1).is_some());
        load_and_trim(&cache, "c").await;
        assert_eq!(resident(&cache), ["a", "c"]);
    }

    #[tokio::test]
    async fn a_version_a_request_is_using_is_never_evicted() {
        let (_dir, registry, size) = registry_with(&["a", "b", "c"]);
        let cache = ModelCache::new(registry, Some(size), Limits::default());
        let in_use = cache
            .load(&name("a"), 1, Residency::OnDemand)
            .await
            .unwrap();
        load_and_trim(&cache, "b").await;
        assert_eq!(resident(&cache), ["a"], "b is evicted, a is in use");
        drop(in_use);
        load_and_trim(&cache, "c").await;
        assert_eq!(resident(&cache), ["c"]);
    }

    #[tokio::test]
    async fn preloaded_versions_are_kept_outside_the_budget() {
        let (_dir, registry, _) = registry_with(&["a", "b"]);
        let cache = ModelCache::new(registry, Some(0), Limits::default());
        cache
            .load(&name("a"), 1, Residency::Preloaded)
            .await
            .unwrap();
        load_and_trim(&cache, "b").await;
        assert_eq!(resident(&cache), ["a"]);
        assert!(cache.resident()[0].kept);
    }

    #[tokio::test]
    async fn concurrent_first_requests_share_one_load() {
        let (_dir, registry, _) = registry_with(&["a"]);
        let cache = Arc::new(ModelCache::new(registry, None, Limits::default()));
        let loads: Vec<_> = (0..8)
            .map(|_| {
                let cache = cache.clone();
                tokio::spawn(async move {
                    cache
                        .load(&name("a"), 1, Residency::OnDemand)
                        .await
                        .unwrap()
                })
            })
            .collect();
        let mut loaded = Vec::new();
        for load in loads {
            loaded.push(load.await.unwrap());
        }
        assert!(loaded.iter().all(|m| Arc::ptr_eq(m, &loaded[0])));
    }

    #[tokio::test]
    async fn a_failed_load_is_not_retried_during_the_backoff() {
        let (_dir, registry, _) = registry_with(&["a"]);
        let file = registry.model_file(&name("a"), 1).unwrap();
        let good = std::fs::read(&file).unwrap();
        std::fs::write(&file, b"damaged").unwrap();
        let cache = ModelCache::new(registry, None, Limits::default());
        let first = cache
            .load(&name("a"), 1, Residency::OnDemand)
            .await
            .unwrap_err();
        assert!(first.to_string().contains("no longer matches"), "{first}");
        std::fs::write(&file, good).unwrap();
        assert!(
            cache
                .load(&name("a"), 1, Residency::OnDemand)
                .await
                .is_err()
        );
        assert!(cache.recent_failure(&name("a"), 1).is_some());
    }
}
