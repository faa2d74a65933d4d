//! Guarded rollouts through `modelctl dev` as users drive it: uploads with `rollout=` metadata
//! (stock `aws` CLI), HTTP clients with sticky routing keys, the dev controller's tick judging
//! the evidence inference recorded — a good candidate promoted, a failing one and a shadowed one
//! that disagrees rolled back, 10,000 keys sticky across weight increases — and `modelctl
//! rollout` / `status`, and `/metrics`.

use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Instant;

use futures::StreamExt;
use modelpipe_registry::Registry;
use modelpipe_registry::rollout::split::{Arm, arm};
use modelpipe_registry::rollout::{Rollout, RolloutState};
use modelpipe_testkit::onnx_build::LinearSoftmax;
use modelpipe_tests::dev::{Dev, WAIT, metric, upload};
use modelpipe_tests::{binary, wait_for};
use serde_json::{Value, json};

fn iris() -> modelpipe_core::ModelName {
    "iris".parse().unwrap()
}

/// One answer: its HTTP status, the arm header, and the version that answered (if it did).
struct Answer {
    status: u16,
    arm: Option<String>,
    version: Option<String>,
}

/// One request with routing key `key` and `rows` rows of iris features.
async fn infer_rows(dev: &Dev, key: &str, rows: usize) -> Answer {
    let data: Vec<f32> = (0..rows)
        .flat_map(|r| {
            [
                5.1 + r as f32 * 0.37,
                3.5 - r as f32 * 0.21,
                1.4 + r as f32,
                0.2,
            ]
        })
        .collect();
    let body = json!({"inputs": [{"name": "input", "shape": [rows, 4], "datatype": "FP32", "data": data}]});
    let response = dev
        .http
        .post(format!("{}/v2/models/iris/infer", dev.base))
        .header("routing-key", key)
        .json(&body)
        .send()
        .await
        .unwrap();
    let status = response.status().as_u16();
    let arm = response
        .headers()
        .get("modelpipe-arm")
        .map(|v| v.to_str().unwrap().to_string());
    let answer: Value = response.json().await.unwrap();
    Answer {
        status,
        arm,
        version: answer["model_version"].as_str().map(str::to_string),
    }
}

/// One single-row request with routing key `key`, which must succeed: its arm and version.
async fn infer(dev: &Dev, key: &str) -> (Option<String>, String) {
    let answer = infer_rows(dev, key, 1).await;
    assert_eq!(answer.status, 200);
    (answer.arm, answer.version.unwrap())
}

fn rollout_of(registry: &Registry) -> Rollout {
    registry
        .rollout(&iris(), &Default::default())
        .unwrap()
        .expect("a rollout")
}

fn live_version(registry: &Registry) -> u64 {
    registry
        .alias(&iris(), &Default::default())
        .unwrap()
        .unwrap()
        .version
}

/// The actions in the rollout log other than waits.
fn decisions(registry: &Registry) -> Vec<String> {
    registry
        .rollout_log(&iris())
        .unwrap()
        .into_iter()
        .filter(|e| e.action != "wait")
        .map(|e| e.action.to_string())
        .collect()
}

/// [`decisions`] once the last is `last`: the record is written before its log line, so a
/// reader can see the state a moment before the line.
async fn decisions_ending(registry: &Registry, last: &str) -> Vec<String> {
    wait_for(
        &format!("the {last} line in rollouts.jsonl"),
        WAIT,
        || async {
            let decisions = decisions(registry);
            (decisions.last().map(String::as_str) == Some(last)).then_some(decisions)
        },
    )
    .await
}

/// Upload metadata for a rollout by plan `name` over `steps` (percentages), each step passing
/// on `min_requests` per arm with no bake time. Latency on a shared test machine is noise (its
/// gate has unit tests), so any p99 passes.
fn plan(name: &str, steps: &str, min_requests: u32) -> Value {
    json!({
        "rollout": name,
        "rollout-steps": steps,
        "rollout-bake": "0s",
        "rollout-max-p99-ratio": "1000",
        "rollout-min-requests": min_requests.to_string(),
    })
}

