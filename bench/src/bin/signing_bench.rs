//! What signed models cost, measured (figures in BENCHMARKS.md):
//!
//! 1. verifying an OpenSSF bundle (key mode P-256 and P-384, certificate mode) against the
//!    digest ingest already has, beside what ingest pays to hash the same model (SHA-256 over its
//!    bytes, the baseline: the signature check is added to it, never a second read);
//! 2. an alias move (publish) with the model held to a signer policy, against the same move with
//!    none: the policy is read and its keys parsed on every move.
//!
//! Bundles are made by the `model_signing` CLI (scripts/setup.sh installs it in .venv).
//! `cargo run --profile profiling -p modelpipe-bench --bin signing_bench [MODEL_MB]`

use std::hint::black_box;
use std::time::{Duration, Instant};

use modelpipe_core::ModelName;
use modelpipe_core::digest::Digest;
use modelpipe_registry::Registry;
use modelpipe_registry::publish::{PublisherRequest, apply};
use modelpipe_signing::{SignerPolicy, verify};
use modelpipe_tests::serving::commit;
use modelpipe_tests::signing::Signers;

fn median(mut samples: Vec<Duration>) -> Duration {
    samples.sort();
    samples[samples.len() / 2]
}

/// The median of `runs` runs of `f`.
fn time(runs: usize, mut f: impl FnMut()) -> Duration {
    median(
        (0..runs)
            .map(|_| {
                let started = Instant::now();
                f();
                started.elapsed()
            })
            .collect(),
    )
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

fn main() {
    let mb: usize = std::env::args()
        .nth(1)
        .map_or(100, |a| a.parse().expect("MODEL_MB"));
    let signers = Signers::new();
    let dir = tempfile::tempdir().unwrap();
    let model = dir.path().join("model.onnx");
    // Any bytes: a signature covers the file, whatever it holds.
    let bytes: Vec<u8> = (0..mb << 20)
        .map(|i| (i * 2_654_435_761_usize >> 13) as u8)
        .collect();
    std::fs::write(&model, &bytes).unwrap();
    let hash = time(5, || {
        black_box(Digest::of_file(&model).unwrap());
    });
    let sha256 = Digest::of_file(&model).unwrap().sha256;
    println!(
        "| SHA-256 of the {mb} MB model (ingest's streamed hash, the baseline) | {:.1} ms |",
        ms(hash)
    );
    let policy = SignerPolicy {
        required: true,
        keys: vec![signers.pem("p256.pub"), signers.pem("p384.pub")],
        ca_roots: vec![signers.pem("ca.pem")],
        identities: vec![],
    };
    let trust = policy.trust().unwrap();
    for (name, bundle) in [
        ("key, P-256", signers.sign_with_key("p256", &model)),
        ("key, P-384", signers.sign_with_key("p384", &model)),
        (
            "certificate (P-256 leaf, one CA)",
            signers.sign_with_certificate("", &model),
        ),
    ] {
        verify(&bundle, &sha256, &trust).unwrap();
        let took = time(200, || {
            black_box(verify(&bundle, &sha256, &trust).unwrap());
        });
        println!(
            "| verify the bundle, {name} | {:.3} ms ({:.2} % of the hash) |",
            ms(took),
            100.0 * took.as_secs_f64() / hash.as_secs_f64()
        );
    }

    // Moves: v1 ↔ v2 published in turn on two registries, one with a policy the versions
    // satisfy and one with none, interleaved so that both see the same machine.
    let model_name: ModelName = "iris".parse().unwrap();
    let policy = SignerPolicy {
        keys: vec![signers.pem("p256.pub"), signers.pem("p384.pub")],
        ..Default::default()
    };
    let setups: Vec<_> = [None, Some(policy)]
        .into_iter()
        .map(|policy| {
            let dir = tempfile::tempdir().unwrap();
            let registry = Registry::open(dir.path())
                .unwrap()
                .with_signing_default(policy);
            let versions: Vec<u64> = [1, 2]
                .map(|seed| {
                    let bytes = modelpipe_testkit::onnx_build::LinearSoftmax::iris(seed).to_bytes();
                    commit(&registry, &model_name, &bytes)
                })
                .to_vec();
            (dir, registry, versions)
        })
        .collect();
    let mut samples = [Vec::new(), Vec::new()];
    for i in 0..400 {
        for (k, (_, registry, versions)) in setups.iter().enumerate() {
            let request = PublisherRequest::Publish {
                model: model_name.clone(),
                version: versions[i % 2],
                alias: Default::default(),
                reason: None,
            };
            let started = Instant::now();
            apply(registry, &request, None).unwrap();
            samples[k].push(started.elapsed());
        }
    }
    let [none, with] = samples.map(median);
    println!(
        "| a publish (hash check of the file, alias, history), no policy → a policy of two keys | {:.3} ms → {:.3} ms ({:.2}×) |",
        ms(none),
        ms(with),
        with.as_secs_f64() / none.as_secs_f64()
    );
}
