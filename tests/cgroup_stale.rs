//! The step cgroups a dead daemon left are found by their own state (an
//! empty `daemon` leaf), not by the pid in their name, which may be a
//! zombie's or belong to another process by now (security review L5).

use std::path::PathBuf;

/// The cgroup2 directory this process is in now.
fn own_cgroup() -> PathBuf {
    let cgroups = std::fs::read_to_string("/proc/self/cgroup").expect("cgroup");
    let rel = cgroups
        .lines()
        .find_map(|l| l.strip_prefix("0::"))
        .expect("a cgroup2 line");
    let mounts = std::fs::read_to_string("/proc/self/mounts").expect("mounts");
    let mount = mounts
        .lines()
        .find_map(|l| {
            let f: Vec<&str> = l.split(' ').collect();
            (f.get(2) == Some(&"cgroup2")).then(|| f[1].to_owned())
        })
        .expect("a cgroup2 mount");
    PathBuf::from(mount).join(rel.trim_start_matches('/'))
}

#[test]
fn a_dead_daemons_step_cgroup_is_judged_by_its_leaf_not_by_the_pid_in_its_name() {
    if !hookci::runner::cgroup::available() {
        assert!(
            std::env::var("CI").as_deref() != Ok("true") || !nix::unistd::geteuid().is_root(),
            "step cgroups are not available to root here"
        );
        println!("skipped: no cgroup for steps here (needs root or Delegate=yes, and cgroup2)");
        return;
    }
    // hookci moved this process into `<own>/hookci.<pid>/daemon`.
    let leaf = own_cgroup();
    assert!(leaf.ends_with("daemon"), "{}", leaf.display());
    let own = leaf.parent().and_then(|p| p.parent()).expect("own cgroup");
    // Named after pid 1, which is alive: a pid check would keep it.
    let stale = own.join("hookci.1");
    let step = stale.join("step-0");
    std::fs::create_dir_all(stale.join("daemon")).expect("leaf");
    std::fs::create_dir_all(&step).expect("step");
    let child = std::process::Command::new("sleep")
        .arg("41889")
        .spawn()
        .expect("sleep");
    std::fs::write(step.join("cgroup.procs"), child.id().to_string()).expect("move");

    // Reaped as soon as it dies, so that its cgroup can go.
    let mut child = child;
    let reaper = std::thread::spawn(move || child.wait().expect("reap"));
    let killed = hookci::runner::cgroup::kill_stale();
    assert!(killed >= 1, "{killed}");
    let status = reaper.join().expect("reaper");
    assert!(!status.success(), "{status}");
    // Once its processes are reaped the kernel lets it go.
    let until = std::time::Instant::now() + std::time::Duration::from_secs(5);
    while stale.exists() && std::time::Instant::now() < until {
        let _ = std::fs::remove_dir(&step);
        let _ = std::fs::remove_dir(stale.join("daemon"));
        let _ = std::fs::remove_dir(&stale);
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    assert!(!stale.exists());
}
