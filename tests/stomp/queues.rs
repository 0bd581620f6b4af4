//! Queues (`/queue/x`, `/temp-queue/x`) with stomp.py clients (python, as applications use
//! them): load balancing over three consumers, NACK to the dead-letter queue (and with a
//! redelivery plugin policy: redelivered first), an unacknowledged message redelivered after
//! a disconnect, a persistent message across a broker restart, temporary-queue
//! request/reply, and `queue=` authorization. Each script does its part and prints what it
//! saw, one item per line; it fails (non-zero exit) when an expected frame does not come.

use std::time::Duration;

/// What every script starts with: a listener that puts every frame (MESSAGE, RECEIPT, ERROR)
/// on one queue, and helpers that wait for one.
const PRELUDE: &str = r#"
import sys, queue, stomp
port = int(sys.argv[1])
class L(stomp.ConnectionListener):
    def __init__(self):
        self.messages, self.receipts, self.errors = queue.Queue(), queue.Queue(), queue.Queue()
    def on_message(self, frame): self.messages.put(frame)
    def on_receipt(self, frame): self.receipts.put(frame.headers["receipt-id"])
    def on_error(self, frame): self.errors.put(frame.headers.get("message", ""))
def client(login=None, passcode=None):
    c = stomp.Connection12([("127.0.0.1", port)], heartbeats=(0, 0))
    l = L()
    c.set_listener("l", l)
    c.connect(login, passcode, wait=True)
    return c, l
def receipt(l, r):
    got = l.receipts.get(timeout=5)
    assert got == r, (got, r)
def subscribe(c, l, dest, id, ack="auto", **headers):
    c.subscribe(destination=dest, id=id, ack=ack, headers=dict(headers, receipt="sub-" + id))
    receipt(l, "sub-" + id)
def send(c, l, dest, body, **headers):
    c.send(destination=dest, body=body, headers=dict(headers, receipt="send-" + body))
    receipt(l, "send-" + body)
"#;

