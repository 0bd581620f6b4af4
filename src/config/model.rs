//! The typed configuration model: what `activemq.xml` means, with units in the names.
//!
//! Built by `config::compile` from the loaded tree; consumed by the broker runtime, security and
//! store. Nothing here opens a socket or a file. Every item that came from the file keeps its
//! [`Span`] so that runtime errors (a port already in use) can point back at the line.

use std::collections::BTreeMap;
use std::fmt;
use std::path::PathBuf;
use std::time::Duration;

use serde::{Serialize, Serializer};

use super::delivery_policy::DeliveryPolicy;
use super::diagnostic::Span;
use super::stomp_options::StompOptions;

/// A whole, valid configuration.
#[derive(Debug, Clone, Serialize)]
pub struct Config {
    /// The main file this configuration was loaded from (`<string>` for in-memory XML).
    pub source: PathBuf,
    /// Every file read to build this configuration: the main file, imports, properties files,
    /// login.config and the files it names, TLS material. The reload watcher watches these.
    pub files: Vec<PathBuf>,
    pub broker: BrokerSettings,
    pub listeners: Vec<Listener>,
    pub ssl: Option<SslContextConfig>,
    pub authentication: Authentication,
    /// `None`: no authorizationPlugin, everything is allowed (ActiveMQ's rule).
    pub authorization: Option<AuthorizationConfig>,
    pub persistence: Persistence,
    /// Where the store is configured: the persistence adapter element, or `<broker>` when the
    /// default store is used (what store errors at start point at).
    pub persistence_span: Span,
    pub limits: Limits,
    pub policies: Vec<PolicyEntry>,
    /// `Some` when a `runtimeConfigurationPlugin` is declared.
    pub reload: Option<ReloadSettings>,
    /// `<ferromq:sharedSubscriptions strategy="..."/>`: which member of a shared subscription
    /// group receives a message (MQTT 5.0 4.8.2 leaves it to the server).
    pub shared_strategy: SharedStrategy,
    /// `<ferromq:systemTopics interval="..."/>`: how often the broker publishes its `$SYS`
    /// topics (see `broker::system`).
    pub system_topics: SystemTopics,
    /// `<destinations>`: destinations that exist from the start (creating one needs no
    /// `admin`; see `broker::routing::destinations`).
    pub destinations: DeclaredDestinations,
    /// Virtual topics and composite topics (`<destinationInterceptors>`, `useVirtualTopics`):
    /// which queues get a copy of a message published to a topic.
    pub virtual_destinations: crate::config::virtual_destinations::VirtualDestinations,
    /// Dead letters, redelivery and queue prefetch (`policyEntry`'s `deadLetterStrategy` and
    /// `queuePrefetch`, `<redeliveryPlugin>`), asked per destination by the queue engine.
    pub delivery: DeliveryPolicy,
    /// The web console (`jettyPort` bean of an imported jetty.xml, `<ferromq:console>`, or
    /// `ferromq run --console`); `None`: off.
    pub console: Option<ConsoleConfig>,
}

/// Where the web console listens and who may use it (see docs/console.md).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ConsoleConfig {
    /// Host to bind (`127.0.0.1` by default, as ActiveMQ's jetty.xml).
    pub host: String,
    pub port: u16,
    /// `jetty.xml`, `ferromq:console` or `--console`: for `check` and messages.
    pub source: &'static str,
    /// The realm file (jetty-realm.properties), when one is configured.
    pub realm: Option<PathBuf>,
    /// The realm's users (never serialized: they carry passwords).
    #[serde(skip)]
    pub users: Vec<crate::console::realm::RealmUser>,
    /// `/metrics` without a login (for a Prometheus scraper on a trusted network).
    pub metrics_open: bool,
    /// Serve HTTPS with the broker's `<sslContext>` key material.
    pub tls: bool,
    /// At most this many console connections at once (`maximumConnections`, the name of
    /// ActiveMQ's connector attribute); more wait in the listen backlog, holding no descriptor
    /// of the broker's, so that the console cannot starve the MQTT and STOMP listeners.
    pub max_connections: u32,
    /// Where it was configured (the bean or the element).
    #[serde(skip)]
    pub span: Option<Span>,
}

impl ConsoleConfig {
    /// `host:port` as written (IPv6 hosts bracketed).
    pub fn address(&self) -> String {
        if self.host.contains(':') && !self.host.starts_with('[') {
            format!("[{}]:{}", self.host, self.port)
        } else {
            format!("{}:{}", self.host, self.port)
        }
    }

    /// The `source` of a console whose address `run --console HOST:PORT` gave: every reload
    /// keeps that address (see [`Config::override_console_address`]).
    pub const COMMAND_LINE: &'static str = "--console";

    /// Everything but the users: a difference here needs a restart of the console.
    pub fn endpoint(&self) -> (String, u16, bool, bool) {
        (self.host.clone(), self.port, self.metrics_open, self.tls)
    }
}

impl Config {
    /// `run --console HOST:PORT`: serve the console on this address whatever the file says (a
    /// console the file does not declare is added, with the defaults and no users). Its
    /// `source` becomes [`ConsoleConfig::COMMAND_LINE`], so that a reload applies the address
    /// again ([`Config::keep_console_override`]) rather than report the file's as a change.
    pub fn override_console_address(&mut self, host: String, port: u16) {
        let console = self.console.get_or_insert_with(|| ConsoleConfig {
            host: String::new(),
            port: 0,
            source: ConsoleConfig::COMMAND_LINE,
            realm: None,
            users: Vec::new(),
            metrics_open: false,
            tls: false,
            max_connections: crate::config::compile::console::DEFAULT_MAX_CONNECTIONS,
            span: None,
        });
        console.host = host;
        console.port = port;
        console.source = ConsoleConfig::COMMAND_LINE;
    }

