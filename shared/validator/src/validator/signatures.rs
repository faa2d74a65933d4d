//! The validator's signature stage and the two uploads beside a model that feed it: the model's
//! signature (`<model key>.sig`, an OpenSSF model signing bundle) and its `contract.json`, whose
//! `signing` section is the model's signer policy (else the registry's default, `SIGNING_POLICY`)
//! and whose `monitoring` section its capture share and drift threshold, both recorded in the
//! registry when the contract arrives and again with each upload.
//!
//! A model whose policy requires a signature that has not arrived waits (upload record and tag
//! `awaiting-signature`); the signature's own event resumes it, S3 delivering the two in either
//! order; the publisher's `expire-uploads` rejects it after `SIGNATURE_WAIT_MS`. A signature
//! beside the key that is a committed version's (the previous upload's) has not "arrived" for
//! this one: the upload waits for its own. Any other signature is this upload's, and is verified.

use tracing::info;

use super::{FetchedOptions, Outcome, Staged, Stop, Upload, Validator, ValidatorError, ignored};
use crate::object_store::{ObjectRef, ObjectStore, StoreError, tag_value};
use crate::validator::PublishTarget;
use crate::version::{SignatureRefusal, check_signature, monitoring, read_contract, signer_policy};
use modelpipe_core::digest::sha256_bytes;
use modelpipe_core::model_name::{ModelKey, ModelName, contract_key};
use modelpipe_core::time::Timestamp;
use modelpipe_engine::contract::Contract;
use modelpipe_registry::drift::Monitoring;
use modelpipe_registry::{RegistryError, SIGNATURE_FILE, Signer, UploadRecord, UploadStatus};
use modelpipe_signing::{SIGNATURE_SUFFIX, SignatureError, SignerPolicy};

/// A signature bundle is a few KB; anything near this is not one.
const MAX_SIGNATURE_BYTES: u64 = 1024 * 1024;
const MAX_CONTRACT_BYTES: u64 = 16 * 1024 * 1024;

/// The model whose file `key` is the signature of (`<prefix><model>/<name>.onnx.sig`).
pub(super) fn signed_model(key: &str, prefix: &str) -> Option<ModelName> {
    let model_key = key.strip_suffix(SIGNATURE_SUFFIX)?;
    ModelKey::parse(model_key, prefix).ok().map(|k| k.model)
}

/// The capture and drift settings a contract names (checked when it was read), else none.
pub(super) fn contract_monitoring(contract: Option<&Contract>) -> Monitoring {
    contract
        .and_then(|c| monitoring(c).ok())
        .unwrap_or_default()
}

/// The model whose contract `key` is (`<prefix><model>/contract.json`).
pub(super) fn contract_of(key: &str, prefix: &str) -> Option<ModelName> {
    let model = key
        .strip_prefix(prefix)?
        .strip_suffix("/contract.json")?
        .parse()
        .ok()?;
    (contract_key(prefix, &model) == key).then_some(model)
}

impl<S: ObjectStore, P: PublishTarget> Validator<S, P> {
    /// The model's `contract.json`, if the bucket has one: `Err` is why it is not valid.
    pub(super) async fn fetch_contract(
        &self,
        upload: &Upload,
    ) -> Result<Result<Option<Contract>, String>, Stop> {
        let key = contract_key(&self.models_prefix, &upload.model);
        let bytes = match self
            .store
            .get_small(&upload.object.bucket, &key, MAX_CONTRACT_BYTES)
            .await
        {
            Ok(bytes) => bytes,
            Err(e @ StoreError::TooLarge { .. }) => return Ok(Err(e.to_string())),
            Err(e) => return Err(ValidatorError::from(e).into()),
        };
        Ok(bytes.map(|b| read_contract(&b)).transpose())
    }

    /// The policy a model is held to when `contract` is its contract.
    pub(super) fn contract_policy(&self, contract: Option<&Contract>) -> Option<SignerPolicy> {
        contract.and_then(|c| signer_policy(c).ok().flatten())
    }

