//! modelpipe's vocabulary, shared by every other crate and depending on none of them: which key
//! names which model ([`model_name`]), digests ([`digest`]), what a model takes and returns
//! ([`signature`]), what ingest decided for a version ([`engine_choice`]) and prepared beside it
//! ([`prepared`]), what a rollout request names ([`requested_rollout`]), times as records write them
//! ([`time`]), and the bounds on the work one model may cost ([`limits`]).

pub mod digest;
pub mod engine_choice;
pub mod limits;
pub mod model_name;
pub mod prepared;
pub mod requested_rollout;
pub mod signature;
pub mod time;

pub use model_name::{AliasName, ModelName, NameError};
