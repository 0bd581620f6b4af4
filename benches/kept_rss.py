#!/usr/bin/env python3
"""Broker memory per kept thing, against a broker already running (raw sockets, no library):

- `will`: RSS growth per idle MQTT 3.1.1 connection whose CONNECT carries a retained will
  (compare with `plain`, the same connections without one; run each on a fresh broker,
  since memory freed by a previous run is reused);
- `stomp-queued`: RSS growth per 64-byte STOMP SEND queued on a queue nobody consumes, each
  sent alone (its RECEIPT awaited, so each is one socket read).

Usage: benches/kept_rss.py {plain,will} --port MQTT_PORT --pid PID [--count 10000]
       benches/kept_rss.py stomp-queued --port STOMP_PORT --pid PID [--count 20000]
"""
import argparse
import os
import socket
import struct
import time


def rss_kib(pid):
    with open(f"/proc/{pid}/status") as status:
        for line in status:
            if line.startswith("VmRSS"):
                return int(line.split()[1])
    raise SystemExit(f"no VmRSS for pid {pid}")


def mqtt_string(text):
    raw = text.encode()
    return struct.pack(">H", len(raw)) + raw


def remaining_length(n):
    out = b""
    while True:
        digit, n = n % 128, n // 128
        out += bytes([digit | (0x80 if n else 0)])
        if not n:
            return out


def connect_packet(client_id, with_will):
    flags = 0x02  # clean session
    payload = mqtt_string(client_id)
    if with_will:
        flags |= 0x04 | 0x20  # will, will retain (QoS 0)
        payload += mqtt_string("status/" + client_id) + mqtt_string("offline")
    body = mqtt_string("MQTT") + bytes([4, flags]) + struct.pack(">H", 600) + payload
    return b"\x10" + remaining_length(len(body)) + body


def idle_connections(port, count, with_will):
    sockets = []
    for i in range(count):
        s = socket.create_connection(("127.0.0.1", port))
        s.sendall(connect_packet(f"kept-{os.getpid()}-{i}", with_will))
        sockets.append(s)
    for s in sockets:
        if s.recv(4)[:1] != b"\x20":
            raise SystemExit("no CONNACK")
    return sockets


def stomp_queued(port, count):
    s = socket.create_connection(("127.0.0.1", port))
    s.sendall(b"CONNECT\naccept-version:1.2\nhost:localhost\n\n\0")
    pending = b""

    def next_frame():
        nonlocal pending
        while b"\0" not in pending:
            chunk = s.recv(65536)
            if not chunk:
                raise SystemExit("the broker closed the connection")
            pending += chunk
        frame, _, pending = pending.partition(b"\0")
        return frame.lstrip(b"\r\n")

    if not next_frame().startswith(b"CONNECTED"):
        raise SystemExit("no CONNECTED")
    yield
    for i in range(count):
        s.sendall(b"SEND\ndestination:/queue/kept-rss\nreceipt:%d\n\n%064d\0" % (i, i))
        if not next_frame().startswith(b"RECEIPT"):
            raise SystemExit("no RECEIPT")
    yield s


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("what", choices=["plain", "will", "stomp-queued"])
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--pid", type=int, required=True, help="the broker's process id")
    parser.add_argument("--count", type=int, default=10000)
    args = parser.parse_args()
    if args.what == "stomp-queued":
        steps = stomp_queued(args.port, args.count)
        next(steps)
        time.sleep(0.3)
        before = rss_kib(args.pid)
        held = next(steps)
    else:
        time.sleep(0.3)
        before = rss_kib(args.pid)
        held = idle_connections(args.port, args.count, args.what == "will")
    time.sleep(1.0)
    after = rss_kib(args.pid)
    per = (after - before) * 1024 / args.count
    print(f"{args.what}: {args.count} held, RSS {before} -> {after} KiB, {per:.0f} bytes each")
    del held


if __name__ == "__main__":
    main()
