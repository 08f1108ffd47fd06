//! The command line: raw arguments parsed by clap, then each command run.
//!
//! Exit codes: 0 success; 1 a build failed, `check` found errors, or the
//! server refused a client command; 2 usage, configuration or I/O error.
//! Errors are one sentence on stderr.

pub mod client;
pub mod local_run;

use crate::config::{self, Config};
use crate::pipeline;
use crate::secret::Secret;
use crate::webhook::{self, Host};
use clap::{Args, Parser, Subcommand};
use client::{BuildsQuery, Target};
use std::io::{Read, Write};
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::SystemTime;

/// hookci: a push-to-CI daemon.
#[derive(Debug, Parser)]
#[command(name = "hookci", version, about)]
pub struct Cli {
    /// The server config file (else $HOOKCI_CONFIG, else ./hookci.toml, else defaults).
    #[arg(long, global = true, value_name = "F")]
    pub config: Option<PathBuf>,
    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// The commands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the daemon.
    Serve {
        /// What this process does: all, receiver or runner (overrides the
        /// config's `role`).
        #[arg(long, value_name = "ROLE", value_enum)]
        role: Option<config::Role>,
    },
    /// Validate the server config and every pipeline: every error, by line.
    /// It reads the secrets `serve` would read: those of the config's
    /// `role` (`all`, the default: every one).
    Check {
        /// Check everything but reading the secrets (for use outside the
        /// service's environment, without its variables or credentials).
        #[arg(long)]
        no_secrets: bool,
        /// Read the secrets of this role instead of the config's: all
        /// (every secret), receiver or runner.
        #[arg(long, value_name = "ROLE", value_enum)]
        role: Option<config::Role>,
    },
    /// Run a pipeline now, in the foreground, streaming step output.
    Run {
        /// The pipeline's name.
        pipeline: String,
        /// The full ref to build (default: the remote's HEAD, or refs/heads/local with --workdir).
        #[arg(long = "ref", value_name = "R", conflicts_with_all = ["branch", "tag"])]
        git_ref: Option<String>,
        /// A branch to build.
        #[arg(long, value_name = "B", conflicts_with = "tag")]
        branch: Option<String>,
        /// A tag to build.
        #[arg(long, value_name = "T")]
        tag: Option<String>,
        /// The commit to build (default: what the ref points to).
        #[arg(long, value_name = "SHA")]
        commit: Option<String>,
        /// Run the steps in this directory as it is, without cloning.
        #[arg(long, value_name = "DIR")]
        workdir: Option<PathBuf>,
    },
    /// Print the signature header(s) a host would send for a body.
    Sign {
        /// The webhook secret.
        #[arg(long, env = "HOOKCI_SIGN_SECRET", hide_env_values = true)]
        secret: String,
        /// The host whose headers to print.
        #[arg(long, default_value = "github")]
        host: String,
        /// The body's file (default: stdin).
        #[arg(long, value_name = "F")]
        file: Option<PathBuf>,
    },
    /// List recent builds, newest first.
    Builds {
        /// Only this pipeline's builds.
        #[arg(long, value_name = "P")]
        pipeline: Option<String>,
        /// Only builds of this branch.
        #[arg(long, value_name = "B")]
        branch: Option<String>,
        /// Only builds in this state.
        #[arg(long, value_name = "S", value_parser = [
            "waiting", "queued", "running", "success", "failure", "error", "cancelled", "skipped",
        ])]
        status: Option<String>,
        /// Only builds of this event.
        #[arg(long, value_name = "E", value_parser = ["push", "tag", "pull_request"])]
        event: Option<String>,
        /// At most this many builds (default 50).
        #[arg(long, value_name = "N", value_parser = clap::value_parser!(u32).range(1..=500))]
        limit: Option<u32>,
        /// Print the server's JSON answer instead of a table.
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        server: ServerArgs,
    },
    /// List the runner processes registered in the store: labels, builds
    /// running, online or gone.
    Runners {
        /// Print the server's JSON answer instead of a table.
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        server: ServerArgs,
    },
    /// Print a build's log; with --follow, stream it until the build ends.
    Logs {
        /// The build's id.
        id: u64,
        /// Stream the log until the build ends; exit 0 if it succeeded, else 1.
        #[arg(long, short)]
        follow: bool,
        #[command(flatten)]
        server: ServerArgs,
    },
    /// Cancel a queued or running build.
    Cancel {
        /// The build's id.
        id: u64,
        #[command(flatten)]
        server: ServerArgs,
    },
    /// Approve a build waiting for approval (a pull request from a fork).
    Approve {
        /// The build's id.
        id: u64,
        #[command(flatten)]
        server: ServerArgs,
    },
    /// Queue a build's commit again, as a new build.
    Rebuild {
        /// The build's id.
        id: u64,
        /// Start at the step that failed; the steps before it are skipped
        /// (their files are not in the new build's fresh checkout).
        #[arg(long)]
        from_failed: bool,
        #[command(flatten)]
        server: ServerArgs,
    },
    /// Queue a build of a branch's head.
    Trigger {
        /// The pipeline's name.
        pipeline: String,
        /// The branch to build.
        #[arg(long, value_name = "B")]
        branch: String,
        #[command(flatten)]
        server: ServerArgs,
    },
}