    /// `self` runs with a `--console` address: give it to `new`, just loaded from the file,
    /// before the two are compared (the override holds for the broker's whole run).
    pub fn keep_console_override(&self, new: &mut Config) {
        let Some(running) = self
            .console
            .as_ref()
            .filter(|c| c.source == ConsoleConfig::COMMAND_LINE)
        else {
            return;
        };
        match new.console.as_mut() {
            Some(console) => {
                console.host = running.host.clone();
                console.port = running.port;
                console.source = ConsoleConfig::COMMAND_LINE;
            }
            None => new.console = Some(running.clone()),
        }
    }
}

/// The broker's `$SYS` topics: published every `interval_ms` milliseconds as retained
/// messages (mosquitto's `sys_interval`, whose default of 10 s is kept); 0 turns them off.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct SystemTopics {
    pub interval_ms: u64,
}

impl SystemTopics {
    /// mosquitto's default `sys_interval`.
    pub const DEFAULT_INTERVAL_MS: u64 = 10_000;

    /// The period between two publications; `None` when they are off.
    pub fn interval(&self) -> Option<std::time::Duration> {
        (self.interval_ms > 0).then(|| std::time::Duration::from_millis(self.interval_ms))
    }
}

impl Default for SystemTopics {
    fn default() -> Self {
        SystemTopics {
            interval_ms: Self::DEFAULT_INTERVAL_MS,
        }
    }
}

/// `<broker><destinations>`, ActiveMQ names (`a.b`), each once, in file order.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct DeclaredDestinations {
    pub topics: Vec<String>,
    /// Kept for STOMP; MQTT serves no queues.
    pub queues: Vec<String>,
}

impl DeclaredDestinations {
    /// The declared topics as MQTT topic names (`a.b` -> `a/b`).
    pub fn mqtt_topics(&self) -> impl Iterator<Item = String> + '_ {
        self.topics
            .iter()
            .map(|name| crate::security::destination::swap_chars(name))
    }
}

/// How a shared subscription group (`$share/{group}/{filter}`) picks the one member that
/// receives a message. Whatever the strategy, online members are preferred (see
/// `broker::routing::shared`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum SharedStrategy {
    /// `round-robin` (default): each member in turn.
    #[default]
    RoundRobin,
    /// `random`: a member chosen at random for each message.
    Random,
    /// `sticky`: the same member until it leaves the group or goes offline.
    Sticky,
    /// `hash-client-id`: a hash of the publisher's client id, so one publisher's messages go
    /// to one member (in order) while the group's membership is stable.
    HashClientId,
}

impl SharedStrategy {
    /// Every strategy, in documentation order.
    pub const ALL: [SharedStrategy; 4] = [
        SharedStrategy::RoundRobin,
        SharedStrategy::Random,
        SharedStrategy::Sticky,
        SharedStrategy::HashClientId,
    ];

    /// The name written in the configuration.
    pub fn as_str(self) -> &'static str {
        match self {
            SharedStrategy::RoundRobin => "round-robin",
            SharedStrategy::Random => "random",
            SharedStrategy::Sticky => "sticky",
            SharedStrategy::HashClientId => "hash-client-id",
        }
    }

    /// The strategy named `name` as written in the configuration.
    pub fn parse(name: &str) -> Option<SharedStrategy> {
        Self::ALL.into_iter().find(|s| s.as_str() == name)
    }
}

impl fmt::Display for SharedStrategy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

#[derive(Debug, Clone, Serialize)]
pub struct BrokerSettings {
    /// `brokerName`, default `localhost`.
    pub broker_name: String,
    /// `dataDirectory`, default `activemq-data` relative to the working directory.
    pub data_directory: PathBuf,
    /// `persistent`, default true; false keeps everything in memory.
    pub persistent: bool,
    /// `start`, default true; false: `run` builds the graph and exits.
    pub start: bool,
    /// `offlineDurableSubscriberTimeout` (ms): a persistent session whose client has been
    /// offline longer is deleted with its queued messages. `None` (ActiveMQ's default, -1):
    /// kept until its client comes back.
    pub offline_durable_subscriber_timeout_ms: Option<u64>,
    /// `offlineDurableSubscriberTaskSchedule` (ms, ActiveMQ's default 300000): how often
    /// sessions past the timeout are looked for.
    pub offline_durable_subscriber_task_schedule_ms: u64,
}

/// ActiveMQ's `BrokerService` default for `offlineDurableSubscriberTaskSchedule`: 5 minutes.
pub const DEFAULT_OFFLINE_DURABLE_TASK_SCHEDULE_MS: u64 = 300_000;

impl Default for BrokerSettings {
    fn default() -> Self {
        BrokerSettings {
            broker_name: "localhost".into(),
            data_directory: PathBuf::from("activemq-data"),
            persistent: true,
            start: true,
            offline_durable_subscriber_timeout_ms: None,
            offline_durable_subscriber_task_schedule_ms: DEFAULT_OFFLINE_DURABLE_TASK_SCHEDULE_MS,
        }
    }
}

/// The transport scheme of a connector that ferromq serves.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
pub enum Scheme {
    /// `mqtt://`
    Mqtt,
    /// `mqtt+nio://` (served by the same code as `mqtt://`)
    MqttNio,
    /// `mqtt+ssl://`
    MqttSsl,
    /// `mqtt+nio+ssl://`
    MqttNioSsl,
    /// `ws://`: MQTT or STOMP, chosen per connection by WebSocket sub-protocol.
    Ws,
    /// `wss://`: as `ws://`, over TLS.
    Wss,
    /// `stomp://`
    Stomp,
    /// `stomp+nio://` (served by the same code as `stomp://`)
    StompNio,
    /// `stomp+ssl://`
    StompSsl,
    /// `stomp+nio+ssl://`
    StompNioSsl,
}

/// The messaging protocol spoken on a connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
pub enum Protocol {
    /// MQTT 3.1, 3.1.1 and 5.0.
    Mqtt,
    /// STOMP 1.0, 1.1 and 1.2.
    Stomp,
}

impl Scheme {
    /// Every scheme, in documentation order.
    pub const ALL: [Scheme; 10] = [
        Scheme::Mqtt,
        Scheme::MqttNio,
        Scheme::MqttSsl,
        Scheme::MqttNioSsl,
        Scheme::Ws,
        Scheme::Wss,
        Scheme::Stomp,
        Scheme::StompNio,
        Scheme::StompSsl,
        Scheme::StompNioSsl,
    ];

