//! The AWS side of the validator's and serving's traits: [`S3Uploads`] (aws-sdk-s3),
//! [`LambdaPublisher`] (aws-sdk-lambda) and [`S3Capture`] (captured records to a bucket). All
//! honour the SDK's standard environment, `AWS_ENDPOINT_URL` included.

use aws_sdk_s3::error::{ProvideErrorMetadata, SdkError};
use aws_sdk_s3::types::{ChecksumMode, Tag, Tagging};

use modelpipe_registry::is_s3_not_found as is_not_found;
use modelpipe_registry::publish::{PublisherRequest, PublisherResponse};
use modelpipe_registry::rollout::actions::{RolloutAnswer, RolloutRequest};
pub use modelpipe_registry::s3_client;
use modelpipe_serve::capture::CaptureSink;
use modelpipe_validator::object_store::{Object, ObjectRef, ObjectStore, StoreError};
use modelpipe_validator::validator::PublishTarget;

#[derive(Debug, Clone)]
pub struct S3Uploads {
    client: aws_sdk_s3::Client,
}

impl S3Uploads {
    pub fn new(client: aws_sdk_s3::Client) -> Self {
        Self { client }
    }
}

fn failed<E: ProvideErrorMetadata + std::error::Error + 'static, R: std::fmt::Debug>(
    e: SdkError<E, R>,
) -> StoreError {
    let detail = match e.code() {
        Some(code) => format!("{code}: {}", e.message().unwrap_or_default()),
        None => format!("{}", aws_sdk_s3::error::DisplayErrorContext(&e)),
    };
    StoreError::Failed(detail)
}

impl ObjectStore for S3Uploads {
    async fn get(&self, object: &ObjectRef) -> Result<Object, StoreError> {
        let response = self
            .client
            .get_object()
            .bucket(&object.bucket)
            .key(&object.key)
            .set_version_id(object.version_id.clone())
            .checksum_mode(ChecksumMode::Enabled)
            .send()
            .await
            .map_err(|e| {
                if is_not_found(&e) {
                    StoreError::NotFound {
                        bucket: object.bucket.clone(),
                        key: object.key.clone(),
                    }
                } else {
                    failed(e)
                }
            })?;
        Ok(Object {
            size: response
                .content_length()
                .and_then(|n| u64::try_from(n).ok()),
            etag: response.e_tag().map(str::to_string),
            version_id: response.version_id().map(str::to_string),
            metadata: response
                .metadata()
                .cloned()
                .unwrap_or_default()
                .into_iter()
                .map(|(k, v)| (k.to_ascii_lowercase(), v))
                .collect(),
            checksum_sha256: response.checksum_sha256().map(str::to_string),
            body: Box::pin(response.body.into_async_read()),
        })
    }

    async fn get_small(
        &self,
        bucket: &str,
        key: &str,
        limit: u64,
    ) -> Result<Option<Vec<u8>>, StoreError> {
        let response = match self
            .client
            .get_object()
            .bucket(bucket)
            .key(key)
            .send()
            .await
        {
            Ok(response) => response,
            Err(e) if is_not_found(&e) => return Ok(None),
            Err(e) => return Err(failed(e)),
        };
        if response.content_length().is_some_and(|n| n as u64 > limit) {
            return Err(StoreError::TooLarge {
                bucket: bucket.to_string(),
                key: key.to_string(),
                limit,
            });
        }
        let bytes = response
            .body
            .collect()
            .await
            .map_err(|e| StoreError::Failed(e.to_string()))?;
        Ok(Some(bytes.to_vec()))
    }

    async fn tag(&self, object: &ObjectRef, tags: &[(&str, String)]) -> Result<(), StoreError> {
        let existing = self
            .client
            .get_object_tagging()
            .bucket(&object.bucket)
            .key(&object.key)
            .set_version_id(object.version_id.clone())
            .send()
            .await
            .map(|r| r.tag_set().to_vec())
            .unwrap_or_default();
        let mut tag_set: Vec<Tag> = existing
            .into_iter()
            .filter(|t| !tags.iter().any(|(k, _)| *k == t.key()))
            .collect();
        for (key, value) in tags {
            tag_set.push(
                Tag::builder()
                    .key(*key)
                    .value(value)
                    .build()
                    .map_err(|e| StoreError::Failed(e.to_string()))?,
            );
        }
        let tagging = Tagging::builder()
            .set_tag_set(Some(tag_set))
            .build()
            .map_err(|e| StoreError::Failed(e.to_string()))?;
        self.client
            .put_object_tagging()
            .bucket(&object.bucket)
            .key(&object.key)
            .set_version_id(object.version_id.clone())
            .tagging(tagging)
            .send()
            .await
            .map_err(failed)?;
        Ok(())
    }
}

