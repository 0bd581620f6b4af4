//! JMS message selectors on STOMP SUBSCRIBE (`selector` header), driven by stomp.py over the
//! broker's `stomp://` connector. Each python script runs one scenario to its end and prints
//! what its consumers received; the same scripts give the same output against Apache ActiveMQ
//! 5.17 (its STOMP connector converts string headers compared with numbers, as we do).

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use bytes::Bytes;
use ferromq::protocol::{Packet, Properties, Publish, QoS};

use tokio::sync::mpsc;

use crate::support::{BrokerXml, RawClient, TestBroker};

/// Helpers every scenario starts with: a connection over TCP, a listener that queues messages,
/// errors and receipts, SUBSCRIBE that waits for its receipt, and reading bodies up to a marker.
const COMMON: &str = r#"
import sys, queue, stomp

port = int(sys.argv[1])

class Listener(stomp.ConnectionListener):
    def __init__(self):
        self.messages = queue.Queue()
        self.errors = queue.Queue()
        self.receipts = queue.Queue()
    def on_message(self, frame):
        self.messages.put(frame)
    def on_error(self, frame):
        print("ERROR frame:", frame.headers.get("message"), file=sys.stderr, flush=True)
        self.errors.put(frame)
    def on_receipt(self, frame):
        self.receipts.put(frame.headers.get("receipt-id"))

def client():
    c = stomp.Connection12([("127.0.0.1", port)])
    l = Listener()
    c.set_listener("l", l)
    c.connect(wait=True)
    return c, l

def subscribe(c, l, dest, sub_id, selector=None, ack="auto", **headers):
    h = dict(headers)
    if selector is not None:
        h["selector"] = selector
    h["receipt"] = "sub-" + sub_id
    c.subscribe(dest, id=sub_id, ack=ack, headers=h)
    got = l.receipts.get(timeout=5)
    assert got == "sub-" + sub_id, got

def bodies_until(l, last):
    out = []
    while True:
        f = l.messages.get(timeout=5)
        out.append(f.body)
        if f.body == last:
            return out
"#;

/// A topic subscription with a selector, client-individual acks and a window of one: the
/// messages it does not select never take the window (the selected one arrives without any
/// ACK); `count > 5` selects `count:10` (a string header compared with a number is converted,
/// as ActiveMQ's STOMP connector does) and not `count:abc`.
const TOPIC: &str = r#"
c, l = client()
subscribe(c, l, "/topic/sel.prices", "1", "region = 'eu' AND count > 5",
          ack="client-individual", **{"activemq.prefetchSize": "1"})
for region, count, body in [("us", "10", "wrong-region"), ("eu", "3", "too-few"),
                            ("eu", "abc", "not-a-number"), ("eu", "10", "eu-10")]:
    c.send("/topic/sel.prices", body, headers={"region": region, "count": count})
f = l.messages.get(timeout=5)
print(f.body, flush=True)
c.ack(f.headers["ack"])
c.send("/topic/sel.prices", "eu-6", headers={"region": "eu", "count": "6"})
print(l.messages.get(timeout=5).body, flush=True)
c.disconnect()
"#;

/// Two consumers of one queue with selectors: each gets its kind (`JMSPriority` is the
/// `priority` header); a message neither selects stays queued until a consumer without a
/// selector comes.
const QUEUE: &str = r#"
a, la = client()
subscribe(a, la, "/queue/sel.jobs", "a", "kind = 'a'")
b, lb = client()
subscribe(b, lb, "/queue/sel.jobs", "b", "kind = 'b' AND JMSPriority > 4")
s, _ = client()
for k, prio, body in [("a", "4", "a1"), ("b", "9", "b1"), ("c", "4", "c1"), ("b", "1", "b-low"),
                      ("a", "4", "a2"), ("b", "9", "b2")]:
    s.send("/queue/sel.jobs", body, headers={"kind": k, "priority": prio})
print(",".join(bodies_until(la, "a2")), flush=True)
print(",".join(bodies_until(lb, "b2")), flush=True)
r, lr = client()
subscribe(r, lr, "/queue/sel.jobs", "rest")
print(",".join(sorted([lr.messages.get(timeout=5).body for _ in range(2)])), flush=True)
for x in (a, b, s, r):
    x.disconnect()
"#;

/// An invalid selector: an ERROR frame whose message is the parser's.
const INVALID: &str = r#"
c, l = client()
c.subscribe("/topic/sel.bad", id="1", headers={"selector": "color = ", "receipt": "r"})
e = l.errors.get(timeout=5)
print(e.headers.get("message", ""), flush=True)
"#;

/// A selector reading JMS headers and an MQTT 5 publisher's user properties.
const FROM_MQTT: &str = r#"
c, l = client()
subscribe(c, l, "/topic/sel.>", "1",
          "JMSDeliveryMode = 'PERSISTENT' AND JMSDestination LIKE 'topic://sel.%' AND site IN ('a', 'b')")
