//! Several coordinators on one PostgreSQL database: membership, swarm leases, and forwarding.
//!
//! With `--store postgres://…` a coordinator is a node of a cluster (see
//! `flotilla_store::postgres::cluster` for the tables). Its [`Fleet`](flotilla_core::Fleet)
//! holds only the swarms whose lease it holds; every other swarm's calls are forwarded to the
//! node that holds it (see [`forward`]), so agents and the CLI may call any node.
//!
//! A background loop ([`run`]) every `renew_every`:
//! 1. records the node's heartbeat and renews its leases (a lease that lapsed is not renewed:
//!    its swarm is dropped from memory at once);
//! 2. reads the live nodes and every swarm's lease, and works out this node's fair share,
//!    `ceil(swarms / live nodes)`;
//! 3. takes free or lapsed leases while below its share, loading each swarm from the store
//!    into the fleet ([`Fleet::adopt`](flotilla_core::Fleet::adopt)) with its event seqs raised
//!    above `epoch << 32` (the lease's epoch, larger than any before it);
//! 4. hands over one swarm while it holds more than its share, or two more than the least
//!    loaded live node: its pending changes are committed, then the swarm leaves memory and its
//!    lease is released, for a node below its share to take at its next round (the node that
//!    handed it over leaves it alone for two lease periods).
//!
//! Safety: a node acts on a swarm only while its lease is certainly valid: until `ttl` after
//! the renewal was sent (the database set the expiry `ttl` after it received the renewal,
//! later still). A node that cannot renew in time drops every swarm from memory; another node
//! may take a lease only after it lapsed by the database's clock. So two nodes never run the
//! same swarm at the same time, and the new owner starts from every change the old one
//! committed.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::body::Body;
use axum::extract::Request;
use axum::http::{HeaderName, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use flotilla_core::SwarmId;
use flotilla_store::postgres::cluster::{ClusterDb, LeaseRow, NodeRow};
use parking_lot::RwLock;

pub use flotilla_core::api::{ClusterStatus, LeaseStatus, NodeStatus, Takeover};

use crate::error::ApiError;
use crate::state::AppState;

/// The header a forwarded request carries: the node that forwarded it. A node never forwards a
/// request that already was (it answers 503 instead), so a lease moving mid-way cannot loop.
pub const FORWARDED_BY: &str = "x-flotilla-forwarded-by";

/// How a node takes part in the cluster.
#[derive(Clone, Debug)]
pub struct ClusterSettings {
    /// This node's id (new at every start).
    pub node_id: String,
    /// Where the other nodes and clients reach this node's API.
    pub advertise_url: String,
    /// How long a lease (and a node's heartbeat) lasts without renewal.
    pub lease_ttl: Duration,
    /// How often leases and the heartbeat are renewed.
    pub renew_every: Duration,
}

impl ClusterSettings {
    /// The defaults: 3 s leases renewed every 0.5 s (a dead node's swarms are taken over
    /// within about 3.5 s).
    pub fn new(node_id: String, advertise_url: String) -> Self {
        ClusterSettings {
            node_id,
            advertise_url,
            lease_ttl: Duration::from_secs(3),
            renew_every: Duration::from_millis(500),
        }
    }
}

/// A swarm this node holds.
#[derive(Clone, Copy, Debug)]
struct Held {
    epoch: i64,
    /// Until when this node may act on it (its clock).
    valid_until: Instant,
}

/// Every how many rounds the token table is read again from the store.
const TOKEN_REFRESH_ROUNDS: u64 = 4;

/// What the last round saw.
#[derive(Debug, Default)]
struct View {
    nodes: Vec<NodeRow>,
    leases: Vec<LeaseRow>,
    /// The database clock at the last round.
    db_now: i64,
    held: HashMap<SwarmId, Held>,
    /// Swarm names and ids to their lease rows (indexes into `leases`).
    by_name: HashMap<String, usize>,
    by_id: HashMap<SwarmId, usize>,
    /// Takeovers (swarm, when, how long it took to load) of this node, newest last.
    takeovers: Vec<Takeover>,
    /// Swarms this node handed over, and when: it leaves them to the others for a while, so
    /// that a swarm handed over is not taken straight back.
    handed_over: HashMap<SwarmId, Instant>,
}

/// The cluster as this node sees it.
pub struct Cluster {
    settings: ClusterSettings,
    view: RwLock<View>,
    http: reqwest::Client,
    store_url: String,
}

impl std::fmt::Debug for Cluster {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Cluster")
            .field("node", &self.settings.node_id)
            .finish()
    }
}

