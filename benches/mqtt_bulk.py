#!/usr/bin/env python3
"""Minimal MQTT 3.1.1 bulk client (standard library only) for benches/offline_queue.sh.

Loopback only. Every operation is bounded by a timeout. Subcommands:

  subscribe  --client-id ID --topic T          connect with clean session 0, SUBSCRIBE at QoS 1,
                                               wait for SUBACK, DISCONNECT (the session stays)
  publish    --topic T --count N --size B      one clean-session publisher: N QoS 1 messages of B
             [--publisher P] [--window W]      bytes, at most W unacknowledged; prints a JSON line
  drain      --client-id ID --expect N         reconnect the persistent session (clean session 0),
             [--publishers P]                  acknowledge every PUBLISH, count distinct messages
                                               (payload = publisher id, sequence number); stops at
                                               N distinct, or after --idle-secs without a message;
                                               prints a JSON line

Payload layout: 4 bytes publisher id, 4 bytes sequence number (big endian), then filler.
"""
import argparse
import ipaddress
import json
import signal
import socket
import struct
import sys
import time


def loopback(host):
    addr = socket.gethostbyname(host)
    if not ipaddress.ip_address(addr).is_loopback:
        sys.exit(f"mqtt_bulk: {host} is not a loopback address")
    return addr


def varint(n):
    out = bytearray()
    while True:
        b = n % 128
        n //= 128
        if n:
            out.append(b | 0x80)
        else:
            out.append(b)
            return bytes(out)


def utf8(s):
    b = s.encode()
    return struct.pack(">H", len(b)) + b


def connect(args, client_id, clean, timeout=10.0):
    s = socket.create_connection((loopback(args.host), args.port), timeout=timeout)
    s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4 << 20)
    var = utf8("MQTT") + bytes([4, 0x02 if clean else 0x00]) + struct.pack(">H", 600)
    body = var + utf8(client_id)
    s.sendall(bytes([0x10]) + varint(len(body)) + body)
    hdr = recv_exact(s, 4)
    if hdr[0] != 0x20 or hdr[3] != 0:
        sys.exit(f"mqtt_bulk: CONNACK refused or unexpected: {hdr.hex()}")
    return s, bool(hdr[2] & 1)


def recv_exact(s, n):
    buf = b""
    while len(buf) < n:
        chunk = s.recv(n - len(buf))
        if not chunk:
            sys.exit("mqtt_bulk: connection closed by the broker")
        buf += chunk
    return buf


def cmd_subscribe(args):
    s, _ = connect(args, args.client_id, clean=False)
    body = struct.pack(">H", 1) + utf8(args.topic) + bytes([1])
    s.sendall(bytes([0x82]) + varint(len(body)) + body)
    ack = recv_exact(s, 5)
    if ack[0] != 0x90 or ack[4] != 1:
        sys.exit(f"mqtt_bulk: SUBACK unexpected: {ack.hex()}")
    s.sendall(b"\xe0\x00")
    s.close()
    print(json.dumps({"subscribed": args.topic, "client_id": args.client_id}))


def cmd_publish(args):
    s, _ = connect(args, f"bulk-pub-{args.publisher}-{time.time_ns()}", clean=True)
    s.settimeout(args.timeout)
    topic = utf8(args.topic)
    filler = b"x" * (args.size - 8)
    rem = varint(len(topic) + 2 + args.size)
    head = bytes([0x32]) + rem + topic
    pub = struct.pack(">I", args.publisher)
    sent = acked = 0
    pid = 0
    buf = b""
    start = time.monotonic()
    deadline = start + args.timeout
    while acked < args.count:
        if time.monotonic() > deadline:
            break
        burst = []
        while sent < args.count and sent - acked < args.window and len(burst) < 64:
            pid = pid % 65535 + 1
            burst.append(head + struct.pack(">H", pid) + pub + struct.pack(">I", sent) + filler)
            sent += 1
        if burst:
            s.sendall(b"".join(burst))
        if sent - acked >= args.window or sent == args.count:
            try:
                chunk = s.recv(65536)
            except socket.timeout:
                break
            if not chunk:
                break
            buf += chunk
            # PUBACKs are 4 bytes each (0x40 0x02 id id); nothing else is expected here.
            n = len(buf) // 4
            acked += n
            buf = buf[n * 4:]
    secs = time.monotonic() - start
    try:
        s.sendall(b"\xe0\x00")
        s.close()
    except OSError:
        pass
    print(json.dumps({"publisher": args.publisher, "sent": sent, "acked": acked, "secs": secs}))
    sys.stdout.flush()