/// A `modelctl dev` with v1 (`iris(1)`) live and a rollout of `candidate` started by its upload
/// with rollout metadata `metadata`.
struct Stage {
    _data: tempfile::TempDir,
    files: tempfile::TempDir,
    dev: Dev,
    registry: Registry,
    registry_dir: PathBuf,
    rollout: Rollout,
}

/// [`Stage`] with the controller ticking every `tick_ms` (alias checks and evidence writes every
/// 20 ms).
async fn stage(tick_ms: &str, candidate: &[u8], metadata: Value) -> Stage {
    let data = tempfile::tempdir().unwrap();
    let dev = Dev::start(
        data.path(),
        &["--reload-check-ms", "20", "--rollout-tick-ms", tick_ms],
    )
    .await;
    let registry_dir = data.path().join("registry");
    let registry = Registry::open(&registry_dir).unwrap();
    let files = tempfile::tempdir().unwrap();
    let key = "models/iris/model.onnx";
    let v1 = write(files.path(), "v1.onnx", &LinearSoftmax::iris(1).to_bytes());
    upload(&dev.endpoint, &v1, key, &[]);
    assert_eq!(dev.outcome(key).await.0, "published");
    let v2 = write(files.path(), "v2.onnx", candidate);
    upload(
        &dev.endpoint,
        &v2,
        key,
        &["--metadata", &metadata.to_string()],
    );
    let outcome = dev.outcome_after(key, "published").await;
    assert_eq!(outcome.0, "rolling-out", "{outcome:?}");
    let rollout = rollout_of(&registry);
    assert_eq!((rollout.stable, rollout.candidate), (1, 2));
    assert_eq!(
        live_version(&registry),
        1,
        "live stays on v1 while the candidate is rolled out"
    );
    Stage {
        _data: data,
        files,
        dev,
        registry,
        registry_dir,
        rollout,
    }
}

fn write(dir: &Path, name: &str, bytes: &[u8]) -> PathBuf {
    let path = dir.join(name);
    std::fs::write(&path, bytes).unwrap();
    path
}

