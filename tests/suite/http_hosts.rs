//! Each host's real payload, signed as that host signs it, sent over HTTP to
//! the real server: the answer, and the build in the store.

use crate::common;

use base64::Engine as _;
use common::{TestServer, client, fixture, hmac_hex};
use hmac::{Hmac, Mac};
use serde_json::Value;
use sha2::Sha256;

fn pipeline(repo: &str, secret: &str) -> String {
    format!(
        "repo = \"{repo}\"\nsecret = \"{secret}\"\n[[trigger]]\nbranches = [\"**\"]\n\
         [[steps]]\nname = \"test\"\nrun = \"true\"\n"
    )
}

struct Row {
    commit: String,
    git_ref: String,
    repo: String,
    host: String,
    delivery: String,
}

async fn send(
    server: &TestServer,
    name: &str,
    headers: &[(&str, String)],
    body: Vec<u8>,
) -> (u16, Value) {
    let mut req = client()
        .post(server.url(&format!("/hooks/{name}")))
        .body(body);
    for (k, v) in headers {
        req = req.header(*k, v);
    }
    let res = req.send().await.expect("request");
    let status = res.status().as_u16();
    (status, res.json().await.expect("json answer"))
}

async fn builds(server: &TestServer) -> Vec<Row> {
    common::all_builds(&server.store())
        .await
        .into_iter()
        .map(|b| Row {
            commit: b.push.commit_str().to_owned(),
            git_ref: b.push.git_ref,
            repo: b.push.repo,
            host: b.host.expect("a pushed build has a host"),
            delivery: b.delivery.expect("a pushed build has a delivery"),
        })
        .collect()
}

#[tokio::test]
async fn a_gitlab_push_with_its_token_is_queued() {
    let server = TestServer::start(
        &[("gl", &pipeline("gitlab-org/hello-world", "gl-token"))],
        |_| {},
    )
    .await;
    let headers = [
        ("X-Gitlab-Event", "Push Hook".to_owned()),
        ("X-Gitlab-Token", "gl-token".to_owned()),
        ("X-Gitlab-Event-UUID", "gl-uuid-1".to_owned()),
    ];
    let (status, json) = send(&server, "gl", &headers, fixture("gitlab/goscm__push.json")).await;
    assert_eq!(status, 202, "{json}");
    let rows = builds(&server).await;
    assert_eq!(rows.len(), 1);
    assert_eq!(rows[0].commit, "2adc9465c4edfc33834e173fe89436a7cb899a1d");
    assert_eq!(rows[0].git_ref, "refs/heads/master");
    assert_eq!(rows[0].host, "gitlab");
    assert_eq!(rows[0].delivery, "gl-uuid-1");
    // A wrong token is refused.
    let bad = [
        ("X-Gitlab-Event", "Push Hook".to_owned()),
        ("X-Gitlab-Token", "nope".to_owned()),
    ];
    let (status, _) = send(&server, "gl", &bad, fixture("gitlab/goscm__push.json")).await;
    assert_eq!(status, 401);
    server.stop().await;
}

#[tokio::test]
async fn a_gitea_push_signed_with_the_published_vector_is_queued() {
    let secret = "IsWishesWereHorsesWedAllBeEatingSteak!";
    let server = TestServer::start(&[("gt", &pipeline("example/example", secret))], |_| {}).await;
    let headers = [
        ("X-Gitea-Event", "push".to_owned()),
        ("X-Gitea-Delivery", "gitea-1".to_owned()),
        (
            "X-Gitea-Signature",
            "60fe446c74fa0cb9474f98cc557db79e10c7aaf22cf324ad65239600b9e4d915".to_owned(),
        ),
        // Gitea sends GitHub's headers too; it must still be read as Gitea.
        ("X-GitHub-Event", "push".to_owned()),
    ];
    let (status, json) = send(
        &server,
        "gt",
        &headers,
        fixture("gitea/goplayground__push-event.json"),
    )
    .await;
    assert_eq!(status, 202, "{json}");
    let rows = builds(&server).await;
    assert_eq!(rows[0].commit, "67b56589a45103f891bdee7c0546e5d40bc02001");
    assert_eq!(rows[0].host, "gitea");
    assert_eq!(rows[0].repo, "example/example");
    // Gitea's create event for the same ref builds nothing.
    let create = [
        ("X-Gitea-Event", "create".to_owned()),
        ("X-Gitea-Delivery", "gitea-2".to_owned()),
        (
            "X-Gitea-Signature",
            "6f250ac7a090096574758e31bd31770eab63dfd0459404f0c18431f1c6b9024a".to_owned(),
        ),
    ];
    let (status, json) = send(
        &server,
        "gt",
        &create,
        fixture("gitea/goplayground__create-event.json"),
    )
    .await;
    assert_eq!(status, 200, "{json}");
    assert_eq!(builds(&server).await.len(), 1);
    server.stop().await;
}

