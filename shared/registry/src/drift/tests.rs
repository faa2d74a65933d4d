use std::time::Duration;

use super::*;
use crate::Commit;
use crate::publish::{PublisherRequest, apply};
use crate::tests::stage_bytes;

fn iris() -> ModelName {
    "iris".parse().unwrap()
}

const WINDOW: Duration = Duration::from_secs(3600);

fn settings(baseline_rows: u64) -> DriftSettings {
    DriftSettings {
        threshold: 0.1,
        window: WINDOW,
        baseline_rows,
    }
}

/// A registry with versions 1..=n, `live` moved to each in turn.
fn registry_with_live(n: u64) -> (tempfile::TempDir, Registry) {
    let dir = tempfile::tempdir().unwrap();
    let registry = Registry::open(dir.path()).unwrap();
    for i in 1..=n {
        let (staging, new) = stage_bytes(&registry, &iris(), format!("model {i}").as_bytes());
        assert_eq!(
            registry.commit(&iris(), staging, new).unwrap(),
            Commit::Created(i)
        );
        let publish = PublisherRequest::Publish {
            model: iris(),
            version: i,
            alias: AliasName::live(),
            reason: None,
        };
        apply(&registry, &publish, None).unwrap();
    }
    (dir, registry)
}

/// `rows` values of feature `x` around `centre`, spread evenly over one unit.
fn profile(rows: u64, centre: f64) -> Profile {
    let mut profile = Profile::default();
    for i in 0..rows {
        profile.rows += 1;
        profile
            .feature("x")
            .add_number(centre + i as f64 / rows as f64 - 0.5);
        profile.feature("y").add_number(i as f64 / rows as f64);
    }
    profile
}

fn write(registry: &Registry, version: u64, window: u64, environment: &str, profile: Profile) {
    let file = WindowProfile {
        environment: environment.into(),
        updated_at: Timestamp::now(),
        profile,
    };
    registry
        .write_window_profile(&iris(), version, window, &file)
        .unwrap();
}

fn now_window() -> u64 {
    window_of(SystemTime::now(), WINDOW)
}

#[test]
fn environments_and_the_last_two_windows_are_merged_and_older_ones_left_out() {
    let (_dir, registry) = registry_with_live(1);
    let now = now_window();
    write(&registry, 1, now, "a", profile(300, 0.0));
    write(&registry, 1, now, "b", profile(200, 0.0));
    write(&registry, 1, now - 1, "a", profile(100, 0.0));
    write(&registry, 1, now - 2, "a", profile(5000, 0.0));
    let report = registry
        .drift_report(&iris(), 1, &settings(10_000), SystemTime::now())
        .unwrap();
    assert_eq!((report.live_rows, report.environments), (600, 2));
    assert!(
        report.baseline.is_none(),
        "5,600 rows: not the 10,000 asked for"
    );
    assert!(report.features.is_empty());
}

#[test]
fn a_fleets_files_read_at_once_merge_as_read_one_by_one_and_a_bad_file_counts_for_nothing() {
    let (dir, registry) = registry_with_live(1);
    let now = now_window();
    for environment in 0..200u64 {
        let rows = 10 + environment % 7;
        write(
            &registry,
            1,
            now,
            &format!("env-{environment}"),
            profile(rows, 0.0),
        );
    }
    let window = dir.path().join(format!("iris/drift/1/windows/{now}"));
    std::fs::write(window.join("torn.json"), "{\"environment\": ").unwrap();
    let expected_rows: u64 = (0..200).map(|e| 10 + e % 7).sum();
    let (one_by_one, read) = registry.window_profile(&iris(), 1, now).unwrap();
    assert_eq!((one_by_one.rows, read), (expected_rows, 200));
    const { assert!(crate::DEFAULT_PARALLEL_READS > 1) };
    let serial = Registry::open(dir.path()).unwrap().with_parallel_reads(1);
    let (serial_profile, serial_read) = serial.window_profile(&iris(), 1, now).unwrap();
    assert_eq!((serial_profile.rows, serial_read), (expected_rows, read));
    // Counts and sketch bins add up the same in any order (a sketch's float sum may not).
    for (name, feature) in &one_by_one.features {
        let serial = &serial_profile.features[name];
        assert_eq!(
            (feature.count, feature.missing),
            (serial.count, serial.missing)
        );
        let (sketch, serial) = (
            feature.sketch.as_ref().unwrap(),
            serial.sketch.as_ref().unwrap(),
        );
        for q in [0.0, 0.1, 0.5, 0.9, 1.0] {
            assert_eq!(sketch.quantile(q), serial.quantile(q), "{name} at {q}");
        }
    }
}

