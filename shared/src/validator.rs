//! Where an upload becomes a version: one S3 ObjectCreated record in, one [`Outcome`] out.
//!
//! key → gate (duplicate / older event?) → stream + hash into staging → integrity → checks →
//! commit under the model lock → publish → tag the object. A rejection writes nothing into
//! `versions/`, is recorded under the model and tagged on the object; it is an `Ok` outcome, so
//! Lambda does not retry it. Only transient failures (S3, the publisher, the filesystem) are
//! errors, and a retried event resumes where the failed one stopped.

use std::future::Future;
use std::time::Duration;

use aws_lambda_events::s3::{S3Event, S3EventRecord};
use base64::Engine as _;
use tracing::{info, warn};

use crate::ingest::{IngestError, stream_to_file};
use crate::object_store::{ObjectRef, ObjectStore, StoreError, tag_value};
use modelpipe_config::Config;
use modelpipe_core::model_name::{AliasName, ModelKey, ModelName, contract_key, decode_event_key};
use modelpipe_engine::checks::{Expectations, check_model};
use modelpipe_engine::contract::Contract;
use modelpipe_engine::{EngineKind, Limits};
use modelpipe_registry::publish::{PublisherRequest, PublisherResponse};
use modelpipe_registry::{
    Commit, Registry, RegistryError, Rejection, Source, UploadRecord, UploadStatus, now,
    sequencer_cmp,
};

/// Where the validator sends a publish: the publisher Lambda in AWS, a direct call locally.
pub trait PublishTarget: Send + Sync {
    fn publish(
        &self,
        request: PublisherRequest,
    ) -> impl Future<Output = Result<PublisherResponse, String>> + Send;
}

/// Publishes by applying the request to a registry in this process.
#[derive(Debug, Clone)]
pub struct LocalPublisher(pub Registry);

impl PublishTarget for LocalPublisher {
    async fn publish(&self, request: PublisherRequest) -> Result<PublisherResponse, String> {
        let registry = self.0.clone();
        tokio::task::spawn_blocking(move || {
            modelpipe_registry::publish::apply(&registry, &request, None)
        })
        .await
        .map_err(|e| e.to_string())?
        .map_err(|e| e.to_string())
    }
}

/// What became of one record.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
#[serde(tag = "outcome", rename_all = "lowercase")]
pub enum Outcome {
    /// Not a model upload (other prefix, bad name, not `.onnx`, not a create event).
    Ignored {
        key: String,
        reason: String,
    },
    /// This event (same key and sequencer) was already handled.
    Duplicate {
        model: ModelName,
        key: String,
    },
    /// A newer upload of the same key was already handled.
    Stale {
        model: ModelName,
        key: String,
    },
    Published {
        model: ModelName,
        version: u64,
        alias: AliasName,
    },
    Registered {
        model: ModelName,
        version: u64,
    },
    Rejected {
        model: ModelName,
        key: String,
        reason: String,
    },
}

#[derive(Debug, thiserror::Error)]
pub enum ValidatorError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Registry(#[from] RegistryError),
    #[error("reading the upload failed: {0}")]
    Read(std::io::Error),
    #[error("a validator task failed: {0}")]
    Task(String),
    #[error("publisher failed for {model} v{version}: {message}")]
    Publish {
        model: ModelName,
        version: u64,
        message: String,
    },
    #[error("{0} records failed; first: {1}")]
    Several(usize, Box<ValidatorError>),
}

/// Settings that come from an upload's metadata.
struct UploadOptions {
    alias: Option<AliasName>,
    allow_signature_change: bool,
    expected_sha256: Option<String>,
    /// `engine=tract|onnxruntime`: serve with this engine instead of the one measured fastest.
    engine: Option<EngineKind>,
}

