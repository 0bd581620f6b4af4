#!/usr/bin/env bash
# Interoperability tests: real MQTT clients (Debian's mosquitto_pub/mosquitto_sub, Python
# paho-mqtt, and optionally the load generator) against a broker started on free loopback ports.
#
# Usage: tests/interop/run.sh [--broker ferromq|mosquitto] [--bin PATH] [--loadgen PATH] [--no-ws]
#   --broker   which broker to start (default ferromq; env INTEROP_BROKER). `mosquitto` runs the
#              same tests against Debian's mosquitto, to show the tests themselves are right.
#   --bin      ferromq binary (default target/debug/ferromq; env FERROMQ_BIN)
#   --loadgen  load generator binary; adds a short QoS 1 no-loss test (env LOADGEN_BIN)
#   --no-ws    write no WebSocket connector (the WebSocket test then reports SKIP)
#   --no-tls   write no TLS connectors (mqtt+ssl, wss); the TLS tests then report SKIP. TLS needs
#              `openssl`, which makes a throw-away CA and a 127.0.0.1/localhost certificate.
# Prints one PASS/FAIL/SKIP line per test and ends with `interop: N passed, N failed`.
# Exits non-zero when any test failed. The broker is always killed on exit.
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
broker="${INTEROP_BROKER:-ferromq}"
ferromq_bin="${FERROMQ_BIN:-target/debug/ferromq}"
loadgen_bin="${LOADGEN_BIN:-}"
with_ws=1
with_tls=1
while [[ $# -gt 0 ]]; do
  case "$1" in
    --broker) broker="$2"; shift 2 ;;
    --bin) ferromq_bin="$2"; shift 2 ;;
    --loadgen) loadgen_bin="$2"; shift 2 ;;
    --no-ws) with_ws=0; shift ;;
    --no-tls) with_tls=0; shift ;;
    -h|--help) sed -n '2,14p' "${BASH_SOURCE[0]}"; exit 0 ;;
    *) echo "run.sh: unknown argument $1" >&2; exit 2 ;;
  esac
done

for tool in mosquitto_pub mosquitto_sub python3 timeout stdbuf; do
  command -v "$tool" >/dev/null || { echo "run.sh: $tool is not installed" >&2; exit 2; }
done

work="$(mktemp -d -t ferromq-interop.XXXXXX)"
broker_pid=""
background_pids=()
cleanup() {
  for pid in "${background_pids[@]}"; do kill -9 "$pid" 2>/dev/null || true; done
  if [[ -n "$broker_pid" ]]; then
    kill -TERM "$broker_pid" 2>/dev/null || true
    for _ in $(seq 1 30); do kill -0 "$broker_pid" 2>/dev/null || break; sleep 0.1; done
    kill -9 "$broker_pid" 2>/dev/null || true
  fi
  rm -rf "$work"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

free_port() {
  python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1]); s.close()'
}

port_open() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

port="$(free_port)"
# STOMP: ferromq only (mosquitto speaks no STOMP; the STOMP suite then reports SKIP).
stomp_port=""
[[ $broker == ferromq ]] && stomp_port="$(free_port)"
ws_port=""
[[ $with_ws == 1 ]] && ws_port="$(free_port)"
run_id="$$-$RANDOM"

# TLS: a throw-away CA and a server certificate for 127.0.0.1 and localhost, made at test time
# (nothing secret is committed); the key is in its own file, which ferromq:keyFile names.
tls_port=""
wss_port=""
if [[ $with_tls == 1 ]] && ! command -v openssl >/dev/null; then
  echo "# openssl is not installed: no TLS connectors"
  with_tls=0
