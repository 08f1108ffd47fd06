//! The command-line clients of the HTTP API: `hookci builds`, `logs`,
//! `cancel`, `rebuild` and `trigger`. Each is a call or two to a running
//! daemon, at `--server` (default: the config's `public_url`) with the admin
//! token (`--token` or `$HOOKCI_TOKEN`, default: the config's `admin_token`)
//! sent when known, and only to a server the user named (`--server`,
//! `$HOOKCI_SERVER`, or a config named with `--config`/`$HOOKCI_CONFIG`).
//!
//! Exit codes: 0 success (for `logs --follow`: the build succeeded); 1 the
//! server answered with an error (`error: SENTENCE (HTTP N)` on stderr), or
//! the followed build failed; 2 usage, configuration or I/O: the server
//! cannot be reached, or answered something that is not hookci's API.
//!
//! *Invariants:* this module speaks only HTTP to the daemon (no store, no
//! data dir). The token travels only in the `Authorization` header (marked
//! sensitive) and is never printed, not in an error either; the config's
//! token is sent only to the config's own server; a `./hookci.toml` found
//! implicitly gives a server to read from, never a token.

use super::{Failure, load_config};
use crate::config::Config;
use crate::secret::Secret;
use eventsource_stream::Eventsource;
use futures_util::StreamExt;
use reqwest::header::{ACCEPT, CONTENT_TYPE};
use reqwest::{RequestBuilder, Response, StatusCode, Url};
use serde::Deserialize;
use serde::de::DeserializeOwned;
use std::io::Write;
use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;

/// The daemon to talk to, and the token to send it.
#[derive(Debug, Clone)]
pub struct Target {
    /// The base URL, without a trailing slash.
    server: Url,
    /// Sent with every request when known.
    token: Option<Secret>,
    /// A token was known but not sent (said in the hint of a 401).
    withheld: Option<&'static str>,
}

/// Where a client command's config comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
enum ConfigSource {
    /// `--config F` or `$HOOKCI_CONFIG`: the user named it.
    Named(PathBuf),
    /// `./hookci.toml`, found in the working directory: anyone who wrote
    /// the directory (a cloned repository) wrote it. Only its `public_url`
    /// is read; its secrets are never resolved, and no token goes to its
    /// server.
    Found(PathBuf),
    /// No file: the built-in defaults.
    Defaults,
}

impl ConfigSource {
    fn locate(explicit: Option<PathBuf>) -> ConfigSource {
        let env = std::env::var_os("HOOKCI_CONFIG").filter(|v| !v.is_empty());
        let named = explicit.is_some() || env.is_some();
        match crate::config::locate(explicit.as_deref(), env.as_deref(), "hookci.toml".as_ref()) {
            Some(path) if named => ConfigSource::Named(path),
            Some(path) => ConfigSource::Found(path),
            None => ConfigSource::Defaults,
        }
    }

    fn describe(&self) -> String {
        match self {
            ConfigSource::Named(p) => format!("config {}", p.display()),
            ConfigSource::Found(p) => format!(
                "config {} (found in the working directory: only its public_url is read)",
                p.display()
            ),
            ConfigSource::Defaults => "no config file (built-in defaults)".to_owned(),
        }
    }
}

/// The `public_url` of a config found implicitly: nothing else is read,
/// and no `{ env }` or `{ file }` is resolved.
fn found_public_url(path: &std::path::Path) -> Result<String, Failure> {
    #[derive(Deserialize)]
    struct Found {
        public_url: Option<String>,
    }
    let text = std::fs::read_to_string(path).map_err(|e| {
        Failure::usage(format!(
            "cannot read the config file {}: {}",
            path.display(),
            e.kind()
        ))
    })?;
    let found: Found = toml::from_str(&text).map_err(|_| {
        Failure::usage(format!(
            "{} is not a valid config file; name a config with --config or a server with --server",
            path.display()
        ))
    })?;
    Ok(found
        .public_url
        .unwrap_or_else(|| Config::default().public_url))
}

