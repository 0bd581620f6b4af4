//! Destination names and ActiveMQ wildcard matching.
//!
//! ActiveMQ names use `.` between levels, `*` for exactly one level and `>` for "the rest". MQTT
//! names use `/`, `+` and `#`. The MQTT transport converts by swapping characters both ways
//! (`/`<->`.`, `+`<->`*`, `#`<->`>`), so the mapping is lossless: an MQTT `.` becomes `/` in the
//! ActiveMQ name and is never a separator there.
//!
//! # What "matches" means
//!
//! One rule covers concrete names and wildcard filters: an authorization entry pattern applies to
//! a destination when the two **overlap**, i.e. some concrete name is matched by both. For a
//! concrete destination this is ordinary wildcard matching. For a wildcard destination (an MQTT
//! subscription filter) it reproduces what ActiveMQ's `DestinationMap.get` returns for a wildcard
//! key (`DestinationMapNode.appendMatchingValues` / `appendMatchingWildcards`):
//!
//! - a `*` level in the filter walks into every child of the entry tree (literal or wildcard);
//! - a `>` level in the filter takes every entry below that point, including the node itself
//!   (filter `A.>` selects entry `A`, since `A.>` matches `A`);
//! - a `*` level in an entry matches any one level of the filter, including `*`;
//! - a `>` level in an entry takes everything at and below its position; at the end of the
//!   filter, `FOO.BAR` still selects entry `FOO.BAR.>` ("couldMatchAny").
//!
//! A `>` that is not the last level of a pattern (`A.>.B`, which MQTT filters never produce) is
//! treated as ActiveMQ's tree treats it: it needs at least one more level and ignores the levels
//! written after it (`A.>.B` applies to `A.X` and `A.X.Y` but not to `A`).

/// One level of a destination name or pattern.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Level<'a> {
    Literal(&'a str),
    /// `*` (ActiveMQ) / `+` (MQTT): exactly one level.
    AnyOne,
    /// `>` (ActiveMQ) / `#` (MQTT): the rest, including nothing at all.
    Rest,
}

/// A pattern kept in MQTT form so that MQTT topics are matched without converting them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CompiledPattern {
    levels: Vec<OwnedLevel>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum OwnedLevel {
    Literal(Box<str>),
    AnyOne,
    Rest,
}

impl OwnedLevel {
    fn as_level(&self) -> Level<'_> {
        match self {
            OwnedLevel::Literal(s) => Level::Literal(s),
            OwnedLevel::AnyOne => Level::AnyOne,
            OwnedLevel::Rest => Level::Rest,
        }
    }
}

impl CompiledPattern {
    /// Compile an ActiveMQ pattern (`sensors.*.temp`, `USERS.>`).
    pub fn from_activemq(pattern: &str) -> CompiledPattern {
        let levels = activemq_levels(pattern)
            .map(|level| match level {
                Level::Literal(text) => OwnedLevel::Literal(swap_chars(text).into_boxed_str()),
                Level::AnyOne => OwnedLevel::AnyOne,
                Level::Rest => OwnedLevel::Rest,
            })
            .collect();
        CompiledPattern { levels }
    }

    /// Does this pattern overlap the MQTT topic name or filter?
    pub fn matches_mqtt(&self, mqtt_topic: &str) -> bool {
        overlaps(
            mqtt_levels(mqtt_topic),
            self.levels.iter().map(OwnedLevel::as_level),
        )
    }
}

/// Levels of an ActiveMQ name or pattern.
pub fn activemq_levels(name: &str) -> impl Iterator<Item = Level<'_>> + Clone {
    name.split('.').map(|level| match level {
        "*" => Level::AnyOne,
        ">" => Level::Rest,
        other => Level::Literal(other),
    })
}

/// Levels of an MQTT topic name or filter.
pub fn mqtt_levels(topic: &str) -> impl Iterator<Item = Level<'_>> + Clone {
    topic.split('/').map(|level| match level {
        "+" => Level::AnyOne,
        "#" => Level::Rest,
        other => Level::Literal(other),
    })
}

/// The character swap of ActiveMQ's MQTT transport (`MQTTProtocolConverter`); it is its own
/// inverse, so it converts in both directions.
pub fn swap_chars(name: &str) -> String {
    name.chars()
        .map(|c| match c {
            '/' => '.',
            '.' => '/',
            '+' => '*',
            '*' => '+',
            '#' => '>',
            '>' => '#',
            other => other,
        })
        .collect()
}

