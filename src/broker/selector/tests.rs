//! The selector against ActiveMQ 5.17.2 itself: every row of [`ACTIVEMQ_CASES`] was run through
//! ActiveMQ's `SelectorParser` and `BooleanExpression.matches` on an `ActiveMQTextMessage` with
//! the same string properties (a STOMP message's headers), and its answer recorded here. Two
//! rows are deliberate differences (marked). Each row is checked twice: as a JMS selector
//! (`Selector::parse`) and as a STOMP one (`Selector::parse_stomp`: ActiveMQ's STOMP connector
//! prefixes `convert_string_expressions:`), against ActiveMQ's answer for each.
//! Then error columns, limits and proptests.

use std::sync::Arc;

use bytes::Bytes;
use proptest::prelude::*;

use super::{DeliveryInfo, Selector, MAX_DEPTH, MAX_LEN};
use crate::broker::message::{Message, SampleStamp, V5Extras};
use crate::protocol::{Properties, QoS};

#[derive(Debug, Clone, Copy, PartialEq)]
enum Outcome {
    Selected,
    NotSelected,
    /// ActiveMQ's evaluation threw: nothing is selected.
    Abandoned,
    /// ActiveMQ refuses the selector (InvalidSelectorException).
    Refused,
}
use Outcome::*;

/// A message with `props` (`k=v;k=v`) as string properties; `!persistent`, `!priority`,
/// `!type`, `!correlation` set what the STOMP headers of those names set, `!redeliveries` the
/// delivery's redelivery count. Destination `queue://orders`, as in the ActiveMQ run.
fn message(props: &str) -> (Message, u32) {
    let mut properties = Properties::default();
    let mut qos = QoS::AtMostOnce;
    let mut redeliveries = 0;
    for pair in props.split(';').filter(|p| !p.is_empty()) {
        let (key, value) = pair.split_once('=').expect("k=v");
        match key {
            "!persistent" => qos = QoS::AtLeastOnce,
            "!priority" => properties
                .user_properties
                .push(("priority".into(), value.into())),
            "!type" => properties
                .user_properties
                .push(("type".into(), value.into())),
            "!correlation" => {
                properties.correlation_data = Some(Bytes::copy_from_slice(value.as_bytes()))
            }
            "!redeliveries" => redeliveries = value.parse().expect("count"),
            _ => properties.user_properties.push((key.into(), value.into())),
        }
    }
    let v5 = (properties != Properties::default()).then(|| {
        Arc::new(V5Extras {
            properties,
            expires_at: None,
        })
    });
    let message = Message {
        stamp: SampleStamp::NONE,
        topic: Arc::from("orders"),
        payload: Bytes::from_static(b"body"),
        qos,
        retain: false,
        v5,
    };
    (message, redeliveries)
}

type Parse = fn(&str) -> Result<Selector, super::SelectorError>;

fn outcome(parse: Parse, selector: &str, props: &str) -> Outcome {
    let selector = match parse(selector) {
        Ok(selector) => selector,
        Err(_) => return Refused,
    };
    let (message, redelivery_count) = message(props);
    let info = DeliveryInfo {
        redelivery_count,
        destination: Some("queue://orders"),
        ..DeliveryInfo::default()
    };
    if selector.matches(&message, &info) {
        Selected
    } else {
        NotSelected
    }
}

#[test]
fn selects_what_activemq_selects() {
    let mut wrong = Vec::new();
    for (selector, props, jms, stomp) in ACTIVEMQ_CASES {
        for (parse, expected, mode) in [
            (Selector::parse as Parse, jms, "JMS"),
            (Selector::parse_stomp as Parse, stomp, "STOMP"),
        ] {
            // An abandoned evaluation selects nothing.
            let expected = if *expected == Abandoned {
                NotSelected
            } else {
                *expected
            };
            let got = outcome(parse, selector, props);
            if got != expected {
                wrong.push(format!(
                    "{mode} {selector:?} with {props:?}: {got:?}, ActiveMQ {expected:?}"
                ));
            }
        }
    }
    assert!(
        wrong.is_empty(),
        "{} differences:\n{}",
        wrong.len(),
        wrong.join("\n")
    );
}

