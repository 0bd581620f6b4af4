//! Turns the runs of `benches/compare.sh` (one JSON object per line: broker, scenario, the load
//! generator's report or an error) into `results.md` (tables with absolute numbers and ratios
//! ferromq / best of the others, plus the performance targets against every peer: see benches/README.md),
//! `results.json` (everything, machine-readable) and `results.svg` (bar charts).
//!
//! The SVG is written by hand: three bar panels need no plotting library.
//!
//! ```text
//! cargo run --release --example plot -- --input runs.jsonl --out-dir benches/results/DATE \
//!     --meta "machine=2 cores ..."
//! ```

#[path = "plot/svg.rs"]
mod svg;

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::Parser;
use serde_json::{json, Value};

#[derive(Debug, Parser)]
#[command(about = "Benchmark tables, JSON and SVG from compare.sh runs")]
struct Args {
    /// runs.jsonl written by benches/compare.sh.
    #[arg(long)]
    input: PathBuf,
    /// Folder for results.md, results.json and results.svg.
    #[arg(long)]
    out_dir: PathBuf,
    /// KEY=VALUE lines for the header (date, machine, versions...), in order.
    #[arg(long, value_parser = parse_meta)]
    meta: Vec<(String, String)>,
}

fn parse_meta(s: &str) -> Result<(String, String), String> {
    s.split_once('=')
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .ok_or_else(|| format!("expected KEY=VALUE, got `{s}`"))
}

/// The broker the comparison is about; every other broker is a reference.
const SUBJECT: &str = "ferromq";

/// Throughput scenarios in display order, with their titles.
const THROUGHPUT: &[(&str, &str)] = &[
    ("fanin-q0", "fan-in 10→1, QoS 0"),
    ("fanin-q1", "fan-in 10→1, QoS 1"),
    ("fanout-q0", "fan-out 1→10, QoS 0"),
    ("fanout-q1", "fan-out 1→10, QoS 1"),
    ("pairs-q0", "10 pairs, QoS 0"),
    ("pairs-q1", "10 pairs, QoS 1"),
    ("fanin-q0-1k", "fan-in 10→1, QoS 0, 1 KiB"),
    ("fanin-q1-1k", "fan-in 10→1, QoS 1, 1 KiB"),
    ("fanout-q0-1k", "fan-out 1→10, QoS 0, 1 KiB"),
    ("fanout-q1-1k", "fan-out 1→10, QoS 1, 1 KiB"),
    ("pairs-q0-1k", "10 pairs, QoS 0, 1 KiB"),
    ("pairs-q1-1k", "10 pairs, QoS 1, 1 KiB"),
    (
        "durable-fanin-q1",
        "durable (fsync) fan-in 10→1 to a persistent session, QoS 1",
    ),
    ("fanin-q0-tls", "fan-in 10→1, QoS 0, TLS"),
    ("pairs-q1-tls", "10 pairs, QoS 1, TLS"),
    ("stomp-fanin", "STOMP fan-in 10→1, receipts"),
    ("stomp-queue", "STOMP queue 10→3 consumers, receipts + ACK"),
    ("stomp-to-mqtt", "STOMP 10 → MQTT 1, QoS 1"),
];
const LATENCY: &str = "latency-q1";

/// One cell of the comparison: a broker's value in one scenario.
#[derive(Debug, Clone, Default)]
struct Run {
    report: Option<Value>,
    error: Option<String>,
}

/// Runs by scenario, then by broker; brokers in the order they first appear.
struct Runs {
    brokers: Vec<String>,
    by_scenario: BTreeMap<String, BTreeMap<String, Run>>,
    idle_scenarios: Vec<String>,
    raw: Vec<Value>,
}

