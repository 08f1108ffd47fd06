//! Where a pipeline's credentials may go: the checks that keep every
//! credential's destination in the configuration, never in a delivery.

use super::check::Checker;
use super::raw::RawPipeline;

/// Records an error for each way `raw` would let a delivery steer a
/// credential:
/// - a `[status] token` with neither `host` nor `[status] provider`: the
///   provider (which decides how the token is sent) would come from the
///   delivery's headers;
/// - `[clone]` credentials or `[secrets]` without `clone_url`: the payload
///   would choose where the token goes and which code sees the secrets;
/// - `insecure_no_signature = true` with any credential or secret: anyone
///   who can reach hookci could make it use them.
pub(super) fn check(c: &mut Checker<'_>, raw: &RawPipeline) {
    if let Some(token) = &raw.status.token {
        if raw.host.is_none() && raw.status.provider.is_none() {
            c.error(
                Some(&token.span()),
                "status.token needs host or [status] provider: the provider that uses the token comes from the configuration, never from a delivery's headers",
            );
        }
    }
    let clone_credential = raw
        .clone
        .token
        .as_ref()
        .map(|t| ("[clone] token", t.span()))
        .or_else(|| {
            raw.clone
                .ssh_key
                .as_ref()
                .map(|k| ("[clone] ssh_key", k.span()))
        })
        .or_else(|| raw.secrets.keys().next().map(|k| ("[secrets]", k.span())));
    if let Some((what, span)) = &clone_credential {
        if raw.clone_url.is_none() {
            c.error(
                Some(span),
                format!(
                    "{what} needs clone_url: without it the delivery names the repository, and so where credentials go and which code sees the secrets"
                ),
            );
        }
    }
    if let Some(insecure) = raw.insecure_no_signature.as_ref().filter(|i| *i.get_ref()) {
        let status_credential = raw.status.token.as_ref().map(|_| "[status] token").or(raw
            .status
            .secret
            .as_ref()
            .map(|_| "[status] secret"));
        if let Some(what) = clone_credential.map(|(w, _)| w).or(status_credential) {
            c.error(
                Some(&insecure.span()),
                format!(
                    "insecure_no_signature = true cannot go with {what}: anyone who can reach hookci could make it use them; set secret instead"
                ),
            );
        }
    }
}
