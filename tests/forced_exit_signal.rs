//! A second SIGTERM ends the process at once even when its tokio runtime is wedged: the
//! forced-exit watcher (`ferromq::control::forced_exit`) has a thread and a runtime of its own.
//!
//! The child is this test binary re-invoked on `wedged_child_entry_point` with
//! `FERROMQ_WEDGED_CHILD` set: it owns SIGTERM on a runtime (as the broker's control task does),
//! starts the watcher, then blocks every thread of that runtime for good and prints its log
//! (debug level) on stdout. A binary of its own: the child owns the process's signals.

#![cfg(unix)]

use std::io::{BufRead, BufReader};
use std::os::unix::process::ExitStatusExt;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

const CHILD_ENV: &str = "FERROMQ_WEDGED_CHILD";
const READY: &str = "wedged: every runtime thread is blocked";

/// Not a test: the child process's body (returns at once unless re-invoked by the test below).
#[test]
fn wedged_child_entry_point() {
    if std::env::var_os(CHILD_ENV).is_none() {
        return;
    }
    tracing_subscriber::fmt()
        .with_max_level(tracing::Level::DEBUG)
        .with_writer(std::io::stdout)
        .with_ansi(false)
        .init();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .expect("runtime");
    runtime.block_on(async {
        use tokio::signal::unix::{signal, SignalKind};
        // The broker's own stream: this runtime would relay the signals if it ran.
        let mut terminate = signal(SignalKind::terminate()).expect("own SIGTERM");
        ferromq::control::forced_exit::exit_at_second_stop_signal().expect("watcher");
        let _relay = tokio::spawn(async move {
            terminate.recv().await;
            println!("the wedged runtime relayed a signal");
        });
        // The worker blocks for good, and so does this thread (the one driving `block_on`).
        tokio::spawn(async { block_forever() });
        println!("{READY}");
        block_forever();
    });
}

fn block_forever() -> ! {
    loop {
        std::thread::park();
    }
}

fn child_test_name() -> &'static str {
    "wedged_child_entry_point"
}

/// Read stdout in a thread and send every line.
fn lines_of(child: &mut Child) -> mpsc::Receiver<String> {
    let stdout = child.stdout.take().expect("stdout");
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines() {
            let Ok(line) = line else { break };
            let _ = tx.send(line);
        }
    });
    rx
}

/// Wait for a line containing `text`, within 10 s.
fn line_with(lines: &mpsc::Receiver<String>, text: &str) -> String {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        match lines.recv_timeout(left) {
            Ok(line) if line.contains(text) => return line,
            Ok(_) => {}
            Err(_) => panic!("no line with `{text}` within 10 s"),
        }
    }
}

fn sigterm(child: &Child) {
    let status = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .expect("kill");
    assert!(status.success());
}

/// Ends the child however the test ends.
struct Guard(Child);

impl Drop for Guard {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[test]
fn a_second_sigterm_exits_at_once_even_when_the_runtime_is_wedged() {
    let exe = std::env::current_exe().expect("test binary");
    let child = Command::new(exe)
        .args([
            "--exact",
            child_test_name(),
            "--nocapture",
            "--test-threads",
            "1",
        ])
        .env(CHILD_ENV, "1")
        .env_remove("RUST_LOG")
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn the child");
    let mut child = Guard(child);
    let lines = lines_of(&mut child.0);
    line_with(&lines, READY);

    sigterm(&child.0);
    // The watcher counted it and the process goes on (the default action would have ended it).
    line_with(&lines, "seen by the forced-exit watcher");
    assert!(child.0.try_wait().expect("wait").is_none(), "still running");

    sigterm(&child.0);
    let deadline = Instant::now() + Duration::from_secs(10);
    let exit = loop {
        if let Some(exit) = child.0.try_wait().expect("wait") {
            break exit;
        }
        assert!(
            Instant::now() < deadline,
            "no exit within 10 s of the second SIGTERM"
        );
        std::thread::sleep(Duration::from_millis(20));
    };
    assert_eq!(exit.signal(), None, "exited by itself, not killed: {exit}");
    assert_eq!(exit.code(), Some(128 + 15), "{exit}");
}