class Stop(Exception):
    pass


def _stop(_sig, _frame):
    raise Stop()


def cmd_drain(args):
    # SIGTERM ends the drain early but still prints the counts.
    signal.signal(signal.SIGTERM, _stop)
    start = time.monotonic()
    s, present = connect(args, args.client_id, clean=False)
    s.settimeout(args.idle_secs)
    per = args.per_publisher
    seen = bytearray(args.publishers * per)
    distinct = dup = total = bad = 0
    buf = bytearray()
    acks = []
    first = last = None
    hard = start + args.timeout
    while distinct < args.expect and time.monotonic() < hard:
        try:
            chunk = s.recv(1 << 20)
        except (socket.timeout, Stop):
            break
        if not chunk:
            break
        buf += chunk
        i = 0
        n = len(buf)
        while True:
            if n - i < 2:
                break
            h = buf[i]
            # remaining length
            mul, rl, j = 1, 0, i + 1
            while True:
                if j >= n:
                    rl = -1
                    break
                b = buf[j]
                rl += (b & 0x7F) * mul
                j += 1
                if b < 0x80:
                    break
                mul *= 128
            if rl < 0 or j + rl > n:
                break
            if h >> 4 == 3:
                tl = (buf[j] << 8) | buf[j + 1]
                p = j + 2 + tl
                qos = (h >> 1) & 3
                if qos:
                    acks.append(b"\x40\x02" + bytes(buf[p:p + 2]))
                    p += 2
                total += 1
                if j + rl - p >= 8:
                    pubn, seq = struct.unpack_from(">II", buf, p)
                    k = pubn * per + seq
                    if pubn < args.publishers and seq < per:
                        if seen[k]:
                            dup += 1
                        else:
                            seen[k] = 1
                            distinct += 1
                    else:
                        bad += 1
                else:
                    bad += 1
            i = j + rl
        del buf[:i]
        if acks:
            try:
                s.sendall(b"".join(acks))
            except Stop:
                break
            acks.clear()
        now = time.monotonic()
        if first is None and total:
            first = now
        last = now
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    end = time.monotonic()
    try:
        s.sendall(b"\xe0\x00")
        s.close()
    except OSError:
        pass
    drain_secs = (last - start) if last else 0.0
    print(json.dumps({
        "session_present": present, "received": total, "distinct": distinct,
        "duplicates": dup, "unparsed": bad, "expected": args.expect,
        "lost": args.expect - distinct, "secs_to_last_message": drain_secs,
        "msgs_per_sec": distinct / drain_secs if drain_secs else 0.0,
        "secs_total": end - start,
    }))


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--host", default="127.0.0.1")
    ap.add_argument("--port", type=int, required=True)
    ap.add_argument("--timeout", type=float, default=600.0, help="hard bound of the whole command")
    sub = ap.add_subparsers(dest="cmd", required=True)
    p = sub.add_parser("subscribe")
    p.add_argument("--client-id", required=True)
    p.add_argument("--topic", required=True)
    p = sub.add_parser("publish")
    p.add_argument("--topic", required=True)
    p.add_argument("--count", type=int, required=True)
    p.add_argument("--size", type=int, default=1024)
    p.add_argument("--publisher", type=int, default=0)
    p.add_argument("--window", type=int, default=256)
    p = sub.add_parser("drain")
    p.add_argument("--client-id", required=True)
    p.add_argument("--expect", type=int, required=True)
    p.add_argument("--publishers", type=int, default=1)
    p.add_argument("--per-publisher", type=int, required=True)
    p.add_argument("--idle-secs", type=float, default=10.0)
    args = ap.parse_args()
    if args.cmd == "publish" and args.size < 8:
        sys.exit("mqtt_bulk: --size must be at least 8")
    {"subscribe": cmd_subscribe, "publish": cmd_publish, "drain": cmd_drain}[args.cmd](args)


if __name__ == "__main__":
    main()
