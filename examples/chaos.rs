//! Chaos scenarios under QoS 1 load, with the recorder and checker of `tests/support/chaos`
//! (docs/chaos.md):
//!
//! ```text
//! cargo run --release --example chaos -- --scenario S0-single --runs 3 --duration 20
//! ```
//!
//! prints each run's figures (lost, duplicates, inversions, stalls, resume) and a summary, and
//! exits 1 when a run lost or reordered a PUBACKed message. The broker processes are this very
//! binary re-run as `ferromq` (so they are always the code just built), or `--ferromq PATH`.
//!
//! A scenario is a function from a run's [`LoadConfig`] to a [`Recording`]: it starts what it
//! needs, calls [`chaos::load::run`] with the broker addresses and a fault hook, and stops what
//! it started. The cluster scenarios (S1 kill a ferromq node, S2 kill a nats-server that leads
//! nothing, S3 kill the nats-server leading the hot shard or the session bucket, S4 a node and
//! its nats-server together, S5 a black-hole partition of one machine in network namespaces,
//! S6 SIGSTOP a node, S8 S1 at QoS 2, S8-S3 S3 at QoS 2, S9 many persistent sessions) run 3
//! nats-servers and 3 nodes (`tests/support/chaos/cluster.rs`, `faults.rs`, `partition.rs`)
//! and add their own figures and pass criteria.

#[path = "../tests/support/chaos/mod.rs"]
mod chaos;

use std::future::Future;
use std::pin::Pin;
use std::process::ExitCode;
use std::time::Duration;

use clap::Parser;

use chaos::checker::{check, Report};
use chaos::cluster::{
    s1_kill_node, s2_kill_follower_server, s6_pause_node, s9_session_storm, Outcome, StormConfig,
};
use chaos::faults::{s3_kill_leader_server, s4_kill_machine, S3Target};
use chaos::load::LoadConfig;
use chaos::mqtt::Protocol;
use chaos::partition::s5_partition;
use chaos::recorder::Recording;
use chaos::single::{s0_single, BrokerProgram};

/// Set in the environment of a broker this binary starts by re-running itself.
const RUN_AS_BROKER: &str = "FERROMQ_CHAOS_RUN_AS_BROKER";

#[derive(Parser, Debug)]
#[command(about = "Chaos scenarios under QoS 1 load: lost, duplicated and reordered messages")]
struct Args {
    /// Scenario to run (see --list).
    #[arg(long, default_value = "S0-single")]
    scenario: String,
    /// List the scenarios and exit.
    #[arg(long)]
    list: bool,
    /// Runs of the scenario.
    #[arg(long, default_value_t = 3)]
    runs: usize,
    /// Seconds of publishing per run.
    #[arg(long, default_value_t = 20)]
    duration: u64,
    /// Seconds into publishing when the fault strikes (default: 40 % of the duration).
    #[arg(long)]
    fault_at: Option<f64>,
    #[arg(long, default_value_t = 20)]
    publishers: usize,
    #[arg(long, default_value_t = 20)]
    subscribers: usize,
    /// Messages per second, all publishers together.
    #[arg(long, default_value_t = 500.0)]
    rate: f64,
    /// MQTT version of the load clients: 3.1.1 (clean session 0) or 5 (clean start 0,
    /// session expiry 3600 s).
    #[arg(long, default_value = "3.1.1", value_parser = ["3.1.1", "5"])]
    protocol: String,
    /// Payload bytes.
    #[arg(long, default_value_t = 256)]
    payload: usize,
    /// Seconds a subscriber waits without a delivery, once publishing is over, before it
    /// leaves (a longer wait tells a late backlog from a stranded one).
    #[arg(long, default_value_t = 2.0)]
    quiet: f64,
    /// Longest wait, in seconds after publishing, for missing PUBACKs and deliveries.
    #[arg(long, default_value_t = 15.0)]
    drain: f64,
    /// Print each run's report as one JSON line too.
    #[arg(long)]
    json: bool,
    /// The ferromq binary to run (default: this binary, re-run as the broker).
    #[arg(long)]
    ferromq: Option<std::path::PathBuf>,
    /// S9: persistent sessions in all (a third on the killed node).
    #[arg(long, default_value_t = 1000)]
    sessions: usize,
}

