#!/usr/bin/env bash
# RSS per idle connection over a hold, for each broker binary given: 19,000 idle MQTT 3.1.1
# connections over plain TCP, keep-alive 4 s (a PINGREQ every 2 s), RSS sampled 4, 8, 12 and
# 16 s after the load generator starts (its connect phase takes ~3 s).
# Usage (from the repository root, after `cargo build --release --examples`):
#   benches/results/2026-12-02-parking/rss-over-time.sh BIN...
set -euo pipefail
ulimit -n 20000
dir=$(mktemp -d /tmp/rss-over-time.XXXXXX)
trap 'rm -rf "$dir"' EXIT
source "$(dirname "${BASH_SOURCE[0]}")/broker-config.sh"
write_config "$dir"
for bin in "$@"; do
  hold_idle "$bin" "$dir" 14 0
  for at in 4 8 12 16; do
    sleep 4
    rss=$(awk '/VmRSS/ {print $2}' "/proc/$pid/status")
    echo "$bin ${at}s: $(( (rss - start) * 1024 / 19000 )) bytes per connection (RSS $rss KiB, before $start KiB)"
  done
  wait "$load" || true
  kill "$pid"; wait "$pid" 2>/dev/null || true
  sleep 2
done
