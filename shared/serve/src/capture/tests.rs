use std::io::Read;

use super::*;

/// Keeps what it is given (the S3 side is tested end to end against the dev S3 endpoint).
#[derive(Default)]
struct Kept(Mutex<Vec<(String, Vec<u8>)>>);

impl CaptureSink for Kept {
    fn put(
        &self,
        key: String,
        gzipped: Vec<u8>,
    ) -> Pin<Box<dyn Future<Output = Result<(), String>> + Send + '_>> {
        self.0.lock().unwrap().push((key, gzipped));
        Box::pin(async { Ok(()) })
    }
}

fn model() -> ModelName {
    "iris".parse().unwrap()
}

fn sample(body: &str) -> Sample {
    let x = Tensor::from_shape(&[1, 2], &[1f32, 2.0]).unwrap();
    let y = Tensor::from_shape(&[1], &[0.5f32]).unwrap();
    Sample {
        model: model(),
        version: 3,
        alias: AliasName::live(),
        arm: Some("candidate"),
        rollout: Some(7),
        at: SystemTime::now(),
        latency: Duration::from_micros(250),
        request_id: Some("r-1".into()),
        input: Body {
            content_type: "application/json",
            bytes: Bytes::from(body.to_string()),
        },
        output: Body {
            content_type: "application/octet-stream",
            bytes: Bytes::from_static(&[1, 2, 3, 4]),
        },
        inputs: vec![("x".into(), x)],
        outputs: vec![("y".into(), y)],
    }
}

fn gunzip(bytes: &[u8]) -> String {
    let mut text = String::new();
    flate2::read::GzDecoder::new(bytes)
        .read_to_string(&mut text)
        .unwrap();
    text
}

