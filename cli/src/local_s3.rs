//! `modelctl dev`'s S3 endpoint: s3s's protocol over s3s-fs's files, plus what s3s-fs lacks and
//! modelpipe needs — object tagging (persisted beside the data), refusing writes to a bucket that
//! does not exist, and an [`CreatedObject`] notice after every successful PutObject,
//! CompleteMultipartUpload and CopyObject, from which the caller builds the S3 event AWS would send.

use std::path::{Path, PathBuf};

use modelpipe_validator::s3_event::CreatedObject;
use s3s::dto::*;
use s3s::{S3, S3Request, S3Response, S3Result, s3_error};
use s3s_fs::FileSystem;
use tokio::sync::mpsc;

pub struct LocalS3 {
    fs: FileSystem,
    root: PathBuf,
    tags: PathBuf,
    created: mpsc::UnboundedSender<CreatedObject>,
    /// Held while a notice gets its sequencer and is sent: the validator sees creations in
    /// sequencer order.
    last_sequencer: std::sync::Mutex<u64>,
}

impl LocalS3 {
    /// Serves buckets stored under `root` (created if missing); tags live in `tags`.
    pub fn new(
        root: &Path,
        tags: &Path,
        created: mpsc::UnboundedSender<CreatedObject>,
    ) -> std::io::Result<Self> {
        std::fs::create_dir_all(root)?;
        std::fs::create_dir_all(tags)?;
        let fs = FileSystem::new(root).map_err(|e| std::io::Error::other(format!("{e:?}")))?;
        Ok(Self {
            fs,
            root: root.to_path_buf(),
            tags: tags.to_path_buf(),
            created,
            last_sequencer: std::sync::Mutex::new(0),
        })
    }

    /// Increasing across restarts too (nanoseconds since the epoch), as S3's are per key.
    /// Called with `last_sequencer` locked, so that notices are sent in sequencer order.
    fn next_sequencer(last: &mut u64) -> String {
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos() as u64)
            .unwrap_or(0);
        *last = now.max(*last + 1);
        format!("{:018X}", *last)
    }

    fn require_bucket(&self, bucket: &str) -> S3Result<()> {
        if self.root.join(bucket).is_dir() {
            Ok(())
        } else {
            Err(s3_error!(NoSuchBucket))
        }
    }

    fn notify(&self, event_name: &'static str, bucket: &str, key: &str, etag: Option<&ETag>) {
        let size = std::fs::metadata(self.root.join(bucket).join(key))
            .map(|m| m.len())
            .unwrap_or(0);
        let mut last = self.last_sequencer.lock().expect("sequencer lock");
        let _ = self.created.send(CreatedObject {
            event_name,
            bucket: bucket.to_string(),
            key: key.to_string(),
            size,
            etag: etag.map(|e| e.value().to_string()).unwrap_or_default(),
            sequencer: Self::next_sequencer(&mut last),
        });
    }

    fn tags_path(&self, bucket: &str, key: &str) -> PathBuf {
        self.tags.join(format!(
            "{}.json",
            modelpipe_core::digest::sha256_bytes(format!("{bucket}/{key}").as_bytes())
        ))
    }

    fn read_tags(&self, bucket: &str, key: &str) -> Vec<(String, String)> {
        std::fs::read(self.tags_path(bucket, key))
            .ok()
            .and_then(|b| serde_json::from_slice(&b).ok())
            .unwrap_or_default()
    }

    fn write_tags(&self, bucket: &str, key: &str, tags: &[(String, String)]) -> S3Result<()> {
        let bytes = serde_json::to_vec(tags).map_err(|e| s3_error!(e, InternalError))?;
        let path = self.tags_path(bucket, key);
        let temp = path.with_extension("tmp");
        std::fs::write(&temp, bytes)
            .and_then(|()| std::fs::rename(&temp, &path))
            .map_err(|e| s3_error!(e, InternalError))
    }

    fn require_object(&self, bucket: &str, key: &str) -> S3Result<()> {
        self.require_bucket(bucket)?;
        if self.root.join(bucket).join(key).is_file() {
            Ok(())
        } else {
            Err(s3_error!(NoSuchKey))
        }
    }
}

#[async_trait::async_trait]
impl S3 for LocalS3 {
    async fn put_object(
        &self,
        req: S3Request<PutObjectInput>,
    ) -> S3Result<S3Response<PutObjectOutput>> {
        let (bucket, key) = (req.input.bucket.clone(), req.input.key.clone());
        self.require_bucket(&bucket)?;
        let response = self.fs.put_object(req).await?;
        let _ = std::fs::remove_file(self.tags_path(&bucket, &key));
        self.notify(
            "ObjectCreated:Put",
            &bucket,
            &key,
            response.output.e_tag.as_ref(),
        );
        Ok(response)
    }

    async fn complete_multipart_upload(
        &self,
        req: S3Request<CompleteMultipartUploadInput>,
    ) -> S3Result<S3Response<CompleteMultipartUploadOutput>> {
        let (bucket, key) = (req.input.bucket.clone(), req.input.key.clone());
        self.require_bucket(&bucket)?;
        let mut response = self.fs.complete_multipart_upload(req).await?;
        // s3s-fs returns the real output as a future: finish it before announcing the object.
        if let Some(future) = response.output.future.take() {
            response.output = future.await?;
        }
        let _ = std::fs::remove_file(self.tags_path(&bucket, &key));
        self.notify(
            "ObjectCreated:CompleteMultipartUpload",
            &bucket,
            &key,
            response.output.e_tag.as_ref(),
        );
        Ok(response)
    }

