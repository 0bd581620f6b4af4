//! Queue browsing on cluster nodes (STOMP `browser:true`, docs/queues.md "Browsing"): what
//! the cluster's queue stream holds of the queue, from any node, without taking it: waiting
//! messages and those delivered to a consumer on another node and not acknowledged, a
//! selector applied; an acknowledged message is gone from the next browse.

use std::time::Duration;

use super::stomp_queues::{collect, connected, send_ok, stomp_client, stomp_rig, subscribe};
use stomp_client::StompClient;

/// The bodies a browse `id` of `queue` sends before its `browser:end`.
async fn browse(c: &mut StompClient, queue: &str, id: &str, selector: Option<&str>) -> Vec<String> {
    let mut headers = vec![("destination", queue), ("id", id), ("browser", "true")];
    if let Some(selector) = selector {
        headers.push(("selector", selector));
    }
    c.send("SUBSCRIBE", &headers, "").await;
    c.browsed(id).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cluster_node_browses_what_the_cluster_holds_of_a_queue() {
    let Some((_rig, stomp)) = stomp_rig(2).await else {
        return;
    };
    let q = "/queue/browsed";
    let mut p = connected(stomp[0]).await;
    for (body, color) in [("b1", "red"), ("b2", "blue"), ("b3", "red")] {
        p.send(
            "SEND",
            &[
                ("destination", q),
                ("persistent", "true"),
                ("color", color),
                ("receipt", body),
            ],
            body,
        )
        .await;
        assert_eq!(p.recv().await.header("receipt-id"), Some(body));
    }
    send_ok(&mut p, "/queue/other", "elsewhere").await;

    // One taken by a consumer of the other node, not acknowledged: still in the queue.
    let mut c = connected(stomp[1]).await;
    subscribe(
        &mut c,
        q,
        "c",
        &[("ack", "client-individual"), ("activemq.prefetchSize", "1")],
    )
    .await;
    let held = collect(&mut [&mut c], false, 1, Duration::from_secs(10)).await;
    assert_eq!(held.len(), 1);

    let mut b = connected(stomp[0]).await;
    assert_eq!(browse(&mut b, q, "all", None).await, ["b1", "b2", "b3"]);
    assert_eq!(
        browse(&mut b, q, "red", Some("color = 'red'")).await,
        ["b1", "b3"]
    );
    assert!(browse(&mut b, "/queue/never.used", "none", None)
        .await
        .is_empty());

    // Acknowledged: gone from the next browse.
    let id = held[0].1.header("ack").expect("an ack header").to_owned();
    c.send("ACK", &[("id", &id), ("receipt", "acked")], "")
        .await;
    assert_eq!(c.recv().await.header("receipt-id"), Some("acked"));
    assert_eq!(browse(&mut b, q, "after", None).await, ["b2", "b3"]);
}
