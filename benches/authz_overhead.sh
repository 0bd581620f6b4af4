#!/usr/bin/env bash
# Authorization overhead (issue 4 target): QoS 0 fan-in 10 -> 1 throughput with 20
# authorizationEntries, as a ratio of the same run without an authorization plugin.
# Rounds alternate the two configs so machine noise hits both alike. Loopback only, bounded.
#
#   benches/authz_overhead.sh            # 3 rounds of 5 s each per config
#   ROUNDS=5 DURATION_SECS=8 benches/authz_overhead.sh
set -euo pipefail
cd "$(dirname "$0")/.."
rounds=${ROUNDS:-3}
duration=${DURATION_SECS:-5}
[[ ${SKIP_BUILD:-0} == 1 ]] || cargo build --release --quiet --bin ferromq --example loadgen
work=$(mktemp -d)
broker_pid=""
trap '[[ -n $broker_pid ]] && kill $broker_pid 2>/dev/null; rm -rf "$work"' EXIT

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }

write_config() { # $1 file, $2 port, $3 plugins
  cat >"$1" <<XML
<beans xmlns="http://www.springframework.org/schema/beans">
  <broker xmlns="http://activemq.apache.org/schema/core" brokerName="authz-bench" persistent="false">
    <plugins>$3</plugins>
    <transportConnectors>
      <transportConnector name="mqtt" uri="mqtt+nio://127.0.0.1:$2?maximumConnections=100000"/>
    </transportConnectors>
  </broker>
</beans>
XML
}

# 19 entries that do not grant the benchmark's topics, and one (lg.>) that does: every decision
# walks all 20.
entries=""
for i in $(seq 1 19); do
  entries+="<authorizationEntry topic=\"app$i.sensors.*.temp\" read=\"g$i\" write=\"g$i\" admin=\"g$i\"/>"
done
entries+='<authorizationEntry topic="lg.>" read="*" write="*" admin="*"/>'
authz="<authorizationPlugin><map><authorizationMap><authorizationEntries>$entries</authorizationEntries></authorizationMap></map></authorizationPlugin>"

run_one() { # $1 label, $2 plugins -> prints msgs/s
  local port; port=$(free_port)
  write_config "$work/$1.xml" "$port" "$2"
  target/release/ferromq run --config "$work/$1.xml" --log-level warn 2>"$work/$1.log" &
  broker_pid=$!
  for _ in $(seq 50); do (echo >"/dev/tcp/127.0.0.1/$port") 2>/dev/null && break; sleep 0.1; done
  target/release/examples/loadgen --port "$port" --mode fan-in --qos 0 --duration-secs "$duration" \
    --broker-pid "$broker_pid" --json 2>/dev/null |
    python3 -c 'import json,sys; print(round(json.load(sys.stdin)["traffic"]["msgs_per_sec"]))'
  kill "$broker_pid"; wait "$broker_pid" 2>/dev/null || true; broker_pid=""
}

plain=(); with=()
for r in $(seq "$rounds"); do
  plain+=("$(run_one plain "")")
  with+=("$(run_one authz "$authz")")
  echo "round $r: no authorization ${plain[-1]} msg/s, 20 entries ${with[-1]} msg/s"
done
python3 - "${plain[*]}" "${with[*]}" <<'PY'
import statistics, sys
plain = [float(x) for x in sys.argv[1].split()]
withz = [float(x) for x in sys.argv[2].split()]
p, w = statistics.median(plain), statistics.median(withz)
print(f"median: no authorization {p:.0f} msg/s, 20 entries {w:.0f} msg/s, ratio {w / p:.2f} (target >= 0.90)")
PY
