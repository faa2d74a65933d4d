//! What the validator needs from the bucket, as a trait: read an upload as a stream, read a small
//! object (the contract), tag an object with the outcome. `modelpipe_aws::S3Uploads` implements it
//! with aws-sdk-s3, in Lambda and against `modelctl dev`'s embedded endpoint alike.

use std::collections::HashMap;
use std::future::Future;
use std::pin::Pin;

use tokio::io::AsyncRead;

/// One object version, as named by an S3 event.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ObjectRef {
    pub bucket: String,
    pub key: String,
    pub version_id: Option<String>,
}

pub struct Object {
    pub size: Option<u64>,
    pub etag: Option<String>,
    pub version_id: Option<String>,
    /// User metadata, keys lower-case without `x-amz-meta-`.
    pub metadata: HashMap<String, String>,
    /// The object's full-object SHA-256 checksum (base64), when S3 has one.
    pub checksum_sha256: Option<String>,
    pub body: Pin<Box<dyn AsyncRead + Send>>,
}

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("s3://{bucket}/{key} does not exist")]
    NotFound { bucket: String, key: String },
    #[error("S3 request failed: {0}")]
    Failed(String),
    /// A small object (a contract, a baseline) over its limit: the upload's fault, not S3's.
    #[error("s3://{bucket}/{key} is larger than {limit} bytes")]
    TooLarge {
        bucket: String,
        key: String,
        limit: u64,
    },
}

pub trait ObjectStore: Send + Sync {
    fn get(&self, object: &ObjectRef) -> impl Future<Output = Result<Object, StoreError>> + Send;

    /// A small object read whole, or `None` if it does not exist; refuses more than `limit` bytes.
    fn get_small(
        &self,
        bucket: &str,
        key: &str,
        limit: u64,
    ) -> impl Future<Output = Result<Option<Vec<u8>>, StoreError>> + Send;

    /// Sets `tags` on the object, keeping its other tags.
    fn tag(
        &self,
        object: &ObjectRef,
        tags: &[(&str, String)],
    ) -> impl Future<Output = Result<(), StoreError>> + Send;
}

/// Makes `text` a valid S3 tag value: at most 256 characters of letters, digits, spaces and
/// `+ - = . _ : / @`.
pub fn tag_value(text: &str) -> String {
    let cleaned: String = text
        .chars()
        .map(|c| {
            if c.is_alphanumeric() || " +-=._:/@".contains(c) {
                c
            } else {
                ' '
            }
        })
        .collect();
    let squeezed = cleaned.split_whitespace().collect::<Vec<_>>().join(" ");
    squeezed.chars().take(256).collect()
}

#[cfg(test)]
mod tests {
    #[test]
    fn tag_values_keep_only_allowed_characters() {
        let value = super::tag_value("signature differs: input 'x' has shape [1,5] (live v2)");
        assert_eq!(value, "signature differs: input x has shape 1 5 live v2");
        assert_eq!(super::tag_value(&"é".repeat(300)).chars().count(), 256);
    }
}
