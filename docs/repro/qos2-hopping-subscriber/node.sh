#!/bin/bash
# node.sh I  -- start ferromq node I (1..3); its local nats first
HERE=$(cd "$(dirname "$0")" && pwd); R=/tmp/fmq-repro/run; C=$HERE/conf; B=${FMQ_BIN:-$HERE/../../../target/release/ferromq}
i=$1; L=${RUST_LOG:-info}
case $i in 1) S=nats://127.0.0.1:14222,nats://127.0.0.1:14223,nats://127.0.0.1:14224;;
           2) S=nats://127.0.0.1:14223,nats://127.0.0.1:14224,nats://127.0.0.1:14222;;
           3) S=nats://127.0.0.1:14224,nats://127.0.0.1:14222,nats://127.0.0.1:14223;; esac
mkdir -p $R/node$i
RUST_LOG=$L $B run -c $C/node.xml --set ferromq.node=node$i --set node.data=$R/node$i --set node.nats=$S --set node.port=$((11883+i)) >>$R/node$i.log 2>&1 &
echo $! > $R/node$i.pid