    /// The upload's signature, verified against the model's policy with the digest the stream
    /// computed: none when there is none and none is required; a wait when one is required and
    /// has not arrived; a rejection with the reason when it does not verify. A verified bundle is
    /// staged beside the model, to be kept with the version.
    pub(super) async fn check_signature(
        &self,
        upload: &Upload,
        staged: &Staged,
        options: &FetchedOptions,
    ) -> Result<Option<Signer>, Stop> {
        let policy = options
            .signer_policy
            .clone()
            .or_else(|| self.registry.signer_policy_default());
        let key = format!("{}{SIGNATURE_SUFFIX}", upload.object.key);
        let bundle = self
            .store
            .get_small(&upload.object.bucket, &key, MAX_SIGNATURE_BYTES)
            .await
            .map_err(ValidatorError::from)?;
        let sha256 = &staged.digest.sha256;
        let (signer, bundle) = match (
            check_signature(bundle.as_deref(), sha256, policy.as_ref()),
            bundle,
        ) {
            (Ok(Some(signer)), Some(bundle)) => (signer, bundle),
            (Ok(_), _) => return Ok(None),
            (Err(SignatureRefusal::Unsigned), _) => {
                return Err(self.await_signature(upload, &key).await);
            }
            // The signature of a version already committed, left beside the key: this upload's
            // own has not arrived yet.
            (Err(SignatureRefusal::Signature(SignatureError::OtherBytes { .. })), Some(bundle))
                if self.signs_a_version(upload, &bundle)? =>
            {
                return Err(self.await_signature(upload, &key).await);
            }
            (Err(e), _) => {
                let reason = format!("{key}: {e}");
                return Err(self.reject(upload, reason, Some(sha256.clone())).await);
            }
        };
        let path = staged.staging.dir().join(SIGNATURE_FILE);
        std::fs::write(&path, &bundle).map_err(|source| {
            ValidatorError::from(RegistryError::Io {
                location: path.display().to_string(),
                source,
            })
        })?;
        info!(model = %upload.model, signer = %signer.identity, method = ?signer.method, "signature verified");
        Ok(Some(signer))
    }

    /// Whether `bundle` is the signature a committed version of the model was verified with.
    fn signs_a_version(&self, upload: &Upload, bundle: &[u8]) -> Result<bool, Stop> {
        let bundle_sha256 = sha256_bytes(bundle);
        for version in self.registry.versions(&upload.model)? {
            let manifest = self.registry.manifest(&upload.model, version)?;
            if manifest
                .signer
                .is_some_and(|s| s.bundle_sha256 == bundle_sha256)
            {
                return Ok(true);
            }
        }
        Ok(false)
    }

    /// Records that the upload waits for its signature, and tags it so.
    async fn await_signature(&self, upload: &Upload, signature_key: &str) -> Stop {
        let (registry, owned) = (self.registry.clone(), upload.clone());
        let recorded = tokio::task::spawn_blocking(move || -> Result<(), RegistryError> {
            registry
                .lock(&owned.model)?
                .write_upload_record(&UploadRecord {
                    key: owned.object.key,
                    bucket: Some(owned.object.bucket),
                    sequencer: owned.source.sequencer,
                    status: UploadStatus::AwaitingSignature,
                    version: None,
                    alias: None,
                    rollout: None,
                    updated_at: Timestamp::now(),
                })
        })
        .await;
        match recorded {
            Err(e) => return ValidatorError::Task(e.to_string()).into(),
            Ok(Err(e)) => return e.into(),
            Ok(Ok(())) => {}
        }
        info!(model = %upload.model, key = %upload.object.key, signature = %signature_key, "waiting for the signature");
        let reason =
            format!("waiting for {signature_key} (the model's signer policy requires one)");
        self.tag(
            &upload.object,
            &[
                ("modelpipe-status", "awaiting-signature".into()),
                ("modelpipe-reason", tag_value(&reason)),
            ],
        )
        .await;
        Stop::Outcome(Outcome::AwaitingSignature {
            model: upload.model.clone(),
            key: upload.object.key.clone(),
        })
    }