/// Invokes the publisher Lambda and waits for its answer (RequestResponse), so the validator
/// knows the outcome it tags and can be retried when the publish fails.
#[derive(Debug, Clone)]
pub struct LambdaPublisher {
    client: aws_sdk_lambda::Client,
    function: String,
}

impl LambdaPublisher {
    pub fn new(client: aws_sdk_lambda::Client, function: impl Into<String>) -> Self {
        Self {
            client,
            function: function.into(),
        }
    }

    /// Sends any JSON payload to the publisher and returns its JSON answer; a function error
    /// (AWS: 200 with `FunctionError`; local emulators: HTTP 500) is an `Err` with its message.
    pub async fn invoke(&self, payload: &serde_json::Value) -> Result<serde_json::Value, String> {
        let response = self
            .client
            .invoke()
            .function_name(&self.function)
            .payload(aws_sdk_lambda::primitives::Blob::new(
                serde_json::to_vec(payload).map_err(|e| e.to_string())?,
            ))
            .send()
            .await
            .map_err(|e| {
                format!(
                    "invoking {}: {}",
                    self.function,
                    aws_sdk_lambda::error::DisplayErrorContext(&e)
                )
            })?;
        let body = response
            .payload()
            .map(|b| b.as_ref().to_vec())
            .unwrap_or_default();
        if let Some(kind) = response.function_error() {
            let message = serde_json::from_slice::<serde_json::Value>(&body)
                .ok()
                .and_then(|v| {
                    v.get("errorMessage")
                        .and_then(|m| m.as_str())
                        .map(str::to_string)
                })
                .unwrap_or_else(|| String::from_utf8_lossy(&body).into_owned());
            return Err(format!("{} failed ({kind}): {message}", self.function));
        }
        serde_json::from_slice(&body)
            .map_err(|e| format!("{} answered something that is not JSON: {e}", self.function))
    }
}

impl PublishTarget for LambdaPublisher {
    async fn publish(&self, request: PublisherRequest) -> Result<PublisherResponse, String> {
        let payload = serde_json::to_value(&request).map_err(|e| e.to_string())?;
        let answer = self.invoke(&payload).await?;
        serde_json::from_value(answer)
            .map_err(|e| format!("{} answered an unexpected shape: {e}", self.function))
    }

    async fn start_rollout(&self, request: RolloutRequest) -> Result<u64, String> {
        let payload = serde_json::to_value(&request).map_err(|e| e.to_string())?;
        let answer: RolloutAnswer = serde_json::from_value(self.invoke(&payload).await?)
            .map_err(|e| format!("{} answered an unexpected shape: {e}", self.function))?;
        answer
            .rollouts
            .first()
            .map(|r| r.rollout.id)
            .ok_or_else(|| format!("{} started no rollout", self.function))
    }
}

/// Captured records' objects, written to one bucket (`CAPTURE_BUCKET`).
#[derive(Debug, Clone)]
pub struct S3Capture {
    client: aws_sdk_s3::Client,
    bucket: String,
}

impl S3Capture {
    pub fn new(client: aws_sdk_s3::Client, bucket: impl Into<String>) -> Self {
        Self {
            client,
            bucket: bucket.into(),
        }
    }
}

impl CaptureSink for S3Capture {
    fn put(
        &self,
        key: String,
        gzipped: Vec<u8>,
    ) -> std::pin::Pin<Box<dyn Future<Output = Result<(), String>> + Send + '_>> {
        Box::pin(async move {
            self.client
                .put_object()
                .bucket(&self.bucket)
                .key(&key)
                .content_type("application/jsonl")
                .content_encoding("gzip")
                .body(gzipped.into())
                .send()
                .await
                .map(|_| ())
                .map_err(|e| failed(e).to_string())
        })
    }
}
