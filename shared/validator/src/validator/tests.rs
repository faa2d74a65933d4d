//! The validator's stages against an in-memory bucket and a directory registry: every outcome
//! of one record, what it leaves in the registry and how it tags the object. The S3 protocol
//! itself (moto, `modelctl dev`'s endpoint) is tested in `tests/tests/validator_s3.rs`.

use std::collections::HashMap;
use std::sync::Mutex;

use super::*;
use crate::object_store::Object;
use crate::s3_event::{CreatedObject, object_created_event};
use modelpipe_testkit::onnx_build::LinearSoftmax;

/// A bucket in memory: objects with their metadata, and the tags the validator sets.
#[derive(Default)]
struct MemoryBucket {
    objects: Mutex<HashMap<String, (Vec<u8>, HashMap<String, String>)>>,
    tags: Mutex<HashMap<String, HashMap<String, String>>>,
}

impl MemoryBucket {
    fn put(&self, key: &str, bytes: &[u8], metadata: &[(&str, &str)]) {
        let metadata = metadata
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        self.objects
            .lock()
            .unwrap()
            .insert(key.to_string(), (bytes.to_vec(), metadata));
    }

    fn tag(&self, key: &str, name: &str) -> Option<String> {
        self.tags.lock().unwrap().get(key)?.get(name).cloned()
    }
}

impl ObjectStore for MemoryBucket {
    async fn get(&self, object: &ObjectRef) -> Result<Object, StoreError> {
        let objects = self.objects.lock().unwrap();
        let Some((bytes, metadata)) = objects.get(&object.key) else {
            return Err(StoreError::NotFound {
                bucket: object.bucket.clone(),
                key: object.key.clone(),
            });
        };
        Ok(Object {
            size: Some(bytes.len() as u64),
            etag: Some("etag".into()),
            version_id: None,
            metadata: metadata.clone(),
            checksum_sha256: None,
            body: Box::pin(std::io::Cursor::new(bytes.clone())),
        })
    }

    async fn get_small(
        &self,
        _bucket: &str,
        key: &str,
        limit: u64,
    ) -> Result<Option<Vec<u8>>, StoreError> {
        let objects = self.objects.lock().unwrap();
        match objects.get(key) {
            Some((bytes, _)) if bytes.len() as u64 > limit => Err(StoreError::TooLarge {
                bucket: "bucket".into(),
                key: key.to_string(),
                limit,
            }),
            found => Ok(found.map(|(bytes, _)| bytes.clone())),
        }
    }

    async fn tag(&self, object: &ObjectRef, tags: &[(&str, String)]) -> Result<(), StoreError> {
        let mut all = self.tags.lock().unwrap();
        let on = all.entry(object.key.clone()).or_default();
        for (name, value) in tags {
            on.insert(name.to_string(), value.clone());
        }
        Ok(())
    }
}

/// A publisher that fails while `down` is set, and otherwise applies the request.
struct FlakyPublisher {
    local: LocalPublisher,
    down: std::sync::atomic::AtomicBool,
}

impl PublishTarget for FlakyPublisher {
    async fn publish(&self, request: PublisherRequest) -> Result<PublisherResponse, String> {
        if self.down.load(std::sync::atomic::Ordering::SeqCst) {
            return Err("the publisher is unreachable".into());
        }
        self.local.publish(request).await
    }

    async fn start_rollout(
        &self,
        request: modelpipe_registry::rollout::actions::RolloutRequest,
    ) -> Result<u64, String> {
        self.local.start_rollout(request).await
    }
}

struct Fixture {
    _dir: tempfile::TempDir,
    validator: Validator<MemoryBucket, FlakyPublisher>,
}

fn fixture() -> Fixture {
    let dir = tempfile::tempdir().unwrap();
    let registry = Registry::open(dir.path()).unwrap();
    let config = Config {
        max_model_bytes: 1 << 20,
        ..Config::from_lookup(|_| None).unwrap()
    };
    let publisher = FlakyPublisher {
        local: LocalPublisher(registry.clone()),
        down: false.into(),
    };
    let validator = Validator::new(registry, MemoryBucket::default(), publisher, &config);
    Fixture {
        _dir: dir,
        validator,
    }
}

/// One record of bucket `uploads`, as S3 sends it.
fn s3_event(event_name: &'static str, key: &str, sequencer: &str) -> S3Event {
    let event = object_created_event(&CreatedObject {
        event_name,
        bucket: "uploads".into(),
        key: key.into(),
        size: 0,
        etag: "etag".into(),
        sequencer: sequencer.into(),
    });
    serde_json::from_value(event).unwrap()
}