impl Runs {
    fn parse(text: &str) -> Result<Runs, String> {
        let mut runs = Runs {
            brokers: Vec::new(),
            by_scenario: BTreeMap::new(),
            idle_scenarios: Vec::new(),
            raw: Vec::new(),
        };
        let mut rounds: BTreeMap<(String, String), Vec<Run>> = BTreeMap::new();
        for (n, line) in text
            .lines()
            .enumerate()
            .filter(|(_, l)| !l.trim().is_empty())
        {
            let v: Value =
                serde_json::from_str(line).map_err(|e| format!("line {}: {e}", n + 1))?;
            let broker = v["broker"].as_str().unwrap_or("?").to_owned();
            let scenario = v["scenario"].as_str().unwrap_or("?").to_owned();
            if !runs.brokers.contains(&broker) {
                runs.brokers.push(broker.clone());
            }
            if is_connections_scenario(&scenario) && !runs.idle_scenarios.contains(&scenario) {
                runs.idle_scenarios.push(scenario.clone());
            }
            let run = Run {
                report: Some(v["report"].clone()).filter(|r| r.is_object()),
                error: v["error"].as_str().map(str::to_owned),
            };
            rounds.entry((scenario, broker)).or_default().push(run);
            runs.raw.push(v);
        }
        for ((scenario, broker), candidates) in rounds {
            let run = median_run(&scenario, candidates);
            runs.by_scenario
                .entry(scenario)
                .or_default()
                .insert(broker, run);
        }
        Ok(runs)
    }

    fn report(&self, scenario: &str, broker: &str) -> Option<&Value> {
        self.by_scenario.get(scenario)?.get(broker)?.report.as_ref()
    }

    fn error(&self, scenario: &str, broker: &str) -> Option<&str> {
        self.by_scenario
            .get(scenario)?
            .get(broker)?
            .error
            .as_deref()
    }

    /// A number from a broker's report at a JSON pointer such as `/traffic/msgs_per_sec`.
    fn value(&self, scenario: &str, broker: &str, pointer: &str) -> Option<f64> {
        self.report(scenario, broker)?.pointer(pointer)?.as_f64()
    }

    fn others(&self) -> impl Iterator<Item = &String> {
        self.brokers.iter().filter(|b| b.as_str() != SUBJECT)
    }
}

/// Scenarios that open connections and hold them (idle-N) or time a connect storm
/// (storm-N): their figures are under `/idle`.
fn is_connections_scenario(scenario: &str) -> bool {
    scenario.starts_with("idle-") || scenario.starts_with("storm-")
}

/// The median of a broker's rounds of one scenario (compare.sh repeats noisy scenarios), by the
/// scenario's headline figure; a failed round counts as the worst.
fn median_run(scenario: &str, mut candidates: Vec<Run>) -> Run {
    let (pointer, better) = if scenario.starts_with("idle-") {
        ("/idle/kib_per_connection", Better::Lower)
    } else if scenario.starts_with("storm-") {
        ("/idle/broker_cpu_ms_per_connect", Better::Lower)
    } else if scenario == LATENCY {
        ("/traffic/latency_us/p99", Better::Lower)
    } else {
        ("/traffic/msgs_per_sec", Better::Higher)
    };
    let score = |run: &Run| -> f64 {
        let value = run
            .report
            .as_ref()
            .and_then(|r| r.pointer(pointer))
            .and_then(Value::as_f64);
        match (value, better) {
            (Some(v), Better::Higher) => v,
            (Some(v), Better::Lower) => -v,
            (None, _) => f64::NEG_INFINITY,
        }
    };
    candidates.sort_by(|a, b| score(a).total_cmp(&score(b)));
    let middle = candidates.len() / 2;
    candidates.swap_remove(middle)
}

#[derive(Debug, Clone, Copy, PartialEq)]
enum Better {
    Higher,
    Lower,
}