/// Where a call goes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Route {
    /// This node holds the swarm (or the call concerns no swarm): serve it here.
    Here,
    /// Another node holds it: forward there.
    Node {
        /// The node's id.
        id: String,
        /// Its API.
        url: String,
    },
    /// No live node holds it yet (a takeover is under way).
    Nowhere,
}

impl Cluster {
    /// A node with these settings on the database at `store_url`.
    pub fn new(settings: ClusterSettings, store_url: String) -> Arc<Self> {
        let http = reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .connect_timeout(Duration::from_secs(2))
            .build()
            .unwrap_or_default();
        Arc::new(Cluster {
            settings,
            view: RwLock::new(View::default()),
            http,
            store_url,
        })
    }

    /// This node's id.
    pub fn node_id(&self) -> &str {
        &self.settings.node_id
    }

    /// Whether this node may act on `swarm` now.
    pub fn holds(&self, swarm: SwarmId) -> bool {
        self.view
            .read()
            .held
            .get(&swarm)
            .is_some_and(|h| h.valid_until > Instant::now())
    }

    /// Where the calls of the swarm named or numbered `reference` go; `None` if no such swarm
    /// is known.
    pub fn route_swarm(&self, reference: &str, local: bool) -> Option<(SwarmId, Route)> {
        let view = self.view.read();
        let at = match reference.parse::<SwarmId>() {
            Ok(id) => view.by_id.get(&id),
            Err(_) => view.by_name.get(reference),
        }?;
        let id = view.leases[*at].swarm_id;
        if local && !view.held.contains_key(&id) {
            return Some((id, Route::Here));
        }
        Some((id, self.route_in(&view, id)))
    }

    /// Where the calls of swarm `swarm` go; `local`: whether this node's fleet holds it (a
    /// swarm created here is served here until its first round tracks its lease).
    pub fn route(&self, swarm: SwarmId, local: bool) -> Route {
        let view = self.view.read();
        if local && !view.held.contains_key(&swarm) {
            return Route::Here;
        }
        self.route_in(&view, swarm)
    }

    fn route_in(&self, view: &View, swarm: SwarmId) -> Route {
        if view
            .held
            .get(&swarm)
            .is_some_and(|h| h.valid_until > Instant::now())
        {
            return Route::Here;
        }
        let Some(lease) = view.by_id.get(&swarm).map(|i| &view.leases[*i]) else {
            return Route::Nowhere;
        };
        let owner = lease.owner.as_deref().filter(|_| lease.valid(view.db_now));
        match owner.and_then(|o| view.nodes.iter().find(|n| n.id == o)) {
            Some(n) if n.id != self.settings.node_id => Route::Node {
                id: n.id.clone(),
                url: n.url.clone(),
            },
            _ => Route::Nowhere,
        }
    }

