//! The domain: what a push is, and the states of a build and its steps.
//!
//! *Invariant:* depends on nothing else in the crate; `webhook` produces
//! these values, `pipeline` matches them, `store` persists them, `runner`
//! and `report` consume them.

use serde::{Deserialize, Serialize};
use std::fmt;
use std::str::FromStr;
use time::OffsetDateTime;

/// `t` as the API, the pages and the store write times: RFC 3339 UTC with
/// milliseconds.
pub fn rfc3339(t: OffsetDateTime) -> String {
    let t = t.to_offset(time::UtcOffset::UTC);
    let t = t
        .replace_nanosecond(u32::from(t.millisecond()) * 1_000_000)
        .unwrap_or(t);
    t.format(&time::format_description::well_known::Rfc3339)
        .unwrap_or_else(|_| t.unix_timestamp().to_string())
}

/// Reads a time [`rfc3339`] wrote.
pub fn parse_rfc3339(s: &str) -> Option<OffsetDateTime> {
    OffsetDateTime::parse(s, &time::format_description::well_known::Rfc3339).ok()
}

/// Serializes a time as [`rfc3339`] text (`#[serde(serialize_with)]`).
pub fn ser_time<S: serde::Serializer>(t: &OffsetDateTime, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(&rfc3339(*t))
}

/// Serializes an optional time as [`rfc3339`] text or null.
pub fn ser_opt_time<S: serde::Serializer>(
    t: &Option<OffsetDateTime>,
    s: S,
) -> Result<S::Ok, S::Error> {
    match t {
        Some(t) => s.serialize_some(&rfc3339(*t)),
        None => s.serialize_none(),
    }
}

/// An all-zero SHA-1, which hosts send as `before` for a new ref and as
/// `after` for a deleted one.
pub const ZERO_SHA: &str = "0000000000000000000000000000000000000000";

/// A git object id as hosts and git name it: 4 to 64 hex digits (hosts may
/// send abbreviated ids), kept in lowercase. It can hold nothing else, so a
/// value that reaches git's argv, a URL path or the steps' environment is
/// never an option (`--upload-pack=...`) or a path.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct CommitId(std::borrow::Cow<'static, str>);

/// Text that is not a commit id (4 to 64 hex digits). The text itself is
/// left out: it came from outside.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("not a commit id (4 to 64 hex digits)")]
pub struct InvalidCommitId;

impl CommitId {
    /// The all-zero SHA-1 ([`ZERO_SHA`]): the missing side of a created or
    /// deleted ref.
    pub const ZERO: CommitId = CommitId(std::borrow::Cow::Borrowed(ZERO_SHA));

    /// Reads `s` as a commit id, lowercased; refuses anything but 4 to 64
    /// hex digits.
    pub fn parse(s: &str) -> Result<CommitId, InvalidCommitId> {
        if (4..=64).contains(&s.len()) && s.bytes().all(|b| b.is_ascii_hexdigit()) {
            Ok(CommitId(std::borrow::Cow::Owned(s.to_ascii_lowercase())))
        } else {
            Err(InvalidCommitId)
        }
    }

    /// The hex digits.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// True for an all-zero id (SHA-1 or SHA-256), which hosts send for the
    /// missing side of a created or deleted ref.
    pub fn is_zero(&self) -> bool {
        self.0.bytes().all(|b| b == b'0')
    }

    /// A full object id (40 hex digits for SHA-1, 64 for SHA-256), not an
    /// abbreviation.
    pub fn is_full(&self) -> bool {
        self.0.len() == 40 || self.0.len() == 64
    }

    /// An optional commit as the API, the store and the environment write
    /// it: the hex digits, or empty when there is none.
    pub fn or_empty(commit: &Option<CommitId>) -> &str {
        commit.as_ref().map_or("", CommitId::as_str)
    }
}

impl fmt::Display for CommitId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl fmt::Debug for CommitId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "CommitId({})", self.0)
    }
}

impl AsRef<str> for CommitId {
    fn as_ref(&self) -> &str {
        &self.0
    }
}

impl FromStr for CommitId {
    type Err = InvalidCommitId;
    fn from_str(s: &str) -> Result<Self, InvalidCommitId> {
        CommitId::parse(s)
    }
}