fi
if [[ $with_tls == 1 ]]; then
  tls_port="$(free_port)"
  [[ $with_ws == 1 ]] && wss_port="$(free_port)"
  {
    openssl req -x509 -newkey rsa:2048 -nodes -days 2 -subj "/CN=ferromq interop CA" \
      -keyout "$work/ca-key.pem" -out "$work/ca.pem"
    openssl req -newkey rsa:2048 -nodes -subj "/CN=localhost" \
      -keyout "$work/server-key.pem" -out "$work/server.csr"
    printf "subjectAltName=DNS:localhost,IP:127.0.0.1\n" >"$work/san.ext"
    openssl x509 -req -in "$work/server.csr" -CA "$work/ca.pem" -CAkey "$work/ca-key.pem" \
      -CAcreateserial -days 2 -extfile "$work/san.ext" -out "$work/server-cert.pem"
    # An unrelated CA, for the test that a client trusting only it is refused.
    openssl req -x509 -newkey rsa:2048 -nodes -days 2 -subj "/CN=unrelated CA" \
      -keyout "$work/other-ca-key.pem" -out "$work/other-ca.pem"
  } >"$work/openssl.log" 2>&1 || {
    echo "run.sh: openssl could not make the test certificates:" >&2
    cat "$work/openssl.log" >&2
    exit 2
  }
fi

case "$broker" in
  ferromq)
    [[ -x "$ferromq_bin" ]] || { echo "run.sh: no ferromq binary at $ferromq_bin (cargo build first)" >&2; exit 2; }
    ws_connector=""
    [[ -n "$ws_port" ]] && ws_connector="<transportConnector name=\"ws\" uri=\"ws://127.0.0.1:${ws_port}\"/>"
    tls_connectors=""
    ssl_context=""
    if [[ -n "$tls_port" ]]; then
      tls_connectors="<transportConnector name=\"mqtt+ssl\" uri=\"mqtt+ssl://127.0.0.1:${tls_port}\"/>"
      [[ -n "$wss_port" ]] && tls_connectors+="<transportConnector name=\"wss\" uri=\"wss://127.0.0.1:${wss_port}\"/>"
      ssl_context="<sslContext><sslContext keyStore=\"${work}/server-cert.pem\" ferromq:keyFile=\"${work}/server-key.pem\"/></sslContext>"
    fi
    cat >"$work/activemq.xml" <<XML
<beans xmlns="http://www.springframework.org/schema/beans" xmlns:ferromq="urn:ferromq"
       xmlns:xsi="http://www.w3.org/2001/XMLSchema-instance"
       xsi:schemaLocation="http://www.springframework.org/schema/beans http://www.springframework.org/schema/beans/spring-beans.xsd
                           http://activemq.apache.org/schema/core http://activemq.apache.org/schema/core/activemq-core.xsd">
  <broker xmlns="http://activemq.apache.org/schema/core" brokerName="interop"
          dataDirectory="${work}/data" persistent="false" useJmx="false">
    ${ssl_context}
    <transportConnectors>
      <transportConnector name="mqtt" uri="mqtt://127.0.0.1:${port}?transport.maxKeepAlive=60000"/>
      <transportConnector name="stomp" uri="stomp://127.0.0.1:${stomp_port}"/>
      ${ws_connector}
      ${tls_connectors}
    </transportConnectors>
  </broker>
</beans>
XML
    broker_cmd=("$ferromq_bin" run --config "$work/activemq.xml")
    ;;
  mosquitto)
    { echo "listener ${port} 127.0.0.1"; echo "allow_anonymous true"; echo "persistence false"
      echo "max_keepalive 60"
      if [[ -n "$ws_port" ]]; then echo "listener ${ws_port} 127.0.0.1"; echo "protocol websockets"; fi
      if [[ -n "$tls_port" ]]; then
        # mosquitto started as root reads its files as the user `mosquitto`: let it read the
        # throw-away certificate and key.
        chmod a+rx "$work"
        chmod a+r "$work/server-cert.pem" "$work/server-key.pem"
      fi
      for tls_listener in $tls_port $wss_port; do
        echo "listener ${tls_listener} 127.0.0.1"
        [[ $tls_listener == "$wss_port" ]] && echo "protocol websockets"
        echo "certfile $work/server-cert.pem"; echo "keyfile $work/server-key.pem"
      done
    } >"$work/mosquitto.conf"
    broker_cmd=(mosquitto -c "$work/mosquitto.conf")
    ;;
  *) echo "run.sh: unknown broker $broker (ferromq or mosquitto)" >&2; exit 2 ;;
