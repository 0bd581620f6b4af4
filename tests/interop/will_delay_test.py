#!/usr/bin/env python3
"""MQTT 5 Will Delay Interval with Eclipse paho-mqtt 2.x (MQTTv5) against a broker on 127.0.0.1.

A client whose socket dies without DISCONNECT leaves a will delayed 2 s: it arrives after about
2 s, not before. A client that comes back (Clean Start 0) within the delay cancels its will.
Passes against mosquitto too (run.sh --broker mosquitto).

Prints one PASS/FAIL line per test; exits 1 when any test failed. Every wait is bounded.
Usage: will_delay_test.py --port N [--run-id ID]
"""

import argparse
import socket
import sys
import threading
import time
import traceback

try:
    import paho.mqtt.client as mqtt
    from paho.mqtt.packettypes import PacketTypes
    from paho.mqtt.properties import Properties
except ImportError:
    print("FAIL will delay: paho-mqtt 2.x is not installed (pip install 'paho-mqtt>=2')")
    sys.exit(1)

TIMEOUT_S = 10.0


class TestFailure(Exception):
    pass


def connect_properties(session_expiry_s):
    props = Properties(PacketTypes.CONNECT)
    props.SessionExpiryInterval = session_expiry_s
    return props


class Watcher:
    """An MQTT 5 client subscribed to a topic, recording when each message arrives."""

    def __init__(self, port, topic):
        self.lock = threading.Condition()
        self.arrivals = []  # (monotonic time, payload)
        self.subscribed = False
        self.client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, protocol=mqtt.MQTTv5)
        self.client.on_message = self._on_message
        self.client.on_subscribe = self._on_subscribe
        self.client.connect("127.0.0.1", port, clean_start=True)
        self.client.loop_start()
        self.client.subscribe(topic, qos=1)
        self._wait(lambda: self.subscribed, "SUBACK")

    def _on_message(self, client, userdata, msg):
        with self.lock:
            self.arrivals.append((time.monotonic(), msg.payload))
            self.lock.notify_all()

    def _on_subscribe(self, client, userdata, mid, reason_codes, properties):
        with self.lock:
            self.subscribed = True
            self.lock.notify_all()

    def _wait(self, predicate, what, timeout=TIMEOUT_S):
        with self.lock:
            if not self.lock.wait_for(predicate, timeout):
                raise TestFailure("timed out waiting for %s" % what)

    def next_arrival(self, timeout):
        """(time, payload) of the next message, or None after `timeout` seconds."""
        with self.lock:
            if not self.lock.wait_for(lambda: self.arrivals, timeout):
                return None
            return self.arrivals.pop(0)

    def close(self):
        self.client.disconnect()
        self.client.loop_stop()


def connected_with_will(port, client_id, topic, payload, delay_s):
    """A v5 client (Session Expiry 60 s) with a will delayed `delay_s`, driven by hand (no
    network thread, so nothing reconnects it after its socket is killed)."""
    client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=client_id,
                         protocol=mqtt.MQTTv5)
    will_props = Properties(PacketTypes.WILLMESSAGE)
    will_props.WillDelayInterval = delay_s
    client.will_set(topic, payload, qos=1, properties=will_props)
    acked = []
    client.on_connect = lambda c, u, flags, rc, props: acked.append(rc)
    client.connect("127.0.0.1", port, clean_start=True, properties=connect_properties(60))
    deadline = time.monotonic() + TIMEOUT_S
    while not acked and time.monotonic() < deadline:
        client.loop(timeout=0.1)
    if not acked or acked[0].is_failure:
        raise TestFailure("the client with a will could not connect: %s" % acked)
    return client


def kill_socket(client):
    """Drop the connection without DISCONNECT (as a crashed client would)."""
    sock = client.socket()
    try:
        sock.shutdown(socket.SHUT_RDWR)
    finally:
        sock.close()
    return time.monotonic()


def test_will_arrives_after_its_delay(port, run_id):
    topic = "interop/%s/willdelay/late" % run_id
    watcher = Watcher(port, topic)
    try:
        client = connected_with_will(port, "wd-late-%s" % run_id, topic, b"late", 2)
        dropped = kill_socket(client)
        arrival = watcher.next_arrival(6.0)
        if arrival is None:
            raise TestFailure("no will within 6 s of the drop")
        after = arrival[0] - dropped
        if arrival[1] != b"late":
            raise TestFailure("unexpected payload %r" % arrival[1])
        if not 1.8 <= after < 4.0:
            raise TestFailure("will after %.2f s, expected about 2 s" % after)
    finally:
        watcher.close()


def test_resume_within_the_delay_cancels_the_will(port, run_id):
    topic = "interop/%s/willdelay/cancel" % run_id
    client_id = "wd-back-%s" % run_id
    watcher = Watcher(port, topic)
    try:
        client = connected_with_will(port, client_id, topic, b"cancelled", 3)
        kill_socket(client)
        time.sleep(0.5)
        back = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=client_id,
                           protocol=mqtt.MQTTv5)
        present = []
        back.on_connect = lambda c, u, flags, rc, props: present.append(flags.session_present)
        back.connect("127.0.0.1", port, clean_start=False, properties=connect_properties(60))
        back.loop_start()
        try:
            deadline = time.monotonic() + TIMEOUT_S
            while not present and time.monotonic() < deadline:
                time.sleep(0.05)
            if present != [True]:
                raise TestFailure("expected session present on resume, got %s" % present)
            arrival = watcher.next_arrival(4.0)
            if arrival is not None:
                raise TestFailure("the will of a resumed session arrived: %r" % (arrival[1],))
        finally:
            back.disconnect()
            back.loop_stop()
    finally:
        watcher.close()


TESTS = [
    ("paho MQTTv5 will with a 2 s delay arrives after the delay", test_will_arrives_after_its_delay),
    ("paho MQTTv5 will delay: resuming within the delay cancels the will",
     test_resume_within_the_delay_cancels_the_will),
]


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--run-id", default=str(int(time.time())))
    args = parser.parse_args()
    failed = 0
    for name, test in TESTS:
        try:
            test(args.port, args.run_id)
            print("PASS %s" % name)
        except TestFailure as e:
            print("FAIL %s: %s" % (name, e))
            failed += 1
        except Exception:  # a crash of the test itself is a failure too, with its trace
            print("FAIL %s: %s" % (name, traceback.format_exc().strip().replace("\n", " | ")))
            failed += 1
        sys.stdout.flush()
    sys.exit(1 if failed else 0)


if __name__ == "__main__":
    main()
