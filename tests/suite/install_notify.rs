//! `Type=notify`: the real daemon talks to a real unix datagram socket named
//! by `$NOTIFY_SOCKET`, as systemd's would be (issue 10).

use crate::common;

use common::Daemon;
use std::os::unix::net::UnixDatagram;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

/// Starts `hookci serve` in `dir` with `NOTIFY_SOCKET=notify_socket` and a
/// watchdog.
fn serve(dir: &Path, notify_socket: &str) -> Daemon {
    std::fs::create_dir_all(dir.join("pipelines")).unwrap();
    let config = dir.join("hookci.toml");
    std::fs::write(
        &config,
        "listen = \"127.0.0.1:0\"\nmax_parallel_builds = 0\n",
    )
    .unwrap();
    let child = Command::new(env!("CARGO_BIN_EXE_hookci"))
        .arg("serve")
        .arg("--config")
        .arg(&config)
        .env("NOTIFY_SOCKET", notify_socket)
        .env("WATCHDOG_USEC", "200000")
        .env_remove("WATCHDOG_PID")
        .env("HOOKCI_LOG", "warn")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn hookci");
    Daemon(child)
}

/// Reads datagrams until one contains `want`; every message seen is
/// returned. The read timeout and the message count only bound a broken
/// daemon (the watchdog, every 100 ms, keeps the socket busy).
fn wait_for(socket: &UnixDatagram, want: &str, seen: &mut Vec<String>) -> String {
    let mut buf = vec![0u8; 4096];
    for _ in 0..300 {
        let n = socket
            .recv(&mut buf)
            .unwrap_or_else(|e| panic!("no {want:?} from hookci ({e}); saw {seen:?}"));
        let msg = String::from_utf8_lossy(&buf[..n]).into_owned();
        seen.push(msg.clone());
        if msg.lines().any(|l| l == want || l.starts_with(want)) {
            return msg;
        }
    }
    panic!("no {want:?} from hookci; saw {seen:?}");
}

fn check_protocol(socket: &UnixDatagram, daemon: &Daemon) {
    socket
        .set_read_timeout(Some(Duration::from_secs(60)))
        .unwrap();
    let mut seen = Vec::new();
    let ready = wait_for(socket, "READY=1", &mut seen);
    assert!(
        ready.lines().any(|l| l == "STATUS=0 running, 0 queued"),
        "{ready:?}"
    );
    let dog = wait_for(socket, "WATCHDOG=1", &mut seen);
    assert!(dog.contains("STATUS=0 running, 0 queued"), "{dog:?}");
    // SIGHUP: RELOADING=1 with the monotonic clock, then READY=1 again.
    let pid = nix::unistd::Pid::from_raw(daemon.0.id() as i32);
    nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGHUP).unwrap();
    let reloading = wait_for(socket, "RELOADING=1", &mut seen);
    assert!(
        reloading.lines().any(|l| l
            .strip_prefix("MONOTONIC_USEC=")
            .is_some_and(|v| v.parse::<u64>().is_ok())),
        "{reloading:?}"
    );
    wait_for(socket, "READY=1", &mut seen);
    // SIGTERM: STOPPING=1.
    nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM).unwrap();
    wait_for(socket, "STOPPING=1", &mut seen);
}

#[test]
fn a_path_notify_socket_receives_ready_watchdog_status_and_reloading() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("notify.sock");
    let socket = UnixDatagram::bind(&path).unwrap();
    let mut daemon = serve(dir.path(), path.to_str().unwrap());
    check_protocol(&socket, &daemon);
    let status = daemon.0.wait().unwrap();
    assert!(status.success(), "{status}");
}

#[test]
fn an_abstract_notify_socket_works_too() {
    use std::os::linux::net::SocketAddrExt;
    let dir = tempfile::tempdir().unwrap();
    let name = format!("hookci-test-{}", std::process::id());
    let addr = std::os::unix::net::SocketAddr::from_abstract_name(name.as_bytes()).unwrap();
    let socket = UnixDatagram::bind_addr(&addr).unwrap();
    let daemon = serve(dir.path(), &format!("@{name}"));
    check_protocol(&socket, &daemon);
}
