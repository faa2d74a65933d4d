//! What each live version sees, against what it was made for. The files, beside the rollout
//! evidence and written the same way (each inference environment only its own file, no lock):
//!
//! ```text
//! <model>/monitoring.json                           capture share and drift threshold (the contract's)
//! <model>/drift/<N>/windows/<w>/<environment>.json  one environment's profile of version N in window w
//! <model>/drift/<N>/merged/<w>.json                 a past window's files merged (see [`merged`])
//! <model>/drift/<N>/baseline.json                   the profile version N is compared with
//! <model>/drift/<N>/report.json                     the publisher's latest comparison
//! ```
//!
//! A window is `DRIFT_WINDOW_MS` of wall-clock time (`w = unix ms / window`); a report merges
//! the current and the previous window, so it always covers at least one whole window. A
//! version's baseline is, in order: the profile of the `baseline.jsonl` uploaded with it (the
//! validator's), else the first captured traffic of the version it replaced (the one `live`
//! served before it, or a rollout's stable for its candidate; that version's own baseline if too
//! little of its traffic was profiled), else its own first traffic — traffic once it holds
//! `baseline_rows` rows. It is written once and kept.

mod merged;

pub use self::merged::MergedWindow;

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};

use crate::{AliasAction, Registry, RegistryError, Result};
use modelpipe_core::model_name::{AliasName, ModelName};
use modelpipe_core::time::Timestamp;
use modelpipe_drift::{FeatureDrift, Profile, compare};

/// A model's capture and drift settings (`contract.json`'s `monitoring`); unset fields take
/// the deployment's defaults (`CAPTURE_SHARE`, `DRIFT_THRESHOLD`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Monitoring {
    /// The share of live requests captured (0 to 1), chosen by hashing the request.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub capture_share: Option<f64>,
    /// The L∞ distance above which a feature has drifted (0 to 1).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub drift_threshold: Option<f64>,
}

impl Monitoring {
    /// The settings, or why they are not valid.
    pub fn check(&self) -> std::result::Result<(), String> {
        for (name, value) in [
            ("capture_share", self.capture_share),
            ("drift_threshold", self.drift_threshold),
        ] {
            if let Some(v) = value
                && !(0.0..=1.0).contains(&v)
            {
                return Err(format!(
                    "monitoring.{name} is {v}: it must be between 0 and 1"
                ));
            }
        }
        Ok(())
    }

    /// These settings with `defaults` where they name none.
    pub fn or(self, defaults: Monitoring) -> Monitoring {
        Monitoring {
            capture_share: self.capture_share.or(defaults.capture_share),
            drift_threshold: self.drift_threshold.or(defaults.drift_threshold),
        }
    }
}

/// One environment's profile of one version in one window.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct WindowProfile {
    pub environment: String,
    pub updated_at: Timestamp,
    pub profile: Profile,
}

/// Where a version's baseline came from.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum BaselineSource {
    /// The `baseline.jsonl` uploaded beside the model (its key and SHA-256).
    Upload { key: String, sha256: String },
    /// The first captured traffic of a version: the one it replaced, or itself.
    Traffic { version: u64 },
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Baseline {
    pub source: BaselineSource,
    pub created_at: Timestamp,
    pub profile: Profile,
}

/// A version's live traffic compared with its baseline.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct DriftReport {
    pub model: ModelName,
    pub version: u64,
    pub computed_at: Timestamp,
    pub threshold: f64,
    /// `None`: no baseline yet (none uploaded, and too little traffic to take one from).
    pub baseline: Option<BaselineSummary>,
    /// Rows of live traffic compared (the current and previous window), and from how many
    /// environments.
    pub live_rows: u64,
    pub environments: usize,
    pub features: Vec<FeatureDrift>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct BaselineSummary {
    pub source: BaselineSource,
    pub rows: u64,
}

impl DriftReport {
    /// The largest distance of a flagged feature, 0 when none is.
    pub fn max_flagged_distance(&self) -> f64 {
        self.features
            .iter()
            .filter(|f| f.flagged)
            .map(|f| f.distance)
            .fold(0.0, f64::max)
    }

