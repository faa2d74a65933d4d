//! Data capture: a share of each model's live requests, with their answers, kept as SageMaker
//! Data Capture records (one JSON line each, plus modelpipe's fields) and written as gzip JSON
//! Lines objects to `<prefix><model>/<version>/yyyy/mm/dd/hh/<environment>-<seq>.jsonl.gz`; the
//! same requests feed this environment's drift profile of the version that answered them.
//!
//! The request path only decides (a hash of the body, as the rollout split hashes a caller) and
//! hands the bytes and tensors over ([`Capture::offer`]), within a memory budget: past it a
//! sample is dropped and counted, never waited for. Everything else — the profile, the record,
//! gzip, the upload, the profile's write to the registry — happens after the answer
//! ([`Capture::process`]: in Lambda from the after-answer extension, before the freeze; in
//! `modelctl dev` on a timer), and [`Capture::flush`] writes what is held on shutdown.

use std::collections::HashMap;
use std::io::Write;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use base64::Engine as _;
use bytes::Bytes;
use serde_json::{Value, json};
use tract_onnx::prelude::Tensor;

use modelpipe_config::MonitoringConfig;
use modelpipe_core::model_name::{AliasName, ModelName};
use modelpipe_core::time::Timestamp;
use modelpipe_drift::Profile;
use modelpipe_registry::Registry;
use modelpipe_registry::drift::{Monitoring, WindowProfile, window_of};
use modelpipe_registry::rollout::split;

/// Where capture objects go: an S3 bucket in AWS and in `modelctl dev` (modelpipe-aws's).
pub trait CaptureSink: Send + Sync {
    fn put(
        &self,
        key: String,
        gzipped: Vec<u8>,
    ) -> Pin<Box<dyn Future<Output = Result<(), String>> + Send + '_>>;
}

/// How often a model's capture share is read again from the registry.
const SETTINGS_REFRESH: Duration = Duration::from_secs(60);

/// A body as it came or went.
#[derive(Debug, Clone)]
pub struct Body {
    pub content_type: &'static str,
    pub bytes: Bytes,
}

/// One sampled request, its answer and where it went.
#[derive(Debug, Clone)]
pub struct Sample {
    pub model: ModelName,
    pub version: u64,
    /// The alias the request went through (pinned `/versions/{v}` requests are not captured).
    pub alias: AliasName,
    pub arm: Option<&'static str>,
    pub rollout: Option<u64>,
    pub at: SystemTime,
    pub latency: Duration,
    /// The caller's request id (`id` in the body), when it sent one.
    pub request_id: Option<String>,
    pub input: Body,
    pub output: Body,
    pub inputs: Vec<(String, Tensor)>,
    pub outputs: Vec<(String, Tensor)>,
}

impl Sample {
    /// What holding it costs: its bodies and tensors.
    fn size(&self) -> usize {
        let tensors: usize = self
            .inputs
            .iter()
            .chain(&self.outputs)
            .map(|(_, t)| t.len() * t.datum_type().size_of())
            .sum();
        self.input.bytes.len() + self.output.bytes.len() + tensors + 512
    }
}

/// Whether a request with `body` to `model` is captured at `share`: its bucket
/// (`split::bucket("capture/<model>", body)`, the rollout split's hash) is below
/// `share × 10,000`. The same body is always captured or never.
pub fn sampled(model: &ModelName, body: &[u8], share: f64) -> bool {
    let basis = (share.clamp(0.0, 1.0) * 10_000.0).round() as u32;
    match basis {
        0 => false,
        10_000.. => true,
        _ => split::bucket(&format!("capture/{model}"), body) < basis,
    }
}

/// The record of `sample` in SageMaker Data Capture's shape, with modelpipe's fields.
pub fn record(sample: &Sample, environment: &str, max_body_bytes: usize) -> Value {
    let (input, input_truncated) = endpoint_data(&sample.input, "INPUT", max_body_bytes);
    let (output, output_truncated) = endpoint_data(&sample.output, "OUTPUT", max_body_bytes);
    let mut metadata = json!({
        "eventId": event_id(),
        "inferenceTime": Timestamp::from(sample.at).to_string(),
    });
    if let Some(id) = &sample.request_id {
        metadata["inferenceId"] = json!(id);
    }
    json!({
        "captureData": { "endpointInput": input, "endpointOutput": output },
        "eventMetadata": metadata,
        "eventVersion": "0",
        "modelpipe": {
            "model": sample.model.as_str(),
            "version": sample.version,
            "alias": sample.alias.as_str(),
            "arm": sample.arm,
            "rollout": sample.rollout,
            "latency_us": sample.latency.as_micros() as u64,
            "environment": environment,
            "input_bytes": sample.input.bytes.len(),
            "output_bytes": sample.output.bytes.len(),
            "input_truncated": input_truncated,
            "output_truncated": output_truncated,
        },
    })
}

