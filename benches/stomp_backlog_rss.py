#!/usr/bin/env python3
"""A STOMP backlog of 2 MiB persistent messages against a running broker (raw sockets, no
library), sampling the broker's RssAnon: `sub` makes the durable subscription `big` of
client `big` and leaves it offline; `fill` sends COUNT messages with receipts, one at a time;
`drain` subscribes (`client-individual`), checks every message once and in order, ACKs each.
Driven by benches/stomp_backlog_rss.sh.

Usage: benches/stomp_backlog_rss.py {sub,fill,drain} PORT COUNT PID [topic]
"""
import socket, sys, time

def rss(pid):
    for l in open(f"/proc/{pid}/status"):
        if l.startswith("RssAnon:"):
            return int(l.split()[1]) // 1024
    return 0

class C:
    def __init__(s, port, headers=""):
        s.sock = socket.create_connection(("127.0.0.1", port))
        s.buf = b""
        s.sock.sendall(f"CONNECT\naccept-version:1.2\nhost:localhost\n{headers}\n\0".encode())
        assert s.frame()[0] == "CONNECTED"
    def frame(s):
        while True:
            s.buf = s.buf.lstrip(b"\r\n")
            end = s.buf.find(b"\n\n")
            if end >= 0:
                head = s.buf[:end].decode().split("\n")
                hdr = dict(l.split(":", 1) for l in head[1:])
                n = int(hdr.get("content-length", -1))
                if n >= 0 and len(s.buf) >= end + 2 + n + 1:
                    body = s.buf[end + 2:end + 2 + n]
                    s.buf = s.buf[end + 3 + n:]
                    return head[0], hdr, body
                if n < 0 and b"\0" in s.buf[end:]:
                    z = s.buf.index(b"\0", end)
                    body = s.buf[end + 2:z]; s.buf = s.buf[z + 1:]
                    return head[0], hdr, body
            d = s.sock.recv(1 << 20)
            if not d:
                raise SystemExit("closed")
            s.buf += d

mode, port, count, pid = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])
topic = len(sys.argv) > 5
dest = "/topic/big" if topic else "/queue/big"
size = 2 << 20
peak = 0
if mode == "fill":
    c = C(port)
    for i in range(count):
        body = b"%010d" % i + b"b" * (size - 10)
        c.sock.sendall(f"SEND\ndestination:{dest}\npersistent:true\nreceipt:{i}\ncontent-length:{size}\n\n".encode() + body + b"\0")
        f = c.frame(); assert f[0] == "RECEIPT" and f[1]["receipt-id"] == str(i), f[:2]
        peak = max(peak, rss(pid))
    print(f"fill: peak RssAnon {peak} MiB")
elif mode == "sub":
    c = C(port, "client-id:big\n")
    c.sock.sendall(f"SUBSCRIBE\ndestination:{dest}\nid:d\nack:client-individual\nactivemq.subscriptionName:big\nreceipt:s\n\n\0".encode())
    assert c.frame()[0] == "RECEIPT"
    c.sock.sendall(b"DISCONNECT\nreceipt:b\n\n\0"); c.frame()
else:
    print(f"recovered: RssAnon {rss(pid)} MiB")
    c = C(port, "client-id:big\n" if topic else "")
    extra = "activemq.subscriptionName:big\n" if topic else ""
    c.sock.sendall(f"SUBSCRIBE\ndestination:{dest}\nid:d\nack:client-individual\n{extra}\n\0".encode())
    for i in range(count):
        cmd, hdr, body = c.frame()
        assert cmd == "MESSAGE" and len(body) == size and int(body[:10]) == i, (cmd, i, body[:10])
        peak = max(peak, rss(pid))
        c.sock.sendall(f"ACK\nid:{hdr['ack']}\n\n\0".encode())
    print(f"drain: peak RssAnon {peak} MiB, {count} in order")
