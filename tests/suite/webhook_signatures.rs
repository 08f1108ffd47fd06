//! Signature verification against published vectors, and `sign` against
//! `verify` for every host.

use axum::http::{HeaderMap, HeaderName, HeaderValue};
use hookci::secret::Secret;
use hookci::webhook::{self, Host, VerifyError};
use serde_json::Value;
use std::path::Path;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

const DIR: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/webhooks");

fn read(file: &str) -> Vec<u8> {
    std::fs::read(Path::new(DIR).join(file)).unwrap_or_else(|e| panic!("{file}: {e}"))
}

fn vectors() -> Value {
    serde_json::from_slice(&read("signature_vectors.json")).unwrap()
}

fn headers(pairs: &[(&str, &str)]) -> HeaderMap {
    let mut h = HeaderMap::new();
    for (name, value) in pairs {
        h.append(
            HeaderName::from_bytes(name.as_bytes()).unwrap(),
            HeaderValue::from_str(value).unwrap(),
        );
    }
    h
}

fn at(unix: i64) -> SystemTime {
    UNIX_EPOCH + Duration::from_secs(unix as u64)
}

fn verify(host: Host, h: &HeaderMap, body: &[u8], secret: &str) -> Result<(), VerifyError> {
    webhook::verify(
        host,
        h,
        body,
        &Secret::new(secret),
        false,
        SystemTime::now(),
    )
}

/// The hosts a file vector's header is sent by, from the fixture's folder.
fn hosts_for(file: &str, header: &str) -> Vec<Host> {
    match (file.split('/').next().unwrap(), header) {
        ("github", _) => vec![Host::Github],
        ("gitea", "X-Gitea-Signature") => vec![Host::Gitea, Host::Forgejo],
        ("gogs", "X-Gogs-Signature") => vec![Host::Gogs],
        ("bitbucket-server", "X-Hub-Signature") => vec![Host::BitbucketServer, Host::Bitbucket],
        other => panic!("no host for {other:?}"),
    }
}

#[test]
fn the_github_docs_vector_verifies() {
    let v = &vectors()["github_docs"];
    let h = headers(&[(
        "X-Hub-Signature-256",
        v["X-Hub-Signature-256"].as_str().unwrap(),
    )]);
    let body = v["payload"].as_str().unwrap().as_bytes();
    assert_eq!(
        verify(Host::Github, &h, body, v["secret"].as_str().unwrap()),
        Ok(())
    );
}

fn standard_webhooks_headers(v: &Value, signature: &str) -> HeaderMap {
    headers(&[
        ("webhook-id", v["msg_id"].as_str().unwrap()),
        (
            "webhook-timestamp",
            &v["timestamp"].as_i64().unwrap().to_string(),
        ),
        ("webhook-signature", signature),
    ])
}

#[test]
fn both_standard_webhooks_vectors_verify_at_their_timestamp() {
    for v in vectors()["standard_webhooks"].as_array().unwrap() {
        let secret = Secret::new(v["secret"].as_str().unwrap());
        let body = v["payload"].as_str().unwrap().as_bytes();
        let signature = v["webhook-signature"].as_str().unwrap();
        let h = standard_webhooks_headers(v, signature);
        let now = at(v["timestamp"].as_i64().unwrap());
        // Generic senders, and GitLab when it signs with a signing token.
        for host in [Host::Generic, Host::Gitlab] {
            assert_eq!(
                webhook::verify(host, &h, body, &secret, false, now),
                Ok(()),
                "{host} {signature}"
            );
        }
        assert_eq!(
            webhook::standard_webhooks_signature(
                &secret,
                v["msg_id"].as_str().unwrap(),
                v["timestamp"].as_i64().unwrap(),
                body
            ),
            signature
        );
    }
}

#[test]
fn every_file_vector_verifies_with_its_host() {
    for v in vectors()["file_vectors"].as_array().unwrap() {
        let file = v["file"].as_str().unwrap();
        let header = v["header"].as_str().unwrap();
        let value = v["value"].as_str().unwrap();
        let secret = Secret::new(v["secret"].as_str().unwrap());
        let body = read(file);
        let h = headers(&[(header, value)]);
        let allow_sha1 = value.starts_with("sha1=");
        for host in hosts_for(file, header) {
            assert_eq!(
                webhook::verify(host, &h, &body, &secret, allow_sha1, SystemTime::now()),
                Ok(()),
                "{file} {header} as {host}"
            );
        }
    }
}

