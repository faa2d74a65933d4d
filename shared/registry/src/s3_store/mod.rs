//! The registry under an S3 prefix (`MODEL_ROOT=s3://bucket/prefix`), same layout as on disk.
//!
//! - Versions are claimed with a conditional write (`If-None-Match: *` on `versions/<N>/model.onnx`,
//!   uploaded with its SHA-256 checksum, which S3 verifies): two validators never take one number,
//!   lock or no lock. The manifest, written last, makes the version visible.
//! - Writers of one model serialise on a lease object ([`lease`]), the S3 form of the directory
//!   registry's advisory lock; logs are appended by read-modify-write with `If-Match`.
//! - Reads revalidate what they read before with `If-None-Match` (a 304 has no body): the
//!   inference function's alias check costs one small round trip.
//! - Model files are downloaded once to a bounded local cache ([`files`]), verified on the way.
//!
//! The registry's API is blocking (it runs in blocking sections, under a lock); this store runs
//! the SDK on a runtime of its own, so a call from any thread never stalls the caller's runtime
//! on connections it does not drive.

mod files;
mod lease;

use std::collections::HashMap;
use std::future::Future;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use aws_sdk_s3::error::{ProvideErrorMetadata, SdkError};
use aws_sdk_s3::primitives::ByteStream;
use aws_sdk_s3::types::{ChecksumAlgorithm, ChecksumMode};
use base64::Engine as _;
use modelpipe_core::digest::Digest;
use sha2::{Digest as _, Sha256};

pub use self::files::FileCacheConfig;
use super::store::{LocalCopy, LockGuard, Store};
use files::FileCache;

/// Small objects whose content is kept to revalidate with `If-None-Match`.
const CACHED_READ_LIMIT: usize = 256 * 1024;
const CACHED_READS: usize = 1024;

#[derive(Debug, Clone)]
pub struct S3Store {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    client: aws_sdk_s3::Client,
    bucket: String,
    prefix: String,
    runtime: Runtime,
    reads: Mutex<HashMap<String, (String, Arc<Vec<u8>>)>>,
    files: FileCache,
}

/// The store's own runtime; shut down without waiting, so dropping the registry is fine anywhere.
#[derive(Debug)]
struct Runtime(Option<tokio::runtime::Runtime>);

impl Runtime {
    fn new() -> io::Result<Self> {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .thread_name("registry-s3")
            .enable_all()
            .build()?;
        Ok(Self(Some(runtime)))
    }

    /// Runs `future` to completion on this runtime, from any thread.
    fn run<T: Send>(&self, future: impl Future<Output = T> + Send) -> T {
        let runtime = self.0.as_ref().expect("runtime lives until drop");
        if tokio::runtime::Handle::try_current().is_ok() {
            // Inside another runtime, block_on would panic: block a scoped thread instead.
            std::thread::scope(|scope| {
                scope
                    .spawn(|| runtime.block_on(future))
                    .join()
                    .expect("registry S3 call panicked")
            })
        } else {
            runtime.block_on(future)
        }
    }
}

impl Drop for Runtime {
    fn drop(&mut self) {
        if let Some(runtime) = self.0.take() {
            runtime.shutdown_background();
        }
    }
}

/// An SDK error as an `io::Error`, its S3 code kept in the message.
fn sdk_error<E, R>(e: SdkError<E, R>) -> io::Error
where
    E: ProvideErrorMetadata + std::error::Error + Send + Sync + 'static,
    R: std::fmt::Debug,
{
    let detail = match e.code() {
        Some(code) => format!("{code}: {}", e.message().unwrap_or_default()),
        None => aws_sdk_s3::error::DisplayErrorContext(&e).to_string(),
    };
    io::Error::other(detail)
}

fn status<E>(e: &SdkError<E, aws_sdk_s3::config::http::HttpResponse>) -> Option<u16> {
    e.raw_response().map(|r| r.status().as_u16())
}

/// Whether an S3 request failed because the object (or the object version) does not exist:
/// the one test every S3 caller of modelpipe uses.
pub fn is_not_found<E: ProvideErrorMetadata>(
    e: &SdkError<E, aws_sdk_s3::config::http::HttpResponse>,
) -> bool {
    matches!(e.code(), Some("NoSuchKey" | "NotFound" | "NoSuchVersion")) || status(e) == Some(404)
}

/// An error reading one object, `NotFound` when it does not exist.
fn object_error<E>(e: SdkError<E, aws_sdk_s3::config::http::HttpResponse>) -> io::Error
where
    E: ProvideErrorMetadata + std::error::Error + Send + Sync + 'static,
{
    if is_not_found(&e) {
        io::Error::new(io::ErrorKind::NotFound, "the object does not exist")
    } else {
        sdk_error(e)
    }
}