impl Target {
    /// The target from `--server` (or `$HOOKCI_SERVER`) and `--token` (or
    /// `$HOOKCI_TOKEN`), with what they leave out taken from the config.
    ///
    /// A token is sent only to a server the user named: `--server`, or the
    /// server of a config named with `--config` (or `$HOOKCI_CONFIG`). A
    /// `./hookci.toml` found implicitly gives only a server to read from:
    /// no token goes there and its secrets are never resolved. The config's
    /// own token goes only to the config's own server (its `public_url` or
    /// the address it listens on). With `verbose`, says on stderr which
    /// config and server are used, and whether a token is sent.
    pub fn resolve(
        config: Option<PathBuf>,
        server: Option<String>,
        token: Option<Secret>,
        verbose: bool,
    ) -> Result<Target, Failure> {
        // An empty `HOOKCI_TOKEN=` is no token, as an unset one.
        let token = match token.filter(|t| !t.expose().trim().is_empty()) {
            Some(t) => Some(clean_token(&t)?),
            None => None,
        };
        let source = ConfigSource::locate(config);
        let named_server = server.is_some();
        let (server, config) = match (server, &source) {
            (Some(s), ConfigSource::Named(path)) if token.is_none() => (
                parse_server(&s, "--server")?,
                Some(load_config(Some(path.clone()))?),
            ),
            (Some(s), _) => (parse_server(&s, "--server")?, None),
            (None, ConfigSource::Named(path)) => {
                let c = load_config(Some(path.clone()))?;
                (
                    parse_server(&c.public_url, "the config's public_url")?,
                    Some(c),
                )
            }
            (None, ConfigSource::Found(path)) => (
                parse_server(&found_public_url(path)?, "the config's public_url")?,
                None,
            ),
            (None, ConfigSource::Defaults) => (
                parse_server(&Config::default().public_url, "the default public_url")?,
                None,
            ),
        };
        let server_named = named_server || matches!(source, ConfigSource::Named(_));
        let (token, withheld, from) = match (token, config) {
            (Some(t), _) if server_named => (Some(t), None, "the given token"),
            (Some(_), _) => (
                None,
                Some(
                    "HOOKCI_TOKEN is sent only to a server named with --server (or HOOKCI_SERVER) or by --config (or HOOKCI_CONFIG)",
                ),
                "none",
            ),
            (None, Some(c)) => match &c.admin_token {
                Some(t) if same_server(&server, &c) => {
                    (Some(clean_token(t)?), None, "the config's admin_token")
                }
                Some(_) => (
                    None,
                    Some(
                        "the config's admin_token is sent only to its own server (public_url or listen); give this server's token in HOOKCI_TOKEN",
                    ),
                    "none",
                ),
                None => (None, None, "none"),
            },
            (None, None) => (None, None, "none"),
        };
        if verbose {
            eprintln!(
                "hookci: using {}; server {}; token: {from}",
                source.describe(),
                server.as_str().trim_end_matches('/')
            );
            if let Some(why) = withheld {
                eprintln!("hookci: a token is known but not sent: {why}");
            }
        }
        Ok(Target {
            server,
            token,
            withheld,
        })
    }
}

/// The token as sent: trimmed (as the daemon trims what it is given), and
/// only characters a header can carry. The error never shows it.
fn clean_token(token: &Secret) -> Result<Secret, Failure> {
    let t = token.expose().trim();
    if t.is_empty() {
        return Err(Failure::usage("the admin token is empty"));
    }
    if !t.bytes().all(|b| b.is_ascii_graphic() || b == b' ') {
        return Err(Failure::usage(
            "the admin token has characters an HTTP header cannot carry (only printable ASCII)",
        ));
    }
    Ok(Secret::new(t))
}

/// An http(s) URL naming a host, as the base of the API's paths.
fn parse_server(raw: &str, what: &str) -> Result<Url, Failure> {
    let bad = || {
        Failure::usage(format!(
            "{what} must be an http:// or https:// URL, e.g. http://127.0.0.1:8787"
        ))
    };
    let url = Url::parse(raw.trim()).map_err(|_| bad())?;
    if !matches!(url.scheme(), "http" | "https") || url.host_str().is_none_or(str::is_empty) {
        return Err(bad());
    }
    if url.query().is_some() || url.fragment().is_some() {
        return Err(Failure::usage(format!(
            "{what} must be a base URL, without ?query or #fragment"
        )));
    }
    Ok(url)
}

