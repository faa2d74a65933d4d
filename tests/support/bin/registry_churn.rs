//! A registry writer that never stops: commits a new version, publishes it, now and then rolls
//! back — as fast as it can, so that a kill -9 from `tests/crashes.rs` lands inside a commit or
//! an alias move. `registry_churn DIR`.

use modelpipe_core::{AliasName, ModelName};
use modelpipe_registry::publish::{PublisherRequest, apply};
use modelpipe_registry::{NewVersion, Registry};

fn main() {
    let dir = std::env::args().nth(1).expect("usage: registry_churn DIR");
    let registry = Registry::open(dir).expect("open the registry");
    let model: ModelName = "churn".parse().expect("model name");
    for n in 0u64.. {
        let staging = registry.stage(&model).expect("stage");
        let bytes = format!("version bytes {n} {}", std::process::id()).repeat(4096);
        std::fs::write(staging.model_path(), &bytes).expect("write staging");
        let new = NewVersion {
            sha256: modelpipe_core::digest::sha256_bytes(bytes.as_bytes()),
            size: bytes.len() as u64,
            source: Default::default(),
            signature: Default::default(),
            signature_change: None,
            layout: None,
            artifact: None,
            engine: None,
            smoke_shapes: None,
        };
        let version = registry
            .lock(&model)
            .and_then(|locked| locked.commit(staging, new))
            .expect("commit")
            .version();
        let request = if n % 3 == 2 {
            PublisherRequest::Rollback {
                model: model.clone(),
                alias: AliasName::live(),
                reason: None,
            }
        } else {
            PublisherRequest::Publish {
                model: model.clone(),
                version,
                alias: AliasName::live(),
                reason: None,
            }
        };
        apply(&registry, &request, None).expect("move the alias");
    }
}
