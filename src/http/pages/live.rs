//! The pages' live streams (Server-Sent Events):
//! - `GET /builds/ID/live?from=&line=&sec=&grp=&n=`: a queued or running
//!   build page's updates. `log` events carry the log's new lines, rendered
//!   and escaped here exactly as the page renders them, as a JSON list of
//!   operations (`{"s": section}`, `{"g": fold html}`, `{"e": 1}`,
//!   `{"l": line html}`); `state` events carry the page's status, facts,
//!   step table and section headings as HTML by element id, whenever they
//!   change (at most once a second); `end` tells the page to reload: the
//!   build ended, or its steps were recorded after the page was rendered.
//! - `GET /live`: the index's `changed` event, when a build is queued,
//!   starts or ends (after `ready`, once it has read the store).

use super::{BuildContext, PageError, check_read, logview, non_empty, query_map, view};
use crate::http::AppState;
use crate::http::api::build_id;
use axum::extract::rejection::{PathRejection, QueryRejection};
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use maud::html;
use serde_json::json;
use std::collections::BTreeMap;
use std::convert::Infallible;
use std::time::Duration;
use tokio::sync::mpsc;

/// How often a stream looks at the store.
const TICK: Duration = Duration::from_secs(1);

/// How long a stream waits for the rest of an ended build's log.
const END_GRACE: Duration = Duration::from_secs(5);

/// An SSE response of what `rx` receives.
fn sse(rx: mpsc::Receiver<Event>) -> Response {
    let stream = futures_util::stream::unfold(rx, |mut rx| async move {
        rx.recv().await.map(|e| (Ok::<_, Infallible>(e), rx))
    });
    Sse::new(stream)
        .keep_alive(KeepAlive::default())
        .into_response()
}

/// The ops as a `log` event.
fn log_event(ops: Vec<logview::Op>) -> Option<Event> {
    if ops.is_empty() {
        return None;
    }
    let list: Vec<serde_json::Value> = ops
        .into_iter()
        .map(|op| match op {
            logview::Op::Section(step) => json!({ "s": view::section_key(step) }),
            logview::Op::Group(no, at, title) => json!({
                "g": html! { details.grp { (logview::group_open(no, at, &title)) } }.into_string()
            }),
            logview::Op::EndGroup(_) => json!({ "e": 1 }),
            logview::Op::Line(no, at, segments) => {
                json!({ "l": logview::line_markup(no, at, &segments).into_string() })
            }
        })
        .collect();
    Some(Event::default().event("log").data(json!(list).to_string()))
}

/// A query number, or the page's 400.
fn number(query: &BTreeMap<String, String>, key: &str) -> Result<u64, PageError> {
    non_empty(query, key)
        .and_then(|v| v.parse::<u64>().ok())
        .ok_or(PageError::Page(
            StatusCode::BAD_REQUEST,
            "The live stream's parameters are malformed.",
        ))
}

/// `GET /builds/ID/live`.
pub async fn build_live(
    State(state): State<AppState>,
    id: Result<Path<String>, PathRejection>,
    query: Result<Query<BTreeMap<String, String>>, QueryRejection>,
    headers: HeaderMap,
) -> Response {
    let start = async {
        check_read(&state, &headers)?;
        let no_such_build = PageError::Page(StatusCode::NOT_FOUND, "There is no such build.");
        let Ok(Path(raw)) = id else {
            return Err(no_such_build);
        };
        let Ok(id) = build_id(&raw) else {
            return Err(no_such_build);
        };
        let query = query_map(query)?;
        let from = number(&query, "from")?;
        let line = number(&query, "line")?.max(1);
        let grp = number(&query, "grp")? == 1;
        let n = number(&query, "n").unwrap_or(u64::MAX);
        let times = non_empty(&query, "t").is_some_and(|v| v == "1");
        let sec = match non_empty(&query, "sec").as_deref() {
            Some("setup") | None => None,
            Some(k) => Some(k.parse::<usize>().map_err(|_| {
                PageError::Page(
                    StatusCode::BAD_REQUEST,
                    "The live stream's parameters are malformed.",
                )
            })?),
        };
        if state.store().build(id).await?.is_none() {
            return Err(no_such_build);
        }
        Ok((id, from, line, grp, sec, n, times))
    };
    let (id, from, line, grp, sec, n, times) = match start.await {
        Ok(v) => v,
        Err(e) => return e.into_response(),
    };
    let (tx, rx) = mpsc::channel(16);
    let shown = Shown {
        from,
        line,
        sec,
        grp,
        steps: n,
        times,
    };
    tokio::spawn(follow_build(state, id, shown, tx));
    sse(rx)
}

/// Where a page's log part ended, and how it shows lines.
#[derive(Debug, Clone, Copy)]
struct Shown {
    /// The byte offset to go on from (a line start).
    from: u64,
    /// The number of the next line.
    line: u64,
    sec: Option<usize>,
    grp: bool,
    /// How many steps the page has sections for.
    steps: u64,
    /// Lines carry their times.
    times: bool,
}

