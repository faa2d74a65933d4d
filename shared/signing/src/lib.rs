//! OpenSSF model signatures (the `model-signing` package's bundles), verified offline against a
//! model's signer policy, with the SHA-256 the validator already computed while streaming the
//! upload: the model's bytes are never read again.
//!
//! - **Key mode**: ECDSA P-256 (SHA-256) or P-384 (SHA-384) over DSSE's pre-authentication
//!   encoding, with a public key the policy lists.
//! - **Certificate mode**: the signing certificate must chain to a CA root the policy lists
//!   (rustls' path validation, at the certificate's notBefore as `model_signing verify` does,
//!   code-signing usage when the certificate states one), its identity must be one the policy
//!   allows, and its key must verify the signature.
//! - **Keyless Sigstore** (a Fulcio certificate and a Rekor entry) is refused with the reason: no
//!   maintained Rust crate verifies such a bundle offline without pulling HTTP clients into the
//!   validator (see `docs/signing.md`).

mod bundle;
mod policy;

use serde::{Deserialize, Serialize};
use sha2::{Digest as _, Sha256};
use x509_cert::der::Decode;

use self::bundle::Bundle;
use self::policy::AnyKey;
pub use self::policy::{SignerPolicy, Trust};

/// The file a model's signature is uploaded as, beside it: `<model key>.sig`.
pub const SIGNATURE_SUFFIX: &str = ".sig";

/// How a version was signed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Method {
    Key,
    Certificate,
}

/// Who signed a version, as its manifest records it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Signer {
    pub method: Method,
    /// Key mode: the key's fingerprint; certificate mode: the signing certificate's first email,
    /// URI or DNS name, else its subject.
    pub identity: String,
    /// What the policy must list: `sha256:` of the key's PEM (`sha256sum key.pub`), or of the CA
    /// root's DER.
    pub trusted: String,
    /// That key's or root's PEM, so that `modelctl fsck` can verify the stored bundle again.
    pub trusted_pem: String,
    /// The SHA-256 of the bundle, stored beside the model.
    pub bundle_sha256: String,
}

#[derive(Debug, Clone, thiserror::Error)]
pub enum SignatureError {
    #[error("the signature file is malformed: {0}")]
    Malformed(String),
    #[error(
        "the signature covers {0} files; a single-file model's signature covers one (sign the file, not its directory)"
    )]
    NotOneFile(usize),
    #[error(
        "the signature is for other bytes (SHA-256 {signed}) than the upload's ({model}): the model changed after signing, or the signature is another model's"
    )]
    OtherBytes { signed: String, model: String },
    #[error("the signature does not verify: {0}")]
    Invalid(String),
    #[error("signed by key {0}, which the model's signer policy does not list")]
    UnlistedKey(String),
    #[error("the signing certificate does not chain to a CA root the policy lists: {0}")]
    Chain(String),
    #[error(
        "signed by {identity}, which is not among the identities the policy allows ({allowed})"
    )]
    Identity { identity: String, allowed: String },
    #[error(
        "keyless Sigstore signatures (a Fulcio certificate and a transparency-log entry) are not verified here: sign with a key (`model_signing sign key`) or a certificate (`model_signing sign certificate`)"
    )]
    Keyless,
    #[error("the model's signer policy lists no {0} to verify this signature against")]
    NoSigner(&'static str),
}

/// Verifies `bundle` as a signature of the model whose SHA-256 is `model_sha256`, by a signer
/// `trust` lists. Never touches the network.
pub fn verify(bundle: &[u8], model_sha256: &str, trust: &Trust) -> Result<Signer, SignatureError> {
    let parsed = Bundle::parse(bundle)?;
    let material = &parsed.verification_material;
    if material.certificate.is_some() || !material.tlog_entries.is_empty() {
        return Err(SignatureError::Keyless);
    }
    let signed = parsed.signed()?;
    let mut signer = match (&material.public_key, &material.x509_certificate_chain) {
        (Some(hint), None) => verify_key(&signed, &hint.hint, trust)?,
        (None, Some(chain)) => verify_certificate(&signed, &chain.certificates, trust)?,
        _ => {
            return Err(SignatureError::Malformed(
                "the bundle names neither one public key nor one certificate chain".into(),
            ));
        }
    };
    let signed_sha256 = signed.model_sha256()?;
    if signed_sha256 != model_sha256.to_ascii_lowercase() {
        return Err(SignatureError::OtherBytes {
            signed: signed_sha256,
            model: model_sha256.to_string(),
        });
    }
    signer.bundle_sha256 = hex::encode(Sha256::digest(bundle));
    Ok(signer)
}

/// Verifies a stored bundle again against the key or root its [`Signer`] recorded (`fsck`).
pub fn verify_again(bundle: &[u8], model_sha256: &str, signer: &Signer) -> Result<(), String> {
    let policy = match signer.method {
        Method::Key => SignerPolicy {
            keys: vec![signer.trusted_pem.clone()],
            ..Default::default()
        },
        Method::Certificate => SignerPolicy {
            ca_roots: vec![signer.trusted_pem.clone()],
            identities: vec![signer.identity.clone()],
            ..Default::default()
        },
    };
    let again = verify(bundle, model_sha256, &policy.trust()?).map_err(|e| e.to_string())?;
    match again == *signer {
        true => Ok(()),
        false => Err("the bundle verifies, but not as the manifest records it".into()),
    }
}

