//! Which state changes of a build write a commit status report: the rule
//! every backend shares, stated once here, in no backend's SQL.
//!
//! A backend calls [`state_changed`] for every build whose state it changes,
//! inside the transaction that changes it, with an [`Outbox`] that writes
//! into that same transaction. So no code path can change a state and forget
//! its report, and a rolled-back change leaves no report behind.

use super::{BuildStatus, StoreError};
use time::OffsetDateTime;

/// One build's state change, as a backend saw it in its transaction.
#[derive(Debug, Clone, Copy)]
pub struct StateChange<'a> {
    /// The build.
    pub build: i64,
    /// The status context it reports under; `None`: it reports nothing.
    pub context: Option<&'a str>,
    /// The build has `paths` rules (the runner may still skip it).
    pub path_rules: bool,
    /// The state before; `None` when the build was just queued.
    pub from: Option<BuildStatus>,
    /// The state after.
    pub to: BuildStatus,
    /// The build's reason after the change.
    pub reason: Option<&'a str>,
}

/// A report to write to the outbox.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewReport {
    /// The build it reports.
    pub build: i64,
    /// The status context.
    pub context: String,
    /// The build state it reports.
    pub state: BuildStatus,
    /// The build's reason at that state (may be empty).
    pub description: String,
}

impl StateChange<'_> {
    /// The report this change writes, if any:
    /// - a build with no context reports nothing;
    /// - a change that leaves the state as it was reports nothing;
    /// - `skipped` is never reported (nothing ran: the commit gets no status);
    /// - a build with `paths` rules reports only its final state: until the
    ///   runner decided from git, it may still be skipped;
    /// - a newly queued build reports `queued` with the description
    ///   "queued", a newly waiting one `waiting` with "waiting for
    ///   approval"; every other change its reason.
    pub fn report(&self) -> Option<NewReport> {
        let context = self.context?;
        if self.from == Some(self.to) || self.to == BuildStatus::Skipped {
            return None;
        }
        if self.path_rules && !self.to.is_final() {
            return None;
        }
        let description = match (self.from, self.to) {
            (None, BuildStatus::Waiting) => "waiting for approval".to_owned(),
            (None, _) => "queued".to_owned(),
            (Some(_), _) => self.reason.unwrap_or_default().to_owned(),
        };
        if self.from.is_none() && !matches!(self.to, BuildStatus::Queued | BuildStatus::Waiting) {
            return None;
        }
        Some(NewReport {
            build: self.build,
            context: context.to_owned(),
            state: self.to,
            description,
        })
    }
}

/// Where a backend writes reports: its open transaction.
pub trait Outbox {
    /// Appends `report`, written at `at`, pending, to the outbox.
    fn write_report(&mut self, report: &NewReport, at: OffsetDateTime) -> Result<(), StoreError>;
}

/// Writes the report `change` calls for, if any, through `outbox`. Every
/// backend calls this for every state change, in the changing transaction.
pub fn state_changed(
    outbox: &mut impl Outbox,
    change: StateChange<'_>,
    at: OffsetDateTime,
) -> Result<(), StoreError> {
    match change.report() {
        Some(report) => outbox.write_report(&report, at),
        None => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use BuildStatus::*;

    fn change(
        context: bool,
        path_rules: bool,
        from: Option<BuildStatus>,
        to: BuildStatus,
    ) -> Option<(BuildStatus, String)> {
        StateChange {
            build: 1,
            context: context.then_some("ci"),
            path_rules,
            from,
            to,
            reason: Some("why"),
        }
        .report()
        .map(|r| (r.state, r.description))
    }

    /// What, context?, path rules?, from, to, the report wanted.
    type Row = (
        &'static str,
        bool,
        bool,
        Option<BuildStatus>,
        BuildStatus,
        Option<(BuildStatus, String)>,
    );

    #[test]
    fn the_rule_as_a_table() {
        let yes = |s: BuildStatus, d: &str| Some((s, d.to_owned()));
        #[rustfmt::skip]
        let rows: &[Row] = &[
            ("queued reports queued",              true,  false, None,          Queued,    yes(Queued, "queued")),
            ("no context, no report",              false, false, None,          Queued,    None),
            ("path rules: not while queued",       true,  true,  None,          Queued,    None),
            ("waiting reports waiting",            true,  false, None,          Waiting,   yes(Waiting, "waiting for approval")),
            ("an approval reports queued",         true,  false, Some(Waiting), Queued,    yes(Queued, "why")),
            ("a claim reports running",            true,  false, Some(Queued),  Running,   yes(Running, "why")),
            ("path rules: not when running",       true,  true,  Some(Queued),  Running,   None),
            ("path rules: the end is reported",    true,  true,  Some(Running), Failure,   yes(Failure, "why")),
            ("a requeue reports queued again",     true,  false, Some(Running), Queued,    yes(Queued, "why")),
            ("path rules: no requeue report",      true,  true,  Some(Running), Queued,    None),
            ("skipped is never reported",          true,  false, Some(Running), Skipped,   None),
            ("no change, no report",               true,  false, Some(Running), Running,   None),
            ("a cancelled queued build reports",   true,  false, Some(Queued),  Cancelled, yes(Cancelled, "why")),
            ("path rules: a cancel is reported",   true,  true,  Some(Queued),  Cancelled, yes(Cancelled, "why")),
            ("recovery's error is reported",       true,  false, Some(Running), Error,     yes(Error, "why")),
        ];
        for (what, context, path_rules, from, to, want) in rows {
            assert_eq!(&change(*context, *path_rules, *from, *to), want, "{what}");
        }
    }
}
