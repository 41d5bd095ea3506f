//! The message bus's rules in the core: priority order, at-least-once delivery with
//! acknowledgements, redelivery with backoff and the dead-letter list, time to live,
//! request/response with its timeout, topics with wildcards, broadcasts, the topology's say
//! over who talks to whom, and messages surviving a restart.

mod common;

use std::time::Duration;

use common::*;
use flotilla_core::*;

fn harness_with(tweak: impl FnOnce(&mut SwarmConfig)) -> Harness {
    let mut config = SwarmConfig::default();
    tweak(&mut config);
    Harness::with(FleetLimits::default(), config)
}

fn body(text: &str) -> Json {
    Json::from_value(&serde_json::json!({ "text": text }))
}

fn spec(text: &str, priority: MessagePriority) -> MessageSpec {
    MessageSpec {
        body: body(text),
        priority,
        ..MessageSpec::default()
    }
}

trait Mailbox {
    fn send(
        &mut self,
        from: Option<AgentId>,
        to: AgentId,
        spec: MessageSpec,
    ) -> Result<Message, CoreError>;
    fn take_msgs(&mut self, agent: AgentId, max: usize) -> Vec<Message>;
    fn ack(&mut self, agent: AgentId, ids: &[MessageId]) -> Vec<MessageId>;
    fn stored(&self, id: MessageId) -> Message;
}

impl Mailbox for Harness {
    fn send(
        &mut self,
        from: Option<AgentId>,
        to: AgentId,
        spec: MessageSpec,
    ) -> Result<Message, CoreError> {
        let id = MessageId(self.uuid());
        let r = self.fleet.send_message(id, from, to, spec, self.now);
        self.after(r)
    }

    fn take_msgs(&mut self, agent: AgentId, max: usize) -> Vec<Message> {
        let r = self.fleet.take_messages(agent, max, self.now);
        self.after(r).expect("take messages")
    }

    fn ack(&mut self, agent: AgentId, ids: &[MessageId]) -> Vec<MessageId> {
        let r = self.fleet.ack_messages(agent, ids, self.now);
        self.after(r).expect("ack")
    }

    fn stored(&self, id: MessageId) -> Message {
        self.store
            .messages
            .get(&id)
            .cloned()
            .expect("message stored")
    }
}

fn text(m: &Message) -> String {
    m.body.to_value()["text"].as_str().unwrap().to_owned()
}

#[test]
fn an_inbox_hands_out_critical_first_then_in_order() {
    let mut h = Harness::new();
    let a = h.agent("a", &[], 1);
    for (t, p) in [
        ("n1", MessagePriority::Normal),
        ("l1", MessagePriority::Low),
        ("c1", MessagePriority::Critical),
        ("h1", MessagePriority::High),
        ("n2", MessagePriority::Normal),
        ("c2", MessagePriority::Critical),
    ] {
        h.send(None, a, spec(t, p)).unwrap();
    }
    assert!(h.effects.contains(&Effect::WakeInbox(h.swarm_id, a)));
    let got: Vec<String> = h.take_msgs(a, 10).iter().map(text).collect();
    assert_eq!(got, ["c1", "c2", "h1", "n1", "n2", "l1"]);
}

#[test]
fn unacknowledged_messages_come_back_with_backoff_then_die() {
    let mut h = harness_with(|c| {
        c.messaging.ack_timeout = ms(500);
        c.messaging.max_deliveries = 3;
        c.messaging.retry_initial = ms(100);
    });
    let a = h.agent("a", &[], 1);
    let m = h
        .send(None, a, spec("hello", MessagePriority::Normal))
        .unwrap();
    let first = h.take_msgs(a, 1);
    assert_eq!(first[0].deliveries, 1);
    assert_eq!(h.stored(m.id).status, MessageStatus::Delivered);
    assert!(h.take_msgs(a, 1).is_empty(), "delivered, not ready again");
    // Not acknowledged in time: pending again after 100 ms, then 200 ms.
    h.advance(ms(500));
    assert_eq!(h.stored(m.id).status, MessageStatus::Pending);
    assert!(h.take_msgs(a, 1).is_empty(), "waits out the backoff");
    h.advance(ms(100));
    assert_eq!(h.take_msgs(a, 1)[0].deliveries, 2);
    h.advance(ms(500));
    h.advance(ms(200));
    assert_eq!(h.take_msgs(a, 1)[0].deliveries, 3);
    h.advance(ms(500));
    let dead = h.stored(m.id);
    assert_eq!(dead.status, MessageStatus::Dead);
    assert!(dead.dead_reason.unwrap().contains("after 3 deliveries"));
    assert_eq!(h.count(EventKind::MessageDeadLettered), 1);
    assert_eq!(h.fleet.messages_in_flight(), 0);
}