/// Run `script` (after [`PRELUDE`]) against STOMP port `port`; its output lines.
async fn python(script: &str, port: u16) -> Vec<String> {
    let program = format!("{PRELUDE}\n{script}");
    let child = std::process::Command::new("python3")
        .arg("-c")
        .arg(&program)
        .arg(port.to_string())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("python3 runs");
    // The script bounds its own waits (5 s each); this bounds the whole run.
    let pid = child.id();
    let run = tokio::task::spawn_blocking(move || {
        let out = child.wait_with_output();
        (pid, out)
    });
    let out = match tokio::time::timeout(Duration::from_secs(60), run).await {
        Ok(done) => done.expect("python task").1.expect("python output"),
        Err(_) => {
            let _ = std::process::Command::new("kill")
                .arg(pid.to_string())
                .status();
            panic!("python did not finish in time");
        }
    };
    assert!(
        out.status.success(),
        "python failed: {}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(str::to_owned)
        .collect()
}

fn port(env: &crate::Env) -> u16 {
    env.addr("stomp").port()
}

const LOAD_BALANCING: &str = r#"
consumers = [client() for _ in range(3)]
for i, (c, l) in enumerate(consumers):
    subscribe(c, l, "/queue/work", str(i))
p, pl = client()
for n in range(1, 10):
    send(p, pl, "/queue/work", str(n), persistent="true")
for i, (c, l) in enumerate(consumers):
    bodies = [l.messages.get(timeout=5).body for _ in range(3)]
    print(",".join(bodies))
for c, l in consumers:
    assert l.messages.empty()
"#;

#[tokio::test]
async fn three_consumers_share_a_queue_round_robin() {
    let env = crate::broker().await;
    let lines = python(LOAD_BALANCING, port(&env)).await;
    assert_eq!(lines, ["1,4,7", "2,5,8", "3,6,9"]);
}

const NACK_TO_DLQ: &str = r#"
c, l = client()
subscribe(c, l, "/queue/orders", "1", ack="client-individual")
send(c, l, "/queue/orders", "poison", persistent="true")
send(c, l, "/queue/orders", "volatile")
for _ in range(2):
    m = l.messages.get(timeout=5)
    c.nack(m.headers["ack"], receipt="nack-" + m.body)
    receipt(l, "nack-" + m.body)
subscribe(c, l, "/queue/ActiveMQ.DLQ", "2")
d = l.messages.get(timeout=5)
print(d.body)
print(d.headers["destination"])
print(d.headers["original-destination"])
print(d.headers.get("persistent"))
try:
    extra = l.messages.get(timeout=0.3)
    print("unexpected", extra.body)
except queue.Empty:
    pass
"#;

#[tokio::test]
async fn a_nacked_persistent_message_goes_to_the_dead_letter_queue() {
    let env = crate::broker().await;
    let lines = python(NACK_TO_DLQ, port(&env)).await;
    // The non-persistent one is dropped (processNonPersistent is false by default).
    assert_eq!(
        lines,
        ["poison", "/queue/ActiveMQ.DLQ", "/queue/orders", "true"]
    );
}

const NACK_WITH_REDELIVERY_POLICY: &str = r#"
c, l = client()
subscribe(c, l, "/queue/retry.a", "1", ack="client-individual")
send(c, l, "/queue/retry.a", "flaky", persistent="true")
for _ in range(2):
    m = l.messages.get(timeout=5)
    print(m.body, m.headers.get("redelivered", "false"))
    c.nack(m.headers["ack"])
subscribe(c, l, "/queue/ActiveMQ.DLQ", "2")
print("dlq", l.messages.get(timeout=5).body)
"#;

#[tokio::test]
async fn with_a_redelivery_policy_a_nacked_message_is_redelivered_first() {
    let plugin = r#"<plugins><redeliveryPlugin>
        <redeliveryPolicyMap><redeliveryPolicyMap>
          <redeliveryPolicyEntries>
            <redeliveryPolicy queue="retry.>" maximumRedeliveries="1" initialRedeliveryDelay="100" redeliveryDelay="100"/>
          </redeliveryPolicyEntries>
        </redeliveryPolicyMap></redeliveryPolicyMap>
      </redeliveryPlugin></plugins>"#;
    let env = crate::broker_with(plugin).await;
    let lines = python(NACK_WITH_REDELIVERY_POLICY, port(&env)).await;
    assert_eq!(lines, ["flaky false", "flaky true", "dlq flaky"]);
}

const HOLD_WITHOUT_ACK: &str = r#"
c, l = client()
subscribe(c, l, "/queue/jobs", "1", ack="client-individual")
send(c, l, "/queue/jobs", "job-1", persistent="true")
m = l.messages.get(timeout=5)
print(m.body, m.headers.get("redelivered", "false"))
c.disconnect()
c, l = client()
subscribe(c, l, "/queue/jobs", "1", ack="client-individual")
m = l.messages.get(timeout=5)
print(m.body, m.headers.get("redelivered", "false"))
c.ack(m.headers["ack"], receipt="acked")
receipt(l, "acked")
c.disconnect()
c, l = client()
subscribe(c, l, "/queue/jobs", "1")
try:
    print("unexpected", l.messages.get(timeout=0.3).body)
except queue.Empty:
    print("empty")
"#;

#[tokio::test]
async fn an_unacknowledged_message_is_redelivered_after_a_disconnect() {
    let env = crate::broker().await;
    let lines = python(HOLD_WITHOUT_ACK, port(&env)).await;
    assert_eq!(lines, ["job-1 false", "job-1 true", "empty"]);
}

const SEND_PERSISTENT: &str = r#"
c, l = client()
send(c, l, "/queue/kept", "durable", persistent="true")
send(c, l, "/queue/kept", "volatile")
c.disconnect()
"#;

const RECEIVE_AFTER_RESTART: &str = r#"
c, l = client()
subscribe(c, l, "/queue/kept", "1")
print(l.messages.get(timeout=5).body)
try:
    print("unexpected", l.messages.get(timeout=0.3).body)
except queue.Empty:
    pass
"#;

#[tokio::test]
async fn a_persistent_queue_message_survives_a_broker_restart() {
    let dir = tempfile::tempdir().expect("tempdir");
    let env = crate::broker_in(dir.path()).await;
    assert!(python(SEND_PERSISTENT, port(&env)).await.is_empty());
    env.broker.shutdown().await;
    let env = crate::broker_in(dir.path()).await;
    assert_eq!(python(RECEIVE_AFTER_RESTART, port(&env)).await, ["durable"]);
}

const REQUEST_REPLY: &str = r#"
server, sl = client()
subscribe(server, sl, "/queue/requests", "req")
requester, rl = client()
subscribe(requester, rl, "/temp-queue/replies", "rep")
requester.send(destination="/queue/requests", body="ping", headers={"reply-to": "/temp-queue/replies", "correlation-id": "c1"})
req = sl.messages.get(timeout=5)
print(req.headers["reply-to"].startswith("/remote-temp-queue/"))
server.send(destination=req.headers["reply-to"], body="pong", headers={"correlation-id": req.headers["correlation-id"]})
reply = rl.messages.get(timeout=5)
print(reply.body, reply.headers["correlation-id"], reply.headers["destination"])
# Another connection may not consume from it.
server.subscribe(destination=req.headers["reply-to"], id="steal")
print(sl.errors.get(timeout=5).startswith("Cannot subscribe to a remote temporary destination"))
"#;

#[tokio::test]
async fn a_temporary_queue_carries_the_reply_of_a_request() {
    let env = crate::broker().await;
    let lines = python(REQUEST_REPLY, port(&env)).await;
    assert_eq!(lines, ["True", "pong c1 /temp-queue/replies", "True"]);
}

const AUTHORIZATION: &str = r#"
u, ul = client("user", "pw")
send(u, ul, "/queue/jobs.a", "allowed")
subscribe(u, ul, "/queue/jobs.a", "1")
print(ul.messages.get(timeout=5).body)
u.send(destination="/queue/other", body="denied")
print(ul.errors.get(timeout=5))
u2, ul2 = client("user", "pw")
u2.send(destination="/queue/jobs.new", body="x")
print(ul2.errors.get(timeout=5))
u3, ul3 = client("user", "pw")
u3.subscribe(destination="/queue/admin.q", id="1")
print(ul3.errors.get(timeout=5))
"#;

#[tokio::test]
async fn queue_authorization_entries_govern_queues() {
    let security = r#"<destinations><queue physicalName="jobs.a"/></destinations>
      <plugins>
        <simpleAuthenticationPlugin><users>
          <authenticationUser username="user" password="pw" groups="users"/>
        </users></simpleAuthenticationPlugin>
        <authorizationPlugin><map><authorizationMap><authorizationEntries>
          <authorizationEntry queue="jobs.>" read="users" write="users"/>
          <authorizationEntry queue="admin.>" write="users" admin="users"/>
          <authorizationEntry topic="ActiveMQ.Advisory.>" read="users" write="users" admin="users"/>
        </authorizationEntries></authorizationMap></map></authorizationPlugin>
      </plugins>"#;
    let env = crate::broker_with(security).await;
    let lines = python(AUTHORIZATION, port(&env)).await;
    assert_eq!(
        lines,
        [
            "allowed",
            "User user is not authorized to write to: queue://other",
            "User user is not authorized to create: queue://jobs.new",
            "User user is not authorized to read from: queue://admin.q",
        ]
    );
}

const TRANSACTIONS: &str = r#"
c, l = client()
subscribe(c, l, "/queue/tx", "1", ack="client-individual")
t = c.begin()
c.send(destination="/queue/tx", body="aborted", transaction=t)
c.abort(t, receipt="aborted")
receipt(l, "aborted")
t = c.begin()
c.send(destination="/queue/tx", body="committed", transaction=t)
try:
    print("before commit", l.messages.get(timeout=0.3).body)
except queue.Empty:
    print("nothing before commit")
c.commit(t, receipt="committed")
receipt(l, "committed")
m = l.messages.get(timeout=5)
print(m.body)
# An acknowledgement in an aborted transaction never happened.
t = c.begin()
c.ack(m.headers["ack"], transaction=t)
c.abort(t)
c.disconnect()
c, l = client()
subscribe(c, l, "/queue/tx", "1", ack="client-individual")
m = l.messages.get(timeout=5)
print(m.body, m.headers.get("redelivered", "false"))
t = c.begin()
c.ack(m.headers["ack"], transaction=t)
c.commit(t, receipt="acked")
receipt(l, "acked")
c.disconnect()
c, l = client()
subscribe(c, l, "/queue/tx", "1")
try:
    print("unexpected", l.messages.get(timeout=0.3).body)
except queue.Empty:
    print("empty")
"#;

#[tokio::test]
async fn queue_sends_and_acks_in_transactions_happen_at_commit_only() {
    let env = crate::broker().await;
    let lines = python(TRANSACTIONS, port(&env)).await;
    assert_eq!(
        lines,
        [
            "nothing before commit",
            "committed",
            "committed true",
            "empty"
        ]
    );
}

const EXCLUSIVE: &str = r#"
plain, pl = client()
subscribe(plain, pl, "/queue/ex", "p")
owner, ol = client()
subscribe(owner, ol, "/queue/ex", "o", **{"activemq.exclusive": "true"})
p, ppl = client()
for n in range(1, 5):
    send(p, ppl, "/queue/ex", str(n))
print(",".join(ol.messages.get(timeout=5).body for _ in range(4)))
print(pl.messages.empty())
owner.disconnect()
send(p, ppl, "/queue/ex", "5")
print(pl.messages.get(timeout=5).body)
"#;

#[tokio::test]
async fn an_exclusive_consumer_gets_every_message_while_it_lives() {
    let env = crate::broker().await;
    let lines = python(EXCLUSIVE, port(&env)).await;
    assert_eq!(lines, ["1,2,3,4", "True", "5"]);
}

/// A SEND to a queue while `memoryUsage` is full is held (the connection stops reading) and
/// completes, RECEIPT and all, once a consumer frees memory: nothing is refused or dropped.
#[tokio::test]
async fn a_send_past_memory_usage_waits_for_room_then_completes() {
    let env = crate::broker_with(
        r#"<systemUsage><systemUsage>
             <memoryUsage><memoryUsage limit="4 kb"/></memoryUsage>
           </systemUsage></systemUsage>"#,
    )
    .await;
    let body = "x".repeat(1000);
    let mut producer = env.connected(&[]).await;
    // Each message costs its body, name and 128 bytes: the fourth one reaches the limit.
    for n in 1..=5 {
        let receipt = format!("r{n}");
        producer
            .send(
                "SEND",
                &[("destination", "/queue/full"), ("receipt", &receipt)],
                &body,
            )
            .await;
    }
    for n in 1..=4 {
        let receipt = producer.recv().await;
        assert_eq!(receipt.header("receipt-id"), Some(format!("r{n}").as_str()));
    }
    assert!(
        producer
            .recv_within(std::time::Duration::from_millis(300))
            .await
            .is_none(),
        "the fifth SEND is held"
    );
    let mut consumer = env.connected(&[]).await;
    consumer
        .send(
            "SUBSCRIBE",
            &[("destination", "/queue/full"), ("id", "c")],
            "",
        )
        .await;
    // The fifth MESSAGE exists only once the held SEND went through.
    for _ in 0..5 {
        assert_eq!(consumer.recv().await.command, "MESSAGE");
    }
    let held = producer.recv().await;
    assert_eq!(held.header("receipt-id"), Some("r5"));
}

/// The `ferromq` binary with a store and a STOMP connector on `port` (config in `dir`).
fn spawn_durable(dir: &std::path::Path, port: u16) -> crate::support::ChildGuard {
    let config = dir.join("activemq.xml");
    let xml = crate::support::BrokerXml::new()
        .name("crash")
        .kahadb(&dir.join("kahadb"))
        .connector("stomp", &format!("stomp://127.0.0.1:{port}"))
        .build();
    std::fs::write(&config, xml).expect("write config");
    crate::support::ChildGuard(crate::support::wire::spawn_broker(&config))
}

/// A connected STOMP client, once the broker listens on `port`.
async fn connect_when_up(port: u16) -> crate::client::StompClient {
    crate::client::StompClient::connected_when_up(([127, 0, 0, 1], port).into(), &[]).await
}

/// A persistent SEND whose RECEIPT came and an ACK whose RECEIPT came are both kept through
/// a SIGKILL of the broker: after the restart the queue holds exactly the messages that were
/// received and not acknowledged, in order.
#[tokio::test]
async fn receipted_sends_and_acks_survive_a_sigkill() {
    let dir = tempfile::tempdir().expect("tempdir");
    let port = crate::support::free_port();
    let mut broker = spawn_durable(dir.path(), port);
    let mut producer = connect_when_up(port).await;
    for n in 0..20 {
        let (body, receipt) = (n.to_string(), format!("s{n}"));
        producer
            .send(
                "SEND",
                &[
                    ("destination", "/queue/crash"),
                    ("persistent", "true"),
                    ("receipt", &receipt),
                ],
                &body,
            )
            .await;
        assert_eq!(producer.recv().await.header("receipt-id"), Some(&*receipt));
    }
    let mut consumer = connect_when_up(port).await;
    consumer
        .send(
            "SUBSCRIBE",
            &[
                ("destination", "/queue/crash"),
                ("id", "c"),
                ("ack", "client-individual"),
            ],
            "",
        )
        .await;
    let mut acks = Vec::new();
    for n in 0..20 {
        let m = consumer.recv().await;
        assert_eq!(m.body_text(), n.to_string());
        acks.push(m.header("ack").expect("ack header").to_owned());
    }
    for (n, id) in acks.iter().take(10).enumerate() {
        let receipt = format!("a{n}");
        consumer
            .send("ACK", &[("id", id), ("receipt", &receipt)], "")
            .await;
        assert_eq!(consumer.recv().await.header("receipt-id"), Some(&*receipt));
    }
    broker.kill().expect("SIGKILL");
    broker.wait().expect("reaped");

    let _broker = spawn_durable(dir.path(), port);
    let mut consumer = connect_when_up(port).await;
    consumer
        .send(
            "SUBSCRIBE",
            &[("destination", "/queue/crash"), ("id", "c")],
            "",
        )
        .await;
    for n in 10..20 {
        let m = consumer.recv().await;
        assert_eq!(m.body_text(), n.to_string());
        assert_eq!(m.header("persistent"), Some("true"));
    }
    assert!(
        consumer
            .recv_within(Duration::from_millis(300))
            .await
            .is_none(),
        "acknowledged messages stay gone"
    );
}

/// One producer's SENDs reach a queue's consumer in the order sent, also when the producer
/// does not wait for each RECEIPT: the store answers persistent sends in no fixed order, and
/// a queue took each message in at its answer (a pipelining producer saw about a quarter of
/// 2,000 out of order). Every fifth SEND is non-persistent: it waits for the persistent ones
/// before it. The consumer reads while the producer sends.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pipelined_sends_are_consumed_in_the_order_sent() {
    const SENDS: usize = 2_000;
    let dir = tempfile::tempdir().expect("tempdir");
    let port = crate::support::free_port();
    let _broker = spawn_durable(dir.path(), port);
    let mut consumer = connect_when_up(port).await;
    consumer
        .send(
            "SUBSCRIBE",
            &[
                ("destination", "/queue/order"),
                ("id", "c"),
                ("receipt", "sub"),
            ],
            "",
        )
        .await;
    assert_eq!(consumer.recv().await.header("receipt-id"), Some("sub"));
    let reader = tokio::spawn(async move {
        let mut bodies = Vec::with_capacity(SENDS);
        while bodies.len() < SENDS {
            let Some(m) = consumer.recv_within(Duration::from_secs(10)).await else {
                break;
            };
            assert_eq!(m.command, "MESSAGE", "{m:?}");
            bodies.push(m.body_text().parse::<usize>().expect("a number"));
        }
        bodies
    });
    let mut producer = connect_when_up(port).await;
    let mut frames = Vec::new();
    for n in 0..SENDS {
        let persistent = if n % 5 == 4 { "false" } else { "true" };
        frames.extend_from_slice(
            crate::client::frame(
                "SEND",
                &[
                    ("destination", "/queue/order"),
                    ("persistent", persistent),
                    ("receipt", &format!("s{n}")),
                ],
                &n.to_string(),
            )
            .as_bytes(),
        );
    }
    producer.send_raw(&frames).await;
    for n in 0..SENDS {
        let receipt = producer.recv().await;
        assert_eq!(receipt.header("receipt-id"), Some(&*format!("s{n}")));
    }
    let bodies = reader.await.expect("reader");
    assert_eq!(bodies.len(), SENDS, "every message consumed");
    let out_of_order: Vec<(usize, usize)> = bodies
        .windows(2)
        .filter(|w| w[1] < w[0])
        .map(|w| (w[0], w[1]))
        .collect();
    assert!(
        out_of_order.is_empty(),
        "{} inversions, first: {:?}",
        out_of_order.len(),
        &out_of_order[..out_of_order.len().min(5)]
    );
}