/// ferromq's value divided by the best other broker's, and that broker's name.
fn ratio(runs: &Runs, scenario: &str, pointer: &str, better: Better) -> Option<(f64, String)> {
    let subject = runs.value(scenario, SUBJECT, pointer)?;
    let best = runs
        .others()
        .filter_map(|b| Some((runs.value(scenario, b, pointer)?, b.clone())))
        .reduce(|a, b| match better {
            Better::Higher if b.0 > a.0 => b,
            Better::Lower if b.0 < a.0 => b,
            _ => a,
        })?;
    (best.0 > 0.0).then(|| (subject / best.0, best.1))
}

fn fmt_num(v: f64) -> String {
    if v.abs() >= 100.0 {
        let s = format!("{:.0}", v.abs());
        let mut out = String::new();
        for (i, c) in s.chars().enumerate() {
            if i > 0 && (s.len() - i) % 3 == 0 {
                out.push(',');
            }
            out.push(c);
        }
        if v < 0.0 {
            out.insert(0, '-');
        }
        out
    } else if v.abs() >= 10.0 {
        format!("{v:.1}")
    } else {
        format!("{v:.2}")
    }
}

fn fmt_ratio(r: Option<(f64, String)>) -> String {
    r.map_or_else(
        || "n/a".to_owned(),
        |(r, best)| format!("**{r:.2}×** (vs {best})"),
    )
}

/// A table cell: the value, a loss warning, or why it is missing.
fn cell(runs: &Runs, scenario: &str, broker: &str, pointer: &str) -> String {
    match runs.value(scenario, broker, pointer) {
        Some(v) => {
            let mut s = fmt_num(v);
            let lost = runs.value(scenario, broker, "/traffic/lost").unwrap_or(0.0);
            if lost > 0.0 {
                let pct = runs
                    .value(scenario, broker, "/traffic/loss_percent")
                    .unwrap_or(0.0);
                s += &format!(" ⚠ {pct:.1}% lost");
            }
            s
        }
        None => match runs.error(scenario, broker) {
            Some(e) if e.starts_with("skipped") || e == "not installed" => e.to_owned(),
            Some(_) => "failed".to_owned(),
            None => "–".to_owned(),
        },
    }
}

fn table_header(out: &mut String, first: &str, runs: &Runs, ratio_title: &str) {
    *out += &format!(
        "| {first} | {} | {ratio_title} |\n",
        runs.brokers.join(" | ")
    );
    *out += &format!("|---|{}---|\n", "---:|".repeat(runs.brokers.len()));
}

