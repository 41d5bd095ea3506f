//! The Flotilla coordinator.
//!
//! It owns the fleet (a [`flotilla_core::Fleet`] behind one lock), drives it with commands from
//! the HTTP API and with the clock (a ticker), persists every change through the group-commit
//! [`writer`] before answering, and carries out the core's effects (waking long polls).
//!
//! Start reading at [`start`]; [`state`] holds the one path by which state changes, and
//! [`routes`] the API.

pub mod access;
pub mod auth;
pub mod bus;
pub mod checkpoints;
pub mod clock;
pub mod cluster;
pub mod dashboard;
pub mod error;
pub mod extract;
pub mod hosts;
pub mod launch;
pub mod logs;
pub mod middleware;
pub mod prometheus;
pub mod rate_limit;
pub mod request_id;
pub mod resources;
pub mod routes;
pub mod state;
pub mod supervisor;
pub mod tls;
pub mod webhooks;
pub mod writer;

/// The API's OpenAPI document, as served at `GET /api/v1/openapi.json`.
pub use routes::openapi::openapi;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use flotilla_core::{Fleet, FleetLimits, SwarmId};
use flotilla_store::{Batch, Store, StoreLocation, SyncMode};
use parking_lot::{Mutex, RwLock};
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::task::JoinHandle;

use crate::auth::TokenTable;
use crate::clock::Clock;
use crate::state::{AppState, Inner, Waiters};
use crate::writer::Writer;

/// The default address: loopback only, so a fresh install is not reachable from the network.
pub const DEFAULT_LISTEN: &str = "127.0.0.1:7171";

/// How to run the coordinator.
#[derive(Clone, Debug)]
pub struct ServerConfig {
    /// Address to listen on (127.0.0.1:7171 by default; port 0 picks a free port).
    pub listen: SocketAddr,
    /// Directory holding the SQLite database (unless `store` names another) and the admin
    /// token.
    pub data_dir: PathBuf,
    /// Where the fleet's state lives: `None` (the default) for `flotilla.db` in the data
    /// directory; `sqlite:PATH` for another SQLite file; `postgres://…` for a PostgreSQL
    /// database that several coordinators may share.
    pub store: Option<String>,
    /// With a PostgreSQL store: the URL other coordinators and clients reach this one at
    /// (`None`: `http(s)://` and the address it listens on, wildcard addresses as loopback).
    pub advertise_url: Option<String>,
    /// With a PostgreSQL store: how long a swarm's lease lasts without renewal (3 s); a dead
    /// coordinator's swarms are taken over within about this long.
    pub lease_ttl: Duration,
    /// `full` (default): each commit is on disk before the API answers; `normal`: a commit
    /// survives a crash of Flotilla but maybe not a power cut.
    pub sync: SyncMode,
    /// Limits on payloads, batches and memory.
    pub limits: FleetLimits,
    /// Largest request body.
    pub max_body_bytes: usize,
    /// How often the clock drives the fleet (leases, timeouts, retries).
    pub tick_interval: Duration,
    /// The `flotilla` binary that daemon-mode agents find in `FLOTILLA_BIN` (the running
    /// executable when `None`; tests that embed the coordinator name the real binary here).
    pub flotilla_bin: Option<PathBuf>,
    /// Capacity overrides, allocation strategy, admission policy, pressure thresholds and
    /// responses (see `docs/resources.md`).
    pub resources: resources::ResourceSettings,
    /// The bus: `memory` (in-process, the default) or `redis://host:port`.
    pub bus: String,
    /// Largest message body an agent or operator may send.
    pub message_max_bytes: usize,
    /// Where to append the message audit log (a JSON line per send and acknowledgement).
    pub message_audit: Option<PathBuf>,
    /// Requests each token may make (`None`, the default of embedders: unlimited;
    /// `flotilla serve` sets 1,000 a second).
    pub rate_limit: Option<rate_limit::RateLimit>,
    /// Streams, WebSockets and long polls one token may hold open at once (32).
    pub max_streams_per_token: usize,
    /// How long the audit log keeps its entries (90 days).
    pub audit_retention: Duration,
    /// Directories managed agents' working directories must lie in (none: unchecked). See
    /// [`launch`].
    pub work_roots: Vec<PathBuf>,
    /// The user managed agents run as when their pool names none (`None`: the coordinator's
    /// own; another needs a coordinator running as root).
    pub run_as: Option<String>,
    /// Serve HTTPS with this certificate and key (`None`, the default: plain HTTP).
    pub tls: Option<tls::TlsFiles>,
    /// What daemon-mode agents trust (`FLOTILLA_CA_CERT`) to reach an https coordinator; the
    /// certificate file of `tls` when `None`.
    pub agent_ca_cert: Option<PathBuf>,
    /// Where new alerts are posted (no URL by default), and how.
    pub alert_webhooks: webhooks::WebhookSettings,
    /// How long a host (`flotilla host`) may go without polling before it is lost and its
    /// agents are placed elsewhere (10 s).
    pub host_timeout: Duration,
}

