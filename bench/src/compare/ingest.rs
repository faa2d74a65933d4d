//! Ingest: an upload streamed through SHA-256 into a staging file and fsynced
//! (`ingest::stream_to_file`, what the validator runs) against `sha256sum`, `openssl dgst`
//! (SHA-NI where the CPU has it: the hashing limit), and `dd bs=1M` of the same file without and
//! with `conv=fsync` (the same read/write system calls, no hashing: the writing limit; `cp`
//! would use `copy_file_range`, an in-kernel copy no streamed upload can use).
//! Every measurement starts with the page cache's dirty pages written back (`sync`), and the
//! source file cached, as an upload streamed from S3 would be in memory.

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use super::{Setup, Target};
use crate::stats::Rounds;

fn run_tool(program: &str, args: &[&Path]) -> Duration {
    let started = Instant::now();
    let status = Command::new(program)
        .args(args)
        .stdout(std::process::Stdio::null())
        .status()
        .unwrap_or_else(|e| panic!("{program}: {e}"));
    assert!(status.success(), "{program} failed");
    started.elapsed()
}

fn write_back() {
    assert!(Command::new("sync").status().expect("sync").success());
}

fn random_file(path: &Path, bytes: u64) {
    use std::io::Write;
    let mut file = std::io::BufWriter::new(std::fs::File::create(path).expect("source file"));
    let mut state = 0x9E3779B97F4A7C15u64;
    let block: Vec<u8> = (0..1 << 20)
        .map(|_| {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state as u8
        })
        .collect();
    let mut left = bytes;
    while left > 0 {
        let n = left.min(block.len() as u64) as usize;
        file.write_all(&block[..n]).expect("source file");
        left -= n as u64;
    }
}

pub async fn run(setup: &Setup, targets: &mut Vec<Target>) -> String {
    let has_sha_ni = std::fs::read_to_string("/proc/cpuinfo")
        .map(|c| c.contains(" sha_ni"))
        .unwrap_or(false);
    let mut out = format!(
        "GB/s (10⁹ bytes), median over rounds (min–max). CPU SHA extensions: {}.\n\n",
        if has_sha_ni { "yes (sha_ni)" } else { "no" }
    );
    out += "| size | rounds | modelpipe: stream + SHA-256 + write | … + fsync (complete ingest) | sha256sum | openssl dgst -sha256 | dd bs=1M | dd bs=1M conv=fsync |\n";
    out += "|---|---:|---:|---:|---:|---:|---:|---:|\n";
    for (label, bytes, rounds) in [
        ("100 MB", 100_000_000u64, setup.rounds.max(3)),
        ("1 GB", 1_000_000_000u64, setup.rounds.clamp(1, 3)),
    ] {
        let source = setup.work.join("upload.bin");
        random_file(&source, bytes);
        let staged = setup.work.join("staged.bin");
        let copy = setup.work.join("copy.bin");
        let rate = |d: Duration| bytes as f64 / 1e9 / d.as_secs_f64();
        let mut figures: [Rounds; 6] = Default::default();
        for _ in 0..rounds {
            write_back();
            let body = tokio::fs::File::open(&source).await.expect("source");
            let ingested = modelpipe_validator::ingest::stream_to_file(body, &staged, u64::MAX)
                .await
                .expect("ingest");
            assert_eq!(ingested.digest.size, bytes);
            figures[0].push(rate(ingested.elapsed - ingested.fsync));
            figures[1].push(rate(ingested.elapsed));
            std::fs::remove_file(&staged).expect("remove staged");
            write_back();
            figures[2].push(rate(run_tool("sha256sum", &[&source])));
            figures[3].push(rate(run_tool(
                "openssl",
                &[Path::new("dgst"), Path::new("-sha256"), &source],
            )));
            let dd = |fsync: bool| {
                let mut args = vec![
                    format!("if={}", source.display()),
                    format!("of={}", copy.display()),
                    "bs=1M".into(),
                ];
                if fsync {
                    args.push("conv=fsync".into());
                }
                let started = Instant::now();
                let status = Command::new("dd")
                    .args(&args)
                    .stderr(std::process::Stdio::null())
                    .status()
                    .expect("dd");
                assert!(status.success(), "dd failed");
                let elapsed = started.elapsed();
                std::fs::remove_file(&copy).expect("remove copy");
                write_back();
                elapsed
            };
            figures[4].push(rate(dd(false)));
            figures[5].push(rate(dd(true)));
        }
        std::fs::remove_file(&source).expect("remove source");
        if has_sha_ni {
            let pipeline = figures[0].median();
            targets.push(Target {
                what: format!("ingest {label}: stream + SHA-256 + write"),
                goal: "≥ 1.0 GB/s (CPU with SHA extensions)".into(),
                measured: format!(
                    "{pipeline:.2} GB/s (writing alone, dd: {:.2}); {:.2} GB/s with the fsync (dd conv=fsync: {:.2})",
                    figures[4].median(),
                    figures[1].median(),
                    figures[5].median()
                ),
                met: pipeline >= 1.0,
            });
        }
        out += &format!(
            "| {label} | {rounds} | {} |\n",
            figures
                .iter()
                .map(|f| f.show(2))
                .collect::<Vec<_>>()
                .join(" | ")
        );
    }
    out
}
