//! A step that prints 1 GiB: the build finishes, the log is capped, and
//! the daemon's memory stays flat (its own test binary, so that no other
//! test shares the process whose peak RSS is measured).

mod common;
#[path = "support/gitserve.rs"]
mod gitserve;

use common::{TestServer, ZERO};
use gitserve::Upstream;

fn status_kib(field: &str) -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .expect("status")
        .lines()
        .find(|l| l.starts_with(field))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse().ok())
        .expect("field")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_step_printing_a_gibibyte_keeps_the_daemons_memory_flat() {
    let up = Upstream::new("big");
    let commit = up.push(&[("README", "x\n")], "big");
    let pipeline = common::pipeline_toml("s")
        .clone_url(&up.url())
        .table("[secrets]\nTOKEN = \"not-in-the-zeros\"")
        .step("flood", "head -c 1073741824 /dev/zero")
        .to_string();
    let server = TestServer::start(&[("app", &pipeline)], |c| c.max_parallel_builds = 1).await;
    let hwm_before = status_kib("VmHWM:");

    let body = common::github_push(&up.url(), "refs/heads/main", ZERO, &commit, "big");
    let id = common::queue_github(&server.base(), "app", "s", "big", &body).await[0];
    let b = common::wait_final(&server.base(), id).await;
    assert_eq!(b["status"], "success", "{b}");
    let hwm_after = status_kib("VmHWM:");
    let grew_mib = hwm_after.saturating_sub(hwm_before) / 1024;
    assert!(
        grew_mib < 64,
        "peak RSS grew by {grew_mib} MiB while a step printed 1 GiB"
    );

    let log = server.config.data_dir.join(format!("logs/{id}.log"));
    let size = std::fs::metadata(&log).expect("log").len();
    let cap = server.config.max_log_bytes;
    assert!(
        size >= cap && size < cap + 64 * 1024,
        "log is {size} bytes, cap {cap}"
    );
    let tail = std::fs::read(&log).expect("read");
    let tail = String::from_utf8_lossy(&tail[tail.len().saturating_sub(4096)..]).into_owned();
    assert!(tail.contains("truncated"), "{tail}");
    server.stop().await;
}
