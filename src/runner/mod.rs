//! The runner: turns a claimed build into a finished one. Checkout
//! ([`checkout`]), steps ([`step`]) and logs ([`log`]).

pub mod build;
pub mod cgroup;
pub mod checkout;
pub mod leftovers;
pub mod log;
pub mod private_dirs;
pub mod sandbox;
pub mod step;

/// The (uid, gid) steps run as: `run_as` when hookci runs as root, else
/// none (a warning says `run_as` is ignored).
pub fn resolve_run_as(config: &crate::config::Config) -> anyhow::Result<Option<(u32, u32)>> {
    use anyhow::Context as _;
    let Some(name) = &config.run_as else {
        return Ok(None);
    };
    if !nix::unistd::geteuid().is_root() {
        anyhow::bail!(
            "run_as = \"{name}\" needs hookci to run as root (it is not): remove run_as, or start hookci as root"
        );
    }
    let user = nix::unistd::User::from_name(name)
        .with_context(|| format!("cannot look up the run_as user {name}"))?
        .with_context(|| format!("the run_as user {name} does not exist"))?;
    Ok(Some((user.uid.as_raw(), user.gid.as_raw())))
}