fn iris() -> ModelName {
    "iris".parse().unwrap()
}

impl Fixture {
    fn bucket(&self) -> &MemoryBucket {
        &self.validator.store
    }

    fn registry(&self) -> &Registry {
        self.validator.registry()
    }

    async fn event(&self, event_name: &'static str, key: &str, sequencer: &str) -> Outcome {
        let event = s3_event(event_name, key, sequencer);
        self.validator
            .handle_record(&event.records[0])
            .await
            .unwrap()
    }

    async fn upload(
        &self,
        key: &str,
        bytes: &[u8],
        metadata: &[(&str, &str)],
        seq: &str,
    ) -> Outcome {
        self.bucket().put(key, bytes, metadata);
        self.event("ObjectCreated:Put", key, seq).await
    }

    fn live(&self) -> Option<u64> {
        let alias = self.registry().alias(&iris(), &AliasName::live()).unwrap();
        alias.map(|a| a.version)
    }
}

#[tokio::test]
async fn an_upload_is_committed_published_and_tagged() {
    let f = fixture();
    let key = "models/iris/v1.onnx";
    let outcome = f
        .upload(key, &LinearSoftmax::iris(1).to_bytes(), &[], "01")
        .await;
    assert_eq!(
        outcome,
        Outcome::Published {
            model: iris(),
            version: 1,
            alias: AliasName::live()
        }
    );
    assert_eq!(f.live(), Some(1));
    let manifest = f.registry().manifest(&iris(), 1).unwrap();
    assert_eq!(manifest.source.key, key);
    assert_eq!(manifest.source.etag.as_deref(), Some("etag"));
    assert_eq!(
        f.bucket().tag(key, "modelpipe-status").as_deref(),
        Some("published")
    );
    assert_eq!(
        f.bucket().tag(key, "modelpipe-version").as_deref(),
        Some("1")
    );
    let record = f.registry().upload_record(&iris(), key).unwrap().unwrap();
    assert_eq!(record.status, UploadStatus::Published);
}

#[tokio::test]
async fn publish_false_registers_without_moving_the_alias() {
    let f = fixture();
    let bytes = LinearSoftmax::iris(1).to_bytes();
    let outcome = f
        .upload("models/iris/a.onnx", &bytes, &[("publish", "false")], "01")
        .await;
    assert_eq!(
        outcome,
        Outcome::Registered {
            model: iris(),
            version: 1
        }
    );
    assert_eq!(f.live(), None);
}

#[tokio::test]
async fn each_rejection_says_why_is_recorded_and_tagged_and_changes_no_version() {
    let f = fixture();
    let good = LinearSoftmax::iris(1).to_bytes();
    f.upload("models/iris/good.onnx", &good, &[], "01").await;
    let cases: [(&str, Vec<u8>, &[(&str, &str)], &str); 5] = [
        (
            "bad-flag.onnx",
            good.clone(),
            &[("publish", "maybe")],
            "must be true or false",
        ),
        (
            "bad-engine.onnx",
            good.clone(),
            &[("engine", "tvm")],
            "is not tract or onnxruntime",
        ),
        (
            "bad-sha.onnx",
            LinearSoftmax::iris(2).to_bytes(),
            &[("sha256", &"0".repeat(64))],
            "does not match the uploaded bytes",
        ),
        (
            "garbage.onnx",
            b"not a model".to_vec(),
            &[],
            "not a loadable ONNX model",
        ),
        (
            "huge.onnx",
            vec![0; (1 << 20) + 1],
            &[],
            "more than MAX_MODEL_BYTES",
        ),
    ];
    for (i, (name, bytes, metadata, why)) in cases.into_iter().enumerate() {
        let key = format!("models/iris/{name}");
        let outcome = f.upload(&key, &bytes, metadata, &format!("1{i}")).await;
        let Outcome::Rejected { reason, .. } = outcome else {
            panic!("{name} must be rejected, got {outcome:?}");
        };
        assert!(reason.contains(why), "{name}: {reason}");
        assert_eq!(f.registry().versions(&iris()).unwrap(), vec![1], "{name}");
        assert_eq!(f.live(), Some(1), "{name}: live is untouched");
        assert_eq!(
            f.registry()
                .rejections(&iris())
                .unwrap()
                .last()
                .unwrap()
                .reason,
            reason
        );
        let tag = f.bucket().tag(&key, "modelpipe-reason").unwrap();
        assert_eq!(tag, tag_value(&reason), "{name}");
        assert_eq!(
            f.bucket().tag(&key, "modelpipe-status").as_deref(),
            Some("rejected")
        );
    }
}

