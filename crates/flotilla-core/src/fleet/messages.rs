//! The message bus's rules: inboxes, delivery until acknowledged, retries, time to live, the
//! dead-letter list, request/response, topics and broadcasts, all under the swarm's topology.
//!
//! Messages live here while they are pending or delivered; once acknowledged or dead they are
//! only in the store (history, dead letters). Every change is a row to persist like any other,
//! committed before anyone is told: a message accepted is never lost, and after a restart every
//! message not yet acknowledged is delivered again (at least once).
//!
//! Who may message whom is the topology's word ([`Fleet::may_send`]): an agent's send to an
//! agent it may not reach is refused (403, saying why); its broadcasts and publishes reach only
//! the agents it may reach. Operators (no agent) reach everyone.

use std::cmp::Reverse;
use std::collections::{BTreeSet, HashMap, VecDeque};

use super::{Fleet, Timer};
use crate::changes::Effect;
use crate::error::CoreError;
use crate::event::EventKind;
use crate::ids::{AgentId, MessageId, SwarmId};
use crate::message::{
    Message, MessageKind, MessageSpec, MessageStatus, ReplyState, Sent, topic_matches,
    validate_pattern, validate_topic,
};
use crate::time::Timestamp;

/// Most subscription patterns per agent.
const MAX_SUBSCRIPTIONS: usize = 64;

/// Responses to operators' requests kept for their waiting callers.
const ANSWERS_KEPT: usize = 1_000;

type InboxKey = (Reverse<crate::message::MessagePriority>, u64, MessageId);

/// A request waiting for its response.
#[derive(Debug, Clone)]
struct Awaiting {
    swarm: SwarmId,
    requester: Option<AgentId>,
    responder: Option<AgentId>,
    reply_by: Timestamp,
    /// The requester waits on its call: the response goes to that call, not to an inbox.
    waited: bool,
}

/// The messages in flight.
#[derive(Debug, Default)]
pub(super) struct Mail {
    /// Pending and delivered messages.
    live: HashMap<MessageId, Message>,
    /// Each agent's ready messages, best first.
    inboxes: HashMap<AgentId, BTreeSet<InboxKey>>,
    /// Each agent's pending and delivered messages (its inbox's size, for the cap).
    held: HashMap<AgentId, usize>,
    /// Requests without a response yet.
    awaiting: HashMap<MessageId, Awaiting>,
    /// Responses to operators' requests, by request.
    answers: HashMap<MessageId, Message>,
    answer_order: VecDeque<MessageId>,
    /// The last arrival number given.
    seq: u64,
}

impl Mail {
    /// A message in flight.
    pub(super) fn live_message(&self, id: MessageId) -> Option<&Message> {
        self.live.get(&id)
    }
}

impl Fleet {
    // ----- sending -----

    /// Sends one message to `to`'s inbox, from an agent or (`from = None`) an operator. A
    /// `response` must name, as `correlation_id`, a request sent to its sender that still
    /// waits; it goes to the requester.
    pub fn send_message(
        &mut self,
        id: MessageId,
        from: Option<AgentId>,
        to: AgentId,
        spec: MessageSpec,
        now: Timestamp,
    ) -> Result<Message, CoreError> {
        let kind = spec.kind.unwrap_or(MessageKind::Message);
        if kind == MessageKind::Response {
            return self.respond(id, from, spec, now);
        }
        self.check_spec(&spec)?;
        if kind == MessageKind::Request && from.is_none() && !spec.waited {
            return Err(CoreError::invalid(
                "an operator has no inbox to receive the response in: send the request with \
                 ?wait=true and get the response on the call",
            ));
        }
        let Some(recipient) = self.agents.get(&to) else {
            return Err(CoreError::not_found(format!("agent {to} not found")));
        };
        let swarm = recipient.agent.swarm_id;
        if let Some(f) = from {
            self.may_send(f, to)?;
        }
        self.check_room(to)?;
        if self.mail.live.contains_key(&id) {
            return Err(CoreError::conflict(format!("message id {id} is taken")));
        }
        let message = self.new_message(id, swarm, kind, from, Some(to), &spec, now);
        let waited = spec.waited && kind == MessageKind::Request;
        let message = self.enqueue_message(message);
        if waited && let Some(w) = self.mail.awaiting.get_mut(&id) {
            w.waited = true;
        }
        Ok(message)
    }

