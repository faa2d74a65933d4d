//! The validator's whole path against a real S3 protocol (moto_server) through aws-sdk-s3:
//! upload → event → stream + hash → checks → commit → publish → tags. Each kind of bad input has
//! its own test, and each checks afterwards that the live alias and its file are unchanged.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};

use aws_lambda_events::s3::S3Event;
use aws_sdk_s3::primitives::ByteStream;
use base64::Engine as _;
use modelpipe_aws::{S3Uploads, s3_client};
use modelpipe_config::Config;
use modelpipe_core::digest::sha256_bytes;
use modelpipe_core::{AliasName, ModelName};
use modelpipe_registry::{FileCacheConfig, Registry};
use modelpipe_testkit::onnx_build::LinearSoftmax;
use modelpipe_tests::{Server, aws_config, moto, s3_put_event, unique_bucket};
use modelpipe_validator::validator::{LocalPublisher, Outcome, Validator};

struct Fixture {
    _moto: Option<Server>,
    endpoint: String,
    s3: aws_sdk_s3::Client,
    bucket: String,
    dir: tempfile::TempDir,
    /// Registry on S3 (`registry/` in the upload bucket) instead of a directory.
    on_s3: bool,
    registry: Registry,
    validator: Validator<S3Uploads, LocalPublisher>,
    sequencer: AtomicU64,
}

fn iris() -> ModelName {
    "iris".parse().unwrap()
}

impl Fixture {
    async fn new() -> Self {
        Self::with_limit(2 * 1024 * 1024 * 1024).await
    }

    /// The same, with the registry under `s3://<the upload bucket>/registry/`.
    async fn on_s3() -> Self {
        Self::build(2 * 1024 * 1024 * 1024, true).await
    }

    async fn with_limit(max_model_bytes: u64) -> Self {
        Self::build(max_model_bytes, false).await
    }

    async fn build(max_model_bytes: u64, on_s3: bool) -> Self {
        let (endpoint, guard) = moto().await;
        let s3 = s3_client(&aws_config(&endpoint).await);
        let bucket = unique_bucket("uploads");
        s3.create_bucket().bucket(&bucket).send().await.unwrap();
        let dir = tempfile::tempdir().unwrap();
        let registry = open_registry(&endpoint, &bucket, dir.path(), on_s3).await;
        let config = Config {
            max_model_bytes,
            ..Config::from_lookup(|_| None).unwrap()
        };
        let validator = Validator::new(
            registry.clone(),
            S3Uploads::new(s3.clone()),
            LocalPublisher(registry.clone()),
            &config,
        );
        Self {
            _moto: guard,
            endpoint,
            s3,
            bucket,
            dir,
            on_s3,
            registry,
            validator,
            sequencer: AtomicU64::new(0x1000),
        }
    }

    /// Puts the object and returns the event S3 would send for it.
    async fn put(&self, key: &str, bytes: &[u8], metadata: &[(&str, &str)]) -> S3Event {
        let mut put = self
            .s3
            .put_object()
            .bucket(&self.bucket)
            .key(key)
            .body(ByteStream::from(bytes.to_vec()));
        for (k, v) in metadata {
            put = put.metadata(*k, *v);
        }
        let etag = put
            .send()
            .await
            .unwrap()
            .e_tag()
            .unwrap_or_default()
            .to_string();
        let sequencer = format!("{:016X}", self.sequencer.fetch_add(1, Ordering::SeqCst));
        serde_json::from_value(s3_put_event(
            &self.bucket,
            key,
            bytes.len() as u64,
            &etag,
            &sequencer,
        ))
        .unwrap()
    }

    async fn handle(&self, event: &S3Event) -> Outcome {
        let mut outcomes = self.validator.handle_event(event).await.unwrap();
        assert_eq!(outcomes.len(), 1);
        outcomes.remove(0)
    }

    async fn upload(&self, key: &str, bytes: &[u8], metadata: &[(&str, &str)]) -> Outcome {
        let event = self.put(key, bytes, metadata).await;
        self.handle(&event).await
    }

    /// Another handle on the same registry, as a second Lambda instance would open it.
    async fn reopen(&self) -> Registry {
        open_registry(&self.endpoint, &self.bucket, self.dir.path(), self.on_s3).await
    }

    /// The live version and the bytes of its file.
    fn live(&self) -> Option<(u64, Vec<u8>)> {
        let alias = self.registry.alias(&iris(), &AliasName::live()).unwrap()?;
        let (_, file) = self
            .registry
            .verified_local_file(&iris(), alias.version)
            .unwrap();
        Some((alias.version, std::fs::read(file).unwrap()))
    }

    async fn tags(&self, key: &str) -> HashMap<String, String> {
        let tagging = self
            .s3
            .get_object_tagging()
            .bucket(&self.bucket)
            .key(key)
            .send()
            .await
            .unwrap();
        tagging
            .tag_set()
            .iter()
            .map(|t| (t.key().to_string(), t.value().to_string()))
            .collect()
    }

    /// Publishes v1 and returns what live is then.
    async fn with_v1_live(&self) -> (u64, Vec<u8>) {
        let outcome = self
            .upload(
                "models/iris/model.onnx",
                &LinearSoftmax::iris(1).to_bytes(),
                &[],
            )
            .await;
        assert!(
            matches!(outcome, Outcome::Published { version: 1, .. }),
            "{outcome:?}"
        );
        self.live().unwrap()
    }