esac

# NO_COLOR: plain text in the broker log that is shown on failure.
NO_COLOR=1 "${broker_cmd[@]}" >"$work/broker.log" 2>&1 &
broker_pid=$!
for _ in $(seq 1 100); do
  port_open "$port" && break
  kill -0 "$broker_pid" 2>/dev/null || break
  sleep 0.1
done
if ! port_open "$port"; then
  echo "FAIL broker: $broker did not listen on 127.0.0.1:$port within 10 s; its log:"
  sed 's/^/  | /' "$work/broker.log"
  echo "interop: 0 passed, 1 failed"
  exit 1
fi
echo "# $broker (pid $broker_pid) on mqtt port $port${stomp_port:+, stomp port $stomp_port}${ws_port:+, ws port $ws_port}${tls_port:+, mqtt+ssl port $tls_port}${wss_port:+, wss port $wss_port}"

passed=0
failed=0
pass() { echo "PASS $1"; passed=$((passed + 1)); }
fail() { echo "FAIL $1${2:+: $2}"; failed=$((failed + 1)); }

common=(-h 127.0.0.1 -p "$port")

# Starts mosquitto_sub in the background with -d (debug lines tell when SUBACK arrived); output
# goes to $1. Remaining arguments go to mosquitto_sub and must include -W (its own time bound).
# Sets $sub_pid, the pid of mosquitto_sub itself (stdbuf execs it), so kill -9 reaches the client.
start_sub() {
  local out="$1"; shift
  # stdbuf: mosquitto_sub's stdout is block-buffered into a file, and the SUBACK line is needed now.
  stdbuf -oL mosquitto_sub "${common[@]}" -d "$@" >"$out" 2>&1 &
  sub_pid=$!
  background_pids+=("$sub_pid")
  for _ in $(seq 1 50); do
    kill -0 "$sub_pid" 2>/dev/null || break
    grep -q "received SUBACK" "$out" 2>/dev/null && return 0
    sleep 0.1
  done
  return 1
}

# Message lines of a mosquitto_sub -d output (debug lines start with "Client " or "Subscribed").
messages_of() { grep -v -E '^(Client |Subscribed )' "$1" || true; }

roundtrip() {
  local version="$1" qos="$2"
  local name="mosquitto_pub/sub $version QoS $qos round trip"
  local topic="interop/$run_id/rt/$version/$qos" payload="hello-$version-$qos-$run_id"
  local out="$work/rt-$version-$qos.out"
  if ! start_sub "$out" -V "$version" -q "$qos" -t "$topic" -C 1 -W 10 -F '%q %p'; then
    fail "$name" "no SUBACK: $(tr '\n' ' ' <"$out")"; return
  fi
  if ! timeout 10 mosquitto_pub "${common[@]}" -V "$version" -q "$qos" -t "$topic" -m "$payload" 2>"$work/pub.err"; then
    fail "$name" "mosquitto_pub failed: $(cat "$work/pub.err")"; return
  fi
  wait "$sub_pid" || true
  local got; got="$(messages_of "$out")"
  if [[ "$got" == "$qos $payload" ]]; then pass "$name"; else fail "$name" "expected '$qos $payload', got '$got'"; fi
}

for version in mqttv31 mqttv311 mqttv5; do
  for qos in 0 1 2; do roundtrip "$version" "$qos"; done
done

