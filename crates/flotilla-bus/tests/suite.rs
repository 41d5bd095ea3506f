//! One behaviour suite, run against both backends: the in-process bus and the Redis bus on the
//! shared server (127.0.0.1:6379 or `FLOTILLA_TEST_REDIS_URL`). Each behaviour is a function
//! taking a bus and a swarm id no other test uses; `both_backends!` makes a test of it per
//! backend. Redis tests skip without Redis, except under `CI=true` (see `common::skip_or_fail`).

mod common;

use std::time::Duration;

use common::{eventually, message, next, quiet, unique};
use flotilla_bus::{Bus, BusError, Channel, Delivery, SUBSCRIBER_BUFFER, swarm_pattern};
use futures_util::future::join_all;

macro_rules! both_backends {
    ($($behaviour:ident),* $(,)?) => {
        mod memory {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $behaviour() {
                    let bus = flotilla_bus::Bus::memory();
                    super::$behaviour(&bus, &super::common::unique(stringify!($behaviour))).await;
                }
            )*
        }
        mod redis {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $behaviour() {
                    let test = concat!("redis::", stringify!($behaviour));
                    let Some(bus) = super::common::redis_bus(test).await else { return };
                    super::$behaviour(&bus, &super::common::unique(stringify!($behaviour))).await;
                }
            )*
        }
    };
}

both_backends!(
    exact_channel_delivers_only_its_own_messages,
    pattern_delivers_the_swarms_channels_only,
    one_publishers_order_is_kept,
    every_subscriber_gets_its_own_copy,
    dropping_a_subscription_unsubscribes,
    a_lagging_subscriber_gets_a_gap_then_live_messages,
    overlapping_subscriptions_deliver_once_per_subscription,
    a_thousand_agents_each_get_exactly_their_own_message,
    shutdown_ends_subscriptions_and_refuses_use,
    unsupported_names_are_refused,
);

fn agent(swarm: &str, agent: &str) -> String {
    Channel::Agent(swarm.into(), agent.into()).name()
}

async fn exact_channel_delivers_only_its_own_messages(bus: &Bus, swarm: &str) {
    let (mine, other) = (agent(swarm, "a"), agent(swarm, "b"));
    let mut subscription = bus.subscribe(&mine).await.unwrap();
    bus.publish(&other, b"for b").await.unwrap();
    bus.publish(&mine, b"for a").await.unwrap();
    assert_eq!(message(&mut subscription).await, (mine, b"for a".to_vec()));
    quiet(&mut subscription).await;
}

async fn pattern_delivers_the_swarms_channels_only(bus: &Bus, swarm: &str) {
    let other_swarm = format!("{swarm}-2");
    let mut subscription = bus.subscribe(&swarm_pattern(swarm)).await.unwrap();
    assert_eq!(subscription.pattern(), format!("swarm:{swarm}:*"));
    let fleet = Channel::Fleet(swarm.into()).name();
    bus.publish(&Channel::Fleet(other_swarm.clone()).name(), b"s2")
        .await
        .unwrap();
    bus.publish(&agent(&other_swarm, "a"), b"s2").await.unwrap();
    bus.publish(&agent(swarm, "a"), b"agent").await.unwrap();
    bus.publish(&fleet, b"fleet").await.unwrap();
    assert_eq!(
        message(&mut subscription).await,
        (agent(swarm, "a"), b"agent".to_vec())
    );
    assert_eq!(message(&mut subscription).await, (fleet, b"fleet".to_vec()));
    quiet(&mut subscription).await;
}

async fn one_publishers_order_is_kept(bus: &Bus, swarm: &str) {
    let channel = Channel::Tasks(swarm.into()).name();
    let mut subscription = bus.subscribe(&channel).await.unwrap();
    let count = 500u32;
    for i in 0..count {
        bus.publish(&channel, &i.to_le_bytes()).await.unwrap();
    }
    for i in 0..count {
        let (_, payload) = message(&mut subscription).await;
        assert_eq!(payload, i.to_le_bytes(), "message {i} out of order");
    }
    quiet(&mut subscription).await;
}