impl UploadOptions {
    fn from_metadata(metadata: &std::collections::HashMap<String, String>) -> Result<Self, String> {
        let alias = match metadata.get("alias") {
            Some(a) => a.trim().parse::<AliasName>().map_err(|e| e.to_string())?,
            None => AliasName::live(),
        };
        let publish = flag(metadata, "publish", true)?;
        let allow_signature_change = flag(metadata, "allow-signature-change", false)?;
        let expected_sha256 = match metadata
            .get("sha256")
            .map(|s| s.trim().to_ascii_lowercase())
        {
            Some(s) if s.len() != 64 || !s.bytes().all(|b| b.is_ascii_hexdigit()) => {
                return Err(format!(
                    "metadata sha256={s:?} is not 64 hexadecimal digits"
                ));
            }
            other => other,
        };
        let engine = match metadata.get("engine") {
            Some(engine) => Some(
                engine
                    .parse::<EngineKind>()
                    .map_err(|e| format!("metadata engine={engine:?}: {e}"))?,
            ),
            None => None,
        };
        Ok(Self {
            alias: publish.then_some(alias),
            allow_signature_change,
            expected_sha256,
            engine,
        })
    }
}

/// A `true`/`false` metadata value, `default` when absent.
fn flag(
    metadata: &std::collections::HashMap<String, String>,
    name: &str,
    default: bool,
) -> Result<bool, String> {
    match metadata
        .get(name)
        .map(|v| v.trim().to_ascii_lowercase())
        .as_deref()
    {
        None => Ok(default),
        Some("true") => Ok(true),
        Some("false") => Ok(false),
        Some(other) => Err(format!("metadata {name}={other:?} must be true or false")),
    }
}

pub struct Validator<S, P> {
    registry: Registry,
    store: S,
    publisher: P,
    models_prefix: String,
    max_model_bytes: u64,
    limits: Limits,
}

/// Contracts larger than this are refused rather than read.
const MAX_CONTRACT_BYTES: u64 = 16 * 1024 * 1024;

impl<S: ObjectStore, P: PublishTarget> Validator<S, P> {
    pub fn new(registry: Registry, store: S, publisher: P, config: &Config) -> Self {
        Self {
            registry,
            store,
            publisher,
            models_prefix: config.models_prefix.clone(),
            max_model_bytes: config.max_model_bytes,
            limits: config.limits,
        }
    }

    pub fn registry(&self) -> &Registry {
        &self.registry
    }

    /// Handles every record; if any failed transiently, returns an error (so Lambda retries the
    /// event) after handling the others, which a retry will then find already done.
    pub async fn handle_event(&self, event: &S3Event) -> Result<Vec<Outcome>, ValidatorError> {
        let mut outcomes = Vec::new();
        let mut errors = Vec::new();
        for record in &event.records {
            match self.handle_record(record).await {
                Ok(outcome) => outcomes.push(outcome),
                Err(e) => {
                    warn!(error = %e, "record failed; the event will be retried");
                    errors.push(e);
                }
            }
        }
        match errors.len() {
            0 => Ok(outcomes),
            1 => Err(errors.remove(0)),
            n => Err(ValidatorError::Several(n, Box::new(errors.remove(0)))),
        }
    }

