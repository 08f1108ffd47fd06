//! Commit status reports: the one module that calls the Git hosts' APIs.
//!
//! Every build state change writes a report row to the store's outbox in
//! the same transaction (see `store`). The [`Reporter`] task takes the due
//! rows, sends each to the pipeline's provider (one file per provider, each
//! turning a [`Report`] into an [`Outgoing`] request as plain data), and
//! records the outcome: delivered, retry later per the [`Schedule`], or
//! failed for good.
//!
//! Invariants:
//! - For one repository, commit and context, at most one request is in
//!   flight, and the store supersedes an unsent older state once a newer one
//!   is written: an older state never lands after a newer one.
//! - The reporter never blocks or fails a build: it reads the outbox the
//!   worker writes, and nothing else waits for it.
//! - A token never reaches a stored error or a log line: errors are built
//!   from the host's status and answer, with every secret of the request
//!   replaced by `***`.

pub mod bitbucket;
pub mod bitbucket_server;
mod clock;
pub mod gitea;
pub mod github;
pub mod gitlab;
mod request;
mod schedule;
pub mod webhook;

pub use clock::Clock;
pub use request::{MAX_DESCRIPTION_CHARS, Outgoing, Phase, Report, description};
pub use schedule::{Schedule, parse_retry_after};

use crate::metrics::Metrics;
use crate::pipeline::{Pipeline, PipelineSet, Provider};
use crate::secret::Secret;
use crate::store::{ReportJob, ReportOutcome, StepRecord, Store};
use crate::webhook::Host;
use anyhow::Context as _;
use request::parse_base;
use reqwest::Url;
use reqwest::header::HeaderMap;
use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, SystemTime};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

/// The `User-Agent` of every report (GitHub requires one).
pub use crate::USER_AGENT;

/// How many due reports one look at the outbox takes. More than
/// `max_in_flight` twice over, so that reports blocked behind an in-flight
/// one of their commit never hide the ones that could go.
const BATCH: u32 = 64;

/// While requests are in flight, the outbox's next due time counts them
/// too; look again this often for other reports falling due meanwhile.
const BUSY_RECHECK: Duration = Duration::from_secs(1);

/// After a store error, wait this long before reading the outbox again.
const STORE_RETRY: Duration = Duration::from_secs(5);

/// How long the reporter gathers newly written reports before it reads
/// them: a status a few milliseconds later, for one read per burst.
const GATHER: Duration = Duration::from_millis(20);

/// The most of a host's answer kept in an error.
const MAX_ANSWER_CHARS: usize = 200;

/// How the reporter sends.
#[derive(Debug, Clone)]
pub struct ReporterOptions {
    /// When to retry, and when to give up.
    pub schedule: Schedule,
    /// The most one connection attempt may take.
    pub connect_timeout: Duration,
    /// The most one request may take, from connecting to the answer's end.
    pub request_timeout: Duration,
    /// Requests in flight at once, over all hosts.
    pub max_in_flight: usize,
}

impl Default for ReporterOptions {
    /// Connect within 5 s, answer within 15 s, 8 requests at once.
    fn default() -> Self {
        ReporterOptions {
            schedule: Schedule::default(),
            connect_timeout: Duration::from_secs(5),
            request_timeout: Duration::from_secs(15),
            max_in_flight: 8,
        }
    }
}

/// The task that delivers the outbox's reports.
#[derive(Debug)]
pub struct Reporter {
    store: Store,
    pipelines: PipelineSet,
    public_url: String,
    client: reqwest::Client,
    options: ReporterOptions,
    metrics: Arc<Metrics>,
}

impl Reporter {
    /// A reporter with the default options; `public_url` is the base of the
    /// build links sent to hosts; each send's outcome is counted in `metrics`.
    pub fn new(
        store: Store,
        pipelines: PipelineSet,
        public_url: impl Into<String>,
        metrics: Arc<Metrics>,
    ) -> anyhow::Result<Reporter> {
        Reporter::with_options(
            store,
            pipelines,
            public_url,
            ReporterOptions::default(),
            metrics,
        )
    }

