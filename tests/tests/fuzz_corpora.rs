//! Every input of the fuzz targets' committed corpora (`fuzz/corpus/<target>/`) through the same
//! code libFuzzer drives (`fuzz/bodies/<target>.rs`), in the ordinary build: an input that once
//! found a bug, or a seed that reaches deep, keeps being checked on every test run.

use std::path::Path;

#[path = "../../fuzz/bodies/registry_records.rs"]
mod registry_records;
#[path = "../../fuzz/bodies/request_decoder.rs"]
mod request_decoder;
#[path = "../../fuzz/bodies/s3_event.rs"]
mod s3_event;

/// Runs every file of the target's corpus; returns how many.
fn replay(target: &str, run: fn(&[u8])) -> usize {
    let corpus = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../fuzz/corpus")
        .join(target);
    let mut inputs = 0;
    for entry in std::fs::read_dir(&corpus).unwrap_or_else(|e| panic!("{}: {e}", corpus.display()))
    {
        let path = entry.unwrap().path();
        let data = std::fs::read(&path).unwrap();
        // Shown with the panic when this input fails.
        eprintln!("{}", path.display());
        run(&data);
        inputs += 1;
    }
    assert!(inputs > 0, "{} is empty", corpus.display());
    inputs
}

#[test]
fn the_request_decoder_corpus_replays() {
    replay("request_decoder", request_decoder::run);
}

#[test]
fn the_s3_event_corpus_replays() {
    replay("s3_event", s3_event::run);
}

#[test]
fn the_registry_records_corpus_replays() {
    replay("registry_records", registry_records::run);
}