    pub async fn handle_record(&self, record: &S3EventRecord) -> Result<Outcome, ValidatorError> {
        let raw_key = record.s3.object.key.clone().unwrap_or_default();
        let key = decode_event_key(&raw_key);
        let ignored = |reason: String| {
            info!(key = %key, %reason, "ignored");
            Ok(Outcome::Ignored {
                key: key.clone(),
                reason,
            })
        };
        let event_name = record.event_name.as_deref().unwrap_or_default();
        if !event_name.starts_with("ObjectCreated") {
            return ignored(format!(
                "event {event_name:?} is not an ObjectCreated event"
            ));
        }
        let Some(bucket) = record.s3.bucket.name.clone() else {
            return ignored("the event names no bucket".into());
        };
        let model = match ModelKey::parse(&key, &self.models_prefix) {
            Ok(parsed) => parsed.model,
            Err(e) => return ignored(e.to_string()),
        };
        let object = ObjectRef {
            bucket,
            key: key.clone(),
            version_id: record
                .s3
                .object
                .version_id
                .clone()
                .filter(|v| !v.is_empty() && v != "null"),
        };
        let sequencer = record.s3.object.sequencer.clone();
        let source = Source {
            bucket: object.bucket.clone(),
            key: key.clone(),
            version_id: object.version_id.clone(),
            etag: record.s3.object.e_tag.clone(),
            sequencer: sequencer.clone(),
        };
        info!(model = %model, key = %key, sequencer = sequencer.as_deref().unwrap_or("-"), "upload received");

        match self.gate(&model, &key, sequencer.as_deref())? {
            Gate::Proceed => {}
            Gate::Resume(record) => return self.resume(&model, &object, record).await,
            Gate::Duplicate => {
                info!(model = %model, key = %key, "duplicate event: already handled");
                return Ok(Outcome::Duplicate { model, key });
            }
            Gate::Stale => {
                info!(model = %model, key = %key, "older event: a newer upload of this key was already handled");
                return Ok(Outcome::Stale { model, key });
            }
        }

        let fetched = match self.store.get(&object).await {
            Ok(fetched) => fetched,
            Err(StoreError::NotFound { .. }) => {
                return ignored("the object no longer exists".into());
            }
            Err(e) => return Err(e.into()),
        };
        let mut source = source;
        source.etag = fetched.etag.clone().or(source.etag);
        source.version_id = fetched.version_id.clone().or(source.version_id);
        let reject = |reason: String, sha256: Option<String>| {
            self.reject(&model, &object, &source, reason, sha256)
        };

        let options = match UploadOptions::from_metadata(&fetched.metadata) {
            Ok(options) => options,
            Err(reason) => return reject(reason, None).await,
        };
        if let Some(size) = fetched.size.filter(|&s| s > self.max_model_bytes) {
            return reject(
                format!(
                    "the upload has {size} bytes, more than MAX_MODEL_BYTES ({})",
                    self.max_model_bytes
                ),
                None,
            )
            .await;
        }

        let swept = self.registry.sweep_staging(&model, STAGING_MAX_AGE)?;
        if swept > 0 {
            info!(model = %model, swept, "removed staging leftovers of crashed ingests");
        }
        let staging = self.registry.stage(&model)?;
        let ingested =
            match stream_to_file(fetched.body, &staging.model_path(), self.max_model_bytes).await {
                Ok(ingested) => ingested,
                Err(e @ IngestError::TooLarge { .. }) => return reject(e.to_string(), None).await,
                Err(IngestError::Read(e)) => return Err(ValidatorError::Read(e)),
                Err(IngestError::Write(e)) => {
                    return Err(RegistryError::Io {
                        location: staging.model_path().display().to_string(),
                        source: e,
                    }
                    .into());
                }
            };
        let sha256 = ingested.digest.sha256.clone();
        info!(model = %model, bytes = ingested.digest.size, mb_per_s = format!("{:.0}", ingested.mb_per_s()), fsync_ms = ingested.fsync.as_millis() as u64, sha256 = %sha256, "hashed");

        if let Some(expected) = &options.expected_sha256
            && expected != &sha256
        {
            return reject(
                format!("sha256 metadata {expected} does not match the uploaded bytes ({sha256})"),
                Some(sha256),
            )
            .await;
        }
        if let Some(checksum) = fetched
            .checksum_sha256
            .as_deref()
            .filter(|c| !c.contains('-'))
        {
            let actual = base64::engine::general_purpose::STANDARD
                .encode(hex::decode(&sha256).expect("hex digest"));
            if checksum != actual {
                return reject(
                    format!(
                        "S3 SHA-256 checksum {checksum} does not match the bytes read ({actual})"
                    ),
                    Some(sha256),
                )
                .await;
            }
        }

        let contract = match self
            .store
            .get_small(
                &object.bucket,
                &contract_key(&self.models_prefix, &model),
                MAX_CONTRACT_BYTES,
            )
            .await?
        {
            None => None,
            Some(bytes) => match Contract::parse(&bytes) {
                Ok(contract) => Some(contract),
                Err(reason) => return reject(reason, Some(sha256)).await,
            },
        };
        let compare_alias = options.alias.clone().unwrap_or_default();
        let live = match self.registry.alias(&model, &compare_alias)? {
            Some(alias) => Some((
                alias.version,
                self.registry.manifest(&model, alias.version)?.signature,
            )),
            None => None,
        };

        let started = std::time::Instant::now();
        let path = staging.model_path();
        let (allow, engine, limits) = (options.allow_signature_change, options.engine, self.limits);
        let checked = tokio::task::spawn_blocking(move || {
            let expect = Expectations {
                live: live.as_ref().map(|(v, s)| (*v, s)),
                contract: contract.as_ref(),
                allow_signature_change: allow,
                engine,
                limits,
            };
            let checked = check_model(&path, expect)?;
            let dir = path
                .parent()
                .expect("a staged model is in its staging directory");
            let compiled = checked.compile(dir);
            Ok::<_, modelpipe_engine::checks::CheckError>((checked, compiled))
        })
        .await
        .map_err(|e| ValidatorError::Task(e.to_string()))?;
        let (checked, compiled) = match checked {
            Ok(checked) => checked,
            Err(e) => return reject(e.to_string(), Some(sha256)).await,
        };
        let choice = &checked.choice;
        info!(model = %model, ms = started.elapsed().as_millis() as u64, load_ms = checked.engine.load_time.as_millis() as u64, engine = %choice.engine, reason = %choice.reason, "validated");
        match (&choice.agreement, &compiled) {
            (Some(agreement), _) if !agreement.agree => {
                warn!(model = %model, difference = agreement.difference.as_deref().unwrap_or("-"), "tract and onnxruntime disagree: onnxruntime serves");
            }
            (_, Some(compiled)) => {
                info!(model = %model, layout = ?compiled.layout.layout, plain_us = compiled.layout.plain_us, nhwc_us = compiled.layout.nhwc_us, artifact_load_ms = compiled.artifact_load.map(|d| d.as_millis() as u64), "compiled for tract");
                if let Some(reason) = &compiled.no_artifact {
                    warn!(model = %model, reason = %reason, "no compiled artifact: inference will load model.onnx");
                }
            }
            _ => {}
        }

        let new = checked.new_version(ingested.digest.clone(), source, compiled);
        drop(checked);
        let registry = self.registry.clone();
        let (model_c, key_c, seq_c, alias_c) = (
            model.clone(),
            key.clone(),
            sequencer.clone(),
            options.alias.clone(),
        );
        let committed = tokio::task::spawn_blocking(move || -> Result<Option<UploadRecord>, RegistryError> {
            let locked = registry.lock(&model_c)?;
            // Re-checked under the lock: a newer upload of this key may have finished meanwhile.
            if let Some(seen) = registry.upload_record(&model_c, &key_c)?
                && is_older(seq_c.as_deref(), seen.sequencer.as_deref())
            {
                return Ok(None);
            }
            let commit = locked.commit(staging, new)?;
            if let Commit::Created(version) = commit {
                info!(model = %model_c, version, "version committed");
            } else {
                info!(model = %model_c, version = commit.version(), "identical bytes: no new version");
            }
            let record = UploadRecord {
                key: key_c,
                sequencer: seq_c,
                status: if alias_c.is_some() { UploadStatus::Committed } else { UploadStatus::Registered },
                version: Some(commit.version()),
                alias: alias_c,
                updated_at: now(),
            };
            locked.write_upload_record(&record)?;
            Ok(Some(record))
        })
        .await
        .map_err(|e| ValidatorError::Task(e.to_string()))??;
        let Some(record) = committed else {
            info!(model = %model, key = %key, "older event: a newer upload of this key finished first");
            return Ok(Outcome::Stale { model, key });
        };
        self.resume(&model, &object, record).await
    }

