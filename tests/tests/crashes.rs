//! kill -9 of `modelctl dev` (validator, publisher and registry writer in one process) at random
//! points of an ingest, over and over: after every crash the registry passes `modelctl fsck`
//! (no errors), the restart removes the crash's leftovers, the live alias stays on a complete
//! version, and the pipeline keeps working. The kill delays are drawn from a seeded generator
//! (printed, `MODELPIPE_CRASH_SEED` replays a run) over the time a whole ingest takes here, so
//! crashes land in each phase: download, hash + staging write, validation, commit, alias move.

use std::collections::BTreeMap;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use aws_sdk_s3::primitives::ByteStream;
use modelpipe_core::{AliasName, ModelName};
use modelpipe_registry::Registry;
use modelpipe_testkit::onnx_build::Mlp;
use modelpipe_tests::{binary, wait_for};

const CRASHES: usize = 20;
const WAIT: Duration = Duration::from_secs(60);

struct Dev {
    child: Child,
    s3: aws_sdk_s3::Client,
    log: std::path::PathBuf,
}

impl Drop for Dev {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

async fn start_dev(data: &Path, log: std::path::PathBuf) -> Dev {
    let (child, s3_port, _) = modelpipe_tests::dev::spawn(data, |command| {
        command
            .env("NO_COLOR", "1")
            // Log lines go to stdout.
            .stdout(std::fs::File::create(&log).unwrap())
            .stderr(Stdio::null());
    })
    .await;
    let s3 = modelpipe_tests::dev_s3_client(s3_port).await;
    Dev { child, s3, log }
}

impl Dev {
    async fn put(&self, bytes: Vec<u8>) {
        self.s3
            .put_object()
            .bucket("models")
            .key("models/mlp/model.onnx")
            .body(ByteStream::from(bytes))
            .send()
            .await
            .unwrap();
    }

    /// The last phase of an ingest the log shows.
    fn last_phase(&self) -> &'static str {
        let log = std::fs::read_to_string(&self.log).unwrap_or_default();
        let phases = [
            ("alias moved", "after the alias move"),
            ("version committed", "between commit and alias move"),
            ("validated", "between validation and commit"),
            ("hashed", "during validation"),
            ("upload received", "during download, hash and staging write"),
        ];
        let last_line = log
            .lines()
            .rev()
            .find(|line| phases.iter().any(|(needle, _)| line.contains(needle)));
        match last_line {
            None => "before the event reached the validator",
            Some(line) => phases.iter().find(|(n, _)| line.contains(n)).unwrap().1,
        }
    }
}

/// xorshift64: reproducible kill delays.
struct Rng(u64);

impl Rng {
    fn below(&mut self, bound: u64) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0 % bound.max(1)
    }
}

fn fsck(registry: &Path, extra: &[&str]) -> String {
    let out = Command::new(binary("modelctl"))
        .args(["fsck", "--registry", registry.to_str().unwrap()])
        .args(extra)
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "fsck found errors:\n{text}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    text
}