/// The daemon a client command talks to, and the token it sends.
#[derive(Debug, Args)]
pub struct ServerArgs {
    /// The daemon's base URL (default: the config's public_url).
    #[arg(long, value_name = "URL", env = "HOOKCI_SERVER")]
    pub server: Option<String>,
    /// Say which config and server are used, and whether a token is sent.
    #[arg(long, short)]
    pub verbose: bool,
    /// The admin token (default: the config's admin_token). Prefer
    /// $HOOKCI_TOKEN: a command line is visible to every user of the box.
    #[arg(
        long,
        value_name = "T",
        env = "HOOKCI_TOKEN",
        hide_env_values = true,
        value_parser = token
    )]
    pub token: Option<Secret>,
}

/// Wraps the token at once, so that no `Debug` of the arguments shows it.
/// Never fails: clap would print the value in its error.
fn token(raw: &str) -> Result<Secret, std::convert::Infallible> {
    Ok(Secret::new(raw))
}

impl ServerArgs {
    fn target(self, config: Option<PathBuf>) -> Result<Target, Failure> {
        Target::resolve(config, self.server, self.token, self.verbose)
    }
}

/// An error for the user: one sentence, and the exit code it means.
#[derive(Debug)]
pub struct Failure {
    /// The sentence.
    pub message: String,
    /// 1 or 2.
    pub code: u8,
}

impl Failure {
    /// A usage, configuration or I/O error (exit 2).
    pub fn usage(message: impl Into<String>) -> Self {
        Failure {
            message: message.into(),
            code: 2,
        }
    }
}

/// Runs the parsed command line.
pub fn run(cli: Cli) -> ExitCode {
    let result = match cli.command {
        Command::Serve { role } => serve(cli.config, role),
        Command::Check { no_secrets, role } => check(cli.config, no_secrets, role),
        Command::Run {
            pipeline,
            git_ref,
            branch,
            tag,
            commit,
            workdir,
        } => {
            let git_ref = match (git_ref, branch, tag) {
                (Some(r), _, _) => Some(r),
                (None, Some(b), _) => Some(format!("refs/heads/{b}")),
                (None, None, Some(t)) => Some(format!("refs/tags/{t}")),
                (None, None, None) => None,
            };
            local_run::run(cli.config, &pipeline, git_ref, commit, workdir)
        }
        Command::Sign { secret, host, file } => sign(&secret, &host, file),
        Command::Builds {
            pipeline,
            branch,
            status,
            event,
            limit,
            json,
            server,
        } => server.target(cli.config).and_then(|target| {
            let query = BuildsQuery {
                pipeline,
                branch,
                status,
                event,
                limit,
            };
            client::builds(&target, &query, json)
        }),
        Command::Runners { json, server } => server
            .target(cli.config)
            .and_then(|target| client::runners(&target, json)),
        Command::Logs { id, follow, server } => server
            .target(cli.config)
            .and_then(|target| client::logs(&target, id, follow)),
        Command::Cancel { id, server } => server
            .target(cli.config)
            .and_then(|target| client::cancel(&target, id)),
        Command::Approve { id, server } => server
            .target(cli.config)
            .and_then(|target| client::approve(&target, id)),
        Command::Rebuild {
            id,
            from_failed,
            server,
        } => server
            .target(cli.config)
            .and_then(|target| client::rebuild(&target, id, from_failed)),
        Command::Trigger {
            pipeline,
            branch,
            server,
        } => server
            .target(cli.config)
            .and_then(|target| client::trigger(&target, &pipeline, &branch)),
    };
    match result {
        Ok(code) => code,
        Err(f) => {
            eprintln!("hookci: {}", f.message);
            ExitCode::from(f.code)
        }
    }
}