impl TryFrom<String> for CommitId {
    type Error = InvalidCommitId;
    fn try_from(s: String) -> Result<Self, InvalidCommitId> {
        CommitId::parse(&s)
    }
}

impl TryFrom<&str> for CommitId {
    type Error = InvalidCommitId;
    fn try_from(s: &str) -> Result<Self, InvalidCommitId> {
        CommitId::parse(s)
    }
}

impl From<CommitId> for String {
    fn from(c: CommitId) -> String {
        c.0.into_owned()
    }
}

impl PartialEq<str> for CommitId {
    fn eq(&self, other: &str) -> bool {
        *self.0 == *other
    }
}

impl PartialEq<&str> for CommitId {
    fn eq(&self, other: &&str) -> bool {
        *self.0 == **other
    }
}

impl PartialEq<String> for CommitId {
    fn eq(&self, other: &String) -> bool {
        *self.0 == **other
    }
}

impl Serialize for CommitId {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.0)
    }
}

impl<'de> Deserialize<'de> for CommitId {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = std::borrow::Cow::<'de, str>::deserialize(d)?;
        CommitId::parse(&s).map_err(serde::de::Error::custom)
    }
}

/// A Git host whose webhooks hookci understands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Host {
    /// github.com and GitHub Enterprise Server.
    Github,
    /// gitlab.com and self-managed GitLab.
    Gitlab,
    /// Gitea.
    Gitea,
    /// Forgejo (a Gitea fork; sends Gitea's headers too).
    Forgejo,
    /// Gogs.
    Gogs,
    /// Bitbucket Cloud.
    Bitbucket,
    /// Bitbucket Server / Data Center.
    BitbucketServer,
    /// Any sender signing per Standard Webhooks with hookci's generic body.
    Generic,
}

impl Host {
    /// Every host, in the order their names are listed to users.
    pub const ALL: [Host; 8] = [
        Host::Github,
        Host::Gitlab,
        Host::Gitea,
        Host::Forgejo,
        Host::Gogs,
        Host::Bitbucket,
        Host::BitbucketServer,
        Host::Generic,
    ];

    /// The name used in pipeline files and the API.
    pub fn as_str(self) -> &'static str {
        match self {
            Host::Github => "github",
            Host::Gitlab => "gitlab",
            Host::Gitea => "gitea",
            Host::Forgejo => "forgejo",
            Host::Gogs => "gogs",
            Host::Bitbucket => "bitbucket",
            Host::BitbucketServer => "bitbucket-server",
            Host::Generic => "generic",
        }
    }
}

impl fmt::Display for Host {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Host {
    type Err = ();
    fn from_str(s: &str) -> Result<Self, ()> {
        Host::ALL.into_iter().find(|h| h.as_str() == s).ok_or(())
    }
}

/// What a pushed ref is.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", content = "name", rename_all = "lowercase")]
pub enum RefKind {
    /// `refs/heads/NAME`.
    Branch(String),
    /// `refs/tags/NAME`.
    Tag(String),
    /// Any other ref (notes, pull heads); never built.
    Other,
}

impl RefKind {
    /// Classifies a full ref name.
    pub fn of(git_ref: &str) -> RefKind {
        if let Some(b) = git_ref.strip_prefix("refs/heads/") {
            RefKind::Branch(b.to_owned())
        } else if let Some(t) = git_ref.strip_prefix("refs/tags/") {
            RefKind::Tag(t.to_owned())
        } else {
            RefKind::Other
        }
    }
}

/// One ref update, as every host's push payload becomes it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PushEvent {
    /// The repository's full name as the host reports it (`owner/name`;
    /// GitLab: `path_with_namespace`; Bitbucket Server: `PROJECT/slug`).
    pub repo: String,
    /// The full ref, e.g. `refs/heads/main`.
    pub git_ref: String,
    /// Branch or tag, with its short name.
    pub kind: RefKind,
    /// The ref's old value; [`CommitId::ZERO`] for a new ref (or where the
    /// host sends none).
    pub before: CommitId,
    /// The ref's new value; [`CommitId::ZERO`] for a deleted ref (and for a
    /// Gogs pull request until the runner resolves its head). For an
    /// annotated tag this may be the tag object.
    pub after: CommitId,
    /// The commit to build and report on: `after`, or the tagged commit for
    /// an annotated tag where the host says which it is. `None` when the ref
    /// was deleted, and for a Gogs pull request until the runner resolves
    /// its head ([`PushEvent::commit_str`] writes it as empty text).
    pub commit: Option<CommitId>,
    /// The ref was created by this push.
    pub created: bool,
    /// The ref was deleted by this push.
    pub deleted: bool,
    /// The push was a force push (where the host says so).
    pub forced: bool,
    /// The https (or http) clone URL.
    pub clone_url: String,
    /// The ssh clone URL, where the host sends one.
    pub ssh_url: Option<String>,
    /// The repository's web page, from which a self-hosted API base is derived.
    pub web_url: Option<String>,
    /// The head commit's message; empty where the host sends none.
    pub message: String,
    /// Who pushed (login or display name); empty where the host sends none.
    pub pusher: String,
    /// The pull (merge) request this builds; `None` for a push. Then
    /// `git_ref` is the ref the head commit is fetched by (`refs/pull/N/head`,
    /// `refs/merge-requests/N/head`), `kind` is [`RefKind::Other`], and
    /// `before` is the base branch's commit where the host sends it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pull_request: Option<PullRequest>,
}

