//! Whatever a caller sends, the webhook module answers with an error and
//! never panics: malformed bodies, wrong types, deep nesting, garbage
//! signature headers.

use axum::http::{HeaderMap, HeaderName, HeaderValue};
use hookci::secret::Secret;
use hookci::webhook::{self, Host, ParseError, ParsedKind, VerifyError};
use serde_json::{Value, json};
use std::path::Path;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

const DIR: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/webhooks");

/// For each host: the event header value of a push, and a valid push body.
fn valid_push(host: Host) -> (&'static str, Vec<u8>) {
    let fixture = |file: &str| std::fs::read(Path::new(DIR).join(file)).unwrap();
    match host {
        Host::Github => ("push", fixture("github/goscm__push.json")),
        Host::Gitlab => ("Push Hook", fixture("gitlab/goscm__push.json")),
        Host::Gitea => ("push", fixture("gitea/goscm__push.json")),
        Host::Forgejo => ("push", fixture("forgejo/woodpecker__push.json")),
        Host::Gogs => ("push", fixture("gogs/goscm__push.json")),
        Host::Bitbucket => ("repo:push", fixture("bitbucket/goscm__push.json")),
        Host::BitbucketServer => (
            "repo:refs_changed",
            fixture("bitbucket-server/goscm__push.json"),
        ),
        Host::Generic => (
            "push",
            serde_json::to_vec(&json!({
                "repo": "acme/app",
                "ref": "refs/heads/main",
                "before": "a10867b14bb761a232cd80139fbd4c0d33264240",
                "after": "199eddf46df50de8d02e99bf1c5fdb4101338224",
                "clone_url": "https://git.example.com/acme/app.git",
                "message": "fix"
            }))
            .unwrap(),
        ),
    }
}

fn event_headers(host: Host, event: &str) -> HeaderMap {
    let name = match host {
        Host::Github => "x-github-event",
        Host::Gitlab => "x-gitlab-event",
        Host::Gitea => "x-gitea-event",
        Host::Forgejo => "x-forgejo-event",
        Host::Gogs => "x-gogs-event",
        Host::Bitbucket | Host::BitbucketServer => "x-event-key",
        Host::Generic => "webhook-id",
    };
    let mut h = HeaderMap::new();
    h.insert(
        HeaderName::from_static(name),
        HeaderValue::from_str(event).unwrap(),
    );
    h
}

/// JSON pointers to the ref and to the repository (all of their copies).
fn pointers(host: Host) -> (&'static [&'static str], &'static [&'static str]) {
    match host {
        Host::Generic => (&["/ref"], &["/repo"]),
        // GitLab names the project twice: `project`, and the older `repository`.
        Host::Gitlab => (&["/ref"], &["/project", "/repository"]),
        Host::Bitbucket => (&["/push/changes/0/new/name"], &["/repository"]),
        Host::BitbucketServer => (&["/changes/0/ref", "/changes/0/refId"], &["/repository"]),
        _ => (&["/ref"], &["/repository"]),
    }
}

/// Where the new commit id is, for each host.
fn after_pointer(host: Host) -> &'static str {
    match host {
        Host::Bitbucket => "/push/changes/0/new/target/hash",
        Host::BitbucketServer => "/changes/0/toHash",
        _ => "/after",
    }
}

fn edited(body: &[u8], edit: impl FnOnce(&mut Value)) -> Vec<u8> {
    let mut v: Value = serde_json::from_slice(body).unwrap();
    edit(&mut v);
    serde_json::to_vec(&v).unwrap()
}

fn remove(v: &mut Value, pointer: &str) {
    let (parent, key) = pointer.rsplit_once('/').unwrap();
    v.pointer_mut(parent)
        .unwrap()
        .as_object_mut()
        .unwrap()
        .remove(key)
        .unwrap();
}

fn set(v: &mut Value, pointer: &str, to: Value) {
    *v.pointer_mut(pointer)
        .unwrap_or_else(|| panic!("no {pointer}")) = to;
}

#[test]
fn the_valid_bodies_used_below_do_parse() {
    for host in Host::ALL {
        let (event, body) = valid_push(host);
        let parsed = webhook::parse(host, &event_headers(host, event), &body).unwrap();
        assert!(
            matches!(parsed.kind, ParsedKind::Pushes(ref p) if p.len() == 1),
            "{host}"
        );
    }
}

