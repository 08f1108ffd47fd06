//! Every row of the answer table in SPEC.md section 5, against the real
//! server on 127.0.0.1:0 with a real SQLite file.

use crate::common;

use common::{TestServer, build_count, client, fixture, hub_sha256};
use serde_json::Value;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

const SECRET: &str = "topsecret";

/// The one-step pipeline of the GitHub fixtures' repository.
static HELLO: std::sync::LazyLock<String> = std::sync::LazyLock::new(|| {
    common::pipeline_toml(SECRET)
        .step("test", "true")
        .to_string()
});

const DRONE: &str = r#"
repo = "bradrydzewski/drone-test-go"
secret = "topsecret"
[[trigger]]
branches = ["**"]
tags = ["v*"]
[[steps]]
name = "test"
run = "true"
"#;

const RELEASES_ONLY: &str = r#"
repo = "Codertocat/Hello-World"
secret = "topsecret"
[[trigger]]
branches = ["release/*"]
[[steps]]
name = "test"
run = "true"
"#;

async fn start() -> TestServer {
    TestServer::start(
        &[
            ("hello", HELLO.as_str()),
            ("drone", DRONE),
            ("releases", RELEASES_ONLY),
        ],
        |c| {
            c.max_body_bytes = 64 * 1024;
        },
    )
    .await
}

/// Sends `body` to `path` as GitHub would, signed with `secret`.
async fn github(
    server: &TestServer,
    path: &str,
    event: &str,
    delivery: &str,
    body: &[u8],
    secret: &str,
) -> (u16, Value, reqwest::header::HeaderMap) {
    let res = client()
        .post(server.url(path))
        .header("X-GitHub-Event", event)
        .header("X-GitHub-Delivery", delivery)
        .header("X-Hub-Signature-256", hub_sha256(secret, body))
        .header("Content-Type", "application/json")
        .body(body.to_vec())
        .send()
        .await
        .expect("request");
    let status = res.status().as_u16();
    let headers = res.headers().clone();
    let json = res.json::<Value>().await.expect("a JSON answer");
    (status, json, headers)
}

fn edited(rel: &str, edit: impl FnOnce(&mut Value)) -> Vec<u8> {
    let mut v: Value = serde_json::from_slice(&fixture(rel)).expect("fixture is JSON");
    edit(&mut v);
    serde_json::to_vec(&v).expect("serialize")
}

#[tokio::test]
async fn a_signed_push_is_queued_and_answered_202_after_it_is_stored() {
    let server = start().await;
    let body = fixture("github/goscm__push.json");
    let (status, json, _) =
        github(&server, "/hooks/hello", "push", "delivery-1", &body, SECRET).await;
    assert_eq!(status, 202, "{json}");
    assert_eq!(json["delivery"], "delivery-1");
    let builds = json["builds"].as_array().expect("builds");
    assert_eq!(builds.len(), 1);
    let id = builds[0]["id"].as_i64().expect("a numeric build id");
    assert_eq!(
        builds[0]["url"],
        format!("{}/builds/{id}", server.config.public_url)
    );

    let build = server
        .store()
        .build(id)
        .await
        .expect("read")
        .expect("the build is in the store");
    assert_eq!(build.status.as_str(), "queued");
    assert_eq!(
        build.commit_str(),
        "199eddf46df50de8d02e99bf1c5fdb4101338224"
    );
    assert_eq!(build.git_ref, "refs/heads/master");
    assert_eq!(build.branch(), Some("master"));
    assert_eq!(build.delivery.as_deref(), Some("delivery-1"));
    server.stop().await;
}

#[tokio::test]
async fn a_redelivery_gets_the_first_answer_again_and_queues_nothing() {
    let server = start().await;
    let body = fixture("github/goscm__push.json");
    let (s1, first, _) = github(&server, "/hooks/hello", "push", "again", &body, SECRET).await;
    let (s2, second, _) = github(&server, "/hooks/hello", "push", "again", &body, SECRET).await;
    assert_eq!(s1, 202);
    assert_eq!(s2, 200);
    assert_eq!(first, second);
    assert_eq!(build_count(&server.store()).await, 1);
    server.stop().await;
}