/// `modelctl ARGS --registry DIR`, which must succeed: its output.
fn modelctl(registry_dir: &Path, args: &[&str]) -> String {
    let out = Command::new(binary("modelctl"))
        .args(args)
        .args(["--registry", registry_dir.to_str().unwrap()])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

#[tokio::test]
async fn a_good_candidate_ramps_through_its_steps_to_promotion_and_callers_stay_on_their_arm() {
    let tick_ms = "100";
    let metadata = plan("canary", "10,50", 30);
    let candidate = LinearSoftmax::iris(2).to_bytes();
    let staged = stage(tick_ms, &candidate, metadata).await;
    let Stage {
        dev,
        registry,
        registry_dir,
        rollout,
        files,
        ..
    } = &staged;

    // Clients with sticky keys until the controller promotes v2: every answer comes from the
    // arm the documented hash gives at some weight the rollout had, and no caller seen on the
    // candidate is ever answered by stable again.
    let keys: Vec<String> = (0..200).map(|i| format!("user-{i}")).collect();
    let mut on_candidate = HashSet::new();
    let mut arms_seen = HashMap::<&str, usize>::new();
    let deadline = Instant::now() + WAIT;
    let promoted = loop {
        for key in &keys {
            let (served_arm, version) = infer(&dev, key).await;
            match served_arm.as_deref() {
                Some("candidate") => {
                    assert_eq!(version, "2");
                    // At 50 % at most: the bucket must be under the last step's weight.
                    assert_eq!(arm(&rollout.salt, 5000, key.as_bytes()), Arm::Candidate);
                    on_candidate.insert(key.clone());
                    *arms_seen.entry("candidate").or_default() += 1;
                }
                Some("stable") => {
                    assert_eq!(version, "1");
                    assert!(!on_candidate.contains(key), "{key} moved back to stable");
                    *arms_seen.entry("stable").or_default() += 1;
                }
                _ => {} // the split ended: promoted
            }
        }
        let current = registry
            .rollout(&iris(), &Default::default())
            .unwrap()
            .unwrap();
        if current.state == RolloutState::Promoted {
            break current;
        }
        assert!(
            Instant::now() < deadline,
            "not promoted after {WAIT:?}: {current:?}"
        );
    };
    assert!(arms_seen.get("candidate").copied().unwrap_or(0) > 0);
    assert!(arms_seen.get("stable").copied().unwrap_or(0) > 0);
    assert_eq!(promoted.stable, 1);
    assert_eq!(live_version(&registry), 2);
    assert_eq!(
        decisions_ending(&registry, "promoted").await,
        ["start", "running", "step", "promoted"]
    );
    let log = registry.rollout_log(&iris()).unwrap();
    let promotion = log.last().unwrap().evidence.clone().unwrap();
    assert!(promotion.candidate.requests >= 30 && promotion.stable.requests >= 30);

    // After promotion every caller gets v2 with no split.
    wait_for("v2 to answer everyone", WAIT, || async {
        let (served_arm, version) = infer(&dev, "user-0").await;
        (served_arm.is_none() && version == "2").then_some(())
    })
    .await;

    // A rollout the operator starts and pauses: the controller leaves it alone.
    upload(
        &dev.endpoint,
        &write(files.path(), "v3.onnx", &LinearSoftmax::iris(3).to_bytes()),
        "models/iris/v3.onnx",
        &["--metadata", "publish=false"],
    );
    assert_eq!(dev.outcome("models/iris/v3.onnx").await.0, "registered");
    let started = modelctl(
        registry_dir,
        &[
            "rollout",
            "start",
            "iris",
            "3",
            "--set",
            "bake=0s",
            "--set",
            "min-requests=5",
        ],
    );
    assert!(started.contains("v2 → v3"), "{started}");
    modelctl(registry_dir, &["rollout", "pause", "iris"]);
    for key in &keys {
        infer(&dev, key).await;
    }
    // Enough evidence to pass a step; the paused rollout's log still ends at the pause after
    // the controller has run again (an explicit advance is what the tick does).
    modelctl(registry_dir, &["rollout", "advance", "iris"]);
    let status = modelctl(registry_dir, &["rollout", "status", "iris"]);
    assert!(status.contains("Paused, step 1 of 3"), "{status}");
    // `modelctl status` shows the alias, the split and the step's evidence together.
    let overview = modelctl(registry_dir, &["status", "iris"]);
    for part in ["live       → v2", "v2 → v3", "Paused", "evidence (step 1"] {
        assert!(
            overview.contains(part),
            "{part:?} missing from:\n{overview}"
        );
    }
    assert_eq!(
        registry
            .rollout_log(&iris())
            .unwrap()
            .last()
            .unwrap()
            .action,
        "paused"
    );
}

#[tokio::test]
async fn a_candidate_that_fails_is_rolled_back_and_only_its_share_of_callers_see_its_errors() {
    let tick_ms = "100";
    // Passes every check at one row, fails on requests of two (its output is declared [1, 3]
    // now: the upload accepts the signature change).
    let candidate = LinearSoftmax::iris(2).to_bytes_with_baked_batch(1);
    let mut metadata = plan("canary", "10,50", 20);
    metadata["allow-signature-change"] = json!("true");
    let staged = stage(tick_ms, &candidate, metadata).await;
    let Stage {
        dev,
        registry,
        rollout,
        ..
    } = &staged;

    let deadline = Instant::now() + WAIT;
    let (mut failed, mut answered) = (0usize, 0usize);
    let mut i = 0;
    let rolled_back = loop {
        let key = format!("user-{}", i % 500);
        i += 1;
        let answer = infer_rows(&dev, &key, 2).await;
        if answer.status == 200 {
            answered += 1;
            assert_eq!(
                answer.version.as_deref(),
                Some("1"),
                "only stable answers two rows"
            );
        } else {
            failed += 1;
            assert_eq!(answer.status, 400);
            assert_eq!(answer.arm.as_deref(), Some("candidate"));
            // Only callers in the first step's 10 % ever reached the candidate.
            assert_eq!(
                arm(&rollout.salt, 1000, key.as_bytes()),
                Arm::Candidate,
                "{key}"
            );
        }
        let current = rollout_of(&registry);
        if current.state == RolloutState::RolledBack {
            break current;
        }
        assert!(
            Instant::now() < deadline,
            "not rolled back after {WAIT:?}: {current:?}"
        );
    };
    assert!(
        failed >= 20 && answered >= 20,
        "{failed} failed, {answered} answered"
    );
    assert!(
        failed * 100 <= (failed + answered) * 25,
        "{failed} of {} requests failed: far more than the step's 10 %",
        failed + answered
    );
    assert_eq!((rolled_back.weight, rolled_back.step), (0, 0));
    assert!(
        rolled_back.reason.contains("candidate error rate 100.00 %"),
        "{}",
        rolled_back.reason
    );
    assert_eq!(
        decisions_ending(&registry, "rolled_back").await,
        ["start", "running", "rolled_back"]
    );
    assert_eq!(live_version(&registry), 1, "stable was never touched");

    // Every caller is back on v1, with no split; the controller's later ticks change nothing.
    // Polled with a caller of the stable arm: until the instance sees the rollback, a candidate
    // caller's requests would still fail (and count as the candidate's errors).
    let stable_caller = (0..)
        .map(|i| format!("user-{i}"))
        .find(|key| arm(&rollout.salt, 1000, key.as_bytes()) == Arm::Stable)
        .unwrap();
    wait_for("the split to end", WAIT, || async {
        let answer = infer_rows(&dev, &stable_caller, 2).await;
        (answer.status == 200 && answer.arm.is_none()).then_some(())
    })
    .await;
    for i in 0..100 {
        let answer = infer_rows(&dev, &format!("user-{i}"), 2).await;
        assert_eq!((answer.status, answer.version.as_deref()), (200, Some("1")));
    }
    assert_eq!(
        decisions(&registry),
        ["start", "running", "rolled_back"],
        "rolled back exactly once"
    );

    // The metrics say the same, per arm and version.
    let text = dev.metrics().await;
    let errors = metric(
        &text,
        "modelpipe_errors_total",
        &[("arm", "candidate"), ("version", "2")],
    );
    assert_eq!(errors, failed as f64, "{text}");
    let stable = metric(
        &text,
        "modelpipe_requests_total",
        &[("arm", "stable"), ("version", "1")],
    );
    assert!(stable >= answered as f64 + 100.0, "{text}");
    assert_eq!(
        metric(
            &text,
            "modelpipe_errors_total",
            &[("arm", "stable"), ("version", "1")]
        ),
        0.0
    );
}

#[tokio::test]
async fn a_shadowed_candidate_that_answers_differently_is_rolled_back_and_no_caller_sees_it() {
    let tick_ms = "100";
    // v1 negated: its top class is v1's least likely one, on every row.
    let mut opposite = LinearSoftmax::iris(1);
    opposite.weights.iter_mut().flatten().for_each(|w| *w = -*w);
    opposite.bias.iter_mut().for_each(|b| *b = -*b);
    let metadata = plan("shadow", "20", 20);
    let staged = stage(tick_ms, &opposite.to_bytes(), metadata).await;
    let Stage {
        dev,
        registry,
        rollout,
        ..
    } = &staged;
    assert_eq!((rollout.weight, rollout.shadow), (0, 10_000));

    let deadline = Instant::now() + WAIT;
    let mut i = 0;
    let rolled_back = loop {
        let answer = infer_rows(&dev, &format!("user-{i}"), 1 + i % 3).await;
        i += 1;
        assert_eq!(answer.status, 200);
        assert_eq!(
            answer.version.as_deref(),
            Some("1"),
            "the caller's answer is stable's"
        );
        assert_ne!(answer.arm.as_deref(), Some("candidate"));
        let current = rollout_of(&registry);
        if current.state == RolloutState::RolledBack {
            break current;
        }
        assert!(
            Instant::now() < deadline,
            "not rolled back after {WAIT:?}: {current:?}"
        );
    };
    assert!(
        rolled_back.reason.contains("shadow agreement 0.00 %"),
        "{}",
        rolled_back.reason
    );
    decisions_ending(&registry, "rolled_back").await;
    let log = registry.rollout_log(&iris()).unwrap();
    let decision = log
        .iter()
        .rfind(|e| e.action == "rolled_back")
        .unwrap_or_else(|| panic!("no rollback in {log:#?}"));
    let evidence = decision.evidence.clone().unwrap();
    let shadow = evidence
        .shadow
        .expect("the decision's evidence has the shadow's");
    assert!(
        shadow.rows >= 20 && shadow.agreement == Some(0.0),
        "{shadow:?}"
    );
    assert_eq!(
        evidence.candidate.requests, shadow.runs,
        "a shadow step sends no caller to the candidate"
    );
    assert_eq!(live_version(&registry), 1);

    let text = dev.metrics().await;
    assert!(
        metric(&text, "modelpipe_shadow_runs_total", &[("version", "2")]) >= 20.0,
        "{text}"
    );
    assert_eq!(
        metric(&text, "modelpipe_requests_total", &[("arm", "candidate")]),
        0.0
    );
}

#[tokio::test]
async fn ten_thousand_sticky_keys_never_move_back_to_stable_as_the_weight_rises() {
    let tick_ms = "3600000";
    let metadata = plan("canary", "10,30,60", 1);
    let candidate = LinearSoftmax::iris(2).to_bytes();
    let staged = stage(tick_ms, &candidate, metadata).await;
    let Stage {
        dev,
        registry,
        registry_dir,
        rollout,
        ..
    } = &staged;
    let keys: Vec<String> = (0..10_000).map(|i| format!("customer-{i:05}")).collect();

    let mut previous: HashSet<String> = HashSet::new();
    for (step, weight) in [(1, 1000u32), (2, 3000), (3, 6000)] {
        // Until this instance splits at this step's weight (it follows the rollout as it
        // follows the alias, on the request path).
        wait_for(
            &format!("inference to split at step {step}"),
            WAIT,
            || async {
                infer(&dev, "probe").await;
                let (_, meta) = dev.get("/v2/models/iris").await;
                (meta["rollout"]["step"] == step).then_some(())
            },
        )
        .await;
        let answers: Vec<(String, Option<String>)> = futures::stream::iter(keys.iter().cloned())
            .map(|key| async {
                let (served, _) = infer(&dev, &key).await;
                (key, served)
            })
            .buffer_unordered(16)
            .collect()
            .await;
        let on_candidate: HashSet<String> = answers
            .iter()
            .filter(|(_, served)| served.as_deref() == Some("candidate"))
            .map(|(key, _)| key.clone())
            .collect();
        for (key, served) in &answers {
            let expected = arm(&rollout.salt, weight, key.as_bytes());
            assert_eq!(
                served.as_deref(),
                Some(expected.as_str()),
                "{key} at step {step}"
            );
        }
        let moved_back: Vec<_> = previous.difference(&on_candidate).collect();
        assert!(
            moved_back.is_empty(),
            "{} keys moved back to stable at step {step}",
            moved_back.len()
        );
        let share = on_candidate.len() as f64 / keys.len() as f64;
        assert!(
            (share - f64::from(weight) / 10_000.0).abs() < 0.02,
            "{share} of keys at step {step}"
        );
        previous = on_candidate;
        if step < 3 {
            let out = modelctl(registry_dir, &["rollout", "advance", "iris"]);
            assert_eq!(rollout_of(registry).step, step, "{out}");
        }
    }
}
