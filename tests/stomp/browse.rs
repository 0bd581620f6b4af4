//! Queue browsing (`browser:true`, docs/queues.md "Browsing") on a broker with a store: the
//! browse shows what the queue holds without taking it, at most 400 messages, with a selector,
//! messages paged out to the store read back; then `browser:end`; a consumer still gets them.
//! (The frames themselves are compared with ActiveMQ by the differential's `queue_browse`.)

use std::time::Duration;

#[tokio::test]
async fn a_browse_shows_the_queue_paged_out_messages_included_and_takes_nothing() {
    let dir = tempfile::tempdir().expect("tempdir");
    let env = crate::broker_in(dir.path()).await;
    let q = "/queue/browse.paged";
    let mut p = env.connected(&[]).await;
    // More than 1,000 waiting with no consumer: the last ones are paged out to the store.
    const SENT: usize = 1_100;
    for n in 0..SENT {
        let tail = if n >= 1_050 { "yes" } else { "no" };
        let body = format!("m{n}");
        let mut headers = vec![("destination", q), ("persistent", "true"), ("tail", tail)];
        if n == SENT - 1 {
            headers.push(("receipt", "last"));
        }
        p.send("SEND", &headers, &body).await;
    }
    let last = p.recv().await;
    assert_eq!(last.header("receipt-id"), Some("last"), "{last:?}");

    let mut b = env.connected(&[]).await;
    b.send(
        "SUBSCRIBE",
        &[("destination", q), ("id", "all"), ("browser", "true")],
        "",
    )
    .await;
    let all = b.browsed("all").await;
    let first: Vec<String> = (0..400).map(|n| format!("m{n}")).collect();
    assert_eq!(all, first, "the first 400, in queue order");

    b.send(
        "SUBSCRIBE",
        &[
            ("destination", q),
            ("id", "tail"),
            ("browser", "true"),
            ("selector", "tail = 'yes'"),
        ],
        "",
    )
    .await;
    let tail = b.browsed("tail").await;
    let expected: Vec<String> = (1_050..SENT).map(|n| format!("m{n}")).collect();
    assert_eq!(tail, expected, "paged-out messages read back");
    assert!(
        b.recv_within(Duration::from_millis(300)).await.is_none(),
        "nothing after browser:end"
    );

    // Nothing was taken: a consumer gets the queue from its head.
    let mut c = env.connected(&[]).await;
    c.send("SUBSCRIBE", &[("destination", q), ("id", "c")], "")
        .await;
    let got = c
        .recv_within(Duration::from_secs(10))
        .await
        .expect("a message");
    assert_eq!(got.body_text(), "m0");
    env.broker.shutdown().await;
}

#[tokio::test]
async fn browsing_a_topic_is_refused_and_a_nack_of_a_browsed_message_is_an_error() {
    let env = crate::broker().await;
    let mut t = env.connected(&[]).await;
    t.send(
        "SUBSCRIBE",
        &[
            ("destination", "/topic/t"),
            ("id", "t"),
            ("browser", "true"),
        ],
        "",
    )
    .await;
    let error = t.recv().await;
    assert_eq!(error.command, "ERROR", "{error:?}");

    let mut p = env.connected(&[]).await;
    p.send(
        "SEND",
        &[("destination", "/queue/browse.nack"), ("receipt", "r")],
        "m",
    )
    .await;
    assert_eq!(p.recv().await.command, "RECEIPT");
    let mut b = env.connected(&[]).await;
    b.send(
        "SUBSCRIBE",
        &[
            ("destination", "/queue/browse.nack"),
            ("id", "b"),
            ("browser", "true"),
            ("ack", "client-individual"),
        ],
        "",
    )
    .await;
    let m = b.recv().await;
    let id = m.header("ack").expect("an ack header").to_owned();
    assert_eq!(b.recv().await.header("browser"), Some("end"));
    b.send("ACK", &[("id", &id), ("receipt", "acked")], "")
        .await;
    assert_eq!(b.recv().await.header("receipt-id"), Some("acked"));
    b.send("NACK", &[("id", &id)], "").await;
    let error = b.recv().await;
    assert_eq!(error.command, "ERROR", "{error:?}");
    assert_eq!(
        error.header("message"),
        Some("Cannot Nack a message on a Queue Browser Subscription.")
    );
    env.broker.shutdown().await;
}

/// `policyEntry@maxBrowsePageSize` bounds a browse (ActiveMQ's `Queue.doBrowse`): 3 here for
/// `small.>`, 400 (the default) elsewhere.
#[tokio::test]
async fn a_browse_returns_at_most_the_queues_max_browse_page_size() {
    let env = crate::broker_with(
        r#"<destinationPolicy><policyMap><policyEntries>
             <policyEntry queue="small.>" maxBrowsePageSize="3"/>
           </policyEntries></policyMap></destinationPolicy>"#,
    )
    .await;
    let mut p = env.connected(&[]).await;
    for q in ["/queue/small.q", "/queue/other.q"] {
        for n in 0..5 {
            let receipt = format!("{q}{n}");
            p.send(
                "SEND",
                &[("destination", q), ("receipt", &receipt)],
                &format!("m{n}"),
            )
            .await;
            assert_eq!(p.recv().await.command, "RECEIPT");
        }
    }
    let mut b = env.connected(&[]).await;
    for (q, id) in [("/queue/small.q", "small"), ("/queue/other.q", "other")] {
        b.send(
            "SUBSCRIBE",
            &[("destination", q), ("id", id), ("browser", "true")],
            "",
        )
        .await;
    }
    assert_eq!(b.browsed("small").await, ["m0", "m1", "m2"]);
    assert_eq!(b.browsed("other").await, ["m0", "m1", "m2", "m3", "m4"]);
    env.broker.shutdown().await;
}