/// `endpointInput` / `endpointOutput`: JSON as text; binary data, or any body over the cap,
/// base64 (of its first `max` bytes).
fn endpoint_data(body: &Body, mode: &str, max: usize) -> (Value, bool) {
    let truncated = body.bytes.len() > max;
    let text = (!truncated && body.content_type == "application/json")
        .then(|| std::str::from_utf8(&body.bytes).ok())
        .flatten();
    let (encoding, data) = match text {
        Some(text) => ("JSON", text.to_string()),
        None => (
            "BASE64",
            base64::engine::general_purpose::STANDARD
                .encode(&body.bytes[..body.bytes.len().min(max)]),
        ),
    };
    let value = json!({
        "observedContentType": body.content_type,
        "mode": mode,
        "data": data,
        "encoding": encoding,
    });
    (value, truncated)
}

/// A random UUID (version 4), as SageMaker's event ids are.
fn event_id() -> String {
    uuid::Uuid::new_v4().to_string()
}

/// One version's records of one hour not yet written.
struct Batch {
    lines: Vec<u8>,
    records: u64,
    since: Instant,
}

/// A model, a version and the hour (`yyyy/mm/dd/hh`) its records fall in.
type BatchKey = (ModelName, u64, String);

/// This environment's samples, records and profiles between writes.
pub struct Capture {
    config: MonitoringConfig,
    environment: String,
    sink: Option<Arc<dyn CaptureSink>>,
    /// Each model's share, and when it was read.
    shares: Mutex<HashMap<ModelName, (f64, Instant)>>,
    /// Samples handed over by requests, not yet processed.
    pending: Mutex<Vec<Sample>>,
    /// Bytes held in `pending` and in the batches: the budget's count.
    held: AtomicU64,
    batches: Mutex<HashMap<BatchKey, Batch>>,
    profiles: Mutex<HashMap<(ModelName, u64, u64), (Profile, bool)>>,
    next_profile_write: Mutex<Instant>,
    seq: AtomicU64,
    /// Since start: samples taken, records' bytes (uncompressed), records written.
    sampled: AtomicU64,
    record_bytes: AtomicU64,
    written: AtomicU64,
}

/// What a [`Capture::process`] did.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Processed {
    pub records: u64,
    pub objects: u64,
}

impl Capture {
    pub fn new(config: MonitoringConfig, environment: String) -> Self {
        Self {
            config,
            environment,
            sink: None,
            shares: Mutex::default(),
            pending: Mutex::default(),
            held: AtomicU64::new(0),
            batches: Mutex::default(),
            profiles: Mutex::default(),
            next_profile_write: Mutex::new(Instant::now()),
            seq: AtomicU64::new(0),
            sampled: AtomicU64::new(0),
            record_bytes: AtomicU64::new(0),
            written: AtomicU64::new(0),
        }
    }

    /// Where records go; without a sink, sampled requests still feed the drift profiles.
    pub fn with_sink(mut self, sink: Arc<dyn CaptureSink>) -> Self {
        self.sink = Some(sink);
        self
    }

    pub fn environment(&self) -> &str {
        &self.environment
    }

    /// `model`'s capture share: its own, else the deployment's. Read from the registry the
    /// first time the model is asked for; after that the request path takes what was read, and
    /// [`Self::process`] reads it again after the answer once it is `SETTINGS_REFRESH` old.
    pub fn share(&self, registry: &Registry, model: &ModelName) -> f64 {
        if let Some(&(share, _)) = self.shares.lock().expect("shares").get(model) {
            return share;
        }
        let share = self.share_of(registry.monitoring(model), model);
        self.remember_share(model, share);
        share
    }

    /// The share `monitoring` (a model's own settings, as read) gives.
    fn share_of(
        &self,
        monitoring: modelpipe_registry::Result<Monitoring>,
        model: &ModelName,
    ) -> f64 {
        let own = monitoring.unwrap_or_else(|e| {
            tracing::warn!(model = %model, error = %e, "could not read the model's monitoring settings; using the defaults");
            Monitoring::default()
        });
        own.or(self.config.defaults).capture_share.unwrap_or(0.0)
    }

    fn remember_share(&self, model: &ModelName, share: f64) {
        self.shares
            .lock()
            .expect("shares")
            .insert(model.clone(), (share, Instant::now()));
    }

