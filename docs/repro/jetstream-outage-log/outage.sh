#!/bin/bash
# outage.sh FERROMQ_BINARY -- how much a cluster node logs while JetStream cannot serve.
#
# Starts 3 nats-servers (client ports 36222-36224) and one ferromq node of 8 shards (MQTT
# 36102) in a temporary directory, SIGKILLs 2 of the 3 servers for 20 s (no JetStream quorum),
# starts them again, waits 15 s, then counts the node's WARN lines by kind. Everything it
# starts is stopped by pid; the directory is left for reading (its path is printed).
set -u
BIN=${1:?usage: outage.sh FERROMQ_BINARY}
R=$(mktemp -d /tmp/fmq-outage.XXXXXX)
for i in 1 2 3; do
  cat >"$R/nats$i.conf" <<CONF
server_name: n$i
listen: 127.0.0.1:3622$((i + 1))
jetstream { store_dir: "$R/js$i" }
cluster {
  name: outage
  listen: 127.0.0.1:3632$((i + 1))
  routes: [nats://127.0.0.1:36322, nats://127.0.0.1:36323, nats://127.0.0.1:36324]
}
CONF
done
cat >"$R/node.xml" <<'XML'
<beans xmlns="http://www.springframework.org/schema/beans" xmlns:ferromq="urn:ferromq">
  <broker xmlns="http://activemq.apache.org/schema/core" brokerName="node2" dataDirectory="${node.data}">
    <persistenceAdapter>
      <ferromq:jetStream servers="nats://127.0.0.1:36223,nats://127.0.0.1:36224,nats://127.0.0.1:36222" replicas="3" messageShards="8"/>
    </persistenceAdapter>
    <transportConnectors>
      <transportConnector name="mqtt" uri="mqtt://127.0.0.1:36102"/>
    </transportConnectors>
  </broker>
</beans>
XML
start_nats() { for i in "$@"; do nats-server -c "$R/nats$i.conf" >>"$R/nats$i.log" 2>&1 & echo $! >"$R/nats$i.pid"; done; }
start_nats 1 2 3
sleep 3
"$BIN" run -c "$R/node.xml" --set node.data="$R/node" >"$R/node.log" 2>&1 &
node=$!
sleep 12
kill -KILL "$(cat "$R/nats2.pid")" "$(cat "$R/nats3.pid")"
sleep 20
start_nats 2 3
sleep 15
echo "WARN lines of the node, by kind (numbers folded):"
grep WARN "$R/node.log" | sed 's/^[^ ]* *WARN //; s/[0-9]\+/N/g' | cut -c1-110 | sort | uniq -c | sort -rn
echo "INFO 'started again' lines: $(grep -c 'started again\|reading again after failed' "$R/node.log")"
kill "$node"; sleep 3
for i in 1 2 3; do kill "$(cat "$R/nats$i.pid")" 2>/dev/null; done
echo "logs in $R"
