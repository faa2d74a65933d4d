//! The Open Inference Protocol v2 REST routes. Errors are `{"error": "..."}` with 400 for a bad
//! request, 404 for an unknown model or version, 413 for a body over the limit, 503 when a model
//! cannot be loaded; bad input never yields a 500.

use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use axum::Json;
use axum::body::Body;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use bytes::Bytes;
use serde_json::{Value, json};

use super::capture;
use super::metrics::{self, ServedBy};
use super::protocol::{self, HEADER_CONTENT_LENGTH, Output, ParsedRequest};
use super::split::{Route, routing_key};
use super::{Inference, LiveError, LoadError, LoadedModel};
use modelpipe_core::model_name::{AliasName, ModelName};
use modelpipe_core::signature::{Signature, TensorSpec};
use modelpipe_engine::tensors::decode_input;
use modelpipe_registry::RegistryError;
use modelpipe_registry::rollout::split::Arm;
use tract_onnx::prelude::Tensor;

#[derive(Debug)]
pub struct ApiError {
    status: StatusCode,
    message: String,
}

impl ApiError {
    fn new(status: StatusCode, message: impl Into<String>) -> Self {
        Self {
            status,
            message: message.into(),
        }
    }
    fn bad_request(message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, message)
    }
    fn not_found(message: impl Into<String>) -> Self {
        Self::new(StatusCode::NOT_FOUND, message)
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        (self.status, Json(json!({ "error": self.message }))).into_response()
    }
}

impl From<LiveError> for ApiError {
    fn from(e: LiveError) -> Self {
        match e {
            LiveError::NotFound(_) => Self::not_found(e.to_string()),
            LiveError::NotReady { .. } => Self::new(StatusCode::SERVICE_UNAVAILABLE, e.to_string()),
        }
    }
}

impl From<RegistryError> for ApiError {
    fn from(e: RegistryError) -> Self {
        match e {
            RegistryError::NoSuchVersion { .. } => Self::not_found(e.to_string()),
            _ => Self::new(StatusCode::SERVICE_UNAVAILABLE, e.to_string()),
        }
    }
}

type ApiResult<T> = Result<T, ApiError>;

/// On an answer a rollout routed: which arm answered (`stable` or `candidate`)…
pub const HEADER_ARM: &str = "modelpipe-arm";
/// …and the rollout's id.
pub const HEADER_ROLLOUT: &str = "modelpipe-rollout";
type AppState = State<Arc<Inference>>;

/// The routes, over shared state; the same router runs in Lambda and on a local port.
pub fn router(inference: Arc<Inference>) -> axum::Router {
    axum::Router::new()
        .route("/v2", get(server_metadata))
        .route(
            "/v2/health/live",
            get(|| async { Json(json!({ "live": true })) }),
        )
        .route(
            "/v2/health/ready",
            get(|| async { Json(json!({ "ready": true })) }),
        )
        .route("/v2/models/{model}", get(model_metadata))
        .route("/v2/models/{model}/ready", get(model_ready))
        .route("/v2/models/{model}/infer", post(infer_live))
        .route(
            "/v2/models/{model}/versions/{version}",
            get(version_metadata),
        )
        .route(
            "/v2/models/{model}/versions/{version}/ready",
            get(version_ready),
        )
        .route(
            "/v2/models/{model}/versions/{version}/infer",
            post(infer_version),
        )
        .fallback(|| async { ApiError::not_found("no such route; see /v2") })
        .method_not_allowed_fallback(|| async {
            ApiError::new(
                StatusCode::METHOD_NOT_ALLOWED,
                "method not allowed on this route",
            )
        })
        .with_state(inference)
}

async fn server_metadata() -> Json<Value> {
    Json(
        json!({ "name": "modelpipe", "version": env!("CARGO_PKG_VERSION"), "extensions": ["binary_tensor_data"] }),
    )
}

fn model_name(raw: &str) -> ApiResult<ModelName> {
    raw.parse()
        .map_err(|_| ApiError::not_found(format!("model '{raw}' not found")))
}

fn version_number(model: &ModelName, raw: &str) -> ApiResult<u64> {
    raw.parse()
        .map_err(|_| ApiError::not_found(format!("model '{model}' has no version '{raw}'")))
}

fn metadata(model: &ModelName, versions: Vec<String>, signature: &Signature) -> Value {
    json!({
        "name": model.as_str(),
        "versions": versions,
        "platform": "onnx",
        "inputs": signature.inputs,
        "outputs": signature.outputs,
    })
}

