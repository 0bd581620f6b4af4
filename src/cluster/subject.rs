//! Reversible MQTT topic <-> NATS subject encoding, and the NATS KV keys derived from topics and
//! client ids (docs/chaos.md has the table; the cluster design's section 3.3).
//!
//! A topic level becomes one NATS token: the bytes `[A-Za-z0-9_-]` stay, every other byte of the
//! level's UTF-8 becomes `%XX` (uppercase hex), and an empty level becomes the token `%` alone
//! (not a valid escape, so it cannot be confused with one). Levels are joined by `.`, so `a/b c`
//! is `a.b%20c` and `/x` is `%.x`. Unlike nats-server's own MQTT mapping this accepts spaces,
//! `.`, `*`, `>` and any UTF-8, and no output token is ever empty or holds `.`, ` `, `*`, `>` or
//! a tab (what NATS forbids in a subject token).
//!
//! The encoding is canonical: [`decode_topic`] accepts exactly what [`encode_topic`] produces
//! (uppercase hex only, no escape of a byte that would be kept, no escaped `/`), so two
//! different topics never share a subject and every subject maps back to one topic.
//!
//! Wildcards ([`filter_subjects`]): `+` -> `*`; `#` -> `>`, plus the parent subject, since MQTT's
//! `a/#` also matches `a` (MQTT 5 4.7.1.2) and NATS `>` needs at least one token. One rule NATS
//! cannot express: a filter starting with a wildcard must not match a topic starting with `$`
//! (MQTT 5 4.7.2-1). `$` is encoded `%24`, and `*`/`>` match that token, so a subscriber's node
//! receives such messages and its local matcher (`protocol::topic::matches`) drops them.
//!
//! Cost: these run per publish; each writes straight into one output `String` sized up front
//! (one allocation, none per level).

use sha2::{Digest, Sha256};
use smallvec::SmallVec;

/// The escape character of subject tokens (`%XX`, and `%` alone for an empty level).
const SUBJECT_ESCAPE: u8 = b'%';
/// The escape character of KV keys: NATS KV keys allow only `[-/_=.a-zA-Z0-9]`, so `%` is
/// not available; `=` plays the same role there.
const KEY_ESCAPE: u8 = b'=';
/// Longest retained key written as an encoded topic; longer topics are stored under a hash.
pub const MAX_KEY_LEN: usize = 240;
/// Prefix of a retained key that is the encoded topic.
const TOPIC_KEY_PREFIX: &str = "t.";
/// Prefix of a retained key that is the SHA-256 of a long topic (the full topic is in the value).
const HASHED_KEY_PREFIX: &str = "h.";

const HEX_UPPER: &[u8; 16] = b"0123456789ABCDEF";
const HEX_LOWER: &[u8; 16] = b"0123456789abcdef";

/// A byte that stays as it is in a token.
fn is_kept(byte: u8) -> bool {
    byte.is_ascii_alphanumeric() || byte == b'_' || byte == b'-'
}

/// Length in bytes of the encoded level `level`.
fn encoded_level_len(level: &str) -> usize {
    if level.is_empty() {
        return 1;
    }
    level.bytes().map(|b| if is_kept(b) { 1 } else { 3 }).sum()
}

/// Length in bytes of the tokens of `topic` joined by `.`.
fn encoded_len(topic: &str) -> usize {
    topic
        .split('/')
        .map(|level| encoded_level_len(level) + 1)
        .sum::<usize>()
        - 1
}

fn push_level(level: &str, escape: u8, out: &mut String) {
    if level.is_empty() {
        out.push(escape as char);
        return;
    }
    for byte in level.bytes() {
        if is_kept(byte) {
            out.push(byte as char);
        } else {
            out.push(escape as char);
            out.push(HEX_UPPER[usize::from(byte >> 4)] as char);
            out.push(HEX_UPPER[usize::from(byte & 0x0f)] as char);
        }
    }
}

fn push_topic(topic: &str, escape: u8, out: &mut String) {
    for (i, level) in topic.split('/').enumerate() {
        if i > 0 {
            out.push('.');
        }
        push_level(level, escape, out);
    }
}

/// Appends the NATS tokens of the MQTT topic `topic` to `out`, joined by `.` (one token per
/// level; see the module docs). The topic `""` (which MQTT forbids) is one empty level: `%`.
pub fn encode_topic(topic: &str, out: &mut String) {
    out.reserve(encoded_len(topic));
    push_topic(topic, SUBJECT_ESCAPE, out);
}

