use super::*;
use crate::rollout::plan::PlanOptions;

fn now() -> Timestamp {
    "2026-12-04T12:00:00.000Z".parse().unwrap()
}

fn at(text: &str) -> Timestamp {
    text.parse().unwrap()
}

/// A two-step canary (5 %, 50 %) of v2 against v1 on `live`, in `state` at `step`, generation 7.
fn rollout(state: RolloutState, step: usize) -> Rollout {
    let plan = PlanOptions::with_settings(
        "canary",
        &[("steps".to_string(), "5,50".to_string())].into(),
    )
    .and_then(|p| p.build())
    .unwrap();
    let running = state != RolloutState::Preparing;
    Rollout {
        id: 3,
        model: "iris".parse().unwrap(),
        alias: "live".parse().unwrap(),
        stable: 1,
        candidate: 2,
        state,
        step,
        weight: if running { plan.steps[step].weight } else { 0 },
        shadow: 0,
        sticky_key: "routing_key".into(),
        salt: "salt".into(),
        plan,
        generation: 7,
        started_at: at("2026-12-04T11:00:00.000Z"),
        step_started_at: running.then(|| at("2026-12-04T11:30:00.000Z")),
        updated_at: at("2026-12-04T11:30:00.000Z"),
        reason: "as it was".into(),
    }
}

/// Every input the machine knows, named for the table.
fn inputs(decisions: &[Decision; 3]) -> Vec<(&'static str, Input<'_>)> {
    vec![
        ("pause", Input::Operator(Command::Pause, None)),
        ("resume", Input::Operator(Command::HandBack, None)),
        ("abort", Input::Operator(Command::Abort, None)),
        ("promote", Input::Operator(Command::PromoteCandidate, None)),
        ("checked", Input::Checked(Ok(()))),
        ("check failed", Input::Checked(Err("v2 tampered".into()))),
        ("wait", Input::Judged(&decisions[0])),
        ("pass", Input::Judged(&decisions[1])),
        ("fail", Input::Judged(&decisions[2])),
        ("alias at stable", Input::AliasAt(Some(1))),
        ("alias at candidate", Input::AliasAt(Some(2))),
        ("alias elsewhere", Input::AliasAt(Some(9))),
        ("alias gone", Input::AliasAt(None)),
        (
            "candidate refused",
            Input::CandidateRefused("it is not signed"),
        ),
    ]
}

/// One cell: `state/did` (with `+alias` when the alias must move first), or the refusal.
fn outcome(rollout: &Rollout, seen: u64, input: Input<'_>) -> String {
    match transition(rollout, seen, input, now()) {
        Ok(t) => format!(
            "{:?}/{}{}",
            t.next.state,
            t.did,
            if t.moves_alias { "+alias" } else { "" }
        ),
        Err(Refused::Stale { .. }) => "stale".into(),
        Err(Refused::WrongState(_)) => "refused".into(),
    }
}

#[test]
fn every_state_and_input_has_one_documented_outcome() {
    use RolloutState::*;
    let decisions = [
        Decision::Wait("30 of 100 requests".into()),
        Decision::Pass,
        Decision::Fail("candidate error rate 100.00 %".into()),
    ];
    // Columns: the inputs in `inputs`' order. Operators' commands first, then the controller's
    // (checked, judged), then the registry's (where the alias points, a candidate refused).
    #[rustfmt::skip]
    let table: [(RolloutState, [&str; 14]); 5] = [
        (Preparing, ["Paused/paused", "refused", "RolledBack/aborted", "Promoted/promoted+alias",
            "Running/running", "RolledBack/rolled_back", "Preparing/none", "Preparing/none", "Preparing/none",
            "Preparing/none", "Promoted/promoted", "RolledBack/superseded", "RolledBack/superseded",
            "RolledBack/rolled_back"]),
        (Running, ["Paused/paused", "refused", "RolledBack/aborted", "Promoted/promoted+alias",
            "Running/none", "Running/none", "Running/wait", "Running/step", "RolledBack/rolled_back",
            "Running/none", "Promoted/promoted", "RolledBack/superseded", "RolledBack/superseded",
            "RolledBack/rolled_back"]),
        (Paused, ["refused", "Running/resumed", "RolledBack/aborted", "Promoted/promoted+alias",
            "Paused/none", "Paused/none", "Paused/none", "Paused/none", "Paused/none",
            "Paused/none", "Promoted/promoted", "RolledBack/superseded", "RolledBack/superseded",
            "RolledBack/rolled_back"]),
        (Promoted, ["refused", "refused", "refused", "refused",
            "Promoted/none", "Promoted/none", "Promoted/none", "Promoted/none", "Promoted/none",
            "Promoted/none", "Promoted/none", "Promoted/none", "Promoted/none", "Promoted/none"]),
        (RolledBack, ["refused", "refused", "refused", "refused",
            "RolledBack/none", "RolledBack/none", "RolledBack/none", "RolledBack/none", "RolledBack/none",
            "RolledBack/none", "RolledBack/none", "RolledBack/none", "RolledBack/none", "RolledBack/none"]),
    ];
    for (state, expected) in table {
        let rollout = rollout(state, 0);
        for ((name, input), expected) in inputs(&decisions).into_iter().zip(expected) {
            assert_eq!(
                outcome(&rollout, rollout.generation, input.clone()),
                expected,
                "{state:?} × {name}"
            );
            // Whoever read an older generation is refused, whatever they asked.
            assert_eq!(
                outcome(&rollout, rollout.generation - 1, input),
                "stale",
                "{state:?} × {name} at a stale generation"
            );
        }
    }
}