    /// The swarms the other live coordinators hold, as their `GET /swarms` shows them (asked
    /// with the caller's token, and marked forwarded so that they answer from memory alone).
    /// A coordinator that does not answer is left out.
    pub async fn gather_swarm_views(
        &self,
        headers: &axum::http::HeaderMap,
    ) -> Vec<flotilla_core::api::SwarmView> {
        let peers: Vec<String> = {
            let view = self.view.read();
            view.nodes
                .iter()
                .filter(|n| n.id != self.settings.node_id && n.alive(view.db_now))
                .map(|n| n.url.clone())
                .collect()
        };
        let asks = peers.into_iter().map(|url| {
            let mut req = self
                .http
                .get(format!(
                    "{}/api/v1/swarms?limit=1000",
                    url.trim_end_matches('/')
                ))
                .header(FORWARDED_BY, self.node_id())
                .timeout(Duration::from_secs(2));
            if let Some(auth) = headers.get(axum::http::header::AUTHORIZATION) {
                req = req.header(axum::http::header::AUTHORIZATION, auth);
            }
            async move {
                let answer = req.send().await.ok()?;
                if !answer.status().is_success() {
                    return None;
                }
                answer
                    .json::<flotilla_core::api::Page<flotilla_core::api::SwarmView>>()
                    .await
                    .ok()
            }
        });
        futures_util::future::join_all(asks)
            .await
            .into_iter()
            .flatten()
            .flat_map(|page| page.items)
            .collect()
    }

    /// The cluster as `GET /api/v1/cluster` shows it.
    pub fn status(&self) -> ClusterStatus {
        let view = self.view.read();
        let nodes = view
            .nodes
            .iter()
            .map(|n| NodeStatus {
                id: n.id.clone(),
                url: n.url.clone(),
                this: n.id == self.settings.node_id,
                alive: n.alive(view.db_now),
                version: n.version.clone(),
                started_at_ms: n.started_at,
                heartbeat_age_ms: (view.db_now - n.heartbeat_at).max(0),
                swarms: view
                    .leases
                    .iter()
                    .filter(|l| l.held_by(&n.id, view.db_now))
                    .count(),
            })
            .collect();
        let leases = view
            .leases
            .iter()
            .map(|l| LeaseStatus {
                swarm: l.swarm_name.clone(),
                swarm_id: l.swarm_id.to_string(),
                owner: l.owner.clone(),
                epoch: l.epoch,
                valid: l.valid(view.db_now),
                expires_in_ms: l.expires_at.map(|e| e - view.db_now),
            })
            .collect();
        ClusterStatus {
            clustered: true,
            node: self.settings.node_id.clone(),
            url: self.settings.advertise_url.clone(),
            lease_ttl_ms: self.settings.lease_ttl.as_millis() as u64,
            nodes,
            leases,
            takeovers: view.takeovers.clone(),
            hosts: Vec::new(),
        }
    }
}

/// What one round decided, applied to the fleet on the async side.
#[derive(Debug, Default)]
struct Round {
    /// Swarms to drop from memory (their leases lapsed or could not be renewed).
    lost: Vec<SwarmId>,
    /// Swarms to load (with their lease epochs).
    acquired: Vec<(SwarmId, i64)>,
    /// Swarms to hand over (commit, drop from memory, then release the lease).
    hand_over: Vec<SwarmId>,
}

