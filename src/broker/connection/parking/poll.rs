//! The readiness loop of one broker's parked connections (a thread of its own: it blocks in
//! `epoll_wait` through mio). Sockets are registered edge-triggered: each event is read until
//! the socket has nothing more.

use std::io::{ErrorKind, Read, Write};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::BytesMut;

use super::{Command, Parked, Shared, Woken, WAKER_TOKEN};

/// An MQTT PINGREQ (fixed header, no remaining length; the same in 3.1.1 and 5).
const PINGREQ: [u8; 2] = [0xC0, 0x00];
/// The PINGRESP answering it.
const PINGRESP: [u8; 2] = [0xD0, 0x00];
/// Read at most this much from a parked connection before waking it: PINGREQs are 2 bytes,
/// anything larger is for the connection's task.
const READ_LIMIT_BYTES: usize = 64;
/// Events taken per `epoll_wait`.
const EVENTS_PER_WAIT: usize = 1024;

pub(super) fn run(shared: Arc<Shared>, mut poll: mio::Poll) {
    let mut events = mio::Events::with_capacity(EVENTS_PER_WAIT);
    loop {
        let timeout = {
            let state = shared.state.lock();
            let deadline = state.deadlines.earliest();
            [deadline, state.trim.due_at()]
                .into_iter()
                .flatten()
                .min()
                .map(|at| at.saturating_duration_since(Instant::now()))
        };
        if let Err(e) = poll.poll(&mut events, timeout) {
            if e.kind() != ErrorKind::Interrupted {
                tracing::error!("parked connections' loop: {e}");
                std::thread::sleep(Duration::from_millis(10));
            }
            continue;
        }
        for event in &events {
            if event.token() != WAKER_TOKEN {
                readable(&shared, event.token().0 as u64);
            }
        }
        if !run_commands(&shared) {
            return;
        }
        expire(&shared);
        if shared.state.lock().trim.take_due(Instant::now()) {
            let started = Instant::now();
            crate::broker::allocator::release_free_memory();
            tracing::debug!(
                took_us = started.elapsed().as_micros() as u64,
                "returned the allocator's free pages to the system after a burst of parks"
            );
        }
    }
}

/// Act on the commands queued since the last round; false when the loop is to end.
fn run_commands(shared: &Shared) -> bool {
    let commands = std::mem::take(&mut shared.state.lock().commands);
    for command in commands {
        let woken: Vec<Box<Parked>> = {
            let mut state = shared.state.lock();
            match command {
                Command::Wake(key) => state.parked.remove(&key).into_iter().collect(),
                Command::WakeSubscribed => take_where(&mut state.parked, |p| p.subscribed),
                Command::WakeStopped => {
                    take_where(&mut state.parked, |p| p.phase.shutdown.is_cancelled())
                }
                Command::Stop => {
                    state.stopped = true;
                    let parked: Vec<Box<Parked>> = state.parked.drain().map(|(_, p)| p).collect();
                    drop(state);
                    for p in &parked {
                        p.conn.core.counters.connection_parked(false);
                    }
                    return false;
                }
            }
        };
        for parked in woken {
            shared.wake_up(parked, Woken::default());
        }
    }
    true
}

/// Remove the parked connections `wanted` picks (boxed as they are kept and handed on: a
/// woken connection's task takes the box).
#[allow(clippy::vec_box)]
fn take_where(
    parked: &mut std::collections::HashMap<u64, Box<Parked>>,
    wanted: impl Fn(&Parked) -> bool,
) -> Vec<Box<Parked>> {
    let keys: Vec<u64> = parked
        .iter()
        .filter(|(_, p)| wanted(p))
        .map(|(k, _)| *k)
        .collect();
    keys.iter().filter_map(|k| parked.remove(k)).collect()
}