#[test]
fn malformed_or_misshapen_bodies_are_parse_errors_for_every_host() {
    let deep_arrays = format!("{}{}", "[".repeat(100_000), "]".repeat(100_000));
    let deep_objects = format!("{}1{}", "{\"a\":".repeat(100_000), "}".repeat(100_000));
    let unclosed = "[".repeat(100_000);
    let fixed: Vec<(&str, Vec<u8>)> = vec![
        ("empty", b"".to_vec()),
        ("truncated", b"{\"ref\": \"refs/heads/main\"".to_vec()),
        ("not JSON", b"hello".to_vec()),
        ("a list", b"[]".to_vec()),
        ("null", b"null".to_vec()),
        ("a string", b"\"push\"".to_vec()),
        ("a number", b"42".to_vec()),
        ("an empty object", b"{}".to_vec()),
        ("invalid UTF-8", b"{\"ref\": \"refs/heads/\xff\"}".to_vec()),
        ("Latin-1 bytes", b"\xe9t\xe9".to_vec()),
        ("100k nested arrays", deep_arrays.into_bytes()),
        ("100k nested objects", deep_objects.into_bytes()),
        ("100k unclosed arrays", unclosed.into_bytes()),
    ];
    for host in Host::ALL {
        let (event, valid) = valid_push(host);
        let headers = event_headers(host, event);
        let (refs, repo) = pointers(host);
        let mut trailing = valid.clone();
        trailing.extend_from_slice(b" {}");
        let mut bad_byte = valid.clone();
        let quote = bad_byte.iter().rposition(|&b| b == b'"').unwrap();
        bad_byte.insert(quote, 0xff);
        let mut cases = fixed.clone();
        cases.extend([
            ("trailing data", trailing),
            ("an invalid byte in a string", bad_byte),
            (
                "the ref as a number",
                edited(&valid, |v| refs.iter().for_each(|p| set(v, p, json!(5)))),
            ),
            (
                "no repository",
                edited(&valid, |v| repo.iter().for_each(|p| remove(v, p))),
            ),
            (
                "the repository as a list",
                edited(&valid, |v| {
                    repo.iter().for_each(|p| set(v, p, json!([1, 2])))
                }),
            ),
            (
                "after as an object",
                edited(&valid, |v| set(v, after_pointer(host), json!({"id": 1}))),
            ),
            (
                "after not an object id",
                edited(&valid, |v| {
                    set(v, after_pointer(host), json!("--upload-pack=touch /tmp/x"))
                }),
            ),
            ("the repository nested 100k deep", nested_deep(&valid, repo)),
        ]);
        for (what, body) in cases {
            let got = webhook::parse(host, &headers, &body);
            assert!(got.is_err(), "{host}, {what}: {got:?}");
        }
    }
}

/// `body` with the values at `pointers` replaced by 100k nested arrays.
fn nested_deep(body: &[u8], pointers: &[&str]) -> Vec<u8> {
    let marked = edited(body, |v| {
        pointers
            .iter()
            .for_each(|p| set(v, p, json!("DEEP-MARKER")))
    });
    let deep = format!("{}{}", "[".repeat(100_000), "]".repeat(100_000));
    String::from_utf8(marked)
        .unwrap()
        .replace("\"DEEP-MARKER\"", &deep)
        .into_bytes()
}

#[test]
fn the_error_names_the_missing_field() {
    let (event, valid) = valid_push(Host::Github);
    let headers = event_headers(Host::Github, event);
    let no_ref = edited(&valid, |v| set(v, "/ref", json!(5)));
    assert_eq!(
        webhook::parse(Host::Github, &headers, &no_ref),
        Err(ParseError::Missing("ref"))
    );
    let no_repo = edited(&valid, |v| remove(v, "/repository"));
    assert_eq!(
        webhook::parse(Host::Github, &headers, &no_repo),
        Err(ParseError::Missing("repository"))
    );
    assert_eq!(
        webhook::parse(Host::Github, &headers, b"{"),
        Err(ParseError::Json)
    );
    assert_eq!(
        webhook::parse(Host::Github, &HeaderMap::new(), &valid),
        Err(ParseError::Missing("X-GitHub-Event header"))
    );
}

#[test]
fn a_ping_or_other_event_still_needs_a_json_object() {
    let cases = [
        (Host::Github, "ping"),
        (Host::Github, "issues"),
        (Host::Gitlab, "Issue Hook"),
        (Host::Gitea, "create"),
        (Host::Bitbucket, "diagnostics:ping"),
        (Host::BitbucketServer, "diagnostics:ping"),
    ];
    for (host, event) in cases {
        let headers = event_headers(host, event);
        for body in [&b"[]"[..], b"null", b"{", b"\xff"] {
            assert!(
                webhook::parse(host, &headers, body).is_err(),
                "{host} {event} {body:?}"
            );
        }
        assert!(
            webhook::parse(host, &headers, b"{}").is_ok(),
            "{host} {event}"
        );
    }
}

