//! Hot reload of one model's alias. The slot holds the number of the version serving requests;
//! the alias is re-read on the request path at most every `RELOAD_CHECK_MS`; a new version is
//! loaded, verified and warmed through the cache while the old one keeps serving, then the
//! number is swapped atomically and the old version dropped from the cache (freed when its last
//! request ends). One load per model at a time, so at most one extra version is resident during
//! a swap; a failed load is never swapped in, is kept for metadata, and is not retried for
//! [`RETRY_BACKOFF`](super::cache::RETRY_BACKOFF).
//!
//! What to do is decided by [`next_swap`], a pure function of what the slot serves, what the
//! alias says, whether that version failed lately and whether it is already in memory;
//! [`LiveModel`] reads those facts and carries the decision out (TF Serving's split between
//! `AspiredVersionPolicy` and its manager). Under [`SwapPolicy::AfterAnswer`] (Lambda) no
//! caller waits for a load: the move is left [pending](LiveModel::adopt) until the runtime has
//! posted the answer, and is adopted then, not before this environment's offset in the fleet's
//! spread.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant, SystemTime};

use tracing::{info, warn};

use super::cache::{ModelCache, Residency};
use super::loaded::{LoadError, LoadedModel};
use super::split::Split;
use modelpipe_core::model_name::{AliasName, ModelName};
use modelpipe_registry::rollout::plan::BASIS;
use modelpipe_registry::rollout::{Rollout, split};

/// Who pays for loading a new version.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SwapPolicy {
    /// Lambda: the request that notices a move is answered by the version in memory; the new
    /// one is loaded after that answer has been posted and before the environment asks for
    /// its next event ([`LiveModel::adopt`], driven by the inference function's internal
    /// extension), so the next invocation is served by it. `offset` is this environment's
    /// place in `ADOPT_SPREAD_MS`: a move is adopted no earlier than `offset` after it was
    /// made, so a fleet reads the registry over the spread instead of all at once.
    AfterAnswer { offset: Duration },
    /// A long-running server: a background task loads it at once while requests keep being
    /// served by the old version.
    Background,
}

impl SwapPolicy {
    /// [`Self::AfterAnswer`] for the environment named `environment` (in Lambda its log
    /// stream, which no other environment shares): a point of `[0, spread]` derived from the
    /// name by the rollout split's hash, so a fleet's offsets are spread evenly over it.
    pub fn after_answer(spread: Duration, environment: &str) -> Self {
        let bucket = split::bucket("adopt-spread", environment.as_bytes());
        Self::AfterAnswer {
            offset: spread.mul_f64(f64::from(bucket) / f64::from(BASIS - 1)),
        }
    }
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
    /// Swap to the version on this request and answer from it: nothing serves yet, or the
    /// version is already in memory (a rollout's promoted candidate), so nothing is read.
    LoadNow(u64),
    /// Load the version on a background task; this request is answered by the current one.
    LoadInBackground(u64),
    /// Answer this request with the current version; load the new one after the answer.
    AdoptAfterAnswer(u64),
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
/// failed within the backoff, `resident` whether it is in memory already.
pub fn next_swap(
    serving: Option<u64>,
    alias: &AliasRead,
    failed_recently: bool,
    resident: bool,
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
        Some(_) if resident => SwapDecision::LoadNow(target),
        Some(_) => match policy {
            SwapPolicy::AfterAnswer { .. } => SwapDecision::AdoptAfterAnswer(target),
            SwapPolicy::Background => SwapDecision::LoadInBackground(target),
        },
    }
}

/// In which order an adoption holds the two versions: TF Serving's availability-preserving and
/// resource-preserving policies.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SwapOrder {
    /// Load the new version, then free the old: both resident for a moment.
    LoadThenFree,
    /// Free the old version, then load the new (and load the old again if the new fails). Under
    /// [`SwapPolicy::AfterAnswer`] no request runs while an environment adopts, so this costs no
    /// caller anything; it is chosen when both would not fit.
    FreeThenLoad,
}

/// A load's peak over the model file's size: a 1 GB model peaked at 2.1 GB loading in ONNX
/// Runtime here (its protobuf and its tensors at once), BENCHMARKS.md.
const LOAD_PEAK_FACTOR: u64 = 2;

