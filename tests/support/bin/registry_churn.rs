//! A registry writer that never stops: commits a new version, publishes it, now and then rolls
//! back — as fast as it can, so that a kill -9 from `tests/crashes.rs` lands inside a commit or
//! an alias move. `registry_churn DIR`.

use modelpipe_core::{AliasName, ModelName};
use modelpipe_registry::Registry;
use modelpipe_registry::publish::{PublisherRequest, apply};
use modelpipe_testkit::commit::commit_bytes;

fn main() {
    let dir = std::env::args().nth(1).expect("usage: registry_churn DIR");
    let registry = Registry::open(dir).expect("open the registry");
    let model: ModelName = "churn".parse().expect("model name");
    for n in 0u64.. {
        let bytes = format!("version bytes {n} {}", std::process::id()).repeat(4096);
        let version = commit_bytes(&registry, &model, bytes.as_bytes());
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
