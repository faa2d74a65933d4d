use super::*;
use crate::Commit;
use crate::tests::stage_bytes;

fn iris() -> ModelName {
    "iris".parse().unwrap()
}

fn registry_with_versions(n: usize) -> (tempfile::TempDir, Registry) {
    let dir = tempfile::tempdir().unwrap();
    let registry = Registry::open(dir.path()).unwrap();
    for i in 0..n {
        let (staging, new) = stage_bytes(&registry, &iris(), format!("model bytes {i}").as_bytes());
        assert!(matches!(
            registry.commit(&iris(), staging, new).unwrap(),
            Commit::Created(_)
        ));
    }
    (dir, registry)
}

fn publish(version: u64) -> PublisherRequest {
    PublisherRequest::Publish {
        model: iris(),
        version,
        alias: AliasName::live(),
        reason: None,
    }
}

fn rollback() -> PublisherRequest {
    PublisherRequest::Rollback {
        model: iris(),
        alias: AliasName::live(),
        reason: None,
    }
}

#[test]
fn payloads_parse_as_the_contract_writes_them() {
    let p = PublisherRequest::from_json(
        serde_json::json!({"action":"publish","model":"iris","version":3,"alias":"live"}),
    )
    .unwrap();
    assert_eq!(p, publish(3));
    let r = PublisherRequest::from_json(
        serde_json::json!({"action":"rollback","model":"iris","alias":"live"}),
    )
    .unwrap();
    assert_eq!(r, rollback());
    let s = PublisherRequest::from_json(serde_json::json!({"action":"set-alias","model":"iris","alias":"canary","version":2,"reason":"try"})).unwrap();
    assert!(matches!(s, PublisherRequest::SetAlias { version: 2, .. }));
    let bad = PublisherRequest::from_json(serde_json::json!({"action":"delete","model":"iris"}))
        .unwrap_err();
    assert!(
        bad.to_string().contains("unknown variant `delete`"),
        "{bad}"
    );
    let bad_name = PublisherRequest::from_json(
        serde_json::json!({"action":"publish","model":"../etc","version":1}),
    )
    .unwrap_err();
    assert!(bad_name.to_string().contains("must match"), "{bad_name}");
}

#[test]
fn publish_moves_the_alias_and_appends_history() {
    let (_dir, registry) = registry_with_versions(2);
    let first = apply(&registry, &publish(1), Some("req-1")).unwrap();
    assert_eq!((first.version, first.previous), (1, None));
    let second = apply(&registry, &publish(2), None).unwrap();
    assert_eq!((second.version, second.previous), (2, Some(1)));
    let alias = registry
        .alias(&iris(), &AliasName::live())
        .unwrap()
        .unwrap();
    assert_eq!((alias.version, alias.previous), (2, Some(1)));
    let history = registry.history(&iris()).unwrap();
    assert_eq!(
        history.iter().map(|e| (e.from, e.to)).collect::<Vec<_>>(),
        [(None, 1), (Some(1), 2)]
    );
    assert_eq!(history[0].request_id.as_deref(), Some("req-1"));
    // Publishing where the alias already points changes nothing.
    apply(&registry, &publish(2), None).unwrap();
    assert_eq!(registry.history(&iris()).unwrap().len(), 2);
}

#[test]
fn rollback_walks_back_through_history() {
    let (_dir, registry) = registry_with_versions(3);
    for v in 1..=3 {
        apply(&registry, &publish(v), None).unwrap();
    }
    assert_eq!(apply(&registry, &rollback(), None).unwrap().version, 2);
    assert_eq!(apply(&registry, &rollback(), None).unwrap().version, 1);
    let err = apply(&registry, &rollback(), None).unwrap_err();
    assert!(
        matches!(err, PublishError::NothingToRollBack { .. }),
        "{err}"
    );
    assert_eq!(
        registry
            .alias(&iris(), &AliasName::live())
            .unwrap()
            .unwrap()
            .version,
        1
    );
}

