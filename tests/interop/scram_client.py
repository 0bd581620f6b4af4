#!/usr/bin/env python3
"""MQTT 5 enhanced authentication with SCRAM, driven by PyPI `scramp` (an implementation
independent of the broker's) over raw MQTT 5 packets written here.

Usage: scram_client.py --port N --mechanism SCRAM-SHA-256 --user U --password P
                       --expect ok|0x86|0x87|0x8c [--reauth PASSWORD]...

Connects with CONNECT(method, client-first) -> AUTH 0x18 -> AUTH 0x18 -> CONNACK, checks the
CONNACK reason against --expect and, on success, the server-final message with scramp (which
raises when the server's signature is wrong). Each --reauth runs a re-authentication
(AUTH 0x19 ...) with that password and prints `reauth N: ok` or `reauth N: disconnect 0xNN`.
Exits 0 when everything went as expected, 1 otherwise, 2 when scramp is missing.
Run by tests/security/enhanced_auth.rs (scramp_client_interoperates).
"""

import argparse
import socket
import struct
import sys

try:
    from scramp import ScramClient
except ImportError:
    print("scramp is not installed (pip install scramp)", file=sys.stderr)
    sys.exit(2)

AUTH_METHOD = 0x15
AUTH_DATA = 0x16

# MQTT 5 property identifiers -> value kind (2.2.2.2), to skip the ones we do not need.
PROPERTY_KINDS = {
    0x01: "byte", 0x02: "u32", 0x03: "str", 0x08: "str", 0x09: "bin", 0x0B: "varint",
    0x11: "u32", 0x12: "str", 0x13: "u16", 0x15: "str", 0x16: "bin", 0x17: "byte",
    0x18: "u32", 0x19: "byte", 0x1A: "str", 0x1C: "str", 0x1F: "str", 0x21: "u16",
    0x22: "u16", 0x23: "u16", 0x24: "byte", 0x25: "byte", 0x26: "pair", 0x27: "u32",
    0x28: "byte", 0x29: "byte", 0x2A: "byte",
}


def varint(n):
    out = bytearray()
    while True:
        byte = n % 128
        n //= 128
        out.append(byte | (0x80 if n else 0))
        if not n:
            return bytes(out)


def string(s):
    data = s.encode() if isinstance(s, str) else s
    return struct.pack("!H", len(data)) + data


def auth_properties(method, data):
    props = bytes([AUTH_METHOD]) + string(method)
    if data is not None:
        props += bytes([AUTH_DATA]) + string(data)
    return varint(len(props)) + props


def packet(first_byte, body):
    return bytes([first_byte]) + varint(len(body)) + body


def connect_packet(client_id, method, client_first):
    variable = string("MQTT") + bytes([5, 0x02]) + struct.pack("!H", 30)
    variable += auth_properties(method, client_first)
    return packet(0x10, variable + string(client_id))


def auth_packet(reason, method, data):
    return packet(0xF0, bytes([reason]) + auth_properties(method, data))


class Connection:
    def __init__(self, port):
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=5)
        self.buf = b""

    def send(self, data):
        self.sock.sendall(data)

    def _need(self, n):
        while len(self.buf) < n:
            chunk = self.sock.recv(4096)
            if not chunk:
                raise EOFError("connection closed")
            self.buf += chunk

    def recv(self):
        """(packet type, body) of the next packet."""
        self._need(2)
        length, multiplier, at = 0, 1, 1
        while True:
            self._need(at + 1)
            byte = self.buf[at]
            length += (byte & 0x7F) * multiplier
            multiplier *= 128
            at += 1
            if not byte & 0x80:
                break
        self._need(at + length)
        kind, body = self.buf[0] >> 4, self.buf[at:at + length]
        self.buf = self.buf[at + length:]
        return kind, body


def read_varint(data, at):
    value, multiplier = 0, 1
    while True:
        byte = data[at]
        at += 1
        value += (byte & 0x7F) * multiplier
        multiplier *= 128
        if not byte & 0x80:
            return value, at