    /// Sends a copy to every agent of the swarm that `from` may reach (every agent, for an
    /// operator), but `from` itself. Each copy takes its id from `ids`.
    pub fn broadcast_message(
        &mut self,
        swarm: SwarmId,
        from: Option<AgentId>,
        spec: MessageSpec,
        ids: &mut dyn Iterator<Item = MessageId>,
        now: Timestamp,
    ) -> Result<Sent, CoreError> {
        self.check_spec(&spec)?;
        self.check_sender(swarm, from)?;
        let reach = self.broadcast_reach(swarm, from);
        let unreachable = self.unreachable(swarm, from, reach.len());
        let kind = spec.kind.unwrap_or(MessageKind::Broadcast);
        self.fan_out(swarm, from, kind, reach, &spec, ids, unreachable, now)
    }

    /// Publishes to a topic: a copy goes to every agent of the swarm subscribed to a pattern
    /// that matches it and that `from` may reach. Each copy takes its id from `ids`.
    pub fn publish_message(
        &mut self,
        swarm: SwarmId,
        from: Option<AgentId>,
        topic: &str,
        mut spec: MessageSpec,
        ids: &mut dyn Iterator<Item = MessageId>,
        now: Timestamp,
    ) -> Result<Sent, CoreError> {
        validate_topic(topic)?;
        spec.topic = Some(topic.to_owned());
        self.check_spec(&spec)?;
        self.check_sender(swarm, from)?;
        // Reach is asked of the subscribers only, not of every member.
        let graph = &self.swarms[&swarm].topo.graph;
        let reaches = |a: AgentId| {
            from.is_none_or(|f| graph.roles.contains_key(&a) && graph.may_send(f, a).is_ok())
        };
        let mut subscribers = 0;
        let mut to = Vec::new();
        let mut members: Vec<AgentId> = self.swarms[&swarm].agents.iter().copied().collect();
        members.sort();
        for a in members {
            let e = &self.agents[&a];
            if Some(a) == from
                || !e
                    .agent
                    .subscriptions
                    .iter()
                    .any(|p| topic_matches(p, topic))
            {
                continue;
            }
            subscribers += 1;
            if reaches(a) {
                to.push(a);
            }
        }
        let unreachable = subscribers - to.len() as u32;
        let kind = spec.kind.unwrap_or(MessageKind::Event);
        self.fan_out(swarm, from, kind, to, &spec, ids, unreachable, now)
    }

    #[allow(clippy::too_many_arguments)]
    fn fan_out(
        &mut self,
        swarm: SwarmId,
        from: Option<AgentId>,
        kind: MessageKind,
        to: Vec<AgentId>,
        spec: &MessageSpec,
        ids: &mut dyn Iterator<Item = MessageId>,
        unreachable: u32,
        now: Timestamp,
    ) -> Result<Sent, CoreError> {
        if kind == MessageKind::Response || kind == MessageKind::Request {
            return Err(CoreError::invalid(
                "requests and responses go to one agent: send them, do not broadcast or publish them",
            ));
        }
        // Full inboxes are skipped, not refused: one slow agent must not stop a broadcast.
        let room: Vec<AgentId> = to
            .into_iter()
            .filter(|a| self.check_room(*a).is_ok())
            .collect();
        let mut messages = Vec::with_capacity(room.len());
        for a in room {
            let id = ids.next().expect("the caller gives an id for every copy");
            if self.mail.live.contains_key(&id) {
                return Err(CoreError::conflict(format!("message id {id} is taken")));
            }
            let m = self.new_message(id, swarm, kind, from, Some(a), spec, now);
            messages.push(self.enqueue_message(m));
        }
        Ok(Sent {
            messages,
            unreachable,
        })
    }