async fn model_metadata(
    State(inference): AppState,
    Path(model): Path<String>,
) -> ApiResult<Json<Value>> {
    let model = model_name(&model)?;
    let registry = inference.registry();
    let alias = registry
        .alias(&model, &Default::default())?
        .ok_or_else(|| ApiError::not_found(format!("model '{model}' not found")))?;
    let manifest = registry.manifest(&model, alias.version)?;
    let versions = registry
        .versions(&model)?
        .iter()
        .map(u64::to_string)
        .collect();
    let mut body = metadata(&model, versions, &manifest.signature);
    body["live_version"] = json!(alias.version.to_string());
    // Which engine serves the live version and why, as decided at ingest.
    body["engine_choice"] = match &manifest.engine {
        Some(choice) => json!(choice),
        None => {
            json!({"engine": "tract", "reason": "committed before engines were chosen at ingest"})
        }
    };
    // Who signed the live version (OpenSSF model signing), as verified at ingest; null: unsigned.
    body["signer"] = json!(manifest.signer);
    body["hot_reload"] = inference.hot_reload();
    let mut resident: Vec<u64> = inference
        .cache()
        .resident()
        .into_iter()
        .filter(|r| r.model == model)
        .map(|r| r.version)
        .collect();
    resident.sort_unstable();
    body["resident_versions"] = json!(resident.iter().map(u64::to_string).collect::<Vec<_>>());
    let status = inference.live_status(&model);
    if let Some(version) = status.loaded {
        body["loaded_version"] = json!(version.to_string());
        if let Some(loaded) = inference.cache().get(&model, version) {
            body["engine"] = json!({
                "name": loaded.engine.kind(),
                "loaded_from": loaded.loaded_from,
                "layout": loaded.engine.layout(),
                "load_ms": loaded.load_time.as_millis() as u64,
                "plans": loaded.engine.resident_plans(),
            });
        }
    }
    if let Some(version) = status.pending {
        // Noticed here, adopted after an answer (Lambda): the next invocations get it.
        body["adopting_version"] = json!(version.to_string());
    }
    if let Some(split) = inference.split(&model) {
        let rollout = &split.rollout;
        // The split this instance applies now (it follows the rollout as it follows the alias).
        body["rollout"] = json!({
            "id": rollout.id,
            "generation": rollout.generation,
            "stable_version": rollout.stable.to_string(),
            "candidate_version": rollout.candidate.to_string(),
            "step": rollout.step + 1,
            "steps": rollout.plan.steps.len(),
            "candidate_percent": f64::from(rollout.weight) / 100.0,
            "shadow_percent": f64::from(rollout.shadow) / 100.0,
            "sticky_key": rollout.sticky_key,
            "candidate_loaded": split.candidate_ready,
        });
    }
    if let Some(failure) = status.failure {
        body["load_error"] =
            json!({ "version": failure.version.to_string(), "error": failure.error });
    }
    Ok(Json(body))
}

async fn model_ready(
    State(inference): AppState,
    Path(model): Path<String>,
) -> ApiResult<Json<Value>> {
    let model = model_name(&model)?;
    let loaded = inference.live(&model).await?;
    Ok(Json(
        json!({ "name": model.as_str(), "ready": true, "version": loaded.version().to_string() }),
    ))
}

async fn version_metadata(
    State(inference): AppState,
    Path((model, version)): Path<(String, String)>,
) -> ApiResult<Json<Value>> {
    let model = model_name(&model)?;
    let version = version_number(&model, &version)?;
    let manifest = inference.registry().manifest(&model, version)?;
    Ok(Json(metadata(
        &model,
        vec![version.to_string()],
        &manifest.signature,
    )))
}

async fn pinned(
    inference: &Inference,
    model: &ModelName,
    version: u64,
) -> ApiResult<Arc<LoadedModel>> {
    inference.registry().manifest(model, version)?;
    inference
        .pinned(model, version)
        .await
        .map_err(|e: LoadError| ApiError::new(StatusCode::SERVICE_UNAVAILABLE, e.to_string()))
}

async fn version_ready(
    State(inference): AppState,
    Path((model, version)): Path<(String, String)>,
) -> ApiResult<Json<Value>> {
    let model = model_name(&model)?;
    let version = version_number(&model, &version)?;
    pinned(&inference, &model, version).await?;
    Ok(Json(
        json!({ "name": model.as_str(), "version": version.to_string(), "ready": true }),
    ))
}

async fn infer_live(
    State(inference): AppState,
    Path(model): Path<String>,
    headers: HeaderMap,
    body: Body,
) -> ApiResult<Response> {
    let model = model_name(&model)?;
    let request = read_request(&inference, &headers, body).await?;
    let (loaded, route) = inference
        .route(&model, |sticky| {
            routing_key(sticky, &headers, &request.request.parameters)
        })
        .await?;
    infer(&inference, loaded, request, Served::Live(route)).await
}

async fn infer_version(
    State(inference): AppState,
    Path((model, version)): Path<(String, String)>,
    headers: HeaderMap,
    body: Body,
) -> ApiResult<Response> {
    let model = model_name(&model)?;
    let version = version_number(&model, &version)?;
    let request = read_request(&inference, &headers, body).await?;
    // A pinned version bypasses any rollout's split.
    let loaded = pinned(&inference, &model, version).await?;
    infer(&inference, loaded, request, Served::Pinned).await
}

