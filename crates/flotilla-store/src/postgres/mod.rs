//! The PostgreSQL backend: [`PgStore`], the writer, and its readers, for coordinators that share
//! their state (`--store postgres://…`).
//!
//! It runs the same SQL as SQLite (`crate::sql`) through the synchronous `postgres` client, on
//! the writer's thread and the readers' blocking threads (never on the async ones: the client
//! drives a runtime of its own). Each connection prepares a statement once, the first time its
//! text is run, with SQLite's placeholders rewritten to PostgreSQL's.
//!
//! A connection that breaks (the server restarted, the network failed) fails the call that
//! found it broken with [`StoreError::Unavailable`], which the writer retries; the next call
//! connects anew. A commit is one transaction: all of a batch or nothing.

pub mod cluster;
pub(crate) mod schema;

use std::collections::HashMap;
use std::error::Error;
use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

use bytes::BytesMut;
use postgres::types::{IsNull, ToSql, Type, to_sql_checked};
use postgres::{Client, GenericClient, IsolationLevel, NoTls, Statement};

use crate::error::StoreError;
use crate::reader::{Idle, ReadPool, Reader};
use crate::sql::{self, Cells, Db, Param};
use crate::{Batch, Snapshot, Store, commit, load};

/// How long connecting may take before the server counts as unreachable.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// Where the database is, parsed once; what [`PgStore::describe`] prints has no password.
#[derive(Clone)]
pub(crate) struct Target {
    config: postgres::Config,
    shown: String,
}

impl Target {
    /// Parses a `postgres://` or `postgresql://` URL (or a key=value string).
    pub(crate) fn parse(url: &str) -> Result<Self, StoreError> {
        let mut config = postgres::Config::from_str(url).map_err(|e| StoreError::Open {
            path: "postgres".into(),
            reason: format!("invalid PostgreSQL address: {e}"),
        })?;
        if config.get_connect_timeout().is_none() {
            config.connect_timeout(CONNECT_TIMEOUT);
        }
        if config.get_application_name().is_none() {
            config.application_name("flotilla");
        }
        Ok(Target {
            shown: redact(url),
            config,
        })
    }

    /// The connection in `slot`, connecting anew when there is none or the last one broke.
    pub(crate) fn live<'a>(
        &self,
        slot: &'a mut Option<PgConn>,
    ) -> Result<&'a mut PgConn, StoreError> {
        if slot.as_ref().is_none_or(|c| c.client.is_closed()) {
            *slot = None;
            *slot = Some(self.connect()?);
        }
        slot.as_mut()
            .ok_or_else(|| StoreError::Other("no connection".to_owned()))
    }

    /// A new connection.
    fn connect(&self) -> Result<PgConn, StoreError> {
        let client = self
            .config
            .connect(NoTls)
            .map_err(|e| StoreError::from(e).on(&self.shown))?;
        Ok(PgConn {
            client,
            statements: HashMap::new(),
        })
    }
}

/// `url` (a PostgreSQL address) without its password, as errors and logs show it.
pub fn redact(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else {
        return "postgres (key=value address)".to_owned();
    };
    let (authority, tail) = rest.split_at(rest.find(['/', '?']).unwrap_or(rest.len()));
    let host = match authority.rsplit_once('@') {
        Some((userinfo, host)) => {
            let user = userinfo.split(':').next().unwrap_or_default();
            format!("{user}@{host}")
        }
        None => authority.to_owned(),
    };
    let path = tail.split('?').next().unwrap_or_default();
    format!("{scheme}://{host}{path}")
}

/// A connection with the statements it has prepared, by their SQLite text.
pub(crate) struct PgConn {
    client: Client,
    statements: HashMap<String, Statement>,
}

impl PgConn {
    /// The shared SQL on this connection, outside a transaction.
    fn db(&mut self) -> Pg<'_, Client> {
        Pg {
            client: &mut self.client,
            statements: &mut self.statements,
        }
    }
}

/// The shared SQL on a client or a transaction of it.
struct Pg<'a, C: GenericClient> {
    client: &'a mut C,
    statements: &'a mut HashMap<String, Statement>,
}

