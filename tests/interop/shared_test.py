#!/usr/bin/env python3
"""Shared subscriptions ($share/{group}/{filter}) with Eclipse paho-mqtt 2.x against a broker on
127.0.0.1, as MQTT 5 (MQTT 5.0 4.8.2) and as MQTT 3.1.1 clients (which use the same syntax, as
mosquitto and EMQX allow).

Each member also subscribes to a plain `end` topic; the publisher waits for every PUBACK and
publishes `end` last, so a member that has seen `end` has seen everything routed to it. Run
against mosquitto too (`run.sh --broker mosquitto`): that shows the expectations are the
standard's. Prints one PASS/FAIL line per test; exits 1 when any test failed. Every wait is
bounded.
The one expectation mosquitto does not meet (it sends retained messages on a new shared
subscription) is reported as SKIP with `--broker mosquitto`.
Usage: shared_test.py --port N [--run-id ID] [--broker ferromq|mosquitto]
"""

import argparse
import sys
import threading
import time
import traceback

try:
    import paho.mqtt.client as mqtt
except ImportError:
    print("FAIL paho shared subscriptions: paho-mqtt is not installed (pip install 'paho-mqtt>=2')")
    sys.exit(1)

if not hasattr(mqtt, "CallbackAPIVersion"):
    print("FAIL paho shared subscriptions: paho-mqtt 2.x is required (found %s)"
          % getattr(mqtt, "__version__", "?"))
    sys.exit(1)

TIMEOUT_S = 10.0


class TestFailure(Exception):
    pass


class Client:
    """A paho client (MQTTv5 or MQTTv311) whose deliveries and SUBACKs can be waited for."""

    def __init__(self, port, client_id, protocol):
        self.port = port
        self.protocol = protocol
        self.client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=client_id,
                                  protocol=protocol)
        self.lock = threading.Condition()
        self.connected = None
        self.messages = []
        self.subacks = {}
        self.client.on_connect = self._on_connect
        self.client.on_message = self._on_message
        self.client.on_subscribe = self._on_subscribe

    def _on_connect(self, client, userdata, flags, reason_code, properties):
        with self.lock:
            self.connected = (reason_code, properties)
            self.lock.notify_all()

    def _on_message(self, client, userdata, msg):
        with self.lock:
            self.messages.append((msg.topic, bytes(msg.payload), bool(msg.retain)))
            self.lock.notify_all()

    def _on_subscribe(self, client, userdata, mid, reason_code_list, properties):
        with self.lock:
            self.subacks[mid] = reason_code_list
            self.lock.notify_all()

    def _wait(self, predicate, what):
        with self.lock:
            if not self.lock.wait_for(predicate, timeout=TIMEOUT_S):
                raise TestFailure("timed out after %.0f s waiting for %s" % (TIMEOUT_S, what))

    def connect(self):
        if self.protocol == mqtt.MQTTv5:
            self.client.connect("127.0.0.1", self.port, keepalive=30, clean_start=True)
        else:
            self.client.connect("127.0.0.1", self.port, keepalive=30)
        self.client.loop_start()
        self._wait(lambda: self.connected is not None, "CONNACK")
        if self.connected[0].is_failure:
            raise TestFailure("connection refused: %s" % self.connected[0])
        return self

    def connack_property(self, name):
        properties = self.connected[1]
        return getattr(properties, name, None) if properties is not None else None

    def subscribe(self, topic, qos=1):
        result, mid = self.client.subscribe(topic, qos)
        if result != mqtt.MQTT_ERR_SUCCESS:
            raise TestFailure("subscribe returned %s" % result)
        self._wait(lambda: mid in self.subacks, "SUBACK for " + topic)
        granted = self.subacks[mid][0]
        if granted.is_failure:
            raise TestFailure("subscription to %s refused: %s" % (topic, granted))

    def publish(self, topic, payload, qos=1, retain=False):
        info = self.client.publish(topic, payload, qos, retain=retain)
        info.wait_for_publish(timeout=TIMEOUT_S)
        if not info.is_published():
            raise TestFailure("publish to %s not completed" % topic)

    def until(self, end_topic):
        """Every message received before the first one on `end_topic`."""
        def seen_end():
            return any(topic == end_topic for topic, _, _ in self.messages)
        self._wait(seen_end, "a message on " + end_topic)
        with self.lock:
            got = []
            for message in self.messages:
                if message[0] == end_topic:
                    return got
                got.append(message)
            return got

    def close(self):
        self.client.disconnect()
        self.client.loop_stop()


def expect(condition, message):
    if not condition:
        raise TestFailure(message)


def payloads(messages):
    return sorted(payload for _, payload, _ in messages)


