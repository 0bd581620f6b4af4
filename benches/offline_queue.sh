#!/usr/bin/env bash
# Offline queue benchmark: COUNT QoS 1 messages of SIZE bytes queued for ONE offline persistent
# session, then drained. For each broker: start it fresh (durable store in a temp dir), connect a
# persistent subscriber (clean session 0, SUBSCRIBE QoS 1) and disconnect it, publish COUNT
# messages from PUBLISHERS clean-session publishers (QoS 1, WINDOW unacknowledged each), then
# reconnect the subscriber and receive until COUNT distinct messages arrived or nothing came for
# IDLE_SECS. The broker's VmRSS is sampled every second. Loopback only; every step is bounded by
# a timeout; the broker is stopped and the temp dir removed at the end. Needs python3 (standard
# library only: benches/mqtt_bulk.py) and, for the mosquitto runs, mosquitto (as compare.sh).
#
#   benches/offline_queue.sh
#   COUNT=200000 BROKERS=ferromq benches/offline_queue.sh
#
# Environment:
#   COUNT            messages (default 1000000)
#   SIZE             payload bytes (default 1024)
#   PUBLISHERS       publishing connections, one process each (default 4)
#   WINDOW           unacknowledged QoS 1 messages per publisher (default 256)
#   MEMORY_USAGE     ferromq <memoryUsage limit> (default "256 mb"; "default" = no systemUsage
#                    element, i.e. the 1 GB default)
#   BROKERS          any of: ferromq mosquitto mosquitto-unlimited (default all three)
#                    mosquitto = Debian's mosquitto 2.0 defaults (max_queued_messages 1000,
#                    persistence false); mosquitto-unlimited = max_queued_messages 0 (no limit),
#                    persistence true in the temp dir (autosave every 1800 s, i.e. at shutdown)
#   FERROMQ_BIN      default target/release/ferromq
#   PHASE_TIMEOUT    seconds allowed for the publish phase and for the drain phase (default 600)
#   IDLE_SECS        drain stops after this long without a message (default 15)
#   LABEL            free text copied into each JSON line (e.g. which build)
#   OUT              JSON lines output (default benches/results/offline-queue-<UTC date>.jsonl)
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
count="${COUNT:-1000000}"
size="${SIZE:-1024}"
publishers="${PUBLISHERS:-4}"
window="${WINDOW:-256}"
memory_usage="${MEMORY_USAGE:-256 mb}"
read -r -a brokers <<<"${BROKERS:-ferromq mosquitto mosquitto-unlimited}"
ferromq_bin="${FERROMQ_BIN:-target/release/ferromq}"
phase_timeout="${PHASE_TIMEOUT:-600}"
idle_secs="${IDLE_SECS:-15}"
out="${OUT:-benches/results/offline-queue-$(date -u +%Y-%m-%d).jsonl}"
client=benches/mqtt_bulk.py
per_pub=$(( (count + publishers - 1) / publishers ))
mkdir -p "$(dirname "$out")"

log() { printf '[offline-queue %s] %s\n' "$(date +%H:%M:%S)" "$*" >&2; }

work="$(mktemp -d -t ferromq-offline.XXXXXX)"
chmod 755 "$work"
pid=""
sampler=""
stop_broker() {
  [[ -n "$pid" ]] || return 0
  kill -TERM "$pid" 2>/dev/null || true
  for _ in $(seq 1 300); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
  kill -KILL "$pid" 2>/dev/null || true
  wait "$pid" 2>/dev/null || true
  pid=""
}
stop_sampler() {
  [[ -n "$sampler" ]] || return 0
  kill "$sampler" 2>/dev/null || true
  wait "$sampler" 2>/dev/null || true
  sampler=""
}
trap 'stop_sampler; stop_broker; rm -rf "$work"' EXIT
trap 'exit 130' INT TERM
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1]); s.close()'; }
port_open() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

start_broker() {
  local name="$1" dir="$work/$1"
  rm -rf "$dir"; mkdir -p "$dir/data"; chmod 777 "$dir" "$dir/data"
  port="$(free_port)"
  case "$name" in
    ferromq)
      local usage=""
      [[ "$memory_usage" == default ]] ||
        usage="<systemUsage><systemUsage><memoryUsage><memoryUsage limit=\"$memory_usage\"/></memoryUsage></systemUsage></systemUsage>"
      cat >"$dir/activemq.xml" <<XML
<beans xmlns="http://www.springframework.org/schema/beans">
  <broker xmlns="http://activemq.apache.org/schema/core" brokerName="offline"
          dataDirectory="$dir/data" persistent="true" useJmx="false">
    <persistenceAdapter><kahaDB directory="$dir/kahadb"/></persistenceAdapter>
    $usage
    <transportConnectors>
      <transportConnector name="mqtt" uri="mqtt+nio://127.0.0.1:$port"/>
    </transportConnectors>
  </broker>
</beans>
XML
      NO_COLOR=1 "$ferromq_bin" --log-level warn run --config "$dir/activemq.xml" >"$dir/broker.log" 2>&1 &
      ;;
    mosquitto|mosquitto-unlimited)
      { echo "listener $port 127.0.0.1"; echo "allow_anonymous true"; echo "log_dest stderr"
        echo "log_type error"; echo "log_type warning"
        if [[ "$name" == mosquitto-unlimited ]]; then
          echo "max_queued_messages 0"; echo "persistence true"; echo "persistence_location $dir/data/"
        fi
      } >"$dir/mosquitto.conf"
      mosquitto -c "$dir/mosquitto.conf" >"$dir/broker.log" 2>&1 &
      ;;
    *) log "unknown broker $name"; return 1 ;;
  esac
  pid=$!
  for _ in $(seq 1 100); do port_open "$port" && return 0; kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
  log "$name did not start:"; tail -n 5 "$dir/broker.log" >&2; stop_broker; return 1
}