    /// Answers a request.
    fn respond(
        &mut self,
        id: MessageId,
        from: Option<AgentId>,
        spec: MessageSpec,
        now: Timestamp,
    ) -> Result<Message, CoreError> {
        self.check_spec(&spec)?;
        let Some(request) = spec.correlation_id else {
            return Err(CoreError::invalid(
                "a response needs correlation_id: the id of the request it answers",
            ));
        };
        let Some(w) = self.mail.awaiting.get(&request).cloned() else {
            return Err(CoreError::conflict(format!(
                "request {request} is not waiting for a response (unknown, already answered, or timed out)"
            )));
        };
        if w.responder != from {
            return Err(CoreError::forbidden(format!(
                "request {request} was sent to another agent; only its recipient may answer it"
            )));
        }
        if let Some(to) = w.requester
            && !self.agents.contains_key(&to)
        {
            return Err(CoreError::conflict(format!(
                "the agent that sent request {request} is gone"
            )));
        }
        self.mail.awaiting.remove(&request);
        self.timers
            .remove(w.reply_by, Timer::RequestTimeout(request));
        self.out
            .message_replies
            .push((request, ReplyState::Answered));
        if let Some(r) = self.mail.live.get_mut(&request) {
            r.reply = Some(ReplyState::Answered);
        }
        let message = self.new_message(
            id,
            w.swarm,
            MessageKind::Response,
            from,
            w.requester,
            &spec,
            now,
        );
        self.out.effects.push(Effect::RequestAnswered(request));
        Ok(self.deliver_response(message, w.waited, now))
    }

    /// A response goes to its requester's inbox; one to an operator, or to a requester that
    /// waits on its call, is final at once and kept for that call.
    fn deliver_response(&mut self, mut message: Message, waited: bool, now: Timestamp) -> Message {
        let Some(request) = message.correlation_id else {
            return self.enqueue_message(message);
        };
        if message.to.is_some() && !waited {
            return self.enqueue_message(message);
        }
        message.status = MessageStatus::Acked;
        message.finished_at = Some(now);
        self.out.finished_messages.push(message.clone());
        if self.mail.answer_order.len() >= ANSWERS_KEPT
            && let Some(old) = self.mail.answer_order.pop_front()
        {
            self.mail.answers.remove(&old);
        }
        self.mail.answer_order.push_back(request);
        self.mail.answers.insert(request, message.clone());
        message
    }

    fn check_spec(&self, spec: &MessageSpec) -> Result<(), CoreError> {
        if spec.body.len() > self.limits.max_payload_bytes {
            return Err(CoreError::TooLarge(format!(
                "message body is {} bytes; at most {} are allowed",
                spec.body.len(),
                self.limits.max_payload_bytes
            )));
        }
        if let Some(t) = &spec.topic {
            validate_topic(t)?;
        }
        for (d, name) in [(spec.ttl, "ttl_ms"), (spec.timeout, "timeout_ms")] {
            if let Some(d) = d
                && (d.as_millis() < 10 || d.as_secs() > 30 * 86_400)
            {
                return Err(CoreError::invalid(format!(
                    "{name} must be between 10 and 2592000000 (30 days)"
                )));
            }
        }
        if spec.kind != Some(MessageKind::Response) && spec.correlation_id.is_some() {
            return Err(CoreError::invalid(
                "correlation_id belongs on a response (kind \"response\")",
            ));
        }
        Ok(())
    }

    fn check_sender(&self, swarm: SwarmId, from: Option<AgentId>) -> Result<(), CoreError> {
        if let Some(f) = from {
            match self.agents.get(&f) {
                Some(e) if e.agent.swarm_id == swarm => {}
                Some(_) => {
                    return Err(CoreError::forbidden(
                        "an agent sends only within its own swarm",
                    ));
                }
                None => return Err(CoreError::not_found(format!("agent {f} not found"))),
            }
        }
        Ok(())
    }

    fn check_room(&self, to: AgentId) -> Result<(), CoreError> {
        let Some(e) = self.agents.get(&to) else {
            return Err(CoreError::not_found(format!("agent {to} not found")));
        };
        let cap = self.swarms[&e.agent.swarm_id]
            .swarm
            .config
            .messaging
            .max_inbox as usize;
        let held = self.mail.held.get(&to).copied().unwrap_or(0);
        if held >= cap {
            return Err(CoreError::conflict(format!(
                "the inbox of {} is full ({held} messages not yet acknowledged; \
                 config.messaging.max_inbox is {cap}): retry once it has caught up",
                e.agent.name
            )));
        }
        Ok(())
    }

    fn unreachable(&self, swarm: SwarmId, from: Option<AgentId>, reached: usize) -> u32 {
        let others = self.swarms[&swarm].agents.len() - usize::from(from.is_some());
        others.saturating_sub(reached) as u32
    }

