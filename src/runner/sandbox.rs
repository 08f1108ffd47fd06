//! The step sandbox (SPEC section 9): each step's shell runs under
//! bubblewrap (`bwrap`), inside hookci's own wrapper, cgroup and process
//! group.
//!
//! What a step sees is an allow-list: the system read-only (`/usr`, `/bin`,
//! `/lib*`, `/sbin`, `/etc`), its workspace and per-build HOME read-write,
//! the mirror objects its checkout borrows read-only, a private `/tmp`, its
//! own `/proc` in a pid namespace, a minimal `/dev`, and the `read_only` /
//! `read_write` paths. There is no `/sys` at all: no cgroup file can be
//! written, so a step cannot leave its step cgroup. hookci's own files
//! (its config directory, the config file, `data_dir`, `pipelines_dir`,
//! every secret file and deploy key) are masked wherever one of those binds
//! would show them: an empty tmpfs over a directory, `/dev/null` over a
//! file. Mounts are ordered by depth, so a mask comes after the bind that
//! contains it, and the workspace comes after the `data_dir` mask that
//! contains it.
//!
//! The step's environment (secrets included) is never in bwrap's argv: the
//! wrapper process gets exactly the step's environment and bwrap passes it
//! on.
//!
//! The step gets a session of its own (`--new-session`, so it cannot push
//! input into a terminal with TIOCSTI) only when hookci has a controlling
//! terminal: without one, the step has none to reach either (a process
//! inherits its controlling terminal, and the sandbox's `/dev` holds no
//! other terminal of the host), and `setsid` in bwrap costs each step
//! several milliseconds of scheduler work (a new autogroup).
//!
//! Whether bwrap works is probed once per (daemon, build user), with the
//! flags a step gets.

use crate::pipeline::sandbox::{Enabled, SandboxKeys};
use std::collections::HashMap;
use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, OnceLock};

/// bwrap is looked for in hookci's own PATH, else in this one.
const DEFAULT_PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

/// The system directories a step reads, in mount order.
const SYSTEM: &[&str] = &[
    "/usr", "/bin", "/sbin", "/lib", "/lib32", "/lib64", "/libx32", "/etc",
];

/// The Debian package that ships bwrap, for the messages that name it.
pub const PACKAGE: &str = "bubblewrap";

/// The files and directories a step must never see, whatever is bound.
#[derive(Debug, Clone, Default)]
pub struct Masks {
    /// Directories (hidden under an empty tmpfs).
    pub dirs: Vec<PathBuf>,
    /// Files (hidden under /dev/null).
    pub files: Vec<PathBuf>,
}

impl Masks {
    /// hookci's own files from the server config: `/etc/hookci`, the config
    /// file and its directory, `data_dir`, `pipelines_dir`, and the config's
    /// secret files.
    pub fn of_config(config: &crate::config::Config) -> Masks {
        let mut m = Masks::default();
        m.dir(Path::new("/etc/hookci"));
        if let Some(file) = &config.source {
            m.file(file);
            if let Some(dir) = absolute(file).as_deref().and_then(Path::parent) {
                m.dir(dir);
            }
        }
        m.dir(&config.data_dir);
        m.dir(&config.pipelines_dir);
        for f in &config.secret_files {
            m.path(f);
        }
        m
    }

    /// Adds a directory (made absolute; a system root such as `/etc`
    /// itself is never masked whole).
    pub fn dir(&mut self, dir: &Path) {
        if let Some(dir) = absolute(dir) {
            let system = SYSTEM.iter().any(|s| Path::new(s).starts_with(&dir));
            if !system && !self.dirs.contains(&dir) {
                self.dirs.push(dir);
            }
        }
    }

    /// Adds a file.
    pub fn file(&mut self, file: &Path) {
        if let Some(file) = absolute(file) {
            if !self.files.contains(&file) {
                self.files.push(file);
            }
        }
    }

    /// Adds a secret's path: a directory or a file, as it is on disk.
    pub fn path(&mut self, p: &Path) {
        if p.is_dir() {
            self.dir(p);
        } else {
            self.file(p);
        }
    }
}

/// An absolute, symlink-free form of `p` (as far as it exists).
fn absolute(p: &Path) -> Option<PathBuf> {
    if let Ok(c) = std::fs::canonicalize(p) {
        return Some(c);
    }
    std::path::absolute(p).ok()
}

