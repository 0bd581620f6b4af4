#!/usr/bin/env python3
"""Per-message instruction difference by function between two callgrind A/B runs made by
benches/callgrind_per_msg.sh with OUT_DIR set (it keeps {A,B}-SCENARIO-{SMALL,LARGE}.callgrind).

  benches/callgrind_diff.py OUT_DIR SCENARIO incl|excl EXTRA_MESSAGES [TOP]

For each side: (cost in the large run - cost in the small run) / EXTRA_MESSAGES, per function
(inclusive or exclusive), then the functions sorted by |B - A|. Needs callgrind_annotate.
Inlining differs between builds, so read totals along call paths, not single rows.
"""
import re, subprocess, sys
from collections import defaultdict
def load(f, incl):
    out = subprocess.run(["callgrind_annotate", f"--inclusive={'yes' if incl else 'no'}", "--threshold=100", f], capture_output=True, text=True).stdout
    d = defaultdict(int)
    for line in out.splitlines():
        m = re.match(r"\s*([\d,]+) \([ \d.]+%\)\s+(.*)$", line)
        if not m or "PROGRAM TOTALS" in line: continue
        name = m.group(2)
        name = re.sub(r"\s*\([\d,]+x\)$", "", name)
        name = re.sub(r"\s*\[[^\]]*\]$", "", name)
        name = name.split(":", 1)[1] if ":" in name and not name.startswith(("<", "ferromq", "tokio", "redb")) else name
        name = re.sub(r"^[^ ]*\.rs:", "", name)
        d[name] += int(m.group(1).replace(",", ""))
    return d
dirn, scen, incl, msgs = sys.argv[1], sys.argv[2], sys.argv[3] == "incl", int(sys.argv[4])
import os
small, large = os.environ.get("SMALL", "300"), os.environ.get("LARGE", "1500")
per = {}
for side in "AB":
    big = load(f"{dirn}/{side}-{scen}-{large}.callgrind", incl); little = load(f"{dirn}/{side}-{scen}-{small}.callgrind", incl)
    per[side] = {k: (big.get(k, 0) - little.get(k, 0)) / msgs for k in set(big) | set(little)}
keys = set(per["A"]) | set(per["B"])
rows = sorted(keys, key=lambda k: -abs(per["B"].get(k, 0) - per["A"].get(k, 0)))
print(f"{'A/msg':>9} {'B/msg':>9} {'B-A':>8}  function")
for k in rows[:int(sys.argv[5]) if len(sys.argv) > 5 else 30]:
    a, b = per["A"].get(k, 0), per["B"].get(k, 0)
    print(f"{a:9.0f} {b:9.0f} {b-a:8.0f}  {k[:150]}")
