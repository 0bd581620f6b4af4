#!/bin/bash
# in-memory counterpart of threads.sh: same load, persistent="false"
cd /work/prof
RUST_LOG=warn $1 run --config memory.xml > broker-mem.log 2>&1 &
pid=$!
sleep 1
/work/main/target/release/examples/loadgen --port 18831 --mode fan-in --publishers 10 --subscribers 1 --qos 1 --persistent-subscribers --duration-secs 1 --messages 5000 >/dev/null 2>&1
/work/main/target/release/examples/loadgen --port 18831 --mode fan-in --publishers 10 --subscribers 1 --qos 1 --persistent-subscribers --duration-secs 6 --broker-pid $pid 2>/dev/null | grep -E "msgs/s|PUBACK|broker pid|loadgen CPU"
kill $pid; wait $pid