    async fn assert_rejected(
        &self,
        key: &str,
        bytes: &[u8],
        metadata: &[(&str, &str)],
        reason_contains: &str,
    ) {
        let before = self.live();
        let versions = self.registry.versions(&iris()).unwrap();
        let outcome = self.upload(key, bytes, metadata).await;
        let Outcome::Rejected { reason, .. } = &outcome else {
            panic!("expected a rejection, got {outcome:?}")
        };
        assert!(
            reason.contains(reason_contains),
            "reason {reason:?} should mention {reason_contains:?}"
        );
        let tags = self.tags(key).await;
        assert_eq!(
            tags.get("modelpipe-status").map(String::as_str),
            Some("rejected")
        );
        assert!(!tags.get("modelpipe-reason").unwrap().is_empty());
        assert_eq!(
            self.live(),
            before,
            "the live alias and its file must not change"
        );
        assert_eq!(
            self.registry.versions(&iris()).unwrap(),
            versions,
            "no version may be added"
        );
        let rejections = self.registry.rejections(&iris()).unwrap();
        assert_eq!(rejections.last().unwrap().reason, *reason);
        let staging = self.registry.stage(&iris()).unwrap().model_path();
        let staging = staging.parent().unwrap().parent().unwrap();
        assert_eq!(
            std::fs::read_dir(staging).map(|d| d.count()).unwrap_or(0),
            0,
            "staging must be cleaned"
        );
    }
}

/// The registry of a fixture: a directory in `dir`, or `s3://bucket/registry/` (its local copies
/// in `dir`).
async fn open_registry(
    endpoint: &str,
    bucket: &str,
    dir: &std::path::Path,
    on_s3: bool,
) -> Registry {
    if !on_s3 {
        return Registry::open(dir.join("registry")).unwrap();
    }
    let files = FileCacheConfig {
        dir: dir.join("files"),
        bytes: None,
    };
    Registry::open_s3(bucket, "registry", &files, Some(aws_config(endpoint).await)).unwrap()
}

#[tokio::test]
async fn an_upload_becomes_live_and_is_tagged_published() {
    let f = Fixture::new().await;
    let bytes = LinearSoftmax::iris(1).to_bytes();
    let outcome = f
        .upload(
            "models/iris/model.onnx",
            &bytes,
            &[("sha256", &sha256_bytes(&bytes))],
        )
        .await;
    assert_eq!(
        outcome,
        Outcome::Published {
            model: iris(),
            version: 1,
            alias: AliasName::live()
        }
    );
    assert_eq!(f.live(), Some((1, bytes.clone())));
    let manifest = f.registry.manifest(&iris(), 1).unwrap();
    assert_eq!(manifest.sha256, sha256_bytes(&bytes));
    assert_eq!(manifest.source.key, "models/iris/model.onnx");
    assert_eq!(manifest.source.bucket, f.bucket);
    assert!(manifest.source.etag.is_some() && manifest.source.sequencer.is_some());
    assert_eq!(manifest.signature.inputs[0].shape, [-1, 4]);
    let tags = f.tags("models/iris/model.onnx").await;
    assert_eq!(
        tags.get("modelpipe-status").map(String::as_str),
        Some("published")
    );
    assert_eq!(tags.get("modelpipe-version").map(String::as_str), Some("1"));
    let history = f.registry.history(&iris()).unwrap();
    assert_eq!(
        history.iter().map(|e| (e.from, e.to)).collect::<Vec<_>>(),
        [(None, 1)]
    );
}

#[tokio::test]
async fn a_retrained_upload_becomes_the_next_live_version() {
    let f = Fixture::new().await;
    f.with_v1_live().await;
    let v2 = LinearSoftmax::iris(2).to_bytes();
    let outcome = f.upload("models/iris/model.onnx", &v2, &[]).await;
    assert_eq!(
        outcome,
        Outcome::Published {
            model: iris(),
            version: 2,
            alias: AliasName::live()
        }
    );
    assert_eq!(f.live(), Some((2, v2)));
}

#[tokio::test]
async fn an_s3_sha256_checksum_is_verified_against_the_bytes_read() {
    let f = Fixture::new().await;
    let bytes = LinearSoftmax::iris(1).to_bytes();
    let key = "models/iris/model.onnx";
    f.s3.put_object()
        .bucket(&f.bucket)
        .key(key)
        .checksum_algorithm(aws_sdk_s3::types::ChecksumAlgorithm::Sha256)
        .body(ByteStream::from(bytes.clone()))
        .send()
        .await
        .unwrap();
    let event = serde_json::from_value(s3_put_event(
        &f.bucket,
        key,
        bytes.len() as u64,
        "etag",
        "00A1",
    ))
    .unwrap();
    assert!(matches!(
        f.handle(&event).await,
        Outcome::Published { version: 1, .. }
    ));
}

