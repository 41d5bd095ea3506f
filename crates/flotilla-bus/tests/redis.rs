//! What only the Redis backend does: carry messages between buses (coordinator processes),
//! keep one server subscription per name however many local subscribers share it, and ride out
//! an outage. Outages use a private `redis-server` child on its own port, never the machine's
//! server. Skipped without Redis, except under `CI=true` (see `common::skip_or_fail`).

mod common;

use std::time::{Duration, Instant};

use common::{PrivateRedis, eventually, message, next, quiet, raw_connection, unique};
use flotilla_bus::{Bus, BusError, Channel, Delivery, swarm_pattern};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_buses_on_one_redis_see_each_others_messages() {
    let test = "two_buses_on_one_redis_see_each_others_messages";
    let Some(a) = common::redis_bus(test).await else {
        return;
    };
    let Some(b) = common::redis_bus(test).await else {
        return;
    };
    let swarm = unique("two-buses");
    let inbox = Channel::Agent(swarm.clone(), "x".into()).name();
    let mut on_b = b.subscribe(&inbox).await.unwrap();
    let mut on_a = a.subscribe(&swarm_pattern(&swarm)).await.unwrap();

    a.publish(&inbox, b"from a").await.unwrap();
    assert_eq!(
        message(&mut on_b).await,
        (inbox.clone(), b"from a".to_vec())
    );
    // A's own pattern subscription hears it too.
    assert_eq!(
        message(&mut on_a).await,
        (inbox.clone(), b"from a".to_vec())
    );

    let fleet = Channel::Fleet(swarm.clone()).name();
    b.publish(&fleet, b"from b").await.unwrap();
    assert_eq!(message(&mut on_a).await, (fleet, b"from b".to_vec()));
    quiet(&mut on_a).await;
    quiet(&mut on_b).await;
}

