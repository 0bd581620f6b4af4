#!/usr/bin/env python3
"""STOMP interoperability: stomp.py (PyPI, 9.x) and paho-mqtt 2.x on one broker.

Prints one PASS/FAIL line per test (run.sh counts them); exits non-zero when one failed.

Usage: stomp_test.py --port MQTT_PORT --stomp-port STOMP_PORT --run-id ID
"""

import argparse
import queue
import socket
import sys
import threading
import time

import paho.mqtt.client as mqtt
import stomp

WAIT = 10.0
failures = 0


def report(name, ok, detail=""):
    global failures
    if ok:
        print(f"PASS {name}", flush=True)
    else:
        failures += 1
        print(f"FAIL {name}{': ' + detail if detail else ''}", flush=True)


class Inbox(stomp.ConnectionListener):
    """Every MESSAGE, RECEIPT and ERROR frame a stomp.py connection receives."""

    def __init__(self):
        self.frames = queue.Queue()
        self.errors = []
        self.receipts = set()
        self.changed = threading.Condition()

    def on_message(self, frame):
        self.frames.put(frame)

    def on_receipt(self, frame):
        with self.changed:
            self.receipts.add(frame.headers.get("receipt-id"))
            self.changed.notify_all()

    def on_error(self, frame):
        with self.changed:
            self.errors.append(frame)
            self.changed.notify_all()

    def wait_receipt(self, receipt, within=WAIT):
        """Wait for the RECEIPT of `receipt`; raise on an ERROR or after `within` seconds."""
        deadline = time.monotonic() + within
        with self.changed:
            while receipt not in self.receipts:
                if self.errors:
                    error = self.errors[-1]
                    raise RuntimeError(f"ERROR instead of receipt {receipt}: "
                                       f"{error.headers.get('message')}")
                left = deadline - time.monotonic()
                if left <= 0:
                    raise RuntimeError(f"no RECEIPT {receipt} within {within} s")
                self.changed.wait(left)

    def take(self, n, within=WAIT):
        got, deadline = [], time.monotonic() + within
        while len(got) < n:
            left = deadline - time.monotonic()
            if left <= 0:
                break
            try:
                got.append(self.frames.get(timeout=left))
            except queue.Empty:
                break
        return got


def stomp_connection(port, version="1.2"):
    """A connected stomp.py connection (anonymous login) and its inbox."""
    kind = {"1.1": stomp.Connection11, "1.2": stomp.Connection12}[version]
    conn = kind([("127.0.0.1", port)], heartbeats=(0, 0))
    inbox = Inbox()
    conn.set_listener("inbox", inbox)
    conn.connect(wait=True)
    return conn, inbox


def subscribe_with_receipt(conn, inbox, destination, sub_id, ack="auto"):
    """SUBSCRIBE and wait for its RECEIPT."""
    conn.subscribe(destination, sub_id, ack=ack, headers={"receipt": f"sub-{sub_id}"})
    inbox.wait_receipt(f"sub-{sub_id}")


def send_with_receipt(conn, inbox, destination, body, receipt, headers=None):
    """SEND and wait for its RECEIPT."""
    conn.send(destination, body, headers=dict(headers or {}, receipt=receipt))
    inbox.wait_receipt(receipt)


def mqtt_client(port, client_id):
    """A connected paho MQTT 3.1.1 client with its loop running, and a queue of its messages."""
    messages = queue.Queue()
    connected = threading.Event()
    client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=client_id,
                         protocol=mqtt.MQTTv311)
    client.on_message = lambda _c, _u, msg: messages.put(msg)
    client.on_connect = lambda _c, _u, _f, rc, _p=None: connected.set()
    client.connect("127.0.0.1", port)
    client.loop_start()
    if not connected.wait(WAIT):
        raise RuntimeError("no CONNACK")
    return client, messages


def mqtt_subscribe(client, topic, qos):
    subscribed = threading.Event()
    client.on_subscribe = lambda *_a: subscribed.set()
    client.subscribe(topic, qos)
    if not subscribed.wait(WAIT):
        raise RuntimeError(f"no SUBACK for {topic}")


def test_stomp_send_reaches_mqtt(args):
    name = "stomp.py SEND /topic/<id>.foo.bar (persistent) reaches paho on <id>/foo/+ at QoS 1"
    client, messages = mqtt_client(args.port, f"stomp-in-{args.run_id}")
    try:
        mqtt_subscribe(client, f"{args.run_id}/foo/+", 1)
        conn, inbox = stomp_connection(args.stomp_port)
        send_with_receipt(conn, inbox, f"/topic/{args.run_id}.foo.bar", "from stomp", "s1",
                          {"persistent": "true"})
        send_with_receipt(conn, inbox, f"/topic/{args.run_id}.foo.baz", "not persistent", "s2")
        conn.disconnect()
        got = []
        for _ in range(2):
            try:
                msg = messages.get(timeout=WAIT)
                got.append((msg.topic, msg.qos, msg.payload))
            except queue.Empty:
                break
        expected = [(f"{args.run_id}/foo/bar", 1, b"from stomp"),
                    (f"{args.run_id}/foo/baz", 0, b"not persistent")]
        report(name, got == expected, f"expected {expected}, got {got}")
    finally:
        client.loop_stop()
        client.disconnect()


