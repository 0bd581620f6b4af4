//! Every stream a cluster uses carries an explicit consumer limit: NATS 2.15 gives a stream
//! without one a default of 1000, past which a cluster with more shared groups or STOMP
//! queues, or many sessions catching up at once, would be refused consumers (10026). A stream
//! made before the limit was set gets it when a node next uses it.

use std::time::{Duration, Instant};

use async_nats::jetstream::{self, consumer, stream};
use ferromq::cluster::MAX_CONSUMERS_PER_STREAM;
use ferromq::protocol::QoS;
use futures_util::TryStreamExt;

use super::rig::{v5_ok, Rig, FAST};

/// Consumers made on one shard stream: past NATS 2.15's default of 1000.
const CONSUMERS: usize = 1_050;

async fn max_consumers(js: &jetstream::Context, name: &str) -> i32 {
    let mut stream = js.get_stream(name).await.expect("stream");
    stream
        .info()
        .await
        .expect("stream info")
        .config
        .max_consumers
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn streams_take_more_consumers_than_the_nats_default_and_old_streams_are_raised() {
    let Some(rig) = Rig::start(1, FAST).await else {
        return;
    };
    let client = async_nats::connect(rig.nats.client_urls())
        .await
        .expect("NATS client");
    let js = jetstream::new(client);

    // The shard streams the node made carry the limit.
    let names: Vec<String> = js.stream_names().try_collect().await.expect("names");
    let shards: Vec<&String> = names.iter().filter(|n| n.starts_with("FMQ_MSG_")).collect();
    assert!(!shards.is_empty(), "no shard stream in {names:?}");
    for name in &shards {
        assert_eq!(
            max_consumers(&js, name).await,
            MAX_CONSUMERS_PER_STREAM,
            "{name}"
        );
    }

    // A groups' stream made without a limit (as by an older node) is given it when a node
    // next makes a group's consumer on it.
    // Placing three replicas needs every server current in the meta group: on a loaded
    // machine one can briefly count as offline (10005, "no suitable peers"), as the node's
    // own set-up retries.
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let made = js
            .create_stream(stream::Config {
                name: "FMQ_SHARED".into(),
                subjects: vec!["limit-test.>".into()],
                retention: stream::RetentionPolicy::Interest,
                num_replicas: 3,
                ..Default::default()
            })
            .await;
        match made {
            Ok(_) => break,
            Err(e) if Instant::now() < deadline => {
                eprintln!("a groups' stream without a consumer limit: {e}; retrying");
                tokio::time::sleep(Duration::from_millis(500)).await;
            }
            Err(e) => panic!("a groups' stream without a consumer limit: {e}"),
        }
    }
    assert!(max_consumers(&js, "FMQ_SHARED").await <= 1_000);
    let (mut member, _) = v5_ok(rig.addr(0), "limit-member", true, None).await;
    assert_eq!(
        member
            .subscribe(1, &[("$share/limit/t", QoS::AtLeastOnce)])
            .await,
        [1]
    );
    let deadline = Instant::now() + Duration::from_secs(20);
    while max_consumers(&js, "FMQ_SHARED").await != MAX_CONSUMERS_PER_STREAM {
        assert!(
            Instant::now() < deadline,
            "the groups' stream was not given the consumer limit"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }

    // More consumers than NATS's default on one shard stream are all accepted.
    let shard = js.get_stream(shards[0].as_str()).await.expect("shard");
    let started = Instant::now();
    for i in 0..CONSUMERS {
        let made = shard
            .create_consumer(consumer::pull::Config {
                inactive_threshold: Duration::from_secs(120),
                ..Default::default()
            })
            .await;
        if let Err(e) = made {
            panic!("consumer {i} of {CONSUMERS} refused: {e}");
        }
    }
    eprintln!(
        "{CONSUMERS} consumers on {} in {:?}",
        shards[0],
        started.elapsed()
    );
}