impl<C: GenericClient> Pg<'_, C> {
    fn statement(&mut self, text: &str) -> Result<Statement, StoreError> {
        if let Some(s) = self.statements.get(text) {
            return Ok(s.clone());
        }
        let prepared = self.client.prepare(&sql::numbered(text))?;
        self.statements.insert(text.to_owned(), prepared.clone());
        Ok(prepared)
    }
}

/// The parameters as the client takes them.
fn refs<'p>(params: &'p [Param<'_>]) -> Vec<&'p (dyn ToSql + Sync)> {
    params.iter().map(|p| p as &(dyn ToSql + Sync)).collect()
}

impl<C: GenericClient> Db for Pg<'_, C> {
    fn exec(&mut self, sql: &str, params: &[Param<'_>]) -> Result<u64, StoreError> {
        let statement = self.statement(sql)?;
        Ok(self.client.execute(&statement, &refs(params))?)
    }

    fn each(
        &mut self,
        sql: &str,
        params: &[Param<'_>],
        row: &mut dyn FnMut(&dyn Cells) -> Result<(), StoreError>,
    ) -> Result<(), StoreError> {
        let statement = self.statement(sql)?;
        for r in self.client.query(&statement, &refs(params))? {
            row(&r)?;
        }
        Ok(())
    }

    fn by_ids_sql(&self, columns: &str, table: &str) -> String {
        format!(
            "SELECT {columns} FROM {table} \
             WHERE id IN (SELECT json_array_elements_text(?1::text::json))"
        )
    }
}

impl ToSql for Param<'_> {
    fn to_sql(
        &self,
        ty: &Type,
        out: &mut BytesMut,
    ) -> Result<IsNull, Box<dyn Error + Sync + Send>> {
        match self {
            Param::Null => Ok(IsNull::Yes),
            Param::Int(v) => match *ty {
                Type::INT8 => v.to_sql(ty, out),
                Type::INT4 => i32::try_from(*v)?.to_sql(ty, out),
                Type::INT2 => i16::try_from(*v)?.to_sql(ty, out),
                Type::FLOAT8 => (*v as f64).to_sql(ty, out),
                Type::BOOL => (*v != 0).to_sql(ty, out),
                _ => Err(format!("an integer cannot be bound to a {ty} parameter").into()),
            },
            Param::Real(v) => match *ty {
                Type::FLOAT8 => v.to_sql(ty, out),
                Type::FLOAT4 => (*v as f32).to_sql(ty, out),
                _ => Err(format!("a number cannot be bound to a {ty} parameter").into()),
            },
            Param::Text(t) => t.as_ref().to_sql(ty, out),
            Param::Id(id) => id.as_str().to_sql(ty, out),
        }
    }

    fn accepts(_: &Type) -> bool {
        true
    }

    to_sql_checked!();
}

impl Cells for postgres::Row {
    fn text(&self, i: usize) -> Result<Option<&str>, String> {
        self.try_get::<_, Option<&str>>(i)
            .map_err(|e| e.to_string())
    }

    fn int(&self, i: usize) -> Result<Option<i64>, String> {
        let ty = self
            .columns()
            .get(i)
            .map(|c| c.type_().clone())
            .ok_or_else(|| format!("there is no column {i}"))?;
        let err = |e: postgres::Error| e.to_string();
        match ty {
            Type::INT8 => self.try_get::<_, Option<i64>>(i).map_err(err),
            Type::INT4 => Ok(self
                .try_get::<_, Option<i32>>(i)
                .map_err(err)?
                .map(i64::from)),
            Type::INT2 => Ok(self
                .try_get::<_, Option<i16>>(i)
                .map_err(err)?
                .map(i64::from)),
            Type::BOOL => Ok(self
                .try_get::<_, Option<bool>>(i)
                .map_err(err)?
                .map(i64::from)),
            other => Err(format!("a {other} is not an integer")),
        }
    }
}

/// The fleet's state in a PostgreSQL database, written by one connection.
pub struct PgStore {
    target: Target,
    conn: Option<PgConn>,
    /// The cluster node this store writes for, and its lease duration: a swarm this store
    /// writes first is leased to that node in the same transaction (see
    /// [`PgStore::claim_new_swarms_for`]).
    node: Option<(String, Duration)>,
    /// Whether the last commit lost its connection: it may have landed, so the next one (which
    /// carries the same rows again) must not refuse its events as duplicates.
    unsure: bool,
}

impl std::fmt::Debug for PgStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PgStore")
            .field("database", &self.target.shown)
            .finish()
    }
}

