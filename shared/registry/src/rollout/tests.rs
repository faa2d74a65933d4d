use std::collections::BTreeMap;
use std::time::Duration;

use super::actions::{Operator, RolloutError, RolloutRequest, apply};
use super::*;
use crate::publish::{self, PublisherRequest};
use crate::tests::stage_bytes;

fn iris() -> ModelName {
    "iris".parse().unwrap()
}

/// A registry with versions 1..=3 of iris, live on v1.
fn registry() -> (tempfile::TempDir, Registry) {
    let dir = tempfile::tempdir().unwrap();
    let registry = Registry::open(dir.path()).unwrap();
    for i in 0..3 {
        let (staging, new) = stage_bytes(&registry, &iris(), format!("model bytes {i}").as_bytes());
        registry.commit(&iris(), staging, new).unwrap();
    }
    let request = PublisherRequest::Publish {
        model: iris(),
        version: 1,
        alias: AliasName::live(),
        reason: None,
    };
    publish::apply(&registry, &request, None).unwrap();
    (dir, registry)
}

/// Two steps (5 %, 50 %), no bake time, `min_requests` per arm.
fn start(registry: &Registry, candidate: u64, min_requests: u64) -> Rollout {
    let settings = BTreeMap::from([
        ("steps".to_string(), "5,50".to_string()),
        ("bake".to_string(), "0s".to_string()),
        ("min-requests".to_string(), min_requests.to_string()),
    ]);
    let request = RolloutRequest::Start {
        model: iris(),
        alias: AliasName::live(),
        candidate,
        plan: "canary".into(),
        settings,
        reason: None,
    };
    let answer = apply(registry, &request, None).unwrap();
    answer.rollouts[0].rollout.clone()
}

fn advance(registry: &Registry) -> actions::RolloutReport {
    let request = RolloutRequest::Advance { model: None };
    let mut answer = apply(registry, &request, None).unwrap();
    assert_eq!(answer.rollouts.len(), 1);
    answer.rollouts.remove(0)
}

fn operator(generation: Option<u64>) -> Operator {
    Operator {
        model: iris(),
        alias: AliasName::live(),
        generation,
        reason: None,
    }
}

/// What one inference instance saw in a step: `n` requests per arm, `candidate_errors` of the
/// candidate's failing, every run taking `us` microseconds.
fn record(registry: &Registry, rollout: &Rollout, instance: &str, n: u64, candidate_errors: u64) {
    let mut evidence = StepEvidence::default();
    for i in 0..n {
        evidence.stable.record(100.0, false);
        evidence.candidate.record(100.0, i < candidate_errors);
    }
    let file = InstanceEvidence {
        instance: instance.into(),
        updated_at: crate::now(),
        evidence,
    };
    registry
        .write_step_evidence(&iris(), &rollout.alias, rollout.id, rollout.step, &file)
        .unwrap();
}

fn live(registry: &Registry) -> u64 {
    registry
        .alias(&iris(), &AliasName::live())
        .unwrap()
        .unwrap()
        .version
}

#[test]
fn a_good_candidate_steps_through_its_plan_to_promotion_on_evidence_only() {
    let (_dir, registry) = registry();
    let rollout = start(&registry, 2, 10);
    assert_eq!(rollout.state, RolloutState::Running);
    assert_eq!(
        (rollout.stable, rollout.candidate, rollout.weight),
        (1, 2, 500)
    );

    // No evidence: it waits, and never passes.
    let waited = advance(&registry);
    assert_eq!(waited.did, "wait");
    assert!(waited.detail.contains("0 of the 10"), "{}", waited.detail);
    // Evidence from two instances is summed: 6 + 6 requests per arm pass a 10-request step.
    record(&registry, &rollout, "a", 6, 0);
    record(&registry, &rollout, "b", 6, 0);
    let stepped = advance(&registry);
    assert_eq!(stepped.did, "step");
    assert_eq!(stepped.evaluation.as_ref().unwrap().instances, 2);
    assert_eq!(stepped.evaluation.as_ref().unwrap().candidate.requests, 12);
    assert_eq!((stepped.rollout.step, stepped.rollout.weight), (1, 5000));
    assert_eq!(live(&registry), 1, "stable is untouched until promotion");

    // The new step starts from nothing: the first step's evidence does not count for it.
    assert_eq!(advance(&registry).did, "wait");
    record(&registry, &stepped.rollout, "a", 10, 0);
    let promoted = advance(&registry);
    assert_eq!(promoted.did, "promoted");
    assert_eq!(promoted.rollout.state, RolloutState::Promoted);
    assert_eq!(live(&registry), 2);
    let history = registry.history(&iris()).unwrap();
    assert_eq!(history.last().unwrap().action, crate::AliasAction::Promote);

    let log = registry.rollout_log(&iris()).unwrap();
    let actions: Vec<&str> = log.iter().map(|e| e.action.as_str()).collect();
    assert_eq!(
        actions,
        ["start", "running", "wait", "step", "wait", "promoted"]
    );
    let decisive = log.iter().find(|e| e.action == "step").unwrap();
    assert_eq!(
        decisive.evidence.as_ref().unwrap().stable.requests,
        12,
        "the decision is logged with its numbers"
    );
}

