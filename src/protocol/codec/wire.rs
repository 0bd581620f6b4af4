//! Wire primitives (MQTT 5.0 section 1.5): big-endian integers, variable byte integers, length
//! prefixed UTF-8 strings and binary data, the fixed header. Reading never copies binary data:
//! it slices the packet's [`Bytes`].

use bytes::{BufMut, Bytes, BytesMut};

use super::error::{DecodeError, EncodeError};

/// Largest value of a variable byte integer (4 bytes), hence of a remaining length.
pub(super) const MAX_VAR_INT: usize = 268_435_455;

/// The remaining length of a packet and how many bytes the fixed header took.
#[derive(Debug, Clone, Copy)]
pub(super) struct FixedHeader {
    pub header_len: usize,
    pub remaining_len: usize,
}

/// Reads the fixed header at the front of `buf` (the first byte is the caller's business).
/// `Ok(None)` when `buf` ends inside it.
pub(super) fn read_fixed_header(buf: &[u8]) -> Result<Option<FixedHeader>, DecodeError> {
    let mut remaining_len = 0usize;
    for index in 0..4 {
        let Some(&byte) = buf.get(1 + index) else {
            return Ok(None);
        };
        remaining_len |= usize::from(byte & 0x7F) << (7 * index);
        if byte & 0x80 == 0 {
            return Ok(Some(FixedHeader {
                header_len: 2 + index,
                remaining_len,
            }));
        }
    }
    Err(DecodeError::Malformed {
        packet: "fixed header",
        reason: "the remaining length is longer than 4 bytes",
    })
}

/// A cursor over one packet's body. Every read checks bounds and reports the field it was
/// reading, so errors say what was wrong.
pub(super) struct Reader<'a> {
    bytes: &'a Bytes,
    pos: usize,
    end: usize,
    pub packet: &'static str,
}

impl<'a> Reader<'a> {
    pub fn new(bytes: &'a Bytes, packet: &'static str) -> Self {
        Reader {
            bytes,
            pos: 0,
            end: bytes.len(),
            packet,
        }
    }

    pub fn is_empty(&self) -> bool {
        self.pos >= self.end
    }

    pub fn malformed(&self, reason: &'static str) -> DecodeError {
        DecodeError::Malformed {
            packet: self.packet,
            reason,
        }
    }

    pub fn protocol_error(&self, reason: &'static str) -> DecodeError {
        DecodeError::ProtocolError {
            packet: self.packet,
            reason,
        }
    }

    fn truncated(&self, field: &'static str) -> DecodeError {
        DecodeError::Truncated {
            packet: self.packet,
            field,
        }
    }

    /// The next `len` bytes as a slice, advancing past them.
    fn take_slice(&mut self, len: usize, field: &'static str) -> Result<&'a [u8], DecodeError> {
        let start = self.pos;
        let end = start
            .checked_add(len)
            .filter(|&end| end <= self.end)
            .ok_or_else(|| self.truncated(field))?;
        self.pos = end;
        // The bounds were checked just above against `self.end <= self.bytes.len()`.
        self.bytes
            .get(start..end)
            .ok_or_else(|| self.truncated(field))
    }

    /// A reader over the next `len` bytes (a property block), advancing this one past them.
    pub fn sub_reader(
        &mut self,
        len: usize,
        field: &'static str,
    ) -> Result<Reader<'a>, DecodeError> {
        let start = self.pos;
        self.take_slice(len, field)?;
        Ok(Reader {
            bytes: self.bytes,
            pos: start,
            end: self.pos,
            packet: self.packet,
        })
    }

    pub fn u8(&mut self, field: &'static str) -> Result<u8, DecodeError> {
        let slice = self.take_slice(1, field)?;
        Ok(slice.first().copied().unwrap_or_default())
    }

    pub fn u16(&mut self, field: &'static str) -> Result<u16, DecodeError> {
        let slice = self.take_slice(2, field)?;
        let mut array = [0u8; 2];
        array.copy_from_slice(slice);
        Ok(u16::from_be_bytes(array))
    }

