use std::sync::Arc;

use super::*;
use crate::signature::Signature;

pub(crate) fn stage_bytes(
    registry: &Registry,
    model: &ModelName,
    bytes: &[u8],
) -> (Staging, NewVersion) {
    let staging = registry.stage(model).unwrap();
    fs::write(staging.model_path(), bytes).unwrap();
    let new = NewVersion {
        sha256: sha256_bytes(bytes),
        size: bytes.len() as u64,
        source: Source {
            bucket: "b".into(),
            key: format!("models/{model}/m.onnx"),
            ..Default::default()
        },
        signature: Signature::default(),
        signature_change: None,
    };
    (staging, new)
}

fn iris() -> ModelName {
    "iris".parse().unwrap()
}

#[test]
fn commit_numbers_versions_from_one_and_writes_manifest() {
    let dir = tempfile::tempdir().unwrap();
    let registry = Registry::open(dir.path()).unwrap();
    for (i, bytes) in [b"one".as_slice(), b"two"].into_iter().enumerate() {
        let (staging, new) = stage_bytes(&registry, &iris(), bytes);
        let commit = registry
            .lock(&iris())
            .unwrap()
            .commit(staging, new)
            .unwrap();
        assert_eq!(commit, Commit::Created(i as u64 + 1));
    }
    assert_eq!(registry.versions(&iris()).unwrap(), [1, 2]);
    let manifest = registry.manifest(&iris(), 2).unwrap();
    assert_eq!(
        (manifest.version, manifest.size, manifest.sha256.as_str()),
        (2, 3, sha256_bytes(b"two").as_str())
    );
    assert_eq!(
        fs::read(registry.model_file(&iris(), 2).unwrap()).unwrap(),
        b"two"
    );
    assert_eq!(registry.models().unwrap(), [iris()]);
}

#[test]
fn identical_bytes_create_no_new_version_and_leave_no_staging() {
    let dir = tempfile::tempdir().unwrap();
    let registry = Registry::open(dir.path()).unwrap();
    let (staging, new) = stage_bytes(&registry, &iris(), b"same");
    registry
        .lock(&iris())
        .unwrap()
        .commit(staging, new)
        .unwrap();
    let (staging, new) = stage_bytes(&registry, &iris(), b"same");
    assert_eq!(
        registry
            .lock(&iris())
            .unwrap()
            .commit(staging, new)
            .unwrap(),
        Commit::AlreadyPresent(1)
    );
    assert_eq!(registry.versions(&iris()).unwrap(), [1]);
    assert_eq!(
        fs::read_dir(dir.path().join("iris/staging"))
            .unwrap()
            .count(),
        0
    );
}

#[test]
fn concurrent_commits_get_distinct_numbers() {
    let dir = tempfile::tempdir().unwrap();
    let registry = Arc::new(Registry::open(dir.path()).unwrap());
    let threads: Vec<_> = (0..8)
        .map(|i| {
            let registry = registry.clone();
            std::thread::spawn(move || {
                let (staging, new) =
                    stage_bytes(&registry, &iris(), format!("model {i}").as_bytes());
                registry
                    .lock(&iris())
                    .unwrap()
                    .commit(staging, new)
                    .unwrap()
                    .version()
            })
        })
        .collect();
    let mut versions: Vec<u64> = threads.into_iter().map(|t| t.join().unwrap()).collect();
    versions.sort_unstable();
    assert_eq!(versions, (1..=8).collect::<Vec<_>>());
    for v in 1..=8 {
        let manifest = registry.verified_manifest(&iris(), v).unwrap();
        assert_eq!(manifest.version, v);
    }
}

#[test]
fn a_dropped_staging_removes_itself_and_old_leftovers_are_swept() {
    let dir = tempfile::tempdir().unwrap();
    let registry = Registry::open(dir.path()).unwrap();
    let (staging, _) = stage_bytes(&registry, &iris(), b"x");
    let path = staging.model_path();
    drop(staging);
    assert!(!path.exists());
    let (staging, _) = stage_bytes(&registry, &iris(), b"crashed");
    let kept = staging.dir.keep();
    assert_eq!(
        registry
            .sweep_staging(&iris(), std::time::Duration::from_secs(3600))
            .unwrap(),
        0
    );
    assert_eq!(
        registry
            .sweep_staging(&iris(), std::time::Duration::ZERO)
            .unwrap(),
        1
    );
    assert!(!kept.exists());
}

#[test]
fn verified_manifest_refuses_an_altered_file() {
    let dir = tempfile::tempdir().unwrap();
    let registry = Registry::open(dir.path()).unwrap();
    let (staging, new) = stage_bytes(&registry, &iris(), b"original");
    registry
        .lock(&iris())
        .unwrap()
        .commit(staging, new)
        .unwrap();
    fs::write(registry.model_file(&iris(), 1).unwrap(), b"tampered").unwrap();
    let err = registry.verified_manifest(&iris(), 1).unwrap_err();
    assert!(
        matches!(err, RegistryError::Tampered { version: 1, .. }),
        "{err}"
    );
}

#[test]
fn history_skips_a_torn_line() {
    let dir = tempfile::tempdir().unwrap();
    let registry = Registry::open(dir.path()).unwrap();
    let entry = HistoryEntry {
        alias: AliasName::live(),
        from: None,
        to: 1,
        action: AliasAction::Publish,
        reason: "r".into(),
        at: now(),
        request_id: None,
    };
    registry
        .lock(&iris())
        .unwrap()
        .append_history(&entry)
        .unwrap();
    let path = dir.path().join("iris/history.jsonl");
    let mut text = fs::read_to_string(&path).unwrap();
    text.push_str("{\"alias\":\"live\",\"fr");
    fs::write(&path, text).unwrap();
    registry
        .lock(&iris())
        .unwrap()
        .append_history(&HistoryEntry {
            to: 2,
            from: Some(1),
            ..entry.clone()
        })
        .unwrap();
    let history = registry.history(&iris()).unwrap();
    assert_eq!(history.iter().map(|e| e.to).collect::<Vec<_>>(), [1, 2]);
}