#[test]
fn a_candidate_that_errors_more_than_stable_is_rolled_back_exactly_once() {
    let (_dir, registry) = registry();
    let rollout = start(&registry, 2, 20);
    record(&registry, &rollout, "a", 20, 3);
    let failed = advance(&registry);
    assert_eq!(failed.did, "rolled_back");
    assert!(
        failed.detail.contains("error rate 15.00 %"),
        "{}",
        failed.detail
    );
    assert_eq!(
        (failed.rollout.state, failed.rollout.weight),
        (RolloutState::RolledBack, 0)
    );
    assert_eq!(live(&registry), 1);
    // Nothing is left to advance; the rollback is logged once.
    let answer = apply(&registry, &RolloutRequest::Advance { model: None }, None).unwrap();
    assert!(answer.rollouts.is_empty());
    let log = registry.rollout_log(&iris()).unwrap();
    assert_eq!(log.iter().filter(|e| e.action == "rolled_back").count(), 1);
}

#[test]
fn two_advances_at_once_act_once() {
    let (_dir, registry) = registry();
    let rollout = start(&registry, 2, 5);
    record(&registry, &rollout, "a", 5, 0);
    let reports: Vec<_> = std::thread::scope(|s| {
        let threads: Vec<_> = (0..4).map(|_| s.spawn(|| advance(&registry))).collect();
        threads.into_iter().map(|t| t.join().unwrap()).collect()
    });
    let stepped = reports.iter().filter(|r| r.did == "step").count();
    assert_eq!(
        stepped,
        1,
        "{:?}",
        reports.iter().map(|r| &r.did).collect::<Vec<_>>()
    );
    let rollout = registry
        .rollout(&iris(), &AliasName::live())
        .unwrap()
        .unwrap();
    assert_eq!(rollout.step, 1);
    let log = registry.rollout_log(&iris()).unwrap();
    assert_eq!(log.iter().filter(|e| e.action == "step").count(), 1);
}

#[test]
fn an_operators_pause_wins_over_the_controller_and_stale_generations_are_refused() {
    let (_dir, registry) = registry();
    let rollout = start(&registry, 2, 5);
    record(&registry, &rollout, "a", 5, 0);
    let paused = apply(
        &registry,
        &RolloutRequest::Pause(operator(Some(rollout.generation))),
        None,
    )
    .unwrap();
    assert_eq!(paused.rollouts[0].rollout.state, RolloutState::Paused);
    // The evidence would pass the step, but a paused rollout is not advanced.
    let report = advance(&registry);
    assert_eq!((report.did.as_str(), report.rollout.step), ("none", 0));
    assert_eq!(report.rollout.weight, 500, "a pause keeps the split");
    // An operator acting on what they saw before the pause is refused.
    let stale = apply(
        &registry,
        &RolloutRequest::Abort(operator(Some(rollout.generation))),
        None,
    )
    .unwrap_err();
    assert!(matches!(stale, RolloutError::Conflict(_)), "{stale}");
    apply(&registry, &RolloutRequest::Resume(operator(None)), None).unwrap();
    assert_eq!(advance(&registry).did, "step");
}

