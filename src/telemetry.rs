//! Logging setup: `tracing` to stderr, human-readable or JSON lines, with a
//! `RUST_LOG`-style filter (default `info`).
//!
//! The access log is the `breakwater::access` target (one line per
//! request); events are `breakwater::event`. Either can be filtered on its
//! own, e.g. `RUST_LOG=info,breakwater::access=off`.

use tracing_subscriber::EnvFilter;

/// `--log-format`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum LogFormat {
    /// Human-readable lines.
    Human,
    /// One JSON object per line.
    Json,
}

/// Installs the global subscriber. Safe to call once per process.
pub fn init(format: LogFormat) {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    // Colour only on a terminal: log files and collectors get plain text.
    let ansi = std::io::IsTerminal::is_terminal(&std::io::stderr());
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(ansi);
    let result = match format {
        LogFormat::Human => builder.try_init(),
        LogFormat::Json => builder
            .json()
            .flatten_event(true)
            .with_current_span(false)
            .try_init(),
    };
    if let Err(error) = result {
        eprintln!("breakwater: logging was already initialised: {error}");
    }
}
