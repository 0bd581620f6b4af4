//! The configured dead-letter and redelivery policy seen by STOMP clients on queues: a NACK
//! goes to the strategy's dead-letter queue (the shared `ActiveMQ.DLQ`, an individual
//! strategy's `ActiveMQ.DLQ.Queue.<name>`), `processNonPersistent`, the `redeliveryPlugin`'s
//! delays with `redelivered:true` and the dead-letter queue past `maximumRedeliveries`, and a
//! reload that changes the strategy for the next NACK; where dead letters go compared with
//! Apache ActiveMQ 5.17 itself. Raw frames (the test client's own
//! parser), one producer and one consumer connection each.

use std::time::{Duration, Instant};

use crate::client::{Received, StompClient};
use crate::support::live::LiveBroker;
use crate::support::BrokerXml;

/// Nothing more is expected within this (a dead letter that should not exist).
const QUIET: Duration = Duration::from_millis(300);

async fn connected(addr: std::net::SocketAddr) -> StompClient {
    let mut c = StompClient::tcp(addr).await;
    c.connect(&[]).await;
    c
}

/// Send `frame` with a receipt and wait for it (nothing else may come first).
async fn receipted(c: &mut StompClient, command: &str, headers: &[(&str, &str)], body: &str) {
    let receipt = format!("{command}-{body}-{}", headers.len());
    let mut all = headers.to_vec();
    all.push(("receipt", &receipt));
    c.send(command, &all, body).await;
    let f = c.recv().await;
    assert_eq!(
        (f.command.as_str(), f.header("receipt-id")),
        ("RECEIPT", Some(receipt.as_str())),
        "{f:?}"
    );
}

async fn subscribe(c: &mut StompClient, destination: &str, id: &str) {
    receipted(
        c,
        "SUBSCRIBE",
        &[
            ("destination", destination),
            ("id", id),
            ("ack", "client-individual"),
        ],
        "",
    )
    .await;
}

async fn message(c: &mut StompClient) -> Received {
    let f = c.recv().await;
    assert_eq!(f.command, "MESSAGE", "{f:?}");
    f
}

async fn nack(c: &mut StompClient, m: &Received) {
    let ack = m.header("ack").expect("an ack header (client-individual)");
    receipted(c, "NACK", &[("id", ack)], "").await;
}

/// Send `body` to `queue` (persistent unless `persistent` is false), have it delivered to a
/// fresh consumer and NACKed.
async fn refuse(addr: std::net::SocketAddr, queue: &str, body: &str, persistent: bool) {
    let mut consumer = connected(addr).await;
    subscribe(&mut consumer, queue, "refuser").await;
    let mut producer = connected(addr).await;
    let persistent = if persistent { "true" } else { "false" };
    receipted(
        &mut producer,
        "SEND",
        &[("destination", queue), ("persistent", persistent)],
        body,
    )
    .await;
    let m = message(&mut consumer).await;
    assert_eq!(m.body_text(), body);
    nack(&mut consumer, &m).await;
}

/// The one message waiting in `queue` (its body), and nothing after it.
async fn only_message_in(addr: std::net::SocketAddr, queue: &str) -> Received {
    let mut c = connected(addr).await;
    subscribe(&mut c, queue, "reader").await;
    let m = message(&mut c).await;
    assert_eq!(m.header("destination"), Some(queue));
    assert!(c.recv_within(QUIET).await.is_none(), "one message only");
    m
}

async fn empty(addr: std::net::SocketAddr, queue: &str) -> bool {
    let mut c = connected(addr).await;
    subscribe(&mut c, queue, "reader").await;
    c.recv_within(QUIET).await.is_none()
}

fn policy_entries(entries: &str) -> String {
    format!(
        "<destinationPolicy><policyMap><policyEntries>{entries}</policyEntries></policyMap>\
         </destinationPolicy>"
    )
}

#[tokio::test]
async fn the_individual_strategy_dead_letters_to_activemqs_per_queue_name() {
    let env = crate::broker_with(&policy_entries(
        "<policyEntry queue=\"orders.>\"><deadLetterStrategy>\
         <individualDeadLetterStrategy/></deadLetterStrategy></policyEntry>",
    ))
    .await;
    let addr = env.addr("stomp");
    refuse(addr, "/queue/orders.eu", "poison", true).await;
    let dead = only_message_in(addr, "/queue/ActiveMQ.DLQ.Queue.orders.eu").await;
    assert_eq!(dead.body_text(), "poison");
    assert_eq!(
        dead.header("original-destination"),
        Some("/queue/orders.eu")
    );
    assert_eq!(dead.header("persistent"), Some("true"));
    assert!(
        empty(addr, "/queue/ActiveMQ.DLQ").await,
        "not the shared one"
    );
    // A queue no entry matches keeps the shared default.
    refuse(addr, "/queue/other", "plain", true).await;
    assert_eq!(
        only_message_in(addr, "/queue/ActiveMQ.DLQ")
            .await
            .body_text(),
        "plain"
    );
}

