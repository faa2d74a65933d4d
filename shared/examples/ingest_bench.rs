//! Ingest throughput: `ingest::stream_to_file` (read → SHA-256 → write → fsync) on a file of
//! `SIZE_MB` (default 100) against `sha256sum` and `cp` of the same file, interleaved rounds,
//! medians; and the load time of the example iris model.
//!
//! `cargo run -p modelpipe --example ingest_bench [SIZE_MB] [ROUNDS]`

use std::io::Write;
use std::process::Command;
use std::time::{Duration, Instant};

use modelpipe::engine::Engine;
use modelpipe::onnx_build::LinearSoftmax;

fn median(mut samples: Vec<Duration>) -> Duration {
    samples.sort();
    samples[samples.len() / 2]
}

fn timed(f: impl FnOnce()) -> Duration {
    let started = Instant::now();
    f();
    started.elapsed()
}

#[tokio::main]
async fn main() {
    let args: Vec<String> = std::env::args().collect();
    let size_mb: usize = args.get(1).and_then(|a| a.parse().ok()).unwrap_or(100);
    let rounds: usize = args.get(2).and_then(|a| a.parse().ok()).unwrap_or(5);
    let dir = tempfile::tempdir().unwrap();
    let source = dir.path().join("upload.bin");
    let mut file = std::fs::File::create(&source).unwrap();
    let mut state = 0x9E3779B97F4A7C15u64;
    let block: Vec<u8> = (0..1 << 20)
        .map(|_| {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state as u8
        })
        .collect();
    for _ in 0..size_mb {
        file.write_all(&block).unwrap();
    }
    file.sync_all().unwrap();
    let bytes = (size_mb << 20) as f64;

    let (mut ours, mut sha256sum, mut cp) = (Vec::new(), Vec::new(), Vec::new());
    for round in 0..rounds {
        let target = dir.path().join(format!("staged-{round}"));
        let body = tokio::fs::File::open(&source).await.unwrap();
        let started = Instant::now();
        modelpipe::ingest::stream_to_file(body, &target, u64::MAX)
            .await
            .unwrap();
        ours.push(started.elapsed());
        std::fs::remove_file(&target).unwrap();
        sha256sum.push(timed(|| {
            assert!(
                Command::new("sha256sum")
                    .arg(&source)
                    .output()
                    .unwrap()
                    .status
                    .success()
            )
        }));
        let copy = dir.path().join("copy");
        cp.push(timed(|| {
            assert!(
                Command::new("cp")
                    .arg(&source)
                    .arg(&copy)
                    .status()
                    .unwrap()
                    .success()
            )
        }));
        std::fs::remove_file(&copy).unwrap();
    }
    let rate = |d: Duration| bytes / 1e6 / d.as_secs_f64();
    let (ours, sha256sum, cp) = (median(ours), median(sha256sum), median(cp));
    println!("ingest {size_mb} MiB, {rounds} rounds, medians:");
    println!(
        "  modelpipe stream+hash+write+fsync  {:>7.0} MB/s  ({:?})",
        rate(ours),
        ours
    );
    println!(
        "  sha256sum                           {:>7.0} MB/s  ({:?})",
        rate(sha256sum),
        sha256sum
    );
    println!(
        "  cp (no fsync)                       {:>7.0} MB/s  ({:?})",
        rate(cp),
        cp
    );
    println!(
        "  ratio modelpipe / sha256sum         {:>7.2}x",
        rate(ours) / rate(sha256sum)
    );

    let model = dir.path().join("iris.onnx");
    std::fs::write(&model, LinearSoftmax::iris(1).to_bytes()).unwrap();
    let loads: Vec<Duration> = (0..rounds.max(5))
        .map(|_| Engine::load(&model).unwrap().load_time)
        .collect();
    println!("load iris (4→3 linear+softmax): median {:?}", median(loads));
}
