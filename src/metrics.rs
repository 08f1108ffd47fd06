//! Prometheus metrics: counters the daemon keeps in memory, rendered with
//! gauges read from the store at scrape time (`GET /metrics`).
//!
//! The registry and every label live here; the places where things happen
//! (the webhook routes, the API, the worker, the reporter) call one method
//! each.
//! *Invariant:* label values are bounded: names of pipelines that exist (or
//! existed, for builds), HTTP status codes, and closed lists of statuses,
//! providers and outcomes; never a raw URL segment or a payload value.
//! Counters restart from zero with the daemon, which Prometheus' `rate()`
//! and `increase()` handle.

use crate::pipeline::Provider;
use crate::store::{Build, BuildStatus, ReportOutcome};
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::metrics::info::Info;
use prometheus_client::registry::{Registry, Unit};
use std::sync::atomic::AtomicU64;
use std::time::{Instant, SystemTime};
use time::OffsetDateTime;

/// The `Content-Type` of what [`Metrics::render`] writes: OpenMetrics text.
pub const CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// The `pipeline` label of a delivery to `/hooks/NAME` when there is no
/// pipeline NAME. Pipeline names start with `[a-z0-9]`, so it is never one.
pub const UNKNOWN_PIPELINE: &str = "_unknown";

/// The `pipeline` label of deliveries to the org-wide `/hooks`.
pub const ORG_WIDE: &str = "_org_wide";

/// Build durations: from a second to an hour (`timeout` defaults to 1 h).
const DURATION_BUCKETS: [f64; 12] = [
    1.0, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0, 600.0, 900.0, 1800.0, 2700.0, 3600.0,
];