#[test]
fn stomp_selectors_convert_strings_as_activemq_stomp_does() {
    let (message, _) = message("count=10;flag=true;price=2.5");
    let info = DeliveryInfo::default();
    for (text, jms, stomp) in [
        ("count > 5", false, true),
        ("count = 10", false, true),
        ("count BETWEEN 1 AND 20", false, true),
        ("price < 3.0", false, true),
        ("flag = TRUE", false, true),
        ("count = '10'", true, true),
        ("count <> 5", true, true),
        ("count <> 10", true, false),
    ] {
        let plain = Selector::parse(text).expect("parses");
        let converting = Selector::parse_stomp(text).expect("parses");
        assert_eq!(plain.matches(&message, &info), jms, "JMS {text}");
        assert_eq!(converting.matches(&message, &info), stomp, "STOMP {text}");
    }
}

#[test]
fn errors_say_where_and_what() {
    let err = |s: &str| Selector::parse(s).expect_err(s);
    let e = err("color = 'red' AND");
    assert_eq!(e.column, 18);
    assert!(e.message.contains("found the end of the selector"), "{e}");
    assert_eq!(err("= 'red'").column, 1);
    assert_eq!(err("color == 'red'").column, 8);
    assert_eq!(err("color != 'red'").column, 7);
    let e = err("x = NULL");
    assert!(e.message.contains("IS NULL"), "{e}");
    let e = err("XPATH '//a'");
    assert!(e.message.contains("not supported"), "{e}");
    let e = err("convert_string_expressions:a = ");
    assert_eq!(e.column, 32, "columns count the prefix");
    assert_eq!(
        err("a = 1 b").to_string(),
        "invalid selector at column 7: expected an operator or the end of the selector, found identifier b"
    );
}

#[test]
fn nesting_and_length_are_bounded() {
    let deep = "(".repeat(10_000) + "TRUE" + ")".repeat(10_000).as_str();
    assert!(Selector::parse(&deep).is_err());
    let nots = "NOT ".repeat(10_000) + "TRUE";
    assert!(Selector::parse(&nots).is_err());
    let minus = "-".repeat(10_000) + "1 = 1";
    assert!(Selector::parse(&minus).is_err());
    let chain = format!("a = 0{}", " + 1".repeat(1_000));
    assert!(
        Selector::parse(&chain).is_err(),
        "left-deep chains count too"
    );
    let long_and = vec!["a = 'x'"; 500].join(" AND ");
    assert!(Selector::parse(&long_and).is_ok(), "AND lists are flat");
    let ok = "(".repeat(MAX_DEPTH / 2) + "TRUE" + ")".repeat(MAX_DEPTH / 2).as_str();
    assert!(Selector::parse(&ok).is_ok());
    let long = format!("a = '{}'", "x".repeat(MAX_LEN));
    assert!(Selector::parse(&long).is_err());
}

#[test]
fn mqtt_messages_without_properties_and_headers() {
    let selector = Selector::parse("JMSDeliveryMode = 'PERSISTENT' AND k IS NULL").expect("parse");
    let (mut message, _) = message("");
    let info = DeliveryInfo::default();
    assert!(!selector.matches(&message, &info));
    message.qos = QoS::ExactlyOnce;
    assert!(selector.matches(&message, &info));
    let reply = Selector::parse("JMSReplyTo = 'queue://replies'").expect("parse");
    message.v5 = Some(Arc::new(V5Extras {
        properties: Properties {
            response_topic: Some("/queue/replies".into()),
            ..Properties::default()
        },
        expires_at: None,
    }));
    assert!(reply.matches(&message, &info));
    let id = Selector::parse("JMSMessageID = 'ID:1' AND JMSTimestamp = 42").expect("parse");
    let info = DeliveryInfo {
        message_id: Some("ID:1"),
        timestamp_ms: 42,
        ..DeliveryInfo::default()
    };
    assert!(id.matches(&message, &info));
}

