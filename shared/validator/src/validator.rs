//! Where an upload becomes a version: one S3 ObjectCreated record in, one [`Outcome`] out.
//!
//! The stages of [`Validator::handle_record`]: `parse` (key → model) → `gate` (duplicate, older
//! event, or a committed upload to finish?) → `fetch` (metadata, size, the model's contract) →
//! `stream` (hash into staging) → `check_integrity` → `check_signature` (`signatures`: the
//! `.sig` beside it against the model's signer policy, or wait for it) → `check`
//! (`crate::version`: the engine's checks and what ingest prepares) → `commit` (under the model
//! lock) → `finish_upload` (publish or start a rollout, tag the object). A signature's upload
//! resumes a model waiting for it; a contract's upload records its signer policy. A rejection
//! writes nothing into
//! `versions/`, is recorded under the model and tagged on the object; it is an `Ok` outcome, so
//! Lambda does not retry it. Only transient failures (S3, the publisher, the filesystem) are
//! errors, and a retried event resumes where the failed one stopped.

use std::collections::BTreeMap;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use aws_lambda_events::s3::{S3Event, S3EventRecord};
use base64::Engine as _;
use tracing::{info, warn};

use crate::ingest::{IngestError, stream_to_file};
use crate::object_store::{Object, ObjectRef, ObjectStore, StoreError, tag_value};
use crate::version::{check_and_prepare, new_version};
use modelpipe_config::Config;
use modelpipe_core::digest::Digest;
use modelpipe_core::model_name::{AliasName, ModelKey, ModelName, decode_event_key};
use modelpipe_core::time::Timestamp;

use self::baseline::BaselineUpload;
use self::signatures::{contract_monitoring, contract_of, signed_model};
use modelpipe_engine::checks::{Checked, Compiled, Expectations};
use modelpipe_engine::contract::Contract;
use modelpipe_engine::{EngineKind, Limits};
use modelpipe_registry::drift::{Baseline, Monitoring};
use modelpipe_registry::publish::{PublisherRequest, PublisherResponse};
use modelpipe_registry::rollout::Plan;
use modelpipe_registry::rollout::actions::RolloutRequest;
use modelpipe_registry::{
    Commit, Registry, RegistryError, Rejection, RequestedRollout, Signer, Source, Staging,
    UploadRecord, UploadStatus, now, sequencer_cmp,
};
use modelpipe_signing::SignerPolicy;

/// Where the validator sends a publish: the publisher Lambda in AWS, a direct call locally.
pub trait PublishTarget: Send + Sync {
    fn publish(
        &self,
        request: PublisherRequest,
    ) -> impl Future<Output = Result<PublisherResponse, String>> + Send;

    /// Starts a rollout (`rollout-start`); its id, or why it did not start.
    fn start_rollout(
        &self,
        request: RolloutRequest,
    ) -> impl Future<Output = Result<u64, String>> + Send;
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

    async fn start_rollout(&self, request: RolloutRequest) -> Result<u64, String> {
        let registry = self.0.clone();
        let answer = tokio::task::spawn_blocking(move || {
            modelpipe_registry::rollout::actions::apply(&registry, &request, None)
        })
        .await
        .map_err(|e| e.to_string())?
        .map_err(|e| e.to_string())?;
        Ok(answer.rollouts[0].rollout.id)
    }
}

