//! The cluster's bookkeeping in PostgreSQL: which coordinators are alive, and which of them owns
//! each swarm.
//!
//! Every coordinator on one database is a node: a row of `cluster_nodes` that it renews (its
//! heartbeat) and that says where its API is. Each swarm is owned by at most one node at a time,
//! through its row of `swarm_leases`: the owner renews the lease well before it expires, and
//! another node may take a lease only once it has expired. All instants are the database
//! server's clock (`flotilla_now_ms()`), so the nodes' clocks need not agree.
//!
//! Every change of owner draws a new `epoch` from the `cluster_epochs` sequence: epochs only
//! grow, so the epoch of a lease is a fencing token (a later owner has a larger one), and a
//! coordinator that takes a swarm over starts its event seqs above `epoch << 32`, above every
//! seq any coordinator gave before.

use std::time::Duration;

use flotilla_core::SwarmId;

use super::{PgConn, Target};
use crate::error::StoreError;
use crate::rows::{Cols, id};
use crate::sql::{self, Db, params};

/// A coordinator of the cluster, as its row says.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NodeRow {
    /// The node's id (chosen when it starts).
    pub id: String,
    /// Where its API is, for the other nodes and for clients.
    pub url: String,
    /// When it started (ms since the epoch, database clock).
    pub started_at: i64,
    /// Its last heartbeat.
    pub heartbeat_at: i64,
    /// When it counts as gone unless it heartbeats again.
    pub expires_at: i64,
    /// When it left the cluster (stopped cleanly), if it did.
    pub stopped_at: Option<i64>,
    /// The flotilla version it runs.
    pub version: String,
}

impl NodeRow {
    /// Whether the node is alive at `now` (database clock): it has not left and its
    /// heartbeat has not lapsed.
    pub fn alive(&self, now: i64) -> bool {
        self.stopped_at.is_none() && self.expires_at > now
    }
}

/// A swarm and its lease, if it has one.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LeaseRow {
    /// The swarm.
    pub swarm_id: SwarmId,
    /// Its name.
    pub swarm_name: String,
    /// The node that holds (or last held) its lease; `None` if no node ever did or the last one
    /// released it.
    pub owner: Option<String>,
    /// The lease's fencing epoch (0 without a lease).
    pub epoch: i64,
    /// When the owner took it.
    pub acquired_at: Option<i64>,
    /// When it lapses unless renewed.
    pub expires_at: Option<i64>,
}

impl LeaseRow {
    /// Whether the lease is in force at `now` (database clock).
    pub fn valid(&self, now: i64) -> bool {
        self.expires_at.is_some_and(|e| e > now)
    }

    /// Whether `node` holds the lease in force at `now`.
    pub fn held_by(&self, node: &str, now: i64) -> bool {
        self.owner.as_deref() == Some(node) && self.valid(now)
    }
}

/// The cluster tables, on a connection of their own (apart from the writer's, so a long commit
/// never delays a lease renewal).
pub struct ClusterDb {
    target: Target,
    conn: Option<PgConn>,
    node: String,
}

impl std::fmt::Debug for ClusterDb {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ClusterDb")
            .field("database", &self.target.shown)
            .field("node", &self.node)
            .finish()
    }
}

/// The database clock in milliseconds, as SQL.
const NOW: &str = "flotilla_now_ms()";

fn ms(d: Duration) -> i64 {
    i64::try_from(d.as_millis()).unwrap_or(i64::MAX)
}

impl ClusterDb {
    /// Connects to the database at `url` as node `node` (the schema must exist: open a
    /// [`PgStore`](super::PgStore) first). Must not be called on an async thread.
    pub fn open(url: &str, node: &str) -> Result<Self, StoreError> {
        let target = Target::parse(url)?;
        let conn = target.connect()?;
        Ok(ClusterDb {
            target,
            conn: Some(conn),
            node: node.to_owned(),
        })
    }

    /// This node's id.
    pub fn node(&self) -> &str {
        &self.node
    }

    /// Runs `f` on the connection (connecting again if it broke).
    fn with<R>(
        &mut self,
        f: impl FnOnce(&mut dyn Db) -> Result<R, StoreError>,
    ) -> Result<R, StoreError> {
        let conn = self.target.live(&mut self.conn)?;
        let out = f(&mut conn.db());
        if out.is_err() && conn.client.is_closed() {
            self.conn = None;
        }
        out.map_err(|e| e.on(&self.target.shown))
    }