#[test]
fn an_uploaded_baseline_is_used_and_a_shifted_feature_flagged() {
    let (_dir, registry) = registry_with_live(1);
    let uploaded = Baseline {
        source: BaselineSource::Upload {
            key: "models/iris/baseline.jsonl".into(),
            sha256: "ab".into(),
        },
        created_at: Timestamp::now(),
        profile: profile(2000, 0.0),
    };
    registry.write_baseline(&iris(), 1, &uploaded).unwrap();
    write(&registry, 1, now_window(), "a", profile(1000, 0.5));
    let report = registry
        .drift_report(&iris(), 1, &settings(100), SystemTime::now())
        .unwrap();
    assert_eq!(report.baseline.as_ref().unwrap().source, uploaded.source);
    assert_eq!(report.flagged_names(), ["x"]);
    assert!(
        (report.max_flagged_distance() - 0.5).abs() < 0.03,
        "{report:?}"
    );
}

#[test]
fn without_an_upload_the_baseline_is_the_replaced_versions_first_traffic_then_kept() {
    let (_dir, registry) = registry_with_live(2);
    let now = now_window();
    // v1's first traffic (two windows ago), then later traffic that moved.
    write(&registry, 1, now - 5, "a", profile(600, 0.0));
    write(&registry, 1, now - 4, "a", profile(600, 0.0));
    write(&registry, 1, now, "a", profile(600, 3.0));
    write(&registry, 2, now, "b", profile(400, 0.0));
    let report = registry
        .drift_report(&iris(), 2, &settings(1000), SystemTime::now())
        .unwrap();
    let baseline = report.baseline.unwrap();
    assert_eq!(baseline.source, BaselineSource::Traffic { version: 1 });
    assert_eq!(baseline.rows, 1200, "whole windows until 1,000 rows");
    assert!(report.features.iter().all(|f| !f.flagged));
    // Kept: more traffic of v1 later does not change v2's baseline.
    write(&registry, 1, now - 3, "a", profile(5000, 9.0));
    let again = registry
        .resolve_baseline(&iris(), 2, 1000)
        .unwrap()
        .unwrap();
    assert_eq!(again.profile.rows, 1200);
}

#[test]
fn a_first_version_takes_its_own_first_traffic_once_it_has_enough() {
    let (_dir, registry) = registry_with_live(1);
    let now = now_window();
    write(&registry, 1, now, "a", profile(500, 0.0));
    assert!(
        registry
            .resolve_baseline(&iris(), 1, 1000)
            .unwrap()
            .is_none()
    );
    write(&registry, 1, now, "b", profile(500, 0.0));
    let baseline = registry
        .resolve_baseline(&iris(), 1, 1000)
        .unwrap()
        .unwrap();
    assert_eq!(baseline.source, BaselineSource::Traffic { version: 1 });
}

#[test]
fn the_schedules_request_reports_every_version_with_recent_traffic() {
    let (_dir, registry) = registry_with_live(3);
    let now = now_window();
    write(&registry, 1, now - 3, "a", profile(100, 0.0));
    write(&registry, 2, now - 1, "a", profile(100, 0.0));
    write(&registry, 3, now, "a", profile(100, 0.0));
    let reports = DriftRequest::default()
        .apply(&registry, &|_| settings(50), SystemTime::now())
        .unwrap();
    let versions: Vec<u64> = reports.iter().map(|r| r.version).collect();
    assert_eq!(versions, [2, 3]);
    assert!(registry.drift_report_stored(&iris(), 3).unwrap().is_some());
    let one = DriftRequest {
        model: Some(iris()),
        version: None,
    }
    .apply(&registry, &|_| settings(50), SystemTime::now())
    .unwrap();
    assert_eq!(one[0].version, 3, "the live version");
}