    #[allow(clippy::too_many_arguments)]
    fn new_message(
        &mut self,
        id: MessageId,
        swarm: SwarmId,
        kind: MessageKind,
        from: Option<AgentId>,
        to: Option<AgentId>,
        spec: &MessageSpec,
        now: Timestamp,
    ) -> Message {
        let config = &self.swarms[&swarm].swarm.config.messaging;
        self.mail.seq += 1;
        let reply_by = (kind == MessageKind::Request)
            .then(|| now + spec.timeout.unwrap_or(config.request_timeout));
        Message {
            id,
            swarm_id: swarm,
            kind,
            from,
            to,
            topic: spec.topic.clone(),
            priority: spec.priority,
            body: spec.body.clone(),
            correlation_id: spec.correlation_id,
            reply_by,
            reply: reply_by.map(|_| ReplyState::Awaiting),
            created_at: now,
            expires_at: spec.ttl.or(config.default_ttl).map(|t| now + t),
            status: MessageStatus::Pending,
            deliveries: 0,
            max_deliveries: config.max_deliveries,
            deliver_after: None,
            ack_by: None,
            finished_at: None,
            dead_reason: None,
            seq: self.mail.seq,
        }
    }

    /// Puts a new message in its recipient's inbox, with its timers.
    fn enqueue_message(&mut self, message: Message) -> Message {
        let id = message.id;
        let to = message.to.expect("an inbox message has a recipient");
        if let Some(at) = message.expires_at {
            self.timers.insert(at, Timer::MessageExpiry(id));
        }
        if let (Some(at), MessageKind::Request) = (message.reply_by, message.kind) {
            self.timers.insert(at, Timer::RequestTimeout(id));
            self.mail.awaiting.insert(
                id,
                Awaiting {
                    swarm: message.swarm_id,
                    requester: message.from,
                    responder: Some(to),
                    reply_by: at,
                    waited: false,
                },
            );
        }
        *self.mail.held.entry(to).or_default() += 1;
        self.mail.live.insert(id, message);
        self.make_ready(id);
        self.mark_message(id);
        self.mail.live[&id].clone()
    }

    /// A pending message may be taken now: into the inbox, and its recipient is woken.
    fn make_ready(&mut self, id: MessageId) {
        let m = &self.mail.live[&id];
        let to = m.to.expect("an inbox message has a recipient");
        let wake = Effect::WakeInbox(m.swarm_id, to);
        self.mail
            .inboxes
            .entry(to)
            .or_default()
            .insert((Reverse(m.priority), m.seq, id));
        if self.out.woken_inboxes.insert(to) {
            self.out.effects.push(wake);
        }
    }

    fn mark_message(&mut self, id: MessageId) {
        if self.out.marked_messages.insert(id) {
            self.out.messages.push(id);
        }
    }

    // ----- receiving -----

    /// Hands an agent up to `max` of its ready messages, most urgent first; each must be
    /// acknowledged within the swarm's `ack_timeout`.
    pub fn take_messages(
        &mut self,
        agent: AgentId,
        max: usize,
        now: Timestamp,
    ) -> Result<Vec<Message>, CoreError> {
        let Some(e) = self.agents.get(&agent) else {
            return Err(CoreError::not_found(format!("agent {agent} not found")));
        };
        let ack_timeout = self.swarms[&e.agent.swarm_id]
            .swarm
            .config
            .messaging
            .ack_timeout;
        let mut out = Vec::new();
        while out.len() < max {
            let Some(inbox) = self.mail.inboxes.get_mut(&agent) else {
                break;
            };
            let Some((_, _, id)) = inbox.pop_first() else {
                break;
            };
            let m = self.mail.live.get_mut(&id).expect("inbox message is live");
            m.status = MessageStatus::Delivered;
            m.deliveries += 1;
            m.deliver_after = None;
            let ack_by = now + ack_timeout;
            m.ack_by = Some(ack_by);
            let deliveries = m.deliveries;
            out.push(m.clone());
            self.timers
                .insert(ack_by, Timer::MessageAck(id, deliveries));
            self.mark_message(id);
        }
        if self.mail.inboxes.get(&agent).is_some_and(|i| i.is_empty()) {
            self.mail.inboxes.remove(&agent);
        }
        if !out.is_empty() {
            // Taking messages is a sign of life.
            let _ = self.touch(agent, now);
        }
        Ok(out)
    }

    /// How many messages wait ready in an agent's inbox.
    pub fn ready_messages(&self, agent: AgentId) -> usize {
        self.mail.inboxes.get(&agent).map_or(0, |i| i.len())
    }

