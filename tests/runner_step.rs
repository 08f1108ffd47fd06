//! Steps as real subprocesses: what a step sees, what it prints, and that
//! nothing it starts outlives it.

#[path = "support/prereq.rs"]
mod prereq;

use hookci::pipeline::Shell;
use hookci::pipeline::sandbox::{LimitKeys, SandboxKeys};
use hookci::runner::log::LogWriter;
use hookci::runner::sandbox;
use hookci::runner::step::{StepOutcome, StepSpec, chown_tree, init_reaper, run_step};
use hookci::secret::Secret;
use std::collections::BTreeSet;
use std::path::Path;
use std::time::{Duration, Instant};
use tokio_util::sync::CancellationToken;

/// A step in `dir` with a small, known environment; `id` makes the build
/// marker unique to the test (tests run side by side in one process). It
/// runs in the sandbox wherever bwrap works, as the daemon's steps do by
/// default.
fn spec(dir: &Path, id: &str, script: &str) -> StepSpec {
    init_reaper().unwrap();
    let sandbox = sandbox::probe(None).ok().map(|bwrap| {
        let keys = SandboxKeys::default();
        sandbox::Plan::new(&bwrap, &keys, dir, None, sandbox::Masks::default()).command()
    });
    StepSpec {
        name: "test".into(),
        script: script.into(),
        shell: Shell::Sh,
        cwd: dir.to_path_buf(),
        env: vec![
            ("PATH".into(), "/usr/local/bin:/usr/bin:/bin".into()),
            ("HOME".into(), dir.display().to_string()),
            ("HOOKCI_BUILD_ID".into(), format!("test-{id}")),
        ],
        timeout: Some(Duration::from_secs(20)),
        user: None,
        kill_grace: Duration::from_millis(500),
        sandbox,
        limits: LimitKeys::default(),
    }
}

/// Runs the step with a fresh log; returns its outcome and the log's text.
async fn run(spec: &StepSpec, dir: &Path) -> (StepOutcome, String) {
    run_with(spec, dir, &CancellationToken::new(), 1 << 30).await
}

async fn run_with(
    spec: &StepSpec,
    dir: &Path,
    cancel: &CancellationToken,
    cap: u64,
) -> (StepOutcome, String) {
    let path = dir.join(format!("{}.log", spec.name));
    let mut log = LogWriter::create(&path, &[Secret::new("not-printed")], cap).unwrap();
    let outcome = run_step(spec, &mut log, cancel).await;
    log.finish().await.unwrap();
    let text = String::from_utf8_lossy(&std::fs::read(&path).unwrap()).into_owned();
    (outcome, text)
}

/// Live processes whose command line contains `needle`.
fn processes_with(needle: &str) -> Vec<String> {
    let mut found = Vec::new();
    for entry in std::fs::read_dir("/proc").unwrap().flatten() {
        let name = entry.file_name();
        let Some(pid) = name
            .to_str()
            .filter(|n| n.bytes().all(|b| b.is_ascii_digit()))
        else {
            continue;
        };
        let Ok(cmdline) = std::fs::read(entry.path().join("cmdline")) else {
            continue;
        };
        let cmdline = String::from_utf8_lossy(&cmdline).replace('\0', " ");
        if cmdline.contains(needle) {
            found.push(format!("{pid}: {cmdline}"));
        }
    }
    found
}

fn status_kib(field: &str) -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    status
        .lines()
        .find_map(|l| l.strip_prefix(field))
        .and_then(|rest| rest.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap()
}

#[tokio::test]
async fn the_environment_a_step_sees_is_exactly_its_spec_env() {
    let dir = tempfile::tempdir().unwrap();
    let mut spec = spec(dir.path(), "env", "tr '\\0' '\\n' < /proc/$$/environ");
    spec.env.push(("WITH_SPACES".into(), "a b = c".into()));
    spec.env.push(("EMPTY".into(), String::new()));
    let (outcome, text) = run(&spec, dir.path()).await;
    assert_eq!(outcome, StepOutcome::Exited(0), "{text}");

    let mut seen: BTreeSet<String> = text.lines().map(str::to_owned).collect();
    if spec.sandbox.is_some() {
        // bwrap sets PWD to the directory it starts the step in.
        assert!(
            seen.remove(&format!("PWD={}", dir.path().display())),
            "{seen:?}"
        );
    }
    let given: BTreeSet<String> = spec.env.iter().map(|(k, v)| format!("{k}={v}")).collect();
    assert_eq!(seen, given);

    // Nothing of this process's environment, unless the spec gives it its
    // own value (PATH, HOME).
    let mine: Vec<(String, String)> = std::env::vars().collect();
    assert!(!mine.is_empty());
    for (name, value) in mine {
        let leaked = format!("{name}={value}");
        assert!(!seen.contains(&leaked), "{name} leaked into the step");
    }
}

