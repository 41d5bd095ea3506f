//! Fixtures shared by the store's tests: entities with every field set to something a careless
//! mapping would get wrong (raw JSON with odd spacing, floats without a short decimal form,
//! instants before the epoch, `u64` counters above `i64::MAX`).

#![allow(dead_code)]

use std::time::Duration;

use std::collections::BTreeMap;

use flotilla_core::{
    Agent, AgentId, AgentMode, AgentRole, AgentStatus, AgentTemplate, Backoff, Changes, Dependency,
    DependencyKind, Desired, ErrorKind, Event, EventKind, Json, Managed, Message, MessageId,
    MessageKind, MessagePriority, MessageStatus, Pool, Progress, ReplyState, ReportedHealth,
    ResourceLimits, ResourceUsage, RuntimeKind, Swarm, SwarmConfig, SwarmId, SwarmStatus, Task,
    TaskError, TaskId, TaskState, Timestamp, Topology,
};
use flotilla_store::{Batch, PgStore, SqliteStore, Store, SyncMode, TokenRecord, TokenRole};
use tempfile::TempDir;
use uuid::Uuid;

/// The backend a test runs on.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Backend {
    /// A file in a temporary directory.
    Sqlite,
    /// A schema of its own in the PostgreSQL database at `FLOTILLA_TEST_POSTGRES` (by default
    /// `postgres://postgres@127.0.0.1:5432/test`), dropped afterwards.
    Postgres,
}

/// The PostgreSQL database the tests use.
pub fn postgres_url() -> String {
    std::env::var("FLOTILLA_TEST_POSTGRES")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/test".to_owned())
}

/// Whether PostgreSQL can be reached. Outside CI a test without it is skipped (saying so);
/// under `CI=true` it must be there.
pub fn postgres_available() -> bool {
    let url = postgres_url();
    match postgres::Client::connect(&url, postgres::NoTls) {
        Ok(_) => true,
        Err(e) if std::env::var("CI").is_ok_and(|v| v == "true") => {
            panic!("CI=true but PostgreSQL at {url} cannot be reached: {e}")
        }
        Err(e) => {
            eprintln!("skipped: PostgreSQL at {url} cannot be reached ({e})");
            false
        }
    }
}

/// Where a test's database is; dropping it removes the database.
pub enum TestDb {
    /// The directory of the SQLite file.
    Sqlite(TempDir),
    /// The PostgreSQL schema, and the URL that selects it.
    Postgres { schema: String, url: String },
}

impl TestDb {
    /// A fresh, empty database.
    pub fn new(backend: Backend) -> TestDb {
        match backend {
            Backend::Sqlite => TestDb::Sqlite(tempfile::tempdir().expect("temp dir")),
            Backend::Postgres => {
                let schema = format!("t_{}", Uuid::now_v7().simple());
                let base = postgres_url();
                let mut admin =
                    postgres::Client::connect(&base, postgres::NoTls).expect("connect to postgres");
                admin
                    .batch_execute(&format!("CREATE SCHEMA {schema}"))
                    .expect("create schema");
                let sep = if base.contains('?') { '&' } else { '?' };
                // Its connections are named after it, so a test can find its own.
                let url = format!(
                    "{base}{sep}options=-csearch_path%3D{schema}&application_name={schema}"
                );
                TestDb::Postgres { schema, url }
            }
        }
    }

    /// Opens (or reopens) the store.
    pub fn open(&self) -> Box<dyn Store> {
        match self {
            TestDb::Sqlite(dir) => Box::new(
                SqliteStore::open(&dir.path().join("flotilla.db"), SyncMode::Full).expect("open"),
            ),
            TestDb::Postgres { url, .. } => Box::new(PgStore::open(url).expect("open")),
        }
    }