    /// The scheme written as `s` (lower case, as `config::uri` gives it).
    pub fn parse(s: &str) -> Option<Scheme> {
        Self::ALL.into_iter().find(|scheme| scheme.as_str() == s)
    }
    pub fn as_str(self) -> &'static str {
        match self {
            Scheme::Mqtt => "mqtt",
            Scheme::MqttNio => "mqtt+nio",
            Scheme::MqttSsl => "mqtt+ssl",
            Scheme::MqttNioSsl => "mqtt+nio+ssl",
            Scheme::Ws => "ws",
            Scheme::Wss => "wss",
            Scheme::Stomp => "stomp",
            Scheme::StompNio => "stomp+nio",
            Scheme::StompSsl => "stomp+ssl",
            Scheme::StompNioSsl => "stomp+nio+ssl",
        }
    }
    pub fn is_tls(self) -> bool {
        matches!(
            self,
            Scheme::MqttSsl
                | Scheme::MqttNioSsl
                | Scheme::Wss
                | Scheme::StompSsl
                | Scheme::StompNioSsl
        )
    }
    pub fn is_websocket(self) -> bool {
        matches!(self, Scheme::Ws | Scheme::Wss)
    }

    /// The one protocol every connection of this connector speaks. `None` for `ws://` and
    /// `wss://`: each WebSocket connection speaks the protocol of the sub-protocol it agreed
    /// (MQTT for `mqtt`/`mqttv3.1`; STOMP for `v10.stomp`, `v11.stomp`, `v12.stomp`, `stomp`,
    /// and when the client offers no MQTT sub-protocol), as ActiveMQ's `WSServlet` does.
    pub fn protocol(self) -> Option<Protocol> {
        match self {
            Scheme::Mqtt | Scheme::MqttNio | Scheme::MqttSsl | Scheme::MqttNioSsl => {
                Some(Protocol::Mqtt)
            }
            Scheme::Stomp | Scheme::StompNio | Scheme::StompSsl | Scheme::StompNioSsl => {
                Some(Protocol::Stomp)
            }
            Scheme::Ws | Scheme::Wss => None,
        }
    }

    /// The port a hint's example uses: the protocol's registered port (MQTT 1883, 8883 with
    /// TLS) or ActiveMQ's default for its connector (STOMP 61613, 61612 with TLS; WebSocket
    /// 61614).
    pub fn usual_port(self) -> u16 {
        match (self.protocol(), self.is_tls()) {
            (Some(Protocol::Mqtt), false) => 1883,
            (Some(Protocol::Mqtt), true) => 8883,
            (Some(Protocol::Stomp), false) => 61613,
            (Some(Protocol::Stomp), true) => 61612,
            (None, _) => 61614,
        }
    }

    /// Whether connections of this connector may speak `protocol` (WebSocket connectors serve
    /// both).
    pub fn serves(self, protocol: Protocol) -> bool {
        self.protocol().is_none_or(|p| p == protocol)
    }
}

impl fmt::Display for Scheme {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One `<transportConnector>` that ferromq serves.
#[derive(Debug, Clone, Serialize)]
pub struct Listener {
    /// `name` attribute (unique); defaults to the URI when absent.
    pub name: String,
    pub scheme: Scheme,
    /// Host as written (`0.0.0.0`, `localhost`, `::`), without IPv6 brackets.
    pub host: String,
    /// 0 means "any free port" (tests).
    pub port: u16,
    pub options: ListenerOptions,
    /// What `options` mean for keep-alive and connect timeouts, resolved once by
    /// `config::compile` ([`Inactivity::of`]); the broker and `check` both read this.
    pub inactivity: Inactivity,
    /// The `uri` attribute as written (placeholders resolved).
    pub uri: String,
    /// `<publishedAddressPolicy>`: the address other nodes of a cluster name in MQTT 5 Server
    /// References for this connector.
    pub published: PublishedAddressPolicy,
    pub span: Span,
}

/// ActiveMQ's `PublishedAddressPolicy` of a `<transportConnector>`: how the address clients
/// are told to reach this connector at is made from its URI. ActiveMQ publishes it to clients
/// with `updateClusterClients`; a ferromq cluster node names it in MQTT 5 Server References
/// (DISCONNECT or CONNACK 0x9C "Use another server", MQTT 5 4.11). Applied in this order, as
/// ActiveMQ does: the host strategy, then `hostMapping` on the result, `portMapping` on the
/// bound port.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct PublishedAddressPolicy {
    /// `publishedHostStrategy` (case-insensitive, default `DEFAULT`).
    pub host_strategy: PublishedHostStrategy,
    /// `hostMapping`: published host -> host to publish instead (e.g. a NAT's outside name).
    pub host_mapping: Vec<(String, String)>,
    /// `portMapping`: bound port -> port to publish instead.
    pub port_mapping: Vec<(u16, u16)>,
}

/// `publishedHostStrategy`, ActiveMQ's names. A wildcard bind (`0.0.0.0`, `::`) is the
/// machine's host name under every strategy but `IPADDRESS` (ActiveMQ's connect URI names a
/// wildcard bind by the host name before the strategy applies).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub enum PublishedHostStrategy {
    /// The host as written in the URI.
    #[default]
    Default,
    /// The host resolved to its IP address (the first IPv4 one, as Java prefers).
    IpAddress,
    /// The host name. ferromq does no reverse lookup: an IP literal stays as written.
    HostName,
    /// The fully qualified name. ferromq does no canonical-name lookup: as `HOSTNAME`.
    Fqdn,
}

impl Listener {
    /// The one rebind rule, used by `config::diff` and by the running listener set: the socket
    /// must be closed and bound again when the host, the port or the scheme (another transport,
    /// TLS or not) differs from `running`. Anything else (options, TLS material, the URI text)
    /// applies to the connections accepted from then on, on the same socket.
    pub fn needs_rebind(&self, running: &Listener) -> bool {
        self.host != running.host || self.port != running.port || self.scheme != running.scheme
    }
}

