#!/bin/bash
# start.sh [fresh] -- 3 nats-servers + 3 ferromq nodes; pids in /tmp/fmq-repro/run/*.pid
HERE=$(cd "$(dirname "$0")" && pwd); R=/tmp/fmq-repro/run; C=$HERE/conf
if [ "$1" = fresh ]; then rm -rf $R; fi
mkdir -p $R
for i in 1 2 3; do nats-server -c $C/nats$i.conf >>$R/nats$i.log 2>&1 & echo $! > $R/nats$i.pid; done
sleep 3
for i in 1 2 3; do $HERE/node.sh $i; done
for t in $(seq 60); do
  n=0; for p in 11884 11885 11886; do (exec 3<>/dev/tcp/127.0.0.1/$p) 2>/dev/null && n=$((n+1)); done
  [ $n = 3 ] && { echo "all 3 nodes listening after ${t}s"; exit 0; }; sleep 1
done; echo "nodes not up"; exit 1
