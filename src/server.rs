//! Wiring: opens the store, loads the pipelines, and serves HTTP until
//! shutdown. `main` calls [`run`]; tests call it too, with a listener on
//! 127.0.0.1:0 and a temp data dir.

use crate::config::Config;
use crate::http::{self, AppState, Limits};
use crate::pipeline::{self, PipelineSet};
use crate::report::Reporter;
use crate::runner::build::Runner;
use crate::store::{Store, StoreOptions};
use crate::worker::{LiveBuilds, Worker};
use anyhow::Context as _;
use std::future::Future;
use std::sync::Arc;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

/// The database file inside `data_dir`.
pub const DB_FILE: &str = "hookci.db";

/// Binds the configured address, or takes the socket systemd passed
/// (`LISTEN_FDS`, from `hookci.socket`).
pub async fn bind(config: &Config) -> anyhow::Result<TcpListener> {
    let mut fds = listenfd::ListenFd::from_env();
    if let Some(std_listener) = fds
        .take_tcp_listener(0)
        .context("cannot use the socket systemd passed")?
    {
        std_listener.set_nonblocking(true)?;
        return Ok(TcpListener::from_std(std_listener)?);
    }
    TcpListener::bind(&config.listen)
        .await
        .with_context(|| format!("cannot listen on {}", config.listen))
}

/// Opens the store in `config.data_dir`.
pub fn open_store(config: &Config) -> anyhow::Result<Store> {
    let path = config.data_dir.join(DB_FILE);
    if let Err(damage) = crate::store::check_file(&path) {
        let why = match damage {
            crate::store::Damage::NotADatabase => "is not a SQLite database".to_owned(),
            crate::store::Damage::Corrupt(findings) => {
                for finding in &findings {
                    tracing::error!(path = %path.display(), finding = %finding, "the store is damaged");
                }
                "is damaged (SQLite's quick_check found errors)".to_owned()
            }
            crate::store::Damage::Unreadable(e) => format!("cannot be read ({e})"),
        };
        anyhow::bail!(
            "the store {} {why}; restore it from a backup, or move it away to start with an empty store",
            path.display()
        );
    }
    Store::open_sqlite_as(
        &path,
        StoreOptions {
            max_queued_builds: config.max_queued_builds,
        },
        &config.node,
    )
    .with_context(|| format!("cannot open the store at {}", path.display()))
}

/// Opens the store the config names: PostgreSQL for `store = ...`, else
/// SQLite in `data_dir`. A database that cannot be reached or migrated
/// stops the start with one sentence (never the URL: it is a secret).
pub async fn open_configured_store(config: &Config) -> anyhow::Result<Store> {
    let Some(url) = &config.store else {
        return open_store(config);
    };
    let pg = crate::store::PgOptions {
        url: url.clone(),
        node: config.node.clone(),
        pool_size: (config.max_parallel_builds + 8).min(32),
    };
    let options = StoreOptions {
        max_queued_builds: config.max_queued_builds,
    };
    let store = Store::open_postgres(pg, options).await.map_err(|e| {
        let crate::store::StoreError::Unavailable(fault) = &e else {
            return anyhow::anyhow!("cannot open the PostgreSQL store: {e}");
        };
        let why = match fault.cause {
            crate::store::Cause::Down => "cannot be reached",
            _ => "refused to open",
        };
        anyhow::anyhow!("the PostgreSQL store {why}: {}", fault.detail)
    })?;
    Ok(store.with_lease(config.lease))
}

pub use crate::runner::resolve_run_as;

/// A daemon that would serve nothing does not start quietly: a missing
/// pipelines directory is an error naming its absolute path.
pub fn require_pipelines_dir(config: &Config) -> anyhow::Result<()> {
    if config.pipelines_dir.is_dir() {
        return Ok(());
    }
    let shown =
        std::path::absolute(&config.pipelines_dir).unwrap_or_else(|_| config.pipelines_dir.clone());
    anyhow::bail!(
        "the pipelines directory {} does not exist; create it, or set pipelines_dir in the config",
        shown.display()
    )
}

/// Which secrets a process of `role` read (`None`: every one), in words
/// for its start log (SPEC §11: each role holds only what it needs).
fn secrets_read(role: Option<crate::config::Role>) -> &'static str {
    use crate::config::Role;
    match role {
        None | Some(Role::All) => {
            "all: store, webhook secrets, admin_token, status tokens, clone credentials, step secrets"
        }
        Some(Role::Receiver) => {
            "store, webhook secrets, admin_token, status tokens; clone credentials and step secrets only where readable"
        }
        Some(Role::Runner) => {
            "store, clone credentials, step secrets; no webhook secret, admin_token or status token"
        }
    }
}