/// A pull request (GitLab: merge request), as every host's payload becomes it.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct PullRequest {
    /// The number users know it by (GitLab: the `iid`).
    pub number: u64,
    /// Its title.
    pub title: String,
    /// Who opened it (login).
    pub author: String,
    /// The host reports the author as an owner, member or collaborator of
    /// the base repository (GitHub's `author_association`; the equivalents
    /// elsewhere). False where the host says nothing.
    pub author_trusted: bool,
    /// The branch it merges into.
    pub base_branch: String,
    /// The branch it merges from (in the head repository).
    pub head_branch: String,
    /// The head repository's full name.
    pub head_repo: String,
    /// The head repository is not the base repository.
    pub fork: bool,
    /// The head repository's clone URL, for hosts with no pull ref in the
    /// base repository (Bitbucket); `None` elsewhere.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub head_clone_url: Option<String>,
}

/// A closed (or merged) pull request: its builds that have not ended are
/// cancelled.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PullRequestClosed {
    /// The base repository's full name.
    pub repo: String,
    /// The ref its builds were queued under (see [`PushEvent::pull_request`]).
    pub git_ref: String,
    /// The number.
    pub number: u64,
    /// Merged rather than closed unmerged.
    pub merged: bool,
}

impl PushEvent {
    /// The commit as the API, the store and the environment write it: its
    /// hex digits, or empty when there is none yet.
    pub fn commit_str(&self) -> &str {
        CommitId::or_empty(&self.commit)
    }

    /// The branch's short name, for a branch push; a pull request's head
    /// branch (`HOOKCI_BRANCH`).
    pub fn branch(&self) -> Option<&str> {
        if let Some(pr) = &self.pull_request {
            return Some(&pr.head_branch);
        }
        match &self.kind {
            RefKind::Branch(b) => Some(b),
            RefKind::Tag(_) | RefKind::Other => None,
        }
    }

    /// The tag's short name, for a tag push.
    pub fn tag(&self) -> Option<&str> {
        match &self.kind {
            RefKind::Tag(t) => Some(t),
            RefKind::Branch(_) | RefKind::Other => None,
        }
    }

    /// `push` for a branch, `tag` for a tag, `pull_request` for a pull
    /// request (the value of `HOOKCI_EVENT`).
    pub fn event_name(&self) -> &'static str {
        if self.pull_request.is_some() {
            return "pull_request";
        }
        match self.kind {
            RefKind::Tag(_) => "tag",
            RefKind::Branch(_) | RefKind::Other => "push",
        }
    }
}

/// A build's state.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum BuildStatus {
    /// A pull request from a fork, waiting for an admin's approval; never
    /// claimed. Approval moves it to `queued`.
    Waiting,
    /// Waiting for a worker.
    Queued,
    /// A worker is running it.
    Running,
    /// Every step that must pass passed.
    Success,
    /// A step failed.
    Failure,
    /// The build could not run (clone failed, interrupted twice).
    Error,
    /// Cancelled by a user or superseded by a newer push.
    Cancelled,
    /// Nothing to build (no changed file matched the trigger's paths).
    Skipped,
}