/// Asks a server how many clients subscribe to `channel`, and how many pattern subscriptions
/// it has in all.
async fn server_counts(url: &str, channel: &str) -> (i64, i64) {
    let mut raw = raw_connection(url).await;
    let numsub: (String, i64) = redis::cmd("PUBSUB")
        .arg("NUMSUB")
        .arg(channel)
        .query_async(&mut raw)
        .await
        .unwrap();
    let numpat: i64 = redis::cmd("PUBSUB")
        .arg("NUMPAT")
        .query_async(&mut raw)
        .await
        .unwrap();
    (numsub.1, numpat)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_server_holds_one_subscription_per_name_until_the_last_local_subscriber_goes() {
    let test = "the_server_holds_one_subscription_per_name";
    // A private server: PUBSUB NUMPAT counts every client's patterns.
    let Some(server) = PrivateRedis::start(test, &[]) else {
        return;
    };
    let url = server.url();
    let bus = Bus::redis(&url).await.unwrap();
    let swarm = unique("refcount");
    let channel = Channel::Tasks(swarm.clone()).name();
    let pattern = swarm_pattern(&swarm);

    let c1 = bus.subscribe(&channel).await.unwrap();
    let c2 = bus.subscribe(&channel).await.unwrap();
    let p1 = bus.subscribe(&pattern).await.unwrap();
    let p2 = bus.subscribe(&pattern).await.unwrap();
    // subscribe() returned, so the server has confirmed: no waiting needed.
    assert_eq!(server_counts(&url, &channel).await, (1, 1));

    drop(c1);
    drop(p1);
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert_eq!(server_counts(&url, &channel).await, (1, 1));

    drop(c2);
    drop(p2);
    let deadline = Instant::now() + common::PATIENCE;
    while server_counts(&url, &channel).await != (0, 0) {
        assert!(
            Instant::now() < deadline,
            "Redis still holds the subscriptions"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert_eq!(bus.subscriber_count(), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_outage_fails_publishes_fast_then_subscribers_get_a_gap_and_messages_again() {
    let test = "an_outage_fails_publishes_fast";
    let Some(mut server) = PrivateRedis::start(test, &[]) else {
        return;
    };
    let bus = Bus::redis(&server.url()).await.unwrap();
    assert_eq!(bus.describe(), server.url());
    let swarm = unique("outage");
    let inbox = Channel::Agent(swarm.clone(), "a".into()).name();
    let mut exact = bus.subscribe(&inbox).await.unwrap();
    let mut pattern = bus.subscribe(&swarm_pattern(&swarm)).await.unwrap();
    bus.publish(&inbox, b"before").await.unwrap();
    assert_eq!(message(&mut exact).await.1, b"before");
    assert_eq!(message(&mut pattern).await.1, b"before");

    server.kill();

    // Publishing fails, and fast.
    let started = Instant::now();
    let refused = bus.publish(&inbox, b"lost").await;
    let took = started.elapsed();
    assert!(
        matches!(refused, Err(BusError::Unavailable { .. })),
        "{refused:?}"
    );
    assert!(took < Duration::from_millis(1500), "publish took {took:?}");
    assert!(bus.stats().publish_errors >= 1);

    // So does subscribing, once the pump has noticed (it refuses rather than leaves the caller
    // waiting for the whole outage).
    let started = Instant::now();
    let refused = loop {
        match bus.subscribe(&Channel::Fleet(swarm.clone()).name()).await {
            Err(e) => break e,
            Ok(_) => {
                assert!(
                    started.elapsed() < common::PATIENCE,
                    "subscribe kept working"
                );
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        }
    };
    assert!(matches!(refused, BusError::Unavailable { .. }), "{refused}");
    assert!(started.elapsed() < Duration::from_secs(3));
    assert_eq!(
        bus.subscriber_count(),
        2,
        "the refused subscription is gone"
    );

    // Nothing arrives meanwhile, not even the gap: it comes after the reconnect.
    assert_eq!(exact.try_next(), None);
    server.restart();

    assert_eq!(next(&mut exact).await, Delivery::Gap);
    assert_eq!(next(&mut pattern).await, Delivery::Gap);
    assert!(bus.stats().reconnects >= 1);
    assert!(bus.stats().gaps >= 2);

    // The publishing connection reconnects on its own; the first publishes may still fail.
    let started = Instant::now();
    while let Err(e) = bus.publish(&inbox, b"after").await {
        assert!(
            started.elapsed() < common::PATIENCE,
            "publish never recovered: {e}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(
        message(&mut exact).await,
        (inbox.clone(), b"after".to_vec())
    );
    assert_eq!(message(&mut pattern).await, (inbox, b"after".to_vec()));
    quiet(&mut exact).await;
    quiet(&mut pattern).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_password_never_shows_in_descriptions_or_errors() {
    let test = "a_password_never_shows";
    let Some(server) = PrivateRedis::start(test, &["--requirepass", "s3cret-pw"]) else {
        return;
    };
    let url = format!("redis://:s3cret-pw@127.0.0.1:{}", server.port);
    let bus = Bus::connect(&url).await.unwrap();
    assert_eq!(bus.describe(), format!("redis://127.0.0.1:{}", server.port));

    // It works, password and all.
    let channel = Channel::Registry(unique("password")).name();
    let mut subscription = bus.subscribe(&channel).await.unwrap();
    bus.publish(&channel, b"hi").await.unwrap();
    assert_eq!(message(&mut subscription).await.1, b"hi");

    // A wrong password and an unreachable server fail clearly, without the password.
    for url in [
        format!("redis://:wrong-pw@127.0.0.1:{}", server.port),
        format!("redis://:s3cret-pw@127.0.0.1:{}", common::free_port()),
    ] {
        let started = Instant::now();
        let Err(e) = Bus::connect(&url).await else {
            panic!("{url} should fail");
        };
        assert!(matches!(e, BusError::Unavailable { .. }), "{e}");
        assert!(started.elapsed() < Duration::from_secs(3));
        let text = e.to_string();
        assert!(!text.contains("pw"), "{text}");
        assert!(text.contains("redis://127.0.0.1:"), "{text}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dropping_the_last_handle_shuts_the_bus_down() {
    let test = "dropping_the_last_handle_shuts_the_bus_down";
    let Some(bus) = common::redis_bus(test).await else {
        return;
    };
    let channel = Channel::Allocation(unique("drop-bus")).name();
    let mut subscription = bus.subscribe(&channel).await.unwrap();
    let clone = bus.clone();
    drop(bus);
    clone.publish(&channel, b"clone still works").await.unwrap();
    assert_eq!(message(&mut subscription).await.1, b"clone still works");
    drop(clone);
    eventually("nothing more", || subscription.try_next().is_none()).await;
    assert_eq!(
        tokio::time::timeout(common::PATIENCE, subscription.next())
            .await
            .unwrap(),
        None
    );
}
