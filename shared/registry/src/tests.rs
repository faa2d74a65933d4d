use std::sync::Arc;

use super::*;

pub(crate) fn stage_bytes(
    registry: &Registry,
    model: &ModelName,
    bytes: &[u8],
) -> (Staging, NewVersion) {
    let staging = registry.stage(model).unwrap();
    fs::write(staging.model_path(), bytes).unwrap();
    let new = NewVersion {
        digest: Digest::of_bytes(bytes),
        source: Source {
            bucket: "b".into(),
            key: format!("models/{model}/m.onnx"),
            ..Default::default()
        },
        ..Default::default()
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
fn a_dropped_staging_removes_itself_and_old_leftovers_are_removed() {
    let dir = tempfile::tempdir().unwrap();
    let registry = Registry::open(dir.path()).unwrap();
    let (staging, _) = stage_bytes(&registry, &iris(), b"x");
    let path = staging.model_path();
    drop(staging);
    assert!(!path.exists());
    let (staging, _) = stage_bytes(&registry, &iris(), b"crashed");
    let kept = staging.dir.keep();
    let hour = std::time::Duration::from_secs(3600);
    assert_eq!(
        registry.remove_model_leftovers(&iris(), hour),
        Vec::<PathBuf>::new()
    );
    assert_eq!(
        registry.remove_model_leftovers(&iris(), std::time::Duration::ZERO),
        vec![kept.clone()]
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
        at: modelpipe_core::time::Timestamp::now(),
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

mod fsck {
    use super::*;
    use crate::fsck::{Leftovers, Severity};
    use std::time::Duration;

    fn published(dir: &Path) -> Registry {
        let registry = Registry::open(dir).unwrap();
        for bytes in [b"one".as_slice(), b"two"] {
            let (staging, new) = stage_bytes(&registry, &iris(), bytes);
            let version = registry
                .lock(&iris())
                .unwrap()
                .commit(staging, new)
                .unwrap()
                .version();
            crate::publish::apply(
                &registry,
                &crate::publish::PublisherRequest::Publish {
                    model: iris(),
                    version,
                    alias: AliasName::live(),
                    reason: None,
                },
                None,
            )
            .unwrap();
        }
        registry
    }

    fn severities(registry: &Registry) -> Vec<Severity> {
        let report = registry.fsck(Leftovers::Report, Duration::ZERO).unwrap();
        report.findings.iter().map(|f| f.severity).collect()
    }

    #[test]
    fn a_registry_written_by_the_pipeline_is_clean() {
        let dir = tempfile::tempdir().unwrap();
        let report = published(dir.path())
            .fsck(Leftovers::Report, Duration::ZERO)
            .unwrap();
        assert!(report.is_clean(), "{report:?}");
        assert_eq!((report.models, report.versions, report.aliases), (1, 2, 1));
    }

    #[test]
    fn a_changed_file_and_an_alias_on_a_missing_version_are_errors() {
        let dir = tempfile::tempdir().unwrap();
        let registry = published(dir.path());
        fs::write(registry.model_file(&iris(), 1).unwrap(), b"changed").unwrap();
        let report = registry.fsck(Leftovers::Report, Duration::ZERO).unwrap();
        assert_eq!(report.errors(), 1, "{report:?}");
        assert!(
            report.findings[0]
                .message
                .contains("no longer matches its manifest")
        );
        fs::remove_dir_all(dir.path().join("iris/versions/2")).unwrap();
        let report = registry.fsck(Leftovers::Report, Duration::ZERO).unwrap();
        assert!(
            report.findings.iter().any(|f| f
                .message
                .contains("alias live points at v2, which is not a complete version")),
            "{report:?}"
        );
    }

    #[test]
    fn a_lost_history_line_and_an_incomplete_version_are_warnings() {
        let dir = tempfile::tempdir().unwrap();
        let registry = published(dir.path());
        let history = dir.path().join("iris/history.jsonl");
        let text = fs::read_to_string(&history).unwrap();
        fs::write(&history, text.lines().next().unwrap().to_string() + "\n").unwrap();
        fs::create_dir_all(dir.path().join("iris/versions/3")).unwrap();
        assert_eq!(
            severities(&registry),
            [Severity::Warning, Severity::Warning]
        );
    }

    #[test]
    fn repair_removes_only_old_enough_staging_and_temporary_files() {
        let dir = tempfile::tempdir().unwrap();
        let registry = published(dir.path());
        let staging = registry.stage(&iris()).unwrap().dir.keep();
        let temp = dir.path().join("iris/aliases/.tmp-crashed");
        fs::write(&temp, b"{").unwrap();
        let young = registry
            .fsck(Leftovers::Remove, Duration::from_secs(3600))
            .unwrap();
        assert!(
            young.findings.is_empty(),
            "too young to be a crash's: {young:?}"
        );
        assert!(staging.exists() && temp.exists());
        let report = registry.fsck(Leftovers::Remove, Duration::ZERO).unwrap();
        assert_eq!(report.findings.len(), 2, "{report:?}");
        assert!(
            report
                .findings
                .iter()
                .all(|f| f.severity == Severity::Leftover && f.repaired)
        );
        assert!(!staging.exists() && !temp.exists());
        assert!(
            registry
                .fsck(Leftovers::Report, Duration::ZERO)
                .unwrap()
                .is_clean()
        );
    }
}

#[test]
fn a_symlink_planted_in_the_registry_cannot_take_a_write_outside_it() {
    let dir = tempfile::tempdir().unwrap();
    let outside = tempfile::tempdir().unwrap();
    let registry = Registry::open(dir.path().join("registry")).unwrap();
    let (staging, new) = stage_bytes(&registry, &iris(), b"model");
    registry
        .lock(&iris())
        .unwrap()
        .commit(staging, new)
        .unwrap();
    let model_dir = dir.path().join("registry/iris");
    let publish = crate::publish::PublisherRequest::Publish {
        model: iris(),
        version: 1,
        alias: AliasName::live(),
        reason: None,
    };

    std::os::unix::fs::symlink(outside.path(), model_dir.join("aliases")).unwrap();
    let err = crate::publish::apply(&registry, &publish, None).unwrap_err();
    assert!(err.to_string().contains("symlink"), "{err}");
    fs::remove_file(model_dir.join("aliases")).unwrap();

    let target = outside.path().join("history");
    fs::write(&target, "outside\n").unwrap();
    std::os::unix::fs::symlink(&target, model_dir.join("history.jsonl")).unwrap();
    let err = crate::publish::apply(&registry, &publish, None).unwrap_err();
    assert!(err.to_string().contains("symlink"), "{err}");
    assert_eq!(fs::read_to_string(&target).unwrap(), "outside\n");
    fs::remove_file(model_dir.join("history.jsonl")).unwrap();

    fs::remove_dir_all(model_dir.join("staging")).unwrap();
    std::os::unix::fs::symlink(outside.path(), model_dir.join("staging")).unwrap();
    let err = registry.stage(&iris()).unwrap_err();
    assert!(err.to_string().contains("symlink"), "{err}");
    let report = registry
        .fsck(crate::fsck::Leftovers::Report, std::time::Duration::ZERO)
        .unwrap();
    assert_eq!(report.errors(), 1, "{report:?}");

    assert_eq!(
        fs::read_dir(outside.path()).unwrap().count(),
        1,
        "only the planted file"
    );
}