#[test]
fn a_rollout_started_while_another_runs_is_refused_and_a_publish_ends_it() {
    let (_dir, registry) = registry();
    let first = start(&registry, 2, 5);
    let request = RolloutRequest::Start {
        model: iris(),
        alias: AliasName::live(),
        candidate: 3,
        plan: "canary".into(),
        settings: BTreeMap::new(),
        reason: None,
    };
    let refused = apply(&registry, &request, None).unwrap_err();
    assert!(
        matches!(
            refused,
            RolloutError::AlreadyRunning {
                id: 1,
                candidate: 2,
                ..
            }
        ),
        "{refused}"
    );
    // Publishing v3 keeps its meaning: live moves, and the rollout against v1 ends.
    let publish = PublisherRequest::Publish {
        model: iris(),
        version: 3,
        alias: AliasName::live(),
        reason: None,
    };
    publish::apply(&registry, &publish, None).unwrap();
    let ended = registry
        .rollout(&iris(), &AliasName::live())
        .unwrap()
        .unwrap();
    assert_eq!(ended.state, RolloutState::RolledBack);
    assert!(ended.reason.contains("moved to v3"), "{}", ended.reason);
    assert!(ended.generation > first.generation);
    // Now a new rollout (id 2) can start against v3.
    let request = RolloutRequest::Start {
        model: iris(),
        alias: AliasName::live(),
        candidate: 2,
        plan: "canary".into(),
        settings: BTreeMap::new(),
        reason: None,
    };
    let second = apply(&registry, &request, None).unwrap();
    let second = &second.rollouts[0].rollout;
    assert_eq!((second.id, second.stable), (2, 3));
}

#[test]
fn fsck_finds_a_rollout_on_a_missing_version_and_a_decision_missing_from_the_log() {
    use crate::fsck::{Leftovers, Severity};
    let (dir, registry) = registry();
    start(&registry, 2, 5);
    let clean = registry.fsck(Leftovers::Report, Duration::ZERO).unwrap();
    assert_eq!(
        (clean.rollouts, clean.findings.len()),
        (1, 0),
        "{:?}",
        clean.findings
    );

    // A crash between the record's write and its log line.
    let log = dir.path().join("iris/rollouts.jsonl");
    let lines = std::fs::read_to_string(&log).unwrap();
    let kept: Vec<&str> = lines.lines().collect();
    std::fs::write(&log, format!("{}\n", kept[..kept.len() - 1].join("\n"))).unwrap();
    // A candidate whose version is gone (removed by hand).
    std::fs::remove_dir_all(dir.path().join("iris/versions/2")).unwrap();
    let report = registry.fsck(Leftovers::Report, Duration::ZERO).unwrap();
    let messages: Vec<(Severity, &str)> = report
        .findings
        .iter()
        .map(|f| (f.severity, f.message.as_str()))
        .collect();
    assert!(
        messages.iter().any(|(s, m)| *s == Severity::Error
            && m.contains("candidate v2, which is not a complete version")),
        "{messages:?}"
    );
    assert!(
        messages
            .iter()
            .any(|(s, m)| *s == Severity::Warning && m.contains("rollouts.jsonl lacks generation")),
        "{messages:?}"
    );
}

#[test]
fn an_operator_promotes_or_aborts_at_any_step() {
    let (_dir, registry) = registry();
    start(&registry, 2, 1000);
    let promoted = apply(&registry, &RolloutRequest::Promote(operator(None)), None).unwrap();
    assert_eq!(promoted.rollouts[0].rollout.state, RolloutState::Promoted);
    assert_eq!(live(&registry), 2);
    let again = apply(&registry, &RolloutRequest::Abort(operator(None)), None).unwrap_err();
    assert!(matches!(again, RolloutError::WrongState { .. }), "{again}");

    start(&registry, 3, 1000);
    apply(&registry, &RolloutRequest::Abort(operator(None)), None).unwrap();
    let aborted = registry
        .rollout(&iris(), &AliasName::live())
        .unwrap()
        .unwrap();
    assert_eq!(
        (aborted.state, aborted.weight),
        (RolloutState::RolledBack, 0)
    );
    assert_eq!(live(&registry), 2);
}