/// Runs the node's rounds until `shutdown`; at the end leaves the cluster (releasing its
/// leases at once, so the other nodes take its swarms without waiting for them to lapse).
pub async fn run(
    state: AppState,
    cluster: Arc<Cluster>,
    mut shutdown: tokio::sync::watch::Receiver<bool>,
) {
    let settings = cluster.settings.clone();
    let db = {
        let url = cluster.store_url.clone();
        let node = settings.node_id.clone();
        tokio::task::spawn_blocking(move || ClusterDb::open(&url, &node)).await
    };
    let db = match db {
        Ok(Ok(db)) => Arc::new(std::sync::Mutex::new(db)),
        Ok(Err(e)) => {
            tracing::error!(error = %e, "cannot join the cluster; this node serves no swarm");
            return;
        }
        Err(e) => {
            tracing::error!(error = %e, "cannot join the cluster");
            return;
        }
    };
    let mut rounds: u64 = 0;
    let mut interval = tokio::time::interval(settings.renew_every);
    interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = interval.tick() => {}
            _ = shutdown.changed() => break,
        }
        if *shutdown.borrow() {
            break;
        }
        let started = Instant::now();
        let c = cluster.clone();
        let d = db.clone();
        let local: HashSet<SwarmId> = state.fleet.lock().swarm_ids().into_iter().collect();
        let outcome = tokio::task::spawn_blocking(move || {
            let mut db = d.lock().unwrap_or_else(|e| e.into_inner());
            plan_round(&mut db, &c, &local, started)
        })
        .await;
        let round = match outcome {
            Ok(mut round) => {
                // Swarms whose changes the store fenced off leave memory too.
                for id in state.writer.take_lost() {
                    if !round.lost.contains(&id) {
                        cluster.view.write().held.remove(&id);
                        round.lost.push(id);
                    }
                }
                round
            }
            Err(e) => {
                tracing::error!(error = %e, "the cluster round panicked");
                return;
            }
        };
        apply_round(&state, &cluster, &db, round).await;
        rounds += 1;
        // Tokens revoked (or issued) on other nodes: the table is read again every few rounds.
        if rounds.is_multiple_of(TOKEN_REFRESH_ROUNDS)
            && let Ok(tokens) = crate::routes::read(&state, |r| r.list_tokens()).await
        {
            let live = tokens
                .into_iter()
                .filter(|t| t.revoked_at.is_none())
                .collect();
            *state.tokens.write() = crate::auth::TokenTable::new(live);
        }
    }
    // Leave: stop acting on every swarm, commit what is pending, then give every lease up.
    cluster.view.write().held.clear();
    state.flush(false).await;
    let _ =
        tokio::task::spawn_blocking(move || db.lock().unwrap_or_else(|e| e.into_inner()).leave())
            .await;
}

/// One round's reads and lease changes (blocking). Errors leave the view as it was, except that
/// swarms whose validity ran out are dropped.
fn plan_round(
    db: &mut ClusterDb,
    cluster: &Cluster,
    local: &HashSet<SwarmId>,
    started: Instant,
) -> Round {
    let s = &cluster.settings;
    let mut round = Round::default();
    let version = env!("CARGO_PKG_VERSION");
    let renewed = db
        .heartbeat(&s.advertise_url, version, s.lease_ttl)
        .and_then(|_| db.renew(s.lease_ttl));
    let valid_until = started + s.lease_ttl;
    {
        let mut view = cluster.view.write();
        match &renewed {
            Ok(held) => {
                let still: HashSet<SwarmId> = held.iter().map(|(id, _)| *id).collect();
                for id in view.held.keys() {
                    if !still.contains(id) {
                        round.lost.push(*id);
                    }
                }
                for (id, epoch) in held {
                    match view.held.get_mut(id) {
                        Some(h) => {
                            h.valid_until = valid_until;
                            h.epoch = *epoch;
                        }
                        // A swarm created here: its lease was taken with its first row.
                        None if local.contains(id) => {
                            view.held.insert(
                                *id,
                                Held {
                                    epoch: *epoch,
                                    valid_until,
                                },
                            );
                        }
                        None => {}
                    }
                }
            }
            Err(e) => {
                tracing::warn!(error = %e, "cannot renew this node's leases");
                let now = Instant::now();
                for (id, h) in view.held.iter() {
                    if h.valid_until <= now {
                        round.lost.push(*id);
                    }
                }
            }
        }
        for id in &round.lost {
            view.held.remove(id);
        }
    }
    if renewed.is_err() {
        return round;
    }
    let read = db.nodes().and_then(|n| Ok((n, db.leases()?, db.now_ms()?)));
    let (nodes, leases, db_now) = match read {
        Ok(r) => r,
        Err(e) => {
            tracing::warn!(error = %e, "cannot read the cluster's state");
            return round;
        }
    };
    let live: Vec<&NodeRow> = nodes.iter().filter(|n| n.alive(db_now)).collect();
    let share = leases.len().div_ceil(live.len().max(1));
    let held_now = cluster.view.read().held.len();
    let mut mine = held_now;
    // Take free or lapsed leases, up to this node's share.
    let cooling: HashSet<SwarmId> = {
        let mut view = cluster.view.write();
        let cooldown = s.lease_ttl * 2;
        view.handed_over.retain(|_, at| at.elapsed() < cooldown);
        view.handed_over.keys().copied().collect()
    };
    let alone = live.len() <= 1;
    for lease in &leases {
        if mine >= share {
            break;
        }
        let free = !lease.valid(db_now);
        if !free || (!alone && cooling.contains(&lease.swarm_id)) {
            continue;
        }
        match db.acquire(lease.swarm_id, s.lease_ttl) {
            Ok(Some(epoch)) => {
                round.acquired.push((lease.swarm_id, epoch));
                mine += 1;
            }
            Ok(None) => {}
            Err(e) => tracing::warn!(error = %e, swarm = %lease.swarm_name, "cannot take a lease"),
        }
    }
    // Hand over one swarm while this node holds two more than the least loaded live node, or
    // more than its share (a node that joined takes it at its next round): the counts converge
    // to within one of each other.
    let least = live
        .iter()
        .filter(|n| n.id != s.node_id)
        .map(|n| leases.iter().filter(|l| l.held_by(&n.id, db_now)).count())
        .min();
    let unbalanced = least.is_some_and(|least| mine >= least + 2) || mine > share;
    if unbalanced && round.acquired.is_empty() {
        let view = cluster.view.read();
        let mut candidates: Vec<SwarmId> = view.held.keys().copied().collect();
        candidates.sort();
        round.hand_over = candidates.into_iter().take(1).collect();
    }
    let mut view = cluster.view.write();
    view.by_name = leases
        .iter()
        .enumerate()
        .map(|(i, l)| (l.swarm_name.clone(), i))
        .collect();
    view.by_id = leases
        .iter()
        .enumerate()
        .map(|(i, l)| (l.swarm_id, i))
        .collect();
    view.nodes = nodes;
    view.leases = leases;
    view.db_now = db_now;
    round
}