/// A transaction's SENDs enter the queue before the SENDs its connection makes after the
/// COMMIT, whatever each one's persistence (docs/stomp.md: a SEND after the COMMIT is routed
/// after the COMMIT's). Before the COMMIT reserved the transaction's places, plain SENDs kept
/// or queued sooner overtook it (a newcomer saw 36-382 of 460 out of order).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sends_after_a_commit_are_consumed_after_the_transaction() {
    const ROUNDS: usize = 20;
    let dir = tempfile::tempdir().expect("tempdir");
    let port = crate::support::free_port();
    let _broker = spawn_durable(dir.path(), port);
    for (in_tx, after) in [
        ("true", "true"),
        ("true", "false"),
        ("false", "true"),
        ("false", "false"),
    ] {
        let q = format!("/queue/tx-order-{in_tx}-{after}");
        let mut consumer = connect_when_up(port).await;
        consumer
            .send(
                "SUBSCRIBE",
                &[("destination", &q), ("id", "c"), ("receipt", "sub")],
                "",
            )
            .await;
        assert_eq!(consumer.recv().await.header("receipt-id"), Some("sub"));
        let mut producer = connect_when_up(port).await;
        let mut frames = String::new();
        let mut order = Vec::new();
        for round in 0..ROUNDS {
            let tx = format!("t{round}");
            frames += &crate::client::frame("BEGIN", &[("transaction", &tx)], "");
            for n in 0..3 {
                let body = format!("{round}/tx{n}");
                frames += &crate::client::frame(
                    "SEND",
                    &[
                        ("destination", &q),
                        ("persistent", in_tx),
                        ("transaction", &tx),
                    ],
                    &body,
                );
                order.push(body);
            }
            frames += &crate::client::frame("COMMIT", &[("transaction", &tx)], "");
            for n in 0..5 {
                let body = format!("{round}/plain{n}");
                frames += &crate::client::frame(
                    "SEND",
                    &[("destination", &q), ("persistent", after)],
                    &body,
                );
                order.push(body);
            }
        }
        frames += &crate::client::frame("DISCONNECT", &[("receipt", "done")], "");
        producer.send_raw(frames.as_bytes()).await;
        assert_eq!(producer.recv().await.header("receipt-id"), Some("done"));
        let mut got = Vec::new();
        while got.len() < order.len() {
            let Some(m) = consumer.recv_within(Duration::from_secs(10)).await else {
                break;
            };
            got.push(m.body_text());
        }
        assert_eq!(
            got, order,
            "transacted persistent={in_tx}, after persistent={after}: in the order sent"
        );
    }
}
