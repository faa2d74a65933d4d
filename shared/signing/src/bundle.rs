//! The OpenSSF model signing format (v1.0), as `model_signing sign` writes it: a Sigstore bundle
//! (v0.3 JSON) holding a DSSE envelope over an in-toto Statement v1 whose predicate lists each
//! signed file's SHA-256. A single-file model is one resource named `"."`; the statement's
//! subject digest is the SHA-256 of the resources' digests, concatenated.

use base64::Engine as _;
use serde::Deserialize;
use sha2::{Digest as _, Sha256};

use crate::SignatureError;

const DSSE_PAYLOAD_TYPE: &str = "application/vnd.in-toto+json";
const STATEMENT_TYPE: &str = "https://in-toto.io/Statement/v1";
const PREDICATE_TYPE: &str = "https://model_signing/signature/v1.0";

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct Bundle {
    media_type: String,
    pub verification_material: VerificationMaterial,
    dsse_envelope: Option<Envelope>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct VerificationMaterial {
    /// Key mode: the SHA-256 of the public key's PEM.
    pub public_key: Option<PublicKeyHint>,
    /// Certificate mode: the signing certificate first, then the chain.
    pub x509_certificate_chain: Option<CertificateChain>,
    /// Keyless Sigstore: a Fulcio certificate.
    pub certificate: Option<RawBytes>,
    #[serde(default)]
    pub tlog_entries: Vec<serde_json::Value>,
}

#[derive(Debug, Deserialize)]
pub(crate) struct PublicKeyHint {
    #[serde(default)]
    pub hint: String,
}

#[derive(Debug, Deserialize)]
pub(crate) struct CertificateChain {
    pub certificates: Vec<RawBytes>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct RawBytes {
    pub raw_bytes: String,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct Envelope {
    payload: String,
    payload_type: String,
    signatures: Vec<EnvelopeSignature>,
}

#[derive(Debug, Deserialize)]
struct EnvelopeSignature {
    sig: String,
}

#[derive(Debug, Deserialize)]
struct Statement {
    #[serde(rename = "_type")]
    kind: String,
    subject: Vec<Subject>,
    #[serde(rename = "predicateType")]
    predicate_type: String,
    predicate: Predicate,
}

#[derive(Debug, Deserialize)]
struct Subject {
    digest: std::collections::BTreeMap<String, String>,
}

#[derive(Debug, Deserialize)]
struct Predicate {
    resources: Vec<Resource>,
}

#[derive(Debug, Deserialize)]
struct Resource {
    name: String,
    algorithm: String,
    digest: String,
}

/// What a signature covers: the bytes signed (DSSE's pre-authentication encoding of the
/// payload) and the signature over them.
pub(crate) struct Signed {
    pub pae: Vec<u8>,
    pub signature: Vec<u8>,
    statement: Vec<u8>,
}

impl Bundle {
    pub fn parse(bytes: &[u8]) -> Result<Self, SignatureError> {
        let bundle: Self = serde_json::from_slice(bytes)
            .map_err(|e| SignatureError::Malformed(format!("not a Sigstore bundle: {e}")))?;
        if !bundle
            .media_type
            .starts_with("application/vnd.dev.sigstore.bundle")
            || !bundle.media_type.contains("0.3")
        {
            return Err(SignatureError::Malformed(format!(
                "bundle media type {:?}: expected a Sigstore bundle v0.3",
                bundle.media_type
            )));
        }
        Ok(bundle)
    }

    /// The envelope's signed bytes and its one signature.
    pub fn signed(&self) -> Result<Signed, SignatureError> {
        let malformed = |why: String| SignatureError::Malformed(why);
        let envelope = self
            .dsse_envelope
            .as_ref()
            .ok_or_else(|| malformed("the bundle holds no DSSE envelope".into()))?;
        if envelope.payload_type != DSSE_PAYLOAD_TYPE {
            return Err(malformed(format!(
                "DSSE payload type {:?}, expected {DSSE_PAYLOAD_TYPE}",
                envelope.payload_type
            )));
        }
        let [signature] = envelope.signatures.as_slice() else {
            return Err(malformed(format!(
                "the envelope has {} signatures, expected one",
                envelope.signatures.len()
            )));
        };
        let statement = base64_decode(&envelope.payload, "the payload")?;
        Ok(Signed {
            pae: pae(&envelope.payload_type, &statement),
            signature: base64_decode(&signature.sig, "the signature")?,
            statement,
        })
    }
}

impl Signed {
    /// The SHA-256 the statement signs for a single-file model, once the statement is checked
    /// to be a model signature over exactly one file and consistent with its subject.
    pub fn model_sha256(&self) -> Result<String, SignatureError> {
        let malformed = |why: String| SignatureError::Malformed(why);
        let statement: Statement = serde_json::from_slice(&self.statement)
            .map_err(|e| malformed(format!("the signed statement is not in-toto: {e}")))?;
        if statement.kind != STATEMENT_TYPE || statement.predicate_type != PREDICATE_TYPE {
            return Err(malformed(format!(
                "the statement is {:?} / {:?}, not an OpenSSF model signature ({PREDICATE_TYPE})",
                statement.kind, statement.predicate_type
            )));
        }
        let [resource] = statement.predicate.resources.as_slice() else {
            return Err(SignatureError::NotOneFile(
                statement.predicate.resources.len(),
            ));
        };
        if resource.algorithm != "sha256" {
            return Err(malformed(format!(
                "resource {:?} is hashed with {}, expected sha256",
                resource.name, resource.algorithm
            )));
        }
        let digest = hex::decode(&resource.digest)
            .map_err(|e| malformed(format!("resource digest {:?}: {e}", resource.digest)))?;
        let root = hex::encode(Sha256::digest(&digest));
        let [subject] = statement.subject.as_slice() else {
            return Err(malformed("the statement has no single subject".into()));
        };
        if subject.digest.get("sha256") != Some(&root) {
            return Err(malformed(
                "the statement's subject digest does not match its resources".into(),
            ));
        }
        Ok(resource.digest.to_ascii_lowercase())
    }
}

/// DSSE's pre-authentication encoding: what the signature is over.
fn pae(payload_type: &str, payload: &[u8]) -> Vec<u8> {
    let mut pae = format!(
        "DSSEv1 {} {payload_type} {} ",
        payload_type.len(),
        payload.len()
    )
    .into_bytes();
    pae.extend_from_slice(payload);
    pae
}

pub(crate) fn base64_decode(text: &str, what: &str) -> Result<Vec<u8>, SignatureError> {
    base64::engine::general_purpose::STANDARD
        .decode(text)
        .map_err(|e| SignatureError::Malformed(format!("{what} is not base64: {e}")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pae_is_dsse_v1() {
        assert_eq!(
            pae("application/example", b"hello"),
            b"DSSEv1 19 application/example 5 hello"
        );
    }
}