    /// Acknowledges messages the agent took (or that wait in its inbox): they are done.
    /// Returns the ids acknowledged; ids that are not the agent's live messages are skipped
    /// (a repeated acknowledgement is not an error).
    pub fn ack_messages(
        &mut self,
        agent: AgentId,
        ids: &[MessageId],
        now: Timestamp,
    ) -> Result<Vec<MessageId>, CoreError> {
        self.check_agent(agent)?;
        let mut acked = Vec::new();
        for id in ids {
            if self.mail.live.get(id).is_some_and(|m| m.to == Some(agent)) {
                self.finish_message(*id, MessageStatus::Acked, None, now);
                acked.push(*id);
            }
        }
        Ok(acked)
    }

    /// Gives back messages the agent took without handling them: delivered again after the
    /// backoff (or dead, out of deliveries).
    pub fn nack_messages(
        &mut self,
        agent: AgentId,
        ids: &[MessageId],
        now: Timestamp,
    ) -> Result<Vec<MessageId>, CoreError> {
        self.check_agent(agent)?;
        let mut back = Vec::new();
        for id in ids {
            let delivered = self
                .mail
                .live
                .get(id)
                .is_some_and(|m| m.to == Some(agent) && m.status == MessageStatus::Delivered);
            if delivered {
                self.redeliver(*id, "given back by its recipient", now);
                back.push(*id);
            }
        }
        Ok(back)
    }

    /// Removes every message waiting in the agent's inbox (not those it took and has not yet
    /// acknowledged). Returns how many.
    pub fn clear_inbox(&mut self, agent: AgentId, now: Timestamp) -> Result<usize, CoreError> {
        self.check_agent(agent)?;
        self.mail.inboxes.remove(&agent);
        // Ready ones and pending retries (not yet ready) alike.
        let pending: Vec<MessageId> = self
            .mail
            .live
            .values()
            .filter(|m| m.to == Some(agent) && m.status == MessageStatus::Pending)
            .map(|m| m.id)
            .collect();
        for id in &pending {
            if let Some(m) = self.mail.live.remove(id) {
                self.unhold(m.to);
                self.forget_message_timers(&m);
                self.out.deleted_messages.push(*id);
            }
        }
        // A cleared request will get no answer: its requester hears so now (`end_request` does
        // nothing for messages that are not awaited requests).
        for id in &pending {
            self.end_request(
                *id,
                "cleared",
                "the request was cleared from its recipient's inbox",
                now,
            );
        }
        Ok(pending.len())
    }

    /// Sets the topic patterns an agent is subscribed to.
    pub fn set_subscriptions(
        &mut self,
        agent: AgentId,
        mut patterns: Vec<String>,
        _now: Timestamp,
    ) -> Result<Vec<String>, CoreError> {
        self.check_agent(agent)?;
        if patterns.len() > MAX_SUBSCRIPTIONS {
            return Err(CoreError::invalid(format!(
                "an agent may hold at most {MAX_SUBSCRIPTIONS} subscriptions"
            )));
        }
        for p in &patterns {
            validate_pattern(p)?;
        }
        patterns.sort();
        patterns.dedup();
        let e = self.agents.get_mut(&agent).expect("checked agent");
        e.agent.subscriptions = patterns.clone();
        self.mark_agent(agent);
        Ok(patterns)
    }

    /// Puts a dead message (read from the store) back in its recipient's inbox, with its
    /// deliveries counted from zero.
    pub fn retry_dead_message(
        &mut self,
        mut message: Message,
        now: Timestamp,
    ) -> Result<Message, CoreError> {
        if self.mail.live.contains_key(&message.id) {
            return Err(CoreError::conflict(format!(
                "message {} is being delivered again already",
                message.id
            )));
        }
        if message.status != MessageStatus::Dead {
            return Err(CoreError::conflict(format!(
                "message {} is {}; only dead messages can be retried",
                message.id,
                message.status.as_str()
            )));
        }
        let Some(to) = message.to.filter(|a| self.agents.contains_key(a)) else {
            return Err(CoreError::conflict(format!(
                "message {}'s recipient is gone; send a new message instead",
                message.id
            )));
        };
        self.check_room(to)?;
        self.mail.seq += 1;
        message.seq = self.mail.seq;
        message.status = MessageStatus::Pending;
        message.deliveries = 0;
        message.dead_reason = None;
        message.finished_at = None;
        message.ack_by = None;
        message.deliver_after = None;
        message.expires_at = message.expires_at.filter(|at| *at > now);
        // A request keeps its reply state and deadline (still answerable if it still waits);
        // it is not registered as awaiting a second time.
        let reply_by = message.reply_by.take();
        let id = message.id;
        self.enqueue_message(message);
        let m = self.mail.live.get_mut(&id).expect("just enqueued");
        m.reply_by = reply_by;
        Ok(m.clone())
    }

