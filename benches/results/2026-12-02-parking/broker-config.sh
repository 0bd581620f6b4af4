# Sourced by the scripts of this directory: write_config DIR writes DIR/activemq.xml, the
# broker both measure (in-memory, one plain MQTT connector on 127.0.0.1:21883, no cap).
write_config() {
  mkdir -p "$1/data"
  cat >"$1/activemq.xml" <<XML
<beans xmlns="http://www.springframework.org/schema/beans">
  <broker xmlns="http://activemq.apache.org/schema/core" brokerName="bench"
          dataDirectory="$1/data" persistent="false" useJmx="false">
    <transportConnectors>
      <transportConnector name="mqtt" uri="mqtt+nio://127.0.0.1:21883?maximumConnections=1000000"/>
    </transportConnectors>
  </broker>
</beans>
XML
}

# hold_idle BIN DIR [HOLD_S [RETURN_S]]: start BIN on DIR's config (its log in DIR/log, with
# RUST_LOG as the caller exports it), hold 19,000 idle connections (keep-alive 4 s) for HOLD_S
# seconds (16) and return RETURN_S seconds (10) into the hold; sets pid, load (the load
# generator's pid) and start (the broker's RSS before, KiB).
hold_idle() {
  NO_COLOR=1 "$1" --log-level warn run --config "$2/activemq.xml" >"$2/log" 2>&1 &
  pid=$!
  sleep 1.5
  start=$(awk '/VmRSS/ {print $2}' "/proc/$pid/status")
  target/release/examples/loadgen --port 21883 --mode idle --connections 19000 \
    --keep-alive-secs 4 --duration-secs "${3:-16}" >/dev/null 2>&1 &
  load=$!
  sleep "${4:-10}"
}

# rss_per_connection: the broker's RSS growth since `start`, in bytes per connection.
rss_per_connection() {
  echo $(( ($(awk '/VmRSS/ {print $2}' "/proc/$pid/status") - start) * 1024 / 19000 ))
}
