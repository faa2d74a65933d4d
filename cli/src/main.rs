//! modelctl: modelpipe on one machine (`dev`, `demo`) and the registry's operations.

mod bake;
mod demo;
mod dev;
mod drift;
mod efs_check;
mod local_s3;
mod ops;
mod rollout;
mod target;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::{Parser, Subcommand};
use modelpipe_core::{AliasName, ModelName};
use modelpipe_registry::Location;
use modelpipe_registry::publish::PublisherRequest;

#[derive(Parser)]
#[command(
    name = "modelctl",
    version,
    about = "modelpipe: ONNX models from `aws s3 cp` to live predictions"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the whole pipeline on this machine: S3 endpoint, validator, publisher, inference API.
    Dev {
        /// Where the bucket and the registry live (kept across restarts).
        #[arg(long, default_value = ".modelpipe")]
        data: PathBuf,
        #[arg(long, default_value = "127.0.0.1:9000")]
        s3_addr: SocketAddr,
        #[arg(long, default_value = "127.0.0.1:8080")]
        http_addr: SocketAddr,
        /// How often a request may look for an alias move (RELOAD_CHECK_MS).
        #[arg(long, env = "RELOAD_CHECK_MS", default_value_t = 1000)]
        reload_check_ms: u64,
        /// How often the rollout controller runs (`rollout-advance`, a schedule in AWS).
        #[arg(long, env = "ROLLOUT_TICK_MS", default_value_t = 10_000)]
        rollout_tick_ms: u64,
    },
    /// Show the lifecycle end to end on the example models, then exit.
    Demo,
    /// Run the validator's checks on a model file, offline: the engine choice (tract and
    /// ONNX Runtime compared and timed), and what ingest compiles for tract (layout, artifact).
    Validate(ops::ValidateArgs),
    /// Build a read-only registry to bake into a container image (MODEL_ROOT=DIR), with the
    /// validator's checks on each file.
    Bake {
        dir: PathBuf,
        /// MODEL=FILE, in order: a model given twice gets two versions, the last one live.
        #[arg(required = true)]
        models: Vec<bake::ModelFile>,
        /// MODEL=contract.json: signature and golden examples the model must meet.
        #[arg(long)]
        contract: Vec<bake::ModelFile>,
    },
    /// What a cold load of each live model costs on an EFS file system (aws-sdk-efs), at its
    /// burst and baseline read rates; warns past Lambda's 10 s init phase.
    EfsCheck {
        #[arg(long)]
        file_system_id: String,
        #[command(flatten)]
        registry: RegistryArg,
    },
    /// Check the registry's consistency: complete versions matching their manifests, aliases on
    /// complete versions, moves in the history; --repair removes crashed writers' leftovers.
    Fsck {
        /// The registry: a directory or s3://BUCKET/PREFIX.
        #[arg(long, default_value = ".modelpipe/registry")]
        registry: Location,
        /// Remove staging directories and temporary files older than --leftover-age.
        #[arg(long)]
        repair: bool,
        /// Seconds before a staging directory counts as a crash's leftover (younger ones may be an
        /// ingest still running).
        #[arg(long, default_value_t = 3600)]
        leftover_age: u64,
    },
    /// Aliases and versions of one model or of all.
    Status {
        model: Option<ModelName>,
        #[command(flatten)]
        registry: RegistryArg,
    },
    /// Every alias move of a model.
    History {
        model: ModelName,
        #[command(flatten)]
        registry: RegistryArg,
    },
    /// Move an alias back to its previous version (or to --to N).
    Rollback {
        model: ModelName,
        #[arg(long, default_value = "live")]
        alias: AliasName,
        #[arg(long)]
        to: Option<u64>,
        #[command(flatten)]
        registry: RegistryArg,
    },
    /// A version's live traffic against its baseline, feature by feature: a table, and a
    /// picture of both distributions (SVG).
    Drift {
        model: ModelName,
        /// The version (default: the live one).
        #[arg(long)]
        version: Option<u64>,
        /// Where the picture goes [drift-MODEL-vN.svg].
        #[arg(long)]
        picture: Option<PathBuf>,
        #[command(flatten)]
        registry: RegistryArg,
    },
    /// Guarded rollouts: a candidate served to a growing share of traffic, promoted or rolled
    /// back on evidence (`modelctl rollout --help`).
    Rollout {
        #[command(subcommand)]
        command: rollout::RolloutCommand,
        #[command(flatten)]
        registry: RegistryArg,
    },
    /// Point an alias at version N (the publisher's set-alias; not a rollout's promotion).
    #[command(name = "promote")]
    SetAlias {
        model: ModelName,
        version: u64,
        #[arg(long, default_value = "live")]
        alias: AliasName,
        #[command(flatten)]
        registry: RegistryArg,
    },
}

#[derive(clap::Args)]
struct RegistryArg {
    /// The registry: a directory or s3://BUCKET/PREFIX.
    #[arg(long, global = true, default_value = ".modelpipe/registry")]
    registry: Location,
    /// Act through the deployed publisher Lambda (name or ARN) instead, with the standard AWS
    /// environment (credentials, region, AWS_ENDPOINT_URL).
    #[arg(long, global = true, conflicts_with = "registry")]
    publisher_function: Option<String>,
}

impl RegistryArg {
    async fn open(self) -> Result<target::Target, String> {
        target::Target::open(&self.registry, self.publisher_function).await
    }
}