type RunFuture = Pin<Box<dyn Future<Output = std::io::Result<Outcome>>>>;

/// What a scenario needs besides the program: the run's load, when the fault strikes, and
/// the S9 session count.
struct RunSpec {
    load: LoadConfig,
    fault_at: Duration,
    sessions: usize,
}

/// A scenario: the program to start brokers with and the run's spec.
type Scenario = fn(BrokerProgram, RunSpec) -> RunFuture;

/// A scenario that only records a load: its outcome is the checker's report with L and O
/// as its pass criteria.
fn outcome_of(recording: Recording) -> Outcome {
    let report = check(&recording);
    let mut violations = Vec::new();
    if report.lost > 0 || report.inversions > 0 {
        violations.push(format!("L = {}, O = {}", report.lost, report.inversions));
    }
    Outcome {
        report: Some(report),
        notes: Vec::new(),
        violations,
        figures: Vec::new(),
    }
}

/// The scenarios by name, with what each does.
const SCENARIOS: &[(&str, &str, Scenario)] = &[
    (
        "S0-single",
        "one durable ferromq, SIGKILLed under load and restarted on the same store and port",
        |program, spec| {
            Box::pin(async move {
                s0_single(program, &spec.load, spec.fault_at)
                    .await
                    .map(outcome_of)
            })
        },
    ),
    (
        "S1",
        "3 nats-servers + 3 ferromq nodes: SIGKILL node1 under load, its clients move",
        |program, spec| {
            Box::pin(async move { s1_kill_node(program, &spec.load, spec.fault_at).await })
        },
    ),
    (
        "S2",
        "3 nats-servers + 3 ferromq nodes: SIGKILL a nats-server that leads nothing",
        |program, spec| {
            Box::pin(
                async move { s2_kill_follower_server(program, &spec.load, spec.fault_at).await },
            )
        },
    ),
    (
        "S3",
        "3 nats-servers + 3 ferromq nodes: SIGKILL the nats-server leading the hot shard's stream",
        |program, spec| {
            Box::pin(async move {
                s3_kill_leader_server(program, &spec.load, spec.fault_at, S3Target::HotShard).await
            })
        },
    ),
    (
        "S3-sess",
        "3 nats-servers + 3 ferromq nodes: SIGKILL the nats-server leading KV_FMQ_SESS",
        |program, spec| {
            Box::pin(async move {
                s3_kill_leader_server(program, &spec.load, spec.fault_at, S3Target::Sessions).await
            })
        },
    ),
    (
        "S4",
        "3 nats-servers + 3 ferromq nodes: SIGKILL a node and the nats-server of its machine \
         (the hot shard's leader) together",
        |program, spec| {
            Box::pin(async move { s4_kill_machine(program, &spec.load, spec.fault_at).await })
        },
    ),
    (
        "S5",
        "machine 3 (nats-server + node) in a network namespace, black-holed for 30 s, then \
         healed (root; publishing runs until 15 s after the heal)",
        |program, spec| {
            Box::pin(async move {
                s5_partition(program, &spec.load, spec.fault_at, Duration::from_secs(30)).await
            })
        },
    ),
    (
        "S6",
        "3 nats-servers + 3 ferromq nodes: SIGSTOP node1 for 10 s (clients move), then SIGCONT",
        |program, spec| {
            Box::pin(async move {
                s6_pause_node(program, &spec.load, spec.fault_at, Duration::from_secs(10)).await
            })
        },
    ),
    (
        "S7",
        "3 nats-servers + 3 ferromq nodes: rolling restart, each node SIGTERMed (drained) and \
         started again in turn",
        |program, spec| {
            Box::pin(async move {
                chaos::rolling::s7_rolling_restart(program, &spec.load, spec.fault_at).await
            })
        },
    ),
    (
        "S8",
        "S1 with QoS 2: publishers and subscribers at QoS 2, SIGKILL node1; L = 0 and D = 0",
        |program, spec| {
            Box::pin(async move {
                let load = LoadConfig {
                    qos: 2,
                    ..spec.load
                };
                let mut outcome = s1_kill_node(program, &load, spec.fault_at).await?;
                qos2_criteria(&mut outcome);
                Ok(outcome)
            })
        },
    ),
    (
        "S8-S3",
        "S3 with QoS 2: publishers and subscribers at QoS 2, SIGKILL the nats-server leading \
         the hot shard's stream; L = 0 and D = 0",
        |program, spec| {
            Box::pin(async move {
                let load = LoadConfig {
                    qos: 2,
                    ..spec.load
                };
                let mut outcome =
                    s3_kill_leader_server(program, &load, spec.fault_at, S3Target::HotShard)
                        .await?;
                qos2_criteria(&mut outcome);
                Ok(outcome)
            })
        },
    ),
    (
        "S9",
        "3 nats-servers + 3 ferromq nodes: --sessions idle persistent sessions, consumers \
         counted, SIGKILL the node holding a third of them",
        |program, spec| {
            Box::pin(async move {
                let storm = StormConfig {
                    sessions: spec.sessions,
                    client_prefix: spec.load.client_prefix.clone(),
                    topic_prefix: spec.load.topic_prefix.clone(),
                    resume_within: Duration::from_secs(30),
                };
                s9_session_storm(program, &storm).await
            })
        },
    ),
];