#[tokio::test]
async fn a_forgejo_push_captured_on_codeberg_is_queued() {
    let body = fixture("forgejo/woodpecker__push_branch.json");
    let server = TestServer::start(
        &[("fj", &pipeline("meisam/woodpecktester", "fj-secret"))],
        |_| {},
    )
    .await;
    let headers = [
        ("X-Forgejo-Event", "push".to_owned()),
        ("X-Forgejo-Delivery", "fj-1".to_owned()),
        ("X-Forgejo-Signature", hmac_hex("fj-secret", &body)),
        ("X-Gitea-Event", "push".to_owned()),
    ];
    let (status, json) = send(&server, "fj", &headers, body).await;
    assert_eq!(status, 202, "{json}");
    let rows = builds(&server).await;
    assert_eq!(rows[0].commit, "28c3613ae62640216bea5e7dc71aa65356e4298b");
    assert_eq!(rows[0].git_ref, "refs/heads/fdsafdsa");
    assert_eq!(rows[0].host, "forgejo");
    server.stop().await;
}

#[tokio::test]
async fn a_gogs_push_signed_with_the_published_vector_is_queued() {
    let server = TestServer::start(
        &[("gg", &pipeline("unknwon/webhooks", "sampleToken!"))],
        |_| {},
    )
    .await;
    let headers = [
        ("X-Gogs-Event", "push".to_owned()),
        (
            "X-Gogs-Delivery",
            "f6266f16-1bf3-46a5-9ea4-602e06ead473".to_owned(),
        ),
        (
            "X-Gogs-Signature",
            "83d4163fb936904aeb9ffd6ce22cf86e4b36273b2e1c63a57f5a6ddc371ce3ba".to_owned(),
        ),
    ];
    let (status, json) = send(
        &server,
        "gg",
        &headers,
        fixture("gogs/goplayground__push-event.json"),
    )
    .await;
    assert_eq!(status, 202, "{json}");
    let rows = builds(&server).await;
    assert_eq!(rows[0].commit, "bffeb74224043ba2feb48d137756c8a9331c449a");
    assert_eq!(rows[0].git_ref, "refs/heads/develop");
    assert_eq!(rows[0].host, "gogs");
    assert_eq!(rows[0].delivery, "f6266f16-1bf3-46a5-9ea4-602e06ead473");
    server.stop().await;
}

