//! The scripts: the same STOMP frames (and MQTT packets) sent to each broker. Every script uses
//! destinations of its own (`diff.<script>...`), so the scripts can run one after another on one
//! broker. What the broker answers goes into the transcript (see [`super::script`]); a script
//! only asserts what it needs to go on (a login that must work).

use std::future::Future;
use std::pin::Pin;

use rumqttc::QoS;

use super::script::{Conn, Ctx};
use super::wire::WireFrame;

/// A script: a name and the function that runs it.
pub type Run = for<'a> fn(&'a Ctx) -> Pin<Box<dyn Future<Output = ()> + Send + 'a>>;

/// The scripts on connections, topics and MQTT crossing, in the order they run.
pub const TOPIC_SCRIPTS: &[(&str, Run)] = &[
    ("connect_versions", |c| Box::pin(connect_versions(c))),
    ("bad_login", |c| Box::pin(bad_login(c))),
    ("heart_beats", |c| Box::pin(heart_beats(c))),
    ("receipts", |c| Box::pin(receipts(c))),
    ("topic_wildcards", |c| Box::pin(topic_wildcards(c))),
    ("header_escaping", |c| Box::pin(header_escaping(c))),
    ("header_escaping_1_0", |c| Box::pin(header_escaping_1_0(c))),
    ("message_headers", |c| Box::pin(message_headers(c))),
    ("errors", |c| Box::pin(errors(c))),
    ("unauthorized_topics", |c| Box::pin(unauthorized_topics(c))),
    ("mqtt_to_stomp", |c| Box::pin(mqtt_to_stomp(c))),
    ("stomp_to_mqtt", |c| Box::pin(stomp_to_mqtt(c))),
    ("retained_to_stomp", |c| Box::pin(retained_to_stomp(c))),
    ("edge_case_checks", |c| Box::pin(edge_case_checks(c))),
];

/// The scripts on queues, in the order they run.
pub const QUEUE_SCRIPTS: &[(&str, Run)] = &[
    ("unauthorized_queues", |c| Box::pin(unauthorized_queues(c))),
    ("queue_load_balancing", |c| {
        Box::pin(queue_load_balancing(c))
    }),
    ("client_ack", |c| Box::pin(client_ack(c))),
    ("client_individual_ack", |c| {
        Box::pin(client_individual_ack(c))
    }),
    ("nack_to_dlq", |c| Box::pin(nack_to_dlq(c))),
    ("redelivery_after_disconnect", |c| {
        Box::pin(redelivery_after_disconnect(c))
    }),
    ("transactions", |c| Box::pin(transactions(c))),
    ("transactional_ack", |c| Box::pin(transactional_ack(c))),
    ("virtual_topic", |c| Box::pin(virtual_topic(c))),
    ("queue_browse", |c| Box::pin(queue_browse(c))),
    ("unsubscribe_in_transaction", |c| {
        Box::pin(unsubscribe_in_transaction(c))
    }),
    ("ack_held_by_a_transaction", |c| {
        Box::pin(ack_held_by_a_transaction(c))
    }),
];

/// Frame headers as a script writes them.
type Headers<'a> = &'a [(&'a str, &'a str)];

/// A login and passcode.
type Login<'a> = (&'a str, &'a str);

/// The id a client ACKs or NACKs a MESSAGE with: `ack` in STOMP 1.2, `message-id` before.
fn ack_id(frame: &WireFrame, version: &str) -> String {
    let header = if version == "1.2" {
        "ack"
    } else {
        "message-id"
    };
    frame.header(header).unwrap_or_default().to_owned()
}

/// SUBSCRIBE with a receipt and wait for it.
async fn subscribe(conn: &mut Conn, destination: &str, id: &str, ack: &str) {
    let receipt = format!("sub-{id}");
    conn.send(
        "SUBSCRIBE",
        &[
            ("destination", destination),
            ("id", id),
            ("ack", ack),
            ("receipt", &receipt),
        ],
        b"",
    )
    .await;
    conn.until_receipt(&receipt).await;
}

/// SEND `body` with `headers` and a receipt, and wait for it.
async fn send(conn: &mut Conn, destination: &str, headers: &[(&str, &str)], body: &str) {
    let receipt = format!("send-{body}");
    let mut all = vec![("destination", destination), ("receipt", receipt.as_str())];
    all.extend_from_slice(headers);
    conn.send("SEND", &all, body.as_bytes()).await;
    conn.until_receipt(&receipt).await;
}

async fn connect_versions(ctx: &Ctx) {
    for (i, version) in [
        None,
        Some("1.0"),
        Some("1.1"),
        Some("1.2"),
        Some("1.0,1.1"),
        Some("1.1,1.2"),
        Some("1.2,1.0"),
        Some("2.0"),
        Some("1.3,2.0"),
    ]
    .into_iter()
    .enumerate()
    {
        let (conn, _) = ctx
            .connect(&format!("v{i}"), version, Some(("admin", "secret")), &[])
            .await;
        conn.probe_alive().await;
    }
    // The STOMP command (1.1 and 1.2) is CONNECT's other name.
    let mut conn = ctx.open("stomp-command").await;
    conn.send(
        "STOMP",
        &[
            ("accept-version", "1.2"),
            ("host", "localhost"),
            ("login", "admin"),
            ("passcode", "secret"),
        ],
        b"",
    )
    .await;
    conn.next().await;
    conn.probe_alive().await;
}

