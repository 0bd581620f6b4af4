//! A load generator for MQTT and STOMP brokers: fan-in, fan-out, pairs, shared subscriptions,
//! STOMP queues, fixed-rate latency and idle connections, against any broker on this machine
//! (ferromq, mosquitto, ActiveMQ).
//!
//! It shares no code with the broker: it speaks MQTT with its own small encoder and decoder
//! (`loadgen/wire.rs`) and STOMP 1.2 with its own frame codec (`loadgen/stomp_wire.rs`;
//! `--protocol stomp`, and `--subscriber-protocol mqtt` for STOMP publishers with MQTT
//! subscribers). It batches socket writes, and
//! reports its own CPU time next to the broker's, so a reader can check that the load generator
//! was not the bottleneck. Every run is bounded: by `--duration-secs`, by drain and connect
//! timeouts, and by a hard cap on the whole process. Only loopback addresses are accepted.
//!
//! ```text
//! cargo run --release --example loadgen -- --port 1883 --mode fan-in --qos 1 --duration-secs 10
//! cargo run --release --example loadgen -- --port 61613 --protocol stomp --mode queue \
//!     --stomp-receipt --stomp-ack client-individual --duration-secs 10
//! ```

#[path = "loadgen/conn.rs"]
mod conn;
#[path = "loadgen/idle.rs"]
mod idle;
#[path = "loadgen/proc_stats.rs"]
mod proc_stats;
#[path = "loadgen/publisher.rs"]
mod publisher;
#[path = "loadgen/report.rs"]
mod report;
#[path = "loadgen/stomp_conn.rs"]
mod stomp_conn;
#[path = "loadgen/stomp_publisher.rs"]
mod stomp_publisher;
#[path = "loadgen/stomp_subscriber.rs"]
mod stomp_subscriber;
#[path = "loadgen/stomp_wire.rs"]
mod stomp_wire;
#[path = "loadgen/stream.rs"]
mod stream;
#[path = "loadgen/subscriber.rs"]
mod subscriber;
#[path = "loadgen/traffic.rs"]
mod traffic;
#[path = "loadgen/wire.rs"]
mod wire;

use std::net::{SocketAddr, ToSocketAddrs};
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use clap::{Parser, ValueEnum};