#[test]
fn an_acknowledged_message_is_done_and_a_repeated_ack_is_harmless() {
    let mut h = Harness::new();
    let a = h.agent("a", &[], 1);
    let m = h.send(None, a, spec("x", MessagePriority::Normal)).unwrap();
    let got = h.take_msgs(a, 5);
    assert_eq!(h.ack(a, &[got[0].id]), vec![m.id]);
    assert_eq!(h.stored(m.id).status, MessageStatus::Acked);
    assert!(h.ack(a, &[m.id]).is_empty());
    // Past the ack timeout nothing comes back.
    h.advance(secs(120));
    assert!(h.take_msgs(a, 5).is_empty());
    // A nack gives a taken message back.
    let n = h.send(None, a, spec("y", MessagePriority::Normal)).unwrap();
    h.take_msgs(a, 1);
    let r = h.fleet.nack_messages(a, &[n.id], h.now);
    assert_eq!(h.after(r).unwrap(), vec![n.id]);
    h.advance(secs(1));
    assert_eq!(h.take_msgs(a, 1)[0].id, n.id);
}

#[test]
fn a_message_past_its_time_to_live_is_dead() {
    let mut h = Harness::new();
    let a = h.agent("a", &[], 1);
    let m = h
        .send(
            None,
            a,
            MessageSpec {
                ttl: Some(ms(300)),
                ..spec("soon stale", MessagePriority::Normal)
            },
        )
        .unwrap();
    h.advance(ms(299));
    assert_eq!(h.stored(m.id).status, MessageStatus::Pending);
    h.advance(ms(1));
    let dead = h.stored(m.id);
    assert_eq!(dead.status, MessageStatus::Dead);
    assert_eq!(dead.dead_reason.as_deref(), Some("expired"));
    assert!(h.take_msgs(a, 1).is_empty());
}

#[test]
fn a_request_gets_its_response_or_a_timeout() {
    let mut h = Harness::new();
    let asker = h.agent("asker", &[], 1);
    let answerer = h.agent("answerer", &[], 1);
    let other = h.agent("other", &[], 1);
    let req = h
        .send(
            Some(asker),
            answerer,
            MessageSpec {
                kind: Some(MessageKind::Request),
                timeout: Some(secs(2)),
                ..spec("2+2?", MessagePriority::Normal)
            },
        )
        .unwrap();
    assert_eq!(req.reply, Some(ReplyState::Awaiting));
    let got = h.take_msgs(answerer, 1);
    assert_eq!(got[0].kind, MessageKind::Request);
    let answer = MessageSpec {
        kind: Some(MessageKind::Response),
        correlation_id: Some(req.id),
        ..spec("4", MessagePriority::Normal)
    };
    // Only the request's recipient may answer it.
    let wrong = h.send(Some(other), asker, answer.clone()).unwrap_err();
    assert!(matches!(wrong, CoreError::Forbidden(_)), "{wrong:?}");
    let resp = h.send(Some(answerer), asker, answer.clone()).unwrap();
    assert_eq!(resp.to, Some(asker));
    assert!(h.effects.contains(&Effect::RequestAnswered(req.id)));
    assert_eq!(h.stored(req.id).reply, Some(ReplyState::Answered));
    let back = h.take_msgs(asker, 1);
    assert_eq!(back[0].correlation_id, Some(req.id));
    assert_eq!(text(&back[0]), "4");
    // Answering twice is refused.
    assert!(matches!(
        h.send(Some(answerer), asker, answer).unwrap_err(),
        CoreError::Conflict(_)
    ));

    // No answer in time: the asker gets a timeout response.
    let req2 = h
        .send(
            Some(asker),
            answerer,
            MessageSpec {
                kind: Some(MessageKind::Request),
                timeout: Some(secs(2)),
                ..spec("again?", MessagePriority::Normal)
            },
        )
        .unwrap();
    h.advance(secs(2));
    assert_eq!(h.stored(req2.id).reply, Some(ReplyState::TimedOut));
    let timeout = h.take_msgs(asker, 1);
    assert_eq!(timeout[0].correlation_id, Some(req2.id));
    assert_eq!(timeout[0].body.to_value()["error"], "timeout");
}