#[test]
fn plans_are_built_from_names_and_settings_and_bad_ones_say_why() {
    let canary = plan::PlanOptions::named("canary").unwrap().build().unwrap();
    let weights: Vec<u32> = canary.steps.iter().map(|s| s.weight).collect();
    assert_eq!(weights, [500, 2500, 5000]);
    let shadow = plan::PlanOptions::named("shadow").unwrap().build().unwrap();
    assert_eq!(
        (shadow.steps[0].weight, shadow.steps[0].shadow),
        (0, 10_000)
    );
    for (key, value, says) in [
        ("steps", "50,25", "must rise"),
        ("steps", "5,100", "under 100"),
        ("bake", "soon", "rollout bake="),
        ("min-agreement", "2", "not a share"),
        ("max-drift", "1.5", "not an L∞ distance"),
        ("colour", "blue", "unknown rollout setting"),
    ] {
        let settings = BTreeMap::from([(key.to_string(), value.to_string())]);
        let error = plan::PlanOptions::with_settings("canary", &settings)
            .and_then(|o| o.build())
            .unwrap_err();
        assert!(error.contains(says), "{key}={value}: {error}");
    }
    assert!(plan::PlanOptions::named("blue-green").is_err());
    let gated = BTreeMap::from([("max-drift".to_string(), "0.2".to_string())]);
    let plan = plan::PlanOptions::with_settings("canary", &gated)
        .and_then(|o| o.build())
        .unwrap();
    assert_eq!(plan.gates.max_drift, Some(0.2));
}

#[test]
fn payloads_parse_as_the_contract_writes_them() {
    let start: RolloutRequest = serde_json::from_value(serde_json::json!({
        "action": "rollout-start", "model": "iris", "candidate": 4,
        "settings": {"steps": "10,50"}
    }))
    .unwrap();
    assert!(matches!(
        start,
        RolloutRequest::Start { candidate: 4, ref plan, .. } if plan == "canary"
    ));
    let pause: RolloutRequest = serde_json::from_value(
        serde_json::json!({"action": "rollout-pause", "model": "iris", "generation": 3}),
    )
    .unwrap();
    assert_eq!(pause, RolloutRequest::Pause(operator(Some(3))));
    assert!(RolloutRequest::is_rollout(
        &serde_json::json!({"action": "rollout-advance"})
    ));
    assert!(!RolloutRequest::is_rollout(
        &serde_json::json!({"action": "publish"})
    ));
}

mod gate_decisions {
    use super::super::gates::{Decision, DriftSummary, decide, summarise};
    use super::super::plan::{Gates, Step};
    use super::*;
    use std::time::Duration;

    fn step(shadow: u32) -> Step {
        Step {
            weight: if shadow > 0 { 0 } else { 500 },
            shadow,
            min_bake_ms: 1000,
            min_requests: 10,
        }
    }

    fn arm(n: u64, errors: u64, us: f64) -> ArmStats {
        let mut stats = ArmStats::default();
        for i in 0..n {
            stats.record(us, i < errors);
        }
        stats
    }

    fn judge(step: &Step, evidence: &StepEvidence, baked_ms: u64) -> Decision {
        let evaluation = summarise(0, evidence, 1, Duration::from_millis(baked_ms));
        decide(step, &Gates::default(), &evaluation)
    }

    #[test]
    fn a_step_waits_for_its_bake_time_and_requests_per_arm() {
        let good = StepEvidence {
            stable: arm(10, 0, 100.0),
            candidate: arm(10, 0, 100.0),
            ..Default::default()
        };
        assert!(matches!(judge(&step(0), &good, 999), Decision::Wait(w) if w.contains("baking")));
        assert_eq!(judge(&step(0), &good, 1000), Decision::Pass);
        let thin = StepEvidence {
            candidate: arm(9, 0, 100.0),
            ..good.clone()
        };
        assert!(
            matches!(judge(&step(0), &thin, 5000), Decision::Wait(w) if w.contains("candidate has answered 9"))
        );
    }