fn markdown(runs: &Runs, meta: &[(String, String)], targets: &[Target]) -> String {
    let mut md = String::from("# ferromq side-by-side benchmark\n\n");
    for (k, v) in meta {
        md += &format!("- {k}: {v}\n");
    }
    md += "\nRatios are ferromq ÷ the best other broker in the same run (higher is better for \
           throughput, lower is better for CPU, latency and memory). ⚠ marks messages not \
           delivered by the end of the run; at QoS 1 that is loss of acknowledged messages. \
           See benches/README.md for what each scenario does.\n\n![charts](results.svg)\n\n";

    md += "## Throughput: messages delivered per second (64-byte payloads unless marked 1 KiB)\n\n";
    table_header(&mut md, "scenario", runs, "ferromq / best other");
    for (scenario, title) in THROUGHPUT {
        let cells: Vec<String> = runs
            .brokers
            .iter()
            .map(|b| cell(runs, scenario, b, "/traffic/msgs_per_sec"))
            .collect();
        let r = ratio(runs, scenario, "/traffic/msgs_per_sec", Better::Higher);
        md += &format!("| {title} | {} | {} |\n", cells.join(" | "), fmt_ratio(r));
    }

    md += "\n## Broker CPU seconds per million messages delivered\n\n";
    table_header(
        &mut md,
        "scenario",
        runs,
        "ferromq / best other (lower is better)",
    );
    for (scenario, title) in THROUGHPUT
        .iter()
        .chain([(LATENCY, "latency, 1000 msg/s QoS 1")].iter())
    {
        let ptr = "/broker/cpu_secs_per_million_msgs";
        let cells: Vec<String> = runs
            .brokers
            .iter()
            .map(|b| {
                runs.value(scenario, b, ptr)
                    .map_or_else(|| "–".to_owned(), fmt_num)
            })
            .collect();
        md += &format!(
            "| {title} | {} | {} |\n",
            cells.join(" | "),
            fmt_ratio(ratio(runs, scenario, ptr, Better::Lower))
        );
    }

    md += "\n## Latency at 1000 msg/s, QoS 1 (publish to receive, microseconds)\n\n";
    table_header(
        &mut md,
        "percentile",
        runs,
        "ferromq / best other (lower is better)",
    );
    for (key, title) in [
        ("p50", "p50"),
        ("p99", "p99"),
        ("p999", "p99.9"),
        ("max", "max"),
    ] {
        let ptr = format!("/traffic/latency_us/{key}");
        let cells: Vec<String> = runs
            .brokers
            .iter()
            .map(|b| cell(runs, LATENCY, b, &ptr))
            .collect();
        md += &format!(
            "| {title} | {} | {} |\n",
            cells.join(" | "),
            fmt_ratio(ratio(runs, LATENCY, &ptr, Better::Lower))
        );
    }

    md += "\n## Idle connections\n\n";
    table_header(&mut md, "measure", runs, "ferromq / best other");
    for scenario in &runs.idle_scenarios {
        let n = match scenario.strip_prefix("storm-") {
            Some(n) => match n.strip_suffix("-tls") {
                Some(n) => format!("TLS storm of {n}"),
                None => format!("storm of {n}"),
            },
            None => scenario.trim_start_matches("idle-").to_owned(),
        };
        for (ptr, title, better) in [
            (
                "/idle/connected",
                format!("{n} requested: connections held"),
                Better::Higher,
            ),
            (
                "/idle/kib_per_connection",
                format!("{n}: broker KiB per connection"),
                Better::Lower,
            ),
            (
                "/idle/connects_per_sec",
                format!("{n}: connections accepted per second"),
                Better::Higher,
            ),
            (
                "/idle/failed",
                format!("{n}: failed connects"),
                Better::Lower,
            ),
            (
                "/idle/broker_cpu_ms_per_connect",
                format!("{n}: broker CPU ms per connect"),
                Better::Lower,
            ),
            (
                "/idle/broker_cpu_us_per_ping",
                format!("{n}: broker CPU µs per keep-alive round (PINGREQ/PINGRESP)"),
                Better::Lower,
            ),
        ] {
            let cells: Vec<String> = runs
                .brokers
                .iter()
                .map(|b| cell(runs, scenario, b, ptr))
                .collect();
            md += &format!(
                "| {title} | {} | {} |\n",
                cells.join(" | "),
                fmt_ratio(ratio(runs, scenario, ptr, better))
            );
        }
    }

    md += "\n## Targets (against every peer)\n\n| target | result | status |\n|---|---|---|\n";
    for t in targets {
        md += &format!("| {} | {} | {} |\n", t.what, t.detail, t.status.label());
    }

    md += "\n## Load generator CPU (% of one core; near 100 × its threads would mean it was the bottleneck)\n\n";
    table_header(&mut md, "scenario", runs, "");
    let mut scenarios: Vec<&str> = THROUGHPUT.iter().map(|(s, _)| *s).collect();
    scenarios.push(LATENCY);
    scenarios.extend(runs.idle_scenarios.iter().map(String::as_str));
    for scenario in scenarios {
        let cells: Vec<String> = runs
            .brokers
            .iter()
            .map(|b| {
                runs.value(scenario, b, "/loadgen_cpu_percent")
                    .map_or_else(|| "–".to_owned(), |v| format!("{v:.0}%"))
            })
            .collect();
        md += &format!("| {scenario} | {} | |\n", cells.join(" | "));
    }

    let errors: Vec<String> = runs
        .raw
        .iter()
        .filter_map(|v| {
            let mut msgs: Vec<String> =
                v["error"].as_str().map(str::to_owned).into_iter().collect();
            if let Some(errs) = v["report"]["errors"].as_array() {
                msgs.extend(errs.iter().filter_map(|e| e.as_str().map(str::to_owned)));
            }
            (!msgs.is_empty()).then(|| {
                format!(
                    "- {} {}: {}\n",
                    v["broker"].as_str().unwrap_or("?"),
                    v["scenario"].as_str().unwrap_or("?"),
                    msgs.join("; ")
                )
            })
        })
        .collect();
    if !errors.is_empty() {
        md += "\n## Errors and notes from the runs\n\n";
        md += &errors.concat();
    }
    md
}

