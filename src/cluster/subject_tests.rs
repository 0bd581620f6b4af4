use proptest::prelude::*;

use super::*;
use crate::protocol::topic::matches as mqtt_matches;

fn subject(topic: &str) -> String {
    topic_subject("p", topic)
}

#[test]
fn levels_become_tokens_and_other_bytes_are_escaped() {
    assert_eq!(subject("a/b"), "p.a.b");
    assert_eq!(subject("Az09_-"), "p.Az09_-");
    assert_eq!(subject("a b.c*d>e"), "p.a%20b%2Ec%2Ad%3Ee");
    assert_eq!(subject("$SYS/x"), "p.%24SYS.x");
    assert_eq!(subject("100%"), "p.100%25");
    assert_eq!(subject("tab\there"), "p.tab%09here");
    assert_eq!(subject("é"), "p.%C3%A9");
    assert_eq!(topic_subject("fmq.t", "a"), "fmq.t.a");
    assert_eq!(topic_subject("", "a/b"), "a.b");
}

#[test]
fn empty_levels_are_the_sentinel_token() {
    assert_eq!(subject(""), "p.%");
    assert_eq!(subject("/"), "p.%.%");
    assert_eq!(subject("a//b/"), "p.a.%.b.%");
    assert_eq!(decode_topic("%"), Some(String::new()));
    assert_eq!(decode_topic("a.%.b.%"), Some("a//b/".into()));
}

#[test]
fn encode_topic_appends() {
    let mut out = String::from("x.");
    encode_topic("a/ /", &mut out);
    assert_eq!(out, "x.a.%20.%");
}

#[test]
fn decode_refuses_what_encode_cannot_produce() {
    for bad in [
        "", "a..b", ".a", "a.", "a b", "a%2", "a%", "%%", "a%2e", "%41", "%2F", "a*b", "*", ">",
        "%FF", "%C3", "a=20",
    ] {
        assert_eq!(decode_topic(bad), None, "{bad:?}");
    }
    assert_eq!(decode_topic("a%2Eb"), Some("a.b".into()));
}

#[test]
fn filters_map_to_wildcard_subjects() {
    let subjects = |f: &str| filter_subjects("p", f).into_vec();
    assert_eq!(subjects("a/b"), ["p.a.b"]);
    assert_eq!(subjects("a/+/c"), ["p.a.*.c"]);
    assert_eq!(subjects("+"), ["p.*"]);
    assert_eq!(subjects("a/#"), ["p.a.>", "p.a"]);
    assert_eq!(subjects("+/#"), ["p.*.>", "p.*"]);
    assert_eq!(subjects("#"), ["p.>"]);
    assert_eq!(subjects("/#"), ["p.%.>", "p.%"]);
    assert_eq!(subjects("a//#"), ["p.a.%.>", "p.a.%"]);
    assert_eq!(subjects("a b/+"), ["p.a%20b.*"]);
    assert_eq!(filter_subjects("", "#").into_vec(), [">"]);
    assert_eq!(filter_subjects("", "a/#").into_vec(), ["a.>", "a"]);
}

#[test]
fn invalid_filters_give_no_subject() {
    for bad in ["", "a/#/b", "a#", "a+/b", "#/a", "a/b#", "++"] {
        assert!(filter_subjects("p", bad).is_empty(), "{bad:?}");
    }
}

#[test]
fn retained_keys_use_the_kv_charset_and_hash_long_topics() {
    assert_eq!(retained_key("a/b"), "t.a.b");
    assert_eq!(retained_key("a b//"), "t.a=20b.=.=");
    assert_eq!(retained_key(""), "t.=");
    assert_eq!(decode_retained_key("t.a=20b.=.="), Some("a b//".into()));
    let longest = "x".repeat(MAX_KEY_LEN - 2);
    assert_eq!(retained_key(&longest), format!("t.{longest}"));
    assert!(retained_key(&"x".repeat(MAX_KEY_LEN - 1)).starts_with("h."));
    let longer = "é".repeat(100); // 600 encoded bytes
    let key = retained_key(&longer);
    assert_eq!(key.len(), 2 + 64);
    assert!(key.starts_with("h."));
    assert_eq!(decode_retained_key(&key), None);
    assert_ne!(retained_key(&"é".repeat(101)), key);
}

#[test]
fn client_keys_are_32_hex_digits() {
    let key = client_key("client-1");
    assert_eq!(key.len(), 32);
    assert!(key
        .bytes()
        .all(|b| b.is_ascii_hexdigit() && !b.is_ascii_uppercase()));
    // The first 16 bytes of SHA-256("abc").
    assert_eq!(client_key("abc"), "ba7816bf8f01cfea414140de5dae2223");
    assert_ne!(client_key("client-2"), key);
}