#[tokio::test]
async fn what_is_not_a_model_upload_is_ignored_with_the_reason() {
    let f = fixture();
    let bytes = LinearSoftmax::iris(1).to_bytes();
    f.bucket().put("other/iris.onnx", &bytes, &[]);
    f.bucket().put("models/iris/m.onnx", &bytes, &[]);
    for (event, key, why) in [
        ("ObjectCreated:Put", "other/iris.onnx", "models/"),
        (
            "ObjectRemoved:Delete",
            "models/iris/m.onnx",
            "is not an ObjectCreated event",
        ),
        (
            "ObjectCreated:Put",
            "models/iris/gone.onnx",
            "the object no longer exists",
        ),
    ] {
        let Outcome::Ignored { reason, .. } = f.event(event, key, "01").await else {
            panic!("{key} ({event}) must be ignored");
        };
        assert!(reason.contains(why), "{key}: {reason}");
    }
    assert_eq!(f.registry().versions(&iris()).unwrap(), Vec::<u64>::new());
}

#[tokio::test]
async fn a_repeated_event_is_a_duplicate_and_an_older_one_is_stale() {
    let f = fixture();
    let key = "models/iris/m.onnx";
    f.upload(key, &LinearSoftmax::iris(1).to_bytes(), &[], "05")
        .await;
    let again = f.event("ObjectCreated:Put", key, "05").await;
    assert_eq!(
        again,
        Outcome::Duplicate {
            model: iris(),
            key: key.into()
        }
    );
    let older = f.event("ObjectCreated:Put", key, "03").await;
    assert_eq!(
        older,
        Outcome::Stale {
            model: iris(),
            key: key.into()
        }
    );
    assert_eq!(f.registry().versions(&iris()).unwrap(), vec![1]);
}

#[tokio::test]
async fn a_failed_publish_is_an_error_and_the_retried_event_resumes_it() {
    let f = fixture();
    let key = "models/iris/m.onnx";
    f.bucket().put(key, &LinearSoftmax::iris(1).to_bytes(), &[]);
    f.validator
        .publisher
        .down
        .store(true, std::sync::atomic::Ordering::SeqCst);
    let event = s3_event("ObjectCreated:Put", key, "07");
    let error = f.validator.handle_event(&event).await.unwrap_err();
    assert!(error.to_string().contains("unreachable"), "{error}");
    assert_eq!(
        f.registry().versions(&iris()).unwrap(),
        vec![1],
        "committed"
    );
    assert_eq!(f.live(), None, "not yet published");

    f.validator
        .publisher
        .down
        .store(false, std::sync::atomic::Ordering::SeqCst);
    let outcomes = f.validator.handle_event(&event).await.unwrap();
    assert_eq!(
        outcomes,
        vec![Outcome::Published {
            model: iris(),
            version: 1,
            alias: AliasName::live()
        }]
    );
    assert_eq!(
        f.registry().versions(&iris()).unwrap(),
        vec![1],
        "no second version"
    );
    assert_eq!(f.live(), Some(1));
}

