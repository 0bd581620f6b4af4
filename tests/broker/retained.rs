//! Retained messages: set, replace, clear, wildcard subscribe, retain flag on subscribe vs live,
//! re-sent on every SUBSCRIBE.

use std::time::Duration;

use crate::support::{Client, TestBroker};
use rumqttc::QoS as Q;

#[tokio::test]
async fn set_replace_clear() {
    let broker = TestBroker::default().await;
    let mut publ = Client::connect(broker.addr, "pub").await;
    publ.publish("r/a", Q::AtLeastOnce, true, b"first").await;
    publ.publish("r/a", Q::AtLeastOnce, true, b"second").await;

    let mut sub = Client::connect(broker.addr, "sub1").await;
    sub.subscribe("r/a", Q::AtLeastOnce).await;
    let got = sub.next_publish().await;
    assert_eq!(&got.payload[..], b"second", "replaced");
    assert!(got.retain, "retain=1 when sent because of SUBSCRIBE");
    sub.no_publish_within(Duration::from_millis(200)).await;

    // Live delivery of a retained publish carries retain=0.
    publ.publish("r/a", Q::AtLeastOnce, true, b"third").await;
    let live = sub.next_publish().await;
    assert_eq!(&live.payload[..], b"third");
    assert!(!live.retain, "retain=0 on live delivery");

    // An empty retained payload clears (and is itself delivered live).
    publ.publish("r/a", Q::AtLeastOnce, true, b"").await;
    assert!(sub.next_publish().await.payload.is_empty());
    let mut late = Client::connect(broker.addr, "sub2").await;
    late.subscribe("r/a", Q::AtLeastOnce).await;
    late.no_publish_within(Duration::from_millis(300)).await;
    // Nothing left but the broker's own `$SYS` figures, which `#` does not match.
    assert!(broker.handle.core().retained_matching("#").is_empty());
    broker.shutdown().await;
}

#[tokio::test]
async fn wildcard_subscribe_gets_every_retained_topic() {
    let broker = TestBroker::default().await;
    let mut publ = Client::connect(broker.addr, "pub").await;
    let topics = ["w/a", "w/b/c", "w", "other/x"];
    for t in topics {
        publ.publish(t, Q::AtLeastOnce, true, t.as_bytes()).await;
    }
    let mut sub = Client::connect(broker.addr, "sub").await;
    sub.subscribe("w/#", Q::AtLeastOnce).await;
    let mut got = Vec::new();
    for _ in 0..3 {
        let p = sub.next_publish().await;
        assert!(p.retain);
        got.push(p.topic);
    }
    got.sort();
    assert_eq!(got, vec!["w", "w/a", "w/b/c"]);
    sub.no_publish_within(Duration::from_millis(200)).await;
    broker.shutdown().await;
}

#[tokio::test]
async fn retained_is_resent_on_every_subscribe_at_min_qos() {
    let broker = TestBroker::default().await;
    let mut publ = Client::connect(broker.addr, "pub").await;
    publ.publish("again", Q::ExactlyOnce, true, b"r").await;
    let mut sub = Client::connect(broker.addr, "sub").await;
    sub.subscribe("again", Q::AtLeastOnce).await;
    assert_eq!(sub.next_publish().await.qos, Q::AtLeastOnce);
    sub.subscribe("again", Q::AtMostOnce).await;
    let again = sub.next_publish().await;
    assert!(again.retain);
    assert_eq!(again.qos, Q::AtMostOnce);
    broker.shutdown().await;
}

#[tokio::test]
async fn wide_subscription_gets_every_retained_message_beyond_the_queue_limit() {
    const TOPICS: usize = 1500; // more than the default pending limit of 1000
    let broker = TestBroker::default().await;
    let mut publ = Client::connect(broker.addr, "pub").await;
    for i in 0..TOPICS {
        publ.publish(&format!("many/{i}"), Q::AtMostOnce, true, b"r")
            .await;
    }
    let deadline = tokio::time::Instant::now() + crate::support::STEP;
    // Counted under many/ only: the broker keeps its own $SYS figures retained too.
    while broker.handle.core().retained_matching("many/#").len() < TOPICS {
        assert!(
            tokio::time::Instant::now() < deadline,
            "retained messages not stored"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let mut sub = Client::connect(broker.addr, "sub").await;
    sub.subscribe("many/#", Q::AtLeastOnce).await;
    for _ in 0..TOPICS {
        assert!(sub.next_publish().await.retain);
    }
    assert_eq!(broker.handle.counters().dropped_queue_full, 0);
    broker.shutdown().await;
}