#[derive(Debug, Clone, Copy, PartialEq)]
enum Status {
    Met,
    Missed,
    Unknown,
}

impl Status {
    fn label(self) -> &'static str {
        match self {
            Status::Met => "met",
            Status::Missed => "**missed**",
            Status::Unknown => "not measured",
        }
    }
}

struct Target {
    what: String,
    detail: String,
    status: Status,
}

fn targets(runs: &Runs) -> Vec<Target> {
    let mut out = Vec::new();
    // The targets are for the plain TCP MQTT scenarios; TLS and STOMP ones are shown, not judged.
    for (scenario, title) in THROUGHPUT.iter().filter(|(s, _)| {
        !s.ends_with("-tls") && !s.starts_with("stomp-") && !s.starts_with("durable-")
    }) {
        let r = ratio(runs, scenario, "/traffic/msgs_per_sec", Better::Higher);
        let lost = runs.value(scenario, SUBJECT, "/traffic/lost");
        let qos1 = scenario.contains("-q1");
        let (detail, status) = match (r, lost) {
            (Some((r, best)), Some(lost)) => {
                let loss_ok = !qos1 || lost == 0.0;
                let detail = format!(
                    "{r:.2}× {best}{}",
                    if qos1 {
                        format!(", {} lost", fmt_num(lost))
                    } else {
                        String::new()
                    }
                );
                (
                    detail,
                    if r >= 1.5 && loss_ok {
                        Status::Met
                    } else {
                        Status::Missed
                    },
                )
            }
            _ => ("n/a".to_owned(), Status::Unknown),
        };
        out.push(Target {
            what: format!(
                "{title}: ≥ 1.5× the best other{}",
                if qos1 { ", no loss" } else { "" }
            ),
            detail,
            status,
        });
    }
    for (scenario, title) in THROUGHPUT
        .iter()
        .filter(|(s, _)| !s.ends_with("-tls") && !s.starts_with("stomp-"))
    {
        out.push(lowest(
            runs,
            scenario,
            "/broker/cpu_secs_per_million_msgs",
            format!("{title}: broker CPU per message the lowest"),
            "s per million",
        ));
    }

    let idle = runs
        .idle_scenarios
        .iter()
        .filter(|s| s.starts_with("idle-"))
        .max_by_key(|s| s.trim_start_matches("idle-").parse::<u64>().unwrap_or(0));
    let (detail, status) = match idle {
        Some(s) => match (
            runs.value(s, SUBJECT, "/idle/connected"),
            runs.value(s, SUBJECT, "/idle/requested"),
            runs.value(s, SUBJECT, "/idle/kib_per_connection"),
        ) {
            (Some(c), Some(r), Some(k)) => (
                format!("{} of {} held, {:.2} KiB each", fmt_num(c), fmt_num(r), k),
                if c >= 19_000.0 && c >= r && k <= 1.0 {
                    Status::Met
                } else {
                    Status::Missed
                },
            ),
            _ => ("n/a".to_owned(), Status::Unknown),
        },
        None => ("n/a".to_owned(), Status::Unknown),
    };
    out.push(Target {
        what: "idle: hold 19,000 connections at ≤ 1 KiB each".to_owned(),
        detail,
        status,
    });

    for storm in runs
        .idle_scenarios
        .iter()
        .filter(|s| s.starts_with("storm-"))
    {
        let mut target = lowest(
            runs,
            storm,
            "/idle/broker_cpu_ms_per_connect",
            format!("{storm}: no failed connect, broker CPU per connect the lowest"),
            "ms per connect",
        );
        if let Some(failed) = runs.value(storm, SUBJECT, "/idle/failed") {
            target.detail += &format!(", {} failed", fmt_num(failed));
            if failed > 0.0 {
                target.status = Status::Missed;
            }
        }
        out.push(target);
    }

    let durable = "durable-fanin-q1";
    let tps = "/traffic/msgs_per_sec";
    let (detail, status) = match (
        runs.value(durable, SUBJECT, tps),
        runs.value("fanin-q1", SUBJECT, tps),
        runs.value(durable, "activemq", tps),
    ) {
        (Some(d), Some(m), Some(a)) if m > 0.0 && a > 0.0 => (
            format!("{:.2}× in memory, {:.2}× ActiveMQ KahaDB", d / m, d / a),
            if d >= 0.5 * m && d >= 3.0 * a {
                Status::Met
            } else {
                Status::Missed
            },
        ),
        _ => ("n/a".to_owned(), Status::Unknown),
    };
    out.push(Target {
        what: "durable QoS 1 fan-in: ≥ 0.5× in memory and ≥ 3× ActiveMQ KahaDB".to_owned(),
        detail,
        status,
    });

    for key in ["p50", "p99", "p999"] {
        out.push(lowest(
            runs,
            LATENCY,
            &format!("/traffic/latency_us/{key}"),
            format!("latency 1000 msg/s QoS 1: {key} the lowest"),
            "µs",
        ));
    }
    out
}