/// What became of one record.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
#[serde(tag = "outcome", rename_all = "kebab-case")]
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
    /// Committed, and handed to a guarded rollout of the alias (`rollout=` metadata).
    RollingOut {
        model: ModelName,
        version: u64,
        alias: AliasName,
        rollout: u64,
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
    /// Checked as far as its signature, which the model's policy requires and which has not
    /// arrived: its `.sig` upload resumes it (until `SIGNATURE_WAIT_MS`).
    AwaitingSignature {
        model: ModelName,
        key: String,
    },
    /// The model's `contract.json` was read: its signer policy now holds the model's moves.
    ContractRead {
        model: ModelName,
        signed_by_policy: bool,
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
    /// `rollout=canary|shadow` (and `rollout-<setting>`): move the alias by a guarded rollout.
    rollout: Option<RequestedRollout>,
    /// Whether the metadata named `rollout` (`none` included): if not, the contract's default
    /// plan applies.
    rollout_named: bool,
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
        let rollout = match metadata.get("rollout").map(|p| p.trim()) {
            None | Some("none") => None,
            Some(plan) => {
                let settings: BTreeMap<String, String> = metadata
                    .iter()
                    .filter_map(|(k, v)| Some((k.strip_prefix("rollout-")?.to_string(), v.clone())))
                    .collect();
                let requested = RequestedRollout {
                    plan: plan.to_string(),
                    settings,
                };
                Plan::requested(&requested)
                    .map_err(|e| format!("metadata rollout={plan:?}: {e}"))?;
                Some(requested)
            }
        };
        Ok(Self {
            alias: publish.then_some(alias),
            allow_signature_change,
            expected_sha256,
            engine,
            rollout,
            rollout_named: metadata.contains_key("rollout"),
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
    /// `SIGNATURE_WAIT_MS`: how long an upload waits for the signature its policy requires.
    signature_wait: Duration,
}

/// Contracts larger than this are refused rather than read.

impl<S: ObjectStore, P: PublishTarget> Validator<S, P> {
    pub fn new(registry: Registry, store: S, publisher: P, config: &Config) -> Self {
        Self {
            registry,
            store,
            publisher,
            models_prefix: config.models_prefix.clone(),
            max_model_bytes: config.max_model_bytes,
            signature_wait: config.signature_wait,
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

    /// One record, through the stages the module doc lists; each stage either hands the next
    /// one what it needs or ends the record with its outcome ([`Stop`]).
    pub async fn handle_record(&self, record: &S3EventRecord) -> Result<Outcome, ValidatorError> {
        // Boxed: unboxed, the stages' nested futures make a caller's future (the Lambda
        // handler's) too deep for rustc's layout query limit.
        match Box::pin(self.stages(record)).await {
            Ok(outcome) | Err(Stop::Outcome(outcome)) => Ok(outcome),
            Err(Stop::Failed(error)) => Err(error),
        }
    }

    async fn stages(&self, record: &S3EventRecord) -> Result<Outcome, Stop> {
        match self.parse(record)? {
            Event::Model(upload) => self.model_stages(upload).await,
            Event::Signature(upload) => self.signature_arrived(upload).await,
            Event::Contract(upload) => self.contract_changed(upload).await,
        }
    }

    async fn model_stages(&self, upload: Upload) -> Result<Outcome, Stop> {
        self.gate(&upload).await?;
        let (upload, fetched, options) = self.fetch(upload).await?;
        let staged = self.stream(&upload, fetched).await?;
        self.check_integrity(&upload, &staged, &options).await?;
        let signer = self.check_signature(&upload, &staged, &options).await?;
        let checked = self.check(&upload, &staged, &options).await?;
        let record = self
            .commit(&upload, staged, checked, signer, &options)
            .await?;
        Ok(self
            .finish_upload(&upload.model, &upload.object, record)
            .await?)
    }

    /// What the record is about (a model, its signature, its contract) and its object, or why
    /// it is none of them.
    fn parse(&self, record: &S3EventRecord) -> Result<Event, Stop> {
        let key = decode_event_key(record.s3.object.key.as_deref().unwrap_or_default());
        let event_name = record.event_name.as_deref().unwrap_or_default();
        if !event_name.starts_with("ObjectCreated") {
            return Err(ignored(
                &key,
                format!("event {event_name:?} is not an ObjectCreated event"),
            ));
        }
        let Some(bucket) = record.s3.bucket.name.clone() else {
            return Err(ignored(&key, "the event names no bucket".into()));
        };
        let (kind, model) = match ModelKey::parse(&key, &self.models_prefix) {
            Ok(parsed) => (Event::Model as fn(Upload) -> Event, parsed.model),
            Err(e) => match (
                signed_model(&key, &self.models_prefix),
                contract_of(&key, &self.models_prefix),
            ) {
                (Some(model), _) => (Event::Signature as fn(Upload) -> Event, model),
                (_, Some(model)) => (Event::Contract as fn(Upload) -> Event, model),
                _ => return Err(ignored(&key, e.to_string())),
            },
        };
        let object = &record.s3.object;
        let version_id = object
            .version_id
            .clone()
            .filter(|v| !v.is_empty() && v != "null");
        let source = Source {
            bucket: bucket.clone(),
            key: key.clone(),
            version_id: version_id.clone(),
            etag: object.e_tag.clone(),
            sequencer: object.sequencer.clone(),
        };
        info!(model = %model, key = %key, sequencer = source.sequencer.as_deref().unwrap_or("-"), "upload received");
        Ok(kind(Upload {
            model,
            object: ObjectRef {
                bucket,
                key,
                version_id,
            },
            source,
        }))
    }

    /// Whether this event was handled before (a duplicate, an older event, or a commit whose
    /// publish is to be resumed).
    async fn gate(&self, upload: &Upload) -> Result<(), Stop> {
        let (model, key) = (&upload.model, &upload.object.key);
        let sequencer = upload.source.sequencer.as_deref();
        let Some(seen) = self.registry.upload_record(model, key)? else {
            return Ok(());
        };
        let (model, key) = (model.clone(), key.clone());
        if is_older(sequencer, seen.sequencer.as_deref()) {
            info!(model = %model, key = %key, "older event: a newer upload of this key was already handled");
            return Err(Stop::Outcome(Outcome::Stale { model, key }));
        }
        if sequencer.is_none()
            || sequencer != seen.sequencer.as_deref()
            || seen.status == UploadStatus::AwaitingSignature
        {
            return Ok(());
        }
        if seen.status == UploadStatus::Committed {
            return Err(self
                .finish_upload(&model, &upload.object, seen)
                .await
                .into());
        }
        info!(model = %model, key = %key, "duplicate event: already handled");
        Err(Stop::Outcome(Outcome::Duplicate { model, key }))
    }

    /// Opens the upload's body and reads its metadata; refuses bad metadata and an upload over
    /// `MAX_MODEL_BYTES` before reading a byte.
    async fn fetch(&self, mut upload: Upload) -> Result<(Upload, Object, FetchedOptions), Stop> {
        let fetched = match self.store.get(&upload.object).await {
            Ok(fetched) => fetched,
            Err(StoreError::NotFound { .. }) => {
                return Err(ignored(
                    &upload.object.key,
                    "the object no longer exists".into(),
                ));
            }
            Err(e) => return Err(ValidatorError::from(e).into()),
        };
        upload.source.etag = fetched.etag.clone().or(upload.source.etag);
        upload.source.version_id = fetched.version_id.clone().or(upload.source.version_id);
        let options = match UploadOptions::from_metadata(&fetched.metadata) {
            Ok(options) => options,
            Err(reason) => return Err(self.reject(&upload, reason, None).await),
        };
        if let Some(size) = fetched.size.filter(|&s| s > self.max_model_bytes) {
            let reason = format!(
                "the upload has {size} bytes, more than MAX_MODEL_BYTES ({})",
                self.max_model_bytes
            );
            return Err(self.reject(&upload, reason, None).await);
        }
        let contract = match self.fetch_contract(&upload).await? {
            Ok(contract) => contract,
            Err(reason) => return Err(self.reject(&upload, reason, None).await),
        };
        let baseline = match self.fetch_baseline(&upload).await? {
            Ok(baseline) => baseline,
            Err(reason) => return Err(self.reject(&upload, reason, None).await),
        };
        let options = FetchedOptions {
            upload: options,
            checksum_sha256: fetched.checksum_sha256.clone(),
            signer_policy: self.contract_policy(contract.as_ref()),
            monitoring: contract_monitoring(contract.as_ref()),
            contract,
            baseline,
        };
        Ok((upload, fetched, options))
    }

    /// Streams the body into a new staging directory, hashing it on the way.
    async fn stream(&self, upload: &Upload, fetched: Object) -> Result<Staged, Stop> {
        let model = &upload.model;
        let removed = self
            .registry
            .remove_model_leftovers(model, STAGING_MAX_AGE)
            .len();
        if removed > 0 {
            info!(model = %model, removed, "removed staging leftovers of crashed ingests");
        }
        let staging = self.registry.stage(model)?;
        let path = staging.model_path();
        let ingested = match stream_to_file(fetched.body, &path, self.max_model_bytes).await {
            Ok(ingested) => ingested,
            Err(e @ IngestError::TooLarge { .. }) => {
                return Err(self.reject(upload, e.to_string(), None).await);
            }
            Err(IngestError::Read(e)) => return Err(ValidatorError::Read(e).into()),
            Err(IngestError::Write(e)) => {
                let location = path.display().to_string();
                return Err(ValidatorError::from(RegistryError::Io {
                    location,
                    source: e,
                })
                .into());
            }
        };
        info!(
            model = %model,
            bytes = ingested.digest.size,
            mb_per_s = format!("{:.0}", ingested.mb_per_s()),
            fsync_ms = ingested.fsync.as_millis() as u64,
            sha256 = %ingested.digest.sha256,
            "hashed"
        );
        Ok(Staged {
            staging,
            digest: ingested.digest,
        })
    }

    /// The bytes read are the bytes sent: the `sha256` metadata and S3's own SHA-256 checksum,
    /// where either is present.
    async fn check_integrity(
        &self,
        upload: &Upload,
        staged: &Staged,
        options: &FetchedOptions,
    ) -> Result<(), Stop> {
        let sha256 = &staged.digest.sha256;
        if let Some(expected) = &options.upload.expected_sha256
            && expected != sha256
        {
            let reason =
                format!("sha256 metadata {expected} does not match the uploaded bytes ({sha256})");
            return Err(self.reject(upload, reason, Some(sha256.clone())).await);
        }
        let Some(checksum) = options
            .checksum_sha256
            .as_deref()
            .filter(|c| !c.contains('-'))
        else {
            return Ok(());
        };
        let actual = base64::engine::general_purpose::STANDARD
            .encode(hex::decode(sha256).expect("hex digest"));
        if checksum != actual {
            let reason =
                format!("S3 SHA-256 checksum {checksum} does not match the bytes read ({actual})");
            return Err(self.reject(upload, reason, Some(sha256.clone())).await);
        }
        Ok(())
    }

    /// The model's checks (`modelpipe_engine::checks`): loads, signature against the version
    /// the alias serves, the contract's golden examples, the engine choice; then what ingest
    /// adds for tract.
    async fn check(
        &self,
        upload: &Upload,
        staged: &Staged,
        options: &FetchedOptions,
    ) -> Result<Checks, Stop> {
        let model = &upload.model;
        let reject =
            |reason: String| self.reject(upload, reason, Some(staged.digest.sha256.clone()));
        let contract = options.contract.clone();
        let default_rollout = contract
            .as_ref()
            .and_then(|c| c.rollout.clone())
            .filter(|_| !options.upload.rollout_named);
        let compare_alias = options.upload.alias.clone().unwrap_or_default();
        let live = match self.registry.alias(model, &compare_alias)? {
            Some(alias) => Some((
                alias.version,
                self.registry.manifest(model, alias.version)?.signature,
            )),
            None => None,
        };

        let started = std::time::Instant::now();
        let path = staged.staging.model_path();
        let dir = staged.staging.dir().to_path_buf();
        let (allow, engine, limits) = (
            options.upload.allow_signature_change,
            options.upload.engine,
            self.limits,
        );
        let dataset = options.baseline.clone();
        let checked = tokio::task::spawn_blocking(move || {
            let expect = Expectations {
                live: live.as_ref().map(|(v, s)| (*v, s)),
                contract: contract.as_ref(),
                allow_signature_change: allow,
                engine,
                limits,
            };
            let (checked, compiled) =
                check_and_prepare(&path, &dir, expect).map_err(|e| e.to_string())?;
            let baseline = dataset.map(|d| d.profile(&checked.engine)).transpose()?;
            Ok::<_, String>((checked, compiled, baseline))
        })
        .await
        .map_err(|e| ValidatorError::Task(e.to_string()))?;
        let (checked, compiled, baseline) = match checked {
            Ok(checked) => checked,
            Err(reason) => return Err(reject(reason).await),
        };
        log_checked(model, started.elapsed(), &checked, compiled.as_ref());
        Ok(Checks {
            checked,
            compiled,
            default_rollout,
            baseline,
        })
    }

    /// Commits the staged version under the model's lock and records the upload, unless a
    /// newer upload of the same key finished meanwhile.
    async fn commit(
        &self,
        upload: &Upload,
        staged: Staged,
        Checks {
            checked,
            compiled,
            default_rollout,
            baseline,
        }: Checks,
        signer: Option<Signer>,
        options: &FetchedOptions,
    ) -> Result<UploadRecord, Stop> {
        let mut new = new_version(&checked, staged.digest, upload.source.clone(), compiled);
        new.signer = signer;
        drop(checked);
        let (policy, monitoring) = (options.signer_policy.clone(), options.monitoring);
        let (registry, owned, alias, rollout) = (
            self.registry.clone(),
            upload.clone(),
            options.upload.alias.clone(),
            options.upload.rollout.clone().or(default_rollout),
        );
        let staging = staged.staging;
        let committed = tokio::task::spawn_blocking(move || -> Result<Option<UploadRecord>, RegistryError> {
            let Upload { model, object, source } = owned;
            let locked = registry.lock(&model)?;
            // Re-checked under the lock: a newer upload of this key may have finished meanwhile.
            if let Some(seen) = registry.upload_record(&model, &object.key)?
                && is_older(source.sequencer.as_deref(), seen.sequencer.as_deref())
            {
                return Ok(None);
            }
            // The contract's policy, as of this upload, holds the model's alias moves.
            locked.write_signer_policy(policy.as_ref())?;
            registry.write_monitoring(&model, &monitoring)?;
            let commit = locked.commit(staging, new)?;
            if let Commit::Created(version) = commit {
                info!(model = %model, version, "version committed");
            } else {
                info!(model = %model, version = commit.version(), "identical bytes: no new version");
            }
            // Before the publish: traffic never reaches a version whose uploaded baseline is
            // still to be written (a crash here leaves it to be taken from traffic).
            if let Some(baseline) = &baseline {
                registry.write_baseline(&model, commit.version(), baseline)?;
            }
            let record = UploadRecord {
                key: object.key,
                bucket: None,
                sequencer: source.sequencer,
                status: if alias.is_some() { UploadStatus::Committed } else { UploadStatus::Registered },
                version: Some(commit.version()),
                rollout: alias.as_ref().and(rollout),
                alias,
                updated_at: Timestamp::now(),
            };
            locked.write_upload_record(&record)?;
            Ok(Some(record))
        })
        .await
        .map_err(|e| ValidatorError::Task(e.to_string()))?
        .map_err(ValidatorError::from)?;
        committed.ok_or_else(|| {
            let (model, key) = (upload.model.clone(), upload.object.key.clone());
            info!(model = %model, key = %key, "older event: a newer upload of this key finished first");
            Stop::Outcome(Outcome::Stale { model, key })
        })
    }

    /// Finishes a committed upload: publishes it if asked, records the outcome, tags the object.
    async fn finish_upload(
        &self,
        model: &ModelName,
        object: &ObjectRef,
        record: UploadRecord,
    ) -> Result<Outcome, ValidatorError> {
        let version = record.version.expect("a committed upload has a version");
        let outcome = match (record.status, record.alias.clone()) {
            (UploadStatus::Committed, Some(alias))
                if record.rollout.is_some()
                    && self
                        .registry
                        .alias(model, &alias)?
                        .is_some_and(|a| a.version != version) =>
            {
                self.start_rollout(model, object, alias, record).await?
            }
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
                self.record_upload(
                    model,
                    UploadRecord {
                        status: UploadStatus::Published,
                        updated_at: Timestamp::now(),
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
            Outcome::RollingOut { .. } => "rolling-out",
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

    /// Hands a committed upload to a guarded rollout of its alias. A refusal (another rollout
    /// runs, a bad plan) leaves the version registered, with the reason in its tags: nothing
    /// is lost, and `modelctl rollout start` can roll it out later.
    async fn start_rollout(
        &self,
        model: &ModelName,
        object: &ObjectRef,
        alias: AliasName,
        record: UploadRecord,
    ) -> Result<Outcome, ValidatorError> {
        let version = record.version.expect("a committed upload has a version");
        let requested = record.rollout.clone().expect("a rollout was requested");
        let request = RolloutRequest::Start {
            model: model.clone(),
            alias: alias.clone(),
            candidate: version,
            plan: requested.plan,
            settings: requested.settings,
            reason: Some(format!("upload of {}", object.key)),
        };
        match self.publisher.start_rollout(request).await {
            Ok(id) => {
                info!(model = %model, alias = %alias, candidate = version, rollout = id, "rollout started");
                self.record_upload(
                    model,
                    UploadRecord {
                        status: UploadStatus::RollingOut,
                        updated_at: Timestamp::now(),
                        ..record
                    },
                )?;
                Ok(Outcome::RollingOut {
                    model: model.clone(),
                    version,
                    alias,
                    rollout: id,
                })
            }
            Err(reason) => {
                warn!(model = %model, version, %reason, "rollout not started; the version stays registered");
                self.record_upload(
                    model,
                    UploadRecord {
                        status: UploadStatus::Registered,
                        updated_at: Timestamp::now(),
                        ..record
                    },
                )?;
                self.tag(
                    object,
                    &[(
                        "modelpipe-reason",
                        tag_value(&format!("rollout not started: {reason}")),
                    )],
                )
                .await;
                Ok(Outcome::Registered {
                    model: model.clone(),
                    version,
                })
            }
        }
    }

    fn record_upload(&self, model: &ModelName, record: UploadRecord) -> Result<(), RegistryError> {
        let locked = self.registry.lock(model)?;
        locked.write_upload_record(&record)
    }

    /// Records the rejection under the model, tags the object with the reason, and ends the
    /// record with it (or with the error that kept it from being recorded).
    async fn reject(&self, upload: &Upload, reason: String, sha256: Option<String>) -> Stop {
        self.record_rejection(upload, reason, sha256).await.into()
    }

    async fn record_rejection(
        &self,
        upload: &Upload,
        reason: String,
        sha256: Option<String>,
    ) -> Result<Outcome, ValidatorError> {
        let Upload { model, object, .. } = upload;
        warn!(model = %model, key = %object.key, %reason, "rejected");
        let (registry, owned) = (self.registry.clone(), upload.clone());
        let rejection = Rejection {
            key: object.key.clone(),
            sequencer: upload.source.sequencer.clone(),
            sha256,
            reason: reason.clone(),
            at: now(),
        };
        tokio::task::spawn_blocking(move || -> Result<(), RegistryError> {
            let locked = registry.lock(&owned.model)?;
            locked.append_rejection(&rejection)?;
            locked.write_upload_record(&UploadRecord {
                key: owned.object.key,
                bucket: None,
                sequencer: owned.source.sequencer,
                status: UploadStatus::Rejected,
                version: None,
                alias: None,
                rollout: None,
                updated_at: Timestamp::now(),
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
}

/// An upload as its event names it.
#[derive(Debug, Clone)]
struct Upload {
    model: ModelName,
    object: ObjectRef,
    /// What the manifest records as the version's source (the object's etag and version once
    /// it has been read).
    source: Source,
}

/// What the object's metadata asked for, and the checksum S3 keeps for it.
/// What the checks found: the checked model, tract's compiled artifact, and the contract's
/// default rollout when the upload named none.
struct Checks {
    checked: Checked,
    compiled: Option<Compiled>,
    default_rollout: Option<RequestedRollout>,
    /// The profile of the baseline dataset uploaded with the model, run on it.
    baseline: Option<Baseline>,
}

struct FetchedOptions {
    upload: UploadOptions,
    checksum_sha256: Option<String>,
    /// The model's `contract.json`, when the bucket has one.
    contract: Option<Contract>,
    /// The signer policy the contract names, if any (else `SIGNING_POLICY`'s applies).
    signer_policy: Option<SignerPolicy>,
    /// The capture and drift settings the contract names.
    monitoring: Monitoring,
    /// The model's `baseline.jsonl`, when the bucket has one.
    baseline: Option<Arc<BaselineUpload>>,
}

/// What one record is about.
enum Event {
    /// A model file (`<prefix><model>/<name>.onnx`).
    Model(Upload),
    /// A model file's signature (`….onnx.sig`): the model's upload, which may be waiting for it.
    Signature(Upload),
    /// The model's `contract.json`.
    Contract(Upload),
}

/// An upload's bytes in a staging directory, and their digest.
struct Staged {
    staging: Staging,
    digest: Digest,
}

/// Why a record's stages stopped before the end: it has its outcome (ignored, a duplicate, a
/// rejection recorded, a resumed publish), or a transient failure for Lambda to retry.
enum Stop {
    Outcome(Outcome),
    Failed(ValidatorError),
}

impl From<ValidatorError> for Stop {
    fn from(error: ValidatorError) -> Self {
        Self::Failed(error)
    }
}

impl From<RegistryError> for Stop {
    fn from(error: RegistryError) -> Self {
        Self::Failed(error.into())
    }
}

impl From<Result<Outcome, ValidatorError>> for Stop {
    fn from(result: Result<Outcome, ValidatorError>) -> Self {
        match result {
            Ok(outcome) => Self::Outcome(outcome),
            Err(error) => Self::Failed(error),
        }
    }
}

/// Ends a record that is not a model upload.
fn ignored(key: &str, reason: String) -> Stop {
    info!(key = %key, %reason, "ignored");
    Stop::Outcome(Outcome::Ignored {
        key: key.to_string(),
        reason,
    })
}

/// What the checks decided, for the log: the engine and why, a disagreement, tract's layout and
/// artifact.
fn log_checked(model: &ModelName, took: Duration, checked: &Checked, compiled: Option<&Compiled>) {
    let choice = &checked.choice;
    info!(
        model = %model,
        ms = took.as_millis() as u64,
        load_ms = checked.engine.load_time.as_millis() as u64,
        engine = %choice.engine,
        reason = %choice.reason,
        "validated"
    );
    if let Some(agreement) = choice.agreement.as_ref().filter(|a| !a.agree) {
        let difference = agreement.difference.as_deref().unwrap_or("-");
        warn!(model = %model, difference, "tract and onnxruntime disagree: onnxruntime serves");
    } else if let Some(compiled) = compiled {
        if let Some(layout) = &compiled.layout {
            info!(
                model = %model,
                layout = ?layout.layout,
                plain_us = layout.plain_us,
                nhwc_us = layout.nhwc_us,
                artifact_load_ms = compiled.artifact_load.map(|d| d.as_millis() as u64),
                "compiled for tract"
            );
        }
        if let Some(optimized) = &compiled.optimized {
            info!(
                model = %model,
                load_ms = optimized.load_ms,
                model_load_ms = optimized.model_load_ms,
                "graph optimised for onnxruntime"
            );
        }
        if let Some(reason) = &compiled.no_artifact {
            warn!(model = %model, %reason, "nothing prepared to load faster: inference will load model.onnx");
        }
    }
}

/// Is an event with sequencer `ours` older than the one already handled?
fn is_older(ours: Option<&str>, seen: Option<&str>) -> bool {
    matches!((ours, seen), (Some(a), Some(b)) if sequencer_cmp(a, b) == std::cmp::Ordering::Less)
}

/// How long a staging directory may sit before it counts as a crashed ingest's leftover.
pub const STAGING_MAX_AGE: Duration = Duration::from_secs(3600);

mod baseline;
mod signatures;

#[cfg(test)]
mod tests;
