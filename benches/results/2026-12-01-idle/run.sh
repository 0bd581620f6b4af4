#!/usr/bin/env bash
# Idle connections: ferromq (this branch, release) and mosquitto in the same run, one after the
# other, each started fresh per scenario: 19,000 idle MQTT 3.1.1 connections over plain TCP,
# keep-alive 60 s (loadgen's default) and 4 s (benches/compare.sh's idle scenario: a PINGREQ
# every 2 s, which wakes a parked connection each time). Prints loadgen's JSON per run.
# Usage (from the repository root): benches/results/2026-12-01-idle/run.sh > runs.jsonl
set -euo pipefail
ulimit -n 20000
out_dir=$(mktemp -d /tmp/idle-ab.XXXXXX)
trap 'rm -rf "$out_dir"' EXIT
port=18830
for keep_alive in 60 4; do
  for broker in ferromq mosquitto; do
    dir="$out_dir/$broker-$keep_alive"; mkdir -p "$dir/data"
    case $broker in
      ferromq)
        cat >"$dir/activemq.xml" <<XML
<beans xmlns="http://www.springframework.org/schema/beans">
  <broker xmlns="http://activemq.apache.org/schema/core" brokerName="bench"
          dataDirectory="$dir/data" persistent="false" useJmx="false">
    <transportConnectors>
      <transportConnector name="mqtt" uri="mqtt+nio://127.0.0.1:$port?maximumConnections=1000000"/>
    </transportConnectors>
  </broker>
</beans>
XML
        NO_COLOR=1 target/release/ferromq --log-level warn run --config "$dir/activemq.xml" >"$dir/log" 2>&1 &
        ;;
      mosquitto)
        printf 'listener %s 127.0.0.1\nallow_anonymous true\npersistence false\nlog_dest none\nmax_connections -1\n' "$port" >"$dir/mosquitto.conf"
        mosquitto -c "$dir/mosquitto.conf" >"$dir/log" 2>&1 &
        ;;
    esac
    pid=$!
    sleep 1.5
    printf '{"broker":"%s","keep_alive_secs":%s,"report":' "$broker" "$keep_alive"
    target/release/examples/loadgen --port "$port" --mode idle --connections 19000 \
      --keep-alive-secs "$keep_alive" --duration-secs 3 --json --broker-pid "$pid" 2>"$dir/loadgen.err" | tr -d '\n'
    echo '}'
    kill "$pid"; wait "$pid" 2>/dev/null || true
    port=$((port + 1))
  done
done
