//! Checkout against real git: repositories made with the git CLI, served
//! from a path, over smart HTTP (`git http-backend` behind Basic auth) and
//! over ssh (a real sshd, when the machine has one).

use crate::gitserve;
use crate::prereq;

use gitserve::{HttpGitServer, KeyPair, Sshd, Upstream, git, keygen, try_git};
use hookci::runner::checkout::{CheckoutError, CloneSpec, Mirrors};
use hookci::secret::Secret;
use std::path::Path;

const TOKEN: &str = "hookci-test-token-5f1d2c9e8a";

fn spec(url: &str) -> CloneSpec {
    CloneSpec {
        url: url.to_owned(),
        ssh_key: None,
        token: None,
        submodules: false,
        accept_new_host_keys: false,
    }
}

fn with_token(url: &str, token: &str) -> CloneSpec {
    CloneSpec {
        token: Some(Secret::new(token)),
        ..spec(url)
    }
}

fn mirrors(up: &Upstream) -> Mirrors {
    Mirrors::new(up.tmp.path().join("data/repos"))
}

/// Asserts that `ws` is a clean workspace with a detached HEAD at `commit`.
fn assert_workspace_at(up: &Upstream, ws: &Path, commit: &str) {
    assert_eq!(git(&up.home, ws, &["rev-parse", "HEAD"]), commit);
    assert!(
        try_git(&up.home, ws, &["symbolic-ref", "-q", "HEAD"]).is_err(),
        "HEAD should be detached"
    );
    assert_eq!(git(&up.home, ws, &["status", "--porcelain"]), "");
}

