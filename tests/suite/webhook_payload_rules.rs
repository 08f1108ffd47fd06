//! The parsing rules no recorded fixture exercises, on small hand-made
//! payloads: annotated tags, several changes in one delivery, older shapes,
//! the generic body.

use axum::http::{HeaderMap, HeaderName, HeaderValue};
use hookci::webhook::{self, Host, ParsedKind, PushEvent, RefKind, ZERO_SHA};
use serde_json::{Value, json};

const A: &str = "1111111111111111111111111111111111111111";
const B: &str = "2222222222222222222222222222222222222222";
const C: &str = "3333333333333333333333333333333333333333";

fn headers(pairs: &[(&str, &str)]) -> HeaderMap {
    let mut h = HeaderMap::new();
    for (name, value) in pairs {
        h.insert(
            HeaderName::from_bytes(name.as_bytes()).unwrap(),
            HeaderValue::from_str(value).unwrap(),
        );
    }
    h
}

fn pushes(host: Host, h: &HeaderMap, body: &Value) -> Vec<PushEvent> {
    let parsed = webhook::parse(host, h, &serde_json::to_vec(body).unwrap()).unwrap();
    match parsed.kind {
        ParsedKind::Pushes(events) => events,
        other => panic!("not a push: {other:?}"),
    }
}

fn github_push(git_ref: &str, after: &str, head: Value) -> Value {
    json!({
        "ref": git_ref, "before": ZERO_SHA, "after": after,
        "created": true, "deleted": false, "forced": false,
        "repository": {"full_name": "o/r", "clone_url": "https://github.com/o/r.git"},
        "head_commit": head,
        "pusher": {"name": "octo"}
    })
}

#[test]
fn an_annotated_github_tag_builds_the_tagged_commit() {
    let h = headers(&[("X-GitHub-Event", "push")]);
    let body = github_push("refs/tags/v1", B, json!({"id": C, "message": "release"}));
    let e = &pushes(Host::Github, &h, &body)[0];
    assert_eq!(e.after, B);
    assert_eq!(e.commit_str(), C);
    assert_eq!(e.kind, RefKind::Tag("v1".into()));
    assert_eq!(e.event_name(), "tag");
    assert_eq!(e.message, "release");
}

#[test]
fn a_github_branch_push_builds_after_even_if_head_commit_differs() {
    let h = headers(&[("X-GitHub-Event", "push")]);
    let body = github_push("refs/heads/main", B, json!({"id": C, "message": "m"}));
    assert_eq!(pushes(Host::Github, &h, &body)[0].commit_str(), B);
}

#[test]
fn a_github_push_without_head_commit_has_an_empty_message() {
    let h = headers(&[("X-GitHub-Event", "push")]);
    let body = github_push("refs/tags/v1", B, Value::Null);
    let e = &pushes(Host::Github, &h, &body)[0];
    assert_eq!((e.commit_str(), e.message.as_str()), (B, ""));
}

#[test]
fn other_github_events_are_ignored_with_their_name() {
    let h = headers(&[("X-GitHub-Event", "issues")]);
    let parsed = webhook::parse(
        Host::Github,
        &h,
        b"{\"repository\": {\"full_name\": \"o/r\"}}",
    )
    .unwrap();
    assert_eq!(
        parsed.kind,
        ParsedKind::Ignored("github event issues builds nothing".into())
    );
    assert_eq!(parsed.repo.as_deref(), Some("o/r"));
}

