//! Where the registry lives, measured: a version's load (verify + tract load + warm-up) from a
//! directory registry (EFS's stand-in here: a local disk) against an S3-hosted one (moto_server
//! on loopback: `MODELPIPE_MOTO_ENDPOINT`, or one started from `.venv`), cold (downloaded to the
//! local copy cache) and warm (the copy reused); the per-request alias check on each; and the
//! publisher's merge of a fleet's files, one by one and in parallel. Same models, interleaved
//! rounds, medians (figures in BENCHMARKS.md).
//!
//! `cargo build --profile profiling -p modelpipe-bench && target/profiling/registry_bench [ROUNDS]`

use std::time::{Duration, Instant};

use modelpipe_core::ModelName;
use modelpipe_core::time::Timestamp;
use modelpipe_drift::Profile;
use modelpipe_registry::drift::WindowProfile;
use modelpipe_registry::{DEFAULT_PARALLEL_READS, FileCacheConfig, Registry};
use modelpipe_serve::LoadedModel;
use modelpipe_testkit::onnx_build::{Mlp, mobilenet_v2};
use modelpipe_tests::serving::{commit, publish};

fn median(mut samples: Vec<Duration>) -> Duration {
    samples.sort();
    samples[samples.len() / 2]
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

fn timed<T>(f: impl FnOnce() -> T) -> (T, Duration) {
    let started = Instant::now();
    let value = f();
    (value, started.elapsed())
}

#[tokio::main]
async fn main() {
    let rounds: usize = std::env::args()
        .nth(1)
        .map_or(5, |r| r.parse().expect("ROUNDS"));
    let (endpoint, _moto) = modelpipe_tests::moto().await;
    let sdk = modelpipe_tests::aws_config(&endpoint).await;
    let s3 = modelpipe_aws::s3_client(&sdk);
    let bucket = modelpipe_tests::unique_bucket("registry-bench");
    s3.create_bucket().bucket(&bucket).send().await.unwrap();
    let work = tempfile::tempdir().unwrap();
    let open_s3 = |files: &str| {
        let files = FileCacheConfig {
            dir: work.path().join(files),
            bytes: None,
        };
        Registry::open_s3(&bucket, "registry", &files, Some(sdk.clone())).unwrap()
    };
    let dir = Registry::open(work.path().join("dir")).unwrap();
    let on_s3 = open_s3("writer");

    let models = [
        ("mlp 4-64-64-3", Mlp::new(&[4, 64, 64, 3], 1).to_bytes()),
        ("mobilenet_v2-shaped CNN", mobilenet_v2(1)),
    ];
    println!(
        "registry_bench: {rounds} interleaved rounds, medians; S3 = moto_server on loopback\n"
    );
    println!(
        "| model | bytes | directory | S3, cold (download + verify) | S3, warm (local copy) | S3 cold / directory |"
    );
    println!("|---|---:|---:|---:|---:|---:|");
    for (label, bytes) in &models {
        let model: ModelName = label
            .split(' ')
            .next()
            .unwrap()
            .replace('_', "-")
            .parse()
            .unwrap();
        let tasks = [dir.clone(), on_s3.clone()].map(|registry| {
            let (model, bytes) = (model.clone(), bytes.clone());
            std::thread::spawn(move || {
                let version = commit(&registry, &model, &bytes);
                publish(&registry, &model, version);
            })
        });
        tasks.into_iter().for_each(|t| t.join().unwrap());
        let (mut from_dir, mut cold, mut warm) = (Vec::new(), Vec::new(), Vec::new());
        for round in 0..rounds {
            let (loaded, t) =
                timed(|| LoadedModel::load(&dir, &model, 1, &Default::default()).unwrap());
            drop(loaded);
            from_dir.push(t);
            let fresh = open_s3(&format!("copies-{label}-{round}").replace(' ', "-"));
            let (loaded, t) =
                timed(|| LoadedModel::load(&fresh, &model, 1, &Default::default()).unwrap());
            drop(loaded);
            cold.push(t);
            let (loaded, t) =
                timed(|| LoadedModel::load(&fresh, &model, 1, &Default::default()).unwrap());
            drop(loaded);
            warm.push(t);
        }
        let (d, c, w) = (median(from_dir), median(cold), median(warm));
        println!(
            "| {label} | {} | {:.1} ms | {:.1} ms | {:.1} ms | {:.2}× |",
            bytes.len(),
            ms(d),
            ms(c),
            ms(w),
            c.as_secs_f64() / d.as_secs_f64()
        );
    }

    let model: ModelName = "mlp".parse().unwrap();
    let live = modelpipe_core::AliasName::live();
    let checks = 200;
    let (mut dir_check, mut s3_first, mut s3_revalidated) = (Vec::new(), Vec::new(), Vec::new());
    for round in 0..rounds {
        for _ in 0..checks / rounds {
            dir_check.push(timed(|| dir.alias(&model, &live).unwrap()).1);
        }
        let fresh = open_s3(&format!("alias-{round}"));
        s3_first.push(timed(|| fresh.alias(&model, &live).unwrap()).1);
        for _ in 0..checks / rounds {
            s3_revalidated.push(timed(|| fresh.alias(&model, &live).unwrap()).1);
        }
    }
    println!("\nAlias check (what a request pays when RELOAD_CHECK_MS is due), medians:");
    println!("| directory read | S3 GET | S3 conditional GET (304, If-None-Match) |");
    println!("|---:|---:|---:|");
    println!(
        "| {:.3} ms | {:.3} ms | {:.3} ms |",
        ms(median(dir_check)),
        ms(median(s3_first)),
        ms(median(s3_revalidated))
    );
    // S3's round trip, which moto on loopback does not have: s3s-fs answering 20 ms late.
    let slow_root = work.path().join("slow-s3");
    std::fs::create_dir_all(slow_root.join("fleet")).unwrap();
    let slow = modelpipe_bench::slow_s3::start(&slow_root, SLOW_S3_LATENCY).await;
    let slow_sdk = modelpipe_tests::aws_config(&slow).await;
    let open_slow = |files: &str| {
        let files = FileCacheConfig {
            dir: work.path().join(files),
            bytes: None,
        };
        Registry::open_s3("fleet", "registry", &files, Some(slow_sdk.clone())).unwrap()
    };
    let moto_label = "S3: moto on loopback";
    let slow_label = format!("S3: s3s-fs, {} ms a request", SLOW_S3_LATENCY.as_millis());
    let registries: [(&str, &dyn Fn() -> Registry); 3] = [
        ("directory", &|| dir.clone()),
        (moto_label, &|| open_s3("fleet-reader")),
        (&slow_label, &|| open_slow("fleet-reader")),
    ];
    tokio::task::block_in_place(|| fleet_files(rounds, &registries));
}

/// Environments whose files the publisher merges each tick (a drift window's profiles; rollout
/// evidence is read by the same code).
const FLEET: usize = 500;

/// The median round trip of a small S3 request: "tens of milliseconds" (AWS's S3 performance
/// guide).
const SLOW_S3_LATENCY: Duration = Duration::from_millis(20);

/// One environment's profile of a window: 7 features (4 inputs, 3 outputs) of 200 rows.
fn environment_profile(seed: usize) -> Profile {
    let mut profile = Profile::default();
    for row in 0..200 {
        profile.rows += 1;
        let x = ((seed * 7919 + row * 104_729) % 10_007) as f64 / 10_007.0;
        for (j, name) in ["input[0]", "input[1]", "input[2]", "input[3]"]
            .iter()
            .enumerate()
        {
            profile.feature(name).add_number(x * (j + 1) as f64);
        }
        for name in ["output.p[0]", "output.p[1]", "output.p[2]"] {
            profile.feature(name).add_number(1.0 - x);
        }
    }
    profile
}

/// The publisher's merge of a fleet's files, the files read one after the other (as before
/// `DEFAULT_PARALLEL_READS`) against that many at once, on each registry.
fn fleet_files(rounds: usize, registries: &[(&str, &dyn Fn() -> Registry)]) {
    let model: &ModelName = &"mlp".parse().unwrap();
    let writes: Vec<_> = (0..FLEET)
        .map(|e| WindowProfile {
            environment: format!("env-{e}"),
            updated_at: Timestamp::now(),
            profile: environment_profile(e),
        })
        .collect();
    for (_, open) in registries {
        let registry = &open();
        std::thread::scope(|scope| {
            for part in writes.chunks(FLEET / 20) {
                scope.spawn(move || {
                    for file in part {
                        registry.write_window_profile(model, 1, 0, file).unwrap();
                    }
                });
            }
        });
    }
    println!(
        "\nMerging {FLEET} environments' drift profiles of one window (7 features, 200 rows each), medians:"
    );
    println!("| registry | one by one | {DEFAULT_PARALLEL_READS} at once | speed-up |");
    println!("|---|---:|---:|---:|");
    for (label, open) in registries {
        let (mut serial, mut parallel) = (Vec::new(), Vec::new());
        for _ in 0..rounds {
            for (reads, times) in [(1, &mut serial), (DEFAULT_PARALLEL_READS, &mut parallel)] {
                let registry = open().with_parallel_reads(reads);
                let ((profile, environments), t) =
                    timed(|| registry.window_profile(model, 1, 0).unwrap());
                assert_eq!((environments, profile.rows), (FLEET, FLEET as u64 * 200));
                times.push(t);
            }
        }
        let (one, many) = (median(serial), median(parallel));
        println!(
            "| {label} | {:.0} ms | {:.0} ms | {:.1}× |",
            ms(one),
            ms(many),
            one.as_secs_f64() / many.as_secs_f64()
        );
    }
}