    /// Runs SQL on the database directly (what a broken build or another program would do).
    pub fn execute(&self, sql: &str) {
        match self {
            TestDb::Sqlite(dir) => {
                rusqlite::Connection::open(dir.path().join("flotilla.db"))
                    .expect("open")
                    .execute_batch(sql)
                    .expect("execute");
            }
            TestDb::Postgres { url, .. } => {
                postgres::Client::connect(url, postgres::NoTls)
                    .expect("connect")
                    .batch_execute(sql)
                    .expect("execute");
            }
        }
    }
}

impl Drop for TestDb {
    fn drop(&mut self) {
        if let TestDb::Postgres { schema, .. } = self
            && let Ok(mut admin) = postgres::Client::connect(&postgres_url(), postgres::NoTls)
        {
            let _ = admin.batch_execute(&format!("DROP SCHEMA {schema} CASCADE"));
        }
    }
}

/// A fresh database on `backend` and its store (the database lives as long as the `TestDb`).
pub fn open_on(backend: Backend) -> (TestDb, Box<dyn Store>) {
    let db = TestDb::new(backend);
    let store = db.open();
    (db, store)
}

/// A fresh SQLite file, for what only SQLite has (files, locks, pragmas).
pub fn open_sqlite() -> (TempDir, SqliteStore) {
    let dir = tempfile::tempdir().expect("temp dir");
    let store = SqliteStore::open(&dir.path().join("flotilla.db"), SyncMode::Full).expect("open");
    (dir, store)
}

/// Reopens the database of `db`.
pub fn reopen(db: &TestDb) -> Box<dyn Store> {
    db.open()
}

/// Runs each named test function (taking a [`Backend`]) as one test on SQLite, in module
/// `sqlite`, and one on PostgreSQL, in module `postgres` (skipped outside CI when PostgreSQL
/// cannot be reached).
#[macro_export]
macro_rules! on_both_backends {
    ($($name:ident),* $(,)?) => {
        mod sqlite {
            $(
                #[test]
                fn $name() {
                    super::$name($crate::common::Backend::Sqlite);
                }
            )*
        }
        mod postgres {
            $(
                #[test]
                fn $name() {
                    if $crate::common::postgres_available() {
                        super::$name($crate::common::Backend::Postgres);
                    }
                }
            )*
        }
    };
}

/// Commits `changes` with no tokens.
pub fn commit(store: &mut dyn Store, changes: Changes) {
    store
        .commit(&Batch {
            changes,
            tokens: Vec::new(),
            ..Default::default()
        })
        .expect("commit");
}

pub fn ts(ms: i64) -> Timestamp {
    Timestamp::from_millis(ms)
}

pub fn swarm_id(n: u128) -> SwarmId {
    SwarmId(Uuid::from_u128(
        0x5000_0000_0000_7000_8000_0000_0000_0000 | n,
    ))
}

pub fn agent_id(n: u128) -> AgentId {
    AgentId(Uuid::from_u128(
        0xa000_0000_0000_7000_8000_0000_0000_0000 | n,
    ))
}

pub fn task_id(n: u128) -> TaskId {
    TaskId(Uuid::from_u128(
        0x7000_0000_0000_7000_8000_0000_0000_0000 | n,
    ))
}

pub fn message_id(n: u128) -> MessageId {
    MessageId(Uuid::from_u128(
        0xe000_0000_0000_7000_8000_0000_0000_0000 | n,
    ))
}