/// Whether `server` is the daemon the config describes: its `public_url`
/// (same scheme, host and port), or plain HTTP to its `listen` address
/// (any loopback name when it listens on all addresses).
fn same_server(server: &Url, config: &Config) -> bool {
    let origin = |u: &Url| {
        (
            u.scheme().to_owned(),
            u.host_str().map(str::to_ascii_lowercase),
            u.port_or_known_default(),
        )
    };
    if Url::parse(&config.public_url).is_ok_and(|p| origin(&p) == origin(server)) {
        return true;
    }
    let Ok(listen) = config.listen.parse::<SocketAddr>() else {
        return false;
    };
    if server.scheme() != "http" || server.port_or_known_default() != Some(listen.port()) {
        return false;
    }
    let Some(host) = server.host_str() else {
        return false;
    };
    let ip = if host.eq_ignore_ascii_case("localhost") {
        None
    } else {
        match host
            .trim_start_matches('[')
            .trim_end_matches(']')
            .parse::<IpAddr>()
        {
            Ok(ip) => Some(ip),
            Err(_) => return false,
        }
    };
    let local = listen.ip().is_unspecified() || listen.ip().is_loopback();
    match ip {
        None => local,
        Some(ip) => ip == listen.ip() || (local && ip.is_loopback()),
    }
}

/// What `hookci builds` asks for.
#[derive(Debug, Clone, Default)]
pub struct BuildsQuery {
    /// Only this pipeline's builds.
    pub pipeline: Option<String>,
    /// Only builds of this branch.
    pub branch: Option<String>,
    /// Only builds in this state.
    pub status: Option<String>,
    /// Only builds of this event (`push`, `tag`, `pull_request`).
    pub event: Option<String>,
    /// At most this many (the server's default: 50).
    pub limit: Option<u32>,
}

/// `hookci builds`: a table of recent builds, newest first, or `--json`
/// the server's answer as it came.
pub fn builds(target: &Target, query: &BuildsQuery, json: bool) -> Result<ExitCode, Failure> {
    run(target, async |api| {
        let mut url = api.url("/api/builds");
        {
            let mut pairs = url.query_pairs_mut();
            for (key, value) in [
                ("pipeline", &query.pipeline),
                ("branch", &query.branch),
                ("status", &query.status),
                ("event", &query.event),
            ] {
                if let Some(v) = value {
                    pairs.append_pair(key, v);
                }
            }
            if let Some(limit) = query.limit {
                pairs.append_pair("limit", &limit.to_string());
            }
        }
        if url.query() == Some("") {
            url.set_query(None);
        }
        let res = api.send(api.authorize(api.http.get(url))).await?;
        let body = api.body(res).await?;
        let list: BuildList = api.decode(&body)?;
        let mut out = std::io::stdout().lock();
        if json {
            out.write_all(&body).map_err(output)?;
            if !body.ends_with(b"\n") {
                out.write_all(b"\n").map_err(output)?;
            }
        } else if list.builds.is_empty() {
            eprintln!("no builds");
        } else {
            let table = table(&list.builds, OffsetDateTime::now_utc());
            out.write_all(table.as_bytes()).map_err(output)?;
        }
        out.flush().map_err(output)?;
        Ok(ExitCode::SUCCESS)
    })
}