    pub fn flagged(&self) -> impl Iterator<Item = &FeatureDrift> {
        self.features.iter().filter(|f| f.flagged)
    }

    /// The flagged features' names, for a log line.
    pub fn flagged_names(&self) -> Vec<&str> {
        self.flagged().map(|f| f.feature.as_str()).collect()
    }
}

/// The window `at` falls in.
pub fn window_of(at: SystemTime, window: Duration) -> u64 {
    let ms = at
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default()
        .as_millis();
    (ms / window.as_millis().max(1)) as u64
}

fn monitoring_key(model: &ModelName) -> String {
    format!("{model}/monitoring.json")
}

fn version_dir(model: &ModelName, version: u64) -> String {
    format!("{model}/drift/{version}")
}

fn windows_dir(model: &ModelName, version: u64) -> String {
    format!("{}/windows", version_dir(model, version))
}

impl Registry {
    /// `model`'s own monitoring settings (unset fields: the deployment's defaults).
    pub fn monitoring(&self, model: &ModelName) -> Result<Monitoring> {
        Ok(self.read_json(&monitoring_key(model))?.unwrap_or_default())
    }

    /// Records `model`'s monitoring settings (the validator, from its contract).
    pub fn write_monitoring(&self, model: &ModelName, monitoring: &Monitoring) -> Result<()> {
        if self.monitoring(model)? == *monitoring {
            return Ok(());
        }
        self.write_unlocked(&monitoring_key(model), &crate::to_json(monitoring))
    }

    /// Replaces one environment's profile of `version` in `window`.
    pub fn write_window_profile(
        &self,
        model: &ModelName,
        version: u64,
        window: u64,
        file: &WindowProfile,
    ) -> Result<()> {
        let key = format!(
            "{}/{window}/{}.json",
            windows_dir(model, version),
            file.environment
        );
        self.write_environment_file(&key, &crate::to_json(file))
    }

    /// The windows of `version` that hold profiles, merged or not, oldest first.
    fn windows(&self, model: &ModelName, version: u64) -> Result<Vec<u64>> {
        let mut windows = self.unmerged_windows(model, version)?;
        windows.extend(self.merged_windows(model, version)?);
        windows.sort_unstable();
        windows.dedup();
        Ok(windows)
    }

    /// The windows of `version` that hold environments' files.
    fn unmerged_windows(&self, model: &ModelName, version: u64) -> Result<Vec<u64>> {
        Ok(self
            .environment_dirs(&windows_dir(model, version))?
            .iter()
            .filter_map(|w| w.trim_end_matches('/').parse().ok())
            .collect())
    }

    /// Every environment's profile of `version` in `window`, merged, and how many there were.
    pub fn window_profile(
        &self,
        model: &ModelName,
        version: u64,
        window: u64,
    ) -> Result<(Profile, usize)> {
        let mut all = self.merged_window(model, version, window)?;
        self.each_environment_file(
            &format!("{}/{window}", windows_dir(model, version)),
            |file: WindowProfile| all.add(file),
        )?;
        Ok((all.profile, all.environments.len()))
    }

    /// The first `rows` rows of `version`'s traffic (whole windows, oldest first), if it has
    /// had that many.
    fn first_traffic(&self, model: &ModelName, version: u64, rows: u64) -> Result<Option<Profile>> {
        let mut first = Profile::default();
        for window in self.windows(model, version)? {
            first.merge(&self.window_profile(model, version, window)?.0);
            if first.rows >= rows {
                return Ok(Some(first));
            }
        }
        Ok(None)
    }

    pub fn baseline(&self, model: &ModelName, version: u64) -> Result<Option<Baseline>> {
        self.read_json(&format!("{}/baseline.json", version_dir(model, version)))
    }

    pub fn write_baseline(
        &self,
        model: &ModelName,
        version: u64,
        baseline: &Baseline,
    ) -> Result<()> {
        let key = format!("{}/baseline.json", version_dir(model, version));
        self.write_unlocked(&key, &crate::to_json(baseline))
    }

