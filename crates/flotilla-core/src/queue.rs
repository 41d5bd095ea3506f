//! The ready queue of one swarm: tasks that may start now, in the order agents should get them.
//!
//! Order: higher priority first, then first in, first out. Tasks are partitioned by their set
//! of required capabilities, so an agent looks only at partitions whose every capability it
//! has, and compares their heads: taking the best task for an agent costs
//! O(partitions × log n), not O(n). Swarms rarely have more than a handful of distinct
//! capability sets.
//!
//! Partitions are also split by [`Lane`]: ordered tasks and delegated subtasks may be taken only
//! by some agents (the ring's token holder, the delegator's children), which the caller decides
//! with the `admit` function it gives [`ReadyQueue::peek_admitting`].

use std::cmp::Reverse;
use std::collections::{BTreeMap, BTreeSet, HashMap};

use crate::agent::has_all;
use crate::ids::TaskId;

/// Where a task sits in the queue; needed to take it out again (cancel, deadline).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct QueueSlot {
    partition: u32,
    key: QueueKey,
}

impl QueueSlot {
    /// Where the task stands: compare two slots' ranks to know which task goes first
    /// (smaller first: higher priority, then earlier arrival).
    pub fn rank(&self) -> (Reverse<u8>, u64) {
        (self.key.priority, self.key.seq)
    }

    /// The task's priority.
    pub fn priority(&self) -> u8 {
        self.key.priority.0
    }
}

/// The partition number of slots in a [`LocalQueue`].
const LOCAL: u32 = u32::MAX;

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
struct QueueKey {
    priority: Reverse<u8>,
    seq: u64,
    task: TaskId,
}

/// Who may take the tasks of a partition.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Lane {
    /// Any agent with the capabilities.
    Open,
    /// Ordered tasks: never peeked through the lane; the fleet hands out the one whose turn it
    /// is (in a ring, to the token's holder).
    Ordered,
    /// Subtasks delegated by this agent: its children in the hierarchy.
    Delegated(crate::ids::AgentId),
}

#[derive(Debug)]
struct Partition {
    capabilities: Vec<String>,
    lane: Lane,
    tasks: BTreeSet<QueueKey>,
}

/// The ready queue of one swarm.
#[derive(Debug, Default)]
pub struct ReadyQueue {
    partitions: Vec<Partition>,
    /// Each lane's partitions by the capabilities their tasks need.
    by_capabilities: HashMap<Lane, HashMap<Vec<String>, u32>>,
    /// Every queued task by arrival, to find the oldest.
    by_age: BTreeMap<u64, TaskId>,
}

impl ReadyQueue {
    /// An empty queue.
    pub fn new() -> Self {
        Self::default()
    }

    /// How many tasks are queued.
    pub fn len(&self) -> usize {
        self.by_age.len()
    }

    /// Whether no task is queued.
    pub fn is_empty(&self) -> bool {
        self.by_age.is_empty()
    }

    /// Adds a task any agent with the capabilities may take. `seq` must grow with every
    /// push: it orders tasks of equal priority. `capabilities` must be sorted.
    pub fn push(
        &mut self,
        task: TaskId,
        priority: u8,
        seq: u64,
        capabilities: &[String],
    ) -> QueueSlot {
        self.push_in(task, priority, seq, capabilities, Lane::Open)
    }

    /// Adds a task to a lane (see [`ReadyQueue::push`]).
    pub fn push_in(
        &mut self,
        task: TaskId,
        priority: u8,
        seq: u64,
        capabilities: &[String],
        lane: Lane,
    ) -> QueueSlot {
        // Looked up by the borrowed capabilities: a push allocates only for a new partition.
        let known = self
            .by_capabilities
            .get(&lane)
            .and_then(|m| m.get(capabilities))
            .copied();
        let partition = match known {
            Some(p) => p,
            None => {
                let p = u32::try_from(self.partitions.len()).expect("fewer than 2^32 partitions");
                self.partitions.push(Partition {
                    capabilities: capabilities.to_vec(),
                    lane,
                    tasks: BTreeSet::new(),
                });
                self.by_capabilities
                    .entry(lane)
                    .or_default()
                    .insert(capabilities.to_vec(), p);
                p
            }
        };
        let key = QueueKey {
            priority: Reverse(priority),
            seq,
            task,
        };
        self.partitions[partition as usize].tasks.insert(key);
        self.by_age.insert(seq, task);
        QueueSlot { partition, key }
    }

    /// Takes a task out; false if it was not there.
    pub fn remove(&mut self, slot: QueueSlot) -> bool {
        let Some(p) = self.partitions.get_mut(slot.partition as usize) else {
            return false;
        };
        let removed = p.tasks.remove(&slot.key);
        if removed {
            self.by_age.remove(&slot.key.seq);
        }
        removed
    }

