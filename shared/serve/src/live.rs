//! Hot reload of one model's alias. The slot holds the number of the version serving requests;
//! the alias is re-read on the request path at most every `RELOAD_CHECK_MS`; a new version is
//! loaded, verified and warmed through the cache while the old one keeps serving, then the
//! number is swapped atomically and the old version dropped from the cache (freed when its last
//! request ends). One load per model at a time, so at most one extra version is resident during
//! a swap; a failed load is never swapped in, is kept for metadata, and is not retried for
//! [`RETRY_BACKOFF`](super::cache::RETRY_BACKOFF).
//!
//! What to do is decided by [`next_swap`], a pure function of what the slot serves, what the
//! alias says and whether that version failed lately; [`LiveModel`] reads those facts and
//! carries the decision out (TF Serving's split between `AspiredVersionPolicy` and its manager).

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

use tracing::{info, warn};

use super::cache::{ModelCache, Residency};
use super::loaded::{LoadError, LoadedModel};
use super::split::Split;
use modelpipe_core::model_name::{AliasName, ModelName};
use modelpipe_registry::rollout::Rollout;

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

/// What reading the alias found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AliasRead {
    Version(u64),
    /// The model has no such alias (never published).
    Missing,
    /// The read failed (the registry is unreachable), and why.
    Unreadable(String),
}

/// What a live slot does after its alias was read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SwapDecision {
    /// Keep serving what it serves (nothing, if it serves nothing yet).
    Keep(KeepReason),
    /// Load the version on this request and answer from it.
    LoadNow(u64),
    /// Load the version on a background task; this request is answered by the current one.
    LoadInBackground(u64),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeepReason {
    /// The alias names the version already serving.
    Current,
    NoAlias,
    AliasUnreadable,
    /// Loading the alias's version failed within the retry backoff: the old version serves.
    FailedRecently,
}

/// The swap policy: `serving` is the version answering requests (`None` before the first
/// load), `alias` what the alias read found, `failed_recently` whether loading that version
/// failed within the backoff.
pub fn next_swap(
    serving: Option<u64>,
    alias: &AliasRead,
    failed_recently: bool,
    policy: SwapPolicy,
) -> SwapDecision {
    let target = match *alias {
        AliasRead::Version(version) => version,
        AliasRead::Missing => return SwapDecision::Keep(KeepReason::NoAlias),
        AliasRead::Unreadable(_) => return SwapDecision::Keep(KeepReason::AliasUnreadable),
    };
    match serving {
        // Nothing serves yet: the request waits for the first load, whatever the policy.
        None => SwapDecision::LoadNow(target),
        Some(current) if current == target => SwapDecision::Keep(KeepReason::Current),
        Some(_) if failed_recently => SwapDecision::Keep(KeepReason::FailedRecently),
        Some(_) => match policy {
            SwapPolicy::Blocking => SwapDecision::LoadNow(target),
            SwapPolicy::Background => SwapDecision::LoadInBackground(target),
        },
    }
}

/// When a check scheduled for `scheduled` is due at `now`, the time of the next one.
fn due(now: Instant, scheduled: Instant, every: Duration) -> Option<Instant> {
    (now >= scheduled).then(|| now + every)
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
    /// A preloaded model's versions are kept in the cache, outside the budget.
    residency: Residency,
    /// The version serving requests; 0 until the first load (versions start at 1).
    version: AtomicU64,
    next_check: Mutex<Instant>,
    loading: Arc<tokio::sync::Mutex<()>>,
    failure: Mutex<Option<LoadFailure>>,
    /// The alias's running rollout, read with the alias.
    split: RwLock<Option<Split>>,
}

#[derive(Debug, thiserror::Error)]
pub enum LiveError {
    #[error("model '{0}' not found")]
    NotFound(ModelName),
    #[error("model '{model}' is not ready: {error}")]
    NotReady { model: ModelName, error: String },
}

impl LiveModel {
    pub fn new(model: ModelName, residency: Residency) -> Self {
        Self {
            model,
            alias: AliasName::live(),
            residency,
            version: AtomicU64::new(0),
            next_check: Mutex::new(Instant::now()),
            loading: Arc::new(tokio::sync::Mutex::new(())),
            failure: Mutex::new(None),
            split: RwLock::new(None),
        }
    }

    /// The rollout this slot splits requests by, if one routes traffic.
    pub fn split(&self) -> Option<Split> {
        self.split.read().expect("split lock").clone()
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
            .load(&self.model, version, self.residency)
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
        let (alias, rollout) = self.read_alias(cache).await;
        self.swap_if_moved(cache, current, &alias, policy).await;
        match policy {
            SwapPolicy::Blocking => self.follow_rollout(cache, &alias, rollout).await,
            SwapPolicy::Background => {
                let (this, cache) = (self.clone(), cache.clone());
                tokio::spawn(async move { this.follow_rollout(&cache, &alias, rollout).await });
            }
        }
    }

