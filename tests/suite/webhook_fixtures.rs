//! Every recorded payload under `tests/fixtures/webhooks`, parsed, against
//! values read by eye from the JSON files.

use axum::http::{HeaderMap, HeaderName, HeaderValue};
use hookci::webhook::{self, Host, ParsedKind, PushEvent, RefKind};
use sha2::{Digest, Sha256};
use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

const DIR: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/webhooks");

const CREATE_REASON: &str = "create event builds nothing; the push event for this ref does";

/// What one fixture must parse into.
enum Expect {
    Push(Want),
    Pull(PullWant),
    Closed {
        repo: &'static str,
        git_ref: &'static str,
        number: u64,
        merged: bool,
    },
    Ping(Option<&'static str>),
    Ignored(Option<&'static str>, &'static str),
}

/// One expected ref update. Optional fields are checked only where set.
#[derive(Clone)]
struct Want {
    repo: &'static str,
    git_ref: &'static str,
    kind: RefKind,
    commit: &'static str,
    created: bool,
    deleted: bool,
    forced: bool,
    message: Option<&'static str>,
    pusher: Option<&'static str>,
    clone_url: Option<&'static str>,
}

impl Want {
    fn created(mut self) -> Self {
        self.created = true;
        self
    }
    fn deleted(mut self) -> Self {
        self.deleted = true;
        self
    }
    fn forced(mut self) -> Self {
        self.forced = true;
        self
    }
    fn message(mut self, m: &'static str) -> Self {
        self.message = Some(m);
        self
    }
    fn pusher(mut self, p: &'static str) -> Self {
        self.pusher = Some(p);
        self
    }
    fn clone_url(mut self, u: &'static str) -> Self {
        self.clone_url = Some(u);
        self
    }
}

/// One expected pull request (or merge request) that builds.
struct PullWant {
    repo: &'static str,
    git_ref: &'static str,
    /// Empty for Gogs, whose payload has no commit id.
    commit: &'static str,
    number: u64,
    base_branch: &'static str,
    head_branch: &'static str,
    head_repo: &'static str,
    fork: bool,
    author: &'static str,
    trusted: bool,
}

fn pull(file: &'static str, host: Host, event: &'static str, w: PullWant) -> Row {
    Row {
        file,
        host,
        event,
        expect: Expect::Pull(w),
    }
}

fn closed(
    file: &'static str,
    host: Host,
    event: &'static str,
    repo: &'static str,
    git_ref: &'static str,
    number: u64,
    merged: bool,
) -> Row {
    Row {
        file,
        host,
        event,
        expect: Expect::Closed {
            repo,
            git_ref,
            number,
            merged,
        },
    }
}

/// An event that builds nothing, from a payload that names no repository
/// where hookci looks for one.
fn ignored_norepo(
    file: &'static str,
    host: Host,
    event: &'static str,
    reason: &'static str,
) -> Row {
    Row {
        file,
        host,
        event,
        expect: Expect::Ignored(None, reason),
    }
}

struct Row {
    file: &'static str,
    host: Host,
    event: &'static str,
    expect: Expect,
}

fn branch(name: &str) -> RefKind {
    RefKind::Branch(name.to_owned())
}

fn tag(name: &str) -> RefKind {
    RefKind::Tag(name.to_owned())
}

fn want(repo: &'static str, git_ref: &'static str, kind: RefKind, commit: &'static str) -> Want {
    Want {
        repo,
        git_ref,
        kind,
        commit,
        created: false,
        deleted: false,
        forced: false,
        message: None,
        pusher: None,
        clone_url: None,
    }
}

fn push(file: &'static str, host: Host, event: &'static str, w: Want) -> Row {
    Row {
        file,
        host,
        event,
        expect: Expect::Push(w),
    }
}

fn ping(file: &'static str, host: Host, event: &'static str, repo: Option<&'static str>) -> Row {
    Row {
        file,
        host,
        event,
        expect: Expect::Ping(repo),
    }
}

fn ignored(
    file: &'static str,
    host: Host,
    event: &'static str,
    repo: &'static str,
    reason: &'static str,
) -> Row {
    Row {
        file,
        host,
        event,
        expect: Expect::Ignored(Some(repo), reason),
    }
}

/// The headers each host sends to name the event, including the other
/// hosts' headers that Gitea and Forgejo send too, so detection is tested.
fn headers_for(host: Host, event: &str) -> HeaderMap {
    let mut pairs: Vec<(&str, &str)> = match host {
        Host::Github => vec![("X-GitHub-Event", event)],
        Host::Gitlab => vec![("X-Gitlab-Event", event)],
        Host::Gitea => vec![
            ("X-Gitea-Event", event),
            ("X-Gogs-Event", event),
            ("X-GitHub-Event", event),
        ],
        Host::Forgejo => vec![
            ("X-Forgejo-Event", event),
            ("X-Gitea-Event", event),
            ("X-Gogs-Event", event),
            ("X-GitHub-Event", event),
        ],
        Host::Gogs => vec![("X-Gogs-Event", event)],
        Host::Bitbucket => vec![("X-Event-Key", event), ("X-Request-UUID", "{uuid}")],
        Host::BitbucketServer => vec![("X-Event-Key", event), ("X-Request-Id", "id")],
        Host::Generic => vec![("webhook-id", "msg_1"), ("webhook-signature", "v1,x")],
    };
    let mut headers = HeaderMap::new();
    for (name, value) in pairs.drain(..) {
        headers.insert(
            HeaderName::from_bytes(name.as_bytes()).unwrap(),
            HeaderValue::from_str(value).unwrap(),
        );
    }
    headers
}

fn rows() -> Vec<Row> {
    use Host::*;
    let codertocat = "Codertocat/Hello-World";
    let codertocat_clone = "https://github.com/Codertocat/Hello-World.git";
    let simple_tag_deleted = want(codertocat, "refs/tags/simple-tag", tag("simple-tag"), "")
        .deleted()
        .message("")
        .pusher("Codertocat")
        .clone_url(codertocat_clone);
    let new_master = want(
        codertocat,
        "refs/heads/master",
        branch("master"),
        "6113728f27ae82c7b1a177c8d03f9e96e0adf246",
    )
    .created()
    .message("Initial commit")
    .pusher("Codertocat")
    .clone_url(codertocat_clone);
    let drone_test = "bradrydzewski/drone-test-go";
    let drone_clone = "https://github.com/bradrydzewski/drone-test-go.git";

    let diaspora = "mike/diaspora";
    let hello = "gitlab-org/hello-world";
    let hello_clone = "https://gitlab.com/gitlab-org/hello-world.git";
    let subgroup = "group1/group2/group3/grp2repo";

    let gitea_push_branch = want(
        "meisam/woodpecktester",
        "refs/heads/fdsafdsa",
        branch("fdsafdsa"),
        "28c3613ae62640216bea5e7dc71aa65356e4298b",
    )
    .created()
    .message("Delete '.woodpecker/.check.yml'\n")
    .pusher("6543")
    .clone_url("https://codeberg.org/meisam/woodpecktester.git");
    let gitea_push_multi = want(
        "Test-CI/multi-line-secrets",
        "refs/heads/main",
        branch("main"),
        "29be01c073851cf0db0c6a466e396b725a670453",
    )
    .message("add some text\n")
    .pusher("test-user")
    .clone_url("http://127.0.0.1:3000/Test-CI/multi-line-secrets.git");

    let brydzewski = "brydzewski/foo";
    let brydzewski_clone = "https://bitbucket.org/brydzewski/foo.git";
    let bb_commit = "141977fedf5cf35aa290ac87d4b5177ac4cd9de1";

    let prj = "PRJ/my-repo";

    vec![
        // GitHub pushes.
        push("github/octokit__push__tag-deleted.json", Github, "push", simple_tag_deleted.clone()),
        push("github/octokit__push__tag-deleted-1.json", Github, "push", simple_tag_deleted.clone()),
        push("github/octokit__push__with-installation.json", Github, "push", simple_tag_deleted.clone()),
        push("github/octokit__push__with-organization.json", Github, "push", simple_tag_deleted),
        push("github/octokit__push__with-new-branch.json", Github, "push", new_master.clone()),
        push("github/octokit__push__with-no-username-committer.json", Github, "push", new_master),
        push(
            "github/goscm__push.json",
            Github,
            "push",
            want(codertocat, "refs/heads/master", branch("master"), "199eddf46df50de8d02e99bf1c5fdb4101338224")
                .message("Update README")
                .pusher("Codertocat")
                .clone_url(codertocat_clone),
        ),
        push(
            "github/goscm__push_branch_create.json",
            Github,
            "push",
            want(drone_test, "refs/heads/feature-branch", branch("feature-branch"), "d2b75aa7797ec26b088fa2dd527e9d2c052fcedd")
                .created()
                .message("Update .drone.yml")
                .pusher("bradrydzewski")
                .clone_url(drone_clone),
        ),
        push(
            "github/goscm__push_branch_delete.json",
            Github,
            "push",
            want(drone_test, "refs/heads/feature-branch", branch("feature-branch"), "")
                .deleted()
                .message("")
                .pusher("bradrydzewski"),
        ),
        push(
            "github/goscm__push_tag.json",
            Github,
            "push",
            want(drone_test, "refs/tags/v0.0.1", tag("v0.0.1"), "d2b75aa7797ec26b088fa2dd527e9d2c052fcedd")
                .created()
                .message("Update .drone.yml")
                .pusher("bradrydzewski"),
        ),
        push(
            "github/goscm__push_tag_delete.json",
            Github,
            "push",
            want(drone_test, "refs/tags/v0.0.1", tag("v0.0.1"), "").deleted(),
        ),
        push(
            "github/goplayground__push.json",
            Github,
            "push",
            want("binkkatal/sample_app", "refs/heads/master", branch("master"), "fd489864e7642b48eaad6e3f155c10e46810ec72")
                .message("test a push event")
                .pusher("binkkatal")
                .clone_url("https://github.com/binkkatal/sample_app.git"),
        ),
        push(
            "github/woodpecker__push.json",
            Github,
            "push",
            want("woodpecker-ci/woodpecker", "refs/heads/main", branch("main"), "366701fde727cb7a9e7f21eb88264f59f6f9b89c")
                .message("Fix multiline secrets replacer (#700)\n\n* Fix multiline secrets replacer\r\n\r\n* Add tests")
                .pusher("6543")
                .clone_url("https://github.com/woodpecker-ci/woodpecker.git"),
        ),
        push(
            "github/woodpecker__push_forced.json",
            Github,
            "push",
            want("6543/oxiduct", "refs/heads/main", branch("main"), "f7220f1f753260bf6f1c533357c70213e9fd4abe")
                .forced()
                .message("feat: initial implementation\n\nTCP/UDP proxy skeleton with layered dead-connection detection.\n\nCo-authored-by: Claude <noreply@anthropic.com>")
                .pusher("6543")
                .clone_url("https://github.com/6543/oxiduct.git"),
        ),
        push(
            "github/woodpecker__push_tag.json",
            Github,
            "push",
            want("6543/test_ci_tmp", "refs/tags/the-tag-v1", tag("the-tag-v1"), "67012991d6c69b1c58378346fca366b864d8d1a1")
                .created()
                .message("Update .woodpecker.yml")
                .pusher("6543"),
        ),
        // GitHub pings and companion events.
        ping("github/goplayground__ping.json", Github, "ping", None),
        ping("github/octokit__ping.json", Github, "ping", Some("Octocoders/Hello-World")),
        ping("github/octokit__ping__with-app_id.json", Github, "ping", Some("Octocoders/Hello-World")),
        ping("github/octokit__ping__with-organization.json", Github, "ping", None),
        ignored("github/goscm__create_branch.json", Github, "create", drone_test, "github event create builds nothing"),
        ignored("github/goscm__delete_branch.json", Github, "delete", drone_test, "github event delete builds nothing"),
        // GitLab.
        push(
            "gitlab/goplayground__push-event.json",
            Gitlab,
            "Push Hook",
            want(diaspora, "refs/heads/master", branch("master"), "da1560886d4f094c3e6c9ef40349f7d38b5d27d7")
                .message("fixed readme")
                .pusher("John Smith")
                .clone_url("http://example.com/mike/diaspora.git"),
        ),
        push(
            "gitlab/goplayground__tag-event.json",
            Gitlab,
            "Tag Push Hook",
            want("jsmith/example", "refs/tags/v1.0.0", tag("v1.0.0"), "82b3d5ae55f7080f1e6022629cdb57bfae7cccc7")
                .created()
                .message("")
                .pusher("John Smith")
                .clone_url("http://example.com/jsmith/example.git"),
        ),
        push(
            "gitlab/goplayground__system-push-event.json",
            Gitlab,
            "System Hook",
            // The listed commit is not `after`: the last listed one's message is used.
            want(diaspora, "refs/heads/master", branch("master"), "da1560886d4f094c3e6c9ef40349f7d38b5d27d7")
                .message("Add simple search to projects in public area")
                .pusher("John Smith"),
        ),
        push(
            "gitlab/goplayground__system-tag-event.json",
            Gitlab,
            "System Hook",
            // An annotated tag: after is the tag object, checkout_sha the commit.
            want("jsmith/example", "refs/tags/v1.0.0", tag("v1.0.0"), "5937ac0a7beb003549fc5fd26fc247adbce4a52e")
                .created()
                .message(""),
        ),
        push(
            "gitlab/goscm__push.json",
            Gitlab,
            "Push Hook",
            want(hello, "refs/heads/master", branch("master"), "2adc9465c4edfc33834e173fe89436a7cb899a1d")
                .message("added readme\n")
                .pusher("sytses")
                .clone_url(hello_clone),
        ),
        push(
            "gitlab/goscm__push_merge.json",
            Gitlab,
            "Push Hook",
            want(hello, "refs/heads/master", branch("master"), "78a76ee6b4992a6baf64c59fc4c44c7323d60438")
                .message("Merge branch 'feature' into 'master'\n\nupdate readme\n\nSee merge request gitlab-org/hello-world!1")
                .pusher("sytses"),
        ),
        push(
            "gitlab/goscm__push_subgroup.json",
            Gitlab,
            "Push Hook",
            want(subgroup, "refs/heads/master", branch("master"), "2adc9465c4edfc33834e173fe89436a7cb899a1d")
                .message("added readme\n")
                .clone_url("https://gitlab.com/group1/group2/group3/grp2repo.git"),
        ),
        push(
            "gitlab/goscm__branch_create.json",
            Gitlab,
            "Push Hook",
            want(hello, "refs/heads/feature", branch("feature"), "c4c79227ed610f1151f05bbc5be33b4f340d39c8")
                .created()
                .message("update readme\n"),
        ),
        push(
            "gitlab/goscm__branch_delete.json",
            Gitlab,
            "Push Hook",
            want(hello, "refs/heads/feature", branch("feature"), "")
                .deleted()
                .message("")
                .pusher("sytses"),
        ),
        push(
            "gitlab/goscm__branch_delete_subgroup.json",
            Gitlab,
            "Push Hook",
            want(subgroup, "refs/heads/feature", branch("feature"), "").deleted(),
        ),
        push(
            "gitlab/goscm__tag_create.json",
            Gitlab,
            "Tag Push Hook",
            want(hello, "refs/tags/v1.0.0", tag("v1.0.0"), "2adc9465c4edfc33834e173fe89436a7cb899a1d")
                .created()
                .message("added readme\n"),
        ),
        push(
            "gitlab/goscm__tag_delete.json",
            Gitlab,
            "Tag Push Hook",
            want(hello, "refs/tags/v1.0.0", tag("v1.0.0"), "").deleted(),
        ),
        push(
            "gitlab/woodpecker__push.json",
            Gitlab,
            "Push Hook",
            want("test/woodpecker", "refs/heads/main", branch("main"), "16862e368d8ab812e48833b741dad720d6e2cb7f")
                .message("Update main.go")
                .pusher("test")
                .clone_url("http://10.40.8.5:3200/test/woodpecker.git"),
        ),
        push(
            "gitlab/woodpecker__tag.json",
            Gitlab,
            "Tag Push Hook",
            // after is fabed3d9..., the tag object; checkout_sha is the commit.
            want("test/woodpecker", "refs/tags/v22", tag("v22"), "16862e368d8ab812e48833b741dad720d6e2cb7f")
                .created()
                .message("Update main.go")
                .pusher("test"),
        ),
        // Gitea.
        push(
            "gitea/goplayground__push-event.json",
            Gitea,
            "push",
            want("example/example", "refs/heads/master", branch("master"), "67b56589a45103f891bdee7c0546e5d40bc02001")
                .created()
                .message("example\n")
                .pusher("example")
                .clone_url("http://localhost:3000/example/example.git"),
        ),
        ignored("gitea/goplayground__create-event.json", Gitea, "create", "example/example", CREATE_REASON),
        ignored("gitea/goplayground__delete-event.json", Gitea, "delete", "example/example", "ref deleted"),
        push(
            "gitea/goscm__push.json",
            Gitea,
            "push",
            // No head_commit: the message comes from the listed commit equal to `after`.
            want("gogits/hello-world", "refs/heads/master", branch("master"), "4522cbcefc20728a5b72b3a86af35e608622c514")
                .message("Updated readme\n")
                .pusher("unknwon")
                .clone_url("http://try.gitea.io/gogits/hello-world.git"),
        ),
        ignored("gitea/goscm__create_branch.json", Gitea, "create", "gogits/hello-world", CREATE_REASON),
        ignored("gitea/goscm__create_tag.json", Gitea, "create", "gogits/hello-world", CREATE_REASON),
        ignored("gitea/goscm__delete_branch.json", Gitea, "delete", "gogits/hello-world", "ref deleted"),
        ignored("gitea/goscm__delete_tag.json", Gitea, "delete", "gogits/hello-world", "ref deleted"),
        push(
            "gitea/woodpecker__push.json",
            Gitea,
            "push",
            want("gordon/hello-world", "refs/heads/main", branch("main"), "ef98532add3b2feb7a137426bba1248724367df5")
                .message("bump\n")
                .pusher("gordon")
                .clone_url("http://gitea.golang.org/gordon/hello-world.git"),
        ),
        push("gitea/woodpecker__push_branch.json", Gitea, "push", gitea_push_branch.clone()),
        push("gitea/woodpecker__push_multi.json", Gitea, "push", gitea_push_multi.clone()),
        ignored("gitea/woodpecker__create_tag.json", Gitea, "create", "gordon/hello-world", CREATE_REASON),
        // Forgejo.
        push(
            "forgejo/woodpecker__push.json",
            Forgejo,
            "push",
            want("gordon/hello-world", "refs/heads/main", branch("main"), "ef98532add3b2feb7a137426bba1248724367df5")
                .message("bump\n")
                .pusher("gordon")
                .clone_url("http://forgejo.golang.org/gordon/hello-world.git"),
        ),
        push("forgejo/woodpecker__push_branch.json", Forgejo, "push", gitea_push_branch),
        push("forgejo/woodpecker__push_multi.json", Forgejo, "push", gitea_push_multi),
        ignored("forgejo/woodpecker__create_tag.json", Forgejo, "create", "gordon/hello-world", CREATE_REASON),
        // Gogs.
        push(
            "gogs/goplayground__push-event.json",
            Gogs,
            "push",
            want("unknwon/webhooks", "refs/heads/develop", branch("develop"), "bffeb74224043ba2feb48d137756c8a9331c449a")
                .message("Add new feature")
                .pusher("unknwon")
                .clone_url("http://localhost:3000/unknwon/webhooks.git"),
        ),
        ignored("gogs/goplayground__create-event.json", Gogs, "create", "user/repo", CREATE_REASON),
        ignored("gogs/goplayground__delete-event.json", Gogs, "delete", "user/repo", "ref deleted"),
        push(
            "gogs/goscm__push.json",
            Gogs,
            "push",
            want("gogits/hello-world", "refs/heads/master", branch("master"), "4522cbcefc20728a5b72b3a86af35e608622c514")
                .message("Updated readme\n")
                .pusher("unknwon")
                .clone_url("http://try.gogs.io/gogits/hello-world.git"),
        ),
        ignored("gogs/goscm__create_branch.json", Gogs, "create", "gogits/hello-world", CREATE_REASON),
        ignored("gogs/goscm__create_tag.json", Gogs, "create", "gogits/hello-world", CREATE_REASON),
        ignored("gogs/goscm__delete_branch.json", Gogs, "delete", "gogits/hello-world", "ref deleted"),
        ignored("gogs/goscm__delete_tag.json", Gogs, "delete", "gogits/hello-world", "ref deleted"),
        // Bitbucket Cloud.
        push(
            "bitbucket/goplayground__repo-push.json",
            Bitbucket,
            "repo:push",
            // The docs example's links.html is an api.bitbucket.org URL; kept as sent.
            want("team_name/repo_name", "refs/heads/name-of-branch", branch("name-of-branch"), "709d658dc5b6d6afcd46049c2f332ee3f515a67d")
                .message("new commit message\n")
                .pusher("Emma")
                .clone_url("https://api.bitbucket.org/bitbucket/bitbucket.git"),
        ),
        push(
            "bitbucket/goscm__push.json",
            Bitbucket,
            "repo:push",
            want(brydzewski, "refs/heads/master", branch("master"), bb_commit)
                .message("Update README\n")
                .pusher("Brad Rydzewski")
                .clone_url(brydzewski_clone),
        ),
        push(
            "bitbucket/goscm__push_branch_create.json",
            Bitbucket,
            "repo:push",
            want(brydzewski, "refs/heads/develop", branch("develop"), bb_commit)
                .created()
                .message("Update README\n")
                .clone_url(brydzewski_clone),
        ),
        push(
            "bitbucket/goscm__push_branch_delete.json",
            Bitbucket,
            "repo:push",
            want(brydzewski, "refs/heads/develop", branch("develop"), "")
                .deleted()
                .message("")
                .pusher("Brad Rydzewski"),
        ),
        push(
            "bitbucket/goscm__push_tag_create.json",
            Bitbucket,
            "repo:push",
            want(brydzewski, "refs/tags/feature/x", tag("feature/x"), bb_commit).created(),
        ),
        push(
            "bitbucket/goscm__push_tag_delete.json",
            Bitbucket,
            "repo:push",
            want(brydzewski, "refs/tags/feature/x", tag("feature/x"), "").deleted(),
        ),
        push(
            "bitbucket/woodpecker__push.json",
            Bitbucket,
            "repo:push",
            want("martinherren1984/publictestrepo", "refs/heads/main", branch("main"), "c14c1bb05dfb1fdcdf06b31485fff61b0ea44277")
                .message("a\n")
                .pusher("Martin Herren")
                .clone_url("https://bitbucket.org/martinherren1984/publictestrepo.git"),
        ),
        // Bitbucket Server / Data Center.
        push(
            "bitbucket-server/goplayground__repo-refs-changed.json",
            BitbucketServer,
            "repo:refs_changed",
            want("~gopher/webhook-test", "refs/heads/feature/wip", branch("feature/wip"), "")
                .deleted()
                .pusher("gopher")
                .clone_url("https://server.bitbucket.local/scm/~gopher/webhook-test.git"),
        ),
        push(
            "bitbucket-server/goscm__push.json",
            BitbucketServer,
            "repo:refs_changed",
            // No links in this payload: the clone URL must come from the pipeline.
            want(prj, "refs/heads/master", branch("master"), "823b2230a56056231c9425d63758fa87078a66b4")
                .message("")
                .pusher("jcitizen")
                .clone_url(""),
        ),
        push(
            "bitbucket-server/goscm__push_branch_create.json",
            BitbucketServer,
            "repo:refs_changed",
            want(prj, "refs/heads/develop", branch("develop"), "208b0a5c05eddadad01f2aed8802fe0c3b3eaf5e")
                .created()
                .pusher("jcitizen"),
        ),
        push(
            "bitbucket-server/goscm__push_branch_delete.json",
            BitbucketServer,
            "repo:refs_changed",
            want(prj, "refs/heads/develop", branch("develop"), "").deleted(),
        ),
        push(
            "bitbucket-server/goscm__push_tag_create.json",
            BitbucketServer,
            "repo:refs_changed",
            want(prj, "refs/tags/v1.1.0", tag("v1.1.0"), "823b2230a56056231c9425d63758fa87078a66b4").created(),
        ),
        push(
            "bitbucket-server/goscm__push_tag_delete.json",
            BitbucketServer,
            "repo:refs_changed",
            want(prj, "refs/tags/v1.1.0", tag("v1.1.0"), "").deleted(),
        ),
        push(
            "bitbucket-server/goscm__push_v5.json",
            BitbucketServer,
            "repo:refs_changed",
            want(
                "ISCLOUD/transamerica.cloud.individual.tftest",
                "refs/heads/trangineni/devtfvars-1685475548410",
                branch("trangineni/devtfvars-1685475548410"),
                "51a33664b6d7fb5aa15063064eb230362cd02e9e",
            )
            .pusher("trangineni"),
        ),
        push(
            "bitbucket-server/woodpecker__push.json",
            BitbucketServer,
            "repo:refs_changed",
            want("DEV/deployment-automation", "refs/heads/renovate-all", branch("renovate-all"), "76797d54bca87db6d1e3e82ee40622c7908aa514")
                .message("chore(deps): update all")
                .pusher("renovatebot")
                .clone_url("https://bitbucket.example.com/scm/dev/deployment-automation.git"),
        ),
        // Pull and merge requests: what builds, what cancels, what does not.
        pull(
            "github/goscm__pr_opened.json",
            Github,
            "pull_request",
            PullWant { repo: "bradrydzewski/drone-test-go", git_ref: "refs/pull/1/head", commit: "d2b75aa7797ec26b088fa2dd527e9d2c052fcedd", number: 1, base_branch: "bradrydzewski-patch-1", head_branch: "master", head_repo: "bradrydzewski/drone-test-go", fork: false, author: "bradrydzewski", trusted: true },
        ),
        pull(
            "github/goscm__pr_sync.json",
            Github,
            "pull_request",
            PullWant { repo: "bradrydzewski/drone-test-go", git_ref: "refs/pull/1/head", commit: "8102e371cd01cf668893cb2d04a04d52331b1dc9", number: 1, base_branch: "bradrydzewski-patch-1", head_branch: "master", head_repo: "bradrydzewski/drone-test-go", fork: false, author: "bradrydzewski", trusted: true },
        ),
        pull(
            "github/octokit__pull_request__opened.json",
            Github,
            "pull_request",
            PullWant { repo: "Codertocat/Hello-World", git_ref: "refs/pull/2/head", commit: "ec26c3e57ca3a959ca5aad62de7213c562f8c821", number: 2, base_branch: "master", head_branch: "changes", head_repo: "Codertocat/Hello-World", fork: false, author: "Codertocat", trusted: true },
        ),
        pull(
            "github/octokit__pull_request__reopened.json",
            Github,
            "pull_request",
            PullWant { repo: "Codertocat/Hello-World", git_ref: "refs/pull/2/head", commit: "ec26c3e57ca3a959ca5aad62de7213c562f8c821", number: 2, base_branch: "master", head_branch: "changes", head_repo: "Codertocat/Hello-World", fork: false, author: "Codertocat", trusted: true },
        ),
        pull(
            "github/octokit__pull_request__synchronize.json",
            Github,
            "pull_request",
            PullWant { repo: "Codertocat/Hello-World", git_ref: "refs/pull/2/head", commit: "ec26c3e57ca3a959ca5aad62de7213c562f8c821", number: 2, base_branch: "master", head_branch: "changes", head_repo: "Codertocat/Hello-World", fork: false, author: "Codertocat", trusted: true },
        ),
        ignored("github/goscm__pr_edited.json", Github, "pull_request", "bradrydzewski/drone-test-go", "pull request action edited builds nothing"),
        ignored("github/octokit__pull_request__labeled.json", Github, "pull_request", "Codertocat/Hello-World", "pull request action labeled builds nothing"),
        closed("github/octokit__pull_request__closed.json", Github, "pull_request", "Codertocat/Hello-World", "refs/pull/2/head", 2, false),
        closed("github/woodpecker__pr_closed.json", Github, "pull_request", "anbraten/test-ready-release-go", "refs/pull/62/head", 62, false),
        closed("github/woodpecker__pr_merged.json", Github, "pull_request", "anbraten/test-ready-release-go", "refs/pull/62/head", 62, true),
        ignored("github/goplayground__pull_request_review__fork.json", Github, "pull_request_review", "baxterthehacker/public-repo", "github event pull_request_review builds nothing"),
        pull(
            "gitea/goplayground__pull-request-event__fork.json",
            Gitea,
            "pull_request",
            PullWant { repo: "example/example", git_ref: "refs/pull/2/head", commit: "48e773f892a831faa47c0a160d1b7f0cd369ae2a", number: 2, base_branch: "master", head_branch: "master", head_repo: "example2/example", fork: true, author: "example2", trusted: false },
        ),
        ignored("gitea/goscm__pull_request_edited.json", Gitea, "pull_request", "jcitizen/my-repo", "pull request action edited builds nothing"),
        closed("gitea/woodpecker__pr_closed.json", Gitea, "pull_request", "anbraten/test-repo", "refs/pull/1/head", 1, false),
        ignored("gitea/woodpecker__pr_label_updated.json", Gitea, "pull_request_label", "a_nice_user/hello_world_ci", "gitea event pull_request_label builds nothing"),
        closed("gitea/woodpecker__pr_merged.json", Gitea, "pull_request", "anbraten/test-repo", "refs/pull/1/head", 1, true),
        ignored("gitea/woodpecker__pr_review_approved.json", Gitea, "pull_request_review_approved", "a_nice_user/hello_world_ci", "gitea event pull_request_review_approved builds nothing"),
        pull(
            "gitea/woodpecker__pr_synchronized.json",
            Gitea,
            "pull_request",
            PullWant { repo: "Test-CI/multi-line-secrets", git_ref: "refs/pull/2/head", commit: "788ed8d02d3b7fcfcf6386dbcbca696aa1d4dc25", number: 2, base_branch: "main", head_branch: "test-patch-1", head_repo: "Test-CI/multi-line-secrets", fork: false, author: "test", trusted: false },
        ),
        ignored("forgejo/woodpecker__pr_label_updated.json", Forgejo, "pull_request_label", "test_it/test_ci_thing", "forgejo event pull_request_label builds nothing"),
        closed("forgejo/woodpecker__pr_merged.json", Forgejo, "pull_request", "anbraten/test-repo", "refs/pull/1/head", 1, true),
        pull(
            "forgejo/woodpecker__pr_opened.json",
            Forgejo,
            "pull_request",
            PullWant { repo: "gordon/hello-world", git_ref: "refs/pull/1/head", commit: "0d1a26e67d8f5eaf1f6ba5c57fc3c7d91ac0fd1c", number: 1, base_branch: "main", head_branch: "feature/changes", head_repo: "", fork: true, author: "gordon", trusted: true },
        ),
        pull(
            "forgejo/woodpecker__pr_reopened.json",
            Forgejo,
            "pull_request",
            PullWant { repo: "test_it/test_ci_thing", git_ref: "refs/pull/1/head", commit: "36b5813240a9d2daa29b05046d56a53e18f39a3e", number: 1, base_branch: "main", head_branch: "6543-patch-1", head_repo: "test_it/test_ci_thing", fork: false, author: "6543", trusted: false },
        ),
        pull(
            "forgejo/woodpecker__pr_synchronized.json",
            Forgejo,
            "pull_request",
            PullWant { repo: "Test-CI/multi-line-secrets", git_ref: "refs/pull/2/head", commit: "788ed8d02d3b7fcfcf6386dbcbca696aa1d4dc25", number: 2, base_branch: "main", head_branch: "test-patch-1", head_repo: "Test-CI/multi-line-secrets", fork: false, author: "test", trusted: false },
        ),
        closed("gogs/goscm__pull_request_closed.json", Gogs, "pull_request", "gogits/hello-world", "refs/pull/2/head", 2, false),
        ignored("gogs/goscm__pull_request_edited.json", Gogs, "pull_request", "gogits/hello-world", "pull request action edited builds nothing"),
        pull(
            "gogs/goscm__pull_request_opened.json",
            Gogs,
            "pull_request",
            PullWant { repo: "gogits/hello-world", git_ref: "refs/pull/2/head", commit: "", number: 2, base_branch: "master", head_branch: "feature", head_repo: "gogits/hello-world", fork: false, author: "unknwon", trusted: false },
        ),
        pull(
            "gogs/goscm__pull_request_synchronized.json",
            Gogs,
            "pull_request",
            PullWant { repo: "gogits/hello-world", git_ref: "refs/pull/2/head", commit: "", number: 2, base_branch: "master", head_branch: "feature", head_repo: "gogits/hello-world", fork: false, author: "unknwon", trusted: false },
        ),
        pull(
            "gitlab/goplayground__merge-request-event.json",
            Gitlab,
            "Merge Request Hook",
            PullWant { repo: "gitlabhq/gitlab-test", git_ref: "refs/merge-requests/1/head", commit: "da1560886d4f094c3e6c9ef40349f7d38b5d27d7", number: 1, base_branch: "master", head_branch: "ms-viewport", head_repo: "awesome_space/awesome_project", fork: false, author: "root", trusted: false },
        ),
        pull(
            "gitlab/goscm__mr_create.json",
            Gitlab,
            "Merge Request Hook",
            PullWant { repo: "gitlab-org/hello-world", git_ref: "refs/merge-requests/1/head", commit: "c4c79227ed610f1151f05bbc5be33b4f340d39c8", number: 1, base_branch: "master", head_branch: "feature", head_repo: "gitlab-org/hello-world", fork: false, author: "sytses", trusted: false },
        ),
        closed("gitlab/woodpecker__mr_closed.json", Gitlab, "Merge Request Hook", "anbraten/woodpecker-test", "refs/merge-requests/4/head", 4, false),
        ignored("gitlab/woodpecker__mr_edited.json", Gitlab, "Merge Request Hook", "demoaccount2-commits-group/test_ci_tmp", "a merge request update without new commits (update) builds nothing"),
        closed("gitlab/woodpecker__mr_merged.json", Gitlab, "Merge Request Hook", "anbraten/woodpecker-test", "refs/merge-requests/4/head", 4, true),
        pull(
            "gitlab/woodpecker__mr_opened.json",
            Gitlab,
            "Merge Request Hook",
            PullWant { repo: "demoaccount2-commits-group/test_ci_tmp", git_ref: "refs/merge-requests/3/head", commit: "2f7670508b771e7e77839402be8b34b13787aba8", number: 3, base_branch: "main", head_branch: "real6543-main-patch-42541", head_repo: "demoaccount2-commits-group/test_ci_tmp", fork: false, author: "real6543", trusted: false },
        ),
        pull(
            "gitlab/woodpecker__mr_reopened.json",
            Gitlab,
            "Merge Request Hook",
            PullWant { repo: "demoaccount2-commits-group/test_ci_tmp", git_ref: "refs/merge-requests/1/head", commit: "36b5813240a9d2daa29b05046d56a53e18f39a3e", number: 1, base_branch: "main", head_branch: "6543-patch-1", head_repo: "demoaccount2-commits-group/test_ci_tmp", fork: false, author: "real6543", trusted: false },
        ),
        ignored("gitlab/woodpecker__mr_unapproved.json", Gitlab, "Merge Request Hook", "demoaccount2-commits-group/test_ci_tmp", "this merge request action (unapproved) builds nothing"),
        pull(
            "gitlab/woodpecker__mr_updated_new_commits.json",
            Gitlab,
            "Merge Request Hook",
            PullWant { repo: "anbraten/woodpecker", git_ref: "refs/merge-requests/3/head", commit: "c136499ec574e1034b24c5d306de9acda3005367", number: 3, base_branch: "main", head_branch: "anbraten-main-patch-05373", head_repo: "anbraten/woodpecker", fork: false, author: "anbraten", trusted: false },
        ),
        ignored("bitbucket/goplayground__pull-request-approved.json", Bitbucket, "pullrequest:approved", "team_name/repo_name", "bitbucket event pullrequest:approved builds nothing"),
        pull(
            "bitbucket/goscm__pr_created.json",
            Bitbucket,
            "pullrequest:created",
            PullWant { repo: "brydzewski/foo", git_ref: "refs/pull-requests/1/from", commit: "507a576e59b3", number: 1, base_branch: "master", head_branch: "develop", head_repo: "brydzewski/foo", fork: false, author: "brydzewski", trusted: false },
        ),
        closed("bitbucket/goscm__pr_declined.json", Bitbucket, "pullrequest:rejected", "brydzewski/foo", "refs/pull-requests/2/from", 2, false),
        closed("bitbucket/goscm__pr_fulfilled.json", Bitbucket, "pullrequest:fulfilled", "brydzewski/foo", "refs/pull-requests/1/from", 1, true),
        pull(
            "bitbucket/goscm__pr_updated.json",
            Bitbucket,
            "pullrequest:updated",
            PullWant { repo: "brydzewski/foo", git_ref: "refs/pull-requests/1/from", commit: "0704fc5beccc", number: 1, base_branch: "master", head_branch: "develop", head_repo: "brydzewski/foo", fork: false, author: "brydzewski", trusted: false },
        ),
        closed("bitbucket/woodpecker__pr_declined.json", Bitbucket, "pullrequest:rejected", "anbraten/test-2", "refs/pull-requests/2/from", 2, false),
        closed("bitbucket/woodpecker__pr_merged.json", Bitbucket, "pullrequest:fulfilled", "anbraten/test-2", "refs/pull-requests/1/from", 1, true),
        closed("bitbucket-server/goplayground__pr-declined.json", BitbucketServer, "pr:declined", "~gopher/webhook-test", "refs/pull-requests/2/from", 2, false),
        closed("bitbucket-server/goplayground__pr-merged.json", BitbucketServer, "pr:merged", "~gopher/webhook-test", "refs/pull-requests/5/from", 5, true),
        ignored_norepo("bitbucket-server/goplayground__pr-modified.json", BitbucketServer, "pr:modified", "bitbucket-server event pr:modified builds nothing"),
        pull(
            "bitbucket-server/goplayground__pr-opened.json",
            BitbucketServer,
            "pr:opened",
            PullWant { repo: "~gopher/webhook-test", git_ref: "refs/pull-requests/5/from", commit: "32a0b8a740c2963c6f56bd8baf3dc05683d299e0", number: 5, base_branch: "master", head_branch: "feature/wip", head_repo: "~gopher/webhook-test", fork: false, author: "gopher", trusted: false },
        ),
        ignored_norepo("bitbucket-server/goplayground__pr-reviewer-approved.json", BitbucketServer, "pr:reviewer:approved", "bitbucket-server event pr:reviewer:approved builds nothing"),
        closed("bitbucket-server/goscm__pr_declined.json", BitbucketServer, "pr:declined", "PRJ/my-repo", "refs/pull-requests/2/from", 2, false),
        pull(
            "bitbucket-server/goscm__pr_from_ref_updated.json",
            BitbucketServer,
            "pr:from_ref_updated",
            PullWant { repo: "PRJ/my-repo", git_ref: "refs/pull-requests/2/from", commit: "c00d0f269a9844dd168f72f6a9d78a9cff49a318", number: 2, base_branch: "master", head_branch: "feature-2", head_repo: "PRJ/my-repo", fork: false, author: "jcitizen", trusted: false },
        ),
        closed("bitbucket-server/goscm__pr_merged.json", BitbucketServer, "pr:merged", "PRJ/my-repo", "refs/pull-requests/3/from", 3, true),
        ignored_norepo("bitbucket-server/goscm__pr_modified_fork.json", BitbucketServer, "pr:modified", "bitbucket-server event pr:modified builds nothing"),
        pull(
            "bitbucket-server/goscm__pr_open.json",
            BitbucketServer,
            "pr:opened",
            PullWant { repo: "PRJ/my-repo", git_ref: "refs/pull-requests/2/from", commit: "208b0a5c05eddadad01f2aed8802fe0c3b3eaf5e", number: 2, base_branch: "master", head_branch: "develop", head_repo: "PRJ/my-repo", fork: false, author: "jcitizen", trusted: false },
        ),
        closed("bitbucket-server/woodpecker__pr_merged.json", BitbucketServer, "pr:merged", "DEV/deployment-automation", "refs/pull-requests/111/from", 111, true),
        pull(
            "bitbucket-server/woodpecker__pr_opened_from_fork.json",
            BitbucketServer,
            "pr:opened",
            PullWant { repo: "DEV/deployment-automation", git_ref: "refs/pull-requests/114/from", commit: "716e510cecbe203618609cf103c54e040b949739", number: 114, base_branch: "master", head_branch: "master", head_repo: "~JOHN.DOE_EXAMPLE.COM/deployment-automation", fork: true, author: "john.doe@example.com", trusted: false },
        ),

    ]
}

fn read(file: &str) -> Vec<u8> {
    std::fs::read(Path::new(DIR).join(file)).unwrap_or_else(|e| panic!("{file}: {e}"))
}

fn check_push(file: &str, got: &PushEvent, w: &Want) {
    assert_eq!(got.repo, w.repo, "{file}: repo");
    assert_eq!(got.git_ref, w.git_ref, "{file}: ref");
    assert_eq!(got.kind, w.kind, "{file}: kind");
    assert_eq!(got.commit_str(), w.commit, "{file}: commit");
    assert_eq!(got.created, w.created, "{file}: created");
    assert_eq!(got.deleted, w.deleted, "{file}: deleted");
    assert_eq!(got.forced, w.forced, "{file}: forced");
    if let Some(m) = w.message {
        assert_eq!(got.message, m, "{file}: message");
    }
    if let Some(p) = w.pusher {
        assert_eq!(got.pusher, p, "{file}: pusher");
    }
    if let Some(u) = w.clone_url {
        assert_eq!(got.clone_url, u, "{file}: clone_url");
    }
}

#[test]
fn every_fixture_parses_into_what_its_json_says() {
    for row in rows() {
        let file = row.file;
        let headers = headers_for(row.host, row.event);
        assert_eq!(webhook::detect(&headers), Some(row.host), "{file}: detect");
        let parsed = webhook::parse(row.host, &headers, &read(file))
            .unwrap_or_else(|e| panic!("{file}: {e}"));
        assert_eq!(parsed.event, row.event, "{file}: event");
        match (&row.expect, &parsed.kind) {
            (Expect::Push(w), ParsedKind::Pushes(events)) => {
                assert_eq!(events.len(), 1, "{file}: one ref update");
                assert_eq!(parsed.repo.as_deref(), Some(w.repo), "{file}: parsed repo");
                check_push(file, &events[0], w);
            }
            (Expect::Pull(w), ParsedKind::PullRequest(got)) => {
                assert_eq!(parsed.repo.as_deref(), Some(w.repo), "{file}: parsed repo");
                let pr = got.pull_request.as_ref().expect("a pull request");
                assert_eq!(got.repo, w.repo, "{file}: repo");
                assert_eq!(got.git_ref, w.git_ref, "{file}: ref");
                assert_eq!(got.commit_str(), w.commit, "{file}: commit");
                assert_eq!(got.kind, RefKind::Other, "{file}: kind");
                assert_eq!(pr.number, w.number, "{file}: number");
                assert_eq!(pr.base_branch, w.base_branch, "{file}: base");
                assert_eq!(pr.head_branch, w.head_branch, "{file}: head");
                assert_eq!(got.branch(), Some(w.head_branch), "{file}: HOOKCI_BRANCH");
                assert_eq!(pr.head_repo, w.head_repo, "{file}: head repo");
                assert_eq!(pr.fork, w.fork, "{file}: fork");
                assert_eq!(pr.author, w.author, "{file}: author");
                assert_eq!(pr.author_trusted, w.trusted, "{file}: trusted");
                assert_eq!(got.event_name(), "pull_request", "{file}: event name");
            }
            (
                Expect::Closed {
                    repo,
                    git_ref,
                    number,
                    merged,
                },
                ParsedKind::PullRequestClosed(got),
            ) => {
                assert_eq!(parsed.repo.as_deref(), Some(*repo), "{file}: parsed repo");
                assert_eq!(got.repo, *repo, "{file}: repo");
                assert_eq!(got.git_ref, *git_ref, "{file}: ref");
                assert_eq!(got.number, *number, "{file}: number");
                assert_eq!(got.merged, *merged, "{file}: merged");
            }
            (Expect::Ping(repo), ParsedKind::Ping) => {
                assert_eq!(parsed.repo.as_deref(), *repo, "{file}: repo");
            }
            (Expect::Ignored(repo, reason), ParsedKind::Ignored(got)) => {
                assert_eq!(parsed.repo.as_deref(), *repo, "{file}: repo");
                assert_eq!(got, reason, "{file}: reason");
            }
            (_, other) => panic!("{file}: unexpected {other:?}"),
        }
    }
}

#[test]
fn a_deleted_ref_names_no_commit_to_build_and_a_pushed_one_always_does() {
    for row in rows() {
        if let Expect::Push(w) = &row.expect {
            assert_eq!(w.deleted, w.commit.is_empty(), "{}", row.file);
        }
    }
}

/// Every JSON payload in the folder, relative to it.
fn payload_files() -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    let mut dirs = vec![PathBuf::from(DIR)];
    while let Some(dir) = dirs.pop() {
        for entry in std::fs::read_dir(&dir).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                dirs.push(path);
            } else if path.extension().is_some_and(|e| e == "json") {
                let rel = path.strip_prefix(DIR).unwrap().to_str().unwrap().to_owned();
                if rel != "manifest.json" && rel != "signature_vectors.json" {
                    out.insert(rel);
                }
            }
        }
    }
    out
}

