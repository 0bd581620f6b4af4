//! Received chunks: `complete_packets` finds exactly the whole packets at the front of a
//! buffer cut anywhere, and `decode_frozen` reads from such a chunk what `decode` reads from
//! the buffer itself.

use bytes::{Bytes, BytesMut};
use ferromq::protocol::codec::{complete_packets, decode_frozen, take_plain_puback};
use ferromq::protocol::*;
use proptest::prelude::*;

use crate::strategies::{packet, version};
use crate::{encoded, MAX};

/// Packets a client sends after its CONNECT, in one version.
fn stream() -> impl Strategy<Value = (ProtocolVersion, Vec<Packet>)> {
    version().prop_flat_map(|version| {
        let after_connect = packet(version)
            .prop_filter("CONNECT comes first", |p| !matches!(p, Packet::Connect(_)));
        (Just(version), prop::collection::vec(after_connect, 1..8))
    })
}

proptest! {
    #[test]
    fn complete_packets_are_the_whole_packets_before_any_cut(
        (version, packets) in stream(),
        cut_fraction in 0.0f64..=1.0,
    ) {
        let mut wire = BytesMut::new();
        let mut ends = Vec::new();
        for p in &packets {
            wire.extend_from_slice(&encoded(p, version));
            ends.push((wire.len(), matches!(p, Packet::Publish(_))));
        }
        let cut = (wire.len() as f64 * cut_fraction) as usize;
        let found = complete_packets(&wire[..cut], MAX, usize::MAX).expect("valid packets");
        let whole: Vec<_> = ends.iter().filter(|(end, _)| *end <= cut).collect();
        prop_assert_eq!(found.bytes, whole.last().map_or(0, |(end, _)| *end));
        prop_assert_eq!(found.publishes, whole.iter().filter(|(_, publish)| *publish).count());

        let mut chunk = Bytes::copy_from_slice(&wire[..found.bytes]);
        let mut buffer = BytesMut::from(&wire[..found.bytes]);
        for _ in 0..whole.len() {
            let frozen = decode_frozen(&mut chunk, version, MAX).expect("decodes").expect("whole");
            let mutable = decode(&mut buffer, Some(version), MAX).expect("decodes").expect("whole");
            prop_assert_eq!(frozen, mutable);
        }
        prop_assert!(chunk.is_empty() && buffer.is_empty());
        prop_assert_eq!(decode_frozen(&mut chunk, version, MAX), Ok(None));
    }

    #[test]
    fn complete_packets_come_in_groups_of_at_most_max_bytes_or_one_larger_packet(
        (version, packets) in stream(),
        max_bytes in 1usize..600,
    ) {
        let mut wire = Vec::new();
        let mut ends = vec![0];
        for p in &packets {
            wire.extend_from_slice(&encoded(p, version));
            ends.push(wire.len());
        }
        let mut start = 0;
        while start < wire.len() {
            let found = complete_packets(&wire[start..], MAX, max_bytes).expect("valid packets");
            let end = start + found.bytes;
            prop_assert!(ends.contains(&end), "a group ends at a packet's end");
            let packets_in_group = ends.iter().filter(|e| **e > start && **e <= end).count();
            prop_assert!(
                found.bytes <= max_bytes || packets_in_group == 1,
                "{} bytes in {} packets against {}", found.bytes, packets_in_group, max_bytes
            );
            let next_packet_fits = ends.iter().find(|e| **e > end).is_some_and(|next| next - start <= max_bytes);
            prop_assert!(!next_packet_fits, "the group stopped before a packet that fits");
            start = end;
        }
    }
}

#[test]
fn a_bad_fixed_header_is_an_error_only_when_nothing_complete_precedes_it() {
    let ping = [0xC0, 0x00];
    let five_byte_length = [0x30, 0xFF, 0xFF, 0xFF, 0xFF, 0x01];
    assert!(complete_packets(&five_byte_length, MAX, usize::MAX).is_err());
    let after_ping = [&ping[..], &five_byte_length[..]].concat();
    let found = complete_packets(&after_ping, MAX, usize::MAX).expect("the PINGREQ comes first");
    assert_eq!((found.bytes, found.publishes), (2, 0));
    assert!(complete_packets(&after_ping[found.bytes..], MAX, usize::MAX).is_err());
}

#[test]
fn a_packet_above_the_maximum_is_too_large_before_it_arrives() {
    // A PUBLISH announcing 200 bytes, 3 of them here, against a maximum of 100.
    let header = [0x30, 0xC8, 0x01, 0, 1, b'a'];
    assert_eq!(
        complete_packets(&header, 100, usize::MAX),
        Err(DecodeError::TooLarge {
            size: 200,
            max: 100
        })
    );
    assert_eq!(
        complete_packets(&header[..2], 100, usize::MAX).map(|f| f.bytes),
        Ok(0)
    );
}

#[test]
fn a_bad_packet_type_is_left_to_the_decoder() {
    // Type 0 is reserved: framed like any packet, refused when decoded.
    let reserved = [0x00, 0x00];
    assert_eq!(
        complete_packets(&reserved, MAX, usize::MAX).map(|f| f.bytes),
        Ok(2)
    );
    let mut chunk = Bytes::copy_from_slice(&reserved);
    assert!(decode_frozen(&mut chunk, ProtocolVersion::V5, MAX).is_err());
}

proptest! {
    /// The PUBACK fast path takes exactly what `decode_frozen` decodes as a PUBACK of that id
    /// with reason Success and no properties, and leaves everything else untouched.
    #[test]
    fn a_plain_puback_is_taken_as_the_decoder_reads_it(
        version in version(),
        head in proptest::sample::select(vec![0x40u8, 0x41, 0x42, 0x50, 0x62]),
        len in 0u8..5,
        rest in proptest::collection::vec(any::<u8>(), 0..6),
    ) {
        let mut bytes = vec![head, len];
        bytes.extend_from_slice(&rest);
        let mut fast = Bytes::from(bytes.clone());
        let mut slow = Bytes::from(bytes);
        let taken = take_plain_puback(&mut fast);
        match taken {
            Some(id) => {
                let decoded = decode_frozen(&mut slow, version, MAX);
                prop_assert_eq!(decoded, Ok(Some(Packet::PubAck(Ack::new(id)))));
                prop_assert_eq!(fast, slow);
            }
            None => prop_assert_eq!(fast, slow),
        }
    }
}

#[test]
fn a_plain_puback_is_taken_and_others_are_left() {
    let mut buf = Bytes::from_static(&[0x40, 0x02, 0x01, 0x02, 0x40, 0x02, 0x00, 0x00]);
    assert_eq!(take_plain_puback(&mut buf), Some(0x0102));
    // Packet id 0 is malformed: left to the decoder, which says so.
    assert_eq!(take_plain_puback(&mut buf), None);
    assert_eq!(buf.len(), 4);
    // With a reason code (MQTT 5): left to the decoder.
    let mut with_reason = Bytes::from_static(&[0x40, 0x03, 0x00, 0x07, 0x10]);
    assert_eq!(take_plain_puback(&mut with_reason), None);
    // Not complete yet.
    let mut partial = Bytes::from_static(&[0x40, 0x02, 0x00]);
    assert_eq!(take_plain_puback(&mut partial), None);
}