/// A swarm with a non-default configuration.
pub fn swarm(n: u128, name: &str) -> Swarm {
    Swarm {
        id: swarm_id(n),
        name: name.to_owned(),
        description: "builds \"things\" — ünïcode".to_owned(),
        topology: Topology::Hierarchical,
        config: SwarmConfig {
            min_agents: 2,
            max_agents: 20,
            heartbeat_interval: Duration::from_millis(1_500),
            heartbeat_miss_limit: 4,
            task_timeout: Duration::from_millis(60_001),
            task_max_attempts: 7,
            health: flotilla_core::HealthPolicy {
                error_rate_threshold: 0.25,
                progress_timeout: Some(Duration::from_millis(9_000)),
                memory_limit_mb: Some(512.0),
                ..Default::default()
            },
            recovery: flotilla_core::RecoveryPolicy {
                give_up_after: 9,
                ..Default::default()
            },
            strategy: flotilla_core::Strategy::Affinity,
            prefetch: 3,
            affinity_wait: Duration::from_millis(2_500),
            topology: flotilla_core::topology::TopologyConfig {
                ring: flotilla_core::topology::RingConfig {
                    order: flotilla_core::topology::RingOrder::Load,
                    token_timeout: Duration::from_millis(777),
                    skip_unhealthy: false,
                },
                ..Default::default()
            },
            messaging: flotilla_core::MessagingConfig {
                ack_timeout: Duration::from_millis(4_321),
                default_ttl: Some(Duration::from_millis(86_400_001)),
                ..Default::default()
            },
        },
        status: SwarmStatus::Degraded,
        leader_agent_id: Some(agent_id(n)),
        created_at: ts(1_700_000_000_000 + n as i64),
        updated_at: ts(1_700_000_000_500 + n as i64),
    }
}

/// The process side of a managed agent with every field set.
pub fn managed(n: u32) -> Managed {
    Managed {
        runtime: RuntimeKind::Tmux,
        mode: AgentMode::Daemon,
        desired: Desired::Stopped,
        pid: Some(u32::MAX - n),
        started_at: Some(ts(-1_700_000_000_123)),
        starts: u32::MAX - 1,
        last_exit: Some("killed by signal 9 (SIGKILL): \"oom\"\n— ünïcode".to_owned()),
        limits_applied: Some("rlimit AS=1 GiB, cgroup cpu.max=150000 100000".to_owned()),
        host: Some(format!("host-{n}")),
        drain: Some(flotilla_core::agent::Drain {
            since: ts(1_700_000_000_456),
            reason: "scaled down: 3 -> 2 agents".to_owned(),
            stopping: true,
        }),
    }
}