async fn bad_login(ctx: &Ctx) {
    let cases: [(Option<&str>, Option<Login>, Headers); 5] = [
        (Some("1.2"), Some(("admin", "wrong")), &[]),
        (Some("1.2"), Some(("nobody", "secret")), &[]),
        (Some("1.2"), None, &[]),
        (None, Some(("admin", "wrong")), &[]),
        (
            Some("1.2"),
            Some(("admin", "wrong")),
            &[("receipt", "login")],
        ),
    ];
    for (i, (version, login, extra)) in cases.into_iter().enumerate() {
        let (conn, _) = ctx.connect(&format!("l{i}"), version, login, extra).await;
        conn.probe_alive().await;
    }
}

async fn heart_beats(ctx: &Ctx) {
    for (i, (version, beats)) in [
        ("1.2", "0,0"),
        ("1.2", "1000,2000"),
        ("1.2", "5000,0"),
        ("1.2", "0,5000"),
        ("1.1", "3000,3000"),
        ("1.0", "1000,2000"),
        ("1.2", "x,y"),
        ("1.2", "1000"),
    ]
    .into_iter()
    .enumerate()
    {
        let (conn, _) = ctx
            .connect(
                &format!("hb{i}"),
                Some(version),
                Some(("admin", "secret")),
                &[("heart-beat", beats)],
            )
            .await;
        conn.probe_alive().await;
    }
}

async fn receipts(ctx: &Ctx) {
    let mut c = ctx.admin("c", "1.2").await;
    for (command, headers) in [
        (
            "SUBSCRIBE",
            vec![("destination", "/topic/diff.receipts"), ("id", "s")],
        ),
        ("SEND", vec![("destination", "/topic/diff.receipts.none")]),
        ("UNSUBSCRIBE", vec![("id", "s")]),
        ("BEGIN", vec![("transaction", "t")]),
        ("COMMIT", vec![("transaction", "t")]),
    ] {
        let mut all = headers.clone();
        let receipt = format!("r-{command}");
        all.push(("receipt", &receipt));
        c.send(command, &all, b"").await;
        c.until_receipt(&receipt).await;
    }
    // STOMP 1.2 allows CR LF line ends, and EOLs (heart-beats) between frames.
    c.send_raw(b"\n\r\nSEND\r\ndestination:/topic/diff.receipts.none\r\nreceipt:crlf\r\n\r\nx\0")
        .await;
    c.until_receipt("crlf").await;
    c.disconnect().await;
}

async fn topic_wildcards(ctx: &Ctx) {
    let mut sub = ctx.admin("sub", "1.2").await;
    subscribe(&mut sub, "/topic/diff.wild.*", "one", "auto").await;
    subscribe(&mut sub, "/topic/diff.wild.>", "many", "auto").await;
    subscribe(&mut sub, "/topic/diff.*.x", "mid", "auto").await;
    let mut p = ctx.admin("pub", "1.2").await;
    for (destination, body) in [
        ("/topic/diff.wild.a", "wild.a"),
        ("/topic/diff.wild.a.b", "wild.a.b"),
        ("/topic/diff.wild.x", "wild.x"),
        ("/topic/diff.other.x", "other.x"),
        ("/topic/diff.wild", "wild"),
        ("/topic/diff.wild.end", "end"),
    ] {
        send(&mut p, destination, &[], body).await;
    }
    sub.gather(2).await;
    p.disconnect().await;
    sub.disconnect().await;
}

async fn header_escaping(ctx: &Ctx) {
    let topic = "/topic/diff.escape";
    let mut subs = Vec::new();
    for version in ["1.1", "1.2"] {
        let mut sub = ctx.admin(&format!("sub{version}"), version).await;
        subscribe(&mut sub, topic, "s", "auto").await;
        subs.push(sub);
    }
    // What each version's sender writes for a value `a:b`, a backslash and a newline.
    let mut p10 = ctx.admin("pub1.0", "1.0").await;
    send(
        &mut p10,
        topic,
        &[("colon", "a:b"), ("backslash", "a\\b")],
        "from1.0",
    )
    .await;
    p10.disconnect().await;
    let mut p11 = ctx.admin("pub1.1", "1.1").await;
    send(
        &mut p11,
        topic,
        &[
            ("colon", "a\\cb"),
            ("newline", "a\\nb"),
            ("backslash", "a\\\\b"),
        ],
        "from1.1",
    )
    .await;
    p11.disconnect().await;
    let mut p12 = ctx.admin("pub1.2", "1.2").await;
    send(
        &mut p12,
        topic,
        &[
            ("colon", "a\\cb"),
            ("newline", "a\\nb"),
            ("cr", "a\\rb"),
            ("backslash", "a\\\\b"),
        ],
        "from1.2",
    )
    .await;
    // STOMP 1.2: of a repeated header only the first is the value.
    send(
        &mut p12,
        topic,
        &[("repeated", "first"), ("repeated", "second")],
        "repeated",
    )
    .await;
    // A body with NUL bytes needs content-length.
    p12.send(
        "SEND",
        &[
            ("destination", topic),
            ("content-length", "5"),
            ("receipt", "bytes"),
            ("content-type", "application/octet-stream"),
        ],
        b"a\0b\0c",
    )
    .await;
    p12.until_receipt("bytes").await;
    send(&mut p12, topic, &[], "end").await;
    p12.disconnect().await;
    for mut sub in subs {
        sub.gather(1).await;
        sub.disconnect().await;
    }
}