#[tokio::test]
async fn a_contracts_default_rollout_applies_unless_the_upload_names_its_own_or_none() {
    let f = fixture();
    f.upload(
        "models/iris/v1.onnx",
        &LinearSoftmax::iris(1).to_bytes(),
        &[],
        "01",
    )
    .await;
    let contract = serde_json::json!({"rollout": {"plan": "canary", "settings": {"steps": "20"}}});
    f.bucket().put(
        "models/iris/contract.json",
        contract.to_string().as_bytes(),
        &[],
    );

    // No rollout= metadata: the contract's plan.
    let outcome = f
        .upload(
            "models/iris/v2.onnx",
            &LinearSoftmax::iris(2).to_bytes(),
            &[],
            "02",
        )
        .await;
    assert!(
        matches!(
            outcome,
            Outcome::RollingOut {
                version: 2,
                rollout: 1,
                ..
            }
        ),
        "{outcome:?}"
    );
    let rollout = f
        .registry()
        .rollout(&iris(), &AliasName::live())
        .unwrap()
        .unwrap();
    assert_eq!((rollout.weight, rollout.plan.steps.len()), (2000, 1));
    assert_eq!(f.live(), Some(1));

    // rollout=none publishes at once (and ends the running rollout, as a publish does).
    let outcome = f
        .upload(
            "models/iris/v3.onnx",
            &LinearSoftmax::iris(3).to_bytes(),
            &[("rollout", "none")],
            "03",
        )
        .await;
    assert!(
        matches!(outcome, Outcome::Published { version: 3, .. }),
        "{outcome:?}"
    );
    assert_eq!(f.live(), Some(3));

    // The upload's own plan wins over the contract's.
    let outcome = f
        .upload(
            "models/iris/v4.onnx",
            &LinearSoftmax::iris(4).to_bytes(),
            &[("rollout", "shadow")],
            "04",
        )
        .await;
    assert!(
        matches!(outcome, Outcome::RollingOut { version: 4, .. }),
        "{outcome:?}"
    );
    let rollout = f
        .registry()
        .rollout(&iris(), &AliasName::live())
        .unwrap()
        .unwrap();
    assert_eq!(
        (rollout.plan.name.as_str(), rollout.shadow),
        ("shadow", 10_000)
    );

    // A contract whose plan is bad rejects the upload, saying so.
    let bad = serde_json::json!({"rollout": {"plan": "canary", "settings": {"steps": "50,20"}}});
    f.bucket()
        .put("models/iris/contract.json", bad.to_string().as_bytes(), &[]);
    let outcome = f
        .upload(
            "models/iris/v5.onnx",
            &LinearSoftmax::iris(5).to_bytes(),
            &[],
            "05",
        )
        .await;
    let Outcome::Rejected { reason, .. } = outcome else {
        panic!("{outcome:?}")
    };
    assert!(
        reason.contains("contract.json rollout: rollout steps must rise"),
        "{reason}"
    );
}

#[tokio::test]
async fn an_uploaded_baseline_is_run_on_the_new_version_and_a_bad_line_rejects_it() {
    let f = fixture();
    let request = |x: f32| {
        serde_json::json!({"inputs": [{"name": "input", "datatype": "FP32", "shape": [2, 4],
            "data": [x, 3.5, 1.4, 0.2, x + 1.0, 3.0, 1.3, 0.1]}]})
        .to_string()
    };
    let dataset = format!("{}\n\n{}\n", request(5.0), request(6.0));
    f.bucket()
        .put("models/iris/baseline.jsonl", dataset.as_bytes(), &[]);
    let monitoring = serde_json::json!({"monitoring": {"capture_share": 0.25}});
    f.bucket().put(
        "models/iris/contract.json",
        monitoring.to_string().as_bytes(),
        &[],
    );
    let outcome = f
        .upload(
            "models/iris/m.onnx",
            &LinearSoftmax::iris(1).to_bytes(),
            &[],
            "01",
        )
        .await;
    assert!(
        matches!(outcome, Outcome::Published { version: 1, .. }),
        "{outcome:?}"
    );
    let baseline = f.registry().baseline(&iris(), 1).unwrap().unwrap();
    assert_eq!(
        baseline.profile.rows, 4,
        "two requests of two rows; the blank line skipped"
    );
    assert_eq!(baseline.profile.features["input[0]"].count, 4);
    assert_eq!(
        baseline.profile.features["output.probabilities[2]"].count, 4,
        "outputs run"
    );
    assert!(matches!(
        baseline.source,
        modelpipe_registry::drift::BaselineSource::Upload { ref key, .. } if key == "models/iris/baseline.jsonl"
    ));
    assert_eq!(
        f.registry().monitoring(&iris()).unwrap().capture_share,
        Some(0.25),
        "the contract's settings recorded"
    );

    // A line the model cannot take rejects the upload, naming the line; live is untouched.
    let bad = format!(
        "{}\n{}\n",
        request(5.0),
        r#"{"inputs": [{"name": "input", "datatype": "FP32", "shape": [1, 3], "data": [1, 2, 3]}]}"#
    );
    f.bucket()
        .put("models/iris/baseline.jsonl", bad.as_bytes(), &[]);
    let outcome = f
        .upload(
            "models/iris/m.onnx",
            &LinearSoftmax::iris(2).to_bytes(),
            &[],
            "02",
        )
        .await;
    let Outcome::Rejected { reason, .. } = outcome else {
        panic!("{outcome:?}")
    };
    assert!(
        reason.starts_with("models/iris/baseline.jsonl: line 2: input 'input' has shape [1,3]"),
        "{reason}"
    );
    assert_eq!(
        (f.live(), f.registry().versions(&iris()).unwrap().len()),
        (Some(1), 1)
    );
}
