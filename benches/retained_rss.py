#!/usr/bin/env python3
"""Broker memory per retained message, each published alone (one packet per socket read, as a
sensor publishes its state): N retained QoS 1 messages on distinct topics, one at a time (each
waits for its PUBACK), then the broker's resident set size growth per message.

Usage: benches/retained_rss.py --port PORT --pid BROKER_PID [--count 20000] [--payload 64]
Needs paho-mqtt (pip install paho-mqtt). Compare brokers by running it against each.
"""
import argparse
import time

import paho.mqtt.client as mqtt


def rss_kib(pid):
    with open(f"/proc/{pid}/status") as status:
        for line in status:
            if line.startswith("VmRSS"):
                return int(line.split()[1])
    raise SystemExit(f"no VmRSS for pid {pid}")


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--pid", type=int, required=True, help="the broker's process id")
    parser.add_argument("--count", type=int, default=20000)
    parser.add_argument("--payload", type=int, default=64, help="payload bytes")
    args = parser.parse_args()

    client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id="retained-rss")
    client.connect("127.0.0.1", args.port)
    client.loop_start()
    before = rss_kib(args.pid)
    payload = b"x" * args.payload
    for i in range(args.count):
        client.publish(f"sensors/{i}/state", payload, qos=1, retain=True).wait_for_publish(10)
    time.sleep(1)
    after = rss_kib(args.pid)
    client.disconnect()
    client.loop_stop()
    per_message = (after - before) * 1024 / args.count
    print(f"{args.count} retained messages of {args.payload} B: broker RSS {before} -> {after} KiB, "
          f"{per_message:.0f} bytes per retained message")


if __name__ == "__main__":
    main()
