#!/bin/bash
cd /work/prof; rm -rf data; mkdir data
RUST_LOG=warn $1 run --config activemq.xml > broker.log 2>&1 &
pid=$!
sleep 1
/work/main/target/release/examples/loadgen --port 18830 --mode fan-in --publishers 10 --subscribers 1 --qos 1 --persistent-subscribers --duration-secs 1 --messages 5000 >/dev/null 2>&1
snap() { for t in /proc/$pid/task/*; do echo "$(cat $t/comm) $(awk '{print $14+$15}' $t/stat)"; done | awk '{a[$1]+=$2} END {for (k in a) print k, a[k]}' | sort; }
snap > s1
/work/main/target/release/examples/loadgen --port 18830 --mode fan-in --publishers 10 --subscribers 1 --qos 1 --persistent-subscribers --duration-secs 6 --broker-pid $pid 2>/dev/null | grep -E "msgs/s|PUBACK|broker pid|loadgen CPU" 
snap > s2
join s1 s2 | awk '{printf "%s: %.2f s CPU\n", $1, ($3-$2)/100}'
kill $pid; wait $pid