    async fn copy_object(
        &self,
        req: S3Request<CopyObjectInput>,
    ) -> S3Result<S3Response<CopyObjectOutput>> {
        let (bucket, key) = (req.input.bucket.clone(), req.input.key.clone());
        self.require_bucket(&bucket)?;
        let response = self.fs.copy_object(req).await?;
        let _ = std::fs::remove_file(self.tags_path(&bucket, &key));
        let etag = response
            .output
            .copy_object_result
            .as_ref()
            .and_then(|r| r.e_tag.as_ref());
        self.notify("ObjectCreated:Copy", &bucket, &key, etag);
        Ok(response)
    }

    async fn get_object_tagging(
        &self,
        req: S3Request<GetObjectTaggingInput>,
    ) -> S3Result<S3Response<GetObjectTaggingOutput>> {
        self.require_object(&req.input.bucket, &req.input.key)?;
        let tag_set = self
            .read_tags(&req.input.bucket, &req.input.key)
            .into_iter()
            .map(|(key, value)| Tag {
                key: Some(key),
                value: Some(value),
            })
            .collect();
        Ok(S3Response::new(GetObjectTaggingOutput {
            tag_set,
            version_id: None,
        }))
    }

    async fn put_object_tagging(
        &self,
        req: S3Request<PutObjectTaggingInput>,
    ) -> S3Result<S3Response<PutObjectTaggingOutput>> {
        self.require_object(&req.input.bucket, &req.input.key)?;
        let tags: Vec<(String, String)> = req
            .input
            .tagging
            .tag_set
            .iter()
            .map(|t| {
                (
                    t.key.clone().unwrap_or_default(),
                    t.value.clone().unwrap_or_default(),
                )
            })
            .collect();
        self.write_tags(&req.input.bucket, &req.input.key, &tags)?;
        Ok(S3Response::new(PutObjectTaggingOutput { version_id: None }))
    }

    async fn delete_object_tagging(
        &self,
        req: S3Request<DeleteObjectTaggingInput>,
    ) -> S3Result<S3Response<DeleteObjectTaggingOutput>> {
        self.require_object(&req.input.bucket, &req.input.key)?;
        let _ = std::fs::remove_file(self.tags_path(&req.input.bucket, &req.input.key));
        Ok(S3Response::new(DeleteObjectTaggingOutput {
            version_id: None,
        }))
    }

    async fn delete_object(
        &self,
        req: S3Request<DeleteObjectInput>,
    ) -> S3Result<S3Response<DeleteObjectOutput>> {
        let _ = std::fs::remove_file(self.tags_path(&req.input.bucket, &req.input.key));
        self.fs.delete_object(req).await
    }

    // The rest is s3s-fs as it is.

    async fn create_bucket(
        &self,
        req: S3Request<CreateBucketInput>,
    ) -> S3Result<S3Response<CreateBucketOutput>> {
        self.fs.create_bucket(req).await
    }
    async fn head_bucket(
        &self,
        req: S3Request<HeadBucketInput>,
    ) -> S3Result<S3Response<HeadBucketOutput>> {
        self.fs.head_bucket(req).await
    }
    async fn list_buckets(
        &self,
        req: S3Request<ListBucketsInput>,
    ) -> S3Result<S3Response<ListBucketsOutput>> {
        self.fs.list_buckets(req).await
    }
    async fn get_bucket_location(
        &self,
        req: S3Request<GetBucketLocationInput>,
    ) -> S3Result<S3Response<GetBucketLocationOutput>> {
        self.fs.get_bucket_location(req).await
    }
    async fn list_objects(
        &self,
        req: S3Request<ListObjectsInput>,
    ) -> S3Result<S3Response<ListObjectsOutput>> {
        self.fs.list_objects(req).await
    }
    async fn list_objects_v2(
        &self,
        req: S3Request<ListObjectsV2Input>,
    ) -> S3Result<S3Response<ListObjectsV2Output>> {
        self.fs.list_objects_v2(req).await
    }
    async fn get_object(
        &self,
        req: S3Request<GetObjectInput>,
    ) -> S3Result<S3Response<GetObjectOutput>> {
        self.fs.get_object(req).await
    }
    async fn head_object(
        &self,
        req: S3Request<HeadObjectInput>,
    ) -> S3Result<S3Response<HeadObjectOutput>> {
        self.fs.head_object(req).await
    }
    async fn delete_objects(
        &self,
        req: S3Request<DeleteObjectsInput>,
    ) -> S3Result<S3Response<DeleteObjectsOutput>> {
        self.fs.delete_objects(req).await
    }
    async fn create_multipart_upload(
        &self,
        req: S3Request<CreateMultipartUploadInput>,
    ) -> S3Result<S3Response<CreateMultipartUploadOutput>> {
        self.require_bucket(&req.input.bucket)?;
        self.fs.create_multipart_upload(req).await
    }
    async fn upload_part(
        &self,
        req: S3Request<UploadPartInput>,
    ) -> S3Result<S3Response<UploadPartOutput>> {
        self.fs.upload_part(req).await
    }
    async fn list_parts(
        &self,
        req: S3Request<ListPartsInput>,
    ) -> S3Result<S3Response<ListPartsOutput>> {
        self.fs.list_parts(req).await
    }
    async fn abort_multipart_upload(
        &self,
        req: S3Request<AbortMultipartUploadInput>,
    ) -> S3Result<S3Response<AbortMultipartUploadOutput>> {
        self.fs.abort_multipart_upload(req).await
    }
}
