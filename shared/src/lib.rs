//! modelpipe's core, shared by the three Lambda functions and `modelctl`. The modules follow an
//! upload's path: [`model_name`] (which key names which model) → [`ingest`] (stream, hash, stage)
//! → [`checks`] (load, run, compare signatures, golden examples) → [`validator`] (one S3 event
//! to one outcome) → [`registry`] (commit a version) → [`publish`] (move an alias) → [`serve`]
//! (notice the move, load, swap, answer requests).

pub mod aws;
pub mod checks;
pub mod config;
pub mod contract;
pub mod digest;
pub mod engine;
pub mod ingest;
pub mod model_name;
pub mod object_store;
pub mod onnx_build;
pub mod publish;
pub mod registry;
pub mod s3_event;
pub mod serve;
pub mod signature;
pub mod telemetry;
pub mod validator;

pub use model_name::{AliasName, ModelName, NameError};
