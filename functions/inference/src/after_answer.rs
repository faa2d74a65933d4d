//! Work after the answer, before the freeze. Lambda hands a synchronous caller its answer when
//! the runtime posts it, and freezes the environment only once the runtime *and every
//! registered extension* have asked for their next event. An internal extension (a task in
//! this process, registered for INVOKE) waits until the runtime has posted the invocation's
//! answer ([`Answered`], the outermost runtime layer, says so) and then does what the request
//! path left for after it ([`Inference::after_answer`]): adopts a new version (loads,
//! hash-checks, warms and swaps it in, so no caller waits for a load and the next invocation is
//! served by it), and records and writes the requests sampled for capture.

use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{SystemTime, UNIX_EPOCH};

use lambda_extension::{Extension, LambdaEvent, NextEvent};
use lambda_runtime::LambdaInvocation;
use lambda_runtime::tower::{BoxError, Layer, Service};
use modelpipe_serve::{Adopted, Inference};
use tokio::sync::{Mutex, mpsc};
use tracing::info;

/// The extension's name, as the Extensions API sees it.
const NAME: &str = "modelpipe-adopt";

/// Registers the extension (during init, before the runtime's first poll, as Lambda requires)
/// and returns it with the layer that tells it when each answer has been posted.
pub async fn register(
    inference: Arc<Inference>,
) -> Result<(impl Future<Output = Result<(), BoxError>>, AnsweredLayer), BoxError> {
    let (answered, answers) = mpsc::unbounded_channel();
    let answers = Arc::new(Mutex::new(answers));
    let extension = Extension::new()
        .with_extension_name(NAME)
        .with_events(&["INVOKE"])
        .with_events_processor(lambda_extension::service_fn(move |event: LambdaEvent| {
            let (inference, answers) = (inference.clone(), answers.clone());
            async move {
                let NextEvent::Invoke(invoke) = event.next else {
                    return Ok::<(), BoxError>(());
                };
                // One message per invocation: this one's answer has been posted.
                answers.lock().await.recv().await;
                let started_us = unix_micros();
                for adopted in inference.after_answer().await {
                    log(&adopted, &invoke.request_id, started_us);
                }
                Ok(())
            }
        }))
        .register()
        .await?;
    Ok((extension.run(), AnsweredLayer(answered)))
}

fn log(adopted: &Adopted, request_id: &str, started_us: u128) {
    let took_ms = ((unix_micros() - started_us) / 1000) as u64;
    match adopted {
        Adopted::Version { model, version } => {
            info!(%model, version, request_id, started_us = started_us as u64, took_ms, "adopted after the answer")
        }
        Adopted::Candidate { model, version } => {
            info!(%model, candidate = version, request_id, started_us = started_us as u64, took_ms, "rollout candidate adopted after the answer")
        }
        Adopted::Failed { model, version } => {
            info!(%model, version, request_id, started_us = started_us as u64, took_ms, "adoption failed; the previous version keeps serving")
        }
    }
}

/// Wall-clock microseconds: comparable with what another process on the machine records.
fn unix_micros() -> u128 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_micros())
        .unwrap_or_default()
}

/// The runtime layer whose future ends once the inner runtime services have posted the answer.
pub struct AnsweredLayer(mpsc::UnboundedSender<()>);

impl<S> Layer<S> for AnsweredLayer {
    type Service = Answered<S>;

    fn layer(&self, inner: S) -> Answered<S> {
        Answered {
            inner,
            answered: self.0.clone(),
        }
    }
}

pub struct Answered<S> {
    inner: S,
    answered: mpsc::UnboundedSender<()>,
}

impl<S> Service<LambdaInvocation> for Answered<S>
where
    S: Service<LambdaInvocation, Response = (), Error = BoxError>,
    S::Future: 'static,
{
    type Response = ();
    type Error = BoxError;
    // Not `Send`: the metrics layer's future holds an entered span; the runtime polls it in place.
    type Future = std::pin::Pin<Box<dyn Future<Output = Result<(), BoxError>>>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), BoxError>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, invocation: LambdaInvocation) -> Self::Future {
        let posting = self.inner.call(invocation);
        let answered = self.answered.clone();
        Box::pin(async move {
            let posted = posting.await;
            // Also after a failed post: the extension must not wait forever for this one.
            let _ = answered.send(());
            posted
        })
    }
}
