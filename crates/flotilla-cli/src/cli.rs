//! The command line, as clap parses it.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use clap::{Args, Parser, Subcommand, ValueEnum};
use flotilla_core::{
    AgentId, AgentStatus, DEFAULT_SWARM, EventKind, MessageId, MessagePriority, MessageStatus,
    TaskId, TaskStatus, Topology,
};

use crate::duration::parse_duration;

/// Flotilla: run, supervise and coordinate fleets of AI agents and workers.
#[derive(Debug, Parser)]
#[command(
    name = "flotilla",
    version,
    propagate_version = true,
    max_term_width = 100
)]
pub struct Cli {
    /// Where to reach the coordinator, and as whom.
    #[command(flatten)]
    pub global: GlobalArgs,
    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// Options every command takes.
#[derive(Debug, Clone, Args)]
pub struct GlobalArgs {
    /// The coordinator's URL; or the URLs of several coordinators of one fleet, separated by
    /// commas: the CLI uses the first that answers and moves to the next when one does not
    /// (reads again elsewhere; other requests only when they could not be sent).
    #[arg(
        long,
        global = true,
        env = "FLOTILLA_URL",
        default_value = "http://127.0.0.1:7171",
        value_name = "URL"
    )]
    pub url: String,
    /// The API token (default: the admin token in the data directory).
    #[arg(
        long,
        global = true,
        env = "FLOTILLA_TOKEN",
        hide_env_values = true,
        value_name = "TOKEN"
    )]
    pub token: Option<String>,
    /// The coordinator's data directory [default: $XDG_DATA_HOME/flotilla or
    /// ~/.local/share/flotilla].
    #[arg(long, global = true, env = "FLOTILLA_DATA_DIR", value_name = "DIR")]
    pub data_dir: Option<PathBuf>,
    /// Certificates (PEM) to trust for an https:// coordinator besides the public roots: the
    /// private CA that signed its certificate, or the self-signed certificate itself.
    #[arg(long, global = true, env = "FLOTILLA_CA_CERT", value_name = "FILE")]
    pub ca_cert: Option<PathBuf>,
}

/// The commands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the coordinator.
    Serve(ServeArgs),
    /// Run the coordinator with a fleet file applied, until Ctrl-C (the quick start).
    Up(UpArgs),
    /// Apply a fleet file: create or update its swarms and pools, start managed agents.
    Apply(ApplyArgs),
    /// Create, list, show, change and delete swarms.
    #[command(subcommand)]
    Swarm(SwarmCommand),
    /// List, show, spawn, start, stop, attach to and read the logs of agents.
    #[command(subcommand)]
    Agent(AgentCommand),
    /// List, show and delete pools.
    #[command(subcommand)]
    Pool(PoolCommand),
    /// Submit, list, show, cancel, retry and wait for tasks.
    #[command(subcommand)]
    Task(TaskCommand),
    /// Submit every task of a JSON Lines file and follow them to the end.
    Run(RunArgs),
    /// Register as an agent and run a command for every task taken.
    Worker(WorkerArgs),
    /// Take, list, show and delete an agent's checkpoints, and roll it back to one.
    #[command(subcommand)]
    Checkpoint(CheckpointCommand),
    /// Send, publish and broadcast messages to agents; follow a swarm's messages live; list
    /// an agent's messages and a swarm's dead letters.
    #[command(subcommand)]
    Msg(MsgCommand),
    /// Show the newest alerts: agents degraded (warning), down or given up on (critical), and
    /// healthy again (recovery).
    Alerts(AlertsArgs),
    /// Show the event log (the newest events, with filters); `--follow` prints new ones as
    /// they happen, missing none.
    Events(EventsArgs),
    /// Show the resource manager: capacity, allocations, waiting pools, usage and pressure;
    /// `--strategy`/`--admission` change its policy live.
    Resources(ResourcesArgs),
    /// Show a swarm's metrics over time (throughput, latency, wait, errors, queue, utilisation),
    /// from the stored per-minute, 5-minute, hourly and daily aggregates.
    Metrics(MetricsArgs),
    /// Watch the fleet live in the terminal: totals and throughput, swarms, agents, the queue
    /// and the newest events (q quits, ? shows the keys).
    Top(TopArgs),
    /// Measure Flotilla on this machine (core assignment rate, end-to-end throughput).
    Bench(crate::commands::bench::BenchArgs),
    /// Create, list and revoke API tokens (roles viewer, operator, admin; optionally limited
    /// to one swarm and expiring).
    #[command(subcommand)]
    Token(TokenCommand),
    /// Show the audit log: who called what, when, from where, and how it ended (newest first).
    Audit(AuditArgs),
    /// Show the coordinator: version, uptime, store, bus and counts; `--cluster` shows every
    /// coordinator sharing its store, their health, each swarm's lease and the hosts.
    Status(StatusArgs),
    /// Run managed agents on this machine for a coordinator: it places the agents of pools
    /// with `placement = "hosts"` here, within this machine's capacity.
    Host(HostArgs),
}

/// `flotilla host`.
#[derive(Debug, Args)]
#[command(
    after_help = "The token (--token, FLOTILLA_TOKEN) must be an operator's or admin's: \
`flotilla token create --role operator --label hosts` on the coordinator's machine. \
Agents started here reach the coordinator at the same URL(s)."
)]
pub struct HostArgs {
    /// The coordinator to serve; several of one fleet separated by commas [default: --url].
    #[arg(long, value_name = "URL")]
    pub coordinator: Option<String>,
    /// This host's name, unique among the coordinator's hosts [default: the machine's host
    /// name].
    #[arg(long)]
    pub name: Option<String>,
    /// A label that pools can ask for with `host_labels` (repeatable).
    #[arg(long = "label", value_name = "LABEL")]
    pub labels: Vec<String>,
    /// What agents may reserve on this machine.
    #[command(flatten)]
    pub capacity: CapacityFlags,
    /// Where agents' logs and (when their pool names none) working directories go
    /// [default: <data dir>/host].
    #[arg(long, value_name = "DIR")]
    pub work_dir: Option<PathBuf>,
}

/// `flotilla status`.
#[derive(Debug, Args)]
pub struct StatusArgs {
    /// Show the cluster: coordinators (alive, heartbeat age, swarms held) and leases.
    #[arg(long)]
    pub cluster: bool,
    #[command(flatten)]
    pub out: JsonFlag,
}

/// `flotilla token`.
#[derive(Debug, Subcommand)]
pub enum TokenCommand {
    /// Create a token; it is printed once and cannot be shown again.
    Create(TokenCreateArgs),
    /// List the tokens in force (people's, not agents').
    List(TokenListArgs),
    /// Revoke a token at once, by id.
    Revoke(TokenRevokeArgs),
}

/// `flotilla token create`.
#[derive(Debug, Args)]
pub struct TokenCreateArgs {
    /// viewer (reads), operator (also submits and controls tasks and agents) or admin (also
    /// manages swarms, pools, fleet files, policies, tokens and reads the audit log).
    #[arg(long, value_parser = ["viewer", "operator", "admin"])]
    pub role: String,
    /// Limit the token to this swarm (name or id): it sees nothing of the others.
    #[arg(long)]
    pub swarm: Option<String>,
    /// Let it expire after this long (e.g. 12h, 30d).
    #[arg(long, value_parser = parse_duration, value_name = "DURATION")]
    pub expires: Option<std::time::Duration>,
    /// What it is for.
    #[arg(long)]
    pub label: Option<String>,
    #[command(flatten)]
    pub out: JsonFlag,
}

/// `flotilla token list`.
#[derive(Debug, Args)]
pub struct TokenListArgs {
    /// Every token ever issued: revoked, expired and agents' ones too.
    #[arg(long)]
    pub all: bool,
    #[command(flatten)]
    pub out: JsonFlag,
}

/// `flotilla token revoke`.
#[derive(Debug, Args)]
pub struct TokenRevokeArgs {
    /// The token's id (from `flotilla token list`), not the token itself.
    pub id: String,
}

/// `flotilla audit`.
#[derive(Debug, Args)]
pub struct AuditArgs {
    /// Only calls made with the token of this id (from `flotilla token list`).
    #[arg(long, value_name = "ID")]
    pub token_id: Option<String>,
    /// Only calls in this last stretch of time (e.g. 1h, 7d).
    #[arg(long, value_parser = parse_duration, value_name = "DURATION")]
    pub since: Option<std::time::Duration>,
    /// Only refused calls (401 and 403).
    #[arg(long)]
    pub denied: bool,
    /// How many of the newest to show.
    #[arg(long, default_value_t = 50, value_parser = clap::value_parser!(u16).range(1..=1000))]
    pub limit: u16,
    #[command(flatten)]
    pub out: JsonFlag,
}

/// `flotilla metrics`.
#[derive(Debug, Args)]
pub struct MetricsArgs {
    /// The swarm (name or id).
    #[arg(default_value = "default")]
    pub swarm: String,
    /// Length of each row: 1m, 5m, 1h or 1d.
    #[arg(long, default_value = "1m", value_parser = ["1m", "5m", "1h", "1d"])]
    pub period: String,
    /// How far back to go (default: 15 periods).
    #[arg(long, value_parser = parse_duration, value_name = "DURATION")]
    pub since: Option<std::time::Duration>,
    /// One pool's, agent's or task type's figures instead of the swarm's.
    #[arg(long, value_parser = ["pool", "agent", "task_type"], requires = "key")]
    pub scope: Option<String>,
    /// The pool, agent name or task type of `--scope`.
    #[arg(long, requires = "scope")]
    pub key: Option<String>,
    #[command(flatten)]
    pub out: JsonFlag,
}