/// STOMP 1.0 has no escaping: what a 1.0 subscriber gets for values with `:`, `\`, and for
/// values with a newline or CR, which a 1.0 header cannot hold.
async fn header_escaping_1_0(ctx: &Ctx) {
    let topic = "/topic/diff.escape10";
    let mut sub = ctx.admin("sub1.0", "1.0").await;
    subscribe(&mut sub, topic, "s", "auto").await;
    let mut p10 = ctx.admin("pub1.0", "1.0").await;
    send(
        &mut p10,
        topic,
        &[("colon", "a:b"), ("backslash", "a\\b")],
        "from1.0",
    )
    .await;
    p10.disconnect().await;
    let mut p12 = ctx.admin("pub1.2", "1.2").await;
    send(
        &mut p12,
        topic,
        &[("colon", "a\\cb"), ("backslash", "a\\\\b")],
        "escaped",
    )
    .await;
    send(&mut p12, topic, &[("newline", "a\\nb")], "newline").await;
    send(&mut p12, topic, &[("cr", "a\\rb")], "cr").await;
    send(&mut p12, topic, &[], "end").await;
    p12.disconnect().await;
    sub.gather(1).await;
    sub.disconnect().await;
}

/// The SEND headers ActiveMQ gives meaning to, and what a subscriber sees of them.
async fn message_headers(ctx: &Ctx) {
    let topic = "/topic/diff.headers";
    let mut sub = ctx.admin("sub", "1.2").await;
    subscribe(&mut sub, topic, "s", "auto").await;
    let in_an_hour = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() + 3_600_000)
        .unwrap_or_default()
        .to_string();
    let mut p = ctx.admin("pub", "1.2").await;
    send(
        &mut p,
        topic,
        &[
            ("reply-to", "/queue/diff.replies"),
            ("correlation-id", "c-1"),
            ("priority", "9"),
            ("type", "order"),
            ("expires", &in_an_hour),
            ("persistent", "true"),
            ("content-type", "text/plain;charset=utf-8"),
            ("custom", "value"),
        ],
        "all",
    )
    .await;
    send(
        &mut p,
        topic,
        &[("expires", "0"), ("priority", "0")],
        "never",
    )
    .await;
    send(&mut p, topic, &[], "end").await;
    p.disconnect().await;
    sub.gather(1).await;
    sub.disconnect().await;
}

async fn errors(ctx: &Ctx) {
    let cases: &[(&str, &str, Headers)] = &[
        ("1.2", "FOO", &[("receipt", "e")]),
        ("1.2", "SEND", &[("receipt", "e")]),
        (
            "1.0",
            "SUBSCRIBE",
            &[("destination", "/topic/diff.err"), ("receipt", "e")],
        ),
        (
            "1.1",
            "SUBSCRIBE",
            &[("destination", "/topic/diff.err"), ("receipt", "e")],
        ),
        (
            "1.2",
            "SUBSCRIBE",
            &[("destination", "/topic/diff.err"), ("receipt", "e")],
        ),
        ("1.2", "ACK", &[("id", "no-such-id"), ("receipt", "e")]),
        (
            "1.1",
            "ACK",
            &[
                ("message-id", "no-such-id"),
                ("subscription", "s"),
                ("receipt", "e"),
            ],
        ),
        ("1.2", "NACK", &[("id", "no-such-id"), ("receipt", "e")]),
        (
            "1.2",
            "SEND",
            &[("destination", "/foo/diff.err"), ("receipt", "e")],
        ),
        (
            "1.2",
            "SUBSCRIBE",
            &[
                ("destination", "/foo/diff.err"),
                ("id", "s"),
                ("receipt", "e"),
            ],
        ),
        ("1.2", "UNSUBSCRIBE", &[("id", "never"), ("receipt", "e")]),
        (
            "1.2",
            "COMMIT",
            &[("transaction", "never"), ("receipt", "e")],
        ),
        ("1.2", "BEGIN", &[("receipt", "e")]),
    ];
    for (i, (version, command, headers)) in cases.iter().enumerate() {
        let mut c = ctx.admin(&format!("e{i}"), version).await;
        c.send(command, headers, b"").await;
        c.until_receipt("e").await;
        c.probe_alive().await;
    }
    // A frame before CONNECT.
    let mut c = ctx.open("before-connect").await;
    c.send(
        "SEND",
        &[("destination", "/topic/diff.err"), ("receipt", "e")],
        b"x",
    )
    .await;
    c.until_receipt("e").await;
    c.probe_alive().await;
}