print("ready", flush=True)
print(",".join(bodies_until(l, "end")), flush=True)
c.disconnect()
"#;

async fn broker() -> TestBroker {
    let xml = BrokerXml::new()
        .name("selectors")
        .connector("stomp", "stomp://127.0.0.1:0")
        .connector("mqtt", "mqtt://127.0.0.1:0")
        .build();
    TestBroker::from_xml(&xml).await
}

fn addr(broker: &TestBroker, name: &str) -> std::net::SocketAddr {
    broker
        .handle
        .listener_addrs()
        .iter()
        .find(|(n, _)| n == name)
        .map(|(_, a)| *a)
        .expect("listener")
}

/// A running scenario: `COMMON` + `script` under python3, its stdout lines on a channel (read
/// by a thread of its own); killed when dropped.
struct Scenario {
    child: Child,
    lines: mpsc::UnboundedReceiver<String>,
}

impl Drop for Scenario {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Scenario {
    fn start(script: &str, port: u16) -> Scenario {
        let mut child = Command::new("python3")
            .arg("-c")
            .arg(format!("{COMMON}\n{script}"))
            .arg(port.to_string())
            .stdout(Stdio::piped())
            .spawn()
            .expect("python3 runs");
        let stdout = child.stdout.take().expect("stdout");
        let (tx, lines) = mpsc::unbounded_channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        Scenario { child, lines }
    }

    async fn line(&mut self) -> String {
        tokio::time::timeout(Duration::from_secs(15), self.lines.recv())
            .await
            .expect("python answers in time")
            .expect("a line (did the python script fail? see its stderr)")
    }

    /// Its stdout ends (the script is done) and it exits successfully.
    async fn succeeds(mut self) {
        let end = tokio::time::timeout(Duration::from_secs(15), self.lines.recv())
            .await
            .expect("python ends in time");
        assert_eq!(end, None, "no more output");
        let status = self.child.wait().expect("python status");
        assert!(status.success(), "python failed: {status}");
    }
}

#[tokio::test]
async fn topic_subscription_gets_only_selected_messages_and_skips_the_rest_without_acks() {
    let broker = broker().await;
    let mut py = Scenario::start(TOPIC, addr(&broker, "stomp").port());
    assert_eq!(py.line().await, "eu-10");
    assert_eq!(py.line().await, "eu-6");
    py.succeeds().await;
}

#[tokio::test]
async fn queue_consumers_get_what_their_selectors_select_and_the_rest_waits() {
    let broker = broker().await;
    let mut py = Scenario::start(QUEUE, addr(&broker, "stomp").port());
    assert_eq!(py.line().await, "a1,a2");
    assert_eq!(py.line().await, "b1,b2");
    assert_eq!(py.line().await, "b-low,c1");
    py.succeeds().await;
}

#[tokio::test]
async fn invalid_selector_is_an_error_frame_with_the_parsers_message() {
    let broker = broker().await;
    let mut py = Scenario::start(INVALID, addr(&broker, "stomp").port());
    assert_eq!(
        py.line().await,
        "invalid selector at column 9: expected a value, an identifier or (, found the end of \
         the selector"
    );
    py.succeeds().await;
}

#[tokio::test]
async fn selector_reads_jms_headers_and_mqtt5_user_properties() {
    let broker = broker().await;
    let mut py = Scenario::start(FROM_MQTT, addr(&broker, "stomp").port());
    assert_eq!(py.line().await, "ready");
    let mut mqtt = RawClient::connected_v5(addr(&broker, "mqtt"), "pub").await;
    for (packet_id, (topic, qos, site, body)) in (1u16..).zip([
        ("sel/x", QoS::AtLeastOnce, "a", "a-persistent"),
        ("sel/x", QoS::AtMostOnce, "a", "a-not-persistent"),
        ("sel/y", QoS::AtLeastOnce, "c", "other-site"),
        ("sel/y/z", QoS::AtLeastOnce, "b", "b-deeper"),
        ("sel/x", QoS::AtLeastOnce, "b", "end"),
    ]) {
        let properties = Properties {
            user_properties: vec![("site".into(), site.into())],
            ..Properties::default()
        };
        mqtt.send(Packet::Publish(Publish {
            dup: false,
            qos,
            retain: false,
            topic: topic.into(),
            packet_id: (qos != QoS::AtMostOnce).then_some(packet_id),
            payload: Bytes::copy_from_slice(body.as_bytes()),
            properties: Some(Box::new(properties)),
        }))
        .await;
        if qos != QoS::AtMostOnce {
            assert!(matches!(mqtt.recv().await, Packet::PubAck(_)), "PUBACK");
        }
    }
    assert_eq!(py.line().await, "a-persistent,b-deeper,end");
    py.succeeds().await;
}