# mosquitto_pub/sub over mqtt+ssl, verifying the broker's certificate against the test CA (by
# its 127.0.0.1 IP SAN). A client that trusts another CA must be refused.
name="mosquitto_pub/sub over mqtt+ssl (--cafile) QoS 1 round trip"
if [[ -n "$tls_port" ]]; then
  topic="interop/$run_id/tls" payload="tls-$run_id"
  tls_common=(-h 127.0.0.1 -p "$tls_port" --cafile "$work/ca.pem")
  stdbuf -oL mosquitto_sub "${tls_common[@]}" -d -q 1 -t "$topic" -C 1 -W 10 -F '%q %p' \
    >"$work/tls.out" 2>&1 &
  sub_pid=$!
  background_pids+=("$sub_pid")
  for _ in $(seq 1 50); do
    kill -0 "$sub_pid" 2>/dev/null || break
    grep -q "received SUBACK" "$work/tls.out" 2>/dev/null && break
    sleep 0.1
  done
  if ! grep -q "received SUBACK" "$work/tls.out"; then
    fail "$name" "no SUBACK: $(tr '\n' ' ' <"$work/tls.out")"
  elif ! timeout 10 mosquitto_pub "${tls_common[@]}" -q 1 -t "$topic" -m "$payload" 2>"$work/pub.err"; then
    fail "$name" "mosquitto_pub failed: $(cat "$work/pub.err")"
  else
    wait "$sub_pid" || true
    got="$(messages_of "$work/tls.out")"
    if [[ "$got" == "1 $payload" ]]; then pass "$name"; else fail "$name" "expected '1 $payload', got '$got'"; fi
  fi
  name="mqtt+ssl refuses a client that does not trust the broker's CA"
  if timeout 10 mosquitto_pub -h 127.0.0.1 -p "$tls_port" --cafile "$work/other-ca.pem" \
       -t "interop/$run_id/untrusted" -m x 2>/dev/null; then
    fail "$name" "mosquitto_pub succeeded without trusting the test CA"
  else
    pass "$name"
  fi
else
  echo "SKIP $name: no TLS connector (--no-tls or no openssl)"
fi

# QoS is downgraded to the subscription's: publish at 2, subscribed at 1 -> delivered at 1.
name="QoS downgrade to the subscription's QoS"
topic="interop/$run_id/downgrade"
if start_sub "$work/down.out" -q 1 -t "$topic" -C 1 -W 10 -F '%q %p' \
   && timeout 10 mosquitto_pub "${common[@]}" -q 2 -t "$topic" -m down; then
  wait "$sub_pid" || true
  got="$(messages_of "$work/down.out")"
  if [[ "$got" == "1 down" ]]; then pass "$name"; else fail "$name" "expected '1 down', got '$got'"; fi
else
  fail "$name" "could not subscribe or publish"
fi

# Retained message: set, received by a later subscriber with retain=1, then cleared.
name="retained message reaches a later subscriber"
topic="interop/$run_id/retained"
if timeout 10 mosquitto_pub "${common[@]}" -q 1 -r -t "$topic" -m "kept-$run_id"; then
  got="$(timeout 10 mosquitto_sub "${common[@]}" -t "$topic" -C 1 -W 5 -F '%r %p' 2>&1 || true)"
  if [[ "$got" == "1 kept-$run_id" ]]; then pass "$name"; else fail "$name" "expected '1 kept-$run_id', got '$got'"; fi
else
  fail "$name" "mosquitto_pub -r failed"
fi
name="empty retained payload clears the retained message"
if timeout 10 mosquitto_pub "${common[@]}" -q 1 -r -n -t "$topic"; then
  got="$(timeout 10 mosquitto_sub "${common[@]}" -t "$topic" -C 1 -W 2 -F '%r %p' 2>/dev/null || true)"
  if [[ -z "$got" ]]; then pass "$name"; else fail "$name" "still received '$got'"; fi
else
  fail "$name" "mosquitto_pub -r -n failed"
fi

