//! Several fleets sharing one store, as coordinators sharing a database do: each holds the
//! swarms it owns, and a swarm moves from one to another by release and adoption.
//!
//! After every command the driver checks the fleet's invariants and the event log across the
//! fleets: no seq is given twice, and each swarm's seqs keep increasing whoever emits them.

use std::collections::{HashMap, HashSet};
use std::time::Duration;

use flotilla_core::{
    AgentId, Changes, Effect, Event, Fleet, FleetLimits, SwarmId, SwarmSpec, TaskId, Timestamp,
};
use uuid::Uuid;

use super::{MemStore, at};

/// Fleets over one store.
pub struct Cluster {
    pub fleets: Vec<Fleet>,
    pub limits: FleetLimits,
    pub store: MemStore,
    pub now: Timestamp,
    /// Every event, in the order the fleets emitted them.
    pub events: Vec<Event>,
    /// Effects of each fleet's last command.
    pub effects: Vec<Vec<Effect>>,
    /// The last epoch given out (a database sequence, in the real thing).
    pub epoch: u64,
    /// Swarm moves so far.
    pub moves: u64,
    seqs: HashSet<u64>,
    last_of_swarm: HashMap<SwarmId, u64>,
    next_id: u128,
}

impl Cluster {
    /// `n` empty fleets, each starting in an epoch of its own.
    pub fn new(n: usize, limits: FleetLimits) -> Cluster {
        let mut c = Cluster {
            fleets: Vec::new(),
            limits: limits.clone(),
            store: MemStore::new(),
            now: at(0),
            events: Vec::new(),
            effects: vec![Vec::new(); n],
            epoch: 0,
            moves: 0,
            seqs: HashSet::new(),
            last_of_swarm: HashMap::new(),
            next_id: 0,
        };
        for _ in 0..n {
            let mut f = Fleet::new(limits.clone());
            c.epoch += 1;
            f.raise_event_seq(c.epoch << 32);
            c.fleets.push(f);
        }
        c
    }

    /// A fresh, deterministic id.
    pub fn uuid(&mut self) -> Uuid {
        self.next_id += 1;
        Uuid::from_u128(0x0190_0000_0000_7000_9000_0000_0000_0000 | self.next_id)
    }

    /// Checks fleet `i`, takes its changes and effects, checks the events and persists.
    pub fn settle(&mut self, i: usize) -> Changes {
        if let Err(e) = self.fleets[i].check_invariants() {
            panic!("invariant broken in fleet {i}: {e}");
        }
        let changes = self.fleets[i].take_changes();
        for e in &changes.events {
            assert!(self.seqs.insert(e.seq), "seq {} given twice: {e:?}", e.seq);
            let last = self.last_of_swarm.entry(e.swarm_id).or_default();
            assert!(
                e.seq > *last,
                "seq {} of swarm {} after {last}: {e:?}",
                e.seq,
                e.swarm_id
            );
            *last = e.seq;
        }
        if let Some(e) = changes.events.last() {
            assert_eq!(self.fleets[i].next_event_seq(), e.seq + 1);
        }
        self.store.apply(&changes);
        self.events.extend(changes.events.iter().cloned());
        self.effects[i] = self.fleets[i].take_effects();
        changes
    }

    /// The fleet holding a swarm; exactly one does.
    pub fn owner(&self, swarm: SwarmId) -> usize {
        let holders: Vec<usize> = (0..self.fleets.len())
            .filter(|i| self.fleets[*i].swarm_by_id(swarm).is_some())
            .collect();
        assert_eq!(holders.len(), 1, "swarm {swarm} held by {holders:?}");
        holders[0]
    }

    /// The fleet holding an agent, if one does.
    pub fn owner_of_agent(&self, agent: AgentId) -> Option<usize> {
        (0..self.fleets.len()).find(|i| self.fleets[*i].agent(agent).is_some())
    }

    /// The fleet holding a task in memory, if one does (never two).
    pub fn owner_of_task(&self, task: TaskId) -> Option<usize> {
        let holders: Vec<usize> = (0..self.fleets.len())
            .filter(|i| self.fleets[*i].task(task).is_some())
            .collect();
        assert!(holders.len() <= 1, "task {task} held by {holders:?}");
        holders.first().copied()
    }

    /// Creates a swarm in fleet `i`.
    pub fn create_swarm(&mut self, i: usize, spec: SwarmSpec) -> SwarmId {
        let id = SwarmId(self.uuid());
        self.fleets[i]
            .create_swarm(id, spec, self.now)
            .expect("create swarm");
        self.settle(i);
        id
    }

    /// Hands a swarm over to fleet `to`, the way coordinators do: its owner marks its lagging
    /// rows, persists, and forgets it; the new owner takes a new epoch and adopts its rows.
    pub fn move_swarm(&mut self, swarm: SwarmId, to: usize) {
        let from = self.owner(swarm);
        assert_ne!(from, to, "swarm {swarm} is already in fleet {to}");
        assert!(self.fleets[from].prepare_release(swarm));
        self.settle(from);
        assert!(self.fleets[from].release_swarm(swarm));
        let after = self.fleets[from].take_changes();
        assert!(after.is_empty(), "a release records nothing: {after:?}");
        assert!(self.fleets[from].take_effects().is_empty());
        self.fleets[from]
            .check_invariants()
            .expect("invariants after a release");
        self.epoch += 1;
        self.fleets[to].raise_event_seq(self.epoch << 32);
        let stored = self.store.stored_for(&[swarm]);
        let adopted = self.fleets[to].adopt(stored, self.now);
        assert_eq!(adopted, vec![swarm]);
        self.settle(to);
        self.moves += 1;
    }

    /// Fires every fleet's due timers at the current instant.
    pub fn tick(&mut self) {
        for i in 0..self.fleets.len() {
            self.fleets[i].tick(self.now);
            self.settle(i);
        }
    }

    /// Moves the clock forward and ticks every fleet.
    pub fn advance(&mut self, by: Duration) {
        self.now = self.now + by;
        self.tick();
    }
}
