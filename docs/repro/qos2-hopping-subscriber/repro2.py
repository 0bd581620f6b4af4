#!/usr/bin/env python3
import os; os.makedirs("/tmp/fmq-repro", exist_ok=True)
"""repro2.py [v311] [hops=N] [rate=R] [k=K]: a raw publisher (clean, QoS 2, node 11884) publishes RATE msg/s
round-robin on nc3/t0..t7 for 6 s; a persistent QoS 2 subscriber (raw) starts on 11885, and N times
closes its connection right after sending its K-th PUBREC since connecting (before the PUBREL), then
resumes on the next node (11886, 11884, 11885...). After the publisher stops, the subscriber waits
8 s. Prints, per topic, published vs delivered, and the missing sequence numbers."""
import sys, time, threading, random, collections
from mqttraw import *
args = dict(a.split('=') for a in sys.argv[1:] if '=' in a)
v5 = 'v311' not in sys.argv
PUBCLEAN = 'pubpersistent' not in sys.argv
EVERY = float(args.get('every', 0)) / 1000
WHEN = args.get('when', 'afterpubrec')
HOPS = int(args.get('hops', 1)); RATE = float(args.get('rate', 200)); K = int(args.get('k', 20))
sid = f'r2{random.randint(0, 1 << 30)}'
published = collections.defaultdict(list)
done = threading.Event()
def publisher():
    c = Conn('127.0.0.1', 11884, sid + 'p', v5=True, clean=PUBCLEAN, expiry=0 if PUBCLEAN else 600)
    pid = 0; seq = 0; inflight = 0; end = time.time() + 6
    while time.time() < end:
        t = seq % 8
        pid = pid % 60000 + 1
        c.publish(pid, f'nc3/t{t}', f'{t}:{seq}:{sid}'.encode(), 2); published[t].append(seq); seq += 1; inflight += 1
        nxt = time.time() + 1 / RATE
        while time.time() < nxt or inflight > 20:
            p = c.recv(max(0.001, nxt - time.time()))
            if p is None: continue
            if p.type == PUBREC: c.ack(PUBREL, p.pid)
            elif p.type == PUBCOMP: inflight -= 1
    while inflight:
        p = c.recv(5)
        if p.type == PUBREC: c.ack(PUBREL, p.pid)
        elif p.type == PUBCOMP: inflight -= 1
    c.disconnect(); done.set()
ports = [int(x) for x in args.get('ports', '11885,11886,11884').split(',')]
s = Conn('127.0.0.1', ports[0], sid, v5=v5, clean=False, expiry=600); s.subscribe(1, 'nc3/#', int(args.get('subqos', 2))); s.recv(2)
threading.Thread(target=publisher, daemon=True).start()
tconn = time.time(); got = collections.defaultdict(list); trail = []; T0 = time.time(); inflight = set(); hops = 0; n = 0; last = time.time(); log = []
while not (done.is_set() and time.time() - last > 8):
    p = s.recv(0.2)
    if p is None: continue
    last = time.time()
    trail.append((round(time.time() - T0, 3), s.port, NAMES.get(p.type), p.pid, int(getattr(p, 'dup', 0)), p.payload.decode() if p.type == PUBLISH else ''))
    if p.type == PUBLISH:
        if p.qos == 1 or p.pid not in inflight:
            if p.qos == 2: inflight.add(p.pid)
            t, seq = map(int, p.payload.decode().split(':')[:2]); got[t].append(seq)
        if p.qos == 1:
            s.ack(PUBACK, p.pid); n += 1
        elif WHEN == 'beforepubrec' and hops < HOPS and n + 1 == K:
            n += 1
        else:
            s.ack(PUBREC, p.pid); n += 1
        if WHEN != 'afterpubcomp' and hops < HOPS and ((not EVERY and n == K) or (EVERY and n and time.time() - tconn > EVERY)):
            s.close(); hops += 1; n = 0; tconn = time.time()
            s = Conn('127.0.0.1', ports[hops % len(ports)], sid, v5=v5, clean=False, expiry=600)
            trail.append((round(time.time() - T0, 3), s.port, 'RESUMED', None, 0, ''))
            log.append(f'hop {hops} at {time.strftime("%H:%M:%S")} ({WHEN}) at pid {p.pid} -> {ports[hops % len(ports)]}, session present {s.connack.session_present}')
    elif p.type == PUBREL:
        inflight.discard(p.pid); s.ack(PUBCOMP, p.pid)
        if WHEN == 'afterpubcomp' and hops < HOPS and ((not EVERY and n >= K) or (EVERY and time.time() - tconn > EVERY)):
            s.close(); hops += 1; n = 0; tconn = time.time()
            s = Conn('127.0.0.1', ports[hops % len(ports)], sid, v5=v5, clean=False, expiry=600)
            log.append(f'hop {hops} after PUBCOMP pid {p.pid} -> {ports[hops % len(ports)]}, session present {s.connack.session_present}')
s.close()
# late check: resume once more, on another node, 5 s later; does anything missing come now?
time.sleep(5)
s = Conn('127.0.0.1', 11886, sid, v5=v5, clean=False, expiry=600)
late = collections.defaultdict(list); end = time.time() + 6
while time.time() < end:
    p = s.recv(0.2)
    if p is None: continue
    if p.type == PUBLISH:
        t, seq, tag = p.payload.decode().split(':')
        if tag == sid: late[int(t)].append(seq)
        s.ack(PUBREC if p.qos == 2 else PUBACK, p.pid)
    elif p.type == PUBREL: s.ack(PUBCOMP, p.pid)
s.disconnect()
print('late resume (11886, +5 s): session present', s.connack.session_present, 'late deliveries of this run', sum(map(len, late.values())))
print(sid, "v5" if v5 else "v311", "publisher clean" if PUBCLEAN else "publisher persistent", "hop", WHEN); print('\n'.join(log))
tot_lost = 0
for t in range(8):
    miss = sorted(set(published[t]) - set(got[t])); dup = len(got[t]) - len(set(got[t])); tot_lost += len(miss)
    print(f'nc3/t{t}: published {len(published[t])} delivered {len(got[t])} missing {len(miss)} {miss[:5]}{"..." if len(miss) > 5 else ""} dups {dup}')
print('TOTAL missing', tot_lost)

import json
json.dump(dict(trail=trail, published={t: v for t, v in published.items()}), open(f'/tmp/fmq-repro/{sid}.json', 'w'))
shown = 0
for t in range(8):
    c = collections.Counter(got[t])
    for seq, n in c.items():
        if n > 1 and shown < 3:
            shown += 1
            key = f'{t}:{seq}:{sid}'
            idx = [i for i, e in enumerate(trail) if e[5] == key]
            print('DUP', key, 'copies at', [trail[i][:5] for i in idx])
            pids = {trail[i][3] for i in idx}
            for i, e in enumerate(trail):
                if idx[0] <= i <= idx[-1] and (e[3] in pids and e[2] == 'PUBREL' or e[2] == 'RESUMED'):
                    print('    ', e[:5])