/// Connector URI options, with ActiveMQ's names, units and defaults.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ListenerOptions {
    /// `transport.defaultKeepAlive` (ms): used when the client sends keep-alive 0. 0 = off.
    pub default_keep_alive_ms: u64,
    /// `transport.maxKeepAlive` (ms, whole seconds, ferromq's own): the longest keep-alive an
    /// MQTT 5 client gets; a longer one (or 0) is replaced and announced as Server Keep Alive
    /// (MQTT 5 3.2.2.3.14). `None`: no cap (0 or absent).
    pub max_keep_alive_ms: Option<u64>,
    /// `transport.connectAttemptTimeout` (ms): close sockets that send no CONNECT in time.
    /// `None` when <= 0 (off). Default 30000.
    pub connect_attempt_timeout_ms: Option<u64>,
    /// `wireFormat.maxFrameSize` / `transport.maxFrameSize` (bytes) for MQTT packets. Default
    /// 268435456. STOMP frames have their own limit ([`StompOptions::max_frame_size_bytes`]).
    pub max_frame_size_bytes: u64,
    /// `maximumConnections`; `None` = unlimited.
    pub maximum_connections: Option<u32>,
    /// `backlog`: the listen queue of connections the kernel accepted and the broker has not
    /// yet taken (ActiveMQ's `TcpTransportServer`, default 5000); the kernel caps it at
    /// `net.core.somaxconn`. A connect storm beyond it sees refused or retried SYNs. Set when
    /// the socket is bound: a change on reload needs a restart.
    pub backlog: u32,
    /// `transport.activeMQSubscriptionPrefetch`: QoS 1/2 messages sent to one MQTT client and
    /// not yet acknowledged (ActiveMQ's prefetch of the consumer behind an MQTT subscription);
    /// the rest wait in the session's queue. `None` (absent, or <= 0 as ActiveMQ reads it):
    /// [`crate::broker::routing::limits::DEFAULT_SUBSCRIPTION_PREFETCH`]. An MQTT 5 client's
    /// Receive Maximum lowers it (3.3.4-7). At most 65535 (packet identifiers).
    pub subscription_prefetch: Option<u16>,
    /// `transport.publishDollarTopics`, default false: publishes to `$...` are acked and dropped.
    pub publish_dollar_topics: bool,
    /// `transport.useInactivityMonitor`, default true; false disables keep-alive and connect
    /// timeout enforcement.
    pub use_inactivity_monitor: bool,
    /// `allowLinkStealing`: a new connection with a client id already connected takes it over
    /// (else it is refused). Default true on MQTT and WebSocket connectors, false on STOMP ones
    /// (ActiveMQ's `TransportConnector` default; only its MQTT transport turns it on).
    pub allow_link_stealing: bool,
    /// `needClientAuth` / `transport.needClientAuth`.
    pub need_client_auth: bool,
    /// `wantClientAuth` / `transport.wantClientAuth`.
    pub want_client_auth: bool,
    /// `transport.subscriptionStrategy`.
    pub subscription_strategy: SubscriptionStrategy,
    /// The STOMP options (defaults on MQTT-only connectors).
    pub stomp: StompOptions,
}

impl ListenerOptions {
    /// ActiveMQ's `TcpTransportServer.backlog`.
    pub const DEFAULT_BACKLOG: u32 = 5_000;
}

impl Default for ListenerOptions {
    fn default() -> Self {
        ListenerOptions {
            default_keep_alive_ms: 0,
            max_keep_alive_ms: None,
            connect_attempt_timeout_ms: Some(30_000),
            max_frame_size_bytes: 268_435_456,
            maximum_connections: None,
            backlog: Self::DEFAULT_BACKLOG,
            subscription_prefetch: None,
            publish_dollar_topics: false,
            use_inactivity_monitor: true,
            allow_link_stealing: true,
            need_client_auth: false,
            want_client_auth: false,
            subscription_strategy: SubscriptionStrategy::Default,
            stomp: StompOptions::default(),
        }
    }
}

/// Keep-alive grace, as a fraction: a connection is closed after 3/2 of its keep-alive without
/// any inbound byte (MQTT 3.1.1 and 5.0 section 3.1.2.10; ActiveMQ's MQTTProtocolConverter
/// applies the same factor to `transport.defaultKeepAlive`).
pub const KEEP_ALIVE_GRACE: (u64, u64) = (3, 2);

/// A connector's inactivity rules with ActiveMQ's meaning applied: the inactivity-monitor gate
/// (`transport.useInactivityMonitor=false` turns both limits off), 0 meaning "off" and the
/// keep-alive grace ([`KEEP_ALIVE_GRACE`]). Built once from [`ListenerOptions`] by
/// [`Inactivity::of`]; nothing else interprets those options.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct Inactivity {
    /// `transport.useInactivityMonitor` (default true).
    pub monitored: bool,
    /// Keep-alive given to a client that sends keep-alive 0 (`transport.defaultKeepAlive`, ms
    /// in the URI). `None`: such clients are never timed out (0, or the monitor is off).
    #[serde(serialize_with = "millis")]
    pub default_keep_alive: Option<Duration>,
    /// How long a new socket may take to send CONNECT (`transport.connectAttemptTimeout`, ms
    /// in the URI; it also bounds TLS and WebSocket handshakes). `None`: unlimited (<= 0, or the
    /// monitor is off).
    #[serde(serialize_with = "millis")]
    pub connect_attempt_timeout: Option<Duration>,
    /// The longest keep-alive an MQTT 5 client gets, in seconds (`transport.maxKeepAlive`).
    /// `None`: no cap (absent or 0, or the monitor is off).
    pub max_keep_alive_secs: Option<u16>,
}