# Will message: published when a client dies without DISCONNECT, not after a clean DISCONNECT.
name="will published on abnormal close (kill -9)"
topic="interop/$run_id/will"
if start_sub "$work/will.out" -t "$topic" -C 1 -W 10 -F '%p'; then
  watcher_pid="$sub_pid"
  if start_sub "$work/dying.out" -i "dying-$run_id" -t "interop/$run_id/nothing" -k 30 -W 20 \
       --will-topic "$topic" --will-payload "gone-$run_id" --will-qos 1; then
    { kill -9 "$sub_pid"; wait "$sub_pid"; } 2>/dev/null || true
    wait "$watcher_pid" || true
    got="$(messages_of "$work/will.out")"
    if [[ "$got" == "gone-$run_id" ]]; then pass "$name"; else fail "$name" "expected 'gone-$run_id', got '$got'"; fi
  else
    fail "$name" "the client with a will could not subscribe"
  fi
else
  fail "$name" "no SUBACK for the will watcher"
fi
name="no will after a clean DISCONNECT"
topic="interop/$run_id/nowill"
if start_sub "$work/nowill.out" -t "$topic" -C 1 -W 3 -F '%p'; then
  timeout 10 mosquitto_pub "${common[@]}" -t "interop/$run_id/other" -m x \
    --will-topic "$topic" --will-payload "should-not-arrive" || true
  wait "$sub_pid" || true
  got="$(messages_of "$work/nowill.out" | grep -v -i 'timed out' || true)"
  if [[ -z "$got" ]]; then pass "$name"; else fail "$name" "received '$got'"; fi
else
  fail "$name" "no SUBACK"
fi

