#!/usr/bin/env bash
# usage: malloc-stats.sh BIN  -> malloc_stats of the broker holding 19,000 idle connections
set -euo pipefail
ulimit -n 20000
dir=$(mktemp -d /tmp/mstats.XXXXXX)
source "$(dirname "${BASH_SOURCE[0]}")/../2026-12-02-parking/broker-config.sh"
write_config "$dir"
hold_idle "$1" "$dir"
echo "RSS delta per conn: $(rss_per_connection)"
gdb -p "$pid" -batch -ex 'call (void)malloc_stats()' >/dev/null 2>&1 || true
sleep 1
grep -E "Arena|system bytes|in use bytes" "$dir/log" | tail -20
wait "$load" || true
kill "$pid"; wait "$pid" 2>/dev/null || true
rm -rf "$dir"
