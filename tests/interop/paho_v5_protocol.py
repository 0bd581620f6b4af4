#!/usr/bin/env python3
"""MQTT 5 protocol edges seen by Eclipse paho-mqtt 2.x (MQTTv5) against a broker on 127.0.0.1.

- Server Keep Alive: a client asking keep-alive 120 is told 60 in CONNACK (the broker's
  connector must cap it: ferromq `transport.maxKeepAlive=60000`, mosquitto `max_keepalive 60`).
- Topic aliases towards the client (paho's test_server_topic_alias): with Topic Alias Maximum 1,
  three messages on one topic arrive as topic + alias, then empty topic + the same alias.
  paho 2.x does not resolve aliases it receives, so the raw form is visible to the test.

Prints one PASS/FAIL/SKIP line per test; exits 1 when any test failed. Every wait is bounded.
Usage: paho_v5_protocol.py --port N [--run-id ID] [--no-server-aliases]
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
except ImportError:
    print("FAIL paho v5: paho-mqtt is not installed (pip install 'paho-mqtt>=2')")
    sys.exit(1)

TIMEOUT_S = 10.0


class TestFailure(Exception):
    pass


class V5Client:
    """A paho MQTTv5 client whose CONNACK properties and messages can be waited for."""

    def __init__(self, port, client_id):
        self.port = port
        self.client = mqtt.Client(
            mqtt.CallbackAPIVersion.VERSION2, client_id=client_id, protocol=mqtt.MQTTv5
        )
        self.lock = threading.Condition()
        self.connack = None
        self.subscribed = False
        self.messages = []
        self.client.on_connect = self._on_connect
        self.client.on_subscribe = self._on_subscribe
        self.client.on_message = self._on_message

    def _on_connect(self, client, userdata, flags, reason_code, properties):
        with self.lock:
            self.connack = (reason_code, properties)
            self.lock.notify_all()

    def _on_subscribe(self, client, userdata, mid, reason_code_list, properties):
        with self.lock:
            self.subscribed = True
            self.lock.notify_all()

    def _on_message(self, client, userdata, msg):
        with self.lock:
            self.messages.append(msg)
            self.lock.notify_all()

    def _wait(self, predicate, what):
        with self.lock:
            if not self.lock.wait_for(predicate, timeout=TIMEOUT_S):
                raise TestFailure("timed out waiting for %s" % what)

    def connect(self, keepalive=60, properties=None):
        self.client.connect("127.0.0.1", self.port, keepalive=keepalive, properties=properties)
        self.client.loop_start()
        self._wait(lambda: self.connack is not None, "CONNACK")
        reason, props = self.connack
        if reason.is_failure:
            raise TestFailure("CONNECT refused: %s" % reason)
        return props

    def subscribe(self, topic, qos):
        self.client.subscribe(topic, qos)
        self._wait(lambda: self.subscribed, "SUBACK")

    def wait_messages(self, count):
        self._wait(lambda: len(self.messages) >= count, "%d messages" % count)
        return list(self.messages)

    def close(self):
        try:
            self.client.disconnect()
        finally:
            self.client.loop_stop()


def test_server_keep_alive(port, run_id):
    client = V5Client(port, "ska-%s" % run_id)
    try:
        props = client.connect(keepalive=120)
        got = getattr(props, "ServerKeepAlive", None)
        if got != 60:
            raise TestFailure("CONNACK Server Keep Alive %r, expected 60" % got)
    finally:
        client.close()


def test_server_topic_alias(port, run_id):
    topic = "interop/%s/alias" % run_id
    connect_properties = Properties(PacketTypes.CONNECT)
    connect_properties.TopicAliasMaximum = 1
    client = V5Client(port, "alias-%s" % run_id)
    try:
        client.connect(properties=connect_properties)
        client.subscribe(topic, 2)
        for qos in range(3):
            client.client.publish(topic, b"topic alias %d" % qos, qos)
        msgs = client.wait_messages(3)
        aliases = [getattr(m.properties, "TopicAlias", None) for m in msgs[:3]]
        topics = [m.topic for m in msgs[:3]]
        if aliases[0] is None or aliases != [aliases[0]] * 3:
            raise TestFailure("topic aliases %r, expected one alias on all three" % aliases)
        if topics != [topic, "", ""]:
            raise TestFailure("topics %r, expected the topic once, then empty" % topics)
    finally:
        client.close()


def main():
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--run-id", default=str(int(time.time())))
    parser.add_argument("--no-server-aliases", action="store_true",
                        help="the broker does not send topic aliases (SKIP that test)")
    args = parser.parse_args()
    tests = [("paho MQTTv5 reads Server Keep Alive 60 for keep-alive 120",
              lambda: test_server_keep_alive(args.port, args.run_id))]
    if not args.no_server_aliases:
        tests.append(("paho MQTTv5 receives topic aliases (topic + alias, then alias only)",
                      lambda: test_server_topic_alias(args.port, args.run_id)))
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
    if args.no_server_aliases:
        print("SKIP paho MQTTv5 topic aliases: this broker does not send them", flush=True)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