/// `flotilla alerts`.
#[derive(Debug, Args)]
pub struct AlertsArgs {
    /// Only this swarm's alerts.
    #[arg(long)]
    pub swarm: Option<String>,
    /// Only these levels (repeat or comma-separate): warning, critical, recovery.
    #[arg(long, value_delimiter = ',', value_parser = ["warning", "critical", "recovery"])]
    pub level: Vec<String>,
    /// How many of the newest to show.
    #[arg(long, default_value_t = 50)]
    pub limit: usize,
    #[command(flatten)]
    pub out: JsonFlag,
}

/// `flotilla events`.
#[derive(Debug, Args)]
pub struct EventsArgs {
    /// Only this swarm's events.
    #[arg(long)]
    pub swarm: Option<String>,
    /// Only events of this type (task_completed, leader_election, …).
    #[arg(long = "type", value_name = "TYPE", value_parser = parse_event_kind)]
    pub kind: Option<EventKind>,
    /// Only events about this agent (name or id).
    #[arg(long)]
    pub agent: Option<String>,
    /// Only events about this task (id).
    #[arg(long)]
    pub task: Option<TaskId>,
    /// Only events after this sequence number.
    #[arg(long, value_name = "SEQ")]
    pub after: Option<u64>,
    /// How many of the newest to show (without --follow).
    #[arg(long, default_value_t = 50)]
    pub limit: u32,
    /// Keep printing new events as they happen, until Ctrl-C.
    #[arg(long, short = 'f')]
    pub follow: bool,
    #[command(flatten)]
    pub out: JsonFlag,
}

/// Parses an event type by its API name.
pub fn parse_event_kind(text: &str) -> Result<EventKind, String> {
    serde_json::from_value(serde_json::Value::String(text.to_owned())).map_err(|_| {
        format!(
            "{text:?} is not an event type (e.g. task_completed, agent_joined, leader_election)"
        )
    })
}

/// `flotilla top`.
#[derive(Debug, Args)]
#[command(
    after_help = "Needs a terminal; for a snapshot a script can read, use `flotilla swarm list`, \
`flotilla agent list`, `flotilla task list` or `flotilla events` with --json. While the \
coordinator does not answer, the header says so and reads go on every interval."
)]
pub struct TopArgs {
    /// How often to read the coordinator (at least 100ms).
    #[arg(long, default_value = "1s", value_parser = parse_duration, value_name = "DURATION")]
    pub interval: Duration,
    /// Show only this swarm (`s` cycles through them all).
    #[arg(long)]
    pub swarm: Option<String>,
}

/// `flotilla resources`.
#[derive(Debug, Args)]
pub struct ResourcesArgs {
    /// Change the allocation strategy first: priority, fair_share or best_fit.
    #[arg(long, value_parser = ["priority", "fair_share", "best_fit"])]
    pub strategy: Option<String>,
    /// Change the admission policy first: wait or refuse.
    #[arg(long, value_parser = ["wait", "refuse"])]
    pub admission: Option<String>,
    #[command(flatten)]
    pub out: JsonFlag,
}

/// The message bus's options of `flotilla serve` and `flotilla up` (see docs/messaging.md).
#[derive(Debug, Clone, Args)]
pub struct BusFlags {
    /// Where committed events and messages are published: `memory` (in this process) or
    /// `redis://host:port` (shared by several coordinators and anything that subscribes).
    #[arg(
        long,
        default_value = "memory",
        env = "FLOTILLA_BUS",
        value_name = "URL"
    )]
    pub bus: String,
    /// Largest message body an agent or operator may send.
    #[arg(long, default_value = "256KiB", value_parser = crate::fleet_file::parse_size, value_name = "SIZE")]
    pub message_max_bytes: u64,
    /// Append a JSON line per message sent and acknowledged to this file (who, what, when;
    /// never the body).
    #[arg(long, value_name = "FILE")]
    pub message_audit: Option<PathBuf>,
}

impl BusFlags {
    /// Applies these options to a coordinator's configuration.
    pub fn apply(&self, config: &mut flotilla_server::ServerConfig) {
        config.bus = self.bus.clone();
        config.message_max_bytes = usize::try_from(self.message_max_bytes).unwrap_or(usize::MAX);
        config.message_audit = self.message_audit.clone();
    }
}

/// The per-token limits and the audit log's retention of `flotilla serve` and `flotilla up`.
#[derive(Debug, Clone, Args)]
pub struct RateFlags {
    /// Requests a second each token may make on average; past it (and its burst) requests are
    /// answered 429 with Retry-After. 0: no limit.
    #[arg(
        long,
        default_value_t = 1000,
        env = "FLOTILLA_RATE_LIMIT",
        value_name = "PER_SECOND"
    )]
    pub rate_limit: u32,
    /// Requests a token may make at once after a quiet spell [default: twice --rate-limit].
    #[arg(long, value_name = "REQUESTS")]
    pub rate_burst: Option<u32>,
    /// Streams, WebSockets and long polls each token may hold open at once; past it, 429
    /// too_many_streams.
    #[arg(long, default_value_t = 32, value_parser = clap::value_parser!(u32).range(1..=100_000))]
    pub max_streams_per_token: u32,
    /// How long the audit log keeps its entries.
    #[arg(long, default_value = "90d", value_parser = parse_duration, value_name = "DURATION")]
    pub audit_retention: Duration,
    /// Unfinished tasks the fleet holds at most; past it, submissions are refused with 429
    /// queue_full until some finish.
    #[arg(long, default_value_t = 1_000_000, value_parser = clap::value_parser!(u64).range(1..=100_000_000))]
    pub max_unfinished_tasks: u64,
}

impl RateFlags {
    /// Applies these options to a coordinator's configuration.
    pub fn apply(&self, config: &mut flotilla_server::ServerConfig) {
        use std::num::NonZeroU32;
        config.rate_limit = NonZeroU32::new(self.rate_limit).map(|per_second| {
            let burst = self
                .rate_burst
                .and_then(NonZeroU32::new)
                .unwrap_or(per_second.saturating_mul(NonZeroU32::MIN.saturating_add(1)));
            flotilla_server::rate_limit::RateLimit { per_second, burst }
        });
        config.max_streams_per_token = self.max_streams_per_token as usize;
        config.audit_retention = self.audit_retention;
        config.limits.max_unfinished_tasks = self.max_unfinished_tasks as usize;
    }
}

/// What managed agents may reserve on a machine (`serve`, `up`, `host`); measured when left out.
#[derive(Debug, Clone, Default, Args)]
pub struct CapacityFlags {
    /// CPU cores managed agents may reserve [default: the machine's].
    #[arg(long = "capacity-cpu", value_name = "CORES")]
    pub cpu: Option<f64>,
    /// Memory managed agents may reserve, e.g. 600MiB [default: the machine's].
    #[arg(long = "capacity-memory", value_name = "SIZE", value_parser = parse_mib)]
    pub memory: Option<u64>,
    /// Disk managed agents may reserve, e.g. 10GiB [default: free space in the data
    /// directory, or `host`'s --work-dir].
    #[arg(long = "capacity-disk", value_name = "SIZE", value_parser = parse_mib)]
    pub disk: Option<u64>,
}

/// The resource manager's options of `flotilla serve` and `flotilla up`.
#[derive(Debug, Clone, Args)]
pub struct ResourceFlags {
    /// What managed agents may reserve on this machine.
    #[command(flatten)]
    pub capacity: CapacityFlags,
    /// Which competing spawn goes first: priority, fair_share or best_fit.
    #[arg(long, default_value = "priority", value_parser = ["priority", "fair_share", "best_fit"])]
    pub allocation_strategy: String,
    /// A spawn that does not fit: wait (until resources free) or refuse.
    #[arg(long, default_value = "wait", value_parser = ["wait", "refuse"])]
    pub admission: String,
    /// Pressure level at which alerts are raised (elevated, high, critical or off).
    #[arg(long, default_value = "high", value_name = "LEVEL", value_parser = parse_level)]
    pub pressure_alert_at: LevelOrOff,
    /// Pressure level at which scale-up is refused.
    #[arg(long, default_value = "high", value_name = "LEVEL", value_parser = parse_level)]
    pub pressure_stop_scale_up_at: LevelOrOff,
    /// Pressure level at which the lowest-priority managed agents are paused.
    #[arg(long, default_value = "critical", value_name = "LEVEL", value_parser = parse_level)]
    pub pressure_pause_at: LevelOrOff,
    /// Pressure level at which new tasks below --pressure-shed-below are refused (503).
    #[arg(long, default_value = "critical", value_name = "LEVEL", value_parser = parse_level)]
    pub pressure_shed_at: LevelOrOff,
    /// Task priority below which submissions are shed.
    #[arg(long, default_value_t = 3, value_parser = clap::value_parser!(u8).range(1..=10))]
    pub pressure_shed_below: u8,
    /// Pressure level at which dispatch of tasks below --pressure-delay-below is delayed.
    #[arg(long, default_value = "high", value_name = "LEVEL", value_parser = parse_level)]
    pub pressure_delay_at: LevelOrOff,
    /// Task priority below which dispatch is delayed.
    #[arg(long, default_value_t = 5, value_parser = clap::value_parser!(u8).range(1..=10))]
    pub pressure_delay_below: u8,
    /// Let CPU pressure (not only memory and disk) trigger the responses.
    #[arg(long)]
    pub pressure_cpu_responds: bool,
}