#[tokio::test]
async fn a_url_encoded_key_with_spaces_is_decoded() {
    let f = Fixture::new().await;
    let outcome = f
        .upload(
            "models/iris/my model (v1)+final.onnx",
            &LinearSoftmax::iris(1).to_bytes(),
            &[],
        )
        .await;
    assert!(
        matches!(outcome, Outcome::Published { version: 1, .. }),
        "{outcome:?}"
    );
    assert_eq!(
        f.registry.manifest(&iris(), 1).unwrap().source.key,
        "models/iris/my model (v1)+final.onnx"
    );
}

#[tokio::test]
async fn identical_bytes_create_no_new_version() {
    let f = Fixture::new().await;
    let (_, v1) = f.with_v1_live().await;
    let outcome = f.upload("models/iris/copy.onnx", &v1, &[]).await;
    assert_eq!(
        outcome,
        Outcome::Published {
            model: iris(),
            version: 1,
            alias: AliasName::live()
        }
    );
    assert_eq!(f.registry.versions(&iris()).unwrap(), [1]);
    assert_eq!(f.registry.history(&iris()).unwrap().len(), 1);
}

#[tokio::test]
async fn publish_false_registers_without_moving_the_alias() {
    let f = Fixture::new().await;
    let before = f.with_v1_live().await;
    let outcome = f
        .upload(
            "models/iris/model.onnx",
            &LinearSoftmax::iris(2).to_bytes(),
            &[("publish", "false")],
        )
        .await;
    assert_eq!(
        outcome,
        Outcome::Registered {
            model: iris(),
            version: 2
        }
    );
    assert_eq!(f.live(), Some(before));
    assert_eq!(
        f.tags("models/iris/model.onnx")
            .await
            .get("modelpipe-status")
            .map(String::as_str),
        Some("registered")
    );
}

#[tokio::test]
async fn alias_metadata_publishes_to_that_alias() {
    let f = Fixture::new().await;
    let before = f.with_v1_live().await;
    let outcome = f
        .upload(
            "models/iris/model.onnx",
            &LinearSoftmax::iris(2).to_bytes(),
            &[("alias", "canary")],
        )
        .await;
    assert_eq!(
        outcome,
        Outcome::Published {
            model: iris(),
            version: 2,
            alias: "canary".parse().unwrap()
        }
    );
    assert_eq!(f.live(), Some(before));
    assert_eq!(
        f.registry
            .alias(&iris(), &"canary".parse().unwrap())
            .unwrap()
            .unwrap()
            .version,
        2
    );
}

#[tokio::test]
async fn an_allowed_signature_change_is_published_and_recorded() {
    let f = Fixture::new().await;
    f.with_v1_live().await;
    let mut wider = LinearSoftmax::iris(2);
    wider.weights.push(vec![0.1, 0.2, 0.3]);
    let outcome = f
        .upload(
            "models/iris/model.onnx",
            &wider.to_bytes(),
            &[("allow-signature-change", "true")],
        )
        .await;
    assert!(
        matches!(outcome, Outcome::Published { version: 2, .. }),
        "{outcome:?}"
    );
    let change = f
        .registry
        .manifest(&iris(), 2)
        .unwrap()
        .signature_change
        .unwrap();
    assert!(change.contains("[-1,5] instead of [-1,4]"), "{change}");
}

#[tokio::test]
async fn a_contract_with_golden_examples_is_enforced() {
    let f = Fixture::new().await;
    let model = LinearSoftmax::iris(1);
    let row = [5.1f32, 3.5, 1.4, 0.2];
    let contract = serde_json::json!({
        "inputs": [{"name": "input", "datatype": "FP32", "shape": [-1, 4]}],
        "examples": [{"inputs": [{"name": "input", "datatype": "FP32", "shape": [1, 4], "data": row}],
                      "outputs": [{"name": "probabilities", "data": model.predict(&row)}], "tolerance": 1e-5}]
    });
    f.s3.put_object()
        .bucket(&f.bucket)
        .key("models/iris/contract.json")
        .body(ByteStream::from(contract.to_string().into_bytes()))
        .send()
        .await
        .unwrap();
    let outcome = f
        .upload("models/iris/model.onnx", &model.to_bytes(), &[])
        .await;
    assert!(
        matches!(outcome, Outcome::Published { version: 1, .. }),
        "{outcome:?}"
    );
    // Other weights give other probabilities: the golden example catches it.
    f.assert_rejected(
        "models/iris/model.onnx",
        &LinearSoftmax::iris(2).to_bytes(),
        &[],
        "golden example 1",
    )
    .await;
}

#[tokio::test]
async fn foreign_keys_are_ignored_and_a_bad_contract_is_rejected_with_its_reason() {
    let f = Fixture::new().await;
    let outcome = f
        .upload("models/iris/contract.json", b"not a model", &[])
        .await;
    assert!(
        matches!(&outcome, Outcome::Rejected { reason, .. } if reason.contains("contract.json is not valid")),
        "{outcome:?}"
    );
    for key in [
        "other/iris/model.onnx",
        "models/Iris/model.onnx",
        "models/iris/../x.onnx",
    ] {
        let outcome = f.upload(key, b"not a model", &[]).await;
        assert!(
            matches!(outcome, Outcome::Ignored { .. }),
            "{key}: {outcome:?}"
        );
    }
    assert!(f.registry.models().unwrap().is_empty());
}

#[tokio::test]
async fn an_empty_file_is_rejected() {
    let f = Fixture::new().await;
    f.with_v1_live().await;
    f.assert_rejected("models/iris/model.onnx", b"", &[], "the file is empty")
        .await;
}

