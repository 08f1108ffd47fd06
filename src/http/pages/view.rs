//! The pages' templates (maud: every `(value)` is escaped), their style
//! sheet and the live-log script.

use super::logtail::LogTail;
use crate::store::{Build, BuildStatus, ReportOutcome, ReportRecord, StepRecord, StepStatus};
use maud::{DOCTYPE, Markup, PreEscaped, html};
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;

/// The pages' one style sheet (inline; allowed by its hash).
pub const STYLE: &str = r#"
body{font:14px/1.45 system-ui,-apple-system,"Segoe UI",sans-serif;margin:0 auto;max-width:72rem;padding:0 1rem 2rem;color:#1f2328;background:#fff}
a{color:#0550ae;text-decoration:none}a:hover{text-decoration:underline}
header{display:flex;gap:.5rem;align-items:baseline;padding:.8rem 0;border-bottom:1px solid #d0d7de;margin-bottom:1rem}
header .home{font-weight:700;color:#1f2328}
h1{font-size:1.4rem;margin:.2rem 0}h2{font-size:1.1rem;margin:1.6rem 0 .5rem}
table{border-collapse:collapse;width:100%}
th,td{text-align:left;padding:.3rem .6rem;border-bottom:1px solid #d8dee4;vertical-align:top}
th{font-weight:600;background:#f6f8fa}
td.num{text-align:right;font-variant-numeric:tabular-nums}
code,pre,.mono{font-family:ui-monospace,SFMono-Regular,Menlo,Consolas,monospace;font-size:12.5px}
dl{display:grid;grid-template-columns:max-content 1fr;gap:.25rem 1rem;margin:1rem 0}
dt{color:#59636e}dd{margin:0;overflow-wrap:anywhere}
.st{display:inline-block;padding:0 .5rem;border-radius:1rem;font-weight:600;font-size:12px;color:#fff;background:#6e7781}
.st-success{background:#1a7f37}.st-failure{background:#cf222e}.st-error{background:#a40e26}
.st-running{background:#9a6700}.st-queued{background:#0969da}.st-pending{background:#0969da}
.st-cancelled,.st-skipped,.st-superseded{background:#6e7781}.st-delivered{background:#1a7f37}.st-failed{background:#cf222e}
.subject{font-size:1.05rem;margin:.3rem 0;overflow-wrap:anywhere}
.muted{color:#59636e}.reason{margin-left:.4rem}
pre.msg{white-space:pre-wrap;overflow-wrap:anywhere;background:#f6f8fa;padding:.6rem;border-radius:6px}
pre#log{background:#0d1117;color:#e6edf3;padding:.8rem;border-radius:6px;overflow-x:auto;white-space:pre-wrap;overflow-wrap:anywhere;min-height:3rem}
.note{background:#fff8c5;border:1px solid #d4a72c;padding:.4rem .6rem;border-radius:6px;margin:.5rem 0}
.nav{margin:.8rem 0}.nav a{margin-right:1rem}
"#;

/// Follows a queued or running build's log: the Server-Sent Events stream
/// waits for a queued build to start, sends the whole log from the start,
/// then `end` (with the final status) and closes; the page then reloads to
/// show the final state. Reads its URL from the page.
pub const LIVE_SCRIPT: &str = r#"
(function () {
  var log = document.getElementById('log');
  if (!log || !window.EventSource) return;
  var max = 1048576, text = '', timer = null;
  function clean(s) {
    return s.replace(/\x1b\[[0-?]*[ -\/]*[@-~]/g, '').replace(/[^\n]*\r(?!\n)/g, '');
  }
  function show() {
    timer = null;
    var atEnd = window.innerHeight + window.scrollY >= document.body.scrollHeight - 40;
    log.textContent = clean(text.length > max ? text.slice(-max) : text);
    if (atEnd) window.scrollTo(0, document.body.scrollHeight);
  }
  function reload(ms) { setTimeout(function () { location.reload(); }, ms); }
  var es = new EventSource(log.getAttribute('data-stream'));
  es.onopen = function () { text = ''; };
  es.onmessage = function (e) {
    text += e.data;
    if (text.length > 2 * max) text = text.slice(-max);
    if (!timer) timer = setTimeout(show, 200);
  };
  // `end` (its data is the final status): show the final page.
  es.addEventListener('end', function () { es.close(); show(); reload(1000); });
  // The stream could not be opened, or the server went away: a browser
  // would reconnect and replay the log; reload instead.
  es.onerror = function () { es.close(); reload(text ? 1000 : 5000); };
})();
"#;

/// The frame of every page.
fn layout(title: &str, head_extra: Markup, crumbs: Markup, body: Markup) -> Markup {
    html! {
        (DOCTYPE)
        html lang="en" {
            head {
                meta charset="utf-8";
                meta name="viewport" content="width=device-width, initial-scale=1";
                meta name="referrer" content="no-referrer";
                title { (title) " · hookci" }
                style { (PreEscaped(STYLE)) }
                (head_extra)
            }
            body {
                header {
                    a.home href="/" { "hookci" }
                    (crumbs)
                }
                main { (body) }
            }
        }
    }
}

/// A page with one sentence: errors, the sign-in prompt.
pub fn message_page(title: &str, sentence: &str) -> Markup {
    layout(title, html! {}, html! {}, html! { p { (sentence) } })
}

/// A status word as a coloured label.
fn status_label(word: &str) -> Markup {
    html! { span class={ "st st-" (word) } { (word) } }
}

fn report_outcome(outcome: ReportOutcome) -> &'static str {
    match outcome {
        ReportOutcome::Pending => "pending",
        ReportOutcome::Delivered => "delivered",
        ReportOutcome::Failed => "failed",
        ReportOutcome::Superseded => "superseded",
    }
}

/// The first `n` characters of `s` (a short commit id).
fn short(s: &str, n: usize) -> String {
    s.chars().take(n).collect()
}

/// A commit message's first line, at most 100 characters.
fn subject(message: &str) -> String {
    let line = message.lines().next().unwrap_or("").trim();
    if line.chars().count() > 100 {
        format!("{}…", short(line, 99))
    } else {
        line.to_owned()
    }
}

fn parse_time(s: &str) -> Option<OffsetDateTime> {
    OffsetDateTime::parse(s, &Rfc3339).ok()
}

/// An RFC 3339 time as `2026-01-31 12:34:56` (UTC), the stored string in
/// its title.
fn when(s: Option<&str>) -> Markup {
    match s {
        None => html! { span.muted { "–" } },
        Some(s) => {
            let compact = match parse_time(s) {
                Some(t) => {
                    let t = t.to_offset(time::UtcOffset::UTC);
                    format!(
                        "{:04}-{:02}-{:02} {:02}:{:02}:{:02}",
                        t.year(),
                        u8::from(t.month()),
                        t.day(),
                        t.hour(),
                        t.minute(),
                        t.second()
                    )
                }
                None => s.to_owned(),
            };
            html! { time datetime=(s) title=(s) { (compact) } }
        }
    }
}

/// From `start` to `end` (or to `now` while it runs), as `1m 12s`.
fn duration(start: Option<&str>, end: Option<&str>, now: OffsetDateTime) -> Option<String> {
    let start = parse_time(start?)?;
    let end = match end {
        Some(end) => parse_time(end)?,
        None => now,
    };
    let millis = i64::try_from((end - start).whole_milliseconds()).unwrap_or(i64::MAX);
    Some(human_duration(millis.max(0)))
}

/// Milliseconds as `850ms`, `45s`, `1m 12s` or `2h 5m`.
pub fn human_duration(millis: i64) -> String {
    let secs = millis / 1000;
    let (h, m, s) = (secs / 3600, secs % 3600 / 60, secs % 60);
    if secs == 0 {
        format!("{millis}ms")
    } else if h > 0 {
        format!("{h}h {m}m")
    } else if m > 0 {
        format!("{m}m {s}s")
    } else {
        format!("{s}s")
    }
}

/// A build's duration cell: total when finished, so far while running.
fn build_duration(b: &Build, now: OffsetDateTime) -> Markup {
    let end = b.finished_at.as_deref();
    match duration(b.started_at.as_deref(), end, now) {
        Some(d) if end.is_none() && !b.status.is_final() => html! { (d) span.muted { " so far" } },
        Some(d) => html! { (d) },
        None => html! { span.muted { "–" } },
    }
}

/// The ref a build is for: its branch, its tag, or the full ref.
fn ref_label(b: &Build) -> Markup {
    match (&b.branch, &b.tag) {
        (Some(branch), _) => html! { span.mono title=(b.git_ref) { (branch) } },
        (None, Some(tag)) => html! { span.mono title=(b.git_ref) { "tag " (tag) } },
        (None, None) => html! { span.mono { (b.git_ref) } },
    }
}

/// A link to a build's page.
fn build_link(id: i64) -> Markup {
    html! { a href={ "/builds/" (id) } { "#" (id) } }
}

/// `s` percent-encoded for a query string value.
fn query_value(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'~') {
            out.push(char::from(b));
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// A pipeline on the index page.
#[derive(Debug)]
pub struct PipelineRow {
    pub name: String,
    pub repo: String,
    pub latest: Option<Build>,
}

/// What the index page lists.
#[derive(Debug, Default)]
pub struct IndexFilter {
    pub pipeline: Option<String>,
    pub branch: Option<String>,
    pub before: Option<i64>,
}

impl IndexFilter {
    /// `/?...` for this filter, paged before `before`.
    fn link(&self, before: Option<i64>) -> String {
        let mut parts = Vec::new();
        if let Some(p) = &self.pipeline {
            parts.push(format!("pipeline={}", query_value(p)));
        }
        if let Some(b) = &self.branch {
            parts.push(format!("branch={}", query_value(b)));
        }
        if let Some(id) = before {
            parts.push(format!("before={id}"));
        }
        if parts.is_empty() {
            "/".to_owned()
        } else {
            format!("/?{}", parts.join("&"))
        }
    }
}

/// The index page's data.
#[derive(Debug)]
pub struct Index<'a> {
    pub public_url: &'a str,
    pub pipelines: &'a [PipelineRow],
    pub builds: &'a [Build],
    pub filter: &'a IndexFilter,
    /// The `before` of the next (older) page, when there may be one.
    pub older: Option<i64>,
    pub now: OffsetDateTime,
}

/// `GET /`.
pub fn index(page: &Index<'_>) -> Markup {
    let filter = page.filter;
    let filtered = filter.pipeline.is_some() || filter.branch.is_some();
    let body = html! {
        h1 { "Pipelines" }
        @if page.pipelines.is_empty() {
            p.muted { "No pipelines are loaded." }
        } @else {
            table {
                thead { tr { th { "Pipeline" } th { "Repository" } th { "Latest build" } th { "Badge" } } }
                tbody {
                    @for p in page.pipelines {
                        tr {
                            td { a href={ "/?pipeline=" (query_value(&p.name)) } { (p.name) } }
                            td.mono { (p.repo) }
                            td {
                                @match &p.latest {
                                    Some(b) => {
                                        (build_link(b.id)) " " (status_label(b.status.as_str()))
                                        " " span.muted { (ref_label(b)) }
                                    }
                                    None => span.muted { "no builds yet" },
                                }
                            }
                            td {
                                details {
                                    summary {
                                        img src={ "/badge/" (p.name) ".svg" } alt={ (p.name) " build status" } height="20";
                                    }
                                    code.mono {
                                        "[![build](" (page.public_url) "/badge/" (p.name) ".svg)]("
                                        (page.public_url) "/?pipeline=" (query_value(&p.name)) ")"
                                    }
                                }
                            }
                        }
                    }
                }
            }
        }
        h2 {
            "Builds"
            @if let Some(p) = &filter.pipeline { " of " span.mono { (p) } }
            @if let Some(b) = &filter.branch { " on " span.mono { (b) } }
            @if let Some(before) = filter.before { " before #" (before) }
        }
        @if filtered || filter.before.is_some() {
            p.nav {
                @if filter.before.is_some() { a href=(filter.link(None)) { "Newest" } }
                @if filtered { a href="/" { "All builds" } }
            }
        }
        @if page.builds.is_empty() {
            p.muted { "No builds." }
        } @else {
            table {
                thead { tr {
                    th { "Build" } th { "Pipeline" } th { "Ref" } th { "Commit" }
                    th { "Status" } th { "Created" } th { "Duration" }
                } }
                tbody {
                    @for b in page.builds {
                        tr {
                            td { (build_link(b.id)) }
                            td { a href={ "/?pipeline=" (query_value(&b.pipeline)) } { (b.pipeline) } }
                            td { (ref_label(b)) }
                            td {
                                span.mono title=(b.commit) { (short(&b.commit, 8)) }
                                " " span.muted { (subject(&b.message)) }
                            }
                            td {
                                (status_label(b.status.as_str()))
                                @if let Some(reason) = &b.reason { span.muted.reason { (reason) } }
                            }
                            td { (when(Some(&b.created_at))) }
                            td { (build_duration(b, page.now)) }
                        }
                    }
                }
            }
        }
        @if let Some(older) = page.older {
            p.nav { a href=(filter.link(Some(older))) { "Older builds →" } }
        }
    };
    layout("Builds", html! {}, html! {}, body)
}

/// The build page's data.
#[derive(Debug)]
pub struct BuildPage<'a> {
    pub build: &'a Build,
    pub steps: &'a [StepRecord],
    pub reports: &'a [ReportRecord],
    /// `None` when the log could not be read.
    pub log: Option<&'a LogTail>,
    pub now: OffsetDateTime,
}

/// `GET /builds/ID`.
pub fn build(page: &BuildPage<'_>) -> Markup {
    let b = page.build;
    let live = matches!(b.status, BuildStatus::Queued | BuildStatus::Running);
    // A queued or running build follows its log by script (the stream of a
    // queued build waits for it to start), or reloads without script.
    let head = html! {
        @match b.status {
            BuildStatus::Queued | BuildStatus::Running => {
                noscript { meta http-equiv="refresh" content="10"; }
            },
            BuildStatus::Success
            | BuildStatus::Failure
            | BuildStatus::Error
            | BuildStatus::Cancelled
            | BuildStatus::Skipped => {},
        }
    };
    let crumbs = html! {
        span.muted { "›" }
        a href={ "/?pipeline=" (query_value(&b.pipeline)) } { (b.pipeline) }
        span.muted { "›" }
        span { "#" (b.id) }
    };
    let has_body = b
        .message
        .trim()
        .split_once('\n')
        .is_some_and(|(_, rest)| !rest.trim().is_empty());
    let web_url = b
        .web_url
        .as_deref()
        .filter(|u| u.starts_with("https://") || u.starts_with("http://"));
    let body = html! {
        h1 { "Build #" (b.id) " " (status_label(b.status.as_str())) }
        p.subject { (subject(&b.message)) }
        @if has_body {
            details { summary.muted { "Full commit message" } pre.msg { (b.message) } }
        }
        dl {
            dt { "Status" }
            dd {
                (status_label(b.status.as_str()))
                @if let Some(reason) = &b.reason { span.reason { (reason) } }
            }
            dt { "Pipeline" }
            dd { a href={ "/?pipeline=" (query_value(&b.pipeline)) } { (b.pipeline) } }
            dt { "Repository" }
            dd.mono {
                @if let Some(url) = web_url { a href=(url) rel="noreferrer" { (b.repo) } } @else { (b.repo) }
            }
            dt { "Ref" }
            dd {
                @match (&b.branch, &b.tag) {
                    (Some(branch), _) => { "branch " span.mono title=(b.git_ref) { (branch) } },
                    (None, Some(tag)) => { "tag " span.mono title=(b.git_ref) { (tag) } },
                    (None, None) => span.mono { (b.git_ref) },
                }
            }
            dt { "Commit" }
            dd { span.mono title=(b.commit) { (short(&b.commit, 12)) } }
            @if !b.before.is_empty() && b.before.bytes().any(|c| c != b'0') {
                dt { "Before" }
                dd { span.mono title=(b.before) { (short(&b.before, 12)) } }
            }
            dt { "Event" }
            dd {
                (b.event)
                @if let Some(host) = &b.host { span.muted { " from " (host) } }
                @if b.forced { span.muted { " (forced)" } }
            }
            @if !b.pusher.is_empty() {
                dt { "Pushed by" }
                dd { (b.pusher) }
            }
            @if let Some(delivery) = &b.delivery {
                dt { "Delivery" }
                dd.mono { (delivery) }
            }
            dt { "Attempt" }
            dd { (b.attempt) }
            dt { "Created" }
            dd { (when(Some(&b.created_at))) }
            dt { "Started" }
            dd { (when(b.started_at.as_deref())) }
            dt { "Finished" }
            dd { (when(b.finished_at.as_deref())) }
            dt { "Duration" }
            dd { (build_duration(b, page.now)) }
        }

        h2 { "Steps" }
        @if page.steps.is_empty() {
            p.muted { "No steps have been recorded." }
        } @else {
            table {
                thead { tr { th { "Step" } th { "Status" } th.num { "Exit code" } th.num { "Duration" } } }
                tbody {
                    @for s in page.steps {
                        tr {
                            td.mono { (s.name) }
                            td { (status_label(s.status.as_str())) }
                            td.num {
                                @match s.exit_code { Some(code) => (code), None => span.muted { "–" } }
                            }
                            td.num {
                                @match step_duration(s, page.now) {
                                    Some(d) => (d),
                                    None => span.muted { "–" },
                                }
                            }
                        }
                    }
                }
            }
        }

        h2 { "Commit statuses" }
        @if page.reports.is_empty() {
            p.muted { "No status reports." }
        } @else {
            table {
                thead { tr {
                    th { "Context" } th { "State" } th { "Outcome" } th.num { "Attempts" }
                    th { "Written" } th { "Delivered" } th { "Last error" }
                } }
                tbody {
                    @for r in page.reports {
                        tr {
                            td.mono { (r.context) }
                            td { (r.state) }
                            td { (status_label(report_outcome(r.outcome))) }
                            td.num { (r.attempts) }
                            td { (when(Some(&r.created_at))) }
                            td { (when(r.delivered_at.as_deref())) }
                            td { @if let Some(e) = &r.last_error { (e) } }
                        }
                    }
                }
            }
        }

        h2 { "Log" }
        p.nav {
            a href={ "/api/builds/" (b.id) "/log" } { "Raw log" }
            a href={ "/api/builds/" (b.id) } { "JSON" }
        }
        @match page.log {
            None => p.note { "The log cannot be read." },
            Some(log) => {
                @if log.skipped > 0 {
                    p.note {
                        "The log is long: this page shows its last part, from byte "
                        (log.skipped) ". "
                        a href={ "/api/builds/" (b.id) "/log" } { "The whole log" }
                        " is plain text."
                    }
                }
                @if log.missing && !live {
                    p.muted { "This build has no log." }
                }
                @if live {
                    pre #log data-stream={ "/api/builds/" (b.id) "/log/stream" } { (log.text) }
                    script { (PreEscaped(LIVE_SCRIPT)) }
                } @else if !log.missing {
                    pre #log { (log.text) }
                }
            }
        }
    };
    let title = format!("#{} {} {}", b.id, b.pipeline, b.status.as_str());
    layout(&title, head, crumbs, body)
}

fn step_duration(s: &StepRecord, now: OffsetDateTime) -> Option<String> {
    match s.status {
        StepStatus::Pending | StepStatus::Skipped => None,
        StepStatus::Running => duration(s.started_at.as_deref(), None, now),
        StepStatus::Success | StepStatus::Failure | StepStatus::Cancelled => {
            duration(s.started_at.as_deref(), s.finished_at.as_deref(), now)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_read_as_a_person_would_say_them() {
        assert_eq!(human_duration(0), "0ms");
        assert_eq!(human_duration(850), "850ms");
        assert_eq!(human_duration(59_999), "59s");
        assert_eq!(human_duration(72_000), "1m 12s");
        assert_eq!(human_duration((3600 + 5 * 60 + 9) * 1000), "1h 5m");
    }

    #[test]
    fn query_values_are_percent_encoded() {
        assert_eq!(query_value("a b&c=d/é"), "a%20b%26c%3Dd%2F%C3%A9");
    }
}