    #[test]
    fn error_rate_and_p99_are_judged_against_stable_in_the_same_step() {
        // Both arms at 10 % errors: no worse than stable, so it passes.
        let both = StepEvidence {
            stable: arm(100, 10, 100.0),
            candidate: arm(100, 10, 100.0),
            ..Default::default()
        };
        assert_eq!(judge(&step(0), &both, 1000), Decision::Pass);
        // Failure is found before the bake time is up.
        let worse = StepEvidence {
            candidate: arm(100, 12, 100.0),
            ..both.clone()
        };
        assert!(
            matches!(judge(&step(0), &worse, 0), Decision::Fail(f) if f.contains("error rate"))
        );
        let slow = StepEvidence {
            stable: arm(100, 0, 10_000.0),
            candidate: arm(100, 0, 30_000.0),
            ..Default::default()
        };
        assert!(matches!(judge(&step(0), &slow, 1000), Decision::Fail(f) if f.contains("p99")));
        // Under 100 runs an arm's p99 is its slowest run or two: latency is not judged.
        let few = StepEvidence {
            stable: arm(99, 0, 10_000.0),
            candidate: arm(99, 0, 30_000.0),
            ..Default::default()
        };
        assert_eq!(judge(&step(0), &few, 1000), Decision::Pass);
    }

    #[test]
    fn a_max_drift_gate_waits_for_a_report_and_fails_a_drifted_candidate() {
        let good = StepEvidence {
            stable: arm(10, 0, 100.0),
            candidate: arm(10, 0, 100.0),
            ..Default::default()
        };
        let gates = Gates {
            max_drift: Some(0.2),
            ..Gates::default()
        };
        let mut evaluation = summarise(0, &good, 1, Duration::from_millis(1000));
        assert!(
            matches!(decide(&step(0), &gates, &evaluation), Decision::Wait(w) if w.contains("no drift report"))
        );
        evaluation.drift = Some(DriftSummary {
            rows: 500,
            over: vec![],
        });
        assert_eq!(decide(&step(0), &gates, &evaluation), Decision::Pass);
        evaluation.drift = Some(DriftSummary {
            rows: 500,
            over: vec![("x[2]".into(), 0.31)],
        });
        assert!(
            matches!(decide(&step(0), &gates, &evaluation), Decision::Fail(f) if f.contains("x[2] is 0.310"))
        );
        // Without the gate, drift is not judged.
        assert_eq!(
            decide(&step(0), &Gates::default(), &evaluation),
            Decision::Pass
        );
    }

    #[test]
    fn a_shadow_step_needs_its_comparisons_and_fails_on_disagreement() {
        let mut evidence = StepEvidence {
            stable: arm(20, 0, 100.0),
            ..Default::default()
        };
        evidence.shadow.runs = arm(20, 0, 100.0);
        assert!(
            matches!(judge(&step(10_000), &evidence, 1000), Decision::Wait(w) if w.contains("shadow has compared 0"))
        );
        evidence.shadow.rows = 20;
        evidence.shadow.agreed_rows = 20;
        assert_eq!(judge(&step(10_000), &evidence, 1000), Decision::Pass);
        evidence.shadow.agreed_rows = 15;
        assert!(
            matches!(judge(&step(10_000), &evidence, 1000), Decision::Fail(f) if f.contains("agreement 75.00 %"))
        );
    }
}

#[test]
fn a_candidate_the_signer_policy_refuses_by_the_last_step_is_rolled_back_not_promoted() {
    let (_dir, registry) = registry();
    let rollout = start(&registry, 2, 10);
    record(&registry, &rollout, "a", 10, 0);
    let stepped = advance(&registry);
    assert_eq!(stepped.did, "step");
    // The model's contract now requires signatures; the candidate (v2) has none.
    let required = modelpipe_signing::SignerPolicy {
        required: true,
        ..Default::default()
    };
    registry
        .lock(&iris())
        .unwrap()
        .write_signer_policy(Some(&required))
        .unwrap();
    // An operator's promote is refused and changes nothing.
    let refused = apply(&registry, &RolloutRequest::Promote(operator(None)), None).unwrap_err();
    assert!(refused.to_string().contains("not signed"), "{refused}");
    assert_eq!(
        registry
            .rollout(&iris(), &AliasName::live())
            .unwrap()
            .unwrap()
            .state,
        RolloutState::Running
    );
    // The controller's pass on the last step ends it instead, with the reason.
    record(&registry, &stepped.rollout, "a", 10, 0);
    let ended = advance(&registry);
    assert_eq!(ended.did, "rolled_back");
    assert!(
        ended
            .rollout
            .reason
            .contains("v2 may not go live: it is not signed"),
        "{}",
        ended.rollout.reason
    );
    assert_eq!((ended.rollout.weight, ended.rollout.shadow), (0, 0));
    assert_eq!(live(&registry), 1);
}
