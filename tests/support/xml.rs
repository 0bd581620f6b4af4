//! The one `activemq.xml` builder of the tests, and loading a configuration from text.

use std::path::Path;

use ferromq::config::{Config, LoadOptions};

/// An `activemq.xml` text: `<beans>` around one `<broker>` with its children (policies,
/// plugins, usage limits, a store ...) and `<transportConnectors>`.
///
/// By default the broker is called `test`, is not persistent and has no connector.
#[derive(Debug, Clone)]
pub struct BrokerXml {
    name: String,
    persistent: Option<bool>,
    attributes: Vec<String>,
    children: Vec<String>,
    connectors: Vec<(String, String)>,
}

impl Default for BrokerXml {
    fn default() -> Self {
        BrokerXml::new()
    }
}

impl BrokerXml {
    pub fn new() -> BrokerXml {
        BrokerXml {
            name: "test".into(),
            persistent: Some(false),
            attributes: Vec::new(),
            children: Vec::new(),
            connectors: Vec::new(),
        }
    }

    /// `brokerName`.
    pub fn name(mut self, name: &str) -> BrokerXml {
        self.name = name.into();
        self
    }

    /// The `persistent` attribute; `None` leaves it out (ActiveMQ's default: persistent).
    pub fn persistent(mut self, persistent: Option<bool>) -> BrokerXml {
        self.persistent = persistent;
        self
    }

    /// A durable broker: no `persistent` attribute and a KahaDB store in `dir`.
    pub fn kahadb(self, dir: &Path) -> BrokerXml {
        self.persistent(None).child(&format!(
            r#"<persistenceAdapter><kahaDB directory="{}"/></persistenceAdapter>"#,
            dir.display()
        ))
    }

    /// More `<broker>` attributes, as written (`name="value" ...`).
    pub fn attributes(mut self, attributes: &str) -> BrokerXml {
        self.attributes.push(attributes.into());
        self
    }

    /// A child element of `<broker>`, as written (placed before `<transportConnectors>`).
    pub fn child(mut self, xml: &str) -> BrokerXml {
        self.children.push(xml.into());
        self
    }

    /// `<plugins>` around `inner` (present even when `inner` is empty).
    pub fn plugins(self, inner: &str) -> BrokerXml {
        self.child(&format!("<plugins>{inner}</plugins>"))
    }

    /// `<sslContext><sslContext keyStore="..."/></sslContext>`.
    pub fn key_store(self, key_store: &str) -> BrokerXml {
        self.child(&format!(
            r#"<sslContext><sslContext keyStore="{key_store}"/></sslContext>"#
        ))
    }

    /// A `<transportConnector name=".." uri=".."/>`.
    pub fn connector(mut self, name: &str, uri: &str) -> BrokerXml {
        self.connectors.push((name.into(), uri.into()));
        self
    }

    /// One `<transportConnector>` per (name, uri).
    pub fn connectors(self, connectors: &[(&str, &str)]) -> BrokerXml {
        connectors
            .iter()
            .fold(self, |xml, (name, uri)| xml.connector(name, uri))
    }

    /// The connector `mqtt` on `mqtt://127.0.0.1:<port>?<uri_options joined by &amp;>`.
    pub fn mqtt(self, port: u16, uri_options: &[&str]) -> BrokerXml {
        let query = if uri_options.is_empty() {
            String::new()
        } else {
            format!("?{}", uri_options.join("&amp;"))
        };
        self.connector("mqtt", &format!("mqtt://127.0.0.1:{port}{query}"))
    }

    pub fn build(&self) -> String {
        let mut attributes = format!(r#" brokerName="{}""#, self.name);
        if let Some(persistent) = self.persistent {
            attributes.push_str(&format!(r#" persistent="{persistent}""#));
        }
        for more in self.attributes.iter().filter(|more| !more.is_empty()) {
            attributes.push(' ');
            attributes.push_str(more);
        }
        let children: String = self
            .children
            .iter()
            .map(|child| format!("\n    {child}"))
            .collect();
        let connectors: String = self
            .connectors
            .iter()
            .map(|(name, uri)| {
                format!("\n      <transportConnector name=\"{name}\" uri=\"{uri}\"/>")
            })
            .collect();
        format!(
            r#"<beans xmlns="http://www.springframework.org/schema/beans">
  <broker xmlns="http://activemq.apache.org/schema/core"{attributes}>{children}
    <transportConnectors>{connectors}
    </transportConnectors>
  </broker>
</beans>
"#
        )
    }

    /// Write the text to `path`.
    pub fn write(&self, path: &Path) {
        std::fs::write(path, self.build()).expect("write activemq.xml");
    }
}

/// A `destinationPolicy` giving topics matching the ActiveMQ pattern `topic` (e.g. `a.b.>`) a
/// pending-queue limit of `limit` messages (`constantPendingMessageLimitStrategy`).
pub fn pending_limit_policy(topic: &str, limit: usize) -> String {
    format!(
        r#"<destinationPolicy><policyMap><policyEntries>
             <policyEntry topic="{topic}">
               <pendingMessageLimitStrategy>
                 <constantPendingMessageLimitStrategy limit="{limit}"/>
               </pendingMessageLimitStrategy>
             </policyEntry>
           </policyEntries></policyMap></destinationPolicy>"#
    )
}

/// A memory broker with one connector `mqtt://127.0.0.1:0?<uri_options joined by &amp;>` and
/// `broker_children` (e.g. a `<destinationPolicy>`) inside `<broker>`.
pub fn activemq_xml(uri_options: &[&str], broker_children: &str) -> String {
    BrokerXml::new()
        .child(broker_children)
        .mqtt(0, uri_options)
        .build()
}

/// A memory broker with `<plugins>{plugins}</plugins>` and one connector per (name, uri).
pub fn broker_xml(plugins: &str, connectors: &[(&str, &str)]) -> String {
    BrokerXml::new()
        .plugins(plugins)
        .connectors(connectors)
        .build()
}

/// Loading options without environment lookups or overrides.
pub fn no_env() -> LoadOptions {
    LoadOptions {
        use_env: false,
        local_store: false,
        ..Default::default()
    }
}

/// Load a configuration from XML text the way `ferromq run` does (no environment lookups).
pub fn load_xml(xml: &str) -> Config {
    let loaded = ferromq::config::load_str(xml, &std::env::temp_dir(), &no_env());
    let diagnostics = loaded.diagnostics.to_string();
    loaded
        .into_result()
        .unwrap_or_else(|_| panic!("test XML is invalid:\n{diagnostics}"))
}

/// Load a configuration file the way `ferromq run` does (no environment lookups).
pub fn load_file(path: &Path) -> Config {
    let loaded = ferromq::config::load_file(path, &no_env());
    let diagnostics = loaded.diagnostics.to_string();
    loaded
        .into_result()
        .unwrap_or_else(|_| panic!("expected a valid config:\n{diagnostics}"))
}
