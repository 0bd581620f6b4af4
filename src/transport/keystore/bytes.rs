//! A bounds-checked reader over a key store's bytes, in Java's `DataInputStream` encoding
//! (big-endian integers, `writeUTF` strings). Every read checks what is left, so a damaged or
//! hostile file ends in an error, never a panic or a huge allocation.

use super::KeyStoreError;

pub(super) struct Reader<'a> {
    bytes: &'a [u8],
    pos: usize,
}

impl<'a> Reader<'a> {
    pub(super) fn new(bytes: &'a [u8]) -> Reader<'a> {
        Reader { bytes, pos: 0 }
    }

    /// Bytes read so far.
    pub(super) fn position(&self) -> usize {
        self.pos
    }

    /// The next `len` bytes; `what` names the field for the error.
    pub(super) fn take(
        &mut self,
        len: usize,
        what: &'static str,
    ) -> Result<&'a [u8], KeyStoreError> {
        let end = self
            .pos
            .checked_add(len)
            .filter(|end| *end <= self.bytes.len())
            .ok_or(KeyStoreError::Truncated { what })?;
        let out = self
            .bytes
            .get(self.pos..end)
            .ok_or(KeyStoreError::Truncated { what })?;
        self.pos = end;
        Ok(out)
    }

    fn array<const N: usize>(&mut self, what: &'static str) -> Result<[u8; N], KeyStoreError> {
        let mut out = [0u8; N];
        out.copy_from_slice(self.take(N, what)?);
        Ok(out)
    }

    pub(super) fn u32(&mut self, what: &'static str) -> Result<u32, KeyStoreError> {
        Ok(u32::from_be_bytes(self.array(what)?))
    }

    pub(super) fn u64(&mut self, what: &'static str) -> Result<u64, KeyStoreError> {
        Ok(u64::from_be_bytes(self.array(what)?))
    }

    /// A `u32` length followed by that many bytes.
    pub(super) fn sized(&mut self, what: &'static str) -> Result<&'a [u8], KeyStoreError> {
        let len = self.u32(what)?;
        let len = usize::try_from(len).map_err(|_| KeyStoreError::Truncated { what })?;
        self.take(len, what)
    }

    /// A string written by Java's `DataOutputStream.writeUTF`: a `u16` byte length, then
    /// modified UTF-8 (NUL as C0 80, characters outside the BMP as two 3-byte surrogates).
    /// Aliases and certificate types are ASCII in practice; anything else is read lossily.
    pub(super) fn utf(&mut self, what: &'static str) -> Result<String, KeyStoreError> {
        let len = u16::from_be_bytes(self.array(what)?);
        let raw = self.take(usize::from(len), what)?;
        Ok(decode_modified_utf8(raw))
    }
}

fn decode_modified_utf8(raw: &[u8]) -> String {
    if let Ok(text) = std::str::from_utf8(raw) {
        return text.to_owned();
    }
    // Decode to UTF-16 code units, then let std pair the surrogates.
    let mut units = Vec::with_capacity(raw.len());
    let mut i = 0;
    while let Some(&b0) = raw.get(i) {
        let byte = |k: usize| u16::from(raw.get(i + k).copied().unwrap_or(0) & 0x3f);
        let (unit, width) = match b0 {
            0x00..=0x7f => (u16::from(b0), 1),
            0xc0..=0xdf => ((u16::from(b0 & 0x1f) << 6) | byte(1), 2),
            0xe0..=0xef => ((u16::from(b0 & 0x0f) << 12) | (byte(1) << 6) | byte(2), 3),
            _ => (0xfffd, 1),
        };
        units.push(unit);
        i += width;
    }
    String::from_utf16_lossy(&units)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_big_endian_and_java_strings() {
        let bytes = [0, 0, 0, 7, 0, 3, b'a', b'b', b'c', 0, 2, 0xc0, 0x80];
        let mut r = Reader::new(&bytes);
        assert_eq!(r.u32("n").ok(), Some(7));
        assert_eq!(r.utf("s").ok().as_deref(), Some("abc"));
        assert_eq!(r.utf("nul").ok().as_deref(), Some("\0"));
        assert!(matches!(
            r.u32("end"),
            Err(KeyStoreError::Truncated { what: "end" })
        ));
    }

    #[test]
    fn a_length_beyond_the_file_is_an_error() {
        let bytes = [0xff, 0xff, 0xff, 0xff, 1, 2];
        assert!(Reader::new(&bytes).sized("cert").is_err());
    }

    #[test]
    fn supplementary_characters_pair_up() {
        // U+1F600 as modified UTF-8: surrogates D83D DE00, three bytes each.
        let raw = [0xed, 0xa0, 0xbd, 0xed, 0xb8, 0x80];
        assert_eq!(decode_modified_utf8(&raw), "\u{1F600}");
    }
}
