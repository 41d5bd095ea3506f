//! Fleet files: swarms, their pools and the agent templates of managed pools, written in TOML
//! for people, turned into the API's fleet document ([`FleetSpec`], `PUT /fleet`).
//!
//! ```toml
//! [swarms.default]
//! description = "word counting"     # optional, as are topology and the swarm configuration:
//! heartbeat_interval = "5s"         # heartbeat_interval, heartbeat_miss_limit, task_timeout,
//! task_max_attempts = 3             # task_max_attempts, min_agents, max_agents
//!
//! [swarms.default.health]           # when an agent is degraded or unhealthy (all optional)
//! error_rate_threshold = 0.5        # degraded when this share of recent tasks failed…
//! error_rate_window = "5m"          # …within this window…
//! error_rate_min_tasks = 4          # …counting from this many tasks
//! breaker_failures = 5              # failures in a row that stop new tasks (0: never)
//! breaker_cooldown = "30s"          # then one trial task
//! slow_task_factor = 5              # degraded when a task runs 5× its usual time (0: off)
//! progress_timeout = "2m"           # degraded when a task reports no progress this long
//! memory_limit = "1GiB"             # unhealthy above (degraded from 90%); managed agents
//!                                   # default to their template's memory limit
//!
//! [swarms.default.ring]             # a topology's settings (star, mesh, hierarchical, ring;
//! order = "load"                    # see docs/topologies.md), durations in human units
//! token_timeout = "10s"
//!
//! [swarms.default.messaging]        # message delivery (docs/messaging.md)
//! ack_timeout = "1m"
//!
//! [swarms.default.recovery]         # how failed managed agents come back (all optional)
//! restart = true
//! backoff_initial = "1s"            # doubling with each restart in a row…
//! backoff_max = "1m"                # …up to this
//! stable_after = "1m"               # running this long resets the count
//! rollback_after = 3                # from the 4th restart in a row, roll back to the latest
//!                                   # checkpoint first (0: never)
//! give_up_after = 5                 # then `failed`, and the pool starts a replacement
//!
//! [swarms.default.pools.wordcount]
//! min_agents = 3                    # managed agents kept running (0)
//! max_agents = 10                   # (100)
//! capabilities = ["text"]
//! max_concurrent_tasks = 1
//!
//! [swarms.default.pools.wordcount.agent]   # a pool without one only groups connected agents
//! command = "python3"
//! args = ["agents/wordcount.py"]
//! env = { LANG = "C.UTF-8" }
//! payload_env = ["MODEL"]    # exec mode: names a task may set in its payload's `env` object
//! workdir = "."              # relative to the fleet file's directory, which is the default
//! user = "agents"            # run its processes as this user (the coordinator must be root)
//! runtime = "process"        # or "tmux"
//! mode = "exec"              # or "daemon"
//! placement = "local"        # or "hosts": on machines running `flotilla host` (daemon mode)
//! host_labels = ["linux"]    # with "hosts": only hosts carrying every one of these labels
//! memory = "256MiB"          # B, KiB, MiB, GiB, TiB, or KB, MB, GB, TB
//! cpu = 0.5                  # cores
//! cpu_time = "10m"           # CPU time per process
//! task_timeout = "30s"       # wall clock of one task attempt
//! stop_grace = "10s"         # SIGTERM, then SIGKILL after this long
//!
//! [swarms.default.pools.wordcount.checkpoints]   # optional
//! keep = 10                  # checkpoints kept per agent
//! after_each_task = false    # one after every completed task
//! every = "15m"              # one this often while an agent runs
//! ```
//!
//! Everything is checked here, before anything is sent: unknown keys, types, units, durations,
//! names and ranges. Each error names the file, the line and column, and the key's path, e.g.
//! `fleet.toml:12:10: swarms.default.pools.wordcount.agent.memory: "256 Mb" is not a size; use
//! e.g. 256MiB`.

use std::fmt;
use std::ops::Range;
use std::path::{Component, Path, PathBuf};
use std::time::Duration;

use flotilla_core::agent::normalize_capabilities;
use flotilla_core::api::{FleetSpec, FleetSwarm};
use flotilla_core::swarm::validate_name;
use flotilla_core::{
    AgentMode, AgentTemplate, Placement, PoolSpec, ResourceLimits, RuntimeKind, ScalingMetric,
    ScalingPolicy, Strategy, SwarmConfig, Topology,
};
use toml::Spanned;
use toml::de::{DeString, DeTable, DeValue};

use crate::duration::parse_duration;

/// The most errors reported for one file.
const MAX_ERRORS: usize = 20;

/// One thing wrong with a fleet file.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FleetError {
    /// The file, as it was named.
    pub file: String,
    /// Line and column (from 1), when the error is at a place in the file.
    pub position: Option<(usize, usize)>,
    /// The key's path, e.g. `swarms.default.pools.wordcount.agent.memory`; empty for errors
    /// about the file as a whole.
    pub path: String,
    /// What is wrong, and what to write instead.
    pub message: String,
}

impl fmt::Display for FleetError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.file)?;
        if let Some((line, column)) = self.position {
            write!(f, ":{line}:{column}")?;
        }
        if !self.path.is_empty() {
            write!(f, ": {}", self.path)?;
        }
        write!(f, ": {}", self.message)
    }
}

/// Everything wrong with a fleet file (at least one thing), in file order.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FleetErrors(pub Vec<FleetError>);

impl fmt::Display for FleetErrors {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, e) in self.0.iter().enumerate() {
            if i > 0 {
                f.write_str("\n")?;
            }
            write!(f, "{e}")?;
        }
        Ok(())
    }
}

impl std::error::Error for FleetErrors {}

/// Reads and checks the fleet file at `path`; relative working directories are taken from
/// the file's directory.
pub fn load(path: &Path) -> Result<FleetSpec, FleetErrors> {
    let name = path.display().to_string();
    let whole = |message: String| {
        FleetErrors(vec![FleetError {
            file: name.clone(),
            position: None,
            path: String::new(),
            message,
        }])
    };
    let text = std::fs::read_to_string(path).map_err(|e| whole(format!("cannot read it: {e}")))?;
    let dir = match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
        _ => PathBuf::from("."),
    };
    let base = dir
        .canonicalize()
        .or_else(|_| std::path::absolute(&dir))
        .map_err(|e| {
            whole(format!(
                "cannot tell the absolute path of its directory: {e}"
            ))
        })?;
    parse(&text, &name, &base)
}

/// Checks the text of a fleet file named `file` and converts it; `base_dir` (absolute) is
/// where relative working directories start.
pub fn parse(text: &str, file: &str, base_dir: &Path) -> Result<FleetSpec, FleetErrors> {
    let mut cx = Cx {
        src: text,
        file,
        base_dir,
        errors: Vec::new(),
    };
    let root = match DeTable::parse(text) {
        Ok(root) => root,
        Err(e) => {
            let at = e.span().unwrap_or(0..0);
            let message = e.message().trim().to_owned();
            cx.err(at, "", message);
            return Err(FleetErrors(cx.errors));
        }
    };
    let spec = cx.document(root.get_ref());
    if cx.errors.is_empty() {
        Ok(spec)
    } else {
        // Stable: errors at one place keep the order they were found in.
        cx.errors.sort_by_key(|e| e.position);
        cx.errors.truncate(MAX_ERRORS);
        Err(FleetErrors(cx.errors))
    }
}

type Key<'i> = Spanned<DeString<'i>>;
type Value<'i> = Spanned<DeValue<'i>>;

/// The conversion's context: the source (for positions) and the errors found so far.
struct Cx<'a> {
    src: &'a str,
    file: &'a str,
    base_dir: &'a Path,
    errors: Vec<FleetError>,
}

const SWARM_KEYS: &[&str] = &[
    "description",
    "topology",
    "heartbeat_interval",
    "heartbeat_miss_limit",
    "task_timeout",
    "task_max_attempts",
    "min_agents",
    "max_agents",
    "strategy",
    "prefetch",
    "affinity_wait",
    "health",
    "recovery",
    "star",
    "mesh",
    "hierarchical",
    "ring",
    "messaging",
    "pools",
];
/// Keys of `[swarms.S.star|mesh|hierarchical|ring]` and `[swarms.S.messaging]`, and which of
/// them are durations (written `"5s"` here, `_ms` in the API).
const SECTION_KEYS: &[(&str, &[&str], &[&str])] = &[
    (
        "star",
        &["coordinator_count", "max_workers", "failover_coordinator"],
        &[],
    ),
    (
        "mesh",
        &[
            "connection_strategy",
            "neighbours",
            "gossip_interval",
            "routing",
        ],
        &["gossip_interval"],
    ),
    ("hierarchical", &["levels", "parent_child_ratio"], &[]),
    (
        "ring",
        &["order", "token_timeout", "skip_unhealthy"],
        &["token_timeout"],
    ),
    (
        "messaging",
        &[
            "ack_timeout",
            "max_deliveries",
            "retry_initial",
            "retry_max",
            "default_ttl",
            "request_timeout",
            "max_inbox",
        ],
        &[
            "ack_timeout",
            "retry_initial",
            "retry_max",
            "default_ttl",
            "request_timeout",
        ],
    ),
];
const HEALTH_KEYS: &[&str] = &[
    "error_rate_threshold",
    "error_rate_window",
    "error_rate_min_tasks",
    "breaker_failures",
    "breaker_cooldown",
    "slow_task_factor",
    "progress_timeout",
    "memory_limit",
];
const RECOVERY_KEYS: &[&str] = &[
    "restart",
    "backoff_initial",
    "backoff_max",
    "stable_after",
    "rollback_after",
    "give_up_after",
];
const POOL_KEYS: &[&str] = &[
    "min_agents",
    "max_agents",
    "capabilities",
    "max_concurrent_tasks",
    "agent",
    "checkpoints",
    "priority",
    "resources",
    "scaling",
];
const RESOURCE_KEYS: &[&str] = &["cpu", "memory", "disk"];
const SCALING_KEYS: &[&str] = &[
    "name",
    "metric",
    "scale_up_threshold",
    "scale_down_threshold",
    "scale_up_increment",
    "scale_down_increment",
    "cooldown",
    "evaluation_periods",
    "evaluation_period",
    "enabled",
    "predictive",
];
const SCALING_METRICS: &[(&str, ScalingMetric)] = &[
    ("queue_depth", ScalingMetric::QueueDepth),
    ("agent_utilization", ScalingMetric::AgentUtilization),
    ("error_rate", ScalingMetric::ErrorRate),
    ("latency_p95", ScalingMetric::LatencyP95),
];
const CHECKPOINT_KEYS: &[&str] = &["keep", "after_each_task", "every"];
const AGENT_KEYS: &[&str] = &[
    "command",
    "args",
    "env",
    "payload_env",
    "workdir",
    "user",
    "runtime",
    "mode",
    "placement",
    "host_labels",
    "memory",
    "cpu",
    "cpu_time",
    "task_timeout",
    "stop_grace",
];