/// The keep-alive agreed with an MQTT 5 client (MQTT 5 3.1.2.10, 3.2.2.3.14).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct KeepAliveTerms {
    /// How long the client may stay silent: the keep-alive in force x 1.5. `None`: never
    /// timed out.
    pub silence_limit: Option<Duration>,
    /// The Server Keep Alive to put in CONNACK: set whenever the keep-alive in force is not
    /// the one the client asked for (MQTT 5 3.2.2-21/-22).
    pub server_keep_alive_secs: Option<u16>,
}

impl Inactivity {
    /// Resolve `options` (ActiveMQ's `MQTTInactivityMonitor` and `MQTTProtocolConverter`).
    pub fn of(options: &ListenerOptions) -> Inactivity {
        let monitored = options.use_inactivity_monitor;
        let on = |ms: u64| (monitored && ms > 0).then(|| Duration::from_millis(ms));
        Inactivity {
            monitored,
            default_keep_alive: on(options.default_keep_alive_ms),
            connect_attempt_timeout: options.connect_attempt_timeout_ms.and_then(on),
            max_keep_alive_secs: options
                .max_keep_alive_ms
                .filter(|_| monitored)
                .map(|ms| u16::try_from(ms / 1000).unwrap_or(u16::MAX))
                .filter(|secs| *secs > 0),
        }
    }

    /// The keep-alive of an MQTT 5 client that sent `client_keep_alive_secs`: its own value,
    /// unless it is above `transport.maxKeepAlive` (then the cap) or 0 (then
    /// `transport.defaultKeepAlive` rounded up to whole seconds and capped, else the cap).
    /// Whenever the result differs from the client's value it is announced as Server Keep
    /// Alive and enforced like the client's own (x 1.5). With the monitor off nothing is
    /// enforced or announced.
    pub fn v5_terms(&self, client_keep_alive_secs: u16) -> KeepAliveTerms {
        if !self.monitored {
            return KeepAliveTerms {
                silence_limit: None,
                server_keep_alive_secs: None,
            };
        }
        let cap = self.max_keep_alive_secs;
        let default_secs = self.default_keep_alive.map(|d| {
            let secs = d.as_millis().div_ceil(1000).max(1);
            u16::try_from(secs).unwrap_or(u16::MAX)
        });
        let applied = match client_keep_alive_secs {
            0 => match (default_secs, cap) {
                (Some(default), Some(cap)) => Some(default.min(cap)),
                (default, cap) => default.or(cap),
            },
            secs => Some(cap.map_or(secs, |cap| secs.min(cap))),
        };
        let Some(applied) = applied else {
            return KeepAliveTerms {
                silence_limit: None,
                server_keep_alive_secs: None,
            };
        };
        let (num, den) = KEEP_ALIVE_GRACE;
        KeepAliveTerms {
            silence_limit: Some(Duration::from_millis(
                u64::from(applied).saturating_mul(1000 * num) / den,
            )),
            server_keep_alive_secs: (applied != client_keep_alive_secs).then_some(applied),
        }
    }

    /// The keep-alive in force for a client that sent `client_keep_alive_secs` in CONNECT
    /// (MQTT 3.1.2.10): its own value, or the default when it sent 0. `None`: not enforced.
    pub fn keep_alive(&self, client_keep_alive_secs: u16) -> Option<Duration> {
        if !self.monitored {
            return None;
        }
        match client_keep_alive_secs {
            0 => self.default_keep_alive,
            secs => Some(Duration::from_secs(u64::from(secs))),
        }
    }

    /// How long that client may stay silent before it is closed: its keep-alive x 1.5
    /// ([`KEEP_ALIVE_GRACE`]), to the millisecond. `None`: never.
    pub fn silence_limit(&self, client_keep_alive_secs: u16) -> Option<Duration> {
        let keep_alive = self.keep_alive(client_keep_alive_secs)?;
        let ms = u64::try_from(keep_alive.as_millis()).unwrap_or(u64::MAX);
        let (num, den) = KEEP_ALIVE_GRACE;
        Some(Duration::from_millis(ms.saturating_mul(num) / den))
    }
}

impl Default for Inactivity {
    /// The rules of a connector with default options.
    fn default() -> Self {
        Inactivity::of(&ListenerOptions::default())
    }
}

/// Durations as whole milliseconds (`null` when off), as `check --json` shows them.
fn millis<S: Serializer>(value: &Option<Duration>, s: S) -> Result<S::Ok, S::Error> {
    match value {
        Some(d) => s.serialize_some(&u64::try_from(d.as_millis()).unwrap_or(u64::MAX)),
        None => s.serialize_none(),
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub enum SubscriptionStrategy {
    /// `mqtt-default-subscriptions`
    Default,
    /// `mqtt-virtual-topic-subscriptions` (accepted; served like the default strategy)
    VirtualTopic,
}

/// A secret value from the config (password). Never printed: `Debug`/`Display`/serde show `***`.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(pub String);

impl Secret {
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret(***)")
    }
}

impl Serialize for Secret {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str("***")
    }
}

/// `<sslContext><sslContext .../></sslContext>`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct SslContextConfig {
    /// Server certificate + key: PEM file(s) or a PKCS#12 store.
    pub key_store: Option<KeyMaterial>,
    /// CA certificates used to verify client certificates.
    pub trust_store: Option<KeyMaterial>,
    pub span: Span,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct KeyMaterial {
    pub path: PathBuf,
    pub password: Option<Secret>,
    pub kind: StoreKind,
    /// ferromq extension (`ferromq:keyFile`): private key in a separate PEM file.
    pub key_file: Option<PathBuf>,
    /// `keyStoreKeyPassword`: the password of the private key entry of a JKS/JCEKS key store;
    /// `None`: the store's password, as Java's key manager falls back. Key store only.
    pub key_password: Option<Secret>,
    /// Where `keyStoreKeyPassword` is written (a wrong key password is reported there).
    pub key_password_span: Option<Span>,
    /// ferromq extension (`ferromq:keyAlias`): which private key entry of a JKS/JCEKS/PKCS#12
    /// key store the broker serves (ActiveMQ's `sslContext` names none). Key store only.
    pub key_alias: Option<KeyAlias>,
    pub span: Span,
}