    /// A reporter with `options` (tests shorten the timeouts and schedule).
    pub fn with_options(
        store: Store,
        pipelines: PipelineSet,
        public_url: impl Into<String>,
        options: ReporterOptions,
        metrics: Arc<Metrics>,
    ) -> anyhow::Result<Reporter> {
        // reqwest is built without a bundled crypto provider; use ring unless
        // the process chose one already.
        if rustls::crypto::CryptoProvider::get_default().is_none() {
            let _ = rustls::crypto::ring::default_provider().install_default();
        }
        let client = reqwest::Client::builder()
            .user_agent(USER_AGENT)
            .connect_timeout(options.connect_timeout)
            .timeout(options.request_timeout)
            .redirect(reqwest::redirect::Policy::custom(|attempt| {
                // 307 and 308 keep the method and body; 301 and 302 would
                // turn the POST into a GET, whose 200 is no delivery. Every
                // report carries a credential (a token header, GitLab's
                // PRIVATE-TOKEN, a signature), and reqwest strips only
                // Authorization on a cross-origin redirect: follow only to
                // the same scheme, host and port.
                let keeps_post = matches!(attempt.status().as_u16(), 307 | 308);
                let same_origin = attempt
                    .previous()
                    .first()
                    .is_some_and(|first| same_origin(first, attempt.url()));
                if keeps_post && same_origin && attempt.previous().len() < 5 {
                    attempt.follow()
                } else {
                    attempt.stop()
                }
            }))
            .build()
            .context("cannot set up the HTTP client for commit statuses")?;
        Ok(Reporter {
            store,
            pipelines,
            public_url: public_url.into(),
            client,
            options,
            metrics,
        })
    }

    /// Delivers reports until `shutdown` is cancelled: takes the due ones,
    /// sends each (one at a time per commit and context, at most
    /// `max_in_flight` at once), records the outcomes, then sleeps until the
    /// next is due or new ones are written. On shutdown, requests in flight
    /// are dropped; their reports stay pending and go after a restart.
    pub async fn run(self, shutdown: CancellationToken) {
        let inner = Arc::new(Inner {
            store: self.store,
            pipelines: self.pipelines,
            public_url: self.public_url,
            client: self.client,
            metrics: self.metrics,
            clock: Clock::new(),
            schedule: self.options.schedule,
            connect_timeout: self.options.connect_timeout,
            request_timeout: self.options.request_timeout,
        });
        let permits = Arc::new(Semaphore::new(self.options.max_in_flight.max(1)));
        let mut tasks: JoinSet<()> = JoinSet::new();
        let mut busy: HashMap<tokio::task::Id, Key> = HashMap::new();
        tracing::debug!("reporter started");
        loop {
            while let Some(done) = tasks.try_join_next_with_id() {
                busy.remove(&task_id(&done));
            }
            let now = inner.clock.now_ms();
            match inner.store.due_reports(now, BATCH).await {
                Ok(jobs) => {
                    for job in jobs {
                        let key = Key::of(&job);
                        if busy.values().any(|k| *k == key) {
                            continue;
                        }
                        let Ok(permit) = Arc::clone(&permits).try_acquire_owned() else {
                            break;
                        };
                        let task = tasks.spawn(Arc::clone(&inner).deliver(job, permit));
                        busy.insert(task.id(), key);
                    }
                }
                Err(e) => {
                    tracing::error!(error = %e, "cannot read the report outbox; trying again soon");
                    tokio::select! {
                        () = shutdown.cancelled() => break,
                        () = tokio::time::sleep(STORE_RETRY) => {}
                    }
                    continue;
                }
            }
            let wake_at = match inner.store.next_report_due().await {
                Ok(Some(due)) if due > inner.clock.now_ms() => Some(inner.clock.instant_at(due)),
                // Due now: in flight, or waiting behind one that is: the end
                // of a request wakes the loop, so no timer is needed then.
                Ok(Some(_)) if !tasks.is_empty() => None,
                Ok(Some(_)) => Some(tokio::time::Instant::now() + BUSY_RECHECK),
                Ok(None) => None,
                Err(e) => {
                    tracing::error!(error = %e, "cannot read the report outbox; trying again soon");
                    Some(tokio::time::Instant::now() + STORE_RETRY)
                }
            };
            tokio::select! {
                () = shutdown.cancelled() => break,
                Some(done) = tasks.join_next_with_id(), if !tasks.is_empty() => {
                    busy.remove(&task_id(&done));
                }
                () = inner.store.reports_written() => {
                    // Reports come in bursts (a flood of pushes writes one
                    // each): gathered for a moment, one read takes them all,
                    // instead of two queries per delivery.
                    tokio::select! {
                        () = shutdown.cancelled() => break,
                        () = tokio::time::sleep(GATHER) => {}
                    }
                }
                () = sleep_until(wake_at) => {}
            }
        }
        tasks.shutdown().await;
        tracing::debug!("reporter stopped");
    }
}

