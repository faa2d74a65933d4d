//! The dataset a version's drift is measured against: `<prefix><model>/baseline.jsonl`, one
//! Open Inference Protocol request per line, uploaded before the model (as its contract is).
//! At ingest each request is run on the checked model and the inputs and outputs are profiled
//! (`modelpipe_engine::features`); the profile is stored as the new version's baseline
//! (`modelpipe_registry::drift`). A dataset that does not decode for the model rejects the
//! upload, with the line that failed; without one, the version's baseline is taken from traffic.

use std::sync::Arc;

use super::{Stop, Upload, Validator, ValidatorError};
use crate::object_store::{ObjectStore, StoreError};
use crate::validator::PublishTarget;
use modelpipe_core::digest::sha256_bytes;
use modelpipe_core::time::Timestamp;
use modelpipe_engine::Engine;
use modelpipe_engine::features::profile_requests;
use modelpipe_registry::drift::{Baseline, BaselineSource};

/// Larger datasets are refused: a sample of a few thousand requests is what drift needs.
const MAX_BASELINE_BYTES: u64 = 64 * 1024 * 1024;

/// A baseline dataset as fetched.
pub(super) struct BaselineUpload {
    key: String,
    bytes: Vec<u8>,
}

impl BaselineUpload {
    /// Its profile as `engine` sees it, or why it cannot be (for the rejection).
    pub(super) fn profile(&self, engine: &Engine) -> Result<Baseline, String> {
        let profile =
            profile_requests(engine, &self.bytes).map_err(|why| format!("{}: {why}", self.key))?;
        Ok(Baseline {
            source: BaselineSource::Upload {
                key: self.key.clone(),
                sha256: sha256_bytes(&self.bytes),
            },
            created_at: Timestamp::now(),
            profile,
        })
    }
}

/// `<prefix><model>/baseline.jsonl`.
pub(super) fn baseline_key(prefix: &str, model: &modelpipe_core::ModelName) -> String {
    format!("{prefix}{model}/baseline.jsonl")
}

impl<S: ObjectStore, P: PublishTarget> Validator<S, P> {
    /// The model's baseline dataset, if the bucket has one: `Err` is why it cannot be used.
    pub(super) async fn fetch_baseline(
        &self,
        upload: &Upload,
    ) -> Result<Result<Option<Arc<BaselineUpload>>, String>, Stop> {
        let key = baseline_key(&self.models_prefix, &upload.model);
        match self
            .store
            .get_small(&upload.object.bucket, &key, MAX_BASELINE_BYTES)
            .await
        {
            Ok(bytes) => Ok(Ok(
                bytes.map(|bytes| Arc::new(BaselineUpload { key, bytes }))
            )),
            Err(e @ StoreError::TooLarge { .. }) => Ok(Err(e.to_string())),
            Err(e) => Err(ValidatorError::from(e).into()),
        }
    }
}