fn loopback_only(addr: SocketAddr) -> Result<SocketAddr, String> {
    if addr.ip().is_loopback() {
        Ok(addr)
    } else {
        Err(format!(
            "{addr}: modelctl dev binds loopback addresses only"
        ))
    }
}

async fn dev(
    data: PathBuf,
    s3_addr: SocketAddr,
    http_addr: SocketAddr,
    reload_check_ms: u64,
    rollout_tick_ms: u64,
) -> Result<(), String> {
    let options = dev::DevOptions {
        data: data.clone(),
        s3_addr: loopback_only(s3_addr)?,
        http_addr: loopback_only(http_addr)?,
        reload_check: Duration::from_millis(reload_check_ms),
        rollout_tick: Duration::from_millis(rollout_tick_ms.max(1)),
    };
    let stack = dev::DevStack::start(options)
        .await
        .map_err(|e| format!("cannot start: {e}"))?;
    let (s3, http) = (stack.s3_addr, stack.http_addr);
    println!(
        "modelpipe dev is running (data in {data}; Ctrl-C to stop)

  S3 endpoint  http://{s3}  bucket '{bucket}', credentials {key}/{key}, region us-east-1
  inference    http://{http}/v2

Try:
  export AWS_ACCESS_KEY_ID={key} AWS_SECRET_ACCESS_KEY={key} AWS_DEFAULT_REGION=us-east-1
  aws --endpoint-url http://{s3} s3 cp model.onnx s3://{bucket}/models/iris/model.onnx
  aws --endpoint-url http://{s3} s3api get-object-tagging --bucket {bucket} --key models/iris/model.onnx
  curl http://{http}/v2/models/iris
  curl -X POST http://{http}/v2/models/iris/infer -H 'content-type: application/json' \\
       -d '{{\"inputs\":[{{\"name\":\"input\",\"shape\":[1,4],\"datatype\":\"FP32\",\"data\":[5.1,3.5,1.4,0.2]}}]}}'
  modelctl status --registry {registry}
",
        data = data.display(),
        bucket = dev::BUCKET,
        key = dev::ACCESS_KEY,
        registry = dev::registry_dir(&data).display(),
    );
    // Ctrl-C or SIGTERM: a clean stop, what inference holds (captured records) written first.
    let mut terminate = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        .map_err(|e| format!("cannot handle SIGTERM: {e}"))?;
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = terminate.recv() => {}
    }
    println!("stopping…");
    stack.stop().await;
    println!("stopped");
    Ok(())
}

/// `ENGINE_THREADS`, as in every Lambda function: serving, and the engine timing that
/// validate, bake and dev's validator base the engine choice on.
fn use_engine_threads() -> Result<(), modelpipe_config::ConfigError> {
    let config = modelpipe_config::Config::from_env()?;
    modelpipe_engine::use_threads(config.engine_threads);
    Ok(())
}

#[tokio::main]
async fn main() -> ExitCode {
    let cli = Cli::parse();
    modelpipe_config::telemetry::init_local();
    if let Err(e) = use_engine_threads() {
        eprintln!("modelctl: {e}");
        return ExitCode::from(2);
    }
    let result = match cli.command {
        Command::Dev {
            data,
            s3_addr,
            http_addr,
            reload_check_ms,
            rollout_tick_ms,
        } => dev(data, s3_addr, http_addr, reload_check_ms, rollout_tick_ms).await,
        Command::Demo => demo::run().await,
        Command::Validate(args) => tokio::task::spawn_blocking(move || ops::validate(&args))
            .await
            .unwrap_or_else(|e| Err(e.to_string())),
        Command::Bake {
            dir,
            models,
            contract,
        } => tokio::task::spawn_blocking(move || bake::bake(&dir, &models, &contract))
            .await
            .unwrap_or_else(|e| Err(e.to_string())),
        Command::EfsCheck {
            file_system_id,
            registry,
        } => match registry.open().await {
            Ok(target) => efs_check::efs_check(&file_system_id, &target).await,
            Err(e) => Err(e),
        },
        Command::Fsck {
            registry,
            repair,
            leftover_age,
        } => tokio::task::spawn_blocking(move || {
            ops::fsck(&registry, repair, Duration::from_secs(leftover_age))
        })
        .await
        .unwrap_or_else(|e| Err(e.to_string())),
        Command::Status { model, registry } => match registry.open().await {
            Ok(target) => ops::status(&target, model).await,
            Err(e) => Err(e),
        },
        Command::History { model, registry } => match registry.open().await {
            Ok(target) => ops::history(&target, model).await,
            Err(e) => Err(e),
        },
        Command::Rollback {
            model,
            alias,
            to,
            registry,
        } => match registry.open().await {
            Ok(target) => ops::rollback(&target, model, alias, to).await.map(drop),
            Err(e) => Err(e),
        },
        Command::Drift {
            model,
            version,
            picture,
            registry,
        } => match registry.open().await {
            Ok(target) => drift::run(&target, model, version, picture).await,
            Err(e) => Err(e),
        },
        Command::Rollout { command, registry } => match registry.open().await {
            Ok(target) => rollout::run(&target, command).await,
            Err(e) => Err(e),
        },
        Command::SetAlias {
            model,
            version,
            alias,
            registry,
        } => match registry.open().await {
            Ok(target) => {
                let request = PublisherRequest::SetAlias {
                    model,
                    alias,
                    version,
                    reason: Some(format!("modelctl promote {version}")),
                };
                ops::move_alias(&target, request).await.map(drop)
            }
            Err(e) => Err(e),
        },
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(message) => {
            eprintln!("modelctl: {message}");
            ExitCode::FAILURE
        }
    }
}
