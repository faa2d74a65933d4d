//! Logging: `tracing` as JSON lines for CloudWatch in Lambda, readable lines on a terminal.
//! `RUST_LOG` overrides the default level (info).

use tracing_subscriber::EnvFilter;

/// ONNX Runtime (through `ort`) narrates its start at info level (the library it opened, the
/// devices it found): warnings and errors only, unless `RUST_LOG` says otherwise.
fn filter() -> EnvFilter {
    EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info,ort=warn"))
}

/// JSON, no ANSI colours, no timestamps (CloudWatch adds its own).
pub fn init_lambda() {
    let _ = tracing_subscriber::fmt()
        .json()
        .with_env_filter(filter())
        .with_ansi(false)
        .without_time()
        .with_current_span(false)
        .try_init();
}

/// Readable lines for a terminal.
pub fn init_local() {
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter())
        .with_target(false)
        .try_init();
}