/// Applies a round to the fleet: drops lost swarms, loads acquired ones, hands over extras.
async fn apply_round(
    state: &AppState,
    cluster: &Arc<Cluster>,
    db: &Arc<std::sync::Mutex<ClusterDb>>,
    round: Round,
) {
    for id in round.lost {
        tracing::warn!(swarm = %id, "lost the lease of a swarm: it leaves this node");
        let _ = state
            .apply(move |fleet, _| {
                fleet.release_swarm(id);
                Ok(())
            })
            .await;
    }
    for (id, epoch) in round.acquired {
        let started = Instant::now();
        let retain = state.fleet.lock().limits().retain_terminal;
        let loaded = crate::routes::read(state, move |r| r.load_swarm(id, retain)).await;
        let snapshot = match loaded {
            Ok(s) => s,
            Err(e) => {
                tracing::error!(swarm = %id, error = %e.message, "cannot load a swarm taken over; releasing it");
                let _ = release_lease(db, id).await;
                continue;
            }
        };
        let (stored, _) = snapshot.into_parts();
        let name = stored
            .swarms
            .first()
            .map(|s| s.name.clone())
            .unwrap_or_else(|| id.to_string());
        let adopted = state
            .apply(move |fleet, now| {
                fleet.raise_event_seq((epoch.max(0) as u64) << 32);
                fleet.adopt(stored, now);
                Ok(())
            })
            .await;
        if let Err(e) = adopted {
            tracing::error!(swarm = %name, error = %e.message, "cannot take a swarm over");
            continue;
        }
        let load_ms = started.elapsed().as_millis() as u64;
        let mut view = cluster.view.write();
        view.held.insert(
            id,
            Held {
                epoch,
                valid_until: started + cluster.settings.lease_ttl,
            },
        );
        let at = view.db_now;
        view.takeovers.push(Takeover {
            swarm: name.clone(),
            epoch,
            at,
            load_ms,
        });
        if view.takeovers.len() > 50 {
            view.takeovers.remove(0);
        }
        tracing::info!(swarm = %name, epoch, load_ms, "took a swarm over");
    }
    for id in round.hand_over {
        // Stop routing calls to it, write out everything of it not yet stored (agents'
        // counters, the open metrics minute) and wait for that commit, then let it go.
        {
            let mut view = cluster.view.write();
            view.held.remove(&id);
            view.handed_over.insert(id, Instant::now());
        }
        let stored = state
            .apply(move |fleet, _| {
                fleet.prepare_release(id);
                Ok(())
            })
            .await;
        if let Err(e) = stored {
            tracing::warn!(swarm = %id, error = %e.message, "cannot store a swarm before handing it over; keeping it");
            continue;
        }
        let _ = state
            .apply(move |fleet, _| {
                fleet.release_swarm(id);
                Ok(())
            })
            .await;
        if let Err(e) = release_lease(db, id).await {
            tracing::warn!(swarm = %id, error = %e, "cannot release a lease; it will lapse");
        } else {
            tracing::info!(swarm = %id, "handed a swarm over");
        }
    }
}

