//! The inference side: models from the registry served over the Open Inference Protocol v2.
//! [`cache`] holds the versions in memory, [`live`] follows each model's alias, [`capture`]
//! samples live requests and profiles them for drift after the answer, [`Inference`] ties them
//! to the configuration, and [`router`] is the one HTTP router, served by lambda_http in Lambda
//! and by a plain TCP listener locally.

pub mod cache;
pub mod capture;
pub mod live;
pub mod loaded;
pub mod metrics;
pub mod protocol;
mod router;
pub mod shadow;
pub mod split;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tract_onnx::prelude::Tensor;

pub use self::cache::{ModelCache, Residency, Resident};
use self::capture::{Capture, CaptureSink};
pub use self::live::{Adopted, LiveError, LiveModel, LoadFailure, SwapPolicy};
pub use self::loaded::{LoadError, LoadedModel};
pub use self::router::router;
use self::shadow::{ShadowPermit, ShadowSlot};
use self::split::{EvidenceRecorder, Route};
use modelpipe_config::Config;
use modelpipe_core::model_name::ModelName;
use modelpipe_registry::Registry;
use modelpipe_registry::rollout::split::Arm;

pub struct Inference {
    cache: Arc<ModelCache>,
    /// How often a request may look at the alias; `None`: never (a registry baked into the
    /// image cannot change).
    reload_check: Option<Duration>,
    policy: SwapPolicy,
    max_request_bytes: usize,
    preload: Vec<ModelName>,
    live: Mutex<HashMap<ModelName, Arc<LiveModel>>>,
    /// What each arm of a running rollout did here, for the publisher's gates.
    evidence: Arc<EvidenceRecorder>,
    /// The one shadow run this instance may have going.
    shadow_slot: Arc<ShadowSlot>,
    /// The function's memory, which decides the order of an adoption's load and free.
    memory: Option<u64>,
    /// Sampled requests and this environment's drift profiles, written after answers.
    capture: Capture,
}

/// A shadow run about to start: the candidate, and the slot it holds until it ends.
pub struct Shadow {
    candidate: Arc<LoadedModel>,
    _permit: ShadowPermit,
}

/// What a model's live slot holds now.
#[derive(Debug, Clone, Default)]
pub struct LiveStatus {
    /// The version serving requests, if it is in memory.
    pub loaded: Option<u64>,
    /// The version it adopts after a coming answer (a move noticed, not yet loaded).
    pub pending: Option<u64>,
    pub failure: Option<LoadFailure>,
}

