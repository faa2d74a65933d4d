//! Benchmark harness: modelpipe measured against the Python onnxruntime handler people deploy
//! today (`compare`, run by `bench/run.sh`), plus the inference-path and registry benchmarks.

pub mod compare;
pub mod function;
pub mod models;
pub mod slow_s3;
pub mod stats;