def test_mqtt_publish_reaches_stomp(args):
    name = "paho PUBLISH <id>/a/b (QoS 1) reaches stomp.py on /topic/<id>.a.> (persistent)"
    conn, inbox = stomp_connection(args.stomp_port, "1.1")
    subscribe_with_receipt(conn, inbox, f"/topic/{args.run_id}.a.>", "s")
    client, _ = mqtt_client(args.port, f"stomp-out-{args.run_id}")
    try:
        client.publish(f"{args.run_id}/a/b", b"from mqtt", qos=1).wait_for_publish(WAIT)
        got = inbox.take(1)
        ok = (len(got) == 1 and got[0].body == "from mqtt"
              and got[0].headers.get("destination") == f"/topic/{args.run_id}.a.b"
              and got[0].headers.get("persistent") == "true")
        report(name, ok, f"got {[(f.headers, f.body) for f in got]}")
    finally:
        client.loop_stop()
        client.disconnect()
        conn.disconnect()


def test_queue_load_balancing(args):
    name = "a queue load-balances 9 messages over three stomp.py consumers, each once"
    queue_name = f"/queue/{args.run_id}.balance"
    consumers = []
    for i in range(3):
        conn, inbox = stomp_connection(args.stomp_port)
        subscribe_with_receipt(conn, inbox, queue_name, f"c{i}")
        consumers.append((conn, inbox))
    producer, producer_inbox = stomp_connection(args.stomp_port)
    for i in range(9):
        send_with_receipt(producer, producer_inbox, queue_name, f"m{i}", f"lb{i}")
    producer.disconnect()
    # Read until all 9 are in (from whichever consumer), then look at the split.
    got, deadline = {}, time.monotonic() + WAIT
    while sum(len(v) for v in got.values()) < 9 and time.monotonic() < deadline:
        for i, (_, inbox) in enumerate(consumers):
            for frame in inbox.take(1, within=0.05):
                got.setdefault(i, []).append(frame.body)
    bodies = sorted(b for v in got.values() for b in v)
    ok = bodies == [f"m{i}" for i in range(9)] and len(got) == 3
    report(name, ok, f"per consumer: {got}")
    for conn, _ in consumers:
        conn.disconnect()


def test_nack_and_redelivery(args):
    name_dlq = "client-individual: a NACKed persistent message lands in ActiveMQ.DLQ"
    name_redeliver = ("client-individual: an unacknowledged message is redelivered after a "
                      "disconnect, redelivered:true")
    queue_name = f"/queue/{args.run_id}.nack"
    producer, producer_inbox = stomp_connection(args.stomp_port)
    send_with_receipt(producer, producer_inbox, queue_name, "nacked", "n1",
                      {"persistent": "true"})
    send_with_receipt(producer, producer_inbox, queue_name, "kept", "n2",
                      {"persistent": "true"})
    producer.disconnect()
    conn, inbox = stomp_connection(args.stomp_port)
    subscribe_with_receipt(conn, inbox, queue_name, "s", ack="client-individual")
    first = inbox.take(2)
    by_body = {f.body: f for f in first}
    if set(by_body) != {"nacked", "kept"}:
        report(name_dlq, False, f"got {[f.body for f in first]}")
        report(name_redeliver, False, "no first delivery")
        conn.disconnect()
        return
    # NACK with a receipt, so that it was processed before the connection goes.
    conn.nack(by_body["nacked"].headers["ack"], receipt="nacked")
    inbox.wait_receipt("nacked")
    # Leave "kept" unacknowledged: drop the connection without DISCONNECT.
    conn.transport.socket.shutdown(socket.SHUT_RDWR)
    dlq, dlq_inbox = stomp_connection(args.stomp_port)
    subscribe_with_receipt(dlq, dlq_inbox, "/queue/ActiveMQ.DLQ", "d")
    dead = [f for f in dlq_inbox.take(1) if f.body == "nacked"]
    report(name_dlq, len(dead) == 1, f"DLQ gave {[(f.headers, f.body) for f in dead]}")
    dlq.disconnect()
    again, again_inbox = stomp_connection(args.stomp_port)
    subscribe_with_receipt(again, again_inbox, queue_name, "s2", ack="client-individual")
    redelivered = again_inbox.take(1)
    ok = (len(redelivered) == 1 and redelivered[0].body == "kept"
          and redelivered[0].headers.get("redelivered") == "true")
    report(name_redeliver, ok, f"got {[(f.headers, f.body) for f in redelivered]}")
    if redelivered:
        again.ack(redelivered[0].headers["ack"])
    again.disconnect()


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--stomp-port", type=int, required=True)
    parser.add_argument("--run-id", required=True)
    args = parser.parse_args()
    args.run_id = "stomp" + "".join(ch for ch in args.run_id if ch.isalnum())
    for test in (test_stomp_send_reaches_mqtt, test_mqtt_publish_reaches_stomp,
                 test_queue_load_balancing, test_nack_and_redelivery):
        try:
            test(args)
        except Exception as e:  # one test's failure must not hide the others
            report(test.__name__, False, f"{type(e).__name__}: {e}")
    sys.exit(1 if failures else 0)


if __name__ == "__main__":
    main()
