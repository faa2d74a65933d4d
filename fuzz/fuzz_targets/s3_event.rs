//! libFuzzer target: see `fuzz/bodies/s3_event.rs`.
#![no_main]

#[path = "../bodies/s3_event.rs"]
mod body;

libfuzzer_sys::fuzz_target!(|data: &[u8]| body::run(data));
