//! Where the registry lives, measured: a version's load (verify + tract load + warm-up) from a
//! directory registry (EFS's stand-in here: a local disk) against an S3-hosted one (moto_server
//! on loopback: `MODELPIPE_MOTO_ENDPOINT`, or one started from `.venv`), cold (downloaded to the
//! local copy cache) and warm (the copy reused); and the per-request alias check on each. Same
//! models, interleaved rounds, medians (figures in BENCHMARKS.md).
//!
//! `cargo build --profile profiling -p modelpipe-bench && target/profiling/registry_bench [ROUNDS]`

use std::time::{Duration, Instant};

use modelpipe_core::ModelName;
use modelpipe_registry::{FileCacheConfig, Registry};
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
}