/// The swap order for an adoption: free first when the version in memory (`resident` bytes) and
/// the peak of loading a `incoming`-byte file would pass 80 % of the function's `memory`.
pub fn swap_order(resident: u64, incoming: u64, memory: Option<u64>) -> SwapOrder {
    match memory {
        Some(memory) if resident + LOAD_PEAK_FACTOR * incoming > memory / 10 * 8 => {
            SwapOrder::FreeThenLoad
        }
        _ => SwapOrder::LoadThenFree,
    }
}

/// How long after now a move made at `moved_at` (the publisher's clock) is due here, for an
/// environment at `offset` in the spread: never more than `offset`, whatever the clocks say.
fn adoption_delay(now: SystemTime, moved_at: Option<SystemTime>, offset: Duration) -> Duration {
    match moved_at {
        Some(moved_at) => (moved_at + offset)
            .duration_since(now)
            .unwrap_or_default()
            .min(offset),
        None => offset,
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

/// Work an [`SwapPolicy::AfterAnswer`] slot left for after the answer.
#[derive(Debug, Clone, Default)]
struct Pending {
    /// The alias's version, and when this environment may adopt it.
    version: Option<(u64, Instant)>,
    /// A rollout whose candidate is not in memory yet: its split starts here once it is.
    rollout: Option<(Rollout, Instant)>,
}

/// What [`LiveModel::adopt`] did after an answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Adopted {
    /// Now serving `version`.
    Version { model: ModelName, version: u64 },
    /// Loading `version` failed; the previous one keeps serving.
    Failed { model: ModelName, version: u64 },
    /// The rollout's candidate is in memory and its split applies here.
    Candidate { model: ModelName, version: u64 },
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
    pending: Mutex<Pending>,
}

#[derive(Debug, thiserror::Error)]
pub enum LiveError {
    #[error("model '{0}' not found")]
    NotFound(ModelName),
    #[error("model '{model}' is not ready: {error}")]
    NotReady { model: ModelName, error: String },
}

/// What one alias read found: the version and when it was moved there, and the rollout.
struct Read {
    alias: AliasRead,
    moved_at: Option<SystemTime>,
    rollout: Option<Rollout>,
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
            pending: Mutex::default(),
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

    /// The version this slot will adopt after an answer, if a move is pending.
    pub fn pending_version(&self) -> Option<u64> {
        self.pending
            .lock()
            .expect("pending lock")
            .version
            .map(|(v, _)| v)
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
        let read = self.read_alias(cache).await;
        self.swap_if_moved(cache, current, &read, policy).await;
        match policy {
            SwapPolicy::AfterAnswer { offset } => {
                let rollout = self.rollout_to_follow(&read);
                let candidate_resident = rollout
                    .as_ref()
                    .is_some_and(|r| cache.is_resident(&self.model, r.candidate));
                if rollout.is_some() && !candidate_resident {
                    // The split starts here once the candidate is in memory, after an answer.
                    let delay = adoption_delay(SystemTime::now(), started_at(&rollout), offset);
                    let mut pending = self.pending.lock().expect("pending lock");
                    // Noticed again: the newer generation, adopted when it was first due.
                    let due = match &pending.rollout {
                        Some((r, due)) if rollout.as_ref().is_some_and(|n| n.id == r.id) => *due,
                        _ => Instant::now() + delay,
                    };
                    pending.rollout = rollout.map(|r| (r, due));
                } else {
                    self.pending.lock().expect("pending lock").rollout = None;
                    self.follow_rollout(cache, &read.alias, rollout).await;
                }
            }
            SwapPolicy::Background => {
                let (this, cache) = (self.clone(), cache.clone());
                let rollout = self.rollout_to_follow(&read);
                tokio::spawn(
                    async move { this.follow_rollout(&cache, &read.alias, rollout).await },
                );
            }
        }
    }

    /// The alias's rollout if it routes traffic away from the version the alias names now.
    fn rollout_to_follow(&self, read: &Read) -> Option<Rollout> {
        read.rollout
            .clone()
            .filter(|r| r.routes_traffic() && read.alias == AliasRead::Version(r.stable))
    }

    /// Starts splitting by `rollout` (loading its candidate if it is not in memory), or stops
    /// (dropping the candidate from the cache) when there is none to follow.
    async fn follow_rollout(
        &self,
        cache: &ModelCache,
        alias: &AliasRead,
        rollout: Option<Rollout>,
    ) {
        let previous = self.split();
        let Some(rollout) = rollout else {
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
        read: &Read,
        policy: SwapPolicy,
    ) {
        let (failed_recently, resident) = match read.alias {
            AliasRead::Version(target) => (
                cache.recent_failure(&self.model, target).is_some(),
                cache.is_resident(&self.model, target),
            ),
            _ => (false, false),
        };
        let decision = next_swap(
            Some(current),
            &read.alias,
            failed_recently,
            resident,
            policy,
        );
        if let SwapDecision::AdoptAfterAnswer(target) = decision {
            let SwapPolicy::AfterAnswer { offset } = policy else {
                unreachable!("only AfterAnswer adopts after the answer")
            };
            let delay = adoption_delay(SystemTime::now(), read.moved_at, offset);
            let mut pending = self.pending.lock().expect("pending lock");
            // A move noticed again keeps the time it was first given.
            if pending.version.map(|(v, _)| v) != Some(target) {
                pending.version = Some((target, Instant::now() + delay));
            }
            return;
        }
        // Anything else settles what an earlier move left pending.
        self.pending.lock().expect("pending lock").version = None;
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

    /// Does what earlier requests left for after their answer and is due by now: loads and
    /// swaps to the alias's new version (in the [`swap_order`] the function's `memory` allows),
    /// loads a rollout's candidate and starts its split. What is not due yet stays pending for
    /// a later answer.
    pub async fn adopt(&self, cache: &ModelCache, memory: Option<u64>) -> Vec<Adopted> {
        let now = Instant::now();
        let (version, rollout) = {
            let mut pending = self.pending.lock().expect("pending lock");
            let version = pending.version.filter(|&(_, at)| at <= now).map(|(v, _)| v);
            if version.is_some() {
                pending.version = None;
            }
            let rollout = pending
                .rollout
                .take_if(|(_, at)| *at <= now)
                .map(|(r, _)| r);
            (version, rollout)
        };
        let mut adopted = Vec::new();
        if let Some(version) = version {
            let _guard = self.loading.lock().await;
            let model = self.model.clone();
            let freed = self.free_first(cache, version, memory).await;
            adopted.push(match self.swap_to(cache, version).await {
                Ok(_) => Adopted::Version { model, version },
                Err(_) => {
                    if let Some(old) = freed {
                        // Still after the answer: the next caller finds the old version loaded.
                        let _ = cache.load(&self.model, old, self.residency).await;
                    }
                    Adopted::Failed { model, version }
                }
            });
        }
        if let Some(rollout) = rollout {
            let candidate = rollout.candidate;
            let alias = AliasRead::Version(rollout.stable);
            self.follow_rollout(cache, &alias, Some(rollout)).await;
            if self.split().is_some_and(|s| s.candidate_ready) {
                adopted.push(Adopted::Candidate {
                    model: self.model.clone(),
                    version: candidate,
                });
            }
        }
        adopted
    }

    /// Frees the version serving before `version` is loaded when [`swap_order`] says both would
    /// not fit in `memory`; returns the version freed.
    async fn free_first(
        &self,
        cache: &ModelCache,
        version: u64,
        memory: Option<u64>,
    ) -> Option<u64> {
        // Without a known memory size there is nothing to weigh (and no manifest to read).
        memory?;
        let old = self.version()?;
        let resident = cache.get(&self.model, old)?.memory_cost();
        let (registry, model) = (cache.registry().clone(), self.model.clone());
        let incoming = tokio::task::spawn_blocking(move || registry.manifest(&model, version))
            .await
            .ok()?
            .ok()?
            .size;
        if swap_order(resident, incoming, memory) != SwapOrder::FreeThenLoad {
            return None;
        }
        info!(model = %self.model, from = old, to = version, resident, incoming, "freeing the old version before loading the new: both would not fit");
        cache.remove(&self.model, old);
        Some(old)
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
        let read = self.read_alias(cache).await;
        let version = match (
            next_swap(None, &read.alias, false, false, policy),
            &read.alias,
        ) {
            (SwapDecision::Keep(_), AliasRead::Unreadable(error)) => {
                return Err(self.not_ready(error));
            }
            (SwapDecision::Keep(_), _) => return Err(LiveError::NotFound(self.model.clone())),
            (
                SwapDecision::LoadNow(version)
                | SwapDecision::LoadInBackground(version)
                | SwapDecision::AdoptAfterAnswer(version),
                _,
            ) => version,
        };
        if let Some(every) = every {
            *self.next_check.lock().expect("check lock") = Instant::now() + every;
        }
        let loaded = self
            .swap_to(cache, version)
            .await
            .map_err(|e| self.not_ready(e))?;
        // Nothing was resident: the candidate loads with the first version, on this request.
        let rollout = self.rollout_to_follow(&read);
        self.follow_rollout(cache, &read.alias, rollout).await;
        Ok(loaded)
    }

    /// The alias, read off the request's thread: on an S3 registry it is a (conditional) round
    /// trip. A failed read is logged here.
    /// The alias's rollout is read with it; one that cannot be read splits nothing.
    async fn read_alias(&self, cache: &ModelCache) -> Read {
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
                return Read {
                    alias: AliasRead::Unreadable(error),
                    moved_at: None,
                    rollout: None,
                };
            }
        };
        let rollout = rollout.unwrap_or_else(|error| {
            warn!(model = %self.model, alias = %self.alias, %error, "cannot read the alias's rollout; stable answers every request");
            None
        });
        match record {
            Some(record) => Read {
                alias: AliasRead::Version(record.version),
                moved_at: Some(record.updated_at.system_time()),
                rollout,
            },
            None => Read {
                alias: AliasRead::Missing,
                moved_at: None,
                rollout: None,
            },
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

/// When a rollout started routing traffic, on the publisher's clock.
fn started_at(rollout: &Option<Rollout>) -> Option<SystemTime> {
    let rollout = rollout.as_ref()?;
    Some(
        rollout
            .step_started_at
            .unwrap_or(rollout.started_at)
            .system_time(),
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use modelpipe_registry::Registry;
    use modelpipe_registry::publish::{PublisherRequest, apply};
    use modelpipe_testkit::commit::{Compile, commit_bytes, commit_checked};
    use modelpipe_testkit::onnx_build::LinearSoftmax;

    use AliasRead::{Missing, Unreadable, Version};
    use SwapPolicy::Background;

    const AFTER: SwapPolicy = SwapPolicy::AfterAnswer {
        offset: Duration::ZERO,
    };

    #[test]
    fn a_moved_alias_is_loaded_after_the_answer_or_in_the_background_as_the_policy_says() {
        assert_eq!(
            next_swap(Some(1), &Version(2), false, false, AFTER),
            SwapDecision::AdoptAfterAnswer(2)
        );
        assert_eq!(
            next_swap(Some(1), &Version(2), false, false, Background),
            SwapDecision::LoadInBackground(2)
        );
        // A rollback is a move like any other.
        assert_eq!(
            next_swap(Some(3), &Version(1), false, false, AFTER),
            SwapDecision::AdoptAfterAnswer(1)
        );
    }

    #[test]
    fn a_version_already_in_memory_is_swapped_to_on_the_request_that_notices() {
        // A promoted rollout candidate: nothing to read, so no reason to wait.
        for policy in [AFTER, Background] {
            assert_eq!(
                next_swap(Some(1), &Version(2), false, true, policy),
                SwapDecision::LoadNow(2)
            );
        }
    }

    #[test]
    fn the_first_load_is_always_the_requests_own() {
        for policy in [AFTER, Background] {
            assert_eq!(
                next_swap(None, &Version(4), false, false, policy),
                SwapDecision::LoadNow(4)
            );
            assert_eq!(
                next_swap(None, &Missing, false, false, policy),
                SwapDecision::Keep(KeepReason::NoAlias)
            );
        }
    }

    #[test]
    fn the_serving_version_stays_when_nothing_moved_or_the_move_cannot_be_served() {
        for policy in [AFTER, Background] {
            for resident in [false, true] {
                let keep = |serving, alias: &AliasRead, failed| {
                    next_swap(serving, alias, failed, resident, policy)
                };
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

    #[test]
    fn an_environment_adopts_a_move_at_its_offset_after_the_move_and_never_later_than_that() {
        let moved = SystemTime::UNIX_EPOCH + Duration::from_secs(1_000);
        let offset = Duration::from_secs(4);
        let at = |secs: u64| SystemTime::UNIX_EPOCH + Duration::from_secs(secs);
        assert_eq!(
            adoption_delay(at(1_001), Some(moved), offset),
            Duration::from_secs(3)
        );
        assert_eq!(
            adoption_delay(at(1_010), Some(moved), offset),
            Duration::ZERO
        );
        // A move stamped in this environment's future (clock skew) waits at most the offset.
        assert_eq!(adoption_delay(at(900), Some(moved), offset), offset);
        assert_eq!(adoption_delay(at(1_001), None, offset), offset);
    }

    #[test]
    fn offsets_are_spread_over_the_window_by_environment() {
        let spread = Duration::from_secs(10);
        let offsets: Vec<Duration> = (0..500)
            .map(|n| {
                match SwapPolicy::after_answer(spread, &format!("2026/12/04/[$LATEST]{n:032x}")) {
                    SwapPolicy::AfterAnswer { offset } => offset,
                    Background => unreachable!(),
                }
            })
            .collect();
        assert!(offsets.iter().all(|&o| o <= spread));
        // Each tenth of the window gets some of the 500 environments, none more than twice its share.
        for tenth in 0..10 {
            let lo = spread * tenth / 10;
            let n = offsets
                .iter()
                .filter(|&&o| o >= lo && o < lo + spread / 10)
                .count();
            assert!((10..=100).contains(&n), "tenth {tenth}: {n} environments");
        }
        assert_eq!(
            SwapPolicy::after_answer(spread, "same"),
            SwapPolicy::after_answer(spread, "same")
        );
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

    /// What Lambda runs: the request that notices the move is answered by the version in
    /// memory; the new one is adopted after the answer; a version that fails to load is never
    /// swapped in and is shown as the failure.
    #[tokio::test]
    async fn after_answer_serves_the_resident_version_and_adopts_the_move_afterwards() {
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

        let serving = async || live.get(&cache, every, AFTER).await.unwrap();

        publish(&registry, &model, v1);
        assert_eq!(
            serving().await.manifest.version,
            v1,
            "the first load is the caller's"
        );
        assert!(live.adopt(&cache, None).await.is_empty(), "nothing pending");

        publish(&registry, &model, v2);
        assert_eq!(serving().await.manifest.version, v1, "the noticing request");
        assert!(
            !cache.is_resident(&model, v2),
            "nothing loaded on the request"
        );
        assert_eq!(live.pending_version(), Some(v2));
        assert_eq!(
            live.adopt(&cache, None).await,
            vec![Adopted::Version {
                model: model.clone(),
                version: v2
            }]
        );
        assert_eq!(serving().await.manifest.version, v2);
        assert!(
            cache.get(&model, v1).is_none(),
            "the old version left the cache"
        );

        publish(&registry, &model, broken);
        assert_eq!(serving().await.manifest.version, v2);
        assert_eq!(
            live.adopt(&cache, None).await,
            vec![Adopted::Failed {
                model: model.clone(),
                version: broken
            }]
        );
        assert_eq!(serving().await.manifest.version, v2);
        assert_eq!(live.failure().map(|f| f.version), Some(broken));
        assert_eq!(live.version(), Some(v2));
    }

    #[test]
    fn the_old_version_is_freed_first_only_when_both_would_not_fit() {
        const MB: u64 = 1 << 20;
        // 2 GB function: 100 MB resident, a 100 MB model's load peaks at ~200 MB.
        assert_eq!(
            swap_order(100 * MB, 100 * MB, Some(2048 * MB)),
            SwapOrder::LoadThenFree
        );
        // A 1 GB model: 1 GB resident + a 2 GB load peak pass 80 % of 2 GB.
        assert_eq!(
            swap_order(1024 * MB, 1024 * MB, Some(2048 * MB)),
            SwapOrder::FreeThenLoad
        );
        assert_eq!(
            swap_order(1024 * MB, 1024 * MB, Some(10240 * MB)),
            SwapOrder::LoadThenFree
        );
        // Outside Lambda nothing says how much memory there is: keep serving while loading.
        assert_eq!(
            swap_order(u64::MAX / 4, u64::MAX / 4, None),
            SwapOrder::LoadThenFree
        );
    }

    /// When both versions would not fit, the old one is freed before the new one loads (no
    /// request runs while an environment adopts); if the new one fails, the old one is loaded
    /// again, still after the answer, and keeps serving. With room for both it is never freed.
    #[tokio::test]
    async fn freeing_first_brings_the_old_version_back_when_the_new_one_fails() {
        let dir = tempfile::tempdir().unwrap();
        let registry = Registry::open(dir.path()).unwrap();
        let model: ModelName = "iris".parse().unwrap();
        let [v1, v2] = [1, 2].map(|seed| {
            let bytes = LinearSoftmax::iris(seed).to_bytes();
            commit_checked(&registry, &model, &bytes, None, Compile::No)
        });
        let [broken, broken_again] = [b"not an onnx model" as &[u8], b"nor this"]
            .map(|bytes| commit_bytes(&registry, &model, bytes));
        let cache = Arc::new(ModelCache::new(
            registry.clone(),
            None,
            modelpipe_engine::Limits::default(),
        ));
        let live = Arc::new(LiveModel::new(model.clone(), Residency::OnDemand));
        let tiny = Some(1); // no two versions fit
        let serving = async || live.get(&cache, Some(Duration::ZERO), AFTER).await.unwrap();
        let failed = |version| {
            vec![Adopted::Failed {
                model: model.clone(),
                version,
            }]
        };
        publish(&registry, &model, v1);
        assert_eq!(serving().await.manifest.version, v1);
        publish(&registry, &model, v2);
        serving().await;
        let adopted = live.adopt(&cache, tiny).await;
        assert_eq!(
            adopted,
            vec![Adopted::Version {
                model: model.clone(),
                version: v2
            }]
        );
        assert!(!cache.is_resident(&model, v1));

        // Room for both: the failed adoption leaves v2's load as it was.
        publish(&registry, &model, broken);
        let held = serving().await;
        assert_eq!(live.adopt(&cache, None).await, failed(broken));
        assert!(Arc::ptr_eq(&held, &cache.get(&model, v2).unwrap()));

        // No room: v2 is freed first, then loaded again once the new version fails.
        publish(&registry, &model, broken_again);
        let held = serving().await;
        assert_eq!(live.adopt(&cache, tiny).await, failed(broken_again));
        assert_eq!(live.version(), Some(v2));
        let reloaded = cache
            .get(&model, v2)
            .expect("loaded again after the failure");
        assert!(!Arc::ptr_eq(&held, &reloaded), "freed, then loaded again");
        assert_eq!(serving().await.manifest.version, v2);
    }

    #[tokio::test]
    async fn a_move_is_not_adopted_before_the_environments_offset() {
        let dir = tempfile::tempdir().unwrap();
        let registry = Registry::open(dir.path()).unwrap();
        let model: ModelName = "iris".parse().unwrap();
        let [v1, v2] = [1, 2].map(|seed| {
            let bytes = LinearSoftmax::iris(seed).to_bytes();
            commit_checked(&registry, &model, &bytes, None, Compile::No)
        });
        let cache = Arc::new(ModelCache::new(
            registry.clone(),
            None,
            modelpipe_engine::Limits::default(),
        ));
        let live = Arc::new(LiveModel::new(model.clone(), Residency::OnDemand));
        let policy = SwapPolicy::AfterAnswer {
            offset: Duration::from_secs(3600),
        };
        publish(&registry, &model, v1);
        live.get(&cache, Some(Duration::ZERO), policy)
            .await
            .unwrap();
        publish(&registry, &model, v2);
        let answer = live
            .get(&cache, Some(Duration::ZERO), policy)
            .await
            .unwrap();
        assert_eq!(answer.manifest.version, v1);
        assert!(
            live.adopt(&cache, None).await.is_empty(),
            "not due for an hour"
        );
        assert_eq!(live.pending_version(), Some(v2), "still pending");
        assert_eq!(live.version(), Some(v1));
    }
}
