//! Where an operator's command acts — a registry (directory or S3 prefix) directly, or the
//! deployed publisher Lambda — and the result every command returns.

use modelpipe_aws::LambdaPublisher;
use modelpipe_registry::{Location, Registry};

pub type CliResult<T = ()> = Result<T, String>;

/// Where `status`, `history`, `rollback` and `promote` act: a registry (a directory or an S3
/// prefix) directly, or the deployed publisher Lambda, invoked with aws-sdk-lambda.
pub enum Target {
    Registry(Registry),
    Publisher(LambdaPublisher),
}

impl Target {
    pub async fn open(registry: &Location, publisher_function: Option<String>) -> CliResult<Self> {
        if let Some(function) = publisher_function {
            let config = aws_config::load_defaults(aws_config::BehaviorVersion::latest()).await;
            let client = aws_sdk_lambda::Client::new(&config);
            return Ok(Self::Publisher(LambdaPublisher::new(client, function)));
        }
        if let Location::Dir(dir) = registry
            && !dir.is_dir()
        {
            return Err(format!(
                "no registry at {} (start `modelctl dev`, or pass --registry DIR|s3://BUCKET/PREFIX or --publisher-function NAME)",
                dir.display()
            ));
        }
        let location = registry.clone();
        // The moves modelctl makes are held to SIGNING_POLICY as the publisher's are.
        let default = modelpipe_config::signing_policy(std::env::var("SIGNING_POLICY").ok())
            .map_err(|e| e.to_string())?;
        // Rollout evidence and drift profiles where the functions write them.
        let telemetry = modelpipe_config::telemetry_root(std::env::var("TELEMETRY_ROOT").ok())
            .map_err(|e| e.to_string())?;
        blocking(move || {
            Registry::open_at(&location, &Default::default())
                .and_then(|r| {
                    r.with_signing_default(default)
                        .with_telemetry(telemetry.as_ref(), None)
                })
                .map_err(|e| e.to_string())
        })
        .await
        .map(Self::Registry)
    }

    /// Runs a publisher payload: locally with the publisher's own code, or by invoking it.
    pub async fn call<T: serde::de::DeserializeOwned + Send + 'static, E: std::fmt::Display>(
        &self,
        payload: serde_json::Value,
        local: impl FnOnce(&Registry) -> Result<T, E> + Send + 'static,
    ) -> CliResult<T> {
        match self {
            Self::Registry(registry) => {
                let registry = registry.clone();
                blocking(move || local(&registry).map_err(|e| e.to_string())).await
            }
            Self::Publisher(publisher) => {
                let answer = publisher.invoke(&payload).await?;
                serde_json::from_value(answer)
                    .map_err(|e| format!("the publisher answered an unexpected shape: {e}"))
            }
        }
    }
}

pub async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> CliResult<T> + Send + 'static,
) -> CliResult<T> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| e.to_string())?
}