/// A pressure level, or `off`.
pub type LevelOrOff = Option<flotilla_core::pressure::Level>;

fn parse_level(s: &str) -> Result<LevelOrOff, String> {
    if s == "off" {
        return Ok(None);
    }
    match s.parse::<flotilla_core::pressure::Level>() {
        Ok(flotilla_core::pressure::Level::Normal) | Err(_) => Err(format!(
            "{s:?} is not a pressure level; use elevated, high, critical or off"
        )),
        Ok(l) => Ok(Some(l)),
    }
}

fn parse_mib(s: &str) -> Result<u64, String> {
    let bytes = crate::fleet_file::parse_size(s)?;
    if bytes < 1024 * 1024 {
        return Err(format!("{s:?} is less than 1MiB"));
    }
    Ok(bytes / (1024 * 1024))
}

impl ResourceFlags {
    /// The server's settings.
    pub fn settings(&self) -> flotilla_server::resources::ResourceSettings {
        use flotilla_core::pressure::ResponsePolicy;
        flotilla_server::resources::ResourceSettings {
            cpu_cores: self.capacity.cpu,
            memory_mb: self.capacity.memory,
            disk_mb: self.capacity.disk,
            strategy: self.allocation_strategy.parse().expect("checked by clap"),
            admission: self.admission.parse().expect("checked by clap"),
            pressure: Default::default(),
            responses: ResponsePolicy {
                alert: self.pressure_alert_at,
                stop_scale_up: self.pressure_stop_scale_up_at,
                pause_low_priority: self.pressure_pause_at,
                shed: self.pressure_shed_at,
                shed_below: self.pressure_shed_below,
                delay: self.pressure_delay_at,
                delay_below: self.pressure_delay_below,
                cpu_responds: self.pressure_cpu_responds,
            },
        }
    }
}

/// `--json`.
#[derive(Debug, Clone, Copy, Args)]
pub struct JsonFlag {
    /// Print the API's JSON instead of a human summary.
    #[arg(long)]
    pub json: bool,
}

/// `flotilla serve`.
#[derive(Debug, Args)]
pub struct ServeArgs {
    /// Read these options from a TOML file too (`store = "postgres://…"`, `bus = "redis://…"`,
    /// any long option of this command): the command line and the environment win over it.
    #[arg(long, env = "FLOTILLA_CONFIG", value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// The address to listen on.
    #[arg(long, default_value = "127.0.0.1:7171", value_name = "ADDR")]
    pub listen: SocketAddr,
    /// Where the fleet's state lives: `sqlite` (flotilla.db in the data directory, the
    /// default), `sqlite:PATH`, or `postgres://user@host:port/db`, which several coordinators
    /// may share (see docs/scale-out.md).
    #[arg(long, env = "FLOTILLA_STORE", value_name = "URL")]
    pub store: Option<String>,
    /// With a PostgreSQL store: the URL the other coordinators and clients reach this one at
    /// (default: http(s):// and the --listen address; give it when listening on 0.0.0.0).
    #[arg(long, env = "FLOTILLA_ADVERTISE_URL", value_name = "URL")]
    pub advertise_url: Option<String>,
    /// With a PostgreSQL store: how long a swarm's lease lasts unrenewed; a coordinator that
    /// dies has its swarms taken over within about this long.
    #[arg(long, default_value = "3s", value_parser = parse_duration, value_name = "DURATION")]
    pub lease_ttl: std::time::Duration,
    /// How long a host (`flotilla host`) may go without polling before it is lost: its
    /// agents' tasks go back to the queue and the agents start on other hosts.
    #[arg(long, default_value = "10s", value_parser = parse_duration, value_name = "DURATION")]
    pub host_timeout: std::time::Duration,
    /// `full`: every change is on disk before it is acknowledged, even across a power cut.
    /// `normal`: it survives a crash of flotilla, not of the machine; faster.
    #[arg(long, value_enum, default_value = "full", env = "FLOTILLA_SYNC")]
    pub sync: Sync,
    /// The resource manager (see docs/resources.md).
    #[command(flatten)]
    pub resources: ResourceFlags,
    /// The message bus (see docs/messaging.md).
    #[command(flatten)]
    pub bus: BusFlags,
    /// Requests per token.
    #[command(flatten)]
    pub rate: RateFlags,
    /// TLS, where managed agents may run and as whom, alert webhooks.
    #[command(flatten)]
    pub security: SecurityFlags,
    /// How the log (on stderr) is written.
    #[arg(
        long,
        value_enum,
        default_value = "text",
        env = "FLOTILLA_LOG_FORMAT",
        value_name = "FORMAT"
    )]
    pub log_format: LogFormat,
}

impl ServeArgs {
    /// The coordinator's configuration these options give, with this data directory.
    pub fn config(&self, data_dir: PathBuf) -> flotilla_server::ServerConfig {
        let mut config = flotilla_server::ServerConfig {
            listen: self.listen,
            store: self.store.clone(),
            advertise_url: self.advertise_url.clone(),
            lease_ttl: self.lease_ttl,
            host_timeout: self.host_timeout,
            sync: self.sync.into(),
            resources: self.resources.settings(),
            ..flotilla_server::ServerConfig::new(data_dir)
        };
        self.bus.apply(&mut config);
        self.rate.apply(&mut config);
        self.security.apply(&mut config);
        config
    }
}

/// The security options of `flotilla serve` and `flotilla up` (see the README's "Security").
#[derive(Debug, Clone, Args)]
pub struct SecurityFlags {
    /// Serve HTTPS with this certificate (PEM: the server's certificate, then any
    /// intermediates); needs --tls-key. Clients of a private or self-signed certificate pass
    /// --ca-cert.
    #[arg(
        long,
        env = "FLOTILLA_TLS_CERT",
        value_name = "FILE",
        requires = "tls_key"
    )]
    pub tls_cert: Option<PathBuf>,
    /// The private key (PEM) of --tls-cert.
    #[arg(
        long,
        env = "FLOTILLA_TLS_KEY",
        value_name = "FILE",
        requires = "tls_cert"
    )]
    pub tls_key: Option<PathBuf>,
    /// Managed agents' working directories must resolve (links followed) inside one of these
    /// directories; a relative workdir is taken from the first. Repeatable; in the environment,
    /// separated by ':'. Without any, workdirs are not checked.
    #[arg(
        long = "work-root",
        env = "FLOTILLA_WORK_ROOTS",
        value_delimiter = ':',
        value_name = "DIR"
    )]
    pub work_roots: Vec<PathBuf>,
    /// Run managed agents as this user when their pool names none (the coordinator must run
    /// as root). A root coordinator without it runs them as root, and warns so.
    #[arg(long, env = "FLOTILLA_RUN_AS", value_name = "USER")]
    pub run_as: Option<String>,
    /// POST each new alert as JSON to this http:// or https:// URL (5 s timeouts, no
    /// redirects followed, 3 attempts). Repeatable; in the environment, separated by spaces.
    #[arg(
        long = "alert-webhook",
        env = "FLOTILLA_ALERT_WEBHOOKS",
        value_delimiter = ' ',
        value_name = "URL"
    )]
    pub alert_webhooks: Vec<String>,
}

impl SecurityFlags {
    /// Applies these options to a coordinator's configuration.
    pub fn apply(&self, config: &mut flotilla_server::ServerConfig) {
        config.work_roots = self.work_roots.clone();
        config.run_as = self.run_as.clone();
        config.tls = match (&self.tls_cert, &self.tls_key) {
            (Some(cert), Some(key)) => Some(flotilla_server::tls::TlsFiles {
                cert: cert.clone(),
                key: key.clone(),
            }),
            _ => None,
        };
        config.alert_webhooks.urls = self
            .alert_webhooks
            .iter()
            .filter(|u| !u.trim().is_empty())
            .cloned()
            .collect();
    }
}

/// `flotilla up`.
#[derive(Debug, Args)]
#[command(
    after_help = "Starts the coordinator in this process (data in --data-dir), applies \
FILE to it as `flotilla apply` would, prints what changed and how to submit work, then runs \
until Ctrl-C or SIGTERM and shuts down gracefully. See `flotilla apply --help` for the file."
)]
pub struct UpArgs {
    /// The fleet file (TOML).
    pub file: PathBuf,
    /// The coordinator's options, as `flotilla serve` takes them.
    #[command(flatten)]
    pub serve: ServeArgs,
}

/// `flotilla apply`.
#[derive(Debug, Args)]
#[command(after_help = FLEET_FILE_HELP)]
pub struct ApplyArgs {
    /// The fleet file (TOML).
    pub file: PathBuf,
    /// Output.
    #[command(flatten)]
    pub out: JsonFlag,
}