impl Cx<'_> {
    fn err(&mut self, span: Range<usize>, path: &str, message: impl Into<String>) {
        let position = Some(line_column(self.src, span.start));
        self.errors.push(FleetError {
            file: self.file.to_owned(),
            position,
            path: path.to_owned(),
            message: message.into(),
        });
    }

    fn unknown(&mut self, key: &Key<'_>, parent: &str, known: &[&str]) {
        let name: &str = key.get_ref();
        let mut message = format!("unknown key {}", quote(name));
        if let Some(close) = known
            .iter()
            .filter(|k| edit_distance(k, name) <= 2)
            .min_by_key(|k| edit_distance(k, name))
        {
            message.push_str(&format!("; did you mean {}?", quote(close)));
        } else {
            message.push_str(&format!("; expected one of: {}", known.join(", ")));
        }
        let path = join(parent, name);
        self.err(key.span(), &path, message);
    }

    fn document(&mut self, root: &DeTable<'_>) -> FleetSpec {
        let mut spec = FleetSpec::default();
        let mut saw_swarms = false;
        for (key, value) in root.iter() {
            match key_name(key) {
                "swarms" => {
                    saw_swarms = true;
                    let Some(swarms) = self.table(value, "swarms") else {
                        continue;
                    };
                    for (name, swarm) in swarms.iter() {
                        if let Some(s) = self.swarm(name, swarm) {
                            spec.swarms.push(s);
                        }
                    }
                }
                _ => self.unknown(key, "", &["swarms"]),
            }
        }
        if !saw_swarms && self.errors.is_empty() {
            self.err(
                0..0,
                "",
                "no swarms: describe at least one, e.g. [swarms.default] with \
                 [swarms.default.pools.NAME] tables",
            );
        }
        spec
    }

    fn swarm(&mut self, key: &Key<'_>, value: &Value<'_>) -> Option<FleetSwarm> {
        let name = key.get_ref().to_string();
        let path = join("swarms", &name);
        if let Err(e) = validate_name("swarm", &name) {
            self.err(key.span(), &path, e.to_string());
        }
        let table = self.table(value, &path)?;
        let mut swarm = FleetSwarm {
            name,
            description: None,
            topology: None,
            config: None,
            pools: Vec::new(),
        };
        let mut config = SwarmConfig::default();
        let mut config_given = false;
        let mut min_at = None;
        for (k, v) in table.iter() {
            let kp = join(&path, k.get_ref());
            match key_name(k) {
                "description" => swarm.description = self.string(v, &kp),
                "topology" => {
                    swarm.topology = self.choice(
                        v,
                        &kp,
                        &[
                            ("star", Topology::Star),
                            ("mesh", Topology::Mesh),
                            ("hierarchical", Topology::Hierarchical),
                            ("ring", Topology::Ring),
                        ],
                    )
                }
                "heartbeat_interval" => {
                    config_given = true;
                    if let Some(d) = self.duration(v, &kp) {
                        if d < Duration::from_millis(100) || d > Duration::from_secs(3600) {
                            self.err(v.span(), &kp, "must be between 100ms and 1h");
                        }
                        config.heartbeat_interval = d;
                    }
                }
                "heartbeat_miss_limit" => {
                    config_given = true;
                    if let Some(n) = self.count(v, &kp, 1, 100) {
                        config.heartbeat_miss_limit = n;
                    }
                }
                "task_timeout" => {
                    config_given = true;
                    if let Some(d) = self.duration(v, &kp) {
                        if d < Duration::from_millis(100) || d > Duration::from_secs(7 * 86_400) {
                            self.err(v.span(), &kp, "must be between 100ms and 7d");
                        }
                        config.task_timeout = d;
                    }
                }
                "strategy" => {
                    config_given = true;
                    let options: Vec<(&str, Strategy)> =
                        Strategy::ALL.iter().map(|s| (s.as_str(), *s)).collect();
                    if let Some(st) = self.choice(v, &kp, &options) {
                        config.strategy = st;
                    }
                }
                "prefetch" => {
                    config_given = true;
                    if let Some(n) = self.count(v, &kp, 0, 1000) {
                        config.prefetch = n;
                    }
                }
                "affinity_wait" => {
                    config_given = true;
                    if let Some(d) = self.duration(v, &kp) {
                        config.affinity_wait = d;
                    }
                }
                "task_max_attempts" => {
                    config_given = true;
                    if let Some(n) = self.count(v, &kp, 1, 100) {
                        config.task_max_attempts = n;
                    }
                }
                "min_agents" => {
                    config_given = true;
                    min_at = Some((v.span(), kp.clone()));
                    if let Some(n) = self.count(v, &kp, 0, u32::MAX) {
                        config.min_agents = n;
                    }
                }
                "max_agents" => {
                    config_given = true;
                    if let Some(n) = self.count(v, &kp, 1, u32::MAX) {
                        config.max_agents = n;
                    }
                }
                "health" => {
                    config_given = true;
                    self.health(v, &kp, &mut config.health);
                }
                "recovery" => {
                    config_given = true;
                    self.recovery(v, &kp, &mut config.recovery);
                }
                section @ ("star" | "mesh" | "hierarchical" | "ring" | "messaging") => {
                    config_given = true;
                    self.section(section, v, &kp, &mut config);
                }
                "pools" => {
                    let Some(pools) = self.table(v, &kp) else {
                        continue;
                    };
                    for (pk, pv) in pools.iter() {
                        if let Some(p) = self.pool(&kp, pk, pv) {
                            swarm.pools.push(p);
                        }
                    }
                }
                _ => self.unknown(k, &path, SWARM_KEYS),
            }
        }
        if config_given {
            if config.min_agents > config.max_agents {
                let (span, kp) = min_at.unwrap_or((key.span(), path.clone()));
                self.err(
                    span,
                    &kp,
                    format!(
                        "min_agents ({}) must not exceed max_agents ({})",
                        config.min_agents, config.max_agents
                    ),
                );
            } else if let Err(e) = config.validate()
                && !self.has_errors_under(&path)
            {
                self.err(key.span(), &path, e.to_string());
            }
            swarm.config = Some(config);
        }
        Some(swarm)
    }

    /// `[swarms.NAME.health]`: when an agent counts as degraded or unhealthy.
    fn health(&mut self, value: &Value<'_>, path: &str, h: &mut flotilla_core::HealthPolicy) {
        let Some(table) = self.table(value, path) else {
            return;
        };
        for (k, v) in table.iter() {
            let kp = join(path, k.get_ref());
            match key_name(k) {
                "error_rate_threshold" => {
                    if let Some(x) = self.number(v, &kp) {
                        if !(x > 0.0 && x <= 1.0) {
                            self.err(v.span(), &kp, "must be above 0 and at most 1, e.g. 0.5");
                        }
                        h.error_rate_threshold = x;
                    }
                }
                "error_rate_window" => {
                    if let Some(d) = self.duration(v, &kp) {
                        if d < Duration::from_secs(1) {
                            self.err(v.span(), &kp, "must be at least 1s");
                        }
                        h.error_rate_window = d;
                    }
                }
                "error_rate_min_tasks" => {
                    if let Some(n) = self.count(v, &kp, 1, 10_000) {
                        h.error_rate_min_tasks = n;
                    }
                }
                "breaker_failures" => {
                    if let Some(n) = self.count(v, &kp, 0, 10_000) {
                        h.breaker_failures = n;
                    }
                }
                "breaker_cooldown" => {
                    if let Some(d) = self.duration(v, &kp) {
                        if d < Duration::from_millis(100) || d > Duration::from_secs(86_400) {
                            self.err(v.span(), &kp, "must be between 100ms and 24h");
                        }
                        h.breaker_cooldown = d;
                    }
                }
                "slow_task_factor" => {
                    if let Some(x) = self.number(v, &kp) {
                        if !(x == 0.0 || x >= 1.0) {
                            self.err(v.span(), &kp, "must be 0 (off) or at least 1, e.g. 5");
                        }
                        h.slow_task_factor = x;
                    }
                }
                "progress_timeout" => {
                    if let Some(d) = self.duration(v, &kp) {
                        if d < Duration::from_millis(100) {
                            self.err(v.span(), &kp, "must be at least 100ms");
                        }
                        h.progress_timeout = Some(d);
                    }
                }
                "memory_limit" => {
                    if let Some(bytes) = self.size(v, &kp) {
                        if bytes < 1024 * 1024 {
                            self.err(v.span(), &kp, "must be at least 1MiB");
                        }
                        h.memory_limit_mb = Some(bytes as f64 / (1024.0 * 1024.0));
                    }
                }
                _ => self.unknown(k, path, HEALTH_KEYS),
            }
        }
    }

    /// `[swarms.NAME.recovery]`: how failed managed agents are restarted.
    fn recovery(&mut self, value: &Value<'_>, path: &str, r: &mut flotilla_core::RecoveryPolicy) {
        let Some(table) = self.table(value, path) else {
            return;
        };
        for (k, v) in table.iter() {
            let kp = join(path, k.get_ref());
            match key_name(k) {
                "restart" => match v.get_ref() {
                    DeValue::Boolean(b) => r.restart = *b,
                    _ => self.mismatch(v, &kp, "true or false"),
                },
                "backoff_initial" | "backoff_max" | "stable_after" => {
                    if let Some(d) = self.duration(v, &kp) {
                        if d < Duration::from_millis(10) || d > Duration::from_secs(86_400) {
                            self.err(v.span(), &kp, "must be between 10ms and 24h");
                        }
                        match key_name(k) {
                            "backoff_initial" => r.backoff_initial = d,
                            "backoff_max" => r.backoff_max = d,
                            _ => r.stable_after = d,
                        }
                    }
                }
                "rollback_after" => {
                    if let Some(n) = self.count(v, &kp, 0, 1000) {
                        r.rollback_after = n;
                    }
                }
                "give_up_after" => {
                    if let Some(n) = self.count(v, &kp, 1, 1000) {
                        r.give_up_after = n;
                    }
                }
                _ => self.unknown(k, path, RECOVERY_KEYS),
            }
        }
    }

    /// `[swarms.S.star]`, `.mesh`, `.hierarchical`, `.ring` (a topology's settings, see
    /// docs/topologies.md) and `.messaging` (docs/messaging.md): the API's fields, with
    /// durations in human units instead of `_ms` numbers.
    fn section(&mut self, section: &str, value: &Value<'_>, path: &str, config: &mut SwarmConfig) {
        let Some(table) = self.table(value, path) else {
            return;
        };
        let (_, keys, durations) = SECTION_KEYS
            .iter()
            .find(|(name, _, _)| *name == section)
            .expect("a known section");
        // The section as the API writes it, over the current values.
        let mut current = match section {
            "messaging" => serde_json::to_value(&config.messaging),
            "star" => serde_json::to_value(&config.topology.star),
            "mesh" => serde_json::to_value(&config.topology.mesh),
            "hierarchical" => serde_json::to_value(&config.topology.hierarchical),
            _ => serde_json::to_value(&config.topology.ring),
        }
        .expect("settings serialize");
        let fields = current.as_object_mut().expect("settings are an object");
        let before = self.errors.len();
        for (k, v) in table.iter() {
            let name: &str = k.get_ref();
            let kp = join(path, name);
            if !keys.contains(&name) {
                self.unknown(k, path, keys);
                continue;
            }
            if durations.contains(&name) {
                if let Some(d) = self.duration(v, &kp) {
                    fields.insert(
                        format!("{name}_ms"),
                        serde_json::json!(d.as_millis() as u64),
                    );
                }
            } else if let Some(j) = self.plain_json(v, &kp) {
                fields.insert(name.to_owned(), j);
            }
        }
        if self.errors.len() > before {
            return;
        }
        let mut read = |v: serde_json::Value| -> Result<(), String> {
            match section {
                "messaging" => {
                    config.messaging = serde_json::from_value(v).map_err(|e| e.to_string())?
                }
                "star" => {
                    config.topology.star = serde_json::from_value(v).map_err(|e| e.to_string())?
                }
                "mesh" => {
                    config.topology.mesh = serde_json::from_value(v).map_err(|e| e.to_string())?
                }
                "hierarchical" => {
                    config.topology.hierarchical =
                        serde_json::from_value(v).map_err(|e| e.to_string())?
                }
                _ => config.topology.ring = serde_json::from_value(v).map_err(|e| e.to_string())?,
            }
            Ok(())
        };
        if let Err(e) = read(current) {
            self.err(value.span(), path, e);
        }
    }

    /// A value as JSON: strings, numbers, booleans, arrays and tables of them.
    fn plain_json(&mut self, v: &Value<'_>, path: &str) -> Option<serde_json::Value> {
        Some(match v.get_ref() {
            DeValue::String(s) => serde_json::Value::String(s.to_string()),
            DeValue::Boolean(b) => serde_json::Value::Bool(*b),
            DeValue::Integer(_) => serde_json::json!(self.count(v, path, 0, u32::MAX)?),
            DeValue::Float(_) => serde_json::json!(self.number(v, path)?),
            DeValue::Array(items) => {
                let mut out = Vec::with_capacity(items.len());
                for (i, item) in items.iter().enumerate() {
                    out.push(self.plain_json(item, &format!("{path}[{i}]"))?);
                }
                serde_json::Value::Array(out)
            }
            DeValue::Table(t) => {
                let mut out = serde_json::Map::new();
                for (k, item) in t.iter() {
                    let name: &str = k.get_ref();
                    out.insert(name.to_owned(), self.plain_json(item, &join(path, name))?);
                }
                serde_json::Value::Object(out)
            }
            _ => {
                self.mismatch(v, path, "a string, number, true/false, array or table");
                return None;
            }
        })
    }

    /// `[swarms.S.pools.P.checkpoints]`: how the pool's agents are checkpointed.
    fn checkpoint_policy(
        &mut self,
        value: &Value<'_>,
        path: &str,
        c: &mut flotilla_core::CheckpointPolicy,
    ) {
        let Some(table) = self.table(value, path) else {
            return;
        };
        for (k, v) in table.iter() {
            let kp = join(path, k.get_ref());
            match key_name(k) {
                "keep" => {
                    if let Some(n) = self.count(v, &kp, 1, 1000) {
                        c.keep = n;
                    }
                }
                "after_each_task" => match v.get_ref() {
                    DeValue::Boolean(b) => c.after_each_task = *b,
                    _ => self.mismatch(v, &kp, "true or false"),
                },
                "every" => {
                    if let Some(d) = self.duration(v, &kp) {
                        if d < Duration::from_secs(1) {
                            self.err(v.span(), &kp, "must be at least 1s");
                        }
                        c.every = Some(d);
                    }
                }
                _ => self.unknown(k, path, CHECKPOINT_KEYS),
            }
        }
    }

    /// `[swarms.S.pools.P.resources]`: what each agent of the pool reserves on the machine.
    fn resources(&mut self, value: &Value<'_>, path: &str, r: &mut flotilla_core::ResourceRequest) {
        let Some(table) = self.table(value, path) else {
            return;
        };
        for (k, v) in table.iter() {
            let kp = join(path, k.get_ref());
            match key_name(k) {
                "cpu" => {
                    if let Some(n) = self.number(v, &kp) {
                        if !(0.0..=1024.0).contains(&n) {
                            self.err(v.span(), &kp, "must be a number of cores from 0 to 1024");
                        }
                        r.cpu_cores = n;
                    }
                }
                "memory" | "disk" => {
                    if let Some(bytes) = self.size(v, &kp) {
                        let mib = bytes.div_ceil(1024 * 1024);
                        if key_name(k) == "memory" {
                            r.memory_mb = mib;
                        } else {
                            r.disk_mb = mib;
                        }
                    }
                }
                _ => self.unknown(k, path, RESOURCE_KEYS),
            }
        }
    }

    /// `[[swarms.S.pools.P.scaling]]`: the pool's autoscaling policies.
    fn scaling_policies(&mut self, value: &Value<'_>, path: &str) -> Vec<ScalingPolicy> {
        let items: Vec<&Value<'_>> = match value.get_ref() {
            DeValue::Array(items) => items.iter().collect(),
            DeValue::Table(_) => vec![value],
            _ => {
                self.mismatch(
                    value,
                    path,
                    "a table, or an array of tables ([[...scaling]])",
                );
                return Vec::new();
            }
        };
        let mut policies = Vec::new();
        for (i, item) in items.into_iter().enumerate() {
            let ip = format!("{path}[{i}]");
            let Some(table) = self.table(item, &ip) else {
                continue;
            };
            let mut p = ScalingPolicy {
                name: if i == 0 {
                    "default".to_owned()
                } else {
                    format!("policy-{}", i + 1)
                },
                metric: ScalingMetric::QueueDepth,
                scale_up_threshold: f64::NAN,
                scale_down_threshold: f64::NAN,
                scale_up_increment: 1,
                scale_down_increment: 1,
                cooldown: Duration::from_secs(300),
                evaluation_periods: 3,
                evaluation_period: Duration::from_secs(10),
                enabled: true,
                predictive: false,
            };
            for (k, v) in table.iter() {
                let kp = join(&ip, k.get_ref());
                match key_name(k) {
                    "name" => {
                        if let Some(n) = self.string(v, &kp) {
                            p.name = n;
                        }
                    }
                    "metric" => {
                        if let Some(m) = self.choice(v, &kp, SCALING_METRICS) {
                            p.metric = m;
                        }
                    }
                    "scale_up_threshold" | "scale_down_threshold" => {
                        if let Some(n) = self.number(v, &kp) {
                            if n < 0.0 {
                                self.err(v.span(), &kp, "must be at least 0");
                            }
                            if key_name(k) == "scale_up_threshold" {
                                p.scale_up_threshold = n;
                            } else {
                                p.scale_down_threshold = n;
                            }
                        }
                    }
                    "scale_up_increment" | "scale_down_increment" => {
                        if let Some(n) = self.count(v, &kp, 1, 1000) {
                            if key_name(k) == "scale_up_increment" {
                                p.scale_up_increment = n;
                            } else {
                                p.scale_down_increment = n;
                            }
                        }
                    }
                    "cooldown" => {
                        if let Some(d) = self.duration(v, &kp) {
                            p.cooldown = d;
                        }
                    }
                    "evaluation_periods" => {
                        if let Some(n) = self.count(v, &kp, 1, 100) {
                            p.evaluation_periods = n;
                        }
                    }
                    "evaluation_period" => {
                        if let Some(d) = self.duration(v, &kp) {
                            p.evaluation_period = d;
                        }
                    }
                    "enabled" => match v.get_ref() {
                        DeValue::Boolean(b) => p.enabled = *b,
                        _ => self.mismatch(v, &kp, "true or false"),
                    },
                    "predictive" => match v.get_ref() {
                        DeValue::Boolean(b) => p.predictive = *b,
                        _ => self.mismatch(v, &kp, "true or false"),
                    },
                    _ => self.unknown(k, &ip, SCALING_KEYS),
                }
            }
            for (field, value) in [
                ("scale_up_threshold", p.scale_up_threshold),
                ("scale_down_threshold", p.scale_down_threshold),
            ] {
                if value.is_nan() && !table.iter().any(|(k, _)| key_name(k) == field) {
                    self.err(item.span(), &ip, format!("needs {field}"));
                }
            }
            policies.push(p);
        }
        policies
    }

    fn pool(&mut self, parent: &str, key: &Key<'_>, value: &Value<'_>) -> Option<PoolSpec> {
        let name = key.get_ref().to_string();
        let path = join(parent, &name);
        if let Err(e) = validate_name("pool", &name) {
            self.err(key.span(), &path, e.to_string());
        }
        let table = self.table(value, &path)?;
        let mut pool = PoolSpec {
            name,
            min_agents: 0,
            max_agents: 100,
            capabilities: Vec::new(),
            max_concurrent_tasks: 1,
            template: None,
            checkpoints: Default::default(),
            priority: flotilla_core::DEFAULT_POOL_PRIORITY,
            resources: Default::default(),
            scaling: Vec::new(),
        };
        let mut min_at = None;
        for (k, v) in table.iter() {
            let kp = join(&path, k.get_ref());
            match key_name(k) {
                "min_agents" => {
                    min_at = Some((v.span(), kp.clone()));
                    if let Some(n) = self.count(v, &kp, 0, 10_000) {
                        pool.min_agents = n;
                    }
                }
                "max_agents" => {
                    if let Some(n) = self.count(v, &kp, 1, 10_000) {
                        pool.max_agents = n;
                    }
                }
                "max_concurrent_tasks" => {
                    if let Some(n) = self.count(v, &kp, 1, 10_000) {
                        pool.max_concurrent_tasks = n;
                    }
                }
                "capabilities" => {
                    if let Some(caps) = self.strings(v, &kp) {
                        match normalize_capabilities(caps) {
                            Ok(caps) => pool.capabilities = caps,
                            Err(e) => self.err(v.span(), &kp, e.to_string()),
                        }
                    }
                }
                "agent" => pool.template = self.template(&kp, k, v),
                "checkpoints" => self.checkpoint_policy(v, &kp, &mut pool.checkpoints),
                "priority" => {
                    if let Some(n) = self.count(v, &kp, 1, 10) {
                        pool.priority = n as u8;
                    }
                }
                "resources" => self.resources(v, &kp, &mut pool.resources),
                "scaling" => pool.scaling = self.scaling_policies(v, &kp),
                _ => self.unknown(k, &path, POOL_KEYS),
            }
        }
        if pool.min_agents > pool.max_agents {
            let (span, kp) = min_at.unwrap_or((key.span(), path.clone()));
            self.err(
                span,
                &kp,
                format!(
                    "min_agents ({}) must not exceed max_agents ({})",
                    pool.min_agents, pool.max_agents
                ),
            );
        } else if pool.min_agents > 0
            && pool.template.is_none()
            && !table.iter().any(|(k, _)| key_name(k) == "agent")
        {
            let (span, kp) = min_at.unwrap_or((key.span(), path.clone()));
            self.err(
                span,
                &kp,
                format!(
                    "min_agents needs an agent template to start agents from: add a \
                     [{}.agent] table with at least a command",
                    path
                ),
            );
        }
        // Whatever the checks above missed, the coordinator's own rules catch here.
        if !self.has_errors_under(&path)
            && let Err(e) = pool.clone().validated()
        {
            self.err(key.span(), &path, e.to_string());
        }
        Some(pool)
    }

    fn template(&mut self, path: &str, key: &Key<'_>, value: &Value<'_>) -> Option<AgentTemplate> {
        let table = self.table(value, path)?;
        let mut command = None;
        let mut t = AgentTemplate {
            command: String::new(),
            args: Vec::new(),
            env: Default::default(),
            workdir: None,
            user: None,
            payload_env: Vec::new(),
            runtime: RuntimeKind::Process,
            mode: AgentMode::Exec,
            placement: Default::default(),
            host_labels: Vec::new(),
            limits: ResourceLimits::default(),
            stop_grace: Duration::from_secs(10),
        };
        let mut workdir = None;
        for (k, v) in table.iter() {
            let kp = join(path, k.get_ref());
            match key_name(k) {
                "command" => {
                    if let Some(c) = self.string(v, &kp) {
                        if c.trim().is_empty() {
                            self.err(v.span(), &kp, "must not be empty: name the program to run");
                        } else if c.contains('\0') {
                            self.err(v.span(), &kp, "must not contain NUL bytes");
                        }
                        command = Some(c);
                    } else {
                        command = Some(String::new());
                    }
                }
                "args" => {
                    if let Some(args) = self.strings(v, &kp) {
                        if args.len() > 1000 {
                            self.err(v.span(), &kp, "takes at most 1000 arguments");
                        } else if args.iter().any(|a| a.contains('\0')) {
                            self.err(v.span(), &kp, "arguments must not contain NUL bytes");
                        }
                        t.args = args;
                    }
                }
                "env" => {
                    if let Some(env) = self.env(v, &kp) {
                        t.env = env;
                    }
                }
                "payload_env" => {
                    if let Some(names) = self.strings(v, &kp) {
                        t.payload_env = names;
                    }
                }
                "user" => {
                    if let Some(user) = self.string(v, &kp) {
                        t.user = Some(user);
                    }
                }
                "workdir" => {
                    if let Some(dir) = self.string(v, &kp) {
                        if dir.trim().is_empty() || dir.contains('\0') {
                            self.err(v.span(), &kp, "must be a directory, e.g. \".\"");
                        }
                        workdir = Some(dir);
                    }
                }
                "runtime" => {
                    if let Some(r) = self.choice(
                        v,
                        &kp,
                        &[
                            ("process", RuntimeKind::Process),
                            ("tmux", RuntimeKind::Tmux),
                        ],
                    ) {
                        t.runtime = r;
                    }
                }
                "mode" => {
                    if let Some(m) = self.choice(
                        v,
                        &kp,
                        &[("exec", AgentMode::Exec), ("daemon", AgentMode::Daemon)],
                    ) {
                        t.mode = m;
                    }
                }
                "placement" => {
                    if let Some(p) = self.choice(
                        v,
                        &kp,
                        &[("local", Placement::Local), ("hosts", Placement::Hosts)],
                    ) {
                        t.placement = p;
                    }
                }
                "host_labels" => {
                    if let Some(labels) = self.strings(v, &kp) {
                        t.host_labels = labels;
                    }
                }
                "memory" => {
                    if let Some(bytes) = self.size(v, &kp) {
                        if bytes < 1024 * 1024 {
                            self.err(v.span(), &kp, "must be at least 1MiB");
                        }
                        t.limits.memory_bytes = Some(bytes);
                    }
                }
                "cpu" => {
                    if let Some(cores) = self.number(v, &kp) {
                        if !(cores > 0.0 && cores <= 1024.0) {
                            self.err(
                                v.span(),
                                &kp,
                                format!("{cores} is not a CPU share; use a number of cores above 0, e.g. 0.5 or 2"),
                            );
                        }
                        t.limits.cpu_cores = Some(cores);
                    }
                }
                "cpu_time" => {
                    if let Some(d) = self.duration(v, &kp) {
                        if d < Duration::from_secs(1) {
                            self.err(v.span(), &kp, "must be at least 1s");
                        }
                        t.limits.cpu_time = Some(d);
                    }
                }
                "task_timeout" => {
                    if let Some(d) = self.duration(v, &kp) {
                        if d < Duration::from_millis(100) {
                            self.err(v.span(), &kp, "must be at least 100ms");
                        }
                        t.limits.task_timeout = Some(d);
                    }
                }
                "stop_grace" => {
                    if let Some(d) = self.duration(v, &kp) {
                        if d > Duration::from_secs(3600) {
                            self.err(v.span(), &kp, "must be at most 1h");
                        }
                        t.stop_grace = d;
                    }
                }
                _ => self.unknown(k, path, AGENT_KEYS),
            }
        }
        match command {
            Some(c) => t.command = c,
            None => {
                self.err(
                    key.span(),
                    path,
                    "has no command: add command = \"…\" (the program to run)",
                );
            }
        }
        let dir = match &workdir {
            Some(d) => self.base_dir.join(d),
            // An agent on another host works in a directory of that host's own.
            None if t.placement == Placement::Hosts => return Some(t),
            None => self.base_dir.to_path_buf(),
        };
        t.workdir = Some(normalize(&dir).display().to_string());
        Some(t)
    }

    // ----- values -----

    fn has_errors_under(&self, path: &str) -> bool {
        self.errors
            .iter()
            .any(|e| e.path == path || e.path.starts_with(&format!("{path}.")))
    }

    fn mismatch(&mut self, v: &Value<'_>, path: &str, expected: &str) {
        let found = kind(v.get_ref());
        self.err(
            v.span(),
            path,
            format!("expected {expected}, found {found}"),
        );
    }

    fn table<'v, 'i>(&mut self, v: &'v Value<'i>, path: &str) -> Option<&'v DeTable<'i>> {
        match v.get_ref() {
            DeValue::Table(t) => Some(t),
            _ => {
                self.mismatch(v, path, "a table");
                None
            }
        }
    }

    fn string(&mut self, v: &Value<'_>, path: &str) -> Option<String> {
        match v.get_ref() {
            DeValue::String(s) => Some(s.to_string()),
            _ => {
                self.mismatch(v, path, "a string (in quotes)");
                None
            }
        }
    }

    fn strings(&mut self, v: &Value<'_>, path: &str) -> Option<Vec<String>> {
        let DeValue::Array(items) = v.get_ref() else {
            self.mismatch(v, path, "an array of strings, e.g. [\"a\", \"b\"]");
            return None;
        };
        let mut out = Vec::with_capacity(items.len());
        let mut ok = true;
        for (i, item) in items.iter().enumerate() {
            match item.get_ref() {
                DeValue::String(s) => out.push(s.to_string()),
                _ => {
                    ok = false;
                    self.mismatch(item, &format!("{path}[{i}]"), "a string (in quotes)");
                }
            }
        }
        ok.then_some(out)
    }

    fn env(
        &mut self,
        v: &Value<'_>,
        path: &str,
    ) -> Option<std::collections::BTreeMap<String, String>> {
        let DeValue::Table(table) = v.get_ref() else {
            self.mismatch(v, path, "a table of strings, e.g. { LANG = \"C.UTF-8\" }");
            return None;
        };
        let mut out = std::collections::BTreeMap::new();
        let mut ok = true;
        for (k, val) in table.iter() {
            let name: &str = k.get_ref();
            let kp = join(path, name);
            if name.is_empty() || name.contains('=') || name.contains('\0') {
                ok = false;
                self.err(
                    k.span(),
                    &kp,
                    format!("{} is not a valid environment variable name", quote(name)),
                );
                continue;
            }
            match val.get_ref() {
                DeValue::String(s) if s.contains('\0') => {
                    ok = false;
                    self.err(val.span(), &kp, "must not contain NUL bytes");
                }
                DeValue::String(s) => {
                    out.insert(name.to_owned(), s.to_string());
                }
                _ => {
                    ok = false;
                    self.mismatch(val, &kp, "a string (environment values are text: quote it)");
                }
            }
        }
        if out.len() > 1000 {
            ok = false;
            self.err(v.span(), path, "takes at most 1000 variables");
        }
        ok.then_some(out)
    }

    /// A whole number from `min` to `max`.
    fn count(&mut self, v: &Value<'_>, path: &str, min: u32, max: u32) -> Option<u32> {
        let DeValue::Integer(i) = v.get_ref() else {
            self.mismatch(v, path, "a whole number");
            return None;
        };
        let digits = i.as_str().replace('_', "");
        let n = i128::from_str_radix(&digits, i.radix()).ok();
        match n {
            Some(n) if n >= i128::from(min) && n <= i128::from(max) => Some(n as u32),
            _ if max == u32::MAX => {
                self.err(
                    v.span(),
                    path,
                    format!("{i} is out of range: at least {min}"),
                );
                None
            }
            _ => {
                self.err(
                    v.span(),
                    path,
                    format!("{i} is out of range: from {min} to {max}"),
                );
                None
            }
        }
    }

    fn number(&mut self, v: &Value<'_>, path: &str) -> Option<f64> {
        let parsed = match v.get_ref() {
            DeValue::Integer(i) => i64::from_str_radix(&i.as_str().replace('_', ""), i.radix())
                .ok()
                .map(|n| n as f64),
            DeValue::Float(f) => f.as_str().replace('_', "").parse::<f64>().ok(),
            _ => {
                self.mismatch(v, path, "a number");
                return None;
            }
        };
        match parsed {
            Some(n) if n.is_finite() => Some(n),
            _ => {
                self.err(v.span(), path, "is not a usable number");
                None
            }
        }
    }

    fn duration(&mut self, v: &Value<'_>, path: &str) -> Option<Duration> {
        match v.get_ref() {
            DeValue::String(s) => match parse_duration(s) {
                Ok(d) => Some(d),
                Err(_) => {
                    self.err(
                        v.span(),
                        path,
                        format!(
                            "{} is not a duration; use e.g. 500ms, 30s, 5m, 1h or 1h30m",
                            quote(s)
                        ),
                    );
                    None
                }
            },
            DeValue::Integer(i) => {
                self.err(
                    v.span(),
                    path,
                    format!("{i} is not a duration: give a unit, e.g. \"{i}s\""),
                );
                None
            }
            _ => {
                self.mismatch(v, path, "a duration in quotes, e.g. \"30s\"");
                None
            }
        }
    }

    fn size(&mut self, v: &Value<'_>, path: &str) -> Option<u64> {
        match v.get_ref() {
            DeValue::String(s) => match parse_size(s) {
                Ok(n) => Some(n),
                Err(_) => {
                    self.err(
                        v.span(),
                        path,
                        format!("{} is not a size; use e.g. 256MiB", quote(s)),
                    );
                    None
                }
            },
            DeValue::Integer(i) => {
                self.err(
                    v.span(),
                    path,
                    format!("{i} is not a size: give a unit, e.g. \"{i}MiB\""),
                );
                None
            }
            _ => {
                self.mismatch(v, path, "a size in quotes, e.g. \"256MiB\"");
                None
            }
        }
    }

    fn choice<T: Copy>(&mut self, v: &Value<'_>, path: &str, options: &[(&str, T)]) -> Option<T> {
        let names: Vec<&str> = options.iter().map(|(n, _)| *n).collect();
        let DeValue::String(s) = v.get_ref() else {
            self.mismatch(v, path, &format!("one of {}", quoted_list(&names)));
            return None;
        };
        match options.iter().find(|(n, _)| *n == s.as_ref()) {
            Some((_, t)) => Some(*t),
            None => {
                self.err(
                    v.span(),
                    path,
                    format!("{} is not one of {}", quote(s), quoted_list(&names)),
                );
                None
            }
        }
    }
}