/// Sleeps until `at`, or forever.
async fn sleep_until(at: Option<tokio::time::Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}

fn task_id(done: &Result<(tokio::task::Id, ()), tokio::task::JoinError>) -> tokio::task::Id {
    match done {
        Ok((id, ())) => *id,
        Err(e) => {
            if e.is_panic() {
                tracing::error!("a commit status delivery panicked; it will be tried again");
            }
            e.id()
        }
    }
}

/// What reports of one commit status share: at most one in flight each.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Key {
    repo: String,
    commit: Option<crate::model::CommitId>,
    context: String,
}

impl Key {
    fn of(job: &ReportJob) -> Key {
        Key {
            repo: job.build.repo.clone(),
            commit: job.build.commit.clone(),
            context: job.context.clone(),
        }
    }
}

/// What the delivery tasks share.
#[derive(Debug)]
struct Inner {
    store: Store,
    pipelines: PipelineSet,
    public_url: String,
    client: reqwest::Client,
    metrics: Arc<Metrics>,
    clock: Clock,
    schedule: Schedule,
    connect_timeout: Duration,
    request_timeout: Duration,
}

/// How one send went.
#[derive(Debug)]
enum Attempt {
    /// The host took it.
    Delivered,
    /// Sending again cannot help (a 4xx, no such pipeline, a bad setting).
    Refused(String),
    /// Worth trying again: no answer, a 5xx, 408, 429, a rate limit.
    Failed {
        error: String,
        retry_after: Option<Duration>,
    },
}

impl Inner {
    /// Sends `job` once and records what happened.
    async fn deliver(self: Arc<Self>, job: ReportJob, _permit: OwnedSemaphorePermit) {
        let attempt = self.attempt(&job).await;
        let failures = u32::try_from(job.attempts.saturating_add(1)).unwrap_or(u32::MAX);
        let span = tracing::warn_span!(
            "report",
            id = job.id,
            build = job.build.id,
            pipeline = %job.build.pipeline,
            context = %job.context,
            state = %job.state,
            attempt = failures,
        );
        let (outcome, retry_at, error) = span.in_scope(|| match attempt {
            Attempt::Delivered => {
                tracing::debug!("commit status delivered");
                (ReportOutcome::Delivered, None, None)
            }
            Attempt::Refused(error) => {
                tracing::warn!(%error, "commit status refused; not retried");
                (ReportOutcome::Failed, None, Some(error))
            }
            Attempt::Failed { error, retry_after } => {
                let now = self.clock.now_ms();
                if self.schedule.gives_up(job.created_ms, now) {
                    let error = format!(
                        "gave up after {}: {error}",
                        self.schedule.give_up_words()
                    );
                    tracing::warn!(%error, "commit status not delivered");
                    (ReportOutcome::Failed, None, Some(error))
                } else {
                    let delay = self
                        .schedule
                        .delay(failures, retry_after, rand::random::<f64>());
                    tracing::warn!(%error, retry_in = ?delay, "commit status not delivered; will retry");
                    let delay_ms = i64::try_from(delay.as_millis()).unwrap_or(i64::MAX);
                    let retry_at = now.saturating_add(delay_ms);
                    (ReportOutcome::Pending, Some(retry_at), Some(error))
                }
            }
        });
        let provider = self
            .pipelines
            .current()
            .get(&job.build.pipeline)
            .map_or(Provider::None, |p| p.provider_for(build_host(&job)));
        self.metrics.status_report(provider, outcome);
        if let Err(e) = self
            .store
            .report_attempted(job.id, outcome, retry_at, error)
            .await
        {
            tracing::error!(error = %e, "cannot record a commit status delivery");
        }
    }

