//! One writer per model on S3: a lease object `<model>/.lock`, created with `If-None-Match: *`,
//! renewed with `If-Match` while held, deleted with `If-Match` when released. A holder that dies
//! stops renewing; after [`TTL`] the next writer takes the lease over, so a crash cannot wedge a
//! model. The conditional writes of versions and logs remain the fence should a lease be lost.

use std::io;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use aws_sdk_s3::primitives::ByteStream;
use serde::{Deserialize, Serialize};
use tracing::warn;

use super::{Expect, Inner};

/// How long a lease lasts without renewal.
const TTL: Duration = Duration::from_secs(30);
const RENEW_EVERY: Duration = Duration::from_secs(10);
/// How long a writer waits for a busy lease before giving up.
const WAIT: Duration = Duration::from_secs(120);

#[derive(Debug, Serialize, Deserialize)]
struct LeaseBody {
    owner: String,
    expires_at_ms: u64,
}

pub struct Lease {
    inner: Arc<Inner>,
    key: String,
    etag: Arc<Mutex<String>>,
    renewal: Option<tokio::task::JoinHandle<()>>,
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default()
        .as_millis() as u64
}

fn body(owner: &str) -> ByteStream {
    let lease = LeaseBody {
        owner: owner.to_string(),
        expires_at_ms: now_ms() + TTL.as_millis() as u64,
    };
    ByteStream::from(serde_json::to_vec(&lease).expect("lease serialises"))
}

impl Lease {
    /// Waits for the lease on `key` and holds it, renewing it in the background.
    pub fn acquire(inner: Arc<Inner>, key: &str) -> io::Result<Self> {
        let owner = format!(
            "{}-{}-{:x}",
            std::env::var("AWS_LAMBDA_LOG_STREAM_NAME").unwrap_or_else(|_| "local".into()),
            std::process::id(),
            now_ms()
        );
        let etag = inner.runtime.run(take(&inner, key, &owner))?;
        let etag = Arc::new(Mutex::new(etag));
        let renewal = {
            let (inner, key, etag) = (inner.clone(), key.to_string(), etag.clone());
            let handle = inner.runtime.0.as_ref().expect("runtime").handle().clone();
            handle.spawn(async move { renew(&inner, &key, &owner, &etag).await })
        };
        Ok(Self {
            inner,
            key: key.to_string(),
            etag,
            renewal: Some(renewal),
        })
    }
}

async fn take(inner: &Inner, key: &str, owner: &str) -> io::Result<String> {
    let deadline = std::time::Instant::now() + WAIT;
    let mut pause = Duration::from_millis(20);
    loop {
        if let Some(etag) = inner.put(key, body(owner), Expect::Absent).await? {
            return Ok(etag);
        }
        // Held: take it over if its holder stopped renewing it.
        if let Some(current) = inner.fetch(key).await? {
            let expired = serde_json::from_slice::<LeaseBody>(&current.bytes)
                .map_or(true, |lease| lease.expires_at_ms < now_ms());
            if expired
                && let Some(etag) = inner
                    .put(key, body(owner), Expect::Etag(current.etag))
                    .await?
            {
                return Ok(etag);
            }
        }
        if std::time::Instant::now() > deadline {
            return Err(io::Error::new(
                io::ErrorKind::TimedOut,
                format!(
                    "the lease s3://{}/{}{key} stayed busy for {WAIT:?}",
                    inner.bucket, inner.prefix
                ),
            ));
        }
        tokio::time::sleep(pause).await;
        pause = (pause * 2).min(Duration::from_millis(500));
    }
}

async fn renew(inner: &Inner, key: &str, owner: &str, etag: &Mutex<String>) {
    loop {
        tokio::time::sleep(RENEW_EVERY).await;
        let current = etag.lock().expect("lease etag").clone();
        match inner.put(key, body(owner), Expect::Etag(current)).await {
            Ok(Some(next)) => *etag.lock().expect("lease etag") = next,
            Ok(None) => {
                warn!(
                    key,
                    "the registry lease was taken over; writes stay fenced by conditions"
                );
                return;
            }
            Err(e) => warn!(key, error = %e, "could not renew the registry lease"),
        }
    }
}

impl Drop for Lease {
    fn drop(&mut self) {
        let inner = &self.inner;
        if let Some(renewal) = self.renewal.take() {
            renewal.abort();
            // Let a renewal in flight finish, so the ETag below is the latest.
            inner.runtime.run(async {
                let _ = renewal.await;
            });
        }
        let etag = self.etag.lock().expect("lease etag").clone();
        let released = inner.runtime.run(
            inner
                .client
                .delete_object()
                .bucket(&inner.bucket)
                .key(inner.object_key(&self.key))
                .if_match(etag)
                .send(),
        );
        // Not ours any more (taken over) or already gone: nothing to release.
        if let Err(e) = released
            && !super::is_precondition_failed(&e)
            && !super::is_not_found(&e)
        {
            warn!(key = %self.key, error = %super::sdk_error(e), "could not release the registry lease; it expires by itself");
        }
    }
}
