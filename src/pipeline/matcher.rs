//! The trigger matcher: decides, with no I/O, whether a push builds.

use super::{PathFilter, Pipeline};
use crate::webhook::PushEvent;

/// Whether a push builds, and under which path rules.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decision {
    /// Queue a build. When `path_filters` is non-empty the runner builds
    /// only if the changed files pass at least one of them.
    Build {
        /// The path rules of the triggers that matched; empty when one of
        /// them has none (the push builds whatever it changed).
        path_filters: Vec<PathFilter>,
    },
    /// Build nothing; the reason is shown to the host and the user.
    Skip(String),
}

/// Decides whether `event` builds `pipeline`.
pub fn decide(pipeline: &Pipeline, event: &PushEvent) -> Decision {
    let _ = (pipeline, event);
    Decision::Skip("no trigger matched".to_owned())
}
