//! A queue's backlog in `/metrics`: STOMP messages held by queues are their own gauges
//! (`ferromq_destination_queue_*`), apart from the MQTT session queues.

use crate::latency::{read_frames, stomp_connect, write};
use crate::render::scrape_core;
use crate::support::{BrokerXml, TestBroker};

#[tokio::test]
async fn persistent_stomp_sends_to_a_queue_without_consumer_show_as_its_backlog() {
    let xml = BrokerXml::new()
        .connector("mqtt", "mqtt://127.0.0.1:0")
        .connector("stomp", "stomp://127.0.0.1:0")
        .build();
    let broker = TestBroker::from_xml(&xml).await;
    let stomp = broker.handle.listener_addrs()[1].1;
    let mut producer = stomp_connect(stomp).await;
    for n in 0..50 {
        write(
            &mut producer,
            &format!("SEND\ndestination:/queue/backlog\npersistent:true\nreceipt:{n}\n\nm{n}\0"),
        )
        .await;
    }
    read_frames(&mut producer, "RECEIPT", 50).await;
    // And one message on a second queue: the sum and the maximum differ.
    write(
        &mut producer,
        "SEND\ndestination:/queue/other\npersistent:true\nreceipt:x\n\nm\0",
    )
    .await;
    read_frames(&mut producer, "RECEIPT", 1).await;

    let metrics = scrape_core(broker.handle.core());
    assert_eq!(
        metrics.value("ferromq_destination_queue_messages", &[]),
        51.0
    );
    assert_eq!(
        metrics.value("ferromq_destination_queue_depth_max", &[]),
        50.0
    );
    assert_eq!(metrics.value("ferromq_destination_queues", &[]), 2.0);
    // The MQTT session queues are not queues: their gauges stay at zero.
    assert_eq!(metrics.value("ferromq_queued_messages", &[]), 0.0);
    assert_eq!(metrics.value("ferromq_queue_depth_max", &[]), 0.0);
    broker.shutdown().await;
}