/// MQTT topic name or filter -> ActiveMQ destination name.
pub fn mqtt_to_activemq(topic: &str) -> String {
    swap_chars(topic)
}

/// Do two level sequences overlap (is some concrete name matched by both)? `destination` may be
/// concrete or a filter; `pattern` is an authorization entry pattern. See the module docs.
pub fn overlaps<'a, 'b>(
    mut destination: impl Iterator<Item = Level<'a>>,
    mut pattern: impl Iterator<Item = Level<'b>>,
) -> bool {
    loop {
        match (destination.next(), pattern.next()) {
            (None, None) => return true,
            // The destination ended: only a final `>` in the pattern still applies.
            (None, Some(Level::Rest)) => return pattern.next().is_none(),
            (None, Some(_)) => return false,
            // The pattern ended: a trailing `>` in the filter also selects this entry.
            (Some(Level::Rest), None) => return true,
            (Some(_), None) => return false,
            (Some(Level::Rest), Some(_)) | (Some(_), Some(Level::Rest)) => return true,
            (Some(Level::AnyOne), Some(_)) | (Some(_), Some(Level::AnyOne)) => {}
            (Some(Level::Literal(d)), Some(Level::Literal(p))) => {
                if d != p {
                    return false;
                }
            }
        }
    }
}

/// Overlap of an ActiveMQ destination name (concrete or wildcard) and an ActiveMQ pattern. This is
/// the function registered with casbin.
pub fn activemq_overlaps(destination: &str, pattern: &str) -> bool {
    overlaps(activemq_levels(destination), activemq_levels(pattern))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn amq(dest: &str, pattern: &str) -> bool {
        activemq_overlaps(dest, pattern)
    }

    #[test]
    fn concrete_names_against_patterns() {
        let table = [
            ("A", "A", true),
            ("A", "B", false),
            ("A.B", "A.*", true),
            ("A", "A.*", false),
            ("A.B.C", "A.*", false),
            ("A", "A.>", true),
            ("A.B.C", "A.>", true),
            ("AB", "A.>", false),
            ("X", ">", true),
            ("", ">", true),
            ("A.B.C", "A.*.C", true),
            ("A.X.D", "A.*.C", false),
            ("A..B", "A.*.B", true),
            ("A", "A.>.B", false),
            ("A.X", "A.>.B", true),
        ];
        for (dest, pattern, expected) in table {
            assert_eq!(amq(dest, pattern), expected, "{dest} vs {pattern}");
        }
    }

    #[test]
    fn wildcard_destinations_overlap_like_destination_map() {
        let table = [
            ("A.>", "A", true),
            ("A.>", "A.B.C", true),
            ("A.>", "B.>", false),
            (">", "X.Y", true),
            ("A.*", "A", false),
            ("A.*", "A.>", true),
            ("A.*", "A.B", true),
            ("A.*", "A.B.C", false),
            ("A", "A.*", false),
            ("A.B", "A.>", true),
            ("*.B", ">", true),
            ("*.B", "X.*", true),
            ("*.B", "X.C", false),
            ("A.*.C", "A.B.>", true),
            ("A.*.C", "A.*.C", true),
            ("A.*.C", "A.B.D", false),
        ];
        for (dest, pattern, expected) in table {
            assert_eq!(amq(dest, pattern), expected, "{dest} vs {pattern}");
        }
    }

    #[test]
    fn mqtt_form_matches_the_converted_activemq_form() {
        let cases = [
            ("sensors/+/temp", "sensors.*.temp"),
            ("sensors/#", "sensors.>"),
            ("a.b/c", "a/b.c"),
            ("x/*", "x.+"),
            ("USERS/alice", "USERS.>"),
            ("GUEST", "GUEST.>"),
        ];
        for (mqtt, amq_pattern) in cases {
            let compiled = CompiledPattern::from_activemq(amq_pattern);
            assert_eq!(
                compiled.matches_mqtt(mqtt),
                activemq_overlaps(&mqtt_to_activemq(mqtt), amq_pattern),
                "{mqtt} vs {amq_pattern}"
            );
        }
        assert!(CompiledPattern::from_activemq("a/b.c").matches_mqtt("a.b/c"));
        assert!(!CompiledPattern::from_activemq("x.*").matches_mqtt("x/*/y"));
        assert_eq!(mqtt_to_activemq("a/b.c/+/#"), "a.b/c.*.>");
        assert_eq!(swap_chars(&mqtt_to_activemq("a/b.c/+/#")), "a/b.c/+/#");
    }
}