/// The subject `<prefix>.<tokens of topic>`, e.g. `topic_subject("fmq.t", "a/b")` is
/// `fmq.t.a.b`. `prefix` is a valid subject of its own (not checked); an empty prefix gives the
/// tokens alone.
/// The longest subject ferromq sends: nats-server refuses a protocol line longer than its
/// `max_control_line` (4 KiB by default) and drops the connection, and the line carries the
/// subject, a reply inbox and sizes besides.
pub const MAX_SUBJECT_LEN: usize = 3_584;

/// The longest prefix a topic's subject gets (`fmq.m.<shard>`, shards up to 64, or `fmq.t`).
const LONGEST_PREFIX: &str = "fmq.m.64";

/// Whether `topic`'s subjects stay within [`MAX_SUBJECT_LEN`] (escaping lengthens a topic:
/// a space becomes three bytes).
pub fn topic_fits(topic: &str) -> bool {
    topic_subject_bytes(topic) <= MAX_SUBJECT_LEN
}

/// The length of `topic`'s longest subject (behind the longest prefix, escaped), which
/// [`topic_fits`] compares with [`MAX_SUBJECT_LEN`].
pub fn topic_subject_bytes(topic: &str) -> usize {
    LONGEST_PREFIX.len() + 1 + encoded_len(topic)
}

/// Whether every subject of `filter` stays within [`MAX_SUBJECT_LEN`].
pub fn filter_fits(filter: &str) -> bool {
    filter_subjects(LONGEST_PREFIX, filter)
        .iter()
        .all(|s| s.len() <= MAX_SUBJECT_LEN)
}

pub fn topic_subject(prefix: &str, topic: &str) -> String {
    let mut out = String::with_capacity(prefix.len() + 1 + encoded_len(topic));
    if !prefix.is_empty() {
        out.push_str(prefix);
        out.push('.');
    }
    push_topic(topic, SUBJECT_ESCAPE, &mut out);
    debug_assert!(is_valid_subject(&out));
    out
}

/// The MQTT topic of `tokens` (the part of a subject after its prefix, as produced by
/// [`encode_topic`]). `None` for anything [`encode_topic`] cannot produce: an empty token, a
/// byte outside `[A-Za-z0-9_-%.]`, a malformed or lowercase escape, an escape of a byte that is
/// kept as it is or of `/`, or bytes that are not UTF-8.
pub fn decode_topic(tokens: &str) -> Option<String> {
    decode_with(tokens, SUBJECT_ESCAPE)
}

fn hex_value(digit: u8) -> Option<u8> {
    match digit {
        b'0'..=b'9' => Some(digit - b'0'),
        b'A'..=b'F' => Some(digit - b'A' + 10),
        _ => None,
    }
}

fn decode_with(tokens: &str, escape: u8) -> Option<String> {
    let mut bytes = Vec::with_capacity(tokens.len());
    for (i, token) in tokens.split('.').enumerate() {
        if i > 0 {
            bytes.push(b'/');
        }
        let token = token.as_bytes();
        if token == [escape] {
            continue; // an empty level
        }
        if token.is_empty() {
            return None;
        }
        let mut rest = token;
        while let Some((&byte, tail)) = rest.split_first() {
            if is_kept(byte) {
                bytes.push(byte);
                rest = tail;
            } else if byte == escape {
                let [high, low, ref tail @ ..] = *tail else {
                    return None;
                };
                let value = (hex_value(high)? << 4) | hex_value(low)?;
                if is_kept(value) || value == b'/' {
                    return None;
                }
                bytes.push(value);
                rest = tail;
            } else {
                return None;
            }
        }
    }
    String::from_utf8(bytes).ok()
}

