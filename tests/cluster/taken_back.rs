//! An acknowledged store that its stream takes back after being read (a raft entry truncated
//! when a leader changes, nats-io/nats-server#7545) is stored again once the stream's leader
//! changes, and a store the stream still holds is not. The take-back is made by deleting the
//! message from the stream; the leader change by JetStream's leader step-down API.

use std::time::{Duration, Instant};

use ferromq::protocol::QoS;

use crate::rig::{publish_acked, v3_ok, Rig, FAST};

/// Every (stream, sequence) of the message shards whose stored frame contains `marker`.
async fn copies_of(js: &async_nats::jetstream::Context, marker: &[u8]) -> Vec<(String, u64)> {
    let mut found = Vec::new();
    for k in 0..2 {
        let name = format!("FMQ_MSG_{k}");
        let Ok(mut stream) = js.get_stream(&name).await else {
            continue;
        };
        let Ok(info) = stream.info().await else {
            continue;
        };
        let (first, last) = (info.state.first_sequence, info.state.last_sequence);
        for seq in first.max(1)..=last {
            if let Ok(m) = stream.get_raw_message(seq).await {
                if m.payload.windows(marker.len()).any(|w| w == marker) {
                    found.push((name.clone(), seq));
                }
            }
        }
    }
    found
}

