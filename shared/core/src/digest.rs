//! SHA-256 of files, streamed (sha2 uses the CPU's SHA extensions when it has them).

use std::fs::File;
use std::io::{self, Read};
use std::path::Path;

use sha2::{Digest as _, Sha256};

pub const CHUNK: usize = 1 << 20;

/// What identifies a file's content: its hex SHA-256 and its size in bytes.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Digest {
    pub sha256: String,
    pub size: u64,
}

impl Digest {
    /// Reads the file once, in 1 MiB chunks.
    pub fn of_file(path: &Path) -> io::Result<Self> {
        let mut file = File::open(path)?;
        let mut hasher = Sha256::new();
        let mut buf = vec![0u8; CHUNK];
        let mut size = 0u64;
        loop {
            let n = file.read(&mut buf)?;
            if n == 0 {
                break;
            }
            hasher.update(&buf[..n]);
            size += n as u64;
        }
        Ok(Self {
            sha256: hex::encode(hasher.finalize()),
            size,
        })
    }

    pub fn of_bytes(bytes: &[u8]) -> Self {
        Self {
            sha256: sha256_bytes(bytes),
            size: bytes.len() as u64,
        }
    }
}

pub fn sha256_bytes(bytes: &[u8]) -> String {
    hex::encode(Sha256::digest(bytes))
}
