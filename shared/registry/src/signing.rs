//! Which signer policy a model's alias moves are held to: the model's own (`contract.json`'s
//! `signing`, copied here by the validator as `<model>/signing.json`), else the registry's
//! default (`SIGNING_POLICY`). [`Locked::admit`] is the one check, made by every alias move
//! ([`Locked::move_alias`]) and by a rollout's start; uploads that wait for their signature are
//! expired here too (the validator's `expire-uploads`).

use std::sync::Arc;
use std::time::Duration;

use crate::{
    Locked, Manifest, MoveError, Registry, Rejection, Result, UploadRecord, UploadStatus, now,
};
use modelpipe_core::model_name::{AliasName, ModelName};
use modelpipe_core::time::Timestamp;
use modelpipe_signing::SignerPolicy;

/// An upload rejected because its signature never arrived.
#[derive(Debug, Clone)]
pub struct Expired {
    pub model: ModelName,
    /// The bucket it waits in, to tag it.
    pub bucket: Option<String>,
    pub rejection: Rejection,
}

fn policy_key(model: &ModelName) -> String {
    format!("{model}/signing.json")
}

impl Registry {
    /// The policy of models whose contract names none.
    pub fn with_signing_default(mut self, policy: Option<SignerPolicy>) -> Self {
        self.signing_default = policy.map(Arc::new);
        self
    }

    /// The policy of models whose contract names none (`SIGNING_POLICY`).
    pub fn signer_policy_default(&self) -> Option<SignerPolicy> {
        self.signing_default.as_deref().cloned()
    }

    /// The signer policy `model`'s versions are held to now, if any.
    pub fn signer_policy(&self, model: &ModelName) -> Result<Option<SignerPolicy>> {
        let own: Option<Option<SignerPolicy>> = self.read_json(&policy_key(model))?;
        Ok(match own {
            Some(Some(policy)) => Some(policy),
            _ => self.signing_default.as_deref().cloned(),
        })
    }

    /// Rejects every upload that has waited for its signature longer than `wait` (the
    /// publisher's `expire-uploads`, on the rollout controller's schedule).
    pub fn expire_uploads(&self, wait: Duration) -> Result<Vec<Expired>> {
        let mut expired = Vec::new();
        // Every model directory: a model's first upload may be the one waiting.
        for model in self
            .list("")?
            .iter()
            .filter_map(|n| n.parse::<ModelName>().ok())
        {
            if self.overdue_uploads(&model, wait)?.is_empty() {
                continue;
            }
            let locked = self.lock(&model)?;
            // Read again under the lock: the signature may have arrived meanwhile.
            for record in self.overdue_uploads(&model, wait)? {
                let bucket = record.bucket.clone();
                let rejection = locked.expire_upload(record, wait)?;
                expired.push(Expired {
                    model: model.clone(),
                    bucket,
                    rejection,
                });
            }
        }
        Ok(expired)
    }

    /// The uploads of `model` waiting for a signature since before `wait`.
    fn overdue_uploads(&self, model: &ModelName, wait: Duration) -> Result<Vec<UploadRecord>> {
        let mut records = self.upload_records(model)?;
        records.retain(|r| {
            r.status == UploadStatus::AwaitingSignature && r.updated_at.elapsed() >= wait
        });
        Ok(records)
    }
}

impl Locked<'_> {
    /// Records the model's own policy (`None`: its contract names none, the default applies).
    pub fn write_signer_policy(&self, policy: Option<&SignerPolicy>) -> Result<()> {
        self.write(&policy_key(self.model()), &crate::to_json(&policy))
    }

    /// Whether `manifest`'s version may be what `alias` serves, under the model's policy now.
    pub(crate) fn admit(&self, alias: &AliasName, manifest: &Manifest) -> Result<(), MoveError> {
        let Some(policy) = self.registry().signer_policy(self.model())? else {
            return Ok(());
        };
        policy
            .admits(manifest.signer.as_ref())
            .map_err(|why| MoveError::Refused {
                model: self.model().clone(),
                alias: alias.clone(),
                version: manifest.version,
                why,
            })
    }

    /// Rejects an upload that waited for its signature past `wait`: recorded like any
    /// rejection, with the reason.
    fn expire_upload(&self, record: UploadRecord, wait: Duration) -> Result<Rejection> {
        let rejection = Rejection {
            key: record.key.clone(),
            sequencer: record.sequencer.clone(),
            sha256: None,
            reason: format!(
                "no signature arrived within SIGNATURE_WAIT_MS ({} s), and the model's signer policy requires one: upload {}.sig, then the model again",
                wait.as_secs(),
                record.key
            ),
            at: now(),
        };
        self.append_rejection(&rejection)?;
        self.write_upload_record(&UploadRecord {
            status: UploadStatus::Rejected,
            updated_at: Timestamp::now(),
            ..record
        })?;
        Ok(rejection)
    }
}