async fn unauthorized_topics(ctx: &Ctx) {
    unauthorized(
        ctx,
        &[
            ("SEND", &[("destination", "/topic/diff.secret")]),
            (
                "SUBSCRIBE",
                &[("destination", "/topic/diff.secret"), ("id", "s")],
            ),
            ("SEND", &[("destination", "/topic/app.diff")]),
            (
                "SUBSCRIBE",
                &[("destination", "/topic/app.diff"), ("id", "s")],
            ),
        ],
    )
    .await;
}

async fn unauthorized_queues(ctx: &Ctx) {
    unauthorized(
        ctx,
        &[
            ("SEND", &[("destination", "/queue/diff.secret")]),
            (
                "SUBSCRIBE",
                &[("destination", "/queue/diff.secret"), ("id", "s")],
            ),
            // Not the queue the SEND fills: its message would race the probe's RECEIPT.
            ("SEND", &[("destination", "/queue/app.diff.filled")]),
            (
                "SUBSCRIBE",
                &[("destination", "/queue/app.diff.empty"), ("id", "s")],
            ),
        ],
    )
    .await;
}

/// Each (command, headers) from `app`, who may use `app.>` only, on a connection of its own.
async fn unauthorized(ctx: &Ctx, cases: &[(&str, Headers<'_>)]) {
    for (i, (command, headers)) in cases.iter().enumerate() {
        let (mut c, answer) = ctx
            .connect(&format!("u{i}"), Some("1.2"), Some(("app", "apppw")), &[])
            .await;
        assert_eq!(
            answer.map(|f| f.command),
            Some("CONNECTED".to_owned()),
            "app's CONNECT"
        );
        let mut all = headers.to_vec();
        all.push(("receipt", "e"));
        c.send(command, &all, b"x").await;
        c.until_receipt("e").await;
        c.probe_alive().await;
    }
}

async fn queue_load_balancing(ctx: &Ctx) {
    let mut a = ctx.admin("a", "1.2").await;
    let mut b = ctx.admin("b", "1.2").await;
    // A prefetch of 1 with client acknowledgement makes ActiveMQ hand out one message at a time.
    for c in [&mut a, &mut b] {
        c.send(
            "SUBSCRIBE",
            &[
                ("destination", "/queue/diff.balance"),
                ("id", "s"),
                ("ack", "client-individual"),
                ("activemq.prefetchSize", "1"),
                ("receipt", "sub"),
            ],
            b"",
        )
        .await;
        c.until_receipt("sub").await;
    }
    let mut p = ctx.admin("p", "1.2").await;
    for body in ["m1", "m2"] {
        send(&mut p, "/queue/diff.balance", &[], body).await;
    }
    // Each consumer holds one unacknowledged message: the two went to different consumers.
    let first_a = a.take(1).await;
    let first_b = b.take(1).await;
    for (c, got) in [(&mut a, first_a), (&mut b, first_b)] {
        for frame in got {
            let id = ack_id(&frame, "1.2");
            c.send("ACK", &[("id", &id), ("receipt", "acked")], b"")
                .await;
            c.until_receipt("acked").await;
        }
    }
    p.disconnect().await;
    a.disconnect().await;
    b.disconnect().await;
}

/// Send `bodies` to `queue` (persistent), subscribe with `ack` on STOMP `version`, and return
/// the consumer and the MESSAGE frames.
async fn consume(
    ctx: &Ctx,
    name: &str,
    version: &str,
    queue: &str,
    ack: &str,
    n: usize,
) -> (Conn, Vec<WireFrame>) {
    let mut c = ctx.admin(name, version).await;
    c.send(
        "SUBSCRIBE",
        &[("destination", queue), ("id", "s"), ("ack", ack)],
        b"",
    )
    .await;
    let frames = c.take(n).await;
    (c, frames)
}

async fn produce(ctx: &Ctx, queue: &str, bodies: &[&str]) {
    let mut p = ctx.admin("p", "1.2").await;
    for body in bodies {
        send(&mut p, queue, &[("persistent", "true")], body).await;
    }
    p.disconnect().await;
}

/// `browser:true`: the queue's messages without taking them, then `browser:end`; with a
/// selector; an ACK of a browsed message; a NACK of one (an ERROR); a consumer still gets all.
async fn queue_browse(ctx: &Ctx) {
    let queue = "/queue/diff.browse";
    let mut p = ctx.admin("p", "1.2").await;
    for (body, color) in [("m1", "red"), ("m2", "blue"), ("m3", "red")] {
        send(
            &mut p,
            queue,
            &[("persistent", "true"), ("color", color)],
            body,
        )
        .await;
    }
    p.disconnect().await;
    let mut b = ctx.admin("b", "1.2").await;
    b.send(
        "SUBSCRIBE",
        &[
            ("destination", queue),
            ("id", "all"),
            ("browser", "true"),
            ("receipt", "sub-all"),
        ],
        b"",
    )
    .await;
    b.until_receipt("sub-all").await;
    b.take(4).await;
    b.send(
        "SUBSCRIBE",
        &[
            ("destination", queue),
            ("id", "red"),
            ("browser", "true"),
            ("ack", "client-individual"),
            ("selector", "color = 'red'"),
            ("receipt", "sub-red"),
        ],
        b"",
    )
    .await;
    b.until_receipt("sub-red").await;
    let red = b.take(3).await;
    if let Some(first) = red.first() {
        let id = ack_id(first, "1.2");
        b.send("ACK", &[("id", &id), ("receipt", "acked")], b"")
            .await;
        b.until_receipt("acked").await;
    }
    b.disconnect().await;
    let (c, _) = consume(ctx, "c", "1.2", queue, "auto", 3).await;
    c.disconnect().await;
    let mut n = ctx.admin("n", "1.2").await;
    n.send(
        "SUBSCRIBE",
        &[
            ("destination", "/queue/diff.browse-nack"),
            ("id", "b"),
            ("browser", "true"),
            ("ack", "client"),
        ],
        b"",
    )
    .await;
    n.take(1).await;
    n.drop_connection();
}

async fn client_ack(ctx: &Ctx) {
    let queue = "/queue/diff.client";
    produce(ctx, queue, &["m1", "m2", "m3"]).await;
    // STOMP 1.0: ACK of the second, cumulative in client mode, so m1 and m2 are done.
    let (mut c, frames) = consume(ctx, "c1.0", "1.0", queue, "client", 3).await;
    if let Some(second) = frames.get(1) {
        let id = ack_id(second, "1.0");
        c.send("ACK", &[("message-id", &id), ("receipt", "acked")], b"")
            .await;
        c.until_receipt("acked").await;
    }
    c.disconnect().await;
    // m3 is left: redelivered, not acknowledged, redelivered again, acknowledged (1.2).
    let (c, _) = consume(ctx, "c1.2", "1.2", queue, "client", 1).await;
    c.disconnect().await;
    let (mut c, frames) = consume(ctx, "last", "1.2", queue, "client", 1).await;
    if let Some(last) = frames.first() {
        c.send(
            "ACK",
            &[("id", &ack_id(last, "1.2")), ("receipt", "acked")],
            b"",
        )
        .await;
        c.until_receipt("acked").await;
    }
    c.disconnect().await;
}

async fn client_individual_ack(ctx: &Ctx) {
    let queue = "/queue/diff.individual";
    produce(ctx, queue, &["m1", "m2", "m3"]).await;
    let (mut c, frames) = consume(ctx, "c", "1.1", queue, "client-individual", 3).await;
    // ACK m1 and m3 only (1.1: message-id and subscription).
    for frame in frames.iter().step_by(2) {
        let id = ack_id(frame, "1.1");
        c.send(
            "ACK",
            &[
                ("message-id", &id),
                ("subscription", "s"),
                ("receipt", "acked"),
            ],
            b"",
        )
        .await;
        c.until_receipt("acked").await;
    }
    c.disconnect().await;
    let (mut c, frames) = consume(ctx, "again", "1.2", queue, "client-individual", 1).await;
    if let Some(m2) = frames.first() {
        c.send(
            "ACK",
            &[("id", &ack_id(m2, "1.2")), ("receipt", "acked")],
            b"",
        )
        .await;
        c.until_receipt("acked").await;
    }
    c.disconnect().await;
}

async fn nack_to_dlq(ctx: &Ctx) {
    let queue = "/queue/diff.nack";
    let mut p = ctx.admin("p", "1.2").await;
    send(
        &mut p,
        queue,
        &[("persistent", "true"), ("app", "x")],
        "persistent",
    )
    .await;
    send(&mut p, queue, &[], "non-persistent").await;
    p.disconnect().await;
    let (mut c, frames) = consume(ctx, "c", "1.2", queue, "client-individual", 2).await;
    for frame in &frames {
        c.send(
            "NACK",
            &[("id", &ack_id(frame, "1.2")), ("receipt", "nacked")],
            b"",
        )
        .await;
        c.until_receipt("nacked").await;
    }
    c.disconnect().await;
    // What the dead-letter queue holds, then a marker to know it has all.
    produce(ctx, "/queue/ActiveMQ.DLQ", &["end"]).await;
    let mut dlq = ctx.admin("dlq", "1.2").await;
    subscribe(&mut dlq, "/queue/ActiveMQ.DLQ", "d", "auto").await;
    dlq.gather(1).await;
    dlq.disconnect().await;
    // Nothing is left on the queue itself.
    produce(ctx, queue, &["end"]).await;
    let mut again = ctx.admin("again", "1.2").await;
    subscribe(&mut again, queue, "s", "auto").await;
    again.gather(1).await;
    again.disconnect().await;
}

async fn redelivery_after_disconnect(ctx: &Ctx) {
    let queue = "/queue/diff.redeliver";
    produce(ctx, queue, &["m1", "m2"]).await;
    let (c, _) = consume(ctx, "c", "1.2", queue, "client-individual", 2).await;
    c.drop_connection();
    let (mut c, frames) = consume(ctx, "again", "1.2", queue, "client-individual", 2).await;
    for frame in &frames {
        c.send(
            "ACK",
            &[("id", &ack_id(frame, "1.2")), ("receipt", "acked")],
            b"",
        )
        .await;
        c.until_receipt("acked").await;
    }
    c.disconnect().await;
}

async fn transactions(ctx: &Ctx) {
    let queue = "/queue/diff.tx";
    let mut p = ctx.admin("p", "1.2").await;
    for (tx, body, end) in [("t1", "aborted", "ABORT"), ("t2", "committed", "COMMIT")] {
        p.send("BEGIN", &[("transaction", tx)], b"").await;
        p.send(
            "SEND",
            &[("destination", queue), ("transaction", tx)],
            body.as_bytes(),
        )
        .await;
        p.send(end, &[("transaction", tx), ("receipt", end)], b"")
            .await;
        p.until_receipt(end).await;
    }
    send(&mut p, queue, &[], "end").await;
    p.disconnect().await;
    let mut c = ctx.admin("c", "1.2").await;
    subscribe(&mut c, queue, "s", "auto").await;
    c.gather(1).await;
    c.disconnect().await;
}

/// ACKs inside a transaction: aborted (the message stays, redelivered), then committed (gone).
async fn transactional_ack(ctx: &Ctx) {
    let queue = "/queue/diff.txack";
    produce(ctx, queue, &["m1"]).await;
    for (name, end) in [("aborts", "ABORT"), ("commits", "COMMIT")] {
        let (mut c, frames) = consume(ctx, name, "1.2", queue, "client-individual", 1).await;
        if let Some(m1) = frames.first() {
            c.send("BEGIN", &[("transaction", "t")], b"").await;
            c.send(
                "ACK",
                &[("id", &ack_id(m1, "1.2")), ("transaction", "t")],
                b"",
            )
            .await;
            c.send(end, &[("transaction", "t"), ("receipt", end)], b"")
                .await;
            c.until_receipt(end).await;
        }
        c.disconnect().await;
    }
    // Nothing is left but the marker.
    produce(ctx, queue, &["end"]).await;
    let mut again = ctx.admin("again", "1.2").await;
    subscribe(&mut again, queue, "s", "auto").await;
    again.gather(1).await;
    again.disconnect().await;
}

/// A transacted ACK, then the subscription's UNSUBSCRIBE, then the transaction's end: what
/// the COMMIT (or ABORT) answers, and what is left in the queue for the next consumer.
async fn unsubscribe_in_transaction(ctx: &Ctx) {
    let queue = "/queue/diff.txunsub";
    for (name, end) in [("aborts", "ABORT"), ("commits", "COMMIT")] {
        produce(ctx, queue, &["m1", "m2"]).await;
        let (mut c, frames) = consume(ctx, name, "1.2", queue, "client-individual", 2).await;
        if let Some(m1) = frames.first() {
            ack_unsubscribe_end(&mut c, m1, "s", end).await;
        }
        c.disconnect().await;
        produce(ctx, queue, &["end"]).await;
        let mut next = ctx.admin("next", "1.2").await;
        subscribe(&mut next, queue, "s", "auto").await;
        next.gather(1).await;
        next.disconnect().await;
    }
    // A topic subscription's message, acknowledged in a transaction, then UNSUBSCRIBEd.
    let topic = "/topic/diff.txunsub";
    let mut t = ctx.admin("topic", "1.2").await;
    subscribe(&mut t, topic, "ts", "client-individual").await;
    let mut p = ctx.admin("p", "1.2").await;
    send(&mut p, topic, &[], "t1").await;
    p.disconnect().await;
    let got = t.take(1).await;
    if let Some(t1) = got.first() {
        ack_unsubscribe_end(&mut t, t1, "ts", "COMMIT").await;
    }
    t.disconnect().await;
}

/// A `client-individual` message ACKed in an open transaction, then ACKed again: outside it
/// (with a receipt), or in a second transaction (both ERRORs in ActiveMQ, which closes the
/// connection; what then becomes of the first transaction's message differs, see
/// docs/compatibility.md, so no consumer reads the queues after). Then a transacted ACK of a
/// browsed message and its COMMIT. (A `client` ACK outside the transaction covering one it
/// ACKed is taken, and the COMMIT fails, in both; ActiveMQ's ERROR carries the COMMIT's
/// `receipt-id` in some runs and not in others, so it is not scripted.)
async fn ack_held_by_a_transaction(ctx: &Ctx) {
    for (name, second) in [("plain", None), ("other", Some("t2"))] {
        let queue = format!("/queue/diff.txheld.{name}");
        produce(ctx, &queue, &["m1", "m2"]).await;
        let (mut c, frames) = consume(ctx, name, "1.2", &queue, "client-individual", 2).await;
        if let Some(m1) = frames.first() {
            let id = ack_id(m1, "1.2");
            c.send("BEGIN", &[("transaction", "t")], b"").await;
            c.send("ACK", &[("id", &id), ("transaction", "t")], b"")
                .await;
            match second {
                None => {
                    c.send("ACK", &[("id", &id), ("receipt", "again")], b"")
                        .await;
                    c.until_receipt("again").await;
                }
                Some(t2) => {
                    c.send("BEGIN", &[("transaction", t2)], b"").await;
                    c.send("ACK", &[("id", &id), ("transaction", t2)], b"")
                        .await;
                    c.send("COMMIT", &[("transaction", t2), ("receipt", t2)], b"")
                        .await;
                    c.until_receipt(t2).await;
                }
            }
        }
        c.disconnect().await;
    }
    let queue = "/queue/diff.txheld.browsed";
    produce(ctx, queue, &["b1"]).await;
    let mut b = ctx.admin("b", "1.2").await;
    b.send(
        "SUBSCRIBE",
        &[
            ("destination", queue),
            ("id", "br"),
            ("browser", "true"),
            ("ack", "client-individual"),
            ("receipt", "sub-br"),
        ],
        b"",
    )
    .await;
    b.until_receipt("sub-br").await;
    let browsed = b.take(2).await;
    if let Some(b1) = browsed.first() {
        let id = ack_id(b1, "1.2");
        b.send("BEGIN", &[("transaction", "tb")], b"").await;
        b.send(
            "ACK",
            &[("id", &id), ("transaction", "tb"), ("receipt", "ab")],
            b"",
        )
        .await;
        b.until_receipt("ab").await;
        b.send("COMMIT", &[("transaction", "tb"), ("receipt", "cb")], b"")
            .await;
        b.until_receipt("cb").await;
    }
    b.disconnect().await;
}

/// BEGIN `t`, ACK `message` in it, UNSUBSCRIBE `sub`, then `end` (COMMIT or ABORT) `t`, each
/// answer awaited.
async fn ack_unsubscribe_end(c: &mut Conn, message: &WireFrame, sub: &str, end: &str) {
    c.send("BEGIN", &[("transaction", "t")], b"").await;
    c.send(
        "ACK",
        &[("id", &ack_id(message, "1.2")), ("transaction", "t")],
        b"",
    )
    .await;
    c.send("UNSUBSCRIBE", &[("id", sub), ("receipt", "unsub")], b"")
        .await;
    c.until_receipt("unsub").await;
    c.send(end, &[("transaction", "t"), ("receipt", end)], b"")
        .await;
    c.until_receipt(end).await;
}

/// ActiveMQ's default virtual topic: what MQTT and STOMP publish to topic
/// `VirtualTopic.diff` reaches each existing queue `Consumer.*.VirtualTopic.diff` and the
/// topic's own subscriber; a queue of one more level is not a consumer queue.
async fn virtual_topic(ctx: &Ctx) {
    let mut a = ctx.admin("a", "1.2").await;
    subscribe(&mut a, "/queue/Consumer.a.VirtualTopic.diff", "s", "auto").await;
    let mut b = ctx.admin("b", "1.2").await;
    subscribe(&mut b, "/queue/Consumer.b.VirtualTopic.diff", "s", "auto").await;
    let mut t = ctx.admin("t", "1.2").await;
    subscribe(&mut t, "/topic/VirtualTopic.diff", "s", "auto").await;
    let mut deep = ctx.admin("deep", "1.2").await;
    subscribe(
        &mut deep,
        "/queue/Consumer.x.y.VirtualTopic.diff",
        "s",
        "auto",
    )
    .await;
    let mut m = ctx.mqtt("mqtt", "diff-virtual-topic").await;
    m.publish("VirtualTopic/diff", QoS::AtLeastOnce, false, b"m1")
        .await;
    m.disconnect().await;
    let mut p = ctx.admin("p", "1.2").await;
    send(
        &mut p,
        "/topic/VirtualTopic.diff",
        &[("persistent", "true")],
        "s1",
    )
    .await;
    p.disconnect().await;
    for c in [&mut a, &mut b, &mut t] {
        c.take(2).await;
    }
    send(
        &mut deep,
        "/queue/Consumer.x.y.VirtualTopic.diff",
        &[],
        "own",
    )
    .await;
    deep.take(1).await;
    for c in [a, b, t, deep] {
        c.disconnect().await;
    }
}

async fn mqtt_to_stomp(ctx: &Ctx) {
    let mut sub = ctx.admin("stomp", "1.2").await;
    subscribe(&mut sub, "/topic/diff.mqtt.>", "s", "auto").await;
    let mut m = ctx.mqtt("mqtt", "diff-mqtt-to-stomp").await;
    m.publish("diff/mqtt/q0", QoS::AtMostOnce, false, b"q0")
        .await;
    m.publish("diff/mqtt/q1", QoS::AtLeastOnce, false, b"q1")
        .await;
    m.publish("diff/mqtt/q2", QoS::ExactlyOnce, false, b"q2")
        .await;
    m.publish("diff/mqtt/retained", QoS::AtLeastOnce, true, b"retained")
        .await;
    m.publish("diff/mqtt/bytes", QoS::AtLeastOnce, false, b"a\0b")
        .await;
    m.publish("diff/mqtt/end", QoS::AtLeastOnce, false, b"end")
        .await;
    sub.gather(1).await;
    m.disconnect().await;
    sub.disconnect().await;
}

async fn stomp_to_mqtt(ctx: &Ctx) {
    let mut m = ctx.mqtt("mqtt", "diff-stomp-to-mqtt").await;
    m.subscribe("diff/stomp/#", QoS::ExactlyOnce).await;
    let mut p = ctx.admin("stomp", "1.2").await;
    send(&mut p, "/topic/diff.stomp.plain", &[], "plain").await;
    send(
        &mut p,
        "/topic/diff.stomp.persistent",
        &[("persistent", "true")],
        "persistent",
    )
    .await;
    send(
        &mut p,
        "/topic/diff.stomp.headers",
        &[("content-type", "text/plain"), ("custom", "v")],
        "headers",
    )
    .await;
    p.send(
        "SEND",
        &[
            ("destination", "/topic/diff.stomp.bytes"),
            ("content-length", "3"),
            ("receipt", "bytes"),
        ],
        b"a\0b",
    )
    .await;
    p.until_receipt("bytes").await;
    m.take(4).await;
    p.disconnect().await;
    m.disconnect().await;
}

async fn retained_to_stomp(ctx: &Ctx) {
    let mut m = ctx.mqtt("mqtt", "diff-retained").await;
    m.publish("diff/retained/a", QoS::AtLeastOnce, true, b"kept")
        .await;
    m.disconnect().await;
    let mut sub = ctx.admin("stomp", "1.2").await;
    subscribe(&mut sub, "/topic/diff.retained.>", "s", "auto").await;
    let mut p = ctx.admin("p", "1.2").await;
    send(&mut p, "/topic/diff.retained.end", &[], "end").await;
    p.disconnect().await;
    sub.gather(1).await;
    sub.disconnect().await;
}

/// Edge cases a user's evaluation found (tests/stomp/edge_cases.rs): numeric SEND headers that
/// are not numbers, `persistent:maybe`, topic names with empty levels, a client-id already
/// connected, UNSUBSCRIBE of an offline durable subscription.
async fn edge_case_checks(ctx: &Ctx) {
    for (name, value) in [
        ("expires", "abc"),
        ("priority", "x"),
        ("timestamp", "1.5"),
        ("persistent", "maybe"),
    ] {
        let mut c = ctx.admin(&format!("number-{name}"), "1.2").await;
        c.send(
            "SEND",
            &[
                ("destination", "/topic/diff.numbers"),
                (name, value),
                ("receipt", "e"),
            ],
            b"x",
        )
        .await;
        c.until_receipt("e").await;
        c.probe_alive().await;
    }
    let mut c = ctx.admin("levels", "1.2").await;
    for (id, destination) in [("a", "/topic/.diff.lead"), ("b", "/topic/diff..mid")] {
        c.send(
            "SUBSCRIBE",
            &[("destination", destination), ("id", id), ("receipt", id)],
            b"",
        )
        .await;
        c.until_receipt(id).await;
    }
    c.send("SEND", &[("destination", "/topic/.diff.lead")], b"lead")
        .await;
    c.send("SEND", &[("destination", "/topic/diff..mid")], b"mid")
        .await;
    c.take(2).await;
    c.disconnect().await;

    let admin = Some(("admin", "secret"));
    let client_id = [("client-id", "diff-cid")];
    let (mut first, _) = ctx.connect("cid1", Some("1.2"), admin, &client_id).await;
    let (second, _) = ctx.connect("cid2", Some("1.2"), admin, &client_id).await;
    second.probe_alive().await;
    first
        .send(
            "SUBSCRIBE",
            &[
                ("destination", "/topic/diff.durable"),
                ("id", "d"),
                ("activemq.subscriptionName", "sub"),
                ("receipt", "s"),
            ],
            b"",
        )
        .await;
    first.until_receipt("s").await;
    first.disconnect().await;
    // Without an id: refused, though the id names no SUBSCRIBE.
    let (mut no_id, _) = ctx.connect("cid3", Some("1.2"), admin, &client_id).await;
    no_id
        .send(
            "UNSUBSCRIBE",
            &[("activemq.subscriptionName", "sub"), ("receipt", "u0")],
            b"",
        )
        .await;
    no_id.until_receipt("u0").await;
    no_id.probe_alive().await;
    // With an id: the offline subscription goes; a second time there is none.
    let (mut again, _) = ctx.connect("cid4", Some("1.2"), admin, &client_id).await;
    for receipt in ["u1", "u2"] {
        again
            .send(
                "UNSUBSCRIBE",
                &[
                    ("id", "d"),
                    ("activemq.subscriptionName", "sub"),
                    ("receipt", receipt),
                ],
                b"",
            )
            .await;
        again.until_receipt(receipt).await;
    }
    again.probe_alive().await;
}
