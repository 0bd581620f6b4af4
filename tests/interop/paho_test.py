#!/usr/bin/env python3
"""Interop tests with Eclipse paho-mqtt (2.x callback API) against a broker on 127.0.0.1.

Prints one PASS/FAIL/SKIP line per test; exits 1 when any test failed. Every wait is bounded.
Usage: paho_test.py --port N [--ws-port N] [--wss-port N --cafile CA.pem] [--run-id ID]
"""

import argparse
import sys
import threading
import time
import traceback

try:
    import paho.mqtt.client as mqtt
except ImportError:
    print("FAIL paho: paho-mqtt is not installed (pip install 'paho-mqtt>=2')")
    sys.exit(1)

if not hasattr(mqtt, "CallbackAPIVersion"):
    print("FAIL paho: paho-mqtt 2.x is required (found %s)" % getattr(mqtt, "__version__", "?"))
    sys.exit(1)

TIMEOUT_S = 10.0


class TestFailure(Exception):
    pass


class Client:
    """A paho client with its events turned into waitable queues."""

    def __init__(self, port, client_id="", clean_session=True, protocol=mqtt.MQTTv311,
                 transport="tcp", cafile=None):
        self.port = port
        self.client = mqtt.Client(
            mqtt.CallbackAPIVersion.VERSION2,
            client_id=client_id,
            clean_session=clean_session,
            protocol=protocol,
            transport=transport,
        )
        if cafile:
            # Verifies the broker's certificate (chain to cafile, and host name 127.0.0.1).
            self.client.tls_set(ca_certs=cafile)
        self.lock = threading.Condition()
        self.connack = None  # (session_present, reason_code)
        self.messages = []
        self.subacks = {}
        self.unsubacks = set()
        self.disconnected = False
        self.client.on_connect = self._on_connect
        self.client.on_message = self._on_message
        self.client.on_subscribe = self._on_subscribe
        self.client.on_unsubscribe = self._on_unsubscribe
        self.client.on_disconnect = self._on_disconnect

    def _on_connect(self, client, userdata, flags, reason_code, properties):
        with self.lock:
            self.connack = (flags.session_present, reason_code)
            self.lock.notify_all()

    def _on_message(self, client, userdata, msg):
        with self.lock:
            self.messages.append((msg.topic, msg.payload, msg.qos, msg.retain))
            self.lock.notify_all()

    def _on_subscribe(self, client, userdata, mid, reason_code_list, properties):
        with self.lock:
            self.subacks[mid] = reason_code_list
            self.lock.notify_all()

    def _on_unsubscribe(self, client, userdata, mid, reason_code_list, properties):
        with self.lock:
            self.unsubacks.add(mid)
            self.lock.notify_all()

    def _on_disconnect(self, client, userdata, flags, reason_code, properties):
        with self.lock:
            self.disconnected = True
            self.lock.notify_all()

    def _wait(self, predicate, what, timeout=TIMEOUT_S):
        with self.lock:
            if not self.lock.wait_for(predicate, timeout=timeout):
                raise TestFailure("timed out after %.0f s waiting for %s" % (timeout, what))

    def connect(self):
        self.client.connect("127.0.0.1", self.port, keepalive=30)
        self.client.loop_start()
        self._wait(lambda: self.connack is not None, "CONNACK")
        if self.connack[1].is_failure:
            raise TestFailure("connection refused: %s" % self.connack[1])
        return self.connack[0]

    def subscribe(self, topic, qos):
        result, mid = self.client.subscribe(topic, qos)
        if result != mqtt.MQTT_ERR_SUCCESS:
            raise TestFailure("subscribe returned %s" % result)
        self._wait(lambda: mid in self.subacks, "SUBACK for " + topic)
        granted = self.subacks[mid][0]
        if granted.is_failure:
            raise TestFailure("subscription to %s refused: %s" % (topic, granted))
        return granted.value

    def unsubscribe(self, topic):
        result, mid = self.client.unsubscribe(topic)
        if result != mqtt.MQTT_ERR_SUCCESS:
            raise TestFailure("unsubscribe returned %s" % result)
        self._wait(lambda: mid in self.unsubacks, "UNSUBACK for " + topic)

    def publish(self, topic, payload, qos):
        info = self.client.publish(topic, payload, qos)
        info.wait_for_publish(timeout=TIMEOUT_S)
        if not info.is_published():
            raise TestFailure("publish to %s at QoS %d not completed" % (topic, qos))

    def wait_messages(self, count, timeout=TIMEOUT_S):
        self._wait(lambda: len(self.messages) >= count, "%d message(s)" % count, timeout)
        return list(self.messages)

    def close(self):
        try:
            self.client.disconnect()
        finally:
            self.client.loop_stop()