/// Reads the body, refusing one over the limit before reading it when its length is declared,
/// and as soon as it passes the limit otherwise; then splits it into JSON and binary data.
async fn read_request(
    inference: &Inference,
    headers: &HeaderMap,
    body: Body,
) -> ApiResult<ParsedRequest> {
    let limit = inference.max_request_bytes;
    let too_large = || {
        ApiError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            format!("request body is larger than {limit} bytes"),
        )
    };
    let declared = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok()?.parse::<usize>().ok());
    if declared.is_some_and(|n| n > limit) {
        return Err(too_large());
    }
    if let Some(encoding) = headers
        .get(header::CONTENT_ENCODING)
        .filter(|v| v.as_bytes() != b"identity")
    {
        return Err(ApiError::bad_request(format!(
            "Content-Encoding {encoding:?} is not supported; send the body uncompressed"
        )));
    }
    let bytes = axum::body::to_bytes(body, limit)
        .await
        .map_err(|_| too_large())?;
    let header_length = match headers.get(HEADER_CONTENT_LENGTH) {
        None => None,
        Some(value) => Some(value.to_str().map_err(|_| {
            ApiError::bad_request("header Inference-Header-Content-Length is not text")
        })?),
    };
    protocol::parse(bytes, header_length).map_err(ApiError::bad_request)
}

/// How a request reached its version.
enum Served {
    /// Through the live alias, routed by its rollout if one runs.
    Live(Option<Route>),
    /// `/versions/{v}`: no alias, no split.
    Pinned,
}

/// Runs `parsed` on `loaded` and counts it in the metrics. A request a rollout routed is
/// recorded for its arm — the model run's time, or a failure: the arm's signature refusing the
/// inputs, or its run failing — shadowed if its caller is, and answered (even with an error)
/// with headers naming the arm and the rollout.
async fn infer(
    inference: &Inference,
    loaded: Arc<LoadedModel>,
    parsed: ParsedRequest,
    served: Served,
) -> ApiResult<Response> {
    let started = Instant::now();
    let (route, by) = match served {
        Served::Live(Some(route)) => {
            let by = match route.arm {
                Arm::Stable => ServedBy::Stable,
                Arm::Candidate => ServedBy::Candidate,
            };
            (Some(route), by)
        }
        Served::Live(None) => (None, ServedBy::Stable),
        Served::Pinned => (None, ServedBy::Pinned),
    };
    let model = &loaded.manifest.model;
    // Pinned requests are not live traffic: neither captured nor in drift.
    let capture = (by != ServedBy::Pinned)
        .then(|| Captured::of(inference, model, &parsed))
        .flatten();
    let answer = answer(
        inference,
        &loaded,
        parsed,
        route.as_ref(),
        capture.is_some(),
    )
    .await;
    let alias = AliasName::default();
    metrics::request(
        model,
        (by != ServedBy::Pinned).then_some(&alias),
        by,
        loaded.version(),
        started.elapsed(),
        answer.is_err(),
    );
    let mut response = match answer {
        Ok(answered) => {
            if let Some(route) = &route {
                inference.record(route, answered.run, false);
            }
            if let (Some(capture), Some(tensors)) = (capture, answered.tensors) {
                inference.capture().offer(capture.sample(
                    &loaded,
                    route.as_ref(),
                    started.elapsed(),
                    tensors,
                ));
            }
            answered.response
        }
        Err(error) => {
            if let Some(route) = &route {
                inference.record(route, started.elapsed(), true);
            }
            error.into_response()
        }
    };
    if let Some(route) = &route {
        let headers = response.headers_mut();
        headers.insert(HEADER_ARM, HeaderValue::from_static(route.arm.as_str()));
        headers.insert(HEADER_ROLLOUT, HeaderValue::from(route.split.rollout.id));
    }
    Ok(response)
}

/// A request being captured: what of it the record needs once it is answered.
struct Captured {
    request_id: Option<String>,
    input: capture::Body,
    at: SystemTime,
}

impl Captured {
    /// `Some` when `model`'s capture share samples this request.
    fn of(inference: &Inference, model: &ModelName, parsed: &ParsedRequest) -> Option<Self> {
        let share = inference.capture().share(inference.registry(), model);
        capture::sampled(model, parsed.body(), share).then(|| Self {
            request_id: parsed.request.id.clone(),
            input: capture::Body {
                content_type: parsed.content_type(),
                bytes: parsed.body().clone(),
            },
            at: SystemTime::now(),
        })
    }

