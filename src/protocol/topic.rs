//! Topic names and topic filters (MQTT 3.1.1 section 4.7, MQTT 5.0 section 4.7): validation and
//! matching.
//!
//! Topic names (what a PUBLISH carries) may not contain wildcards; topic filters (what a
//! SUBSCRIBE carries) may, with `#` alone in the last level and `+` alone in any level. Levels are
//! separated by `/` and may be empty (`a//b` has three levels, `/a` has two).
//!
//! These functions work on `&str`, so UTF-8 well-formedness is already guaranteed; the codec checks
//! it (and the byte length limit) when it reads the string off the wire.

/// Why a topic name or filter is not acceptable. Each message says what to fix.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum TopicError {
    #[error("the topic is empty; a topic name or filter needs at least one character")]
    Empty,
    #[error("the topic is {0} bytes long; the maximum is 65535 bytes")]
    TooLong(usize),
    #[error("the topic contains the null character U+0000")]
    ContainsNul,
    #[error(
        "a topic name may not contain the wildcards '+' or '#' (only a subscription filter may)"
    )]
    WildcardInName,
    #[error("'#' must be the last level of the filter and alone in its level (as in 'a/#')")]
    MisplacedMultiLevelWildcard,
    #[error("'+' must be alone in its level (as in 'a/+/b', not 'a+')")]
    MisplacedSingleLevelWildcard,
    #[error(
        "a shared subscription must look like '$share/<group>/<filter>' with a non-empty group \
         that contains no '/', '+' or '#', followed by a valid filter"
    )]
    InvalidSharedSubscription,
}

/// Longest topic the wire format can carry (a 16-bit length prefix).
const MAX_TOPIC_BYTES: usize = 65_535;

/// Prefix of an MQTT 5 shared subscription filter (`$share/<group>/<filter>`).
const SHARED_PREFIX: &str = "$share/";

/// Checks a topic name (the topic of a PUBLISH or a will): non-empty, no wildcards, no U+0000.
///
/// The MQTT 5 case of an empty topic with a topic alias is the codec's business, not this
/// function's: an empty string is always refused here.
pub fn validate_topic_name(topic: &str) -> Result<(), TopicError> {
    check_length(topic)?;
    // One pass over the bytes: '+', '#' and NUL are ASCII, so they cannot hide inside a
    // multi-byte UTF-8 sequence.
    for &byte in topic.as_bytes() {
        match byte {
            b'+' | b'#' => return Err(TopicError::WildcardInName),
            0 => return Err(TopicError::ContainsNul),
            _ => {}
        }
    }
    Ok(())
}

/// Checks a topic filter (SUBSCRIBE / UNSUBSCRIBE): non-empty, no U+0000, `#` only as the whole
/// last level, `+` only as a whole level.
///
/// A `$share/...` filter is checked as an ordinary filter here (in MQTT 3.x it is one); use
/// [`parse_shared_subscription`] for the MQTT 5 shared-subscription syntax.
pub fn validate_topic_filter(filter: &str) -> Result<(), TopicError> {
    check_length(filter)?;
    let mut levels = filter.split('/').peekable();
    while let Some(level) = levels.next() {
        let is_last = levels.peek().is_none();
        if level.as_bytes().contains(&0) {
            return Err(TopicError::ContainsNul);
        }
        if level.contains('#') && (level != "#" || !is_last) {
            return Err(TopicError::MisplacedMultiLevelWildcard);
        }
        if level.contains('+') && level != "+" {
            return Err(TopicError::MisplacedSingleLevelWildcard);
        }
    }
    Ok(())
}

fn check_length(topic: &str) -> Result<(), TopicError> {
    if topic.is_empty() {
        return Err(TopicError::Empty);
    }
    if topic.len() > MAX_TOPIC_BYTES {
        return Err(TopicError::TooLong(topic.len()));
    }
    Ok(())
}

/// Does `filter` match the topic name `topic`?
///
/// Rules (MQTT 3.1.1 4.7.1 / 5.0 4.7.1): `+` matches exactly one level (an empty level too), `#`
/// matches the rest of the topic including the parent level (`a/#` matches `a`), empty levels are
/// levels (`a//b` does not match `a/b`), and a filter starting with a wildcard does not match a
/// topic starting with `$` (so `#` does not see `$SYS/...`).
///
/// Both arguments are expected to be valid (see the `validate_*` functions); on invalid input the
/// answer is unspecified but the function never panics. A `$share/<group>/` prefix is not
/// stripped: pass the inner filter of a [`SharedSubscription`].
pub fn matches(filter: &str, topic: &str) -> bool {
    if topic.starts_with('$') && (filter.starts_with('+') || filter.starts_with('#')) {
        return false;
    }
    let mut filter_levels = filter.split('/');
    let mut topic_levels = topic.split('/');
    loop {
        match (filter_levels.next(), topic_levels.next()) {
            // '#' swallows whatever is left, including nothing at all (the parent level).
            (Some("#"), _) => return true,
            (Some(filter_level), Some(topic_level)) => {
                if filter_level != "+" && filter_level != topic_level {
                    return false;
                }
            }
            (None, None) => return true,
            (Some(_), None) | (None, Some(_)) => return false,
        }
    }
}