# VmRSS (KiB) of the broker every second, with a phase tag read from $work/phase.
start_sampler() {
  : >"$work/rss"
  ( while kill -0 "$pid" 2>/dev/null; do
      rss="$(awk '/^VmRSS:/{print $2}' "/proc/$pid/status" 2>/dev/null || true)"
      [[ -n "$rss" ]] && echo "$(cat "$work/phase") $rss" >>"$work/rss"
      sleep 1
    done ) &
  sampler=$!
}
phase() { echo "$1" >"$work/phase"; }
rss_now() { awk '/^VmRSS:/{print $2}' "/proc/$pid/status" 2>/dev/null || echo 0; }
rss_peak() { awk -v p="$1" '$1==p && $2>m {m=$2} END {print m+0}' "$work/rss"; }

machine="$(nproc) cores, $(sed -n 's/^model name\s*: //p' /proc/cpuinfo | head -1), Linux $(uname -r)"
log "count=$count size=$size publishers=$publishers window=$window memoryUsage=$memory_usage -> $out"
for broker in "${brokers[@]}"; do
  if [[ "$broker" == mosquitto* ]] && ! command -v mosquitto >/dev/null 2>&1; then
    log "$broker: mosquitto is not installed, skipped"; continue
  fi
  start_broker "$broker" || continue
  phase setup; start_sampler
  rss_start="$(rss_now)"
  timeout 30 python3 "$client" --port "$port" --timeout 30 subscribe --client-id offline-q --topic bench/offline >/dev/null

  phase ingest
  log "$broker: publishing $count x $size bytes (QoS 1, $publishers publishers, window $window)"
  t0="$(date +%s.%N)"
  pubs=()
  for ((p = 0; p < publishers; p++)); do
    n=$(( p < publishers - 1 ? per_pub : count - per_pub * (publishers - 1) ))
    timeout $((phase_timeout + 30)) python3 "$client" --port "$port" --timeout "$phase_timeout" \
      publish --topic bench/offline --count "$n" --size "$size" --publisher "$p" --window "$window" \
      >"$work/pub-$p.json" &
    pubs+=($!)
  done
  for p in "${pubs[@]}"; do wait "$p" || true; done
  t1="$(date +%s.%N)"
  acked="$(cat "$work"/pub-*.json | python3 -c 'import json,sys; print(sum(json.loads(l)["acked"] for l in sys.stdin if l.strip()))')"
  phase settle; sleep 3
  rss_after_ingest="$(rss_now)"
  store_bytes="$(du -sb "$work/$broker" | cut -f1)"

  phase drain
  log "$broker: $acked acknowledged; draining"
  t2="$(date +%s.%N)"
  drain="$(timeout $((phase_timeout + 30)) python3 "$client" --port "$port" --timeout "$phase_timeout" \
    drain --client-id offline-q --expect "$acked" --publishers "$publishers" --per-publisher "$per_pub" \
    --idle-secs "$idle_secs" || echo null)"
  t3="$(date +%s.%N)"
  phase after; sleep 2
  rss_after_drain="$(rss_now)"
  stop_sampler
  stop_broker
  RUN_DATE="$(date -u +%Y-%m-%dT%H:%M:%SZ)" python3 - "$broker" "$count" "$size" "$acked" "$t0" "$t1" "$t2" "$t3" "$drain" "$rss_start" \
    "$(rss_peak ingest)" "$rss_after_ingest" "$(rss_peak drain)" "$rss_after_drain" "$store_bytes" \
    "$memory_usage" "$machine" "$publishers" "$window" <<'PY' | tee -a "$out"
import json, os, sys
a = sys.argv[1:]
broker, count, size, acked = a[0], int(a[1]), int(a[2]), int(a[3])
t0, t1, t2, t3 = map(float, a[4:8])
drain = json.loads(a[8]) if a[8] != "null" else {}
mib = lambda kib: round(int(kib) / 1024, 1)
print(json.dumps({
    "broker": broker, "count": count, "payload_bytes": size, "publishers": int(a[17]),
    "window": int(a[18]), "memory_usage": a[15] if broker == "ferromq" else None,
    "acked": acked, "ingest_secs": round(t1 - t0, 2),
    "ingest_msgs_per_sec": round(acked / (t1 - t0)),
    "drain": drain, "drain_msgs_per_sec": round(drain.get("msgs_per_sec", 0)),
    "delivered_distinct": drain.get("distinct"), "lost": acked - (drain.get("distinct") or 0),
    "rss_mib": {"start": mib(a[9]), "peak_ingest": mib(a[10]), "after_ingest": mib(a[11]),
                "peak_drain": mib(a[12]), "after_drain": mib(a[13])},
    "data_dir_bytes_after_ingest": int(a[14]), "machine": a[16],
    "label": os.environ.get("LABEL", ""), "date": os.environ.get("RUN_DATE", ""),
}))
PY
done
log "results appended to $out"
