//! A QoS 0 message published on another node right after a subscriber's SUBACK must reach
//! it, as on one broker (MQTT 5 3.8.4: the subscription is in place once acknowledged); one
//! published on the subscriber's own node reaches it once, in order.

use std::time::Duration;

use ferromq::protocol::QoS;

use super::rig::{next_publish, next_publish_within, no_publish, publish, v5_ok, Rig, FAST};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_qos0_message_right_after_the_suback_reaches_a_subscriber_on_another_node() {
    let Some(rig) = Rig::start(2, FAST).await else {
        return;
    };
    let (mut publisher, _) = v5_ok(rig.addr(0), "li-pub", true, None).await;
    let mut missed = Vec::new();
    for i in 0..20 {
        let topic = format!("li/{i}");
        let (mut sub, _) = v5_ok(rig.addr(1), &format!("li-sub-{i}"), true, None).await;
        sub.subscribe(1, &[(&topic, QoS::AtMostOnce)]).await;
        publisher
            .send(publish(&topic, b"x", QoS::AtMostOnce, None))
            .await;
        if next_publish_within(&mut sub, Duration::from_secs(1))
            .await
            .is_none()
        {
            missed.push(i);
        }
    }
    assert!(missed.is_empty(), "missed after SUBACK: {missed:?}");
}

/// A retained message acknowledged on node 0 is there for a subscription made on node 1 right
/// after the PUBACK (each node's retained index follows the bucket through a watch).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_retained_message_is_there_right_after_its_puback_on_another_node() {
    let Some(rig) = Rig::start(2, FAST).await else {
        return;
    };
    let (mut publisher, _) = v5_ok(rig.addr(0), "rr-pub", true, None).await;
    let mut missed = Vec::new();
    for i in 0..20u16 {
        let topic = format!("rr/{i}");
        publisher
            .send(super::rig::retained(
                &topic,
                b"r",
                QoS::AtLeastOnce,
                Some(i + 1),
            ))
            .await;
        assert_eq!(super::rig::puback_of(&mut publisher, i + 1).await, 0);
        let (mut sub, _) = v5_ok(rig.addr(1), &format!("rr-sub-{i}"), true, None).await;
        sub.subscribe(1, &[(&topic, QoS::AtLeastOnce)]).await;
        if next_publish_within(&mut sub, Duration::from_secs(1))
            .await
            .is_none()
        {
            missed.push(i);
        }
    }
    assert!(
        missed.is_empty(),
        "retained missing right after the PUBACK: {missed:?}"
    );
}

/// A node delivers its own QoS 0 messages to its sessions at their publish and skips the copy
/// NATS echoes back: a subscriber on the publisher's node gets each message once, in order,
/// and one on another node gets them too.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_qos0_message_reaches_a_subscriber_on_its_own_node_once_and_in_order() {
    let Some(rig) = Rig::start(2, FAST).await else {
        return;
    };
    let (mut local, _) = v5_ok(rig.addr(0), "li-local", true, None).await;
    local.subscribe(1, &[("li/own/#", QoS::AtLeastOnce)]).await;
    let (mut remote, _) = v5_ok(rig.addr(1), "li-remote", true, None).await;
    remote.subscribe(1, &[("li/own/#", QoS::AtMostOnce)]).await;
    let (mut publisher, _) = v5_ok(rig.addr(0), "li-own-pub", true, None).await;
    const COUNT: u32 = 200;
    for i in 0..COUNT {
        publisher
            .send(publish("li/own/t", &i.to_be_bytes(), QoS::AtMostOnce, None))
            .await;
    }
    for (name, subscriber) in [("local", &mut local), ("remote", &mut remote)] {
        for i in 0..COUNT {
            let got = next_publish(subscriber).await;
            assert_eq!(
                got.qos,
                QoS::AtMostOnce,
                "{name}: granted QoS 1, published 0"
            );
            assert_eq!(&got.payload[..], &i.to_be_bytes(), "{name}: message {i}");
        }
        no_publish(subscriber, Duration::from_millis(500)).await;
    }
}