/// An MQTT 5 shared subscription `$share/<group>/<filter>`, borrowed from the filter string.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SharedSubscription<'a> {
    /// The share name: subscribers with the same group share the messages of `filter`.
    pub group: &'a str,
    /// The topic filter the group subscribes to (already validated).
    pub filter: &'a str,
}

/// Splits a `$share/<group>/<filter>` filter. `Ok(None)` when `filter` is not a shared
/// subscription; an error when it starts with `$share/` but is not well-formed (empty group,
/// a group containing `+` or `#`, or a missing or invalid inner filter).
pub fn parse_shared_subscription(
    filter: &str,
) -> Result<Option<SharedSubscription<'_>>, TopicError> {
    let Some(rest) = filter.strip_prefix(SHARED_PREFIX) else {
        return Ok(None);
    };
    let Some((group, inner_filter)) = rest.split_once('/') else {
        return Err(TopicError::InvalidSharedSubscription);
    };
    if group.is_empty() || group.contains(['+', '#']) {
        return Err(TopicError::InvalidSharedSubscription);
    }
    validate_topic_filter(inner_filter)?;
    Ok(Some(SharedSubscription {
        group,
        filter: inner_filter,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn topic_names() {
        for ok in ["a", "a/b", "/", "//", "a//b", "$SYS/x", " ", "ü/€"] {
            assert_eq!(validate_topic_name(ok), Ok(()), "{ok:?}");
        }
        assert_eq!(validate_topic_name(""), Err(TopicError::Empty));
        assert_eq!(validate_topic_name("a/+"), Err(TopicError::WildcardInName));
        assert_eq!(validate_topic_name("a#"), Err(TopicError::WildcardInName));
        assert_eq!(validate_topic_name("a\0b"), Err(TopicError::ContainsNul));
        let long = "x".repeat(65_536);
        assert_eq!(validate_topic_name(&long), Err(TopicError::TooLong(65_536)));
        assert_eq!(validate_topic_name(&long[1..]), Ok(()));
    }

    #[test]
    fn topic_filters() {
        for ok in [
            "#",
            "+",
            "a/#",
            "a/+/b",
            "+/+",
            "/+",
            "+/",
            "a//#",
            "$share/g/a",
            "a/b",
        ] {
            assert_eq!(validate_topic_filter(ok), Ok(()), "{ok:?}");
        }
        use TopicError::*;
        for (bad, why) in [
            ("", Empty),
            ("a/#/b", MisplacedMultiLevelWildcard),
            ("a#", MisplacedMultiLevelWildcard),
            ("#/", MisplacedMultiLevelWildcard),
            ("##", MisplacedMultiLevelWildcard),
            ("a+", MisplacedSingleLevelWildcard),
            ("+a/b", MisplacedSingleLevelWildcard),
            ("a/++", MisplacedSingleLevelWildcard),
            ("a\0", ContainsNul),
        ] {
            assert_eq!(validate_topic_filter(bad), Err(why), "{bad:?}");
        }
    }

    #[test]
    fn matching_follows_the_spec_examples() {
        let cases = [
            ("sport/tennis/player1/#", "sport/tennis/player1", true),
            (
                "sport/tennis/player1/#",
                "sport/tennis/player1/ranking",
                true,
            ),
            (
                "sport/tennis/player1/#",
                "sport/tennis/player1/score/wimbledon",
                true,
            ),
            ("sport/#", "sport", true),
            ("#", "a/b/c", true),
            ("#", "/", true),
            ("sport/tennis/+", "sport/tennis/player1", true),
            ("sport/tennis/+", "sport/tennis/player1/ranking", false),
            ("sport/tennis/+", "sport/tennis", false),
            ("sport/+", "sport/", true),
            ("sport/+", "sport", false),
            ("+/+", "/finance", true),
            ("/+", "/finance", true),
            ("+", "/finance", false),
            ("a/b", "a//b", false),
            ("a//b", "a//b", true),
            ("a/+/b", "a//b", true),
            ("a/b", "a/b/", false),
            ("a/b", "a/B", false),
            ("#", "$SYS/x", false),
            ("+/x", "$SYS/x", false),
            ("$SYS/#", "$SYS/x", true),
            ("$SYS/+", "$SYS/x", true),
            ("a/#", "$a", false),
        ];
        for (filter, topic, expected) in cases {
            assert_eq!(matches(filter, topic), expected, "{filter:?} vs {topic:?}");
        }
    }

    #[test]
    fn shared_subscriptions() {
        assert_eq!(parse_shared_subscription("a/b"), Ok(None));
        assert_eq!(parse_shared_subscription("$share"), Ok(None));
        assert_eq!(
            parse_shared_subscription("$share/g1/a/+"),
            Ok(Some(SharedSubscription {
                group: "g1",
                filter: "a/+"
            }))
        );
        for bad in [
            "$share/",
            "$share/g",
            "$share//a",
            "$share/g+/a",
            "$share/#/a",
        ] {
            assert_eq!(
                parse_shared_subscription(bad),
                Err(TopicError::InvalidSharedSubscription),
                "{bad:?}"
            );
        }
        assert_eq!(
            parse_shared_subscription("$share/g/"),
            Err(TopicError::Empty)
        );
        assert_eq!(
            parse_shared_subscription("$share/g/a/#/b"),
            Err(TopicError::MisplacedMultiLevelWildcard)
        );
    }
}
