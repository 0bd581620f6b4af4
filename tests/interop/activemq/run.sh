#!/usr/bin/env bash
# Run Debian's Apache ActiveMQ 5.17 in the foreground from an activemq.xml, the way the
# differential tests do (tests/support/activemq.rs), to measure what ActiveMQ answers by hand:
#
#   tests/interop/activemq/run.sh path/to/activemq.xml      # Ctrl-C stops it
#
# Debian's ActiveMQ does not put the MQTT codec (libmqtt-client-java's mqtt-client.jar) on its
# class path: `/usr/bin/activemq console` then listens on mqtt:// but fails every connection with
# NoClassDefFoundError in the accept thread, and nothing is logged. ActiveMQ's launcher adds the
# jars of ${activemq.base}/lib, so this script runs from a temporary base directory whose lib/
# links the codec, with a log4j.properties that logs to the console (the security logger at DEBUG).
set -euo pipefail
xml=${1:?usage: $0 path/to/activemq.xml}
xml=$(realpath "$xml")
for f in /usr/share/activemq/bin/activemq.jar /usr/share/java/mqtt-client.jar; do
  [[ -f $f ]] || { echo "$f is missing: apt-get install activemq libmqtt-client-java" >&2; exit 1; }
done
base=$(mktemp -d -t activemq-XXXXXX)
trap 'rm -rf "$base"' EXIT
mkdir -p "$base/conf" "$base/lib" "$base/data"
ln -s /usr/share/java/mqtt-client.jar /usr/share/java/hawtdispatch.jar \
  /usr/share/java/hawtdispatch-transport.jar "$base/lib/"
cat > "$base/conf/log4j.properties" <<'PROPS'
log4j.rootLogger=INFO, out
log4j.logger.org.apache.activemq.security=DEBUG
log4j.appender.out=org.apache.log4j.ConsoleAppender
log4j.appender.out.layout=org.apache.log4j.PatternLayout
log4j.appender.out.layout.ConversionPattern=%d{ISO8601} %-5p %c{1} - %m%n
PROPS
java -Xms64m -Xmx256m -XX:+UseSerialGC -XX:TieredStopAtLevel=1 -Djava.awt.headless=true \
  -Dactivemq.home=/usr/share/activemq -Dactivemq.base="$base" -Dactivemq.conf="$base/conf" \
  -Dactivemq.data="$base/data" -Dlog4j.configuration="file:$base/conf/log4j.properties" \
  -jar /usr/share/activemq/bin/activemq.jar start "xbean:file:$xml"
