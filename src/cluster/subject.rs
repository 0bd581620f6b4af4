//! MQTT topic <-> NATS subject tokens (cluster-design §3.3). Placeholder with the final API;
//! replaced by the full codec.

use sha2::{Digest, Sha256};
use smallvec::SmallVec;

fn keep(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b == b'_' || b == b'-'
}

/// Append `topic`'s tokens, joined by '.'.
pub fn encode_topic(topic: &str, out: &mut String) {
    for (i, level) in topic.split('/').enumerate() {
        if i > 0 {
            out.push('.');
        }
        if level.is_empty() {
            out.push('%');
            continue;
        }
        for b in level.bytes() {
            if keep(b) {
                out.push(b as char);
            } else {
                out.push_str(&format!("%{b:02X}"));
            }
        }
    }
}

/// `prefix.` + the topic's tokens.
pub fn topic_subject(prefix: &str, topic: &str) -> String {
    let mut out = String::with_capacity(prefix.len() + 1 + topic.len() + 8);
    out.push_str(prefix);
    out.push('.');
    encode_topic(topic, &mut out);
    out
}

/// The subjects a filter's messages arrive on.
pub fn filter_subjects(prefix: &str, filter: &str) -> SmallVec<[String; 2]> {
    let mut out = SmallVec::new();
    let mut base = String::from(prefix);
    let levels: Vec<&str> = filter.split('/').collect();
    for (i, level) in levels.iter().enumerate() {
        if *level == "#" {
            let parent = base.clone();
            base.push_str(".>");
            out.push(base);
            if i > 0 {
                out.push(parent);
            }
            return out;
        }
        base.push('.');
        if *level == "+" {
            base.push('*');
        } else {
            encode_topic(level, &mut base);
        }
    }
    out.push(base);
    out
}

/// A KV key for the retained message of `topic`.
pub fn retained_key(topic: &str) -> String {
    let mut out = String::new();
    encode_topic(topic, &mut out);
    let out = out.replace('%', "=");
    if out.len() > 240 {
        return format!("h.{}", hex(&Sha256::digest(topic.as_bytes())));
    }
    out
}

/// The KV key of a client id's session record.
pub fn client_key(client_id: &str) -> String {
    hex(&Sha256::digest(client_id.as_bytes())[..16])
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}
