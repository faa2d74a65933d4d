//! libFuzzer target: see `fuzz/bodies/registry_records.rs`.
#![no_main]

#[path = "../bodies/registry_records.rs"]
mod body;

libfuzzer_sys::fuzz_target!(|data: &[u8]| body::run(data));
