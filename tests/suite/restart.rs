//! A 2xx is a promise: deliveries acknowledged with 202 survive a SIGKILL
//! of the daemon, and are queued exactly once after it starts again.

use crate::common;

use common::{build_count, client, fixture, hub_sha256};
use std::collections::BTreeSet;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// The one-step pipeline of the GitHub fixtures' repository.
static PIPELINE: std::sync::LazyLock<String> = std::sync::LazyLock::new(|| {
    common::pipeline_toml("topsecret")
        .step("test", "true")
        .to_string()
});

fn spawn(dir: &Path) -> (common::Daemon, String) {
    common::spawn_daemon(dir, "max_parallel_builds = 0")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn acknowledged_deliveries_survive_sigkill_and_are_queued_exactly_once() {
    let dir = tempfile::tempdir().expect("temp dir");
    std::fs::create_dir_all(dir.path().join("pipelines")).expect("mkdir");
    std::fs::write(dir.path().join("pipelines/hello.toml"), PIPELINE.as_str()).expect("pipeline");
    let (mut child, base) = spawn(dir.path());

    let body = Arc::new(fixture("github/goscm__push.json"));
    // Each delivery is a body of its own: the same signed body again is a
    // replay, whatever its delivery id.
    let distinct = |body: &[u8], id: &str| -> (Vec<u8>, String) {
        let mut v: serde_json::Value = serde_json::from_slice(body).expect("json");
        v["hookci_test_delivery"] = id.into();
        let bytes = serde_json::to_vec(&v).expect("json");
        let signature = hub_sha256("topsecret", &bytes);
        (bytes, signature)
    };
    let acked = Arc::new(Mutex::new(BTreeSet::new()));
    let http = client();
    // 8 senders, 100 deliveries each at most; the daemon is killed midway.
    let mut senders = Vec::new();
    for s in 0..8 {
        let (http, base, body, acked) = (
            http.clone(),
            base.clone(),
            Arc::clone(&body),
            Arc::clone(&acked),
        );
        senders.push(tokio::spawn(async move {
            for i in 0..100 {
                let id = format!("d-{s}-{i}");
                let (bytes, signature) = distinct(&body, &id);
                let res = http
                    .post(format!("{base}/hooks/hello"))
                    .header("X-GitHub-Event", "push")
                    .header("X-GitHub-Delivery", &id)
                    .header("X-Hub-Signature-256", &signature)
                    .body(bytes)
                    .send()
                    .await;
                match res {
                    Ok(r) if r.status().as_u16() == 202 => {
                        acked.lock().expect("lock").insert(id);
                    }
                    Ok(r) => panic!("unexpected answer {}", r.status()),
                    Err(_) => return, // the daemon is gone
                }
            }
        }));
    }
    // Kill it once a good number of deliveries have been acknowledged.
    for _ in 0..200 {
        if acked.lock().expect("lock").len() >= 100 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    child.kill().expect("SIGKILL");
    child.wait().expect("reap");
    for s in senders {
        s.await.expect("sender");
    }
    let acked = acked.lock().expect("lock").clone();
    assert!(
        acked.len() >= 100,
        "only {} deliveries were acknowledged",
        acked.len()
    );
    // Killed mid-stream: not every delivery was answered.
    assert!(
        acked.len() < 800,
        "the daemon was killed only after every delivery"
    );
    eprintln!("{} deliveries acknowledged before SIGKILL", acked.len());

    let (mut child, base) = spawn(dir.path());
    let store = common::open_store(&dir.path().join("data"));
    let builds = common::all_builds(&store).await;
    for id in &acked {
        let n = builds
            .iter()
            .filter(|b| b.delivery.as_ref() == Some(id) && b.status.as_str() == "queued")
            .count();
        assert_eq!(n, 1, "acknowledged delivery {id} has {n} queued builds");
    }
    // The host redelivers one it never heard back about: nothing new is queued.
    let before = build_count(&store).await;
    let first = acked.iter().next().expect("one").clone();
    let (bytes, signature) = distinct(&body, &first);
    let res = http
        .post(format!("{base}/hooks/hello"))
        .header("X-GitHub-Event", "push")
        .header("X-GitHub-Delivery", &first)
        .header("X-Hub-Signature-256", &signature)
        .body(bytes)
        .send()
        .await
        .expect("redelivery");
    assert_eq!(res.status().as_u16(), 200);
    assert_eq!(build_count(&store).await, before);
    child.kill().expect("SIGKILL");
    child.wait().expect("reap");
}
