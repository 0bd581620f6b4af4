#!/usr/bin/env bash
set -euo pipefail
bin=$1
ulimit -n 20000
dir=$(mktemp -d /tmp/trim.XXXXXX)
source benches/results/2026-12-02-parking/broker-config.sh
write_config "$dir"
RUST_LOG=warn,ferromq::broker::connection::parking=debug NO_COLOR=1 "$bin" --log-level warn run --config "$dir/activemq.xml" >"$dir/log" 2>&1 &
pid=$!
sleep 1.5
start=$(awk '/VmRSS/ {print $2}' "/proc/$pid/status")
target/release/examples/loadgen --port 21883 --mode idle --connections 19000 --keep-alive-secs 4 --duration-secs 16 >/dev/null 2>&1 &
load=$!
sleep 10
rss=$(awk '/VmRSS/ {print $2}' "/proc/$pid/status")
echo "before trim: $(( (rss - start) * 1024 / 19000 )) B/conn"
gdb -p $pid -batch -ex 'call (int)malloc_trim(0)' >/dev/null 2>&1 || true
sleep 1
rss=$(awk '/VmRSS/ {print $2}' "/proc/$pid/status")
echo "after trim: $(( (rss - start) * 1024 / 19000 )) B/conn"
wait $load || true
kill $pid; wait $pid 2>/dev/null || true
grep "returned the allocator" "$dir/log" | tail -3; rm -rf "$dir"