/// Parses a size such as `256MiB`, `1.5GiB`, `512KB` or `1048576B` into bytes. Binary units
/// (KiB, MiB, GiB, TiB) count in 1024s, decimal ones (KB, MB, GB, TB) in 1000s; a space may
/// come before the unit. Units are case-sensitive (`Mb` would be megabits).
pub fn parse_size(text: &str) -> Result<u64, String> {
    let bad = || format!("{text:?} is not a size; use e.g. 256MiB");
    let s = text.trim();
    let num_len = s
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(s.len());
    if num_len == 0 {
        return Err(bad());
    }
    let number: f64 = s[..num_len].parse().map_err(|_| bad())?;
    let unit = s[num_len..].trim_start();
    let multiplier: f64 = match unit {
        "B" => 1.0,
        "KiB" => 1024.0,
        "MiB" => 1024.0 * 1024.0,
        "GiB" => 1024.0 * 1024.0 * 1024.0,
        "TiB" => 1024.0 * 1024.0 * 1024.0 * 1024.0,
        "KB" | "kB" => 1e3,
        "MB" => 1e6,
        "GB" => 1e9,
        "TB" => 1e12,
        _ => return Err(bad()),
    };
    let bytes = (number * multiplier).round();
    if !bytes.is_finite() || bytes > u64::MAX as f64 {
        return Err(bad());
    }
    Ok(bytes as u64)
}