/// The NATS subjects (under `prefix`) that together match exactly the topics the MQTT filter
/// `filter` matches, except topics starting with `$` under a leading wildcard (see the module
/// docs): `+` -> `*`, and a trailing `#` -> `>` plus the parent subject (`a/#` -> `p.a.>` and
/// `p.a`; `#` alone -> `p.>` only, since every topic has at least one token).
///
/// `filter` is a valid MQTT filter without a `$share/<group>/` prefix (see
/// `protocol::topic::validate_filter`); for an invalid one (empty, `#` not last, a wildcard
/// sharing a level with other characters) the result is empty, never an invalid subject.
pub fn filter_subjects(prefix: &str, filter: &str) -> SmallVec<[String; 2]> {
    let mut subjects = SmallVec::new();
    if !is_valid_filter(filter) {
        return subjects;
    }
    let (levels, multi) = match filter.strip_suffix('#') {
        Some("") => (None, true),
        Some(parent) => (Some(parent.strip_suffix('/').unwrap_or(parent)), true),
        None => (Some(filter), false),
    };
    let mut base = String::with_capacity(
        prefix.len() + 1 + levels.map_or(0, encoded_len) + if multi { 2 } else { 0 },
    );
    base.push_str(prefix);
    if let Some(levels) = levels {
        for level in levels.split('/') {
            if !base.is_empty() {
                base.push('.');
            }
            if level == "+" {
                base.push('*');
            } else {
                push_level(level, SUBJECT_ESCAPE, &mut base);
            }
        }
    }
    if multi {
        let mut wildcard = base.clone();
        if !wildcard.is_empty() {
            wildcard.push('.');
        }
        wildcard.push('>');
        debug_assert!(is_valid_subject(&wildcard));
        subjects.push(wildcard);
        if levels.is_none() {
            return subjects;
        }
    }
    debug_assert!(is_valid_subject(&base));
    subjects.push(base);
    subjects
}

/// A filter whose wildcards each fill a whole level, with `#` only last (MQTT 5 4.7.1).
fn is_valid_filter(filter: &str) -> bool {
    if filter.is_empty() {
        return false;
    }
    let mut levels = filter.split('/').peekable();
    while let Some(level) = levels.next() {
        let last = levels.peek().is_none();
        match level {
            "+" => {}
            "#" if last => {}
            _ if level.contains(['+', '#']) => return false,
            _ => {}
        }
    }
    true
}

/// The `FMQ_RETAIN` key of `topic`: `t.` followed by the topic's tokens with `=` as the escape
/// character (NATS KV keys allow only `[-/_=.a-zA-Z0-9]`), so keys mirror subjects and a
/// subtree can be watched with `t.a.>`. When that is longer than [`MAX_KEY_LEN`] bytes:
/// `h.` + the 64 hex digits of the topic's SHA-256, and the value must carry the full topic.
pub fn retained_key(topic: &str) -> String {
    let len = TOPIC_KEY_PREFIX.len() + encoded_len(topic);
    if len > MAX_KEY_LEN {
        let digest = Sha256::digest(topic.as_bytes());
        let mut key = String::with_capacity(HASHED_KEY_PREFIX.len() + 2 * digest.len());
        key.push_str(HASHED_KEY_PREFIX);
        push_hex(&digest, &mut key);
        return key;
    }
    let mut key = String::with_capacity(len);
    key.push_str(TOPIC_KEY_PREFIX);
    push_topic(topic, KEY_ESCAPE, &mut key);
    key
}

/// The topic of a [`retained_key`]; `None` for a hashed key (its value has the topic) or a
/// malformed one.
pub fn decode_retained_key(key: &str) -> Option<String> {
    decode_with(key.strip_prefix(TOPIC_KEY_PREFIX)?, KEY_ESCAPE)
}

/// The key of a client id in `FMQ_SESS` and in `fmq.kick.<key>`: 32 lowercase hex digits, the
/// first 16 bytes of the client id's SHA-256 (client ids are any UTF-8, up to 65,535 bytes).
pub fn client_key(client_id: &str) -> String {
    let digest = Sha256::digest(client_id.as_bytes());
    let mut key = String::with_capacity(32);
    push_hex(&digest[..16], &mut key);
    key
}

fn push_hex(bytes: &[u8], out: &mut String) {
    for byte in bytes {
        out.push(HEX_LOWER[usize::from(byte >> 4)] as char);
        out.push(HEX_LOWER[usize::from(byte & 0x0f)] as char);
    }
}

/// A NATS subject token: not empty, and none of `.`, ` `, `*`, `>`, tab (or other whitespace)
/// unless it is exactly the wildcard `*` or `>`.
pub fn is_valid_token(token: &str) -> bool {
    token == "*"
        || token == ">"
        || (!token.is_empty()
            && !token
                .bytes()
                .any(|b| matches!(b, b'.' | b'*' | b'>') || b.is_ascii_whitespace()))
}

/// A NATS subject: valid tokens joined by `.`, `>` only last.
pub fn is_valid_subject(subject: &str) -> bool {
    let mut tokens = subject.split('.').peekable();
    while let Some(token) = tokens.next() {
        if !is_valid_token(token) || (token == ">" && tokens.peek().is_some()) {
            return false;
        }
    }
    true
}

#[cfg(test)]
#[path = "subject_tests.rs"]
mod tests;