/// Gives up this node's lease of `id` (on a blocking thread: the client blocks).
async fn release_lease(db: &Arc<std::sync::Mutex<ClusterDb>>, id: SwarmId) -> Result<(), String> {
    let db = db.clone();
    tokio::task::spawn_blocking(move || {
        db.lock()
            .unwrap_or_else(|e| e.into_inner())
            .release(id)
            .map_err(|e| e.to_string())
    })
    .await
    .map_err(|e| e.to_string())?
}

/// Forwards `req` to the node at `url` and streams its answer back.
pub async fn forward(cluster: &Cluster, node: &str, url: &str, req: Request) -> Response {
    if req.headers().contains_key(FORWARDED_BY) {
        return ApiError::unavailable(
            "this swarm is moving between coordinators; retry in a moment",
        )
        .into_response();
    }
    if req.headers().contains_key(axum::http::header::UPGRADE) {
        return ApiError::new(
            StatusCode::MISDIRECTED_REQUEST,
            "wrong_coordinator",
            format!("this swarm is served by the coordinator at {url}: open the WebSocket there"),
        )
        .into_response();
    }
    let (parts, body) = req.into_parts();
    let path_and_query = parts
        .extensions
        .get::<axum::extract::OriginalUri>()
        .map(|u| u.0.clone())
        .unwrap_or(parts.uri.clone());
    let target = format!(
        "{}{}",
        url.trim_end_matches('/'),
        path_and_query.path_and_query().map_or("/", |p| p.as_str())
    );
    let body = match axum::body::to_bytes(body, usize::MAX).await {
        Ok(b) => b,
        Err(e) => {
            return ApiError::bad_request(format!("cannot read the body: {e}")).into_response();
        }
    };
    let mut out = cluster
        .http
        .request(parts.method.clone(), &target)
        .body(body);
    for (name, value) in &parts.headers {
        if is_hop_by_hop(name) {
            continue;
        }
        out = out.header(name, value);
    }
    out = out.header(FORWARDED_BY, cluster.node_id());
    let answer = match out.send().await {
        Ok(a) => a,
        Err(e) => {
            tracing::warn!(node, error = %e, "cannot forward a call");
            return ApiError::unavailable(format!(
                "the coordinator serving this swarm ({url}) cannot be reached; retry in a moment (its swarms move to another coordinator when it is gone)"
            ))
            .into_response();
        }
    };
    let mut resp = Response::builder().status(answer.status());
    for (name, value) in answer.headers() {
        if !is_hop_by_hop(name) {
            resp = resp.header(name, value);
        }
    }
    if let Ok(v) = HeaderValue::from_str(node) {
        resp = resp.header(HeaderName::from_static("x-flotilla-served-by"), v);
    }
    resp.body(Body::from_stream(answer.bytes_stream()))
        .unwrap_or_else(|e| ApiError::internal(e.to_string()).into_response())
}

/// Headers that belong to one connection, not to the request.
fn is_hop_by_hop(name: &HeaderName) -> bool {
    matches!(
        name.as_str(),
        "connection"
            | "keep-alive"
            | "proxy-authenticate"
            | "proxy-authorization"
            | "te"
            | "trailer"
            | "transfer-encoding"
            | "upgrade"
            | "host"
            | "content-length"
    )
}