async fn every_subscriber_gets_its_own_copy(bus: &Bus, swarm: &str) {
    let channel = Channel::Messages(swarm.into()).name();
    let mut subscriptions = Vec::new();
    for _ in 0..3 {
        subscriptions.push(bus.subscribe(&channel).await.unwrap());
    }
    let before = bus.stats();
    bus.publish(&channel, b"one").await.unwrap();
    bus.publish(&channel, b"two").await.unwrap();
    for subscription in &mut subscriptions {
        assert_eq!(message(subscription).await.1, b"one");
        assert_eq!(message(subscription).await.1, b"two");
        quiet(subscription).await;
    }
    let after = bus.stats();
    assert_eq!(after.published - before.published, 2);
    assert_eq!(after.delivered - before.delivered, 6);
}

async fn dropping_a_subscription_unsubscribes(bus: &Bus, swarm: &str) {
    let channel = Channel::Health(swarm.into()).name();
    assert_eq!(bus.subscriber_count(), 0);
    let first = bus.subscribe(&channel).await.unwrap();
    let mut second = bus.subscribe(&channel).await.unwrap();
    let pattern = bus.subscribe(&swarm_pattern(swarm)).await.unwrap();
    assert_eq!(bus.subscriber_count(), 3);

    drop(first);
    assert_eq!(bus.subscriber_count(), 2);
    bus.publish(&channel, b"still here").await.unwrap();
    assert_eq!(message(&mut second).await.1, b"still here");

    drop(second);
    drop(pattern);
    assert_eq!(bus.subscriber_count(), 0);
    let delivered = bus.stats().delivered;
    bus.publish(&channel, b"nobody listens").await.unwrap();
    // Give a Redis round trip the time to bring the message back if anything still listened.
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert_eq!(bus.stats().delivered, delivered);
}

async fn a_lagging_subscriber_gets_a_gap_then_live_messages(bus: &Bus, swarm: &str) {
    let channel = Channel::Results(swarm.into()).name();
    let mut slow = bus.subscribe(&channel).await.unwrap();
    let sent = SUBSCRIBER_BUFFER as u32 + 100;
    for i in 0..sent {
        bus.publish(&channel, &i.to_le_bytes()).await.unwrap();
    }
    // With Redis the messages come back asynchronously: wait until all were either queued or
    // dropped.
    eventually("every copy queued or dropped", || {
        let stats = bus.stats();
        stats.delivered + stats.dropped == u64::from(sent)
    })
    .await;
    let stats = bus.stats();
    assert_eq!(stats.dropped, 100);
    assert_eq!(stats.gaps, 1);

    // What fitted comes first, in order, then the gap where the losses were.
    for i in 0..SUBSCRIBER_BUFFER as u32 {
        assert_eq!(message(&mut slow).await.1, i.to_le_bytes());
    }
    assert_eq!(next(&mut slow).await, Delivery::Gap);
    assert_eq!(slow.try_next(), None);

    // Then it is live again.
    bus.publish(&channel, b"after").await.unwrap();
    assert_eq!(message(&mut slow).await.1, b"after");
    quiet(&mut slow).await;
}

async fn overlapping_subscriptions_deliver_once_per_subscription(bus: &Bus, swarm: &str) {
    let channel = Channel::Fleet(swarm.into()).name();
    let mut subscriptions = vec![
        bus.subscribe(&channel).await.unwrap(),
        bus.subscribe(&channel).await.unwrap(),
        bus.subscribe(&swarm_pattern(swarm)).await.unwrap(),
        bus.subscribe(&swarm_pattern(swarm)).await.unwrap(),
        bus.subscribe(&format!("swarm:{swarm}:f*")).await.unwrap(),
        // Leading star; the swarm id keeps other tests' channels (on a shared Redis) out.
        bus.subscribe(&format!("*:{swarm}:fleet")).await.unwrap(),
    ];
    bus.publish(&channel, b"one").await.unwrap();
    bus.publish(&channel, b"two").await.unwrap();
    for subscription in &mut subscriptions {
        // A duplicate of "one" would show up here instead of "two".
        assert_eq!(
            message(subscription).await,
            (channel.clone(), b"one".to_vec())
        );
        assert_eq!(
            message(subscription).await,
            (channel.clone(), b"two".to_vec())
        );
    }
    for subscription in &mut subscriptions {
        quiet(subscription).await;
    }
}