#[test]
fn a_pass_on_the_last_step_promotes_and_a_pass_before_it_steps() {
    let first = rollout(RolloutState::Running, 0);
    let stepped = transition(&first, 7, Input::Judged(&Decision::Pass), now()).unwrap();
    assert_eq!((stepped.next.step, stepped.next.weight), (1, 5_000));
    assert_eq!(stepped.next.step_started_at, Some(now()));
    assert_eq!(
        stepped.next.reason,
        "step 2 of 2: 50 % of requests to the candidate (step 1 passed)"
    );

    let last = rollout(RolloutState::Running, 1);
    let promoted = transition(&last, 7, Input::Judged(&Decision::Pass), now()).unwrap();
    assert_eq!(promoted.did, Did::Promoted);
    assert!(promoted.moves_alias);
    assert_eq!((promoted.next.weight, promoted.next.shadow), (0, 0));
    assert_eq!(promoted.next.reason, "promoted: all 2 steps passed");
}

#[test]
fn the_first_step_begins_when_both_files_check_and_a_wait_says_why() {
    let preparing = rollout(RolloutState::Preparing, 0);
    let running = transition(&preparing, 7, Input::Checked(Ok(())), now()).unwrap();
    assert_eq!((running.next.weight, running.next.shadow), (500, 0));
    assert_eq!(
        running.next.reason,
        "step 1 of 2: 5 % of requests to the candidate"
    );

    let failed = transition(
        &preparing,
        7,
        Input::Checked(Err("v2 tampered".into())),
        now(),
    )
    .unwrap();
    assert_eq!(failed.next.reason, "not started: v2 tampered");

    let waiting = rollout(RolloutState::Running, 0);
    let wait = Decision::Wait("30 of 100 requests".into());
    let waited = transition(&waiting, 7, Input::Judged(&wait), now()).unwrap();
    assert_eq!(waited.next, waiting);
    assert_eq!(waited.detail, "30 of 100 requests");
}

#[test]
fn an_operator_gives_the_reason_or_gets_the_default_and_a_resume_restarts_an_unstarted_rollout() {
    let running = rollout(RolloutState::Running, 1);
    let paused = transition(
        &running,
        7,
        Input::Operator(Command::Pause, Some("deploy freeze")),
        now(),
    )
    .unwrap();
    assert_eq!(paused.next.reason, "deploy freeze");
    assert_eq!(
        paused.next.weight, running.weight,
        "a pause keeps the split"
    );
    let aborted = transition(&running, 7, Input::Operator(Command::Abort, None), now()).unwrap();
    assert_eq!(aborted.next.reason, "aborted by an operator");
    assert_eq!((aborted.next.weight, aborted.next.shadow), (0, 0));

    let never_started = Rollout {
        state: RolloutState::Paused,
        step_started_at: None,
        ..rollout(RolloutState::Preparing, 0)
    };
    let resumed = transition(
        &never_started,
        7,
        Input::Operator(Command::HandBack, None),
        now(),
    )
    .unwrap();
    assert_eq!(resumed.next.state, RolloutState::Preparing);
}

#[test]
fn did_serialises_to_the_logs_words() {
    for (did, word) in [
        (Did::Start, "start"),
        (Did::RolledBack, "rolled_back"),
        (Did::Superseded, "superseded"),
        (Did::None, "none"),
    ] {
        assert_eq!(serde_json::to_value(did).unwrap(), word);
        assert_eq!(did.as_str(), word);
    }
}
