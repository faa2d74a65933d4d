//! libFuzzer target: see `fuzz/bodies/request_decoder.rs`.
#![no_main]

#[path = "../bodies/request_decoder.rs"]
mod body;

libfuzzer_sys::fuzz_target!(|data: &[u8]| body::run(data));