    /// Starts splitting by `rollout` once its candidate is loaded, or stops (dropping the
    /// candidate from the cache) when it no longer routes traffic or the alias moved under it.
    async fn follow_rollout(
        &self,
        cache: &ModelCache,
        alias: &AliasRead,
        rollout: Option<Rollout>,
    ) {
        let active =
            rollout.filter(|r| r.routes_traffic() && *alias == AliasRead::Version(r.stable));
        let previous = self.split();
        let Some(rollout) = active else {
            if let Some(previous) = previous {
                *self.split.write().expect("split lock") = None;
                let candidate = previous.rollout.candidate;
                // Promoted: the candidate is (or is about to be) the version serving.
                let promoted = *alias == AliasRead::Version(candidate);
                if !promoted && self.version() != Some(candidate) {
                    cache.remove(&self.model, candidate);
                }
                info!(model = %self.model, rollout = previous.rollout.id, "rollout no longer splits traffic");
            }
            return;
        };
        if previous
            .as_ref()
            .is_some_and(|p| p.rollout.generation == rollout.generation && p.candidate_ready)
        {
            return;
        }
        let candidate_ready = match cache
            .load(&self.model, rollout.candidate, self.residency)
            .await
        {
            Ok(_) => true,
            Err(e) => {
                warn!(model = %self.model, rollout = rollout.id, candidate = rollout.candidate, error = %e, "the rollout's candidate cannot be loaded; stable answers its share, counted as the candidate's errors");
                false
            }
        };
        info!(model = %self.model, rollout = rollout.id, step = rollout.step, weight = rollout.weight, candidate = rollout.candidate, "splitting traffic");
        *self.split.write().expect("split lock") = Some(Split {
            rollout: Arc::new(rollout),
            candidate_ready,
        });
    }

