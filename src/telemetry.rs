//! Logging setup: `tracing` to stderr, human-readable or JSON lines, with a
//! `RUST_LOG`-style filter (default `info`).
//!
//! The access log is the `breakwater::access` target (one line per
//! request); events are `breakwater::event`. Either can be filtered on its
//! own, e.g. `RUST_LOG=info,breakwater::access=off`.
//!
//! Human lines are for people: fields are `name=value` with a string
//! quoted only when it has to be (`detail="pid 12: exit 1"`, never
//! `kind="breaker"`), and an event reads as a sentence (`breaker api:
//! closed -> open (consecutive failures)`). JSON lines keep every field.
//! The demo's style is shorter still, for a terminal 80 columns wide: the
//! time of day, no target, and no access log unless `RUST_LOG` asks.

use std::fmt;
use std::sync::atomic::{AtomicBool, Ordering};

use tracing::field::{Field, Visit};
use tracing_subscriber::field::RecordFields;
use tracing_subscriber::fmt::format::Writer;
use tracing_subscriber::fmt::time::FormatTime;
use tracing_subscriber::fmt::FormatFields;
use tracing_subscriber::EnvFilter;

/// `--log-format`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum LogFormat {
    /// Human-readable lines.
    Human,
    /// One JSON object per line.
    Json,
}

/// Who reads the log.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Style {
    /// An operator or a collector: full timestamps and targets, every
    /// line, filter `info` unless `RUST_LOG` says otherwise.
    Standard,
    /// `breakwater demo`'s terminal: the time of day, no targets, and the
    /// access log off unless `RUST_LOG` says otherwise.
    Demo,
}

/// The demo's filter when `RUST_LOG` is not set.
pub const DEMO_FILTER: &str = "info,breakwater::access=off";

/// Whether log lines are for people (set once by [`init`]).
static HUMAN: AtomicBool = AtomicBool::new(true);

/// Whether the log is human-readable: events then log a sentence rather
/// than fields alone.
pub fn human() -> bool {
    HUMAN.load(Ordering::Relaxed)
}

/// Installs the global subscriber. Safe to call once per process.
pub fn init(format: LogFormat, style: Style) {
    let default = match style {
        Style::Standard => "info",
        Style::Demo => DEMO_FILTER,
    };
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(default));
    HUMAN.store(format == LogFormat::Human, Ordering::Relaxed);
    // Colour only on a terminal: log files and collectors get plain text.
    let ansi = std::io::IsTerminal::is_terminal(&std::io::stderr());
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(ansi);
    let result = match (format, style) {
        (LogFormat::Human, Style::Standard) => builder.fmt_fields(PlainFields).try_init(),
        (LogFormat::Human, Style::Demo) => builder
            .fmt_fields(PlainFields)
            .with_target(false)
            .with_timer(TimeOfDay)
            .try_init(),
        (LogFormat::Json, _) => builder
            .json()
            .flatten_event(true)
            .with_current_span(false)
            .try_init(),
    };
    if let Err(error) = result {
        eprintln!("breakwater: logging was already initialised: {error}");
    }
}

/// `HH:MM:SS` in UTC: enough to follow a demo.
struct TimeOfDay;

impl FormatTime for TimeOfDay {
    fn format_time(&self, writer: &mut Writer<'_>) -> fmt::Result {
        let seconds = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |since| since.as_secs())
            % 86_400;
        write!(
            writer,
            "{:02}:{:02}:{:02}",
            seconds / 3600,
            seconds / 60 % 60,
            seconds % 60
        )
    }
}

/// Human fields: the message as written, then `name=value`, a string
/// quoted only when it contains spaces, quotes or `=` (or is empty).
struct PlainFields;

impl<'writer> FormatFields<'writer> for PlainFields {
    fn format_fields<R: RecordFields>(&self, writer: Writer<'writer>, fields: R) -> fmt::Result {
        let mut visitor = PlainVisitor {
            writer,
            first: true,
            result: Ok(()),
        };
        fields.record(&mut visitor);
        visitor.result
    }
}

struct PlainVisitor<'writer> {
    writer: Writer<'writer>,
    first: bool,
    result: fmt::Result,
}

impl PlainVisitor<'_> {
    fn write(&mut self, field: &Field, value: &str) {
        if self.result.is_err() {
            return;
        }
        let name = field.name();
        // Fields the `log` crate bridge adds say nothing to a reader.
        if name.starts_with("log.") {
            return;
        }
        let separator = if std::mem::take(&mut self.first) {
            ""
        } else {
            " "
        };
        self.result = if name == "message" {
            write!(self.writer, "{separator}{value}")
        } else if needs_quotes(value) {
            write!(self.writer, "{separator}{name}=")
                .and_then(|()| write_quoted(&mut self.writer, value))
        } else {
            write!(self.writer, "{separator}{name}={value}")
        };
    }
}

impl Visit for PlainVisitor<'_> {
    fn record_str(&mut self, field: &Field, value: &str) {
        self.write(field, value);
    }

    fn record_error(&mut self, field: &Field, value: &(dyn std::error::Error + 'static)) {
        self.write(field, &value.to_string());
    }

    fn record_debug(&mut self, field: &Field, value: &dyn fmt::Debug) {
        // Messages and `%display` values arrive here already formatted
        // for people; numbers and booleans print as themselves.
        self.write(field, &format!("{value:?}"));
    }
}

fn needs_quotes(value: &str) -> bool {
    value.is_empty()
        || value
            .chars()
            .any(|c| c.is_whitespace() || c == '"' || c == '=' || c.is_control())
}

/// `"value"`, with quotes, backslashes and control characters escaped so
/// one event stays one line.
fn write_quoted(writer: &mut Writer<'_>, value: &str) -> fmt::Result {
    writer.write_char('"')?;
    for c in value.chars() {
        match c {
            '"' => writer.write_str("\\\"")?,
            '\\' => writer.write_str("\\\\")?,
            '\n' => writer.write_str("\\n")?,
            c if c.is_control() => write!(writer, "{}", c.escape_default())?,
            c => writer.write_char(c)?,
        }
    }
    writer.write_char('"')
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn strings_are_quoted_only_when_they_must_be() {
        assert!(!needs_quotes("breaker"));
        assert!(!needs_quotes("127.0.0.1:8080"));
        assert!(needs_quotes("pid 12: exit 1"));
        assert!(needs_quotes(""));
        assert!(needs_quotes("a=b"));
        let mut text = String::new();
        write_quoted(&mut Writer::new(&mut text), "say \"hi\"\nbye").unwrap();
        assert_eq!(text, "\"say \\\"hi\\\"\\nbye\"");
    }
}