/// Ask `stream`'s leader to step down, retrying while the stream has no leader (20 s bound).
async fn step_down(client: &async_nats::Client, stream: &str) {
    let subject = format!("$JS.API.STREAM.LEADER.STEPDOWN.{stream}");
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let answer = client.request(subject.clone(), "".into()).await;
        let ok = answer
            .as_ref()
            .is_ok_and(|m| String::from_utf8_lossy(&m.payload).contains("\"success\":true"));
        if ok {
            return;
        }
        assert!(Instant::now() < deadline, "step down {stream}: {answer:?}");
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_store_taken_back_by_its_stream_is_stored_again_after_a_leader_change() {
    let Some(rig) = Rig::start(1, FAST).await else {
        return;
    };
    let (mut subscriber, _) = v3_ok(rig.addr(0), "tb-sub", false).await;
    assert_eq!(
        subscriber.subscribe(1, &[("tb/#", QoS::AtLeastOnce)]).await,
        [1]
    );
    let (mut publisher, _) = v3_ok(rig.addr(0), "tb-pub", true).await;
    let taken = b"taken-back-7f3a";
    let kept = b"kept-in-place-91c2";
    assert_eq!(publish_acked(&mut publisher, "tb/a", taken, 1).await, 0);
    assert_eq!(publish_acked(&mut publisher, "tb/b", kept, 2).await, 0);

    let client = async_nats::connect(rig.nats.client_urls())
        .await
        .expect("connect to NATS");
    let js = async_nats::jetstream::new(client.clone());
    // The node's reader reads both back (they become "settling"), then the stream loses one.
    tokio::time::sleep(Duration::from_millis(1_500)).await;
    let stored = copies_of(&js, taken).await;
    assert_eq!(
        stored.len(),
        1,
        "the stored copies of the first message: {stored:?}"
    );
    assert_eq!(copies_of(&js, kept).await.len(), 1);
    let (stream, seq) = stored[0].clone();
    js.get_stream(&stream)
        .await
        .expect("stream")
        .delete_message(seq)
        .await
        .expect("delete the acknowledged message");

    for k in 0..2 {
        step_down(&client, &format!("FMQ_MSG_{k}")).await;
    }
    let deadline = Instant::now() + Duration::from_secs(20);
    let again = loop {
        let copies = copies_of(&js, taken).await;
        if !copies.is_empty() || Instant::now() >= deadline {
            break copies;
        }
        tokio::time::sleep(Duration::from_millis(300)).await;
    };
    assert_eq!(
        again.len(),
        1,
        "the message taken back was not stored again after the leader change"
    );
    assert!(
        again[0].1 > seq,
        "stored again at a new sequence: {again:?}"
    );
    // Both rechecks (1 s and 5 s after the change) are over: the kept one was not doubled.
    tokio::time::sleep(Duration::from_secs(6)).await;
    assert_eq!(
        copies_of(&js, kept).await.len(),
        1,
        "a store its stream still held was stored again"
    );
    assert_eq!(copies_of(&js, taken).await.len(), 1);
}

/// Whether the message at `seq` of `stream` is a held QoS 2 copy (not yet released).
async fn is_held_copy(js: &async_nats::jetstream::Context, stream: &str, seq: u64) -> bool {
    let message = js
        .get_stream(stream)
        .await
        .expect("stream")
        .get_raw_message(seq)
        .await
        .expect("read a stored copy");
    message
        .headers
        .get("Fmq-Q2")
        .is_some_and(|v| v.as_str() == "held")
}

/// Copies of `marker` as (sequence, held), once there are `want` of them (20 s bound).
async fn copies_when(
    js: &async_nats::jetstream::Context,
    marker: &[u8],
    want: impl Fn(&[(u64, bool)]) -> bool,
) -> Vec<(u64, bool)> {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let mut copies = Vec::new();
        for (stream, seq) in copies_of(js, marker).await {
            copies.push((seq, is_held_copy(js, &stream, seq).await));
        }
        if want(&copies) || Instant::now() >= deadline {
            return copies;
        }
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
}

/// A QoS 2 exchange up to its PUBREC (`pubrel`: and through its PUBCOMP).
async fn qos2_exchange(
    client: &mut crate::support::client::RawClient,
    payload: &[u8],
    pubrel: bool,
) {
    use ferromq::protocol::{Ack, Packet};
    client
        .send(crate::rig::publish(
            "tb2/a",
            payload,
            QoS::ExactlyOnce,
            Some(9),
        ))
        .await;
    match client.recv_within(Duration::from_secs(10)).await {
        Some(Packet::PubRec(a)) if a.packet_id == 9 && a.reason == 0 => {}
        other => panic!("expected PUBREC 9, got {other:?}"),
    }
    if !pubrel {
        return;
    }
    client.send(Packet::PubRel(Ack::new(9))).await;
    match client.recv_within(Duration::from_secs(10)).await {
        Some(Packet::PubComp(a)) if a.packet_id == 9 && a.reason == 0 => {}
        other => panic!("expected PUBCOMP 9, got {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_qos2_release_or_held_copy_taken_back_by_its_stream_is_still_delivered() {
    let Some(rig) = Rig::start(1, FAST).await else {
        return;
    };
    let client = async_nats::connect(rig.nats.client_urls())
        .await
        .expect("connect to NATS");
    let js = async_nats::jetstream::new(client.clone());
    let (mut publisher, _) = v3_ok(rig.addr(0), "tb2-pub", false).await;

    // A release acknowledged (PUBCOMP sent) and then taken back: released again on its held
    // copy after the leader change, once.
    let released = b"release-taken-back-5d1e";
    qos2_exchange(&mut publisher, released, true).await;
    let both = copies_when(&js, released, |c| c.len() == 2).await;
    assert!(
        matches!(both.as_slice(), [(_, true), (_, false)]),
        "a held copy, then its release: {both:?}"
    );
    let (stream, release_seq) = copies_of(&js, released)
        .await
        .into_iter()
        .max_by_key(|(_, seq)| *seq)
        .expect("the released copy");
    js.get_stream(&stream)
        .await
        .expect("stream")
        .delete_message(release_seq)
        .await
        .expect("delete the acknowledged release");
    for k in 0..2 {
        step_down(&client, &format!("FMQ_MSG_{k}")).await;
    }
    let again = copies_when(&js, released, |c| c.len() == 2).await;
    assert!(
        matches!(again.as_slice(), [(_, true), (seq, false)] if *seq > release_seq),
        "released again after the leader change: {again:?}"
    );
    // Both rechecks (1 s and 5 s after the change) are over: released once, not twice.
    tokio::time::sleep(Duration::from_secs(6)).await;
    let settled = copies_when(&js, released, |_| true).await;
    assert_eq!(settled, again, "released once");

    // A held copy acknowledged (PUBREC sent) and then taken back before the PUBREL: the
    // PUBREL still releases the message, to a subscriber that was not there at the PUBLISH.
    let held = b"held-taken-back-0c77";
    qos2_exchange(&mut publisher, held, false).await;
    let one = copies_when(&js, held, |c| c.len() == 1).await;
    assert!(matches!(one.as_slice(), [(_, true)]), "held: {one:?}");
    let (stream, held_seq) = copies_of(&js, held).await[0].clone();
    js.get_stream(&stream)
        .await
        .expect("stream")
        .delete_message(held_seq)
        .await
        .expect("delete the acknowledged held copy");
    let (mut subscriber, _) = v3_ok(rig.addr(0), "tb2-sub", true).await;
    assert_eq!(
        subscriber
            .subscribe(1, &[("tb2/#", QoS::AtLeastOnce)])
            .await,
        [1]
    );
    use ferromq::protocol::{Ack, Packet};
    publisher.send(Packet::PubRel(Ack::new(9))).await;
    match publisher.recv_within(Duration::from_secs(10)).await {
        Some(Packet::PubComp(a)) if a.packet_id == 9 && a.reason == 0 => {}
        other => panic!("expected PUBCOMP 9, got {other:?}"),
    }
    let delivered = crate::rig::next_publish(&mut subscriber).await;
    assert_eq!(&delivered.payload[..], held);
    let after = copies_when(&js, held, |c| c.len() == 1).await;
    assert!(
        matches!(after.as_slice(), [(seq, false)] if *seq > held_seq),
        "released: {after:?}"
    );
}