    /// A message in flight.
    pub fn message(&self, id: MessageId) -> Option<&Message> {
        self.mail.live.get(&id)
    }

    /// The response to an operator's request, once it came (kept for the last 1,000).
    pub fn response_to(&self, request: MessageId) -> Option<&Message> {
        self.mail.answers.get(&request)
    }

    /// How many messages are in flight (pending or delivered).
    pub fn messages_in_flight(&self) -> usize {
        self.mail.live.len()
    }

    fn check_agent(&self, agent: AgentId) -> Result<(), CoreError> {
        if self.agents.contains_key(&agent) {
            Ok(())
        } else {
            Err(CoreError::not_found(format!("agent {agent} not found")))
        }
    }

    // ----- the end of a message -----

    fn unhold(&mut self, to: Option<AgentId>) {
        if let Some(a) = to
            && let Some(n) = self.mail.held.get_mut(&a)
        {
            *n -= 1;
            if *n == 0 {
                self.mail.held.remove(&a);
            }
        }
    }

    fn forget_message_timers(&mut self, m: &Message) {
        if let Some(at) = m.expires_at {
            self.timers.remove(at, Timer::MessageExpiry(m.id));
        }
        if let Some(at) = m.ack_by {
            self.timers
                .remove(at, Timer::MessageAck(m.id, m.deliveries));
        }
        if let Some(at) = m.deliver_after {
            self.timers.remove(at, Timer::MessageRetry(m.id));
        }
    }

    /// Acknowledged or dead: out of memory, into the store for good.
    fn finish_message(
        &mut self,
        id: MessageId,
        status: MessageStatus,
        reason: Option<String>,
        now: Timestamp,
    ) {
        let Some(mut m) = self.mail.live.remove(&id) else {
            return;
        };
        if let Some(to) = m.to
            && let Some(inbox) = self.mail.inboxes.get_mut(&to)
        {
            inbox.remove(&(Reverse(m.priority), m.seq, id));
        }
        self.unhold(m.to);
        self.forget_message_timers(&m);
        m.status = status;
        m.finished_at = Some(now);
        m.ack_by = None;
        m.deliver_after = None;
        if status == MessageStatus::Dead {
            let why = reason.unwrap_or_else(|| "undeliverable".to_owned());
            self.emit(
                now,
                EventKind::MessageDeadLettered,
                m.swarm_id,
                m.to,
                None,
                format!("message {id} ({}): {why}", m.kind.as_str()),
            );
            m.dead_reason = Some(why);
        }
        self.out.finished_messages.push(m);
    }

    /// Delivery failed (not acknowledged in time, or given back): pending again after the
    /// backoff, or dead out of deliveries.
    fn redeliver(&mut self, id: MessageId, why: &str, now: Timestamp) {
        let Some(m) = self.mail.live.get_mut(&id) else {
            return;
        };
        if let Some(at) = m.ack_by.take() {
            self.timers.remove(at, Timer::MessageAck(id, m.deliveries));
        }
        if m.deliveries >= m.max_deliveries {
            let reason = format!("{why}, after {} deliveries", m.deliveries);
            self.finish_message(id, MessageStatus::Dead, Some(reason), now);
            return;
        }
        let config = &self.swarms[&m.swarm_id].swarm.config.messaging;
        let at = now + config.retry_after(m.deliveries);
        m.status = MessageStatus::Pending;
        m.deliver_after = Some(at);
        self.timers.insert(at, Timer::MessageRetry(id));
        self.mark_message(id);
    }