/// Queue waits: an idle worker claims within milliseconds; a busy box
/// makes builds wait for the ones ahead of them.
const QUEUE_WAIT_BUCKETS: [f64; 12] = [
    0.1, 0.5, 1.0, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0, 600.0, 1800.0, 3600.0,
];

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct DeliveryLabels {
    pipeline: String,
    code: u16,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct BuildLabels {
    pipeline: String,
    status: &'static str,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct PipelineLabels {
    pipeline: String,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ReportLabels {
    provider: &'static str,
    outcome: &'static str,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct VersionLabels {
    version: &'static str,
}

type Histograms = Family<PipelineLabels, Histogram, fn() -> Histogram>;

/// The daemon's counters, shared by the HTTP layer, the worker and the
/// reporter.
#[derive(Debug)]
pub struct Metrics {
    registry: Registry,
    deliveries: Family<DeliveryLabels, Counter>,
    builds_finished: Family<BuildLabels, Counter>,
    build_duration: Histograms,
    queue_wait: Histograms,
    status_reports: Family<ReportLabels, Counter>,
    running: Gauge,
    queued: Gauge,
    pending_reports: Gauge,
}

impl Default for Metrics {
    fn default() -> Self {
        Metrics::new()
    }
}

impl Metrics {
    /// Every metric registered, counters at zero.
    pub fn new() -> Metrics {
        let mut registry = Registry::default();
        let deliveries = Family::<DeliveryLabels, Counter>::default();
        registry.register(
            "hookci_webhook_deliveries",
            "Webhook deliveries answered, by pipeline (_unknown: no such pipeline; \
             _org_wide: POST /hooks) and HTTP status code",
            deliveries.clone(),
        );
        let builds_finished = Family::<BuildLabels, Counter>::default();
        registry.register(
            "hookci_builds_finished",
            "Builds that reached a final state, by pipeline and status (builds \
             cancelled or superseded before they ran included)",
            builds_finished.clone(),
        );
        let build_duration: Histograms =
            Family::new_with_constructor(|| Histogram::new(DURATION_BUCKETS));
        registry.register_with_unit(
            "hookci_build_duration",
            "How long finished builds ran, from claim to result, by pipeline",
            Unit::Seconds,
            build_duration.clone(),
        );
        let queue_wait: Histograms =
            Family::new_with_constructor(|| Histogram::new(QUEUE_WAIT_BUCKETS));
        registry.register_with_unit(
            "hookci_build_queue_wait",
            "How long builds waited from queued to started, by pipeline (a re-queued \
             build counts from its first queueing)",
            Unit::Seconds,
            queue_wait.clone(),
        );
        let status_reports = Family::<ReportLabels, Counter>::default();
        registry.register(
            "hookci_status_reports",
            "Commit status sends, by provider and outcome (delivered, retry, failed)",
            status_reports.clone(),
        );
        let running = Gauge::default();
        registry.register(
            "hookci_builds_running",
            "Builds running now",
            running.clone(),
        );
        let queued = Gauge::default();
        registry.register(
            "hookci_builds_queued",
            "Builds in the queue: queued, or waiting for approval",
            queued.clone(),
        );
        let pending_reports = Gauge::default();
        registry.register(
            "hookci_status_reports_pending",
            "Commit status reports waiting in the outbox, to be sent or retried \
             (growing: a Git host's API is refusing or unreachable)",
            pending_reports.clone(),
        );
        registry.register(
            "hookci_build",
            "The running hookci's version",
            Info::new(VersionLabels {
                version: env!("CARGO_PKG_VERSION"),
            }),
        );
        let start = Gauge::<f64, AtomicU64>::default();
        start.set(
            SystemTime::now()
                .duration_since(SystemTime::UNIX_EPOCH)
                .map_or(0.0, |d| d.as_secs_f64()),
        );
        registry.register_with_unit(
            "process_start_time",
            "When the daemon started, Unix time",
            Unit::Seconds,
            start,
        );
        Metrics {
            registry,
            deliveries,
            builds_finished,
            build_duration,
            queue_wait,
            status_reports,
            running,
            queued,
            pending_reports,
        }
    }

    /// A webhook route answered `code`; `pipeline` is `None` when no such
    /// pipeline exists (pass [`ORG_WIDE`] for the org-wide route).
    pub fn webhook_delivery(&self, pipeline: Option<&str>, code: u16) {
        let pipeline = pipeline.unwrap_or(UNKNOWN_PIPELINE).to_owned();
        self.deliveries
            .get_or_create(&DeliveryLabels { pipeline, code })
            .inc();
    }

    /// The worker claimed `build`: counts it running until the returned
    /// guard drops, and observes how long it waited in the queue.
    pub fn build_started(&self, build: &Build) -> RunningBuild<'_> {
        let labels = PipelineLabels {
            pipeline: build.pipeline.clone(),
        };
        let started = build.started_at.unwrap_or_else(OffsetDateTime::now_utc);
        let wait = (started - build.created_at).as_seconds_f64().max(0.0);
        self.queue_wait.get_or_create(&labels).observe(wait);
        self.running.inc();
        RunningBuild {
            metrics: self,
            labels,
            started: Instant::now(),
        }
    }

    /// `n` builds of `pipeline` ended as `status` without running (cancelled
    /// or superseded while queued, interrupted twice).
    pub fn ended_unrun(&self, pipeline: &str, status: BuildStatus, n: u64) {
        if n > 0 {
            self.builds_finished
                .get_or_create(&BuildLabels {
                    pipeline: pipeline.to_owned(),
                    status: status.as_str(),
                })
                .inc_by(n);
        }
    }

    /// The reporter sent a commit status with this outcome.
    pub fn status_report(&self, provider: Provider, outcome: ReportOutcome) {
        let outcome = match outcome {
            ReportOutcome::Delivered => "delivered",
            ReportOutcome::Pending => "retry",
            ReportOutcome::Failed => "failed",
            ReportOutcome::Superseded => "superseded",
        };
        self.status_reports
            .get_or_create(&ReportLabels {
                provider: provider.as_str(),
                outcome,
            })
            .inc();
    }

    /// Everything in OpenMetrics text, with `queued` and `pending_reports`
    /// (read from the store by the caller) as their gauges.
    pub fn render(&self, queued: u64, pending_reports: u64) -> Result<String, std::fmt::Error> {
        self.queued.set(i64::try_from(queued).unwrap_or(i64::MAX));
        self.pending_reports
            .set(i64::try_from(pending_reports).unwrap_or(i64::MAX));
        let mut out = String::new();
        prometheus_client::encoding::text::encode(&mut out, &self.registry)?;
        Ok(out)
    }
}

/// A build the worker is running; it stops counting as running when dropped.
#[derive(Debug)]
pub struct RunningBuild<'a> {
    metrics: &'a Metrics,
    labels: PipelineLabels,
    started: Instant,
}

impl RunningBuild<'_> {
    /// The build ended with `status`: counts it and observes its duration.
    pub fn finished(&self, status: BuildStatus) {
        let m = self.metrics;
        m.build_duration
            .get_or_create(&self.labels)
            .observe(self.started.elapsed().as_secs_f64());
        m.builds_finished
            .get_or_create(&BuildLabels {
                pipeline: self.labels.pipeline.clone(),
                status: status.as_str(),
            })
            .inc();
    }
}

impl Drop for RunningBuild<'_> {
    fn drop(&mut self) {
        self.metrics.running.dec();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_unknown_pipeline_is_counted_under_one_fixed_label() {
        let m = Metrics::new();
        m.webhook_delivery(None, 404);
        m.webhook_delivery(None, 404);
        m.webhook_delivery(Some("app"), 202);
        let text = m.render(3, 1).unwrap();
        assert!(
            text.contains(
                "hookci_webhook_deliveries_total{pipeline=\"_unknown\",code=\"404\"} 2\n"
            ),
            "{text}"
        );
        assert!(text.contains("hookci_builds_queued 3\n"), "{text}");
        assert!(text.contains("hookci_status_reports_pending 1\n"), "{text}");
        assert!(text.ends_with("# EOF\n"), "{text}");
    }
}