#[test]
fn every_negative_vector_fails() {
    let v = vectors();
    let negatives = v["negative_vectors"].as_array().unwrap();
    assert_eq!(negatives.len(), 3);

    let github = &negatives[0];
    let h = headers(&[(
        github["header"].as_str().unwrap(),
        github["value"].as_str().unwrap(),
    )]);
    assert_eq!(
        verify(
            Host::Github,
            &h,
            &read("github/goscm__push.json"),
            "topsecret"
        ),
        Err(VerifyError::Mismatch)
    );

    let stash = &negatives[1];
    let h = headers(&[(
        stash["header"].as_str().unwrap(),
        stash["value"].as_str().unwrap(),
    )]);
    let body = read("bitbucket-server/goscm__push.json");
    let secret = "71295b197fa25f4356d2fb9965df3f2379d903d7";
    assert_eq!(
        verify(Host::BitbucketServer, &h, &body, secret),
        Err(VerifyError::Mismatch)
    );

    let first = &v["standard_webhooks"][0];
    let h = standard_webhooks_headers(first, negatives[2]["webhook-signature"].as_str().unwrap());
    let now = at(first["timestamp"].as_i64().unwrap());
    let secret = Secret::new(first["secret"].as_str().unwrap());
    let body = first["payload"].as_str().unwrap().as_bytes();
    assert_eq!(
        webhook::verify(Host::Generic, &h, body, &secret, false, now),
        Err(VerifyError::Mismatch)
    );
}

#[test]
fn a_standard_webhooks_delivery_six_minutes_away_is_stale() {
    let v = &vectors()["standard_webhooks"][0];
    let secret = Secret::new(v["secret"].as_str().unwrap());
    let body = v["payload"].as_str().unwrap().as_bytes();
    let h = standard_webhooks_headers(v, v["webhook-signature"].as_str().unwrap());
    let sent = at(v["timestamp"].as_i64().unwrap());
    let six = Duration::from_secs(6 * 60);
    let four = Duration::from_secs(4 * 60);
    for host in [Host::Generic, Host::Gitlab] {
        let check = |now| webhook::verify(host, &h, body, &secret, false, now);
        assert_eq!(check(sent + six), Err(VerifyError::Stale), "{host} late");
        assert_eq!(check(sent - six), Err(VerifyError::Stale), "{host} early");
        assert_eq!(check(sent + four), Ok(()), "{host} late but in time");
        assert_eq!(check(sent - four), Ok(()), "{host} early but in time");
    }
}

#[test]
fn a_sha1_only_github_signature_needs_allow_sha1() {
    let h = headers(&[(
        "X-Hub-Signature",
        "sha1=cf93f9ba3c8d3a789e61f91e1e5c6a360d036e98",
    )]);
    let body = read("github/goscm__push.json");
    let secret = Secret::new("topsecret");
    let now = SystemTime::now();
    assert_eq!(
        webhook::verify(Host::Github, &h, &body, &secret, false, now),
        Err(VerifyError::Sha1NotAllowed)
    );
    assert_eq!(
        webhook::verify(Host::Github, &h, &body, &secret, true, now),
        Ok(())
    );
    let wrong = Secret::new("nottopsecret");
    assert_eq!(
        webhook::verify(Host::Github, &h, &body, &wrong, true, now),
        Err(VerifyError::Mismatch)
    );
}

#[test]
fn a_github_sha256_signature_decides_even_beside_a_valid_sha1_one() {
    let h = headers(&[
        (
            "X-Hub-Signature-256",
            "sha256=3bfbbc3bfc44498db2254f577b2e4bed201ece6163518ba91cb2c21f0f59d512",
        ),
        (
            "X-Hub-Signature",
            "sha1=cf93f9ba3c8d3a789e61f91e1e5c6a360d036e98",
        ),
    ]);
    let body = read("github/goscm__push.json");
    let secret = Secret::new("topsecret");
    assert_eq!(
        webhook::verify(Host::Github, &h, &body, &secret, true, SystemTime::now()),
        Err(VerifyError::Mismatch)
    );
}

#[test]
fn what_sign_produces_verifies_for_every_host_and_only_with_that_secret() {
    let body = read("github/goscm__push.json");
    let secret = Secret::new("whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw");
    let other = Secret::new("whsec_C2FVsBQIhrscChlQIMV+b5sSYspob7oD");
    let now = at(1_700_000_000);
    for host in Host::ALL {
        let signed = webhook::sign(host, &secret, &body, now);
        assert!(!signed.is_empty(), "{host}");
        let pairs: Vec<(&str, &str)> = signed
            .iter()
            .map(|(k, v)| (k.as_str(), v.as_str()))
            .collect();
        let h = headers(&pairs);
        assert_eq!(
            webhook::verify(host, &h, &body, &secret, false, now),
            Ok(()),
            "{host}: {signed:?}"
        );
        assert_eq!(
            webhook::verify(host, &h, &body, &other, false, now),
            Err(VerifyError::Mismatch),
            "{host} with another secret"
        );
        let mut tampered = body.clone();
        tampered[10] ^= 1;
        let expected = if host == Host::Gitlab {
            // A GitLab token does not cover the body.
            Ok(())
        } else {
            Err(VerifyError::Mismatch)
        };
        assert_eq!(
            webhook::verify(host, &h, &tampered, &secret, false, now),
            expected,
            "{host} with a changed body"
        );
    }
}