    /// Resolves the pipeline's provider for `job`, builds the request and
    /// sends it once.
    async fn attempt(&self, job: &ReportJob) -> Attempt {
        let pipelines = self.pipelines.current();
        let Some(pipeline) = pipelines.get(&job.build.pipeline) else {
            return Attempt::Refused(format!(
                "the pipeline {} no longer exists",
                job.build.pipeline
            ));
        };
        let provider = pipeline.provider_for(build_host(job));
        let steps = if provider == Provider::Webhook {
            match self.store.steps(job.build.id).await {
                Ok(steps) => steps,
                Err(e) => {
                    return Attempt::Failed {
                        error: format!("cannot read the build's steps: {e}"),
                        retry_after: None,
                    };
                }
            }
        } else {
            Vec::new()
        };
        let now_s = self.clock.now_ms().div_euclid(1000);
        let outgoing = match request_for(pipeline, job, &self.public_url, &steps, now_s) {
            Ok(outgoing) => outgoing,
            Err(e) => return Attempt::Refused(e),
        };
        let phase = Phase::of(job.state);
        self.send(outgoing, provider, phase).await
    }

    /// Sends one request and judges the answer.
    async fn send(&self, out: Outgoing, provider: Provider, phase: Option<Phase>) -> Attempt {
        let host = host_label(&out.url);
        let secrets = out.secrets;
        let response = match self
            .client
            .post(out.url)
            .headers(out.headers)
            .body(out.body)
            .send()
            .await
        {
            Ok(response) => response,
            Err(e) => {
                return Attempt::Failed {
                    error: scrub(&self.describe(&e, &host), &secrets),
                    retry_after: None,
                };
            }
        };
        let status = response.status();
        if status.is_success() {
            return Attempt::Delivered;
        }
        let headers = response.headers().clone();
        let body = answer_excerpt(response).await;
        let answer = if body.is_empty() {
            format!("{host} answered {status}")
        } else {
            format!("{host} answered {status}: {body}")
        };
        let answer = scrub(&answer, &secrets);
        let now = SystemTime::now();
        match status.as_u16() {
            408 | 429 | 500..=599 => Attempt::Failed {
                error: answer,
                retry_after: retry_after(&headers, now),
            },
            // GitHub's rate limits answer 403 with a reset time or a
            // Retry-After; every other 403 is a refusal.
            403 if rate_limited(&headers) => Attempt::Failed {
                error: answer,
                retry_after: retry_after(&headers, now),
            },
            code if provider == Provider::Gitlab
                && phase.is_some_and(|p| gitlab::already_in_state(p, code, &body)) =>
            {
                Attempt::Delivered
            }
            300..=399 => Attempt::Refused(format!(
                "{answer} (redirects to another scheme, host or port, or that would turn the POST into a GET, are not followed; set [status] api_url to the new address)"
            )),
            _ => Attempt::Refused(answer),
        }
    }

