//! hookci: a self-hosted push-to-CI daemon.
//!
//! A push enters at [`http`], which caps the body and hands the bytes to
//! [`webhook`]. `webhook` detects the host from the headers, verifies the
//! signature and turns the payload into host-neutral [`webhook::PushEvent`]s.
//! [`pipeline`] holds the validated pipeline files and the pure trigger
//! matcher that decides which events become builds. [`store`] records the
//! delivery and its builds durably before the host gets its 2xx.
//!
//! Module map, in the order a push travels:
//! - [`model`]: the domain types (push, host, build and step states); depends on
//!   nothing else in the crate.
//! - [`config`]: the server config (`hookci.toml`), raw TOML to validated values.
//! - [`secret`]: secret values and where they come from; never printed.
//! - [`http`]: axum routes, connection limits, JSON errors. Never runs git or a build.
//! - [`webhook`]: one file per Git host; detection, verification, parsing.
//! - [`pipeline`]: pipeline files, validation, the trigger matcher (no I/O).
//! - [`store`]: the only module that speaks SQL; deliveries, builds, steps and
//!   the status report outbox.
//! - [`worker`]: claims queued builds and runs them with [`runner`].
//! - [`runner`]: one build: mirror fetch, workspace, steps, masked log.
//! - [`runners`]: each runner process's row in the store, and why a queued
//!   build waits.
//! - [`report`]: commit statuses to the Git hosts, from the outbox; the only
//!   module that calls their APIs (fetching is `runner::checkout`'s).
//! - [`metrics`]: the Prometheus counters and `GET /metrics`'s registry.
//! - [`run`]: `hookci run`, the runner in the foreground.
//! - [`client`]: `hookci builds`, `logs`, `cancel`, `rebuild`, `trigger`:
//!   clients of the HTTP API.
//! - [`logging`]: stderr lines for a terminal, the journal (`<N>` priorities) or JSON.
//! - [`notify`]: systemd's READY/STATUS/WATCHDOG/RELOADING notifications.
//! - [`reload`]: what a SIGHUP reload added, changed or kept, in words.
//! - [`server`]: wires the pieces together: `run(config, listener, shutdown)`.
//! - [`text`]: durations and URL components, written one way everywhere.

pub mod cli;
pub mod config;
pub mod http;
pub mod logging;
pub mod metrics;
pub mod model;
pub mod notify;
pub mod pipeline;
pub mod reload;
pub mod report;
pub mod runner;
pub mod runners;
pub mod secret;
pub mod server;
pub mod store;
pub mod text;
pub mod tomlpos;
pub mod webhook;
pub mod worker;

// `hookci`'s client commands and `hookci run` are children of `cli`; their
// old paths stay.
pub use cli::client;
pub use cli::local_run as run;

/// The `User-Agent` of every request hookci makes (GitHub requires one).
pub const USER_AGENT: &str = concat!("hookci/", env!("CARGO_PKG_VERSION"));
