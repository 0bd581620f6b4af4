//! kill -9 at random moments while batches are being committed: every batch the store
//! acknowledged must be there after reopening, every acknowledged removal must stay removed.
//!
//! Bodies are stored both ways: on their own with an entry referring to them, and carried
//! in their entry.
//!
//! The child is this test binary re-invoked on `crash_child_entry_point` with
//! `FERROMQ_STORE_CRASH_DIR` set; it commits numbered messages from many tasks at once and
//! prints `ACK n` once a message is durable, `DELREQ n` before asking to remove one and
//! `DEL n` once the removal is durable.

use std::collections::{BTreeMap, BTreeSet};
use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::{mpsc, Arc};
use std::time::{Duration, Instant};

use crate::support::store::{message, put_session, queued};
use ferromq::protocol::QoS;
use ferromq::store::{Op, Store, StoreError, StoreLimits};
use rand::Rng;

const DIR_ENV: &str = "FERROMQ_STORE_CRASH_DIR";
const START_ENV: &str = "FERROMQ_STORE_CRASH_START";
const KILLS: u64 = 20;
const CHILD_TASKS: u64 = 16;
/// Numbers of one child task are `start + task * TASK_SPAN + i`.
const TASK_SPAN: u64 = 1_000_000;

/// Not a test: the child process's body (returns at once unless re-invoked by the crash test).
#[test]
fn crash_child_entry_point() {
    let (Ok(dir), Ok(start)) = (std::env::var(DIR_ENV), std::env::var(START_ENV)) else {
        return;
    };
    let start: u64 = start.parse().expect("start number");
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    runtime.block_on(async move {
        let store = Store::open(Path::new(&dir), StoreLimits::default()).expect("child open");
        store.commit(vec![put_session("s")]).await.expect("session");
        let tasks: Vec<_> = (0..CHILD_TASKS)
            .map(|task| tokio::spawn(child_task(store.clone(), start + task * TASK_SPAN)))
            .collect();
        for task in tasks {
            task.await.expect("child task");
        }
    });
}

/// Commits numbered messages; every third one removes the previous one again. Bounded in
/// count and time (the parent kills it long before either bound).
async fn child_task(store: Store, first: u64) {
    let client: Arc<str> = Arc::from("s");
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut previous: Option<(u64, u64)> = None;
    for n in first..first + 100_000 {
        if Instant::now() > deadline {
            return;
        }
        let id = store.allocate_id();
        let seq = store.allocate_id();
        let body = message("t", n.to_string().as_bytes(), QoS::AtLeastOnce);
        let entry = queued(id, QoS::AtLeastOnce);
        // Half of those not retained carry their body in their entry, as the broker stores
        // a message queued for one session.
        let mut ops = if n % 2 == 1 && n % 5 != 0 {
            vec![Op::PutQueued {
                client_id: client.clone(),
                seq,
                entry,
                message: body,
            }]
        } else {
            vec![
                Op::PutMessage { id, message: body },
                Op::Enqueue {
                    client_id: client.clone(),
                    seq,
                    entry,
                },
            ]
        };
        if n % 5 == 0 {
            ops.push(Op::SetRetained {
                topic: Arc::from(format!("r/{first}")),
                message_id: id,
            });
        }
        store.commit(ops).await.expect("child commit");
        println!("ACK {n}");
        if n % 3 == 0 {
            if let Some((old_n, old_seq)) = previous.take() {
                println!("DELREQ {old_n}");
                store
                    .commit(vec![Op::Dequeue {
                        client_id: client.clone(),
                        seq: old_seq,
                    }])
                    .await
                    .expect("child dequeue");
                println!("DEL {old_n}");
            }
        }
        previous = Some((n, seq));
    }
}

#[derive(Default)]
struct Expectations {
    acked: BTreeSet<u64>,
    delete_requested: BTreeSet<u64>,
    deleted: BTreeSet<u64>,
    /// Per retained topic, the highest number acknowledged on it.
    retained_at_least: BTreeMap<String, u64>,
}

impl Expectations {
    fn read(&mut self, line: &str) {
        let mut words = line.split_whitespace();
        let (Some(kind), Some(Ok(n))) = (words.next(), words.next().map(str::parse::<u64>)) else {
            return;
        };
        match kind {
            "ACK" => {
                self.acked.insert(n);
                if n % 5 == 0 {
                    let topic = format!("r/{}", n - n % TASK_SPAN);
                    let slot = self.retained_at_least.entry(topic).or_default();
                    *slot = (*slot).max(n);
                }
            }
            "DELREQ" => {
                self.delete_requested.insert(n);
            }
            "DEL" => {
                self.deleted.insert(n);
            }
            _ => {}
        }
    }
}