    /// The version `version` replaced: the one `live` served before it first served it (per
    /// its history), else, for a rollout's candidate, the rollout's stable.
    fn replaced(&self, model: &ModelName, version: u64) -> Result<Option<u64>> {
        let live = AliasName::default();
        let moved = self
            .history(model)?
            .iter()
            .find(|e| e.alias == live && e.to == version && e.action != AliasAction::Rollback)
            .and_then(|e| e.from);
        if moved.is_some() {
            return Ok(moved);
        }
        Ok(self
            .rollouts(model)?
            .iter()
            .find(|r| r.candidate == version)
            .map(|r| r.stable))
    }

    /// `version`'s baseline: the stored one, else one taken from traffic now that there is
    /// enough (and stored, so it never changes), else none yet.
    pub fn resolve_baseline(
        &self,
        model: &ModelName,
        version: u64,
        rows: u64,
    ) -> Result<Option<Baseline>> {
        if let Some(baseline) = self.baseline(model, version)? {
            return Ok(Some(baseline));
        }
        let replaced = self.replaced(model, version)?;
        let taken = match replaced {
            Some(before) => match self.first_traffic(model, before, rows)? {
                Some(profile) => Some((BaselineSource::Traffic { version: before }, profile)),
                // Too little of its traffic was profiled: what it was itself compared with.
                None => self.baseline(model, before)?.map(|b| (b.source, b.profile)),
            },
            None => None,
        };
        let taken = match taken {
            Some(taken) => Some(taken),
            None => self
                .first_traffic(model, version, rows)?
                .map(|profile| (BaselineSource::Traffic { version }, profile)),
        };
        let Some((source, profile)) = taken else {
            return Ok(None);
        };
        let baseline = Baseline {
            source,
            created_at: Timestamp::now(),
            profile,
        };
        self.write_baseline(model, version, &baseline)?;
        Ok(Some(baseline))
    }

    /// `version`'s traffic in the window `now` falls in and the one before, compared with its
    /// baseline at `threshold`.
    pub fn drift_report(
        &self,
        model: &ModelName,
        version: u64,
        settings: &DriftSettings,
        now: SystemTime,
    ) -> Result<DriftReport> {
        let current = window_of(now, settings.window);
        let mut live = Profile::default();
        let mut environments = 0;
        for window in [current.saturating_sub(1), current] {
            let (profile, n) = self.window_profile(model, version, window)?;
            live.merge(&profile);
            environments = environments.max(n);
        }
        let baseline = self.resolve_baseline(model, version, settings.baseline_rows)?;
        Ok(DriftReport {
            model: model.clone(),
            version,
            computed_at: Timestamp::now(),
            threshold: settings.threshold,
            features: baseline
                .as_ref()
                .map(|b| compare(&b.profile, &live, settings.threshold))
                .unwrap_or_default(),
            baseline: baseline.map(|b| BaselineSummary {
                source: b.source,
                rows: b.profile.rows,
            }),
            live_rows: live.rows,
            environments,
        })
    }

    pub fn write_drift_report(&self, report: &DriftReport) -> Result<()> {
        let key = format!("{}/report.json", version_dir(&report.model, report.version));
        self.write_unlocked(&key, &crate::to_json(report))
    }

    pub fn drift_report_stored(
        &self,
        model: &ModelName,
        version: u64,
    ) -> Result<Option<DriftReport>> {
        self.read_json(&format!("{}/report.json", version_dir(model, version)))
    }
}

/// The publisher's `{"action": "drift"}`: every version with traffic in the current or the
/// previous window, and the merge of past windows (the schedule's), or one model's version
/// (`modelctl drift`; its live version when none is named).
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct DriftRequest {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub model: Option<ModelName>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub version: Option<u64>,
}

impl DriftRequest {
    pub fn is_drift(payload: &serde_json::Value) -> bool {
        payload.get("action").and_then(|a| a.as_str()) == Some("drift")
    }

