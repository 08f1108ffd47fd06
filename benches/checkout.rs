//! What a push costs in git work: `cargo bench --bench checkout`.
//!
//! The runner bench's repository of 3,000 files and 10,000 commits (`git
//! fast-import`, packed) is mirrored once. Then each round pushes one new
//! commit upstream and times, from the push on:
//! - `fresh`: hookci's incremental fetch, then a checkout into a new
//!   workspace (the mirror's objects borrowed);
//! - `pool`: the same fetch, then a checkout into the fresh round's
//!   workspace, parked as after a build (only the changed paths are
//!   written);
//! - `git CLI`: the baseline, in the same run: `git fetch` into a bare
//!   mirror, then `git clone --shared --no-checkout` and `git checkout` of
//!   the commit, which is what a shell script would do.
//!
//! The targets (issue 3): fetch and fresh checkout under 250 ms, from the
//! pool under 50 ms. `--rounds N` changes the number of rounds (default 7).
//! The tests check what these paths do (tests/suite/checkout_git.rs); only their
//! speed is here, where a loaded machine makes a slow run, not a failure.

use hookci::runner::checkout::{CloneSpec, Mirrors};
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

#[path = "support.rs"]
mod support;

use support::{big_repo, fast_import, git};

const WHO: &str = "Ada Tester <ada@example.com> 1700000000 +0000";

/// Pushes one commit that adds a file; returns its id.
fn push(bare: &Path, round: usize) -> String {
    fast_import(
        bare,
        &format!(
            "commit refs/heads/main\ncommitter {WHO}\ndata 5\npush\nfrom refs/heads/main^0\n\
             M 644 inline d{round}/new-{round}.txt\ndata 4\nnew\n\n"
        ),
    );
    // The setup's writes reach the disk first: their writeback would
    // otherwise be timed as part of the checkout.
    let _ = Command::new("sync").status();
    git(bare, &["rev-parse", "main"])
}

fn summary(name: &str, times: &mut [Duration], baseline: Option<Duration>) -> Duration {
    times.sort();
    let median = times[times.len() / 2];
    let ms = |d: Duration| d.as_secs_f64() * 1e3;
    let ratio = baseline.map_or_else(String::new, |b| {
        format!("{:.2}", median.as_secs_f64() / b.as_secs_f64())
    });
    println!(
        "| {name:<26} | {:>8.1} | {:>8.1} | {:>8.1} | {ratio:>6} |",
        ms(times[0]),
        ms(median),
        ms(times[times.len() - 1])
    );
    median
}

async fn main_async(rounds: usize) {
    let tmp = tempfile::tempdir().expect("tmp");
    let root = tmp.path();
    eprintln!("making the repository (3,000 files, 10,000 commits)...");
    // The runner bench's repository.
    let bare = big_repo(root, 3_000, 10_000);
    let first = git(&bare, &["rev-parse", "main"]);
    let url = bare.display().to_string();
    let spec = CloneSpec {
        url: url.clone(),
        ssh_key: None,
        token: None,
        submodules: false,
        accept_new_host_keys: false,
    };

    // hookci's mirrors, and the baseline's own bare mirror.
    let mirrors = Mirrors::new(root.join("data/repos"));
    let (mirror, _) = mirrors
        .fetch(&spec, "refs/heads/main", &first)
        .await
        .expect("first fetch");
    let cli_mirror = root.join("cli-mirror.git");
    git(
        root,
        &[
            "clone",
            "-q",
            "--mirror",
            &url,
            &cli_mirror.display().to_string(),
        ],
    );
    let (mut fresh, mut pool, mut cli) = (Vec::new(), Vec::new(), Vec::new());
    for round in 0..rounds {
        // hookci, a fresh workspace.
        let commit = push(&bare, 3 * round);
        let started = Instant::now();
        let (_, got) = mirrors
            .fetch(&spec, "refs/heads/main", &commit)
            .await
            .expect("fetch");
        let ws = root.join(format!("builds/fresh-{round}/src"));
        mirrors
            .checkout(&mirror, &spec, &got, &ws)
            .await
            .expect("checkout");
        fresh.push(started.elapsed());
        // It is parked, as after a build, for the pool round.
        assert!(mirrors.park(&ws), "the pool took the workspace");
        let until = Instant::now() + Duration::from_secs(60);
        while mirrors.parked(&mirror) != (1, 0) {
            assert!(Instant::now() < until, "the pool never settled");
            tokio::time::sleep(Duration::from_millis(5)).await;
        }

        // hookci, from the pool.
        let commit = push(&bare, 3 * round + 1);
        let started = Instant::now();
        let (_, got) = mirrors
            .fetch(&spec, "refs/heads/main", &commit)
            .await
            .expect("fetch");
        let ws = root.join(format!("builds/pool-{round}/src"));
        mirrors
            .checkout(&mirror, &spec, &got, &ws)
            .await
            .expect("checkout");
        pool.push(started.elapsed());
        assert_eq!(mirrors.parked(&mirror), (0, 0), "taken from the pool");
        // Gone, so that the next fresh round finds the pool empty.
        mirrors.forget(&ws);
        for dir in [
            format!("builds/fresh-{round}"),
            format!("builds/pool-{round}"),
        ] {
            let _ = std::fs::remove_dir_all(root.join(dir));
        }

        // The git CLI.
        let commit = push(&bare, 3 * round + 2);
        let started = Instant::now();
        git(
            &cli_mirror,
            &["fetch", "-q", "origin", "+refs/heads/*:refs/heads/*"],
        );
        let ws = root.join(format!("cli-{round}"));
        let ws_s = ws.display().to_string();
        git(
            root,
            &[
                "clone",
                "-q",
                "--shared",
                "--no-checkout",
                &cli_mirror.display().to_string(),
                &ws_s,
            ],
        );
        git(&ws, &["checkout", "-q", "--detach", &commit]);
        cli.push(started.elapsed());
        std::fs::remove_dir_all(&ws).expect("rm");
    }

    println!("\nfetch + checkout of one pushed commit, {rounds} rounds (ms)\n");
    println!(
        "| {:<26} | {:>8} | {:>8} | {:>8} | {:>6} |",
        "path", "min", "median", "max", "vs git"
    );
    println!(
        "|{:-<28}|{:->10}|{:->10}|{:->10}|{:->8}|",
        "", "", "", "", ""
    );
    let base = summary("git CLI (baseline)", &mut cli, None);
    summary("hookci, fresh workspace", &mut fresh, Some(base));
    summary("hookci, from the pool", &mut pool, Some(base));
    println!("\ntargets: fresh median < 250 ms, pool median < 50 ms");
}

fn main() {
    let mut rounds = 7;
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        if arg == "--rounds" {
            rounds = args
                .next()
                .and_then(|n| n.parse().ok())
                .expect("--rounds N");
        }
    }
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime")
        .block_on(main_async(rounds));
}