    /// The best task an agent with these (sorted) capabilities may run, without taking it.
    pub fn peek_for(&self, capabilities: &[String]) -> Option<(TaskId, QueueSlot)> {
        self.peek(capabilities, 0, false)
    }

    /// The best task of at least priority `floor` in the open lane that an agent with these
    /// (sorted) capabilities may run, without taking it. With `best_fit`, among tasks of equal
    /// priority the one that needs most capabilities goes first (then first in, first out).
    pub fn peek(
        &self,
        capabilities: &[String],
        floor: u8,
        best_fit: bool,
    ) -> Option<(TaskId, QueueSlot)> {
        self.peek_admitting(capabilities, floor, best_fit, |lane, _| lane == Lane::Open)
    }

    /// Like [`ReadyQueue::peek`], over every partition `admit` accepts (given its lane and the
    /// capabilities its tasks need).
    pub fn peek_admitting(
        &self,
        capabilities: &[String],
        floor: u8,
        best_fit: bool,
        admit: impl Fn(Lane, &[String]) -> bool,
    ) -> Option<(TaskId, QueueSlot)> {
        let mut best: Option<(u32, QueueKey)> = None;
        let order = |i: u32, k: &QueueKey| {
            let needs = if best_fit {
                self.partitions[i as usize].capabilities.len()
            } else {
                0
            };
            (k.priority, Reverse(needs), k.seq)
        };
        for (i, p) in self.partitions.iter().enumerate() {
            let Some(head) = p.tasks.first() else {
                continue;
            };
            if head.priority.0 < floor
                || best.is_some_and(|(bi, b)| order(bi, &b) <= order(i as u32, head))
            {
                continue;
            }
            if has_all(capabilities, &p.capabilities) && admit(p.lane, &p.capabilities) {
                best = Some((i as u32, *head));
            }
        }
        best.map(|(partition, key)| (key.task, QueueSlot { partition, key }))
    }

    /// How many queued tasks an agent with these (sorted) capabilities could run:
    /// O(partitions).
    pub fn count_for(&self, capabilities: &[String]) -> usize {
        self.partitions
            .iter()
            .filter(|p| has_all(capabilities, &p.capabilities))
            .map(|p| p.tasks.len())
            .sum()
    }

    /// Takes the best task an agent with these (sorted) capabilities may run.
    pub fn pop_for(&mut self, capabilities: &[String]) -> Option<TaskId> {
        let (task, slot) = self.peek_for(capabilities)?;
        self.remove(slot);
        Some(task)
    }

    /// The task that has waited longest, whatever its priority.
    pub fn oldest(&self) -> Option<TaskId> {
        self.by_age.first_key_value().map(|(_, t)| *t)
    }

    /// Every queued task, in no particular order.
    pub fn iter(&self) -> impl Iterator<Item = TaskId> + '_ {
        self.by_age.values().copied()
    }
}

/// The local queue of one agent: tasks placed ahead on it (prefetched, or waiting for it by
/// affinity), in the same order as the swarm's queue.
#[derive(Debug, Default)]
pub struct LocalQueue {
    tasks: BTreeSet<QueueKey>,
}

impl LocalQueue {
    /// Adds a task with its priority and its place in the swarm's arrival order.
    pub fn push(&mut self, task: TaskId, priority: u8, seq: u64) -> QueueSlot {
        let key = QueueKey {
            priority: Reverse(priority),
            seq,
            task,
        };
        self.tasks.insert(key);
        QueueSlot {
            partition: LOCAL,
            key,
        }
    }

    /// Takes a task out; false if it was not there.
    pub fn remove(&mut self, slot: QueueSlot) -> bool {
        slot.partition == LOCAL && self.tasks.remove(&slot.key)
    }

    /// How many tasks wait in it.
    pub fn len(&self) -> usize {
        self.tasks.len()
    }

    /// Whether it is empty.
    pub fn is_empty(&self) -> bool {
        self.tasks.is_empty()
    }