#[test]
fn an_operators_request_is_answered_to_the_operator() {
    let mut h = Harness::new();
    let a = h.agent("a", &[], 1);
    // An operator has no inbox: its request must wait for the response on its call.
    let request = MessageSpec {
        kind: Some(MessageKind::Request),
        ..spec("status?", MessagePriority::High)
    };
    let e = h.send(None, a, request.clone()).unwrap_err();
    assert!(
        matches!(&e, CoreError::Invalid(m) if m.contains("wait=true")),
        "{e:?}"
    );
    let req = h
        .send(
            None,
            a,
            MessageSpec {
                waited: true,
                ..request
            },
        )
        .unwrap();
    h.take_msgs(a, 1);
    let resp = h
        .send(
            Some(a),
            a,
            MessageSpec {
                kind: Some(MessageKind::Response),
                correlation_id: Some(req.id),
                ..spec("fine", MessagePriority::Normal)
            },
        )
        .unwrap();
    assert_eq!(resp.to, None);
    assert_eq!(resp.status, MessageStatus::Acked);
    assert_eq!(h.fleet.response_to(req.id).unwrap().id, resp.id);
}

#[test]
fn topics_reach_matching_subscribers_and_wildcards_work() {
    let mut h = Harness::new();
    let all = h.agent("all", &[], 1);
    let tasks = h.agent("tasks", &[], 1);
    let health = h.agent("health", &[], 1);
    let none = h.agent("none", &[], 1);
    for (a, subs) in [
        (all, vec!["*"]),
        (tasks, vec!["tasks.*"]),
        (health, vec!["health"]),
    ] {
        let r = h
            .fleet
            .set_subscriptions(a, subs.into_iter().map(String::from).collect(), h.now);
        h.after(r).unwrap();
    }
    let bad = h.fleet.set_subscriptions(none, vec!["ta*".into()], h.now);
    assert!(matches!(h.refused(bad), CoreError::Invalid(_)));
    let publish = |h: &mut Harness, topic: &str| -> Vec<AgentId> {
        let ids: Vec<MessageId> = (0..10).map(|_| MessageId(h.uuid())).collect();
        let swarm = h.swarm_id;
        let r = h.fleet.publish_message(
            swarm,
            None,
            topic,
            spec(topic, MessagePriority::Normal),
            &mut ids.into_iter(),
            h.now,
        );
        let sent = h.after(r).unwrap();
        let mut to: Vec<AgentId> = sent.messages.iter().filter_map(|m| m.to).collect();
        to.sort();
        to
    };
    let mut expect = vec![all, tasks];
    expect.sort();
    assert_eq!(publish(&mut h, "tasks.created"), expect);
    let mut expect = vec![all, health];
    expect.sort();
    assert_eq!(publish(&mut h, "health"), expect);
    assert_eq!(publish(&mut h, "billing.paid"), vec![all]);
    let got = h.take_msgs(tasks, 5);
    assert_eq!(got[0].kind, MessageKind::Event);
    assert_eq!(got[0].topic.as_deref(), Some("tasks.created"));
    // Subscriptions are stored with the agent.
    h.restart();
    assert_eq!(h.fleet.agent(tasks).unwrap().subscriptions, vec!["tasks.*"]);
}

#[test]
fn the_star_decides_who_may_talk_to_whom() {
    let mut h = Harness::new();
    let boss = h.agent("boss", &[], 1);
    let w1 = h.agent("w1", &[], 1);
    let w2 = h.agent("w2", &[], 1);
    assert!(
        h.send(Some(w1), boss, spec("report", MessagePriority::Normal))
            .is_ok()
    );
    assert!(
        h.send(Some(boss), w2, spec("order", MessagePriority::Normal))
            .is_ok()
    );
    let refused = h
        .send(Some(w1), w2, spec("psst", MessagePriority::Normal))
        .unwrap_err();
    let CoreError::Forbidden(why) = refused else {
        panic!("{refused:?}")
    };
    assert!(
        why.contains("w1") && why.contains("w2") && why.contains("star"),
        "{why}"
    );
    // A worker's broadcast reaches its coordinator only; an operator's reaches everyone.
    let swarm = h.swarm_id;
    let ids: Vec<MessageId> = (0..10).map(|_| MessageId(h.uuid())).collect();
    let r = h.fleet.broadcast_message(
        swarm,
        Some(w1),
        spec("hi all", MessagePriority::Low),
        &mut ids.into_iter(),
        h.now,
    );
    let sent = h.after(r).unwrap();
    assert_eq!(sent.messages.len(), 1);
    assert_eq!(sent.messages[0].to, Some(boss));
    assert_eq!(sent.unreachable, 1);
    let ids: Vec<MessageId> = (0..10).map(|_| MessageId(h.uuid())).collect();
    let r = h.fleet.broadcast_message(
        swarm,
        None,
        spec("attention", MessagePriority::High),
        &mut ids.into_iter(),
        h.now,
    );
    let sent = h.after(r).unwrap();
    assert_eq!(sent.messages.len(), 3);
    assert!(
        sent.messages
            .iter()
            .all(|m| m.kind == MessageKind::Broadcast)
    );
}