#[tokio::test]
async fn process_non_persistent_dead_letters_non_persistent_messages() {
    let env = crate::broker_with(&policy_entries(
        "<policyEntry queue=\">\"><deadLetterStrategy>\
         <sharedDeadLetterStrategy processNonPersistent=\"true\"/></deadLetterStrategy>\
         </policyEntry>",
    ))
    .await;
    let addr = env.addr("stomp");
    refuse(addr, "/queue/events", "volatile", false).await;
    let dead = only_message_in(addr, "/queue/ActiveMQ.DLQ").await;
    assert_eq!(dead.body_text(), "volatile");
    // Made persistent, as ActiveMQ makes every dead letter.
    assert_eq!(dead.header("persistent"), Some("true"));
    assert_eq!(dead.header("originalDeliveryMode"), Some("NON_PERSISTENT"));
}

#[tokio::test]
async fn the_redelivery_plugin_redelivers_after_its_delays_then_dead_letters() {
    // 150 ms, then x2 back-off (300 ms); two redeliveries, then ActiveMQ.DLQ.
    let plugin = "<plugins><redeliveryPlugin><redeliveryPolicyMap><redeliveryPolicyMap>\
         <redeliveryPolicyEntries><redeliveryPolicy queue=\"retry.>\" maximumRedeliveries=\"2\" \
         initialRedeliveryDelay=\"150\" redeliveryDelay=\"150\" useExponentialBackOff=\"true\" \
         backOffMultiplier=\"2\"/></redeliveryPolicyEntries>\
         </redeliveryPolicyMap></redeliveryPolicyMap></redeliveryPlugin></plugins>";
    let env = crate::broker_with(plugin).await;
    let addr = env.addr("stomp");
    let mut consumer = connected(addr).await;
    subscribe(&mut consumer, "/queue/retry.a", "1").await;
    let mut producer = connected(addr).await;
    receipted(
        &mut producer,
        "SEND",
        &[("destination", "/queue/retry.a"), ("persistent", "true")],
        "flaky",
    )
    .await;
    let mut m = message(&mut consumer).await;
    assert_eq!(m.header("redelivered"), None, "a first delivery: {m:?}");
    for delay in [150, 300] {
        let refused_at = Instant::now();
        nack(&mut consumer, &m).await;
        m = message(&mut consumer).await;
        let waited = refused_at.elapsed();
        assert!(
            waited >= Duration::from_millis(delay),
            "redelivered after {waited:?}, before {delay} ms"
        );
        assert_eq!(
            (m.body_text().as_str(), m.header("redelivered")),
            ("flaky", Some("true"))
        );
    }
    nack(&mut consumer, &m).await;
    assert!(
        consumer
            .recv_within(Duration::from_millis(600))
            .await
            .is_none(),
        "maximumRedeliveries reached: not redelivered again"
    );
    let dead = only_message_in(addr, "/queue/ActiveMQ.DLQ").await;
    assert_eq!(dead.body_text(), "flaky");
    let cause = dead.header("dlqDeliveryFailureCause").unwrap_or_default();
    assert!(cause.starts_with("Delivery[3]"), "{cause}");
}

fn live_xml(children: &str) -> String {
    BrokerXml::new()
        .name("dead-letters")
        .child(children)
        .connector("stomp", "stomp://127.0.0.1:0")
        .build()
}

#[tokio::test]
async fn a_reload_changes_the_strategy_for_the_next_nack() {
    let mut live = LiveBroker::start(&live_xml(""), true).await;
    let addr = live.addr("stomp").await.expect("stomp listening");
    refuse(addr, "/queue/orders", "before", true).await;
    assert_eq!(
        only_message_in(addr, "/queue/ActiveMQ.DLQ")
            .await
            .body_text(),
        "before"
    );

    let individual = policy_entries(
        "<policyEntry queue=\">\"><deadLetterStrategy>\
         <individualDeadLetterStrategy queuePrefix=\"DEAD.\"/></deadLetterStrategy></policyEntry>",
    );
    let stats = live.edit(&live_xml(&individual)).await;
    assert_eq!(
        (stats.reloads_ok, stats.reloads_failed),
        (1, 0),
        "{stats:?}"
    );
    let addr = live.addr("stomp").await.expect("stomp still listening");
    refuse(addr, "/queue/orders", "after", true).await;
    assert_eq!(
        only_message_in(addr, "/queue/DEAD.orders")
            .await
            .body_text(),
        "after"
    );
    assert_eq!(
        only_message_in(addr, "/queue/ActiveMQ.DLQ")
            .await
            .body_text(),
        "before",
        "the earlier dead letter stays where it went"
    );

    let discarding = policy_entries(
        "<policyEntry queue=\">\"><deadLetterStrategy><discarding/></deadLetterStrategy>\
         </policyEntry>",
    );
    let stats = live.edit(&live_xml(&discarding)).await;
    assert_eq!(stats.reloads_ok, 2, "{stats:?}");
    refuse(addr, "/queue/orders", "dropped", true).await;
    assert!(empty(addr, "/queue/orders").await, "not redelivered");
    for (queue, only) in [
        ("/queue/DEAD.orders", "after"),
        ("/queue/ActiveMQ.DLQ", "before"),
    ] {
        assert_eq!(
            only_message_in(addr, queue).await.body_text(),
            only,
            "discarded, not dead-lettered"
        );
    }
    live.shutdown().await;
}