    /// Its tasks, best first.
    pub fn iter(&self) -> impl Iterator<Item = (TaskId, QueueSlot)> + '_ {
        self.tasks.iter().map(|k| {
            (
                k.task,
                QueueSlot {
                    partition: LOCAL,
                    key: *k,
                },
            )
        })
    }

    /// Empties it, best first.
    pub fn drain(&mut self) -> Vec<TaskId> {
        std::mem::take(&mut self.tasks)
            .into_iter()
            .map(|k| k.task)
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use uuid::Uuid;

    fn id(n: u128) -> TaskId {
        TaskId(Uuid::from_u128(n))
    }

    fn caps(xs: &[&str]) -> Vec<String> {
        xs.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn higher_priority_first_then_fifo() {
        let mut q = ReadyQueue::new();
        q.push(id(1), 5, 1, &[]);
        q.push(id(2), 9, 2, &[]);
        q.push(id(3), 5, 3, &[]);
        q.push(id(4), 9, 4, &[]);
        let order: Vec<_> = std::iter::from_fn(|| q.pop_for(&[])).collect();
        assert_eq!(order, vec![id(2), id(4), id(1), id(3)]);
    }

    #[test]
    fn agent_gets_only_tasks_it_can_do() {
        let mut q = ReadyQueue::new();
        q.push(id(1), 10, 1, &caps(&["gpu"]));
        q.push(id(2), 1, 2, &caps(&["python"]));
        q.push(id(3), 5, 3, &caps(&["gpu", "python"]));
        assert_eq!(q.pop_for(&caps(&["python"])), Some(id(2)));
        assert_eq!(q.pop_for(&caps(&["python"])), None);
        assert_eq!(q.pop_for(&caps(&["gpu", "python"])), Some(id(1)));
        assert_eq!(q.pop_for(&caps(&["gpu", "python"])), Some(id(3)));
        assert!(q.is_empty());
    }

    #[test]
    fn count_for_counts_the_tasks_an_agent_could_run() {
        let mut q = ReadyQueue::new();
        q.push(id(1), 5, 1, &caps(&[]));
        q.push(id(2), 5, 2, &caps(&["rust"]));
        q.push(id(3), 5, 3, &caps(&["rust"]));
        q.push(id(4), 5, 4, &caps(&["gpu", "rust"]));
        assert_eq!(q.count_for(&caps(&[])), 1);
        assert_eq!(q.count_for(&caps(&["rust"])), 3);
        assert_eq!(q.count_for(&caps(&["gpu", "rust"])), 4);
        assert_eq!(q.count_for(&caps(&["gpu"])), 1);
    }

    #[test]
    fn remove_and_oldest() {
        let mut q = ReadyQueue::new();
        let a = q.push(id(1), 1, 1, &[]);
        q.push(id(2), 10, 2, &[]);
        assert_eq!(q.oldest(), Some(id(1)));
        assert!(q.remove(a));
        assert!(!q.remove(a));
        assert_eq!(q.oldest(), Some(id(2)));
        assert_eq!(q.len(), 1);
    }

    #[test]
    fn floor_and_best_fit() {
        let mut q = ReadyQueue::new();
        q.push(id(1), 5, 1, &[]);
        q.push(id(2), 5, 2, &caps(&["gpu"]));
        q.push(id(3), 2, 3, &caps(&["gpu"]));
        let gpu = caps(&["gpu"]);
        assert_eq!(q.peek(&gpu, 0, false).unwrap().0, id(1));
        assert_eq!(q.peek(&gpu, 0, true).unwrap().0, id(2));
        assert_eq!(q.peek(&[], 6, false), None);
        let (t, slot) = q.peek(&gpu, 5, true).unwrap();
        assert_eq!((t, slot.priority()), (id(2), 5));
        let mut local = LocalQueue::default();
        let a = local.push(id(7), 3, 9);
        let b = local.push(id(8), 9, 10);
        assert!(b.rank() < a.rank());
        assert_eq!(
            local.iter().map(|(t, _)| t).collect::<Vec<_>>(),
            vec![id(8), id(7)]
        );
        assert!(!q.remove(a), "a local slot is not the swarm queue's");
        assert!(local.remove(a));
        assert_eq!(local.drain(), vec![id(8)]);
        assert!(local.is_empty());
    }

    proptest! {
        /// Whatever is pushed, popping with every capability yields priority-descending,
        /// FIFO-within-priority order, and nothing is lost or duplicated.
        #[test]
        fn pops_in_priority_then_fifo_order(
            items in prop::collection::vec((1u8..=10, 0usize..4), 0..200),
            removals in prop::collection::vec(any::<prop::sample::Index>(), 0..20),
        ) {
            let cap_sets = [caps(&[]), caps(&["a"]), caps(&["b"]), caps(&["a", "b"])];
            let mut q = ReadyQueue::new();
            let mut slots = Vec::new();
            for (i, (prio, c)) in items.iter().enumerate() {
                slots.push(q.push(id(i as u128), *prio, i as u64, &cap_sets[*c]));
            }
            let mut removed = BTreeSet::new();
            for r in &removals {
                if slots.is_empty() { break; }
                let i = r.index(slots.len());
                if q.remove(slots[i]) { removed.insert(i); }
            }
            let all = caps(&["a", "b"]);
            let mut popped = Vec::new();
            while let Some(t) = q.pop_for(&all) {
                popped.push(t.0.as_u128() as usize);
            }
            let mut expected: Vec<usize> = (0..items.len()).filter(|i| !removed.contains(i)).collect();
            expected.sort_by_key(|&i| (Reverse(items[i].0), i));
            prop_assert_eq!(popped, expected);
            prop_assert!(q.is_empty());
        }
    }
}