impl BuildStatus {
    /// The name used in the API and the store.
    pub fn as_str(self) -> &'static str {
        match self {
            BuildStatus::Waiting => "waiting",
            BuildStatus::Queued => "queued",
            BuildStatus::Running => "running",
            BuildStatus::Success => "success",
            BuildStatus::Failure => "failure",
            BuildStatus::Error => "error",
            BuildStatus::Cancelled => "cancelled",
            BuildStatus::Skipped => "skipped",
        }
    }

    /// True once the build will not change state again.
    pub fn is_final(self) -> bool {
        match self {
            BuildStatus::Waiting | BuildStatus::Queued | BuildStatus::Running => false,
            BuildStatus::Success
            | BuildStatus::Failure
            | BuildStatus::Error
            | BuildStatus::Cancelled
            | BuildStatus::Skipped => true,
        }
    }
}

impl fmt::Display for BuildStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for BuildStatus {
    type Err = ();
    fn from_str(s: &str) -> Result<Self, ()> {
        Ok(match s {
            "waiting" => BuildStatus::Waiting,
            "queued" => BuildStatus::Queued,
            "running" => BuildStatus::Running,
            "success" => BuildStatus::Success,
            "failure" => BuildStatus::Failure,
            "error" => BuildStatus::Error,
            "cancelled" => BuildStatus::Cancelled,
            "skipped" => BuildStatus::Skipped,
            _ => return Err(()),
        })
    }
}

/// A step's state.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum StepStatus {
    /// Not started yet.
    Pending,
    /// Running now.
    Running,
    /// Exited 0.
    Success,
    /// Exited non-zero, was killed, or timed out.
    Failure,
    /// Stopped by a cancel.
    Cancelled,
    /// Not run: an earlier step failed, or the build was cancelled first.
    Skipped,
}

impl StepStatus {
    /// The name used in the API and the store.
    pub fn as_str(self) -> &'static str {
        match self {
            StepStatus::Pending => "pending",
            StepStatus::Running => "running",
            StepStatus::Success => "success",
            StepStatus::Failure => "failure",
            StepStatus::Cancelled => "cancelled",
            StepStatus::Skipped => "skipped",
        }
    }
}

impl FromStr for StepStatus {
    type Err = ();
    fn from_str(s: &str) -> Result<Self, ()> {
        Ok(match s {
            "pending" => StepStatus::Pending,
            "running" => StepStatus::Running,
            "success" => StepStatus::Success,
            "failure" => StepStatus::Failure,
            "cancelled" => StepStatus::Cancelled,
            "skipped" => StepStatus::Skipped,
            _ => return Err(()),
        })
    }
}

/// A trigger's `paths` and `ignore_paths`, kept as written so the runner can
/// decide them against the files git says changed.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct PathFilter {
    /// Build only if a changed file matches one of these (empty: any file).
    pub paths: Vec<String>,
    /// Changed files matching these do not count.
    pub ignore_paths: Vec<String>,
}

impl PathFilter {
    /// True when the filter accepts every change.
    pub fn is_empty(&self) -> bool {
        self.paths.is_empty() && self.ignore_paths.is_empty()
    }
}

/// A build: the push it builds, and where it stands.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Build {
    /// The build's number, a small integer users can type.
    pub id: i64,
    /// The pipeline's name.
    pub pipeline: String,
    /// The push it builds (for a rebuild or a trigger, the push it repeats
    /// or makes up). Its fields read through: `build.repo`, `build.commit`.
    pub push: PushEvent,
    /// The host the delivery came from (`None` for manual triggers).
    pub host: Option<String>,
    /// The state.
    pub status: BuildStatus,
    /// Why it is in that state, in words.
    pub reason: Option<String>,
    /// The delivery id that queued it.
    pub delivery: Option<String>,
    /// 1, plus one per interrupted run.
    pub attempt: i64,
    /// When it was queued.
    pub created_at: OffsetDateTime,
    /// When its current run started.
    pub started_at: Option<OffsetDateTime>,
    /// When it ended.
    pub finished_at: Option<OffsetDateTime>,
    /// The path rules the runner decides; empty = none.
    pub path_filters: Vec<PathFilter>,
    /// The `node` of the runner that claimed it last; `None` until claimed
    /// (and again once re-queued).
    pub node: Option<String>,
    /// The revision of the pipeline file it was matched with; `None` for
    /// builds from before revisions were recorded, and for `hookci run`.
    pub pipeline_revision: Option<String>,
}