    /// A transport error in words: no URL (it is the host's API) and no
    /// request detail beyond what went wrong.
    fn describe(&self, e: &reqwest::Error, host: &str) -> String {
        if e.is_timeout() {
            if e.is_connect() {
                return format!(
                    "cannot connect to {host}: no connection within {}",
                    humantime::format_duration(self.connect_timeout)
                );
            }
            return format!(
                "{host} did not answer within {}",
                humantime::format_duration(self.request_timeout)
            );
        }
        let cause = root_cause(e);
        if e.is_connect() {
            format!("cannot connect to {host}: {cause}")
        } else {
            format!("the request to {host} failed: {cause}")
        }
    }
}

/// The host a build's delivery came from, as the store keeps its name.
fn build_host(job: &ReportJob) -> Option<Host> {
    job.build.host.as_deref().and_then(|h| h.parse().ok())
}

/// The request that reports `job` for `pipeline`: pure, so that every
/// provider's URL, headers and body are tested without sending.
/// `now_s` (Unix seconds) is the webhook provider's signing time; `steps`
/// its build steps. An error means the report cannot be sent as things are
/// configured (no such provider, no token, a bad URL).
pub fn request_for(
    pipeline: &Pipeline,
    job: &ReportJob,
    public_url: &str,
    steps: &[StepRecord],
    now_s: i64,
) -> Result<Outgoing, String> {
    let provider = pipeline.provider_for(build_host(job));
    let report = Report::new(job, public_url)?;
    let status = &pipeline.status;
    let token = || -> Result<&Secret, String> {
        status.token.as_ref().ok_or_else(|| {
            format!(
                "the pipeline {} has no [status] token for {}",
                pipeline.name,
                provider.as_str()
            )
        })
    };
    let api = |default: Result<Url, String>| match &status.api_url {
        Some(url) => parse_base(url),
        None => default,
    };
    // The API base comes from the configuration only: `api_url`, a public
    // host's API, or the pipeline's own `clone_url`; never the payload.
    let urls = request::configured_repo_urls(pipeline.clone_url.as_deref());
    let repo = &pipeline.repo;
    match provider {
        Provider::Github => github::request(
            &report,
            &api(Ok(github::default_api(&urls, repo)))?,
            token()?,
        ),
        Provider::Gitea | Provider::Forgejo => {
            gitea::request(&report, &api(gitea::default_api(&urls, repo))?, token()?)
        }
        Provider::Gitlab => gitlab::request(
            &report,
            &api(Ok(gitlab::default_api(&urls, repo)))?,
            token()?,
        ),
        Provider::Bitbucket => {
            bitbucket::request(&report, &api(Ok(bitbucket::default_api()))?, token()?)
        }
        Provider::BitbucketServer => bitbucket_server::request(
            &report,
            &api(bitbucket_server::default_api(&urls))?,
            token()?,
        ),
        Provider::Webhook => {
            let url = status
                .url
                .as_deref()
                .ok_or("the webhook provider has no [status] url")
                .and_then(|u| Url::parse(u).map_err(|_| "[status] url is not a URL"))?;
            let secret = status
                .secret
                .as_ref()
                .ok_or("the webhook provider has no [status] secret")?;
            webhook::request(&report, &url, secret, steps, now_s)
        }
        Provider::None => Err(match status.provider {
            Some(_) => format!(
                "the pipeline {} no longer reports commit statuses ([status] provider is none)",
                pipeline.name
            ),
            None => match pipeline.host {
                Some(host) => format!(
                    "the pipeline {} no longer reports commit statuses ({} has no status API; set [status] provider)",
                    pipeline.name,
                    host.as_str()
                ),
                None => format!(
                    "the pipeline {} no longer reports commit statuses (neither host nor [status] provider is set)",
                    pipeline.name
                ),
            },
        }),
    }
}

/// True when `a` and `b` have the same scheme, host and port (the
/// scheme's default port filled in).
fn same_origin(a: &Url, b: &Url) -> bool {
    a.scheme() == b.scheme()
        && a.host_str().map(str::to_ascii_lowercase) == b.host_str().map(str::to_ascii_lowercase)
        && a.port_or_known_default() == b.port_or_known_default()
}

