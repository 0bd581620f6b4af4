#!/usr/bin/env python3
"""MQTT 5 subscription options with Eclipse paho-mqtt 2.x (MQTTv5) against a broker on 127.0.0.1.

No Local, Retain As Published and Subscription Identifiers (overlapping subscriptions each with
their identifier, a retained message sent at SUBSCRIBE with its identifier). Run against
mosquitto too (`run.sh --broker mosquitto`): that shows the expectations are the standard's.
Prints one PASS/FAIL line per test; exits 1 when any test failed. Every wait is bounded.
Usage: mqtt5_test.py --port N [--run-id ID]
"""

import argparse
import sys
import threading
import time
import traceback

try:
    import paho.mqtt.client as mqtt
    from paho.mqtt.packettypes import PacketTypes
    from paho.mqtt.properties import Properties
    from paho.mqtt.subscribeoptions import SubscribeOptions
except ImportError:
    print("FAIL paho MQTTv5: paho-mqtt is not installed (pip install 'paho-mqtt>=2')")
    sys.exit(1)

if not hasattr(mqtt, "CallbackAPIVersion"):
    print("FAIL paho MQTTv5: paho-mqtt 2.x is required (found %s)"
          % getattr(mqtt, "__version__", "?"))
    sys.exit(1)

TIMEOUT_S = 10.0


class TestFailure(Exception):
    pass


class Message:
    """What a test looks at in a delivered PUBLISH."""

    def __init__(self, msg):
        self.topic = msg.topic
        self.payload = msg.payload
        self.qos = msg.qos
        self.retain = bool(msg.retain)
        ids = getattr(msg.properties, "SubscriptionIdentifier", None) if msg.properties else None
        self.ids = sorted(ids or [])

    def __repr__(self):
        return "Message(%s %r qos=%d retain=%s ids=%s)" % (
            self.topic, self.payload, self.qos, self.retain, self.ids)


class Client:
    """A paho MQTTv5 client with its events turned into waitable lists."""

    def __init__(self, port, client_id):
        self.port = port
        self.client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=client_id,
                                  protocol=mqtt.MQTTv5)
        self.lock = threading.Condition()
        self.connack = None
        self.messages = []
        self.subacks = {}
        self.client.on_connect = self._on_connect
        self.client.on_message = self._on_message
        self.client.on_subscribe = self._on_subscribe

    def _on_connect(self, client, userdata, flags, reason_code, properties):
        with self.lock:
            self.connack = (reason_code, properties)
            self.lock.notify_all()

    def _on_message(self, client, userdata, msg):
        with self.lock:
            self.messages.append(Message(msg))
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
        self.client.connect("127.0.0.1", self.port, keepalive=30, clean_start=True)
        self.client.loop_start()
        self._wait(lambda: self.connack is not None, "CONNACK")
        if self.connack[0].is_failure:
            raise TestFailure("connection refused: %s" % self.connack[0])
        return self

    def subscribe(self, topic, qos=1, no_local=False, retain_as_published=False, sub_id=None):
        options = SubscribeOptions(qos=qos, noLocal=no_local,
                                   retainAsPublished=retain_as_published)
        properties = None
        if sub_id is not None:
            properties = Properties(PacketTypes.SUBSCRIBE)
            properties.SubscriptionIdentifier = sub_id
        result, mid = self.client.subscribe(topic, options=options, properties=properties)
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

    def wait_messages(self, count):
        self._wait(lambda: len(self.messages) >= count, "%d message(s)" % count)
        with self.lock:
            return list(self.messages)

    def close(self):
        self.client.disconnect()
        self.client.loop_stop()


def expect(condition, message):
    if not condition:
        raise TestFailure(message)


def test_no_local(port, run_id):
    topic = "interop/%s/v5/nl" % run_id
    me = Client(port, "nl-me-" + run_id).connect()
    other = Client(port, "nl-other-" + run_id).connect()
    try:
        me.subscribe(topic, no_local=True)
        other.subscribe(topic, no_local=True)
        me.publish(topic, b"mine")
        got = other.wait_messages(1)
        expect(got[0].payload == b"mine", "the other client got %r" % got)
        other.publish(topic, b"theirs")
        got = me.wait_messages(1)
        # Had `me` received its own message, it would have come first.
        expect([m.payload for m in got] == [b"theirs"], "No Local: got %r" % got)
    finally:
        me.close()
        other.close()


def test_retain_as_published(port, run_id):
    base = "interop/%s/v5/rap" % run_id
    sub = Client(port, "rap-sub-" + run_id).connect()
    pub = Client(port, "rap-pub-" + run_id).connect()
    try:
        sub.subscribe(base + "/a", retain_as_published=True, sub_id=1)
        sub.subscribe(base + "/+", sub_id=2)
        pub.publish(base + "/a", b"kept", retain=True)
        got = sub.wait_messages(2)
        seen = sorted((m.ids, m.retain) for m in got[:2])
        expect(seen == [([1], True), ([2], False)],
               "RETAIN as published only through RAP: got %r" % got)
    finally:
        pub.publish(base + "/a", b"", retain=True)
        sub.close()
        pub.close()


def test_overlapping_subscription_identifiers(port, run_id):
    base = "interop/%s/v5/ids" % run_id
    sub = Client(port, "ids-sub-" + run_id).connect()
    pub = Client(port, "ids-pub-" + run_id).connect()
    try:
        sub.subscribe(base + "/#", sub_id=1)
        sub.subscribe(base + "/+", sub_id=268435455)
        sub.subscribe(base + "/x")
        pub.publish(base + "/x", b"m")
        got = sub.wait_messages(3)
        seen = sorted(m.ids for m in got[:3])
        expect(seen == [[], [1], [268435455]],
               "one copy per subscription, each with its identifier: got %r" % got)
    finally:
        sub.close()
        pub.close()


def test_retained_at_subscribe_carries_the_identifier(port, run_id):
    topic = "interop/%s/v5/retained-id" % run_id
    pub = Client(port, "rid-pub-" + run_id).connect()
    sub = Client(port, "rid-sub-" + run_id).connect()
    try:
        pub.publish(topic, b"kept", retain=True)
        sub.subscribe(topic, sub_id=9)
        got = sub.wait_messages(1)
        expect((got[0].payload, got[0].retain, got[0].ids) == (b"kept", True, [9]),
               "retained at SUBSCRIBE: got %r" % got)
    finally:
        pub.publish(topic, b"", retain=True)
        sub.close()
        pub.close()


def main():
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--run-id", default=str(int(time.time())))
    args = parser.parse_args()
    tests = [
        ("paho MQTTv5 No Local", test_no_local),
        ("paho MQTTv5 Retain As Published", test_retain_as_published),
        ("paho MQTTv5 overlapping subscriptions each with its identifier",
         test_overlapping_subscription_identifiers),
        ("paho MQTTv5 retained message at SUBSCRIBE carries the identifier",
         test_retained_at_subscribe_carries_the_identifier),
    ]
    failed = 0
    for name, test in tests:
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
