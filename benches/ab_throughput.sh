#!/usr/bin/env bash
# A/B throughput guard: two ferromq binaries (A = baseline, B = candidate) driven by the same
# load generator, in the same run, alternating A B / B A per round so that the machine's drift
# hits both alike. Reports per scenario the median msgs/s of each side and the B/A ratio (median
# of the per-round ratios too). Loopback only; every run is bounded by timeouts.
#
#   A_BIN=/path/to/base/ferromq B_BIN=target/release/ferromq benches/ab_throughput.sh
#
# Environment:
#   A_BIN, B_BIN    the two broker binaries (required)
#   LOADGEN         load generator (default target/release/examples/loadgen)
#   ROUNDS          rounds per scenario (default 5)
#   DURATION_SECS   publishing time of each run (default 6)
#   SCENARIOS       subset of: fanin-q0 fanin-q1 pairs-q1 fanin-q1-store fanin-q1-store-psub
#                   (default), and pairs-q0, fanout-q0, fanout-q1, fanout-q1-1k, fanin-q1-1k,
#                   pairs-q1-1k (only when named)
#   OUT             JSON lines output (default benches/results/ab-<UTC date>.jsonl)
#
# Scenarios (64-byte payloads, MQTT 3.1.1, loadgen clients are clean sessions):
#   fanin-q0, fanin-q1  10 publishers -> 1 subscriber on a wildcard, persistent="false"
#   pairs-q1            10 publisher/subscriber pairs, QoS 1, persistent="false"
#   pairs-q0, fanout-q0 10 pairs at QoS 0; 1 publisher -> 10 subscribers at QoS 0
#   fanout-q1           1 publisher -> 10 subscribers at QoS 1 (window 100 per subscriber)
#   fanin-q1-store      as fanin-q1 with persistent="true" and a kahaDB directory (temp dir)
#   fanin-q1-store-psub as fanin-q1-store plus one PERSISTENT subscriber (clean session 0, QoS 1,
#                       on lg/#, benches/mqtt_bulk.py) receiving and acknowledging during the run:
#                       the loadgen's own clients are clean sessions, so without it the store
#                       holds nothing; with it every message is written (fsync) before its PUBACK.
#                       The figure is still the loadgen subscriber's msgs/s.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
: "${A_BIN:?set A_BIN}" "${B_BIN:?set B_BIN}"
loadgen="${LOADGEN:-target/release/examples/loadgen}"
rounds="${ROUNDS:-5}"
duration="${DURATION_SECS:-6}"
read -r -a scenarios <<<"${SCENARIOS:-fanin-q0 fanin-q1 pairs-q1 fanin-q1-store fanin-q1-store-psub}"
out="${OUT:-benches/results/ab-$(date -u +%Y-%m-%d).jsonl}"
mkdir -p "$(dirname "$out")"
: >"$out"

declare -A args=(
  [fanin-q0]="--mode fan-in --publishers 10 --subscribers 1 --qos 0"
  [fanin-q1]="--mode fan-in --publishers 10 --subscribers 1 --qos 1"
  [pairs-q1]="--mode pairs --publishers 10 --qos 1"
  [pairs-q0]="--mode pairs --publishers 10 --qos 0"
  [fanout-q0]="--mode fan-out --publishers 1 --subscribers 10 --qos 0"
  [fanout-q1]="--mode fan-out --publishers 1 --subscribers 10 --qos 1"
  [fanout-q1-1k]="--mode fan-out --publishers 1 --subscribers 10 --qos 1 --payload 1024"
  [fanin-q1-1k]="--mode fan-in --publishers 10 --subscribers 1 --qos 1 --payload 1024"
  [pairs-q1-1k]="--mode pairs --publishers 10 --qos 1 --payload 1024"
  [fanin-q1-store]="--mode fan-in --publishers 10 --subscribers 1 --qos 1"
  [fanin-q1-store-psub]="--mode fan-in --publishers 10 --subscribers 1 --qos 1"
)

work="$(mktemp -d -t ferromq-ab.XXXXXX)"
pid=""
stop() {
  [[ -n "$pid" ]] || return 0
  kill -TERM "$pid" 2>/dev/null || true
  for _ in $(seq 1 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
  kill -KILL "$pid" 2>/dev/null || true
  wait "$pid" 2>/dev/null || true
  pid=""
}
trap 'stop; rm -rf "$work"' EXIT
trap 'exit 130' INT TERM
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1]); s.close()'; }
port_open() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