use conn::ConnectParams;
use report::Report;
use stomp_conn::{AckMode, StompParams};
use traffic::{Protocol, Topology};

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum Mode {
    /// N publishers (default 10), each on its own topic -> subscribers (default 1) on a wildcard.
    FanIn,
    /// Publishers (default 1) on one topic -> N subscribers (default 10) on that topic.
    FanOut,
    /// N publisher/subscriber pairs (default 10), each pair on its own topic.
    Pairs,
    /// Publishers (default 1) on one topic -> N subscribers (default 10) that are members of one
    /// shared subscription (`$share/{group}/{topic}`, MQTT 5.0 4.8.2): each message to one member.
    Shared,
    /// Publishers (default 1) -> one STOMP queue (`/queue/...`), N subscribers (default 3)
    /// competing for its messages: each message to one of them. STOMP only.
    Queue,
    /// One publisher at --rate messages per second -> one subscriber; reports latency.
    Latency,
    /// --connections clients that only keep alive; reports broker RSS per connection.
    Idle,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum ProtocolArg {
    Mqtt,
    Stomp,
}

impl From<ProtocolArg> for Protocol {
    fn from(p: ProtocolArg) -> Protocol {
        match p {
            ProtocolArg::Mqtt => Protocol::Mqtt,
            ProtocolArg::Stomp => Protocol::Stomp,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum StompAck {
    Auto,
    ClientIndividual,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum MqttVersion {
    #[value(name = "3.1.1")]
    V311,
    #[value(name = "5")]
    V5,
}

#[derive(Debug, Parser)]
#[command(about = "MQTT load generator: throughput, loss, latency, broker CPU and memory")]
struct Args {
    /// Broker host; must resolve to a loopback address.
    #[arg(long, default_value = "127.0.0.1")]
    host: String,
    #[arg(long)]
    port: u16,
    #[arg(long, value_enum)]
    mode: Mode,
    /// Publishing connections (default depends on the mode).
    #[arg(long)]
    publishers: Option<usize>,
    /// Subscribing connections (default depends on the mode).
    #[arg(long)]
    subscribers: Option<usize>,
    #[arg(long, default_value_t = 0, value_parser = clap::value_parser!(u8).range(0..=2))]
    qos: u8,
    /// Payload bytes per message; at least 16 (send time, publisher, sequence number).
    #[arg(long = "payload", default_value_t = 64)]
    payload_bytes: usize,
    /// Stop each publisher after this many messages (0: only --duration-secs bounds it).
    #[arg(long, default_value_t = 0)]
    messages: u64,
    /// Publishing time (traffic modes) or holding time (idle mode).
    #[arg(long, default_value_t = 10.0)]
    duration_secs: f64,
    /// Messages per second in latency mode (all publishers together).
    #[arg(long, default_value_t = 1000.0)]
    rate: f64,
    /// Connections to open in idle mode.
    #[arg(long, default_value_t = 1000)]
    connections: usize,
    /// Idle mode: connection attempts in flight at once. The default stays below the smallest
    /// listen backlog of the brokers compared (mosquitto's 100); a connect storm raises it.
    #[arg(long, default_value_t = 64)]
    connect_concurrency: usize,
    /// Broker process id: adds its CPU seconds per million messages and its RSS to the report.
    #[arg(long)]
    broker_pid: Option<u32>,
    /// Print one JSON object instead of text.
    #[arg(long)]
    json: bool,
    /// Free text copied into the report (e.g. broker and scenario names).
    #[arg(long)]
    label: Option<String>,
    #[arg(long, value_enum, default_value = "3.1.1")]
    mqtt_version: MqttVersion,
    /// Unacknowledged QoS 1/2 messages allowed per publisher.
    #[arg(long, default_value_t = 64)]
    inflight: usize,
    /// PUBLISH packets per socket write.
    #[arg(long, default_value_t = 64)]
    batch: usize,
    /// Keep-alive each client announces in CONNECT (PINGREQ is sent at half of it).
    #[arg(long, default_value_t = 60)]
    keep_alive_secs: u16,
    /// Seconds to wait for a TCP connect + CONNACK or a SUBACK.
    #[arg(long, default_value_t = 10)]
    connect_timeout_secs: u64,
    /// Connect with TLS (to an mqtt+ssl connector); needs --cafile.
    #[arg(long, requires = "cafile")]
    tls: bool,
    /// PEM file with the CA certificate(s) that the broker's TLS certificate must chain to. The
    /// certificate must also name --host (an IP subject alternative name for 127.0.0.1).
    #[arg(long, requires = "tls")]
    cafile: Option<PathBuf>,
    /// Load generator worker threads.
    #[arg(long, default_value_t = 2)]
    threads: usize,
    /// Protocol of the publishers, and of the subscribers unless --subscriber-protocol says
    /// otherwise. STOMP clients speak STOMP 1.2 to --stomp-port.
    #[arg(long, value_enum, default_value = "mqtt")]
    protocol: ProtocolArg,
    /// Protocol of the subscribers (default: --protocol).
    #[arg(long, value_enum)]
    subscriber_protocol: Option<ProtocolArg>,
    /// Port of the broker's STOMP connector (default: --port).
    #[arg(long)]
    stomp_port: Option<u16>,
    /// STOMP publishers send `persistent:true` (ferromq: QoS 1 messages).
    #[arg(long)]
    stomp_persistent: bool,
    /// STOMP publishers ask for a RECEIPT for every SEND and keep at most --inflight without
    /// one (the counterpart of QoS 1; reported as qos 1).
    #[arg(long)]
    stomp_receipt: bool,
    /// How STOMP subscribers acknowledge.
    #[arg(long, value_enum, default_value = "auto")]
    stomp_ack: StompAck,
    /// MQTT publishers spread over these ports (comma separated, publisher i on port
    /// i mod n: several nodes of a cluster); default --port.
    #[arg(long, value_delimiter = ',')]
    publisher_ports: Vec<u16>,
    /// MQTT subscribers spread over these ports, as --publisher-ports; default --port.
    #[arg(long, value_delimiter = ',')]
    subscriber_ports: Vec<u16>,
    /// Subscribers connect with clean session 0 (MQTT 3.1.1 persistent sessions, kept in the
    /// broker's store): QoS 1 messages then go through the durable path.
    #[arg(long)]
    persistent_subscribers: bool,
    /// Milliseconds to wait between the last SUBACK and the first publish (lets subscription
    /// interest reach the other nodes of a cluster).
    #[arg(long, default_value_t = 0)]
    settle_ms: u64,
    /// `NAME=PID,PID,...` (repeatable): report the CPU time of that group of processes over
    /// the measured window (e.g. every nats-server of a cluster).
    #[arg(long = "cpu-pids", value_parser = parse_cpu_group)]
    cpu_groups: Vec<(String, Vec<u32>)>,
}

/// `NAME=PID,PID,...` of `--cpu-pids`.
fn parse_cpu_group(text: &str) -> Result<(String, Vec<u32>), String> {
    let (name, pids) = text
        .split_once('=')
        .ok_or_else(|| format!("{text}: expected NAME=PID,PID,..."))?;
    let pids = pids
        .split(',')
        .map(|p| p.trim().parse::<u32>().map_err(|e| format!("{p}: {e}")))
        .collect::<Result<Vec<u32>, String>>()?;
    if name.is_empty() || pids.is_empty() {
        return Err(format!("{text}: expected NAME=PID,PID,..."));
    }
    Ok((name.to_owned(), pids))
}

/// Longest run accepted, so that a typo cannot tie the machine up for hours.
const MAX_DURATION_SECS: f64 = 3600.0;
/// Time allowed on top of the run's own bounds before the process gives up on itself.
const HARD_CAP_SLACK: Duration = Duration::from_secs(60);

fn main() -> ExitCode {
    let args = Args::parse();
    match real_main(&args) {
        Ok(report) => {
            if args.json {
                match serde_json::to_string(&report) {
                    Ok(json) => println!("{json}"),
                    Err(e) => {
                        eprintln!("loadgen: cannot serialize the report: {e}");
                        return ExitCode::from(1);
                    }
                }
            } else {
                print!("{}", report.to_text());
            }
            exit_code(&report)
        }
        Err(e) => {
            eprintln!("loadgen: {e}");
            ExitCode::from(1)
        }
    }
}

/// 0 when the run went through, 1 when a client failed, 3 when QoS 1/2 messages were lost or a
/// QoS 2 message arrived twice.
fn exit_code(report: &Report) -> ExitCode {
    let qos_loss = report
        .traffic
        .as_ref()
        .is_some_and(|t| (report.qos > 0 && t.lost > 0) || (report.qos == 2 && t.duplicates > 0));
    let idle_failed = report
        .idle
        .as_ref()
        .is_some_and(|i| i.failed > 0 || i.dropped > 0);
    if !report.errors.is_empty() || idle_failed {
        ExitCode::from(1)
    } else if qos_loss {
        ExitCode::from(3)
    } else {
        ExitCode::SUCCESS
    }
}

/// Resolves `host:port` and refuses anything that is not loopback: this tool floods its target.
fn loopback_addr(host: &str, port: u16) -> Result<SocketAddr, String> {
    let addrs: Vec<SocketAddr> = (host, port)
        .to_socket_addrs()
        .map_err(|e| format!("cannot resolve {host}: {e}"))?
        .collect();
    match addrs.iter().find(|a| a.ip().is_loopback()) {
        Some(addr) if addrs.iter().all(|a| a.ip().is_loopback()) => Ok(*addr),
        _ => Err(format!(
            "{host} is not a loopback address; the load generator only targets this machine"
        )),
    }
}

fn real_main(args: &Args) -> Result<Report, String> {
    let addr = loopback_addr(&args.host, args.port)?;
    if !(args.duration_secs > 0.0 && args.duration_secs <= MAX_DURATION_SECS) {
        return Err(format!(
            "--duration-secs must be in (0, {MAX_DURATION_SECS}]"
        ));
    }
    if args.payload_bytes < publisher::PAYLOAD_HEADER_BYTES || args.payload_bytes > 1 << 20 {
        return Err(format!(
            "--payload must be between {} and 1048576 bytes",
            publisher::PAYLOAD_HEADER_BYTES
        ));
    }
    if args.inflight == 0 || args.inflight > 32_768 || args.batch == 0 {
        return Err("--inflight must be 1..=32768 and --batch at least 1".to_owned());
    }
    if args.mode == Mode::Latency && !(args.rate > 0.0 && args.rate <= 1e7) {
        return Err("--rate must be in (0, 10000000]".to_owned());
    }
    let (publishers, subscribers) = match args.mode {
        Mode::FanIn => (args.publishers.unwrap_or(10), args.subscribers.unwrap_or(1)),
        Mode::FanOut | Mode::Shared => {
            (args.publishers.unwrap_or(1), args.subscribers.unwrap_or(10))
        }
        Mode::Pairs => {
            let n = args.publishers.or(args.subscribers).unwrap_or(10);
            (args.publishers.unwrap_or(n), args.subscribers.unwrap_or(n))
        }
        Mode::Queue => (args.publishers.unwrap_or(1), args.subscribers.unwrap_or(3)),
        Mode::Latency => (args.publishers.unwrap_or(1), args.subscribers.unwrap_or(1)),
        Mode::Idle => (0, 0),
    };
    if args.mode == Mode::Pairs && publishers != subscribers {
        return Err("pairs mode needs as many publishers as subscribers".to_owned());
    }
    if args.mode != Mode::Idle
        && (publishers == 0 || subscribers == 0 || publishers > 10_000 || subscribers > 10_000)
    {
        return Err("--publishers and --subscribers must be 1..=10000".to_owned());
    }
    let publisher_protocol = Protocol::from(args.protocol);
    let subscriber_protocol = Protocol::from(args.subscriber_protocol.unwrap_or(args.protocol));
    let uses_stomp =
        publisher_protocol == Protocol::Stomp || subscriber_protocol == Protocol::Stomp;
    if args.mode == Mode::Queue
        && (publisher_protocol, subscriber_protocol) != (Protocol::Stomp, Protocol::Stomp)
    {
        return Err("queue mode needs --protocol stomp on both sides".to_owned());
    }
    if args.mode == Mode::Shared && subscriber_protocol != Protocol::Mqtt {
        return Err("shared mode needs MQTT subscribers".to_owned());
    }
    if args.mode == Mode::Idle && uses_stomp {
        return Err("idle mode speaks MQTT only".to_owned());
    }
    let stomp = uses_stomp
        .then(|| {
            loopback_addr(&args.host, args.stomp_port.unwrap_or(args.port)).map(|addr| {
                StompParams {
                    addr,
                    persistent: args.stomp_persistent,
                    receipt: args.stomp_receipt,
                    ack: match args.stomp_ack {
                        StompAck::Auto => AckMode::Auto,
                        StompAck::ClientIndividual => AckMode::ClientIndividual,
                    },
                }
            })
        })
        .transpose()?;
    if args.persistent_subscribers && args.mqtt_version != MqttVersion::V311 {
        return Err("--persistent-subscribers needs --mqtt-version 3.1.1".to_owned());
    }
    let ports_addrs = |ports: &[u16]| -> Result<Vec<SocketAddr>, String> {
        ports
            .iter()
            .map(|p| loopback_addr(&args.host, *p))
            .collect()
    };
    let publisher_addrs = ports_addrs(&args.publisher_ports)?;
    let subscriber_addrs = ports_addrs(&args.subscriber_ports)?;
    let version = match args.mqtt_version {
        MqttVersion::V311 => wire::Version::V311,
        MqttVersion::V5 => wire::Version::V5,
    };
    let params = ConnectParams {
        addr,
        version,
        keep_alive_secs: args.keep_alive_secs,
        timeout: Duration::from_secs(args.connect_timeout_secs.clamp(1, 300)),
        read_buf_bytes: if args.mode == Mode::Idle {
            64
        } else {
            256 * 1024
        },
        tls: match &args.cafile {
            Some(cafile) if args.tls => Some(stream::TlsParams::new(cafile, &args.host)?),
            _ => None,
        },
        clean_session: true,
    };
    let duration = Duration::from_secs_f64(args.duration_secs);
    // Setup (connects) + run + drain windows, with slack: past this the process ends itself.
    let hard_cap = params.timeout * 2 + duration * 2 + HARD_CAP_SLACK;
    let run_id = format!("{}x{}", std::process::id(), unix_millis() % 1_000_000);

    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(args.threads.clamp(1, 64))
        .enable_all()
        .build()
        .map_err(|e| format!("cannot start the async runtime: {e}"))?;
    let mut report = Report {
        label: args.label.clone(),
        mode: format!("{:?}", args.mode).to_lowercase(),
        protocol: match (publisher_protocol, subscriber_protocol) {
            (Protocol::Mqtt, Protocol::Mqtt) => "mqtt",
            (Protocol::Stomp, Protocol::Stomp) => "stomp",
            (Protocol::Stomp, Protocol::Mqtt) => "stomp->mqtt",
            (Protocol::Mqtt, Protocol::Stomp) => "mqtt->stomp",
        }
        .to_owned(),
        mqtt_version: match version {
            wire::Version::V311 => "3.1.1".to_owned(),
            wire::Version::V5 => "5".to_owned(),
        },
        qos: if publisher_protocol == Protocol::Stomp {
            u8::from(args.stomp_receipt)
        } else {
            args.qos
        },
        payload_bytes: args.payload_bytes,
        publishers,
        subscribers,
        duration_secs: args.duration_secs,
        traffic: None,
        idle: None,
        broker: None,
        process_groups: Vec::new(),
        loadgen_cpu_secs: 0.0,
        loadgen_cpu_percent: 0.0,
        loadgen_threads: args.threads.clamp(1, 64),
        errors: Vec::new(),
    };
    let (own_cpu_secs, own_wall_secs) = runtime.block_on(async {
        tokio::time::timeout(hard_cap, async {
            if args.mode == Mode::Idle {
                let settings = idle::IdleSettings {
                    params,
                    connections: args.connections.clamp(1, 1_000_000),
                    connect_concurrency: args.connect_concurrency.clamp(1, 100_000),
                    hold: duration,
                    broker_pid: args.broker_pid,
                    run_id,
                };
                let r = idle::run(&settings).await?;
                report.idle = Some(r.idle);
                report.broker = r.broker;
                Ok::<_, String>((r.own_cpu_secs, r.own_wall_secs))
            } else {
                let settings = traffic::TrafficSettings {
                    params,
                    publisher_protocol,
                    subscriber_protocol,
                    stomp,
                    topology: match args.mode {
                        Mode::FanIn => Topology::FanIn,
                        Mode::Pairs => Topology::Pairs,
                        Mode::Shared => Topology::Shared,
                        Mode::Queue => Topology::Queue,
                        Mode::FanOut | Mode::Latency | Mode::Idle => Topology::FanOut,
                    },
                    qos: args.qos,
                    payload_bytes: args.payload_bytes,
                    publishers,
                    subscribers,
                    max_messages: if args.messages == 0 {
                        u64::MAX
                    } else {
                        args.messages
                    },
                    duration,
                    rate_per_sec: (args.mode == Mode::Latency).then_some(args.rate),
                    batch: args.batch,
                    inflight: args.inflight,
                    broker_pid: args.broker_pid,
                    publisher_addrs,
                    subscriber_addrs,
                    persistent_subscribers: args.persistent_subscribers,
                    settle: Duration::from_millis(args.settle_ms.min(10_000)),
                    cpu_groups: args.cpu_groups.clone(),
                    run_id,
                };
                let r = traffic::run(&settings).await?;
                report.traffic = Some(r.traffic);
                report.broker = r.broker;
                report.process_groups = r.process_groups;
                report.errors = r.errors;
                Ok((r.own_cpu_secs, r.own_wall_secs))
            }
        })
        .await
        .map_err(|_| format!("run exceeded its hard cap of {hard_cap:?}"))?
    })?;
    report.loadgen_cpu_secs = own_cpu_secs;
    report.loadgen_cpu_percent = own_cpu_secs * 100.0 / own_wall_secs.max(1e-9);
    // Idle connections and stragglers are dropped with the runtime, closing their sockets.
    runtime.shutdown_timeout(Duration::from_secs(1));
    Ok(report)
}

fn unix_millis() -> u128 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis())
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_loopback_hosts_are_accepted() {
        assert!(loopback_addr("127.0.0.1", 1883).is_ok());
        assert!(loopback_addr("::1", 1883).is_ok());
        assert!(loopback_addr("localhost", 1883).is_ok());
        let err = loopback_addr("192.0.2.1", 1883).expect_err("TEST-NET-1 is not loopback");
        assert!(err.contains("not a loopback"), "{err}");
    }

    #[test]
    fn cpu_groups_are_a_name_and_pids() {
        assert_eq!(
            parse_cpu_group("nats=10,11, 12"),
            Ok(("nats".to_owned(), vec![10, 11, 12]))
        );
        assert!(parse_cpu_group("nats").is_err());
        assert!(parse_cpu_group("=1").is_err());
        assert!(parse_cpu_group("nats=1,x").is_err());
    }

    #[test]
    fn ports_lists_are_comma_separated() {
        let args = Args::try_parse_from([
            "loadgen",
            "--port",
            "1",
            "--mode",
            "pairs",
            "--publisher-ports",
            "1,2",
            "--subscriber-ports",
            "3,4,5",
        ])
        .expect("valid arguments");
        assert_eq!(args.publisher_ports, vec![1, 2]);
        assert_eq!(args.subscriber_ports, vec![3, 4, 5]);
    }
}