/// S8's pass criteria: L = 0 and D = 0 (exactly once). Order is reported, not required: a
/// QoS 2 message is delivered at its PUBREL, and after a failover the load's publishers
/// (rumqttc) re-send their PUBRELs in packet id order, not in the order of their PUBRECs.
fn qos2_criteria(outcome: &mut Outcome) {
    outcome.violations.retain(|v| !v.starts_with("O = "));
    if let Some(report) = outcome.report.as_ref() {
        if report.inversions > 0 {
            outcome.notes.push(format!(
                "O = {} (reported: the clients' PUBREL order after the failover)",
                report.inversions
            ));
        }
        if report.duplicates > 0 {
            outcome
                .violations
                .push(format!("D = {} (QoS 2 is exactly once)", report.duplicates));
        }
    }
}

fn main() -> ExitCode {
    if std::env::var_os(RUN_AS_BROKER).is_some() {
        return ferromq::cli::main();
    }
    let args = Args::parse();
    if args.list {
        for (name, what, _) in SCENARIOS {
            println!("{name:<12} {what}");
        }
        return ExitCode::SUCCESS;
    }
    let Some(&(_, _, scenario)) = SCENARIOS.iter().find(|(name, _, _)| *name == args.scenario)
    else {
        eprintln!("unknown scenario {:?} (see --list)", args.scenario);
        return ExitCode::from(2);
    };
    let program = match &args.ferromq {
        Some(path) => BrokerProgram {
            path: path.clone(),
            env: Vec::new(),
        },
        None => match std::env::current_exe() {
            Ok(path) => BrokerProgram {
                path,
                env: vec![(RUN_AS_BROKER.into(), "1".into())],
            },
            Err(error) => {
                eprintln!("cannot find this binary: {error}");
                return ExitCode::from(2);
            }
        },
    };
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(runtime) => runtime,
        Err(error) => {
            eprintln!("tokio runtime: {error}");
            return ExitCode::from(2);
        }
    };
    runtime.block_on(run_all(&args, scenario, program))
}