#[tokio::test]
async fn kill_9_at_random_points_of_ingests_leaves_the_registry_consistent() {
    let seed = std::env::var("MODELPIPE_CRASH_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| {
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap()
                .as_nanos() as u64
                | 1
        });
    eprintln!("MODELPIPE_CRASH_SEED={seed}");
    let mut rng = Rng(seed);
    let data = tempfile::tempdir().unwrap();
    let registry_dir = data.path().join("registry");
    let model: ModelName = "mlp".parse().unwrap();
    // ~2 MB models: the ingest takes long enough for kills to land inside it.
    let bytes = |seed: u32| Mlp::new(&[512, 1024, 3], seed).to_bytes();
    let live = |registry: &Registry| {
        registry
            .alias(&model, &AliasName::live())
            .unwrap()
            .map(|a| a.version)
    };

    // One ingest undisturbed: its length is the range the kills are drawn from.
    let dev = start_dev(data.path(), data.path().join("log-0")).await;
    let registry = Registry::open(&registry_dir).unwrap();
    let started = Instant::now();
    dev.put(bytes(1)).await;
    wait_for("v1 live", WAIT, || async {
        live(&registry).filter(|&v| v == 1)
    })
    .await;
    let ingest = started.elapsed();
    eprintln!("one ingest takes {ingest:?} here");
    drop(dev);

    let mut phases: BTreeMap<&'static str, usize> = BTreeMap::new();
    for crash in 1..=CRASHES {
        let dev = start_dev(data.path(), data.path().join(format!("log-{crash}"))).await;
        let staging = registry_dir.join("mlp/staging");
        let leftovers = std::fs::read_dir(&staging).map(|d| d.count()).unwrap_or(0);
        assert_eq!(
            leftovers, 0,
            "the restart removes the last crash's staging leftovers"
        );
        let before = live(&registry);
        // The put's own time counts: some kills land while the object is still arriving.
        let delay = Duration::from_micros(rng.below(ingest.as_micros() as u64 * 5 / 4));
        let kill_at = tokio::time::Instant::now() + delay;
        tokio::select! {
            _ = dev.put(bytes(crash as u32 + 1)) => {}
            _ = tokio::time::sleep_until(kill_at) => {}
        }
        // Fault injection, not synchronisation: the kill lands wherever the ingest is by then.
        tokio::time::sleep_until(kill_at).await;
        let mut dev = dev;
        dev.child.kill().unwrap(); // SIGKILL
        dev.child.wait().unwrap();
        *phases.entry(dev.last_phase()).or_default() += 1;

        let report = fsck(&registry_dir, &[]);
        assert!(report.contains("0 errors"), "{report}");
        let now = live(&registry);
        assert!(
            now >= before,
            "the alias never goes back: {before:?} → {now:?}"
        );
        if let Some(version) = now {
            registry.verified_manifest(&model, version).unwrap();
        }
    }
    eprintln!("kills by phase: {phases:?}");

    // Afterwards: a restart cleans up, the registry is clean, and an upload still goes live.
    let dev = start_dev(data.path(), data.path().join("log-final")).await;
    let report = fsck(&registry_dir, &["--leftover-age", "0"]);
    assert!(!report.contains("leftover"), "{report}");
    let versions = registry.versions(&model).unwrap();
    dev.put(bytes(1000)).await;
    let expected = versions.last().unwrap() + 1;
    wait_for("the upload after the crashes to go live", WAIT, || async {
        live(&registry).filter(|&v| v == expected)
    })
    .await;
    let report = fsck(&registry_dir, &["--leftover-age", "0"]);
    assert!(report.contains("0 errors"), "{report}");
}

#[test]
fn kill_9_during_commits_and_alias_moves_leaves_the_registry_consistent() {
    let seed = std::env::var("MODELPIPE_CRASH_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(0x5eed_cafe_u64);
    let mut rng = Rng(seed);
    let dir = tempfile::tempdir().unwrap();
    let registry = Registry::open(dir.path()).unwrap();
    let model: ModelName = "churn".parse().unwrap();
    let mut versions = 0;
    for _ in 0..CRASHES {
        let mut churn = Command::new(binary("registry_churn"))
            .arg(dir.path())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        // Once it is writing (a version more than before), the kill lands a random few
        // milliseconds later, in whatever write runs by then (fault injection, not synchronisation).
        let deadline = Instant::now() + WAIT;
        while registry.versions(&model).unwrap().len() <= versions {
            assert!(Instant::now() < deadline, "the writer never committed");
            std::thread::sleep(Duration::from_millis(1));
        }
        std::thread::sleep(Duration::from_micros(rng.below(20_000)));
        churn.kill().unwrap();
        let status = churn.wait_with_output().unwrap();
        assert!(
            status.stderr.is_empty(),
            "the writer failed before the kill: {}",
            String::from_utf8_lossy(&status.stderr)
        );
        let report = fsck(dir.path(), &[]);
        assert!(report.contains("0 errors"), "{report}");
        let now = registry.versions(&model).unwrap().len();
        assert!(now >= versions, "no version is ever lost");
        versions = now;
    }
    assert!(
        versions > CRASHES,
        "the writer made progress between kills: {versions} versions"
    );
    let report = fsck(dir.path(), &["--repair", "--leftover-age", "0"]);
    assert!(report.contains("0 errors"), "{report}");
    eprintln!("{CRASHES} kills, {versions} versions committed; final fsck --repair:\n{report}");
    let live = registry.alias(&model, &AliasName::live()).unwrap().unwrap();
    registry.verified_manifest(&model, live.version).unwrap();
}