/// What `flotilla apply --help` says about fleet files.
pub const FLEET_FILE_HELP: &str = "\
A fleet file describes swarms and their pools; applying it is idempotent and deletes nothing:

  [swarms.default]                    # description, topology, heartbeat_interval,
  task_timeout = \"5m\"                 # heartbeat_miss_limit, task_timeout,
                                      # task_max_attempts, min_agents, max_agents
  [swarms.default.pools.wordcount]
  min_agents = 3                      # managed agents kept running
  max_agents = 10
  capabilities = [\"text\"]
  max_concurrent_tasks = 1

  [swarms.default.pools.wordcount.agent]
  command = \"python3\"
  args = [\"agents/wordcount.py\"]      # {{payload.field}}, {{task.id}}… in exec mode
  env = { LANG = \"C.UTF-8\" }
  payload_env = [\"MODEL\"]            # exec mode: variables a task may set in payload.env
  workdir = \".\"                       # relative to the file's directory (the default)
  user = \"agents\"                     # run as this user (the coordinator must be root)
  runtime = \"process\"                 # or \"tmux\"
  mode = \"exec\"                       # or \"daemon\"
  memory = \"256MiB\"                   # KiB, MiB, GiB or KB, MB, GB
  cpu = 0.5                           # cores
  cpu_time = \"10m\"
  task_timeout = \"30s\"
  stop_grace = \"10s\"

Errors name the file, line, column and key. Exit 1 on any error.";

/// How the coordinator writes its log (`--log-format`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, clap::ValueEnum)]
pub enum LogFormat {
    /// One line per event for people: time, level, the request's span, message, fields.
    #[default]
    Text,
    /// One JSON object per line for log collectors: `timestamp`, `level`, `message`, the
    /// event's fields, `target`, and the spans it happened in (a request's carries its
    /// `request_id`).
    Json,
}

/// How hard the store pushes each commit to the disk.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Sync {
    /// fsync every commit (the default).
    Full,
    /// Leave the write-ahead log's flushing to the OS: safe across a crash of flotilla only.
    Normal,
}

impl From<Sync> for flotilla_store::SyncMode {
    fn from(s: Sync) -> Self {
        match s {
            Sync::Full => flotilla_store::SyncMode::Full,
            Sync::Normal => flotilla_store::SyncMode::Normal,
        }
    }
}

/// `flotilla swarm …`.
#[derive(Debug, Subcommand)]
pub enum SwarmCommand {
    /// Create a swarm.
    Create {
        /// Its name: letters, digits, '-', '_' and '.'.
        name: String,
        /// Its settings.
        #[command(flatten)]
        settings: SwarmSettings,
        /// Output.
        #[command(flatten)]
        out: JsonFlag,
    },
    /// List swarms.
    List {
        /// Output.
        #[command(flatten)]
        out: JsonFlag,
    },
    /// Show a swarm and its health.
    Show {
        /// Its name or id.
        swarm: String,
        /// Output.
        #[command(flatten)]
        out: JsonFlag,
    },
    /// Change a swarm's settings.
    Update {
        /// Its name or id.
        swarm: String,
        /// A new name.
        #[arg(long, value_name = "NAME")]
        rename: Option<String>,
        /// The settings to change (others keep their value).
        #[command(flatten)]
        settings: SwarmSettings,
        /// Output.
        #[command(flatten)]
        out: JsonFlag,
    },
    /// Delete a swarm.
    Delete {
        /// Its name or id.
        swarm: String,
        /// Cancel its unfinished tasks and remove its agents first.
        #[arg(long)]
        force: bool,
    },
    /// Show a swarm's topology graph: roles, leader, the ring's token; --set changes it live.
    #[command(after_help = TOPOLOGY_HELP)]
    Topology {
        /// The swarm's name or id.
        swarm: String,
        /// Switch to this topology: star, mesh, hierarchical or ring.
        #[arg(long, value_name = "TOPOLOGY", value_parser = parse_topology)]
        set: Option<Topology>,
        /// Settings to change, as a JSON object of sections (others keep their values), e.g.
        /// '{"ring":{"order":"load"}}'.
        #[arg(long, value_name = "JSON", value_parser = parse_topology_config)]
        config: Option<serde_json::Value>,
        /// Print the graph in Graphviz DOT (`| dot -Tsvg > swarm.svg`).
        #[arg(long, conflicts_with = "json")]
        dot: bool,
        /// Output.
        #[command(flatten)]
        out: JsonFlag,
    },
    /// Set a managed pool's size: `scale SWARM POOL N`, or `scale SWARM POOL --by -2`.
    /// Agents removed finish their tasks first (see docs/autoscaling.md).
    Scale {
        /// The swarm's name or id.
        swarm: String,
        /// The pool.
        pool: String,
        /// The number of agents wanted.
        #[arg(required_unless_present = "by", conflicts_with = "by")]
        agents: Option<u32>,
        /// Agents to add (+N) or remove (-N), from the pool's desired size.
        #[arg(long, value_name = "±N", allow_negative_numbers = true)]
        by: Option<i64>,
        /// Output.
        #[command(flatten)]
        out: JsonFlag,
    },
}

/// A swarm's settings, each optional.
#[derive(Debug, Clone, Default, Args)]
pub struct SwarmSettings {
    /// Free text.
    #[arg(long)]
    pub description: Option<String>,
    /// How its agents are connected.
    #[arg(long, value_enum)]
    pub topology: Option<TopologyArg>,
    /// Fewer healthy agents than this make the swarm degraded.
    #[arg(long, value_name = "N")]
    pub min_agents: Option<u32>,
    /// Registrations beyond this many agents are refused.
    #[arg(long, value_name = "N")]
    pub max_agents: Option<u32>,
    /// How often agents must heartbeat, e.g. 5s.
    #[arg(long, value_parser = parse_duration, value_name = "DURATION")]
    pub heartbeat_interval: Option<Duration>,
    /// Missed heartbeats before an agent's lease lapses.
    #[arg(long, value_name = "N")]
    pub heartbeat_miss_limit: Option<u32>,
    /// Default timeout of one task attempt, e.g. 5m.
    #[arg(long, value_parser = parse_duration, value_name = "DURATION")]
    pub task_timeout: Option<Duration>,
    /// Default attempts allowed per task.
    #[arg(long, value_name = "N")]
    pub max_attempts: Option<u32>,
    /// Which waiting agent gets the next task: round_robin, least_loaded, capability_match,
    /// affinity, weighted, resource_based or priority.
    #[arg(long, value_parser = parse_strategy, value_name = "STRATEGY")]
    pub strategy: Option<flotilla_core::Strategy>,
    /// Tasks each agent may have waiting in its local queue (idle agents steal from them).
    #[arg(long, value_name = "N")]
    pub prefetch: Option<u32>,
    /// With --strategy affinity: how long a task waits for the agent that ran its key last.
    #[arg(long, value_parser = parse_duration, value_name = "DURATION")]
    pub affinity_wait: Option<Duration>,
}

/// Parses a placement strategy by its API name (`least_loaded`; `least-loaded` works too).
pub fn parse_strategy(s: &str) -> Result<flotilla_core::Strategy, String> {
    let name = s.replace('-', "_");
    flotilla_core::Strategy::ALL
        .into_iter()
        .find(|x| x.as_str() == name)
        .ok_or_else(|| {
            let names: Vec<&str> = flotilla_core::Strategy::ALL
                .iter()
                .map(|x| x.as_str())
                .collect();
            format!("{s:?} is not a strategy; use one of {}", names.join(", "))
        })
}

/// What `flotilla swarm topology --help` says after the options.
pub const TOPOLOGY_HELP: &str = "\
Topologies: star (one coordinator, the leader, and workers), mesh (every agent reaches every \
other), hierarchical (coordinator, supervisors, workers in a tree), ring (a token passes around \
the agents; ordered tasks run one at a time in ring order). Settings, by section:

  star:         coordinator_count, max_workers, failover_coordinator
  mesh:         connection_strategy (full|nearest), neighbours, gossip_interval_ms,
                routing (broadcast|targeted)
  hierarchical: levels ([{\"role\": …, \"count\": …}]), parent_child_ratio
  ring:         order (sequential|load), token_timeout_ms, skip_unhealthy

Examples:
  flotilla swarm topology default --dot | dot -Tsvg > default.svg
  flotilla swarm topology default --set ring --config '{\"ring\":{\"order\":\"load\"}}'";

/// Parses a topology by its API name, in one line listing the valid ones when it is not one.
pub fn parse_topology(s: &str) -> Result<Topology, String> {
    Topology::ALL
        .into_iter()
        .find(|t| t.as_str() == s.trim())
        .ok_or_else(|| {
            let names: Vec<&str> = Topology::ALL.iter().map(|t| t.as_str()).collect();
            format!("{s:?} is not a topology; use one of {}", names.join(", "))
        })
}

/// Parses `--config` of `swarm topology`: a JSON object of settings sections.
pub fn parse_topology_config(s: &str) -> Result<serde_json::Value, String> {
    let example = r#"e.g. '{"ring":{"order":"load"}}'"#;
    match serde_json::from_str::<serde_json::Value>(s) {
        Ok(v @ serde_json::Value::Object(_)) => Ok(v),
        Ok(_) => Err(format!(
            "it must be a JSON object of sections (star, mesh, hierarchical, ring), {example}"
        )),
        Err(e) => Err(format!("it is not valid JSON ({e}); {example}")),
    }
}

/// Parses a message priority: critical, high, normal or low.
pub fn parse_priority(s: &str) -> Result<MessagePriority, String> {
    s.trim().parse().map_err(|_| {
        let names: Vec<&str> = MessagePriority::ALL.iter().map(|p| p.as_str()).collect();
        format!("{s:?} is not a priority; use one of {}", names.join(", "))
    })
}

/// Parses a message status: pending, delivered, acked or dead.
pub fn parse_message_status(s: &str) -> Result<MessageStatus, String> {
    s.trim().parse().map_err(|_| {
        let names: Vec<&str> = MessageStatus::ALL.iter().map(|p| p.as_str()).collect();
        format!(
            "{s:?} is not a message status; use one of {}",
            names.join(", ")
        )
    })
}

/// A topology, as the command line spells it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum TopologyArg {
    /// One coordinator and workers.
    Star,
    /// Every agent reaches every other.
    Mesh,
    /// Coordinator, supervisors, workers.
    Hierarchical,
    /// A token passes around a ring.
    Ring,
}

impl From<TopologyArg> for Topology {
    fn from(t: TopologyArg) -> Topology {
        match t {
            TopologyArg::Star => Topology::Star,
            TopologyArg::Mesh => Topology::Mesh,
            TopologyArg::Hierarchical => Topology::Hierarchical,
            TopologyArg::Ring => Topology::Ring,
        }
    }
}

/// `flotilla agent …`.
#[derive(Debug, Subcommand)]
pub enum AgentCommand {
    /// List agents (of every swarm unless --swarm is given).
    List {
        /// Only this swarm's agents (name or id).
        #[arg(long)]
        swarm: Option<String>,
        /// Only agents with this status (idle, busy, unhealthy, …).
        #[arg(long, value_name = "STATUS")]
        status: Option<AgentStatus>,
        /// Only agents of this type.
        #[arg(long = "type", value_name = "TYPE")]
        agent_type: Option<String>,
        /// Output.
        #[command(flatten)]
        out: JsonFlag,
    },
    /// Show an agent, with its process and resource usage if it is managed.
    Show {
        /// Its id or name.
        agent: String,
        /// Where to look the name up.
        #[command(flatten)]
        find: FindAgent,
        /// Output.
        #[command(flatten)]
        out: JsonFlag,
    },
    /// Unregister an agent; its tasks go back to the queue.
    Remove {
        /// Its id or name.
        agent: String,
        /// Where to look the name up.
        #[command(flatten)]
        find: FindAgent,
    },
    /// Start a new managed agent from a pool's template.
    Spawn {
        /// The swarm (name or id).
        #[arg(long, default_value = DEFAULT_SWARM)]
        swarm: String,
        /// The pool.
        #[arg(long)]
        pool: String,
        /// Output.
        #[command(flatten)]
        out: JsonFlag,
    },
    /// Start a managed agent that was stopped or failed.
    Start(LifecycleArgs),
    /// Stop a managed agent: SIGTERM, then SIGKILL after its grace period.
    Stop(ForceLifecycleArgs),
    /// Freeze a managed agent's processes; it takes no tasks meanwhile.
    Pause(LifecycleArgs),
    /// Thaw a paused managed agent.
    Resume(LifecycleArgs),
    /// Stop a managed agent, then start it again.
    Restart(ForceLifecycleArgs),
    /// Attach this terminal to a tmux-runtime agent's session (detach with Ctrl-b d).
    Attach {
        /// Its id or name.
        agent: String,
        /// Where to look the name up.
        #[command(flatten)]
        find: FindAgent,
    },
    /// Print the end of a managed agent's log, or follow it.
    Logs {
        /// Its id or name.
        agent: String,
        /// Where to look the name up.
        #[command(flatten)]
        find: FindAgent,
        /// Keep printing new output as it comes, until Ctrl-C.
        #[arg(long, short = 'f')]
        follow: bool,
        /// How many lines of the end to print first.
        #[arg(long, default_value_t = 200, value_name = "LINES")]
        tail: usize,
    },
}

/// `flotilla checkpoint …`.
#[derive(Debug, Subcommand)]
pub enum CheckpointCommand {
    /// Take a checkpoint of an agent: its reported state, its tasks, its workspace.
    Create {
        /// Its id or name.
        agent: String,
        /// What this checkpoint is.
        description: Option<String>,
        #[command(flatten)]
        find: FindAgent,
        #[command(flatten)]
        out: JsonFlag,
    },
    /// List an agent's checkpoints, newest first.
    List {
        /// Its id or name.
        agent: String,
        #[command(flatten)]
        find: FindAgent,
        #[command(flatten)]
        out: JsonFlag,
    },
    /// Show one checkpoint whole.
    Show {
        /// Its agent's id or name.
        agent: String,
        /// The checkpoint's id.
        checkpoint: String,
        #[command(flatten)]
        find: FindAgent,
        #[command(flatten)]
        out: JsonFlag,
    },
    /// Delete a checkpoint (and its saved workspace).
    Delete {
        /// Its agent's id or name.
        agent: String,
        /// The checkpoint's id.
        checkpoint: String,
        #[command(flatten)]
        find: FindAgent,
    },
    /// Stop a managed agent, restore a checkpoint's workspace and state, and start it again.
    Rollback {
        /// Its id or name.
        agent: String,
        /// The checkpoint's id [default: its latest].
        checkpoint: Option<String>,
        #[command(flatten)]
        find: FindAgent,
        #[command(flatten)]
        out: JsonFlag,
    },
}

/// `flotilla msg …`.
#[derive(Debug, Subcommand)]
pub enum MsgCommand {
    /// Send a message to an agent, as the operator; with --request, wait for its response and
    /// print it.
    Send(Box<MsgSendArgs>),
    /// Publish a message to a topic: every agent of the swarm subscribed to a matching pattern
    /// gets a copy.
    Publish {
        /// The swarm's name or id.
        swarm: String,
        /// The topic: dot-separated words, e.g. builds.done.
        topic: String,
        /// The message.
        #[command(flatten)]
        message: MsgBody,
        /// Output.
        #[command(flatten)]
        out: JsonFlag,
    },
    /// Broadcast a message to every agent of a swarm.
    Broadcast {
        /// The swarm's name or id.
        swarm: String,
        /// The message.
        #[command(flatten)]
        message: MsgBody,
        /// Output.
        #[command(flatten)]
        out: JsonFlag,
    },
    /// Follow a swarm's messages as they are sent, one line each, until Ctrl-C.
    #[command(
        after_help = "Each line: time, priority, kind, sender → recipient (operator for none), \
topic, and the start of the body. With --json, one JSON object a line: \
{\"type\":\"message\",\"message\":{…}}, {\"type\":\"event\",\"event\":{…}} (with --events) or \
{\"type\":\"gap\"} when some may have been missed."
    )]
    Tail {
        /// The swarm's name or id.
        swarm: String,
        /// Only messages to or from this agent (name or id).
        #[arg(long, value_name = "AGENT")]
        agent: Option<String>,
        /// Only messages on topics matching this pattern (e.g. builds.*).
        #[arg(long, value_name = "PATTERN")]
        topic: Option<String>,
        /// Also the swarm's fleet events (agents, tasks, topology, …).
        #[arg(long)]
        events: bool,
        /// Output.
        #[command(flatten)]
        out: JsonFlag,
    },
    /// List an agent's messages, sent and received, newest first.
    List {
        /// The agent's name or id.
        agent: String,
        /// Received (in), sent (out) or both.
        #[arg(long, value_enum, default_value = "both")]
        direction: DirectionArg,
        /// Only messages with this status: pending, delivered, acked or dead.
        #[arg(long, value_name = "STATUS", value_parser = parse_message_status)]
        status: Option<MessageStatus>,
        /// How many to show (1–1000).
        #[arg(long, default_value_t = 50, value_parser = clap::value_parser!(u32).range(1..=1000))]
        limit: u32,
        /// Where to look the name up.
        #[command(flatten)]
        find: FindAgent,
        /// Output.
        #[command(flatten)]
        out: JsonFlag,
    },
    /// List a swarm's dead letters (messages that could not be delivered), with why.
    Dead {
        /// The swarm's name or id.
        swarm: String,
        /// How many to show (1–1000).
        #[arg(long, default_value_t = 50, value_parser = clap::value_parser!(u32).range(1..=1000))]
        limit: u32,
        /// Output.
        #[command(flatten)]
        out: JsonFlag,
    },
    /// Put a dead message back in its recipient's inbox.
    Retry {
        /// The message's id (see `flotilla msg dead`).
        id: MessageId,
        /// Output.
        #[command(flatten)]
        out: JsonFlag,
    },
    /// Set an agent's topic subscriptions (replacing them); with no topic, show them.
    Subscribe {
        /// The agent's name or id.
        agent: String,
        /// Topic patterns: words separated by dots, `*` for one word (or, last, the rest).
        #[arg(value_name = "TOPIC")]
        topics: Vec<String>,
        /// Unsubscribe from every topic.
        #[arg(long, conflicts_with = "topics")]
        clear: bool,
        /// Where to look the name up.
        #[command(flatten)]
        find: FindAgent,
        /// Output.
        #[command(flatten)]
        out: JsonFlag,
    },
}

/// `flotilla msg send`.
#[derive(Debug, Args)]
pub struct MsgSendArgs {
    /// The agent: its name or id.
    pub agent: String,
    /// The message.
    #[command(flatten)]
    pub message: MsgBody,
    /// A topic, for the recipient's information.
    #[arg(long, value_name = "TOPIC")]
    pub topic: Option<String>,
    /// Send a request and wait for the response; exit 1 if none comes in time.
    #[arg(long)]
    pub request: bool,
    /// With --request: how long to wait for the response [default: the swarm's, 30s].
    #[arg(long, value_parser = parse_duration, value_name = "DURATION", requires = "request")]
    pub timeout: Option<Duration>,
    /// Where to look the name up.
    #[command(flatten)]
    pub find: FindAgent,
    /// Output.
    #[command(flatten)]
    pub out: JsonFlag,
}

/// What a message says and how urgent it is (`msg send|publish|broadcast`).
#[derive(Debug, Clone, Args)]
pub struct MsgBody {
    /// The body: JSON, or any other text (sent as a JSON string); '-' reads it from stdin.
    #[arg(long, value_name = "JSON|TEXT", allow_hyphen_values = true)]
    pub body: String,
    /// critical, high, normal or low.
    #[arg(long, default_value = "normal", value_name = "PRIORITY", value_parser = parse_priority)]
    pub priority: MessagePriority,
    /// Dead if not acknowledged within this long, e.g. 30s [default: the swarm's].
    #[arg(long, value_parser = parse_duration, value_name = "DURATION")]
    pub ttl: Option<Duration>,
}

/// Which of an agent's messages `msg list` shows.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum DirectionArg {
    /// Those it received.
    In,
    /// Those it sent.
    Out,
    /// Both.
    Both,
}

impl DirectionArg {
    /// How `msg list` says it: messages `to`, `from` or `of` an agent.
    pub fn describe(self) -> &'static str {
        match self {
            DirectionArg::In => "to",
            DirectionArg::Out => "from",
            DirectionArg::Both => "to or from",
        }
    }
}

impl From<DirectionArg> for flotilla_client::MessageDirection {
    fn from(d: DirectionArg) -> Self {
        match d {
            DirectionArg::In => flotilla_client::MessageDirection::In,
            DirectionArg::Out => flotilla_client::MessageDirection::Out,
            DirectionArg::Both => flotilla_client::MessageDirection::Both,
        }
    }
}

/// Where `AGENT` is looked up when it is a name.
#[derive(Debug, Clone, Default, Args)]
pub struct FindAgent {
    /// Look the agent's name up in this swarm only [default: every swarm].
    #[arg(long)]
    pub swarm: Option<String>,
}

/// `flotilla agent start|pause|resume`.
#[derive(Debug, Args)]
pub struct LifecycleArgs {
    /// Its id or name.
    pub agent: String,
    /// Where to look the name up.
    #[command(flatten)]
    pub find: FindAgent,
    /// Output.
    #[command(flatten)]
    pub out: JsonFlag,
}

/// `flotilla agent stop|restart`.
#[derive(Debug, Args)]
pub struct ForceLifecycleArgs {
    /// Its id or name.
    pub agent: String,
    /// Where to look the name up.
    #[command(flatten)]
    pub find: FindAgent,
    /// Kill at once (SIGKILL) instead of waiting for it to exit.
    #[arg(long)]
    pub force: bool,
    /// Output.
    #[command(flatten)]
    pub out: JsonFlag,
}

/// `flotilla pool …`.
#[derive(Debug, Subcommand)]
pub enum PoolCommand {
    /// List pools (of every swarm unless --swarm is given).
    List {
        /// Only this swarm's pools (name or id).
        #[arg(long)]
        swarm: Option<String>,
        /// Output.
        #[command(flatten)]
        out: JsonFlag,
    },
    /// Show a pool and its agent template.
    Show {
        /// The pool's name.
        pool: String,
        /// Its swarm (name or id).
        #[arg(long, default_value = DEFAULT_SWARM)]
        swarm: String,
        /// Output.
        #[command(flatten)]
        out: JsonFlag,
    },
    /// Delete a pool.
    Delete {
        /// The pool's name.
        pool: String,
        /// Its swarm (name or id).
        #[arg(long, default_value = DEFAULT_SWARM)]
        swarm: String,
        /// Remove its agents first (stopping the managed ones).
        #[arg(long)]
        force: bool,
    },
}

/// `flotilla task …`.
#[derive(Debug, Subcommand)]
pub enum TaskCommand {
    /// Submit a task and print its id.
    Submit(Box<SubmitArgs>),
    /// List tasks, newest first.
    List(TaskListArgs),
    /// Show a task.
    Show {
        /// Its id.
        id: TaskId,
        /// Output.
        #[command(flatten)]
        out: JsonFlag,
    },
    /// Cancel an unfinished task.
    Cancel {
        /// Its id.
        id: TaskId,
        /// Why.
        #[arg(long)]
        reason: Option<String>,
        /// Output.
        #[command(flatten)]
        out: JsonFlag,
    },
    /// Queue a failed, dead or cancelled task again.
    Retry {
        /// Its id.
        id: TaskId,
        /// A new attempt limit.
        #[arg(long, value_name = "N")]
        max_attempts: Option<u32>,
        /// Output.
        #[command(flatten)]
        out: JsonFlag,
    },
    /// Wait for a task to finish; exit 0 if it completed, 1 if not, 2 on timeout.
    Wait {
        /// Its id.
        id: TaskId,
        /// Give up after this long.
        #[arg(long, value_parser = parse_duration, default_value = "5m", value_name = "DURATION")]
        timeout: Duration,
        /// Output.
        #[command(flatten)]
        out: JsonFlag,
    },
}

/// `flotilla task submit`.
#[derive(Debug, Args)]
pub struct SubmitArgs {
    /// The swarm (name or id).
    #[arg(long, default_value = DEFAULT_SWARM)]
    pub swarm: String,
    /// The task's type [default: default].
    #[arg(long = "type", value_name = "TYPE")]
    pub task_type: Option<String>,
    /// The payload as JSON text ('-' reads it from stdin).
    #[arg(
        long,
        value_name = "JSON",
        conflicts_with = "payload_file",
        allow_hyphen_values = true
    )]
    pub payload: Option<String>,
    /// Read the payload from a file ('-' for stdin).
    #[arg(long, value_name = "PATH")]
    pub payload_file: Option<PathBuf>,
    /// 1 to 10, higher first [default: 5].
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u8).range(1..=10))]
    pub priority: Option<u8>,
    /// A capability the agent must have (repeatable).
    #[arg(long = "require", value_name = "CAP")]
    pub require: Vec<String>,
    /// A task to wait for, as ID or ID:success (fail this task if that one fails); repeatable.
    #[arg(long = "depends-on", value_name = "ID[:success]")]
    pub depends_on: Vec<String>,
    /// Attempts allowed [default: the swarm's].
    #[arg(long, value_name = "N")]
    pub max_attempts: Option<u32>,
    /// How long one attempt may run, e.g. 30s [default: the swarm's].
    #[arg(long, value_parser = parse_duration, value_name = "DURATION")]
    pub timeout: Option<Duration>,
    /// Fail the task if it has not finished by then: RFC 3339, or a duration from now (1h).
    #[arg(long, value_name = "WHEN")]
    pub deadline: Option<String>,
    /// Submitting again with the same key answers the first task.
    #[arg(long, value_name = "KEY")]
    pub idempotency_key: Option<String>,
    /// Tasks with the same key prefer the same agent.
    #[arg(long, value_name = "KEY")]
    pub affinity_key: Option<String>,
    /// Run it one at a time with the swarm's other ordered tasks, in submission order (in a
    /// ring, by the token's holder; see docs/topologies.md).
    #[arg(long)]
    pub ordered: bool,
    /// Wait for the task to finish and print its result; exit 1 if it did not complete.
    #[arg(long)]
    pub wait: bool,
    /// With --wait, give up after this long (exit 2).
    #[arg(long, value_parser = parse_duration, default_value = "5m", value_name = "DURATION", requires = "wait")]
    pub wait_timeout: Duration,
    /// Output.
    #[command(flatten)]
    pub out: JsonFlag,
}