    /// Finishes a committed upload: publishes it if asked, records the outcome, tags the object.
    async fn resume(
        &self,
        model: &ModelName,
        object: &ObjectRef,
        record: UploadRecord,
    ) -> Result<Outcome, ValidatorError> {
        let version = record.version.expect("a committed upload has a version");
        let outcome = match (record.status, record.alias.clone()) {
            (UploadStatus::Committed, Some(alias)) => {
                let request = PublisherRequest::Publish {
                    model: model.clone(),
                    version,
                    alias: alias.clone(),
                    reason: Some(format!("upload of {}", object.key)),
                };
                let answer = self.publisher.publish(request).await.map_err(|message| {
                    ValidatorError::Publish {
                        model: model.clone(),
                        version,
                        message,
                    }
                })?;
                info!(model = %model, alias = %alias, from = ?answer.previous, to = answer.version, "alias moved");
                self.finish(
                    model,
                    UploadRecord {
                        status: UploadStatus::Published,
                        updated_at: now(),
                        ..record
                    },
                )?;
                Outcome::Published {
                    model: model.clone(),
                    version,
                    alias: alias.clone(),
                }
            }
            _ => Outcome::Registered {
                model: model.clone(),
                version,
            },
        };
        let status = match outcome {
            Outcome::Published { .. } => "published",
            _ => "registered",
        };
        self.tag(
            object,
            &[
                ("modelpipe-status", status.into()),
                ("modelpipe-version", version.to_string()),
            ],
        )
        .await;
        Ok(outcome)
    }