#[test]
fn stomp_headers_that_are_jms_headers() {
    let (message, _) = message("timestamp=1000;expires=2000;!priority=7;!type=car;JMSXGroupID=g1");
    let info = DeliveryInfo {
        timestamp_ms: 5,
        ..DeliveryInfo::default()
    };
    for text in [
        "JMSTimestamp = 1000",
        "JMSExpiration = 2000",
        "JMSPriority = 7",
        "JMSType = 'car'",
        "JMSXGroupID = 'g1'",
        "JMSActiveMQBrokerInTime = 5",
        "timestamp IS NULL AND expires IS NULL AND priority IS NULL AND type IS NULL",
    ] {
        let selector = Selector::parse(text).expect("parses");
        assert!(selector.matches(&message, &info), "{text}");
    }
}

#[test]
fn tells_whether_message_id_or_destination_are_read() {
    let plain = Selector::parse_stomp("a = 'x' AND JMSPriority > 3").expect("parses");
    assert!(!plain.reads_message_id() && !plain.reads_destination());
    let id = Selector::parse_stomp("a = 'x' OR NOT (JMSMessageID LIKE 'ID:%')").expect("parses");
    assert!(id.reads_message_id() && !id.reads_destination());
    let dest = Selector::parse_stomp("JMSDestination IN ('queue://a')").expect("parses");
    assert!(dest.reads_destination() && !dest.reads_message_id());
}

/// Generated valid selectors: comparisons over a few properties joined by AND/OR/NOT.
fn valid_selector() -> impl Strategy<Value = String> {
    let name = prop::sample::select(vec!["a", "b", "color", "JMSPriority", "n"]);
    let literal = prop_oneof![
        "[a-z']{0,6}".prop_map(|s| format!("'{}'", s.replace('\'', "''"))),
        (-1000i64..1000).prop_map(|n| n.to_string()),
        (-100.0f64..100.0).prop_map(|f| format!("{f:.3}")),
    ];
    let leaf = prop_oneof![
        (name.clone(), literal.clone()).prop_map(|(n, l)| format!("{n} = {l}")),
        (name.clone(), literal).prop_map(|(n, l)| format!("{n} <> {l}")),
        (name.clone(), -50i32..50).prop_map(|(n, v)| format!("{n} > {v}")),
        (name.clone(), "[a-z%_]{0,5}").prop_map(|(n, p)| format!("{n} LIKE '{p}'")),
        (name.clone(), prop::collection::vec("[a-z]{1,3}", 1..4))
            .prop_map(|(n, l)| format!("{n} IN ('{}')", l.join("', '"))),
        name.clone().prop_map(|n| format!("{n} IS NOT NULL")),
        (name, 0i32..5, 5i32..10).prop_map(|(n, lo, hi)| format!("{n} BETWEEN {lo} AND {hi}")),
        Just("TRUE".to_string()),
    ];
    leaf.prop_recursive(4, 32, 3, |inner| {
        prop_oneof![
            (inner.clone(), inner.clone()).prop_map(|(a, b)| format!("({a}) AND ({b})")),
            (inner.clone(), inner.clone()).prop_map(|(a, b)| format!("({a}) OR ({b})")),
            inner.prop_map(|a| format!("NOT ({a})")),
        ]
    })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn arbitrary_text_never_panics(text in "\\PC{0,80}") {
        if let Ok(selector) = Selector::parse(&text) {
            let (message, _) = message("a=1;b=x;color=red");
            let _ = selector.matches(&message, &DeliveryInfo::default());
        }
    }

    #[test]
    fn selector_like_text_never_panics(text in "[a-c0-9 ()'=<>+*/%.,-]{0,60}|(NOT|AND|OR|LIKE|IN|IS|NULL|BETWEEN|ESCAPE|TRUE| |a|'x'|1|\\(|\\)|=|<>|-|\\+|0x|\\.5|E)*") {
        if let Ok(selector) = Selector::parse(&text) {
            let (message, _) = message("a=1;b=x;c=2");
            let _ = selector.matches(&message, &DeliveryInfo::default());
        }
    }

    #[test]
    fn generated_selectors_parse_and_negation_is_three_valued(
        selector in valid_selector(),
        a in "[a-z0-9]{0,3}",
        color in prop::option::of("[a-z]{1,3}"),
    ) {
        let parsed = Selector::parse(&selector);
        prop_assert!(parsed.is_ok(), "{selector}: {parsed:?}");
        let negated = Selector::parse(&format!("NOT ({selector})")).expect("negation parses");
        let props = match &color {
            Some(c) => format!("a={a};color={c}"),
            None => format!("a={a}"),
        };
        let (message, _) = message(&props);
        let info = DeliveryInfo::default();
        let (yes, no) = (
            parsed.expect("parsed").matches(&message, &info),
            negated.matches(&message, &info),
        );
        // Never both; neither when the result is unknown.
        prop_assert!(!(yes && no), "{selector} with {props}");
    }
}