#[test]
fn every_fixture_in_the_folder_has_a_row() {
    let covered: BTreeSet<String> = rows().iter().map(|r| r.file.to_owned()).collect();
    assert_eq!(rows().len(), covered.len(), "a file has two rows");
    assert_eq!(payload_files(), covered);
}

#[test]
fn the_fixtures_are_byte_exact_copies_of_the_manifest() {
    let manifest: serde_json::Value =
        serde_json::from_slice(&read("manifest.json")).expect("manifest.json is JSON");
    let entries = manifest.as_array().expect("manifest.json is a list");
    let mut listed = BTreeSet::new();
    for entry in entries {
        let file = entry["file"].as_str().unwrap();
        let bytes = read(file);
        assert_eq!(
            bytes.len() as u64,
            entry["bytes"].as_u64().unwrap(),
            "{file}: size"
        );
        assert_eq!(
            hex::encode(Sha256::digest(&bytes)),
            entry["sha256"].as_str().unwrap(),
            "{file}: sha256"
        );
        listed.insert(file.to_owned());
    }
    assert_eq!(listed, payload_files());
}

#[test]
fn urls_are_taken_from_each_hosts_repository_links() {
    let cases = [
        (
            Host::Github,
            "push",
            "github/goscm__push.json",
            Some("git@github.com:Codertocat/Hello-World.git"),
            Some("https://github.com/Codertocat/Hello-World"),
        ),
        (
            Host::Gitlab,
            "Push Hook",
            "gitlab/goscm__push_subgroup.json",
            Some("git@gitlab.com:group1/group2/group3/grp2repo.git"),
            Some("https://gitlab.com/group1/group2/group3/grp2repo"),
        ),
        (
            Host::Gitea,
            "push",
            "gitea/woodpecker__push_multi.json",
            Some("ssh://git@127.0.0.1:2200/Test-CI/multi-line-secrets.git"),
            Some("http://127.0.0.1:3000/Test-CI/multi-line-secrets"),
        ),
        (
            Host::Gogs,
            "push",
            "gogs/goplayground__push-event.json",
            Some("ssh://unknwon@localhost:2222/unknwon/webhooks.git"),
            Some("http://localhost:3000/unknwon/webhooks"),
        ),
        (
            Host::Bitbucket,
            "repo:push",
            "bitbucket/goscm__push.json",
            Some("git@bitbucket.org:brydzewski/foo.git"),
            Some("https://bitbucket.org/brydzewski/foo"),
        ),
        (
            Host::BitbucketServer,
            "repo:refs_changed",
            "bitbucket-server/woodpecker__push.json",
            Some("ssh://git@bitbucket.example.com:7999/dev/deployment-automation.git"),
            Some("https://bitbucket.example.com/projects/DEV/repos/deployment-automation/browse"),
        ),
        (
            Host::BitbucketServer,
            "repo:refs_changed",
            "bitbucket-server/goscm__push.json",
            None,
            None,
        ),
    ];
    for (host, event, file, ssh, web) in cases {
        let parsed = webhook::parse(host, &headers_for(host, event), &read(file)).unwrap();
        let ParsedKind::Pushes(events) = parsed.kind else {
            panic!("{file}: not a push");
        };
        assert_eq!(events[0].ssh_url.as_deref(), ssh, "{file}: ssh_url");
        assert_eq!(events[0].web_url.as_deref(), web, "{file}: web_url");
    }
}