async fn a_thousand_agents_each_get_exactly_their_own_message(bus: &Bus, swarm: &str) {
    const AGENTS: usize = 1_000;
    let names: Vec<String> = (0..AGENTS).map(|i| agent(swarm, &i.to_string())).collect();
    // Subscribed concurrently, as a thousand long polls would.
    let mut subscriptions: Vec<_> = join_all(names.iter().map(|name| bus.subscribe(name)))
        .await
        .into_iter()
        .collect::<Result<_, _>>()
        .unwrap();
    assert_eq!(bus.subscriber_count(), AGENTS);
    let before = bus.stats();
    for (i, name) in names.iter().enumerate() {
        bus.publish(name, i.to_string().as_bytes()).await.unwrap();
    }
    for (i, subscription) in subscriptions.iter_mut().enumerate() {
        assert_eq!(
            message(subscription).await,
            (names[i].clone(), i.to_string().into_bytes())
        );
    }
    tokio::time::sleep(common::QUIET).await;
    for subscription in &mut subscriptions {
        assert_eq!(subscription.try_next(), None, "{subscription:?}");
    }
    assert_eq!(bus.stats().delivered - before.delivered, AGENTS as u64);
    drop(subscriptions);
    assert_eq!(bus.subscriber_count(), 0);
}

async fn shutdown_ends_subscriptions_and_refuses_use(bus: &Bus, swarm: &str) {
    let channel = Channel::Scaling(swarm.into()).name();
    let mut subscription = bus.subscribe(&channel).await.unwrap();
    bus.publish(&channel, b"before").await.unwrap();
    // Wait for the message to be queued, then shut down: what was queued is still handed out.
    eventually("the message queued", || bus.stats().delivered == 1).await;
    bus.clone().shutdown();
    assert_eq!(message(&mut subscription).await.1, b"before");
    assert_eq!(
        tokio::time::timeout(common::PATIENCE, subscription.next())
            .await
            .unwrap(),
        None
    );
    assert_eq!(bus.publish(&channel, b"after").await, Err(BusError::Closed));
    assert_eq!(
        bus.subscribe(&channel).await.map(|_| ()),
        Err(BusError::Closed)
    );
    assert_eq!(bus.subscriber_count(), 0);
}

async fn unsupported_names_are_refused(bus: &Bus, swarm: &str) {
    for pattern in [
        "",
        &format!("swarm:{swarm}:?"),
        &format!("swarm:[{swarm}]:*"),
        "a\\*",
    ] {
        let refused = bus.subscribe(pattern).await.map(|_| ());
        assert!(
            matches!(refused, Err(BusError::InvalidPattern { .. })),
            "{pattern:?}: {refused:?}"
        );
    }
    for channel in ["", "swarm:*:fleet", "swarm:?:fleet"] {
        let refused = bus.publish(channel, b"x").await;
        assert!(
            matches!(refused, Err(BusError::InvalidChannel { .. })),
            "{channel:?}: {refused:?}"
        );
    }
    assert_eq!(bus.subscriber_count(), 0);
    assert_eq!(bus.stats().published, 0);
}

/// Not a behaviour of a running bus: what `connect` accepts.
#[tokio::test]
async fn connect_accepts_memory_and_redis_urls_only() {
    let bus = Bus::connect("memory").await.unwrap();
    assert_eq!(bus.describe(), "in-process");
    for url in ["", "http://user:secret@example.com", "redis", "memory://"] {
        match Bus::connect(url).await {
            Err(BusError::InvalidUrl(message)) => {
                assert!(message.contains("\"memory\""), "{message}");
                assert!(message.contains("redis://host:port"), "{message}");
                assert!(!message.contains("secret"), "{message}");
            }
            other => panic!("{url:?}: {other:?}"),
        }
    }
    let _ = unique("unused"); // keep the helper used in every build of this binary
}