#[tokio::test]
async fn a_ping_is_answered_200_and_builds_nothing() {
    let server = start().await;
    let body = fixture("github/goplayground__ping.json");
    let (status, json, _) = github(&server, "/hooks/hello", "ping", "p1", &body, SECRET).await;
    assert_eq!(status, 200, "{json}");
    assert_eq!(json["builds"], serde_json::json!([]));
    assert_eq!(json["skipped"], "ping");
    assert_eq!(build_count(&server.store()).await, 0);
    server.stop().await;
}

#[tokio::test]
async fn branch_and_tag_deletions_build_nothing() {
    let server = start().await;
    for (file, id) in [
        ("github/goscm__push_branch_delete.json", "del-b"),
        ("github/goscm__push_tag_delete.json", "del-t"),
    ] {
        let body = fixture(file);
        let (status, json, _) = github(&server, "/hooks/drone", "push", id, &body, SECRET).await;
        assert_eq!(status, 200, "{file}: {json}");
        assert!(
            json["skipped"].as_str().unwrap_or("").contains("deleted"),
            "{json}"
        );
    }
    assert_eq!(build_count(&server.store()).await, 0);
    server.stop().await;
}

#[tokio::test]
async fn a_tag_push_builds_when_a_trigger_names_the_tag() {
    let server = start().await;
    let body = fixture("github/goscm__push_tag.json");
    let (status, json, _) = github(&server, "/hooks/drone", "push", "tag-1", &body, SECRET).await;
    assert_eq!(status, 202, "{json}");
    let builds = common::all_builds(&server.store()).await;
    let tag = builds[0].tag().expect("a tag build");
    assert_eq!(tag, "v0.0.1");
    server.stop().await;
}

#[tokio::test]
async fn a_push_no_trigger_matches_is_answered_200_with_the_reason() {
    let server = start().await;
    let body = fixture("github/goscm__push.json");
    let (status, json, _) = github(&server, "/hooks/releases", "push", "nt", &body, SECRET).await;
    assert_eq!(status, 200, "{json}");
    assert!(
        json["skipped"]
            .as_str()
            .unwrap_or("")
            .contains("no trigger"),
        "{json}"
    );
    assert_eq!(build_count(&server.store()).await, 0);
    server.stop().await;
}

#[tokio::test]
async fn a_skip_marker_in_the_head_commit_message_builds_nothing() {
    let server = start().await;
    let body = edited("github/goscm__push.json", |v| {
        v["head_commit"]["message"] = "Update README [skip ci]".into();
    });
    let (status, json, _) = github(&server, "/hooks/hello", "push", "skip", &body, SECRET).await;
    assert_eq!(status, 200, "{json}");
    assert!(
        json["skipped"].as_str().unwrap_or("").contains("skip"),
        "{json}"
    );
    assert_eq!(build_count(&server.store()).await, 0);
    server.stop().await;
}

#[tokio::test]
async fn a_host_test_delivery_with_before_equal_to_after_builds_nothing() {
    let server = start().await;
    let body = edited("github/goscm__push.json", |v| {
        v["before"] = v["after"].clone();
    });
    let (status, json, _) = github(&server, "/hooks/hello", "push", "same", &body, SECRET).await;
    assert_eq!(status, 200, "{json}");
    assert!(
        json["skipped"]
            .as_str()
            .unwrap_or("")
            .contains("same commit"),
        "{json}"
    );
    server.stop().await;
}

#[tokio::test]
async fn an_event_that_builds_nothing_is_answered_200() {
    let server = start().await;
    let body = fixture("github/goscm__create_branch.json");
    let (status, json, _) = github(&server, "/hooks/drone", "create", "cr", &body, SECRET).await;
    assert_eq!(status, 200, "{json}");
    assert!(json["skipped"].is_string(), "{json}");
    assert_eq!(build_count(&server.store()).await, 0);
    server.stop().await;
}

#[tokio::test]
async fn malformed_or_incomplete_payloads_are_answered_400_never_500() {
    let server = start().await;
    let deep = format!("{}{}", "[".repeat(20_000), "]".repeat(20_000));
    let cases: Vec<(&str, Vec<u8>)> = vec![
        ("not json", b"this is not json".to_vec()),
        ("empty", Vec::new()),
        ("an array", b"[]".to_vec()),
        ("null", b"null".to_vec()),
        ("no fields", b"{}".to_vec()),
        (
            "invalid utf-8",
            vec![b'{', b'"', 0xff, 0xfe, b'"', b':', b'1', b'}'],
        ),
        ("deep nesting", deep.into_bytes()),
        (
            "ref of the wrong type",
            edited("github/goscm__push.json", |v| v["ref"] = 42.into()),
        ),
        (
            "no repository",
            edited("github/goscm__push.json", |v| {
                v.as_object_mut().expect("object").remove("repository");
            }),
        ),
    ];
    for (what, body) in cases {
        let (status, json, _) = github(&server, "/hooks/hello", "push", what, &body, SECRET).await;
        assert_eq!(status, 400, "{what}: {json}");
        assert!(json["error"].is_string(), "{what}: {json}");
    }
    assert_eq!(build_count(&server.store()).await, 0);
    server.stop().await;
}

