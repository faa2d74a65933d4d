//! What a process sets up when it starts: the environment variables of the contract, read once
//! with their defaults ([`Config`]), and its logging ([`telemetry`]).

mod monitoring;
pub mod telemetry;

use std::time::Duration;

use modelpipe_core::limits::{Limits, MAX_MODEL_NODES, MODEL_LOAD_BUDGET};
use modelpipe_core::model_name::ModelName;
use modelpipe_registry::{FileCacheConfig, Location, Registry, RegistryError};
use modelpipe_signing::SignerPolicy;

pub use self::monitoring::MonitoringConfig;

#[derive(Debug, Clone)]
pub struct Config {
    /// `MODEL_ROOT` [/mnt/models]: the registry, a directory or `s3://bucket/prefix`.
    pub model_root: Location,
    /// `TELEMETRY_ROOT` [the registry]: where inference environments write their rollout
    /// evidence and drift profiles, a directory or `s3://bucket/prefix`.
    pub telemetry_root: Option<Location>,
    /// `MODEL_FILE_CACHE_BYTES` [80 % of /tmp]: local copies of an S3 registry's model files.
    pub model_files: FileCacheConfig,
    /// `MODELS_PREFIX` [models/]: where uploads are watched in the bucket.
    pub models_prefix: String,
    /// `MAX_MODEL_BYTES` [2 GiB]: larger uploads are refused before being read.
    pub max_model_bytes: u64,
    /// `PUBLISHER_FUNCTION`: the publisher Lambda the validator invokes.
    pub publisher_function: Option<String>,
    /// `RELOAD_CHECK_MS` [1000]: how often a request may look at the alias.
    pub reload_check: Duration,
    /// `EVIDENCE_WRITE_MS` [RELOAD_CHECK_MS]: how often an inference environment writes its
    /// rollout evidence (each write a PUT when `TELEMETRY_ROOT` is on S3).
    pub evidence_write: Duration,
    /// `ADOPT_SPREAD_MS` [10000]: the window over which a fleet of inference environments
    /// adopts a new version, each at an offset derived from its identity (docs/fleet.md).
    pub adopt_spread: Duration,
    /// `ENGINE_THREADS` [every vCPU]: the threads each engine runs a model on, in every entry
    /// point (the Lambda functions and modelctl alike).
    pub engine_threads: Option<usize>,
    /// `PRELOAD_MODELS`: models loaded during init.
    pub preload_models: Vec<ModelName>,
    /// `MODEL_CACHE_BYTES`: budget for models loaded on demand. Unset: half the function's
    /// memory in Lambda (`AWS_LAMBDA_FUNCTION_MEMORY_SIZE`), unbounded elsewhere.
    pub model_cache_bytes: Option<u64>,
    /// The Lambda function's memory (`AWS_LAMBDA_FUNCTION_MEMORY_SIZE`, set by Lambda), if any.
    pub function_memory_bytes: Option<u64>,
    /// `MAX_REQUEST_BYTES` [10 MiB, API Gateway's limit]: larger inference bodies get 413.
    pub max_request_bytes: usize,
    /// `MAX_MODEL_NODES` [10000] and `MODEL_LOAD_BUDGET_MS` [30000]: the work one model may
    /// cost an engine (see [`Limits`]).
    pub limits: Limits,
    /// `METRICS_NAMESPACE` [modelpipe]: the CloudWatch namespace of the inference function's
    /// EMF metrics.
    pub metrics_namespace: String,
    /// `SIGNING_POLICY` (JSON, as a contract's `signing`): the signer policy of models whose
    /// contract names none.
    pub signing_policy: Option<SignerPolicy>,
    /// `SIGNATURE_WAIT_MS` [900000]: how long an upload waits for the signature its policy
    /// requires before the publisher's `expire-uploads` rejects it.
    pub signature_wait: Duration,
    /// Data capture and drift (`CAPTURE_*`, `DRIFT_*`).
    pub monitoring: MonitoringConfig,
}