/// `ferromq:keyAlias="..."` and where it is written (errors about the alias point at it).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct KeyAlias {
    pub name: String,
    pub span: Span,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub enum StoreKind {
    Pem,
    Pkcs12,
    /// Java KeyStore (Sun's JKS format), read by `transport::keystore`.
    Jks,
    /// SunJCE's JCEKS key store, read by `transport::keystore`.
    Jceks,
}

/// Which authentication plugin is configured (at most one; ActiveMQ chains them but MQTT users
/// configure one).
#[derive(Debug, Clone, Default, Serialize)]
pub enum Authentication {
    /// No authentication plugin: everyone connects.
    #[default]
    None,
    Simple(SimpleAuth),
    /// `jaasAuthenticationPlugin`
    Jaas(JaasAuth),
    /// `jaasCertificateAuthenticationPlugin`
    JaasCertificate(JaasAuth),
    /// `jaasDualAuthenticationPlugin`: certificate domain on TLS connectors, password elsewhere.
    JaasDual {
        password: JaasAuth,
        certificate: JaasAuth,
    },
}

#[derive(Debug, Clone, Serialize)]
pub struct SimpleAuth {
    pub users: Vec<SimpleUser>,
    /// `anonymousAccessAllowed`, default false.
    pub anonymous_access_allowed: bool,
    /// `anonymousUser`, default `anonymous`.
    pub anonymous_user: String,
    /// `anonymousGroup`, default `anonymous`.
    pub anonymous_group: String,
    pub span: Span,
}

#[derive(Debug, Clone, Serialize)]
pub struct SimpleUser {
    pub username: String,
    /// Plaintext (ActiveMQ's way) or a hash with a recognisable prefix (`$2b$`, `$argon2id$`).
    pub password: Secret,
    pub groups: Vec<String>,
    pub span: Span,
}

/// A JAAS plugin: the named entry of `login.config`, already parsed.
#[derive(Debug, Clone, Serialize)]
pub struct JaasAuth {
    /// `configuration` attribute: the entry name in login.config (default `activemq`).
    pub configuration: String,
    pub login_config: PathBuf,
    pub modules: Vec<LoginModule>,
    pub span: Span,
}

#[derive(Debug, Clone, Serialize)]
pub struct LoginModule {
    /// Fully qualified class name as written.
    pub class: String,
    /// `required`, `requisite`, `sufficient`, `optional`.
    pub flag: String,
    pub options: BTreeMap<String, String>,
    pub kind: LoginModuleKind,
}

#[derive(Debug, Clone, Serialize)]
pub enum LoginModuleKind {
    /// `org.apache.activemq.jaas.PropertiesLoginModule`: users.properties (`user=password`) and
    /// groups.properties (`group=user1,user2`), paths resolved against login.config's directory.
    Properties {
        users_file: PathBuf,
        groups_file: PathBuf,
        reload: bool,
    },
    /// `org.apache.activemq.jaas.GuestLoginModule`.
    Guest {
        user: String,
        group: String,
        /// `credentialsInvalidate`: guests only when no credentials were given.
        credentials_invalidate: bool,
    },
    /// `org.apache.activemq.jaas.TextFileCertificateLoginModule`: `user=DN` and `group=users`.
    TextFileCertificate {
        users_file: PathBuf,
        groups_file: PathBuf,
        reload: bool,
    },
    /// `org.apache.activemq.jaas.LDAPLoginModule` (see [`crate::config::ldap`]).
    Ldap(Box<super::ldap::LdapLoginConfig>),
    /// Any other module: reported as a warning, ignored.
    Unsupported,
}

/// `authorizationPlugin/map/authorizationMap`.
#[derive(Debug, Clone, Default, Serialize)]
pub struct AuthorizationConfig {
    pub entries: Vec<AuthzEntry>,
    pub default_entry: Option<AuthzEntry>,
    pub temp_entry: Option<AuthzEntry>,
    /// `<cachedLDAPAuthorizationMap>`: the entries come from LDAP at run time (the ones
    /// above stay empty); `span` is the map element's.
    pub ldap: Option<(
        Box<super::ldap::LdapAuthzMapConfig>,
        super::diagnostic::Span,
    )>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
pub enum DestinationKind {
    Topic,
    Queue,
    TempTopic,
    TempQueue,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
pub enum PrincipalKind {
    /// `org.apache.activemq.jaas.GroupPrincipal` (default): names are groups.
    Group,
    /// `org.apache.activemq.jaas.UserPrincipal`: names are user names.
    User,
}

#[derive(Debug, Clone, Serialize)]
pub struct AuthzEntry {
    pub kind: DestinationKind,
    /// ActiveMQ destination patterns (`sensors.>`, `USERS.*`); a composite `a,b` is split here.
    pub patterns: Vec<String>,
    pub read: Vec<String>,
    pub write: Vec<String>,
    pub admin: Vec<String>,
    pub principal_kind: PrincipalKind,
    pub span: Span,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub enum Persistence {
    /// `kahaDB` (or the default store): a durable store in `directory`.
    Durable {
        directory: PathBuf,
        /// `journalMaxFileLength` in bytes, when given.
        journal_max_file_length_bytes: Option<u64>,
    },
    /// `memoryPersistenceAdapter` or `persistent="false"`.
    Memory,
    /// `<ferromq:jetStream>`: the cluster engine over NATS JetStream (docs/cluster.md).
    JetStream(JetStreamSettings),
}

/// `<ferromq:jetStream>` inside `<persistenceAdapter>`: the cluster engine (docs/cluster.md).
#[derive(Clone, PartialEq, Eq, Serialize)]
pub struct JetStreamSettings {
    /// `servers`: NATS URLs (`nats://host:port`, comma separated), at least one.
    pub servers: Vec<String>,
    /// `replicas` (1..=5, default 3): JetStream replicas of every stream and bucket.
    pub replicas: usize,
    /// `messageShards` (1..=64, default 8): QoS 1 message streams.
    pub message_shards: usize,
    /// `maxOfflineAge` (default 7 days), ms: how long a stream keeps a message (max_age).
    pub max_offline_age_ms: u64,
    /// `storeTimeout` (default 5 s), ms: a store ack not received within it refuses the publish.
    pub store_timeout_ms: u64,
    /// `quorumLossTimeout` (default 10 s), ms: no successful heartbeat write for this long
    /// and the node stops taking persistent work. Longer than a JetStream leader election
    /// (a stalled leader of the heartbeat bucket is replaced in about 5-8 s), so one NATS
    /// server's failure is not taken for the loss of the quorum.
    pub quorum_loss_timeout_ms: u64,
    /// `heartbeatInterval` (default 1 s), ms.
    pub heartbeat_interval_ms: u64,
    /// `nodeTimeout` (default 10 s), ms: a node whose heartbeat is older is dead.
    pub node_timeout_ms: u64,
    /// `credentials`: a NATS .creds file (resolved against the config file's directory).
    pub credentials: Option<PathBuf>,
    /// `user` / `password` for NATS (placeholders allowed; never logged).
    pub user: Option<String>,
    #[serde(skip)]
    pub password: Option<String>,
}

impl JetStreamSettings {
    /// Defaults of every attribute but `servers`, which has none.
    pub const DEFAULT_REPLICAS: usize = 3;
    pub const DEFAULT_MESSAGE_SHARDS: usize = 8;
    pub const DEFAULT_MAX_OFFLINE_AGE_MS: u64 = 7 * 24 * 3_600_000;
    pub const DEFAULT_STORE_TIMEOUT_MS: u64 = 5_000;
    pub const DEFAULT_QUORUM_LOSS_TIMEOUT_MS: u64 = 10_000;
    pub const DEFAULT_HEARTBEAT_INTERVAL_MS: u64 = 1_000;
    pub const DEFAULT_NODE_TIMEOUT_MS: u64 = 10_000;
    /// nats-server's default `max_payload` (1 MiB): the largest message it carries unless its
    /// configuration says otherwise.
    pub const NATS_DEFAULT_MAX_PAYLOAD: usize = 1 << 20;
    /// Bytes of NATS's `max_payload` a node keeps for the frame around an MQTT message (origin,
    /// publisher client id, lengths; `cluster/codec.rs`).
    pub const MESSAGE_FRAME_MARGIN: usize = 1024;

