#!/usr/bin/env bash
# usage: mstats.sh BIN  -> malloc_stats of the broker holding 19,000 idle connections
set -euo pipefail
bin=$1
ulimit -n 20000
dir=$(mktemp -d /tmp/mstats.XXXXXX)
source "$(dirname "${BASH_SOURCE[0]}")/../2026-12-02-parking/broker-config.sh"
write_config "$dir"
NO_COLOR=1 "$bin" --log-level warn run --config "$dir/activemq.xml" >"$dir/log" 2>&1 &
pid=$!
sleep 1.5
start=$(awk '/VmRSS/ {print $2}' "/proc/$pid/status")
target/release/examples/loadgen --port 21883 --mode idle --connections 19000 --keep-alive-secs 4 --duration-secs 16 >/dev/null 2>&1 &
load=$!
sleep 10
rss=$(awk '/VmRSS/ {print $2}' "/proc/$pid/status")
echo "RSS delta per conn: $(( (rss - start) * 1024 / 19000 ))"
gdb -p $pid -batch -ex 'call (void)malloc_stats()' >/dev/null 2>&1 || true
sleep 1
grep -E "Arena|system bytes|in use bytes" "$dir/log" | tail -20
wait $load || true
kill $pid; wait $pid 2>/dev/null || true