#[tokio::test]
async fn missing_wrong_or_garbage_signatures_are_answered_401() {
    let server = start().await;
    let body = fixture("github/goscm__push.json");
    let http = client();
    let send = |sig: Option<&'static str>| {
        let mut req = http
            .post(server.url("/hooks/hello"))
            .header("X-GitHub-Event", "push")
            .header("X-GitHub-Delivery", "sig")
            .body(body.clone());
        if let Some(s) = sig {
            req = req.header("X-Hub-Signature-256", s);
        }
        req.send()
    };
    for sig in [
        None,
        Some("sha256=3bfbbc3bfc44498db2254f577b2e4bed201ece6163518ba91cb2c21f0f59d512"),
        Some("sha256=zz"),
        Some("sha256="),
        Some("md5=abc"),
        Some("garbage"),
    ] {
        let res = send(sig).await.expect("request");
        assert_eq!(res.status().as_u16(), 401, "{sig:?}");
        let json: Value = res.json().await.expect("json");
        assert!(json["error"].is_string());
    }
    // The right signature under the wrong secret.
    let (status, _, _) = github(&server, "/hooks/hello", "push", "w", &body, "not-it").await;
    assert_eq!(status, 401);
    // A Gitea delivery (other host's headers) to a GitHub pipeline's secret.
    let res = http
        .post(server.url("/hooks/hello"))
        .header("X-Gitea-Event", "push")
        .header("X-Gitea-Signature", "00".repeat(32))
        .body(body.clone())
        .send()
        .await
        .expect("request");
    assert_eq!(res.status().as_u16(), 401);
    assert_eq!(server.store().delivery_count().await.expect("count"), 0);
    server.stop().await;
}

#[tokio::test]
async fn an_unknown_pipeline_is_answered_404() {
    let server = start().await;
    let body = fixture("github/goscm__push.json");
    let (status, json, _) = github(&server, "/hooks/nope", "push", "x", &body, SECRET).await;
    assert_eq!(status, 404);
    assert!(json["error"].as_str().unwrap_or("").contains("nope"));
    server.stop().await;
}

#[tokio::test]
async fn a_declared_huge_body_is_answered_413_without_being_sent() {
    let server = start().await;
    let mut tcp = TcpStream::connect(server.addr).await.expect("connect");
    let head = "POST /hooks/hello HTTP/1.1\r\nHost: x\r\nX-GitHub-Event: push\r\n\
                Content-Length: 1073741824\r\n\r\n";
    tcp.write_all(head.as_bytes()).await.expect("write");
    let mut buf = vec![0u8; 4096];
    let n = tokio::time::timeout(Duration::from_secs(10), tcp.read(&mut buf))
        .await
        .expect("answered before the body was sent")
        .expect("read");
    let text = String::from_utf8_lossy(&buf[..n]);
    assert!(text.starts_with("HTTP/1.1 413"), "{text}");
    server.stop().await;
}

#[tokio::test]
async fn a_chunked_body_over_the_limit_is_answered_413() {
    let server = start().await;
    let mut tcp = TcpStream::connect(server.addr).await.expect("connect");
    // A signature header of GitHub's form: without one, 401 comes first.
    let head = format!(
        "POST /hooks/hello HTTP/1.1\r\nHost: x\r\nX-GitHub-Event: push\r\n\
         X-Hub-Signature-256: sha256={}\r\nTransfer-Encoding: chunked\r\n\r\n",
        "0".repeat(64)
    );
    tcp.write_all(head.as_bytes()).await.expect("write");
    let chunk = format!("{:x}\r\n{}\r\n", 8192, "a".repeat(8192));
    // 64 KiB is the limit; send at most 1 MiB, stopping when the server answers.
    for _ in 0..128 {
        if tcp.write_all(chunk.as_bytes()).await.is_err() {
            break;
        }
    }
    let mut buf = vec![0u8; 4096];
    let n = tokio::time::timeout(Duration::from_secs(10), tcp.read(&mut buf))
        .await
        .expect("answered")
        .expect("read");
    let text = String::from_utf8_lossy(&buf[..n]);
    assert!(text.starts_with("HTTP/1.1 413"), "{text}");
    server.stop().await;
}