#[derive(Debug, thiserror::Error)]
#[error("environment variable {name}={value:?} is invalid: {why}")]
pub struct ConfigError {
    name: &'static str,
    value: String,
    why: String,
}

impl Config {
    /// The registry at `MODEL_ROOT`, its environments' files at `TELEMETRY_ROOT` if set.
    pub fn open_registry(&self) -> Result<Registry, RegistryError> {
        Registry::open_at(&self.model_root, &self.model_files)?
            .with_signing_default(self.signing_policy.clone())
            .with_telemetry(self.telemetry_root.as_ref(), None)
    }

    pub fn from_env() -> Result<Self, ConfigError> {
        Self::from_lookup(|name| std::env::var(name).ok())
    }

    pub fn from_lookup(get: impl Fn(&str) -> Option<String>) -> Result<Self, ConfigError> {
        let preload_models = preload_models(get("PRELOAD_MODELS").unwrap_or_default())?;
        let lambda_memory_bytes = match get("AWS_LAMBDA_FUNCTION_MEMORY_SIZE") {
            Some(mb) => Some(parse::<u64>("AWS_LAMBDA_FUNCTION_MEMORY_SIZE", Some(mb), 0)? << 20),
            None => None,
        };
        let reload_check_ms = parse("RELOAD_CHECK_MS", get("RELOAD_CHECK_MS"), 1000)?;
        let mut models_prefix = get("MODELS_PREFIX").unwrap_or_else(|| "models/".into());
        if !models_prefix.is_empty() && !models_prefix.ends_with('/') {
            models_prefix.push('/');
        }
        Ok(Self {
            model_root: parse(
                "MODEL_ROOT",
                get("MODEL_ROOT"),
                Location::Dir("/mnt/models".into()),
            )?,
            telemetry_root: telemetry_root(get("TELEMETRY_ROOT"))?,
            model_files: FileCacheConfig {
                bytes: match get("MODEL_FILE_CACHE_BYTES") {
                    Some(v) if !v.is_empty() => Some(parse("MODEL_FILE_CACHE_BYTES", Some(v), 0)?),
                    _ => None,
                },
                ..FileCacheConfig::default()
            },
            models_prefix,
            max_model_bytes: parse(
                "MAX_MODEL_BYTES",
                get("MAX_MODEL_BYTES"),
                2 * 1024 * 1024 * 1024,
            )?,
            publisher_function: get("PUBLISHER_FUNCTION").filter(|v| !v.is_empty()),
            reload_check: Duration::from_millis(reload_check_ms),
            evidence_write: Duration::from_millis(parse(
                "EVIDENCE_WRITE_MS",
                get("EVIDENCE_WRITE_MS"),
                reload_check_ms,
            )?),
            adopt_spread: Duration::from_millis(parse(
                "ADOPT_SPREAD_MS",
                get("ADOPT_SPREAD_MS"),
                10_000,
            )?),
            engine_threads: engine_threads(get("ENGINE_THREADS"))?,
            preload_models,
            model_cache_bytes: match get("MODEL_CACHE_BYTES") {
                Some(v) if !v.is_empty() => Some(parse("MODEL_CACHE_BYTES", Some(v), 0)?),
                _ => lambda_memory_bytes.map(|bytes| bytes / 2),
            },
            function_memory_bytes: lambda_memory_bytes,
            max_request_bytes: parse(
                "MAX_REQUEST_BYTES",
                get("MAX_REQUEST_BYTES"),
                10 * 1024 * 1024,
            )?,
            limits: Limits {
                max_nodes: parse("MAX_MODEL_NODES", get("MAX_MODEL_NODES"), MAX_MODEL_NODES)?,
                load_budget: Duration::from_millis(parse(
                    "MODEL_LOAD_BUDGET_MS",
                    get("MODEL_LOAD_BUDGET_MS"),
                    MODEL_LOAD_BUDGET.as_millis() as u64,
                )?),
                // Two engines' copies (~2.5× the file) fit only below a quarter of the memory.
                compare_max_bytes: lambda_memory_bytes.map_or(u64::MAX, |bytes| bytes / 4),
            },
            metrics_namespace: get("METRICS_NAMESPACE")
                .filter(|v| !v.is_empty())
                .unwrap_or_else(|| "modelpipe".into()),
            signing_policy: signing_policy(get("SIGNING_POLICY"))?,
            signature_wait: Duration::from_millis(parse(
                "SIGNATURE_WAIT_MS",
                get("SIGNATURE_WAIT_MS"),
                900_000,
            )?),
            monitoring: MonitoringConfig::from_lookup(&get)?,
        })
    }
}