    async fn swap_if_moved(
        self: &Arc<Self>,
        cache: &Arc<ModelCache>,
        current: u64,
        alias: &AliasRead,
        policy: SwapPolicy,
    ) {
        let alias = alias.clone();
        let failed_recently = match alias {
            AliasRead::Version(target) => cache.recent_failure(&self.model, target).is_some(),
            _ => false,
        };
        let decision = next_swap(Some(current), &alias, failed_recently, policy);
        let (SwapDecision::LoadNow(target) | SwapDecision::LoadInBackground(target)) = decision
        else {
            return;
        };
        let Ok(guard) = self.loading.clone().try_lock_owned() else {
            return; // a load is already running
        };
        // A failed load is logged and kept for metadata by `swap_to`; the old version serves.
        if decision == SwapDecision::LoadNow(target) {
            let _ = self.swap_to(cache, target).await;
            drop(guard);
        } else {
            let (this, cache) = (self.clone(), cache.clone());
            tokio::spawn(async move {
                let _ = this.swap_to(&cache, target).await;
                drop(guard);
            });
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
        let (alias, rollout) = self.read_alias(cache).await;
        let version = match (next_swap(None, &alias, false, policy), alias.clone()) {
            (SwapDecision::LoadNow(version) | SwapDecision::LoadInBackground(version), _) => {
                version
            }
            (_, AliasRead::Unreadable(error)) => return Err(self.not_ready(error)),
            (SwapDecision::Keep(_), _) => return Err(LiveError::NotFound(self.model.clone())),
        };
        if let Some(every) = every {
            *self.next_check.lock().expect("check lock") = Instant::now() + every;
        }
        let loaded = self
            .swap_to(cache, version)
            .await
            .map_err(|e| self.not_ready(e))?;
        self.follow_rollout(cache, &alias, rollout).await;
        Ok(loaded)
    }

    /// The alias, read off the request's thread: on an S3 registry it is a (conditional) round
    /// trip. A failed read is logged here.
    /// The alias's rollout is read with it; one that cannot be read splits nothing.
    async fn read_alias(&self, cache: &ModelCache) -> (AliasRead, Option<Rollout>) {
        let (registry, model, alias) = (
            cache.registry().clone(),
            self.model.clone(),
            self.alias.clone(),
        );
        let read = tokio::task::spawn_blocking(move || {
            let record = registry.alias(&model, &alias)?;
            let rollout = registry.rollout(&model, &alias);
            Ok::<_, modelpipe_registry::RegistryError>((record, rollout))
        })
        .await
        .map_err(|e| e.to_string())
        .and_then(|read| read.map_err(|e| e.to_string()));
        let (record, rollout) = match read {
            Ok(read) => read,
            Err(error) => {
                warn!(model = %self.model, alias = %self.alias, %error, "cannot read the alias; serving the loaded version, if any");
                return (AliasRead::Unreadable(error), None);
            }
        };
        let rollout = rollout.unwrap_or_else(|error| {
            warn!(model = %self.model, alias = %self.alias, %error, "cannot read the alias's rollout; stable answers every request");
            None
        });
        match record {
            Some(record) => (AliasRead::Version(record.version), rollout),
            None => (AliasRead::Missing, None),
        }
    }

    /// Claims the next alias check if one is due; never, when hot reload is off.
    fn check_due(&self, every: Option<Duration>) -> bool {
        let Some(every) = every else {
            return false;
        };
        let mut next = self.next_check.lock().expect("check lock");
        match due(Instant::now(), *next, every) {
            Some(then) => {
                *next = then;
                true
            }
            None => false,
        }
    }

    /// Loads `version` and makes it the one serving; the previous one leaves the cache. Call
    /// with `loading` held.
    async fn swap_to(
        &self,
        cache: &ModelCache,
        version: u64,
    ) -> Result<Arc<LoadedModel>, LoadError> {
        match cache.load(&self.model, version, self.residency).await {
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

#[cfg(test)]
mod tests {
    use super::*;
    use modelpipe_registry::Registry;
    use modelpipe_registry::publish::{PublisherRequest, apply};
    use modelpipe_testkit::commit::{Compile, commit_bytes, commit_checked};
    use modelpipe_testkit::onnx_build::LinearSoftmax;

    use AliasRead::{Missing, Unreadable, Version};
    use SwapPolicy::{Background, Blocking};

    #[test]
    fn a_moved_alias_is_loaded_by_the_request_or_in_the_background_as_the_policy_says() {
        assert_eq!(
            next_swap(Some(1), &Version(2), false, Blocking),
            SwapDecision::LoadNow(2)
        );
        assert_eq!(
            next_swap(Some(1), &Version(2), false, Background),
            SwapDecision::LoadInBackground(2)
        );
        // A rollback is a move like any other.
        assert_eq!(
            next_swap(Some(3), &Version(1), false, Blocking),
            SwapDecision::LoadNow(1)
        );
    }

    #[test]
    fn the_first_load_is_always_the_requests_own() {
        for policy in [Blocking, Background] {
            assert_eq!(
                next_swap(None, &Version(4), false, policy),
                SwapDecision::LoadNow(4)
            );
            assert_eq!(
                next_swap(None, &Missing, false, policy),
                SwapDecision::Keep(KeepReason::NoAlias)
            );
        }
    }

    #[test]
    fn the_serving_version_stays_when_nothing_moved_or_the_move_cannot_be_served() {
        for policy in [Blocking, Background] {
            let keep =
                |serving, alias: &AliasRead, failed| next_swap(serving, alias, failed, policy);
            assert_eq!(
                keep(Some(2), &Version(2), false),
                SwapDecision::Keep(KeepReason::Current)
            );
            assert_eq!(
                keep(Some(2), &Version(3), true),
                SwapDecision::Keep(KeepReason::FailedRecently)
            );
            assert_eq!(
                keep(Some(2), &Missing, false),
                SwapDecision::Keep(KeepReason::NoAlias)
            );
            assert_eq!(
                keep(Some(2), &Unreadable("timeout".into()), false),
                SwapDecision::Keep(KeepReason::AliasUnreadable)
            );
        }
    }

    #[test]
    fn a_check_is_due_once_per_period() {
        let start = Instant::now();
        let every = Duration::from_millis(100);
        assert_eq!(due(start, start, every), Some(start + every));
        assert_eq!(
            due(start + Duration::from_millis(99), start + every, every),
            None
        );
        let late = start + Duration::from_millis(250);
        assert_eq!(due(late, start + every, every), Some(late + every));
    }

    fn publish(registry: &Registry, model: &ModelName, version: u64) {
        let request = PublisherRequest::Publish {
            model: model.clone(),
            version,
            alias: AliasName::live(),
            reason: None,
        };
        apply(registry, &request, None).unwrap();
    }

    /// What Lambda runs: the request that notices the move answers from the new version; a
    /// version that fails to load is never swapped in and is shown as the failure.
    #[tokio::test]
    async fn blocking_swaps_on_the_request_that_notices_and_never_to_a_broken_version() {
        let dir = tempfile::tempdir().unwrap();
        let registry = Registry::open(dir.path()).unwrap();
        let model: ModelName = "iris".parse().unwrap();
        let [v1, v2] = [1, 2].map(|seed| {
            let bytes = LinearSoftmax::iris(seed).to_bytes();
            commit_checked(&registry, &model, &bytes, None, Compile::No)
        });
        let broken = commit_bytes(&registry, &model, b"not an onnx model");
        let cache = Arc::new(ModelCache::new(
            registry.clone(),
            None,
            modelpipe_engine::Limits::default(),
        ));
        let live = Arc::new(LiveModel::new(model.clone(), Residency::OnDemand));
        let every = Some(Duration::ZERO);

        let serving = async || live.get(&cache, every, Blocking).await.unwrap();

        publish(&registry, &model, v1);
        assert_eq!(serving().await.manifest.version, v1);
        publish(&registry, &model, v2);
        assert_eq!(serving().await.manifest.version, v2);
        assert!(
            cache.get(&model, v1).is_none(),
            "the old version left the cache"
        );

        publish(&registry, &model, broken);
        assert_eq!(serving().await.manifest.version, v2);
        assert_eq!(live.failure().map(|f| f.version), Some(broken));
        assert_eq!(live.version(), Some(v2));
    }
}
