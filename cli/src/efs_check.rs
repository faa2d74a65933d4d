//! `modelctl efs-check --file-system-id ID`: what a cold load of each live model costs in read
//! time on that EFS file system, from its throughput mode and metered size (aws-sdk-efs), using
//! AWS's published throughput rules:
//!
//! - Bursting: baseline 50 KiB/s per GiB of Standard storage, at least 1 MiB/s; bursts to
//!   100 MiB/s, or 100 MiB/s per TiB above 1 TiB, while burst credits last
//!   (<https://docs.aws.amazon.com/efs/latest/ug/performance.html#bursting>,
//!   <https://aws.amazon.com/about-aws/whats-new/2020/06/amazon-efs--increases-file-system-minimum-throughput/>).
//! - Provisioned: the provisioned rate, or the bursting baseline if that is higher.
//! - Elastic: scales with demand; the per-client limit is what one Lambda sees.
//! - Reads are metered at one third of their size in Bursting and Provisioned modes, so a client
//!   reads at up to 3× the metered rate
//!   (<https://docs.aws.amazon.com/efs/latest/ug/performance.html#read-write-throughput>).
//! - One client (one Lambda execution environment) reads at most 500 MiB/s (Bursting,
//!   Provisioned) or 1,500 MiB/s (Elastic) (the per-client column of the performance table).
//!
//! It estimates transfer time only: tract's parse and optimisation come on top (BENCHMARKS.md).

use std::time::Duration;

use aws_sdk_efs::types::ThroughputMode;

use crate::target::{CliResult, Target};
use modelpipe_registry::publish::{PublisherQuery, StatusAnswer};

const MIB: f64 = 1024.0 * 1024.0;
const GIB: f64 = 1024.0 * MIB;
/// Lambda's init phase: a model in `PRELOAD_MODELS` must load within it.
pub const INIT_PHASE: Duration = Duration::from_secs(10);

/// One read rate a Lambda can expect, in MiB/s.
#[derive(Debug, Clone, PartialEq)]
pub struct ReadRate {
    pub label: &'static str,
    pub mib_per_s: f64,
}

/// The read rates of a file system for one client.
pub fn read_rates(
    mode: &ThroughputMode,
    provisioned_mibps: Option<f64>,
    standard_bytes: u64,
) -> Vec<ReadRate> {
    let gib = standard_bytes as f64 / GIB;
    let baseline = (gib * 50.0 / 1024.0).max(1.0);
    let burst = (gib / 1024.0 * 100.0).max(100.0);
    let read = |metered: f64, per_client: f64| (metered * 3.0).min(per_client);
    match mode {
        ThroughputMode::Provisioned => vec![ReadRate {
            label: "provisioned",
            mib_per_s: read(provisioned_mibps.unwrap_or(0.0).max(baseline), 500.0),
        }],
        ThroughputMode::Elastic => vec![ReadRate {
            label: "elastic",
            mib_per_s: 1500.0,
        }],
        _ => vec![
            ReadRate {
                label: "with burst credits",
                mib_per_s: read(burst, 500.0),
            },
            ReadRate {
                label: "credits exhausted",
                mib_per_s: read(baseline, 500.0),
            },
        ],
    }
}

pub fn load_time(bytes: u64, rate: &ReadRate) -> Duration {
    Duration::from_secs_f64(bytes as f64 / MIB / rate.mib_per_s)
}