fn key_name<'k>(key: &'k Key<'_>) -> &'k str {
    key.get_ref()
}

/// 1-based line and column (in characters) of a byte offset.
fn line_column(src: &str, offset: usize) -> (usize, usize) {
    let mut offset = offset.min(src.len());
    while !src.is_char_boundary(offset) {
        offset -= 1;
    }
    let before = &src[..offset];
    let line = before.matches('\n').count() + 1;
    let line_start = before.rfind('\n').map_or(0, |i| i + 1);
    let column = src[line_start..offset].chars().count() + 1;
    (line, column)
}

/// `parent.key`, with the key in quotes when it is not a bare TOML key.
fn join(parent: &str, key: &str) -> String {
    let bare = !key.is_empty()
        && key
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-');
    let key = if bare { key.to_owned() } else { quote(key) };
    if parent.is_empty() {
        key
    } else {
        format!("{parent}.{key}")
    }
}

fn quote(s: &str) -> String {
    format!("{s:?}")
}

fn quoted_list(names: &[&str]) -> String {
    let quoted: Vec<String> = names.iter().map(|n| quote(n)).collect();
    match quoted.split_last() {
        Some((last, rest)) if !rest.is_empty() => format!("{} or {last}", rest.join(", ")),
        _ => quoted.join(""),
    }
}