fn verify_key(
    signed: &bundle::Signed,
    hint: &str,
    trust: &Trust,
) -> Result<Signer, SignatureError> {
    if trust.keys.is_empty() {
        return Err(SignatureError::NoSigner("public key"));
    }
    let hinted = format!("sha256:{}", hint.to_ascii_lowercase());
    let verifies =
        |key: &AnyKey| match key {
            AnyKey::P256(key) => p256::ecdsa::DerSignature::from_bytes(&signed.signature)
                .is_ok_and(|sig| {
                    p256::ecdsa::signature::Verifier::verify(key, &signed.pae, &sig).is_ok()
                }),
            AnyKey::P384(key) => p384::ecdsa::DerSignature::from_bytes(&signed.signature)
                .is_ok_and(|sig| {
                    p384::ecdsa::signature::Verifier::verify(key, &signed.pae, &sig).is_ok()
                }),
        };
    if let Some(key) = trust.keys.iter().find(|k| verifies(&k.key)) {
        return Ok(Signer {
            method: Method::Key,
            identity: key.fingerprint.clone(),
            trusted: key.fingerprint.clone(),
            trusted_pem: key.pem.clone(),
            bundle_sha256: String::new(),
        });
    }
    match trust.keys.iter().any(|k| k.fingerprint == hinted) {
        true => Err(SignatureError::Invalid(format!(
            "key {hinted} does not verify it: the signed statement or the signature was changed"
        ))),
        false if hint.is_empty() => Err(SignatureError::Invalid(
            "no key the policy lists verifies it".into(),
        )),
        false => Err(SignatureError::UnlistedKey(hinted)),
    }
}

fn verify_certificate(
    signed: &bundle::Signed,
    chain: &[bundle::RawBytes],
    trust: &Trust,
) -> Result<Signer, SignatureError> {
    use rustls_pki_types::{CertificateDer, UnixTime};
    if trust.roots.is_empty() {
        return Err(SignatureError::NoSigner("CA root"));
    }
    let certificates = chain
        .iter()
        .map(|c| bundle::base64_decode(&c.raw_bytes, "a certificate"))
        .collect::<Result<Vec<_>, _>>()?;
    let Some((leaf, rest)) = certificates.split_first() else {
        return Err(SignatureError::Malformed(
            "the certificate chain is empty".into(),
        ));
    };
    let parsed = x509_cert::Certificate::from_der(leaf)
        .map_err(|e| SignatureError::Malformed(format!("the signing certificate: {e}")))?;
    let leaf_der = CertificateDer::from(leaf.as_slice());
    let end_entity = webpki::EndEntityCert::try_from(&leaf_der)
        .map_err(|e| SignatureError::Malformed(format!("the signing certificate: {e:?}")))?;
    let anchors = trust
        .roots
        .iter()
        .map(|r| {
            webpki::anchor_from_trusted_cert(&CertificateDer::from(r.der.as_slice()))
                .map(|a| a.to_owned())
        })
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| SignatureError::Chain(format!("{e:?}")))?;
    let intermediates: Vec<CertificateDer<'_>> = rest
        .iter()
        .map(|c| CertificateDer::from(c.as_slice()))
        .collect();
    // As `model_signing verify certificate`: the chain as of the signing certificate's start.
    let signed_at = UnixTime::since_unix_epoch(
        parsed
            .tbs_certificate
            .validity
            .not_before
            .to_unix_duration(),
    );
    const CODE_SIGNING: &[u8] = &[0x2b, 0x06, 0x01, 0x05, 0x05, 0x07, 0x03, 0x03];
    let path = end_entity
        .verify_for_usage(
            webpki::ALL_VERIFICATION_ALGS,
            &anchors,
            &intermediates,
            signed_at,
            webpki::KeyUsage::required_if_present(CODE_SIGNING),
            None,
            None,
        )
        .map_err(|e| SignatureError::Chain(format!("{e:?}")))?;
    let anchor = path.anchor();
    let root = trust
        .roots
        .iter()
        .zip(&anchors)
        .find(|(_, a)| {
            a.subject == anchor.subject
                && a.subject_public_key_info == anchor.subject_public_key_info
        })
        .map(|(r, _)| r)
        .expect("the path ends at one of the anchors");
    let algorithms = [
        webpki::aws_lc_rs::ECDSA_P256_SHA256,
        webpki::aws_lc_rs::ECDSA_P384_SHA384,
    ];
    if !algorithms.iter().any(|alg| {
        end_entity
            .verify_signature(*alg, &signed.pae, &signed.signature)
            .is_ok()
    }) {
        return Err(SignatureError::Invalid(
            "the signing certificate's key does not verify it: the signed statement or the signature was changed".into(),
        ));
    }
    let identity = certificate_identity(&parsed);
    if !trust.identities.is_empty() && !trust.identities.contains(&identity) {
        return Err(SignatureError::Identity {
            identity,
            allowed: trust.identities.join(", "),
        });
    }
    Ok(Signer {
        method: Method::Certificate,
        identity,
        trusted: root.fingerprint.clone(),
        trusted_pem: root.pem.clone(),
        bundle_sha256: String::new(),
    })
}

/// The certificate's first email, URI or DNS name, else its subject.
fn certificate_identity(certificate: &x509_cert::Certificate) -> String {
    use x509_cert::ext::pkix::SubjectAltName;
    use x509_cert::ext::pkix::name::GeneralName;
    if let Ok(Some((_, SubjectAltName(names)))) =
        certificate.tbs_certificate.get::<SubjectAltName>()
    {
        for name in names {
            match name {
                GeneralName::Rfc822Name(s) => return s.to_string(),
                GeneralName::UniformResourceIdentifier(s) => return s.to_string(),
                GeneralName::DnsName(s) => return s.to_string(),
                _ => {}
            }
        }
    }
    certificate.tbs_certificate.subject.to_string()
}