#[tokio::test]
async fn a_payload_for_another_repository_is_answered_422() {
    let server = start().await;
    let body = fixture("github/goscm__push_branch_create.json");
    let (status, json, _) = github(&server, "/hooks/hello", "push", "other", &body, SECRET).await;
    assert_eq!(status, 422, "{json}");
    assert_eq!(build_count(&server.store()).await, 0);
    server.stop().await;
}

#[tokio::test]
async fn a_full_queue_is_answered_503_with_retry_after_and_records_nothing() {
    let server = TestServer::start(&[("hello", HELLO.as_str())], |c| c.max_queued_builds = 1).await;
    let body = fixture("github/goscm__push.json");
    let (s1, _, _) = github(&server, "/hooks/hello", "push", "q1", &body, SECRET).await;
    assert_eq!(s1, 202);
    // A body of its own: the same signed body twice is a replay.
    let mut other: Value = serde_json::from_slice(&body).expect("json");
    other["head_commit"]["message"] = "another push".into();
    let body = serde_json::to_vec(&other).expect("json");
    let (s2, json, headers) = github(&server, "/hooks/hello", "push", "q2", &body, SECRET).await;
    assert_eq!(s2, 503, "{json}");
    assert!(headers.get("retry-after").is_some());
    let store = server.store();
    assert_eq!(build_count(&store).await, 1);
    assert!(!store.delivery_recorded("hello", "q2").await.expect("read"));
    server.stop().await;
}

#[tokio::test]
async fn an_unavailable_store_is_answered_503_with_retry_after_and_no_detail() {
    let server = start().await;
    // Another process holds the database's write lock past the busy timeout:
    // a fault of SQLite's own, injected through its file (no API can).
    let locker = rusqlite::Connection::open(server.db_path()).expect("open db");
    locker.execute_batch("BEGIN EXCLUSIVE").expect("lock");
    let body = fixture("github/goscm__push.json");
    let (status, json, headers) =
        github(&server, "/hooks/hello", "push", "locked", &body, SECRET).await;
    assert_eq!(status, 503, "{json}");
    assert!(headers.get("retry-after").is_some());
    let message = json["error"].as_str().unwrap_or("");
    assert!(
        !message.contains("locked") && !message.contains("SQL"),
        "{message}"
    );
    locker.execute_batch("ROLLBACK").expect("unlock");
    // Once the store is back, the host's retry is accepted.
    let (status, _, _) = github(&server, "/hooks/hello", "push", "locked", &body, SECRET).await;
    assert_eq!(status, 202);
    server.stop().await;
}

#[tokio::test]
async fn the_org_wide_route_queues_for_each_pipeline_whose_secret_verifies() {
    let other_secret = HELLO.replace("topsecret", "someone-else");
    let server = TestServer::start(
        &[("hello", HELLO.as_str()), ("hello-other", &other_secret)],
        |_| {},
    )
    .await;
    let body = fixture("github/goscm__push.json");
    let (status, json, _) = github(&server, "/hooks", "push", "org-1", &body, SECRET).await;
    assert_eq!(status, 202, "{json}");
    let builds = json["builds"].as_array().expect("builds");
    assert_eq!(builds.len(), 1);
    assert_eq!(builds[0]["pipeline"], "hello");
    // No pipeline's secret verifies: 401. No pipeline for the repo: 404.
    let (status, _, _) = github(&server, "/hooks", "push", "org-2", &body, "wrong").await;
    assert_eq!(status, 401);
    let other = fixture("github/goscm__push_branch_create.json");
    let (status, _, _) = github(&server, "/hooks", "push", "org-3", &other, SECRET).await;
    assert_eq!(status, 404);
    server.stop().await;
}