    /// Reads again the shares read `SETTINGS_REFRESH` ago or more.
    async fn refresh_shares(&self, registry: &Registry) {
        let stale: Vec<ModelName> = (self.shares.lock().expect("shares").iter())
            .filter(|(_, (_, read))| read.elapsed() >= SETTINGS_REFRESH)
            .map(|(model, _)| model.clone())
            .collect();
        if stale.is_empty() {
            return;
        }
        let registry = registry.clone();
        let read = tokio::task::spawn_blocking(move || {
            (stale.into_iter())
                .map(|model| {
                    let monitoring = registry.monitoring(&model);
                    (model, monitoring)
                })
                .collect::<Vec<_>>()
        })
        .await
        .unwrap_or_default();
        for (model, monitoring) in read {
            let share = self.share_of(monitoring, &model);
            self.remember_share(&model, share);
        }
    }

    /// Takes `sample` for processing after the answer, unless the budget is spent (then it is
    /// dropped and counted). Never waits.
    pub fn offer(&self, sample: Sample) {
        let size = sample.size() as u64;
        let held = self.held.fetch_add(size, Ordering::Relaxed) + size;
        if held > self.config.buffer_bytes as u64 {
            self.held.fetch_sub(size, Ordering::Relaxed);
            crate::metrics::capture_dropped(&sample.model, sample.version);
            return;
        }
        crate::metrics::capture_sampled(&sample.model, sample.version);
        self.sampled.fetch_add(1, Ordering::Relaxed);
        self.pending.lock().expect("pending").push(sample);
    }

    /// Bytes of samples and records held now (the budget's count).
    pub fn held_bytes(&self) -> u64 {
        self.held.load(Ordering::Relaxed)
    }

    /// Samples taken since start.
    pub fn sampled_total(&self) -> u64 {
        self.sampled.load(Ordering::Relaxed)
    }

    /// Records written since start.
    pub fn written_total(&self) -> u64 {
        self.written.load(Ordering::Relaxed)
    }

    /// Bytes of the records made since start, uncompressed.
    pub fn record_bytes_total(&self) -> u64 {
        self.record_bytes.load(Ordering::Relaxed)
    }

    /// Whether anything is held.
    pub fn is_idle(&self) -> bool {
        self.held_bytes() == 0
            && !self
                .profiles
                .lock()
                .expect("profiles")
                .values()
                .any(|(_, dirty)| *dirty)
    }

    /// Reads again the capture shares that are due, turns the samples handed over into records
    /// and profile counts, then writes the versions' records that are due (by size or age) and
    /// the profiles, if due.
    pub async fn process(&self, registry: &Registry) -> Processed {
        self.refresh_shares(registry).await;
        let records = self.absorb();
        let objects = self.write_records(false).await;
        self.write_profiles(registry, false).await;
        Processed { records, objects }
    }

    /// Writes everything held now (shutdown).
    pub async fn flush(&self, registry: &Registry) -> Processed {
        let records = self.absorb();
        let objects = self.write_records(true).await;
        self.write_profiles(registry, true).await;
        Processed { records, objects }
    }

    fn absorb(&self) -> u64 {
        let samples = std::mem::take(&mut *self.pending.lock().expect("pending"));
        let count = samples.len() as u64;
        for sample in samples {
            let size = sample.size() as u64;
            let window = window_of(sample.at, self.config.drift_window);
            {
                let mut profiles = self.profiles.lock().expect("profiles");
                let (profile, dirty) = profiles
                    .entry((sample.model.clone(), sample.version, window))
                    .or_default();
                modelpipe_engine::features::observe_request(
                    profile,
                    named(&sample.inputs),
                    named(&sample.outputs),
                );
                *dirty = true;
            }
            let mut line = serde_json::to_vec(&record(
                &sample,
                &self.environment,
                self.config.max_body_bytes,
            ))
            .expect("records serialise");
            line.push(b'\n');
            let mut batches = self.batches.lock().expect("batches");
            let batch = batches
                .entry((sample.model.clone(), sample.version, hour_path(sample.at)))
                .or_insert_with(|| Batch {
                    lines: Vec::new(),
                    records: 0,
                    // A record's age counts from its request, not from this work after it.
                    since: Instant::now()
                        .checked_sub(sample.at.elapsed().unwrap_or_default())
                        .unwrap_or_else(Instant::now),
                });
            self.held.fetch_add(line.len() as u64, Ordering::Relaxed);
            self.record_bytes
                .fetch_add(line.len() as u64, Ordering::Relaxed);
            self.held.fetch_sub(size, Ordering::Relaxed);
            batch.lines.extend_from_slice(&line);
            batch.records += 1;
        }
        count
    }