/// The bodies waiting in `queue` (read within [`QUIET`] of each other; left unacknowledged).
async fn bodies_in(addr: std::net::SocketAddr, queue: &str) -> Vec<String> {
    let mut c = connected(addr).await;
    subscribe(&mut c, queue, "reader").await;
    let mut bodies = Vec::new();
    while let Some(f) = c.recv_within(QUIET).await {
        assert_eq!(f.command, "MESSAGE", "{f:?}");
        bodies.push(f.body_text());
    }
    bodies
}

/// The same NACKs on a broker at `addr` (ferromq or ActiveMQ): where each dead letter went.
async fn where_dead_letters_go(addr: std::net::SocketAddr) -> Vec<String> {
    refuse(addr, "/queue/orders.eu", "matched", true).await;
    refuse(addr, "/queue/other", "unmatched", true).await;
    refuse(addr, "/queue/orders.us", "own entry", true).await;
    let mut seen = Vec::new();
    for queue in [
        "/queue/ActiveMQ.DLQ.Queue.orders.eu",
        "/queue/DEF.other",
        "/queue/ActiveMQ.DLQ",
    ] {
        seen.push(format!("{queue}: {:?}", bodies_in(addr, queue).await));
    }
    seen
}

/// An individual strategy for `orders.>` with ActiveMQ's default prefix, an entry of its own
/// without a strategy for `orders.us` (so the shared default applies to it, not the wider
/// entry's), and a `<defaultEntry>` (no destination) with another prefix for other queues.
const STRATEGIES: &str = "<destinationPolicy><policyMap><policyEntries>\
     <policyEntry queue=\"orders.>\"><deadLetterStrategy><individualDeadLetterStrategy/>\
     </deadLetterStrategy></policyEntry><policyEntry queue=\"orders.us\" queuePrefetch=\"5\"/>\
     </policyEntries>\
     <defaultEntry><policyEntry><deadLetterStrategy>\
     <individualDeadLetterStrategy queuePrefix=\"DEF.\"/></deadLetterStrategy></policyEntry>\
     </defaultEntry></policyMap></destinationPolicy>";

const SCHEMA_LOCATED_BEANS: &str = "<beans xmlns=\"http://www.springframework.org/schema/beans\" \
     xmlns:xsi=\"http://www.w3.org/2001/XMLSchema-instance\" \
     xsi:schemaLocation=\"http://www.springframework.org/schema/beans \
     http://www.springframework.org/schema/beans/spring-beans.xsd \
     http://activemq.apache.org/schema/core http://activemq.apache.org/schema/core/activemq-core.xsd\">";

/// Checked against Apache ActiveMQ 5.17 itself (skipped, saying so, when it is not installed).
#[tokio::test]
async fn dead_letters_go_where_activemq_5_17_sends_them() {
    let expected = [
        "/queue/ActiveMQ.DLQ.Queue.orders.eu: [\"matched\"]",
        "/queue/DEF.other: [\"unmatched\"]",
        "/queue/ActiveMQ.DLQ: [\"own entry\"]",
    ];
    let env = crate::broker_with(STRATEGIES).await;
    assert_eq!(where_dead_letters_go(env.addr("stomp")).await, expected);

    if !crate::support::activemq::available("dead_letters_go_where_activemq_5_17_sends_them") {
        return;
    }
    let stomp_port = crate::support::free_port();
    let activemq = tokio::task::spawn_blocking(move || {
        crate::support::activemq::ActiveMq::start(|mqtt_port| {
            BrokerXml::new()
                .name("differential")
                .child(STRATEGIES)
                .connector("mqtt", &format!("mqtt://127.0.0.1:{mqtt_port}"))
                .connector("stomp", &format!("stomp://127.0.0.1:{stomp_port}"))
                .build()
                // ActiveMQ validates against the schemas, which it finds by location.
                .replacen(
                    "<beans xmlns=\"http://www.springframework.org/schema/beans\">",
                    SCHEMA_LOCATED_BEANS,
                    1,
                )
        })
    })
    .await
    .expect("ActiveMQ starts");
    let addr = std::net::SocketAddr::from(([127, 0, 0, 1], stomp_port));
    assert_eq!(
        where_dead_letters_go(addr).await,
        expected,
        "ActiveMQ's log:\n{}",
        activemq.logs()
    );
}
