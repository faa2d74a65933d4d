//! Hot swaps under load: 8 clients send requests without pause while 20 new versions are
//! published one after another. No request fails; every answer was computed by the version it
//! names (checked against logits computed here without tract); a version answers only once it
//! has been published; and versions only move forward, for each client and across clients.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use modelpipe_core::ModelName;
use modelpipe_registry::Registry;
use modelpipe_testkit::onnx_build::Mlp;
use modelpipe_tests::{serving, wait_for};
use serde_json::{Value, json};

const CLIENTS: usize = 8;
const VERSIONS: u64 = 21;
const WIDTHS: [usize; 4] = [64, 256, 256, 8];

struct Answer {
    client: usize,
    started: Instant,
    ended: Instant,
    status: u16,
    version: u64,
    logits: Vec<f64>,
}

fn model(version: u64) -> Mlp {
    Mlp::new(&WIDTHS, version as u32)
}

fn row() -> Vec<f32> {
    (0..WIDTHS[0]).map(|i| (i as f32 * 0.37).sin()).collect()
}

async fn client(id: usize, url: String, stop: Arc<AtomicBool>, answers: Arc<Mutex<Vec<Answer>>>) {
    let http = reqwest::Client::new();
    let body = json!({"inputs": [{"name": "input", "shape": [1, WIDTHS[0]], "datatype": "FP32", "data": row()}]});
    while !stop.load(Ordering::Relaxed) {
        let started = Instant::now();
        let response = http.post(&url).json(&body).send().await.unwrap();
        let status = response.status().as_u16();
        let answer: Value = response.json().await.unwrap();
        let ended = Instant::now();
        let version = answer["model_version"]
            .as_str()
            .and_then(|v| v.parse().ok())
            .unwrap_or(0);
        let logits = answer["outputs"][0]["data"]
            .as_array()
            .map(|d| d.iter().filter_map(Value::as_f64).collect())
            .unwrap_or_default();
        answers.lock().unwrap().push(Answer {
            client: id,
            started,
            ended,
            status,
            version,
            logits,
        });
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn twenty_swaps_under_eight_clients_fail_no_request_and_only_move_forward() {
    let dir = tempfile::tempdir().unwrap();
    let registry = Registry::open(dir.path()).unwrap();
    let name: ModelName = "mlp".parse().unwrap();
    for version in 1..=VERSIONS {
        assert_eq!(
            serving::commit(&registry, &name, &model(version).to_bytes()),
            version
        );
    }
    let mut published_at = vec![Instant::now(); VERSIONS as usize + 1];
    serving::publish(&registry, &name, 1);
    let base = serving::serve(&registry, &[("RELOAD_CHECK_MS", "5")]).await;
    let url = format!("{base}/v2/models/mlp/infer");

    let stop = Arc::new(AtomicBool::new(false));
    let answers = Arc::new(Mutex::new(Vec::new()));
    let clients: Vec<_> = (0..CLIENTS)
        .map(|id| tokio::spawn(client(id, url.clone(), stop.clone(), answers.clone())))
        .collect();
    let highest_served = || {
        answers
            .lock()
            .unwrap()
            .iter()
            .map(|a| a.version)
            .max()
            .unwrap_or(0)
    };
    wait_for("v1 to answer", Duration::from_secs(30), || async {
        (highest_served() >= 1).then_some(())
    })
    .await;
    for version in 2..=VERSIONS {
        published_at[version as usize] = Instant::now();
        serving::publish(&registry, &name, version);
        wait_for(
            &format!("v{version} to answer"),
            Duration::from_secs(30),
            || async { (highest_served() >= version).then_some(()) },
        )
        .await;
    }
    stop.store(true, Ordering::Relaxed);
    for c in clients {
        c.await.unwrap();
    }

    let answers = answers.lock().unwrap();
    let expected: Vec<Vec<f64>> = (0..=VERSIONS)
        .map(|v| model(v.max(1)).predict(&row()))
        .collect();
    assert!(
        answers.len() > 200,
        "only {} requests were made",
        answers.len()
    );
    for a in answers.iter() {
        assert_eq!(a.status, 200, "a request failed during the swaps");
        assert!(
            (1..=VERSIONS).contains(&a.version),
            "unknown version {}",
            a.version
        );
        let want = &expected[a.version as usize];
        let close = a.logits.len() == want.len()
            && a.logits
                .iter()
                .zip(want)
                .all(|(g, w)| (g - w).abs() <= 1e-4 * (1.0 + w.abs()));
        assert!(
            close,
            "v{} answered {:?}, its logits are {want:?}",
            a.version, a.logits
        );
        assert!(
            published_at[a.version as usize] <= a.ended,
            "v{} answered a request that ended before it was published",
            a.version
        );
    }
    for id in 0..CLIENTS {
        let versions: Vec<u64> = answers
            .iter()
            .filter(|a| a.client == id)
            .map(|a| a.version)
            .collect();
        assert!(
            versions.windows(2).all(|w| w[0] <= w[1]),
            "client {id} went back: {versions:?}"
        );
    }
    // Across clients: a request that started after another ended never gets an older version.
    let mut by_end: Vec<&Answer> = answers.iter().collect();
    by_end.sort_by_key(|a| a.ended);
    let mut newest_ended = Vec::with_capacity(by_end.len()); // (ended, highest version so far)
    let mut highest = 0;
    for a in &by_end {
        highest = highest.max(a.version);
        newest_ended.push((a.ended, highest));
    }
    for a in answers.iter() {
        let before = newest_ended.partition_point(|(ended, _)| *ended < a.started);
        if before > 0 {
            let seen = newest_ended[before - 1].1;
            assert!(
                a.version >= seen,
                "a request started after v{seen} had answered, and got v{}",
                a.version
            );
        }
    }
    let served: std::collections::BTreeSet<u64> = answers.iter().map(|a| a.version).collect();
    assert_eq!(
        served.len() as u64,
        VERSIONS,
        "every version served: {served:?}"
    );
}