    pub fn u32(&mut self, field: &'static str) -> Result<u32, DecodeError> {
        let slice = self.take_slice(4, field)?;
        let mut array = [0u8; 4];
        array.copy_from_slice(slice);
        Ok(u32::from_be_bytes(array))
    }

    /// A variable byte integer (at most 4 bytes, MQTT 5.0 1.5.5).
    pub fn var_int(&mut self, field: &'static str) -> Result<u32, DecodeError> {
        let mut value = 0u32;
        for index in 0..4 {
            let byte = self.u8(field)?;
            value |= u32::from(byte & 0x7F) << (7 * index);
            if byte & 0x80 == 0 {
                return Ok(value);
            }
        }
        Err(self.malformed("a variable byte integer is longer than 4 bytes"))
    }

    /// A packet identifier, which must not be 0 (MQTT-2.3.1-1).
    pub fn packet_id(&mut self) -> Result<u16, DecodeError> {
        let id = self.u16("packet identifier")?;
        if id == 0 {
            return Err(self.malformed("the packet identifier is 0 (it must be 1 to 65535)"));
        }
        Ok(id)
    }

    /// A length-prefixed UTF-8 string without U+0000, borrowed from the packet.
    pub fn str(&mut self, field: &'static str) -> Result<&'a str, DecodeError> {
        let len = usize::from(self.u16(field)?);
        let raw = self.take_slice(len, field)?;
        let invalid = || DecodeError::InvalidUtf8 {
            packet: self.packet,
            field,
        };
        // NUL is ASCII, so a byte search finds exactly the U+0000 code points.
        if raw.contains(&0) {
            return Err(invalid());
        }
        std::str::from_utf8(raw).map_err(|_| invalid())
    }

    pub fn string(&mut self, field: &'static str) -> Result<String, DecodeError> {
        self.str(field).map(str::to_owned)
    }

    /// Length-prefixed binary data, sliced from the packet without copying.
    pub fn binary(&mut self, field: &'static str) -> Result<Bytes, DecodeError> {
        let len = usize::from(self.u16(field)?);
        let start = self.pos;
        self.take_slice(len, field)?;
        Ok(self.bytes.slice(start..self.pos))
    }

    /// Everything up to the end (a PUBLISH payload), without copying.
    pub fn rest(&mut self) -> Bytes {
        let start = self.pos;
        self.pos = self.end;
        self.bytes.slice(start..self.end)
    }

    /// Refuses bytes beyond the packet's declared content.
    pub fn finish(&self) -> Result<(), DecodeError> {
        if self.is_empty() {
            Ok(())
        } else {
            Err(self.malformed("unexpected bytes after the end of the packet's content"))
        }
    }
}

/// Bytes that `value` takes as a variable byte integer.
pub(super) fn var_int_len(value: usize) -> usize {
    match value {
        0..=127 => 1,
        128..=16_383 => 2,
        16_384..=2_097_151 => 3,
        _ => 4,
    }
}

/// Appends `value` (at most [`MAX_VAR_INT`], checked by the caller) as a variable byte integer.
pub(super) fn put_var_int(buf: &mut BytesMut, value: usize) {
    let mut rest = value;
    loop {
        // `rest % 128` fits in 7 bits.
        let mut byte = (rest % 128) as u8;
        rest /= 128;
        if rest > 0 {
            byte |= 0x80;
        }
        buf.put_u8(byte);
        if rest == 0 {
            return;
        }
    }
}

/// Appends a 16-bit length prefix and `data`, refusing data longer than 65535 bytes.
pub(super) fn put_prefixed(
    buf: &mut BytesMut,
    data: &[u8],
    packet: &'static str,
    field: &'static str,
) -> Result<(), EncodeError> {
    let len = u16::try_from(data.len()).map_err(|_| EncodeError::FieldTooLong {
        packet,
        field,
        len: data.len(),
    })?;
    buf.put_u16(len);
    buf.put_slice(data);
    Ok(())
}

/// Bytes a length-prefixed string or binary field takes.
pub(super) fn prefixed_len(data: &[u8]) -> usize {
    2 + data.len()
}