    /// The largest MQTT message (topic and payload bytes) a node carries over NATS servers
    /// whose `max_payload` is `max_payload`: what it announces as Maximum Packet Size (as a
    /// Remaining Length) and the PUBLISH above which it closes the connection.
    pub fn max_message_bytes(max_payload: usize) -> usize {
        max_payload.saturating_sub(Self::MESSAGE_FRAME_MARGIN)
    }

    /// Settings with every default and these servers.
    pub fn with_servers(servers: Vec<String>) -> JetStreamSettings {
        JetStreamSettings {
            servers,
            replicas: Self::DEFAULT_REPLICAS,
            message_shards: Self::DEFAULT_MESSAGE_SHARDS,
            max_offline_age_ms: Self::DEFAULT_MAX_OFFLINE_AGE_MS,
            store_timeout_ms: Self::DEFAULT_STORE_TIMEOUT_MS,
            quorum_loss_timeout_ms: Self::DEFAULT_QUORUM_LOSS_TIMEOUT_MS,
            heartbeat_interval_ms: Self::DEFAULT_HEARTBEAT_INTERVAL_MS,
            node_timeout_ms: Self::DEFAULT_NODE_TIMEOUT_MS,
            credentials: None,
            user: None,
            password: None,
        }
    }

    /// One line for `check` and the reload diff: servers, replicas, shards, timeouts, how it
    /// logs in (never the password).
    pub fn describe(&self) -> String {
        let login = match (&self.credentials, &self.user) {
            (Some(creds), _) => format!(", credentials {}", creds.display()),
            (None, Some(user)) => format!(", user {user}"),
            (None, None) => String::new(),
        };
        format!(
            "jetStream {} (replicas {}, messageShards {}, maxOfflineAge {} ms, storeTimeout {} ms, \
             quorumLossTimeout {} ms, heartbeatInterval {} ms, nodeTimeout {} ms{login})",
            self.servers.join(","),
            self.replicas,
            self.message_shards,
            self.max_offline_age_ms,
            self.store_timeout_ms,
            self.quorum_loss_timeout_ms,
            self.heartbeat_interval_ms,
            self.node_timeout_ms,
        )
    }
}

/// Like the derived one, with the password redacted.
impl fmt::Debug for JetStreamSettings {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("JetStreamSettings")
            .field("servers", &self.servers)
            .field("replicas", &self.replicas)
            .field("message_shards", &self.message_shards)
            .field("max_offline_age_ms", &self.max_offline_age_ms)
            .field("store_timeout_ms", &self.store_timeout_ms)
            .field("quorum_loss_timeout_ms", &self.quorum_loss_timeout_ms)
            .field("heartbeat_interval_ms", &self.heartbeat_interval_ms)
            .field("node_timeout_ms", &self.node_timeout_ms)
            .field("credentials", &self.credentials)
            .field("user", &self.user)
            .field("password", &self.password.as_ref().map(|_| "<redacted>"))
            .finish()
    }
}

/// `systemUsage`: limits in bytes, as written. 0 is no limit, as in ActiveMQ (its `Usage` is
/// never full at a limit of 0).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Limits {
    /// `None`: not configured, the 1 GB default applies; `Some(0)`: no limit (also where
    /// ActiveMQ leaves it 0: a `<memoryUsage>` without `limit`, a `<systemUsage>` without
    /// `<memoryUsage>`).
    pub memory_limit_bytes: Option<u64>,
    /// `None` or `Some(0)`: no limit.
    pub store_limit_bytes: Option<u64>,
    pub temp_limit_bytes: Option<u64>,
    /// `systemUsage@sendFailIfNoSpace`: a producer the limits stop is refused at once instead
    /// of blocked (ActiveMQ: the send fails with an exception).
    pub send_fail_if_no_space: bool,
    /// `systemUsage@sendFailIfNoSpaceAfterTimeout` (ms): refused after blocking this long.
    pub send_fail_if_no_space_after_timeout_ms: Option<u64>,
}

impl Limits {
    /// The `storeUsage` limit the store applies; `None`: none (not configured, or 0).
    pub fn store_limit(&self) -> Option<u64> {
        self.store_limit_bytes.filter(|&bytes| bytes > 0)
    }