/// Every header each host reads a signature from.
fn signature_headers(host: Host) -> &'static [&'static str] {
    match host {
        Host::Github => &["x-hub-signature-256", "x-hub-signature"],
        Host::Gitlab => &["x-gitlab-token", "webhook-signature"],
        Host::Gitea => &["x-gitea-signature", "x-hub-signature-256"],
        Host::Forgejo => &[
            "x-forgejo-signature",
            "x-gitea-signature",
            "x-hub-signature-256",
        ],
        Host::Gogs => &["x-gogs-signature"],
        Host::Bitbucket | Host::BitbucketServer => &["x-hub-signature"],
        Host::Generic => &["webhook-signature"],
    }
}

#[test]
fn garbage_signature_headers_are_refused_for_every_host() {
    let huge_hex = "a".repeat(100_000);
    let huge_odd = "a".repeat(100_001);
    let huge_prefixed = format!("sha256={huge_hex}");
    let values: Vec<&[u8]> = vec![
        b"",
        b" ",
        b"zz",
        b"abc",
        b"not hex at all",
        b"sha256=",
        b"sha256=zz",
        b"sha256=abc",
        b"sha1=",
        b"sha1=zz",
        b"sha512=00",
        b"v1,",
        b"v1,!!!!",
        b"v1,AAAA",
        b",,, v1 v1,, ,",
        b"\xff\xfe",
        huge_hex.as_bytes(),
        huge_odd.as_bytes(),
        huge_prefixed.as_bytes(),
    ];
    let secret = Secret::new("secret");
    let now = SystemTime::now();
    let body = b"{\"ref\": \"refs/heads/main\"}";
    for host in Host::ALL {
        for name in signature_headers(host) {
            for value in &values {
                let mut h = HeaderMap::new();
                h.insert(
                    HeaderName::from_static(name),
                    HeaderValue::from_bytes(value).unwrap(),
                );
                h.insert("webhook-id", HeaderValue::from_static("msg_1"));
                let ts = now
                    .duration_since(UNIX_EPOCH)
                    .unwrap()
                    .as_secs()
                    .to_string();
                h.insert("webhook-timestamp", HeaderValue::from_str(&ts).unwrap());
                for allow_sha1 in [false, true] {
                    let got = webhook::verify(host, &h, body, &secret, allow_sha1, now);
                    assert!(
                        got.is_err(),
                        "{host} {name}: {:?}",
                        String::from_utf8_lossy(&value[..value.len().min(20)])
                    );
                }
                // Delivery ids and detection take the same headers calmly.
                let id = webhook::delivery_id(host, &h, body);
                assert!(!id.is_empty() && id.len() <= 200);
                let _ = webhook::detect(&h);
            }
        }
    }
}

#[test]
fn garbage_standard_webhooks_ids_and_timestamps_are_refused() {
    let secret = Secret::new("whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw");
    let now = UNIX_EPOCH + Duration::from_secs(1_700_000_000);
    let timestamps = [
        "",
        "abc",
        "1.5",
        "99999999999999999999999",
        "-9223372036854775808",
        "9223372036854775807",
        "0",
    ];
    for host in [Host::Generic, Host::Gitlab] {
        for ts in timestamps {
            let signed = webhook::standard_webhooks_signature(&secret, "msg_1", 0, b"{}");
            let mut h = HeaderMap::new();
            h.insert("webhook-id", HeaderValue::from_static("msg_1"));
            h.insert("webhook-timestamp", HeaderValue::from_str(ts).unwrap());
            h.insert("webhook-signature", HeaderValue::from_str(&signed).unwrap());
            let got = webhook::verify(host, &h, b"{}", &secret, false, now);
            assert!(got.is_err(), "{host} {ts:?}");
        }
        let mut no_id = HeaderMap::new();
        no_id.insert("webhook-timestamp", HeaderValue::from_static("1700000000"));
        no_id.insert("webhook-signature", HeaderValue::from_static("v1,AAAA"));
        assert_eq!(
            webhook::verify(host, &no_id, b"{}", &secret, false, now),
            Err(VerifyError::Malformed)
        );
    }
    // A time before 1970 neither panics nor passes.
    let mut h = HeaderMap::new();
    h.insert("webhook-id", HeaderValue::from_static("msg_1"));
    h.insert("webhook-timestamp", HeaderValue::from_static("0"));
    h.insert("webhook-signature", HeaderValue::from_static("v1,AAAA"));
    let before_epoch = UNIX_EPOCH - Duration::from_secs(3600);
    assert_eq!(
        webhook::verify(Host::Generic, &h, b"{}", &secret, false, before_epoch),
        Err(VerifyError::Stale)
    );
}