#[tokio::test]
async fn a_private_servers_org_wide_route_answers_every_stranger_401_alike() {
    let server = TestServer::start(&[("hello", HELLO.as_str())], |c| c.private = true).await;
    let served = fixture("github/goscm__push.json");
    let unserved = fixture("github/goscm__push_branch_create.json");
    let mut answers = Vec::new();
    for (name, body, secret) in [
        ("a served repository, a wrong secret", &served, "wrong"),
        ("a repository no pipeline builds", &unserved, "wrong"),
        (
            "a repository no pipeline builds, signed with the secret",
            &unserved,
            SECRET,
        ),
        (
            "a payload that is not JSON",
            &b"{not json".to_vec(),
            "wrong",
        ),
    ] {
        let (status, json, _) = github(&server, "/hooks", "push", name, body, secret).await;
        assert_eq!(status, 401, "{name}: {json}");
        answers.push((name, json));
    }
    // No event header of any host.
    let res = client()
        .post(server.url("/hooks"))
        .header("Content-Type", "application/json")
        .body(served.clone())
        .send()
        .await
        .expect("request");
    assert_eq!(res.status().as_u16(), 401);
    answers.push(("no event header", res.json().await.expect("json")));
    for (name, json) in &answers {
        assert_eq!(
            json, &answers[0].1,
            "{name} must read like every other refusal"
        );
    }
    // The one who holds the secret builds.
    let (status, json, _) = github(&server, "/hooks", "push", "org-ok", &served, SECRET).await;
    assert_eq!(status, 202, "{json}");
    server.stop().await;
}

#[tokio::test]
async fn healthz_answers_ok() {
    let server = start().await;
    let res = client()
        .get(server.url("/healthz"))
        .send()
        .await
        .expect("request");
    assert_eq!(res.status().as_u16(), 200);
    let json: Value = res.json().await.expect("json");
    assert_eq!(json["status"], "ok");
    server.stop().await;
}

#[tokio::test]
async fn a_client_that_never_finishes_its_headers_is_disconnected() {
    let server = TestServer::start(&[("hello", HELLO.as_str())], |c| {
        c.header_timeout = Duration::from_millis(300);
    })
    .await;
    let mut tcp = TcpStream::connect(server.addr).await.expect("connect");
    tcp.write_all(b"POST /hooks/hello HTTP/1.1\r\nHost: x\r\n")
        .await
        .expect("write");
    let mut buf = Vec::new();
    let read = tokio::time::timeout(Duration::from_secs(20), tcp.read_to_end(&mut buf)).await;
    assert!(read.is_ok(), "the server kept a stalled connection open");
    server.stop().await;
}

#[tokio::test]
async fn connections_past_the_bound_wait_until_one_is_free() {
    let server = TestServer::start(&[("hello", HELLO.as_str())], |c| {
        c.max_connections = 2;
        // No slots kept for /hooks: the bound is exactly two connections.
        c.reserved_hook_connections = 0;
        c.header_timeout = Duration::from_secs(60);
    })
    .await;
    // Two requests in progress: their heads are in, their bodies are slow.
    // (Connections that have not sent a head are closed to make room: see
    // tests/suite/http_abuse.rs.)
    let mut busy = Vec::new();
    for _ in 0..2 {
        let mut tcp = TcpStream::connect(server.addr).await.expect("connect");
        let head = format!(
            "POST /hooks/hello HTTP/1.1\r\nHost: x\r\nX-GitHub-Event: push\r\n\
             X-Hub-Signature-256: sha256={}\r\nContent-Length: 100\r\n\
             Expect: 100-continue\r\n\r\n",
            "0".repeat(64)
        );
        tcp.write_all(head.as_bytes()).await.expect("write");
        // `100 Continue`: the handler is reading the body.
        let mut buf = [0u8; 64];
        let n = tokio::time::timeout(Duration::from_secs(20), tcp.read(&mut buf))
            .await
            .expect("100 Continue in time")
            .expect("read");
        assert!(buf[..n].starts_with(b"HTTP/1.1 100"), "{:?}", &buf[..n]);
        busy.push(tcp);
    }
    let http = reqwest::Client::builder()
        .no_proxy()
        .timeout(Duration::from_millis(700))
        .build()
        .expect("client");
    assert!(
        http.get(server.url("/healthz")).send().await.is_err(),
        "a third connection was served"
    );
    drop(busy);
    let res = client()
        .get(server.url("/healthz"))
        .send()
        .await
        .expect("served once free");
    assert_eq!(res.status().as_u16(), 200);
    server.stop().await;
}
