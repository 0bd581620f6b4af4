#!/usr/bin/env python3
"""Table (markdown) of benches/offline_queue.sh results: medians per broker over the JSON lines
of one file. Lines whose label contains "base" are shown as a separate row.

  benches/offline_queue_summary.py benches/results/offline-queue-DATE.jsonl
"""
import json, statistics, sys
rows=[json.loads(l) for l in open(sys.argv[1])]
by={}
for x in rows:
    key=(x['broker'], 'base' if 'base' in x.get('label','') else 'head')
    by.setdefault(key,[]).append(x)
med=statistics.median
fmt_bytes=lambda n: f'{n/1e9:.2f} GB' if n>=1e8 else (f'{n/1e6:.0f} MB' if n>=1e6 else f'{n/1e3:.1f} kB')
print("| broker | runs | acknowledged | delivered after reconnect | lost | ingest msg/s (median, min..max) | drain msg/s (median, min..max) | RSS peak during ingest | RSS after ingest | RSS peak during drain | RSS after drain | data dir after ingest |")
print("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
for (b,v),xs in by.items():
    ing=[x['ingest_msgs_per_sec'] for x in xs]; dr=[x['drain_msgs_per_sec'] for x in xs]
    f=lambda k: med([x['rss_mib'][k] for x in xs])
    name = b + (" (base ae047c6)" if v=='base' else "")
    print(f"| {name} | {len(xs)} | {med([x['acked'] for x in xs]):,.0f} | {med([x['delivered_distinct'] for x in xs]):,.0f} | {med([x['lost'] for x in xs]):,.0f} | "
          f"{med(ing):,.0f} ({min(ing):,}..{max(ing):,}) | {(f'{med(dr):,.0f} ({min(dr):,}..{max(dr):,})' if med([x['delivered_distinct'] for x in xs])>=10000 else '– (1,000 messages)')} | {f('peak_ingest'):.0f} MiB | {f('after_ingest'):.0f} MiB | {f('peak_drain'):.0f} MiB | {f('after_drain'):.0f} MiB | {fmt_bytes(med([x['data_dir_bytes_after_ingest'] for x in xs]))} |")
