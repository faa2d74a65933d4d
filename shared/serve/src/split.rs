//! A rollout on the request path: which arm answers a request (the sticky split of
//! [`modelpipe_registry::rollout::split`]) and what each arm did, summed per rollout step in this
//! instance and written to the registry for the controller at most once per `RELOAD_CHECK_MS`.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::http::HeaderMap;
use serde_json::{Map, Value};

use crate::shadow::Comparison;
use modelpipe_core::model_name::{AliasName, ModelName};
use modelpipe_registry::Registry;
use modelpipe_registry::rollout::split::{self, Arm};
use modelpipe_registry::rollout::{InstanceEvidence, Rollout, StepEvidence};

/// A running rollout as a live slot follows it.
#[derive(Debug, Clone)]
pub struct Split {
    pub rollout: Arc<Rollout>,
    /// Whether the candidate is loaded; if not, its requests are answered by stable and
    /// counted as the candidate's errors.
    pub candidate_ready: bool,
}

/// Where one request goes.
#[derive(Debug, Clone)]
pub struct Route {
    pub split: Split,
    pub arm: Arm,
    /// Whether stable's answer is also run on the candidate (a shadowed caller).
    pub shadow: bool,
}

impl Split {
    /// The arm for a request with `key` (see [`routing_key`]).
    pub fn route(&self, key: &[u8]) -> Route {
        let arm = split::arm(&self.rollout.salt, self.rollout.weight, key);
        Route {
            split: self.clone(),
            arm,
            shadow: arm == Arm::Stable
                && split::shadowed(&self.rollout.salt, self.rollout.shadow, key),
        }
    }
}

/// The caller's key: header `<sticky_key with - for _>`, else request parameter
/// `<sticky_key>` (a string or a number), else a random one.
pub fn routing_key(
    sticky_key: &str,
    headers: &HeaderMap,
    parameters: &Map<String, Value>,
) -> Vec<u8> {
    let header = sticky_key.replace('_', "-");
    if let Some(value) = headers.get(header.as_str()) {
        return value.as_bytes().to_vec();
    }
    match parameters.get(sticky_key) {
        Some(Value::String(s)) => s.as_bytes().to_vec(),
        Some(Value::Number(n)) => n.to_string().into_bytes(),
        _ => split::random_key().to_vec(),
    }
}

type StepKey = (ModelName, AliasName, u64, usize);

/// This instance's evidence for the steps it served, and when it last wrote it.
pub struct EvidenceRecorder {
    instance: String,
    steps: Mutex<HashMap<StepKey, (StepEvidence, bool)>>,
    next_flush: Mutex<Instant>,
    every: Duration,
}

impl EvidenceRecorder {
    /// `instance` names this environment's evidence files.
    pub fn new(every: Duration, instance: String) -> Self {
        Self {
            instance,
            steps: Mutex::default(),
            next_flush: Mutex::new(Instant::now()),
            every,
        }
    }

    /// Records one request `route` sent to an arm: its model run's time, or its failure.
    pub fn record(&self, route: &Route, run: Duration, error: bool) {
        self.update(route, |evidence| {
            let arm = match route.arm {
                Arm::Stable => &mut evidence.stable,
                Arm::Candidate => &mut evidence.candidate,
            };
            arm.record(run.as_secs_f64() * 1e6, error);
        });
    }

    /// Records one shadow run of the candidate: its time, and its comparison with stable's
    /// answer (`None`: the run failed).
    pub fn record_shadow(&self, route: &Route, run: Duration, comparison: Option<&Comparison>) {
        self.update(route, |evidence| {
            let shadow = &mut evidence.shadow;
            shadow
                .runs
                .record(run.as_secs_f64() * 1e6, comparison.is_none());
            if let Some(c) = comparison {
                shadow.rows += c.rows;
                shadow.agreed_rows += c.agreed_rows;
                for &diff in &c.abs_diffs {
                    shadow.abs_diff.record(diff);
                }
            }
        });
    }

    /// Records a shadowed request the candidate did not run (one was still going).
    pub fn record_shadow_skipped(&self, route: &Route) {
        self.update(route, |evidence| evidence.shadow.skipped += 1);
    }

    fn update(&self, route: &Route, change: impl FnOnce(&mut StepEvidence)) {
        let rollout = &route.split.rollout;
        let key = (
            rollout.model.clone(),
            rollout.alias.clone(),
            rollout.id,
            rollout.step,
        );
        let mut steps = self.steps.lock().expect("evidence lock");
        let (evidence, dirty) = steps.entry(key).or_default();
        change(evidence);
        *dirty = true;
    }

    /// Writes the steps that changed since the last write, if one is due (on a blocking thread;
    /// a failed write is logged and retried at the next one).
    pub fn flush_if_due(self: &Arc<Self>, registry: &Registry) {
        {
            let mut next = self.next_flush.lock().expect("flush lock");
            let now = Instant::now();
            if now < *next {
                return;
            }
            *next = now + self.every;
        }
        let this = self.clone();
        let registry = registry.clone();
        tokio::task::spawn_blocking(move || this.flush(&registry));
    }

    /// Writes every step that changed since the last write.
    pub fn flush(&self, registry: &Registry) {
        let dirty: Vec<(StepKey, StepEvidence)> = {
            let mut steps = self.steps.lock().expect("evidence lock");
            steps
                .iter_mut()
                .filter(|(_, (_, dirty))| *dirty)
                .map(|(key, (evidence, dirty))| {
                    *dirty = false;
                    (key.clone(), evidence.clone())
                })
                .collect()
        };
        for ((model, alias, id, step), evidence) in dirty {
            let file = InstanceEvidence {
                instance: self.instance.clone(),
                updated_at: modelpipe_registry::now(),
                evidence,
            };
            if let Err(e) = registry.write_step_evidence(&model, &alias, id, step, &file) {
                tracing::warn!(model = %model, rollout = id, step, error = %e, "could not write rollout evidence");
                if let Some((_, dirty)) = self
                    .steps
                    .lock()
                    .expect("evidence lock")
                    .get_mut(&(model, alias, id, step))
                {
                    *dirty = true;
                }
            }
        }
    }
}
