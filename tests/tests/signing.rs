//! OpenSSF model signatures made by the real `model_signing` CLI, verified by modelpipe: every
//! way a signature can be wrong is refused with the reason, and the right ones name their signer.

use base64::Engine as _;
use modelpipe_core::digest::Digest;
use modelpipe_signing::{Method, SignatureError, SignerPolicy, verify};
use modelpipe_testkit::onnx_build::LinearSoftmax;
use modelpipe_tests::signing::Signers;

/// A model file (`seed` makes its weights) in `dir`, and its SHA-256.
fn model(dir: &std::path::Path, seed: u32) -> (std::path::PathBuf, String) {
    let path = dir.join(format!("model-{seed}.onnx"));
    std::fs::write(&path, LinearSoftmax::iris(seed).to_bytes()).unwrap();
    let sha256 = Digest::of_file(&path).unwrap().sha256;
    (path, sha256)
}

fn keys(signers: &Signers, names: &[&str]) -> SignerPolicy {
    SignerPolicy {
        required: true,
        keys: names
            .iter()
            .map(|n| signers.pem(&format!("{n}.pub")))
            .collect(),
        ..Default::default()
    }
}

fn roots(signers: &Signers, identities: &[&str]) -> SignerPolicy {
    SignerPolicy {
        required: true,
        ca_roots: vec![signers.pem("ca.pem")],
        identities: identities.iter().map(|s| s.to_string()).collect(),
        ..Default::default()
    }
}

/// The bundle with its DSSE payload's JSON changed by `edit`, re-encoded.
fn edit_payload(bundle: &[u8], edit: impl FnOnce(&mut serde_json::Value)) -> Vec<u8> {
    let b64 = base64::engine::general_purpose::STANDARD;
    let mut json: serde_json::Value = serde_json::from_slice(bundle).unwrap();
    let payload = json["dsseEnvelope"]["payload"].as_str().unwrap();
    let mut statement: serde_json::Value =
        serde_json::from_slice(&b64.decode(payload).unwrap()).unwrap();
    edit(&mut statement);
    json["dsseEnvelope"]["payload"] = b64.encode(statement.to_string()).into();
    serde_json::to_vec(&json).unwrap()
}

#[test]
fn key_signatures_verify_with_p256_and_p384_and_name_the_key() {
    let signers = Signers::new();
    let dir = tempfile::tempdir().unwrap();
    let (path, sha256) = model(dir.path(), 1);
    for key in ["p256", "p384"] {
        let bundle = signers.sign_with_key(key, &path);
        let trust = keys(&signers, &["other", key]).trust().unwrap();
        let signer = verify(&bundle, &sha256, &trust).unwrap();
        assert_eq!(signer.method, Method::Key);
        // The fingerprint is what `sha256sum KEY.pub` prints, as model_signing hints it.
        let pem = signers.pem(&format!("{key}.pub"));
        let expected = format!("sha256:{}", Digest::of_bytes(pem.as_bytes()).sha256);
        assert_eq!(signer.trusted, expected, "{key}");
        assert_eq!(signer.identity, expected);
        assert_eq!(signer.bundle_sha256, Digest::of_bytes(&bundle).sha256);
        modelpipe_signing::verify_again(&bundle, &sha256, &signer).unwrap();
    }
}