def parse_properties(data, at):
    """Properties starting at `at` -> ({id: value}, end)."""
    length, at = read_varint(data, at)
    end, props = at + length, {}
    while at < end:
        ident = data[at]
        at += 1
        kind = PROPERTY_KINDS[ident]
        if kind == "byte":
            value, at = data[at], at + 1
        elif kind == "u16":
            value, at = struct.unpack_from("!H", data, at)[0], at + 2
        elif kind == "u32":
            value, at = struct.unpack_from("!I", data, at)[0], at + 4
        elif kind == "varint":
            value, at = read_varint(data, at)
        elif kind in ("str", "bin"):
            n = struct.unpack_from("!H", data, at)[0]
            value, at = data[at + 2:at + 2 + n], at + 2 + n
        else:  # pair
            n = struct.unpack_from("!H", data, at)[0]
            at += 2 + n
            n = struct.unpack_from("!H", data, at)[0]
            value, at = None, at + 2 + n
        props[ident] = value
    return props, end


def expect_auth_continue(conn, method):
    kind, body = conn.recv()
    if kind != 15 or body[0] != 0x18:
        raise AssertionError(f"expected AUTH 0x18, got type {kind} body {body!r}")
    props, _ = parse_properties(body, 1)
    if props.get(AUTH_METHOD) != method.encode():
        raise AssertionError(f"AUTH without our method: {props!r}")
    return props.get(AUTH_DATA, b"").decode()


def login(conn, args):
    scram = ScramClient([args.mechanism], args.user, args.password)
    conn.send(connect_packet("scramp", args.mechanism, scram.get_client_first()))
    scram.set_server_first(expect_auth_continue(conn, args.mechanism))
    conn.send(auth_packet(0x18, args.mechanism, scram.get_client_final()))
    kind, body = conn.recv()
    if kind != 2:
        raise AssertionError(f"expected CONNACK, got type {kind}")
    reason = body[1]
    if reason != 0:
        return f"0x{reason:02x}"
    props, _ = parse_properties(body, 2)
    if props.get(AUTH_METHOD) != args.mechanism.encode():
        raise AssertionError("CONNACK without the authentication method")
    scram.set_server_final(props[AUTH_DATA].decode())  # raises if the signature is wrong
    return "ok"


def reauthenticate(conn, args, password):
    scram = ScramClient([args.mechanism], args.user, password)
    conn.send(auth_packet(0x19, args.mechanism, scram.get_client_first()))
    scram.set_server_first(expect_auth_continue(conn, args.mechanism))
    conn.send(auth_packet(0x18, args.mechanism, scram.get_client_final()))
    kind, body = conn.recv()
    if kind == 14:
        return f"disconnect 0x{body[0]:02x}"
    if kind != 15 or body[0] != 0x00:
        raise AssertionError(f"expected AUTH 0x00, got type {kind} body {body!r}")
    props, _ = parse_properties(body, 1)
    scram.set_server_final(props[AUTH_DATA].decode())
    # The connection still works under the new authentication.
    conn.send(packet(0xC0, b""))
    kind, _ = conn.recv()
    if kind != 13:
        raise AssertionError(f"expected PINGRESP after re-authentication, got type {kind}")
    return "ok"


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--mechanism", required=True)
    parser.add_argument("--user", required=True)
    parser.add_argument("--password", required=True)
    parser.add_argument("--expect", required=True)
    parser.add_argument("--reauth", action="append", default=[])
    args = parser.parse_args()
    conn = Connection(args.port)
    outcome = login(conn, args)
    print(f"login: {outcome}")
    if outcome != args.expect:
        print(f"expected {args.expect}", file=sys.stderr)
        return 1
    for n, password in enumerate(args.reauth, 1):
        print(f"reauth {n}: {reauthenticate(conn, args, password)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