fn kind(v: &DeValue<'_>) -> &'static str {
    match v {
        DeValue::String(_) => "a string",
        DeValue::Integer(_) => "an integer",
        DeValue::Float(_) => "a float",
        DeValue::Boolean(_) => "a boolean",
        DeValue::Datetime(_) => "a date-time",
        DeValue::Array(_) => "an array",
        DeValue::Table(_) => "a table",
    }
}

/// Removes `.` and resolves `..` without touching the file system.
fn normalize(path: &Path) -> PathBuf {
    let mut out = PathBuf::new();
    for c in path.components() {
        match c {
            Component::CurDir => {}
            Component::ParentDir => {
                if !out.pop() {
                    out.push(c);
                }
            }
            other => out.push(other),
        }
    }
    out
}

/// Levenshtein distance, for "did you mean".
fn edit_distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut prev: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut cur = vec![i + 1];
        for (j, cb) in b.iter().enumerate() {
            let cost = usize::from(ca != *cb);
            cur.push((prev[j] + cost).min(prev[j + 1] + 1).min(cur[j] + 1));
        }
        prev = cur;
    }
    prev[b.len()]
}

#[cfg(test)]
mod tests {
    use super::*;

    const BASE: &str = "/srv/fleet";

    fn ok(text: &str) -> FleetSpec {
        parse(text, "fleet.toml", Path::new(BASE)).unwrap_or_else(|e| panic!("{e}"))
    }