/// `SIGNING_POLICY`, parsed and its keys and roots checked; unset or blank: none.
pub fn signing_policy(value: Option<String>) -> Result<Option<SignerPolicy>, ConfigError> {
    match value.filter(|v| !v.trim().is_empty()) {
        None => Ok(None),
        Some(text) => SignerPolicy::from_json(&text)
            .map(Some)
            .map_err(|why| ConfigError {
                name: "SIGNING_POLICY",
                value: text,
                why,
            }),
    }
}

/// `TELEMETRY_ROOT`, a directory or `s3://bucket/prefix`; unset or blank: none (the registry).
pub fn telemetry_root(value: Option<String>) -> Result<Option<Location>, ConfigError> {
    match value.filter(|v| !v.trim().is_empty()) {
        None => Ok(None),
        some => parse("TELEMETRY_ROOT", some, Location::Dir(Default::default())).map(Some),
    }
}

/// `value` as a `T`, or `default` when it is unset or blank; the error names the variable.
fn parse<T: std::str::FromStr>(
    name: &'static str,
    value: Option<String>,
    default: T,
) -> Result<T, ConfigError>
where
    T::Err: std::fmt::Display,
{
    match value.filter(|v| !v.trim().is_empty()) {
        None => Ok(default),
        Some(v) => v.trim().parse().map_err(|e: T::Err| ConfigError {
            name,
            value: v.clone(),
            why: e.to_string(),
        }),
    }
}

/// `PRELOAD_MODELS`: a comma list of model names.
fn preload_models(preload: String) -> Result<Vec<ModelName>, ConfigError> {
    preload
        .split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(|s| {
            s.parse()
                .map_err(|e: modelpipe_core::NameError| ConfigError {
                    name: "PRELOAD_MODELS",
                    value: preload.clone(),
                    why: e.to_string(),
                })
        })
        .collect()
}

