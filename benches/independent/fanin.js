#!/usr/bin/env node
// A second, independent load generator for benches/independent.sh: MQTT.js (the npm `mqtt`
// package, a third-party client written without reference to ferromq) in one Node.js process.
// Fan-in: P publishers -> 1 subscriber on one topic, QoS 0 or 1, for D seconds; counts what the
// subscriber receives (distinct by publisher and sequence number) and reports its own CPU.
// Loopback only; bounded in time (the run, a 10 s drain, and a hard exit after both).
//
//   node fanin.js --port 1883 --publishers 10 --qos 1 --seconds 8 --payload 64 --window 64
'use strict';
const mqtt = require('mqtt');

const args = Object.fromEntries(
  process.argv.slice(2).reduce((pairs, a, i, all) => {
    if (a.startsWith('--')) pairs.push([a.slice(2), all[i + 1]]);
    return pairs;
  }, []),
);
const port = Number(args.port || 1883);
const publishers = Number(args.publishers || 10);
const qos = Number(args.qos || 0);
const seconds = Number(args.seconds || 8);
const payloadBytes = Math.max(8, Number(args.payload || 64));
// QoS 1: at most `window` PUBLISHes without a PUBACK per publisher (as compare.sh's --inflight).
// QoS 0: at most `window` messages handed to the socket and not yet written.
const window = Number(args.window || 64);
const topic = `independent/${process.pid}`;
const url = `mqtt://127.0.0.1:${port}`;
const options = (id) => ({ clientId: id, clean: true, keepalive: 60, reconnectPeriod: 0, protocolVersion: 4 });

const cpuStart = process.cpuUsage();
const seen = new Set();
let received = 0;
let sent = 0;
let stopAt = 0;
let firstReceive = 0;
let lastReceive = 0;

function fail(why) {
  console.error(`fanin.js: ${why}`);
  process.exit(2);
}
setTimeout(() => fail('hard time limit reached'), (seconds + 40) * 1000).unref();

function connect(id) {
  return new Promise((resolve, reject) => {
    const c = mqtt.connect(url, options(id));
    c.once('connect', () => resolve(c));
    c.once('error', reject);
  });
}

function runPublisher(client, index) {
  return new Promise((resolve) => {
    const payload = Buffer.alloc(payloadBytes, 'x');
    let seq = 0;
    let outstanding = 0;
    const pump = () => {
      while (outstanding < window && Date.now() < stopAt) {
        payload.writeUInt32BE(index, 0);
        payload.writeUInt32BE(seq++, 4);
        outstanding++;
        sent++;
        client.publish(topic, Buffer.from(payload), { qos }, () => {
          outstanding--;
          if (Date.now() < stopAt) {
            if (outstanding === window - 1) setImmediate(pump);
          } else if (outstanding === 0) {
            resolve();
          }
        });
      }
      if (Date.now() >= stopAt && outstanding === 0) resolve();
    };
    pump();
  });
}

(async () => {
  const sub = await connect(`ind-sub-${process.pid}`).catch((e) => fail(`subscriber: ${e.message}`));
  await new Promise((resolve, reject) =>
    sub.subscribe(topic, { qos }, (err) => (err ? reject(err) : resolve())),
  ).catch((e) => fail(`subscribe: ${e.message}`));
  sub.on('message', (_t, message) => {
    const key = message.readUInt32BE(0) * 4294967296 + message.readUInt32BE(4);
    if (!seen.has(key)) {
      seen.add(key);
      received++;
    }
    const now = Date.now();
    if (!firstReceive) firstReceive = now;
    lastReceive = now;
  });
  const pubs = await Promise.all(
    Array.from({ length: publishers }, (_, i) => connect(`ind-pub-${process.pid}-${i}`)),
  ).catch((e) => fail(`publisher: ${e.message}`));
  const start = Date.now();
  stopAt = start + seconds * 1000;
  await Promise.all(pubs.map((c, i) => runPublisher(c, i)));
  // Drain: wait until everything sent arrived, or 10 s without progress.
  let last = -1;
  let still = 0;
  while (received < sent && still < 100) {
    await new Promise((r) => setTimeout(r, 100));
    still = received === last ? still + 1 : 0;
    last = received;
  }
  const cpu = process.cpuUsage(cpuStart);
  const cpuSecs = (cpu.user + cpu.system) / 1e6;
  const elapsed = Math.max(lastReceive, stopAt) - start;
  console.log(
    JSON.stringify({
      tool: `mqtt.js ${require('mqtt/package.json').version}`,
      qos,
      publishers,
      payload_bytes: payloadBytes,
      sent,
      received,
      lost: sent - received,
      msgs_per_sec: received / (elapsed / 1000),
      loadgen_cpu_secs: cpuSecs,
      loadgen_cpu_percent: (100 * cpuSecs) / (elapsed / 1000),
    }),
  );
  pubs.forEach((c) => c.end(true));
  sub.end(true);
  process.exit(0);
})();