#[tokio::test]
async fn random_bytes_are_rejected() {
    let f = Fixture::new().await;
    f.with_v1_live().await;
    let random: Vec<u8> = (0..10_000u32)
        .map(|i| (i.wrapping_mul(2654435761) >> 11) as u8)
        .collect();
    f.assert_rejected(
        "models/iris/model.onnx",
        &random,
        &[],
        "not a loadable ONNX model",
    )
    .await;
}

#[tokio::test]
async fn a_truncated_model_is_rejected() {
    let f = Fixture::new().await;
    f.with_v1_live().await;
    let bytes = LinearSoftmax::iris(2).to_bytes();
    f.assert_rejected(
        "models/iris/model.onnx",
        &bytes[..bytes.len() / 2],
        &[],
        "not a loadable ONNX model",
    )
    .await;
}

#[tokio::test]
async fn wrong_sha256_metadata_is_rejected() {
    let f = Fixture::new().await;
    f.with_v1_live().await;
    let wrong = sha256_bytes(b"something else");
    f.assert_rejected(
        "models/iris/model.onnx",
        &LinearSoftmax::iris(2).to_bytes(),
        &[("sha256", &wrong)],
        "does not match the uploaded bytes",
    )
    .await;
}

#[tokio::test]
async fn an_upload_over_max_model_bytes_is_rejected() {
    let f = Fixture::with_limit(100).await;
    let small = LinearSoftmax::iris(1);
    assert!(small.to_bytes().len() > 100);
    f.assert_rejected(
        "models/iris/model.onnx",
        &small.to_bytes(),
        &[],
        "more than MAX_MODEL_BYTES (100)",
    )
    .await;
}

#[tokio::test]
async fn a_signature_change_against_live_is_rejected() {
    let f = Fixture::new().await;
    f.with_v1_live().await;
    let mut wider = LinearSoftmax::iris(2);
    wider.weights.push(vec![0.1, 0.2, 0.3]);
    f.assert_rejected(
        "models/iris/model.onnx",
        &wider.to_bytes(),
        &[],
        "signature differs from live v1",
    )
    .await;
}

#[tokio::test]
async fn a_duplicate_event_is_a_no_op() {
    let f = Fixture::new().await;
    let event = f
        .put(
            "models/iris/model.onnx",
            &LinearSoftmax::iris(1).to_bytes(),
            &[],
        )
        .await;
    assert!(matches!(
        f.handle(&event).await,
        Outcome::Published { version: 1, .. }
    ));
    // S3 delivers the same event again.
    let history = f.registry.history(&iris()).unwrap().len();
    assert_eq!(
        f.handle(&event).await,
        Outcome::Duplicate {
            model: iris(),
            key: "models/iris/model.onnx".into()
        }
    );
    assert_eq!(f.registry.versions(&iris()).unwrap(), [1]);
    assert_eq!(f.registry.history(&iris()).unwrap().len(), history);
}

#[tokio::test]
async fn an_older_event_after_a_newer_one_never_becomes_live() {
    let f = Fixture::new().await;
    let key = "models/iris/model.onnx";
    let older = f.put(key, &LinearSoftmax::iris(1).to_bytes(), &[]).await;
    let newer = f.put(key, &LinearSoftmax::iris(2).to_bytes(), &[]).await;
    assert!(matches!(
        f.handle(&newer).await,
        Outcome::Published { version: 1, .. }
    ));
    let live = f.live();
    assert_eq!(
        f.handle(&older).await,
        Outcome::Stale {
            model: iris(),
            key: key.into()
        }
    );
    assert_eq!(f.live(), live);
    assert_eq!(f.registry.versions(&iris()).unwrap(), [1]);
}

#[tokio::test]
async fn two_validators_committing_one_model_at_once_get_two_versions() {
    concurrent_commits(Fixture::new().await, 2).await;
}

#[tokio::test]
async fn four_validators_committing_to_one_s3_registry_get_four_versions() {
    concurrent_commits(Fixture::on_s3().await, 4).await;
}

/// `n` validators, each with its own handle on the registry as separate Lambda instances would
/// have, handle `n` different uploads of one model at once: versions 1..=n, each complete, each
/// published once.
async fn concurrent_commits(f: Fixture, n: u64) {
    let mut events = Vec::new();
    for i in 0..n {
        let bytes = LinearSoftmax::iris(i as u32 + 1).to_bytes();
        events.push(f.put(&format!("models/iris/{i}.onnx"), &bytes, &[]).await);
    }
    let config = Config::from_lookup(|_| None).unwrap();
    let mut validators = Vec::new();
    for _ in 0..n {
        let registry = f.reopen().await;
        validators.push(Validator::new(
            registry.clone(),
            S3Uploads::new(f.s3.clone()),
            LocalPublisher(registry),
            &config,
        ));
    }
    let handled = futures::future::join_all(
        validators
            .iter()
            .zip(&events)
            .map(|(validator, event)| validator.handle_event(event)),
    )
    .await;
    let mut versions: Vec<u64> = handled
        .into_iter()
        .map(|outcome| match outcome.unwrap().remove(0) {
            Outcome::Published { version, .. } => version,
            other => panic!("{other:?}"),
        })
        .collect();
    versions.sort_unstable();
    assert_eq!(versions, (1..=n).collect::<Vec<_>>());
    assert_eq!(f.registry.versions(&iris()).unwrap(), versions);
    for v in 1..=n {
        f.registry.verified_manifest(&iris(), v).unwrap();
    }
    let history = f.registry.history(&iris()).unwrap();
    assert_eq!(history.len() as u64, n, "{history:?}");
    let live = f
        .registry
        .alias(&iris(), &AliasName::live())
        .unwrap()
        .unwrap();
    assert_eq!(live.version, history.last().unwrap().to);
}