/// `hookci logs ID [--follow]`: the log as it is now, printed as it
/// arrives; with `follow`, streamed until the build ends, and the exit code
/// says how it ended (0 success or skipped, 1 failure, error or cancelled).
pub fn logs(target: &Target, id: u64, follow: bool) -> Result<ExitCode, Failure> {
    run(target, async |api| {
        if follow {
            return follow_log(api, id).await;
        }
        let mut res = api.send(api.get(&format!("/api/builds/{id}/log"))).await?;
        let mut out = std::io::stdout().lock();
        let mut printed = 0;
        while let Some(chunk) = res.chunk().await.map_err(|e| api.broken(&e))? {
            out.write_all(&chunk).map_err(output)?;
            out.flush().map_err(output)?;
            printed += chunk.len();
        }
        if printed == 0 {
            // Empty: say why, rather than print nothing at all.
            let build = api.build(id).await?;
            if build.status == "queued" {
                eprintln!("build {id} is queued: it has no log yet");
            } else if build.status == "waiting" {
                eprintln!(
                    "build {id} is waiting for approval (hookci approve {id}): it has no log yet"
                );
            }
        }
        Ok(ExitCode::SUCCESS)
    })
}

/// Streams build `id`'s log until the build has ended. The stream of a
/// build that has not started (or whose log is not open yet) ends at once,
/// so it is opened again until the build is over, printing only what is
/// new each time.
async fn follow_log(api: &Api, id: u64) -> Result<ExitCode, ClientError> {
    let mut printed: usize = 0;
    let mut said_queued = false;
    loop {
        printed = stream_log(api, id, printed).await?;
        let build = api.build(id).await?;
        match build.status.as_str() {
            "queued" | "running" => {
                if build.status == "queued" && !said_queued {
                    eprintln!("build {id} is queued; waiting for it to start");
                    said_queued = true;
                }
                tokio::time::sleep(Duration::from_millis(500)).await;
            }
            status => {
                match build.reason.as_deref() {
                    Some(reason) => eprintln!("build {id} {status}: {}", clean(reason)),
                    None => eprintln!("build {id} {status}"),
                }
                return Ok(match status {
                    "success" | "skipped" => ExitCode::SUCCESS,
                    _ => ExitCode::from(1),
                });
            }
        }
    }
}

/// One pass over `GET /api/builds/ID/log/stream`: prints the log past its
/// first `skip` bytes (already printed by an earlier pass) and returns how
/// far it got.
async fn stream_log(api: &Api, id: u64, skip: usize) -> Result<usize, ClientError> {
    let res = api
        .send(
            api.get(&format!("/api/builds/{id}/log/stream"))
                .header(ACCEPT, "text/event-stream"),
        )
        .await?;
    let is_sse = res
        .headers()
        .get(CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("text/event-stream"));
    if !is_sse {
        return Err(api.unexpected("the log stream is not text/event-stream"));
    }
    let chunks = futures_util::stream::try_unfold(res, |mut res| async move {
        Ok::<_, reqwest::Error>(res.chunk().await?.map(|chunk| (chunk, res)))
    });
    let mut events = std::pin::pin!(chunks.eventsource());
    let mut out = std::io::stdout().lock();
    let mut seen: usize = 0;
    while let Some(event) = events.next().await {
        let event = event.map_err(|e| match e {
            eventsource_stream::EventStreamError::Transport(e) => api.broken(&e),
            other => api.unexpected(&format!("the log stream is malformed: {other}")),
        })?;
        // `end` carries the build's status, not log text.
        if event.event == "end" {
            break;
        }
        let text = event.data.as_bytes();
        let new = skip.saturating_sub(seen).min(text.len());
        seen += text.len();
        if new < text.len() {
            out.write_all(&text[new..]).map_err(output)?;
            out.flush().map_err(output)?;
        }
    }
    Ok(seen.max(skip))
}

#[derive(Debug, Deserialize)]
struct RunnerList {
    runners: Vec<RunnerRow>,
}

/// The fields of a runner the client shows.
#[derive(Debug, Deserialize)]
struct RunnerRow {
    id: String,
    node: String,
    labels: Vec<String>,
    max_parallel_builds: i64,
    running: i64,
    last_seen_at: String,
    gone: bool,
}