/// A conditional write lost: someone else wrote first.
fn is_precondition_failed<E: ProvideErrorMetadata>(
    e: &SdkError<E, aws_sdk_s3::config::http::HttpResponse>,
) -> bool {
    // 409 ConditionalRequestConflict: a concurrent conditional write is in flight.
    matches!(status(e), Some(412 | 409))
        || matches!(
            e.code(),
            Some("PreconditionFailed" | "ConditionalRequestConflict")
        )
}

/// What a conditional write expects to find.
#[derive(Debug, Clone)]
enum Expect {
    Anything,
    Absent,
    Etag(String),
}

/// An object read whole, with its ETag.
struct Fetched {
    bytes: Arc<Vec<u8>>,
    etag: String,
}

impl S3Store {
    /// A store over `s3://bucket/prefix`, with `sdk` or else the SDK's standard configuration
    /// (region, credentials, `AWS_ENDPOINT_URL`). Nothing is requested until the first use.
    pub fn connect(
        bucket: &str,
        prefix: &str,
        files: &FileCacheConfig,
        sdk: Option<aws_config::SdkConfig>,
    ) -> io::Result<Self> {
        let runtime = Runtime::new()?;
        // A client of its own (and so its own connection pool): connections are driven by the
        // runtime that opened them, and this one must not depend on the caller's.
        let client = runtime.run(async {
            let config = match sdk {
                Some(config) => {
                    let mut own = config.to_builder();
                    own.set_http_client(None);
                    own.build()
                }
                None => aws_config::load_defaults(aws_config::BehaviorVersion::latest()).await,
            };
            s3_client(&config)
        });
        let cache_root = files.dir.join(
            modelpipe_core::digest::sha256_bytes(format!("{bucket}/{prefix}").as_bytes())[..16]
                .to_string(),
        );
        Ok(Self {
            inner: Arc::new(Inner {
                client,
                bucket: bucket.to_string(),
                prefix: prefix.to_string(),
                runtime,
                reads: Mutex::default(),
                files: FileCache::new(cache_root, files.budget())?,
            }),
        })
    }
}

impl Inner {
    fn object_key(&self, key: &str) -> String {
        format!("{}{key}", self.prefix)
    }

    /// Reads `key`, revalidating a copy read before (`If-None-Match`).
    async fn fetch(&self, key: &str) -> io::Result<Option<Fetched>> {
        let cached = self.reads.lock().expect("reads").get(key).cloned();
        let mut request = self
            .client
            .get_object()
            .bucket(&self.bucket)
            .key(self.object_key(key));
        if let Some((etag, _)) = &cached {
            request = request.if_none_match(etag);
        }
        let response = match request.send().await {
            Ok(response) => response,
            Err(e) if status(&e) == Some(304) => {
                let (etag, bytes) = cached.expect("304 answers a conditional read");
                return Ok(Some(Fetched { bytes, etag }));
            }
            Err(e) if is_not_found(&e) => {
                self.reads.lock().expect("reads").remove(key);
                return Ok(None);
            }
            Err(e) => return Err(sdk_error(e)),
        };
        let etag = response.e_tag().unwrap_or_default().to_string();
        let bytes = response
            .body
            .collect()
            .await
            .map_err(io::Error::other)?
            .to_vec();
        let bytes = Arc::new(bytes);
        if bytes.len() <= CACHED_READ_LIMIT && !etag.is_empty() {
            let mut reads = self.reads.lock().expect("reads");
            if reads.len() >= CACHED_READS {
                reads.clear();
            }
            reads.insert(key.to_string(), (etag.clone(), bytes.clone()));
        }
        Ok(Some(Fetched { bytes, etag }))
    }

    /// Writes `key` if it is as `expect` says; `Ok(None)` if it is not (the write lost).
    async fn put(&self, key: &str, body: ByteStream, expect: Expect) -> io::Result<Option<String>> {
        let request = self
            .client
            .put_object()
            .bucket(&self.bucket)
            .key(self.object_key(key))
            .body(body);
        let request = match expect {
            Expect::Anything => request,
            Expect::Absent => request.if_none_match("*"),
            Expect::Etag(etag) => request.if_match(etag),
        };
        match request.send().await {
            Ok(output) => Ok(Some(output.e_tag().unwrap_or_default().to_string())),
            Err(e) if is_precondition_failed(&e) => Ok(None),
            Err(e) => Err(sdk_error(e)),
        }
    }

