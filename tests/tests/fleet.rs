//! A fleet of Lambda environments, each frozen between invocations as Lambda freezes it
//! (`lambda_env`), running the real inference binary on one registry directory: after an alias
//! move no caller waits for a load, every environment adopts the new version after an answer
//! and not before its offset in `ADOPT_SPREAD_MS`, and nothing fails.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use modelpipe_core::{AliasName, ModelName};
use modelpipe_registry::Registry;
use modelpipe_serve::SwapPolicy;
use modelpipe_testkit::onnx_build::LinearSoftmax;
use modelpipe_tests::lambda_env::{Fleet, FleetAnswer};
use modelpipe_tests::serving::{commit, publish};
use modelpipe_tests::{binary, http_api_event, wait_for};
use serde_json::Value;

const ENVIRONMENTS: usize = 4;
const CALLERS: usize = 2;
const SPREAD: Duration = Duration::from_millis(1500);

fn version_of(answer: &FleetAnswer) -> u64 {
    let body: Value = serde_json::from_slice(answer.answer.body.as_ref().expect("an answer"))
        .expect("an API Gateway response");
    assert_eq!(body["statusCode"], 200, "{body}");
    let payload: Value = serde_json::from_str(body["body"].as_str().expect("a body")).unwrap();
    payload["model_version"].as_str().unwrap().parse().unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn after_an_alias_move_no_caller_waits_for_a_load_and_every_environment_adopts_it() {
    let dir = tempfile::tempdir().unwrap();
    let registry = Registry::open(dir.path()).unwrap();
    let model: ModelName = "iris".parse().unwrap();
    let [v1, v2] =
        [1, 2].map(|seed| commit(&registry, &model, &LinearSoftmax::iris(seed).to_bytes()));
    publish(&registry, &model, v1);
    let env = [
        ("MODEL_ROOT", dir.path().display().to_string()),
        ("PRELOAD_MODELS", "iris".to_string()),
        ("RELOAD_CHECK_MS", "0".to_string()),
        ("ADOPT_SPREAD_MS", SPREAD.as_millis().to_string()),
        ("RUST_LOG", "info".to_string()),
    ];
    let fleet = Fleet::start(&binary("inference"), "fleet", ENVIRONMENTS, &env).await;
    let request =
        r#"{"inputs":[{"name":"input","shape":[1,4],"datatype":"FP32","data":[5.1,3.5,1.4,0.2]}]}"#;
    let event = http_api_event("POST", "/v2/models/iris/infer", Some(request));

    let stop = Arc::new(AtomicBool::new(false));
    let (callers, answers) = fleet.callers(CALLERS, &event, &stop);
    wait_for(
        "steady answers from every environment",
        Duration::from_secs(60),
        || async {
            let answers = answers.lock().unwrap();
            let seen: std::collections::HashSet<usize> =
                answers.iter().map(|(a, _)| a.environment).collect();
            (seen.len() == ENVIRONMENTS && answers.len() >= 20).then_some(())
        },
    )
    .await;

    publish(&registry, &model, v2);
    let moved = registry.alias(&model, &AliasName::live()).unwrap().unwrap();
    let moved_us = moved
        .updated_at
        .system_time()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_micros() as u64;
    wait_for(
        "every environment to answer from v2",
        Duration::from_secs(60),
        || async {
            let answers = answers.lock().unwrap();
            let on_v2: std::collections::HashSet<usize> = answers
                .iter()
                .filter(|(a, _)| version_of(a) == v2)
                .map(|(a, _)| a.environment)
                .collect();
            (on_v2.len() == ENVIRONMENTS).then_some(())
        },
    )
    .await;
    stop.store(true, Ordering::Relaxed);
    for caller in callers {
        caller.await.unwrap();
    }

    let answers: Vec<FleetAnswer> = answers
        .lock()
        .unwrap()
        .iter()
        .map(|(a, _)| a.clone())
        .collect();
    let by_id: HashMap<&str, &FleetAnswer> = answers
        .iter()
        .map(|a| (a.answer.request_id.as_str(), a))
        .collect();
    for (n, environment) in fleet.environments.iter().enumerate() {
        // Never back to v1 once on v2; every answer a 200 (version_of asserts it).
        let versions: Vec<u64> = answers
            .iter()
            .filter(|a| a.environment == n)
            .map(version_of)
            .collect();
        let first_v2 = versions.iter().position(|&v| v == v2).expect("reached v2");
        assert!(
            versions[first_v2..].iter().all(|&v| v == v2),
            "{}: {versions:?}",
            environment.name()
        );

        let adopted = environment.logged("adopted after the answer");
        assert_eq!(
            adopted.len(),
            1,
            "{}: one adoption: {adopted:?}",
            environment.name()
        );
        let line = &adopted[0]["fields"];
        assert_eq!(line["version"], v2);
        let request_id = line["request_id"].as_str().unwrap();
        let started_us = line["started_us"].as_u64().unwrap();
        let noticing = by_id[request_id];
        // The request after whose answer v2 was loaded had its answer, from v1, before the
        // load began: it did not wait for it.
        assert_eq!(version_of(noticing), v1, "{}", environment.name());
        assert!(
            noticing.answer.posted_us <= started_us,
            "{}: answer posted at {} µs, adoption began at {started_us} µs",
            environment.name(),
            noticing.answer.posted_us
        );
        // Not before this environment's place in the spread (the alias is stamped in ms).
        let SwapPolicy::AfterAnswer { offset } =
            SwapPolicy::after_answer(SPREAD, environment.name())
        else {
            unreachable!()
        };
        assert!(
            started_us + 1_000 >= moved_us + offset.as_micros() as u64,
            "{}: adopted {} ms after the move, its offset is {} ms",
            environment.name(),
            (started_us.saturating_sub(moved_us)) / 1000,
            offset.as_millis()
        );
        // The invocation after the adopting one is answered by v2.
        let invocations = environment.invocations();
        let at = invocations
            .iter()
            .position(|i| i.request_id == request_id)
            .unwrap();
        if let Some(next) = invocations
            .get(at + 1)
            .and_then(|i| by_id.get(i.request_id.as_str()))
        {
            assert_eq!(version_of(next), v2, "{}", environment.name());
        }
        // v2 was loaded once here, and only by the adoption.
        let loads: Vec<Value> = environment
            .logged("model loaded")
            .into_iter()
            .filter(|l| l["fields"]["version"] == v2)
            .collect();
        assert_eq!(loads.len(), 1, "{}: {loads:?}", environment.name());
    }
}
