//! A session being handed over is not "this node's" for a CONNECT on the same node: after a
//! kick took it out of the broker, and while its last record write still waits for the
//! session bucket (here: the bucket's leader paused, so the write waits `storeTimeout`),
//! the same client connecting to that node must not get a new, empty session (CONNACK
//! session present 0, its unacknowledged message gone). It is refused, or resumed from the
//! record.

use std::time::Duration;

use ferromq::protocol::QoS;

use super::chaos::rig::faults::make_leader;
use super::rig::{next_publish, publish_acked, v3, v3_ok, Rig, FAST};

/// How many times the race is set up: whether the CONNECT's record read reaches a replica
/// that answers (then the race is run) or the paused leader (then it is refused) is NATS's
/// choice, about one time in three here; each attempt checks the outcome either way.
const ATTEMPTS: usize = 5;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_session_being_handed_over_is_not_attached_empty_on_its_node() {
    let Some(mut rig) = Rig::start(0, FAST).await else {
        return;
    };
    // A on server 0; the session bucket led by server 2.
    let a = rig.node_on("node-a", 0, FAST);
    let a_addr = a.mqtt_addr();
    rig.nodes.push(a);
    let admin = async_nats::connect(rig.nats.server(0).client_url())
        .await
        .expect("admin connection");
    let leader = rig.nats.server(2).name.clone();
    let kick = format!(
        "fmq.node.{}.kick",
        ferromq::cluster::subject::topic_subject("n", "node-a")
    );
    for attempt in 0..ATTEMPTS {
        make_leader(&admin, "KV_FMQ_SESS", &leader)
            .await
            .expect("session bucket led by server 2");
        let id = format!("ho-client-{attempt}");
        // The session lives on A, its client connected, one message delivered and not
        // acknowledged yet.
        let (mut client, _) = v3_ok(a_addr, &id, false).await;
        assert_eq!(
            client.subscribe(1, &[("ho/#", QoS::AtLeastOnce)]).await,
            [1]
        );
        let (mut publisher, _) = v3_ok(a_addr, "ho-pub", true).await;
        let payload = format!("kept-{attempt}");
        assert_eq!(
            publish_acked(&mut publisher, "ho/x", payload.as_bytes(), 1).await,
            0
        );
        assert_eq!(
            &next_publish(&mut client).await.payload[..],
            payload.as_bytes()
        );

        // The bucket's leader stops answering: record writes wait.
        rig.nats.pause(2);
        // Another node's claim kicks A (sent here as that node sends it), which closes the
        // client's connection, takes the session out of its broker and waits on its last
        // record write; the client comes straight back to A.
        let (kicker, subject, body) = (admin.clone(), kick.clone(), id.clone());
        let kicked = tokio::spawn(async move { kicker.request(subject, body.into()).await });
        client.expect_closed().await;
        let (_, ack) = v3(a_addr, &id, false).await;
        assert!(
            ack.reason != ferromq::protocol::ConnectReason::Success || ack.session_present,
            "attempt {attempt}: a CONNECT on the node handing the session over got a new \
             empty session: {ack:?}"
        );
        let _ = kicked.await;
        rig.nats.resume(2);

        // Once the bucket answers again, the session resumes, the message re-sent.
        let deadline = std::time::Instant::now() + Duration::from_secs(30);
        let mut resumed = loop {
            let (client, ack) = v3(a_addr, &id, false).await;
            if ack.reason == ferromq::protocol::ConnectReason::Success {
                assert!(ack.session_present, "resumed without its session: {ack:?}");
                break client;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "not resumed within 30 s: {ack:?}"
            );
            tokio::time::sleep(Duration::from_millis(500)).await;
        };
        let message = next_publish(&mut resumed).await;
        assert_eq!(
            (&message.payload[..], message.dup),
            (payload.as_bytes(), true)
        );
    }
}