    async fn list(&self, dir: &str, delimiter: bool) -> io::Result<Vec<String>> {
        let prefix = if dir.is_empty() {
            self.prefix.clone()
        } else {
            format!("{}{dir}/", self.prefix)
        };
        let mut names = Vec::new();
        let mut token = None;
        loop {
            let mut request = self
                .client
                .list_objects_v2()
                .bucket(&self.bucket)
                .prefix(&prefix)
                .set_continuation_token(token);
            if delimiter {
                request = request.delimiter("/");
            }
            let page = request.send().await.map_err(sdk_error)?;
            let relative = |key: &str| key.strip_prefix(&prefix).map(str::to_string);
            names.extend(
                page.common_prefixes()
                    .iter()
                    .filter_map(|p| relative(p.prefix()?.trim_end_matches('/'))),
            );
            names.extend(page.contents().iter().filter_map(|o| relative(o.key()?)));
            match page.next_continuation_token() {
                Some(next) if page.is_truncated() == Some(true) => token = Some(next.to_string()),
                _ => break,
            }
        }
        names.retain(|n| !n.is_empty());
        Ok(names)
    }

    /// Streams the object at `key` through SHA-256 (into `sink` too, when given).
    async fn hash_object(
        &self,
        key: &str,
        mut sink: Option<&mut tokio::fs::File>,
    ) -> io::Result<Digest> {
        use tokio::io::AsyncWriteExt;
        let response = self
            .client
            .get_object()
            .bucket(&self.bucket)
            .key(self.object_key(key))
            .send()
            .await
            .map_err(object_error)?;
        let mut body = response.body;
        let mut hasher = Sha256::new();
        let mut size = 0u64;
        while let Some(chunk) = body.try_next().await.map_err(io::Error::other)? {
            hasher.update(&chunk);
            size += chunk.len() as u64;
            if let Some(file) = sink.as_deref_mut() {
                file.write_all(&chunk).await?;
            }
        }
        if let Some(file) = sink {
            file.flush().await?;
        }
        Ok(Digest {
            sha256: hex::encode(hasher.finalize()),
            size,
        })
    }
}

impl Store for S3Store {
    fn describe(&self, key: &str) -> String {
        format!("s3://{}/{}", self.inner.bucket, self.inner.object_key(key))
    }

    fn read(&self, key: &str) -> io::Result<Option<Vec<u8>>> {
        let inner = &self.inner;
        Ok(inner
            .runtime
            .run(inner.fetch(key))?
            .map(|f| f.bytes.as_ref().clone()))
    }

    fn list(&self, dir: &str) -> io::Result<Vec<String>> {
        self.inner.runtime.run(self.inner.list(dir, true))
    }

    fn list_files(&self, dir: &str) -> io::Result<Vec<String>> {
        self.inner.runtime.run(self.inner.list(dir, false))
    }

    fn write(&self, key: &str, bytes: &[u8]) -> io::Result<()> {
        let body = ByteStream::from(bytes.to_vec());
        self.inner
            .runtime
            .run(self.inner.put(key, body, Expect::Anything))?;
        Ok(())
    }

    fn remove(&self, key: &str) -> io::Result<()> {
        let inner = &self.inner;
        inner.reads.lock().expect("reads").remove(key);
        // S3 answers a DeleteObject of a missing key with success.
        inner
            .runtime
            .run(
                inner
                    .client
                    .delete_object()
                    .bucket(&inner.bucket)
                    .key(inner.object_key(key))
                    .send(),
            )
            .map_err(sdk_error)?;
        Ok(())
    }

    fn append_line(&self, key: &str, line: &str) -> io::Result<()> {
        let inner = &self.inner;
        inner.runtime.run(async {
            // Under the model's lease no one else appends; the condition is the fence if the
            // lease was lost.
            for _ in 0..5 {
                let current = inner.fetch(key).await?;
                let mut text = current
                    .as_ref()
                    .map(|f| f.bytes.as_ref().clone())
                    .unwrap_or_default();
                if text.last().is_some_and(|&b| b != b'\n') {
                    text.push(b'\n');
                }
                text.extend_from_slice(line.as_bytes());
                text.push(b'\n');
                let expect = match current {
                    Some(f) => Expect::Etag(f.etag),
                    None => Expect::Absent,
                };
                if inner
                    .put(key, ByteStream::from(text), expect)
                    .await?
                    .is_some()
                {
                    return Ok(());
                }
            }
            Err(io::Error::other(
                "another writer kept changing the log (is a second lock holder running?)",
            ))
        })
    }

    fn lock(&self, model: &str) -> io::Result<LockGuard> {
        Ok(Box::new(lease::Lease::acquire(
            self.inner.clone(),
            &format!("{model}/.lock"),
        )?))
    }