/// A build is its push plus its state: the push's fields read through, so
/// that callers need not copy them (there is no other `Deref` use).
impl std::ops::Deref for Build {
    type Target = PushEvent;
    fn deref(&self) -> &PushEvent {
        &self.push
    }
}

impl Serialize for Build {
    /// The API's build object: the push's public fields flat beside the
    /// state (clone URLs, message, pusher and path rules stay inside).
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        #[derive(Serialize)]
        struct Shown<'a> {
            id: i64,
            pipeline: &'a str,
            repo: &'a str,
            host: Option<&'a str>,
            event: &'a str,
            #[serde(rename = "ref")]
            git_ref: &'a str,
            branch: Option<&'a str>,
            tag: Option<&'a str>,
            commit: &'a str,
            before: &'a str,
            status: BuildStatus,
            reason: Option<&'a str>,
            delivery: Option<&'a str>,
            attempt: i64,
            created_at: String,
            started_at: Option<String>,
            finished_at: Option<String>,
            #[serde(skip_serializing_if = "Option::is_none")]
            pull_request: Option<&'a PullRequest>,
            node: Option<&'a str>,
            pipeline_revision: Option<&'a str>,
        }
        Shown {
            id: self.id,
            pipeline: &self.pipeline,
            repo: &self.push.repo,
            host: self.host.as_deref(),
            event: self.push.event_name(),
            git_ref: &self.push.git_ref,
            branch: self.push.branch(),
            tag: self.push.tag(),
            commit: self.push.commit_str(),
            before: self.push.before.as_str(),
            status: self.status,
            reason: self.reason.as_deref(),
            delivery: self.delivery.as_deref(),
            attempt: self.attempt,
            created_at: rfc3339(self.created_at),
            started_at: self.started_at.map(rfc3339),
            finished_at: self.finished_at.map(rfc3339),
            pull_request: self.push.pull_request.as_ref(),
            node: self.node.as_deref(),
            pipeline_revision: self.pipeline_revision.as_deref(),
        }
        .serialize(s)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_commit_id_holds_4_to_64_hex_digits_in_lowercase() {
        for ok in ["abcd", "0123456789ab", ZERO_SHA, &"f".repeat(64)] {
            assert_eq!(CommitId::parse(ok).unwrap().as_str(), ok);
        }
        let upper = CommitId::parse("A1B2C3D4E5F6").unwrap();
        assert_eq!(upper, "a1b2c3d4e5f6");
        assert_eq!(upper.to_string(), "a1b2c3d4e5f6");
        assert_eq!(CommitId::parse(ZERO_SHA).unwrap(), CommitId::ZERO);
        assert!(CommitId::ZERO.is_zero() && CommitId::ZERO.is_full());
        assert!(!CommitId::parse("01").is_ok_and(|c| c.is_zero()));
        assert!(!CommitId::parse("0123456789ab").unwrap().is_full());
    }

    #[test]
    fn a_commit_id_refuses_options_empty_non_hex_and_too_long_text() {
        for bad in [
            "--upload-pack=x".to_owned(),
            String::new(),
            "abc".to_owned(),
            "g123456".to_owned(),
            "abcd ".to_owned(),
            "ab/cd".to_owned(),
            "é1234".to_owned(),
            "0".repeat(65),
        ] {
            assert_eq!(CommitId::parse(&bad), Err(InvalidCommitId), "{bad:?}");
            assert!(bad.parse::<CommitId>().is_err(), "{bad:?}");
            assert!(CommitId::try_from(bad.clone()).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn a_commit_id_serializes_as_its_text_and_refuses_invalid_text() {
        let id = CommitId::parse(&"ab".repeat(20)).unwrap();
        let json = serde_json::to_string(&id).unwrap();
        assert_eq!(json, format!("\"{}\"", "ab".repeat(20)));
        assert_eq!(serde_json::from_str::<CommitId>(&json).unwrap(), id);
        assert!(serde_json::from_str::<CommitId>("\"--upload-pack=x\"").is_err());
        assert!(serde_json::from_str::<CommitId>("\"\"").is_err());
        assert!(serde_json::from_str::<CommitId>("1234").is_err());
        let none: Option<CommitId> = serde_json::from_str("null").unwrap();
        assert_eq!(CommitId::or_empty(&none), "");
    }
}
