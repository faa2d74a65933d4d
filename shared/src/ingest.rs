//! An upload's bytes, read once: SHA-256 and a staging file written in the same pass, never the
//! whole model in memory, stopped as soon as it passes the size limit.

use std::path::Path;
use std::time::{Duration, Instant};

use sha2::{Digest, Sha256};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWriteExt};

use crate::digest::CHUNK;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Ingested {
    pub sha256: String,
    pub size: u64,
    pub elapsed: Duration,
}

impl Ingested {
    pub fn mb_per_s(&self) -> f64 {
        self.size as f64 / 1e6 / self.elapsed.as_secs_f64().max(1e-9)
    }
}

#[derive(Debug, thiserror::Error)]
pub enum IngestError {
    #[error("the upload is larger than MAX_MODEL_BYTES ({limit} bytes)")]
    TooLarge { limit: u64 },
    #[error("reading the upload failed: {0}")]
    Read(std::io::Error),
    #[error("writing the staging file failed: {0}")]
    Write(std::io::Error),
}

/// Copies `body` to a new file at `path`, hashing as it goes, and fsyncs it.
pub async fn stream_to_file(
    mut body: impl AsyncRead + Unpin,
    path: &Path,
    limit: u64,
) -> Result<Ingested, IngestError> {
    let started = Instant::now();
    let mut file = tokio::fs::File::create(path)
        .await
        .map_err(IngestError::Write)?;
    let mut hasher = Sha256::new();
    let mut buf = vec![0u8; CHUNK];
    let mut size = 0u64;
    loop {
        // Fill the buffer before hashing and writing: fewer, larger writes.
        let mut filled = 0;
        while filled < buf.len() {
            let n = body
                .read(&mut buf[filled..])
                .await
                .map_err(IngestError::Read)?;
            if n == 0 {
                break;
            }
            filled += n;
        }
        if filled == 0 {
            break;
        }
        size += filled as u64;
        if size > limit {
            return Err(IngestError::TooLarge { limit });
        }
        hasher.update(&buf[..filled]);
        file.write_all(&buf[..filled])
            .await
            .map_err(IngestError::Write)?;
    }
    // tokio queues each write; flush returns the error of the last one (ENOSPC, EIO), which
    // sync_all alone would drop, leaving a short file behind a hash of the whole upload.
    file.flush().await.map_err(IngestError::Write)?;
    file.sync_all().await.map_err(IngestError::Write)?;
    Ok(Ingested {
        sha256: hex::encode(hasher.finalize()),
        size,
        elapsed: started.elapsed(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn hashes_and_writes_in_one_pass() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("model.onnx");
        let bytes: Vec<u8> = (0..3 * CHUNK + 17).map(|i| (i % 251) as u8).collect();
        let ingested = stream_to_file(&bytes[..], &path, u64::MAX).await.unwrap();
        assert_eq!(ingested.size, bytes.len() as u64);
        assert_eq!(ingested.sha256, crate::digest::sha256_bytes(&bytes));
        assert_eq!(std::fs::read(&path).unwrap(), bytes);
    }

    #[tokio::test]
    async fn stops_past_the_limit() {
        let dir = tempfile::tempdir().unwrap();
        let bytes = vec![7u8; 1000];
        let err = stream_to_file(&bytes[..], &dir.path().join("m"), 999)
            .await
            .unwrap_err();
        assert!(matches!(err, IngestError::TooLarge { limit: 999 }));
    }
}