/// A target met when ferromq's value at `pointer` is the lowest of all brokers in `scenario`.
fn lowest(runs: &Runs, scenario: &str, pointer: &str, what: String, unit: &str) -> Target {
    let (detail, status) = match ratio(runs, scenario, pointer, Better::Lower) {
        Some((r, best)) => (
            format!(
                "{} {unit}: {r:.2}× {best}",
                runs.value(scenario, SUBJECT, pointer)
                    .map_or_else(String::new, fmt_num)
            ),
            if r <= 1.0 {
                Status::Met
            } else {
                Status::Missed
            },
        ),
        None => ("n/a".to_owned(), Status::Unknown),
    };
    Target {
        what,
        detail,
        status,
    }
}

fn charts(runs: &Runs) -> String {
    let series = |scenarios: &[String], pointer: &dyn Fn(&str) -> String| -> Vec<svg::Series> {
        runs.brokers
            .iter()
            .map(|b| svg::Series {
                name: b.clone(),
                values: scenarios
                    .iter()
                    .map(|s| runs.value(s, b, &pointer(s)))
                    .collect(),
                warn: scenarios
                    .iter()
                    .map(|s| runs.value(s, b, "/traffic/lost").is_some_and(|l| l > 0.0))
                    .collect(),
            })
            .collect()
    };
    let throughput: Vec<String> = THROUGHPUT.iter().map(|(s, _)| (*s).to_owned()).collect();
    let latency_keys = ["p50", "p99", "p999"];
    let latency_series = runs
        .brokers
        .iter()
        .map(|b| svg::Series {
            name: b.clone(),
            values: latency_keys
                .iter()
                .map(|k| runs.value(LATENCY, b, &format!("/traffic/latency_us/{k}")))
                .collect(),
            warn: Vec::new(),
        })
        .collect();
    let panels = vec![
        svg::Panel {
            title:
                "Throughput, messages delivered per second (higher is better; ⚠ = messages lost)"
                    .to_owned(),
            groups: THROUGHPUT.iter().map(|(_, t)| (*t).to_owned()).collect(),
            series: series(&throughput, &|_| "/traffic/msgs_per_sec".to_owned()),
            log_scale: false,
        },
        svg::Panel {
            title: "Latency at 1000 msg/s QoS 1, microseconds (lower is better, log scale)"
                .to_owned(),
            groups: vec!["p50".to_owned(), "p99".to_owned(), "p99.9".to_owned()],
            series: latency_series,
            log_scale: true,
        },
        svg::Panel {
            title: "Idle connections: broker KiB per connection (lower is better, log scale)"
                .to_owned(),
            groups: runs
                .idle_scenarios
                .iter()
                .map(|s| format!("{} connections", s.trim_start_matches("idle-")))
                .collect(),
            series: series(&runs.idle_scenarios, &|_| {
                "/idle/kib_per_connection".to_owned()
            }),
            log_scale: true,
        },
    ];
    svg::render(&panels)
}