#[tokio::test]
async fn an_upload_goes_live_in_an_s3_registry_with_its_checksum_verified_by_s3() {
    let f = Fixture::on_s3().await;
    let (version, bytes) = f.with_v1_live().await;
    assert_eq!(version, 1);
    assert_eq!(bytes, LinearSoftmax::iris(1).to_bytes());
    let head =
        f.s3.head_object()
            .bucket(&f.bucket)
            .key("registry/iris/versions/1/model.onnx")
            .checksum_mode(aws_sdk_s3::types::ChecksumMode::Enabled)
            .send()
            .await
            .unwrap();
    let manifest = f.registry.manifest(&iris(), 1).unwrap();
    let stored = base64::engine::general_purpose::STANDARD
        .decode(
            head.checksum_sha256()
                .expect("stored with its SHA-256 checksum"),
        )
        .unwrap();
    assert_eq!(hex_string(&stored), manifest.sha256);
    // Nothing of the upload is left in the local staging directory.
    f.assert_rejected(
        "models/iris/model.onnx",
        &LinearSoftmax::iris(2).to_bytes()[..100],
        &[],
        "not a loadable ONNX model",
    )
    .await;
}

fn hex_string(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

#[tokio::test]
async fn an_altered_object_in_an_s3_registry_is_refused_by_the_publisher_and_inference() {
    let f = Fixture::on_s3().await;
    f.with_v1_live().await;
    let outcome = f
        .upload(
            "models/iris/model.onnx",
            &LinearSoftmax::iris(2).to_bytes(),
            &[],
        )
        .await;
    assert!(
        matches!(outcome, Outcome::Published { version: 2, .. }),
        "{outcome:?}"
    );
    f.s3.put_object()
        .bucket(&f.bucket)
        .key("registry/iris/versions/1/model.onnx")
        .body(ByteStream::from(LinearSoftmax::iris(7).to_bytes()))
        .send()
        .await
        .unwrap();
    let registry = f.registry.clone();
    let refused = tokio::task::spawn_blocking(move || {
        modelpipe_registry::publish::apply(
            &registry,
            &modelpipe_registry::publish::PublisherRequest::Rollback {
                model: iris(),
                alias: AliasName::live(),
                reason: None,
            },
            None,
        )
    })
    .await
    .unwrap()
    .unwrap_err();
    assert!(
        refused
            .to_string()
            .contains("no longer matches its manifest"),
        "{refused}"
    );
    assert_eq!(f.live().unwrap().0, 2);
    // An instance with no local copy yet downloads it, checks it and refuses it too.
    let elsewhere = tempfile::tempdir().unwrap();
    let other = open_registry(&f.endpoint, &f.bucket, elsewhere.path(), true).await;
    let err = other.verified_local_file(&iris(), 1).unwrap_err();
    assert!(err.to_string().contains("sha256"), "{err}");
}

/// A publisher that is down for its first `failures` calls, then applies requests locally.
struct FlakyPublisher {
    inner: LocalPublisher,
    failures: std::sync::atomic::AtomicU32,
}

impl modelpipe_validator::validator::PublishTarget for FlakyPublisher {
    async fn publish(
        &self,
        request: modelpipe_registry::publish::PublisherRequest,
    ) -> Result<modelpipe_registry::publish::PublisherResponse, String> {
        if self
            .failures
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
            .is_ok()
        {
            return Err("publisher unavailable".into());
        }
        self.inner.publish(request).await
    }

    async fn start_rollout(
        &self,
        request: modelpipe_registry::rollout::actions::RolloutRequest,
    ) -> Result<u64, String> {
        self.inner.start_rollout(request).await
    }
}

#[tokio::test]
async fn a_failed_publish_is_an_error_and_the_retried_event_resumes_it() {
    let f = Fixture::new().await;
    let config = Config::from_lookup(|_| None).unwrap();
    let flaky = FlakyPublisher {
        inner: LocalPublisher(f.registry.clone()),
        failures: 1.into(),
    };
    let validator = Validator::new(
        f.registry.clone(),
        S3Uploads::new(f.s3.clone()),
        flaky,
        &config,
    );
    let event = f
        .put(
            "models/iris/model.onnx",
            &LinearSoftmax::iris(1).to_bytes(),
            &[],
        )
        .await;
    let err = validator.handle_event(&event).await.unwrap_err();
    assert!(err.to_string().contains("publisher unavailable"), "{err}");
    assert_eq!(
        f.registry.versions(&iris()).unwrap(),
        [1],
        "the version is committed"
    );
    assert_eq!(f.live(), None, "but not live yet");
    // Lambda retries the same event: the committed version is published, not committed again.
    let outcome = validator.handle_event(&event).await.unwrap().remove(0);
    assert_eq!(
        outcome,
        Outcome::Published {
            model: iris(),
            version: 1,
            alias: AliasName::live()
        }
    );
    assert_eq!(f.registry.versions(&iris()).unwrap(), [1]);
    assert_eq!(f.live().unwrap().0, 1);
    assert_eq!(
        f.handle(&event).await,
        Outcome::Duplicate {
            model: iris(),
            key: "models/iris/model.onnx".into()
        }
    );
}

#[tokio::test]
async fn unreadable_upload_options_are_rejected() {
    let f = Fixture::new().await;
    f.with_v1_live().await;
    let bytes = LinearSoftmax::iris(2).to_bytes();
    f.assert_rejected(
        "models/iris/model.onnx",
        &bytes,
        &[("publish", "maybe")],
        "publish=\"maybe\" must be true or false",
    )
    .await;
    f.assert_rejected(
        "models/iris/model.onnx",
        &bytes,
        &[("alias", "Live!")],
        "alias name",
    )
    .await;
}

#[tokio::test]
async fn a_lease_left_by_a_crashed_writer_is_taken_over_once_expired() {
    let f = Fixture::on_s3().await;
    let expired_ms = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64
        - 1;
    f.s3.put_object()
        .bucket(&f.bucket)
        .key("registry/iris/.lock")
        .body(ByteStream::from(
            serde_json::json!({"owner": "crashed-validator", "expires_at_ms": expired_ms})
                .to_string()
                .into_bytes(),
        ))
        .send()
        .await
        .unwrap();
    // Were it not taken over, the commit would wait for it and then fail ("stayed busy").
    f.with_v1_live().await;
    let lock =
        f.s3.head_object()
            .bucket(&f.bucket)
            .key("registry/iris/.lock")
            .send()
            .await;
    assert!(lock.is_err(), "the taken-over lease is released after use");
}

#[tokio::test]
async fn duplicated_and_reordered_events_replayed_in_bulk_change_nothing() {
    let f = Fixture::new().await;
    let mut events = Vec::new();
    for i in 0..10u32 {
        let bytes = LinearSoftmax::iris(100 + i).to_bytes();
        events.push(
            f.put(&format!("models/iris/batch-{i}.onnx"), &bytes, &[])
                .await,
        );
    }
    for event in &events {
        assert!(matches!(f.handle(event).await, Outcome::Published { .. }));
    }
    let versions = f.registry.versions(&iris()).unwrap();
    let history = f.registry.history(&iris()).unwrap();
    let live = f.live();
    assert_eq!(versions.len(), 10);

    // S3 redelivers: every event three more times, in reverse and interleaved, all at once.
    let mut replay: Vec<&S3Event> = Vec::new();
    for round in 0..3 {
        let mut order: Vec<&S3Event> = events.iter().collect();
        if round % 2 == 0 {
            order.reverse();
        }
        order.rotate_left(round * 3);
        replay.extend(order);
    }
    let outcomes =
        futures::future::join_all(replay.iter().map(|e| f.validator.handle_event(e))).await;
    for outcome in outcomes {
        let outcome = outcome.unwrap().remove(0);
        assert!(matches!(outcome, Outcome::Duplicate { .. }), "{outcome:?}");
    }
    assert_eq!(f.registry.versions(&iris()).unwrap(), versions);
    assert_eq!(f.registry.history(&iris()).unwrap(), history);
    assert_eq!(f.live(), live);
}

/// OpenSSF model signatures on real uploads: bundles made by the `model_signing` CLI, uploaded
/// beside the model, verified against the model's signer policy (its `contract.json`).
mod signed {
    use super::*;
    use modelpipe_registry::publish::{self, PublisherRequest};
    use modelpipe_registry::{SIGNATURE_FILE, UploadStatus};
    use modelpipe_signing::{Method, SignerPolicy};
    use modelpipe_tests::signing::Signers;

    const MODEL: &str = "models/iris/model.onnx";
    const SIGNATURE: &str = "models/iris/model.onnx.sig";

    impl Fixture {
        /// Uploads `contract.json` naming `policy` and checks it was read.
        async fn set_policy(&self, policy: &SignerPolicy) {
            let contract = serde_json::json!({ "signing": policy });
            let outcome = self
                .upload(
                    "models/iris/contract.json",
                    contract.to_string().as_bytes(),
                    &[],
                )
                .await;
            assert!(
                matches!(
                    outcome,
                    Outcome::ContractRead {
                        signed_by_policy: true,
                        ..
                    }
                ),
                "{outcome:?}"
            );
        }

        /// Uploads the signature, then the model (the usual order).
        async fn upload_signed(&self, model: &[u8], bundle: &[u8]) -> Outcome {
            let outcome = self.upload(SIGNATURE, bundle, &[]).await;
            assert!(matches!(outcome, Outcome::Ignored { .. }), "{outcome:?}");
            self.upload(MODEL, model, &[]).await
        }
    }

    /// The model `seed` makes, written to a file for `model_signing` to sign.
    fn model_file(dir: &std::path::Path, seed: u32) -> (Vec<u8>, std::path::PathBuf) {
        let bytes = LinearSoftmax::iris(seed).to_bytes();
        let path = dir.join(format!("iris-{seed}.onnx"));
        std::fs::write(&path, &bytes).unwrap();
        (bytes, path)
    }

    fn policy(signers: &Signers) -> SignerPolicy {
        SignerPolicy {
            required: true,
            keys: vec![signers.pem("p256.pub"), signers.pem("p384.pub")],
            ca_roots: vec![signers.pem("ca.pem")],
            identities: vec!["ml-team@example.com".into()],
        }
    }

    #[tokio::test]
    async fn models_signed_with_p256_p384_and_a_certificate_go_live_and_record_their_signer() {
        let (f, signers) = (Fixture::new().await, Signers::new());
        f.set_policy(&policy(&signers)).await;
        let dir = tempfile::tempdir().unwrap();
        for (version, how) in [(1, "p256"), (2, "p384"), (3, "certificate")] {
            let (bytes, path) = model_file(dir.path(), version as u32);
            let bundle = match how {
                "certificate" => signers.sign_with_certificate("", &path),
                key => signers.sign_with_key(key, &path),
            };
            let outcome = f.upload_signed(&bytes, &bundle).await;
            assert!(
                matches!(outcome, Outcome::Published { version: v, .. } if v == version),
                "{how}: {outcome:?}"
            );
            let signer = f
                .registry
                .manifest(&iris(), version)
                .unwrap()
                .signer
                .unwrap();
            let expected = match how {
                "certificate" => (Method::Certificate, "ml-team@example.com".to_string()),
                key => {
                    let pem = signers.pem(&format!("{key}.pub"));
                    (
                        Method::Key,
                        format!("sha256:{}", sha256_bytes(pem.as_bytes())),
                    )
                }
            };
            assert_eq!((signer.method, signer.identity.clone()), expected);
            assert_eq!(signer.bundle_sha256, sha256_bytes(&bundle));
            // The bundle is kept with the version: fsck verifies it again.
            let kept = f
                .dir
                .path()
                .join(format!("registry/iris/versions/{version}/{SIGNATURE_FILE}"));
            assert_eq!(std::fs::read(kept).unwrap(), bundle);
        }
        let fsck = || {
            f.registry
                .fsck(
                    modelpipe_registry::fsck::Leftovers::Report,
                    std::time::Duration::ZERO,
                )
                .unwrap()
        };
        let report = fsck();
        assert_eq!(report.errors(), 0, "{:?}", report.findings);
        // A stored bundle changed afterwards no longer verifies: fsck says which.
        let kept = f
            .dir
            .path()
            .join(format!("registry/iris/versions/2/{SIGNATURE_FILE}"));
        let mut bundle: serde_json::Value =
            serde_json::from_slice(&std::fs::read(&kept).unwrap()).unwrap();
        bundle["verificationMaterial"]["publicKey"]["hint"] = "00".into();
        std::fs::write(&kept, serde_json::to_vec(&bundle).unwrap()).unwrap();
        let report = fsck();
        assert_eq!(report.errors(), 1, "{:?}", report.findings);
        assert!(report.findings.iter().any(|f| {
            f.message
                .contains("versions/2/model.onnx.sig does not verify")
        }));
    }

    #[tokio::test]
    async fn every_bad_signature_is_rejected_with_its_reason_and_live_is_untouched() {
        let (f, signers) = (Fixture::new().await, Signers::new());
        f.set_policy(&policy(&signers)).await;
        let dir = tempfile::tempdir().unwrap();
        let (v1, v1_path) = model_file(dir.path(), 1);
        let v1_bundle = signers.sign_with_key("p256", &v1_path);
        assert!(matches!(
            f.upload_signed(&v1, &v1_bundle).await,
            Outcome::Published { .. }
        ));
        let (v2, v2_path) = model_file(dir.path(), 2);
        let b64 = base64::engine::general_purpose::STANDARD;
        let edited = |bundle: &[u8], field: &str| {
            let mut json: serde_json::Value = serde_json::from_slice(bundle).unwrap();
            let target = match field {
                "payload" => &mut json["dsseEnvelope"]["payload"],
                _ => &mut json["dsseEnvelope"]["signatures"][0]["sig"],
            };
            let mut raw = b64.decode(target.as_str().unwrap()).unwrap();
            let last = raw.len() - 3;
            raw[last] ^= 0x01;
            *target = b64.encode(raw).into();
            serde_json::to_vec(&json).unwrap()
        };
        let v2_bundle = signers.sign_with_key("p256", &v2_path);
        let (_, v3_path) = model_file(dir.path(), 3);
        let cases: [(&str, Vec<u8>, &str); 6] = [
            (
                "wrong key",
                signers.sign_with_key("other", &v2_path),
                "does not list",
            ),
            (
                "another model's signature",
                signers.sign_with_key("p256", &v3_path),
                "is for other bytes",
            ),
            (
                "payload edited",
                edited(&v2_bundle, "payload"),
                "does not verify",
            ),
            (
                "signature edited",
                edited(&v2_bundle, "signature"),
                "does not verify",
            ),
            (
                "a certificate from another CA",
                signers.sign_with_certificate("rogue_", &v2_path),
                "does not chain",
            ),
            ("not a bundle", b"{}".to_vec(), "malformed"),
        ];
        for (case, bundle, reason) in cases {
            f.put(SIGNATURE, &bundle, &[]).await;
            f.assert_rejected(MODEL, &v2, &[], reason).await;
            let rejections = f.registry.rejections(&iris()).unwrap();
            assert!(
                rejections.last().unwrap().reason.contains(SIGNATURE),
                "{case}"
            );
        }
        // The model's bytes changed after signing: its own signature, other bytes.
        f.put(SIGNATURE, &v2_bundle, &[]).await;
        let mut changed = v2.clone();
        let last = changed.len() - 1;
        changed[last] ^= 0x01;
        f.assert_rejected(MODEL, &changed, &[], "is for other bytes")
            .await;
        // The good signature still publishes it.
        assert!(matches!(
            f.upload_signed(&v2, &v2_bundle).await,
            Outcome::Published { version: 2, .. }
        ));
    }

    #[tokio::test]
    async fn a_model_waits_for_its_signature_in_either_order_and_is_rejected_when_none_comes() {
        let (f, signers) = (Fixture::new().await, Signers::new());
        f.set_policy(&policy(&signers)).await;
        let dir = tempfile::tempdir().unwrap();
        let (v1, v1_path) = model_file(dir.path(), 1);
        // The model's event first: it waits, tagged so, and nothing is live.
        let outcome = f.upload(MODEL, &v1, &[]).await;
        assert!(
            matches!(outcome, Outcome::AwaitingSignature { .. }),
            "{outcome:?}"
        );
        assert_eq!(
            f.tags(MODEL).await.get("modelpipe-status").unwrap(),
            "awaiting-signature"
        );
        assert!(f.live().is_none());
        // Its signature's event resumes it.
        let outcome = f
            .upload(SIGNATURE, &signers.sign_with_key("p384", &v1_path), &[])
            .await;
        assert!(
            matches!(outcome, Outcome::Published { version: 1, .. }),
            "{outcome:?}"
        );
        assert_eq!(
            f.tags(MODEL).await.get("modelpipe-status").unwrap(),
            "published"
        );

        // v2 with no signature, ever: rejected once SIGNATURE_WAIT_MS has passed.
        let v2 = LinearSoftmax::iris(2).to_bytes();
        let before = f.live();
        assert!(matches!(
            f.upload(MODEL, &v2, &[]).await,
            Outcome::AwaitingSignature { .. }
        ));
        // Not before its time (SIGNATURE_WAIT_MS, 15 minutes by default).
        assert!(f.validator.expire_uploads().await.unwrap().is_empty());
        let impatient = Validator::new(
            f.registry.clone(),
            S3Uploads::new(f.s3.clone()),
            LocalPublisher(f.registry.clone()),
            &Config {
                signature_wait: std::time::Duration::ZERO,
                ..Config::from_lookup(|_| None).unwrap()
            },
        );
        let expired = impatient.expire_uploads().await.unwrap();
        assert!(
            matches!(&expired[..], [Outcome::Rejected { reason, .. }] if reason.contains("no signature arrived")),
            "{expired:?}"
        );
        assert_eq!(
            f.tags(MODEL).await.get("modelpipe-status").unwrap(),
            "rejected"
        );
        let record = f.registry.upload_record(&iris(), MODEL).unwrap().unwrap();
        assert_eq!(record.status, UploadStatus::Rejected);
        assert_eq!(f.live(), before);
        assert_eq!(f.registry.versions(&iris()).unwrap(), [1]);
    }

    #[tokio::test]
    async fn once_the_policy_requires_signatures_no_move_reaches_an_unsigned_version() {
        let (f, signers) = (Fixture::new().await, Signers::new());
        // v1 unsigned, published while the model has no policy.
        f.with_v1_live().await;
        f.set_policy(&policy(&signers)).await;
        let dir = tempfile::tempdir().unwrap();
        let (v2, v2_path) = model_file(dir.path(), 2);
        let bundle = signers.sign_with_key("p256", &v2_path);
        assert!(matches!(
            f.upload_signed(&v2, &bundle).await,
            Outcome::Published { version: 2, .. }
        ));

        let requests = [
            PublisherRequest::Rollback {
                model: iris(),
                alias: AliasName::live(),
                reason: None,
            },
            PublisherRequest::SetAlias {
                model: iris(),
                alias: AliasName::live(),
                version: 1,
                reason: None,
            },
            PublisherRequest::Publish {
                model: iris(),
                alias: "canary".parse().unwrap(),
                version: 1,
                reason: None,
            },
        ];
        for request in requests {
            let refused = publish::apply(&f.registry, &request, None)
                .unwrap_err()
                .to_string();
            assert!(refused.contains("v1: it is not signed"), "{refused}");
        }
        assert_eq!(f.live().unwrap().0, 2);
        // A rollout of the unsigned version is refused too.
        let start = modelpipe_registry::rollout::actions::RolloutRequest::Start {
            model: iris(),
            alias: AliasName::live(),
            candidate: 1,
            plan: "canary".into(),
            settings: Default::default(),
            reason: None,
        };
        let refused =
            modelpipe_registry::rollout::actions::apply(&f.registry, &start, None).unwrap_err();
        assert!(refused.to_string().contains("not signed"), "{refused}");
    }
}