/// Wake the connections whose keep-alive deadline passed (their task closes them).
fn expire(shared: &Shared) {
    let now = Instant::now();
    let mut due = Vec::new();
    {
        let mut state = shared.state.lock();
        while let Some(key) = state.deadlines.pop_due(now) {
            // One entry per parked connection: a deadline that PINGREQs moved is pushed again.
            match state.parked.get(&key).and_then(|p| p.deadline()) {
                Some(deadline) if deadline <= now => due.extend(state.parked.remove(&key)),
                Some(later) => state.deadlines.push(later, key),
                None => {}
            }
        }
    }
    for parked in due {
        shared.wake_up(parked, Woken::default());
    }
}

/// The socket of `key` has something: answer PINGREQs here, wake the connection for
/// anything else.
fn readable(shared: &Shared, key: u64) {
    let Some(mut parked) = shared.state.lock().parked.remove(&key) else {
        return;
    };
    match answer_pings(&mut parked) {
        // The deadline moved later: its entry in `deadlines` is re-armed when it comes up.
        Ok(()) => {
            shared.state.lock().parked.insert(key, parked);
        }
        Err(woken) => shared.wake_up(parked, woken),
    }
}

/// Read what the client sent: only whole PINGREQs are answered here (and the keep-alive
/// deadline moved); anything else, the end of the stream or an error is the connection's.
fn answer_pings(parked: &mut Parked) -> Result<(), Woken> {
    let mut read = BytesMut::new();
    let mut buf = [0u8; READ_LIMIT_BYTES];
    loop {
        match parked.stream.read(&mut buf) {
            // The end of the stream: the task reads it again and closes.
            Ok(0) => {
                return Err(Woken {
                    read,
                    out: BytesMut::new(),
                })
            }
            Ok(n) => {
                // Any byte from the client is activity (MQTT 3.1.1 3.1.2.10), whether this loop
                // answers it or the connection's task handles it.
                parked.phase.keep_alive.touch();
                read.extend_from_slice(&buf[..n]);
                if !only_pings(&read) || read.len() >= READ_LIMIT_BYTES {
                    return Err(Woken {
                        read,
                        out: BytesMut::new(),
                    });
                }
            }
            Err(e) if e.kind() == ErrorKind::WouldBlock => break,
            Err(e) if e.kind() == ErrorKind::Interrupted => continue,
            Err(_) => {
                return Err(Woken {
                    read,
                    out: BytesMut::new(),
                })
            }
        }
    }
    if read.is_empty() {
        return Ok(());
    }
    if !read.len().is_multiple_of(PINGREQ.len()) {
        // Half a PINGREQ: the task buffers it until the rest arrives.
        return Err(Woken {
            read,
            out: BytesMut::new(),
        });
    }
    let answer: Vec<u8> = PINGRESP.repeat(read.len() / PINGREQ.len());
    let mut written = 0;
    while written < answer.len() {
        match parked.stream.write(&answer[written..]) {
            Ok(0) => break,
            Ok(n) => written += n,
            Err(e) if e.kind() == ErrorKind::Interrupted => continue,
            Err(_) => break,
        }
    }
    if written == answer.len() {
        return Ok(());
    }
    Err(Woken {
        read: BytesMut::new(),
        out: BytesMut::from(&answer[written..]),
    })
}

/// `bytes` is a run of PINGREQs, possibly ending in the first byte of one more.
fn only_pings(bytes: &[u8]) -> bool {
    bytes
        .chunks(PINGREQ.len())
        .all(|c| c == PINGREQ.as_slice() || c == &PINGREQ[..c.len()])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_whole_or_starting_pingreqs_count_as_pings() {
        assert!(only_pings(&[0xC0, 0x00]));
        assert!(only_pings(&[0xC0, 0x00, 0xC0, 0x00]));
        assert!(only_pings(&[0xC0, 0x00, 0xC0]));
        assert!(!only_pings(&[0xC0, 0x01]));
        assert!(!only_pings(&[0x30, 0x00]));
        assert!(!only_pings(&[0xC0, 0x00, 0xE0, 0x00]));
    }
}