impl PgStore {
    /// Connects to the database at `url` (`postgres://user@host:port/db`, the URL forms
    /// libpq takes, `options=-csearch_path%3Dname` to use another schema) and brings its schema
    /// up to date. Must not be called on an async runtime's thread.
    pub fn open(url: &str) -> Result<Self, StoreError> {
        let target = Target::parse(url)?;
        let mut conn = target.connect()?;
        schema::migrate(&mut conn.client).map_err(|e| e.on(&target.shown))?;
        tracing::debug!(database = %target.shown, "opened the store");
        Ok(PgStore {
            target,
            conn: Some(conn),
            node: None,
            unsure: false,
        })
    }

    /// Makes this store write for cluster node `node`: a swarm it stores that has no lease
    /// (one created on this node) is leased to `node` for `ttl` in the same transaction, so no
    /// other node can take it between its first commit and this node's next lease round; a
    /// deleted swarm's lease goes with it.
    pub fn claim_new_swarms_for(&mut self, node: &str, ttl: Duration) {
        self.node = Some((node.to_owned(), ttl));
    }

    /// The writer's connection, connecting again if the last one broke.
    fn conn(&mut self) -> Result<&mut PgConn, StoreError> {
        self.target.live(&mut self.conn)
    }

    /// Runs `f` in a transaction of `isolation`, committing it when `f` succeeds. A broken
    /// connection is dropped, so that the next call connects anew.
    fn transaction<R>(
        &mut self,
        isolation: IsolationLevel,
        read_only: bool,
        f: impl FnOnce(&mut dyn Db) -> Result<R, StoreError>,
    ) -> Result<R, StoreError> {
        let shown = self.target.shown.clone();
        let conn = self.conn()?;
        let out = (|| {
            let mut tx = conn
                .client
                .build_transaction()
                .isolation_level(isolation)
                .read_only(read_only)
                .start()?;
            let out = f(&mut Pg {
                client: &mut tx,
                statements: &mut conn.statements,
            })?;
            tx.commit()?;
            Ok(out)
        })();
        if out.is_err() && conn.client.is_closed() {
            self.conn = None;
        }
        out.map_err(|e: StoreError| e.on(&shown))
    }
}

/// Refuses the batch ([`StoreError::Fenced`]) if it writes about a swarm whose lease `node`
/// does not hold in force. The lease rows read are locked until the commit, so no other node
/// can take one of them between this check and the commit. A swarm without a lease row is new
/// (the batch creates it, and [`claim_swarms`] leases it to `node`).
fn fence(db: &mut dyn Db, batch: &Batch, node: &str) -> Result<(), StoreError> {
    let touched: Vec<String> = batch
        .changes
        .swarms_touched()
        .iter()
        .map(|s| s.to_string())
        .collect();
    if touched.is_empty() {
        return Ok(());
    }
    let list = crate::rows::to_json(&touched);
    let lost = sql::collect(
        db,
        "SELECT swarm_id FROM swarm_leases
         WHERE swarm_id IN (SELECT json_array_elements_text(?1::text::json))
           AND (owner <> ?2 OR expires_at <= flotilla_now_ms())
         FOR SHARE",
        &crate::sql::params![list.as_str(), node],
        |r| crate::rows::Cols::new(r, "swarm_leases").id(0, "swarm_id"),
    )?;
    // The rows still held are locked too, so that a lease cannot lapse into another node's
    // hands while this commit writes under it.
    db.exec(
        "SELECT 1 FROM swarm_leases
         WHERE swarm_id IN (SELECT json_array_elements_text(?1::text::json)) FOR SHARE",
        &crate::sql::params![list.as_str()],
    )?;
    if lost.is_empty() {
        Ok(())
    } else {
        Err(StoreError::Fenced { swarms: lost })
    }
}

