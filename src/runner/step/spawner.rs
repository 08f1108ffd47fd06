//! One long-lived thread that starts every step.
//!
//! A process's parent-death signal (`PR_SET_PDEATHSIG`, which bwrap's
//! `--die-with-parent` sets) follows the *thread* that forked it, not the
//! process: a step started from one of tokio's blocking threads would be
//! killed when that thread exits after a few idle seconds. So all steps are
//! started here, on a thread that lives as long as hookci, and only the
//! result travels back.

use std::sync::OnceLock;
use std::sync::mpsc::{Sender, channel};

type Task = Box<dyn FnOnce() + Send>;

/// The spawner thread's queue; `None` if the thread could not start.
static SPAWNER: OnceLock<Option<Sender<Task>>> = OnceLock::new();

fn sender() -> Option<&'static Sender<Task>> {
    SPAWNER
        .get_or_init(|| {
            let (tx, rx) = channel::<Task>();
            std::thread::Builder::new()
                .name("hookci-spawner".into())
                .spawn(move || {
                    for task in rx {
                        task();
                    }
                })
                .ok()
                .map(|_| tx)
        })
        .as_ref()
}

/// Runs `f` on the spawner thread and returns its result (`None` if it
/// panicked). Where that thread is gone, `f` runs here instead.
pub(super) async fn run<T: Send + 'static>(f: impl FnOnce() -> T + Send + 'static) -> Option<T> {
    let (tx, rx) = tokio::sync::oneshot::channel();
    let task: Task = Box::new(move || {
        let _ = tx.send(f());
    });
    match sender() {
        Some(s) => {
            if let Err(returned) = s.send(task) {
                (returned.0)();
            }
        }
        None => task(),
    }
    rx.await.ok()
}