/// Whether steps get a sandbox, per build user: the probe's answer.
static PROBES: OnceLock<Mutex<HashMap<BuildUser, Probe>>> = OnceLock::new();

/// Who steps run as: `None` as the daemon, else (uid, gid).
type BuildUser = Option<(u32, u32)>;

/// The probe's answer: bwrap's path, or why steps cannot be sandboxed.
pub type Probe = Result<Arc<PathBuf>, String>;

/// Whether bwrap is installed and works here for steps run as `user`
/// (`None`: as the daemon). Probed once, with the flags a step gets.
pub fn probe(user: Option<(u32, u32)>) -> Probe {
    let probes = PROBES.get_or_init(Mutex::default);
    if let Some(p) = probes.lock().unwrap_or_else(|p| p.into_inner()).get(&user) {
        return p.clone();
    }
    let answer = run_probe(user);
    probes
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .insert(user, answer.clone());
    answer
}

fn run_probe(user: Option<(u32, u32)>) -> Probe {
    use std::os::unix::process::CommandExt;
    let path = std::env::var_os("PATH").unwrap_or_else(|| DEFAULT_PATH.into());
    let Some(found) = std::env::split_paths(&path)
        .map(|d| d.join("bwrap"))
        .find(|p| p.is_file())
    else {
        return Err(format!(
            "bubblewrap (bwrap) is not installed; install the {PACKAGE} package"
        ));
    };
    let bwrap = found.as_path();
    let root = Path::new("/");
    let plan = Plan {
        bwrap: bwrap.to_path_buf(),
        network: false,
        new_session: true,
        read_only: Vec::new(),
        read_write: Vec::new(),
        cwd: root.to_path_buf(),
        home: None,
        masks: Masks::default(),
    };
    let mut cmd = std::process::Command::new(bwrap);
    cmd.args(plan.args())
        .arg("/bin/true")
        .env_clear()
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped());
    if let Some((uid, gid)) = user {
        if nix::unistd::geteuid().is_root() {
            cmd.uid(uid).gid(gid);
        }
    }
    match cmd.output() {
        Ok(out) if out.status.success() => Ok(Arc::new(bwrap.to_path_buf())),
        Ok(out) => {
            let said = String::from_utf8_lossy(&out.stderr);
            let said = said.lines().next().unwrap_or("").trim();
            Err(format!(
                "bwrap does not work here ({}; {said}); it needs unprivileged user namespaces, and a service unit that allows them",
                out.status
            ))
        }
        Err(e) => Err(format!("cannot run {}: {e}", bwrap.display())),
    }
}

/// How a build's steps run, decided once per build.
#[derive(Debug, Clone)]
pub enum Decision {
    /// Under bwrap, with these arguments before the command.
    Sandboxed(Arc<[OsString]>),
    /// Without a sandbox (enabled = false, or auto where bwrap is missing).
    Unsandboxed,
    /// enabled = true, but bwrap cannot run: the build ends `error` with
    /// this reason.
    Refused(String),
}

/// Decides for one build, from the merged keys and the probe.
pub fn decide(keys: &SandboxKeys, probe: &Probe, plan: impl FnOnce(&Path) -> Plan) -> Decision {
    match (keys.enabled.unwrap_or_default(), probe) {
        (Enabled::Off, _) => Decision::Unsandboxed,
        (Enabled::Auto, Err(_)) => Decision::Unsandboxed,
        (Enabled::On, Err(why)) => Decision::Refused(format!("the sandbox is required, but {why}")),
        (Enabled::Auto | Enabled::On, Ok(bwrap)) => Decision::Sandboxed(plan(bwrap).command()),
    }
}

/// One build's sandbox, before it becomes bwrap's arguments.
#[derive(Debug, Clone)]
pub struct Plan {
    /// bwrap itself.
    pub bwrap: PathBuf,
    /// `network`.
    pub network: bool,
    /// `--new-session`: only needed where hookci has a controlling
    /// terminal (see [`has_controlling_terminal`]).
    pub new_session: bool,
    /// `read_only`, plus what the checkout borrows (mirror objects).
    pub read_only: Vec<PathBuf>,
    /// `read_write`, plus the workspace.
    pub read_write: Vec<PathBuf>,
    /// The step's working directory (bound read-write).
    pub cwd: PathBuf,
    /// The per-build HOME (bound read-write).
    pub home: Option<PathBuf>,
    /// What must stay hidden.
    pub masks: Masks,
}