fn read(path: &Path) -> String {
    std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

// Over a file path.

#[tokio::test]
async fn a_fetched_commit_checks_out_as_a_clean_detached_head_with_its_files() {
    let up = Upstream::new("hello");
    let first = up.push(
        &[("README.md", "hello\n"), ("src/lib.rs", "fn a() {}\n")],
        "one",
    );
    let second = up.push(&[("README.md", "hello again\n")], "two");
    let mirrors = mirrors(&up);

    let (mirror, commit) = mirrors
        .fetch(&spec(&up.url()), "refs/heads/main", &second)
        .await
        .expect("fetch");
    assert_eq!(commit, second);
    assert!(mirror.starts_with(up.tmp.path().join("data/repos")));
    assert!(
        mirror
            .file_name()
            .unwrap()
            .to_str()
            .unwrap()
            .ends_with("-hello.git"),
        "{}",
        mirror.display()
    );

    let ws = up.tmp.path().join("ws/1");
    mirrors
        .checkout(&mirror, &spec(&up.url()), &commit, &ws)
        .await
        .expect("checkout");
    assert_workspace_at(&up, &ws, &second);
    assert_eq!(read(&ws.join("README.md")), "hello again\n");
    assert_eq!(read(&ws.join("src/lib.rs")), "fn a() {}\n");
    assert_eq!(
        git(&up.home, &ws, &["remote", "get-url", "origin"]),
        up.url()
    );
    // History is there too, borrowed from the mirror rather than copied.
    assert_eq!(git(&up.home, &ws, &["rev-parse", "HEAD~1"]), first);
    let alternates = read(&ws.join(".git/objects/info/alternates"));
    assert!(alternates.trim_end().ends_with("/objects"), "{alternates}");
    git(&up.home, &ws, &["fsck", "--no-progress"]);

    // An older commit checks out too, in its own workspace.
    let ws2 = up.tmp.path().join("ws/2");
    mirrors
        .checkout(&mirror, &spec(&up.url()), &first, &ws2)
        .await
        .expect("checkout");
    assert_workspace_at(&up, &ws2, &first);
    assert_eq!(read(&ws2.join("README.md")), "hello\n");
}

#[tokio::test]
async fn a_second_fetch_brings_only_the_new_objects() {
    let up = Upstream::new("incremental");
    let files: Vec<(String, String)> = (0..50)
        .map(|i| {
            (
                format!("dir{}/file{i}.txt", i % 5),
                format!("contents {i}\n"),
            )
        })
        .collect();
    let files: Vec<(&str, &str)> = files.iter().map(|(p, c)| (&**p, &**c)).collect();
    let first = up.push(&files, "many files");
    let mirrors = mirrors(&up);
    let url = up.url();

    let fetched = mirrors
        .fetch_with_stats(&spec(&url), "refs/heads/main", &first)
        .await
        .expect("first fetch");
    // 50 blobs, 6 trees, 1 commit.
    assert_eq!(fetched.received_objects, 57, "{fetched:?}");

    let again = mirrors
        .fetch_with_stats(&spec(&url), "refs/heads/main", &first)
        .await
        .expect("second fetch");
    assert_eq!(again.received_objects, 0, "{again:?}");
    assert_eq!(again.received_bytes, 0, "{again:?}");

    // One file changed in one directory: a commit, two trees, one blob.
    let second = up.push(&[("dir1/file1.txt", "changed\n")], "one change");
    let third = mirrors
        .fetch_with_stats(&spec(&url), "refs/heads/main", &second)
        .await
        .expect("third fetch");
    assert_eq!(third.commit, second);
    assert_eq!(third.received_objects, 4, "{third:?}");
    assert!(third.received_bytes < 2_000, "{third:?}");
}

#[tokio::test]
async fn an_annotated_tag_peels_to_its_commit() {
    let up = Upstream::new("tags");
    let commit = up.push(&[("a", "a\n")], "tagged");
    up.git(&["tag", "-a", "v1.0", "-m", "release 1.0"]);
    up.git(&["push", "-q", "origin", "refs/tags/v1.0"]);
    let tag_object = up.git(&["rev-parse", "v1.0"]);
    assert_ne!(tag_object, commit);

    let mirrors = mirrors(&up);
    let (mirror, peeled) = mirrors
        .fetch(&spec(&up.url()), "refs/tags/v1.0", &tag_object)
        .await
        .expect("fetch");
    assert_eq!(peeled, commit);
    let ws = up.tmp.path().join("ws");
    mirrors
        .checkout(&mirror, &spec(&up.url()), &tag_object, &ws)
        .await
        .expect("checkout by tag object");
    assert_workspace_at(&up, &ws, &commit);
}

#[tokio::test]
async fn an_abbreviated_commit_id_expands_to_the_full_id() {
    let up = Upstream::new("short");
    let commit = up.push(&[("a", "a\n")], "one");
    let mirrors = mirrors(&up);
    let (_, full) = mirrors
        .fetch(&spec(&up.url()), "refs/heads/main", &commit[..12])
        .await
        .expect("fetch");
    assert_eq!(full, commit);
    let (_, full) = mirrors
        .fetch(
            &spec(&up.url()),
            "refs/heads/main",
            &commit[..12].to_uppercase(),
        )
        .await
        .expect("fetch with upper-case hex");
    assert_eq!(full, commit);
}

#[tokio::test]
async fn an_empty_commit_means_whatever_the_ref_points_to() {
    let up = Upstream::new("byref");
    let commit = up.push(&[("a", "a\n")], "one");
    up.git(&["tag", "-a", "v2", "-m", "two"]);
    up.git(&["push", "-q", "origin", "refs/tags/v2"]);
    let mirrors = mirrors(&up);
    let (_, head) = mirrors
        .fetch(&spec(&up.url()), "refs/heads/main", "")
        .await
        .expect("fetch a branch");
    assert_eq!(head, commit);
    let (_, tagged) = mirrors
        .fetch(&spec(&up.url()), "refs/tags/v2", "")
        .await
        .expect("fetch a tag");
    assert_eq!(tagged, commit);
    let err = mirrors
        .fetch(&spec(&up.url()), "refs/heads/nope", "")
        .await
        .unwrap_err();
    assert_eq!(
        err.to_string(),
        format!("{} has no ref refs/heads/nope", up.url())
    );
}

#[tokio::test]
async fn a_commit_the_remote_does_not_have_is_a_clear_error() {
    let up = Upstream::new("missing");
    up.push(&[("a", "a\n")], "one");
    let mirrors = mirrors(&up);
    let absent = "0123456789abcdef0123456789abcdef01234567";
    let err = mirrors
        .fetch(&spec(&up.url()), "refs/heads/main", absent)
        .await
        .unwrap_err();
    assert!(
        err.to_string().contains(&format!(
            "commit {absent} is not on the remote any more (force-pushed?)"
        )),
        "{err}"
    );

    let err = mirrors
        .fetch(&spec(&up.url()), "refs/heads/main", "--upload-pack=evil")
        .await
        .unwrap_err();
    assert_eq!(
        err.to_string(),
        "the commit id is not 4 to 40 hexadecimal digits"
    );
}

#[tokio::test]
async fn a_missing_repository_is_reported_as_not_found() {
    let up = Upstream::new("present");
    let url = up.tmp.path().join("repos/absent.git");
    let err = mirrors(&up)
        .fetch(&spec(url.to_str().unwrap()), "refs/heads/main", "abcdef12")
        .await
        .unwrap_err();
    assert!(
        err.to_string().starts_with("repository not found at "),
        "{err}"
    );
}

#[tokio::test]
async fn changed_files_lists_every_path_a_push_touched_with_both_sides_of_a_rename() {
    let up = Upstream::new("diff");
    let before = up.push(
        &[
            ("a.txt", "a\n"),
            ("src/lib.rs", "fn a() {}\n"),
            ("old/name.txt", "renamed soon\n"),
            ("untouched.txt", "same\n"),
        ],
        "base",
    );
    up.commit(
        &[("a.txt", "a2\n"), ("src/lib.rs", "fn b() {}\n")],
        "two files",
    );
    std::fs::create_dir_all(up.work.join("docs")).unwrap();
    up.git(&["mv", "old/name.txt", "docs/new-name.txt"]);
    let after = up.push(&[], "rename");

    let mirrors = mirrors(&up);
    let (mirror, _) = mirrors
        .fetch(&spec(&up.url()), "refs/heads/main", &after)
        .await
        .expect("fetch");
    let changed = mirrors
        .changed_files(&mirror, &before, &after)
        .await
        .expect("diff");
    assert_eq!(
        changed,
        Some(vec![
            "a.txt".to_owned(),
            "docs/new-name.txt".to_owned(),
            "old/name.txt".to_owned(),
            "src/lib.rs".to_owned(),
        ])
    );
    assert_eq!(
        mirrors.changed_files(&mirror, &after, &after).await,
        Ok(Some(vec![]))
    );
}

#[tokio::test]
async fn changed_files_is_none_for_a_new_branch_or_an_unknown_before() {
    let up = Upstream::new("newbranch");
    let commit = up.push(&[("a", "a\n")], "one");
    let mirrors = mirrors(&up);
    let (mirror, _) = mirrors
        .fetch(&spec(&up.url()), "refs/heads/main", &commit)
        .await
        .expect("fetch");
    let zeros = "0".repeat(40);
    for before in [
        zeros.as_str(),
        "",
        "1111111111111111111111111111111111111111",
        "not-hex",
    ] {
        assert_eq!(
            mirrors.changed_files(&mirror, before, &commit).await,
            Ok(None),
            "before = {before:?}"
        );
    }
}

#[tokio::test]
async fn a_ref_outside_heads_and_tags_is_fetched_when_pushed() {
    let up = Upstream::new("pulls");
    up.push(&[("a", "a\n")], "main");
    up.git(&["checkout", "-q", "-b", "feature"]);
    let pr = up.commit(&[("b", "b\n")], "pull request head");
    up.git(&["push", "-q", "origin", "HEAD:refs/pull/7/head"]);

    let mirrors = mirrors(&up);
    let (mirror, commit) = mirrors
        .fetch(&spec(&up.url()), "refs/pull/7/head", &pr)
        .await
        .expect("fetch");
    assert_eq!(commit, pr);
    assert_eq!(
        git(&up.home, &mirror, &["rev-parse", "refs/pull/7/head"]),
        pr
    );
}

#[tokio::test]
async fn a_mirror_broken_by_a_killed_fetch_is_re_created() {
    let up = Upstream::new("broken");
    let first = up.push(&[("a", "a\n")], "one");
    let mirrors = mirrors(&up);
    let (mirror, _) = mirrors
        .fetch(&spec(&up.url()), "refs/heads/main", &first)
        .await
        .expect("fetch");

    // A kill during the ref update leaves its lock file behind.
    std::fs::write(mirror.join("refs/heads/main.lock"), "").unwrap();
    let second = up.push(&[("a", "b\n")], "two");
    let (_, commit) = mirrors
        .fetch(&spec(&up.url()), "refs/heads/main", &second)
        .await
        .expect("fetch past a stale lock");
    assert_eq!(commit, second);

    // A torn write leaves garbage in the packs...
    for pack in std::fs::read_dir(mirror.join("objects/pack")).unwrap() {
        std::fs::write(pack.unwrap().path(), "torn").unwrap();
    }
    let third = up.push(&[("a", "c\n")], "three");
    let (_, commit) = mirrors
        .fetch(&spec(&up.url()), "refs/heads/main", &third)
        .await
        .expect("fetch into a mirror with torn packs");
    assert_eq!(commit, third);

    // ...or in HEAD.
    std::fs::write(mirror.join("HEAD"), "garbage").unwrap();
    let (_, commit) = mirrors
        .fetch(&spec(&up.url()), "refs/heads/main", &third)
        .await
        .expect("fetch into a mirror with a broken HEAD");
    assert_eq!(commit, third);
    git(&up.home, &mirror, &["fsck", "--no-progress"]);
    let ws = up.tmp.path().join("ws");
    mirrors
        .checkout(&mirror, &spec(&up.url()), &third, &ws)
        .await
        .expect("checkout");
    assert_workspace_at(&up, &ws, &third);
}

#[tokio::test]
async fn gitattributes_still_convert_line_endings_and_expand_ident() {
    let up = Upstream::new("attrs");
    let commit = up.push(
        &[
            ("sub/.gitattributes", "*.txt text eol=crlf\n*.c ident\n"),
            ("sub/notes.txt", "one\ntwo\n"),
            ("sub/main.c", "/* $Id$ */\n"),
            ("plain.txt", "one\ntwo\n"),
        ],
        "attributes",
    );
    let mirrors = mirrors(&up);
    let (mirror, _) = mirrors
        .fetch(&spec(&up.url()), "refs/heads/main", &commit)
        .await
        .expect("fetch");
    let ws = up.tmp.path().join("ws");
    mirrors
        .checkout(&mirror, &spec(&up.url()), &commit, &ws)
        .await
        .expect("checkout");
    assert_eq!(read(&ws.join("sub/notes.txt")), "one\r\ntwo\r\n");
    let blob = up.git(&["rev-parse", "HEAD:sub/main.c"]);
    assert_eq!(
        read(&ws.join("sub/main.c")),
        format!("/* $Id: {blob} $ */\n")
    );
    assert_eq!(read(&ws.join("plain.txt")), "one\ntwo\n");
    assert_eq!(git(&up.home, &ws, &["status", "--porcelain"]), "");
}

#[tokio::test]
async fn a_workspace_that_is_not_empty_is_refused() {
    let up = Upstream::new("busy");
    let commit = up.push(&[("a", "a\n")], "one");
    let mirrors = mirrors(&up);
    let (mirror, _) = mirrors
        .fetch(&spec(&up.url()), "refs/heads/main", &commit)
        .await
        .expect("fetch");
    let ws = up.tmp.path().join("ws");
    std::fs::create_dir_all(&ws).unwrap();
    std::fs::write(ws.join("leftover"), "x").unwrap();
    let err = mirrors
        .checkout(&mirror, &spec(&up.url()), &commit, &ws)
        .await
        .unwrap_err();
    assert!(
        err.to_string().contains("already exists and is not empty"),
        "{err}"
    );
}

#[tokio::test]
async fn submodules_are_checked_out_recursively_when_asked() {
    let inner = Upstream::new("inner");
    inner.push(&[("inner.txt", "deepest\n")], "inner");
    let lib = Upstream::new("lib");
    lib.push(&[("lib.txt", "library\n")], "lib");
    let allow_file = ["-c", "protocol.file.allow=always"];
    let inner_url = inner.url();
    lib.git(&[
        allow_file[0],
        allow_file[1],
        "submodule",
        "add",
        "-q",
        &inner_url,
        "vendor/inner",
    ]);
    lib.push(&[], "add inner");
    let up = Upstream::new("app");
    let lib_url = lib.url();
    up.git(&[
        allow_file[0],
        allow_file[1],
        "submodule",
        "add",
        "-q",
        &lib_url,
        "lib",
    ]);
    let commit = up.push(&[("app.txt", "app\n")], "add lib");

    let mirrors = mirrors(&up);
    let spec = CloneSpec {
        submodules: true,
        ..spec(&up.url())
    };
    let (mirror, _) = mirrors
        .fetch(&spec, "refs/heads/main", &commit)
        .await
        .expect("fetch");
    let ws = up.tmp.path().join("ws");
    mirrors
        .checkout(&mirror, &spec, &commit, &ws)
        .await
        .expect("checkout");
    assert_eq!(read(&ws.join("lib/lib.txt")), "library\n");
    assert_eq!(read(&ws.join("lib/vendor/inner/inner.txt")), "deepest\n");

    let plain = up.tmp.path().join("ws-plain");
    mirrors
        .checkout(&mirror, &self::spec(&up.url()), &commit, &plain)
        .await
        .expect("checkout without submodules");
    assert!(!plain.join("lib/lib.txt").exists());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_builds_of_one_repository_at_once_both_succeed_and_keep_the_mirror_sound() {
    let up = Upstream::new("concurrent");
    let files: Vec<(String, String)> = (0..200)
        .map(|i| (format!("d{}/f{i}", i % 10), format!("{i}\n").repeat(50)))
        .collect();
    let files: Vec<(&str, &str)> = files.iter().map(|(p, c)| (&**p, &**c)).collect();
    let commit = up.push(&files, "many");
    let mirrors = mirrors(&up);
    let url = up.url();

    let build = |n: u32| {
        let (mirrors, url, commit, ws) = (
            &mirrors,
            &url,
            &commit,
            up.tmp.path().join(format!("ws{n}")),
        );
        async move {
            let (mirror, full) = mirrors.fetch(&spec(url), "refs/heads/main", commit).await?;
            mirrors.checkout(&mirror, &spec(url), &full, &ws).await?;
            Ok::<_, CheckoutError>((mirror, ws))
        }
    };
    let (a, b) = tokio::join!(build(1), build(2));
    let (mirror_a, ws_a) = a.expect("first build");
    let (mirror_b, ws_b) = b.expect("second build");
    assert_eq!(mirror_a, mirror_b);
    assert_workspace_at(&up, &ws_a, &commit);
    assert_workspace_at(&up, &ws_b, &commit);
    git(&up.home, &mirror_a, &["fsck", "--no-progress", "--strict"]);
    assert_eq!(
        git(&up.home, &mirror_a, &["rev-parse", "refs/heads/main"]),
        commit
    );
}

#[test]
fn the_mirror_directory_is_named_without_credentials() {
    let mirrors = Mirrors::new("/data/repos".into());
    let with = mirrors.mirror_path("https://bob:topsecret-value@git.example.com/o/hello.git");
    let without = mirrors.mirror_path("https://git.example.com/o/hello.git");
    assert_eq!(with, without);
    let name = with.file_name().unwrap().to_str().unwrap();
    assert!(
        name.ends_with("-hello.git") && !name.contains("topsecret"),
        "{name}"
    );
    assert_ne!(
        with,
        mirrors.mirror_path("https://git.example.com/other/hello.git")
    );
}

// Over smart HTTP with a token.

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fetch_and_checkout_over_http_work_with_the_token() {
    let up = Upstream::new("web");
    let first = up.push(&[("index.html", "<h1>hi</h1>\n")], "one");
    let server = HttpGitServer::start(&up.project_root, &up.home, TOKEN).await;
    let url = server.url("web");
    let mirrors = mirrors(&up);

    let fetched = mirrors
        .fetch_with_stats(&with_token(&url, TOKEN), "refs/heads/main", &first)
        .await
        .expect("fetch over http");
    assert_eq!(fetched.commit, first);
    let ws = up.tmp.path().join("ws");
    mirrors
        .checkout(&fetched.mirror, &with_token(&url, TOKEN), &first, &ws)
        .await
        .expect("checkout");
    assert_workspace_at(&up, &ws, &first);
    assert_eq!(read(&ws.join("index.html")), "<h1>hi</h1>\n");
    assert_eq!(git(&up.home, &ws, &["remote", "get-url", "origin"]), url);

    let second = up.push(&[("index.html", "<h1>hello</h1>\n")], "two");
    let again = mirrors
        .fetch_with_stats(&with_token(&url, TOKEN), "refs/heads/main", &second)
        .await
        .expect("incremental fetch over http");
    assert_eq!(again.commit, second);
    assert_eq!(again.received_objects, 3, "{again:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wrong_or_missing_token_fails_naming_the_url_and_never_the_token() {
    let up = Upstream::new("private");
    let commit = up.push(&[("a", "a\n")], "one");
    let server = HttpGitServer::start(&up.project_root, &up.home, TOKEN).await;
    let url = server.url("private");
    let mirrors = mirrors(&up);
    let wrong = "wrong-token-9d8c7b6a5f4e";

    let wrong_token = mirrors
        .fetch(&with_token(&url, wrong), "refs/heads/main", &commit)
        .await
        .unwrap_err();
    assert_eq!(
        wrong_token.to_string(),
        format!("authentication failed for {url}: check [clone] token")
    );

    let no_token = mirrors
        .fetch(&spec(&url), "refs/heads/main", &commit)
        .await
        .unwrap_err();
    assert_eq!(
        no_token.to_string(),
        format!("{url} asks for credentials: set [clone] token")
    );

    // A password in the URL itself is refused too, and never shown.
    let in_url = url.replace("http://", &format!("http://bob:{wrong}@"));
    let url_password = mirrors
        .fetch(&with_token(&in_url, wrong), "refs/heads/main", &commit)
        .await
        .unwrap_err();
    assert_eq!(
        url_password.to_string(),
        format!("authentication failed for {url}: check [clone] token")
    );

    for err in [wrong_token, no_token, url_password] {
        assert!(
            !err.to_string().contains(wrong) && !err.to_string().contains(TOKEN),
            "{err}"
        );
        assert!(!format!("{err:?}").contains(wrong), "{err:?}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_force_pushed_commit_is_reported_as_gone_over_http() {
    let up = Upstream::new("forced");
    let first = up.push(&[("a", "a\n")], "one");
    let gone = up.push(&[("a", "b\n")], "to be force-pushed away");
    up.git(&[
        "push",
        "-q",
        "--force",
        "origin",
        &format!("{first}:refs/heads/main"),
    ]);
    let server = HttpGitServer::start(&up.project_root, &up.home, TOKEN).await;
    let url = server.url("forced");

    let err = mirrors(&up)
        .fetch(&with_token(&url, TOKEN), "refs/heads/main", &gone)
        .await
        .unwrap_err();
    assert!(
        err.to_string().starts_with(&format!(
            "commit {gone} is not on the remote any more (force-pushed?)"
        )),
        "{err}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_missing_repository_or_a_closed_port_over_http_is_explained() {
    let up = Upstream::new("exists");
    let server = HttpGitServer::start(&up.project_root, &up.home, TOKEN).await;
    let mirrors = mirrors(&up);
    let url = server.url("nope");
    let err = mirrors
        .fetch(&with_token(&url, TOKEN), "refs/heads/main", "abcdef12")
        .await
        .unwrap_err();
    assert!(
        err.to_string()
            .starts_with(&format!("repository not found at {url}")),
        "{err}"
    );

    let closed = {
        let probe = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        probe.local_addr().unwrap().port()
    };
    let url = format!("http://127.0.0.1:{closed}/x.git");
    let err = mirrors
        .fetch(&with_token(&url, TOKEN), "refs/heads/main", "abcdef12")
        .await
        .unwrap_err();
    assert!(
        err.to_string()
            .starts_with(&format!("cannot reach 127.0.0.1 for {url}")),
        "{err}"
    );
    assert!(!err.to_string().contains(TOKEN), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn submodules_over_http_get_the_token_on_the_clone_urls_origin_only() {
    let up = Upstream::new("app");
    let lib = up.sibling("lib", &[("lib.txt", "library\n")]);
    let lib_url = lib.to_str().unwrap();
    up.git(&[
        "-c",
        "protocol.file.allow=always",
        "submodule",
        "add",
        "-q",
        lib_url,
        "lib",
    ]);
    // Relative to origin: the same server, so the token goes along.
    up.git(&[
        "config",
        "-f",
        ".gitmodules",
        "submodule.lib.url",
        "../lib.git",
    ]);
    let relative = up.push(&[], "lib, relative");
    let server = HttpGitServer::start(&up.project_root, &up.home, TOKEN).await;
    let other = HttpGitServer::start(&up.project_root, &up.home, TOKEN).await;
    let url = server.url("app");
    let spec = CloneSpec {
        submodules: true,
        ..with_token(&url, TOKEN)
    };
    let mirrors = mirrors(&up);

    let (mirror, _) = mirrors
        .fetch(&spec, "refs/heads/main", &relative)
        .await
        .expect("fetch");
    let ws = up.tmp.path().join("ws-relative");
    mirrors
        .checkout(&mirror, &spec, &relative, &ws)
        .await
        .expect("checkout with a relative submodule");
    assert_eq!(read(&ws.join("lib/lib.txt")), "library\n");

    // Another port is another origin: no token for it.
    let elsewhere = other.url("lib");
    up.git(&[
        "config",
        "-f",
        ".gitmodules",
        "submodule.lib.url",
        &elsewhere,
    ]);
    let moved = up.push(&[], "lib, elsewhere");
    let (mirror, _) = mirrors
        .fetch(&spec, "refs/heads/main", &moved)
        .await
        .expect("fetch");
    let err = mirrors
        .checkout(&mirror, &spec, &moved, &up.tmp.path().join("ws-elsewhere"))
        .await
        .unwrap_err();
    assert_eq!(
        err.to_string(),
        format!(
            "{elsewhere} asks for credentials, but hookci sends [clone] token only to http://{}",
            server.addr
        )
    );
    assert_eq!(other.authorizations(), 0);
    assert!(server.authorizations() > 0);
}

// Over ssh with a deploy key.

/// Starts sshd for `up` with `key` authorized, or says why it cannot.
fn sshd_for(up: &Upstream, key: &KeyPair) -> Option<Sshd> {
    match Sshd::binary() {
        Ok(binary) => {
            let dir = up.tmp.path().join("sshd");
            std::fs::create_dir_all(&dir).unwrap();
            Some(Sshd::start(&binary, &dir, &[&key.public]))
        }
        Err(why) => {
            prereq::missing(&format!("no sshd for the ssh checkout test: {why}"));
            None
        }
    }
}

fn with_key(url: &str, key: &KeyPair) -> CloneSpec {
    CloneSpec {
        ssh_key: Some(Secret::new(key.private.clone())),
        ..spec(url)
    }
}

/// [`with_key`], pinning the server's host key on first use (the test's
/// sshd has a fresh key in no known_hosts file).
fn trusting(url: &str, key: &KeyPair) -> CloneSpec {
    CloneSpec {
        accept_new_host_keys: true,
        ..with_key(url, key)
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fetch_and_checkout_over_ssh_work_with_a_deploy_key() {
    let up = Upstream::new("deploy");
    let commit = up.push(&[("a", "over ssh\n")], "one");
    let keys = up.tmp.path().join("keys");
    std::fs::create_dir_all(&keys).unwrap();
    for kind in ["ed25519", "rsa"] {
        let key = keygen(&keys, &format!("deploy-{kind}"), kind);
        let Some(sshd) = sshd_for(&up, &key) else {
            return;
        };
        let url = sshd.url(&up.bare);
        let mirrors = Mirrors::new(up.tmp.path().join(format!("data-{kind}/repos")));
        let (mirror, full) = mirrors
            .fetch(&trusting(&url, &key), "refs/heads/main", &commit)
            .await
            .unwrap_or_else(|e| panic!("{kind} fetch over ssh: {e}\nsshd log:\n{}", sshd.log()));
        assert_eq!(full, commit);
        let ws = up.tmp.path().join(format!("ws-{kind}"));
        mirrors
            .checkout(&mirror, &with_key(&url, &key), &commit, &ws)
            .await
            .expect("checkout");
        assert_workspace_at(&up, &ws, &commit);
        assert_eq!(read(&ws.join("a")), "over ssh\n");
        assert_eq!(
            git(&up.home, &ws, &["remote", "get-url", "origin"]),
            url.replacen(&format!("{}@", sshd.user), "", 1)
        );
        drop(sshd);
        std::fs::remove_dir_all(up.tmp.path().join("sshd")).unwrap();
    }
}

/// A repository with one commit, served by a local sshd that lets `key`
/// in, and a second key pair `other` it does not know.
struct SshRepo {
    // Before `up`: sshd stops before its directory goes.
    sshd: Sshd,
    up: Upstream,
    commit: String,
    key: KeyPair,
    other: KeyPair,
    /// The ssh URL, with the user.
    url: String,
    /// The URL as hookci shows it (no user).
    shown: String,
}

/// [`SshRepo`] named `name`, or `None` (the test is skipped) without sshd.
fn ssh_repo(name: &str) -> Option<SshRepo> {
    let up = Upstream::new(name);
    let commit = up.push(&[("a", "a\n")], "one");
    let keys = up.tmp.path().join("keys");
    std::fs::create_dir_all(&keys).unwrap();
    let key = keygen(&keys, "key", "ed25519");
    let other = keygen(&keys, "other", "ed25519");
    let sshd = sshd_for(&up, &key)?;
    let url = sshd.url(&up.bare);
    let shown = url.replacen(&format!("{}@", sshd.user), "", 1);
    Some(SshRepo {
        sshd,
        up,
        commit,
        key,
        other,
        url,
        shown,
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wrong_deploy_key_over_ssh_fails_clearly() {
    let Some(SshRepo {
        sshd: _running,
        up,
        commit,
        other: wrong,
        url,
        shown,
        ..
    }) = ssh_repo("locked")
    else {
        return;
    };
    let mirrors = mirrors(&up);

    let err = mirrors
        .fetch(&trusting(&url, &wrong), "refs/heads/main", &commit)
        .await
        .unwrap_err();
    assert_eq!(
        err.to_string(),
        format!("authentication failed for {shown}: check [clone] ssh_key")
    );
    let body: Vec<&str> = wrong
        .private
        .lines()
        .filter(|l| !l.starts_with("-----"))
        .collect();
    assert!(
        body.iter().all(|line| !err.to_string().contains(line)),
        "{err}"
    );

    let err = mirrors
        .fetch(&spec(&url), "refs/heads/main", &commit)
        .await
        .unwrap_err();
    assert_eq!(
        err.to_string(),
        format!("{shown} asks for credentials: set [clone] ssh_key")
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ssh_host_keys_are_checked_against_known_hosts() {
    let Some(SshRepo {
        sshd,
        up,
        commit,
        key: deploy,
        other: imposter,
        url,
        shown,
    }) = ssh_repo("pinned")
    else {
        return;
    };
    let host_key = read(&up.tmp.path().join("sshd/ssh_host_ed25519_key.pub"));
    // `[host]:port key-type base64`, as ssh-keyscan writes it.
    let line = |public: &str| {
        let key: Vec<&str> = public.split_whitespace().take(2).collect();
        format!("[127.0.0.1]:{} {}\n", sshd.port, key.join(" "))
    };
    let with_known = |name: &str, text: &str| {
        let file = up.tmp.path().join(name);
        std::fs::write(&file, text).unwrap();
        let mut mirrors = Mirrors::new(up.tmp.path().join(format!("data-{name}")));
        mirrors.set_known_hosts(vec![file.clone()]);
        (mirrors, file)
    };

    // The server's own key listed: the fetch goes through.
    let (mirrors, _) = with_known("known-right", &line(&host_key));
    let (_, full) = mirrors
        .fetch(&with_key(&url, &deploy), "refs/heads/main", &commit)
        .await
        .unwrap_or_else(|e| panic!("fetch with the right host key: {e}\n{}", sshd.log()));
    assert_eq!(full, commit);

    // Another key listed for this host and port: a man in the middle, or a
    // re-keyed server; refused before any credential is sent.
    let (mirrors, file) = with_known(
        "known-wrong",
        &format!("# pinned\n{}", line(&imposter.public)),
    );
    let err = mirrors
        .fetch(&with_key(&url, &deploy), "refs/heads/main", &commit)
        .await
        .unwrap_err();
    assert_eq!(
        err.to_string(),
        format!(
            "the ssh host key of 127.0.0.1 is not the one listed in {}:2: refusing to fetch {shown} \
             (if the server's key really changed, update known_hosts)",
            file.display()
        )
    );
    let accepted = sshd
        .log()
        .lines()
        .filter(|l| l.contains("Accepted publickey"))
        .count();
    assert_eq!(
        accepted,
        1,
        "only the first fetch logged in: {}",
        sshd.log()
    );

    // Listed for another port only: not this server's entry; accepted.
    let other_port = format!(
        "[127.0.0.1]:1 {}",
        line(&imposter.public).split_once(' ').unwrap().1
    );
    // Listed for another port only: this server is in no known_hosts
    // file, and is refused with a sentence saying how to add its key.
    let (mirrors, _) = with_known("known-other-port", &other_port);
    let own = up.tmp.path().join("known_hosts");
    let err = mirrors
        .fetch(&with_key(&url, &deploy), "refs/heads/main", &commit)
        .await
        .unwrap_err();
    assert_eq!(
        err.to_string(),
        format!(
            "the ssh host key of 127.0.0.1 is in no known_hosts file: refusing to fetch {shown}; \
             add the key with `ssh-keyscan -p {} 127.0.0.1 >> {}` after checking it, or set \
             accept_new_host_keys = true in [clone] to pin it on first use",
            sshd.port,
            own.display()
        )
    );
    assert!(!own.exists());

    // accept_new_host_keys: the key is pinned on first use into hookci's
    // own known_hosts (beside the mirrors), then checked like any other.
    let accept = CloneSpec {
        accept_new_host_keys: true,
        ..with_key(&url, &deploy)
    };
    mirrors
        .fetch(&accept, "refs/heads/main", &commit)
        .await
        .unwrap_or_else(|e| panic!("pinned on first use: {e}"));
    let pinned = read(&own);
    assert_eq!(pinned, line(&host_key), "{pinned}");
    use std::os::unix::fs::PermissionsExt;
    assert_eq!(
        std::fs::metadata(&own).unwrap().permissions().mode() & 0o777,
        0o600
    );
    mirrors
        .fetch(&with_key(&url, &deploy), "refs/heads/main", &commit)
        .await
        .expect("the pinned key is known now");
}

// Speed (the 250 ms and 50 ms budgets) is measured by `cargo bench --bench
// checkout`, not here: a loaded machine must make a slow run, not a failure.

// The workspace pool: a parked workspace is updated, not rewritten.

/// Waits until no parked workspace of `mirror` is being cleaned; returns
/// how many are clean.
async fn settled(mirrors: &Mirrors, mirror: &Path) -> usize {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    loop {
        let (ready, cleaning) = mirrors.parked(mirror);
        if cleaning == 0 {
            return ready;
        }
        assert!(std::time::Instant::now() < deadline, "still cleaning");
        tokio::time::sleep(std::time::Duration::from_millis(5)).await;
    }
}

/// Every path under `root` but `.git` (directories end in `/`), with the
/// contents of files and the targets of links.
fn tree_of(root: &Path) -> std::collections::BTreeMap<String, Vec<u8>> {
    let mut out = std::collections::BTreeMap::new();
    let mut stack = vec![root.to_path_buf()];
    while let Some(dir) = stack.pop() {
        for entry in std::fs::read_dir(&dir).expect("read_dir") {
            let path = entry.expect("entry").path();
            let rel = path
                .strip_prefix(root)
                .unwrap()
                .to_string_lossy()
                .into_owned();
            if rel == ".git" {
                continue;
            }
            let meta = std::fs::symlink_metadata(&path).unwrap();
            if meta.is_dir() {
                out.insert(format!("{rel}/"), Vec::new());
                stack.push(path);
            } else if meta.file_type().is_symlink() {
                let target = std::fs::read_link(&path).unwrap();
                out.insert(rel, target.to_string_lossy().as_bytes().to_vec());
            } else {
                let mode = std::os::unix::fs::PermissionsExt::mode(&meta.permissions());
                let mut bytes = std::fs::read(&path).unwrap();
                bytes.extend(format!("\0mode {:o}", mode & 0o111).bytes());
                out.insert(rel, bytes);
            }
        }
    }
    out
}

/// `.git` of a workspace as [`tree_of`] sees it, without the index and the
/// reflogs (timestamps).
fn git_dir_of(ws: &Path) -> std::collections::BTreeMap<String, Vec<u8>> {
    let mut tree = tree_of(&ws.join(".git"));
    tree.retain(|path, _| path != "index" && !path.starts_with("logs/"));
    tree
}

fn inode_and_mtime(path: &Path) -> (u64, std::time::SystemTime) {
    use std::os::unix::fs::MetadataExt;
    let meta = std::fs::metadata(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    (meta.ino(), meta.modified().unwrap())
}

/// 100 files in a few directories, plus `.gitignore` (target/).
fn hundred_files(up: &Upstream) -> String {
    let files: Vec<(String, String)> = (0..100)
        .map(|i| {
            (
                format!("d{}/f{i}.txt", i % 5),
                format!("file {i}\n").repeat(10),
            )
        })
        .chain([(".gitignore".to_owned(), "target/\n".to_owned())])
        .collect();
    let files: Vec<(&str, &str)> = files.iter().map(|(p, c)| (&**p, &**c)).collect();
    up.push(&files, "a")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_parked_workspace_becomes_the_next_commit_rewriting_only_what_changed() {
    let up = Upstream::new("pooled");
    hundred_files(&up);
    let a = up.push(&[("solo/only.txt", "1\n"), ("swap", "a file\n")], "a");
    std::fs::remove_file(up.work.join("d0/f20.txt")).unwrap();
    // A directory goes away; a file becomes a directory.
    std::fs::remove_dir_all(up.work.join("solo")).unwrap();
    std::fs::remove_file(up.work.join("swap")).unwrap();
    let b = up.push(
        &[
            ("d0/f10.txt", "changed\n"),
            ("d4/new.txt", "new\n"),
            ("swap/inner.txt", "a dir\n"),
        ],
        "b",
    );
    let mirrors = mirrors(&up);
    let url = up.url();
    let (mirror, _) = mirrors
        .fetch(&spec(&url), "refs/heads/main", &b)
        .await
        .unwrap();

    let first = up.tmp.path().join("builds/1/src");
    mirrors
        .checkout(&mirror, &spec(&url), &a, &first)
        .await
        .unwrap();
    assert_workspace_at(&up, &first, &a);
    let unchanged = inode_and_mtime(&first.join("d3/f33.txt"));
    assert!(mirrors.park(&first), "parked");
    assert!(!first.exists(), "the workspace moved into the pool");
    assert_eq!(settled(&mirrors, &mirror).await, 1);

    let second = up.tmp.path().join("builds/2/src");
    mirrors
        .checkout(&mirror, &spec(&url), &b, &second)
        .await
        .unwrap();
    assert_eq!(mirrors.parked(&mirror), (0, 0), "taken from the pool");
    assert_workspace_at(&up, &second, &b);
    assert_eq!(
        inode_and_mtime(&second.join("d3/f33.txt")),
        unchanged,
        "an unchanged file was rewritten"
    );
    assert_eq!(read(&second.join("d0/f10.txt")), "changed\n");
    assert!(!second.join("d0/f20.txt").exists());
    assert!(!second.join("solo").exists());
    assert_eq!(read(&second.join("swap/inner.txt")), "a dir\n");

    // Exactly what a fresh checkout of B is, .git included.
    let fresh = up.tmp.path().join("fresh");
    mirrors
        .checkout(&mirror, &spec(&url), &b, &fresh)
        .await
        .unwrap();
    assert_eq!(tree_of(&second), tree_of(&fresh));
    for file in ["config", "HEAD", "objects/info/alternates"] {
        assert_eq!(
            read(&second.join(".git").join(file)),
            read(&fresh.join(".git").join(file)),
            ".git/{file}"
        );
    }
    assert_eq!(git(&up.home, &second, &["for-each-ref"]), "");
    assert_eq!(
        git(&up.home, &second, &["remote", "get-url", "origin"]),
        url
    );
    git(&up.home, &second, &["fsck", "--no-progress"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nothing_a_previous_build_did_to_a_parked_workspace_survives() {
    let up = Upstream::new("dirty");
    let a = hundred_files(&up);
    let b = up.push(&[("d1/f1.txt", "b\n")], "b");
    let mirrors = mirrors(&up);
    let url = up.url();
    let (mirror, _) = mirrors
        .fetch(&spec(&url), "refs/heads/main", &b)
        .await
        .unwrap();

    for (round, target) in [&a, &b].into_iter().enumerate() {
        let ws = up.tmp.path().join(format!("builds/{round}/src"));
        mirrors
            .checkout(&mirror, &spec(&url), &a, &ws)
            .await
            .unwrap();
        let pristine = tree_of(&ws);
        // What a build's steps may leave behind.
        std::fs::write(ws.join("untracked.txt"), "u\n").unwrap();
        std::fs::create_dir_all(ws.join("target")).unwrap();
        std::fs::write(ws.join("target/x"), "ignored\n").unwrap();
        std::fs::create_dir_all(ws.join("new-dir/deeper")).unwrap();
        std::fs::write(ws.join("new-dir/deeper/y"), "y\n").unwrap();
        std::fs::create_dir_all(ws.join("empty/nested")).unwrap();
        std::fs::create_dir_all(ws.join("d1/empty-in-tracked")).unwrap();
        std::os::unix::fs::symlink("/etc", ws.join("link")).unwrap();
        std::fs::write(ws.join("d2/f2.txt"), "modified\n").unwrap();
        std::fs::remove_file(ws.join("d3/f3.txt")).unwrap();
        // Same size, mtime put back: only the ctime tells.
        let sneaky = ws.join("d4/f4.txt");
        let mtime = std::fs::metadata(&sneaky).unwrap().modified().unwrap();
        let same_size = read(&sneaky).replace("file 4", "FILE 4");
        std::fs::write(&sneaky, same_size).unwrap();
        std::fs::File::options()
            .write(true)
            .open(&sneaky)
            .unwrap()
            .set_modified(mtime)
            .unwrap();
        // Hidden from git's own eyes through the index.
        std::fs::write(ws.join("d0/f5.txt"), "assumed\n").unwrap();
        git(
            &up.home,
            &ws,
            &["update-index", "--assume-unchanged", "d0/f5.txt"],
        );
        let hooks = ws.join(".git/hooks");
        std::fs::create_dir_all(&hooks).unwrap();
        let marker = up.tmp.path().join(format!("hook-ran-{round}"));
        std::fs::write(
            hooks.join("post-checkout"),
            format!("#!/bin/sh\ntouch {}\n", marker.display()),
        )
        .unwrap();
        std::os::unix::fs::PermissionsExt::set_mode(
            &mut std::fs::metadata(hooks.join("post-checkout"))
                .unwrap()
                .permissions(),
            0o755,
        );
        git(
            &up.home,
            &ws,
            &["config", "core.fsmonitor", "touch /tmp/pwned"],
        );
        git(&up.home, &ws, &["config", "core.worktree", "/tmp"]);
        git(&up.home, &ws, &["update-ref", "refs/heads/evil", &a]);
        std::fs::create_dir_all(ws.join(".git/info")).unwrap();
        std::fs::write(ws.join(".git/info/exclude"), "untracked.txt\n").unwrap();
        std::fs::write(ws.join(".git/info/attributes"), "* eol=crlf\n").unwrap();
        assert!(mirrors.park(&ws));
        assert_eq!(settled(&mirrors, &mirror).await, 1);

        let next = up.tmp.path().join(format!("builds/{round}-next/src"));
        mirrors
            .checkout(&mirror, &spec(&url), target, &next)
            .await
            .unwrap();
        assert_eq!(mirrors.parked(&mirror), (0, 0), "taken from the pool");
        let fresh = up.tmp.path().join(format!("fresh-{round}"));
        mirrors
            .checkout(&mirror, &spec(&url), target, &fresh)
            .await
            .unwrap();
        if target == &a {
            assert_eq!(tree_of(&next), pristine);
        }
        assert_eq!(tree_of(&next), tree_of(&fresh), "round {round}");
        assert_eq!(
            read(&next.join(".git/config")),
            read(&fresh.join(".git/config"))
        );
        assert_eq!(git_dir_of(&next), git_dir_of(&fresh), "round {round}");
        assert!(!next.join(".git/hooks/post-checkout").exists());
        assert!(!read(&next.join(".git/config")).contains("fsmonitor"));
        assert!(!next.join(".git/info/attributes").exists());
        assert_eq!(git(&up.home, &next, &["for-each-ref"]), "");
        assert_eq!(
            git(&up.home, &next, &["ls-files", "-v", "d0/f5.txt"]),
            "H d0/f5.txt"
        );
        assert_eq!(
            git(
                &up.home,
                &next,
                &[
                    "status",
                    "--porcelain",
                    "--ignored",
                    "--untracked-files=all"
                ]
            ),
            ""
        );
        assert_workspace_at(&up, &next, target);
        assert!(!marker.exists(), "a hook ran");
        mirrors.forget(&next);
        mirrors.forget(&fresh);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_checkouts_never_share_a_parked_workspace() {
    use std::os::unix::fs::MetadataExt;
    let up = Upstream::new("shared");
    let a = hundred_files(&up);
    let mirrors = mirrors(&up);
    let url = up.url();
    let (mirror, _) = mirrors
        .fetch(&spec(&url), "refs/heads/main", &a)
        .await
        .unwrap();

    let mut n = 0;
    let mut next = |_: ()| {
        n += 1;
        up.tmp.path().join(format!("builds/{n}/src"))
    };
    for parked in [0, 1, 2, 1] {
        // Checked out first, then parked: a checkout would take (wait for)
        // one just parked.
        let mut to_park = Vec::new();
        for _ in 0..parked {
            let ws = next(());
            mirrors
                .checkout(&mirror, &spec(&url), &a, &ws)
                .await
                .unwrap();
            to_park.push(ws);
        }
        for ws in &to_park {
            assert!(mirrors.park(ws));
        }
        assert_eq!(settled(&mirrors, &mirror).await, parked.min(2));
        let (x, y, z) = (next(()), next(()), next(()));
        let s = spec(&url);
        let (rx, ry, rz) = tokio::join!(
            mirrors.checkout(&mirror, &s, &a, &x),
            mirrors.checkout(&mirror, &s, &a, &y),
            mirrors.checkout(&mirror, &s, &a, &z),
        );
        rx.unwrap();
        ry.unwrap();
        rz.unwrap();
        assert_eq!(mirrors.parked(&mirror), (0, 0));
        let inodes: std::collections::BTreeSet<u64> = [&x, &y, &z]
            .iter()
            .map(|ws| std::fs::metadata(ws.join("d1/f1.txt")).unwrap().ino())
            .collect();
        assert_eq!(inodes.len(), 3, "two checkouts got the same workspace");
        for ws in [&x, &y, &z] {
            assert_workspace_at(&up, ws, &a);
            std::fs::write(ws.join("mine"), ws.to_string_lossy().as_bytes()).unwrap();
        }
        for ws in [&x, &y, &z] {
            assert_eq!(read(&ws.join("mine")), ws.to_string_lossy());
            // Back to the pool, at most two kept; the third is the caller's.
            if !mirrors.park(ws) {
                std::fs::remove_dir_all(ws).unwrap();
            }
        }
        assert_eq!(settled(&mirrors, &mirror).await, 2);
        // Empty the pool for the next round.
        for _ in 0..2 {
            let ws = next(());
            mirrors
                .checkout(&mirror, &spec(&url), &a, &ws)
                .await
                .unwrap();
            assert!(!ws.join("mine").exists());
            mirrors.forget(&ws);
        }
        assert_eq!(mirrors.parked(&mirror), (0, 0));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_pool_belongs_to_one_process_and_starts_empty() {
    let up = Upstream::new("restart");
    let a = hundred_files(&up);
    let url = up.url();
    // What a killed daemon left.
    let stale = up.tmp.path().join("data/workspace-pool/x/0");
    std::fs::create_dir_all(&stale).unwrap();
    std::fs::write(stale.join("half-cleaned"), "").unwrap();

    let daemon = mirrors(&up);
    let (mirror, _) = daemon
        .fetch(&spec(&url), "refs/heads/main", &a)
        .await
        .unwrap();
    let ws = up.tmp.path().join("builds/1/src");
    daemon
        .checkout(&mirror, &spec(&url), &a, &ws)
        .await
        .unwrap();
    assert!(daemon.park(&ws));
    assert!(!stale.exists(), "a stale parked workspace was kept");
    assert_eq!(settled(&daemon, &mirror).await, 1);

    // A second process over the same data dir does not pool.
    let other = mirrors(&up);
    let ws = up.tmp.path().join("builds/2/src");
    other.checkout(&mirror, &spec(&url), &a, &ws).await.unwrap();
    assert!(!other.park(&ws));
    assert_eq!(daemon.parked(&mirror), (1, 0));
    // A workspace Mirrors did not make is not parked.
    assert!(!daemon.park(&up.work));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_checkout_waits_for_a_workspace_being_cleaned_rather_than_taking_it() {
    let up = Upstream::new("waits");
    let a = hundred_files(&up);
    let mirrors = mirrors(&up);
    let url = up.url();
    let (mirror, _) = mirrors
        .fetch(&spec(&url), "refs/heads/main", &a)
        .await
        .unwrap();
    for round in 0..5 {
        let ws = up.tmp.path().join(format!("builds/{round}/src"));
        mirrors
            .checkout(&mirror, &spec(&url), &a, &ws)
            .await
            .unwrap();
        let kept = inode_and_mtime(&ws.join("d1/f1.txt"));
        std::fs::write(ws.join("d1/f1.txt"), "dirty\n").unwrap();
        std::fs::write(ws.join("untracked"), "u\n").unwrap();
        let unchanged = inode_and_mtime(&ws.join("d2/f2.txt"));
        assert!(mirrors.park(&ws));
        // At once: the workspace is still being cleaned.
        let next = up.tmp.path().join(format!("builds/{round}-next/src"));
        mirrors
            .checkout(&mirror, &spec(&url), &a, &next)
            .await
            .unwrap();
        assert_eq!(mirrors.parked(&mirror), (0, 0), "round {round}");
        assert_eq!(inode_and_mtime(&next.join("d2/f2.txt")), unchanged);
        assert_ne!(inode_and_mtime(&next.join("d1/f1.txt")), kept);
        assert_workspace_at(&up, &next, &a);
        assert!(!next.join("untracked").exists());
        mirrors.forget(&next);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn changed_permissions_are_put_back_or_the_workspace_is_not_reused() {
    use std::os::unix::fs::PermissionsExt;
    let up = Upstream::new("modes");
    let a = hundred_files(&up);
    let mirrors = mirrors(&up);
    let url = up.url();
    let (mirror, _) = mirrors
        .fetch(&spec(&url), "refs/heads/main", &a)
        .await
        .unwrap();
    let mode = |path: &Path| std::fs::metadata(path).unwrap().permissions().mode() & 0o777;
    let fresh = up.tmp.path().join("fresh");
    mirrors
        .checkout(&mirror, &spec(&url), &a, &fresh)
        .await
        .unwrap();
    let normal = mode(&fresh.join("d1/f1.txt"));

    // The exec bit is git's: the file is rewritten with the commit's mode.
    let ws = up.tmp.path().join("builds/1/src");
    mirrors
        .checkout(&mirror, &spec(&url), &a, &ws)
        .await
        .unwrap();
    std::fs::set_permissions(ws.join("d1/f1.txt"), std::fs::Permissions::from_mode(0o755)).unwrap();
    assert!(mirrors.park(&ws));
    assert_eq!(settled(&mirrors, &mirror).await, 1);
    let next = up.tmp.path().join("builds/2/src");
    mirrors
        .checkout(&mirror, &spec(&url), &a, &next)
        .await
        .unwrap();
    assert_eq!(mirrors.parked(&mirror), (0, 0), "taken from the pool");
    assert_eq!(mode(&next.join("d1/f1.txt")), normal);
    assert_eq!(tree_of(&next), tree_of(&fresh));

    // Other permission bits git does not see: the workspace is deleted.
    std::fs::set_permissions(
        next.join("d2/f2.txt"),
        std::fs::Permissions::from_mode(0o600),
    )
    .unwrap();
    assert!(mirrors.park(&next));
    assert_eq!(settled(&mirrors, &mirror).await, 0);
    let pool = up.tmp.path().join("data/workspace-pool");
    let pool = pool.join(mirror.file_name().unwrap());
    // Deleted just after it leaves the pool.
    for _ in 0..1000 {
        if std::fs::read_dir(&pool).unwrap().next().is_none() {
            return;
        }
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
    panic!("the unusable workspace was not deleted");
}