/// Sends a build page's updates to `tx` until the build ends or the page
/// goes away.
async fn follow_build(state: AppState, id: i64, shown: Shown, tx: mpsc::Sender<Event>) {
    let Shown {
        from,
        line,
        sec,
        grp,
        steps: steps_shown,
        times,
    } = shown;
    // The log is read by its own task: a read is not safe to abandon
    // halfway, which a select would do.
    let (chunks_tx, mut chunks) = mpsc::channel::<Vec<u8>>(4);
    let reader = {
        let state = state.clone();
        tokio::spawn(async move {
            let Ok(follower) = state.follow_log(id).await else {
                return;
            };
            let mut follower = follower.starting_at(from);
            while let Ok(Some(chunk)) = follower.next_chunk().await {
                if chunks_tx.send(chunk).await.is_err() {
                    return;
                }
            }
        })
    };
    let mut parser: Option<logview::LogParser> = None;
    let mut carry: Vec<u8> = Vec::new();
    let mut pending = String::new();
    let mut log_done = false;
    let mut last_state = String::new();
    let mut ended_at: Option<tokio::time::Instant> = None;
    let mut tick = tokio::time::interval(TICK);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        let mut check_state = false;
        tokio::select! {
            () = tx.closed() => break,
            chunk = chunks.recv(), if !log_done => match chunk {
                Some(bytes) => {
                    carry.extend_from_slice(&bytes);
                    // Hold back a UTF-8 sequence cut by the chunk boundary.
                    let valid = match std::str::from_utf8(&carry) {
                        Ok(_) => carry.len(),
                        Err(e) if e.error_len().is_none() => e.valid_up_to(),
                        Err(_) => carry.len(),
                    };
                    let rest = carry.split_off(valid);
                    pending.push_str(&String::from_utf8_lossy(&carry));
                    carry = rest;
                }
                None => {
                    log_done = true;
                    pending.push_str(&String::from_utf8_lossy(&std::mem::take(&mut carry)));
                    check_state = true;
                }
            },
            _ = tick.tick() => check_state = true,
        }
        if check_state || parser.is_none() {
            let build = match state.store().build(id).await {
                Ok(Some(b)) => b,
                Ok(None) => break,
                Err(e) => {
                    tracing::warn!(build = id, error = %e, "a live page cannot read its build");
                    continue;
                }
            };
            let ctx = match BuildContext::load(&state, build).await {
                Ok(ctx) => ctx,
                Err(_) => continue,
            };
            // Steps recorded after the page was rendered have no sections
            // on it: the page reloads to get them.
            if ctx.steps.len() as u64 != steps_shown && steps_shown != u64::MAX {
                let _ = tx.send(Event::default().event("end").data("steps")).await;
                break;
            }
            if parser.is_none() {
                let names = ctx.steps.iter().map(|s| s.record.name.clone()).collect();
                let mut p = logview::LogParser::new(names, sec, line);
                p.set_in_group(grp);
                if times {
                    let found = match state.log_file(id).await {
                        Ok(file) => tokio::task::spawn_blocking(move || {
                            crate::runner::log::times::LineTimes::open(&file.path, from)
                        })
                        .await
                        .ok()
                        .flatten(),
                        Err(_) => None,
                    };
                    if let Some(line_times) = found {
                        p.with_times(line_times, from);
                    }
                }
                if let Some(pipeline) = state.pipelines().get(&ctx.build.pipeline) {
                    p.mask_with(&crate::runner::log::visible::pipeline_secrets(pipeline));
                }
                parser = Some(p);
            }
            let fragments = view::live_state(&ctx.page(None));
            let now = json!(fragments.into_iter().collect::<BTreeMap<_, _>>()).to_string();
            if now != last_state {
                if tx
                    .send(Event::default().event("state").data(&now))
                    .await
                    .is_err()
                {
                    break;
                }
                last_state = now;
            }
            if ctx.build.status.is_final() {
                let since = *ended_at.get_or_insert_with(tokio::time::Instant::now);
                if log_done || since.elapsed() > END_GRACE {
                    if let Some(p) = parser.as_mut() {
                        p.refresh_times();
                        let mut ops = Vec::new();
                        let rest = p.feed(&pending, &mut ops).to_owned();
                        if !rest.is_empty() {
                            p.line(&rest, &mut ops);
                        }
                        pending.clear();
                        if let Some(event) = log_event(ops) {
                            let _ = tx.send(event).await;
                        }
                    }
                    let _ = tx
                        .send(
                            Event::default()
                                .event("end")
                                .data(ctx.build.status.as_str()),
                        )
                        .await;
                    break;
                }
            }
        }
        if let Some(p) = parser.as_mut() {
            p.refresh_times();
            let mut ops = Vec::new();
            let rest = p.feed(&pending, &mut ops).to_owned();
            pending = rest;
            if let Some(event) = log_event(ops) {
                if tx.send(event).await.is_err() {
                    break;
                }
            }
        }
    }
    reader.abort();
}

/// `GET /live`: `changed` whenever a build is queued, starts or ends.
pub async fn index_live(State(state): State<AppState>, headers: HeaderMap) -> Response {
    if let Err(e) = check_read(&state, &headers) {
        return e.into_response();
    }
    let (tx, rx) = mpsc::channel(4);
    tokio::spawn(async move {
        let mut last = None;
        let mut tick = tokio::time::interval(TICK);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                () = tx.closed() => return,
                _ = tick.tick() => {}
            }
            let now = match state.store().activity().await {
                Ok(now) => now,
                Err(_) => continue,
            };
            let event = match &last {
                None => "ready",
                Some(l) if *l != now => "changed",
                Some(_) => {
                    continue;
                }
            };
            if tx
                .send(Event::default().event(event).data("1"))
                .await
                .is_err()
            {
                return;
            }
            last = Some(now);
        }
    });
    sse(rx)
}
