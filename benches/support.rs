//! What the benchmarks share: the release daemon started on 127.0.0.1:0.

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Stdio};

/// Starts `hookci serve` with a config in `dir` (data and pipelines under
/// `dir`, then the `extra` lines), and returns it with its address once it
/// listens. Its warnings are passed on to stderr; `BENCH_HOOKCI_LOG`
/// replaces the log filter.
pub fn spawn_hookci(dir: &Path, extra: &str) -> (Child, String) {
    let config = dir.join("hookci.toml");
    std::fs::write(
        &config,
        format!(
            "listen = \"127.0.0.1:0\"\ndata_dir = \"{}\"\npipelines_dir = \"{}\"\n{extra}\n",
            dir.join("data").display(),
            dir.join("pipelines").display()
        ),
    )
    .expect("config");
    let filter =
        std::env::var("BENCH_HOOKCI_LOG").unwrap_or_else(|_| "warn,hookci::server=info".into());
    let mut child = Command::new(env!("CARGO_BIN_EXE_hookci"))
        .args(["serve", "--config"])
        .arg(&config)
        .env("HOOKCI_LOG", filter)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn hookci");
    let mut lines = BufReader::new(child.stderr.take().expect("stderr")).lines();
    let addr = loop {
        let line = lines.next().expect("hookci exited").expect("stderr");
        if let Some(rest) = line.split("address=").nth(1) {
            break rest.split_whitespace().next().expect("address").to_owned();
        }
    };
    // Pass the daemon's warnings and errors on; they would explain a failed run.
    std::thread::spawn(move || {
        for line in lines.map_while(Result::ok) {
            eprintln!("hookci: {line}");
        }
    });
    (child, addr)
}
