#!/usr/bin/env bash
# The same fan-in scenarios measured by two load generators in one run: benches/compare.sh's
# own (examples/loadgen.rs: Rust, multi-threaded, pipelined writes) and an independent one
# (benches/independent/fanin.js: MQTT.js in one Node.js process). Both share no code with
# ferromq. Prints each broker's delivered msg/s and each generator's own CPU, and the ratios
# ferromq / mosquitto per generator, to show how much of a ratio the generator decides
# (benches/README.md, "Why two load generators disagree").
#
# Environment: BROKERS (default "ferromq mosquitto"), SECONDS_PER_RUN (default 8),
# SKIP_BUILD=1 (use target/release as it is). Needs node + npm (MQTT.js is installed here).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
read -r -a brokers <<<"${BROKERS:-ferromq mosquitto}"
secs="${SECONDS_PER_RUN:-8}"
command -v node >/dev/null && command -v npm >/dev/null || { echo "SKIP: node/npm not installed"; exit 0; }
[[ -d benches/independent/node_modules/mqtt ]] || (cd benches/independent && npm ci --silent)
[[ "${SKIP_BUILD:-0}" == 1 ]] || cargo build --release --bin ferromq --example loadgen >/dev/null
work="$(mktemp -d -t ferromq-independent.XXXXXX)"
pid=""
stop() { [[ -n "$pid" ]] && { kill "$pid" 2>/dev/null || true; wait "$pid" 2>/dev/null || true; }; pid=""; }
trap 'stop; rm -rf "$work"' EXIT
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1]); s.close()'; }
start() {
  port="$(free_port)"
  case "$1" in
    ferromq)
      sed "s#mqtt://127.0.0.1:1883?#mqtt://127.0.0.1:${port}?#; s#maximumConnections=1000\"#maximumConnections=100000\"#" \
        conf/activemq.xml >"$work/activemq.xml"
      cp conf/*.properties conf/login.config "$work/" 2>/dev/null || true
      sed -i "s#brokerName=\"localhost\"#brokerName=\"localhost\" persistent=\"false\"#" "$work/activemq.xml"
      target/release/ferromq --log-level warn run --config "$work/activemq.xml" >"$work/broker.log" 2>&1 &
      ;;
    mosquitto)
      printf 'listener %s 127.0.0.1\nallow_anonymous true\npersistence false\nlog_dest none\n' "$port" >"$work/m.conf"
      mosquitto -c "$work/m.conf" >"$work/broker.log" 2>&1 &
      ;;
  esac
  pid=$!
  for _ in $(seq 1 100); do (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null && return 0; sleep 0.1; done
  echo "$1 did not listen"; tail "$work/broker.log"; exit 1
}
cpu_of() { awk '{print ($14 + $15) / 100}' "/proc/$1/stat"; }
printf '%-10s %-4s %-10s %14s %14s %16s %10s\n' broker qos generator "msgs/s" "generator CPU" "broker CPU s" "lost"
declare -A rate
for broker in "${brokers[@]}"; do
  for qos in 0 1; do
    for gen in loadgen mqtt.js; do
      start "$broker"
      before="$(cpu_of "$pid")"
      if [[ "$gen" == loadgen ]]; then
        out="$(target/release/examples/loadgen --port "$port" --mode fan-in --publishers 10 \
          --subscribers 1 --qos "$qos" --duration-secs "$secs" --json || true)"
        r="$(python3 -c 'import json,sys; r=json.loads(sys.argv[1]); print("%.0f %.0f%% %d" % (r["traffic"]["msgs_per_sec"], r["loadgen_cpu_percent"], r["traffic"]["lost"]))' "$out")"
      else
        out="$(node benches/independent/fanin.js --port "$port" --publishers 10 --qos "$qos" --seconds "$secs" || true)"
        r="$(python3 -c 'import json,sys; r=json.loads(sys.argv[1]); print("%.0f %.0f%% %d" % (r["msgs_per_sec"], r["loadgen_cpu_percent"], r["lost"]))' "$out")"
      fi
      after="$(cpu_of "$pid")"
      stop
      read -r msgs gcpu lost <<<"$r"
      rate[$broker-$qos-$gen]="$msgs"
      printf '%-10s %-4s %-10s %14s %14s %16s %10s\n' "$broker" "$qos" "$gen" "$msgs" "$gcpu" \
        "$(python3 -c "print('%.2f' % ($after - $before))")" "$lost"
    done
  done
done
if [[ -n "${rate[ferromq-0-loadgen]:-}" && -n "${rate[mosquitto-0-loadgen]:-}" ]]; then
  for qos in 0 1; do
    for gen in loadgen mqtt.js; do
      printf 'QoS %s, %-8s ferromq / mosquitto = %s\n' "$qos" "$gen" \
        "$(python3 -c "print('%.2f' % (${rate[ferromq-$qos-$gen]} / ${rate[mosquitto-$qos-$gen]}))")"
    done
  done
fi
