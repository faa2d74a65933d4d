//! What ships: each function's Lambda zip (`scripts/package.sh`)
//! and its init time with no model: process spawned → first poll for an event, with an empty
//! registry (the inference function preloads nothing).

use super::Setup;
use crate::function::{Function, Launch};
use crate::stats::Rounds;

pub const FUNCTIONS: [&str; 3] = ["validator", "publisher", "inference"];

pub async fn run(setup: &Setup) -> String {
    let empty = setup.work.join("empty-registry");
    std::fs::create_dir_all(&empty).expect("empty registry");
    let mut out = format!(
        "Init: spawn → first poll for an event, median of {} (min–max).\n\n",
        setup.rounds
    );
    out += "| function | zip (MB) | unzipped `bootstrap` (MB) | init, no model (ms) |\n|---|---:|---:|---:|\n";
    for name in FUNCTIONS {
        let mut init = Rounds::default();
        for _ in 0..setup.rounds {
            let function = Function::start(Launch {
                name,
                program: &setup.bootstrap(name),
                args: &[],
                dir: None,
                env: vec![
                    ("MODEL_ROOT", empty.display().to_string()),
                    ("PUBLISHER_FUNCTION", "publisher".into()),
                    ("AWS_ACCESS_KEY_ID", "bench".into()),
                    ("AWS_SECRET_ACCESS_KEY", "bench".into()),
                    ("AWS_EC2_METADATA_DISABLED", "true".into()),
                ],
            })
            .await;
            init.push(function.init_time().await.as_secs_f64() * 1e3);
        }
        let size =
            |path: &std::path::Path| std::fs::metadata(path).expect("package").len() as f64 / 1e6;
        out += &format!(
            "| {name} | {:.1} | {:.1} | {} |\n",
            size(&setup.zip(name)),
            size(&setup.bootstrap(name)),
            init.show(1)
        );
    }
    out
}
