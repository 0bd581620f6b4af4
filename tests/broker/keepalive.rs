//! Keep-alive and connection timing: 1.5 x keep-alive of inbound silence, any inbound byte
//! resets it, `transport.defaultKeepAlive`, `transport.useInactivityMonitor=false`,
//! `transport.connectAttemptTimeout`, will on expiry.
//!
//! The connections are served in-process over `tokio::io::duplex` by the broker's own
//! `connection::serve` (see `TestBroker::duplex`), with tokio's clock paused: the timers are
//! the real ones, time jumps straight to the next deadline, and the close times are exact.

use std::time::Duration;

use crate::support::{connect_packet, RawClient, TestBroker};
use ferromq::protocol::{ConnectReason, Packet, QoS};
use tokio::time::Instant;

/// Paused time is exact; this only allows for the broker's own rounding of deadlines.
const SLACK: Duration = Duration::from_millis(10);

fn assert_close_time(measured: Option<Duration>, expected: Duration) {
    let measured = measured.expect("the broker should close the connection");
    assert!(
        measured + SLACK >= expected && measured <= expected + SLACK,
        "closed after {measured:?}, expected {expected:?} (+-{SLACK:?})"
    );
}

#[tokio::test(start_paused = true)]
async fn closed_after_one_and_a_half_keep_alive_of_silence() {
    let broker = TestBroker::default().await;
    let (mut c, _) = RawClient::handshake(broker.duplex(), connect_packet("ka", true, 1)).await;
    let closed = c.closed_within(Duration::from_secs(3)).await;
    assert_close_time(closed, Duration::from_millis(1500));
    broker.shutdown().await;
}

#[tokio::test(start_paused = true)]
async fn any_inbound_byte_resets_the_deadline() {
    let broker = TestBroker::default().await;
    let (mut c, _) = RawClient::handshake(broker.duplex(), connect_packet("ka", true, 1)).await;
    // Half a PINGREQ at 1.0 s, the other half at 2.0 s: never 1.5 s of silence.
    tokio::time::sleep(Duration::from_millis(1000)).await;
    c.send_raw(&[0xC0]).await;
    tokio::time::sleep(Duration::from_millis(1000)).await;
    let last_byte = Instant::now();
    c.send_raw(&[0x00]).await;
    assert_eq!(c.recv().await, Packet::PingResp);
    // Then silence: closed 1.5 s after the last byte.
    let closed = c.closed_within(Duration::from_secs(3)).await;
    assert_close_time(
        closed.map(|_| last_byte.elapsed()),
        Duration::from_millis(1500),
    );
    broker.shutdown().await;
}

#[tokio::test(start_paused = true)]
async fn default_keep_alive_applies_when_the_client_sends_zero() {
    let broker = TestBroker::with_uri_options(&["transport.defaultKeepAlive=600"]).await;
    let (mut c, _) = RawClient::handshake(broker.duplex(), connect_packet("ka0", true, 0)).await;
    assert_close_time(
        c.closed_within(Duration::from_secs(3)).await,
        Duration::from_millis(900),
    );
    broker.shutdown().await;
}

#[tokio::test(start_paused = true)]
async fn inactivity_monitor_off_disables_keep_alive_and_connect_timeout() {
    let broker = TestBroker::with_uri_options(&[
        "transport.useInactivityMonitor=false",
        "transport.connectAttemptTimeout=200",
    ])
    .await;
    let (mut c, _) = RawClient::handshake(broker.duplex(), connect_packet("quiet", true, 1)).await;
    let mut silent = RawClient::over(broker.duplex());
    assert_eq!(c.closed_within(Duration::from_millis(2000)).await, None);
    assert_eq!(silent.closed_within(Duration::from_millis(100)).await, None);
    c.send(Packet::PingReq).await;
    assert_eq!(c.recv().await, Packet::PingResp);
    broker.shutdown().await;
}

#[tokio::test(start_paused = true)]
async fn connect_attempt_timeout_closes_silent_sockets() {
    let broker = TestBroker::with_uri_options(&["transport.connectAttemptTimeout=300"]).await;
    let mut silent = RawClient::over(broker.duplex());
    assert_close_time(
        silent.closed_within(Duration::from_secs(2)).await,
        Duration::from_millis(300),
    );
    // A client that does CONNECT in time is unaffected.
    let (mut ok, ack) = RawClient::handshake(broker.duplex(), connect_packet("ok", true, 0)).await;
    assert_eq!(ack.reason, ConnectReason::Success);
    assert_eq!(ok.closed_within(Duration::from_millis(500)).await, None);
    broker.shutdown().await;
}

#[tokio::test(start_paused = true)]
async fn keep_alive_expiry_publishes_the_will() {
    let broker = TestBroker::default().await;
    let (mut watcher, _) =
        RawClient::handshake(broker.duplex(), connect_packet("watcher", true, 0)).await;
    assert_eq!(
        watcher.subscribe(1, &[("will/ka", QoS::AtLeastOnce)]).await,
        [1]
    );
    let mut connect = connect_packet("sleepy", true, 1);
    connect.will = Some(crate::support::will(
        "will/ka",
        b"expired",
        QoS::AtLeastOnce,
        false,
    ));
    let (_c, _) = RawClient::handshake(broker.duplex(), connect).await;
    let start = Instant::now();
    let will = watcher.recv_publish().await;
    assert_eq!(&will.payload[..], b"expired");
    assert_close_time(Some(start.elapsed()), Duration::from_millis(1500));
    broker.shutdown().await;
}
