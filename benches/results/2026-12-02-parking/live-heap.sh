#!/usr/bin/env bash
# The live heap of 5,000 idle connections, whatever the allocator keeps: heaptrack records every
# allocation of a glibc-allocated build (a build with mimalloc bypasses it), the broker is killed
# while the connections are held, and what was never freed is what they hold.
# Usage (from the repository root): benches/results/2026-12-02-parking/live-heap.sh BIN
# (BIN built without the global allocator line of src/main.rs). Needs Debian's heaptrack.
set -euo pipefail
bin=$1
ulimit -n 20000
dir=$(mktemp -d /tmp/live-heap.XXXXXX)
source "$(dirname "${BASH_SOURCE[0]}")/broker-config.sh"
write_config "$dir"
NO_COLOR=1 heaptrack -o "$dir/heap" "$bin" --log-level warn run --config "$dir/activemq.xml" >"$dir/log" 2>&1 &
sleep 3
pid=$(pgrep -f "^$bin --log-level" | head -1)
target/release/examples/loadgen --port 21883 --mode idle --connections 5000 \
  --keep-alive-secs 4 --duration-secs 12 >/dev/null 2>&1 &
sleep 10
kill -9 "$pid"
sleep 4
heaptrack_print -f "$dir/heap.zst" --print-peaks 0 --print-allocators 0 --print-temporary 0 \
  --print-leaks 1 2>/dev/null | grep -E "leaked over [0-9]{3,} calls|total memory leaked"
echo "files in $dir"
