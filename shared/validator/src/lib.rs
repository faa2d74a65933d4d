//! modelpipe's validator: one S3 upload, from its event to one outcome. [`s3_event`] (the event
//! and its keys) → [`ingest`] (stream, hash, stage) → [`version`] (the engine's checks, the
//! files prepared beside the model, the version it becomes) → `modelpipe_registry` (commit a
//! version) → the publisher (move an alias), as [`validator`] orders them. [`object_store`] is
//! what the validator needs from the bucket (`modelpipe-aws` implements it with aws-sdk-s3).
//! The crate graph and an upload's path through it: `docs/architecture.md`.

pub mod ingest;
pub mod object_store;
pub mod s3_event;
pub mod validator;
pub mod version;
