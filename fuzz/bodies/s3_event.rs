//! S3 event handling up to the registry: the event JSON, each record's URL-encoded key decoded
//! and parsed into a model, its sequencer ordered against another.
//!
//! One input through the code under test, shared by the libFuzzer target (`fuzz/fuzz_targets`) and
//! the corpus replay that runs with every test run (`tests/tests/fuzz_corpora.rs`).

use aws_lambda_events::s3::S3Event;
use modelpipe_core::model_name::{ModelKey, decode_event_key};
use modelpipe_registry::sequencer_cmp;

/// Panics (or trips an assertion) only on a bug.
pub fn run(data: &[u8]) {
    let Ok(event) = serde_json::from_slice::<S3Event>(data) else {
        return;
    };
    for record in &event.records {
        let key = decode_event_key(record.s3.object.key.as_deref().unwrap_or_default());
        if let Ok(parsed) = ModelKey::parse(&key, "models/") {
            assert!(!parsed.model.as_str().contains(['/', '.']));
        }
        if let Some(sequencer) = record.s3.object.sequencer.as_deref() {
            let _ = sequencer_cmp(sequencer, "0055AED6DCD90281E5");
        }
    }
}
