//! The systemd notification protocol (`sd_notify`), for `Type=notify`.
//!
//! systemd names a unix datagram socket in `$NOTIFY_SOCKET` (a path, or an
//! abstract name written with a leading `@`). hookci sends `READY=1` once
//! the store is open and the socket listens, `STATUS=` lines such as
//! "3 running, 12 queued", `WATCHDOG=1` from the loop that proves the store's
//! writer still commits (only when `$WATCHDOG_USEC` asks for it), and
//! `RELOADING=1` / `READY=1` around a SIGHUP reload. Without
//! `$NOTIFY_SOCKET` every call does nothing.

use crate::store::Store;
use std::os::unix::net::{SocketAddr, UnixDatagram};
use std::time::Duration;

/// A handle on the notification socket; cheap to clone.
#[derive(Debug, Clone, Default)]
pub struct Notifier {
    target: Option<std::sync::Arc<(UnixDatagram, SocketAddr)>>,
}

impl Notifier {
    /// The socket `$NOTIFY_SOCKET` names, if any. A socket that cannot be
    /// used is logged once and ignored.
    pub fn from_env() -> Notifier {
        match std::env::var_os("NOTIFY_SOCKET") {
            Some(path) if !path.is_empty() => match Notifier::connect(&path) {
                Ok(n) => n,
                Err(e) => {
                    tracing::warn!("cannot use the systemd notification socket: {}", e.kind());
                    Notifier::default()
                }
            },
            _ => Notifier::default(),
        }
    }

    /// A notifier sending to `path` (`@name` for an abstract socket).
    pub fn connect(path: &std::ffi::OsStr) -> std::io::Result<Notifier> {
        use std::os::unix::ffi::OsStrExt;
        let bytes = path.as_bytes();
        let addr = if let Some(name) = bytes.strip_prefix(b"@") {
            use std::os::linux::net::SocketAddrExt;
            SocketAddr::from_abstract_name(name)?
        } else {
            SocketAddr::from_pathname(std::path::Path::new(path))?
        };
        let socket = UnixDatagram::unbound()?;
        Ok(Notifier {
            target: Some(std::sync::Arc::new((socket, addr))),
        })
    }

    /// True when there is a socket to send to.
    pub fn enabled(&self) -> bool {
        self.target.is_some()
    }

    /// Sends one message (`KEY=VALUE` lines). Failures are logged at debug:
    /// systemd going away must not stop the daemon.
    pub fn send(&self, message: &str) {
        if let Some(target) = &self.target {
            let (socket, addr) = &**target;
            if let Err(e) = socket.send_to_addr(message.as_bytes(), addr) {
                tracing::debug!("cannot notify systemd: {}", e.kind());
            }
        }
    }

    /// `READY=1`, with the status line.
    pub fn ready(&self, status: &str) {
        self.send(&format!("READY=1\nSTATUS={status}"));
    }

    /// `RELOADING=1` with the monotonic time systemd asks for.
    pub fn reloading(&self) {
        let usec = nix::time::clock_gettime(nix::time::ClockId::CLOCK_MONOTONIC)
            .map(|t| t.tv_sec() as u64 * 1_000_000 + t.tv_nsec() as u64 / 1_000)
            .unwrap_or(0);
        self.send(&format!("RELOADING=1\nMONOTONIC_USEC={usec}"));
    }

    /// `STOPPING=1`.
    pub fn stopping(&self) {
        self.send("STOPPING=1\nSTATUS=stopping");
    }
}

/// How often to send `WATCHDOG=1`: half of `$WATCHDOG_USEC`, when it is set
/// (and `$WATCHDOG_PID`, if set, is this process).
pub fn watchdog_interval() -> Option<Duration> {
    if let Ok(pid) = std::env::var("WATCHDOG_PID") {
        if pid.trim() != std::process::id().to_string() {
            return None;
        }
    }
    let usec: u64 = std::env::var("WATCHDOG_USEC").ok()?.trim().parse().ok()?;
    (usec > 0).then(|| Duration::from_micros(usec / 2))
}

/// "3 running, 12 queued", from the store.
pub async fn status_line(store: &Store) -> String {
    let running = store
        .activity()
        .await
        .map(|(_, active)| active.iter().filter(|(_, s)| s == "running").count())
        .unwrap_or(0);
    let queued = store.queued_count().await.unwrap_or(0);
    format!("{running} running, {queued} queued")
}

/// Every `interval`: a round trip through the store's writer thread (an
/// empty write), then `WATCHDOG=1` with the status line. A writer that
/// stops answering stops the pings, and systemd restarts the service.
pub async fn watchdog_loop(notifier: Notifier, store: Store, interval: Duration) {
    let mut tick = tokio::time::interval(interval);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        match store.ping_writer().await {
            Ok(_) => {
                let status = status_line(&store).await;
                notifier.send(&format!("WATCHDOG=1\nSTATUS={status}"));
            }
            Err(e) => tracing::error!("the store's writer does not answer: {e}"),
        }
    }
}

/// Without a watchdog: the status line, refreshed when builds change.
pub async fn status_loop(notifier: Notifier, store: Store) {
    let mut events = store.subscribe();
    loop {
        let status = status_line(&store).await;
        notifier.send(&format!("STATUS={status}"));
        match events.recv().await {
            Ok(_) | Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => {}
            Err(tokio::sync::broadcast::error::RecvError::Closed) => return,
        }
    }
}