/// `flotilla task list`.
#[derive(Debug, Args)]
pub struct TaskListArgs {
    /// Only this swarm's tasks (name or id).
    #[arg(long)]
    pub swarm: Option<String>,
    /// Only tasks with this status.
    #[arg(long, value_name = "STATUS")]
    pub status: Option<TaskStatus>,
    /// Only tasks of this type.
    #[arg(long = "type", value_name = "TYPE")]
    pub task_type: Option<String>,
    /// Only tasks held or done by this agent.
    #[arg(long, value_name = "ID")]
    pub agent: Option<AgentId>,
    /// How many tasks to show (1–1000).
    #[arg(long, default_value_t = 50, value_parser = clap::value_parser!(u32).range(1..=1000))]
    pub limit: u32,
    /// Every matching task (follows the pages).
    #[arg(long)]
    pub all: bool,
    /// Output.
    #[command(flatten)]
    pub out: JsonFlag,
}

/// `flotilla run`.
#[derive(Debug, Args)]
#[command(
    after_help = "Each non-empty line of FILE is a task spec (JSON). A file of at most \
10,000 tasks is submitted as one batch, so `ref`s and `depends_on: [{\"ref\": …}]` resolve \
across the whole file. A larger file (or any file with --batch) is submitted in batches; a task \
may then depend by ref on a task of its own batch or of an earlier one (the ref is replaced by \
the id), not on one of a later batch."
)]
pub struct RunArgs {
    /// The JSON Lines file of task specs.
    pub file: PathBuf,
    /// The swarm (name or id).
    #[arg(long, default_value = DEFAULT_SWARM)]
    pub swarm: String,
    /// Stop waiting after this long (exit 2).
    #[arg(long, value_parser = parse_duration, value_name = "DURATION")]
    pub timeout: Option<Duration>,
    /// Submit in batches of N (1–10000) [default: the whole file if it has at most 10,000
    /// tasks, else 1000].
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u32).range(1..=10_000))]
    pub batch: Option<u32>,
    /// Output.
    #[command(flatten)]
    pub out: JsonFlag,
}