/// `hookci runners`: the runner processes registered in the store (NODE,
/// STATE online or gone, LABELS, BUILDS running of max, LAST SEEN, ID), or
/// `--json` the server's answer as it came.
pub fn runners(target: &Target, json: bool) -> Result<ExitCode, Failure> {
    run(target, async |api| {
        let res = api.send(api.get("/api/runners")).await?;
        let body = api.body(res).await?;
        let list: RunnerList = api.decode(&body)?;
        let mut out = std::io::stdout().lock();
        if json {
            out.write_all(&body).map_err(output)?;
            if !body.ends_with(b"\n") {
                out.write_all(b"\n").map_err(output)?;
            }
        } else if list.runners.is_empty() {
            eprintln!("no runners");
        } else {
            let now = OffsetDateTime::now_utc();
            let mut rows =
                vec![["NODE", "STATE", "LABELS", "BUILDS", "LAST SEEN", "ID"].map(str::to_owned)];
            for r in &list.runners {
                rows.push([
                    clean(&r.node),
                    (if r.gone { "gone" } else { "online" }).to_owned(),
                    clean(&r.labels.join(",")),
                    format!("{}/{}", r.running, r.max_parallel_builds),
                    parse_time(&r.last_seen_at).map_or_else(String::new, |t| ago(now - t)),
                    clean(&r.id),
                ]);
            }
            out.write_all(aligned(&rows).as_bytes()).map_err(output)?;
        }
        out.flush().map_err(output)?;
        Ok(ExitCode::SUCCESS)
    })
}

/// `hookci cancel ID`.
pub fn cancel(target: &Target, id: u64) -> Result<ExitCode, Failure> {
    run(target, async |api| {
        let res = api
            .send(api.post(&format!("/api/builds/{id}/cancel")))
            .await?;
        let answer: Cancelled = api.json(res).await?;
        if answer.status == "cancelling" {
            say(&format!(
                "build {} cancelling: its steps are being stopped",
                answer.id
            ))?;
        } else {
            say(&format!("build {} {}", answer.id, clean(&answer.status)))?;
        }
        Ok(ExitCode::SUCCESS)
    })
}

/// `hookci approve ID`.
pub fn approve(target: &Target, id: u64) -> Result<ExitCode, Failure> {
    run(target, async |api| {
        let res = api
            .send(api.post(&format!("/api/builds/{id}/approve")))
            .await?;
        let answer: Cancelled = api.json(res).await?;
        say(&format!(
            "build {} approved: {}",
            answer.id,
            clean(&answer.status)
        ))?;
        Ok(ExitCode::SUCCESS)
    })
}

/// Prints the build a rebuild or trigger queued.
fn say_queued(queued: &Queued) -> Result<ExitCode, ClientError> {
    say(&format!(
        "build {} queued: {}",
        queued.id,
        clean(&queued.url)
    ))?;
    Ok(ExitCode::SUCCESS)
}

/// `hookci rebuild ID [--from-failed]`: the same commit again, as a new
/// build; from the step that failed, with `from_failed`.
pub fn rebuild(target: &Target, id: u64, from_failed: bool) -> Result<ExitCode, Failure> {
    run(target, async |api| {
        let mut url = api.url(&format!("/api/builds/{id}/rebuild"));
        if from_failed {
            url.set_query(Some("from=failed"));
        }
        let res = api.send(api.authorize(api.http.post(url))).await?;
        say_queued(&api.json(res).await?)
    })
}

/// `hookci trigger PIPELINE --branch B`: a build of the branch's head.
pub fn trigger(target: &Target, pipeline: &str, branch: &str) -> Result<ExitCode, Failure> {
    run(target, async |api| {
        // One path segment: the name cannot reach another route.
        let path = format!(
            "/api/pipelines/{}/trigger",
            crate::text::url_component(pipeline)
        );
        let res = api
            .send(
                api.post(&path)
                    .json(&serde_json::json!({ "branch": branch })),
            )
            .await?;
        say_queued(&api.json(res).await?)
    })
}

