//! A rumqttc client for the tests that want a real client library.

use std::net::SocketAddr;
use std::time::Duration;

use tokio::sync::mpsc;

use super::STEP;

/// A rumqttc client whose event loop runs in a task; incoming PUBLISH packets arrive on a
/// channel. The loop stops at the first connection error (no silent reconnects).
pub struct Client {
    pub client: rumqttc::AsyncClient,
    publishes: mpsc::UnboundedReceiver<rumqttc::Publish>,
    /// Every other incoming packet (SUBACK, PUBACK ...), to wait for acknowledgements.
    incoming: mpsc::UnboundedReceiver<rumqttc::Packet>,
    pub session_present: bool,
    task: tokio::task::JoinHandle<()>,
}

pub fn options(addr: SocketAddr, client_id: &str) -> rumqttc::MqttOptions {
    let mut o = rumqttc::MqttOptions::new(client_id, addr.ip().to_string(), addr.port());
    o.set_keep_alive(Duration::from_secs(30));
    o.set_max_packet_size(1 << 20, 1 << 20);
    o
}

impl Client {
    pub async fn connect(addr: SocketAddr, client_id: &str) -> Client {
        Client::connect_with(options(addr, client_id)).await
    }

    /// CONNECT with a user name and password, expecting success.
    pub async fn login(addr: SocketAddr, client_id: &str, user: &str, password: &str) -> Client {
        let mut o = options(addr, client_id);
        o.set_credentials(user, password);
        Client::connect_with(o).await
    }

    pub async fn connect_with(options: rumqttc::MqttOptions) -> Client {
        let (client, mut eventloop) = rumqttc::AsyncClient::new(options, 1000);
        let (tx, publishes) = mpsc::unbounded_channel();
        let (incoming_tx, incoming) = mpsc::unbounded_channel();
        let (connack_tx, connack_rx) = tokio::sync::oneshot::channel();
        let task = tokio::spawn(async move {
            let mut connack_tx = Some(connack_tx);
            loop {
                match eventloop.poll().await {
                    Ok(rumqttc::Event::Incoming(rumqttc::Packet::ConnAck(ack))) => {
                        if let Some(t) = connack_tx.take() {
                            let _ = t.send(ack);
                        }
                    }
                    Ok(rumqttc::Event::Incoming(rumqttc::Packet::Publish(p))) => {
                        let _ = tx.send(p);
                    }
                    Ok(rumqttc::Event::Incoming(other)) => {
                        let _ = incoming_tx.send(other);
                    }
                    Ok(_) => {}
                    Err(_) => break,
                }
            }
        });
        let ack = tokio::time::timeout(STEP, connack_rx)
            .await
            .expect("CONNACK in time")
            .expect("connected");
        assert_eq!(ack.code, rumqttc::ConnectReturnCode::Success);
        Client {
            client,
            publishes,
            incoming,
            session_present: ack.session_present,
            task,
        }
    }

    /// The next non-PUBLISH packet matching `pred` (others are skipped).
    pub async fn wait_for(&mut self, pred: impl Fn(&rumqttc::Packet) -> bool) -> rumqttc::Packet {
        let deadline = tokio::time::Instant::now() + STEP;
        loop {
            let p = tokio::time::timeout_at(deadline, self.incoming.recv())
                .await
                .expect("the awaited packet in time")
                .expect("event loop alive");
            if pred(&p) {
                return p;
            }
        }
    }

    /// SUBSCRIBE and wait for the SUBACK; returns its return codes.
    pub async fn subscribe(
        &mut self,
        filter: &str,
        qos: rumqttc::QoS,
    ) -> Vec<rumqttc::SubscribeReasonCode> {
        self.client.subscribe(filter, qos).await.expect("subscribe");
        match self
            .wait_for(|p| matches!(p, rumqttc::Packet::SubAck(_)))
            .await
        {
            rumqttc::Packet::SubAck(s) => s.return_codes,
            _ => unreachable!(),
        }
    }

    pub async fn unsubscribe(&mut self, filter: &str) {
        self.client.unsubscribe(filter).await.expect("unsubscribe");
        self.wait_for(|p| matches!(p, rumqttc::Packet::UnsubAck(_)))
            .await;
    }

    /// PUBLISH and, for QoS 1/2, wait until the broker acknowledged it (PUBACK / PUBCOMP).
    pub async fn publish(&mut self, topic: &str, qos: rumqttc::QoS, retain: bool, payload: &[u8]) {
        self.client
            .publish(topic, qos, retain, payload.to_vec())
            .await
            .expect("publish");
        match qos {
            rumqttc::QoS::AtMostOnce => {}
            rumqttc::QoS::AtLeastOnce => {
                self.wait_for(|p| matches!(p, rumqttc::Packet::PubAck(_)))
                    .await;
            }
            rumqttc::QoS::ExactlyOnce => {
                self.wait_for(|p| matches!(p, rumqttc::Packet::PubComp(_)))
                    .await;
            }
        }
    }

    pub async fn next_publish(&mut self) -> rumqttc::Publish {
        tokio::time::timeout(STEP, self.publishes.recv())
            .await
            .expect("a PUBLISH in time")
            .expect("event loop alive")
    }

    /// Asserts that nothing arrives for `within`.
    pub async fn no_publish_within(&mut self, within: Duration) {
        if let Ok(Some(p)) = tokio::time::timeout(within, self.publishes.recv()).await {
            panic!("unexpected PUBLISH on {}: {:?}", p.topic, p.payload);
        }
    }

    /// Close with DISCONNECT (no will).
    pub async fn disconnect(self) {
        let _ = self.client.disconnect().await;
        let _ = tokio::time::timeout(STEP, self.task).await;
    }

    /// Drop the connection without DISCONNECT (abnormal close: the will is published).
    pub fn kill(self) {
        self.task.abort();
    }
}