/// `host[:port]` of `url`, for errors.
fn host_label(url: &Url) -> String {
    match (url.host_str(), url.port()) {
        (Some(host), Some(port)) => format!("{host}:{port}"),
        (Some(host), None) => host.to_owned(),
        (None, _) => "the host".to_owned(),
    }
}

/// The innermost cause of an error, in words.
fn root_cause(e: &(dyn std::error::Error + 'static)) -> String {
    let mut cause = e;
    while let Some(next) = cause.source() {
        cause = next;
    }
    cause.to_string()
}

/// `text` with every secret's value replaced by `***`.
fn scrub(text: &str, secrets: &[Secret]) -> String {
    let mut text = text.to_owned();
    for secret in secrets {
        let value = secret.expose();
        if !value.is_empty() {
            text = text.replace(value, "***");
        }
    }
    text
}

/// The start of an error answer's body, on one line, at most 200 characters.
async fn answer_excerpt(mut response: reqwest::Response) -> String {
    let mut bytes = Vec::new();
    while bytes.len() < 4096 {
        match response.chunk().await {
            Ok(Some(chunk)) => bytes.extend_from_slice(&chunk),
            Ok(None) | Err(_) => break,
        }
    }
    let text = String::from_utf8_lossy(&bytes);
    let one_line = text.split_whitespace().collect::<Vec<_>>().join(" ");
    request::truncate_chars(&one_line, MAX_ANSWER_CHARS)
}

/// The wait a host asked for: `Retry-After`, else GitHub's rate limit reset.
fn retry_after(headers: &HeaderMap, now: SystemTime) -> Option<Duration> {
    let header = |name: &str| headers.get(name).and_then(|v| v.to_str().ok());
    header("retry-after")
        .and_then(|v| parse_retry_after(v, now))
        .or_else(|| {
            let exhausted = header("x-ratelimit-remaining").is_some_and(|v| v.trim() == "0");
            header("x-ratelimit-reset")
                .filter(|_| exhausted)
                .and_then(|v| schedule::parse_reset_epoch(v, now))
        })
}

/// GitHub marks rate limit refusals (which may be 403s) with a
/// `Retry-After` or an exhausted `x-ratelimit-remaining`.
fn rate_limited(headers: &HeaderMap) -> bool {
    headers.contains_key("retry-after")
        || headers
            .get("x-ratelimit-remaining")
            .and_then(|v| v.to_str().ok())
            .is_some_and(|v| v.trim() == "0")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secrets_are_scrubbed_from_errors() {
        let secrets = [Secret::new("tok123")];
        assert_eq!(
            scrub("host answered 401: bad token tok123", &secrets),
            "host answered 401: bad token ***"
        );
        assert_eq!(scrub("nothing here", &[Secret::new("")]), "nothing here");
    }

    #[test]
    fn a_rate_limited_403_waits_for_the_reset() {
        let now = SystemTime::UNIX_EPOCH + Duration::from_secs(1_000);
        let mut headers = HeaderMap::new();
        headers.insert("x-ratelimit-remaining", "0".parse().unwrap());
        headers.insert("x-ratelimit-reset", "1030".parse().unwrap());
        assert!(rate_limited(&headers));
        assert_eq!(retry_after(&headers, now), Some(Duration::from_secs(30)));
        headers.insert("retry-after", "7".parse().unwrap());
        assert_eq!(retry_after(&headers, now), Some(Duration::from_secs(7)));
        assert!(!rate_limited(&HeaderMap::new()));
    }

    #[test]
    fn host_labels_name_the_port_when_there_is_one() {
        let url = Url::parse("http://127.0.0.1:9/x").unwrap();
        assert_eq!(host_label(&url), "127.0.0.1:9");
        let url = Url::parse("https://api.github.com/x").unwrap();
        assert_eq!(host_label(&url), "api.github.com");
    }
}