#[test]
fn a_bitbucket_push_with_two_changes_is_two_ref_updates() {
    let h = headers(&[("X-Event-Key", "repo:push"), ("X-Request-UUID", "u")]);
    let body = json!({
        "actor": {"display_name": "Ann", "nickname": "ann"},
        "repository": {"full_name": "team/repo", "links": {"html": {"href": "https://bitbucket.org/team/repo"}}},
        "push": {"changes": [
            {"old": {"type": "branch", "name": "main", "target": {"hash": A}},
             "new": {"type": "branch", "name": "main", "target": {"hash": B, "message": "one"}},
             "created": false, "closed": false, "forced": true},
            {"old": null,
             "new": {"type": "tag", "name": "v2", "target": {"hash": "0123456789ab", "message": "two"}},
             "created": true, "closed": false, "forced": false}
        ]}
    });
    let events = pushes(Host::Bitbucket, &h, &body);
    assert_eq!(events.len(), 2);
    assert_eq!(events[0].git_ref, "refs/heads/main");
    assert_eq!((events[0].before.as_str(), events[0].commit_str()), (A, B));
    assert!(events[0].forced && !events[0].created);
    assert_eq!(events[0].pusher, "Ann");
    assert_eq!(events[1].git_ref, "refs/tags/v2");
    assert_eq!(events[1].before, ZERO_SHA);
    // Abbreviated hashes are kept as Bitbucket sent them.
    assert_eq!(events[1].commit_str(), "0123456789ab");
    assert!(events[1].created);
    assert_eq!(events[1].message, "two");
    assert_eq!(events[1].clone_url, "https://bitbucket.org/team/repo.git");
}

#[test]
fn bitbucket_pings_are_pings_and_other_keys_build_nothing() {
    let cloud = headers(&[("X-Event-Key", "diagnostics:ping"), ("X-Request-UUID", "u")]);
    assert_eq!(
        webhook::parse(Host::Bitbucket, &cloud, b"{}").unwrap().kind,
        ParsedKind::Ping
    );
    let server = headers(&[("X-Event-Key", "diagnostics:ping"), ("X-Request-Id", "i")]);
    assert_eq!(webhook::detect(&server), Some(Host::BitbucketServer));
    assert_eq!(
        webhook::parse(Host::BitbucketServer, &server, b"{\"test\": true}")
            .unwrap()
            .kind,
        ParsedKind::Ping
    );
    let pr = headers(&[
        ("X-Event-Key", "pullrequest:approved"),
        ("X-Request-UUID", "u"),
    ]);
    assert!(matches!(
        webhook::parse(Host::Bitbucket, &pr, b"{}").unwrap().kind,
        ParsedKind::Ignored(_)
    ));
}

#[test]
fn a_bitbucket_server_push_with_two_changes_is_two_ref_updates() {
    let h = headers(&[("X-Event-Key", "repo:refs_changed")]);
    let body = json!({
        "actor": {"name": "jo"},
        "repository": {"slug": "app", "project": {"key": "PRJ"}},
        "changes": [
            {"ref": {"id": "refs/heads/main", "type": "BRANCH"}, "fromHash": A, "toHash": B, "type": "UPDATE"},
            {"refId": "refs/tags/v1", "fromHash": ZERO_SHA, "toHash": C, "type": "ADD"}
        ]
    });
    let events = pushes(Host::BitbucketServer, &h, &body);
    assert_eq!(events.len(), 2);
    assert_eq!(events[0].repo, "PRJ/app");
    assert_eq!(events[0].commit_str(), B);
    assert_eq!(events[1].kind, RefKind::Tag("v1".into()));
    assert!(events[1].created);
}

#[test]
fn an_older_gitlab_payload_without_project_names_the_repo_from_its_homepage() {
    let h = headers(&[("X-Gitlab-Event", "Push Hook")]);
    let body = json!({
        "object_kind": "push", "ref": "refs/heads/master", "before": A, "after": B,
        "user_name": "John Smith",
        "repository": {"name": "Diaspora", "homepage": "http://example.com/mike/diaspora",
                       "git_http_url": "http://example.com/mike/diaspora.git"},
        "commits": [{"id": B, "message": "fixed readme"}]
    });
    let e = &pushes(Host::Gitlab, &h, &body)[0];
    assert_eq!(e.repo, "mike/diaspora");
    assert_eq!(e.clone_url, "http://example.com/mike/diaspora.git");
    assert_eq!(
        e.web_url.as_deref(),
        Some("http://example.com/mike/diaspora")
    );
    assert_eq!(e.pusher, "John Smith");
    assert_eq!(e.message, "fixed readme");
}