#[test]
fn sign_sends_each_hosts_own_header() {
    let secret = Secret::new("s");
    let now = at(1_700_000_000);
    let names = |host| -> Vec<String> {
        webhook::sign(host, &secret, b"{}", now)
            .into_iter()
            .map(|(k, _)| k)
            .collect()
    };
    assert_eq!(names(Host::Github), ["X-Hub-Signature-256"]);
    assert_eq!(names(Host::Gitlab), ["X-Gitlab-Token"]);
    assert_eq!(names(Host::Gitea), ["X-Gitea-Signature"]);
    assert_eq!(names(Host::Forgejo), ["X-Forgejo-Signature"]);
    assert_eq!(names(Host::Gogs), ["X-Gogs-Signature"]);
    assert_eq!(names(Host::Bitbucket), ["X-Hub-Signature"]);
    assert_eq!(names(Host::BitbucketServer), ["X-Hub-Signature"]);
    assert_eq!(
        names(Host::Generic),
        ["webhook-id", "webhook-timestamp", "webhook-signature"]
    );
    let generic = webhook::sign(Host::Generic, &secret, b"{}", now);
    assert!(generic[0].1.starts_with("msg_") && generic[0].1.len() == 4 + 24);
    assert_eq!(generic[1].1, "1700000000");
    assert!(generic[2].1.starts_with("v1,"));
    let gitlab = webhook::sign(Host::Gitlab, &secret, b"{}", now);
    assert_eq!(gitlab[0].1, "s");
}

#[test]
fn a_delivery_without_a_signature_is_missing_one_for_every_host() {
    let h = headers(&[("X-GitHub-Event", "push"), ("X-Event-Key", "repo:push")]);
    for host in Host::ALL {
        assert_eq!(
            verify(host, &h, b"{}", "secret"),
            Err(VerifyError::Missing),
            "{host}"
        );
    }
}

#[test]
fn gitea_and_forgejo_accept_each_header_they_send() {
    let body = read("gitea/goplayground__push-event.json");
    let secret = "IsWishesWereHorsesWedAllBeEatingSteak!";
    let hex = "60fe446c74fa0cb9474f98cc557db79e10c7aaf22cf324ad65239600b9e4d915";
    let prefixed = format!("sha256={hex}");
    let cases = [
        (Host::Gitea, "X-Gitea-Signature", hex),
        (Host::Gitea, "X-Hub-Signature-256", prefixed.as_str()),
        (Host::Forgejo, "X-Forgejo-Signature", hex),
        (Host::Forgejo, "X-Gitea-Signature", hex),
        (Host::Forgejo, "X-Hub-Signature-256", prefixed.as_str()),
    ];
    for (host, header, value) in cases {
        let h = headers(&[(header, value)]);
        assert_eq!(verify(host, &h, &body, secret), Ok(()), "{host} {header}");
    }
    // Gogs signs only with its own header.
    let h = headers(&[("X-Gitea-Signature", hex)]);
    assert_eq!(
        verify(Host::Gogs, &h, &body, secret),
        Err(VerifyError::Missing)
    );
}

#[test]
fn a_gitlab_token_must_equal_the_secret() {
    let ok = headers(&[("X-Gitlab-Token", "s3cret")]);
    assert_eq!(verify(Host::Gitlab, &ok, b"{}", "s3cret"), Ok(()));
    for wrong in ["s3cre", "s3cret2", "S3CRET", ""] {
        let h = headers(&[("X-Gitlab-Token", wrong)]);
        assert_eq!(
            verify(Host::Gitlab, &h, b"{}", "s3cret"),
            Err(VerifyError::Mismatch),
            "{wrong:?}"
        );
    }
}

#[test]
fn a_standard_webhooks_secret_without_prefix_is_used_as_raw_bytes() {
    let secret = Secret::new("plain-secret");
    let now = at(1_700_000_000);
    let signed = webhook::sign(Host::Generic, &secret, b"{}", now);
    let sig = webhook::standard_webhooks_signature(&secret, &signed[0].1, 1_700_000_000, b"{}");
    assert_eq!(signed[2].1, sig);
    let pairs: Vec<(&str, &str)> = signed
        .iter()
        .map(|(k, v)| (k.as_str(), v.as_str()))
        .collect();
    assert_eq!(
        webhook::verify(Host::Generic, &headers(&pairs), b"{}", &secret, false, now),
        Ok(())
    );
}

#[test]
fn any_one_matching_entry_of_a_standard_webhooks_signature_list_passes() {
    let v = &vectors()["standard_webhooks"][0];
    let secret = Secret::new(v["secret"].as_str().unwrap());
    let body = v["payload"].as_str().unwrap().as_bytes();
    let good = v["webhook-signature"].as_str().unwrap();
    let list = format!("v1,AAAA v1a,ignored {good} v2,xyz");
    let h = standard_webhooks_headers(v, &list);
    let now = at(v["timestamp"].as_i64().unwrap());
    assert_eq!(
        webhook::verify(Host::Generic, &h, body, &secret, false, now),
        Ok(())
    );
    let only_other_versions = standard_webhooks_headers(v, "v1a,abc v2,def");
    assert_eq!(
        webhook::verify(
            Host::Generic,
            &only_other_versions,
            body,
            &secret,
            false,
            now
        ),
        Err(VerifyError::Malformed)
    );
}
