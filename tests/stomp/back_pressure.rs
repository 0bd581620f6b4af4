//! A subscriber that stops reading costs a STOMP producer one bounded pause, as it costs an
//! MQTT publisher: then the producer and every other subscriber go on.

use std::time::{Duration, Instant};

use crate::broker;

/// Messages sent: well past the stuck subscriber's socket buffers and its soft pending limit.
const MESSAGES: usize = 3000;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stuck_subscriber_costs_a_stomp_producer_one_pause_not_one_per_message() {
    let env = broker().await;
    let mut stuck = env.connected(&[]).await;
    stuck
        .send(
            "SUBSCRIBE",
            &[
                ("id", "0"),
                ("destination", "/topic/busy"),
                ("receipt", "s"),
            ],
            "",
        )
        .await;
    assert_eq!(stuck.recv().await.command, "RECEIPT");
    let mut healthy = env.connected(&[]).await;
    healthy
        .send(
            "SUBSCRIBE",
            &[
                ("id", "0"),
                ("destination", "/topic/busy"),
                ("receipt", "s"),
            ],
            "",
        )
        .await;
    assert_eq!(healthy.recv().await.command, "RECEIPT");
    let reader = tokio::spawn(async move {
        let mut got = 0;
        while got < MESSAGES {
            match healthy.recv_within(Duration::from_secs(20)).await {
                Some(f) if f.command == "MESSAGE" => got += 1,
                Some(_) => {}
                None => break,
            }
        }
        got
    });

    let mut producer = env.connected(&[]).await;
    let body = "x".repeat(8 * 1024);
    let started = Instant::now();
    // Bounded: with a pause per message the broker stops reading and the writes block.
    let sent = tokio::time::timeout(Duration::from_secs(60), async {
        for i in 0..MESSAGES {
            let last = i + 1 == MESSAGES;
            let mut headers = vec![("destination", "/topic/busy")];
            if last {
                headers.push(("receipt", "last"));
            }
            producer.send("SEND", &headers, &body).await;
        }
        producer.recv_within(Duration::from_secs(30)).await
    })
    .await;
    let receipt = sent
        .expect("all sent within 60 s")
        .expect("a receipt for the last SEND");
    assert_eq!(receipt.header("receipt-id"), Some("last"), "{receipt:?}");
    let took = started.elapsed();
    // One pause is 2 s; a pause per message past the limit would take thousands of seconds.
    assert!(took < Duration::from_secs(15), "sending took {took:?}");
    assert_eq!(
        reader.await.expect("reader"),
        MESSAGES,
        "the healthy subscriber got all"
    );
    drop(stuck);
}