    /// Computes the reports asked for, writes each beside its version and sets
    /// `modelpipe_feature_drift`; `settings` gives a model's from its own monitoring settings.
    /// The schedule's request also merges every version's past windows.
    pub fn apply(
        &self,
        registry: &Registry,
        settings: &dyn Fn(Monitoring) -> DriftSettings,
        now: SystemTime,
    ) -> Result<Vec<DriftReport>> {
        let window = settings(Monitoring::default()).window;
        let mut reports = Vec::new();
        let mut read: Option<(ModelName, DriftSettings)> = None;
        for due in self.due(registry, window, now)? {
            let model = &due.model;
            if due.report {
                // Versions come model by model: each model's settings are read once.
                let own = match &read {
                    Some((of, own)) if of == model => *own,
                    _ => {
                        let own = settings(registry.monitoring(model)?);
                        read = Some((model.clone(), own));
                        own
                    }
                };
                let report = registry.drift_report(model, due.version, &own, now)?;
                registry.write_drift_report(&report)?;
                record_metrics(&report);
                reports.push(report);
            }
            // Housekeeping: a failure is retried next tick and never costs a report.
            match registry.merge_past_windows(model, due.version, &due.unmerged, window, now) {
                Ok(merged) if !merged.is_empty() => {
                    tracing::info!(model = %model, version = due.version, windows = ?merged, "merged past drift windows");
                }
                Ok(_) => {}
                Err(e) => {
                    tracing::warn!(model = %model, version = due.version, error = %e, "could not merge past drift windows; next tick again");
                }
            }
        }
        Ok(reports)
    }

    /// What to do for which versions: the one asked for (its live version when none is
    /// named), or every version with traffic in the current or the previous window, and every
    /// version with past windows not merged yet.
    fn due(&self, registry: &Registry, window: Duration, now: SystemTime) -> Result<Vec<Due>> {
        if let Some(model) = &self.model {
            let version = match self.version {
                Some(v) => v,
                None => {
                    registry
                        .alias(model, &AliasName::default())?
                        .ok_or_else(|| RegistryError::NotLive {
                            model: model.clone(),
                        })?
                        .version
                }
            };
            return Ok(vec![Due {
                model: model.clone(),
                version,
                report: true,
                unmerged: Vec::new(),
            }]);
        }
        let current = window_of(now, window);
        let mut due = Vec::new();
        for model in registry.models()? {
            for version in registry.versions(&model)? {
                let unmerged = registry.unmerged_windows(&model, version)?;
                if !unmerged.is_empty() {
                    due.push(Due {
                        model: model.clone(),
                        version,
                        report: unmerged.iter().any(|&w| w + 1 >= current),
                        unmerged,
                    });
                }
            }
        }
        Ok(due)
    }
}

struct Due {
    model: ModelName,
    version: u64,
    /// Traffic in the current or the previous window (or asked for): report.
    report: bool,
    /// The windows holding environments' files.
    unmerged: Vec<u64>,
}

/// `modelpipe_feature_drift{model,version,feature}`: each feature's L∞ distance; and
/// `modelpipe_model_drift{model}`: the largest distance among flagged features (0 when none),
/// the metric the CDK app's per-model alarm watches.
pub fn record_metrics(report: &DriftReport) {
    for feature in &report.features {
        metrics::gauge!(
            FEATURE_DRIFT,
            "model" => report.model.as_str().to_string(),
            "version" => report.version.to_string(),
            "feature" => feature.feature.clone(),
        )
        .set(feature.distance);
    }
    metrics::gauge!(MODEL_DRIFT, "model" => report.model.as_str().to_string())
        .set(report.max_flagged_distance());
}

pub const FEATURE_DRIFT: &str = "modelpipe_feature_drift";
pub const MODEL_DRIFT: &str = "modelpipe_model_drift";

/// How drift is computed for one model.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct DriftSettings {
    pub threshold: f64,
    /// `DRIFT_WINDOW_MS` [3600000].
    pub window: Duration,
    /// `DRIFT_BASELINE_ROWS` [1000]: rows of traffic a baseline taken from traffic needs.
    pub baseline_rows: u64,
}

#[cfg(test)]
mod tests;
