#!/usr/bin/env bash
# Instructions per delivered message, A/B, under valgrind's callgrind: repeatable where wall-clock
# throughput on a shared machine is not. For each binary the broker runs twice under callgrind
# with the same load-generator scenario and two fixed message counts; (Ir(large) - Ir(small)) /
# (extra messages delivered) removes start-up and shutdown. Loopback only, bounded by timeouts.
#
#   A_BIN=/tmp/base/target/release/ferromq B_BIN=target/release/ferromq benches/callgrind_per_msg.sh
#
# Environment: A_BIN, B_BIN (required); LOADGEN (target/release/examples/loadgen);
#   SCENARIOS (subset of fanin-q0 fanin-q1 pairs-q1 fanin-q1-store-psub fanout-q1 fanout-q1-1k; default
#   "fanin-q1 pairs-q1 fanin-q1-store-psub"; -store-psub = persistent="true" with a kahaDB dir and
#   one persistent QoS 1 subscriber on lg/# (benches/mqtt_bulk.py) besides the loadgen's own);
#   SMALL, LARGE messages per publisher (default 300 and 1500); OUT_DIR (callgrind files kept
#   there; default a temp dir, removed).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
: "${A_BIN:?set A_BIN}" "${B_BIN:?set B_BIN}"
loadgen="${LOADGEN:-target/release/examples/loadgen}"
read -r -a scenarios <<<"${SCENARIOS:-fanin-q1 pairs-q1 fanin-q1-store-psub}"
small="${SMALL:-300}"
large="${LARGE:-1500}"
work="$(mktemp -d -t ferromq-cg.XXXXXX)"
out_dir="${OUT_DIR:-$work/out}"
mkdir -p "$out_dir"
declare -A args=(
  [fanin-q0]="--mode fan-in --publishers 10 --subscribers 1 --qos 0"
  [fanin-q1]="--mode fan-in --publishers 10 --subscribers 1 --qos 1"
  [pairs-q1]="--mode pairs --publishers 10 --qos 1"
  [fanout-q1]="--mode fan-out --publishers 1 --subscribers 10 --qos 1"
  [fanout-q1-1k]="--mode fan-out --publishers 1 --subscribers 10 --qos 1 --payload 1024"
  [fanin-q1-store-psub]="--mode fan-in --publishers 10 --subscribers 1 --qos 1"
)
pid=""
stop() {
  [[ -n "$pid" ]] || return 0
  kill -TERM "$pid" 2>/dev/null || true
  for _ in $(seq 1 600); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
  kill -KILL "$pid" 2>/dev/null || true
  wait "$pid" 2>/dev/null || true
  pid=""
}
trap 'stop; rm -rf "$work"' EXIT
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1]); s.close()'; }
port_open() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

run() { # side bin scenario per-publisher -> prints "Ir delivered"
  local dir="$work/b" f="$out_dir/$1-$3-$4.callgrind" persistent=false adapter="" psub=""
  rm -rf "$dir"; mkdir -p "$dir/data"
  if [[ "$3" == *-store* ]]; then
    persistent=true
    adapter="<persistenceAdapter><kahaDB directory=\"$dir/kahadb\"/></persistenceAdapter>"
  fi
  port="$(free_port)"
  cat >"$dir/activemq.xml" <<XML
<beans xmlns="http://www.springframework.org/schema/beans">
  <broker xmlns="http://activemq.apache.org/schema/core" brokerName="cg"
          dataDirectory="$dir/data" persistent="$persistent" useJmx="false">
    $adapter
    <transportConnectors>
      <transportConnector name="mqtt" uri="mqtt+nio://127.0.0.1:$port"/>
    </transportConnectors>
  </broker>
</beans>
XML
  NO_COLOR=1 valgrind --tool=callgrind --callgrind-out-file="$f" \
    "$2" --log-level warn run --config "$dir/activemq.xml" >"$dir/broker.log" 2>&1 &
  pid=$!
  for _ in $(seq 1 600); do port_open "$port" && break; sleep 0.1; done
  if [[ "$3" == *-psub ]]; then
    timeout 60 python3 benches/mqtt_bulk.py --port "$port" --timeout 50 subscribe --client-id psub --topic 'lg/#' >/dev/null
    timeout 400 python3 benches/mqtt_bulk.py --port "$port" --timeout 350 \
      drain --client-id psub --expect 1000000000 --per-publisher 1 --idle-secs 300 >"$f.psub.json" 2>&1 &
    psub=$!
  fi
  local rep
  # shellcheck disable=SC2086
  rep="$(timeout 300 "$loadgen" --port "$port" ${args[$3]} --messages "$4" --duration-secs 120 --json 2>/dev/null || true)"
  if [[ -n "$psub" ]]; then sleep 2; kill "$psub" 2>/dev/null || true; wait "$psub" 2>/dev/null || true; fi
  stop
  local ir delivered
  printf '%s\n' "$rep" >"$f.report.json"
  ir="$(callgrind_annotate "$f" 2>/dev/null | awk '/PROGRAM TOTALS/ && !n {gsub(",","",$1); print $1; n=1}' || true)"
  delivered="$(python3 -c 'import json,sys; t=json.loads(sys.argv[1])["traffic"]; print(t["received"] if "received" in t else t.get("expected"))' "$rep" 2>/dev/null || echo 0)"
  echo "$ir $delivered"
}

echo "| scenario | side | Ir small run | Ir large run | extra messages delivered | instructions per message |"
echo "|---|---|---:|---:|---:|---:|"
for s in "${scenarios[@]}"; do
  for side in A B; do
    bin="$A_BIN"; [[ "$side" == B ]] && bin="$B_BIN"
    read -r ir1 d1 < <(run "$side" "$bin" "$s" "$small")
    read -r ir2 d2 < <(run "$side" "$bin" "$s" "$large")
    python3 -c 'import sys; s,side,a,b,c,d=sys.argv[1:]; a,b,c,d=int(a),int(b),int(c),int(d); print(f"| {s} | {side} | {a:,} | {b:,} | {d-c:,} | {(b-a)/(d-c):,.0f} |")' \
      "$s" "$side" "$ir1" "$ir2" "$d1" "$d2"
  done
done