impl Inference {
    pub fn new(registry: Registry, config: &Config, policy: SwapPolicy) -> Self {
        let environment = environment_name();
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
            evidence: Arc::new(EvidenceRecorder::new(
                config.evidence_write,
                environment.clone(),
            )),
            shadow_slot: Arc::default(),
            memory: config.function_memory_bytes,
            capture: Capture::new(config.monitoring.clone(), environment),
        }
    }

    /// Where captured records are written (`CAPTURE_BUCKET`'s S3 client in Lambda and dev).
    pub fn with_capture_sink(mut self, sink: Arc<dyn CaptureSink>) -> Self {
        self.capture = self.capture.with_sink(sink);
        self
    }

    pub fn capture(&self) -> &Capture {
        &self.capture
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
            Some(every) => {
                let adopt = match self.policy {
                    SwapPolicy::AfterAnswer { offset } => serde_json::json!({
                        "when": "after_answer",
                        "offset_ms": offset.as_millis() as u64,
                    }),
                    SwapPolicy::Background => serde_json::json!({ "when": "background" }),
                };
                serde_json::json!({
                    "enabled": true,
                    "check_ms": every.as_millis() as u64,
                    "adopt": adopt,
                })
            }
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

    /// The version to answer a request to the live alias with: stable, or the candidate of a
    /// running rollout for the callers its split sends there. `key` gives the caller's routing
    /// key for the rollout's sticky key. A candidate that cannot be loaded leaves the request
    /// to stable and counts as the candidate's error.
    pub async fn route(
        &self,
        model: &ModelName,
        key: impl FnOnce(&str) -> Vec<u8>,
    ) -> Result<(Arc<LoadedModel>, Option<Route>), LiveError> {
        let stable = self.live(model).await?;
        let Some(split) = self.live_model(model).split() else {
            return Ok((stable, None));
        };
        if split.rollout.stable != stable.version() {
            return Ok((stable, None));
        }
        let route = split.route(&key(&split.rollout.sticky_key));
        if route.arm == Arm::Stable {
            return Ok((stable, Some(route)));
        }
        let candidate = match self.cache.get(model, split.rollout.candidate) {
            Some(loaded) => Some(loaded),
            None if split.candidate_ready => self
                .cache
                .load(model, split.rollout.candidate, Residency::OnDemand)
                .await
                .ok(),
            None => None,
        };
        match candidate {
            Some(candidate) => Ok((candidate, Some(route))),
            None => {
                self.record(&route, Duration::ZERO, true);
                Ok((stable, None))
            }
        }
    }

    /// Records what a routed request's model run did, and writes this instance's evidence if a
    /// write is due.
    pub fn record(&self, route: &Route, run: Duration, error: bool) {
        self.evidence.record(route, run, error);
        self.evidence.flush_if_due(self.registry());
    }

    /// The shadow run a shadowed request's answer gets, if the slot is free (else the request
    /// is counted as skipped) and the candidate is in memory (else the run counts as failed).
    pub fn shadow(&self, route: &Route) -> Option<Shadow> {
        if !route.shadow {
            return None;
        }
        let rollout = &route.split.rollout;
        let Some(permit) = self.shadow_slot.try_acquire() else {
            self.evidence.record_shadow_skipped(route);
            metrics::shadow_skipped(&rollout.model, &rollout.alias, rollout.candidate);
            return None;
        };
        match self.cache.get(&rollout.model, rollout.candidate) {
            Some(candidate) => Some(Shadow {
                candidate,
                _permit: permit,
            }),
            None => {
                self.evidence.record_shadow(route, Duration::ZERO, None);
                metrics::shadow_run(&rollout.model, &rollout.alias, rollout.candidate, None);
                None
            }
        }
    }

    /// Runs `inputs` on the shadow's candidate on a blocking thread and records how its answer
    /// compared with stable's `outputs`; returns at once. In Lambda the environment freezes
    /// once the answer is sent and the runtime asks for the next event, so a run still going
    /// then finishes when the environment next thaws.
    pub fn run_shadow(
        &self,
        shadow: Shadow,
        route: Route,
        inputs: Vec<Tensor>,
        outputs: Vec<Tensor>,
    ) {
        let evidence = self.evidence.clone();
        let registry = self.registry().clone();
        tokio::task::spawn_blocking(move || {
            let started = Instant::now();
            let answer = shadow.candidate.engine.run(inputs);
            let took = started.elapsed();
            let comparison = answer.ok().map(|answer| shadow::compare(&outputs, &answer));
            evidence.record_shadow(&route, took, comparison.as_ref());
            let rollout = &route.split.rollout;
            metrics::shadow_run(
                &rollout.model,
                &rollout.alias,
                rollout.candidate,
                comparison.as_ref().and_then(|c| c.agreement()),
            );
            drop(shadow);
            evidence.flush_if_due(&registry);
        });
    }

    /// What requests left for after their answer (under [`SwapPolicy::AfterAnswer`]): each live
    /// slot's pending move and rollout candidate, if due. In Lambda the inference function's
    /// internal extension calls this once the runtime has posted an invocation's answer, so
    /// the environment does it before it asks for its next event and freezes.
    pub async fn adopt(&self) -> Vec<Adopted> {
        let slots: Vec<Arc<LiveModel>> = self
            .live
            .lock()
            .expect("live map")
            .values()
            .cloned()
            .collect();
        let mut adopted = Vec::new();
        for slot in slots {
            adopted.extend(slot.adopt(&self.cache, self.memory).await);
        }
        adopted
    }

    /// Everything requests leave for after their answer: versions to adopt ([`Self::adopt`]),
    /// then captured requests to record and write ([`Capture::process`]).
    pub async fn after_answer(&self) -> Vec<Adopted> {
        let adopted = self.adopt().await;
        self.capture.process(self.registry()).await;
        adopted
    }

    /// Writes what this environment holds — rollout evidence, captured records, drift
    /// profiles — now: its shutdown.
    pub async fn flush(&self) {
        let (evidence, registry) = (self.evidence.clone(), self.registry().clone());
        let _ = tokio::task::spawn_blocking(move || evidence.flush(&registry)).await;
        self.capture.flush(self.registry()).await;
    }

    /// Writes this instance's rollout evidence now (blocking).
    pub fn flush_evidence(&self) {
        self.evidence.flush(self.registry());
    }

    /// The rollout `model`'s live slot splits its requests by now, if any (nothing is read).
    pub fn split(&self, model: &ModelName) -> Option<split::Split> {
        let slot = self.live.lock().expect("live map").get(model).cloned()?;
        slot.split()
    }

    /// What the live slot of `model` holds now, without loading or checking anything.
    pub fn live_status(&self, model: &ModelName) -> LiveStatus {
        let Some(slot) = self.live.lock().expect("live map").get(model).cloned() else {
            return LiveStatus::default();
        };
        LiveStatus {
            loaded: slot.version().filter(|&v| self.cache.is_resident(model, v)),
            pending: slot.pending_version(),
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

/// This execution environment's name in the files and objects it writes: Lambda's log stream
/// name (unique per environment), else the process id and a random number.
fn environment_name() -> String {
    match std::env::var("AWS_LAMBDA_LOG_STREAM_NAME") {
        Ok(stream) if !stream.is_empty() => capture::environment_name(&stream),
        _ => format!(
            "{}-{:016x}",
            std::process::id(),
            u64::from_le_bytes(modelpipe_registry::rollout::split::random_key())
        ),
    }
}
