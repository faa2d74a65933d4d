//! A model's signer policy: whether a signature is required, and who may sign (public keys, CA
//! roots, certificate identities). Written in `contract.json` as `"signing"` (or bucket-wide in
//! `SIGNING_POLICY`); the registry keeps the model's copy, and every alias move asks
//! [`SignerPolicy::admits`] of the version's [`Signer`].

use serde::{Deserialize, Serialize};
use sha2::{Digest as _, Sha256};
use x509_cert::der::{DecodePem, Encode};

use crate::{Method, Signer};

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SignerPolicy {
    /// Whether a version without a signature may go live.
    #[serde(default)]
    pub required: bool,
    /// ECDSA P-256 or P-384 public keys, PEM (`-----BEGIN PUBLIC KEY-----`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub keys: Vec<String>,
    /// CA root certificates, PEM: a certificate-mode signature must chain to one.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub ca_roots: Vec<String>,
    /// Certificate identities (an email, URI or DNS name of the signing certificate, or its
    /// subject) allowed to sign; empty: any certificate that chains to a root.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub identities: Vec<String>,
}

/// A public key the policy lists.
#[derive(Debug, Clone)]
pub(crate) struct TrustedKey {
    /// `sha256:` of the key's PEM, as `model_signing` hints it and `sha256sum key.pub` prints it.
    pub fingerprint: String,
    pub pem: String,
    pub key: AnyKey,
}

#[derive(Debug, Clone)]
pub(crate) enum AnyKey {
    P256(p256::ecdsa::VerifyingKey),
    P384(p384::ecdsa::VerifyingKey),
}

/// A CA root the policy lists.
#[derive(Debug, Clone)]
pub(crate) struct TrustedRoot {
    /// `sha256:` of the certificate's DER.
    pub fingerprint: String,
    pub der: Vec<u8>,
    pub pem: String,
}

/// The policy's signers, parsed: what a bundle is verified against.
#[derive(Debug, Clone, Default)]
pub struct Trust {
    pub(crate) keys: Vec<TrustedKey>,
    pub(crate) roots: Vec<TrustedRoot>,
    pub(crate) identities: Vec<String>,
}

impl SignerPolicy {
    /// Parses a policy (`SIGNING_POLICY`, a contract's `signing`), checking every key and root.
    pub fn from_json(text: &str) -> Result<Self, String> {
        let policy: Self = serde_json::from_str(text).map_err(|e| format!("signer policy: {e}"))?;
        policy.trust()?;
        Ok(policy)
    }

    /// Whether the policy names any signer to verify a signature against.
    pub fn names_signers(&self) -> bool {
        !self.keys.is_empty() || !self.ca_roots.is_empty()
    }

    /// The policy's keys and roots, parsed; an entry that does not parse is an error that says
    /// which.
    pub fn trust(&self) -> Result<Trust, String> {
        let keys = self
            .keys
            .iter()
            .enumerate()
            .map(|(i, pem)| key_from_pem(pem).map_err(|e| format!("signing key {}: {e}", i + 1)))
            .collect::<Result<_, _>>()?;
        let roots = self
            .ca_roots
            .iter()
            .enumerate()
            .map(|(i, pem)| root_from_pem(pem).map_err(|e| format!("CA root {}: {e}", i + 1)))
            .collect::<Result<_, _>>()?;
        Ok(Trust {
            keys,
            roots,
            identities: self.identities.clone(),
        })
    }

    /// Whether a version signed by `signer` (none: unsigned) may go live under this policy: a
    /// signature is present if required, and its key, or its root and identity, are listed.
    pub fn admits(&self, signer: Option<&Signer>) -> Result<(), String> {
        let Some(signer) = signer else {
            return match self.required {
                true => Err(
                    "it is not signed, and the model's signer policy requires a signature".into(),
                ),
                false => Ok(()),
            };
        };
        let trust = self.trust()?;
        let listed = match signer.method {
            Method::Key => trust.keys.iter().any(|k| k.fingerprint == signer.trusted),
            Method::Certificate => {
                trust.roots.iter().any(|r| r.fingerprint == signer.trusted)
                    && (trust.identities.is_empty() || trust.identities.contains(&signer.identity))
            }
        };
        match listed || !self.names_signers() {
            true => Ok(()),
            false => Err(format!(
                "it is signed by {} ({}), whom the model's signer policy does not list",
                signer.identity, signer.trusted
            )),
        }
    }
}

pub(crate) fn key_from_pem(pem: &str) -> Result<TrustedKey, String> {
    use p256::pkcs8::{DecodePublicKey, EncodePublicKey, LineEnding};
    let (key, canonical) = if let Ok(key) = p256::PublicKey::from_public_key_pem(pem.trim()) {
        let canonical = key.to_public_key_pem(LineEnding::LF);
        (AnyKey::P256(key.into()), canonical)
    } else if let Ok(key) = p384::PublicKey::from_public_key_pem(pem.trim()) {
        let canonical = key.to_public_key_pem(LineEnding::LF);
        (AnyKey::P384(key.into()), canonical)
    } else {
        return Err("not an ECDSA P-256 or P-384 public key in PEM".into());
    };
    let canonical = canonical.map_err(|e| e.to_string())?;
    Ok(TrustedKey {
        fingerprint: fingerprint(canonical.as_bytes()),
        pem: canonical,
        key,
    })
}

pub(crate) fn root_from_pem(pem: &str) -> Result<TrustedRoot, String> {
    let certificate = x509_cert::Certificate::from_pem(pem.trim().as_bytes())
        .map_err(|e| format!("not a certificate in PEM: {e}"))?;
    let der = certificate.to_der().map_err(|e| e.to_string())?;
    webpki::anchor_from_trusted_cert(&rustls_pki_types::CertificateDer::from(der.as_slice()))
        .map_err(|e| format!("not usable as a trust anchor: {e}"))?;
    Ok(TrustedRoot {
        fingerprint: fingerprint(&der),
        pem: pem.trim().to_string() + "\n",
        der,
    })
}

pub(crate) fn fingerprint(bytes: &[u8]) -> String {
    format!("sha256:{}", hex::encode(Sha256::digest(bytes)))
}