#[test]
fn before_and_after_are_the_payloads_own_values() {
    let cases = [
        (
            Host::Github,
            "push",
            "github/goscm__push_branch_delete.json",
            "d2b75aa7797ec26b088fa2dd527e9d2c052fcedd",
            "0000000000000000000000000000000000000000",
        ),
        (
            Host::Gitlab,
            "Tag Push Hook",
            "gitlab/woodpecker__tag.json",
            "0000000000000000000000000000000000000000",
            "fabed3d94cd03e6c2b7958afa9569c18a24d301f",
        ),
        (
            Host::Bitbucket,
            "repo:push",
            "bitbucket/goscm__push_branch_create.json",
            "0000000000000000000000000000000000000000",
            "141977fedf5cf35aa290ac87d4b5177ac4cd9de1",
        ),
        (
            Host::Bitbucket,
            "repo:push",
            "bitbucket/goscm__push.json",
            "40e7580cf11311d84a6e5e97e2cbba6df1675750",
            "141977fedf5cf35aa290ac87d4b5177ac4cd9de1",
        ),
        (
            Host::BitbucketServer,
            "repo:refs_changed",
            "bitbucket-server/goplayground__repo-refs-changed.json",
            "32a0b8a740c2963c6f56bd8baf3dc05683d299e0",
            "0000000000000000000000000000000000000000",
        ),
    ];
    for (host, event, file, before, after) in cases {
        let parsed = webhook::parse(host, &headers_for(host, event), &read(file)).unwrap();
        let ParsedKind::Pushes(events) = parsed.kind else {
            panic!("{file}: not a push");
        };
        assert_eq!(events[0].before, before, "{file}: before");
        assert_eq!(events[0].after, after, "{file}: after");
    }
}

