//! The variables of data capture and drift: what share of live requests is captured when a
//! model's contract names none, where the records go, how much an environment may hold, and
//! how drift windows and baselines are cut.

use std::time::Duration;

use super::{ConfigError, parse};
use modelpipe_registry::drift::{DriftSettings, Monitoring};

#[derive(Debug, Clone, PartialEq)]
pub struct MonitoringConfig {
    /// `CAPTURE_SHARE` [0] and `DRIFT_THRESHOLD` [0.1]: the settings of models whose contract
    /// names none.
    pub defaults: Monitoring,
    /// `CAPTURE_BUCKET`: the bucket capture objects are written to (none: records are not
    /// written, sampled requests still feed the drift profiles).
    pub bucket: Option<String>,
    /// `CAPTURE_PREFIX` [capture/]: their keys' prefix.
    pub prefix: String,
    /// `CAPTURE_MAX_BODY_BYTES` [65536]: a longer body is kept as its first bytes, base64, and
    /// marked truncated.
    pub max_body_bytes: usize,
    /// `CAPTURE_BUFFER_BYTES` [8 MiB]: what an environment holds before writing, at most;
    /// samples past it are dropped and counted.
    pub buffer_bytes: usize,
    /// `CAPTURE_OBJECT_BYTES` [1 MiB]: a version's records are written once they reach this
    /// (uncompressed)…
    pub object_bytes: usize,
    /// `CAPTURE_FLUSH_MS` [60000]: …or once the oldest is this old; drift profiles are written
    /// at the same pace.
    pub flush_age: Duration,
    /// `DRIFT_WINDOW_MS` [3600000]: drift profiles are kept per window of this length.
    pub drift_window: Duration,
    /// `DRIFT_BASELINE_ROWS` [1000]: rows of traffic a baseline taken from traffic needs.
    pub baseline_rows: u64,
}

/// The documented defaults (every variable unset).
impl Default for MonitoringConfig {
    fn default() -> Self {
        Self::from_lookup(&|_| None).expect("the defaults are valid")
    }
}

impl MonitoringConfig {
    pub(super) fn from_lookup(get: &impl Fn(&str) -> Option<String>) -> Result<Self, ConfigError> {
        let defaults = Monitoring {
            capture_share: Some(parse("CAPTURE_SHARE", get("CAPTURE_SHARE"), 0.0)?),
            drift_threshold: Some(parse(
                "DRIFT_THRESHOLD",
                get("DRIFT_THRESHOLD"),
                modelpipe_drift::DEFAULT_THRESHOLD,
            )?),
        };
        defaults.check().map_err(|why| ConfigError {
            name: "CAPTURE_SHARE or DRIFT_THRESHOLD",
            value: format!("{:?} {:?}", get("CAPTURE_SHARE"), get("DRIFT_THRESHOLD")),
            why,
        })?;
        let positive_ms = |name: &'static str, default: u64| -> Result<Duration, ConfigError> {
            match parse(name, get(name), default)? {
                0 => Err(ConfigError {
                    name,
                    value: "0".into(),
                    why: "it must be at least 1".into(),
                }),
                ms => Ok(Duration::from_millis(ms)),
            }
        };
        let mut prefix = get("CAPTURE_PREFIX").unwrap_or_else(|| "capture/".into());
        if !prefix.is_empty() && !prefix.ends_with('/') {
            prefix.push('/');
        }
        Ok(Self {
            defaults,
            bucket: get("CAPTURE_BUCKET").filter(|v| !v.trim().is_empty()),
            prefix,
            max_body_bytes: parse(
                "CAPTURE_MAX_BODY_BYTES",
                get("CAPTURE_MAX_BODY_BYTES"),
                64 << 10,
            )?,
            buffer_bytes: parse("CAPTURE_BUFFER_BYTES", get("CAPTURE_BUFFER_BYTES"), 8 << 20)?,
            object_bytes: parse("CAPTURE_OBJECT_BYTES", get("CAPTURE_OBJECT_BYTES"), 1 << 20)?,
            flush_age: positive_ms("CAPTURE_FLUSH_MS", 60_000)?,
            drift_window: positive_ms("DRIFT_WINDOW_MS", 3_600_000)?,
            baseline_rows: parse("DRIFT_BASELINE_ROWS", get("DRIFT_BASELINE_ROWS"), 1000)?,
        })
    }

    /// How drift is computed for a model with `own` settings.
    pub fn drift_settings(&self, own: Monitoring) -> DriftSettings {
        DriftSettings {
            threshold: own
                .or(self.defaults)
                .drift_threshold
                .unwrap_or(modelpipe_drift::DEFAULT_THRESHOLD),
            window: self.drift_window,
            baseline_rows: self.baseline_rows,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_capture_nothing_and_flag_at_model_monitors_threshold() {
        let config = MonitoringConfig::from_lookup(&|_| None).unwrap();
        assert_eq!(config.defaults.capture_share, Some(0.0));
        assert_eq!(config.defaults.drift_threshold, Some(0.1));
        assert_eq!(config.prefix, "capture/");
        assert_eq!(config.flush_age, Duration::from_secs(60));
        assert_eq!(config.bucket, None);
        let own = Monitoring {
            capture_share: None,
            drift_threshold: Some(0.3),
        };
        assert_eq!(config.drift_settings(own).threshold, 0.3);
    }

    #[test]
    fn a_share_outside_zero_to_one_is_refused() {
        let err = MonitoringConfig::from_lookup(&|n| (n == "CAPTURE_SHARE").then(|| "10".into()))
            .unwrap_err();
        assert!(err.to_string().contains("between 0 and 1"), "{err}");
        let err = MonitoringConfig::from_lookup(&|n| (n == "CAPTURE_FLUSH_MS").then(|| "0".into()))
            .unwrap_err();
        assert!(err.to_string().contains("CAPTURE_FLUSH_MS"), "{err}");
    }
}