fn payload_number(payload: &[u8]) -> u64 {
    std::str::from_utf8(payload)
        .expect("utf-8 payload")
        .parse()
        .expect("numeric payload")
}

/// The full name of [`crash_child_entry_point`] in this test binary (`module::name`, without
/// the binary's crate name), as `--exact` wants it.
fn child_test_name() -> String {
    let module = module_path!()
        .split_once("::")
        .map_or("", |(_, module)| module);
    if module.is_empty() {
        "crash_child_entry_point".to_owned()
    } else {
        format!("{module}::crash_child_entry_point")
    }
}

#[test]
fn kill_9_never_loses_an_acknowledged_batch() {
    let dir = tempfile::tempdir().expect("tempdir");
    let exe = std::env::current_exe().expect("test binary");
    let mut expected = Expectations::default();
    let mut rng = rand::rng();
    for round in 0..KILLS {
        let mut child = Command::new(&exe)
            .args([
                "--exact",
                &child_test_name(),
                "--nocapture",
                "--test-threads",
                "1",
            ])
            .env(DIR_ENV, dir.path())
            .env(START_ENV, ((round + 1) * 100 * TASK_SPAN).to_string())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn child");
        let stdout = child.stdout.take().expect("child stdout");
        let (lines_tx, lines) = mpsc::channel::<String>();
        let reader = std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if lines_tx.send(line).is_err() {
                    return;
                }
            }
        });
        // Wait for a first durable batch (the harness prints its own lines first).
        loop {
            let line = lines
                .recv_timeout(Duration::from_secs(60))
                .expect("the child acknowledges something within 60 s");
            expected.read(&line);
            if line.starts_with("ACK ") {
                break;
            }
        }
        if round == 0 {
            match Store::open(dir.path(), StoreLimits::default()) {
                Err(StoreError::Locked { holder_pid, .. }) => {
                    assert_eq!(holder_pid, Some(child.id()), "the lock names the child")
                }
                other => panic!("open while the child holds the store: {other:?}"),
            }
        }
        std::thread::sleep(Duration::from_millis(rng.random_range(0..400)));
        child.kill().expect("SIGKILL");
        child.wait().expect("reap child");
        reader.join().expect("reader");
        for line in lines.try_iter() {
            expected.read(&line);
        }

        let store = Store::open(dir.path(), StoreLimits::default()).expect("reopen after kill");
        let recovered = store.recover().expect("recover after kill");
        let stats = &recovered.stats;
        assert!(stats.problems.is_empty(), "round {round}: {stats}");
        assert!(
            stats.engine_repaired,
            "round {round}: the unclean stop is reported"
        );
        let present: BTreeSet<u64> = recovered
            .sessions
            .iter()
            .flat_map(|s| &s.queue)
            .map(|e| payload_number(&e.message.payload))
            .collect();
        let must_be_present: Vec<u64> = expected
            .acked
            .difference(&expected.delete_requested)
            .copied()
            .collect();
        let lost: Vec<u64> = must_be_present
            .iter()
            .filter(|n| !present.contains(n))
            .copied()
            .collect();
        assert!(
            lost.is_empty(),
            "round {round}: acknowledged but lost: {lost:?}"
        );
        let resurrected: Vec<&u64> = expected.deleted.intersection(&present).collect();
        assert!(
            resurrected.is_empty(),
            "round {round}: acknowledged removals came back: {resurrected:?}"
        );
        for (topic, at_least) in &expected.retained_at_least {
            let retained = recovered
                .retained
                .iter()
                .find(|(t, _)| &**t == topic.as_str())
                .map(|(_, m)| payload_number(&m.message.payload));
            assert!(
                retained >= Some(*at_least),
                "round {round}: retained {topic} is {retained:?}, acknowledged {at_least}"
            );
        }
        eprintln!(
            "round {round}: {} acknowledged so far, {} present; {stats}",
            expected.acked.len(),
            present.len()
        );
    }
    assert!(
        expected.acked.len() as u64 > KILLS,
        "the children must have acknowledged work"
    );
}
