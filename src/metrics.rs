//! Prometheus metrics: counters the daemon keeps in memory, rendered with
//! gauges read from the store at scrape time (`GET /metrics`).

/// The daemon's counters, shared by the HTTP layer, the worker and the
/// reporter.
#[derive(Debug, Default)]
pub struct Metrics {}