#[test]
fn messages_survive_a_restart_and_unacknowledged_ones_are_delivered_again() {
    let mut h = Harness::new();
    let a = h.agent("a", &[], 1);
    let b = h.agent("b", &[], 1);
    let taken = h
        .send(None, a, spec("taken", MessagePriority::Normal))
        .unwrap();
    let waiting = h
        .send(None, a, spec("waiting", MessagePriority::Low))
        .unwrap();
    let acked = h
        .send(None, a, spec("acked", MessagePriority::Critical))
        .unwrap();
    let got = h.take_msgs(a, 2);
    assert_eq!(
        got.iter().map(|m| m.id).collect::<Vec<_>>(),
        vec![acked.id, taken.id]
    );
    h.ack(a, &[acked.id]);
    let req = h
        .send(
            Some(a),
            b,
            MessageSpec {
                kind: Some(MessageKind::Request),
                timeout: Some(secs(10)),
                ..spec("?", MessagePriority::Normal)
            },
        )
        .unwrap();
    h.take_msgs(b, 1);
    h.ack(b, &[req.id]);
    h.restart();
    let again: Vec<MessageId> = h.take_msgs(a, 10).iter().map(|m| m.id).collect();
    assert_eq!(
        again,
        vec![taken.id, waiting.id],
        "redelivered in order, acked one not"
    );
    // The request's timeout survived the restart too.
    h.advance(secs(10));
    let timeout = h.take_msgs(a, 10);
    assert_eq!(timeout.len(), 1);
    assert_eq!(timeout[0].correlation_id, Some(req.id));
}

#[test]
fn removed_recipients_dead_letter_their_messages_which_can_be_retried() {
    let mut h = Harness::new();
    let a = h.agent("a", &[], 1);
    let m = h
        .send(None, a, spec("lost?", MessagePriority::Normal))
        .unwrap();
    h.fleet.unregister_agent(a, h.now).unwrap();
    h.settle();
    let dead = h.stored(m.id);
    assert_eq!(dead.status, MessageStatus::Dead);
    assert_eq!(dead.dead_reason.as_deref(), Some("recipient removed"));
    // Its recipient is gone: retrying is refused with a reason.
    let r = h.fleet.retry_dead_message(dead.clone(), h.now);
    assert!(matches!(h.refused(r), CoreError::Conflict(_)));
    // A dead message of a live agent goes back to its inbox.
    let b = h.agent("b", &[], 1);
    let n = h
        .send(
            None,
            b,
            MessageSpec {
                ttl: Some(ms(10)),
                ..spec("late", MessagePriority::Normal)
            },
        )
        .unwrap();
    h.advance(ms(10));
    let dead = h.stored(n.id);
    assert_eq!(dead.status, MessageStatus::Dead);
    let r = h.fleet.retry_dead_message(dead, h.now);
    h.after(r).unwrap();
    assert_eq!(h.take_msgs(b, 1)[0].id, n.id);
}

#[test]
fn a_full_inbox_refuses_and_clearing_empties_it() {
    let mut h = harness_with(|c| c.messaging.max_inbox = 3);
    let a = h.agent("a", &[], 1);
    for i in 0..3 {
        h.send(None, a, spec(&i.to_string(), MessagePriority::Normal))
            .unwrap();
    }
    let full = h
        .send(None, a, spec("3", MessagePriority::Normal))
        .unwrap_err();
    assert!(
        matches!(&full, CoreError::Conflict(m) if m.contains("inbox")),
        "{full:?}"
    );
    h.take_msgs(a, 1);
    let r = h.fleet.clear_inbox(a, h.now);
    assert_eq!(
        h.after(r).unwrap(),
        2,
        "the taken one stays until acknowledged"
    );
    assert_eq!(h.fleet.ready_messages(a), 0);
    assert!(h.send(None, a, spec("4", MessagePriority::Normal)).is_ok());
}

#[test]
fn bad_messages_are_refused() {
    let mut h = Harness::new();
    let a = h.agent("a", &[], 1);
    let e = h
        .send(
            None,
            a,
            MessageSpec {
                topic: Some("bad topic".into()),
                ..MessageSpec::default()
            },
        )
        .unwrap_err();
    assert!(matches!(e, CoreError::Invalid(_)));
    let e = h
        .send(
            None,
            a,
            MessageSpec {
                kind: Some(MessageKind::Response),
                ..MessageSpec::default()
            },
        )
        .unwrap_err();
    assert!(
        matches!(&e, CoreError::Invalid(m) if m.contains("correlation_id")),
        "{e:?}"
    );
    let big = Json::from_value(&"x".repeat(2 * 1024 * 1024));
    let e = h
        .send(
            None,
            a,
            MessageSpec {
                body: big,
                ..MessageSpec::default()
            },
        )
        .unwrap_err();
    assert!(matches!(e, CoreError::TooLarge(_)));
    let _ = Duration::ZERO;
}
