//! The registry's records and the publisher's payloads as read back from disk or an event:
//! manifests, aliases, history lines, upload records, rejections, contracts, publisher requests.
//!
//! One input through the code under test, shared by the libFuzzer target (`fuzz/fuzz_targets`) and
//! the corpus replay that runs with every test run (`tests/tests/fuzz_corpora.rs`).

use modelpipe_engine::contract::Contract;
use modelpipe_registry::publish::{PublisherQuery, PublisherRequest};
use modelpipe_registry::{AliasRecord, HistoryEntry, Manifest, Rejection, UploadRecord};

/// Panics (or trips an assertion) only on a bug.
pub fn run(data: &[u8]) {
    let _ = serde_json::from_slice::<Manifest>(data);
    let _ = serde_json::from_slice::<AliasRecord>(data);
    let _ = serde_json::from_slice::<UploadRecord>(data);
    let _ = serde_json::from_slice::<Rejection>(data);
    let _ = Contract::parse(data);
    if let Ok(text) = std::str::from_utf8(data) {
        // history.jsonl: every line on its own, torn ones skipped.
        for line in text.lines() {
            let _ = serde_json::from_str::<HistoryEntry>(line);
        }
    }
    if let Ok(value) = serde_json::from_slice::<serde_json::Value>(data) {
        if PublisherQuery::is_query(&value) {
            let _ = serde_json::from_value::<PublisherQuery>(value);
        } else if let Ok(request) = PublisherRequest::from_json(value) {
            // What parses serialises back to the same request.
            let again = serde_json::to_value(&request).unwrap();
            assert_eq!(PublisherRequest::from_json(again).unwrap(), request);
        }
    }
}
