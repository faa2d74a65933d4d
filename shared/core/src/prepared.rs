//! What ingest prepares beside a version's `model.onnx` so that it loads fast, and how the
//! manifest records each file: the engine writes them, the registry stores and verifies them,
//! serving loads them.

use serde::{Deserialize, Serialize};

use crate::digest::Digest;

/// tract's compiled artifact beside the model (see [`Artifact`]).
pub const ARTIFACT_FILE: &str = "model.nnef.tar";
/// ONNX Runtime's optimised graph beside the model (see [`Optimized`]).
pub const OPTIMIZED_FILE: &str = "model.optimized.onnx";
/// The model's OpenSSF signature (a Sigstore bundle), kept beside it so that it can be verified
/// again; the manifest's `signer` names its digest.
pub const SIGNATURE_FILE: &str = "model.onnx.sig";
/// The files ingest may add beside `model.onnx`, each named by the manifest with its digest.
pub const PREPARED_FILES: [&str; 3] = [ARTIFACT_FILE, OPTIMIZED_FILE, SIGNATURE_FILE];

/// tract's compiled artifact of a version (its NNEF form, read without ONNX decoding).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Artifact {
    pub sha256: String,
    pub size: u64,
    /// The tract version that wrote it: any other reads `model.onnx` instead.
    pub tract: String,
}

/// The graph ONNX Runtime optimised at ingest, at the extended level: every rewrite that does
/// not depend on the CPU (the layout level's NCHWc blocking does, and is left to each load).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Optimized {
    pub sha256: String,
    pub size: u64,
    /// The ONNX Runtime build that wrote it: any other loads `model.onnx` instead.
    pub onnxruntime: String,
    /// Loading it (optimisation off) and its fastest run at ingest, against `model.onnx`
    /// optimised fully: it is kept only when it loads faster and runs about as fast.
    pub load_ms: u64,
    pub run_us: u64,
    pub model_load_ms: u64,
    pub model_run_us: u64,
}

impl Optimized {
    pub fn digest(&self) -> Digest {
        Digest {
            sha256: self.sha256.clone(),
            size: self.size,
        }
    }
}

impl Artifact {
    pub fn digest(&self) -> Digest {
        Digest {
            sha256: self.sha256.clone(),
            size: self.size,
        }
    }
}
