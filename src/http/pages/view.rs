//! The pages' templates (maud: every `(value)` is escaped), their style
//! sheet and the live-log script.

use super::logview::Section;
use crate::pipeline::Provider;
use crate::report::Phase;
use crate::store::{
    Build, BuildOrigin, BuildStatus, ReportOutcome, ReportRecord, StepRecord, StepStatus,
};
use crate::text::url_component;
use crate::webhook::Host;
use maud::{DOCTYPE, Markup, PreEscaped, html};
use time::OffsetDateTime;

/// The pages' one style sheet (inline; allowed by its hash): the base
/// sheet, the log's colour palette, and the dark variant.
pub static STYLE: std::sync::LazyLock<String> = std::sync::LazyLock::new(|| {
    format!("{BASE_STYLE}{}{DARK_STYLE}", super::logview::palette_css())
});

const BASE_STYLE: &str = r#"
body{font:14px/1.45 system-ui,-apple-system,"Segoe UI",sans-serif;margin:0 auto;max-width:72rem;padding:0 1rem 2rem;color:#1f2328;background:#fff}
a{color:#0550ae;text-decoration:none}a:hover{text-decoration:underline}
header{display:flex;flex-wrap:wrap;gap:.5rem;align-items:baseline;padding:.8rem 0;border-bottom:1px solid #d0d7de;margin-bottom:1rem}
header .home{font-weight:700;color:inherit}
h1{font-size:1.4rem;margin:.2rem 0}h2{font-size:1.1rem;margin:1.6rem 0 .5rem}
table{border-collapse:collapse;width:100%}
th,td{text-align:left;padding:.3rem .6rem;border-bottom:1px solid #d8dee4;vertical-align:top}
th{font-weight:600;background:#f6f8fa}
td.num{text-align:right;font-variant-numeric:tabular-nums}
code,pre,.mono{font-family:ui-monospace,SFMono-Regular,Menlo,Consolas,monospace;font-size:12.5px}
dl{display:grid;grid-template-columns:max-content 1fr;gap:.25rem 1rem;margin:1rem 0}
dt{color:#59636e}dd{margin:0;overflow-wrap:anywhere}
.st{display:inline-block;padding:0 .5rem;border-radius:1rem;font-weight:600;font-size:12px;color:#fff;background:#6e7781;white-space:nowrap}
.st-success{background:#1a7f37}.st-failure{background:#cf222e}.st-error{background:#a40e26}
.st-waiting{background:#8250df}.st-running{background:#9a6700}.st-queued{background:#0969da}.st-pending{background:#0969da}
.st-cancelled,.st-skipped,.st-superseded{background:#6e7781}.st-delivered{background:#1a7f37}.st-failed{background:#cf222e}
.st-allowed{background:#fff;color:#9a6700;box-shadow:inset 0 0 0 1px #9a6700}
.subject{font-size:1.05rem;margin:.3rem 0;overflow-wrap:anywhere}
.muted{color:#59636e}.reason{margin-left:.4rem}
pre.msg{white-space:pre-wrap;overflow-wrap:anywhere;background:#f6f8fa;padding:.6rem;border-radius:6px}
.note{background:#fff8c5;border:1px solid #d4a72c;padding:.4rem .6rem;border-radius:6px;margin:.5rem 0}
.nav{margin:.8rem 0}.nav a{margin-right:1rem}
form.filters{display:flex;flex-wrap:wrap;gap:.4rem;align-items:end;margin:.5rem 0}
form.filters label{display:flex;flex-direction:column;font-size:12px;color:#59636e}
input,select,button{font:inherit;padding:.2rem .4rem;border:1px solid #d0d7de;border-radius:6px;background:#fff;color:inherit}
button{cursor:pointer;background:#f6f8fa}button.primary{background:#1f883d;color:#fff;border-color:#1a7f37}
.actions{display:flex;flex-wrap:wrap;gap:.4rem;align-items:center;margin:.6rem 0}
#act-msg:empty{display:none}
#log{background:#0d1117;color:#e6edf3;border-radius:6px;font:12.5px/1.5 ui-monospace,SFMono-Regular,Menlo,Consolas,monospace;min-height:3rem;overflow:hidden}
#log>details>summary{padding:.35rem .6rem;cursor:pointer;border-top:1px solid #30363d;font-family:system-ui,sans-serif;font-size:13px}
#log>details:first-child>summary{border-top:0}
#log>details[open]>summary{background:#161b22}
.sum{display:inline-flex;gap:.6rem;align-items:center}.sum .name{font-weight:600}.sum .dur{color:#8b949e}
.lines{padding:.2rem 0}
.lines div,.grp>summary{position:relative;min-height:1.5em;padding-left:5.2em;padding-right:.6rem;white-space:pre-wrap;overflow-wrap:anywhere}
.lines div:target,.grp>summary:target{background:#3b2e00}
.lines div>a:first-child,.grp>summary>a:first-child{position:absolute;left:0;width:4.4em;text-align:right;color:#6e7681;user-select:none}
.grp>summary{cursor:pointer;color:#d2a8ff;list-style-position:inside}.grp>div{padding-left:6.2em}
.earlier{padding:.4rem .6rem}
.ts{color:#8b949e;margin-right:.8em;user-select:none;font-variant-numeric:tabular-nums}
@media (max-width:640px){body{padding:0 .5rem 1rem}th,td{padding:.25rem .35rem}.wide{display:none}.lines div,.grp>summary{padding-left:3.6em}.lines div>a:first-child,.grp>summary>a:first-child{width:3em}dl{grid-template-columns:max-content minmax(0,1fr)}}
"#;

const DARK_STYLE: &str = r#"
@media (prefers-color-scheme:dark){
body{color:#e6edf3;background:#0d1117}a{color:#58a6ff}
header{border-color:#30363d}th{background:#161b22}th,td{border-color:#30363d}
dt,.muted,form.filters label{color:#8b949e}
pre.msg{background:#161b22}.note{background:#2e2a1a;border-color:#9e6a03}
input,select,button{background:#0d1117;border-color:#30363d}button{background:#21262d}
.st-allowed{background:#0d1117;color:#d29922;box-shadow:inset 0 0 0 1px #d29922}
#log{background:#010409;box-shadow:inset 0 0 0 1px #30363d}
}
"#;

/// The pages' one script (allowed by its hash). Everything it does reads
/// its data from the page's `data-` attributes:
/// - opens the fold holding the `#L123` the URL names, or jumps to the
///   failing step;
/// - on a queued or running build's page, follows `/builds/ID/live`: log
///   lines (rendered by the server, escaped there) go into their step's
///   section, and `state` events replace the status, facts, step table and
///   section headings; at `end` the page reloads to its final form;
/// - on the index, follows `/live` and re-reads the page when a build
///   starts or ends;
/// - the action buttons POST with the admin token kept in sessionStorage
///   (sent as `Authorization: Bearer`, with a JSON body and Content-Type,
///   which a cross-site form cannot send).
pub const SCRIPT: &str = r#"
(function () {
  var d = document;
  function $(id) { return d.getElementById(id); }
  function openTo(el) {
    for (var p = el; p; p = p.parentElement) if (p.tagName === 'DETAILS') p.open = true;
    el.scrollIntoView({block: 'center'});
  }
  function target() {
    var el = location.hash.length > 1 && $(decodeURIComponent(location.hash.slice(1)));
    if (el) openTo(el); else if (!location.hash) {
      var f = d.querySelector('[data-jump]');
      if (f) openTo(f);
    }
  }
  window.addEventListener('hashchange', target);
  target();
  var log = $('log'), src = log && log.getAttribute('data-live');
  if (src && window.EventSource) {
    var cur = log.getAttribute('data-sec'), grp = null;
    if (log.getAttribute('data-grp') === '1') {
      var gs = $('sec-' + cur).querySelectorAll('details.grp');
      grp = gs[gs.length - 1] || null;
    }
    var es = new EventSource(src);
    es.addEventListener('log', function (e) {
      var end = window.innerHeight + window.scrollY >= d.body.scrollHeight - 40;
      JSON.parse(e.data).forEach(function (o) {
        var sec = $('sec-' + cur), body = sec && sec.querySelector('.lines');
        if ('s' in o) { cur = o.s; grp = null; sec = $('sec-' + cur); if (sec) sec.open = true; }
        else if (!body) return;
        else if ('g' in o) { body.insertAdjacentHTML('beforeend', o.g); grp = body.lastElementChild; }
        else if ('e' in o) grp = null;
        else (grp || body).insertAdjacentHTML('beforeend', o.l);
      });
      if (end) window.scrollTo(0, d.body.scrollHeight);
    });
    es.addEventListener('state', function (e) {
      var s = JSON.parse(e.data);
      for (var id in s) { var el = $(id); if (el) el.innerHTML = s[id]; }
    });
    es.addEventListener('end', function () { es.close(); location.reload(); });
    es.onerror = function () { es.close(); setTimeout(function () { location.reload(); }, 3000); };
  }
  var idx = d.body.getAttribute('data-index-live');
  if (idx && window.EventSource) {
    var ies = new EventSource(idx);
    ies.addEventListener('changed', function () {
      fetch(location.href).then(function (r) { return r.text(); }).then(function (t) {
        var n = new DOMParser().parseFromString(t, 'text/html');
        ['pipelines', 'builds'].forEach(function (id) {
          if ($(id) && n.getElementById(id)) $(id).innerHTML = n.getElementById(id).innerHTML;
        });
      });
    });
  }
  var more = $('earlier');
  if (more) more.addEventListener('click', function () {
    fetch(more.getAttribute('data-src')).then(function (r) {
      if (!r.ok) throw new Error('' + r.status);
      return r.text();
    }).then(function (t) {
      var n = new DOMParser().parseFromString(t, 'text/html');
      var parts = n.querySelectorAll('.part');
      for (var i = parts.length - 1; i >= 0; i--) {
        var sec = $('sec-' + parts[i].getAttribute('data-sec')), body = sec && sec.querySelector('.lines');
        if (!body) continue;
        while (parts[i].lastChild) body.insertBefore(parts[i].lastChild, body.firstChild);
      }
      var next = n.body.firstElementChild && n.body.firstElementChild.getAttribute('data-next');
      if (next) more.setAttribute('data-src', next); else more.parentNode.removeChild(more);
    }).catch(function (e) { more.textContent = 'Could not load: ' + e.message; });
  });
  var KEY = 'hookci-admin-token', msg = $('act-msg'), tok = $('token');
  function say(t) { if (msg) msg.textContent = t; }
  if ($('token-save')) $('token-save').addEventListener('click', function () {
    if (tok.value) { sessionStorage.setItem(KEY, tok.value.trim()); tok.value = ''; say('Token kept for this tab.'); }
  });
  if ($('token-forget')) $('token-forget').addEventListener('click', function () {
    sessionStorage.removeItem(KEY); say('Token forgotten.');
  });
  Array.prototype.forEach.call(d.querySelectorAll('button[data-post]'), function (b) {
    b.addEventListener('click', function () {
      var t = sessionStorage.getItem(KEY);
      if (!t) { var f = $('token-form'); if (f) f.open = true; say('Paste the admin token first.'); return; }
      var body = {}, br = b.getAttribute('data-branch-from');
      if (br) body.branch = $(br).value;
      b.disabled = true;
      fetch(b.getAttribute('data-post'), {
        method: 'POST',
        headers: {'Authorization': 'Bearer ' + t, 'Content-Type': 'application/json'},
        body: JSON.stringify(body)
      }).then(function (r) {
        return r.json().catch(function () { return {}; }).then(function (j) {
          b.disabled = false;
          if (!r.ok) { say(j.error || ('HTTP ' + r.status)); return; }
          if (j.id && j.id !== +b.getAttribute('data-build')) location.href = '/builds/' + j.id;
          else location.reload();
        });
      }, function () { b.disabled = false; say('The server did not answer.'); });
    });
  });
})();
"#;

/// The frame of every page. `index_live`: the index's change stream.
fn layout(
    title: &str,
    head_extra: Markup,
    crumbs: Markup,
    body: Markup,
    index_live: Option<&str>,
) -> Markup {
    html! {
        (DOCTYPE)
        html lang="en" {
            head {
                meta charset="utf-8";
                meta name="viewport" content="width=device-width, initial-scale=1";
                meta name="referrer" content="no-referrer";
                meta name="color-scheme" content="light dark";
                title { (title) " · hookci" }
                style { (PreEscaped(STYLE.as_str())) }
                (head_extra)
            }
            body data-index-live=[index_live] {
                header {
                    a.home href="/" { "hookci" }
                    (crumbs)
                }
                main { (body) }
                script { (PreEscaped(SCRIPT)) }
            }
        }
    }
}

/// A page with one sentence: errors, the sign-in prompt.
pub fn message_page(title: &str, sentence: &str) -> Markup {
    layout(title, html! {}, html! {}, html! { p { (sentence) } }, None)
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

/// An RFC 3339 time as `2026-01-31 12:34:56 UTC`.
fn absolute(t: OffsetDateTime) -> String {
    let t = t.to_offset(time::UtcOffset::UTC);
    format!(
        "{:04}-{:02}-{:02} {:02}:{:02}:{:02} UTC",
        t.year(),
        u8::from(t.month()),
        t.day(),
        t.hour(),
        t.minute(),
        t.second()
    )
}

/// How long ago `then` was, as a person says it: `just now`, `5 min ago`,
/// `3 h ago`, `2 days ago`; past a month, the date.
pub fn ago(then: OffsetDateTime, now: OffsetDateTime) -> String {
    let secs = (now - then).whole_seconds();
    match secs {
        s if s < 10 => "just now".to_owned(),
        s if s < 60 => format!("{s} s ago"),
        s if s < 3600 => format!("{} min ago", s / 60),
        s if s < 86_400 => format!("{} h ago", s / 3600),
        s if s < 2 * 86_400 => "yesterday".to_owned(),
        s if s < 31 * 86_400 => format!("{} days ago", s / 86_400),
        _ => {
            let t = then.to_offset(time::UtcOffset::UTC);
            format!("{:04}-{:02}-{:02}", t.year(), u8::from(t.month()), t.day())
        }
    }
}

/// A stored time, relative to `now`, with the absolute time on hover.
fn when(t: Option<OffsetDateTime>, now: OffsetDateTime) -> Markup {
    match t {
        None => html! { span.muted { "–" } },
        Some(t) => {
            html! { time datetime=(crate::model::rfc3339(t)) title=(absolute(t)) { (ago(t, now)) } }
        }
    }
}

/// From `start` to `end` (or to `now` while it runs), as `1m 12s`.
fn duration(
    start: Option<OffsetDateTime>,
    end: Option<OffsetDateTime>,
    now: OffsetDateTime,
) -> Option<String> {
    let start = start?;
    let end = end.unwrap_or(now);
    let millis = i64::try_from((end - start).whole_milliseconds()).unwrap_or(i64::MAX);
    Some(human_duration(millis.max(0)))
}

/// Milliseconds (none below zero) as `850ms`, `45s`, `1m 12s` or `2h 5m`:
/// see [`crate::text::duration`].
pub fn human_duration(millis: i64) -> String {
    crate::text::duration(std::time::Duration::from_millis(
        u64::try_from(millis).unwrap_or(0),
    ))
}

/// A build's duration cell: total when finished, so far while running.
fn build_duration(b: &Build, now: OffsetDateTime) -> Markup {
    let end = b.finished_at;
    match duration(b.started_at, end, now) {
        Some(d) if end.is_none() && !b.status.is_final() => html! { (d) span.muted { " so far" } },
        Some(d) => html! { (d) },
        None => html! { span.muted { "–" } },
    }
}

/// The ref a build is for: its branch, its tag, or the full ref.
fn ref_label(b: &Build) -> Markup {
    if let Some(pr) = &b.pull_request {
        return html! {
            span.mono title=(pr.title) { "PR #" (pr.number) }
            " " span.muted { "by " (pr.author) @if pr.fork { " (fork)" } }
            " " span.muted.wide { (pr.title) }
        };
    }
    match (b.branch(), b.tag()) {
        (Some(branch), _) => html! { span.mono title=(b.git_ref) { (branch) } },
        (None, Some(tag)) => html! { span.mono title=(b.git_ref) { "tag " (tag) } },
        (None, None) => html! { span.mono { (b.git_ref) } },
    }
}

/// A link to a build's page.
fn build_link(id: i64) -> Markup {
    html! { a href={ "/builds/" (id) } { "#" (id) } }
}

/// A pipeline on the index page.
#[derive(Debug)]
pub struct PipelineRow {
    pub name: String,
    pub repo: String,
    pub latest: Option<Build>,
}

/// What the index page lists; every field is in the URL.
#[derive(Debug, Default)]
pub struct IndexFilter {
    pub pipeline: Option<String>,
    pub branch: Option<String>,
    pub status: Option<BuildStatus>,
    pub event: Option<String>,
    pub before: Option<i64>,
}

impl IndexFilter {
    /// `/?...` for this filter, paged before `before`.
    pub fn link(&self, before: Option<i64>) -> String {
        let mut parts = Vec::new();
        if let Some(p) = &self.pipeline {
            parts.push(format!("pipeline={}", url_component(p)));
        }
        if let Some(b) = &self.branch {
            parts.push(format!("branch={}", url_component(b)));
        }
        if let Some(s) = self.status {
            parts.push(format!("status={}", s.as_str()));
        }
        if let Some(e) = &self.event {
            parts.push(format!("event={}", url_component(e)));
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

    fn is_filtered(&self) -> bool {
        self.pipeline.is_some()
            || self.branch.is_some()
            || self.status.is_some()
            || self.event.is_some()
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

const STATUSES: [BuildStatus; 8] = [
    BuildStatus::Waiting,
    BuildStatus::Queued,
    BuildStatus::Running,
    BuildStatus::Success,
    BuildStatus::Failure,
    BuildStatus::Error,
    BuildStatus::Cancelled,
    BuildStatus::Skipped,
];

/// A table of builds (the index, a pipeline page).
fn builds_table(builds: &[Build], now: OffsetDateTime) -> Markup {
    html! {
        table {
            thead { tr {
                th { "Build" } th.wide { "Pipeline" } th { "Ref" } th.wide { "Commit" }
                th { "Status" } th { "Created" } th.wide { "Duration" }
            } }
            tbody {
                @for b in builds {
                    tr {
                        td { (build_link(b.id)) }
                        td.wide { a href={ "/pipelines/" (url_component(&b.pipeline)) } { (b.pipeline) } }
                        td { (ref_label(b)) }
                        td.wide {
                            span.mono title=(b.commit_str()) { (short(b.commit_str(), 8)) }
                            " " span.muted { (subject(&b.message)) }
                        }
                        td {
                            (status_label(b.status.as_str()))
                            @if let Some(reason) = &b.reason { span.muted.reason.wide { (reason) } }
                        }
                        td { (when(Some(b.created_at), now)) }
                        td.wide { (build_duration(b, now)) }
                    }
                }
            }
        }
    }
}

/// `GET /`.
pub fn index(page: &Index<'_>) -> Markup {
    let filter = page.filter;
    let body = html! {
        div #pipelines {
            h1 { "Pipelines" }
            @if page.pipelines.is_empty() {
                p.muted { "No pipelines are loaded." }
            } @else {
                table {
                    thead { tr { th { "Pipeline" } th.wide { "Repository" } th { "Latest build" } th.wide { "Badge" } } }
                    tbody {
                        @for p in page.pipelines {
                            tr {
                                td { a href={ "/pipelines/" (url_component(&p.name)) } { (p.name) } }
                                td.mono.wide { (p.repo) }
                                td {
                                    @match &p.latest {
                                        Some(b) => {
                                            (build_link(b.id)) " " (status_label(b.status.as_str()))
                                            " " span.muted { (ref_label(b)) }
                                        }
                                        None => span.muted { "no builds yet" },
                                    }
                                }
                                td.wide {
                                    details {
                                        summary {
                                            img src={ "/badge/" (url_component(&p.name)) ".svg" } alt={ (p.name) " build status" } height="20";
                                        }
                                        code.mono {
                                            "[![build](" (page.public_url) "/badge/" (url_component(&p.name)) ".svg)]("
                                            (page.public_url) "/pipelines/" (url_component(&p.name)) ")"
                                        }
                                    }
                                }
                            }
                        }
                    }
                }
            }
        }
        p.nav { a href="/runners" { "Runners →" } }
        h2 { "Builds" }
        form.filters method="get" action="/" {
            label { "Pipeline"
                select name="pipeline" {
                    option value="" { "any" }
                    @for p in page.pipelines {
                        option value=(p.name) selected[filter.pipeline.as_deref() == Some(p.name.as_str())] { (p.name) }
                    }
                }
            }
            label { "Branch" input name="branch" value=[filter.branch.as_deref()] size="12"; }
            label { "Status"
                select name="status" {
                    option value="" { "any" }
                    @for st in STATUSES {
                        option value=(st.as_str()) selected[filter.status == Some(st)] { (st.as_str()) }
                    }
                }
            }
            label { "Event"
                select name="event" {
                    option value="" { "any" }
                    @for ev in ["push", "tag", "pull_request"] {
                        option value=(ev) selected[filter.event.as_deref() == Some(ev)] { (ev) }
                    }
                }
            }
            button type="submit" { "Filter" }
            @if filter.is_filtered() { a href="/" { "Clear" } }
        }
        div #builds {
            @if filter.before.is_some() {
                p.nav { a href=(filter.link(None)) { "← Newest" } span.muted { "builds before #" (filter.before.unwrap_or(0)) } }
            }
            @if page.builds.is_empty() {
                p.muted { "No builds." }
            } @else {
                (builds_table(page.builds, page.now))
            }
            @if let Some(older) = page.older {
                p.nav { a href=(filter.link(Some(older))) { "Older builds →" } }
            }
        }
    };
    layout("Builds", html! {}, html! {}, body, Some("/live"))
}

/// `GET /runners`: every runner process registered in the store.
pub fn runners(runners: &[crate::store::RunnerRecord], now: OffsetDateTime) -> Markup {
    let crumbs = html! { span.muted { "›" } span { "Runners" } };
    let body = html! {
        h1 { "Runners" }
        @if runners.is_empty() {
            p.muted { "No runner is registered: no process with role runner or all is running." }
        } @else {
            table {
                thead { tr {
                    th { "Node" } th { "State" } th { "Labels" } th.num { "Builds" }
                    th.wide { "Role" } th.wide { "Version" } th { "Started" } th { "Last seen" } th.wide { "Runner id" }
                } }
                tbody {
                    @for r in runners {
                        tr {
                            td.mono { (r.node) }
                            td {
                                @if r.gone { span.st.st-error title="it missed its heartbeats: it died or lost the database" { "gone" } }
                                @else { span.st.st-success { "online" } }
                            }
                            td.mono {
                                @if r.labels.is_empty() { span.muted { "none" } } @else { (r.labels.join(", ")) }
                            }
                            td.num { (r.running) " of " (r.max_parallel_builds) }
                            td.wide { (r.role) }
                            td.wide.mono { (r.version) }
                            td { (when(Some(r.started_at), now)) }
                            td { (when(Some(r.last_seen_at), now)) }
                            td.wide.mono { (r.id) }
                        }
                    }
                }
            }
        }
    };
    layout("Runners", html! {}, crumbs, body, None)
}

/// A pipeline page's data.
#[derive(Debug)]
pub struct PipelinePage<'a> {
    pub pipeline: &'a crate::pipeline::Pipeline,
    /// The latest build of each branch, newest first.
    pub branches: &'a [Build],
    /// Its newest builds.
    pub recent: &'a [Build],
    pub admin: bool,
    pub now: OffsetDateTime,
}

/// `GET /pipelines/NAME`.
pub fn pipeline(page: &PipelinePage<'_>) -> Markup {
    let p = page.pipeline;
    let name = url_component(&p.name);
    let crumbs = html! { span.muted { "›" } span { (p.name) } };
    let body = html! {
        div #pipelines {
            h1 { (p.name) }
            dl {
                dt { "Repository" } dd.mono { (p.repo) }
                dt { "Steps" } dd {
                    @for (i, s) in p.steps.iter().enumerate() {
                        @if i > 0 { " → " }
                        span.mono { (s.name) }
                        @if s.allow_failure { span.muted { " (may fail)" } }
                    }
                }
                dt { "Concurrency" } dd { (p.concurrency.as_str()) }
                dt { "Badge" } dd { img src={ "/badge/" (name) ".svg" } alt={ (p.name) " build status" } height="20"; }
            }
            h2 { "Branches" }
            @if page.branches.is_empty() {
                p.muted { "No branch has been built yet." }
            } @else {
                table {
                    thead { tr { th { "Branch" } th { "Latest build" } th { "Status" } th.wide { "Commit" } th { "Created" } } }
                    tbody {
                        @for b in page.branches {
                            tr {
                                td { a href=(IndexFilter { pipeline: Some(p.name.clone()), branch: b.branch().map(str::to_owned), ..IndexFilter::default() }.link(None)) { (ref_label(b)) } }
                                td { (build_link(b.id)) }
                                td { (status_label(b.status.as_str())) }
                                td.wide { span.mono title=(b.commit_str()) { (short(b.commit_str(), 8)) } " " span.muted { (subject(&b.message)) } }
                                td { (when(Some(b.created_at), page.now)) }
                            }
                        }
                    }
                }
            }
        }
        // Outside the parts the live index replaces: a replaced button
        // would lose its listener and the typed branch.
        div.actions {
            @if page.admin {
                label { "Branch " input #trigger-branch value="main" size="14"; }
                " " button.primary type="button" data-post={ "/api/pipelines/" (name) "/trigger" } data-branch-from="trigger-branch" { "Trigger a build" }
            }
            (token_form(page.admin))
        }
        div #builds {
            h2 { "Recent builds" }
            @if page.recent.is_empty() {
                p.muted { "No builds." }
            } @else {
                (builds_table(page.recent, page.now))
                p.nav { a href={ "/?pipeline=" (url_component(&p.name)) } { "All builds of " (p.name) " →" } }
            }
        }
    };
    layout(&p.name, html! {}, crumbs, body, Some("/live"))
}

/// A step as the build page shows it.
#[derive(Debug, Clone)]
pub struct StepView {
    pub record: StepRecord,
    /// It failed, and the pipeline lets it: the build went on.
    pub allowed: bool,
}

impl StepView {
    fn label(&self) -> Markup {
        if self.allowed {
            html! { span.st.st-allowed title="failed; the pipeline allows this step to fail" { "allowed to fail" } }
        } else {
            html! {
                (status_label(self.record.status.as_str()))
                // Why it did not run: "passed in #5".
                @if let Some(why) = &self.record.reason { span.muted.reason { (why) } }
            }
        }
    }

    /// Its failure failed the build.
    fn failed(&self) -> bool {
        !self.allowed && self.record.status == StepStatus::Failure
    }
}

/// The part of a log a build page embeds, laid out.
#[derive(Debug)]
pub struct LogPart {
    pub sections: Vec<Section>,
    /// Bytes at the start of the file not shown.
    pub skipped: u64,
    /// There is no log file (yet).
    pub missing: bool,
    /// The byte offset the page's part ends at (a live stream goes on there).
    pub end: u64,
    /// The number of the next line after the part.
    pub next_line: u64,
    /// The section and fold the part ends in.
    pub section: Option<usize>,
    pub in_group: bool,
    /// Lines carry their times (`?times=1`).
    pub times: bool,
}

/// The build page's data.
#[derive(Debug)]
pub struct BuildPage<'a> {
    pub build: &'a Build,
    pub steps: &'a [StepView],
    pub reports: &'a [ReportRecord],
    /// Where a build queued by hand came from.
    pub origin: Option<&'a BuildOrigin>,
    /// `None` when the log could not be read.
    pub log: Option<&'a LogPart>,
    /// Who the statuses go to (for their state words).
    pub provider: Option<Provider>,
    /// The server has an admin token (the action buttons can work).
    pub admin: bool,
    /// The step a re-run from the failed step starts at, when it can.
    pub rerun_from: Option<&'a str>,
    /// Why a waiting or queued build waits.
    pub waiting_reason: Option<&'a str>,
    pub now: OffsetDateTime,
}

/// The id of a step's log section.
pub fn section_id(step: Option<usize>) -> String {
    match step {
        Some(i) => format!("sec-{i}"),
        None => "sec-setup".to_owned(),
    }
}

/// The `data-sec`/live-op name of a section.
pub fn section_key(step: Option<usize>) -> String {
    match step {
        Some(i) => i.to_string(),
        None => "setup".to_owned(),
    }
}

/// A commit id as it may go into a URL path: hex only.
fn hex_id(s: &str) -> Option<&str> {
    (s.len() >= 7 && s.len() <= 64 && s.bytes().all(|c| c.is_ascii_hexdigit())).then_some(s)
}

/// The repository's web page, when it is an http(s) URL.
fn web_url(b: &Build) -> Option<&str> {
    b.web_url
        .as_deref()
        .filter(|u| u.starts_with("https://") || u.starts_with("http://"))
        .map(|u| u.trim_end_matches('/'))
        .filter(|u| !u.contains(['"', '<', '>', ' ', '\n']))
}

/// The host's page of the built commit.
pub fn commit_url(b: &Build) -> Option<String> {
    let web = web_url(b)?;
    let sha = hex_id(b.commit_str())?;
    Some(match b.host.as_deref()?.parse::<Host>().ok()? {
        Host::Github | Host::Gitea | Host::Forgejo | Host::Gogs => format!("{web}/commit/{sha}"),
        Host::Gitlab => format!("{web}/-/commit/{sha}"),
        Host::Bitbucket | Host::BitbucketServer => format!("{web}/commits/{sha}"),
        Host::Generic => return None,
    })
}

/// The host's view of what a push changed (its old and new commit), for a
/// push that moved an existing branch.
pub fn compare_url(b: &Build) -> Option<String> {
    let web = web_url(b)?;
    let before = hex_id(b.before.as_str()).filter(|s| s.bytes().any(|c| c != b'0'))?;
    let after = hex_id(b.after.as_str()).or_else(|| hex_id(b.commit_str()))?;
    // A tag push has nothing to compare with.
    b.branch()?;
    Some(match b.host.as_deref()?.parse::<Host>().ok()? {
        Host::Github | Host::Gitea | Host::Forgejo | Host::Gogs => {
            format!("{web}/compare/{before}...{after}")
        }
        Host::Gitlab => format!("{web}/-/compare/{before}...{after}"),
        Host::Bitbucket => format!("{web}/branches/compare/{after}%0D{before}"),
        Host::BitbucketServer => {
            format!("{web}/compare/diff?sourceBranch={after}&targetBranch={before}")
        }
        Host::Generic => return None,
    })
}

/// The word a host shows for a report's state (`pending`, `SUCCESSFUL`,
/// `canceled`), as hookci sent it.
pub fn host_state(provider: Option<Provider>, state: &str) -> String {
    let status = if state == "pending" {
        Some(BuildStatus::Queued)
    } else {
        state.parse::<BuildStatus>().ok()
    };
    let Some(phase) = status.and_then(Phase::of) else {
        return state.to_owned();
    };
    match provider {
        Some(Provider::Github | Provider::Gitea | Provider::Forgejo) => {
            crate::report::github::state(phase).to_owned()
        }
        Some(Provider::Gitlab) => crate::report::gitlab::state(phase).to_owned(),
        Some(Provider::Bitbucket) => crate::report::bitbucket::state(phase).to_owned(),
        Some(Provider::BitbucketServer) => crate::report::bitbucket_server::state(phase).to_owned(),
        Some(Provider::Webhook | Provider::None) | None => state.to_owned(),
    }
}

/// The build's status in its heading (replaced live).
pub fn head_status(b: &Build) -> Markup {
    status_label(b.status.as_str())
}

/// The facts list (replaced live).
pub fn facts(page: &BuildPage<'_>) -> Markup {
    let b = page.build;
    let commit_link = commit_url(b);
    let compare = compare_url(b);
    html! {
        dt { "Status" }
        dd {
            (status_label(b.status.as_str()))
            @if let Some(reason) = &b.reason { span.reason { (reason) } }
        }
        @if let Some(why) = page.waiting_reason {
            dt { "Waiting" }
            dd #waiting-reason { (why) span.muted { " (" a href="/runners" { "runners" } ")" } }
        }
        @if let Some(origin) = page.origin {
            dt { "Triggered" }
            dd {
                @if let Some(of) = origin.rebuild_of {
                    "rebuild of " (build_link(of))
                    @if let Some(resume) = &origin.resume {
                        " from step " code { (resume.from_name) }
                    }
                    ", "
                }
                "by " (origin.triggered_by)
            }
        }
        dt { "Pipeline" }
        dd {
            a href={ "/pipelines/" (url_component(&b.pipeline)) } { (b.pipeline) }
            @if let Some(rev) = &b.pipeline_revision {
                span.muted { " revision " } span.mono title="the first 12 hex digits of the SHA-256 of the pipeline file it was matched with" { (rev) }
            }
        }
        dt { "Repository" }
        dd.mono {
            @if let Some(url) = web_url(b) { a href=(url) rel="noreferrer" { (b.repo) } } @else { (b.repo) }
        }
        @if let Some(pr) = &b.pull_request {
            dt { "Pull request" }
            dd {
                "#" (pr.number) " " (pr.title)
                br;
                span.muted { "by " } (pr.author)
                @if pr.fork { " " span.st.st-waiting { "fork" } " " span.mono { (pr.head_repo) } }
                br;
                span.mono { (pr.head_branch) } span.muted { " into " } span.mono { (pr.base_branch) }
            }
        }
        dt { "Ref" }
        dd {
            @match (b.branch(), b.tag()) {
                (Some(branch), _) => { "branch " span.mono title=(b.git_ref) { (branch) } },
                (None, Some(tag)) => { "tag " span.mono title=(b.git_ref) { (tag) } },
                (None, None) => span.mono { (b.git_ref) },
            }
        }
        dt { "Commit" }
        dd {
            @if let Some(url) = &commit_link {
                a.mono href=(url) rel="noreferrer" title=(b.commit_str()) { (short(b.commit_str(), 12)) }
            } @else {
                span.mono title=(b.commit_str()) { (short(b.commit_str(), 12)) }
            }
            @if let Some(url) = &compare {
                " " a href=(url) rel="noreferrer" { "compare with " span.mono { (short(b.before.as_str(), 7)) } }
            }
        }
        dt { "Event" }
        dd {
            (b.event_name())
            @if let Some(host) = &b.host { span.muted { " from " (host) } }
            @if b.forced { span.muted { " (forced)" } }
        }
        @if !b.pusher.is_empty() && page.origin.is_none() {
            dt { "Pushed by" }
            dd { (b.pusher) }
        }
        @if let Some(delivery) = &b.delivery {
            dt { "Delivery" }
            dd.mono { (delivery) }
        }
        @if b.attempt > 1 {
            dt { "Attempt" }
            dd { (b.attempt) span.muted { " (the daemon was interrupted while it ran)" } }
        }
        @if let Some(node) = &b.node {
            dt { "Ran on" }
            dd.mono { (node) }
        }
        dt { "Created" }
        dd { (when(Some(b.created_at), page.now)) }
        dt { "Started" }
        dd { (when(b.started_at, page.now)) }
        dt { "Finished" }
        dd { (when(b.finished_at, page.now)) }
        dt { "Duration" }
        dd { (build_duration(b, page.now)) }
    }
}

/// The step table's rows (replaced live).
pub fn step_rows(page: &BuildPage<'_>) -> Markup {
    html! {
        @for (i, s) in page.steps.iter().enumerate() {
            tr {
                td.mono { a href={ "#" (section_id(Some(i))) } { (s.record.name) } }
                td { (s.label()) }
                td.num {
                    @match s.record.exit_code { Some(code) => (code), None => span.muted { "–" } }
                }
                td.num {
                    @match step_duration(&s.record, page.now) {
                        Some(d) => (d),
                        None => span.muted { "–" },
                    }
                }
            }
        }
    }
}

/// A log section's heading (replaced live).
pub fn section_summary(page: &BuildPage<'_>, step: Option<usize>) -> Markup {
    match step.and_then(|i| page.steps.get(i)) {
        Some(s) => html! {
            span.sum {
                span.name { (s.record.name) }
                (s.label())
                @if let Some(d) = step_duration(&s.record, page.now) { span.dur { (d) } }
                @if let Some(code) = s.record.exit_code { @if code != 0 { span.dur { "exit " (code) } } }
            }
        },
        None => html! { span.sum { span.name { "Set up" } span.dur { "fetch, checkout" } } },
    }
}

/// The section a finished build's page opens and jumps to: the step that
/// failed it; else, for a build that ended badly before a step failed, the
/// set-up section.
fn jump_section(page: &BuildPage<'_>) -> Option<Option<usize>> {
    if let Some(i) = page.steps.iter().position(StepView::failed) {
        return Some(Some(i));
    }
    if let Some(i) = page
        .steps
        .iter()
        .position(|s| s.record.status == StepStatus::Cancelled)
    {
        return Some(Some(i));
    }
    match page.build.status {
        BuildStatus::Error => Some(None),
        _ => None,
    }
}

/// The live state a running build's page replaces, by element id.
pub fn live_state(page: &BuildPage<'_>) -> Vec<(String, String)> {
    let mut out = vec![
        ("head-st".to_owned(), head_status(page.build).into_string()),
        ("facts".to_owned(), facts(page).into_string()),
        ("step-rows".to_owned(), step_rows(page).into_string()),
        (
            "sum-setup".to_owned(),
            section_summary(page, None).into_string(),
        ),
    ];
    for i in 0..page.steps.len() {
        out.push((
            format!("sum-{i}"),
            section_summary(page, Some(i)).into_string(),
        ));
    }
    out
}

/// `GET /builds/ID`.
pub fn build(page: &BuildPage<'_>) -> Markup {
    let b = page.build;
    let live = matches!(
        b.status,
        BuildStatus::Waiting | BuildStatus::Queued | BuildStatus::Running
    );
    // Without script, a queued or running build's page reloads itself.
    let head = html! {
        @if live { noscript { meta http-equiv="refresh" content="10"; } }
    };
    let crumbs = html! {
        span.muted { "›" }
        a href={ "/pipelines/" (url_component(&b.pipeline)) } { (b.pipeline) }
        span.muted { "›" }
        span { "#" (b.id) }
    };
    let has_body = b
        .message
        .trim()
        .split_once('\n')
        .is_some_and(|(_, rest)| !rest.trim().is_empty());
    let jump = if live { None } else { jump_section(page) };
    let body = html! {
        h1 { "Build #" (b.id) " " span #head-st { (head_status(b)) } }
        p.subject { (subject(&b.message)) }
        @if has_body {
            details { summary.muted { "Full commit message" } pre.msg { (b.message) } }
        }
        (actions(page))
        @if let Some(resume) = page.origin.and_then(|o| o.resume.as_ref()) {
            p.note {
                "This build started at step " code { (resume.from_name) } ". The steps before it did not run; "
                "its checkout is fresh, so files they made in the earlier build are not there "
                "unless a later step makes them again."
            }
        }
        dl #facts { (facts(page)) }

        h2 { "Steps" }
        @if page.steps.is_empty() {
            p.muted { "No steps have been recorded." }
        } @else {
            table {
                thead { tr { th { "Step" } th { "Status" } th.num { "Exit code" } th.num { "Duration" } } }
                tbody #step-rows { (step_rows(page)) }
            }
        }

        h2 { "Log" }
        p.nav {
            a href={ "/api/builds/" (b.id) "/log" } { "Raw log" }
            a href={ "/api/builds/" (b.id) } { "JSON" }
            @if page.log.is_some_and(|l| l.times) {
                a #times href={ "/builds/" (b.id) } { "Hide times" }
            } @else {
                a #times href={ "/builds/" (b.id) "?times=1" } title="Each line's time since the build started" { "Show times" }
            }
        }
        @match page.log {
            None => p.note { "The log cannot be read." },
            Some(log) => {
                @if log.missing && !live {
                    p.muted { "This build has no log." }
                } @else {
                    @let shown: Vec<Option<usize>> = std::iter::once(None).chain((0..page.steps.len()).map(Some)).collect();
                    div #log data-live=[live.then(|| format!(
                            "/builds/{}/live?from={}&line={}&sec={}&grp={}&n={}{}",
                            b.id, log.end, log.next_line, section_key(log.section), u8::from(log.in_group),
                            page.steps.len(), if log.times { "&t=1" } else { "" }))]
                        data-sec=(section_key(log.section)) data-grp=(u8::from(log.in_group)) {
                        @if log.skipped > 0 {
                            div.earlier {
                                button #earlier type="button" data-src={ "/builds/" (b.id) "/log?before=" (log.skipped) @if log.times { "&times=1" } } {
                                    "Show earlier output"
                                }
                                " "
                                span.muted { "(" (human_bytes(log.skipped)) " not shown; " a href={ "/api/builds/" (b.id) "/log" } { "whole log" } ")" }
                            }
                        }
                        @for step in &shown {
                            @let found = log.sections.iter().find(|sec| sec.step == *step);
                            @let open = section_open(page, live, *step) || jump == Some(*step);
                            @let empty = found.is_none_or(|f| f.is_empty());
                            @if !(step.is_none() && empty && !live) {
                                details.sec id=(section_id(*step)) open[open]
                                    data-jump=[(jump == Some(*step)).then_some("1")] {
                                    summary id={ "sum-" (section_key(*step)) } { (section_summary(page, *step)) }
                                    div.lines {
                                        @if let Some(found) = found { (found.body()) }
                                    }
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
                    th { "Context" } th { "State" } th { "Outcome" } th.num.wide { "Attempts" }
                    th.wide { "Written" } th.wide { "Delivered" } th { "Last error" }
                } }
                tbody {
                    @for r in page.reports {
                        tr {
                            td.mono { (r.context) }
                            td.mono title={ "hookci: " (r.state) } { (host_state(page.provider, r.state.as_str())) }
                            td { (status_label(report_outcome(r.outcome))) }
                            td.num.wide { (r.attempts) }
                            td.wide { (when(Some(r.created_at), page.now)) }
                            td.wide { (when(r.delivered_at, page.now)) }
                            td { @if let Some(e) = &r.last_error { (e) } }
                        }
                    }
                }
            }
        }
    };
    let title = format!("#{} {} {}", b.id, b.pipeline, b.status.as_str());
    layout(&title, head, crumbs, body, None)
}

/// A section is open at first: a running step, one that failed the build or
/// was cancelled; set-up while it is all there is.
fn section_open(page: &BuildPage<'_>, live: bool, step: Option<usize>) -> bool {
    match step {
        None => {
            page.steps.is_empty()
                || (live
                    && page
                        .steps
                        .iter()
                        .all(|s| s.record.status == StepStatus::Pending))
        }
        Some(i) => page.steps.get(i).is_some_and(|s| {
            s.record.status == StepStatus::Running
                || s.failed()
                || s.record.status == StepStatus::Cancelled
        }),
    }
}

/// The admin token form and a note, shared by the pages with buttons.
fn token_form(admin: bool) -> Markup {
    html! {
        @if admin {
            details #token-form {
                summary.muted { "Admin token" }
                input #token type="password" autocomplete="off" placeholder="paste the admin token";
                " " button #token-save type="button" { "Keep for this tab" }
                " " button #token-forget type="button" { "Forget" }
            }
            span #act-msg.note role="status" {}
        } @else {
            p.note.muted {
                "Buttons need an admin token, and this server has none: set "
                code { "admin_token = { env = \"HOOKCI_ADMIN_TOKEN\" }" }
                " in hookci.toml, export HOOKCI_ADMIN_TOKEN, and restart hookci."
            }
        }
    }
}

/// A build page's buttons.
fn actions(page: &BuildPage<'_>) -> Markup {
    let b = page.build;
    html! {
        div.actions {
            @if page.admin {
                @if b.status.is_final() {
                    button.primary type="button" data-post={ "/api/builds/" (b.id) "/rebuild" } data-build=(b.id) { "Re-run" }
                    @if let Some(step) = page.rerun_from {
                        button type="button" data-post={ "/api/builds/" (b.id) "/rebuild?from=failed" } data-build=(b.id)
                            title="A fresh checkout: files the earlier steps made are not there unless a later step makes them again." {
                            "Re-run from " (step)
                        }
                        span.muted { "earlier steps are skipped; their files are not in the fresh checkout" }
                    }
                } @else {
                    @if b.status == BuildStatus::Waiting {
                        button.primary type="button" data-post={ "/api/builds/" (b.id) "/approve" } data-build=(b.id)
                            title="Runs this pull request's code on the build box." {
                            "Approve"
                        }
                    }
                    button type="button" data-post={ "/api/builds/" (b.id) "/cancel" } data-build=(b.id) { "Cancel" }
                }
            }
            (token_form(page.admin))
        }
    }
}

/// A byte count as `1.5 MiB`.
fn human_bytes(n: u64) -> String {
    match n {
        n if n >= 1 << 20 => format!("{:.1} MiB", n as f64 / f64::from(1 << 20)),
        n if n >= 1 << 10 => format!("{:.1} KiB", n as f64 / 1024.0),
        n => format!("{n} bytes"),
    }
}

/// An earlier part of a log, fetched by the page's "Show earlier output":
/// one `.part` per section it touches, and the next part's address.
pub fn log_part(build: i64, sections: &[Section], start: u64, times: bool) -> Markup {
    let t = if times { "&times=1" } else { "" };
    html! {
        div data-next=[(start > 0).then(|| format!("/builds/{build}/log?before={start}{t}"))] {
            @for sec in sections {
                div.part data-sec=(section_key(sec.step)) { (sec.body()) }
            }
        }
    }
}

fn step_duration(s: &StepRecord, now: OffsetDateTime) -> Option<String> {
    match s.status {
        StepStatus::Pending | StepStatus::Skipped => None,
        StepStatus::Running => duration(s.started_at, None, now),
        StepStatus::Success | StepStatus::Failure | StepStatus::Cancelled => {
            duration(s.started_at, s.finished_at, now)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::text::url_component as query_value;

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

    fn build(host: &str, web: &str, before: &str, commit: &str) -> Build {
        Build {
            id: 1,
            pipeline: "p".into(),
            push: crate::model::PushEvent {
                repo: "o/r".into(),
                git_ref: "refs/heads/main".into(),
                kind: crate::model::RefKind::Branch("main".into()),
                commit: Some(commit.parse().unwrap()),
                before: before.parse().unwrap(),
                after: commit.parse().unwrap(),
                created: false,
                deleted: false,
                forced: false,
                clone_url: String::new(),
                ssh_url: None,
                web_url: Some(web.into()),
                message: String::new(),
                pusher: String::new(),
                pull_request: None,
            },
            host: Some(host.into()),
            status: BuildStatus::Success,
            reason: None,
            delivery: None,
            attempt: 1,
            created_at: time::macros::datetime!(2026-01-01 00:00 UTC),
            started_at: None,
            finished_at: None,
            path_filters: Vec::new(),
            node: None,
            pipeline_revision: None,
        }
    }

    #[test]
    fn commit_and_compare_links_follow_the_host_and_refuse_what_is_not_a_web_url_or_a_commit() {
        let (a, b) = ("a".repeat(40), "b".repeat(40));
        let gh = build("github", "https://github.com/o/r/", &a, &b);
        assert_eq!(
            commit_url(&gh).as_deref(),
            Some(format!("https://github.com/o/r/commit/{b}").as_str())
        );
        assert_eq!(
            compare_url(&gh).as_deref(),
            Some(format!("https://github.com/o/r/compare/{a}...{b}").as_str())
        );
        let gl = build("gitlab", "https://gitlab.example/o/r", &a, &b);
        assert!(commit_url(&gl).is_some_and(|u| u.ends_with(&format!("/-/commit/{b}"))));
        assert!(compare_url(&gl).is_some_and(|u| u.contains("/-/compare/")));
        // A new branch has nothing to compare with.
        assert_eq!(
            compare_url(&build("github", "https://h/o/r", &"0".repeat(40), &b)),
            None
        );
        // Pushed values that are not a web URL make no link; text that is
        // not a commit id cannot be a build's commit at all.
        for web in ["javascript:alert(1)", "https://h/o/r\"><script>"] {
            let x = build("github", web, &a, &b);
            assert_eq!(commit_url(&x), None, "{web}");
            assert_eq!(compare_url(&x), None, "{web}");
        }
        for commit in ["../../evil", "abc?x=<y>"] {
            assert!(
                commit.parse::<crate::model::CommitId>().is_err(),
                "{commit}"
            );
        }
        assert_eq!(commit_url(&build("generic", "https://h/o/r", &a, &b)), None);
    }

    #[test]
    fn report_states_are_the_hosts_words() {
        assert_eq!(host_state(Some(Provider::Github), "pending"), "pending");
        assert_eq!(host_state(Some(Provider::Github), "cancelled"), "error");
        assert_eq!(host_state(Some(Provider::Gitlab), "cancelled"), "canceled");
        assert_eq!(host_state(Some(Provider::Gitlab), "failure"), "failed");
        assert_eq!(
            host_state(Some(Provider::Bitbucket), "success"),
            "SUCCESSFUL"
        );
        assert_eq!(host_state(Some(Provider::Webhook), "running"), "running");
        assert_eq!(host_state(None, "odd"), "odd");
    }

    #[test]
    fn times_read_as_how_long_ago() {
        let now = OffsetDateTime::from_unix_timestamp(1_800_000_000).unwrap();
        let ago_s = |s: i64| ago(now - time::Duration::seconds(s), now);
        assert_eq!(ago_s(3), "just now");
        assert_eq!(ago_s(42), "42 s ago");
        assert_eq!(ago_s(5 * 60 + 3), "5 min ago");
        assert_eq!(ago_s(3 * 3600), "3 h ago");
        assert_eq!(ago_s(30 * 3600), "yesterday");
        assert_eq!(ago_s(5 * 86_400), "5 days ago");
        assert_eq!(ago_s(90 * 86_400), "2026-10-17");
        let t = when(Some(time::macros::datetime!(2027-01-15 08:00 UTC)), now).into_string();
        assert!(t.contains("title=\"2027-01-15 08:00:00 UTC\""), "{t}");
    }

    #[test]
    fn the_style_sheet_has_a_dark_variant_and_a_narrow_layout() {
        assert!(STYLE.contains("@media (prefers-color-scheme:dark)"));
        assert!(STYLE.contains("@media (max-width:640px)"));
        assert!(STYLE.contains(".wide{display:none}"));
    }
}
