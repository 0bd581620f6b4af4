//! NACK on topic subscriptions, as ActiveMQ 5.17 does it: a non-durable subscription's
//! message is dropped (`TopicSubscription` takes the poison ack as an ack), a durable one's
//! persistent message goes to `ActiveMQ.DLQ` (`PrefetchSubscription.sendToDLQ`), a
//! non-persistent one is dropped (`processNonPersistent` is false by default). A NACK is for
//! one message, also in `client` mode.

use std::time::Duration;

use crate::client::{Received, StompClient};

async fn subscribe(c: &mut StompClient, ack: &str, durable: bool) {
    let mut headers = vec![
        ("destination", "/topic/n.t"),
        ("id", "s"),
        ("ack", ack),
        ("receipt", "sub"),
    ];
    if durable {
        headers.push(("activemq.subscriptionName", "nacks"));
    }
    c.send("SUBSCRIBE", &headers, "").await;
    assert_eq!(c.recv().await.header("receipt-id"), Some("sub"));
}

async fn send(env: &crate::Env, body: &str, persistent: bool) {
    let mut p = env.connected(&[]).await;
    let mut headers = vec![("destination", "/topic/n.t"), ("receipt", "r")];
    if persistent {
        headers.push(("persistent", "true"));
    }
    p.send("SEND", &headers, body).await;
    assert_eq!(p.recv().await.header("receipt-id"), Some("r"));
}

async fn answer(c: &mut StompClient, command: &str, m: &Received, receipt: &str) {
    let id = m.header("ack").expect("ack header");
    c.send(command, &[("id", id), ("receipt", receipt)], "")
        .await;
    let f = c.recv().await;
    assert_eq!(f.header("receipt-id"), Some(receipt), "{f:?}");
}

fn dead_letters(env: &crate::Env) -> Vec<(String, Option<String>)> {
    dead_letters_in(env, "ActiveMQ.DLQ")
}

fn dead_letters_in(env: &crate::Env, queue: &str) -> Vec<(String, Option<String>)> {
    env.broker
        .handle
        .core()
        .queues
        .browse(queue, 100)
        .into_iter()
        .map(|d| {
            let original = d.message.v5.as_ref().and_then(|v| {
                v.properties
                    .user_properties
                    .iter()
                    .find(|(k, _)| k == "original-destination")
                    .map(|(_, v)| v.clone())
            });
            (
                String::from_utf8_lossy(&d.message.payload).into_owned(),
                original,
            )
        })
        .collect()
}

#[tokio::test]
async fn nack_on_a_durable_subscription_dead_letters_persistent_messages_only() {
    let env = crate::broker().await;
    let mut c = env.connected(&[("client-id", "app")]).await;
    subscribe(&mut c, "client-individual", true).await;
    send(&env, "kept", true).await;
    send(&env, "not-kept", false).await;
    let kept = c.recv().await;
    let not_kept = c.recv().await;
    answer(&mut c, "NACK", &kept, "n1").await;
    answer(&mut c, "NACK", &not_kept, "n2").await;
    assert_eq!(
        dead_letters(&env),
        vec![("kept".to_string(), Some("/topic/n.t".to_string()))]
    );
    // Neither comes back to the subscription.
    c.send("DISCONNECT", &[("receipt", "bye")], "").await;
    assert_eq!(c.recv().await.header("receipt-id"), Some("bye"));
    let mut c = env.connected(&[("client-id", "app")]).await;
    subscribe(&mut c, "client-individual", true).await;
    assert!(c.recv_within(Duration::from_millis(300)).await.is_none());
    env.broker.shutdown().await;
}

#[tokio::test]
async fn nack_on_a_non_durable_subscription_drops_the_message() {
    let env = crate::broker().await;
    let mut c = env.connected(&[]).await;
    subscribe(&mut c, "client-individual", false).await;
    send(&env, "p", true).await;
    let m = c.recv().await;
    answer(&mut c, "NACK", &m, "n").await;
    assert!(c.recv_within(Duration::from_millis(300)).await.is_none());
    assert_eq!(dead_letters(&env), vec![]);
    env.broker.shutdown().await;
}

#[tokio::test]
async fn nack_in_client_mode_is_for_that_message_only() {
    let env = crate::broker().await;
    let mut c = env.connected(&[("client-id", "app")]).await;
    subscribe(&mut c, "client", true).await;
    send(&env, "m1", true).await;
    send(&env, "m2", true).await;
    let m1 = c.recv().await;
    let m2 = c.recv().await;
    answer(&mut c, "NACK", &m2, "n").await;
    // m1 is still unacknowledged: its ACK is accepted (an ERROR otherwise).
    answer(&mut c, "ACK", &m1, "a").await;
    assert_eq!(
        dead_letters(&env),
        vec![("m2".to_string(), Some("/topic/n.t".to_string()))]
    );
    env.broker.shutdown().await;
}

/// The topic's `policyEntry` dead-letter strategy decides, as for queues: an individual one
/// (with `processNonPersistent`) names the queue after the topic, and nothing goes to
/// `ActiveMQ.DLQ`.
#[tokio::test]
async fn nack_on_a_durable_subscription_follows_the_topics_dead_letter_strategy() {
    let env = crate::broker_with(
        r#"<destinationPolicy><policyMap><policyEntries>
             <policyEntry topic="n.>">
               <deadLetterStrategy>
                 <individualDeadLetterStrategy topicPrefix="DLT." useQueueForTopicMessages="true"
                                               processNonPersistent="true"/>
               </deadLetterStrategy>
             </policyEntry>
           </policyEntries></policyMap></destinationPolicy>"#,
    )
    .await;
    let mut c = env.connected(&[("client-id", "app")]).await;
    subscribe(&mut c, "client-individual", true).await;
    send(&env, "kept", true).await;
    send(&env, "also-kept", false).await;
    let kept = c.recv().await;
    let also = c.recv().await;
    answer(&mut c, "NACK", &kept, "n1").await;
    answer(&mut c, "NACK", &also, "n2").await;
    let expected = |body: &str| (body.to_string(), Some("/topic/n.t".to_string()));
    assert_eq!(
        dead_letters_in(&env, "DLT.n.t"),
        vec![expected("kept"), expected("also-kept")]
    );
    assert!(dead_letters(&env).is_empty());
}
