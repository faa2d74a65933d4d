//! Dev-only (tests, benchmarks, examples): real ONNX models built in Rust ([`onnx_build`]) and
//! the one way a test puts a version into a registry ([`commit`]).

pub mod commit;
pub mod onnx_build;
