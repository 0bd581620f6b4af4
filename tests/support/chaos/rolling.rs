//! S7: a rolling restart of the 3 ferromq nodes under load, each by SIGTERM (a graceful
//! drain: new deliveries held, in-flight acknowledged, sessions released, clients told to
//! use another server), then started again before the next. Must: L = 0, D = 0 (the drain
//! leaves nothing in flight to re-send), every resume with session present, F_pub <= 1 s.

use std::sync::Arc;
use std::time::{Duration, Instant};

use parking_lot::Mutex;

use super::checker::check;
use super::cluster::{
    common_violations, inversion_examples, log_alarms, losses_in_logs, pub_gap_ms, ClusterRig,
    Outcome, FAST_TIMINGS,
};
use super::load::{run, LoadConfig};
use super::recorder::Recording;
use super::single::BrokerProgram;

/// How long a node may take to drain and exit after its SIGTERM.
const EXIT_WITHIN: Duration = Duration::from_secs(15);
/// Between a node serving again and the next node's SIGTERM.
const SETTLE: Duration = Duration::from_secs(2);
/// The design's bound on the largest PUBACK gap.
const F_PUB_MAX_MS: f64 = 1000.0;

/// The largest gap between two PUBACKs of one publisher (its own stall across its move), ms.
fn worst_publisher_gap_ms(recording: &Recording) -> Option<f64> {
    let publishers = recording.publishes.iter().map(|p| p.publisher).max()?;
    (0..=publishers)
        .filter_map(|i| pub_gap_ms(recording, |p| p == i))
        .reduce(f64::max)
}

/// S7 (see the module documentation); the first SIGTERM `start_at` into publishing.
pub async fn s7_rolling_restart(
    program: BrokerProgram,
    load: &LoadConfig,
    start_at: Duration,
) -> std::io::Result<Outcome> {
    let rig = ClusterRig::start(program, FAST_TIMINGS).await?;
    let nodes = rig.nodes.clone();
    let steps: Arc<Mutex<Vec<String>>> = Arc::default();
    let failures: Arc<Mutex<Vec<String>>> = Arc::default();
    let (steps_log, failures_log) = (steps.clone(), failures.clone());
    let recording = run(load, &rig.addresses(), start_at, move |faults| async move {
        for node in nodes {
            faults.mark(&format!("SIGTERM {}", node.name));
            let term = Instant::now();
            let status = node.terminate(EXIT_WITHIN).await;
            let exited = term.elapsed();
            if !status.is_some_and(|s| s.success()) {
                failures_log.lock().push(format!(
                    "{} did not drain and exit cleanly within {} s: {status:?}",
                    node.name,
                    EXIT_WITHIN.as_secs()
                ));
            }
            let restart = Instant::now();
            let serving =
                node.restart().is_ok() && node.wait_listening(Duration::from_secs(60)).await;
            if !serving {
                failures_log.lock().push(format!(
                    "{} did not serve again after its restart",
                    node.name
                ));
                return;
            }
            steps_log.lock().push(format!(
                "{}: exited {:.0} ms after its SIGTERM, serving again {:.0} ms after its restart",
                node.name,
                exited.as_secs_f64() * 1000.0,
                restart.elapsed().as_secs_f64() * 1000.0
            ));
            tokio::time::sleep(SETTLE).await;
        }
    })
    .await;
    let report = check(&recording);
    let mut violations = common_violations(&report, true);
    violations.extend(failures.lock().iter().cloned());
    if report.duplicates > 0 {
        violations.push(format!("D = {} (must be 0)", report.duplicates));
    }
    if report.session_present_rate < 1.0 {
        violations.push(format!(
            "session present on {} of {} reconnects",
            report.reconnects_with_session, report.reconnects
        ));
    }
    if report
        .f_pub_max_gap_ms
        .is_some_and(|gap| gap > F_PUB_MAX_MS)
    {
        violations.push(format!(
            "F_pub {:.0} ms > {F_PUB_MAX_MS:.0} ms",
            report.f_pub_max_gap_ms.unwrap_or_default()
        ));
    }
    let mut notes = steps.lock().clone();
    notes.push(format!(
        "reconnects {}, with session present {}; worst single publisher's PUBACK gap {} ms",
        report.reconnects,
        report.reconnects_with_session,
        worst_publisher_gap_ms(&recording).map_or("-".into(), |v| format!("{v:.0}"))
    ));
    for example in inversion_examples(&recording, 5) {
        notes.push(format!("inversion: {example}"));
    }
    rig.keep_logs(&load.client_prefix);
    notes.extend(log_alarms(&rig.nodes));
    notes.extend(losses_in_logs(&rig.nodes, &report, &recording, load));
    let mut figures = Vec::new();
    if let Some(gap) = report.f_pub_max_gap_ms {
        figures.push(("S7 F_pub ms".to_owned(), gap));
    }
    Ok(Outcome {
        report: Some(report),
        notes,
        violations,
        figures,
    })
}
