#!/bin/bash
# Peak RssAnon of a STOMP backlog of 2 MiB messages through a kill -9 (docs/durable-store.md,
# "STOMP queues and durable subscriptions"): FILL_BIN takes COUNT persistent SENDs to
# /queue/big (or, with `topic`, to an offline durable subscription of /topic/big) with a
# 16 MiB memoryUsage, is killed (-9), and DRAIN_BIN recovers the store and is drained.
# Two builds compare the drain of one backlog.
# Usage: benches/stomp_backlog_rss.sh FILL_BIN DRAIN_BIN PORT COUNT [topic]
set -e
here=$(cd "$(dirname "$0")" && pwd)
dir=$(mktemp -d)
trap 'rm -rf "$dir"' EXIT
cat > "$dir/activemq.xml" <<XML
<beans xmlns="http://www.springframework.org/schema/beans">
  <broker xmlns="http://activemq.apache.org/schema/core" brokerName="big" persistent="true">
    <persistenceAdapter><kahaDB directory="$dir/kahadb"/></persistenceAdapter>
    <systemUsage><systemUsage><memoryUsage><memoryUsage limit="16 mb"/></memoryUsage></systemUsage></systemUsage>
    <transportConnectors><transportConnector name="s" uri="stomp://127.0.0.1:$3"/></transportConnectors>
  </broker>
</beans>
XML
up() { for _ in $(seq 100); do (echo > "/dev/tcp/127.0.0.1/$3") 2>/dev/null && return; sleep 0.1; done; }
"$1" run --config "$dir/activemq.xml" --log-level warn & pid=$!; up
[ -n "$5" ] && python3 "$here/stomp_backlog_rss.py" sub "$3" 0 "$pid" topic
python3 "$here/stomp_backlog_rss.py" fill "$3" "$4" "$pid" $5
kill -9 "$pid"; wait "$pid" 2>/dev/null || true
"$2" run --config "$dir/activemq.xml" --log-level warn & pid=$!; up; sleep 1
timeout 300 python3 "$here/stomp_backlog_rss.py" drain "$3" "$4" "$pid" $5 || echo "drain failed"
kill "$pid"; wait "$pid" 2>/dev/null || true