#[tokio::test]
async fn a_bitbucket_cloud_push_with_two_changes_queues_two_builds() {
    let mut v: Value =
        serde_json::from_slice(&fixture("bitbucket/goscm__push.json")).expect("json");
    let mut second = v["push"]["changes"][0].clone();
    second["new"]["name"] = "develop".into();
    v["push"]["changes"]
        .as_array_mut()
        .expect("changes")
        .push(second);
    let two = serde_json::to_vec(&v).expect("json");

    let server =
        TestServer::start(&[("bb", &pipeline("brydzewski/foo", "bb-secret"))], |_| {}).await;
    let sig = |body: &[u8]| format!("sha256={}", hmac_hex("bb-secret", body));
    let one = fixture("bitbucket/goscm__push.json");
    let headers = [
        ("X-Event-Key", "repo:push".to_owned()),
        ("X-Request-UUID", "bb-1".to_owned()),
        ("X-Hub-Signature", sig(&one)),
    ];
    let (status, json) = send(&server, "bb", &headers, one).await;
    assert_eq!(status, 202, "{json}");
    let headers = [
        ("X-Event-Key", "repo:push".to_owned()),
        ("X-Request-UUID", "bb-2".to_owned()),
        ("X-Hub-Signature", sig(&two)),
    ];
    let (status, json) = send(&server, "bb", &headers, two).await;
    assert_eq!(status, 202, "{json}");
    assert_eq!(json["builds"].as_array().map(Vec::len), Some(2));
    let rows = builds(&server).await;
    assert_eq!(rows.len(), 3);
    assert_eq!(rows[0].commit, "141977fedf5cf35aa290ac87d4b5177ac4cd9de1");
    assert_eq!(rows[0].host, "bitbucket");
    assert_eq!(rows[1].git_ref, "refs/heads/master");
    assert_eq!(rows[2].git_ref, "refs/heads/develop");
    server.stop().await;
}

#[tokio::test]
async fn a_bitbucket_server_push_signed_with_the_published_vector_is_queued() {
    let server = TestServer::start(
        &[(
            "bbs",
            &pipeline("PRJ/my-repo", "71295b197fa25f4356d2fb9965df3f2379d903d7"),
        )],
        |_| {},
    )
    .await;
    let headers = [
        ("X-Event-Key", "repo:refs_changed".to_owned()),
        ("X-Request-Id", "bbs-1".to_owned()),
        (
            "X-Hub-Signature",
            "sha256=c90565fa018f3039414a7929c9187a147f1ac463076961c4cf411e3c67c541f8".to_owned(),
        ),
    ];
    let (status, json) = send(
        &server,
        "bbs",
        &headers,
        fixture("bitbucket-server/goscm__push.json"),
    )
    .await;
    assert_eq!(status, 202, "{json}");
    let rows = builds(&server).await;
    assert_eq!(rows[0].commit, "823b2230a56056231c9425d63758fa87078a66b4");
    assert_eq!(rows[0].git_ref, "refs/heads/master");
    assert_eq!(rows[0].host, "bitbucket-server");
    server.stop().await;
}

#[tokio::test]
async fn a_generic_standard_webhooks_delivery_is_queued_and_a_stale_one_refused() {
    let key = [7u8; 24];
    let secret = format!(
        "whsec_{}",
        base64::engine::general_purpose::STANDARD.encode(key)
    );
    let server = TestServer::start(&[("gen", &pipeline("acme/widget", &secret))], |_| {}).await;
    let body = br#"{"repo":"acme/widget","ref":"refs/heads/main","before":"1111111111111111111111111111111111111111","after":"2222222222222222222222222222222222222222","clone_url":"https://git.example/acme/widget.git","message":"fix it"}"#.to_vec();
    let sign = |id: &str, ts: i64| {
        let mut mac = Hmac::<Sha256>::new_from_slice(&key).expect("key");
        mac.update(format!("{id}.{ts}.").as_bytes());
        mac.update(&body);
        format!(
            "v1,{}",
            base64::engine::general_purpose::STANDARD.encode(mac.finalize().into_bytes())
        )
    };
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock")
        .as_secs() as i64;
    let headers = [
        ("webhook-id", "msg_1".to_owned()),
        ("webhook-timestamp", now.to_string()),
        ("webhook-signature", sign("msg_1", now)),
    ];
    let (status, json) = send(&server, "gen", &headers, body.clone()).await;
    assert_eq!(status, 202, "{json}");
    let rows = builds(&server).await;
    assert_eq!(rows[0].commit, "2222222222222222222222222222222222222222");
    assert_eq!(rows[0].host, "generic");
    assert_eq!(rows[0].delivery, "msg_1");
    let old = now - 6 * 60;
    let headers = [
        ("webhook-id", "msg_2".to_owned()),
        ("webhook-timestamp", old.to_string()),
        ("webhook-signature", sign("msg_2", old)),
    ];
    let (status, _) = send(&server, "gen", &headers, body).await;
    assert_eq!(status, 401);
    server.stop().await;
}