    /// Rejects the uploads that have waited for their signature longer than `SIGNATURE_WAIT_MS`,
    /// with the reason, recorded and tagged as any rejection (on the rollout controller's
    /// schedule: `{"action": "expire-uploads"}` in Lambda, the tick in `modelctl dev`).
    pub async fn expire_uploads(&self) -> Result<Vec<Outcome>, ValidatorError> {
        let (registry, wait) = (self.registry.clone(), self.signature_wait);
        let expired = tokio::task::spawn_blocking(move || registry.expire_uploads(wait))
            .await
            .map_err(|e| ValidatorError::Task(e.to_string()))??;
        let mut outcomes = Vec::new();
        for expired in expired {
            let (model, rejection) = (expired.model, expired.rejection);
            tracing::warn!(model = %model, key = %rejection.key, reason = %rejection.reason, "rejected");
            if let Some(bucket) = expired.bucket {
                let object = ObjectRef {
                    bucket,
                    key: rejection.key.clone(),
                    version_id: None,
                };
                let tags = [
                    ("modelpipe-status", "rejected".to_string()),
                    ("modelpipe-reason", tag_value(&rejection.reason)),
                ];
                self.tag(&object, &tags).await;
            }
            outcomes.push(Outcome::Rejected {
                model,
                key: rejection.key,
                reason: rejection.reason,
            });
        }
        Ok(outcomes)
    }

    /// A signature arrived: the model upload waiting for it is checked again, now with it.
    pub(super) async fn signature_arrived(&self, signature: Upload) -> Result<Outcome, Stop> {
        let key = &signature.object.key;
        let model_key = key
            .strip_suffix(SIGNATURE_SUFFIX)
            .expect("parsed as a signature key");
        let waiting = self
            .registry
            .upload_record(&signature.model, model_key)?
            .filter(|r| r.status == UploadStatus::AwaitingSignature);
        let Some(waiting) = waiting else {
            return Err(ignored(
                key,
                format!(
                    "a signature: it is read when {model_key} is uploaded (no upload waits for it)"
                ),
            ));
        };
        info!(model = %signature.model, key = %model_key, "signature arrived: checking the model with it");
        let object = ObjectRef {
            bucket: signature.object.bucket.clone(),
            key: model_key.to_string(),
            version_id: None,
        };
        let mut source = signature.source;
        source.key = model_key.to_string();
        source.version_id = None;
        source.etag = None;
        source.sequencer = waiting.sequencer;
        Box::pin(self.model_stages(Upload {
            model: signature.model,
            object,
            source,
        }))
        .await
    }

    /// The model's contract was uploaded: its signer policy holds the model's alias moves from
    /// now on (a contract that is not valid is rejected with the reason, and changes nothing).
    pub(super) async fn contract_changed(&self, upload: Upload) -> Result<Outcome, Stop> {
        let contract = match self.fetch_contract(&upload).await? {
            Ok(contract) => contract,
            Err(reason) => return Err(self.reject(&upload, reason, None).await),
        };
        let policy = self.contract_policy(contract.as_ref());
        let monitoring = contract_monitoring(contract.as_ref());
        let (registry, model) = (self.registry.clone(), upload.model.clone());
        let signed_by_policy = policy.is_some();
        tokio::task::spawn_blocking(move || -> Result<(), RegistryError> {
            registry
                .lock(&model)?
                .write_signer_policy(policy.as_ref())?;
            registry.write_monitoring(&model, &monitoring)
        })
        .await
        .map_err(|e| ValidatorError::Task(e.to_string()))?
        .map_err(ValidatorError::from)?;
        info!(model = %upload.model, signed_by_policy, "contract read");
        Ok(Outcome::ContractRead {
            model: upload.model,
            signed_by_policy,
        })
    }
}