/// Runs one command's calls on a current-thread runtime and turns its
/// error into what the user sees: the server's refusal as `error: ...`
/// (exit 1), anything else as a [`Failure`] (exit 2).
fn run<F>(target: &Target, command: F) -> Result<ExitCode, Failure>
where
    F: AsyncFnOnce(&Api) -> Result<ExitCode, ClientError>,
{
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| Failure::usage(format!("cannot start the runtime: {e}")))?;
    let api = Api::new(target)?;
    match runtime.block_on(command(&api)) {
        Ok(code) => Ok(code),
        Err(ClientError::Refused { status, message }) => {
            eprintln!("error: {} (HTTP {})", clean(&message), status_text(status));
            if status == StatusCode::UNAUTHORIZED && target.token.is_none() {
                if let Some(why) = target.withheld {
                    eprintln!("hint: {why}");
                } else {
                    eprintln!("hint: give the admin token in HOOKCI_TOKEN (or with --token)");
                }
            }
            Ok(ExitCode::from(1))
        }
        // The reader went away (`| head`): stop quietly.
        Err(ClientError::Output(std::io::ErrorKind::BrokenPipe)) => Ok(ExitCode::from(2)),
        Err(e) => Err(Failure::usage(e.to_string())),
    }
}

/// Why a call did not give the answer asked for.
#[derive(Debug, thiserror::Error)]
enum ClientError {
    /// No connection (refused, no such host, TLS, timeout).
    #[error("cannot reach the hookci server at {server}: {reason}")]
    Unreachable { server: String, reason: String },
    /// The connection failed in the middle of an answer.
    #[error("the connection to the hookci server at {server} broke: {reason}")]
    Broken { server: String, reason: String },
    /// An answer that is not the API's (a proxy's page, another program).
    #[error("the server at {server} did not answer as hookci does: {detail}")]
    Unexpected { server: String, detail: String },
    /// The server refused: its status and sentence.
    #[error("{message} (HTTP {status})")]
    Refused { status: StatusCode, message: String },
    /// Writing to stdout failed.
    #[error("cannot write the output: {0}")]
    Output(std::io::ErrorKind),
}

/// Prints one line of result to stdout.
fn say(line: &str) -> Result<(), ClientError> {
    let mut out = std::io::stdout().lock();
    writeln!(out, "{line}")
        .and_then(|()| out.flush())
        .map_err(output)
}

fn output(e: std::io::Error) -> ClientError {
    ClientError::Output(e.kind())
}

/// `409 Conflict`.
fn status_text(status: StatusCode) -> String {
    match status.canonical_reason() {
        Some(reason) => format!("{} {reason}", status.as_u16()),
        None => status.as_u16().to_string(),
    }
}

/// A connection to the API: the base URL, the token, one pooled client.
#[derive(Debug)]
struct Api {
    base: Url,
    /// The base as shown in messages: without a user or password.
    shown: String,
    token: Option<Secret>,
    http: reqwest::Client,
}

impl Api {
    fn new(target: &Target) -> Result<Api, Failure> {
        // reqwest is built without a bundled crypto provider; use ring, as
        // the reporter does, unless the process chose one already.
        if rustls::crypto::CryptoProvider::get_default().is_none() {
            let _ = rustls::crypto::ring::default_provider().install_default();
        }
        let http = reqwest::Client::builder()
            .user_agent(crate::USER_AGENT)
            .connect_timeout(Duration::from_secs(10))
            // Between two reads; the log stream sends a keep-alive every 15 s.
            .read_timeout(Duration::from_secs(60))
            .build()
            .map_err(|e| Failure::usage(format!("cannot set up the HTTP client: {e}")))?;
        let mut shown = target.server.clone();
        let _ = shown.set_username("");
        let _ = shown.set_password(None);
        let mut base = target.server.clone();
        let trimmed = base.path().trim_end_matches('/').to_owned();
        base.set_path(&trimmed);
        Ok(Api {
            shown: shown.as_str().trim_end_matches('/').to_owned(),
            base,
            token: target.token.clone(),
            http,
        })
    }

    fn url(&self, path: &str) -> Url {
        let mut url = self.base.clone();
        let full = format!("{}{path}", self.base.path().trim_end_matches('/'));
        url.set_path(&full);
        url
    }

    fn get(&self, path: &str) -> RequestBuilder {
        self.authorize(self.http.get(self.url(path)))
    }

    fn post(&self, path: &str) -> RequestBuilder {
        self.authorize(self.http.post(self.url(path)))
    }