#[test]
fn a_record_has_sagemakers_shape_and_modelpipes_fields() {
    let record = record(&sample(r#"{"inputs":[]}"#), "env-1", 1024);
    let input = &record["captureData"]["endpointInput"];
    assert_eq!(input["mode"], "INPUT");
    assert_eq!(input["encoding"], "JSON");
    assert_eq!(input["observedContentType"], "application/json");
    assert_eq!(input["data"], r#"{"inputs":[]}"#);
    let output = &record["captureData"]["endpointOutput"];
    assert_eq!(output["mode"], "OUTPUT");
    assert_eq!(output["encoding"], "BASE64");
    assert_eq!(output["data"], "AQIDBA==");
    assert_eq!(record["eventVersion"], "0");
    assert_eq!(record["eventMetadata"]["inferenceId"], "r-1");
    assert_eq!(
        record["eventMetadata"]["eventId"].as_str().unwrap().len(),
        36
    );
    let ours = &record["modelpipe"];
    assert_eq!(ours["version"], 3);
    assert_eq!(ours["arm"], "candidate");
    assert_eq!(ours["rollout"], 7);
    assert_eq!(ours["latency_us"], 250);
    assert_eq!(ours["input_truncated"], false);
}

#[test]
fn a_body_over_the_cap_is_kept_as_its_first_bytes_and_marked() {
    let body = format!(r#"{{"inputs":"{}"}}"#, "a".repeat(100));
    let record = record(&sample(&body), "env-1", 16);
    let input = &record["captureData"]["endpointInput"];
    assert_eq!(input["encoding"], "BASE64");
    let kept = base64::engine::general_purpose::STANDARD
        .decode(input["data"].as_str().unwrap())
        .unwrap();
    assert_eq!(kept, &body.as_bytes()[..16]);
    assert_eq!(record["modelpipe"]["input_truncated"], true);
    assert_eq!(record["modelpipe"]["input_bytes"], body.len());
}

#[test]
fn the_share_is_sampled_by_the_bodys_hash() {
    let bodies: Vec<String> = (0..10_000).map(|i| format!(r#"{{"id":"{i}"}}"#)).collect();
    let taken = bodies
        .iter()
        .filter(|b| sampled(&model(), b.as_bytes(), 0.1))
        .count();
    assert!((900..1_100).contains(&taken), "{taken} of 10,000 at 10 %");
    for body in &bodies[..100] {
        assert_eq!(
            sampled(&model(), body.as_bytes(), 0.1),
            split::bucket("capture/iris", body.as_bytes()) < 1_000,
            "the documented hash"
        );
    }
    assert!(bodies.iter().all(|b| !sampled(&model(), b.as_bytes(), 0.0)));
    assert!(bodies.iter().all(|b| sampled(&model(), b.as_bytes(), 1.0)));
}

#[tokio::test]
async fn records_are_written_as_gzip_json_lines_under_the_hour_and_profiles_to_the_registry() {
    let dir = tempfile::tempdir().unwrap();
    let registry = Registry::open(dir.path()).unwrap();
    let sink = Arc::new(Kept::default());
    let capture = Capture::new(MonitoringConfig::default(), "env-1".into()).with_sink(sink.clone());
    for i in 0..25 {
        capture.offer(sample(&format!(r#"{{"id":"{i}"}}"#)));
    }
    // Not due yet (neither the size nor the age): nothing is written.
    assert_eq!(capture.process(&registry).await.objects, 0);
    assert!(sink.0.lock().unwrap().is_empty());
    let flushed = capture.flush(&registry).await;
    assert_eq!(flushed.objects, 1);
    assert!(capture.is_idle());
    let objects = sink.0.lock().unwrap();
    let (key, body) = &objects[0];
    let hour = hour_path(SystemTime::now());
    assert!(
        key.starts_with(&format!("capture/iris/3/{hour}/env-1-")) && key.ends_with(".jsonl.gz"),
        "{key}"
    );
    let lines: Vec<Value> = gunzip(body)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(lines.len(), 25);
    let window = window_of(SystemTime::now(), Duration::from_secs(3600));
    let (profile, environments) = registry.window_profile(&model(), 3, window).unwrap();
    assert_eq!((profile.rows, environments), (25, 1));
    assert_eq!(profile.features["x[1]"].count, 25);
    assert_eq!(profile.features["output.y"].count, 25);
}

#[test]
fn samples_past_the_budget_are_dropped_not_waited_for() {
    let config = MonitoringConfig {
        buffer_bytes: 4096,
        ..MonitoringConfig::default()
    };
    let capture = Capture::new(config, "env-1".into());
    for i in 0..100 {
        capture.offer(sample(&format!(r#"{{"id":"{i}"}}"#)));
    }
    let held = capture.pending.lock().unwrap().len();
    assert!(held > 0 && held < 100, "{held} held of 100");
    assert!(capture.held.load(Ordering::Relaxed) <= 4096);
}

/// Refuses every write while `down`.
#[derive(Default)]
struct Flaky {
    down: std::sync::atomic::AtomicBool,
    kept: Kept,
}

impl CaptureSink for Flaky {
    fn put(
        &self,
        key: String,
        gzipped: Vec<u8>,
    ) -> Pin<Box<dyn Future<Output = Result<(), String>> + Send + '_>> {
        if self.down.load(Ordering::Relaxed) {
            return Box::pin(async { Err("503 Slow Down".to_string()) });
        }
        self.kept.put(key, gzipped)
    }
}

#[tokio::test]
async fn records_a_failed_write_left_are_written_by_the_next_one() {
    let dir = tempfile::tempdir().unwrap();
    let registry = Registry::open(dir.path()).unwrap();
    let sink = Arc::new(Flaky::default());
    sink.down.store(true, Ordering::Relaxed);
    let capture = Capture::new(MonitoringConfig::default(), "env-1".into()).with_sink(sink.clone());
    for i in 0..10 {
        capture.offer(sample(&format!(r#"{{"id":"{i}"}}"#)));
    }
    assert_eq!(capture.flush(&registry).await.objects, 0);
    assert!(capture.held_bytes() > 0, "kept, within the budget");
    sink.down.store(false, Ordering::Relaxed);
    assert_eq!(capture.flush(&registry).await.objects, 1);
    assert_eq!((capture.written_total(), capture.held_bytes()), (10, 0));
    let objects = sink.kept.0.lock().unwrap();
    assert_eq!(gunzip(&objects[0].1).lines().count(), 10);
}

#[tokio::test]
async fn a_share_is_read_once_on_the_request_path_and_again_after_an_answer_once_due() {
    let dir = tempfile::tempdir().unwrap();
    let registry = Registry::open(dir.path()).unwrap();
    let settings = |share| Monitoring {
        capture_share: Some(share),
        drift_threshold: None,
    };
    registry.write_monitoring(&model(), &settings(0.5)).unwrap();
    let capture = Capture::new(MonitoringConfig::default(), "env-1".into());
    assert_eq!(
        capture.share(&registry, &model()),
        0.5,
        "read the first time"
    );
    registry.write_monitoring(&model(), &settings(0.2)).unwrap();
    assert_eq!(
        capture.share(&registry, &model()),
        0.5,
        "the request path reads no more"
    );
    capture.process(&registry).await;
    assert_eq!(capture.share(&registry, &model()), 0.5, "not due yet");
    // As if read SETTINGS_REFRESH ago.
    for (_, read) in capture.shares.lock().unwrap().values_mut() {
        *read -= SETTINGS_REFRESH;
    }
    capture.process(&registry).await;
    assert_eq!(
        capture.share(&registry, &model()),
        0.2,
        "read again after the answer"
    );
}