    /// How long a publisher stopped by a full memory or store is blocked before its publish is
    /// refused: `None` = as long as it takes (ActiveMQ's default producer flow control).
    pub fn send_fail_after(&self) -> Option<std::time::Duration> {
        match (
            self.send_fail_if_no_space_after_timeout_ms,
            self.send_fail_if_no_space,
        ) {
            (Some(ms), _) => Some(std::time::Duration::from_millis(ms)),
            (None, true) => Some(std::time::Duration::ZERO),
            (None, false) => None,
        }
    }
}

/// `destinationPolicy/policyMap/policyEntries/policyEntry`: one best-matching entry applies.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct PolicyEntry {
    pub kind: DestinationKind,
    pub pattern: String,
    /// `constantPendingMessageLimitStrategy@limit`: messages a slow subscriber may have pending.
    pub pending_message_limit: Option<u32>,
    pub span: Span,
}

/// `runtimeConfigurationPlugin`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ReloadSettings {
    /// `checkPeriod` (ms); 0 = polling off (events and SIGHUP still reload).
    pub check_period_ms: u64,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn schemes_round_trip_with_their_protocol_and_tls() {
        for scheme in Scheme::ALL {
            assert_eq!(Scheme::parse(scheme.as_str()), Some(scheme));
            assert_eq!(
                scheme.is_tls(),
                scheme.as_str().ends_with("ssl") || scheme == Scheme::Wss
            );
            let expected = match scheme.as_str() {
                s if s.starts_with("mqtt") => Some(Protocol::Mqtt),
                s if s.starts_with("stomp") => Some(Protocol::Stomp),
                _ => None,
            };
            assert_eq!(scheme.protocol(), expected, "{scheme}");
        }
        assert_eq!(Scheme::parse("stomp+ws"), None);
        assert!(Scheme::Ws.serves(Protocol::Stomp) && Scheme::Wss.serves(Protocol::Mqtt));
        assert!(!Scheme::Stomp.serves(Protocol::Mqtt) && !Scheme::MqttSsl.serves(Protocol::Stomp));
    }

    #[test]
    fn one_and_a_half_times_the_client_value() {
        let rules = Inactivity::default();
        assert_eq!(rules.silence_limit(2), Some(Duration::from_millis(3000)));
        assert_eq!(rules.silence_limit(0), None);
    }

    #[test]
    fn default_keep_alive_applies_only_to_zero() {
        let rules = Inactivity::of(&ListenerOptions {
            default_keep_alive_ms: 1000,
            ..ListenerOptions::default()
        });
        assert_eq!(rules.silence_limit(0), Some(Duration::from_millis(1500)));
        assert_eq!(rules.silence_limit(10), Some(Duration::from_secs(15)));
        assert_eq!(rules.default_keep_alive, Some(Duration::from_secs(1)));
    }

    #[test]
    fn inactivity_monitor_off_disables_both() {
        let rules = Inactivity::of(&ListenerOptions {
            default_keep_alive_ms: 1000,
            use_inactivity_monitor: false,
            ..ListenerOptions::default()
        });
        assert_eq!(rules.silence_limit(5), None);
        assert_eq!(rules.default_keep_alive, None);
        assert_eq!(rules.connect_attempt_timeout, None);
        assert_eq!(
            Inactivity::default().connect_attempt_timeout,
            Some(Duration::from_secs(30))
        );
    }

    #[test]
    fn v5_keep_alive_is_capped_defaulted_and_announced() {
        let capped = Inactivity::of(&ListenerOptions {
            max_keep_alive_ms: Some(60_000),
            ..ListenerOptions::default()
        });
        let terms = capped.v5_terms(120);
        assert_eq!(terms.server_keep_alive_secs, Some(60));
        assert_eq!(terms.silence_limit, Some(Duration::from_secs(90)));
        assert_eq!(capped.v5_terms(0).server_keep_alive_secs, Some(60));
        let own = capped.v5_terms(30);
        assert_eq!(
            own.server_keep_alive_secs, None,
            "within the cap: not announced"
        );
        assert_eq!(own.silence_limit, Some(Duration::from_secs(45)));

        let defaulted = Inactivity::of(&ListenerOptions {
            default_keep_alive_ms: 1500,
            ..ListenerOptions::default()
        });
        let terms = defaulted.v5_terms(0);
        assert_eq!(
            terms.server_keep_alive_secs,
            Some(2),
            "rounded up to whole seconds"
        );
        assert_eq!(terms.silence_limit, Some(Duration::from_secs(3)));
        assert_eq!(defaulted.v5_terms(7).server_keep_alive_secs, None);

        let both = Inactivity::of(&ListenerOptions {
            default_keep_alive_ms: 90_000,
            max_keep_alive_ms: Some(60_000),
            ..ListenerOptions::default()
        });
        assert_eq!(both.v5_terms(0).server_keep_alive_secs, Some(60));

        let plain = Inactivity::default();
        assert_eq!(plain.v5_terms(0).silence_limit, None);
        assert_eq!(plain.v5_terms(0).server_keep_alive_secs, None);
        let off = Inactivity::of(&ListenerOptions {
            max_keep_alive_ms: Some(60_000),
            use_inactivity_monitor: false,
            ..ListenerOptions::default()
        });
        assert_eq!(off.v5_terms(120).server_keep_alive_secs, None);
        assert_eq!(off.v5_terms(120).silence_limit, None);
    }

    #[test]
    fn zero_or_negative_connect_timeout_is_off() {
        let rules = Inactivity::of(&ListenerOptions {
            connect_attempt_timeout_ms: None,
            ..ListenerOptions::default()
        });
        assert_eq!(rules.connect_attempt_timeout, None);
    }
}