    /// Reads need the token too on a private server: send it when known.
    fn authorize(&self, req: RequestBuilder) -> RequestBuilder {
        match &self.token {
            // bearer_auth marks the header sensitive.
            Some(t) => req.bearer_auth(t.expose()),
            None => req,
        }
    }

    /// Sends `req`; a non-2xx answer is the server's refusal.
    async fn send(&self, req: RequestBuilder) -> Result<Response, ClientError> {
        let res = req.send().await.map_err(|e| ClientError::Unreachable {
            server: self.shown.clone(),
            reason: reason(&e),
        })?;
        let status = res.status();
        if status.is_success() {
            return Ok(res);
        }
        let body = res.bytes().await.unwrap_or_default();
        let message = serde_json::from_slice::<ErrorBody>(&body)
            .map(|b| b.error)
            .unwrap_or_else(|_| format!("the server answered {}", status_text(status)));
        Err(ClientError::Refused { status, message })
    }

    async fn body(&self, res: Response) -> Result<Vec<u8>, ClientError> {
        Ok(res.bytes().await.map_err(|e| self.broken(&e))?.to_vec())
    }

    fn decode<T: DeserializeOwned>(&self, body: &[u8]) -> Result<T, ClientError> {
        serde_json::from_slice(body).map_err(|e| self.unexpected(&format!("{e}")))
    }

    async fn json<T: DeserializeOwned>(&self, res: Response) -> Result<T, ClientError> {
        let body = self.body(res).await?;
        self.decode(&body)
    }

    /// `GET /api/builds/ID`.
    async fn build(&self, id: u64) -> Result<BuildRow, ClientError> {
        let res = self.send(self.get(&format!("/api/builds/{id}"))).await?;
        self.json(res).await
    }

    fn broken(&self, e: &reqwest::Error) -> ClientError {
        ClientError::Broken {
            server: self.shown.clone(),
            reason: reason(e),
        }
    }

    fn unexpected(&self, detail: &str) -> ClientError {
        ClientError::Unexpected {
            server: self.shown.clone(),
            detail: detail.to_owned(),
        }
    }
}