#[tokio::test]
async fn the_working_directory_is_the_specs_cwd() {
    let dir = tempfile::tempdir().unwrap();
    let cwd = dir.path().join("checkout");
    std::fs::create_dir(&cwd).unwrap();
    let mut spec = spec(&cwd, "cwd", "pwd -P");
    spec.name = "cwd".into();
    let (outcome, text) = run(&spec, dir.path()).await;
    assert_eq!(outcome, StepOutcome::Exited(0));
    assert_eq!(
        text.trim(),
        cwd.canonicalize().unwrap().display().to_string()
    );
}

#[tokio::test]
async fn stdin_is_dev_null_so_a_reader_gets_eof_at_once() {
    let dir = tempfile::tempdir().unwrap();
    let script = "cat; echo \"cat done\"; readlink /proc/$$/fd/0";
    let mut spec = spec(dir.path(), "stdin", script);
    spec.timeout = Some(Duration::from_secs(5));
    let started = Instant::now();
    let (outcome, text) = run(&spec, dir.path()).await;
    assert_eq!(outcome, StepOutcome::Exited(0));
    assert_eq!(text, "cat done\n/dev/null\n");
    assert!(started.elapsed() < Duration::from_secs(3));
}

#[tokio::test]
async fn exit_codes_and_signals_become_outcomes() {
    let dir = tempfile::tempdir().unwrap();
    let cases = [
        ("true", StepOutcome::Exited(0), true),
        ("exit 3", StepOutcome::Exited(3), false),
        ("false; echo never", StepOutcome::Exited(1), false),
        ("kill -9 $$", StepOutcome::Signalled(9), false),
    ];
    for (script, expected, ok) in cases {
        let spec = spec(dir.path(), "codes", script);
        // bwrap reports a child killed by signal N as exit 128 + N.
        let expected = match expected {
            StepOutcome::Signalled(n) if spec.sandbox.is_some() => StepOutcome::Exited(128 + n),
            other => other,
        };
        let (outcome, text) = run(&spec, dir.path()).await;
        assert_eq!(outcome, expected, "{script}");
        assert_eq!(outcome.succeeded(), ok, "{script}");
        assert!(!text.contains("never"), "-e stops at the first failure");
    }
}

#[tokio::test]
async fn outcomes_read_as_a_builds_reason() {
    assert_eq!(StepOutcome::Exited(101).to_string(), "exited 101");
    assert_eq!(StepOutcome::Signalled(9).to_string(), "killed by signal 9");
    assert_eq!(
        StepOutcome::TimedOut(Duration::from_secs(1800)).to_string(),
        "timed out after 30m"
    );
    assert_eq!(StepOutcome::Cancelled.to_string(), "cancelled");
    assert_eq!(
        StepOutcome::SpawnFailed("no shell".into()).to_string(),
        "could not start: no shell"
    );
}

#[tokio::test]
async fn stdout_and_stderr_both_land_in_the_log_in_order() {
    let dir = tempfile::tempdir().unwrap();
    let script = "echo one; sleep 0.05; echo two >&2; sleep 0.05; echo three";
    let spec = spec(dir.path(), "streams", script);
    let (outcome, text) = run(&spec, dir.path()).await;
    assert_eq!(outcome, StepOutcome::Exited(0));
    assert_eq!(text, "one\ntwo\nthree\n");
}

/// The script that alternates a line on stdout and one on stderr `n`
/// times, with no pause, and the log it must leave.
fn interleaved(n: usize) -> (String, String) {
    let script =
        format!("i=0; while [ $i -lt {n} ]; do echo out $i; echo err $i >&2; i=$((i+1)); done");
    let expected: String = (0..n).map(|i| format!("out {i}\nerr {i}\n")).collect();
    (script, expected)
}

