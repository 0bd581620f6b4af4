#!/usr/bin/env python3
"""Eclipse paho-mqtt 2.x (MQTTv5) across ferromq cluster nodes on 127.0.0.1.

- properties: a QoS 1 message published on the first node with user properties, content
  type, response topic, correlation data, payload format and message expiry reaches a
  subscriber on the last node with all of them (the expiry counted down, never up).
- session: a persistent session (clean start 0, Session Expiry Interval 300) subscribed on
  the second node, offline while 5 QoS 1 messages are published on the first, resumes on the
  last with session present and the 5 in order.

Prints one PASS/FAIL line per test; exits 1 when any failed. Every wait is bounded.
Usage: paho_nodes.py --ports P0,P1,P2 [--run-id ID]
"""

import argparse
import queue
import sys
import traceback

try:
    import paho.mqtt.client as mqtt
    from paho.mqtt.packettypes import PacketTypes
    from paho.mqtt.properties import Properties
except ImportError:
    print("FAIL paho nodes: paho-mqtt is not installed (pip install 'paho-mqtt>=2')")
    sys.exit(1)

TIMEOUT_S = 10.0


class Client:
    """A paho MQTTv5 client with its loop in a thread; events arrive on queues."""

    def __init__(self, port, client_id, clean_start=True, expiry=None):
        self.messages = queue.Queue()
        self.acks = queue.Queue()
        self.connacks = queue.Queue()
        self.c = mqtt.Client(
            mqtt.CallbackAPIVersion.VERSION2, client_id=client_id, protocol=mqtt.MQTTv5
        )
        self.c.on_connect = lambda c, u, flags, rc, props: self.connacks.put((flags, rc))
        self.c.on_message = lambda c, u, msg: self.messages.put(msg)
        self.c.on_subscribe = lambda c, u, mid, codes, props: self.acks.put(("sub", mid, codes))
        self.c.on_publish = lambda c, u, mid, rc, props: self.acks.put(("pub", mid, rc))
        props = None
        if expiry is not None:
            props = Properties(PacketTypes.CONNECT)
            props.SessionExpiryInterval = expiry
        self.c.connect("127.0.0.1", port, keepalive=30, clean_start=clean_start, properties=props)
        self.c.loop_start()
        flags, rc = self.connacks.get(timeout=TIMEOUT_S)
        if rc.is_failure:
            raise AssertionError(f"{client_id}: CONNACK {rc}")
        self.session_present = flags.session_present

    def subscribe(self, topic):
        _, mid = self.c.subscribe(topic, qos=1)
        kind, got, codes = self.acks.get(timeout=TIMEOUT_S)
        assert (kind, got) == ("sub", mid), (kind, got, mid)
        assert [int(c.value) for c in codes] == [1], codes

    def publish(self, topic, payload, props=None):
        info = self.c.publish(topic, payload, qos=1, properties=props)
        kind, mid, rc = self.acks.get(timeout=TIMEOUT_S)
        assert (kind, mid) == ("pub", info.mid), (kind, mid, info.mid)
        assert not rc.is_failure, rc

    def message(self):
        return self.messages.get(timeout=TIMEOUT_S)

    def close(self):
        self.c.disconnect()
        self.c.loop_stop()


def properties_survive(ports, run):
    sub = Client(ports[-1], f"{run}-props-sub")
    sub.subscribe(f"{run}/props/#")
    pub = Client(ports[0], f"{run}-props-pub")
    props = Properties(PacketTypes.PUBLISH)
    props.UserProperty = [("k", "v1"), ("k", "v2")]
    props.ContentType = "application/json"
    props.ResponseTopic = f"{run}/reply"
    props.CorrelationData = b"\x01corr"
    props.PayloadFormatIndicator = 1
    props.MessageExpiryInterval = 120
    pub.publish(f"{run}/props/t", b'{"a":1}', props)
    msg = sub.message()
    got = msg.properties
    assert msg.payload == b'{"a":1}', msg.payload
    assert got.UserProperty == [("k", "v1"), ("k", "v2")], got.UserProperty
    assert got.ContentType == "application/json", got.ContentType
    assert got.ResponseTopic == f"{run}/reply", got.ResponseTopic
    assert got.CorrelationData == b"\x01corr", got.CorrelationData
    assert got.PayloadFormatIndicator == 1
    assert 115 <= got.MessageExpiryInterval <= 120, got.MessageExpiryInterval
    sub.close()
    pub.close()


def session_resumes(ports, run):
    cid = f"{run}-session"
    first = Client(ports[1], cid, clean_start=False, expiry=300)
    first.subscribe(f"{run}/sess/+")
    first.close()
    pub = Client(ports[0], f"{run}-sess-pub")
    for n in range(5):
        pub.publish(f"{run}/sess/t", f"m{n}".encode())
    pub.close()
    resumed = Client(ports[-1], cid, clean_start=False, expiry=300)
    assert resumed.session_present, "session present on another node"
    got = [resumed.message().payload for _ in range(5)]
    assert got == [f"m{n}".encode() for n in range(5)], got
    resumed.close()


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--ports", required=True)
    parser.add_argument("--run-id", default="paho")
    args = parser.parse_args()
    ports = [int(p) for p in args.ports.split(",")]
    failed = False
    for name, test in [("properties", properties_survive), ("session", session_resumes)]:
        try:
            test(ports, args.run_id)
            print(f"PASS paho nodes {name}")
        except Exception:  # noqa: BLE001 - reported and counted
            failed = True
            print(f"FAIL paho nodes {name}: {traceback.format_exc()}")
    sys.exit(1 if failed else 0)


if __name__ == "__main__":
    main()
