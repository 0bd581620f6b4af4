#!/usr/bin/env bash
# usage: trim-test.sh BIN -> RSS per idle connection (19,000 held) before and after a
# malloc_trim(0) called through gdb, and the broker's own trims (debug log lines).
set -euo pipefail
ulimit -n 20000
dir=$(mktemp -d /tmp/trim.XXXXXX)
source "$(dirname "${BASH_SOURCE[0]}")/../2026-12-02-parking/broker-config.sh"
write_config "$dir"
RUST_LOG=warn,ferromq::broker::connection::parking=debug hold_idle "$1" "$dir"
echo "before trim: $(rss_per_connection) B/conn"
gdb -p "$pid" -batch -ex 'call (int)malloc_trim(0)' >/dev/null 2>&1 || true
sleep 1
echo "after trim: $(rss_per_connection) B/conn"
wait "$load" || true
kill "$pid"; wait "$pid" 2>/dev/null || true
grep "returned the allocator" "$dir/log" | tail -3 || true
rm -rf "$dir"
