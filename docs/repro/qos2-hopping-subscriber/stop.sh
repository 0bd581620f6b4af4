#!/bin/bash
# stop.sh -- stop every process started by start.sh/node.sh (by pid)
R=/tmp/fmq-repro/run
for f in $R/node*.pid $R/nats*.pid; do [ -f $f ] || continue; p=$(cat $f); kill $p 2>/dev/null; done
sleep 3
for f in $R/node*.pid $R/nats*.pid; do [ -f $f ] || continue; p=$(cat $f); kill -9 $p 2>/dev/null; rm -f $f; done
true
