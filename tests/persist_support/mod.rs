//! Shared by the persist tests: a raw MQTT 3.1.1 client that tolerates the broker vanishing.
#![allow(dead_code)] // each test binary uses a different subset

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use ferromq::protocol::{
    decode, encode, Connect, ConnectReason, Packet, ProtocolVersion, Publish, QoS,
};

/// A minimal error-tolerant MQTT 3.1.1 client (the broker may vanish at any byte).
pub struct Wire {
    stream: TcpStream,
    buf: BytesMut,
}

impl Wire {
    /// Connect and CONNECT, retrying while the broker (re)starts.
    pub async fn connect(addr: SocketAddr, client_id: &str, clean: bool) -> Wire {
        Wire::connect_with(addr, connect_packet(client_id, clean)).await
    }

    /// Connect and send `connect`, retrying while the broker (re)starts, until a CONNACK
    /// accepting it.
    pub async fn connect_with(addr: SocketAddr, connect: Connect) -> Wire {
        let give_up = Instant::now() + Duration::from_secs(15);
        loop {
            assert!(Instant::now() < give_up, "broker did not come back");
            if let Ok(mut wire) = Wire::try_connect(addr, &connect).await {
                match wire.recv(Duration::from_secs(2)).await {
                    Ok(Some(Packet::ConnAck(ack))) if ack.reason == ConnectReason::Success => {
                        return wire
                    }
                    Ok(Some(Packet::ConnAck(ack))) => panic!("CONNECT refused: {ack:?}"),
                    _ => {}
                }
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    async fn try_connect(addr: SocketAddr, connect: &Connect) -> std::io::Result<Wire> {
        let stream = TcpStream::connect(addr).await?;
        let mut wire = Wire {
            stream,
            buf: BytesMut::new(),
        };
        wire.send(&Packet::Connect(Box::new(connect.clone())))
            .await?;
        Ok(wire)
    }

    pub async fn send(&mut self, packet: &Packet) -> std::io::Result<()> {
        let mut out = BytesMut::new();
        encode(packet, ProtocolVersion::V311, &mut out)
            .map_err(|e| std::io::Error::other(e.to_string()))?;
        self.stream.write_all(&out).await
    }

    /// The next packet; `Ok(None)` on timeout; `Err` when the connection is gone.
    pub async fn recv(&mut self, within: Duration) -> std::io::Result<Option<Packet>> {
        let deadline = tokio::time::Instant::now() + within;
        loop {
            match decode(&mut self.buf, Some(ProtocolVersion::V311), usize::MAX) {
                Ok(Some(p)) => return Ok(Some(p)),
                Ok(None) => {}
                Err(e) => return Err(std::io::Error::other(e.to_string())),
            }
            match tokio::time::timeout_at(deadline, self.stream.read_buf(&mut self.buf)).await {
                Err(_) => return Ok(None),
                Ok(Ok(0)) => return Err(std::io::ErrorKind::UnexpectedEof.into()),
                Ok(Err(e)) => return Err(e),
                Ok(Ok(_)) => {}
            }
        }
    }
}

/// A 3.1.1 CONNECT without credentials or will, keep-alive off.
pub fn connect_packet(client_id: &str, clean: bool) -> Connect {
    Connect {
        protocol: ProtocolVersion::V311,
        client_id: client_id.into(),
        clean_start: clean,
        keep_alive_secs: 0,
        username: None,
        password: None,
        will: None,
        properties: None,
    }
}

/// A QoS 1 PUBLISH whose payload is `number` (4 bytes, big endian).
pub fn numbered_publish(topic: &str, number: u32, packet_id: u16) -> Packet {
    Packet::Publish(Publish {
        dup: false,
        qos: QoS::AtLeastOnce,
        retain: false,
        topic: topic.into(),
        packet_id: Some(packet_id),
        payload: Bytes::from(number.to_be_bytes().to_vec()),
        properties: None,
    })
}