#[test]
fn gitlab_system_hooks_other_than_pushes_build_nothing() {
    let h = headers(&[("X-Gitlab-Event", "System Hook")]);
    let parsed = webhook::parse(Host::Gitlab, &h, b"{\"event_name\": \"project_create\"}").unwrap();
    assert_eq!(
        parsed.kind,
        ParsedKind::Ignored("gitlab system event project_create builds nothing".into())
    );
}

#[test]
fn a_gogs_push_without_before_is_a_new_ref() {
    let h = headers(&[("X-Gogs-Event", "push")]);
    let body = json!({
        "ref": "refs/heads/dev", "after": B,
        "repository": {"full_name": "u/r", "clone_url": "https://gogs.example.com/u/r.git"},
        "commits": [{"id": A, "message": "older"}, {"id": B, "message": "newest"}],
        "pusher": {"username": "u"}
    });
    let e = &pushes(Host::Gogs, &h, &body)[0];
    assert_eq!(e.before, ZERO_SHA);
    assert!(e.created);
    assert_eq!(e.message, "newest");
    assert_eq!(e.pusher, "u");
}

#[test]
fn a_gitea_tag_push_builds_the_head_commit() {
    let h = headers(&[("X-Gitea-Event", "push")]);
    let body = json!({
        "ref": "refs/tags/v3", "before": ZERO_SHA, "after": B,
        "repository": {"full_name": "u/r", "clone_url": "https://gitea.example.com/u/r.git"},
        "head_commit": {"id": C, "message": "tagged"},
        "pusher": {"login": "u"}
    });
    let e = &pushes(Host::Gitea, &h, &body)[0];
    assert_eq!((e.after.as_str(), e.commit_str()), (B, C));
}

#[test]
fn the_generic_body_defaults_before_and_message() {
    let h = headers(&[("webhook-id", "msg_1"), ("webhook-signature", "v1,x")]);
    let body = json!({
        "repo": "acme/app", "ref": "refs/heads/main", "after": B,
        "clone_url": "https://git.example.com/acme/app.git"
    });
    let parsed = webhook::parse(Host::Generic, &h, &serde_json::to_vec(&body).unwrap()).unwrap();
    assert_eq!(parsed.event, "push");
    assert_eq!(parsed.repo.as_deref(), Some("acme/app"));
    let ParsedKind::Pushes(events) = parsed.kind else {
        panic!("not a push");
    };
    let e = &events[0];
    assert_eq!(e.before, ZERO_SHA);
    assert!(e.created && !e.deleted && !e.forced);
    assert_eq!((e.message.as_str(), e.pusher.as_str()), ("", ""));
    assert_eq!(e.commit_str(), B);
    assert_eq!((e.ssh_url.as_ref(), e.web_url.as_ref()), (None, None));
}

#[test]
fn a_generic_delete_names_no_commit() {
    let h = HeaderMap::new();
    let body = json!({
        "repo": "acme/app", "ref": "refs/tags/v1", "before": B, "after": ZERO_SHA,
        "clone_url": "https://git.example.com/acme/app.git", "message": "bye"
    });
    let e = &pushes(Host::Generic, &h, &body)[0];
    assert!(e.deleted);
    assert_eq!(e.commit, None);
    assert_eq!(e.message, "bye");
}

/// A recorded fixture as JSON.
fn fixture(rel: &str) -> Value {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/webhooks")
        .join(rel);
    serde_json::from_slice(&std::fs::read(&path).unwrap()).unwrap()
}

/// A host, its headers, a recorded payload, and the JSON pointers to its
/// head commit and its number.
type PullCase = (
    Host,
    Vec<(&'static str, &'static str)>,
    &'static str,
    &'static str,
    &'static str,
);