async fn run_all(args: &Args, scenario: Scenario, program: BrokerProgram) -> ExitCode {
    let duration = Duration::from_secs(args.duration);
    let fault_at = args
        .fault_at
        .map_or(duration.mul_f64(0.4), Duration::from_secs_f64);
    let mut reports = Vec::new();
    let mut violations = 0;
    let mut figures: std::collections::BTreeMap<String, Vec<f64>> = Default::default();
    for run in 1..=args.runs {
        let load = LoadConfig {
            protocol: if args.protocol == "5" {
                Protocol::V5
            } else {
                Protocol::V311
            },
            publishers: args.publishers,
            subscribers: args.subscribers,
            rate: args.rate,
            payload_size: args.payload,
            duration,
            quiet: Duration::from_secs_f64(args.quiet),
            drain: Duration::from_secs_f64(args.drain),
            topic_prefix: format!("chaos/{}/r{run}", std::process::id()),
            client_prefix: format!("chaos-{}-r{run}", std::process::id()),
            ..LoadConfig::default()
        };
        println!("== {} run {run}/{}", args.scenario, args.runs);
        let spec = RunSpec {
            load,
            fault_at,
            sessions: args.sessions,
        };
        match scenario(program.clone(), spec).await {
            Ok(outcome) => {
                for (name, value) in &outcome.figures {
                    figures.entry(name.clone()).or_default().push(*value);
                }
                if let Some(report) = &outcome.report {
                    print!("{report}");
                    if args.json {
                        println!("{}", report.to_json());
                    }
                }
                for note in &outcome.notes {
                    println!("  {note}");
                }
                for violation in &outcome.violations {
                    println!("  FAILED: {violation}");
                }
                violations += outcome.violations.len();
                reports.extend(outcome.report);
            }
            Err(error) if error.to_string().starts_with("SKIP") => {
                println!("{error}");
                return ExitCode::SUCCESS;
            }
            Err(error) => {
                eprintln!("run {run} failed to start: {error}");
                return ExitCode::from(2);
            }
        }
    }
    for (name, mut values) in figures {
        values.sort_by(f64::total_cmp);
        let at = |p: f64| values[((values.len() - 1) as f64 * p).round() as usize];
        println!(
            "{name} over {} runs: p50 {:.0}, p99 {:.0}, max {:.0} (runs {:?})",
            values.len(),
            at(0.5),
            at(0.99),
            at(1.0),
            values.iter().map(|v| v.round()).collect::<Vec<_>>()
        );
    }
    // O is a pass criterion of S0-single, S1, S3 and S7; the other scenarios report it.
    let order_must = matches!(
        args.scenario.as_str(),
        "S0-single" | "S1" | "S3" | "S3-sess" | "S7"
    );
    let code = if reports.is_empty() {
        ExitCode::SUCCESS
    } else {
        summary(&args.scenario, &reports, order_must)
    };
    if violations > 0 {
        println!("{violations} pass criteria broken (FAILED lines above)");
        return ExitCode::FAILURE;
    }
    code
}

fn summary(scenario: &str, reports: &[Report], order_must: bool) -> ExitCode {
    let max = |f: &dyn Fn(&Report) -> Option<f64>| {
        reports
            .iter()
            .filter_map(f)
            .fold(None, |m: Option<f64>, v| Some(m.map_or(v, |m| m.max(v))))
            .map_or_else(|| "-".into(), |v| format!("{v:.1}"))
    };
    let lost: usize = reports.iter().map(|r| r.lost).sum();
    let inversions: usize = reports.iter().map(|r| r.inversions).sum();
    let duplicates: usize = reports.iter().map(|r| r.duplicates).sum();
    println!("== summary of {scenario}, {} runs", reports.len());
    println!(
        "L per run {:?}; D per run {:?}; O per run {:?}",
        reports.iter().map(|r| r.lost).collect::<Vec<_>>(),
        reports.iter().map(|r| r.duplicates).collect::<Vec<_>>(),
        reports.iter().map(|r| r.inversions).collect::<Vec<_>>(),
    );
    println!(
        "max F_pub gap {} ms; max stall at a fault {} ms; max F_sub (disconnected subscribers) {} ms; max resume {} ms; \
         min session present rate {:.3}",
        max(&|r| r.f_pub_max_gap_ms),
        max(&|r| r
            .faults
            .iter()
            .filter_map(|f| f.pub_stall_ms)
            .reduce(f64::max)),
        max(&|r| {
            r.faults
                .iter()
                .filter_map(|f| f.f_sub_affected_max_ms.or(f.f_sub_ms))
                .reduce(f64::max)
        }),
        max(&|r| r
            .faults
            .iter()
            .filter_map(|f| f.resume_max_ms)
            .reduce(f64::max)),
        reports
            .iter()
            .map(|r| r.session_present_rate)
            .fold(1.0, f64::min),
    );
    println!("total: L {lost}, D {duplicates}, O {inversions}");
    if lost == 0 && (inversions == 0 || !order_must) {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}