/// Why a request failed, in a few words: the I/O error's kind
/// ("connection refused") where it has a telling one, else the innermost
/// cause. reqwest's own message is not used: it repeats the URL.
fn reason(e: &reqwest::Error) -> String {
    if e.is_timeout() {
        return "timed out".to_owned();
    }
    let mut source: Option<&(dyn std::error::Error + 'static)> = std::error::Error::source(e);
    let mut innermost = None;
    while let Some(s) = source {
        if let Some(io) = s.downcast_ref::<std::io::Error>() {
            let kind = io.kind();
            let named = kind.to_string();
            let vague = matches!(
                kind,
                std::io::ErrorKind::Other | std::io::ErrorKind::InvalidData
            ) || named.contains("uncategorized");
            return if vague { io.to_string() } else { named };
        }
        innermost = Some(s);
        source = s.source();
    }
    innermost.map_or_else(|| "the request failed".to_owned(), ToString::to_string)
}

/// A server's text for a terminal: control characters shown as `?`.
fn clean(s: &str) -> String {
    s.chars()
        .map(|c| if c.is_control() { '?' } else { c })
        .collect()
}

#[derive(Debug, Deserialize)]
struct ErrorBody {
    error: String,
}

#[derive(Debug, Deserialize)]
struct Cancelled {
    id: i64,
    status: String,
}

#[derive(Debug, Deserialize)]
struct Queued {
    id: i64,
    url: String,
}

#[derive(Debug, Deserialize)]
struct BuildList {
    builds: Vec<BuildRow>,
}

/// The fields of a build the clients show (the API sends more).
#[derive(Debug, Deserialize)]
struct BuildRow {
    id: i64,
    pipeline: String,
    #[serde(rename = "ref")]
    git_ref: String,
    branch: Option<String>,
    tag: Option<String>,
    commit: String,
    status: String,
    reason: Option<String>,
    created_at: String,
    started_at: Option<String>,
    finished_at: Option<String>,
    #[serde(default)]
    pull_request: Option<PullRow>,
}

/// A build's pull request, as the list shows it.
#[derive(Debug, Deserialize)]
struct PullRow {
    number: u64,
    title: String,
    author: String,
    fork: bool,
}

impl PullRow {
    /// `PR #7 by alice (fork): Title`, the title cut at 40 characters.
    fn shown(&self) -> String {
        let mut title: String = self.title.chars().take(40).collect();
        if title.len() < self.title.len() {
            title.push('…');
        }
        let fork = if self.fork { " (fork)" } else { "" };
        format!("PR #{} by {}{fork}: {title}", self.number, self.author)
    }
}

/// The builds as an aligned table: ID, PIPELINE, REF, COMMIT, STATUS,
/// CREATED (how long ago), DURATION (so far, while running), REASON.
fn table(builds: &[BuildRow], now: OffsetDateTime) -> String {
    let header = [
        "ID", "PIPELINE", "REF", "COMMIT", "STATUS", "CREATED", "DURATION", "REASON",
    ];
    let mut rows: Vec<[String; 8]> = vec![header.map(str::to_owned)];
    for b in builds {
        let created = parse_time(&b.created_at).map_or_else(String::new, |t| ago(now - t));
        let duration = match (
            b.started_at.as_deref().and_then(parse_time),
            b.finished_at.as_deref().and_then(parse_time),
        ) {
            (Some(start), Some(end)) => span(end - start),
            (Some(start), None) => span(now - start),
            (None, _) => String::new(),
        };
        let shown_ref = match &b.pull_request {
            Some(pr) => pr.shown(),
            None => b
                .branch
                .as_ref()
                .or(b.tag.as_ref())
                .unwrap_or(&b.git_ref)
                .clone(),
        };
        rows.push([
            b.id.to_string(),
            clean(&b.pipeline),
            clean(&shown_ref),
            clean(&b.commit.chars().take(8).collect::<String>()),
            clean(&b.status),
            created,
            duration,
            clean(b.reason.as_deref().unwrap_or("")),
        ]);
    }
    aligned(&rows)
}

/// Rows as columns two spaces apart, each as wide as its widest cell.
fn aligned<const N: usize>(rows: &[[String; N]]) -> String {
    let mut widths = [0usize; N];
    for row in rows {
        for (w, cell) in widths.iter_mut().zip(row) {
            *w = (*w).max(cell.chars().count());
        }
    }
    let mut out = String::new();
    for row in rows {
        let mut line = String::new();
        for (i, cell) in row.iter().enumerate() {
            if i > 0 {
                line.push_str("  ");
            }
            line.push_str(cell);
            if i + 1 < row.len() {
                let pad = widths[i] - cell.chars().count();
                line.extend(std::iter::repeat_n(' ', pad));
            }
        }
        out.push_str(line.trim_end());
        out.push('\n');
    }
    out
}

fn parse_time(s: &str) -> Option<OffsetDateTime> {
    OffsetDateTime::parse(s, &Rfc3339).ok()
}

/// `12s ago`, `5m ago`, `3h ago`, `2d ago`.
fn ago(d: time::Duration) -> String {
    let s = d.whole_seconds().max(0);
    match s {
        0..60 => format!("{s}s ago"),
        60..3600 => format!("{}m ago", s / 60),
        3600..86_400 => format!("{}h ago", s / 3600),
        _ => format!("{}d ago", s / 86_400),
    }
}

/// `22ms`, `42s`, `3m 5s`, `1h 2m`, as the pages write it (none below zero).
fn span(d: time::Duration) -> String {
    crate::text::duration(d.try_into().unwrap_or_default())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_read_as_a_person_writes_them() {
        let ms = time::Duration::milliseconds;
        assert_eq!(span(ms(22)), "22ms");
        assert_eq!(span(ms(-5)), "0ms");
        assert_eq!(span(ms(42_000)), "42s");
        assert_eq!(span(ms(185_000)), "3m 5s");
        assert_eq!(span(ms(3_720_000)), "1h 2m");
        assert_eq!(ago(ms(61_000)), "1m ago");
    }
}