/// Runs the daemon until `shutdown` resolves: HTTP stops accepting, running
/// builds get `shutdown_grace` to finish, then are stopped and re-queued.
pub async fn run(
    config: Config,
    listener: TcpListener,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> anyhow::Result<()> {
    run_role(config, Some(listener), shutdown).await
}

/// [`run`] in `config.role`: a receiver serves HTTP and sends the status
/// reports but claims no build; a runner (no `listener`) claims and runs
/// builds and serves nothing; `all` does both.
pub async fn run_role(
    config: Config,
    listener: Option<TcpListener>,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> anyhow::Result<()> {
    let mut config = config;
    let role = config.role;
    // `listen = "...:0"` without a public_url: links (build URLs in answers
    // and statuses) name the port the kernel chose, not port 0.
    if let Some(Ok(bound)) = listener.as_ref().map(TcpListener::local_addr) {
        if config.public_url == format!("http://{}", config.listen)
            && config.listen != bound.to_string()
        {
            config.public_url = format!("http://{bound}");
        }
    }
    require_pipelines_dir(&config)?;
    crate::runner::private_dirs::prepare(
        &config.data_dir,
        &config.data_dir.join(DB_FILE),
        config.run_as.is_some(),
    )
    .with_context(|| {
        format!(
            "cannot create the data directory {}",
            config.data_dir.display()
        )
    })?;
    let store = open_configured_store(&config).await?;
    let loaded = pipeline::load_dir(&config.pipelines_dir);
    for finding in &loaded.errors {
        tracing::error!("{finding}; this pipeline is not served");
    }
    for finding in &loaded.warnings {
        tracing::warn!("{finding}");
    }
    tracing::info!(
        read = secrets_read(pipeline::secret_role()),
        "secrets of this role"
    );
    if role.runs() {
        if let Err(e) = crate::runner::step::init_reaper() {
            tracing::warn!(error = %e, "cannot become the subreaper of build processes");
        }
    }
    let mut runner = Runner::new(
        config.data_dir.clone(),
        config.public_url.clone(),
        config.max_log_bytes,
    );
    runner.run_as = resolve_run_as(&config)?;
    let pipelines = PipelineSet::new(loaded.pipelines);
    runner.sandbox = crate::runner::sandbox::Setup::of_config(&config);
    runner.sandbox.pipelines = Some(pipelines.clone());
    if role.runs() {
        crate::runner::sandbox::log_mode(&config, runner.run_as).await;
    }
    let runner = Arc::new(runner);
    let limits = Limits {
        max_connections: config.max_connections,
        header_timeout: config.header_timeout,
        drain_timeout: config.request_timeout,
        reserved_hook_connections: config.reserved_hook_connections,
    };
    let live = LiveBuilds::default();
    let metrics = Arc::new(crate::metrics::Metrics::default());
    let worker = role.runs().then(|| Worker {
        store: store.clone(),
        pipelines: pipelines.clone(),
        runner: Arc::clone(&runner),
        max_parallel: config.max_parallel_builds,
        shutdown_grace: config.shutdown_grace,
        keep_builds: config.keep_builds,
        live: live.clone(),
        metrics: Arc::clone(&metrics),
        labels: config.labels.clone(),
        role: role.as_str(),
    });
    let reporter = match role.receives() {
        true => Some(
            Reporter::new(
                store.clone(),
                pipelines.clone(),
                config.public_url.clone(),
                Arc::clone(&metrics),
            )
            .context("cannot start the status reporter")?,
        ),
        false => None,
    };
    // On a shared store, the logs of builds run on other boxes are read
    // from the database, through copies here (SPEC §11).
    let mirrors = match (store.shared(), listener.is_some()) {
        (true, true) => Some(
            crate::runner::log::mirror::Mirrors::open(
                config.data_dir.join("logs").join("mirror"),
                store.clone(),
            )
            .context("cannot create the directory of log copies")?,
        ),
        _ => None,
    };
    let sweeper = mirrors.clone().map(|m| {
        tokio::spawn(async move {
            // Copies of pruned builds go within a minute.
            let mut every = tokio::time::interval(std::time::Duration::from_secs(60));
            loop {
                every.tick().await;
                m.sweep().await;
            }
        })
    });
    let pipelines_dir = config.pipelines_dir.clone();
    let served = listener.map(|listener| {
        http::raise_open_file_limit(config.max_connections + config.reserved_hook_connections);
        let state = AppState::new(
            config.clone(),
            pipelines.clone(),
            store.clone(),
            Arc::clone(&runner),
            live,
            mirrors.clone(),
            metrics,
        );
        tracing::info!(
            address = %listener.local_addr().map(|a| a.to_string()).unwrap_or_default(),
            pipelines = state.pipelines().len(),
            role = role.as_str(),
            "listening"
        );
        (listener, state)
    });
    if served.is_none() {
        tracing::info!(
            node = %config.node,
            labels = %config.labels.join(","),
            pipelines = pipelines.current().len(),
            "runner: claiming builds"
        );
    }
    // SIGHUP is handled from before READY=1: systemd may reload at once,
    // and a SIGHUP with no handler yet would end the daemon.
    let hup = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup());
    if let Err(e) = &hup {
        tracing::warn!(error = %e, "cannot handle SIGHUP; pipelines will not reload");
    }
    // The store is open and the socket listens: tell systemd (Type=notify).
    let notifier = crate::notify::Notifier::from_env();
    let mut notify_tasks = Vec::new();
    if notifier.enabled() {
        notifier.ready(&crate::notify::status_line(&store).await);
        notify_tasks.push(tokio::spawn(crate::notify::status_loop(
            notifier.clone(),
            store.clone(),
        )));
        if let Some(every) = crate::notify::watchdog_interval() {
            notify_tasks.push(tokio::spawn(crate::notify::watchdog_loop(
                notifier.clone(),
                store.clone(),
                every,
            )));
        }
    }
    let stop = CancellationToken::new();
    let signal = {
        let stop = stop.clone();
        tokio::spawn(async move {
            shutdown.await;
            stop.cancel();
        })
    };
    let reload = tokio::spawn(reload_on_sighup(
        hup.ok(),
        pipelines_dir,
        pipelines,
        notifier.clone(),
    ));
    // A process that runs no build still rescues those whose runner
    // stopped renewing its lease (a runner's worker does it too).
    let rescuer = (store.shared() && worker.is_none()).then(|| {
        tokio::spawn(crate::worker::keep_leases(
            store.clone(),
            LiveBuilds::default(),
            stop.clone(),
            false,
        ))
    });
    let worker = worker.map(|w| tokio::spawn(w.run(stop.clone())));
    // The reporter stops after the worker, so that the reports of builds
    // re-queued at shutdown get their chance; what is left stays in the
    // outbox for the next start.
    let reporter_stop = CancellationToken::new();
    let reporter = reporter.map(|r| tokio::spawn(r.run(reporter_stop.clone())));
    match served {
        Some((listener, state)) => {
            http::serve(
                listener,
                http::router(state),
                limits,
                stop.clone().cancelled_owned(),
            )
            .await;
        }
        None => stop.cancelled().await,
    }
    notifier.stopping();
    for task in &notify_tasks {
        task.abort();
    }
    if let Some(worker) = worker {
        if let Err(e) = worker.await {
            tracing::error!(error = %e, "the worker failed");
        }
    }
    reporter_stop.cancel();
    if let Some(reporter) = reporter {
        if tokio::time::timeout(std::time::Duration::from_secs(5), reporter)
            .await
            .is_err()
        {
            tracing::warn!(
                "the reporter did not stop in time; its pending reports stay in the outbox"
            );
        }
    }
    if let Some(rescuer) = rescuer {
        rescuer.abort();
    }
    if let Some(sweeper) = sweeper {
        sweeper.abort();
    }
    reload.abort();
    crate::runner::cgroup::release();
    signal.abort();
    Ok(())
}

/// SIGHUP reloads the pipelines. A file that no longer loads keeps its old
/// version and is reported; queued builds are never touched.
async fn reload_on_sighup(
    hup: Option<tokio::signal::unix::Signal>,
    dir: std::path::PathBuf,
    pipelines: PipelineSet,
    notifier: crate::notify::Notifier,
) {
    let Some(mut hup) = hup else {
        return;
    };
    while hup.recv().await.is_some() {
        notifier.reloading();
        let loaded = pipeline::load_dir(&dir);
        for finding in &loaded.errors {
            tracing::error!("{finding}");
        }
        for finding in &loaded.warnings {
            tracing::warn!("{finding}");
        }
        let (next, report) =
            crate::reload::merge(&pipelines.current(), loaded.pipelines, &loaded.errors);
        report.log(next.len());
        pipelines.replace(next);
        notifier.ready(&report.summary());
    }
}