#[test]
fn every_wrong_key_signature_is_refused_with_its_reason() {
    let signers = Signers::new();
    let dir = tempfile::tempdir().unwrap();
    let (path, sha256) = model(dir.path(), 1);
    let (_, other_sha256) = model(dir.path(), 2);
    let bundle = signers.sign_with_key("p256", &path);
    let trust = keys(&signers, &["p256"]).trust().unwrap();
    let refused = |bundle: &[u8], sha256: &str, trust| verify(bundle, sha256, trust).unwrap_err();

    // Signed by a key the policy does not list.
    let wrong = keys(&signers, &["other"]).trust().unwrap();
    assert!(matches!(
        refused(&bundle, &sha256, &wrong),
        SignatureError::UnlistedKey(_)
    ));
    // The model's bytes changed after signing (or: a valid signature of another model).
    let error = refused(&bundle, &other_sha256, &trust);
    assert!(
        matches!(error, SignatureError::OtherBytes { .. }),
        "{error}"
    );
    assert!(error.to_string().contains(&other_sha256), "{error}");
    // The signed statement edited to name the other model's bytes.
    let edited = edit_payload(&bundle, |s| {
        s["predicate"]["resources"][0]["digest"] = other_sha256.clone().into();
    });
    let error = refused(&edited, &other_sha256, &trust);
    assert!(matches!(error, SignatureError::Invalid(_)), "{error}");
    // The signature itself edited.
    let mut json: serde_json::Value = serde_json::from_slice(&bundle).unwrap();
    let sig = json["dsseEnvelope"]["signatures"][0]["sig"]
        .as_str()
        .unwrap()
        .to_string();
    let flipped = sig.replacen(&sig[10..11], if &sig[10..11] == "A" { "B" } else { "A" }, 1);
    json["dsseEnvelope"]["signatures"][0]["sig"] = flipped.into();
    let error = refused(&serde_json::to_vec(&json).unwrap(), &sha256, &trust);
    assert!(matches!(error, SignatureError::Invalid(_)), "{error}");
    // Not a bundle at all; a keyless bundle; no key to check against.
    assert!(matches!(
        refused(b"{}", &sha256, &trust),
        SignatureError::Malformed(_)
    ));
    json = serde_json::from_slice(&bundle).unwrap();
    json["verificationMaterial"]["tlogEntries"] = serde_json::json!([{"logIndex": "1"}]);
    let keyless = serde_json::to_vec(&json).unwrap();
    assert!(matches!(
        refused(&keyless, &sha256, &trust),
        SignatureError::Keyless
    ));
    let nobody = SignerPolicy::default().trust().unwrap();
    assert!(matches!(
        refused(&bundle, &sha256, &nobody),
        SignatureError::NoSigner(_)
    ));
}

#[test]
fn certificate_signatures_chain_to_the_configured_root_and_name_the_identity() {
    let signers = Signers::new();
    let dir = tempfile::tempdir().unwrap();
    let (path, sha256) = model(dir.path(), 1);
    let bundle = signers.sign_with_certificate("", &path);
    let signer = verify(&bundle, &sha256, &roots(&signers, &[]).trust().unwrap()).unwrap();
    assert_eq!(signer.method, Method::Certificate);
    assert_eq!(signer.identity, "ml-team@example.com");
    modelpipe_signing::verify_again(&bundle, &sha256, &signer).unwrap();
    let allowed = roots(&signers, &["ml-team@example.com"]).trust().unwrap();
    verify(&bundle, &sha256, &allowed).unwrap();

    let someone_else = roots(&signers, &["release@example.com"]).trust().unwrap();
    let error = verify(&bundle, &sha256, &someone_else).unwrap_err();
    assert!(matches!(error, SignatureError::Identity { .. }), "{error}");
    // A certificate from a CA the policy does not list.
    let rogue = signers.sign_with_certificate("rogue_", &path);
    let error = verify(&rogue, &sha256, &roots(&signers, &[]).trust().unwrap()).unwrap_err();
    assert!(matches!(error, SignatureError::Chain(_)), "{error}");
}

#[test]
fn a_policy_admits_only_its_signers_and_requires_a_signature_when_it_says_so() {
    let signers = Signers::new();
    let dir = tempfile::tempdir().unwrap();
    let (path, sha256) = model(dir.path(), 1);
    let policy = keys(&signers, &["p256"]);
    let signer = verify(
        &signers.sign_with_key("p256", &path),
        &sha256,
        &policy.trust().unwrap(),
    )
    .unwrap();
    policy.admits(Some(&signer)).unwrap();
    let unsigned = policy.admits(None).unwrap_err();
    assert!(unsigned.contains("requires a signature"), "{unsigned}");
    let later = keys(&signers, &["other"]);
    assert!(
        later
            .admits(Some(&signer))
            .unwrap_err()
            .contains("does not list")
    );
    let optional = SignerPolicy::default();
    optional.admits(None).unwrap();
    // A policy that does not parse says which entry.
    let bad = SignerPolicy::from_json(
        r#"{"keys": ["-----BEGIN PUBLIC KEY-----\nAAAA\n-----END PUBLIC KEY-----"]}"#,
    );
    assert!(bad.unwrap_err().contains("signing key 1"));
}