# An MQTT 5 case: mosquitto_sub -V mqttv5 with the arguments before `--` (its -F format prints
# what is checked) receives one message from mosquitto_pub -V mqttv5 with the arguments after
# `--`, on a topic of its own. $1 names the case, $2 is the expected output line. A retained
# message the case leaves is cleared.
v5_case_n=0
v5_sub_case() {
  local name="$1" expected="$2"; shift 2
  local sub_args=()
  while [[ $# -gt 0 && "$1" != "--" ]]; do sub_args+=("$1"); shift; done
  [[ $# -gt 0 ]] && shift
  v5_case_n=$((v5_case_n + 1))
  local topic="interop/$run_id/v5/$v5_case_n" out="$work/v5-$v5_case_n.out"
  if ! start_sub "$out" -V mqttv5 -t "$topic" -C 1 -W 10 "${sub_args[@]}"; then
    fail "$name" "no SUBACK: $(tr '\n' ' ' <"$out")"; return
  fi
  if ! timeout 10 mosquitto_pub "${common[@]}" -V mqttv5 -t "$topic" "$@" 2>"$work/pub.err"; then
    fail "$name" "mosquitto_pub failed: $(cat "$work/pub.err")"; return
  fi
  wait "$sub_pid" || true
  timeout 10 mosquitto_pub "${common[@]}" -V mqttv5 -r -n -t "$topic" || true
  local got; got="$(messages_of "$out")"
  if [[ "$got" == "$expected" ]]; then pass "$name"; else fail "$name" "expected '$expected', got '$got'"; fi
}

v5_sub_case "mosquitto_sub -V mqttv5 Retain As Published keeps RETAIN=1 live" "1 rap" -q 1 --retain-as-published -F '%r %p' -- -q 1 -r -m rap
v5_sub_case "mosquitto_sub -V mqttv5 without Retain As Published: RETAIN=0 live" "0 norap" -q 1 -F '%r %p' -- -q 1 -r -m norap
v5_sub_case "mosquitto_sub -V mqttv5 Subscription Identifier on delivery" "7 sid" -q 1 -D subscribe subscription-identifier 7 -F '%S %p' -- -q 1 -m sid

# A Python suite printing PASS/FAIL lines: its lines are shown and counted. $1 names it, $2 is the
# script, the rest its arguments.
python_suite() {
  local suite="$1" script="$2"; shift 2
  local out="$work/$suite.out" rc
  set +e
  timeout 120 python3 "$here/$script" "$@" >"$out" 2>&1
  rc=$?
  set -e
  cat "$out"
  local suite_passed suite_failed
  suite_passed="$(grep -c '^PASS' "$out" || true)"
  suite_failed="$(grep -c '^FAIL' "$out" || true)"
  passed=$((passed + suite_passed))
  failed=$((failed + suite_failed))
  if [[ $rc -ne 0 && $suite_failed -eq 0 ]]; then
    fail "$script" "exited with status $rc"
  fi
}

# Python paho-mqtt (2.x API).
paho_args=(--port "$port" --run-id "$run_id")
[[ -n "$ws_port" ]] && paho_args+=(--ws-port "$ws_port")
[[ -n "$wss_port" ]] && paho_args+=(--wss-port "$wss_port" --cafile "$work/ca.pem")
python_suite paho paho_test.py "${paho_args[@]}"
python_suite paho-will-delay will_delay_test.py --port "$port" --run-id "$run_id"
python_suite paho-mqtt5 mqtt5_test.py --port "$port" --run-id "$run_id"
python_suite paho-shared shared_test.py --port "$port" --run-id "$run_id" --broker "$broker"

# stomp.py <-> paho-mqtt across protocols, queue load balancing, ack/NACK and redelivery.
if [[ -z "$stomp_port" ]]; then
  echo "SKIP stomp_test.py: $broker has no STOMP connector"
elif ! python3 -c 'import stomp' 2>/dev/null; then
  fail "stomp_test.py" "stomp.py is not installed (pip install stomp.py)"
else
  python_suite stomp stomp_test.py --port "$port" --stomp-port "$stomp_port" --run-id "$run_id"
fi

# paho-mqtt MQTTv5: Server Keep Alive and topic aliases towards the client (mosquitto 2.0
# sends no topic aliases: that test is skipped for it).
v5_args=(--port "$port" --run-id "$run_id")
[[ $broker == mosquitto ]] && v5_args+=(--no-server-aliases)
set +e
timeout 60 python3 "$here/paho_v5_protocol.py" "${v5_args[@]}" >"$work/paho_v5.out" 2>&1
paho_v5_rc=$?
set -e
cat "$work/paho_v5.out"
paho_v5_passed="$(grep -c '^PASS' "$work/paho_v5.out" || true)"
paho_v5_failed="$(grep -c '^FAIL' "$work/paho_v5.out" || true)"
passed=$((passed + paho_v5_passed))
failed=$((failed + paho_v5_failed))
if [[ $paho_v5_rc -ne 0 && $paho_v5_failed -eq 0 ]]; then
  fail "paho_v5_protocol.py" "exited with status $paho_v5_rc"
fi

# Load generator: 10 concurrent publishers -> 1 subscriber at a steady 5000 msg/s, a rate every
# broker keeps up with, so that this checks QoS 1/2 delivery under concurrency (exact per-message
# accounting: no loss, and no QoS 2 duplicate) and not the broker's slow-consumer policy, which
# the benchmarks (benches/compare.sh) measure at full speed.
if [[ -n "$loadgen_bin" ]]; then
  for qos in 1 2; do
    name="loadgen 10 publishers -> 1 subscriber, QoS $qos at 5000 msg/s for 2 s: nothing lost"
    [[ $qos == 2 ]] && name="$name or duplicated"
    set +e
    timeout 90 "$loadgen_bin" --port "$port" --mode latency --publishers 10 --rate 5000 \
      --qos "$qos" --duration-secs 2 --broker-pid "$broker_pid" >"$work/loadgen.out" 2>&1
    lg_rc=$?
    set -e
    if [[ $lg_rc -eq 0 ]]; then
      pass "$name"
    else
      fail "$name" "loadgen exit status $lg_rc"
      sed 's/^/  | /' "$work/loadgen.out"
    fi
  done
fi

if ! kill -0 "$broker_pid" 2>/dev/null; then
  fail "broker still running after the tests" "it exited; log follows"
  sed 's/^/  | /' "$work/broker.log"
fi
if [[ $failed -gt 0 ]]; then
  echo "# broker log (last 40 lines):"
  tail -n 40 "$work/broker.log" | sed 's/^/  | /'
fi
echo "interop: $passed passed, $failed failed"
[[ $failed -eq 0 ]]