start() { # bin scenario
  local dir="$work/broker" persistent=false adapter=""
  rm -rf "$dir"; mkdir -p "$dir/data"
  if [[ "$2" == *-store* ]]; then
    persistent=true
    adapter="<persistenceAdapter><kahaDB directory=\"$dir/kahadb\"/></persistenceAdapter>"
  fi
  port="$(free_port)"
  cat >"$dir/activemq.xml" <<XML
<beans xmlns="http://www.springframework.org/schema/beans">
  <broker xmlns="http://activemq.apache.org/schema/core" brokerName="ab"
          dataDirectory="$dir/data" persistent="$persistent" useJmx="false">
    $adapter
    <transportConnectors>
      <transportConnector name="mqtt" uri="mqtt+nio://127.0.0.1:$port?maximumConnections=1000000"/>
    </transportConnectors>
  </broker>
</beans>
XML
  NO_COLOR=1 "$1" --log-level warn run --config "$dir/activemq.xml" >"$dir/broker.log" 2>&1 &
  pid=$!
  for _ in $(seq 1 100); do port_open "$port" && return 0; sleep 0.1; done
  echo "broker $1 did not start:"; tail -5 "$dir/broker.log"; stop; return 1
}

run_one() { # side bin scenario round
  start "$2" "$3" || return 0
  local psub=""
  if [[ "$3" == *-psub ]]; then
    timeout 20 python3 benches/mqtt_bulk.py --port "$port" --timeout 15 subscribe --client-id psub --topic 'lg/#' >/dev/null
    timeout $((duration + 90)) python3 benches/mqtt_bulk.py --port "$port" --timeout $((duration + 60)) \
      drain --client-id psub --expect 1000000000 --per-publisher 1 --idle-secs 30 >"$work/psub.json" 2>/dev/null &
    psub=$!
  fi
  # shellcheck disable=SC2086
  timeout 60 "$loadgen" --port "$port" ${args[$3]} --duration-secs 1 --messages 5000 >/dev/null 2>&1 || true
  local rep
  # shellcheck disable=SC2086
  rep="$(timeout $((duration * 2 + 60)) "$loadgen" --port "$port" ${args[$3]} --duration-secs "$duration" \
    --broker-pid "$pid" --json --label "$1 $3" 2>/dev/null || true)"
  if [[ -n "$psub" ]]; then kill "$psub" 2>/dev/null || true; wait "$psub" 2>/dev/null || true; fi
  stop
  [[ "$rep" == \{* ]] || rep=null
  printf '{"side":"%s","scenario":"%s","round":%d,"load":"%s","report":%s}\n' \
    "$1" "$3" "$4" "$(cut -d' ' -f1 /proc/loadavg)" "$rep" >>"$out"
  python3 - "$rep" "$1" "$3" "$4" <<'PY'
import json, sys
r = json.loads(sys.argv[1]) if sys.argv[1] != "null" else None
t = (r or {}).get("traffic") or {}
print(f"round {sys.argv[4]} {sys.argv[3]:15s} {sys.argv[2]}: {t.get('msgs_per_sec', 0):10.0f} msgs/s lost {t.get('lost')}")
PY
}

echo "A=$A_BIN B=$B_BIN rounds=$rounds duration=${duration}s -> $out"
for ((r = 1; r <= rounds; r++)); do
  for s in "${scenarios[@]}"; do
    if (( r % 2 )); then run_one A "$A_BIN" "$s" "$r"; run_one B "$B_BIN" "$s" "$r"
    else run_one B "$B_BIN" "$s" "$r"; run_one A "$A_BIN" "$s" "$r"; fi
  done
done

python3 - "$out" <<'PY'
import json, statistics, sys
from collections import defaultdict
rows = [json.loads(l) for l in open(sys.argv[1])]
v = defaultdict(lambda: defaultdict(dict))
for x in rows:
    r = x["report"] or {}
    t, b = r.get("traffic"), r.get("broker") or {}
    if t:
        v[x["scenario"]][x["round"]][x["side"]] = (t["msgs_per_sec"], b.get("cpu_secs_per_million_msgs"))
med = statistics.median
print("| scenario | rounds | A median msgs/s | B median msgs/s | B/A of medians | B/A per round: median (min..max) | broker CPU s per M msgs, A / B medians | CPU B/A per round: median (min..max) |")
print("|---|---:|---:|---:|---:|---:|---:|---:|")
for s, by in v.items():
    pairs = [d for d in by.values() if "A" in d and "B" in d]
    a = [d["A"][0] for d in pairs]; b = [d["B"][0] for d in pairs]
    r = [d["B"][0] / d["A"][0] for d in pairs]
    ca = [d["A"][1] for d in pairs if d["A"][1] and d["B"][1]]
    cb = [d["B"][1] for d in pairs if d["A"][1] and d["B"][1]]
    cr = [y / x for x, y in zip(ca, cb)]
    print(f"| {s} | {len(pairs)} | {med(a):,.0f} | {med(b):,.0f} | {med(b)/med(a):.2f} | "
          f"{med(r):.2f} ({min(r):.2f}..{max(r):.2f}) | {med(ca):.2f} / {med(cb):.2f} | "
          f"{med(cr):.3f} ({min(cr):.2f}..{max(cr):.2f}) |")
PY
