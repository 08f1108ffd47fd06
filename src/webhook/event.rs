//! What a delivery's payload asks of hookci. The push itself is
//! [`crate::model::PushEvent`].

use crate::model::{PullRequestClosed, PushEvent};

/// A delivery's payload, read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Parsed {
    /// The host's own name for the event (`push`, `Push Hook`, `repo:push`, ...).
    pub event: String,
    /// The repository's full name, where the payload names one (pings may not).
    pub repo: Option<String>,
    /// What the delivery asks of hookci.
    pub kind: ParsedKind,
}

/// What a delivery asks of hookci.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ParsedKind {
    /// A host checking the hook works; builds nothing.
    Ping,
    /// One or more ref updates (Bitbucket may send several in one delivery).
    Pushes(Vec<PushEvent>),
    /// A pull request opened, reopened or pushed to: builds its head
    /// commit ([`PushEvent::pull_request`] is set).
    PullRequest(Box<PushEvent>),
    /// A pull request closed or merged: its builds that have not ended
    /// are cancelled.
    PullRequestClosed(PullRequestClosed),
    /// An event that builds nothing; the reason says which and why.
    Ignored(String),
}
