"""Minimal raw MQTT 3.1.1 / 5 client (enough for QoS 2 experiments)."""
import socket, struct, time

CONNECT, CONNACK, PUBLISH, PUBACK, PUBREC, PUBREL, PUBCOMP = 1, 2, 3, 4, 5, 6, 7
SUBSCRIBE, SUBACK, UNSUBSCRIBE, UNSUBACK, PINGREQ, PINGRESP, DISCONNECT = 8, 9, 10, 11, 12, 13, 14
NAMES = {1: 'CONNECT', 2: 'CONNACK', 3: 'PUBLISH', 4: 'PUBACK', 5: 'PUBREC', 6: 'PUBREL', 7: 'PUBCOMP',
         9: 'SUBACK', 13: 'PINGRESP', 14: 'DISCONNECT'}


def varint(n):
    out = bytearray()
    while True:
        b = n % 128
        n //= 128
        if n:
            b |= 0x80
        out.append(b)
        if not n:
            return bytes(out)


def s(x):
    if isinstance(x, str):
        x = x.encode()
    return struct.pack('!H', len(x)) + x


def props(d):
    """d: list of (id, bytes) already encoded values"""
    body = b''.join(bytes([i]) + v for i, v in d)
    return varint(len(body)) + body


class Packet:
    def __init__(self, typ, flags, body, v5):
        self.type, self.flags, self.body = typ, flags, body
        self.pid = None
        self.reason = 0
        if typ in (PUBACK, PUBREC, PUBREL, PUBCOMP):
            self.pid = struct.unpack('!H', body[:2])[0]
            if len(body) > 2:
                self.reason = body[2]
        elif typ == PUBLISH:
            self.qos = (flags >> 1) & 3
            self.dup = bool(flags & 8)
            self.retain = bool(flags & 1)
            tl = struct.unpack('!H', body[:2])[0]
            self.topic = body[2:2 + tl].decode()
            i = 2 + tl
            if self.qos:
                self.pid = struct.unpack('!H', body[i:i + 2])[0]
                i += 2
            if v5:
                n, shift, j = 0, 0, i
                while True:
                    b = body[j]; j += 1
                    n |= (b & 0x7f) << shift; shift += 7
                    if not b & 0x80:
                        break
                i = j + n
            self.payload = body[i:]
        elif typ == CONNACK:
            self.session_present = bool(body[0] & 1)
            self.reason = body[1]
        elif typ == SUBACK:
            self.pid = struct.unpack('!H', body[:2])[0]
            self.codes = body[2:]  # for v5 includes props; caller beware
        elif typ == DISCONNECT:
            self.reason = body[0] if body else 0

    def __repr__(self):
        n = NAMES.get(self.type, self.type)
        if self.type == PUBLISH:
            return f'PUBLISH(q{self.qos} d{int(self.dup)} pid={self.pid} {self.topic} {self.payload[:40]!r})'
        return f'{n}(pid={self.pid} rc=0x{self.reason:02x})'


class Conn:
    def __init__(self, host, port, client_id, v5=True, clean=False, expiry=600, keepalive=60, timeout=10):
        self.v5 = v5
        self.sock = socket.create_connection((host, port), timeout=timeout)
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.buf = b''
        self.port = port
        flags = 0x02 if clean else 0
        vh = s('MQTT') + bytes([5 if v5 else 4, flags]) + struct.pack('!H', keepalive)
        if v5:
            vh += props([(0x11, struct.pack('!I', expiry))]) if expiry else props([])
        pl = s(client_id)
        self.send(CONNECT, 0, vh + pl)
        p = self.recv(timeout)
        if p is None or p.type != CONNACK:
            raise ConnectionError(f'no CONNACK: {p!r}')
        self.connack = p

    def send(self, typ, flags, body):
        self.sock.sendall(bytes([(typ << 4) | flags]) + varint(len(body)) + body)

    def publish(self, pid, topic, payload, qos=2, dup=False, retain=False):
        flags = (qos << 1) | (8 if dup else 0) | (1 if retain else 0)
        body = s(topic) + (struct.pack('!H', pid) if qos else b'')
        if self.v5:
            body += b'\x00'
        self.send(PUBLISH, flags, body + payload)

    def ack(self, typ, pid):
        self.send(typ, 2 if typ == PUBREL else 0, struct.pack('!H', pid))

    def subscribe(self, pid, filt, qos=2):
        body = struct.pack('!H', pid) + (b'\x00' if self.v5 else b'') + s(filt) + bytes([qos])
        self.send(SUBSCRIBE, 2, body)

    def disconnect(self):
        try:
            self.send(DISCONNECT, 0, b'\x00\x00' if self.v5 else b'')
        except OSError:
            pass
        self.close()

    def close(self):
        try:
            self.sock.close()
        except OSError:
            pass

    def _parse(self):
        b = self.buf
        if len(b) < 2:
            return None
        n, shift, i = 0, 0, 1
        while True:
            if i >= len(b):
                return None
            c = b[i]; i += 1
            n |= (c & 0x7f) << shift; shift += 7
            if not c & 0x80:
                break
        if len(b) < i + n:
            return None
        p = Packet(b[0] >> 4, b[0] & 15, b[i:i + n], self.v5)
        self.buf = b[i + n:]
        return p

    def recv(self, timeout=None):
        """next packet or None on timeout; raises ConnectionError on close"""
        p = self._parse()
        if p:
            return p
        end = time.time() + (timeout if timeout is not None else 3600)
        while True:
            left = end - time.time()
            if left <= 0:
                return None
            self.sock.settimeout(left)
            try:
                d = self.sock.recv(65536)
            except socket.timeout:
                return None
            if not d:
                raise ConnectionError('closed by server')
            self.buf += d
            p = self._parse()
            if p:
                return p