/// `ENGINE_THREADS`: a positive count, or every vCPU when unset.
fn engine_threads(value: Option<String>) -> Result<Option<usize>, ConfigError> {
    match parse("ENGINE_THREADS", value.clone(), 0)? {
        0 if value.as_deref().is_some_and(|v| !v.trim().is_empty()) => Err(ConfigError {
            name: "ENGINE_THREADS",
            value: value.unwrap_or_default(),
            why: "at least one thread".into(),
        }),
        0 => Ok(None),
        n => Ok(Some(n)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_match_the_contract() {
        let config = Config::from_lookup(|_| None).unwrap();
        assert_eq!(config.model_root, Location::Dir("/mnt/models".into()));
        assert_eq!(config.models_prefix, "models/");
        assert_eq!(config.max_model_bytes, 2147483648);
        assert_eq!(config.reload_check, Duration::from_millis(1000));
        assert_eq!(config.evidence_write, config.reload_check);
        let tuned = Config::from_lookup(|n| match n {
            "RELOAD_CHECK_MS" => Some("250".into()),
            "EVIDENCE_WRITE_MS" => Some("10000".into()),
            "TELEMETRY_ROOT" => Some("s3://uploads/telemetry".into()),
            _ => None,
        })
        .unwrap();
        assert_eq!(tuned.reload_check, Duration::from_millis(250));
        assert_eq!(tuned.evidence_write, Duration::from_secs(10));
        assert_eq!(
            tuned.telemetry_root,
            Some("s3://uploads/telemetry".parse().unwrap())
        );
        assert_eq!(config.telemetry_root, None, "the registry");
        assert_eq!(config.metrics_namespace, "modelpipe");
        assert_eq!(config.adopt_spread, Duration::from_secs(10));
        assert_eq!(config.engine_threads, None, "every vCPU");
        assert!(config.preload_models.is_empty());
        assert_eq!(config.model_cache_bytes, None);
        assert_eq!(config.limits.max_nodes, 10_000);
        assert_eq!(config.limits.load_budget, Duration::from_secs(30));
    }

    #[test]
    fn the_model_cache_defaults_to_half_the_lambda_memory() {
        let in_lambda = |cache: Option<&str>| {
            Config::from_lookup(|n| match n {
                "AWS_LAMBDA_FUNCTION_MEMORY_SIZE" => Some("2048".into()),
                "MODEL_CACHE_BYTES" => cache.map(str::to_string),
                _ => None,
            })
            .unwrap()
            .model_cache_bytes
        };
        assert_eq!(in_lambda(None), Some(1024 * 1024 * 1024));
        assert_eq!(in_lambda(Some("5000")), Some(5000));
    }

    #[test]
    fn engines_are_compared_below_a_quarter_of_the_lambda_memory() {
        let limits = |memory: Option<&str>| {
            Config::from_lookup(|n| match n {
                "AWS_LAMBDA_FUNCTION_MEMORY_SIZE" => memory.map(str::to_string),
                _ => None,
            })
            .unwrap()
            .limits
            .compare_max_bytes
        };
        assert_eq!(limits(Some("2048")), 512 << 20);
        assert_eq!(limits(None), u64::MAX, "unbounded outside Lambda");
    }

    #[test]
    fn a_signing_policy_is_parsed_and_a_bad_one_names_its_entry() {
        let config = Config::from_lookup(|_| None).unwrap();
        assert_eq!(config.signing_policy, None);
        assert_eq!(config.signature_wait, Duration::from_secs(900));
        let with = |policy: &str| {
            Config::from_lookup(|n| (n == "SIGNING_POLICY").then(|| policy.to_string()))
        };
        let required = with(r#"{"required": true}"#).unwrap();
        assert!(required.signing_policy.unwrap().required);
        let err = with(r#"{"required": true, "keys": ["not a key"]}"#).unwrap_err();
        assert!(err.to_string().contains("SIGNING_POLICY"), "{err}");
        assert!(err.to_string().contains("signing key 1"), "{err}");
        assert!(
            with(r#"{"requird": true}"#).is_err(),
            "unknown fields are refused"
        );
    }

    #[test]
    fn bad_values_name_the_variable() {
        let err =
            Config::from_lookup(|n| (n == "RELOAD_CHECK_MS").then(|| "soon".into())).unwrap_err();
        assert!(
            err.to_string()
                .starts_with("environment variable RELOAD_CHECK_MS=\"soon\" is invalid")
        );
        let err = Config::from_lookup(|n| (n == "PRELOAD_MODELS").then(|| "iris,Bad".into()))
            .unwrap_err();
        assert!(err.to_string().contains("PRELOAD_MODELS"));
        let err = Config::from_lookup(|n| (n == "ENGINE_THREADS").then(|| "0".into())).unwrap_err();
        assert!(err.to_string().contains("at least one thread"), "{err}");
        let err = Config::from_lookup(|n| (n == "MODEL_ROOT").then(|| "s3://".into())).unwrap_err();
        assert!(err.to_string().contains("no bucket name"), "{err}");
    }
}