/// One mount, sorted by where it lands.
#[derive(Debug)]
struct Mount {
    dest: PathBuf,
    /// At one path: binds (0) before masks (1).
    order: u8,
    args: Vec<OsString>,
}

impl Plan {
    /// A plan for a build's steps: `keys` merged, `cwd` the checkout,
    /// `home` its HOME, `masks` hookci's files.
    pub fn new(
        bwrap: &Path,
        keys: &SandboxKeys,
        cwd: &Path,
        home: Option<&Path>,
        masks: Masks,
    ) -> Plan {
        let mut read_only = keys.read_only.clone().unwrap_or_default();
        read_only.extend(borrowed_objects(cwd));
        Plan {
            bwrap: bwrap.to_path_buf(),
            network: keys.network.unwrap_or(true),
            new_session: has_controlling_terminal(),
            read_only,
            read_write: keys.read_write.clone().unwrap_or_default(),
            cwd: cwd.to_path_buf(),
            home: home.map(Path::to_path_buf),
            masks,
        }
    }

    /// bwrap and its arguments, up to the command: what
    /// [`crate::runner::step::StepSpec::sandbox`] takes.
    pub fn command(&self) -> Arc<[OsString]> {
        let mut args: Vec<OsString> = Vec::with_capacity(64);
        args.push(self.bwrap.clone().into_os_string());
        args.extend(self.args());
        args.into()
    }

    /// bwrap's arguments, up to the command.
    pub fn args(&self) -> Vec<OsString> {
        let mut out: Vec<OsString> = ["--unshare-all", "--die-with-parent", "--cap-drop", "ALL"]
            .iter()
            .map(OsString::from)
            .collect();
        if self.new_session {
            out.push("--new-session".into());
        }
        if self.network {
            out.push("--share-net".into());
        }
        let mut mounts: Vec<Mount> = Vec::new();
        let mut visible: Vec<PathBuf> = Vec::new();
        for s in SYSTEM {
            let p = Path::new(s);
            let Ok(meta) = std::fs::symlink_metadata(p) else {
                continue;
            };
            if meta.file_type().is_symlink() {
                if let Ok(target) = std::fs::read_link(p) {
                    mounts.push(mount(p, 0, &["--symlink".into(), target.into(), p.into()]));
                }
            } else if meta.is_dir() {
                mounts.push(bind("--ro-bind", p));
                visible.push(p.to_path_buf());
            }
        }
        // A resolv.conf that links into /run (systemd-resolved) would
        // dangle: its target is bound where it is.
        if let Ok(target) = std::fs::canonicalize("/etc/resolv.conf") {
            if !target.starts_with("/etc") && !target.starts_with("/usr") {
                mounts.push(bind("--ro-bind-try", &target));
            }
        }
        mounts.push(mount(
            Path::new("/proc"),
            0,
            &["--proc".into(), "/proc".into()],
        ));
        mounts.push(mount(
            Path::new("/dev"),
            0,
            &["--dev".into(), "/dev".into()],
        ));
        mounts.push(mount(
            Path::new("/tmp"),
            0,
            &["--tmpfs".into(), "/tmp".into()],
        ));
        for p in self.read_only.iter().filter_map(|p| absolute(p)) {
            mounts.push(bind("--ro-bind-try", &p));
            visible.push(p);
        }
        // The probe runs in `/`, which it does not bind.
        let cwd = Some(&self.cwd).filter(|c| c.as_os_str() != "/");
        let own = self.home.iter().chain(cwd);
        for p in self
            .read_write
            .iter()
            .chain(own)
            .filter_map(|p| absolute(p))
        {
            mounts.push(bind("--bind-try", &p));
            visible.push(p);
        }
        let shown = |p: &Path| visible.iter().any(|v| p.starts_with(v));
        for d in self.masks.dirs.iter().filter(|d| shown(d) && d.is_dir()) {
            mounts.push(mount(d, 1, &["--tmpfs".into(), d.into()]));
        }
        for f in self.masks.files.iter().filter(|f| shown(f) && f.exists()) {
            let args = if f.is_dir() {
                vec!["--tmpfs".into(), f.into()]
            } else {
                vec!["--ro-bind".into(), "/dev/null".into(), f.into()]
            };
            mounts.push(Mount {
                dest: f.clone(),
                order: 1,
                args,
            });
        }
        mounts.sort_by_key(|m| (m.dest.components().count(), m.order));
        for m in mounts {
            out.extend(m.args);
        }
        out.push("--chdir".into());
        out.push(self.cwd.clone().into_os_string());
        out.push("--".into());
        out
    }
}