#[test]
fn missing_or_altered_versions_are_refused_and_change_nothing() {
    let (_dir, registry) = registry_with_versions(2);
    apply(&registry, &publish(1), None).unwrap();
    let before = registry.alias(&iris(), &AliasName::live()).unwrap();
    let missing = apply(&registry, &publish(7), None).unwrap_err();
    assert_eq!(missing.to_string(), "model iris has no version 7");
    std::fs::write(registry.model_file(&iris(), 2).unwrap(), b"altered").unwrap();
    let altered = apply(&registry, &publish(2), None).unwrap_err();
    assert!(
        altered
            .to_string()
            .contains("no longer matches its manifest"),
        "{altered}"
    );
    assert_eq!(registry.alias(&iris(), &AliasName::live()).unwrap(), before);
    assert_eq!(registry.history(&iris()).unwrap().len(), 1);
}

#[test]
fn a_history_line_lost_to_a_crash_is_restored() {
    let (dir, registry) = registry_with_versions(3);
    apply(&registry, &publish(1), None).unwrap();
    apply(&registry, &publish(2), None).unwrap();
    // Simulate a crash between the alias write and the history append of the move to v2.
    let path = dir.path().join("iris/history.jsonl");
    let text = std::fs::read_to_string(&path).unwrap();
    std::fs::write(&path, text.lines().next().unwrap().to_string() + "\n").unwrap();
    apply(&registry, &publish(3), None).unwrap();
    let moves: Vec<_> = registry
        .history(&iris())
        .unwrap()
        .iter()
        .map(|e| (e.from, e.to, e.action))
        .collect();
    assert_eq!(
        moves,
        [
            (None, 1, AliasAction::Publish),
            (Some(1), 2, AliasAction::Recovered),
            (Some(2), 3, AliasAction::Publish)
        ]
    );
    assert_eq!(apply(&registry, &rollback(), None).unwrap().version, 2);
}

#[test]
fn concurrent_moves_of_one_alias_are_serialised_and_all_recorded() {
    let (_dir, registry) = registry_with_versions(4);
    let registry = std::sync::Arc::new(registry);
    let movers: Vec<_> = (1..=4u64)
        .map(|version| {
            let registry = registry.clone();
            std::thread::spawn(move || {
                for _ in 0..10 {
                    apply(&registry, &publish(version), None).unwrap();
                }
            })
        })
        .collect();
    movers.into_iter().for_each(|m| m.join().unwrap());
    let history = registry.history(&iris()).unwrap();
    // Each entry starts where the one before it ended: no move was lost or interleaved.
    for pair in history.windows(2) {
        assert_eq!(pair[1].from, Some(pair[0].to), "{history:?}");
    }
    let live = registry
        .alias(&iris(), &AliasName::live())
        .unwrap()
        .unwrap();
    assert_eq!(live.version, history.last().unwrap().to);
    assert!(
        history.len() >= 4,
        "every version was published at least once"
    );
}

#[test]
fn reading_an_alias_while_it_is_replaced_never_fails() {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
    const MOVES: usize = 50;
    let (_dir, registry) = registry_with_versions(2);
    apply(&registry, &publish(1), None).unwrap();
    let registry = Arc::new(registry);
    let stop = Arc::new(AtomicBool::new(false));
    let moves = Arc::new(AtomicUsize::new(0));
    let writer = {
        let (registry, stop, moves) = (registry.clone(), stop.clone(), moves.clone());
        std::thread::spawn(move || {
            while !stop.load(Ordering::Relaxed) {
                let n = moves.load(Ordering::Relaxed);
                apply(&registry, &publish(1 + n as u64 % 2), None).unwrap();
                moves.store(n + 1, Ordering::Relaxed);
            }
        })
    };
    // Read for as long as the writer takes to replace the alias MOVES times (however slow the disk).
    let mut reads = 0u64;
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    while moves.load(Ordering::Relaxed) < MOVES {
        assert!(std::time::Instant::now() < deadline, "the writer stalled");
        let alias = registry
            .alias(&iris(), &AliasName::live())
            .unwrap()
            .unwrap();
        assert!(alias.version == 1 || alias.version == 2);
        reads += 1;
    }
    stop.store(true, Ordering::Relaxed);
    writer.join().unwrap();
    assert!(
        reads > MOVES as u64,
        "only {reads} reads overlapped {MOVES} moves"
    );
}
