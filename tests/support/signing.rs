//! Real OpenSSF model signatures for tests: keys and certificates made once per [`Signers`]
//! (`signing_keys.py`, Python's `cryptography`), bundles made by the `model_signing` CLI of the
//! `model-signing` package, exactly as a user signs.

use std::path::Path;
use std::process::Command;

use crate::{tool, workspace_root};

/// A directory of signing keys: `p256`, `p384`, `other` (ECDSA keys), `leaf` under `ca`, and
/// `rogue_leaf` under `rogue_ca` (a CA no policy lists).
pub struct Signers {
    dir: tempfile::TempDir,
}

impl Signers {
    pub fn new() -> Self {
        let dir = tempfile::tempdir().expect("tempdir");
        run(Command::new(tool("python3"))
            .arg(workspace_root().join("tests/support/signing_keys.py"))
            .arg(dir.path()));
        Self { dir }
    }

    /// `NAME.pub` (a public key) or `NAME.pem` (a certificate), as text.
    pub fn pem(&self, file: &str) -> String {
        std::fs::read_to_string(self.dir.path().join(file)).expect("a key file")
    }

    /// `model_signing sign key` with `KEY.key`: the bundle's bytes.
    pub fn sign_with_key(&self, key: &str, model: &Path) -> Vec<u8> {
        let key = self.dir.path().join(format!("{key}.key"));
        self.sign(model, &["key", "--private_key", path(&key)])
    }

    /// `model_signing sign certificate` with `PREFIXleaf` and its CA (`""` or `"rogue_"`).
    pub fn sign_with_certificate(&self, prefix: &str, model: &Path) -> Vec<u8> {
        let file = |name: &str| self.dir.path().join(format!("{prefix}{name}"));
        let (key, leaf, ca) = (file("leaf.key"), file("leaf.pem"), file("ca.pem"));
        self.sign(
            model,
            &[
                "certificate",
                "--private_key",
                path(&key),
                "--signing_certificate",
                path(&leaf),
                "--certificate_chain",
                path(&ca),
            ],
        )
    }

    fn sign(&self, model: &Path, how: &[&str]) -> Vec<u8> {
        let out = tempfile::NamedTempFile::new_in(self.dir.path()).expect("temp file");
        run(Command::new(tool("model_signing"))
            .arg("sign")
            .args(how)
            .arg("--signature")
            .arg(out.path())
            .arg(model));
        std::fs::read(out.path()).expect("the bundle")
    }
}

impl Default for Signers {
    fn default() -> Self {
        Self::new()
    }
}

fn path(p: &Path) -> &str {
    p.to_str().expect("a UTF-8 path")
}

fn run(command: &mut Command) {
    let output = command.output().expect("run a signing tool");
    assert!(
        output.status.success(),
        "{command:?} failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
}
