//! An upload's bytes, read once: SHA-256 and a staging file written in the same pass, never the
//! whole model in memory, stopped as soon as it passes the size limit.
//!
//! Reading, hashing and writing run as a pipeline: the reader hands each chunk to a hashing
//! thread and a writing thread at once, so an upload costs the slower of SHA-256 and the write,
//! not their sum (BENCHMARKS.md, "Ingest").

use std::io::Write;
use std::path::Path;
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use sha2::{Digest as _, Sha256};
use tokio::io::{AsyncRead, AsyncReadExt};
use tokio::sync::mpsc::{Receiver, Sender, channel};

use modelpipe_core::digest::{CHUNK, Digest};

/// Chunks that may wait for the hasher or the writer: enough to keep both busy, bounded memory.
const QUEUED_CHUNKS: usize = 4;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Ingested {
    pub digest: Digest,
    /// From the first byte read to the file synced.
    pub elapsed: Duration,
    /// The part of `elapsed` spent in the final fsync (bounded by the disk, not by modelpipe).
    pub fsync: Duration,
}

impl Ingested {
    pub fn mb_per_s(&self) -> f64 {
        self.digest.size as f64 / 1e6 / self.elapsed.as_secs_f64().max(1e-9)
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
    body: impl AsyncRead + Unpin,
    path: &Path,
    limit: u64,
) -> Result<Ingested, IngestError> {
    let started = Instant::now();
    let file = tokio::fs::File::create(path)
        .await
        .map_err(IngestError::Write)?
        .into_std()
        .await;
    let (to_hasher, chunks) = channel(QUEUED_CHUNKS);
    let hasher = tokio::task::spawn_blocking(move || hash(chunks));
    let (to_writer, chunks) = channel(QUEUED_CHUNKS);
    let writer = tokio::task::spawn_blocking(move || write(file, chunks));
    let read = read_chunks(body, limit, &[to_hasher, to_writer]).await;
    // The senders are gone: both threads see the end of the stream.
    let written = writer.await.expect("the staging writer does not panic");
    let sha256 = hasher.await.expect("the hasher does not panic");
    // A write error explains a reader stopped early; otherwise the reader's error comes first.
    let fsync = written.map_err(IngestError::Write)?;
    let size = read?.expect("the writer took every chunk");
    Ok(Ingested {
        digest: Digest { sha256, size },
        elapsed: started.elapsed(),
        fsync,
    })
}

/// Reads `body` in [`CHUNK`]s and sends each to every consumer. `Ok(None)` when a consumer
/// stopped taking chunks (the writer failed), `Ok(Some(size))` at the end of the body.
async fn read_chunks(
    mut body: impl AsyncRead + Unpin,
    limit: u64,
    consumers: &[Sender<Bytes>],
) -> Result<Option<u64>, IngestError> {
    let mut size = 0u64;
    loop {
        // Fill the chunk before handing it on: fewer, larger writes.
        let mut chunk = BytesMut::with_capacity(CHUNK);
        while chunk.len() < CHUNK {
            if body.read_buf(&mut chunk).await.map_err(IngestError::Read)? == 0 {
                break;
            }
        }
        if chunk.is_empty() {
            return Ok(Some(size));
        }
        size += chunk.len() as u64;
        if size > limit {
            return Err(IngestError::TooLarge { limit });
        }
        let chunk = chunk.freeze();
        for consumer in consumers {
            if consumer.send(chunk.clone()).await.is_err() {
                return Ok(None);
            }
        }
    }
}

fn hash(mut chunks: Receiver<Bytes>) -> String {
    let mut hasher = Sha256::new();
    while let Some(chunk) = chunks.blocking_recv() {
        hasher.update(&chunk);
    }
    hex::encode(hasher.finalize())
}

/// Writes every chunk, then fsyncs; returns the time the fsync took. On an error it returns at
/// once, which closes the channel and stops the reader.
fn write(mut file: std::fs::File, mut chunks: Receiver<Bytes>) -> std::io::Result<Duration> {
    while let Some(chunk) = chunks.blocking_recv() {
        // std's File is unbuffered: an error (ENOSPC, EIO) surfaces on this write or the fsync.
        file.write_all(&chunk)?;
    }
    let syncing = Instant::now();
    file.sync_all()?;
    Ok(syncing.elapsed())
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
        assert_eq!(ingested.digest, Digest::of_bytes(&bytes));
        assert_eq!(std::fs::read(&path).unwrap(), bytes);
    }

    #[tokio::test]
    async fn a_read_error_is_reported_as_one() {
        let dir = tempfile::tempdir().unwrap();
        // Three chunks of data, then a connection reset.
        let body = std::io::Cursor::new(vec![1u8; 3 * CHUNK]).chain(FailingReader);
        let err = stream_to_file(body, &dir.path().join("m"), u64::MAX)
            .await
            .unwrap_err();
        assert!(matches!(err, IngestError::Read(_)), "{err:?}");
    }

    struct FailingReader;

    impl AsyncRead for FailingReader {
        fn poll_read(
            self: std::pin::Pin<&mut Self>,
            _: &mut std::task::Context<'_>,
            _: &mut tokio::io::ReadBuf<'_>,
        ) -> std::task::Poll<std::io::Result<()>> {
            std::task::Poll::Ready(Err(std::io::ErrorKind::ConnectionReset.into()))
        }
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