    fn sample(
        self,
        loaded: &LoadedModel,
        route: Option<&Route>,
        latency: Duration,
        tensors: AnswerTensors,
    ) -> capture::Sample {
        capture::Sample {
            model: loaded.manifest.model.clone(),
            version: loaded.version(),
            alias: AliasName::default(),
            arm: route.map(|r| r.arm.as_str()),
            rollout: route.map(|r| r.split.rollout.id),
            at: self.at,
            latency,
            request_id: self.request_id,
            input: self.input,
            output: tensors.body,
            inputs: tensors.inputs,
            outputs: tensors.outputs,
        }
    }
}

/// A captured request's tensors and answer body.
struct AnswerTensors {
    inputs: Vec<(String, Tensor)>,
    outputs: Vec<(String, Tensor)>,
    body: capture::Body,
}

/// An answer, how long its model run took, and (when captured) what it ran on.
struct Answered {
    response: Response,
    run: Duration,
    tensors: Option<AnswerTensors>,
}

/// The answer of `loaded` to `parsed`; `captured`: keep its tensors and body for capture.
async fn answer(
    inference: &Inference,
    loaded: &Arc<LoadedModel>,
    parsed: ParsedRequest,
    route: Option<&Route>,
    captured: bool,
) -> ApiResult<Answered> {
    let signature = loaded.engine.signature();
    let tensors = input_tensors(&parsed, signature).map_err(ApiError::bad_request)?;
    let wanted = parsed
        .wanted_outputs(signature)
        .map_err(ApiError::bad_request)?;
    let plans = loaded.engine.resident_plans();
    let shadow = route.and_then(|r| inference.shadow(r));
    let shadow_inputs = shadow.as_ref().map(|_| tensors.clone());
    let captured_inputs = captured.then(|| tensors.clone());
    let run_started = Instant::now();
    let outputs = if loaded.runs_quickly(&tensors) {
        loaded.engine.run(tensors)
    } else {
        let model = loaded.clone();
        tokio::task::spawn_blocking(move || model.engine.run(tensors))
            .await
            .map_err(|e| {
                ApiError::new(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    format!("inference task failed: {e}"),
                )
            })?
    };
    let run = run_started.elapsed();
    // The inputs matched the signature, so a failure here is the request's values (e.g. an
    // index out of range): a client error.
    let outputs = outputs.map_err(|e| ApiError::bad_request(e.to_string()))?;
    if loaded.engine.resident_plans() > plans {
        // A plan for a new input shape: the version costs more memory now.
        inference.cache().trim();
    }
    let selected: Vec<Output> = wanted
        .iter()
        .map(|w| Output {
            name: &signature.outputs[w.index].name,
            tensor: &outputs[w.index],
            binary: w.binary,
        })
        .collect();
    let body = protocol::encode_response(
        loaded.manifest.model.as_str(),
        loaded.version(),
        parsed.request.id.clone(),
        &selected,
    )
    .map_err(|e| ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, e))?;
    let content_type = match body.json_length {
        Some(_) => "application/octet-stream",
        None => "application/json",
    };
    let bytes = Bytes::from(body.bytes);
    let tensors = captured_inputs.map(|inputs| AnswerTensors {
        inputs: named(&signature.inputs, inputs),
        outputs: named(&signature.outputs, outputs.clone()),
        body: capture::Body {
            content_type,
            bytes: bytes.clone(),
        },
    });
    // The caller's answer is ready: the candidate may have the rest of the shadow's work.
    if let (Some(shadow), Some(inputs), Some(route)) = (shadow, shadow_inputs, route) {
        inference.run_shadow(shadow, route.clone(), inputs, outputs);
    }
    let mut response = Response::new(Body::from(bytes));
    let headers = response.headers_mut();
    headers.insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    if let Some(length) = body.json_length {
        headers.insert(HEADER_CONTENT_LENGTH, HeaderValue::from(length));
    }
    Ok(Answered {
        response,
        run,
        tensors,
    })
}

/// The request's inputs decoded in the signature's order; an input the model does not have,
/// or one it lacks, is the request's error.
fn input_tensors(parsed: &ParsedRequest, signature: &Signature) -> Result<Vec<Tensor>, String> {
    if let Some(extra) = parsed
        .inputs()
        .find(|input| !signature.inputs.iter().any(|spec| spec.name == input.name))
    {
        return Err(format!("model has no input '{}'", extra.name));
    }
    signature
        .inputs
        .iter()
        .map(|spec| {
            let input = parsed
                .inputs()
                .find(|i| i.name == spec.name)
                .ok_or_else(|| format!("missing input '{}'", spec.name))?;
            decode_input(&input, spec)
        })
        .collect()
}

/// Tensors paired with their names in the signature's order.
fn named(specs: &[TensorSpec], tensors: Vec<Tensor>) -> Vec<(String, Tensor)> {
    specs.iter().map(|s| s.name.clone()).zip(tensors).collect()
}