#[tokio::test]
async fn stdout_and_stderr_alternating_without_pause_keep_their_order() {
    let dir = tempfile::tempdir().unwrap();
    let (script, expected) = interleaved(400);
    let spec = spec(dir.path(), "interleaved", &script);
    let (outcome, text) = run(&spec, dir.path()).await;
    assert_eq!(outcome, StepOutcome::Exited(0));
    assert!(text == expected, "reordered: {text:.400}");
}

#[tokio::test]
async fn a_bash_step_runs_in_bash() {
    let dir = tempfile::tempdir().unwrap();
    let mut spec = spec(dir.path(), "bash", "[[ -n $BASH_VERSION ]] && echo bash");
    spec.shell = Shell::Bash;
    let (outcome, text) = run(&spec, dir.path()).await;
    assert_eq!(outcome, StepOutcome::Exited(0));
    assert_eq!(text, "bash\n");
}

#[tokio::test]
async fn a_payload_value_in_the_environment_runs_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let evil = "$(touch pwned) `touch pwned2` ; touch pwned3 && echo \"$HOME\" '\\";
    let mut spec = spec(dir.path(), "inject", "printf '%s' \"$X\"");
    spec.env.push(("X".into(), evil.into()));
    let (outcome, text) = run(&spec, dir.path()).await;
    assert_eq!(outcome, StepOutcome::Exited(0));
    assert_eq!(text, evil);
    for name in ["pwned", "pwned2", "pwned3"] {
        assert!(!dir.path().join(name).exists(), "{name} was created");
    }
}

#[tokio::test]
async fn a_step_that_cannot_start_is_a_spawn_failure() {
    let dir = tempfile::tempdir().unwrap();
    let spec = spec(&dir.path().join("missing"), "spawn", "true");
    let (outcome, _) = run(&spec, dir.path()).await;
    let StepOutcome::SpawnFailed(why) = &outcome else {
        panic!("{outcome:?}");
    };
    assert!(why.contains("missing"), "{why}");
    assert!(outcome.to_string().starts_with("could not start: "));
}

#[tokio::test]
async fn a_timeout_kills_the_step_and_its_backgrounded_grandchild() {
    let dir = tempfile::tempdir().unwrap();
    let mut spec = spec(dir.path(), "timeout", "sleep 31337 & sleep 31338");
    spec.timeout = Some(Duration::from_millis(300));
    let started = Instant::now();
    let (outcome, text) = run(&spec, dir.path()).await;
    assert_eq!(outcome, StepOutcome::TimedOut(Duration::from_millis(300)));
    assert!(started.elapsed() < Duration::from_secs(5));
    assert!(text.contains("timed out after 300ms"), "{text}");
    assert_eq!(processes_with("31337"), Vec::<String>::new());
    assert_eq!(processes_with("31338"), Vec::<String>::new());
}

/// Runs `script`, which exits 0 and leaves two processes (their command
/// lines hold `needle`) running, and checks that the step stopped both.
async fn exits_0_and_leaves_nothing(dir: &Path, id: &str, script: &str, needle: &str) {
    let spec = spec(dir, id, script);
    let (outcome, text) = run(&spec, dir).await;
    assert_eq!(outcome, StepOutcome::Exited(0), "{text}");
    // In the sandbox, the kernel ends the step's pid namespace with its
    // shell, before the sweep looks.
    assert!(
        spec.sandbox.is_some() || text.contains("stopped 2 processes it left running"),
        "{text}"
    );
    assert_eq!(processes_with(needle), Vec::<String>::new());
}

