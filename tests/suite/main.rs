//! The integration tests, as one binary: each file was its own binary,
//! and each linked the whole crate and compiled `common` again. Tests that
//! read process-wide state (peak memory, this process's zombie children, its
//! cgroup) stay binaries of their own in `tests/`, so that no other test runs
//! beside them in the same process.

#[path = "../common/mod.rs"]
mod common;
#[path = "../support/gitserve.rs"]
mod gitserve;
#[path = "../support/pg.rs"]
mod pg;
#[path = "../support/prereq.rs"]
mod prereq;
#[path = "../report_fake/mod.rs"]
mod report_fake;

mod api_manage;
mod build_e2e;
mod build_restart;
mod build_run_as;
mod build_shutdown;
mod checkout_git;
mod cli;
mod cli_clients;
mod cli_run;
mod cluster;
mod cluster_logs;
mod cluster_outage;
mod cluster_secrets;
mod commit_ids;
mod full_disk;
mod hostile_input;
mod http_abuse;
mod http_hooks;
mod http_hosts;
mod http_metrics;
mod http_pages;
mod install_delivery;
mod install_notify;
mod install_paths;
mod limits;
mod pipeline_config;
mod pipeline_load;
mod pull_requests;
mod pull_requests_hosts;
mod reload;
mod report_delivery;
mod report_e2e;
mod report_providers;
mod restart;
mod runner_log;
mod sandbox;
mod sandbox_cli;
mod store_conformance;
mod store_health;
mod ui_browser;
mod webhook_bad_input;
mod webhook_fixtures;
mod webhook_payload_rules;
mod webhook_signatures;