fn run(args: &Args) -> Result<(), String> {
    let text = std::fs::read_to_string(&args.input)
        .map_err(|e| format!("cannot read {}: {e}", args.input.display()))?;
    let runs = Runs::parse(&text)?;
    let targets = targets(&runs);
    std::fs::create_dir_all(&args.out_dir)
        .map_err(|e| format!("cannot create {}: {e}", args.out_dir.display()))?;
    let write = |name: &str, contents: String| {
        let path = args.out_dir.join(name);
        std::fs::write(&path, contents).map_err(|e| format!("cannot write {}: {e}", path.display()))
    };
    write("results.md", markdown(&runs, &args.meta, &targets))?;
    write("results.svg", charts(&runs))?;
    let json = json!({
        "meta": args.meta.iter().map(|(k, v)| (k.clone(), json!(v))).collect::<serde_json::Map<_, _>>(),
        "subject": SUBJECT,
        "targets": targets.iter().map(|t| json!({"target": t.what, "result": t.detail, "status": format!("{:?}", t.status).to_lowercase()})).collect::<Vec<_>>(),
        "runs": runs.raw,
    });
    let pretty = serde_json::to_string_pretty(&json).map_err(|e| e.to_string())?;
    write("results.json", pretty + "\n")
}

fn main() -> ExitCode {
    let args = Args::parse();
    match run(&args) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("plot: {e}");
            ExitCode::from(1)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn line(broker: &str, scenario: &str, report: Value) -> String {
        json!({"broker": broker, "scenario": scenario, "report": report, "error": null}).to_string()
    }

    fn traffic(rate: f64, lost: u64, p99: f64) -> Value {
        json!({"traffic": {"msgs_per_sec": rate, "lost": lost, "loss_percent": lost as f64,
               "latency_us": {"p50": p99 / 2.0, "p99": p99, "p999": p99 * 2.0, "max": p99 * 3.0}},
               "broker": {"cpu_secs_per_million_msgs": 1e6 / rate}, "loadgen_cpu_percent": 20.0})
    }

    fn sample() -> Runs {
        let lines = [
            line("ferromq", "fanin-q0", traffic(300_000.0, 0, 100.0)),
            line("mosquitto", "fanin-q0", traffic(100_000.0, 0, 200.0)),
            line("activemq", "fanin-q0", traffic(150_000.0, 0, 4000.0)),
            line("ferromq", "fanin-q1", traffic(50_000.0, 3, 100.0)),
            line("mosquitto", "fanin-q1", traffic(40_000.0, 0, 100.0)),
            line("ferromq", "latency-q1", traffic(1000.0, 0, 250.0)),
            line("mosquitto", "latency-q1", traffic(1000.0, 0, 200.0)),
            line("ferromq", "idle-19000", json!({"idle": {"connected": 19000, "requested": 19000, "kib_per_connection": 3.5, "connects_per_sec": 9000.0}})),
            json!({"broker": "activemq", "scenario": "idle-19000", "report": null, "error": "broker did not start"}).to_string(),
        ];
        Runs::parse(&lines.join("\n")).expect("valid lines")
    }

    #[test]
    fn repeated_rounds_are_reduced_to_their_median() {
        let lines = [
            line("ferromq", "latency-q1", traffic(1000.0, 0, 3000.0)),
            line("ferromq", "latency-q1", traffic(1000.0, 0, 200.0)),
            line("ferromq", "latency-q1", traffic(1000.0, 0, 250.0)),
            line("ferromq", "fanin-q0", traffic(100.0, 0, 1.0)),
            json!({"broker": "ferromq", "scenario": "fanin-q0", "report": null, "error": "x"})
                .to_string(),
            line("ferromq", "fanin-q0", traffic(300.0, 0, 1.0)),
        ];
        let runs = Runs::parse(&lines.join("\n")).expect("valid lines");
        let p99 = runs.value("latency-q1", "ferromq", "/traffic/latency_us/p99");
        assert_eq!(p99, Some(250.0));
        // A failed round ranks lowest, so the median of (failed, 100, 300) is 100.
        let rate = runs.value("fanin-q0", "ferromq", "/traffic/msgs_per_sec");
        assert_eq!(rate, Some(100.0));
    }

    #[test]
    fn ratio_compares_against_the_best_other_broker() {
        let runs = sample();
        let (r, best) =
            ratio(&runs, "fanin-q0", "/traffic/msgs_per_sec", Better::Higher).expect("ratio");
        assert_eq!(best, "activemq");
        assert!((r - 2.0).abs() < 1e-9);
        let (r, best) =
            ratio(&runs, "fanin-q0", "/traffic/latency_us/p99", Better::Lower).expect("ratio");
        assert_eq!(best, "mosquitto");
        assert!((r - 0.5).abs() < 1e-9);
        assert!(ratio(&runs, "pairs-q0", "/traffic/msgs_per_sec", Better::Higher).is_none());
    }

    #[test]
    fn targets_are_judged_from_the_numbers() {
        let runs = sample();
        let t = targets(&runs);
        let find = |prefix: &str| t.iter().find(|t| t.what.starts_with(prefix)).expect(prefix);
        assert_eq!(find("fan-in 10→1, QoS 0").status, Status::Met); // 2.0x
        assert_eq!(find("fan-in 10→1, QoS 1").status, Status::Missed); // 1.25x and 3 lost
        assert_eq!(find("10 pairs, QoS 0").status, Status::Unknown);
        assert_eq!(find("fan-in 10→1, QoS 0: broker CPU").status, Status::Met);
        assert_eq!(find("idle").status, Status::Missed); // above 1 KiB
        assert_eq!(find("latency 1000 msg/s QoS 1: p99").status, Status::Missed);
        // 250 > 200
    }

    #[test]
    fn markdown_shows_values_losses_ratios_and_failures() {
        let runs = sample();
        let md = markdown(
            &runs,
            &[("date".to_owned(), "today".to_owned())],
            &targets(&runs),
        );
        assert!(md.contains("- date: today"));
        assert!(
            md.contains(
                "| fan-in 10→1, QoS 0 | 300,000 | 100,000 | 150,000 | **2.00×** (vs activemq) |"
            ),
            "{md}"
        );
        assert!(md.contains("50,000 ⚠ 3.0% lost"));
        assert!(md.contains("failed"));
        assert!(md.contains("broker did not start"));
    }

    #[test]
    fn numbers_are_grouped_by_thousands() {
        assert_eq!(fmt_num(1_234_567.4), "1,234,567");
        assert_eq!(fmt_num(123.0), "123");
        assert_eq!(fmt_num(12.34), "12.3");
        assert_eq!(fmt_num(0.256), "0.26");
    }

    #[test]
    fn bad_input_is_an_error_with_its_line() {
        let err = Runs::parse("{\"broker\":\"x\"}\nnot json")
            .err()
            .expect("error");
        assert!(err.starts_with("line 2:"), "{err}");
    }
}
