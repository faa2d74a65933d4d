//! Per-version metrics through the `metrics` facade: EMF lines in Lambda (the inference
//! function installs `metrics_cloudwatch_embedded`), Prometheus text on `/metrics` in
//! `modelctl dev`. Dimensions are bounded: model, alias, arm and version, never a caller's key.
//!
//! | name | kind | labels |
//! |---|---|---|
//! | `modelpipe_requests_total` | counter | model, alias, arm, version |
//! | `modelpipe_errors_total` | counter | model, alias, arm, version |
//! | `modelpipe_request_seconds` | histogram | model, alias, arm, version |
//! | `modelpipe_model_load_seconds` | histogram | model, version |
//! | `modelpipe_shadow_runs_total` | counter | model, alias, version (the candidate's) |
//! | `modelpipe_shadow_skipped_total` | counter | model, alias, version |
//! | `modelpipe_shadow_agreement` | histogram (0–1, per run) | model, alias, version |
//! | `modelpipe_capture_sampled_total` | counter (requests taken for capture) | model, version |
//! | `modelpipe_capture_dropped_total` | counter (sampled, over the buffer's budget) | model, version |
//! | `modelpipe_capture_records_written_total` | counter (records in objects written) | model, version |
//!
//! The publisher sets `modelpipe_feature_drift` (see `modelpipe_registry::drift`).

use std::time::Duration;

use metrics::{Unit, counter, describe_counter, describe_histogram, histogram};

use modelpipe_core::model_name::{AliasName, ModelName};

pub const REQUESTS: &str = "modelpipe_requests_total";
pub const ERRORS: &str = "modelpipe_errors_total";
pub const REQUEST_SECONDS: &str = "modelpipe_request_seconds";
pub const MODEL_LOAD_SECONDS: &str = "modelpipe_model_load_seconds";
pub const SHADOW_RUNS: &str = "modelpipe_shadow_runs_total";
pub const SHADOW_SKIPPED: &str = "modelpipe_shadow_skipped_total";
pub const SHADOW_AGREEMENT: &str = "modelpipe_shadow_agreement";
pub const CAPTURE_SAMPLED: &str = "modelpipe_capture_sampled_total";
pub const CAPTURE_DROPPED: &str = "modelpipe_capture_dropped_total";
pub const CAPTURE_WRITTEN: &str = "modelpipe_capture_records_written_total";

/// Which arm answered: `stable` (also every live request when no rollout runs), `candidate`,
/// or `pinned` (a request to `/versions/{v}`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ServedBy {
    Stable,
    Candidate,
    Pinned,
}

impl ServedBy {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Stable => "stable",
            Self::Candidate => "candidate",
            Self::Pinned => "pinned",
        }
    }
}

/// Units and help texts, once, after the recorder is installed.
pub fn describe() {
    describe_counter!(
        REQUESTS,
        Unit::Count,
        "inference requests routed to a version"
    );
    describe_counter!(
        ERRORS,
        Unit::Count,
        "requests the version could not answer (its signature refused the inputs, or its run failed)"
    );
    describe_histogram!(
        REQUEST_SECONDS,
        Unit::Seconds,
        "from the request read to its answer encoded"
    );
    describe_histogram!(
        MODEL_LOAD_SECONDS,
        Unit::Seconds,
        "hash check, load and warm-up of a version"
    );
    describe_counter!(
        SHADOW_RUNS,
        Unit::Count,
        "candidate runs on shadowed requests"
    );
    describe_counter!(
        SHADOW_SKIPPED,
        Unit::Count,
        "shadowed requests not run: the previous shadow run was still going"
    );
    describe_counter!(
        CAPTURE_SAMPLED,
        Unit::Count,
        "live requests taken for data capture"
    );
    describe_counter!(
        CAPTURE_DROPPED,
        Unit::Count,
        "sampled requests dropped: the environment's capture buffer was full"
    );
    describe_counter!(
        CAPTURE_WRITTEN,
        Unit::Count,
        "captured records written to the capture bucket"
    );
    describe_histogram!(
        SHADOW_AGREEMENT,
        "share of a shadow run's answer rows that agreed with stable's"
    );
}

/// One request a model ran (or failed on); `alias` is `None` for a pinned version (`-`).
pub fn request(
    model: &ModelName,
    alias: Option<&AliasName>,
    by: ServedBy,
    version: u64,
    took: Duration,
    error: bool,
) {
    let labels = [
        ("model", model.as_str().to_string()),
        ("alias", alias.map_or("-", |a| a.as_str()).to_string()),
        ("arm", by.as_str().to_string()),
        ("version", version.to_string()),
    ];
    counter!(REQUESTS, &labels).increment(1);
    if error {
        counter!(ERRORS, &labels).increment(1);
    }
    histogram!(REQUEST_SECONDS, &labels).record(took.as_secs_f64());
}

/// A version loaded into memory.
pub fn load(model: &ModelName, version: u64, took: Duration) {
    histogram!(MODEL_LOAD_SECONDS, "model" => model.as_str().to_string(), "version" => version.to_string())
        .record(took.as_secs_f64());
}

/// One shadow run of candidate `version`: `agreement` is `None` when it failed.
pub fn shadow_run(model: &ModelName, alias: &AliasName, version: u64, agreement: Option<f64>) {
    let labels = [
        ("model", model.as_str().to_string()),
        ("alias", alias.as_str().to_string()),
        ("version", version.to_string()),
    ];
    counter!(SHADOW_RUNS, &labels).increment(1);
    if let Some(agreement) = agreement {
        histogram!(SHADOW_AGREEMENT, &labels).record(agreement);
    }
}

/// A shadowed request not run on the candidate.
pub fn shadow_skipped(model: &ModelName, alias: &AliasName, version: u64) {
    counter!(SHADOW_SKIPPED, "model" => model.as_str().to_string(), "alias" => alias.as_str().to_string(), "version" => version.to_string())
        .increment(1);
}

fn version_labels(model: &ModelName, version: u64) -> [(&'static str, String); 2] {
    [
        ("model", model.as_str().to_string()),
        ("version", version.to_string()),
    ]
}

/// A live request taken for capture.
pub fn capture_sampled(model: &ModelName, version: u64) {
    counter!(CAPTURE_SAMPLED, &version_labels(model, version)).increment(1);
}

/// A sampled request dropped: the capture buffer was full.
pub fn capture_dropped(model: &ModelName, version: u64) {
    counter!(CAPTURE_DROPPED, &version_labels(model, version)).increment(1);
}

/// `records` captured records written in one object.
pub fn capture_written(model: &ModelName, version: u64, records: u64) {
    counter!(CAPTURE_WRITTEN, &version_labels(model, version)).increment(records);
}
