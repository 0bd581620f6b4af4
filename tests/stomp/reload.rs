//! A reloaded authorization policy on live STOMP subscriptions: the ones it denies are removed
//! and the client gets an ERROR naming them (then the connection closes), as MQTT connections
//! lose denied subscriptions; the ones it allows keep delivering.

use std::time::Duration;

use crate::client::StompClient;
use crate::support::live::LiveBroker;
use crate::support::BrokerXml;

/// `reader` reads `sensors.>` only when `reader_reads_sensors`, and `other.>` always; `boss`
/// does everything. `extra` goes into the users (to make a reload that changes nothing for
/// the reader).
fn secured(reader_reads_sensors: bool, extra: &str) -> String {
    let sensors_readers = if reader_reads_sensors {
        "admins,readers"
    } else {
        "admins"
    };
    BrokerXml::new()
        .name("stomp")
        .plugins(&format!(
            r#"<simpleAuthenticationPlugin><users>
        <authenticationUser username="boss" password="b" groups="admins"/>
        <authenticationUser username="reader" password="r" groups="readers"/>{extra}
      </users></simpleAuthenticationPlugin>
      <authorizationPlugin><map><authorizationMap><authorizationEntries>
        <authorizationEntry topic=">" read="admins" write="admins" admin="admins"/>
        <authorizationEntry topic="sensors.>" read="{sensors_readers}" write="admins" admin="admins,readers"/>
        <authorizationEntry topic="other.>" read="admins,readers" write="admins" admin="admins,readers"/>
        <authorizationEntry topic="ActiveMQ.Advisory.>" read="admins,readers" write="admins,readers" admin="admins,readers"/>
      </authorizationEntries></authorizationMap></map></authorizationPlugin>"#
        ))
        .connector("stomp", "stomp://127.0.0.1:0")
        .build()
}

async fn login(live: &LiveBroker, user: &str, password: &str) -> StompClient {
    let addr = live.addr("stomp").await.expect("stomp listening");
    let mut c = StompClient::tcp(addr).await;
    c.connect(&[("login", user), ("passcode", password)]).await;
    c
}

async fn subscribe(c: &mut StompClient, destination: &str, id: &str) {
    c.send(
        "SUBSCRIBE",
        &[("destination", destination), ("id", id), ("receipt", id)],
        "",
    )
    .await;
    let f = c.recv().await;
    assert_eq!(f.header("receipt-id"), Some(id), "{f:?}");
}

async fn send(c: &mut StompClient, destination: &str, body: &str) {
    c.send(
        "SEND",
        &[("destination", destination), ("receipt", body)],
        body,
    )
    .await;
    assert_eq!(c.recv().await.header("receipt-id"), Some(body));
}

#[tokio::test]
async fn a_reload_removes_the_subscriptions_it_denies_with_an_error_naming_them() {
    let mut live = LiveBroker::start(&secured(true, ""), true).await;
    let mut reader = login(&live, "reader", "r").await;
    subscribe(&mut reader, "/topic/sensors.t", "s1").await;
    subscribe(&mut reader, "/topic/other.t", "s2").await;
    let mut boss = login(&live, "boss", "b").await;

    // A reload that still lets the reader read both: nothing happens to it.
    let user = r#"<authenticationUser username="new" password="n" groups="admins"/>"#;
    let stats = live.edit(&secured(true, user)).await;
    assert_eq!(
        (stats.reloads_ok, stats.reloads_failed),
        (1, 0),
        "{stats:?}"
    );
    send(&mut boss, "/topic/sensors.t", "still").await;
    let m = reader.recv().await;
    assert_eq!(
        (m.command.as_str(), m.body_text().as_str()),
        ("MESSAGE", "still")
    );

    // A reload that denies sensors.>: an ERROR names that subscription, then the close.
    let stats = live.edit(&secured(false, user)).await;
    assert_eq!(
        (stats.reloads_ok, stats.reloads_failed),
        (2, 0),
        "{stats:?}"
    );
    let error = reader.recv().await;
    assert_eq!(error.command, "ERROR", "{error:?}");
    let message = error.header("message").unwrap_or_default();
    assert_eq!(
        message,
        "User reader is no longer authorized to read from: /topic/sensors.t (subscription s1)"
    );
    reader.expect_closed_within(Duration::from_secs(2)).await;
    live.shutdown().await;
}