    fn errors(text: &str) -> Vec<String> {
        match parse(text, "fleet.toml", Path::new(BASE)) {
            Ok(spec) => panic!("accepted: {spec:?}"),
            Err(e) => e.0.iter().map(|e| e.to_string()).collect(),
        }
    }

    /// The one error of `text`, which must start with `fleet.toml:LINE:COL: PATH: `.
    fn error(text: &str) -> String {
        let all = errors(text);
        assert_eq!(all.len(), 1, "{all:#?}");
        all.into_iter().next().unwrap()
    }

    const FULL: &str = r#"
[swarms.default]
description = "word counting"
topology = "mesh"
heartbeat_interval = "2s"
heartbeat_miss_limit = 4
task_timeout = "10m"
task_max_attempts = 5
min_agents = 1
max_agents = 50

[swarms.default.pools.wordcount]
min_agents = 3
max_agents = 10
capabilities = ["text", "count", "text"]
max_concurrent_tasks = 2

[swarms.default.pools.wordcount.agent]
command = "python3"
args = ["agents/wordcount.py", "--fast"]
env = { LANG = "C.UTF-8", MODE = "x" }
workdir = "."
runtime = "process"
mode = "exec"
memory = "256MiB"
cpu = 0.5
cpu_time = "1m"
task_timeout = "30s"
stop_grace = "5s"

[swarms.default.pools.echo]
min_agents = 1
agent = { command = "sh", args = ["echo-daemon.sh"], runtime = "tmux", mode = "daemon", workdir = "agents" }

[swarms.default.pools.connected]
max_agents = 4

[swarms.builders]
[swarms.builders.pools.rust]
agent.command = "/usr/bin/cargo"
agent.workdir = "/abs/dir"
agent.cpu = 2
"#;

    #[test]
    fn a_full_file_becomes_the_fleet_document() {
        let spec = ok(FULL);
        assert_eq!(spec.swarms.len(), 2);
        let d = &spec.swarms[0];
        assert_eq!(d.name, "default");
        assert_eq!(d.description.as_deref(), Some("word counting"));
        assert_eq!(d.topology, Some(Topology::Mesh));
        let config = d.config.as_ref().unwrap();
        assert_eq!(config.heartbeat_interval, Duration::from_secs(2));
        assert_eq!(config.heartbeat_miss_limit, 4);
        assert_eq!(config.task_timeout, Duration::from_secs(600));
        assert_eq!(config.task_max_attempts, 5);
        assert_eq!((config.min_agents, config.max_agents), (1, 50));

        // Pools in file order.
        let names: Vec<&str> = d.pools.iter().map(|p| p.name.as_str()).collect();
        assert_eq!(names, ["wordcount", "echo", "connected"]);
        let wc = &d.pools[0];
        assert_eq!((wc.min_agents, wc.max_agents), (3, 10));
        assert_eq!(wc.capabilities, ["count", "text"]);
        assert_eq!(wc.max_concurrent_tasks, 2);
        let t = wc.template.as_ref().unwrap();
        assert_eq!(t.command, "python3");
        assert_eq!(t.args, ["agents/wordcount.py", "--fast"]);
        assert_eq!(t.env.get("LANG").map(String::as_str), Some("C.UTF-8"));
        assert_eq!(t.env.len(), 2);
        assert_eq!(t.workdir.as_deref(), Some(BASE));
        assert_eq!(t.runtime, RuntimeKind::Process);
        assert_eq!(t.mode, AgentMode::Exec);
        assert_eq!(t.limits.memory_bytes, Some(256 * 1024 * 1024));
        assert_eq!(t.limits.cpu_cores, Some(0.5));
        assert_eq!(t.limits.cpu_time, Some(Duration::from_secs(60)));
        assert_eq!(t.limits.task_timeout, Some(Duration::from_secs(30)));
        assert_eq!(t.stop_grace, Duration::from_secs(5));

        let echo = d.pools[1].template.as_ref().unwrap();
        assert_eq!(echo.runtime, RuntimeKind::Tmux);
        assert_eq!(echo.mode, AgentMode::Daemon);
        assert_eq!(echo.workdir.as_deref(), Some("/srv/fleet/agents"));
        assert_eq!(echo.stop_grace, Duration::from_secs(10));
        assert_eq!(echo.limits, ResourceLimits::default());

        let connected = &d.pools[2];
        assert!(connected.template.is_none());
        assert_eq!((connected.min_agents, connected.max_agents), (0, 4));

        let b = &spec.swarms[1];
        assert_eq!(b.name, "builders");
        assert_eq!(
            b.config, None,
            "no config key: the swarm's config is left as it is"
        );
        assert_eq!(b.description, None);
        let rust = b.pools[0].template.as_ref().unwrap();
        assert_eq!(rust.command, "/usr/bin/cargo");
        assert_eq!(rust.workdir.as_deref(), Some("/abs/dir"));
        assert_eq!(rust.limits.cpu_cores, Some(2.0));

        // Every pool passes the coordinator's own checks.
        for s in &spec.swarms {
            for p in &s.pools {
                p.clone().validated().unwrap();
            }
        }
        // And the document is what the API takes.
        let json = serde_json::to_value(&spec).unwrap();
        let back: FleetSpec = serde_json::from_value(json).unwrap();
        assert_eq!(back, spec);
    }

    #[test]
    fn a_partial_swarm_config_fills_in_defaults() {
        let spec = ok("[swarms.default]\ntask_timeout = \"1m\"\n");
        let config = spec.swarms[0].config.as_ref().unwrap();
        assert_eq!(config.task_timeout, Duration::from_secs(60));
        assert_eq!(
            config.heartbeat_interval,
            SwarmConfig::default().heartbeat_interval
        );
        assert!(spec.swarms[0].pools.is_empty());
    }

    #[test]
    fn workdirs_are_made_absolute_from_the_files_directory() {
        let spec =
            ok("[swarms.s.pools.p.agent]\ncommand = \"./run.sh\"\nworkdir = \"../other/./dir\"\n");
        let t = spec.swarms[0].pools[0].template.as_ref().unwrap();
        assert_eq!(t.workdir.as_deref(), Some("/srv/other/dir"));
        assert_eq!(t.command, "./run.sh", "the command is left as it is");
    }

    #[test]
    fn payload_env_and_user_are_read_and_checked() {
        let spec = ok(
            "[swarms.s.pools.p.agent]\ncommand = \"x\"\npayload_env = [\"MODEL\"]\nuser = \"nobody\"\n",
        );
        let t = spec.swarms[0].pools[0].template.as_ref().unwrap();
        assert_eq!(t.payload_env, ["MODEL"]);
        assert_eq!(t.user.as_deref(), Some("nobody"));
        let e = error(
            "[swarms.s.pools.p.agent]\ncommand = \"x\"\npayload_env = [\"FLOTILLA_TOKEN\"]\n",
        );
        assert!(e.starts_with("fleet.toml:1:"), "{e}");
        assert!(e.contains("reserved"), "{e}");
    }