def shared_by_two(port, run_id, protocol, label):
    base = "interop/%s/shared/%s" % (run_id, label)
    end = base + "/end"
    clients = []
    try:
        a = Client(port, "sh-a-%s-%s" % (label, run_id), protocol).connect()
        clients.append(a)
        b = Client(port, "sh-b-%s-%s" % (label, run_id), protocol).connect()
        clients.append(b)
        pub = Client(port, "sh-pub-%s-%s" % (label, run_id), protocol).connect()
        clients.append(pub)
        if protocol == mqtt.MQTTv5:
            expect(a.connack_property("SharedSubscriptionAvailable") in (None, 1),
                   "CONNACK says shared subscriptions are not available")
        for member in (a, b):
            member.subscribe("$share/g/" + base + "/t")
            member.subscribe(end)
        sent = [b"%d" % i for i in range(6)]
        for payload in sent:
            pub.publish(base + "/t", payload)
        pub.publish(end, b"")
        got_a, got_b = a.until(end), b.until(end)
        expect(sorted(payloads(got_a) + payloads(got_b)) == sorted(sent),
               "each message exactly once over the group: a %r, b %r" % (got_a, got_b))
        expect(got_a and got_b, "both members get some: a %r, b %r" % (got_a, got_b))
    finally:
        for client in clients:
            client.close()


def test_v5_members(port, run_id):
    shared_by_two(port, run_id, mqtt.MQTTv5, "v5")


def test_v311_members(port, run_id):
    shared_by_two(port, run_id, mqtt.MQTTv311, "v311")


def test_plain_and_shared_give_two_copies(port, run_id):
    base = "interop/%s/shared/both" % run_id
    end = base + "/end"
    clients = []
    try:
        member = Client(port, "sh-both-" + run_id, mqtt.MQTTv5).connect()
        clients.append(member)
        pub = Client(port, "sh-both-pub-" + run_id, mqtt.MQTTv5).connect()
        clients.append(pub)
        member.subscribe(base + "/t")
        member.subscribe("$share/g/" + base + "/t")
        member.subscribe(end)
        pub.publish(base + "/t", b"m")
        pub.publish(end, b"")
        got = member.until(end)
        expect(payloads(got) == [b"m", b"m"],
               "one copy through the plain subscription, one through the group: %r" % got)
    finally:
        for client in clients:
            client.close()


def test_no_retained_message_on_a_shared_subscription(port, run_id):
    base = "interop/%s/shared/retained" % run_id
    end = base + "/end"
    clients = []
    pub = None
    try:
        pub = Client(port, "sh-ret-pub-" + run_id, mqtt.MQTTv5).connect()
        clients.append(pub)
        pub.publish(base + "/t", b"kept", retain=True)
        member = Client(port, "sh-ret-" + run_id, mqtt.MQTTv5).connect()
        clients.append(member)
        member.subscribe("$share/g/" + base + "/t")
        member.subscribe(end)
        pub.publish(end, b"")
        got = member.until(end)
        expect(got == [], "no retained message on $share (3.8.4, 4.8.2): %r" % got)
    finally:
        if pub is not None:
            pub.publish(base + "/t", b"", retain=True)
        for client in clients:
            client.close()


def main():
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--run-id", default=str(int(time.time())))
    parser.add_argument("--broker", default="ferromq")
    args = parser.parse_args()
    # Known differences of a reference broker from the standard: (test, why), shown as SKIP.
    differs = {}
    if args.broker == "mosquitto":
        differs[test_no_retained_message_on_a_shared_subscription] = (
            "mosquitto sends retained messages on a new shared subscription")
    tests = [
        ("paho MQTTv5 shared subscription: each message to one of two members", test_v5_members),
        ("paho MQTTv311 $share: each message to one of two members", test_v311_members),
        ("paho MQTTv5 plain and shared subscription: a copy for each",
         test_plain_and_shared_give_two_copies),
        ("paho MQTTv5 no retained message on a shared subscription",
         test_no_retained_message_on_a_shared_subscription),
    ]
    failed = 0
    for name, test in tests:
        if test in differs:
            print("SKIP %s: %s" % (name, differs[test]), flush=True)
            continue
        try:
            test(args.port, args.run_id)
            print("PASS %s" % name, flush=True)
        except TestFailure as e:
            failed += 1
            print("FAIL %s: %s" % (name, e), flush=True)
        except Exception as e:  # a client error is a test failure, with its cause
            failed += 1
            print("FAIL %s: %s: %s" % (name, type(e).__name__, e), flush=True)
            traceback.print_exc(limit=3, file=sys.stdout)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