    /// The database clock, in milliseconds since the epoch.
    pub fn now_ms(&mut self) -> Result<i64, StoreError> {
        self.with(|db| {
            sql::first(db, &format!("SELECT {NOW}"), &[], |r| {
                Cols::new(r, "clock").i64(0, "now")
            })
        })?
        .ok_or_else(|| StoreError::Other("the clock query answered nothing".to_owned()))
    }

    /// Records that this node is alive at `url` for `ttl` more; answers the database clock.
    pub fn heartbeat(
        &mut self,
        url: &str,
        version: &str,
        ttl: Duration,
    ) -> Result<i64, StoreError> {
        let node = self.node.clone();
        self.with(|db| {
            sql::first(
                db,
                &format!(
                    "INSERT INTO cluster_nodes (id, url, started_at, heartbeat_at, expires_at,
                                                version, stopped_at)
                     VALUES (?1, ?2, {NOW}, {NOW}, {NOW} + ?3, ?4, NULL)
                     ON CONFLICT (id) DO UPDATE SET
                         url = excluded.url,
                         heartbeat_at = excluded.heartbeat_at,
                         expires_at = excluded.expires_at,
                         version = excluded.version,
                         stopped_at = NULL
                     RETURNING heartbeat_at"
                ),
                &params![node.as_str(), url, ms(ttl), version],
                |r| Cols::new(r, "cluster_nodes").i64(0, "heartbeat_at"),
            )
        })?
        .ok_or_else(|| StoreError::Other("the heartbeat wrote nothing".to_owned()))
    }

    /// Every node that has a row, live or not, oldest first.
    pub fn nodes(&mut self) -> Result<Vec<NodeRow>, StoreError> {
        self.with(|db| {
            sql::collect(
                db,
                "SELECT id, url, started_at, heartbeat_at, expires_at, stopped_at, version
                 FROM cluster_nodes ORDER BY started_at, id",
                &[],
                |r| {
                    let c = Cols::new(r, "cluster_nodes");
                    Ok(NodeRow {
                        id: c.string(0, "id")?,
                        url: c.string(1, "url")?,
                        started_at: c.i64(2, "started_at")?,
                        heartbeat_at: c.i64(3, "heartbeat_at")?,
                        expires_at: c.i64(4, "expires_at")?,
                        stopped_at: c.opt_i64(5, "stopped_at")?,
                        version: c.string(6, "version")?,
                    })
                },
            )
        })
    }

    /// Every swarm with its lease, by name.
    pub fn leases(&mut self) -> Result<Vec<LeaseRow>, StoreError> {
        self.with(|db| {
            sql::collect(
                db,
                "SELECT s.id, s.name, l.owner, COALESCE(l.epoch, 0), l.acquired_at, l.expires_at
                 FROM swarms s LEFT JOIN swarm_leases l ON l.swarm_id = s.id
                 ORDER BY s.name",
                &[],
                |r| {
                    let c = Cols::new(r, "swarm_leases");
                    Ok(LeaseRow {
                        swarm_id: c.id(0, "swarm_id")?,
                        swarm_name: c.string(1, "name")?,
                        owner: c.opt_string(2, "owner")?,
                        epoch: c.i64(3, "epoch")?,
                        acquired_at: c.opt_i64(4, "acquired_at")?,
                        expires_at: c.opt_i64(5, "expires_at")?,
                    })
                },
            )
        })
    }

    /// Renews every lease this node holds that has not lapsed, for `ttl` from now; answers the
    /// swarms still held with their epochs. A lease that lapsed is not renewed (another node may
    /// be taking it): its swarm is missing from the answer.
    pub fn renew(&mut self, ttl: Duration) -> Result<Vec<(SwarmId, i64)>, StoreError> {
        let node = self.node.clone();
        self.with(|db| {
            sql::collect(
                db,
                &format!(
                    "UPDATE swarm_leases SET expires_at = {NOW} + ?2
                     WHERE owner = ?1 AND expires_at > {NOW}
                     RETURNING swarm_id, epoch"
                ),
                &params![node.as_str(), ms(ttl)],
                |r| {
                    let c = Cols::new(r, "swarm_leases");
                    Ok((c.id(0, "swarm_id")?, c.i64(1, "epoch")?))
                },
            )
        })
    }

    /// Takes the lease of `swarm` for `ttl` if no node holds it (never had, released, or let
    /// it lapse); answers its new epoch, or `None` if another node holds it.
    pub fn acquire(&mut self, swarm: SwarmId, ttl: Duration) -> Result<Option<i64>, StoreError> {
        let node = self.node.clone();
        self.with(|db| {
            sql::first(
                db,
                &format!(
                    "INSERT INTO swarm_leases (swarm_id, owner, epoch, acquired_at, expires_at)
                     SELECT ?1, ?2, nextval('cluster_epochs'), {NOW}, {NOW} + ?3
                     ON CONFLICT (swarm_id) DO UPDATE SET
                         owner = excluded.owner,
                         epoch = excluded.epoch,
                         acquired_at = excluded.acquired_at,
                         expires_at = excluded.expires_at
                     WHERE swarm_leases.expires_at <= excluded.acquired_at
                     RETURNING epoch"
                ),
                &params![id(&swarm), node.as_str(), ms(ttl)],
                |r| Cols::new(r, "swarm_leases").i64(0, "epoch"),
            )
        })
    }

    /// Gives up this node's lease of `swarm` at once, so another node may take it without
    /// waiting for it to lapse. The row stays, lapsed: a late commit of this node about the
    /// swarm is refused by the fence rather than taken for a new swarm's.
    pub fn release(&mut self, swarm: SwarmId) -> Result<(), StoreError> {
        let node = self.node.clone();
        self.with(|db| {
            db.exec(
                "UPDATE swarm_leases SET expires_at = 0 WHERE swarm_id = ?1 AND owner = ?2",
                &params![id(&swarm), node.as_str()],
            )
        })?;
        Ok(())
    }

    /// Leaves the cluster: releases every lease of this node and marks it stopped.
    pub fn leave(&mut self) -> Result<(), StoreError> {
        let node = self.node.clone();
        self.with(|db| {
            db.exec(
                "UPDATE swarm_leases SET expires_at = 0 WHERE owner = ?1",
                &params![node.as_str()],
            )?;
            db.exec(
                &format!(
                    "UPDATE cluster_nodes SET stopped_at = {NOW}, expires_at = {NOW}
                     WHERE id = ?1"
                ),
                &params![node.as_str()],
            )
        })?;
        Ok(())
    }

    /// Forgets nodes that stopped or have been gone for longer than `after`.
    pub fn prune_nodes(&mut self, after: Duration) -> Result<u64, StoreError> {
        self.with(|db| {
            db.exec(
                &format!("DELETE FROM cluster_nodes WHERE expires_at < {NOW} - ?1"),
                &params![ms(after)],
            )
        })
    }

    /// Stores `swarm` unless a swarm with its id or name exists (the default swarm, which the
    /// first node to start creates); answers whether it did.
    pub fn insert_swarm_if_absent(
        &mut self,
        swarm: &flotilla_core::Swarm,
    ) -> Result<bool, StoreError> {
        self.with(|db| crate::rows::swarm::insert_if_absent(db, swarm))
    }

    /// The swarm an agent, task or message belongs to, whichever `table` names
    /// (`swarm_agents`, `swarm_tasks`, `agent_messages`).
    pub fn swarm_of(
        &mut self,
        table: OwnedBy,
        uuid: &uuid::Uuid,
    ) -> Result<Option<SwarmId>, StoreError> {
        let text = uuid.to_string();
        self.with(|db| {
            sql::first(
                db,
                &format!("SELECT swarm_id FROM {} WHERE id = ?1", table.table()),
                &params![text.as_str()],
                |r| Cols::new(r, table.table()).id(0, "swarm_id"),
            )
        })
    }
}

/// What belongs to a swarm and may be named by id in a request.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum OwnedBy {
    /// An agent.
    Agent,
    /// A task.
    Task,
    /// A message.
    Message,
}

impl OwnedBy {
    fn table(self) -> &'static str {
        match self {
            OwnedBy::Agent => "swarm_agents",
            OwnedBy::Task => "swarm_tasks",
            OwnedBy::Message => "agent_messages",
        }
    }
}
