//! The daemon's log on stderr, in one of three forms:
//!
//! - under journald (`$JOURNAL_STREAM` set, as systemd sets it for a
//!   service whose stderr is the journal): no timestamp of our own (the
//!   journal adds one) and a `<N>` syslog priority prefix on every line, so
//!   `journalctl -p warning -u hookci` shows warnings and errors only;
//! - `HOOKCI_LOG_FORMAT=json`: one JSON object per line (`timestamp`,
//!   `level`, `target`, `message`, then the event's fields);
//! - otherwise tracing's plain text with timestamps (a terminal, a file).
//!
//! `HOOKCI_LOG` filters (`info` by default; `hookci=debug`, `warn`...).

use std::fmt::Write as _;
use std::io::IsTerminal;
use tracing::field::{Field, Visit};
use tracing::{Event, Level, Subscriber};
use tracing_subscriber::EnvFilter;
use tracing_subscriber::fmt::format::Writer;
use tracing_subscriber::fmt::{FmtContext, FormatEvent, FormatFields};
use tracing_subscriber::registry::LookupSpan;

/// How lines are written.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    /// tracing's text, with timestamps.
    Text,
    /// `<N>message key=value`, for the journal.
    Journal,
    /// One JSON object per line.
    Json,
}

impl Format {
    /// The form the environment asks for: `HOOKCI_LOG_FORMAT` (`json`,
    /// `journal`, `text`), else the journal when `$JOURNAL_STREAM` is set,
    /// else text.
    pub fn from_env() -> Format {
        match std::env::var("HOOKCI_LOG_FORMAT").ok().as_deref() {
            Some("json") => Format::Json,
            Some("journal") => Format::Journal,
            Some("text") => Format::Text,
            _ if std::env::var_os("JOURNAL_STREAM").is_some_and(|v| !v.is_empty()) => {
                Format::Journal
            }
            _ => Format::Text,
        }
    }
}

/// Installs the global subscriber on stderr.
pub fn init() {
    let filter = EnvFilter::try_from_env("HOOKCI_LOG").unwrap_or_else(|_| EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    match Format::from_env() {
        Format::Text => builder.with_ansi(std::io::stderr().is_terminal()).init(),
        format => builder
            .with_ansi(false)
            .event_format(Line { format })
            .init(),
    }
}

/// The journal and JSON line formats.
#[derive(Debug)]
pub struct Line {
    /// Journal or Json.
    pub format: Format,
}

/// The syslog priority journald reads from a `<N>` prefix.
pub fn priority(level: &Level) -> u8 {
    match *level {
        Level::ERROR => 3,
        Level::WARN => 4,
        Level::INFO => 6,
        _ => 7,
    }
}

/// An event's message and fields, as text.
#[derive(Default)]
struct Fields {
    message: String,
    pairs: Vec<(&'static str, String)>,
}

impl Visit for Fields {
    fn record_str(&mut self, field: &Field, value: &str) {
        if field.name() == "message" {
            self.message = value.to_owned();
        } else {
            self.pairs.push((field.name(), value.to_owned()));
        }
    }

    fn record_debug(&mut self, field: &Field, value: &dyn std::fmt::Debug) {
        let text = format!("{value:?}");
        if field.name() == "message" {
            self.message = text;
        } else {
            self.pairs.push((field.name(), text));
        }
    }
}

impl<S, N> FormatEvent<S, N> for Line
where
    S: Subscriber + for<'a> LookupSpan<'a>,
    N: for<'a> FormatFields<'a> + 'static,
{
    fn format_event(
        &self,
        _ctx: &FmtContext<'_, S, N>,
        mut writer: Writer<'_>,
        event: &Event<'_>,
    ) -> std::fmt::Result {
        let meta = event.metadata();
        let mut fields = Fields::default();
        event.record(&mut fields);
        let line = match self.format {
            Format::Json => json_line(meta.level(), meta.target(), &fields),
            _ => journal_line(meta.level(), &fields),
        };
        writeln!(writer, "{line}")
    }
}

fn journal_line(level: &Level, fields: &Fields) -> String {
    let mut out = format!("<{}>{}", priority(level), one_line(&fields.message));
    for (k, v) in &fields.pairs {
        let v = one_line(v);
        if v.is_empty() || v.contains([' ', '"', '=']) {
            let _ = write!(out, " {k}={v:?}");
        } else {
            let _ = write!(out, " {k}={v}");
        }
    }
    out
}

fn json_line(level: &Level, target: &str, fields: &Fields) -> String {
    let mut map = serde_json::Map::new();
    map.insert("timestamp".into(), crate::store::now_rfc3339().into());
    map.insert("level".into(), level.as_str().to_ascii_lowercase().into());
    map.insert("target".into(), target.into());
    map.insert("message".into(), fields.message.clone().into());
    for (k, v) in &fields.pairs {
        map.insert((*k).to_owned(), v.clone().into());
    }
    serde_json::Value::Object(map).to_string()
}

/// A journal entry is one line: newlines in a value become spaces.
fn one_line(s: &str) -> String {
    s.replace(['\n', '\r'], " ")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fields(message: &str, pairs: &[(&'static str, &str)]) -> Fields {
        Fields {
            message: message.to_owned(),
            pairs: pairs.iter().map(|(k, v)| (*k, (*v).to_owned())).collect(),
        }
    }

    #[test]
    fn journal_lines_carry_the_priority_and_no_timestamp() {
        let f = fields("build started", &[("build", "3"), ("branch", "feature x")]);
        assert_eq!(
            journal_line(&Level::WARN, &f),
            "<4>build started build=3 branch=\"feature x\""
        );
        assert_eq!(journal_line(&Level::ERROR, &fields("a\nb", &[])), "<3>a b");
        assert_eq!(priority(&Level::INFO), 6);
        assert_eq!(priority(&Level::DEBUG), 7);
    }

    #[test]
    fn json_lines_are_objects_with_the_fields() {
        let f = fields("delivery", &[("pipeline", "app"), ("answer", "202")]);
        let v: serde_json::Value =
            serde_json::from_str(&json_line(&Level::INFO, "hookci::http", &f)).unwrap();
        assert_eq!(v["level"], "info");
        assert_eq!(v["message"], "delivery");
        assert_eq!(v["pipeline"], "app");
        assert_eq!(v["answer"], "202");
        assert!(v["timestamp"].as_str().is_some());
    }
}