/// Where each host's pull request keeps its head commit and its number, as
/// JSON pointers into its recorded payload, with the headers it comes with.
fn pull_request_cases() -> Vec<PullCase> {
    vec![
        (
            Host::Github,
            vec![("X-GitHub-Event", "pull_request")],
            "github/octokit__pull_request__opened.json",
            "/pull_request/head/sha",
            "/number",
        ),
        (
            Host::Gitlab,
            vec![("X-Gitlab-Event", "Merge Request Hook")],
            "gitlab/woodpecker__mr_opened.json",
            "/object_attributes/last_commit/id",
            "/object_attributes/iid",
        ),
        (
            Host::Gitea,
            vec![("X-Gitea-Event", "pull_request")],
            "gitea/goplayground__pull-request-event__fork.json",
            "/pull_request/head/sha",
            "/number",
        ),
        (
            Host::Forgejo,
            vec![("X-Forgejo-Event", "pull_request")],
            "forgejo/woodpecker__pr_reopened.json",
            "/pull_request/head/sha",
            "/number",
        ),
        (
            Host::Bitbucket,
            vec![
                ("X-Event-Key", "pullrequest:created"),
                ("X-Request-UUID", "u"),
            ],
            "bitbucket/goscm__pr_created.json",
            "/pullrequest/source/commit/hash",
            "/pullrequest/id",
        ),
        (
            Host::BitbucketServer,
            vec![("X-Event-Key", "pr:opened"), ("X-Request-Id", "i")],
            "bitbucket-server/goscm__pr_open.json",
            "/pullRequest/fromRef/latestCommit",
            "/pullRequest/id",
        ),
    ]
}

#[test]
fn a_pull_request_without_a_head_commit_a_non_hex_one_or_a_non_numeric_number_is_refused() {
    for (host, pairs, file, sha_at, number_at) in pull_request_cases() {
        let h = headers(&pairs);
        let good = fixture(file);
        assert!(
            matches!(
                webhook::parse(host, &h, &serde_json::to_vec(&good).unwrap())
                    .unwrap()
                    .kind,
                ParsedKind::PullRequest(_)
            ),
            "{file}"
        );
        let spoiled: [(&str, &str, Value); 5] = [
            ("no head commit", sha_at, Value::Null),
            (
                "a non-hex head commit",
                sha_at,
                json!("--upload-pack=touch /tmp/x"),
            ),
            ("a head commit of the wrong type", sha_at, json!(12)),
            ("a non-numeric number", number_at, json!("7; rm -rf /")),
            ("a zero number", number_at, json!(0)),
        ];
        for (what, at, value) in spoiled {
            let mut v = good.clone();
            *v.pointer_mut(at).unwrap_or_else(|| panic!("{file}: {at}")) = value;
            let got = webhook::parse(host, &h, &serde_json::to_vec(&v).unwrap());
            let err = got.expect_err(&format!("{file}: {what} was accepted"));
            assert!(
                matches!(
                    err,
                    webhook::ParseError::Missing(_) | webhook::ParseError::BadNumber
                ),
                "{file}: {what}: {err}"
            );
        }
    }
}

#[test]
fn a_pull_request_branch_git_would_refuse_is_refused() {
    let h = headers(&[("X-GitHub-Event", "pull_request")]);
    let mut v = fixture("github/octokit__pull_request__opened.json");
    v["pull_request"]["head"]["ref"] = json!("a..b");
    let err = webhook::parse(Host::Github, &h, &serde_json::to_vec(&v).unwrap()).unwrap_err();
    assert_eq!(err, webhook::ParseError::BadRef);
    v["pull_request"]["head"]["ref"] = json!("ok");
    v["pull_request"]["base"]["ref"] = json!("main\u{7}");
    let err = webhook::parse(Host::Github, &h, &serde_json::to_vec(&v).unwrap()).unwrap_err();
    assert_eq!(err, webhook::ParseError::BadRef);
}