    fn finish(&self, model: &ModelName, record: UploadRecord) -> Result<(), RegistryError> {
        let locked = self.registry.lock(model)?;
        locked.write_upload_record(&record)
    }

    async fn reject(
        &self,
        model: &ModelName,
        object: &ObjectRef,
        source: &Source,
        reason: String,
        sha256: Option<String>,
    ) -> Result<Outcome, ValidatorError> {
        warn!(model = %model, key = %object.key, %reason, "rejected");
        let registry = self.registry.clone();
        let (m, src, why) = (model.clone(), source.clone(), reason.clone());
        tokio::task::spawn_blocking(move || -> Result<(), RegistryError> {
            let locked = registry.lock(&m)?;
            locked.append_rejection(&Rejection {
                key: src.key.clone(),
                sequencer: src.sequencer.clone(),
                sha256,
                reason: why,
                at: now(),
            })?;
            locked.write_upload_record(&UploadRecord {
                key: src.key,
                sequencer: src.sequencer,
                status: UploadStatus::Rejected,
                version: None,
                alias: None,
                updated_at: now(),
            })
        })
        .await
        .map_err(|e| ValidatorError::Task(e.to_string()))??;
        self.tag(
            object,
            &[
                ("modelpipe-status", "rejected".into()),
                ("modelpipe-reason", tag_value(&reason)),
            ],
        )
        .await;
        Ok(Outcome::Rejected {
            model: model.clone(),
            key: object.key.clone(),
            reason,
        })
    }

    async fn tag(&self, object: &ObjectRef, tags: &[(&str, String)]) {
        if let Err(e) = self.store.tag(object, tags).await {
            warn!(key = %object.key, error = %e, "could not tag the object with its outcome");
        }
    }

    fn gate(
        &self,
        model: &ModelName,
        key: &str,
        sequencer: Option<&str>,
    ) -> Result<Gate, RegistryError> {
        let Some(seen) = self.registry.upload_record(model, key)? else {
            return Ok(Gate::Proceed);
        };
        if is_older(sequencer, seen.sequencer.as_deref()) {
            return Ok(Gate::Stale);
        }
        if sequencer.is_some() && sequencer == seen.sequencer.as_deref() {
            return Ok(if seen.status == UploadStatus::Committed {
                Gate::Resume(seen)
            } else {
                Gate::Duplicate
            });
        }
        Ok(Gate::Proceed)
    }
}

enum Gate {
    Proceed,
    Resume(UploadRecord),
    Duplicate,
    Stale,
}

/// Is an event with sequencer `ours` older than the one already handled?
fn is_older(ours: Option<&str>, seen: Option<&str>) -> bool {
    matches!((ours, seen), (Some(a), Some(b)) if sequencer_cmp(a, b) == std::cmp::Ordering::Less)
}

/// How long a staging directory may sit before it counts as a crashed ingest's leftover.
pub const STAGING_MAX_AGE: Duration = Duration::from_secs(3600);