#[test]
fn subject_validity_rules() {
    for good in ["a", "a.b", "a.*.c", "a.>", "%", "%24.x"] {
        assert!(is_valid_subject(good), "{good:?}");
    }
    for bad in ["", "a..b", "a.>.b", "a b", "a\tb", "a*", "a>", ".a", "a."] {
        assert!(!is_valid_subject(bad), "{bad:?}");
    }
}

/// NATS subject matching (the reference for the property below): `*` is one token, a trailing
/// `>` one or more tokens.
fn nats_matches(pattern: &str, subject: &str) -> bool {
    let mut pattern = pattern.split('.');
    let mut subject = subject.split('.');
    loop {
        match (pattern.next(), subject.next()) {
            (Some(">"), Some(_)) => return true,
            (Some("*"), Some(_)) => {}
            (Some(p), Some(s)) if p == s => {}
            (None, None) => return true,
            _ => return false,
        }
    }
}

fn is_kv_key(key: &str) -> bool {
    !key.is_empty()
        && !key.starts_with('.')
        && !key.ends_with('.')
        && key
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-/_=.".contains(&b))
}

/// Topics full of the characters that need care: escapes, NATS wildcards and separators, `$`,
/// spaces, multi-byte UTF-8, empty levels; or any string without NUL.
fn topic() -> impl Strategy<Value = String> {
    prop_oneof![
        "[a$ .*>%=/é日😀\t_-]{0,12}",
        any::<String>().prop_map(|s| s.replace('\0', "")),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2000))]

    #[test]
    fn topics_round_trip_through_valid_subjects(topic in topic()) {
        let subject = topic_subject("fmq.t", &topic);
        prop_assert!(is_valid_subject(&subject), "{subject:?}");
        let tokens = subject.strip_prefix("fmq.t.").expect("prefix");
        prop_assert_eq!(decode_topic(tokens), Some(topic.clone()));
        prop_assert_eq!(subject.len(), "fmq.t.".len() + encoded_len(&topic));
    }

    #[test]
    fn retained_keys_round_trip_or_hash(topic in topic()) {
        let key = retained_key(&topic);
        prop_assert!(is_kv_key(&key), "{key:?}");
        prop_assert!(key.len() <= MAX_KEY_LEN);
        match decode_retained_key(&key) {
            Some(decoded) => prop_assert_eq!(decoded, topic),
            None => prop_assert!(key.starts_with("h.")),
        }
    }

    #[test]
    fn decodable_tokens_are_canonical(tokens in "[a%A0-9F.=]{0,10}") {
        if let Some(topic) = decode_topic(&tokens) {
            let mut again = String::new();
            encode_topic(&topic, &mut again);
            prop_assert_eq!(again, tokens);
        }
    }

    #[test]
    fn filter_subjects_match_exactly_the_topics_the_filter_matches(
        filter_levels in prop::collection::vec(prop_oneof!["a", "b", "\\$", "", "\\+", "a\\.b"], 1..4),
        multi in any::<bool>(),
        topic_levels in prop::collection::vec(prop_oneof!["a", "b", "\\$", "", "\\$a", "a\\.b"], 1..5),
    ) {
        let mut filter = filter_levels.join("/");
        if multi {
            filter.push_str("/#");
        }
        prop_assume!(!filter.is_empty());
        let topic = topic_levels.join("/");
        let subjects = filter_subjects("fmq.t", &filter);
        prop_assert!(!subjects.is_empty());
        for s in &subjects {
            prop_assert!(is_valid_subject(s), "{s:?}");
        }
        let subject = topic_subject("fmq.t", &topic);
        let nats = subjects.iter().any(|s| nats_matches(s, &subject));
        let mqtt = mqtt_matches(&filter, &topic);
        // The one rule NATS cannot express: a leading wildcard does not match `$` topics.
        let dollar_exception = topic.starts_with('$') && filter.starts_with(['+', '#']);
        if dollar_exception {
            prop_assert!(!mqtt);
        } else {
            prop_assert_eq!(nats, mqtt, "filter {:?} topic {:?} subjects {:?}", filter, topic, subjects);
        }
    }

    #[test]
    fn hash_alone_matches_every_topic_subject(topic in topic()) {
        let subjects = filter_subjects("fmq.t", "#");
        prop_assert!(nats_matches(&subjects[0], &topic_subject("fmq.t", &topic)));
    }
}