/// (selector, properties, what ActiveMQ 5.17.2 did with it as a JMS selector, and as a STOMP
/// one: with `convert_string_expressions:` in front).
const ACTIVEMQ_CASES: &[(&str, &str, Outcome, Outcome)] = &[
    ("color = 'red'", "color=red", Selected, Selected),
    ("color = 'red'", "color=blue", NotSelected, NotSelected),
    ("color = 'red'", "", NotSelected, NotSelected),
    ("color <> 'red'", "", NotSelected, NotSelected),
    ("color <> 'red'", "color=blue", Selected, Selected),
    ("NOT color = 'red'", "color=blue", NotSelected, Abandoned),
    ("NOT (color = 'red')", "color=blue", Selected, Selected),
    ("NOT (color = 'red')", "", NotSelected, NotSelected),
    ("color IS NULL", "", Selected, Selected),
    ("color IS NULL", "color=red", NotSelected, NotSelected),
    ("color IS NOT NULL", "color=red", Selected, Selected),
    ("color IS NOT NULL", "", NotSelected, NotSelected),
    ("count > 5", "count=10", NotSelected, Selected),
    ("count = 10", "count=10", NotSelected, Selected),
    ("count <> 5", "count=10", Selected, Selected),
    ("count = '10'", "count=10", Selected, Selected),
    (
        "convert_string_expressions:count > 5",
        "count=10",
        Selected,
        Refused,
    ),
    (
        "convert_string_expressions:count > 5",
        "count=abc",
        NotSelected,
        Refused,
    ),
    (
        "convert_string_expressions:count = 10",
        "count=10",
        Selected,
        Refused,
    ),
    (
        "convert_string_expressions:count = 10.0",
        "count=10",
        Selected,
        Refused,
    ),
    (
        "convert_string_expressions:count < 5.5",
        "count=3.25",
        Selected,
        Refused,
    ),
    (
        "convert_string_expressions:count > 3000000000",
        "count=4000000000",
        Selected,
        Refused,
    ),
    (
        "convert_string_expressions:flag = TRUE",
        "flag=true",
        Selected,
        Refused,
    ),
    (
        "convert_string_expressions:flag = TRUE",
        "flag=TRUE",
        Selected,
        Refused,
    ),
    (
        "convert_string_expressions:flag = TRUE",
        "flag=yes",
        NotSelected,
        Refused,
    ),
    ("flag", "flag=true", NotSelected, NotSelected),
    ("flag = 'true'", "flag=true", Selected, Selected),
    ("TRUE", "", Selected, Selected),
    ("FALSE", "", NotSelected, NotSelected),
    ("NOT FALSE", "", Selected, Selected),
    ("NULL", "", NotSelected, NotSelected),
    ("NOT NULL", "", NotSelected, NotSelected),
    ("TRUE OR NULL", "", Selected, Selected),
    ("FALSE AND NULL", "", NotSelected, NotSelected),
    ("NULL OR FALSE", "", NotSelected, NotSelected),
    ("NOT (NULL OR FALSE)", "", NotSelected, NotSelected),
    ("NOT (missing = 'x' AND FALSE)", "", Selected, Selected),
    ("NOT (missing = 'x' AND TRUE)", "", NotSelected, NotSelected),
    ("missing = other", "", Selected, Selected),
    ("missing = 'x'", "", NotSelected, NotSelected),
    ("'x' = missing", "", NotSelected, NotSelected),
    ("NOT ('x' = missing)", "", Selected, Selected),
    ("NOT (missing = 'x')", "", NotSelected, NotSelected),
    ("a = b", "a=1;b=1", Selected, Selected),
    ("a = b", "a=1;b=2", NotSelected, NotSelected),
    ("a > b", "a=b;b=a", Selected, Selected),
    ("a >= b", "a=b;b=b", Selected, Selected),
    ("a < b", "a=B;b=a", Selected, Selected),
    ("1 = 1", "", Selected, Selected),
    ("1 = 1.0", "", Selected, Selected),
    ("1 <> 2", "", Selected, Selected),
    ("1 < 2", "", Selected, Selected),
    ("2 > 1.5", "", Selected, Selected),
    ("3000000000 > 1", "", Selected, Selected),
    ("0x10 = 16", "", Selected, Selected),
    ("010 = 8", "", Selected, Selected),
    ("0X1f = 31", "", Selected, Selected),
    ("1e3 = 1000", "", Selected, Selected),
    (".5 = 0.5", "", Selected, Selected),
    ("5. = 5", "", Selected, Selected),
    ("1.5E1 = 15", "", Selected, Selected),
    ("100L = 100", "", Selected, Selected),
    ("-1 < 0", "", Selected, Selected),
    ("- -1 = 1", "", Selected, Selected),
    ("+1 = 1", "", Selected, Selected),
    ("1 + 2 = 3", "", Selected, Selected),
    ("1 + 2 * 3 = 7", "", Selected, Selected),
    ("(1 + 2) * 3 = 9", "", Selected, Selected),
    ("7 / 2 = 3.5", "", Selected, Selected),
    ("7 / 2 = 3", "", NotSelected, NotSelected),
    ("7 % 3 = 1", "", Selected, Selected),
    ("7 % 3 = 1.0", "", Selected, Selected),
    ("1 / 0 > 1000000", "", Selected, Selected),
    ("2147483647 + 1 < 0", "", Selected, Selected),
    ("2147483647 + 1L > 0", "", NotSelected, NotSelected),
    ("2147483648 - 1 = 2147483647", "", Selected, Selected),
    ("'abc' + 'def' = 'abcdef'", "", Selected, Selected),
    ("'n' + 1 = 'n1'", "", Selected, Selected),
    ("'n' + 1.0 = 'n1.0'", "", Selected, Selected),
    ("'n' + 10000000.0 = 'n1.0E7'", "", Selected, Selected),
    ("'n' + TRUE = 'ntrue'", "", Selected, Selected),
    ("s + 1 = 's1'", "s=s", Selected, Selected),
    ("s + 1 > 0", "s=5", NotSelected, Selected),
    ("NOT (s + 1 > 0)", "s=5", Selected, NotSelected),
    ("(s + 1 > 0) OR TRUE", "s=5", Selected, Selected),
    ("TRUE OR (s + 1 > 0)", "s=5", Selected, Selected),
    ("-s IS NULL", "s=5", Selected, Selected),
    ("missing + 1 IS NULL", "", Selected, Selected),
    ("name LIKE 'ab%'", "name=abc", Selected, Selected),
    ("name LIKE 'ab%'", "name=xabc", NotSelected, NotSelected),
    ("name LIKE '_b_'", "name=abc", Selected, Selected),
    ("name LIKE '_b_'", "name=abcd", NotSelected, NotSelected),
    ("name NOT LIKE 'ab%'", "name=abc", NotSelected, NotSelected),
    ("name NOT LIKE 'ab%'", "", NotSelected, NotSelected),
    ("name LIKE 'ab%'", "", NotSelected, NotSelected),
    (
        "name LIKE '100\\%' ESCAPE '\\'",
        "name=100%",
        Selected,
        Selected,
    ),
    (
        "name LIKE '100\\%' ESCAPE '\\'",
        "name=1000",
        NotSelected,
        NotSelected,
    ),
    (
        "name LIKE 'a\\b' ESCAPE '\\'",
        "name=a\\b",
        Selected,
        Selected,
    ),
    ("name LIKE '%.%'", "name=a.b", Selected, Selected),
    ("name LIKE '%.%'", "name=ab", NotSelected, NotSelected),
    ("name LIKE 'a%b%c'", "name=aXbYc", Selected, Selected),
    ("name LIKE '[a]%'", "name=[a]x", Selected, Selected),
    ("name LIKE '(%)'", "name=(x)", Selected, Selected),
    ("name LIKE 'a$'", "name=a$", Selected, Selected),
    ("x IN ('a', 'b')", "x=a", Selected, Selected),
    ("x IN ('a', 'b')", "x=c", NotSelected, NotSelected),
    ("x IN ('a', 'b')", "", NotSelected, NotSelected),
    ("x NOT IN ('a', 'b')", "x=c", Selected, Selected),
    ("x NOT IN ('a', 'b')", "x=a", NotSelected, NotSelected),
    ("x NOT IN ('a', 'b')", "", NotSelected, NotSelected),
    ("NOT (x IN ('a'))", "", NotSelected, NotSelected),
    ("n BETWEEN 1 AND 5", "n=3", NotSelected, Selected),
    (
        "convert_string_expressions:n BETWEEN 1 AND 5",
        "n=3",
        Selected,
        Refused,
    ),
    (
        "convert_string_expressions:n BETWEEN 1 AND 5",
        "n=7",
        NotSelected,
        Refused,
    ),
    (
        "convert_string_expressions:n NOT BETWEEN 1 AND 5",
        "n=7",
        Selected,
        Refused,
    ),
    (
        "convert_string_expressions:n NOT BETWEEN 1 AND 5",
        "n=3",
        NotSelected,
        Refused,
    ),
    ("n NOT BETWEEN 1 AND 5", "n=3", NotSelected, NotSelected),
    ("n BETWEEN 1 AND 5", "", NotSelected, NotSelected),
    ("n NOT BETWEEN 1 AND 5", "", NotSelected, NotSelected),
    ("2 BETWEEN 1 AND 3", "", Selected, Selected),
    ("2 NOT BETWEEN 1 AND 3", "", NotSelected, NotSelected),
    ("JMSPriority = 4", "", Selected, Selected),
    ("JMSPriority > 5", "!priority=7", Selected, Selected),
    ("JMSPriority BETWEEN 0 AND 9", "", Selected, Selected),
    (
        "JMSDeliveryMode = 'PERSISTENT'",
        "!persistent=true",
        Selected,
        Selected,
    ),
    ("JMSDeliveryMode = 'NON_PERSISTENT'", "", Selected, Selected),
    (
        "JMSDeliveryMode = 'PERSISTENT'",
        "",
        NotSelected,
        NotSelected,
    ),
    ("JMSType = 'car'", "!type=car", Selected, Selected),
    ("JMSType = 'car'", "", NotSelected, NotSelected),
    ("JMSType IS NULL", "", Selected, Selected),
    (
        "JMSCorrelationID = 'abc'",
        "!correlation=abc",
        Selected,
        Selected,
    ),
    ("JMSCorrelationID IS NULL", "", Selected, Selected),
    ("JMSRedelivered = FALSE", "", Selected, Selected),
    ("JMSRedelivered", "!redeliveries=1", Selected, Selected),
    (
        "JMSRedelivered = TRUE",
        "!redeliveries=1",
        Selected,
        Selected,
    ),
    ("JMSXDeliveryCount = 1", "", Selected, Selected),
    (
        "JMSXDeliveryCount = 3",
        "!redeliveries=2",
        Selected,
        Selected,
    ),
    (
        "JMSXDeliveryCount > 1",
        "!redeliveries=2",
        Selected,
        Selected,
    ),
    ("JMSDestination = 'queue://orders'", "", Selected, Selected),
    ("JMSMessageID IS NULL", "", Selected, Selected),
    ("JMSXGroupID IS NULL", "", Selected, Selected),
    ("JMSXGroupSeq = 0", "", Selected, Selected),
    ("JMSExpiration = 0", "", Selected, Selected),
    ("jmspriority = 4", "", NotSelected, NotSelected),
    ("JMSPriority = '4'", "", NotSelected, Selected),
    ("priority = 4", "!priority=4", NotSelected, NotSelected),
    ("priority IS NULL", "!priority=4", Selected, Selected),
    ("type = 'car'", "!type=car", NotSelected, NotSelected),
    ("a = 'x' AND b = 'y'", "a=x;b=y", Selected, Selected),
    ("a = 'x' AND b = 'y'", "a=x;b=z", NotSelected, NotSelected),
    ("a = 'x' OR b = 'y'", "a=z;b=y", Selected, Selected),
    ("a = 'x' AND b = 'y' OR c = 'z'", "c=z", Selected, Selected),
    (
        "a = 'x' AND (b = 'y' OR c = 'z')",
        "a=x;c=z",
        Selected,
        Selected,
    ),
    ("a = 'x' and B = 'y'", "a=x;B=y", Selected, Selected),
    ("A = 'x'", "a=x", NotSelected, NotSelected),
    ("$dollar = 'x'", "$dollar=x", Selected, Selected),
    ("_under_1 = 'x'", "_under_1=x", Selected, Selected),
    ("color = 'it''s'", "color=it's", Selected, Selected),
    ("s = ''", "s=", Selected, Selected),
    ("/* comment */ a = 'x'", "a=x", Selected, Selected),
    ("a = 'x' -- trailing\n", "a=x", Selected, Selected),
    ("(TRUE)", "", Selected, Selected),
    ("((a = 'x'))", "a=x", Selected, Selected),
    ("a = 'x' = TRUE", "a=x", Selected, Selected),
    ("(a = 'x') = TRUE", "a=x", Selected, Selected),
    ("(a = 'x') = FALSE", "a=y", Selected, Selected),
    ("(a = 'x') = 'x'", "a=x", NotSelected, Abandoned),
    ("1 = TRUE", "", NotSelected, NotSelected),
    ("(1 > 0) AND (2 > 1)", "", Selected, Selected),
    ("s > 'a'", "s=b", Refused, Refused),
    ("s = 'é'", "s=é", Selected, Selected),
    ("a = 'x' AND NOT b = 'y'", "a=x;b=z", NotSelected, Abandoned),
    ("'x'", "", Refused, Refused),
    ("1", "", Refused, Refused),
    ("a + 1", "", Refused, Refused),
    ("color = 'red' AND", "", Refused, Refused),
    ("color =", "", Refused, Refused),
    ("= 'red'", "", Refused, Refused),
    ("color == 'red'", "", Refused, Refused),
    ("color != 'red'", "", Refused, Refused),
    ("x = NULL", "", Refused, Refused),
    ("NULL = x", "", Refused, Refused),
    ("x <> NULL", "", Refused, Refused),
    ("TRUE = 1", "", Refused, Refused),
    ("TRUE = 'x'", "", Refused, Refused),
    ("'x' = TRUE", "", NotSelected, NotSelected),
    ("'a' > 'b'", "", Refused, Refused),
    ("TRUE > 1", "", Refused, Refused),
    ("x > TRUE", "", Refused, Refused),
    ("(a = 1) > 1", "", Refused, Refused),
    ("1 IN ('1')", "", Refused, Refused),
    ("x IN (1, 2)", "", Refused, Refused),
    ("x IN ()", "", Refused, Refused),
    ("x LIKE 1", "", Refused, Refused),
    ("x LIKE 'a' ESCAPE 'ab'", "", Refused, Refused),
    ("x LIKE 'a' ESCAPE ''", "", Refused, Refused),
    ("XPATH '//a'", "", Refused, Refused),
    // Deliberate: ActiveMQ parses XQUERY and never selects; we refuse it.
    ("XQUERY '//a'", "", Refused, Refused),
    ("a.b = 'x'", "", Refused, Refused),
    ("a = 'x", "", Refused, Refused),
    ("a = 1 -- no newline", "", Refused, Refused),
    ("a = 'x' /* open", "", Refused, Refused),
    ("(a = 'x'", "", Refused, Refused),
    ("a = 'x')", "", Refused, Refused),
    ("NOT", "", Refused, Refused),
    ("a BETWEEN 1", "", Refused, Refused),
    ("a IS 'x'", "", Refused, Refused),
    ("a NOT = 'x'", "", Refused, Refused),
    // Deliberate: ActiveMQ keeps a number past 64 bits as a BigDecimal that equals nothing.
    ("99999999999999999999 > 1", "", Refused, Refused),
    ("a = 1 b", "", Refused, Refused),
    ("", "", Refused, Refused),
    ("   ", "", Refused, Refused),
    ("1 + s > 0", "s=5", Abandoned, Abandoned),
    ("NOT (1 + s > 0)", "s=5", Abandoned, Abandoned),
    ("(1 + s > 0) OR TRUE", "s=5", Abandoned, Abandoned),
    ("TRUE OR (1 + s > 0)", "s=5", Selected, Selected),
    ("1 + TRUE = 2", "", Abandoned, Abandoned),
    ("s * 2 = 10", "s=5", Abandoned, Abandoned),
    (
        "convert_string_expressions:1 + s > 0",
        "s=5",
        Abandoned,
        Refused,
    ),
    (
        "convert_string_expressions:TRUE = flag",
        "flag=true",
        Abandoned,
        Refused,
    ),
    (
        "convert_string_expressions:JMSPriority = '4'",
        "",
        Selected,
        Refused,
    ),
    (
        "convert_string_expressions:count > 2147483648",
        "count=2147483649",
        Selected,
        Refused,
    ),
    ("count > 1 OR count <= 1", "count=5", NotSelected, Selected),
    ("a = 'x' OR NOT b = 'y'", "a=q;b=z", NotSelected, Abandoned),
    ("NOT a = 'x'", "", NotSelected, NotSelected),
    ("NOT NOT TRUE", "", Selected, Selected),
    ("NOT NOT NOT FALSE", "", Selected, Selected),
    ("1 - -1 = 2", "", Selected, Selected),
    ("10 - 2 - 3 = 5", "", Selected, Selected),
    ("12 / 2 / 3 = 2", "", Selected, Selected),
    ("-2147483648 = -2147483648", "", Selected, Selected),
    ("-9223372036854775807 < 0", "", Selected, Selected),
    ("0.1 + 0.2 > 0.3", "", Selected, Selected),
    ("b LIKE '%'", "b=", Selected, Selected),
    ("b LIKE '%'", "", NotSelected, NotSelected),
    ("b LIKE 'a%' OR b IS NULL", "", Selected, Selected),
    ("JMSTimestamp = 0", "", Selected, Selected),
    ("JMSExpiration > -1", "", Selected, Selected),
    ("JMSReplyTo IS NULL", "", Selected, Selected),
];