/// No public GitHub `pull_request` delivery from a fork was found: this is
/// the recorded `opened` payload with `pull_request.head.repo` changed to a
/// fork, as GitHub sends it for one, and the author's association to none.
#[test]
fn a_github_pull_request_whose_head_repo_is_another_is_a_fork_of_an_untrusted_author() {
    let mut v: serde_json::Value =
        serde_json::from_slice(&read("github/octokit__pull_request__opened.json")).unwrap();
    v["pull_request"]["head"]["repo"]["full_name"] = "mallory/Hello-World".into();
    v["pull_request"]["head"]["repo"]["fork"] = true.into();
    v["pull_request"]["author_association"] = "CONTRIBUTOR".into();
    let body = serde_json::to_vec(&v).unwrap();
    let parsed = webhook::parse(
        Host::Github,
        &headers_for(Host::Github, "pull_request"),
        &body,
    )
    .unwrap();
    let ParsedKind::PullRequest(event) = parsed.kind else {
        panic!("{:?}", parsed.kind);
    };
    let pr = event.pull_request.unwrap();
    assert!(pr.fork);
    assert!(!pr.author_trusted);
    assert_eq!(pr.head_repo, "mallory/Hello-World");
    assert_eq!(event.repo, "Codertocat/Hello-World");
    assert_eq!(event.git_ref, "refs/pull/2/head");
}