    /// Every message to a removed agent is dead.
    pub(super) fn dead_letter_inbox(&mut self, agent: AgentId, why: &str, now: Timestamp) {
        if !self.mail.held.contains_key(&agent) {
            return;
        }
        let mut ids: Vec<(u64, MessageId)> = self
            .mail
            .live
            .values()
            .filter(|m| m.to == Some(agent))
            .map(|m| (m.seq, m.id))
            .collect();
        ids.sort();
        for (_, id) in ids {
            self.finish_message(id, MessageStatus::Dead, Some(why.to_owned()), now);
        }
        self.mail.inboxes.remove(&agent);
    }

    // ----- timers -----

    pub(super) fn message_ack_timer(&mut self, id: MessageId, deliveries: u32, now: Timestamp) {
        let due =
            self.mail.live.get(&id).is_some_and(|m| {
                m.status == MessageStatus::Delivered && m.deliveries == deliveries
            });
        if due {
            self.redeliver(id, "not acknowledged in time", now);
        }
    }

    pub(super) fn message_retry_timer(&mut self, id: MessageId, now: Timestamp) {
        let Some(m) = self.mail.live.get_mut(&id) else {
            return;
        };
        if m.status != MessageStatus::Pending || m.deliver_after.is_none_or(|at| at > now) {
            return;
        }
        m.deliver_after = None;
        self.make_ready(id);
        self.mark_message(id);
    }

    pub(super) fn message_expiry_timer(&mut self, id: MessageId, now: Timestamp) {
        let expired = self
            .mail
            .live
            .get(&id)
            .is_some_and(|m| m.expires_at.is_some_and(|at| at <= now));
        if expired {
            self.finish_message(id, MessageStatus::Dead, Some("expired".to_owned()), now);
        }
    }

    /// No response came in time: the requester gets a `timeout` response.
    pub(super) fn request_timeout_timer(&mut self, request: MessageId, now: Timestamp) {
        if self
            .mail
            .awaiting
            .get(&request)
            .is_some_and(|w| w.reply_by <= now)
        {
            self.end_request(request, "timeout", "no response to request in time", now);
        }
    }

    /// A request that will get no response (it timed out, or was cleared from the recipient's
    /// inbox): the requester gets a response with `{"error": error}` in its stead.
    fn end_request(&mut self, request: MessageId, error: &str, words: &str, now: Timestamp) {
        let Some(w) = self.mail.awaiting.remove(&request) else {
            return;
        };
        self.timers
            .remove(w.reply_by, Timer::RequestTimeout(request));
        self.out
            .message_replies
            .push((request, ReplyState::TimedOut));
        if let Some(r) = self.mail.live.get_mut(&request) {
            r.reply = Some(ReplyState::TimedOut);
        }
        self.out.effects.push(Effect::RequestAnswered(request));
        if !self.swarms.contains_key(&w.swarm)
            || w.requester.is_some_and(|a| !self.agents.contains_key(&a))
        {
            return;
        }
        let spec = MessageSpec {
            kind: Some(MessageKind::Response),
            body: crate::json::Json::from_value(&serde_json::json!({
                "error": error,
                "message": format!("{words}: {request}"),
            })),
            priority: crate::message::MessagePriority::High,
            correlation_id: Some(request),
            ..MessageSpec::default()
        };
        // Its id is derived from the request's (the core makes no ids): a fixed pattern over
        // the low, random bits of a v7 id, which counting test ids do not reach either.
        let id = MessageId(uuid::Uuid::from_u128(request.0.as_u128() ^ 0x5a5a_5a5a));
        let message = self.new_message(
            id,
            w.swarm,
            MessageKind::Response,
            None,
            w.requester,
            &spec,
            now,
        );
        self.deliver_response(message, w.waited, now);
    }

    // ----- restore -----

