//! Decoder and encoder. (Being written: issue 3.)

use bytes::BytesMut;

use super::packet::{Packet, ProtocolVersion};

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DecodeError {
    #[error("malformed packet: {0}")]
    Malformed(&'static str),
    #[error("packet of {size} bytes exceeds the maximum of {max}")]
    TooLarge { size: usize, max: usize },
    #[error("unsupported protocol version {0}")]
    UnsupportedProtocolVersion(u8),
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EncodeError {
    #[error("packet too large to encode")]
    TooLarge,
}

/// Decode one packet from the front of `buf`, consuming its bytes. `Ok(None)`: need more bytes.
/// `version` is `None` until CONNECT has been decoded. `max_size` bounds the remaining length.
pub fn decode(
    buf: &mut BytesMut,
    version: Option<ProtocolVersion>,
    max_size: usize,
) -> Result<Option<Packet>, DecodeError> {
    let _ = (buf, version, max_size);
    Err(DecodeError::Malformed("codec not implemented yet"))
}

/// Append the encoding of `packet` for protocol `version` to `buf`.
pub fn encode(
    packet: &Packet,
    version: ProtocolVersion,
    buf: &mut BytesMut,
) -> Result<(), EncodeError> {
    let _ = (packet, version, buf);
    Err(EncodeError::TooLarge)
}
