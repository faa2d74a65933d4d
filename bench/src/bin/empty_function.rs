//! A Lambda function that answers every event at once with the Rust runtime modelpipe uses:
//! the Runtime API round trip any Rust function pays before any work (the floor under the
//! inference function's warm latency in BENCHMARKS.md).

use lambda_runtime::{Error, LambdaEvent, service_fn};
use serde_json::{Value, json};

#[tokio::main]
async fn main() -> Result<(), Error> {
    lambda_runtime::run(service_fn(|_: LambdaEvent<Value>| async {
        Ok::<_, Error>(json!({"statusCode": 200, "body": "{}"}))
    }))
    .await
}