/// Leases the batch's new swarms to `node` and drops the leases of its deleted ones.
fn claim_swarms(
    db: &mut dyn Db,
    batch: &Batch,
    node: &str,
    ttl: Duration,
) -> Result<(), StoreError> {
    let ttl = i64::try_from(ttl.as_millis()).unwrap_or(i64::MAX);
    for swarm in &batch.changes.deleted_swarms {
        db.exec(
            "DELETE FROM swarm_leases WHERE swarm_id = ?1",
            &crate::sql::params![crate::rows::id(swarm)],
        )?;
    }
    for swarm in &batch.changes.swarms {
        if batch.changes.deleted_swarms.contains(&swarm.id) {
            continue;
        }
        db.exec(
            "INSERT INTO swarm_leases (swarm_id, owner, epoch, acquired_at, expires_at)
             SELECT ?1, ?2, nextval('cluster_epochs'), flotilla_now_ms(), flotilla_now_ms() + ?3
             WHERE NOT EXISTS (SELECT 1 FROM swarm_leases WHERE swarm_id = ?1)",
            &crate::sql::params![crate::rows::id(&swarm.id), node, ttl],
        )?;
    }
    Ok(())
}

impl Store for PgStore {
    fn load(&mut self, retain_terminal: usize) -> Result<Snapshot, StoreError> {
        // One snapshot of the whole database, as SQLite's read transaction gives.
        self.transaction(IsolationLevel::RepeatableRead, true, |db| {
            load::load(db, retain_terminal)
        })
    }

    fn commit(&mut self, batch: &Batch) -> Result<(), StoreError> {
        if batch.is_empty() {
            return Ok(());
        }
        let node = self.node.clone();
        let replay = self.unsure;
        let out = self.transaction(IsolationLevel::ReadCommitted, false, |db| {
            if let Some((node, _)) = &node {
                fence(db, batch, node)?;
            }
            commit::write_replaying(db, batch, replay)?;
            if let Some((node, ttl)) = &node {
                claim_swarms(db, batch, node, *ttl)?;
            }
            Ok(())
        });
        match &out {
            Ok(()) => self.unsure = false,
            Err(StoreError::Unavailable(_)) => self.unsure = true,
            Err(_) => {}
        }
        out
    }

    fn describe(&self) -> String {
        self.target.shown.clone()
    }

    fn reader(&self) -> Result<Reader, StoreError> {
        let first = self.target.connect()?;
        Ok(Reader::new(Arc::new(ReadConnections {
            target: self.target.clone(),
            idle: Idle::new(first),
        })))
    }
}

/// The connections a reader and its clones share.
struct ReadConnections {
    target: Target,
    idle: Idle<PgConn>,
}

impl Drop for ReadConnections {
    /// Closing a connection blocks on the client's own runtime, which may not happen on an async
    /// thread (the last reader may well be dropped on one): the idle connections are closed on
    /// a thread of their own.
    fn drop(&mut self) {
        let idle = self.idle.drain();
        if !idle.is_empty() {
            let _ = std::thread::spawn(move || drop(idle)).join();
        }
    }
}

impl ReadPool for ReadConnections {
    fn with_db(
        &self,
        f: &mut dyn FnMut(&mut dyn Db) -> Result<(), StoreError>,
    ) -> Result<(), StoreError> {
        let mut conn = match self.idle.take() {
            Some(conn) if !conn.client.is_closed() => conn,
            _ => self.target.connect()?,
        };
        let out = f(&mut conn.db()).map_err(|e| e.on(&self.target.shown));
        if !conn.client.is_closed() {
            self.idle.give_back(conn);
        }
        out
    }

    fn describe(&self) -> String {
        self.target.shown.clone()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn passwords_are_not_shown() {
        assert_eq!(
            redact("postgres://flo:s3cret@db.example:5432/fleet?sslmode=disable"),
            "postgres://flo@db.example:5432/fleet"
        );
        assert_eq!(
            redact("postgresql://127.0.0.1/test"),
            "postgresql://127.0.0.1/test"
        );
        assert!(!redact("host=x password=s3cret").contains("s3cret"));
    }
}