    fn staging_dir(&self, model: &str) -> io::Result<PathBuf> {
        Ok(self.inner.files.staging_dir(model))
    }

    fn commit_version(&self, staged: &Path, version_dir: &str, sha256: &str) -> io::Result<bool> {
        let inner = &self.inner;
        let checksum = base64::engine::general_purpose::STANDARD
            .encode(hex::decode(sha256).map_err(io::Error::other)?);
        inner.runtime.run(async {
            let model_key = format!("{version_dir}/{}", super::MODEL_FILE);
            let body = ByteStream::from_path(staged.join(super::MODEL_FILE))
                .await
                .map_err(io::Error::other)?;
            // S3 checks the bytes against the checksum: the stored file is the one hashed.
            let claimed = inner
                .client
                .put_object()
                .bucket(&inner.bucket)
                .key(inner.object_key(&model_key))
                .checksum_algorithm(ChecksumAlgorithm::Sha256)
                .checksum_sha256(&checksum)
                .if_none_match("*")
                .body(body)
                .send()
                .await;
            match claimed {
                Ok(_) => {}
                Err(e) if is_precondition_failed(&e) => return Ok(false),
                Err(e) => return Err(sdk_error(e)),
            }
            // The number is ours: what ingest prepared goes before the manifest that names it.
            for file in super::PREPARED_FILES {
                let prepared = staged.join(file);
                if tokio::fs::try_exists(&prepared).await? {
                    let body = ByteStream::from_path(&prepared)
                        .await
                        .map_err(io::Error::other)?;
                    let key = format!("{version_dir}/{file}");
                    inner.put(&key, body, Expect::Anything).await?;
                }
            }
            let manifest = tokio::fs::read(staged.join(super::MANIFEST_FILE)).await?;
            let manifest_key = format!("{version_dir}/{}", super::MANIFEST_FILE);
            match inner
                .put(&manifest_key, ByteStream::from(manifest), Expect::Absent)
                .await?
            {
                Some(_) => Ok(true),
                None => Err(io::Error::other(format!(
                    "{manifest_key} appeared while this version was being committed"
                ))),
            }
        })
    }

    fn digest(&self, key: &str) -> io::Result<Digest> {
        let inner = &self.inner;
        inner.runtime.run(async {
            let head = inner
                .client
                .head_object()
                .bucket(&inner.bucket)
                .key(inner.object_key(key))
                .checksum_mode(ChecksumMode::Enabled)
                .send()
                .await
                .map_err(object_error)?;
            let size = head.content_length().unwrap_or_default().max(0) as u64;
            // The full-object SHA-256 S3 verified when the version was committed; a composite
            // (multipart) checksum or none at all means reading the object.
            let stored = head
                .checksum_sha256()
                .filter(|c| !c.contains('-'))
                .and_then(|c| base64::engine::general_purpose::STANDARD.decode(c).ok());
            match stored {
                Some(digest) => Ok(Digest {
                    sha256: hex::encode(digest),
                    size,
                }),
                None => inner.hash_object(key, None).await,
            }
        })
    }

    fn local_copy(&self, key: &str, expected: &Digest) -> io::Result<LocalCopy> {
        let inner = &self.inner;
        let path = inner.files.path_for(&expected.sha256);
        if inner.files.reuse(&path, expected)? {
            return Ok(LocalCopy {
                path,
                verified: true,
            });
        }
        inner.files.make_room(expected.size)?;
        let mut temp = inner.files.temp_file()?;
        let actual = inner.runtime.run(async {
            let mut file = tokio::fs::File::from_std(temp.as_file().try_clone()?);
            inner.hash_object(key, Some(&mut file)).await
        })?;
        if &actual != expected {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                format!(
                    "downloaded {} bytes with sha256 {}, the manifest says {} bytes with {}",
                    actual.size, actual.sha256, expected.size, expected.sha256
                ),
            ));
        }
        temp.as_file_mut().sync_all()?;
        temp.persist(&path).map_err(|e| e.error)?;
        Ok(LocalCopy {
            path,
            verified: true,
        })
    }
}

/// An S3 client from the shared AWS config; path-style addressing when the endpoint is
/// overridden (`AWS_ENDPOINT_URL[_S3]`: moto, `modelctl dev`), since local endpoints have no
/// per-bucket host names.
pub fn s3_client(config: &aws_config::SdkConfig) -> aws_sdk_s3::Client {
    let overridden =
        config.endpoint_url().is_some() || std::env::var_os("AWS_ENDPOINT_URL_S3").is_some();
    let s3_config = aws_sdk_s3::config::Builder::from(config)
        .force_path_style(overridden)
        .build();
    aws_sdk_s3::Client::from_conf(s3_config)
}
