//! Logging: `tracing` as JSON lines for CloudWatch in Lambda, readable lines locally.
//! `RUST_LOG` overrides the default level (info).

use std::io::IsTerminal;

use tracing_subscriber::EnvFilter;

/// ONNX Runtime (through `ort`) narrates its start at info level (the library it opened, the
/// devices it found): warnings and errors only, unless `RUST_LOG` says otherwise.
fn filter() -> EnvFilter {
    EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info,ort=warn"))
}

/// JSON, no ANSI colours, no timestamps (CloudWatch adds its own), on stderr: Lambda sends
/// both streams to CloudWatch Logs a line at a time, and stdout carries the EMF documents, which
/// `metrics_cloudwatch_embedded` writes in many small writes: a log line from another thread
/// could land inside one on a shared stream, and CloudWatch would drop the broken document.
pub fn init_lambda() {
    let _ = tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .json()
        .with_env_filter(filter())
        .with_ansi(false)
        .without_time()
        .with_current_span(false)
        .try_init();
}

/// Readable lines, coloured only when they go to a terminal and `NO_COLOR` is unset
/// (<https://no-color.org>): a log sent to a file or a pipe has no escape codes.
pub fn init_local() {
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter())
        .with_target(false)
        .with_ansi(colours(
            std::io::stdout().is_terminal(),
            std::env::var_os("NO_COLOR").as_deref(),
        ))
        .try_init();
}

fn colours(terminal: bool, no_color: Option<&std::ffi::OsStr>) -> bool {
    terminal && no_color.is_none_or(|value| value.is_empty())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn colours_only_on_a_terminal_without_no_color() {
        assert!(colours(true, None));
        assert!(
            colours(true, Some("".as_ref())),
            "an empty NO_COLOR is unset"
        );
        assert!(!colours(true, Some("1".as_ref())));
        assert!(!colours(false, None));
    }
}