    /// Puts back, after a restart, the messages not yet acknowledged (a delivered one is
    /// delivered again: its recipient may never have seen it) and the requests waiting for a
    /// response.
    pub(super) fn restore_messages(
        &mut self,
        messages: Vec<Message>,
        awaiting: Vec<Message>,
        now: Timestamp,
    ) {
        for r in awaiting {
            let Some(at) = r.reply_by else { continue };
            if self.mail.awaiting.contains_key(&r.id) {
                continue;
            }
            self.timers.insert(at, Timer::RequestTimeout(r.id));
            self.mail.awaiting.insert(
                r.id,
                Awaiting {
                    swarm: r.swarm_id,
                    requester: r.from,
                    responder: r.to,
                    reply_by: at,
                    // The waiting call did not survive the restart: the inbox it is.
                    waited: false,
                },
            );
        }
        let mut messages = messages;
        messages.sort_by_key(|m| m.seq);
        // A message already in flight here is live state: it stays as it is.
        messages.retain(|m| !self.mail.live.contains_key(&m.id));
        let restored: Vec<MessageId> = messages.iter().map(|m| m.id).collect();
        for mut m in messages {
            self.mail.seq = self.mail.seq.max(m.seq);
            let Some(to) = m.to.filter(|a| self.agents.contains_key(a)) else {
                // Its recipient went while the coordinator was down.
                m.status = MessageStatus::Pending;
                self.mail.live.insert(m.id, m);
                continue;
            };
            if m.status == MessageStatus::Delivered {
                m.status = MessageStatus::Pending;
                m.ack_by = None;
                self.out.messages.push(m.id);
            }
            if let Some(at) = m.expires_at {
                self.timers.insert(at, Timer::MessageExpiry(m.id));
            }
            *self.mail.held.entry(to).or_default() += 1;
            let id = m.id;
            let retry = m.deliver_after;
            self.mail.live.insert(id, m);
            match retry {
                Some(at) if at > now => self.timers.insert(at, Timer::MessageRetry(id)),
                _ => {
                    self.mail.live.get_mut(&id).expect("inserted").deliver_after = None;
                    self.make_ready(id);
                }
            }
        }
        // Messages whose recipient is gone are dead.
        let orphans: Vec<MessageId> = restored
            .into_iter()
            .filter(|id| {
                self.mail
                    .live
                    .get(id)
                    .is_some_and(|m| m.to.is_none_or(|a| !self.agents.contains_key(&a)))
            })
            .collect();
        for id in orphans {
            self.finish_message(
                id,
                MessageStatus::Dead,
                Some("recipient removed".to_owned()),
                now,
            );
        }
    }

    /// Forgets the messages of a released swarm: those in flight, its agents' inboxes, its
    /// requests awaiting a response and the responses kept for operators. Returns the ids of
    /// the messages forgotten, whose timers the caller drops.
    pub(super) fn release_mail(
        &mut self,
        swarm: SwarmId,
        agents: &std::collections::HashSet<AgentId>,
    ) -> std::collections::HashSet<MessageId> {
        let mail = &mut self.mail;
        let mut gone = std::collections::HashSet::new();
        mail.live.retain(|id, m| {
            let keep = m.swarm_id != swarm && m.to.is_none_or(|a| !agents.contains(&a));
            if !keep {
                gone.insert(*id);
            }
            keep
        });
        mail.awaiting.retain(|id, w| {
            let keep = w.swarm != swarm;
            if !keep {
                gone.insert(*id);
            }
            keep
        });
        mail.answers.retain(|id, m| {
            let keep = m.swarm_id != swarm;
            if !keep {
                gone.insert(*id);
            }
            keep
        });
        mail.answer_order.retain(|id| mail.answers.contains_key(id));
        for a in agents {
            mail.inboxes.remove(a);
            mail.held.remove(a);
        }
        gone
    }

    /// Checks the message indexes against the messages; for tests.
    pub(super) fn check_mail(&self) -> Result<(), String> {
        let mut held: HashMap<AgentId, usize> = HashMap::new();
        for m in self.mail.live.values() {
            let Some(to) = m.to else {
                return Err(format!("live message {} has no recipient", m.id));
            };
            *held.entry(to).or_default() += 1;
            let ready = m.status == MessageStatus::Pending && m.deliver_after.is_none();
            let in_inbox = self
                .mail
                .inboxes
                .get(&to)
                .is_some_and(|i| i.contains(&(Reverse(m.priority), m.seq, m.id)));
            if ready != in_inbox {
                return Err(format!(
                    "message {} is {} (retry {:?}) but in its inbox: {in_inbox}",
                    m.id,
                    m.status.as_str(),
                    m.deliver_after
                ));
            }
        }
        if held != self.mail.held {
            return Err("inbox sizes disagree with the messages".to_owned());
        }
        let listed: usize = self.mail.inboxes.values().map(|i| i.len()).sum();
        let ready = self
            .mail
            .live
            .values()
            .filter(|m| m.status == MessageStatus::Pending && m.deliver_after.is_none())
            .count();
        if listed != ready {
            return Err(format!("{listed} messages in inboxes but {ready} ready"));
        }
        Ok(())
    }
}