    #[test]
    fn bad_sizes_name_the_line_and_the_field() {
        let text =
            "[swarms.default.pools.wordcount.agent]\ncommand = \"python3\"\nmemory = \"256 Mb\"\n";
        assert_eq!(
            error(text),
            "fleet.toml:3:10: swarms.default.pools.wordcount.agent.memory: \"256 Mb\" is not a size; use e.g. 256MiB"
        );
        let e = error("[swarms.s.pools.p.agent]\ncommand = \"x\"\nmemory = 256\n");
        assert!(
            e.starts_with(
                "fleet.toml:3:10: swarms.s.pools.p.agent.memory: 256 is not a size: give a unit"
            ),
            "{e}"
        );
        let e = error("[swarms.s.pools.p.agent]\ncommand = \"x\"\nmemory = \"512KiB\"\n");
        assert!(e.contains("must be at least 1MiB"), "{e}");
    }

    #[test]
    fn bad_durations_name_the_line_and_the_field() {
        let e = error("[swarms.s]\nheartbeat_interval = \"5 secs\"\n");
        assert_eq!(
            e,
            "fleet.toml:2:22: swarms.s.heartbeat_interval: \"5 secs\" is not a duration; use e.g. 500ms, 30s, 5m, 1h or 1h30m"
        );
        let e = error("[swarms.s.pools.p.agent]\ncommand = \"x\"\n  task_timeout = 30\n");
        assert!(
            e.starts_with("fleet.toml:3:18: swarms.s.pools.p.agent.task_timeout: 30 is not a duration: give a unit, e.g. \"30s\""),
            "{e}"
        );
        let e = error("[swarms.s]\nheartbeat_interval = \"10ms\"\n");
        assert!(
            e.contains("swarms.s.heartbeat_interval: must be between 100ms and 1h"),
            "{e}"
        );
    }

    #[test]
    fn unknown_keys_are_refused_with_a_suggestion() {
        let e = error("[swarms.default.pools.wordcount]\nmin_agent = 3\n");
        assert_eq!(
            e,
            "fleet.toml:2:1: swarms.default.pools.wordcount.min_agent: unknown key \"min_agent\"; did you mean \"min_agents\"?"
        );
        let e = error("[swarms.default.pools.w.agent]\ncommand = \"x\"\nshell = true\n");
        assert!(e.starts_with("fleet.toml:3:1: swarms.default.pools.w.agent.shell: unknown key \"shell\"; expected one of: command, args"), "{e}");
        let e = error("[pools.x]\nmin_agents = 1\n");
        assert!(
            e.starts_with("fleet.toml:1:2: pools: unknown key \"pools\""),
            "{e}"
        );
    }

    #[test]
    fn wrong_types_say_what_was_expected() {
        let e = error("[swarms.s.pools.p]\nmax_agents = \"10\"\n");
        assert_eq!(
            e,
            "fleet.toml:2:14: swarms.s.pools.p.max_agents: expected a whole number, found a string"
        );
        let e = error("[swarms.s.pools.p]\ncapabilities = [\"a\", 2]\n");
        assert_eq!(
            e,
            "fleet.toml:2:22: swarms.s.pools.p.capabilities[1]: expected a string (in quotes), found an integer"
        );
        let e = error("[swarms.s.pools.p.agent]\ncommand = \"x\"\nenv = { N = 1 }\n");
        assert!(
            e.starts_with("fleet.toml:3:13: swarms.s.pools.p.agent.env.N: expected a string"),
            "{e}"
        );
        let e = error("[swarms.s.pools.p.agent]\ncommand = \"x\"\nruntime = \"docker\"\n");
        assert_eq!(
            e,
            "fleet.toml:3:11: swarms.s.pools.p.agent.runtime: \"docker\" is not one of \"process\" or \"tmux\""
        );
        let e = error("[swarms.s]\ntopology = \"tree\"\n");
        assert!(
            e.contains("\"star\", \"mesh\", \"hierarchical\" or \"ring\""),
            "{e}"
        );
        let e = error("swarms = 3\n");
        assert_eq!(
            e,
            "fleet.toml:1:10: swarms: expected a table, found an integer"
        );
        let e = error("[swarms.s.pools.p.agent]\ncommand = \"x\"\ncpu = \"half\"\n");
        assert!(
            e.contains("swarms.s.pools.p.agent.cpu: expected a number, found a string"),
            "{e}"
        );
    }

    #[test]
    fn local_rules_are_checked_before_sending() {
        let e =
            error("[swarms.s.pools.p]\nmin_agents = 5\nmax_agents = 2\nagent.command = \"x\"\n");
        assert_eq!(
            e,
            "fleet.toml:2:14: swarms.s.pools.p.min_agents: min_agents (5) must not exceed max_agents (2)"
        );
        let e = error("[swarms.s.pools.p]\nmin_agents = 2\n");
        assert!(
            e.starts_with(
                "fleet.toml:2:14: swarms.s.pools.p.min_agents: min_agents needs an agent template"
            ),
            "{e}"
        );
        let e = error("[swarms.s.pools.p.agent]\ncommand = \"  \"\n");
        assert_eq!(
            e,
            "fleet.toml:2:11: swarms.s.pools.p.agent.command: must not be empty: name the program to run"
        );
        let e = error("[swarms.s.pools.p.agent]\nargs = [\"x\"]\n");
        assert!(
            e.starts_with("fleet.toml:1:19: swarms.s.pools.p.agent: has no command"),
            "{e}"
        );
        let e = error("[swarms.\"bad name\"]\n");
        assert!(
            e.starts_with(
                "fleet.toml:1:9: swarms.\"bad name\": swarm name \"bad name\" may contain only"
            ),
            "{e}"
        );
        let e = error("[swarms.s.pools.\"no/slash\"]\n");
        assert!(e.contains("swarms.s.pools.\"no/slash\": pool name"), "{e}");
        let e = error("[swarms.s.pools.p]\ncapabilities = [\"bad cap\"]\n");
        assert!(
            e.starts_with("fleet.toml:2:16: swarms.s.pools.p.capabilities: capability \"bad cap\""),
            "{e}"
        );
        let e = error("[swarms.s]\nmin_agents = 3\nmax_agents = 2\n");
        assert!(
            e.starts_with("fleet.toml:2:14: swarms.s.min_agents: min_agents (3)"),
            "{e}"
        );
        let e = error("[swarms.s.pools.p]\nmax_concurrent_tasks = 0\n");
        assert_eq!(
            e,
            "fleet.toml:2:24: swarms.s.pools.p.max_concurrent_tasks: 0 is out of range: from 1 to 10000"
        );
        let e = error("[swarms.s.pools.p.agent]\ncommand = \"x\"\ncpu = 0\n");
        assert!(e.contains("agent.cpu: 0 is not a CPU share"), "{e}");
        let e = error("[swarms.s.pools.p.agent]\ncommand = \"x\"\nstop_grace = \"2h\"\n");
        assert!(e.contains("agent.stop_grace: must be at most 1h"), "{e}");
        let e = error("[swarms.s.pools.p]\nmin_agents = -1\n");
        assert!(e.contains("min_agents: -1 is out of range"), "{e}");
    }

    #[test]
    fn several_errors_are_reported_together_in_file_order() {
        let all = errors(
            "[swarms.s.pools.p]\nmin_agents = \"x\"\nmax_agents = 0\n[swarms.s.pools.p.agent]\nmemory = \"lots\"\n",
        );
        assert_eq!(all.len(), 4, "{all:#?}");
        assert!(
            all[0].starts_with("fleet.toml:2:14: swarms.s.pools.p.min_agents:"),
            "{all:#?}"
        );
        assert!(
            all[1].starts_with("fleet.toml:3:14: swarms.s.pools.p.max_agents:"),
            "{all:#?}"
        );
        assert!(
            all[2].starts_with("fleet.toml:4:19: swarms.s.pools.p.agent: has no command"),
            "{all:#?}"
        );
        assert!(
            all[3].starts_with("fleet.toml:5:10: swarms.s.pools.p.agent.memory:"),
            "{all:#?}"
        );
    }

    #[test]
    fn syntax_errors_name_the_line() {
        let e = error("[swarms.s]\ndescription = \"unterminated\n");
        assert!(e.starts_with("fleet.toml:2:"), "{e}");
        let e = error("[swarms.s]\na = 1\na = 2\n");
        assert!(e.starts_with("fleet.toml:3:"), "{e}");
        assert_eq!(
            error(""),
            "fleet.toml:1:1: no swarms: describe at least one, e.g. [swarms.default] with [swarms.default.pools.NAME] tables"
        );
    }