impl ServerConfig {
    /// The defaults, with this data directory.
    pub fn new(data_dir: impl Into<PathBuf>) -> Self {
        ServerConfig {
            listen: DEFAULT_LISTEN.parse().expect("valid default address"),
            data_dir: data_dir.into(),
            store: None,
            advertise_url: None,
            lease_ttl: Duration::from_secs(3),
            sync: SyncMode::Full,
            limits: FleetLimits::default(),
            max_body_bytes: 8 * 1024 * 1024,
            tick_interval: Duration::from_millis(20),
            flotilla_bin: None,
            resources: resources::ResourceSettings::default(),
            bus: "memory".to_owned(),
            message_max_bytes: 256 * 1024,
            message_audit: None,
            rate_limit: None,
            max_streams_per_token: 32,
            audit_retention: Duration::from_secs(90 * 24 * 3600),
            work_roots: Vec::new(),
            run_as: None,
            tls: None,
            agent_ca_cert: None,
            host_timeout: Duration::from_secs(10),
            alert_webhooks: webhooks::WebhookSettings::default(),
        }
    }
}

/// Why the coordinator could not start or stopped.
#[derive(Debug, thiserror::Error)]
pub enum ServerError {
    /// The data directory could not be created or used.
    #[error("cannot use data directory {}: {source}", path.display())]
    DataDir {
        /// The directory.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// Another coordinator holds the data directory.
    #[error(
        "another flotilla ({holder}) is using data directory {}; stop it, or give this one another --data-dir",
        path.display()
    )]
    DataDirInUse {
        /// The directory.
        path: PathBuf,
        /// What the lock file says about its holder.
        holder: String,
    },
    /// The store could not be opened or loaded.
    #[error(transparent)]
    Store(#[from] flotilla_store::StoreError),
    /// The address could not be bound.
    #[error(
        "cannot listen on {addr}: {source} (is another flotilla running? pick another with --listen)"
    )]
    Bind {
        /// The address.
        addr: SocketAddr,
        /// Why.
        source: std::io::Error,
    },
    /// The server failed while running.
    #[error("server error: {0}")]
    Io(#[from] std::io::Error),
    /// The resource manager's settings are wrong, or the machine cannot be measured.
    #[error("{0}")]
    Resources(flotilla_core::CoreError),
    /// The bus could not be reached.
    #[error("cannot use the bus: {0} (start Redis, or run with --bus memory)")]
    Bus(#[from] flotilla_bus::BusError),
    /// The certificate or key of `--tls-cert`/`--tls-key` cannot be used.
    #[error("cannot serve HTTPS: {0}")]
    Tls(String),
    /// `--work-root` or `--run-as` cannot be used.
    #[error("{0}")]
    Launch(String),
    /// An `--alert-webhook` URL cannot be used.
    #[error("{0}")]
    Webhook(String),
    /// The message audit log could not be opened.
    #[error("cannot open the message audit log {}: {source}", path.display())]
    Audit {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
}

/// A running coordinator.
pub struct Server {
    /// The address it listens on.
    pub addr: SocketAddr,
    /// The admin token.
    pub admin_token: String,
    /// Where the admin token file is.
    pub admin_token_path: PathBuf,
    /// Whether the admin token was created by this start.
    pub admin_token_created: bool,
    /// Shared state, for tests that look inside.
    pub state: AppState,
    /// Whether it serves HTTPS.
    pub tls: bool,
    /// Warnings for the person who started it (the CLI repeats them on stderr): serving
    /// beyond loopback without TLS.
    pub warnings: Vec<String>,
    /// What became of alerts posted to webhooks.
    pub webhooks: std::sync::Arc<webhooks::WebhookStats>,
    webhook_watcher: Option<JoinHandle<()>>,
    shutdown: watch::Sender<bool>,
    /// Held while running: one coordinator per data directory.
    _lock: std::fs::File,
    http: JoinHandle<Result<(), std::io::Error>>,
    ticker: JoinHandle<()>,
    supervisor: JoinHandle<()>,
    /// The cluster's rounds (with a PostgreSQL store), and the signal that ends them.
    cluster_loop: Option<JoinHandle<()>>,
    leave: watch::Sender<bool>,
    writer_thread: std::thread::JoinHandle<()>,
}

impl Server {
    /// The base URL, e.g. `http://127.0.0.1:7171` (`https://…` when it serves TLS).
    pub fn url(&self) -> String {
        base_url(self.tls, self.addr)
    }

    /// The URL a client on this machine uses: [`Server::url`], with loopback for a wildcard
    /// address (what managed daemons are given, and what a certificate should name).
    pub fn local_url(&self) -> String {
        base_url(self.tls, loopback_for_wildcard(self.addr))
    }

    /// Stops accepting requests, lets those in flight finish (long polls return at once),
    /// flushes the store and returns.
    pub async fn shutdown(self) -> Result<(), ServerError> {
        let _ = self.shutdown.send(true);
        // Managed agents are stopped (gracefully) while the store still takes their exits.
        let _ = self.supervisor.await;
        let served = self
            .http
            .await
            .map_err(|e| std::io::Error::other(e.to_string()))?;
        self.ticker.abort();
        let _ = self.ticker.await;
        // The alert watcher holds the state: it ends on the shutdown signal.
        if let Some(watcher) = self.webhook_watcher {
            let _ = watcher.await;
        }
        // The minute under way goes to the store with the rest, not lost with the process.
        if let Err(e) = self
            .state
            .apply(|f, _| {
                f.flush_metrics();
                Ok(())
            })
            .await
        {
            tracing::warn!(error = %e.message, "the last minute's metrics were not stored");
        }
        // Last, a node of a cluster gives its swarms up, for the others to take at once.
        let _ = self.leave.send(true);
        if let Some(cluster) = self.cluster_loop {
            let _ = cluster.await;
        }
        // Dropping the last state drops the writer's sender; the thread then drains and ends.
        drop(self.state);
        let _ = tokio::task::spawn_blocking(move || self.writer_thread.join()).await;
        served.map_err(ServerError::Io)
    }
}

/// Opens the store, rebuilds the fleet, binds the address and starts serving.
pub async fn start(config: ServerConfig) -> Result<Server, ServerError> {
    let dir = &config.data_dir;
    let dir_err = |source| ServerError::DataDir {
        path: dir.clone(),
        source,
    };
    {
        use std::os::unix::fs::DirBuilderExt;
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(dir)
            .map_err(dir_err)?;
    }
    let lock = lock_data_dir(dir)?;
    // Everything a flag names is checked before anything is opened or started.
    let launch = launch::LaunchPolicy::new(&config.work_roots, config.run_as.as_deref())
        .map_err(ServerError::Launch)?;
    let tls_config = config
        .tls
        .as_ref()
        .map(tls::server_config)
        .transpose()
        .map_err(ServerError::Tls)?;
    let webhook_urls =
        webhooks::parse_urls(&config.alert_webhooks.urls).map_err(ServerError::Webhook)?;
    let bus = bus::BusLink::connect(&config.bus).await?;
    let mut message_middleware: Vec<std::sync::Arc<dyn middleware::MessageMiddleware>> =
        vec![std::sync::Arc::new(middleware::SizeLimit(
            config.message_max_bytes,
        ))];
    if let Some(path) = &config.message_audit {
        let audit = middleware::Audit::open(path).map_err(|source| ServerError::Audit {
            path: path.clone(),
            source,
        })?;
        message_middleware.push(std::sync::Arc::new(audit));
    }
    let resources =
        resources::Resources::new(config.resources.clone(), dir).map_err(ServerError::Resources)?;
    if config.host_timeout < Duration::from_secs(1) {
        return Err(ServerError::Resources(flotilla_core::CoreError::invalid(
            "--host-timeout must be at least 1s",
        )));
    }
    let location = StoreLocation::parse(config.store.as_deref(), &dir.join("flotilla.db"))?;
    // On PostgreSQL the coordinator is a node of a cluster: it starts holding no swarm and
    // loads each one when it takes its lease (see `cluster`).
    let cluster_url = match &location {
        StoreLocation::Postgres(url) => Some(url.clone()),
        StoreLocation::Sqlite(_) => None,
    };
    let clustered = cluster_url.is_some();
    let node_id = uuid::Uuid::now_v7().to_string();
    let claim_as = node_id.clone();
    let lease_ttl = config.lease_ttl;
    let clock = Clock::new();
    let now = clock.now();
    // Every store call blocks (PostgreSQL's client drives a runtime of its own): none runs on
    // the async threads.
    let token_dir = dir.clone();
    let opened = tokio::task::spawn_blocking(move || {
        let mut store = location.open_for(
            config.sync,
            clustered.then_some((claim_as.as_str(), lease_ttl)),
        )?;
        let reader = store.reader()?;
        let (stored, stored_tokens) = if clustered {
            let tokens = reader
                .list_tokens()?
                .into_iter()
                .filter(|t| t.revoked_at.is_none())
                .collect();
            (flotilla_core::StoredState::default(), tokens)
        } else {
            store.load(config.limits.retain_terminal)?.into_parts()
        };
        let tokens = TokenTable::new(stored_tokens);
        let admin = auth::ensure_admin_token(
            &token_dir,
            &tokens,
            |hash| {
                reader
                    .find_token(hash)
                    .ok()
                    .flatten()
                    .is_some_and(|r| r.revoked_at.is_some())
            },
            now,
        );
        Ok::<_, flotilla_store::StoreError>((store, reader, stored, tokens, admin))
    })
    .await
    .map_err(|e| std::io::Error::other(e.to_string()))??;
    let (mut store, reader, stored, tokens, admin) = opened;
    let store_description = store.describe();
    let (admin_token, admin_token_created, admin_record) = admin.map_err(dir_err)?;
    let mut tokens = tokens;
    let mut fleet = Fleet::restore(config.limits.clone(), stored, now);
    if let Some(url) = &cluster_url {
        // The first node creates the default swarm in the database; whichever node takes its
        // lease loads it.
        let mut scratch = Fleet::new(config.limits.clone());
        scratch.ensure_default_swarm(SwarmId(uuid::Uuid::now_v7()), now);
        let default = scratch.take_changes().swarms;
        let url = url.clone();
        tokio::task::spawn_blocking(move || {
            let mut db = flotilla_store::postgres::cluster::ClusterDb::open(&url, "starting")?;
            for swarm in &default {
                db.insert_swarm_if_absent(swarm)?;
            }
            Ok::<_, flotilla_store::StoreError>(())
        })
        .await
        .map_err(|e| std::io::Error::other(e.to_string()))??;
    } else {
        fleet.ensure_default_swarm(SwarmId(uuid::Uuid::now_v7()), now);
    }
    // What restoring changed, and a new admin token, are stored before the first request.
    let first = Batch {
        changes: fleet.take_changes(),
        tokens: admin_record.iter().cloned().collect(),
        ..Default::default()
    };
    // Managed agents meant to run are started once the supervisor runs.
    let restored_effects = fleet.take_effects();
    if !first.changes.is_empty() || !first.tokens.is_empty() {
        let committed = tokio::task::spawn_blocking(move || store.commit(&first).map(|_| store))
            .await
            .map_err(|e| std::io::Error::other(e.to_string()))?;
        store = committed?;
    }
    if let Some(r) = admin_record {
        tokens.insert(r);
    }
    let (writer, writer_thread) = Writer::start(store);
    let (shutdown_tx, shutdown_rx) = watch::channel(false);
    let (supervisor, orders) = supervisor::Supervisor::channel(launch);
    let state = AppState::new(Inner {
        fleet: Mutex::new(fleet),
        tokens: RwLock::new(tokens),
        writer,
        reader,
        clock,
        waiters: Waiters::default(),
        store_description,
        shutdown: shutdown_rx.clone(),
        supervisor,
        data_dir: dir.clone(),
        flotilla_bin: config
            .flotilla_bin
            .clone()
            .or_else(|| std::env::current_exe().ok()),
        resources,
        hosts: hosts::Hosts::new(config.host_timeout),
        autoscaler: Mutex::new(flotilla_core::autoscale::Autoscaler::new()),
        scale_veto: RwLock::new(state::no_scale_veto()),
        bus,
        middleware: RwLock::new(message_middleware),
        limiter: config.rate_limit.map(rate_limit::Limiter::new),
        streams: access::Streams::new(config.max_streams_per_token),
        audit: access::AuditLog::new(config.audit_retention),
        cluster: std::sync::OnceLock::new(),
    });
    state.set_scale_veto(state.resources.scale_veto());
    let listener = TcpListener::bind(config.listen)
        .await
        .map_err(|source| ServerError::Bind {
            addr: config.listen,
            source,
        })?;
    let addr = listener.local_addr()?;
    if let Some(url) = &cluster_url {
        let advertise = config
            .advertise_url
            .clone()
            .unwrap_or_else(|| base_url(config.tls.is_some(), loopback_for_wildcard(addr)));
        let mut settings = cluster::ClusterSettings::new(node_id.clone(), advertise);
        settings.lease_ttl = config.lease_ttl;
        settings.renew_every = (config.lease_ttl / 6).max(Duration::from_millis(50));
        let _ = state
            .cluster
            .set(cluster::Cluster::new(settings, url.clone()));
    }
    let app = routes::router(state.clone(), config.max_body_bytes)
        // Handlers and middleware may read the peer's address (`ConnectInfo<SocketAddr>`).
        .into_make_service_with_connect_info::<SocketAddr>();
    let mut stop = shutdown_rx.clone();
    let stopped = async move {
        let _ = stop.wait_for(|s| *s).await;
    };
    let serving_tls = tls_config.is_some();
    let http = match tls_config {
        None => tokio::spawn(async move {
            axum::serve(listener, app)
                .with_graceful_shutdown(stopped)
                .await
        }),
        Some(tls_config) => {
            use axum::serve::ListenerExt;
            // `tap_io` only so that axum derives `ConnectInfo<SocketAddr>` from the listener's
            // address type, as it does for a plain TCP listener.
            let listener = tls::TlsListener::new(listener, tls_config)?.tap_io(|_| {});
            tokio::spawn(async move {
                axum::serve(listener, app)
                    .with_graceful_shutdown(stopped)
                    .await
            })
        }
    };
    let mut warnings = Vec::new();
    if !addr.ip().is_loopback() && !serving_tls {
        let warning = format!(
            "serving plain HTTP on {addr}, beyond loopback: tokens and tasks cross the network unencrypted; serve HTTPS with --tls-cert FILE --tls-key FILE, or listen on 127.0.0.1"
        );
        tracing::warn!("{warning}");
        warnings.push(warning);
    }
    let ticker = tokio::spawn(tick_loop(state.clone(), config.tick_interval));
    // Daemon-mode agents reach the coordinator on loopback when it listens on every address.
    let endpoint = supervisor::Endpoint {
        url: base_url(serving_tls, loopback_for_wildcard(addr)),
        ca_cert: serving_tls
            .then(|| {
                config
                    .agent_ca_cert
                    .clone()
                    .or_else(|| config.tls.as_ref().map(|t| t.cert.clone()))
            })
            .flatten(),
    };
    let supervisor = tokio::spawn(supervisor::run(state.clone(), orders, endpoint));
    let (leave_tx, leave_rx) = watch::channel(false);
    let cluster_loop = state
        .cluster
        .get()
        .cloned()
        .map(|c| tokio::spawn(cluster::run(state.clone(), c, leave_rx)));
    let (webhook_stats, webhook_watcher) =
        webhooks::start(&state, &config.alert_webhooks, webhook_urls)
            .map_err(ServerError::Webhook)?;
    state.run_effects(&restored_effects);
    tracing::info!(%addr, tls = serving_tls, store = %state.store_description, bus = %state.bus.describe(), "coordinator started");
    Ok(Server {
        addr,
        admin_token,
        admin_token_path: auth::admin_token_path(dir),
        admin_token_created,
        state,
        tls: serving_tls,
        warnings,
        webhooks: webhook_stats,
        webhook_watcher,
        shutdown: shutdown_tx,
        _lock: lock,
        http,
        ticker,
        supervisor,
        cluster_loop,
        leave: leave_tx,
        writer_thread,
    })
}

/// `addr`, with loopback in place of an unspecified (wildcard) address.
fn loopback_for_wildcard(addr: SocketAddr) -> SocketAddr {
    match addr.ip() {
        std::net::IpAddr::V4(ip) if ip.is_unspecified() => {
            SocketAddr::from((std::net::Ipv4Addr::LOCALHOST, addr.port()))
        }
        std::net::IpAddr::V6(ip) if ip.is_unspecified() => {
            SocketAddr::from((std::net::Ipv6Addr::LOCALHOST, addr.port()))
        }
        _ => addr,
    }
}

/// `http://ADDR` or `https://ADDR`.
fn base_url(tls: bool, addr: SocketAddr) -> String {
    format!("{}://{addr}", if tls { "https" } else { "http" })
}

/// Takes the data directory's lock file, so that two coordinators never share one database.
/// The lock is released by the operating system when the process ends, even by `kill -9`.
fn lock_data_dir(dir: &std::path::Path) -> Result<std::fs::File, ServerError> {
    use std::io::{Read, Seek, Write};
    let path = dir.join("flotilla.lock");
    let io = |source| ServerError::DataDir {
        path: dir.to_path_buf(),
        source,
    };
    let mut file = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .open(&path)
        .map_err(io)?;
    match file.try_lock() {
        Ok(()) => {}
        Err(std::fs::TryLockError::WouldBlock) => {
            let mut holder = String::new();
            let _ = file.read_to_string(&mut holder);
            let holder = holder.trim();
            return Err(ServerError::DataDirInUse {
                path: dir.to_path_buf(),
                holder: if holder.is_empty() {
                    "unknown process".to_owned()
                } else {
                    holder.to_owned()
                },
            });
        }
        Err(std::fs::TryLockError::Error(e)) => return Err(io(e)),
    }
    file.set_len(0).map_err(io)?;
    file.rewind().map_err(io)?;
    write!(file, "pid {}", std::process::id()).map_err(io)?;
    Ok(file)
}

/// Drives the fleet with the clock.
async fn tick_loop(state: AppState, every: Duration) {
    let mut interval = tokio::time::interval(every);
    interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut last_forget = std::time::Instant::now();
    let mut last_prune: Option<std::time::Instant> = None;
    loop {
        interval.tick().await;
        state.flush(true).await;
        // Rate-limit cells of tokens idle long enough to be back at a full burst go, so
        // that agents long gone leave nothing behind.
        if last_forget.elapsed() >= Duration::from_secs(60) {
            last_forget = std::time::Instant::now();
            if let Some(limiter) = &state.limiter {
                limiter.forget_idle();
            }
        }
        if last_prune.is_none_or(|t| t.elapsed() >= Duration::from_secs(3600)) {
            last_prune = Some(std::time::Instant::now());
            state.audit.prune(&state, state.now());
        }
    }
}
