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
//! it started. Cluster scenarios (S1 kill a ferromq node, S2 kill a nats-server, S6 SIGSTOP a
//! node, S9 many sessions) take the nodes from the cluster test harness and join [`SCENARIOS`].

#[path = "../tests/support/chaos/mod.rs"]
mod chaos;

use std::future::Future;
use std::pin::Pin;
use std::process::ExitCode;
use std::time::Duration;

use clap::Parser;

use chaos::checker::{check, Report};
use chaos::load::LoadConfig;
use chaos::mqtt::Protocol;
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
    /// Print each run's report as one JSON line too.
    #[arg(long)]
    json: bool,
    /// The ferromq binary to run (default: this binary, re-run as the broker).
    #[arg(long)]
    ferromq: Option<std::path::PathBuf>,
}

type RunFuture = Pin<Box<dyn Future<Output = std::io::Result<Recording>>>>;

/// A scenario: the program to start brokers with, the run's load, when the fault strikes.
type Scenario = fn(BrokerProgram, LoadConfig, Duration) -> RunFuture;

/// The scenarios by name, with what each does.
const SCENARIOS: &[(&str, &str, Scenario)] = &[(
    "S0-single",
    "one durable ferromq, SIGKILLed under load and restarted on the same store and port",
    |program, load, fault_at| Box::pin(async move { s0_single(program, &load, fault_at).await }),
)];

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
            topic_prefix: format!("chaos/{}/r{run}", std::process::id()),
            client_prefix: format!("chaos-{}-r{run}", std::process::id()),
            ..LoadConfig::default()
        };
        println!("== {} run {run}/{}", args.scenario, args.runs);
        match scenario(program.clone(), load, fault_at).await {
            Ok(recording) => {
                let report = check(&recording);
                print!("{report}");
                if args.json {
                    println!("{}", report.to_json());
                }
                reports.push(report);
            }
            Err(error) => {
                eprintln!("run {run} failed to start: {error}");
                return ExitCode::from(2);
            }
        }
    }
    summary(&args.scenario, &reports)
}

fn summary(scenario: &str, reports: &[Report]) -> ExitCode {
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
    if lost == 0 && inversions == 0 {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}
