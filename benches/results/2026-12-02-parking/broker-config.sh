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