/// Loads the config for a command; warnings are logged.
pub fn load_config(path: Option<PathBuf>) -> Result<Config, Failure> {
    let (config, warnings) =
        config::load(path.as_deref()).map_err(|f| Failure::usage(f.to_string()))?;
    for w in warnings {
        tracing::warn!("{w}");
    }
    Ok(config)
}

fn serve(path: Option<PathBuf>, role: Option<config::Role>) -> Result<ExitCode, Failure> {
    crate::runner::private_dirs::set_umask();
    crate::runner::sandbox::no_dumping();
    // Each role reads only the secrets it needs (SPEC §11): those of
    // `--role`, else of the config's `role`.
    pipeline::scope_secrets(role);
    let mut config = load_config(path)?;
    if let Some(role) = role {
        config.role = role;
    }
    if let Some(why) = config.role.refused(&config) {
        return Err(Failure::usage(why));
    }
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .map_err(|e| Failure::usage(format!("cannot start the runtime: {e}")))?;
    runtime.block_on(async move {
        // A runner serves no HTTP: it binds nothing.
        let listener = match config.role.receives() {
            true => Some(
                crate::server::bind(&config)
                    .await
                    .map_err(|e| Failure::usage(format!("{e:#}")))?,
            ),
            false => None,
        };
        crate::server::run_role(config, listener, shutdown_signal())
            .await
            .map_err(|e| Failure::usage(format!("{e:#}")))
    })?;
    Ok(ExitCode::SUCCESS)
}

/// Resolves on SIGTERM or SIGINT.
pub async fn shutdown_signal() {
    use tokio::signal::unix::{SignalKind, signal};
    let (Ok(mut term), Ok(mut int)) = (
        signal(SignalKind::terminate()),
        signal(SignalKind::interrupt()),
    ) else {
        return std::future::pending().await;
    };
    tokio::select! {
        _ = term.recv() => tracing::info!("SIGTERM: shutting down"),
        _ = int.recv() => tracing::info!("SIGINT: shutting down"),
    }
}

fn check(
    path: Option<PathBuf>,
    no_secrets: bool,
    role: Option<config::Role>,
) -> Result<ExitCode, Failure> {
    // The secrets `serve` would read on this box: its role's.
    pipeline::scope_secrets(role);
    if no_secrets {
        pipeline::skip_secrets();
    }
    let (config, config_warnings) = match config::load_all(path.as_deref()) {
        Ok(c) => c,
        Err(errors) => {
            for e in errors {
                eprintln!("error: {e}");
            }
            return Ok(ExitCode::from(1));
        }
    };
    for w in &config_warnings {
        eprintln!("warning: {w}");
    }
    if let Err(e) = crate::server::require_pipelines_dir(&config) {
        eprintln!("error: {e}");
        return Ok(ExitCode::from(1));
    }
    let loaded = pipeline::load_dir(&config.pipelines_dir);
    for w in &loaded.warnings {
        eprintln!("warning: {w}");
    }
    for e in &loaded.errors {
        eprintln!("error: {e}");
    }
    let (sandbox_warnings, sandbox_errors) =
        crate::runner::sandbox::check(&config, &loaded.pipelines);
    for w in &sandbox_warnings {
        eprintln!("warning: {w}");
    }
    for e in &sandbox_errors {
        eprintln!("error: {e}");
    }
    if loaded.errors.is_empty() && sandbox_errors.is_empty() {
        println!("ok: {} pipelines", loaded.pipelines.len());
        Ok(ExitCode::SUCCESS)
    } else {
        Ok(ExitCode::from(1))
    }
}

fn sign(secret: &str, host: &str, file: Option<PathBuf>) -> Result<ExitCode, Failure> {
    let host: Host = host.parse().map_err(|()| {
        let names: Vec<&str> = Host::ALL.iter().map(|h| h.as_str()).collect();
        Failure::usage(format!(
            "unknown host {host:?}; expected one of {}",
            names.join(", ")
        ))
    })?;
    let body = match &file {
        Some(path) => std::fs::read(path)
            .map_err(|e| Failure::usage(format!("cannot read {}: {}", path.display(), e.kind())))?,
        None => {
            let mut buf = Vec::new();
            std::io::stdin()
                .read_to_end(&mut buf)
                .map_err(|e| Failure::usage(format!("cannot read stdin: {}", e.kind())))?;
            buf
        }
    };
    let headers = webhook::sign(host, &Secret::new(secret), &body, SystemTime::now());
    let mut out = std::io::stdout().lock();
    for (name, value) in headers {
        let _ = writeln!(out, "{name}: {value}");
    }
    Ok(ExitCode::SUCCESS)
}
