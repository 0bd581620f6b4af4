//! Python clients: STOMP over WebSocket as a browser-style client speaks it
//! (`websocket-client` sending raw frames, two in one WebSocket message), `stomp.py`'s
//! WebSocket connection, and `stomp.py` over TCP. Each script prints `ready` once subscribed,
//! then what it received.

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use ferromq::protocol::QoS;
use tokio::sync::mpsc;

use crate::support::{publish_packet, RawClient, STEP};

const WEBSOCKET_CLIENT: &str = r#"
import sys, websocket
ws = websocket.create_connection("ws://127.0.0.1:%s/" % sys.argv[1], subprotocols=["v12.stomp"])
# CONNECT and SUBSCRIBE in one WebSocket message
ws.send("CONNECT\naccept-version:1.2\nhost:localhost\n\n\x00SUBSCRIBE\nid:0\ndestination:/topic/browser.*\nreceipt:s\n\n\x00")
frames = []
while len(frames) < 2:
    frames.append(ws.recv())
assert frames[0].startswith("CONNECTED"), frames
assert frames[1].startswith("RECEIPT"), frames
print("ready", flush=True)
m = ws.recv()
print(m.split("\n")[0], flush=True)
print([l for l in m.split("\n") if l.startswith("destination:")][0], flush=True)
print(m.split("\n\n", 1)[1].rstrip("\x00"), flush=True)
"#;

const STOMP_PY_WS: &str = r#"
import sys, time, queue, stomp
got = queue.Queue()
class L(stomp.ConnectionListener):
    def on_message(self, frame):
        got.put(frame)
c = stomp.WSStompConnection([("127.0.0.1", int(sys.argv[1]))], ws_path="/")
c.set_listener("l", L())
c.connect(wait=True)
c.subscribe(destination="/topic/py.ws", id="1", ack="auto", headers={"receipt": "s"})
time.sleep(0.3)
print("ready", flush=True)
f = got.get(timeout=5)
print(f.body, flush=True)
print(f.headers["destination"], flush=True)
c.disconnect()
"#;

const STOMP_PY_TCP: &str = r#"
import sys, stomp
c = stomp.Connection([("127.0.0.1", int(sys.argv[1]))])
c.connect(wait=True)
c.send(destination="/topic/foo.bar", body="from stomp.py", headers={"persistent": "true", "x-k": "v"}, receipt="r1")
import time; time.sleep(0.2)
c.disconnect(receipt="bye")
print("sent", flush=True)
"#;

/// A python child whose stdout lines arrive on a channel (read by a thread of its own).
struct Python {
    child: Child,
    lines: mpsc::UnboundedReceiver<String>,
}

impl Drop for Python {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Python {
    fn run(script: &str, port: u16) -> Python {
        let mut child = Command::new("python3")
            .arg("-c")
            .arg(script)
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
        Python { child, lines }
    }

    async fn line(&mut self) -> String {
        tokio::time::timeout(STEP, self.lines.recv())
            .await
            .expect("python answers in time")
            .expect("a line (python exited early?)")
    }

    /// Wait for a successful exit.
    async fn succeeds(&mut self) {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        loop {
            if let Some(status) = self.child.try_wait().expect("status") {
                assert!(status.success(), "python failed: {status}");
                return;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "python did not exit"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

#[tokio::test]
async fn websocket_client_frames_in_one_message_and_mqtt_publish_reaches_it() {
    let env = crate::broker().await;
    let mut py = Python::run(WEBSOCKET_CLIENT, env.addr("ws").port());
    assert_eq!(py.line().await, "ready");
    let mut mqtt = RawClient::connected(env.mqtt(), "pub", true).await.0;
    mqtt.send(publish_packet(
        "browser/x",
        b"from mqtt",
        QoS::AtMostOnce,
        None,
        false,
    ))
    .await;
    assert_eq!(py.line().await, "MESSAGE");
    assert_eq!(py.line().await, "destination:/topic/browser.x");
    assert_eq!(py.line().await, "from mqtt");
    py.succeeds().await;
}

#[tokio::test]
async fn stomp_py_over_websocket_receives_a_stomp_send() {
    let env = crate::broker().await;
    let mut py = Python::run(STOMP_PY_WS, env.addr("ws").port());
    assert_eq!(py.line().await, "ready");
    let mut sender = env.connected(&[]).await;
    sender
        .send("SEND", &[("destination", "/topic/py.ws")], "hi python")
        .await;
    assert_eq!(py.line().await, "hi python");
    assert_eq!(py.line().await, "/topic/py.ws");
    py.succeeds().await;
}

#[tokio::test]
async fn stomp_py_send_reaches_an_mqtt_subscriber_at_qos_1() {
    let env = crate::broker().await;
    let mut mqtt = RawClient::connected_v5(env.mqtt(), "sub").await;
    mqtt.subscribe(1, &[("foo/+", QoS::AtLeastOnce)]).await;
    let mut py = Python::run(STOMP_PY_TCP, env.addr("stomp").port());
    assert_eq!(py.line().await, "sent");
    py.succeeds().await;
    let p = mqtt.recv_publish().await;
    assert_eq!(p.topic, "foo/bar");
    assert_eq!(p.payload.as_ref(), b"from stomp.py");
    assert_eq!(p.qos, QoS::AtLeastOnce);
    let props = p.properties.expect("properties");
    assert!(props
        .user_properties
        .contains(&("x-k".to_owned(), "v".to_owned())));
}