pub async fn efs_check(file_system_id: &str, target: &Target) -> CliResult {
    let config = aws_config::load_defaults(aws_config::BehaviorVersion::latest()).await;
    let efs = aws_sdk_efs::Client::new(&config);
    let described = efs
        .describe_file_systems()
        .file_system_id(file_system_id)
        .send()
        .await
        .map_err(|e| {
            format!(
                "describing {file_system_id}: {}",
                aws_sdk_efs::error::DisplayErrorContext(&e)
            )
        })?;
    let fs = described
        .file_systems()
        .first()
        .ok_or_else(|| format!("no file system {file_system_id}"))?;
    let mode = fs
        .throughput_mode()
        .cloned()
        .unwrap_or(ThroughputMode::Bursting);
    let size = fs.size_in_bytes();
    let standard = size
        .and_then(|s| s.value_in_standard())
        .or(size.map(|s| s.value()))
        .unwrap_or(0)
        .max(0) as u64;
    let rates = read_rates(&mode, fs.provisioned_throughput_in_mibps(), standard);
    println!(
        "{file_system_id}: {} throughput, {:.1} MiB metered in Standard storage",
        mode.as_str(),
        standard as f64 / MIB
    );
    for rate in &rates {
        println!(
            "  one Lambda reads at up to {:.0} MiB/s {}",
            rate.mib_per_s, rate.label
        );
    }

    let payload = serde_json::to_value(PublisherQuery::Status { model: None }).expect("json");
    let status: StatusAnswer = target
        .call(payload, |registry| {
            modelpipe_registry::publish::status(registry, None)
        })
        .await?;
    println!(
        "\n  {:<16} {:>6} {:>12}  cold read time",
        "model", "live", "bytes"
    );
    let mut slow = false;
    for model in &status.models {
        let Some(live) = model.aliases.get(&modelpipe_core::AliasName::live()) else {
            continue;
        };
        let Some(manifest) = model.versions.iter().find(|m| m.version == live.version) else {
            continue;
        };
        let times: Vec<String> = rates
            .iter()
            .map(|rate| {
                let time = load_time(manifest.size, rate);
                let warn = if time > INIT_PHASE {
                    slow = true;
                    " WARNING: longer than Lambda's 10 s init phase"
                } else {
                    ""
                };
                format!("{:.2} s {}{warn}", time.as_secs_f64(), rate.label)
            })
            .collect();
        println!(
            "  {:<16} {:>6} {:>12}  {}",
            model.model.as_str(),
            format!("v{}", live.version),
            manifest.size,
            times.join(", ")
        );
    }
    if slow {
        println!(
            "\nA model that reads slower than the init phase allows cannot be preloaded (PRELOAD_MODELS), and its \
             first request waits for the read. Use Elastic or Provisioned throughput, the S3-hosted registry \
             (MODEL_ROOT=s3://…), or bake it into the image (modelctl bake)."
        );
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bursting_rates_follow_the_published_rules() {
        // 100 GiB: baseline 5,000 KiB/s metered (3× that of reads), burst 100 MiB/s (300 of reads).
        let rates = read_rates(&ThroughputMode::Bursting, None, 100 * GIB as u64);
        assert_eq!(rates[0].mib_per_s, 300.0);
        assert!((rates[1].mib_per_s - 3.0 * 5000.0 / 1024.0).abs() < 1e-9);
        // A tiny file system still gets 1 MiB/s (3 of reads) when credits run out.
        assert_eq!(
            read_rates(&ThroughputMode::Bursting, None, 0)[1].mib_per_s,
            3.0
        );
        // 4 TiB bursts to 400 metered, but one client reads at most 500 MiB/s.
        assert_eq!(
            read_rates(&ThroughputMode::Bursting, None, 4096 * GIB as u64)[0].mib_per_s,
            500.0
        );
    }

    #[test]
    fn provisioned_and_elastic_rates() {
        let provisioned = read_rates(&ThroughputMode::Provisioned, Some(10.0), 0);
        assert_eq!(provisioned[0].mib_per_s, 30.0);
        assert_eq!(
            read_rates(&ThroughputMode::Elastic, None, 0)[0].mib_per_s,
            1500.0
        );
        let hundred_mib = ReadRate {
            label: "x",
            mib_per_s: 100.0,
        };
        assert_eq!(
            load_time(50 * MIB as u64, &hundred_mib),
            Duration::from_millis(500)
        );
    }
}