    #[test]
    fn sizes_in_binary_and_decimal_units() {
        assert_eq!(parse_size("256MiB"), Ok(256 << 20));
        assert_eq!(parse_size("1.5GiB"), Ok(3 << 29));
        assert_eq!(parse_size("2 KiB"), Ok(2048));
        assert_eq!(parse_size("512KB"), Ok(512_000));
        assert_eq!(parse_size("1MB"), Ok(1_000_000));
        assert_eq!(parse_size("3GB"), Ok(3_000_000_000));
        assert_eq!(parse_size("1TiB"), Ok(1 << 40));
        assert_eq!(parse_size("100B"), Ok(100));
        for bad in [
            "", "256", "256 Mb", "256mib", "MiB", "-1MiB", "1..5GiB", "1e3MiB",
        ] {
            assert!(parse_size(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn positions_count_characters_from_one() {
        assert_eq!(line_column("abc", 0), (1, 1));
        assert_eq!(line_column("a\nbc", 3), (2, 2));
        assert_eq!(line_column("é = 1\nx", 3), (1, 3));
        assert_eq!(join("a", "b.c"), "a.\"b.c\"");
        assert_eq!(edit_distance("min_agent", "min_agents"), 1);
    }

    #[test]
    fn the_example_fleet_files_are_valid() {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../examples");
        for name in ["quickstart.toml", "claude-code.toml"] {
            let spec = load(&dir.join(name)).unwrap_or_else(|e| panic!("{e}"));
            assert!(!spec.swarms.is_empty(), "{name}");
        }
        let code = load(&dir.join("claude-code.toml")).unwrap();
        let config = code.swarms[0].config.as_ref().unwrap();
        assert_eq!(config.recovery.rollback_after, 2);
        assert_eq!(config.health.breaker_failures, 3);
        assert!(code.swarms[0].pools[0].checkpoints.after_each_task);
    }

    #[test]
    fn topology_and_messaging_settings_are_read_and_checked() {
        let d = ok(r#"
[swarms.s]
topology = "ring"

[swarms.s.ring]
order = "load"
token_timeout = "10s"

[swarms.s.mesh]
connection_strategy = "nearest"
gossip_interval = "250ms"

[swarms.s.hierarchical]
levels = [{ role = "coordinator", count = 1 }, { role = "worker" }]
parent_child_ratio = 8

[swarms.s.messaging]
ack_timeout = "1m"
default_ttl = "1h"
max_deliveries = 3
"#);
        let s = &d.swarms[0];
        assert_eq!(s.topology, Some(Topology::Ring));
        let c = s.config.as_ref().unwrap();
        assert_eq!(
            c.topology.ring.order,
            flotilla_core::topology::RingOrder::Load
        );
        assert_eq!(c.topology.ring.token_timeout, Duration::from_secs(10));
        assert!(
            c.topology.ring.skip_unhealthy,
            "fields left out keep their defaults"
        );
        assert_eq!(c.topology.mesh.gossip_interval, Duration::from_millis(250));
        assert_eq!(c.topology.hierarchical.levels.len(), 2);
        assert_eq!(c.topology.hierarchical.parent_child_ratio, 8);
        assert_eq!(c.messaging.ack_timeout, Duration::from_secs(60));
        assert_eq!(c.messaging.default_ttl, Some(Duration::from_secs(3600)));
        assert_eq!(c.messaging.max_deliveries, 3);
        let e = error("[swarms.s.ring]\nspeed = 3\n");
        assert!(
            e.contains("swarms.s.ring.speed") && e.contains("token_timeout"),
            "{e}"
        );
        let e = error("[swarms.s.ring]\norder = \"random\"\n");
        assert!(e.contains("swarms.s.ring") && e.contains("random"), "{e}");
        let e = error("[swarms.s.messaging]\nack_timeout = \"soon\"\n");
        assert!(e.contains("swarms.s.messaging.ack_timeout"), "{e}");
        let e = error("[swarms.s.ring]\ntoken_timeout = \"1ms\"\n");
        assert!(e.contains("token_timeout_ms"), "{e}");
    }

    #[test]
    fn placement_strategy_prefetch_and_affinity_wait_are_read_and_checked() {
        let spec =
            ok("[swarms.s]\nstrategy = \"least_loaded\"\nprefetch = 2\naffinity_wait = \"3s\"\n");
        let c = spec.swarms[0].config.as_ref().unwrap();
        assert_eq!(c.strategy, Strategy::LeastLoaded);
        assert_eq!(c.prefetch, 2);
        assert_eq!(c.affinity_wait, Duration::from_secs(3));
        let e = error("[swarms.s]\nstrategy = \"fastest\"\n");
        assert!(
            e.contains("swarms.s.strategy") && e.contains("\"capability_match\""),
            "{e}"
        );
        let e = error("[swarms.s]\nprefetch = 5000\n");
        assert!(e.contains("from 0 to 1000"), "{e}");
    }

    #[test]
    fn pool_priority_resources_and_scaling_policies_are_read_and_checked() {
        let spec = ok(r#"
[swarms.s.pools.coder]
max_agents = 8
priority = 8
resources = { cpu = 0.5, memory = "512MiB", disk = "1GiB" }
agent = { command = "true" }

[[swarms.s.pools.coder.scaling]]
metric = "queue_depth"
scale_up_threshold = 5
scale_down_threshold = 0.5
scale_up_increment = 2
cooldown = "1m"
evaluation_periods = 2
evaluation_period = "5s"

[[swarms.s.pools.coder.scaling]]
name = "errors"
metric = "error_rate"
scale_up_threshold = 0.5
scale_down_threshold = 0.1
enabled = false
predictive = true
"#);
        let pool = &spec.swarms[0].pools[0];
        assert_eq!(pool.priority, 8);
        assert_eq!(pool.resources.cpu_cores, 0.5);
        assert_eq!(pool.resources.memory_mb, 512);
        assert_eq!(pool.resources.disk_mb, 1024);
        assert_eq!(pool.scaling.len(), 2);
        let p = &pool.scaling[0];
        assert_eq!(p.name, "default");
        assert_eq!(p.metric, ScalingMetric::QueueDepth);
        assert_eq!((p.scale_up_threshold, p.scale_down_threshold), (5.0, 0.5));
        assert_eq!((p.scale_up_increment, p.scale_down_increment), (2, 1));
        assert_eq!(p.cooldown, Duration::from_secs(60));
        assert_eq!(p.evaluation_periods, 2);
        assert_eq!(p.evaluation_period, Duration::from_secs(5));
        assert_eq!(pool.scaling[1].metric, ScalingMetric::ErrorRate);
        assert!(!pool.scaling[1].enabled);
        assert!(pool.scaling[1].predictive && !pool.scaling[0].predictive);

        let e = error("[swarms.s.pools.p]\npriority = 11\n");
        assert!(
            e.contains("swarms.s.pools.p.priority") && e.contains("from 1 to 10"),
            "{e}"
        );
        let e = error(
            "[swarms.s.pools.p]\nagent = { command = \"true\" }\n[[swarms.s.pools.p.scaling]]\nmetric = \"queue_depth\"\nscale_up_threshold = 1\n",
        );
        assert!(e.contains("needs scale_down_threshold"), "{e}");
        let e = error(
            "[swarms.s.pools.p]\nagent = { command = \"true\" }\n[[swarms.s.pools.p.scaling]]\nmetric = \"cpu\"\nscale_up_threshold = 1\nscale_down_threshold = 0\n",
        );
        assert!(e.contains("\"cpu\" is not one of"), "{e}");
        let e = error(
            "[swarms.s.pools.p]\n[[swarms.s.pools.p.scaling]]\nmetric = \"queue_depth\"\nscale_up_threshold = 1\nscale_down_threshold = 0\n",
        );
        assert!(e.contains("scaling policies need an agent template"), "{e}");
        let e = error(
            "[swarms.s.pools.p]\nagent = { command = \"true\" }\n[[swarms.s.pools.p.scaling]]\nmetric = \"queue_depth\"\nscale_up_threshold = 1\nscale_down_threshold = 2\n",
        );
        assert!(e.contains("must be below scale_up_threshold"), "{e}");
    }

    #[test]
    fn health_and_recovery_policies_are_read_and_checked() {
        let spec = ok(r#"
[swarms.s.health]
error_rate_threshold = 0.25
error_rate_window = "10m"
breaker_failures = 3
breaker_cooldown = "45s"
slow_task_factor = 0
progress_timeout = "90s"
memory_limit = "1GiB"

[swarms.s.recovery]
restart = true
backoff_initial = "2s"
backoff_max = "5m"
stable_after = "10m"
give_up_after = 8
"#);
        let c = spec.swarms[0].config.as_ref().unwrap();
        assert_eq!(c.health.error_rate_threshold, 0.25);
        assert_eq!(c.health.error_rate_window, Duration::from_secs(600));
        assert_eq!(c.health.breaker_failures, 3);
        assert_eq!(c.health.breaker_cooldown, Duration::from_secs(45));
        assert_eq!(c.health.slow_task_factor, 0.0);
        assert_eq!(c.health.progress_timeout, Some(Duration::from_secs(90)));
        assert_eq!(c.health.memory_limit_mb, Some(1024.0));
        assert_eq!(c.recovery.backoff_initial, Duration::from_secs(2));
        assert_eq!(c.recovery.backoff_max, Duration::from_secs(300));
        assert_eq!(c.recovery.stable_after, Duration::from_secs(600));
        assert_eq!(c.recovery.give_up_after, 8);
        // Untouched fields keep their defaults.
        assert_eq!(c.health.error_rate_min_tasks, 4);

        let e = error("[swarms.s.health]\nbreaker_cooldwn = \"1s\"\n");
        assert!(
            e.contains("fleet.toml:2:1: swarms.s.health.breaker_cooldwn"),
            "{e}"
        );
        assert!(e.contains("did you mean \"breaker_cooldown\""), "{e}");
        let e = error("[swarms.s.recovery]\nrestart = \"yes\"\n");
        assert!(
            e.starts_with("fleet.toml:2:11: swarms.s.recovery.restart"),
            "{e}"
        );
        let e = error("[swarms.s.health]\nerror_rate_threshold = 2\n");
        assert!(e.contains("at most 1"), "{e}");
        let e = error("[swarms.s.recovery]\nbackoff_initial = \"10s\"\nbackoff_max = \"1s\"\n");
        assert!(
            e.contains("backoff_initial_ms must be at least 10 and at most backoff_max_ms"),
            "{e}"
        );
    }
}
