//! Recognising a compare-and-set that lost: a JetStream publish with an expected last
//! (subject) sequence, which is how every KV update and every QoS 2 exchange step is made.
//!
//! nats-server answers such a publish with "wrong last sequence" as error 10071 (with the
//! sequence it has) or, from a clustered stream's leader since 2.11, as 10164 (the same words
//! without the number). async-nats 0.51 gives only 10071 its own kind
//! (`PublishErrorKind::WrongLastSequence`, `UpdateErrorKind::WrongLastRevision`); 10164 comes
//! back as `Other`, and a lost race read as a store failure refuses a CONNECT (0x88) or a
//! QoS 2 step that should have read again.

use async_nats::jetstream::context::{PublishError, PublishErrorKind};
use async_nats::jetstream::kv::{CreateError, CreateErrorKind, UpdateError, UpdateErrorKind};
use async_nats::jetstream::ErrorCode;

/// The server's error code in `err` or in what it wraps, when it is one of JetStream's.
fn server_code(err: &(dyn std::error::Error + 'static)) -> Option<ErrorCode> {
    let mut next = Some(err);
    while let Some(e) = next {
        if let Some(api) = e.downcast_ref::<async_nats::jetstream::Error>() {
            return Some(api.error_code());
        }
        next = e.source();
    }
    None
}

fn says_wrong_last_sequence(err: &(dyn std::error::Error + 'static)) -> bool {
    matches!(
        server_code(err),
        Some(
            ErrorCode::STREAM_WRONG_LAST_SEQUENCE | ErrorCode::STREAM_WRONG_LAST_SEQUENCE_CONSTANT
        )
    )
}

/// A publish with an expected last sequence found another one.
pub fn publish(e: &PublishError) -> bool {
    e.kind() == PublishErrorKind::WrongLastSequence || says_wrong_last_sequence(e)
}

/// A publish whose message id another publish of the same id is still writing (10158,
/// "duplicate message id is in process"): two connections of one client holding the same
/// QoS 2 copy at once. The other write decides; read the subject again once it landed.
pub fn in_process(e: &PublishError) -> bool {
    server_code(e) == Some(ErrorCode::STREAM_DUPLICATE_MESSAGE_CONFLICT)
}

/// A KV update at a revision found another one.
pub fn update(e: &UpdateError) -> bool {
    e.kind() == UpdateErrorKind::WrongLastRevision || says_wrong_last_sequence(e)
}

/// A KV create found the key (or lost to another create of it).
pub fn create(e: &CreateError) -> bool {
    e.kind() == CreateErrorKind::AlreadyExists || says_wrong_last_sequence(e)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn server_error(err_code: u64) -> async_nats::jetstream::Error {
        serde_json::from_str(&format!(
            r#"{{"code":400,"err_code":{err_code},"description":"wrong last sequence"}}"#
        ))
        .expect("a JetStream API error")
    }

    #[test]
    fn both_forms_of_wrong_last_sequence_are_a_lost_race() {
        for code in [10071, 10164] {
            let published = PublishError::with_source(PublishErrorKind::Other, server_error(code));
            assert!(publish(&published), "{code}");
            let updated = UpdateError::from(published);
            assert!(update(&updated), "{code}");
            assert!(create(&CreateError::from(updated)), "{code}");
        }
        let other = PublishError::with_source(PublishErrorKind::Other, server_error(10077));
        assert!(!publish(&other), "another refusal is not a race");
        assert!(!update(&UpdateError::from(other)));
        assert!(!publish(&PublishError::new(PublishErrorKind::TimedOut)));
    }
}
