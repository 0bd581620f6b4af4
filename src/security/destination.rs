//! Destination names and ActiveMQ wildcard matching.
//!
//! ActiveMQ names use `.` between levels, `*` for exactly one level and `>` for "the rest". MQTT
//! names use `/`, `+` and `#`. The MQTT transport converts by swapping characters both ways
//! (`/`<->`.`, `+`<->`*`, `#`<->`>`), so the mapping is lossless: an MQTT `.` becomes `/` in the
//! ActiveMQ name and is never a separator there.
//!
//! # Which entries apply to a destination
//!
//! An authorization entry applies to a destination when ActiveMQ's `DestinationMap` lookup of that
//! destination finds it: `DefaultAuthorizationMap.get` calls `findWildcardMatches(key, false)`,
//! i.e. `DestinationMapNode.appendMatchingValues(.., deep = false)` from the root of the entry
//! tree, and the ACLs of every entry found are unioned (plus the `defaultEntry`). [`selects`]
//! reproduces that walk for one entry pattern (whether an entry is found depends only on its own
//! pattern, so the lookup decomposes into one test per pattern). For a concrete name it is ordinary
//! wildcard matching. For a wildcard destination (an MQTT subscription filter, `+`/`#` mapped to
//! `*`/`>`) the walk, level by level, is:
//!
//! - the entry's `*` child is followed with the rest of the destination, and from there on a `>`
//!   in the destination takes the node and everything below it (the recursive call is `deep`);
//! - the entry's `>` child is taken with everything below it;
//! - a `*` in the destination steps into every child of the entry tree (literal, `*` or `>`);
//! - any other level, **including `>`**, steps only into the child of exactly that name: at the
//!   top level a `>` in the destination is a literal path element, not "everything below";
//! - at the end of the destination the node reached is taken, and its `>` child ("FOO.BAR" finds
//!   "FOO.BAR.>").
//!
//! So with only `a.b` in the map, `a.>`, `>`, `*.>` and even `a.b.>` find nothing while `a.*`
//! finds `a.b`; with only `*.b`, `a.>` and `*.>` find it (through the `*` child) but `>` does not.
//! These are the SUBACK codes measured on ActiveMQ 5.17 itself (a user who may read only
//! `plant.*.telemetry` is refused `plant/#`), so the rule is ActiveMQ's, not a reading of it.
//!
//! A `>` that is not the last level of a pattern (`A.>.B`, which MQTT filters never produce) is
//! taken as ActiveMQ's tree takes it: the `>` child with everything below it, so `A.>.B` applies
//! to `A.X` and `A.X.Y` but not to `A`.

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

    /// Is an entry with this pattern found for the MQTT topic name or filter (see [`selects`])?
    pub fn matches_mqtt(&self, mqtt_topic: &str) -> bool {
        selects(
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

/// Does ActiveMQ's destination map lookup of `destination` (a concrete name or a wildcard
/// filter) find an entry stored under `pattern`? See the module docs.
pub fn selects<'a, 'b>(
    destination: impl Iterator<Item = Level<'a>> + Clone,
    pattern: impl Iterator<Item = Level<'b>> + Clone,
) -> bool {
    append_matching_values(destination, pattern, false)
}

/// `DestinationMapNode.appendMatchingValues` restricted to the path of one pattern: `destination`
/// holds the levels not yet looked up, `pattern` the levels below the node reached. Returns whether
/// the value stored at the end of the pattern is added to the answer.
fn append_matching_values<'a, 'b>(
    mut destination: impl Iterator<Item = Level<'a>> + Clone,
    mut pattern: impl Iterator<Item = Level<'b>> + Clone,
    deep: bool,
) -> bool {
    loop {
        let Some(level) = destination.next() else {
            // The node reached, and its `>` child.
            return match pattern.next() {
                None => true,
                Some(Level::Rest) => pattern.next().is_none(),
                Some(_) => false,
            };
        };
        if deep && level == Level::Rest {
            // The node's values and all its descendants'.
            return true;
        }
        // The node has no child on the pattern's path: nothing more is found.
        let Some(child) = pattern.next() else {
            return false;
        };
        // appendMatchingWildcards: the `*` child continues with the rest of the destination
        // (deep), the `>` child is taken with its descendants.
        match child {
            Level::AnyOne => {
                if append_matching_values(destination.clone(), pattern.clone(), true) {
                    return true;
                }
            }
            Level::Rest => return true,
            Level::Literal(_) => {}
        }
        // Step: `*` into any child, anything else into the child of that exact name.
        let stays_on_path = match (level, child) {
            (Level::AnyOne, _) => true,
            (Level::Literal(d), Level::Literal(p)) => d == p,
            _ => false,
        };
        if !stays_on_path {
            return false;
        }
    }
}

/// [`selects`] on an ActiveMQ destination name (concrete or wildcard) and an ActiveMQ pattern. This
/// is the function registered with casbin.
pub fn activemq_selects(destination: &str, pattern: &str) -> bool {
    selects(activemq_levels(destination), activemq_levels(pattern))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn amq(dest: &str, pattern: &str) -> bool {
        activemq_selects(dest, pattern)
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
    fn wildcard_destinations_find_entries_like_destination_map() {
        let table = [
            // A `>` in the destination is a literal level at the top of the walk.
            ("A.>", "A", false),
            ("A.>", "A.B.C", false),
            ("A.>", "A.>", true),
            ("A.>", "B.>", false),
            (">", "X.Y", false),
            (">", ">", true),
            ("A.B.>", "A.B", false),
            // ... but an entry's `>` child is always taken.
            ("A.B", "A.>", true),
            ("A.>", ">", true),
            ("*.B", ">", true),
            // `*` in the destination walks every child, wildcard children included.
            ("A.*", "A", false),
            ("A.*", "A.>", true),
            ("A.*", "A.B", true),
            ("A.*", "A.*", true),
            ("A.*", "A.B.C", false),
            ("A", "A.*", false),
            ("*.B", "X.*", true),
            ("*.B", "X.C", false),
            ("*", "A.>", true),
            ("A.*.C", "A.B.>", true),
            ("A.*.C", "A.*.C", true),
            ("A.*.C", "A.B.D", false),
            // Below an entry's `*` child the walk is deep: `>` takes everything under it.
            ("A.>", "*.B", true),
            ("X.>", "*.B.C", true),
            (">", "*.B", false),
            ("*.>", "*.B", true),
            ("A.*.>", "A.*", true),
            ("A.>", "*", true),
        ];
        for (dest, pattern, expected) in table {
            assert_eq!(amq(dest, pattern), expected, "{dest} vs {pattern}");
        }
    }

    /// The SUBACK codes measured on ActiveMQ 5.17, as lookups of the mapped filter: the rule
    /// must give what a migrating user saw before.
    #[test]
    fn measured_activemq_cases() {
        let finds = |filter: &str, pattern: &str| amq(&mqtt_to_activemq(filter), pattern);
        // Only `a.b`: `a/#`, `#`, `+/#`, `a/b/#` refused, `a/+` granted.
        for filter in ["a/#", "#", "+/#", "a/b/#"] {
            assert!(!finds(filter, "a.b"), "{filter}");
        }
        assert!(finds("a/+", "a.b"));
        // Only `*.b`: `a/#`, `x/#`, `+/#` granted, `#` refused.
        for filter in ["a/#", "x/#", "+/#"] {
            assert!(finds(filter, "*.b"), "{filter}");
        }
        assert!(!finds("#", "*.b"));
        // A `viewers` entry `plant.*.telemetry`: only filters that stay inside it are granted.
        for (filter, expected) in [
            ("plant/#", false),
            ("#", false),
            ("plant/+/telemetry", true),
            ("+/+/telemetry", true),
        ] {
            assert_eq!(finds(filter, "plant.*.telemetry"), expected, "{filter}");
        }
    }

    /// For a concrete name the lookup is ordinary wildcard matching.
    #[test]
    fn concrete_names_find_the_patterns_that_match_them() {
        fn matches(name: &[&str], pattern: &[&str]) -> bool {
            match (name.split_first(), pattern.split_first()) {
                (None, None) => true,
                (_, Some((&">", []))) => true,
                (Some(_), Some((&">", _))) => true,
                (None, Some(_)) | (Some(_), None) => false,
                (Some((_, n)), Some((&"*", p))) => matches(n, p),
                (Some((a, n)), Some((b, p))) => a == b && matches(n, p),
            }
        }
        let levels = ["a", "b", "*", ">"];
        let mut patterns: Vec<Vec<&str>> = vec![vec![]];
        for _ in 0..3 {
            let longer: Vec<Vec<&str>> = patterns
                .iter()
                .flat_map(|p| {
                    levels.iter().map(move |l| {
                        let mut p = p.clone();
                        p.push(l);
                        p
                    })
                })
                .collect();
            patterns.extend(longer);
        }
        patterns.retain(|p| !p.is_empty());
        for name in patterns
            .iter()
            .filter(|p| !p.contains(&"*") && !p.contains(&">"))
        {
            for pattern in &patterns {
                assert_eq!(
                    amq(&name.join("."), &pattern.join(".")),
                    matches(name, pattern),
                    "{name:?} vs {pattern:?}"
                );
            }
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
                activemq_selects(&mqtt_to_activemq(mqtt), amq_pattern),
                "{mqtt} vs {amq_pattern}"
            );
        }
        assert!(CompiledPattern::from_activemq("a/b.c").matches_mqtt("a.b/c"));
        assert!(!CompiledPattern::from_activemq("x.*").matches_mqtt("x/*/y"));
        assert_eq!(mqtt_to_activemq("a/b.c/+/#"), "a.b/c.*.>");
        assert_eq!(swap_chars(&mqtt_to_activemq("a/b.c/+/#")), "a/b.c/+/#");
    }
}