/// An agent with every field set (but `removed_at`, so that `load` returns it): a managed one.
pub fn agent(n: u128, swarm: SwarmId, status: AgentStatus) -> Agent {
    Agent {
        id: agent_id(n),
        swarm_id: swarm,
        name: format!("coder-{n}"),
        agent_type: "coder".to_owned(),
        capabilities: vec!["python".to_owned(), "rust".to_owned()],
        max_concurrent_tasks: 3,
        role: AgentRole::Supervisor,
        requested_role: AgentRole::Coordinator,
        status,
        reported_health: ReportedHealth::Degraded,
        metadata: Json::parse(r#"{ "host" : "box-1", "n": [1, 2.50, 1e3] }"#).expect("json"),
        resource_usage: ResourceUsage {
            cpu_percent: Some(0.1 + 0.2),
            memory_mb: Some(1.0 / 3.0),
            active_connections: Some(17),
            open_files: Some(u64::MAX),
        },
        current_tasks: vec![task_id(1), task_id(2)],
        tasks_completed: u64::MAX - 1,
        tasks_failed: 9,
        registered_at: ts(1_700_000_000_000),
        last_heartbeat_at: ts(1_700_000_001_000),
        lease_until: ts(1_700_000_016_000),
        stopped_at: (status == AgentStatus::Stopped).then_some(ts(1_700_000_020_000)),
        removed_at: None,
        managed: Some(managed(n as u32)),
        health: full_health(),
        checkpoints: vec![flotilla_core::CheckpointRef {
            id: flotilla_core::CheckpointId(uuid::Uuid::from_u128(77)),
            created_at: ts(1_700_000_000_100),
            trigger: flotilla_core::CheckpointTrigger::AfterTask,
            workspace: Some(
                flotilla_core::Json::parse(
                    r#"{"kind":"archive","path":"/x.tar.gz","bytes":1,"files":1}"#,
                )
                .unwrap(),
            ),
        }],
        subscriptions: vec!["tasks.*".to_owned(), "health".to_owned(), "*".to_owned()],
    }
}

/// A health record with every part set: a history, an open breaker, a recovery under way.
pub fn full_health() -> flotilla_core::AgentHealth {
    use flotilla_core::health::{Outcome, RecoveryState};
    use flotilla_core::{Breaker, HealthReason, HealthState, HealthTransition};
    flotilla_core::AgentHealth {
        state: HealthState::Degraded,
        reason: Some(HealthReason::CircuitOpen),
        detail: "circuit breaker open after 5 failed tasks in a row".to_owned(),
        since: Some(ts(1_700_000_002_000)),
        history: [HealthTransition {
            at: ts(1_700_000_002_000),
            from: HealthState::Healthy,
            to: HealthState::Degraded,
            reason: Some(HealthReason::CircuitOpen),
            detail: "x".to_owned(),
        }]
        .into(),
        breaker: Breaker::Open {
            until: ts(1_700_000_032_000),
        },
        consecutive_failures: 5,
        outcomes: [Outcome {
            at: ts(1_700_000_001_500),
            ok: false,
        }]
        .into(),
        typical_task_ms: Some(1234.5),
        timed_tasks: 7,
        stuck: Some((task_id(1), HealthReason::SlowTask)),
        recovery: RecoveryState {
            restarts: 2,
            next_at: Some(ts(1_700_000_004_000)),
            last_restart_at: Some(ts(1_700_000_000_500)),
            gave_up: false,
            rollback_to: Some(flotilla_core::CheckpointId(uuid::Uuid::from_u128(77))),
        },
    }
}

/// An agent with the least set.
pub fn bare_agent(n: u128, swarm: SwarmId, status: AgentStatus) -> Agent {
    Agent {
        id: agent_id(n),
        swarm_id: swarm,
        name: format!("w{n}"),
        agent_type: "worker".to_owned(),
        capabilities: Vec::new(),
        max_concurrent_tasks: 1,
        role: AgentRole::Worker,
        requested_role: AgentRole::Worker,
        status,
        reported_health: ReportedHealth::Healthy,
        metadata: Json::empty_object(),
        resource_usage: ResourceUsage::default(),
        current_tasks: Vec::new(),
        tasks_completed: 0,
        tasks_failed: 0,
        registered_at: ts(0),
        last_heartbeat_at: ts(0),
        lease_until: ts(0),
        stopped_at: None,
        removed_at: None,
        managed: None,
        health: Default::default(),
        checkpoints: Vec::new(),
        subscriptions: Vec::new(),
    }
}

/// Resource limits with every field set.
pub fn full_limits() -> ResourceLimits {
    ResourceLimits {
        memory_bytes: Some(u64::MAX),
        cpu_cores: Some(0.1 + 0.2),
        cpu_time: Some(Duration::from_millis(86_400_001)),
        task_timeout: Some(Duration::from_millis(100)),
    }
}

/// An agent template with every field set.
pub fn full_template(runtime: RuntimeKind, mode: AgentMode) -> AgentTemplate {
    AgentTemplate {
        command: "/usr/bin/env".to_owned(),
        args: vec![
            "python3".to_owned(),
            "-c".to_owned(),
            "print({{payload.text}})".to_owned(),
            String::new(),
            "spaces  and \"quotes\"".to_owned(),
        ],
        env: BTreeMap::from([
            ("EMPTY".to_owned(), String::new()),
            ("LANG".to_owned(), "C.UTF-8".to_owned()),
            ("ÜNÏ".to_owned(), "cödé\n2".to_owned()),
        ]),
        workdir: Some("/srv/agents/ünïcode dir".to_owned()),
        user: Some("nobody".to_owned()),
        payload_env: vec!["MODEL".to_owned()],
        runtime,
        mode,
        placement: flotilla_core::Placement::Hosts,
        host_labels: vec!["gpu".to_owned(), "ünïcode".to_owned()],
        limits: full_limits(),
        stop_grace: Duration::from_millis(3_600_000),
    }
}

/// An agent template with the least set.
pub fn bare_template() -> AgentTemplate {
    AgentTemplate {
        command: "agent".to_owned(),
        args: Vec::new(),
        env: BTreeMap::new(),
        workdir: None,
        user: None,
        payload_env: Vec::new(),
        runtime: RuntimeKind::default(),
        mode: AgentMode::default(),
        placement: Default::default(),
        host_labels: Vec::new(),
        limits: ResourceLimits::default(),
        stop_grace: Duration::ZERO,
    }
}

/// A pool of `swarm` named `name`, with `template`.
pub fn pool(swarm: SwarmId, name: &str, template: Option<AgentTemplate>) -> Pool {
    Pool {
        swarm_id: swarm,
        name: name.to_owned(),
        min_agents: u32::from(template.is_some()),
        max_agents: u32::MAX,
        capabilities: vec!["gpu".to_owned(), "rust".to_owned()],
        max_concurrent_tasks: 7,
        template,
        checkpoints: flotilla_core::CheckpointPolicy {
            keep: 3,
            after_each_task: true,
            every: Some(Duration::from_secs(900)),
        },
        priority: 9,
        resources: flotilla_core::ResourceRequest {
            cpu_cores: 0.5,
            memory_mb: 512,
            disk_mb: 1024,
        },
        scaling: vec![flotilla_core::ScalingPolicy {
            name: "burst".to_owned(),
            metric: flotilla_core::ScalingMetric::QueueDepth,
            scale_up_threshold: 4.0,
            scale_down_threshold: 0.5,
            scale_up_increment: 2,
            scale_down_increment: 1,
            cooldown: Duration::from_secs(60),
            evaluation_periods: 2,
            evaluation_period: Duration::from_secs(5),
            enabled: true,
            predictive: true,
        }],
        desired_agents: Some(3),
        created_at: ts(-5),
        updated_at: ts(1_700_000_000_777),
    }
}

pub fn error(agent: Option<AgentId>, attempt: Option<u32>) -> TaskError {
    TaskError {
        kind: ErrorKind::AgentError,
        message: "exit status 3: \"boom\"\nsee log".to_owned(),
        retryable: attempt.is_some(),
        agent_id: agent,
        attempt,
    }
}

/// Every state a task can be in, with each optional field both set and unset.
pub fn all_states() -> Vec<TaskState> {
    let a = agent_id(1);
    vec![
        TaskState::Blocked,
        TaskState::Queued {
            queued_at: ts(1_000),
            run_after: None,
        },
        TaskState::Queued {
            queued_at: ts(1_000),
            run_after: Some(ts(5_000)),
        },
        TaskState::Assigned {
            agent_id: a,
            assigned_at: ts(2_000),
        },
        TaskState::Running {
            agent_id: a,
            started_at: ts(3_000),
            timeout_at: ts(303_000),
        },
        TaskState::Completed {
            agent_id: a,
            result: Json::parse(r#"{"ok" :true, "big": 12345678901234567890123}"#).expect("json"),
            completed_at: ts(4_000),
        },
        TaskState::Completed {
            agent_id: a,
            result: Json::null(),
            completed_at: ts(4_001),
        },
        TaskState::Failed {
            error: error(Some(a), Some(2)),
            completed_at: ts(4_002),
        },
        TaskState::Failed {
            error: TaskError {
                kind: ErrorKind::DependencyFailed,
                message: String::new(),
                retryable: false,
                agent_id: None,
                attempt: None,
            },
            completed_at: ts(4_003),
        },
        TaskState::Cancelled {
            reason: Some("no longer needed".to_owned()),
            completed_at: ts(4_004),
        },
        TaskState::Cancelled {
            reason: None,
            completed_at: ts(4_005),
        },
        TaskState::Cancelled {
            reason: Some(String::new()),
            completed_at: ts(4_006),
        },
        TaskState::Dead {
            error: TaskError {
                kind: ErrorKind::Timeout,
                message: "attempt 3 timed out".to_owned(),
                retryable: true,
                agent_id: Some(agent_id(2)),
                attempt: Some(3),
            },
            completed_at: ts(4_007),
        },
        TaskState::Dead {
            error: TaskError {
                kind: ErrorKind::LeaseExpired,
                message: "lease lost".to_owned(),
                retryable: true,
                agent_id: None,
                attempt: None,
            },
            completed_at: ts(4_008),
        },
    ]
}

/// A task with every optional field set.
pub fn full_task(n: u128, swarm: SwarmId, state: TaskState) -> Task {
    Task {
        id: task_id(n),
        swarm_id: swarm,
        parent_task_id: Some(task_id(900_000 + n)),
        task_type: "summarize".to_owned(),
        payload: Json::parse("{\"text\":  \"héllo\\nworld\", \"n\": -0.0, \"l\": [ ] }")
            .expect("json"),
        priority: 9,
        required_capabilities: vec!["gpu".to_owned(), "rust".to_owned()],
        depends_on: vec![
            Dependency {
                task_id: task_id(800_000 + n),
                kind: DependencyKind::Success,
            },
            Dependency {
                task_id: task_id(700_000 + n),
                kind: DependencyKind::Completion,
            },
        ],
        affinity_key: Some("repo-42".to_owned()),
        idempotency_key: Some(format!("key-{n}")),
        attempts: 2,
        max_attempts: 5,
        backoff: Backoff {
            initial: Duration::from_millis(250),
            max: Duration::from_millis(9_999),
        },
        timeout: Duration::from_millis(123_456),
        deadline: Some(ts(-86_400_000)),
        last_error: Some(error(Some(agent_id(3)), Some(1))),
        progress: Some(Progress {
            percent: Some(100.0 / 3.0),
            message: Some("indexing".to_owned()),
            reported_at: Some(ts(i64::MAX)),
        }),
        created_at: ts(1_700_000_000_000 + n as i64),
        updated_at: ts(1_700_000_000_999 + n as i64),
        ordered: true,
        delegated_by: Some(agent_id(5)),
        delegation: Some(flotilla_core::Delegation {
            agent_id: agent_id(6),
            at: ts(1_700_000_000_100),
            subtasks: vec![task_id(600_000 + n), task_id(600_001 + n)],
            outcomes: vec![flotilla_core::SubtaskOutcome {
                task_id: task_id(600_000 + n),
                status: flotilla_core::TaskStatus::Completed,
                result: Some(Json::parse(r#"{"ok": true}"#).expect("json")),
                error: None,
            }],
        }),
        queue_seq: u64::MAX - 1,
        state,
    }
}

/// A task with every optional field unset.
pub fn bare_task(n: u128, swarm: SwarmId, state: TaskState) -> Task {
    Task {
        id: task_id(n),
        swarm_id: swarm,
        parent_task_id: None,
        task_type: "default".to_owned(),
        payload: Json::null(),
        priority: 5,
        required_capabilities: Vec::new(),
        depends_on: Vec::new(),
        affinity_key: None,
        idempotency_key: None,
        attempts: 0,
        max_attempts: 3,
        backoff: Backoff::default(),
        timeout: Duration::from_secs(300),
        deadline: None,
        last_error: None,
        progress: None,
        created_at: ts(n as i64),
        updated_at: ts(n as i64),
        ordered: false,
        delegated_by: None,
        delegation: None,
        queue_seq: 0,
        state,
    }
}

/// A queued task created at `created_at`.
pub fn queued(n: u128, swarm: SwarmId, created_at: i64) -> Task {
    let mut t = bare_task(
        n,
        swarm,
        TaskState::Queued {
            queued_at: ts(created_at),
            run_after: None,
        },
    );
    t.created_at = ts(created_at);
    t.updated_at = ts(created_at);
    t
}

pub fn event(seq: u64, swarm: SwarmId, kind: EventKind) -> Event {
    Event {
        seq,
        at: ts(seq as i64 * 10),
        kind,
        swarm_id: swarm,
        agent_id: None,
        task_id: None,
        detail: String::new(),
    }
}

pub fn token(id: &str, role: TokenRole, agent: Option<AgentId>) -> TokenRecord {
    TokenRecord {
        id: id.to_owned(),
        hash: format!("{:0>64}", id.len()) + id,
        role,
        agent_id: agent,
        swarm_id: None,
        label: format!("token {id}"),
        created_at: ts(1_700_000_000_000),
        expires_at: None,
        revoked_at: None,
    }
}

/// A request in `status` with every optional field set, the delivery fields that status would
/// not have included: a careless mapping would drop or swap any of them.
pub fn full_message(n: u128, swarm: SwarmId, status: MessageStatus) -> Message {
    Message {
        id: message_id(n),
        swarm_id: swarm,
        kind: MessageKind::Request,
        from: Some(agent_id(1)),
        to: Some(agent_id(2)),
        topic: Some("tasks.review/done:x".to_owned()),
        priority: MessagePriority::Critical,
        body: Json::parse(r#"{ "text" : "héllo\n\"world\"", "n": [1, 2.50, 1e3, -0.0] }"#)
            .expect("json"),
        correlation_id: Some(message_id(900_000 + n)),
        reply_by: Some(ts(-1_700_000_000_001)),
        reply: Some(ReplyState::TimedOut),
        created_at: ts(1_700_000_000_000 + n as i64),
        expires_at: Some(ts(i64::MAX)),
        status,
        deliveries: u32::MAX - 1,
        max_deliveries: u32::MAX,
        deliver_after: Some(ts(1_700_000_001_000)),
        ack_by: Some(ts(1_700_000_002_000)),
        finished_at: Some(ts(i64::MIN)),
        dead_reason: Some("never acknowledged after 5 deliveries: \"x\"\n— ünïcode".to_owned()),
        seq: u64::MAX - n as u64,
    }
}

/// A plain message in `status` with every optional field unset, from `from` to `to`.
pub fn bare_message(
    n: u128,
    swarm: SwarmId,
    status: MessageStatus,
    from: Option<AgentId>,
    to: Option<AgentId>,
) -> Message {
    Message {
        id: message_id(n),
        swarm_id: swarm,
        kind: MessageKind::Message,
        from,
        to,
        topic: None,
        priority: MessagePriority::Normal,
        body: Json::null(),
        correlation_id: None,
        reply_by: None,
        reply: None,
        created_at: ts(n as i64),
        expires_at: None,
        status,
        deliveries: 0,
        max_deliveries: 5,
        deliver_after: None,
        ack_by: None,
        finished_at: None,
        dead_reason: None,
        seq: n as u64,
    }
}

/// A request awaiting its response, from `from` to `to`, in `status`.
pub fn request(
    n: u128,
    swarm: SwarmId,
    status: MessageStatus,
    from: Option<AgentId>,
    to: Option<AgentId>,
) -> Message {
    Message {
        kind: MessageKind::Request,
        reply_by: Some(ts(n as i64 + 30_000)),
        reply: Some(ReplyState::Awaiting),
        ..bare_message(n, swarm, status, from, to)
    }
}

/// Sorts messages by id, for comparing sets.
pub fn messages_by_id(mut messages: Vec<Message>) -> Vec<Message> {
    messages.sort_by_key(|m| m.id);
    messages
}

/// Sorts tasks by id, for comparing sets.
pub fn by_id(mut tasks: Vec<Task>) -> Vec<Task> {
    tasks.sort_by_key(|t| t.id);
    tasks
}