/// Rows and environments of `version`'s `window` as a report or a baseline reads them.
fn window_counts(registry: &Registry, version: u64, window: u64) -> (u64, usize) {
    let (profile, environments) = registry.window_profile(&iris(), version, window).unwrap();
    (profile.rows, environments)
}

#[test]
fn past_windows_are_merged_into_one_file_each_and_read_the_same() {
    let (dir, registry) = registry_with_live(2);
    let now = now_window();
    for (window, environments) in [(now - 3, 3), (now - 2, 2), (now - 1, 2), (now, 1)] {
        for e in 0..environments {
            write(&registry, 1, window, &format!("env-{e}"), profile(100, 0.0));
        }
    }
    // Version 2 has no traffic now, only a past window: merged, not reported.
    write(&registry, 2, now - 5, "env-0", profile(100, 0.0));
    let schedule = || {
        DriftRequest::default()
            .apply(&registry, &|_| settings(10_000), SystemTime::now())
            .unwrap()
    };
    let reports = schedule();
    assert_eq!(reports.iter().map(|r| r.version).collect::<Vec<_>>(), [1]);
    let drift = dir.path().join("iris/drift");
    for (version, window) in [(1, now - 3), (1, now - 2), (2, now - 5)] {
        assert!(
            drift
                .join(format!("{version}/merged/{window}.json"))
                .is_file(),
            "v{version} window {window} merged"
        );
        assert!(
            !drift.join(format!("{version}/windows/{window}")).exists(),
            "its environments' files and their directory removed"
        );
    }
    for window in [now - 1, now] {
        let files = std::fs::read_dir(drift.join(format!("1/windows/{window}"))).unwrap();
        assert!(files.count() > 0, "the windows a report reads are left");
    }
    assert_eq!(window_counts(&registry, 1, now - 3), (300, 3));
    assert_eq!(window_counts(&registry, 1, now - 2), (200, 2));
    assert_eq!(
        reports[0].live_rows, 300,
        "the current and the previous window"
    );

    // A file a crash left after the merge (an environment merged already) is not counted twice;
    // an environment writing late is added; the next merge removes both files.
    write(&registry, 1, now - 3, "env-0", profile(100, 0.0));
    write(&registry, 1, now - 3, "late", profile(50, 0.0));
    assert_eq!(window_counts(&registry, 1, now - 3), (350, 4));
    schedule();
    assert_eq!(window_counts(&registry, 1, now - 3), (350, 4));
    assert!(!drift.join(format!("1/windows/{}", now - 3)).exists());

    // A baseline taken from traffic reads merged windows, oldest first.
    let baseline = registry.resolve_baseline(&iris(), 2, 500).unwrap().unwrap();
    assert_eq!(baseline.source, BaselineSource::Traffic { version: 1 });
    assert_eq!(baseline.profile.rows, 550, "windows now-3 and now-2");
}

#[test]
fn monitoring_settings_round_trip_and_refuse_shares_outside_zero_to_one() {
    let (_dir, registry) = registry_with_live(1);
    assert_eq!(registry.monitoring(&iris()).unwrap(), Monitoring::default());
    let own = Monitoring {
        capture_share: Some(0.25),
        drift_threshold: None,
    };
    registry.write_monitoring(&iris(), &own).unwrap();
    assert_eq!(registry.monitoring(&iris()).unwrap(), own);
    let defaults = Monitoring {
        capture_share: Some(0.0),
        drift_threshold: Some(0.1),
    };
    assert_eq!(own.or(defaults).drift_threshold, Some(0.1));
    assert!(
        Monitoring {
            capture_share: Some(1.5),
            drift_threshold: None
        }
        .check()
        .is_err()
    );
}