def test_roundtrip(port, run_id, qos, transport="tcp", cafile=None):
    topic = "interop/%s/paho/%s/%s/%d" % (run_id, transport, "tls" if cafile else "plain", qos)
    sub = Client(port, transport=transport, cafile=cafile)
    pub = Client(port, transport=transport, cafile=cafile)
    try:
        sub.connect()
        granted = sub.subscribe(topic, 2)
        if granted != 2:
            raise TestFailure("asked for QoS 2, granted %d" % granted)
        pub.connect()
        payload = ("paho-%d-%s" % (qos, run_id)).encode()
        pub.publish(topic, payload, qos)
        got = sub.wait_messages(1)
        if got[0][:3] != (topic, payload, qos):
            raise TestFailure("expected %r, got %r" % ((topic, payload, qos), got[0][:3]))
        time.sleep(0.3)
        if len(sub.messages) != 1:
            raise TestFailure("expected exactly 1 message, got %d" % len(sub.messages))
    finally:
        sub.close()
        pub.close()


def test_persistent_session(port, run_id):
    """clean_session=False: QoS 1 messages published while offline arrive on reconnect, and the
    second CONNACK has session_present=1."""
    client_id = "interop-persist-%s" % run_id
    topic = "interop/%s/paho/persist" % run_id
    first = Client(port, client_id=client_id, clean_session=False)
    present = first.connect()
    if present:
        raise TestFailure("first connection of a new client id has session_present=1")
    first.subscribe(topic, 1)
    first.close()

    pub = Client(port)
    try:
        pub.connect()
        for i in range(3):
            pub.publish(topic, b"offline-%d" % i, 1)
    finally:
        pub.close()

    second = Client(port, client_id=client_id, clean_session=False)
    try:
        present = second.connect()
        if not present:
            raise TestFailure("reconnect with clean_session=False has session_present=0")
        got = second.wait_messages(3)
        payloads = [m[1] for m in got]
        if payloads != [b"offline-0", b"offline-1", b"offline-2"]:
            raise TestFailure("queued messages: expected offline-0..2 in order, got %r" % payloads)
    finally:
        second.close()
    # Leave no session behind.
    cleaner = Client(port, client_id=client_id, clean_session=True)
    cleaner.connect()
    cleaner.close()


def test_unsubscribe(port, run_id):
    topic = "interop/%s/paho/unsub" % run_id
    sub = Client(port)
    pub = Client(port)
    try:
        sub.connect()
        pub.connect()
        sub.subscribe(topic, 1)
        pub.publish(topic, b"before", 1)
        sub.wait_messages(1)
        sub.unsubscribe(topic)
        pub.publish(topic, b"after", 1)
        time.sleep(1.0)
        payloads = [m[1] for m in sub.messages]
        if payloads != [b"before"]:
            raise TestFailure("after UNSUBACK still received: %r" % payloads[1:])
    finally:
        sub.close()
        pub.close()


def main():
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--ws-port", type=int)
    parser.add_argument("--wss-port", type=int, help="secure WebSocket port (needs --cafile)")
    parser.add_argument("--cafile", help="CA that signed the broker's TLS certificate")
    parser.add_argument("--run-id", default=str(int(time.time())))
    args = parser.parse_args()

    tests = [("paho QoS %d round trip" % q, lambda q=q: test_roundtrip(args.port, args.run_id, q))
             for q in (0, 1, 2)]
    tests.append(("paho clean_session=False offline queueing and session_present",
                  lambda: test_persistent_session(args.port, args.run_id)))
    tests.append(("paho unsubscribe stops delivery", lambda: test_unsubscribe(args.port, args.run_id)))
    if args.ws_port:
        tests.append(("paho over websockets QoS 1 round trip",
                      lambda: test_roundtrip(args.ws_port, args.run_id, 1, transport="websockets")))

    if args.wss_port and args.cafile:
        tests.append(("paho over wss:// (tls_set with the test CA) QoS 1 round trip",
                      lambda: test_roundtrip(args.wss_port, args.run_id, 1, transport="websockets",
                                             cafile=args.cafile)))

    failed = 0
    for name, test in tests:
        try:
            test()
            print("PASS %s" % name, flush=True)
        except TestFailure as e:
            failed += 1
            print("FAIL %s: %s" % (name, e), flush=True)
        except Exception as e:  # a client error is a test failure, with its cause
            failed += 1
            print("FAIL %s: %s: %s" % (name, type(e).__name__, e), flush=True)
            traceback.print_exc(limit=3, file=sys.stdout)
    if not args.ws_port:
        print("SKIP paho over websockets: the broker's config has no ws:// connector", flush=True)
    if not (args.wss_port and args.cafile):
        print("SKIP paho over wss: no wss:// connector or no --cafile", flush=True)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