    /// Writes each version's batch that is due (or all): gzip, then the sink. A batch whose
    /// write failed is kept for the next attempt.
    async fn write_records(&self, all: bool) -> u64 {
        let due: Vec<(BatchKey, Batch)> = {
            let mut batches = self.batches.lock().expect("batches");
            let keys: Vec<BatchKey> = batches
                .iter()
                .filter(|(_, b)| {
                    b.records > 0
                        && (all
                            || b.lines.len() >= self.config.object_bytes
                            || b.since.elapsed() >= self.config.flush_age)
                })
                .map(|(k, _)| k.clone())
                .collect();
            keys.into_iter()
                .filter_map(|k| batches.remove(&k).map(|b| (k, b)))
                .collect()
        };
        let mut written = 0;
        for ((model, version, hour), batch) in due {
            let Some(sink) = &self.sink else {
                self.held
                    .fetch_sub(batch.lines.len() as u64, Ordering::Relaxed);
                continue;
            };
            let seq = self.seq.fetch_add(1, Ordering::Relaxed);
            let key = format!(
                "{}{model}/{version}/{hour}/{}-{seq:06}.jsonl.gz",
                self.config.prefix, self.environment
            );
            match sink.put(key.clone(), gzip(&batch.lines)).await {
                Ok(()) => {
                    self.held
                        .fetch_sub(batch.lines.len() as u64, Ordering::Relaxed);
                    crate::metrics::capture_written(&model, version, batch.records);
                    self.written.fetch_add(batch.records, Ordering::Relaxed);
                    written += 1;
                }
                Err(e) => {
                    tracing::warn!(%key, error = %e, "could not write captured records; kept for the next write");
                    let mut batches = self.batches.lock().expect("batches");
                    let kept = batches
                        .entry((model, version, hour))
                        .or_insert_with(|| Batch {
                            lines: Vec::new(),
                            records: 0,
                            since: batch.since,
                        });
                    // Records made meanwhile go after these, the older ones.
                    let newer = std::mem::replace(&mut kept.lines, batch.lines);
                    kept.lines.extend_from_slice(&newer);
                    kept.records += batch.records;
                    kept.since = kept.since.min(batch.since);
                }
            }
        }
        written
    }

    /// Writes the profiles that changed, at most every `flush_age` unless `all`. A baked
    /// registry cannot take them without a `TELEMETRY_ROOT` (records are still written).
    async fn write_profiles(&self, registry: &Registry, all: bool) {
        if !registry.takes_environment_files() {
            self.profiles.lock().expect("profiles").clear();
            return;
        }
        {
            let mut next = self.next_profile_write.lock().expect("profile clock");
            if !all && Instant::now() < *next {
                return;
            }
            *next = Instant::now() + self.config.flush_age;
        }
        let dirty: Vec<((ModelName, u64, u64), Profile)> = {
            let mut profiles = self.profiles.lock().expect("profiles");
            let current = window_of(SystemTime::now(), self.config.drift_window);
            // Windows before the previous one are written for the last time and forgotten.
            let written: Vec<_> = profiles
                .iter_mut()
                .filter(|(_, (_, dirty))| *dirty)
                .map(|(key, (profile, dirty))| {
                    *dirty = false;
                    (key.clone(), profile.clone())
                })
                .collect();
            profiles.retain(|(_, _, window), _| *window + 1 >= current);
            written
        };
        if dirty.is_empty() {
            return;
        }
        let registry = registry.clone();
        let environment = self.environment.clone();
        let failed = tokio::task::spawn_blocking(move || {
            let mut failed = Vec::new();
            for ((model, version, window), profile) in dirty {
                let file = WindowProfile {
                    environment: environment.clone(),
                    updated_at: Timestamp::now(),
                    profile,
                };
                if let Err(e) = registry.write_window_profile(&model, version, window, &file) {
                    tracing::warn!(model = %model, version, error = %e, "could not write the drift profile; retried at the next write");
                    failed.push((model, version, window));
                }
            }
            failed
        })
        .await
        .unwrap_or_default();
        let mut profiles = self.profiles.lock().expect("profiles");
        for key in failed {
            if let Some((_, dirty)) = profiles.get_mut(&key) {
                *dirty = true;
            }
        }
    }
}

/// `yyyy/mm/dd/hh` of `at`, in UTC.
fn hour_path(at: SystemTime) -> String {
    let text = Timestamp::from(at).to_string();
    format!(
        "{}/{}/{}/{}",
        &text[0..4],
        &text[5..7],
        &text[8..10],
        &text[11..13]
    )
}

fn gzip(bytes: &[u8]) -> Vec<u8> {
    let mut encoder = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    encoder.write_all(bytes).expect("writes to memory");
    encoder.finish().expect("writes to memory")
}

/// An environment's name made safe for a key: Lambda's log stream name
/// (`2026/12/05/[$LATEST]0a1b…`) with anything but letters, digits, `-` and `_` as `-`.
pub fn environment_name(raw: &str) -> String {
    raw.chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' || c == '_' {
                c
            } else {
                '-'
            }
        })
        .collect()
}

#[cfg(test)]
mod tests;

fn named(tensors: &[(String, Tensor)]) -> impl Iterator<Item = (&str, &Tensor)> {
    tensors.iter().map(|(name, tensor)| (name.as_str(), tensor))
}