fn mount(dest: &Path, order: u8, args: &[OsString]) -> Mount {
    Mount {
        dest: dest.to_path_buf(),
        order,
        args: args.to_vec(),
    }
}

fn bind(flag: &str, p: &Path) -> Mount {
    mount(p, 0, &[flag.into(), p.into(), p.into()])
}

/// Whether this process has a controlling terminal (`tty_nr` in
/// `/proc/self/stat`); true when that cannot be read, so a step then gets
/// its own session. Read per build: cheap, and never stale.
pub fn has_controlling_terminal() -> bool {
    let Ok(stat) = std::fs::read_to_string("/proc/self/stat") else {
        return true;
    };
    // After `pid (comm)`: state, ppid, pgrp, session, tty_nr.
    let tty = stat
        .rfind(')')
        .and_then(|end| stat[end + 1..].split_ascii_whitespace().nth(4))
        .and_then(|t| t.parse::<i64>().ok());
    tty != Some(0)
}

/// The object directories a checkout borrows through git's `alternates`
/// (its mirror's, read-only): without them git cannot read the history.
fn borrowed_objects(cwd: &Path) -> Vec<PathBuf> {
    let Ok(text) = std::fs::read_to_string(cwd.join(".git/objects/info/alternates")) else {
        return Vec::new();
    };
    text.lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .map(PathBuf::from)
        .filter(|p| p.is_absolute())
        .collect()
}

/// The start log's and `check`'s sentence on how steps run with these keys.
pub fn describe(keys: &SandboxKeys, probe: &Probe) -> (bool, String) {
    match (keys.enabled.unwrap_or_default(), probe) {
        (Enabled::Off, _) => (
            false,
            "the sandbox is off (sandbox.enabled = false): steps run with the daemon's authority and can read what it can".into(),
        ),
        (Enabled::Auto, Err(why)) => (
            false,
            format!("steps run without a sandbox, with the daemon's authority ({why})"),
        ),
        (Enabled::On, Err(why)) => (
            false,
            format!("the sandbox is required but unusable: builds will end in error ({why})"),
        ),
        (_, Ok(bwrap)) => (
            true,
            format!("steps run in a bubblewrap sandbox ({})", bwrap.display()),
        ),
    }
}

/// What the runner needs to sandbox a build: the server's `[sandbox]` and
/// `[limits]`, hookci's own files, and the pipelines (whose secret files
/// every step is kept from).
#[derive(Debug, Clone, Default)]
pub struct Setup {
    /// The server's `[sandbox]`.
    pub keys: SandboxKeys,
    /// The server's `[limits]`.
    pub limits: crate::pipeline::sandbox::LimitKeys,
    /// hookci's own files.
    pub masks: Masks,
    /// The pipelines served (their secret files are masked); `hookci run`
    /// has only its one pipeline.
    pub pipelines: Option<crate::pipeline::PipelineSet>,
}

impl Setup {
    /// From the server config.
    pub fn of_config(config: &crate::config::Config) -> Setup {
        Setup {
            keys: config.sandbox.clone(),
            limits: config.limits.clone(),
            masks: Masks::of_config(config),
            pipelines: None,
        }
    }

    /// hookci's files with every pipeline's secret files (and `pipeline`'s
    /// own, for `hookci run`).
    pub fn masks_for(&self, pipeline: &crate::pipeline::Pipeline) -> Masks {
        let mut masks = self.masks.clone();
        let mut add = |p: &crate::pipeline::Pipeline| {
            masks.file(&p.path);
            for f in &p.secret_files {
                masks.path(f);
            }
        };
        add(pipeline);
        if let Some(set) = &self.pipelines {
            for p in set.current().values() {
                add(p);
            }
        }
        masks
    }
}

/// Probes bwrap (off the async threads) and says in the start log how
/// steps run, and whether `[limits]` are enforced.
pub async fn log_mode(config: &crate::config::Config, user: Option<(u32, u32)>) {
    let probe = tokio::task::spawn_blocking(move || probe(user))
        .await
        .unwrap_or_else(|e| Err(format!("the probe failed: {e}")));
    match describe(&config.sandbox, &probe) {
        (true, sentence) => tracing::info!("{sentence}"),
        (false, sentence) => tracing::warn!("{sentence}"),
    }
    if let Some(why) = limits_note(config) {
        tracing::warn!("{why}");
    }
}