/// `flotilla worker`.
#[derive(Debug, Args)]
#[command(
    after_help = "COMMAND runs once per task, without a shell, with the task's payload \
(JSON) on stdin and FLOTILLA_TASK_ID, FLOTILLA_TASK_TYPE, FLOTILLA_TASK_ATTEMPT and \
FLOTILLA_TASK_PAYLOAD (left out above 64 KiB) in its environment. Exit 0 completes the task \
with stdout as the result (parsed as JSON when it is JSON, else a string; null when empty); \
any other exit fails the attempt with the end of stderr. The task's timeout kills it. \
Ctrl-C stops taking tasks, lets running ones finish, then unregisters. Given several \
coordinators (--url or FLOTILLA_URL listing them, separated by commas), the worker moves to \
the next when the one it uses stops answering, and carries on there as the same agent.

With --agent-from-env, the worker acts as an agent that exists already: the managed agent that \
the coordinator started this process for in daemon mode, named by FLOTILLA_URL, \
FLOTILLA_AGENT_ID and FLOTILLA_TOKEN (all required). It neither registers nor unregisters."
)]
pub struct WorkerArgs {
    /// Act as the managed agent named by FLOTILLA_URL, FLOTILLA_AGENT_ID and FLOTILLA_TOKEN
    /// (a pool's daemon-mode command) instead of registering a new one.
    #[arg(long, conflicts_with_all = ["swarm", "agent_type", "name", "capabilities"])]
    pub agent_from_env: bool,
    /// The swarm to join (name or id).
    #[arg(long, default_value = DEFAULT_SWARM)]
    pub swarm: String,
    /// The agent's type (its pool).
    #[arg(long = "type", default_value = "worker", value_name = "TYPE")]
    pub agent_type: String,
    /// The agent's name [default: generated].
    #[arg(long)]
    pub name: Option<String>,
    /// A capability of the agent (repeatable).
    #[arg(long = "capability", value_name = "CAP")]
    pub capabilities: Vec<String>,
    /// How many tasks run at once [default: 1; with --agent-from-env, the agent's
    /// max_concurrent_tasks].
    #[arg(long, value_parser = clap::value_parser!(u32).range(1..=1024), value_name = "N")]
    pub concurrency: Option<u32>,
    /// How long one poll for a task waits (at most 60s).
    #[arg(long, value_parser = parse_duration, default_value = "30s", value_name = "DURATION")]
    pub poll_wait: Duration,
    /// On Ctrl-C, how long running tasks may take to finish.
    #[arg(long, value_parser = parse_duration, default_value = "30s", value_name = "DURATION")]
    pub shutdown_grace: Duration,
    /// The command to run for each task, and its arguments.
    #[arg(
        required = true,
        trailing_var_arg = true,
        allow_hyphen_values = true,
        value_name = "COMMAND"
    )]
    pub command: Vec<String>,
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    fn parse(args: &[&str]) -> Result<Cli, clap::Error> {
        Cli::try_parse_from(std::iter::once("flotilla").chain(args.iter().copied()))
    }

    #[test]
    fn the_command_line_is_consistent() {
        Cli::command().debug_assert();
    }

    #[test]
    fn global_options_go_anywhere() {
        let cli = parse(&[
            "swarm",
            "list",
            "--url",
            "http://h:1",
            "--token",
            "t",
            "--json",
        ])
        .unwrap();
        assert_eq!(cli.global.url, "http://h:1");
        assert_eq!(cli.global.token.as_deref(), Some("t"));
        assert!(matches!(
            cli.command,
            Command::Swarm(SwarmCommand::List {
                out: JsonFlag { json: true }
            })
        ));
        let cli = parse(&["--data-dir", "/d", "serve", "--listen", "0.0.0.0:9000"]).unwrap();
        assert_eq!(cli.global.data_dir, Some(PathBuf::from("/d")));
        match cli.command {
            Command::Serve(s) => assert_eq!(s.listen.port(), 9000),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn serve_takes_the_security_options() {
        let cli = parse(&[
            "serve",
            "--work-root",
            "/srv/a",
            "--work-root",
            "/srv/b",
            "--run-as",
            "nobody",
            "--alert-webhook",
            "https://hooks.example/a",
            "--alert-webhook",
            "http://127.0.0.1:9/b",
            "--tls-cert",
            "c.pem",
            "--tls-key",
            "k.pem",
            "--ca-cert",
            "ca.pem",
        ])
        .unwrap();
        assert_eq!(cli.global.ca_cert, Some(PathBuf::from("ca.pem")));
        let Command::Serve(args) = cli.command else {
            panic!("serve")
        };
        let c = args.config(PathBuf::from("/data"));
        assert_eq!(
            c.work_roots,
            [PathBuf::from("/srv/a"), PathBuf::from("/srv/b")]
        );
        assert_eq!(c.run_as.as_deref(), Some("nobody"));
        assert_eq!(
            c.alert_webhooks.urls,
            ["https://hooks.example/a", "http://127.0.0.1:9/b"]
        );
        assert_eq!(
            c.tls,
            Some(flotilla_server::tls::TlsFiles {
                cert: "c.pem".into(),
                key: "k.pem".into()
            })
        );
        // Defaults: none of them.
        let Command::Serve(args) = parse(&["serve"]).unwrap().command else {
            panic!("serve")
        };
        let c = args.config(PathBuf::from("/data"));
        assert!(c.work_roots.is_empty() && c.run_as.is_none() && c.tls.is_none());
        assert!(c.alert_webhooks.urls.is_empty());
        assert_eq!(c.listen.to_string(), "127.0.0.1:7171");
        // A certificate needs its key, and the other way round.
        assert!(parse(&["serve", "--tls-cert", "c.pem"]).is_err());
        assert!(parse(&["serve", "--tls-key", "k.pem"]).is_err());
    }

    #[test]
    fn swarm_scale_takes_a_size_or_a_signed_delta() {
        let Command::Swarm(SwarmCommand::Scale {
            swarm,
            pool,
            agents,
            by,
            ..
        }) = parse(&["swarm", "scale", "s", "coder", "5"])
            .unwrap()
            .command
        else {
            panic!("scale");
        };
        assert_eq!(
            (swarm.as_str(), pool.as_str(), agents, by),
            ("s", "coder", Some(5), None)
        );
        for (arg, want) in [("-2", -2), ("+3", 3), ("4", 4)] {
            let cli = parse(&["swarm", "scale", "s", "coder", "--by", arg]).unwrap();
            let Command::Swarm(SwarmCommand::Scale { agents, by, .. }) = cli.command else {
                panic!("scale");
            };
            assert_eq!((agents, by), (None, Some(want)), "{arg}");
        }
        assert!(parse(&["swarm", "scale", "s", "coder"]).is_err());
        assert!(parse(&["swarm", "scale", "s", "coder", "2", "--by", "1"]).is_err());
        assert!(parse(&["swarm", "scale", "s", "coder", "-1"]).is_err());
        assert!(parse(&["swarm", "scale", "s", "coder", "--by", "x"]).is_err());
    }

    #[test]
    fn swarm_create_takes_settings() {
        let cli = parse(&[
            "swarm",
            "create",
            "builders",
            "--topology",
            "mesh",
            "--max-agents",
            "5",
            "--heartbeat-interval",
            "2s",
            "--task-timeout",
            "10m",
            "--max-attempts",
            "4",
        ])
        .unwrap();
        let Command::Swarm(SwarmCommand::Create { name, settings, .. }) = cli.command else {
            panic!()
        };
        assert_eq!(name, "builders");
        assert_eq!(settings.topology, Some(TopologyArg::Mesh));
        assert_eq!(settings.max_agents, Some(5));
        assert_eq!(settings.heartbeat_interval, Some(Duration::from_secs(2)));
        assert_eq!(settings.task_timeout, Some(Duration::from_secs(600)));
        assert_eq!(settings.max_attempts, Some(4));
        assert!(parse(&["swarm", "create", "x", "--topology", "blob"]).is_err());
        assert!(parse(&["swarm", "create", "x", "--task-timeout", "5"]).is_err());
    }

    #[test]
    fn task_submit_flags() {
        let id = "0190b6e4-0000-7000-8000-000000000001";
        let cli = parse(&[
            "task",
            "submit",
            "--type",
            "build",
            "--payload",
            "{\"a\":1}",
            "--priority",
            "9",
            "--require",
            "rust",
            "--require",
            "gpu",
            "--depends-on",
            id,
            "--depends-on",
            &format!("{id}:success"),
            "--timeout",
            "30s",
            "--wait",
            "--wait-timeout",
            "1m",
        ])
        .unwrap();
        let Command::Task(TaskCommand::Submit(s)) = cli.command else {
            panic!()
        };
        assert_eq!(s.swarm, "default");
        assert_eq!(s.priority, Some(9));
        assert_eq!(s.require, vec!["rust", "gpu"]);
        assert_eq!(s.depends_on.len(), 2);
        assert!(s.wait);
        assert_eq!(s.wait_timeout, Duration::from_secs(60));
        assert!(parse(&["task", "submit", "--priority", "11"]).is_err());
        assert!(parse(&["task", "submit", "--payload", "1", "--payload-file", "f"]).is_err());
        assert!(parse(&["task", "submit", "--wait-timeout", "1m"]).is_err());
    }

    #[test]
    fn statuses_and_ids_are_checked_by_the_parser() {
        assert!(parse(&["task", "list", "--status", "running"]).is_ok());
        let err = parse(&["task", "list", "--status", "nope"])
            .unwrap_err()
            .to_string();
        assert!(err.contains("completed"), "{err}");
        assert!(parse(&["agent", "list", "--status", "idle"]).is_ok());
        assert!(parse(&["task", "show", "not-a-uuid"]).is_err());
        assert!(parse(&["task", "list", "--limit", "0"]).is_err());
    }

    #[test]
    fn worker_takes_the_command_after_its_options() {
        let cli = parse(&[
            "worker",
            "--concurrency",
            "4",
            "--capability",
            "py",
            "--",
            "python3",
            "-c",
            "print(1)",
        ])
        .unwrap();
        let Command::Worker(w) = cli.command else {
            panic!()
        };
        assert_eq!(w.concurrency, Some(4));
        assert_eq!(w.capabilities, vec!["py"]);
        assert_eq!(w.command, vec!["python3", "-c", "print(1)"]);
        assert_eq!(w.poll_wait, Duration::from_secs(30));
        let cli = parse(&["worker", "cat", "-n"]).unwrap();
        let Command::Worker(w) = cli.command else {
            panic!()
        };
        assert_eq!(w.command, vec!["cat", "-n"]);
        assert!(parse(&["worker"]).is_err());
    }

    #[test]
    fn swarm_topology_shows_sets_and_configures() {
        let Command::Swarm(SwarmCommand::Topology {
            swarm,
            set,
            config,
            dot,
            out,
        }) = parse(&["swarm", "topology", "default"]).unwrap().command
        else {
            panic!("topology");
        };
        assert_eq!(swarm, "default");
        assert_eq!((set, config, dot, out.json), (None, None, false, false));
        let cli = parse(&[
            "swarm",
            "topology",
            "default",
            "--set",
            "ring",
            "--config",
            r#"{"ring":{"order":"load"}}"#,
        ])
        .unwrap();
        let Command::Swarm(SwarmCommand::Topology { set, config, .. }) = cli.command else {
            panic!("topology");
        };
        assert_eq!(set, Some(Topology::Ring));
        assert_eq!(config, Some(serde_json::json!({"ring": {"order": "load"}})));
        assert!(matches!(
            parse(&["swarm", "topology", "s", "--dot"]).unwrap().command,
            Command::Swarm(SwarmCommand::Topology { dot: true, .. })
        ));
        assert!(parse(&["swarm", "topology", "s", "--dot", "--json"]).is_err());
        let err = parse(&["swarm", "topology", "s", "--set", "blob"])
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("\"blob\" is not a topology; use one of star, mesh, hierarchical, ring"),
            "{err}"
        );
        let err = parse(&["swarm", "topology", "s", "--config", "[1]"])
            .unwrap_err()
            .to_string();
        assert!(err.contains("must be a JSON object of sections"), "{err}");
        let err = parse(&["swarm", "topology", "s", "--config", "{ring"])
            .unwrap_err()
            .to_string();
        assert!(err.contains("not valid JSON"), "{err}");
    }

    #[test]
    fn msg_send_takes_a_body_and_request_options() {
        let cli = parse(&[
            "msg",
            "send",
            "coder-1",
            "--body",
            "-",
            "--priority",
            "critical",
            "--topic",
            "reviews",
            "--ttl",
            "30s",
            "--request",
            "--timeout",
            "10s",
            "--swarm",
            "builders",
            "--json",
        ])
        .unwrap();
        let Command::Msg(MsgCommand::Send(s)) = cli.command else {
            panic!("send");
        };
        assert_eq!(s.agent, "coder-1");
        assert_eq!(s.message.body, "-");
        assert_eq!(s.message.priority, MessagePriority::Critical);
        assert_eq!(s.message.ttl, Some(Duration::from_secs(30)));
        assert_eq!(s.topic.as_deref(), Some("reviews"));
        assert!(s.request && s.out.json);
        assert_eq!(s.timeout, Some(Duration::from_secs(10)));
        assert_eq!(s.find.swarm.as_deref(), Some("builders"));
        let cli = parse(&["msg", "send", "a", "--body", "hello there"]).unwrap();
        let Command::Msg(MsgCommand::Send(s)) = cli.command else {
            panic!("send");
        };
        assert_eq!(s.message.priority, MessagePriority::Normal);
        assert!(!s.request && s.timeout.is_none() && s.message.ttl.is_none());
        // --timeout is for requests; a body is required; priorities and durations are checked.
        assert!(parse(&["msg", "send", "a", "--body", "x", "--timeout", "1s"]).is_err());
        assert!(parse(&["msg", "send", "a"]).is_err());
        let err = parse(&["msg", "send", "a", "--body", "x", "--priority", "urgent"])
            .unwrap_err()
            .to_string();
        assert!(err.contains("critical, high, normal, low"), "{err}");
        assert!(parse(&["msg", "send", "a", "--body", "x", "--ttl", "30"]).is_err());
    }

    #[test]
    fn msg_publish_broadcast_and_tail() {
        let cli = parse(&[
            "msg",
            "publish",
            "default",
            "builds.done",
            "--body",
            "{}",
            "--priority",
            "low",
        ])
        .unwrap();
        let Command::Msg(MsgCommand::Publish {
            swarm,
            topic,
            message,
            out,
        }) = cli.command
        else {
            panic!("publish");
        };
        assert_eq!((swarm.as_str(), topic.as_str()), ("default", "builds.done"));
        assert_eq!(message.priority, MessagePriority::Low);
        assert!(!out.json);
        assert!(parse(&["msg", "publish", "default", "--body", "{}"]).is_err());
        let cli = parse(&["msg", "broadcast", "default", "--body", "-1", "--json"]).unwrap();
        let Command::Msg(MsgCommand::Broadcast { message, out, .. }) = cli.command else {
            panic!("broadcast");
        };
        assert_eq!(message.body, "-1");
        assert!(out.json);
        let cli = parse(&[
            "msg", "tail", "default", "--agent", "coder-1", "--topic", "builds.*", "--events",
            "--json",
        ])
        .unwrap();
        let Command::Msg(MsgCommand::Tail {
            swarm,
            agent,
            topic,
            events,
            out,
        }) = cli.command
        else {
            panic!("tail");
        };
        assert_eq!(swarm, "default");
        assert_eq!(agent.as_deref(), Some("coder-1"));
        assert_eq!(topic.as_deref(), Some("builds.*"));
        assert!(events && out.json);
        assert!(matches!(
            parse(&["msg", "tail", "s"]).unwrap().command,
            Command::Msg(MsgCommand::Tail {
                agent: None,
                topic: None,
                events: false,
                ..
            })
        ));
        assert!(parse(&["msg", "tail"]).is_err());
    }

    #[test]
    fn msg_list_dead_retry_and_subscribe() {
        let cli = parse(&[
            "msg",
            "list",
            "coder-1",
            "--direction",
            "in",
            "--status",
            "dead",
            "--limit",
            "10",
        ])
        .unwrap();
        let Command::Msg(MsgCommand::List {
            agent,
            direction,
            status,
            limit,
            ..
        }) = cli.command
        else {
            panic!("list");
        };
        assert_eq!(agent, "coder-1");
        assert_eq!(direction, DirectionArg::In);
        assert_eq!(status, Some(MessageStatus::Dead));
        assert_eq!(limit, 10);
        assert!(matches!(
            parse(&["msg", "list", "a"]).unwrap().command,
            Command::Msg(MsgCommand::List {
                direction: DirectionArg::Both,
                status: None,
                limit: 50,
                ..
            })
        ));
        assert!(parse(&["msg", "list", "a", "--direction", "sideways"]).is_err());
        let err = parse(&["msg", "list", "a", "--status", "lost"])
            .unwrap_err()
            .to_string();
        assert!(err.contains("pending, delivered, acked, dead"), "{err}");
        assert!(parse(&["msg", "list", "a", "--limit", "0"]).is_err());
        assert!(matches!(
            parse(&["msg", "dead", "default", "--json"])
                .unwrap()
                .command,
            Command::Msg(MsgCommand::Dead {
                limit: 50,
                out: JsonFlag { json: true },
                ..
            })
        ));
        let id = "0190b6e4-0000-7000-8000-000000000001";
        let Command::Msg(MsgCommand::Retry { id: parsed, .. }) =
            parse(&["msg", "retry", id]).unwrap().command
        else {
            panic!("retry");
        };
        assert_eq!(parsed.to_string(), id);
        assert!(parse(&["msg", "retry", "not-an-id"]).is_err());
        let Command::Msg(MsgCommand::Subscribe {
            agent,
            topics,
            clear,
            ..
        }) = parse(&["msg", "subscribe", "coder-1", "builds.*", "health"])
            .unwrap()
            .command
        else {
            panic!("subscribe");
        };
        assert_eq!(agent, "coder-1");
        assert_eq!(topics, ["builds.*", "health"]);
        assert!(!clear);
        assert!(matches!(
            parse(&["msg", "subscribe", "coder-1"]).unwrap().command,
            Command::Msg(MsgCommand::Subscribe { ref topics, clear: false, .. }) if topics.is_empty()
        ));
        assert!(parse(&["msg", "subscribe", "a", "--clear"]).is_ok());
        assert!(parse(&["msg", "subscribe", "a", "t", "--clear"]).is_err());
    }

    #[test]
    fn run_takes_a_file_and_a_batch_size() {
        let cli = parse(&["run", "tasks.jsonl", "--timeout", "10m", "--batch", "500"]).unwrap();
        let Command::Run(r) = cli.command else {
            panic!()
        };
        assert_eq!(r.file, PathBuf::from("tasks.jsonl"));
        assert_eq!(r.batch, Some(500));
        assert!(parse(&["run", "f", "--batch", "20000"]).is_err());
    }
}