#[tokio::test]
async fn a_process_that_escaped_with_setsid_is_killed_after_a_clean_exit() {
    let dir = tempfile::tempdir().unwrap();
    // One escapes and stays our grandchild; the other escapes and is
    // orphaned at once (its parent exits), so it is re-parented to us.
    let script = "
        setsid sleep 31339 &
        until [ \"$(cut -d' ' -f6 /proc/$!/stat)\" = \"$!\" ]; do sleep 0.01; done
        setsid sh -c 'sleep 31339 & echo $! > orphan.pid'
        echo started
    ";
    exits_0_and_leaves_nothing(dir.path(), "setsid", script, "31339").await;
}

#[tokio::test]
async fn a_process_that_escaped_with_setsid_and_a_cleared_environment_is_killed() {
    if !hookci::runner::cgroup::available() {
        prereq::missing("no cgroup for steps here (needs root or Delegate=yes, and cgroup2)");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    // No process group, no session and no marker left to find it by: only
    // its cgroup says it belongs to the step.
    let script = "
        setsid env -i /bin/sleep 31343 &
        setsid env -i sh -c '/bin/sleep 31343 & echo started'
    ";
    exits_0_and_leaves_nothing(dir.path(), "setsid-env", script, "31343").await;
}

#[tokio::test]
async fn a_process_ignoring_sigterm_is_killed_after_the_grace() {
    let dir = tempfile::tempdir().unwrap();
    let mut spec = spec(dir.path(), "trap", "trap '' TERM; sleep 31340");
    spec.timeout = Some(Duration::from_millis(200));
    spec.kill_grace = Duration::from_millis(400);
    let started = Instant::now();
    let (outcome, text) = run(&spec, dir.path()).await;
    let took = started.elapsed();
    assert_eq!(outcome, StepOutcome::TimedOut(Duration::from_millis(200)));
    assert!(took >= Duration::from_millis(600), "{took:?}");
    assert!(took < Duration::from_secs(5), "{took:?}");
    assert!(text.contains("sending SIGKILL"), "{text}");
    assert_eq!(processes_with("31340"), Vec::<String>::new());
}

#[tokio::test]
async fn a_leftover_ignoring_sigterm_after_a_clean_exit_is_killed_too() {
    let dir = tempfile::tempdir().unwrap();
    let script = "(trap '' TERM; sleep 31344) & echo bye";
    let mut spec = spec(dir.path(), "trap-left", script);
    spec.kill_grace = Duration::from_millis(300);
    let (outcome, _) = run(&spec, dir.path()).await;
    assert_eq!(outcome, StepOutcome::Exited(0));
    assert_eq!(processes_with("31344"), Vec::<String>::new());
}

#[tokio::test]
async fn cancelling_the_token_stops_the_step() {
    let dir = tempfile::tempdir().unwrap();
    let spec = spec(dir.path(), "cancel", "echo running; sleep 31349");
    let cancel = CancellationToken::new();
    let trigger = cancel.clone();
    tokio::spawn(async move {
        tokio::time::sleep(Duration::from_millis(200)).await;
        trigger.cancel();
    });
    let started = Instant::now();
    let (outcome, text) = run_with(&spec, dir.path(), &cancel, 1 << 20).await;
    assert_eq!(outcome, StepOutcome::Cancelled);
    assert!(started.elapsed() < Duration::from_secs(5));
    assert!(text.starts_with("running\n"), "{text}");
    assert_eq!(processes_with("31349"), Vec::<String>::new());

    // Already cancelled: nothing starts.
    let spec2 = StepSpec {
        script: "touch started".into(),
        ..spec
    };
    let (outcome, _) = run_with(&spec2, dir.path(), &cancel, 1 << 20).await;
    assert_eq!(outcome, StepOutcome::Cancelled);
    assert!(!dir.path().join("started").exists());
}

#[tokio::test]
async fn a_step_printing_a_gibibyte_is_capped_and_memory_stays_flat() {
    let dir = tempfile::tempdir().unwrap();
    let mut spec = spec(
        dir.path(),
        "gib",
        "head -c 1073741824 /dev/zero; echo done >&2",
    );
    spec.timeout = Some(Duration::from_secs(120));
    let cap: u64 = 64 << 20;
    let rss_before = status_kib("VmRSS:");
    let hwm_before = status_kib("VmHWM:");
    let path = dir.path().join("gib.log");
    let mut log = LogWriter::create(&path, &[Secret::new("zzzzzzzzzzzz")], cap).unwrap();
    let outcome = run_step(&spec, &mut log, &CancellationToken::new()).await;
    log.line("==> step gib exited 0").await.unwrap();
    log.finish().await.unwrap();
    assert_eq!(outcome, StepOutcome::Exited(0));
    // Measured before this test reads the log back.
    let rss_growth = status_kib("VmRSS:").saturating_sub(rss_before);
    let hwm_growth = status_kib("VmHWM:").saturating_sub(hwm_before);
    eprintln!("RSS grew by {rss_growth} KiB, peak by {hwm_growth} KiB");
    assert!(rss_growth < 64 * 1024, "RSS grew by {rss_growth} KiB");
    assert!(hwm_growth < 64 * 1024, "peak RSS grew by {hwm_growth} KiB");

    let size = std::fs::metadata(&path).unwrap().len();
    assert!(size > cap && size < cap + 200, "{size}");
    let mut file = std::fs::File::open(&path).unwrap();
    std::io::Seek::seek(&mut file, std::io::SeekFrom::Start(cap)).unwrap();
    let mut tail = String::new();
    std::io::Read::read_to_string(&mut file, &mut tail).unwrap();
    assert_eq!(
        tail,
        format!(
            "\n[hookci] log truncated: the build printed more than {cap} bytes\n==> step gib exited 0\n"
        )
    );
}

#[tokio::test]
async fn a_step_runs_as_the_given_user_and_chown_tree_hands_it_the_workspace() {
    if !nix::unistd::geteuid().is_root() {
        prereq::missing("this test needs root");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let ws = dir.path().join("ws");
    std::fs::create_dir_all(ws.join("a/b")).unwrap();
    std::fs::write(ws.join("a/b/file"), "x").unwrap();
    let outside = dir.path().join("outside");
    std::fs::write(&outside, "root's").unwrap();
    std::os::unix::fs::symlink(&outside, ws.join("a/link")).unwrap();
    // The temp dir itself is root's and private: let the user reach `ws`.
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();

    chown_tree(&ws, 65534, 65534).unwrap();
    use std::os::unix::fs::MetadataExt;
    for p in ["", "a", "a/b", "a/b/file"] {
        assert_eq!(std::fs::metadata(ws.join(p)).unwrap().uid(), 65534, "{p}");
    }
    assert_eq!(
        std::fs::symlink_metadata(ws.join("a/link")).unwrap().uid(),
        65534
    );
    assert_eq!(
        std::fs::metadata(&outside).unwrap().uid(),
        0,
        "a link's target is not followed"
    );

    let mut spec = spec(&ws, "user", "id -u; id -g; id -G; touch mine");
    spec.user = Some((65534, 65534));
    let (outcome, text) = run(&spec, dir.path()).await;
    assert_eq!(outcome, StepOutcome::Exited(0), "{text}");
    assert_eq!(text, "65534\n65534\n65534\n");
    assert_eq!(std::fs::metadata(ws.join("mine")).unwrap().uid(), 65534);
}

/// Starts `script` as a step and drops it mid-step (an aborted task: no
/// sweep runs), then waits until no process whose command line holds one of
/// `needles` is left (bounded: 5 s).
async fn dropped_mid_step_leaves_nothing(id: &str, script: &str, needles: &[&str]) {
    let dir = tempfile::tempdir().unwrap();
    let spec = spec(dir.path(), id, script);
    let path = dir.path().join("drop.log");
    let mut log = LogWriter::create(&path, &[], 1 << 20).unwrap();
    let cancel = CancellationToken::new();
    let step = run_step(&spec, &mut log, &cancel);
    let _ = tokio::time::timeout(Duration::from_millis(300), step).await;
    let gone = Instant::now() + Duration::from_secs(5);
    while needles.iter().any(|n| !processes_with(n).is_empty()) {
        assert!(Instant::now() < gone, "{:?}", processes_with("3134"));
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test]
async fn dropping_a_running_step_kills_what_escaped_its_group_too() {
    if !hookci::runner::cgroup::available() {
        prereq::missing("no cgroup for steps here (needs root or Delegate=yes, and cgroup2)");
        return;
    }
    // No group, session or marker to find the first by: the cgroup goes.
    dropped_mid_step_leaves_nothing(
        "drop-escape",
        "setsid env -i /bin/sleep 31347 & sleep 31348",
        &["31347", "31348"],
    )
    .await;
}

#[tokio::test]
async fn dropping_a_running_step_kills_its_group() {
    dropped_mid_step_leaves_nothing("drop", "sleep 31345 & sleep 31346", &["31345", "31346"]).await;
}
