//! `metrics::render` on a running broker during real traffic.

use rumqttc::QoS;

use crate::parse::{parse, Exposition};
use crate::support::{Client, TestBroker};

fn scrape(broker: &TestBroker) -> Exposition {
    let text = ferromq::metrics::render(broker.handle.core());
    parse(&text).unwrap_or_else(|e| panic!("{e}\n{text}"))
}

#[tokio::test]
async fn counters_move_with_mqtt_traffic() {
    let broker = TestBroker::default().await;
    let before = scrape(&broker);
    assert_eq!(before.value("ferromq_connections", &[]), 0.0);

    let mut sub = Client::connect(broker.addr, "sub").await;
    sub.subscribe("m/#", QoS::AtLeastOnce).await;
    let mut publisher = Client::connect(broker.addr, "pub").await;
    publisher
        .publish("m/a", QoS::AtLeastOnce, false, b"hello")
        .await;
    sub.next_publish().await;

    let after = scrape(&broker);
    assert_eq!(after.value("ferromq_connections", &[]), 2.0);
    assert_eq!(after.value("ferromq_connections_opened_total", &[]), 2.0);
    assert!(after.value("ferromq_messages_received_total", &[]) >= 1.0);
    assert!(after.value("ferromq_messages_sent_total", &[]) >= 1.0);
    assert_eq!(after.value("ferromq_subscriptions", &[]), 1.0);
    broker.shutdown().await;
}