/// `[limits]` that cannot be enforced here, in words (`None`: all can, or
/// none is set in the server config).
pub fn limits_note(config: &crate::config::Config) -> Option<String> {
    let why = crate::runner::cgroup::limits_unavailable()?;
    Some(if config.limits.is_empty() {
        format!("[limits] cannot be enforced here ({why})")
    } else {
        format!("[limits] are NOT enforced: hookci cannot create the cgroups they need ({why})")
    })
}

/// Makes this process non-dumpable: no process of the same user can read
/// its environment or memory (`/proc/PID/environ`, `/proc/PID/mem`, ptrace).
/// Call at the start of `serve` and `run`.
pub fn no_dumping() {
    if let Err(e) = nix::sys::prctl::set_dumpable(false) {
        tracing::warn!(error = %e, "cannot make hookci non-dumpable");
    }
}

/// What `hookci check` says about the sandbox, `run_as` and `[limits]`:
/// (warnings, errors).
pub fn check(
    config: &crate::config::Config,
    pipelines: &std::collections::BTreeMap<String, crate::pipeline::Pipeline>,
) -> (Vec<String>, Vec<String>) {
    let (mut warnings, mut errors) = (Vec::new(), Vec::new());
    let mut user = None;
    match crate::runner::resolve_run_as(config) {
        Ok(u) => user = u,
        Err(e) => errors.push(format!("{e:#}")),
    }
    let probe = probe(user);
    let mut kinds: Vec<SandboxKeys> = vec![config.sandbox.clone()];
    kinds.extend(pipelines.values().map(|p| p.sandbox.over(&config.sandbox)));
    let mut said = std::collections::BTreeSet::new();
    for (i, keys) in kinds.iter().enumerate() {
        let (ok, sentence) = describe(keys, &probe);
        if ok || !said.insert(sentence.clone()) {
            continue;
        }
        let whose = match pipelines.values().nth(i.wrapping_sub(1)) {
            Some(p) if i > 0 => format!("pipeline {}: ", p.name),
            _ => String::new(),
        };
        let mut line = format!("{whose}{sentence}");
        if probe.is_err() && keys.enabled != Some(Enabled::Off) && !line.contains(PACKAGE) {
            line.push_str(&format!(
                "; install the {PACKAGE} package (apt-get install {PACKAGE}) to sandbox steps"
            ));
        }
        if keys.enabled == Some(Enabled::On) {
            errors.push(line);
        } else {
            warnings.push(line);
        }
    }
    // Fork pull requests run only sandboxed unless an admin approved them.
    if let Err(why) = &probe {
        for p in pipelines.values() {
            let builds_prs = p.triggers.iter().any(|t| t.pull_requests.is_some());
            if builds_prs && p.pull_requests.forks == crate::pipeline::ForkPolicy::Build {
                warnings.push(format!(
                    "pipeline {}: forks = \"build\", but steps cannot be sandboxed here ({why}): pull requests from forks will wait for approval",
                    p.name
                ));
            }
        }
    }
    let any_limits = !config.limits.is_empty() || pipelines.values().any(|p| !p.limits.is_empty());
    if let Some(why) = crate::runner::cgroup::check_limits() {
        if any_limits {
            warnings.push(format!(
                "[limits] are NOT enforced: hookci cannot create the cgroups they need ({why})"
            ));
        } else {
            warnings.push(format!("[limits] could not be enforced here ({why})"));
        }
    }
    (warnings, errors)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn plan(new_session: bool) -> Plan {
        Plan {
            bwrap: PathBuf::from("/usr/bin/bwrap"),
            network: true,
            new_session,
            read_only: Vec::new(),
            read_write: Vec::new(),
            cwd: PathBuf::from("/"),
            home: None,
            masks: Masks::default(),
        }
    }

    #[test]
    fn a_step_gets_a_session_of_its_own_only_when_asked() {
        let flag = OsString::from("--new-session");
        assert!(plan(true).args().contains(&flag));
        assert!(!plan(false).args().contains(&flag));
    }

    #[test]
    fn the_controlling_terminal_is_the_one_dev_tty_opens() {
        let opens = std::fs::OpenOptions::new()
            .read(true)
            .open("/dev/tty")
            .is_ok();
        assert_eq!(has_controlling_terminal(), opens);
    }
}
