//! Every element and attribute name of ActiveMQ 5.17's core schema, so that the compiler can tell
//! a name ActiveMQ knows but ferromq does not act on (a warning: the file still works for
//! ActiveMQ, and probably for us) from a name nobody knows (an error: almost always a typo, and
//! ActiveMQ itself would refuse to start).
//!
//! The list is embedded from `activemq-5.17-schema-names.txt` (extracted from
//! `activemq-spring-5.17.2.jar`): one line per element, `ELEMENT | property elements | attributes`.
//! In XBean files, elements alternate between a *type* element (`<broker>`, `<kahaDB>`) and its
//! *property* elements (`<transportConnectors>`, `<persistenceAdapter>`), whose children are type
//! elements again.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::OnceLock;

const SCHEMA_NAMES: &str = include_str!("activemq-5.17-schema-names.txt");

/// Elements that older ActiveMQ releases knew and that real files still carry; treated as known
/// so that they are warned about, not rejected as typos.
const REMOVED_ELEMENTS: &[&str] = &["levelDB", "replicatedLevelDB", "amqPersistenceAdapter"];

/// The names one type element accepts.
#[derive(Debug, Default)]
pub struct ElementNames {
    /// Property child elements (`transportConnectors` under `broker`).
    pub properties: BTreeSet<&'static str>,
    pub attributes: BTreeSet<&'static str>,
}

fn table() -> &'static BTreeMap<&'static str, ElementNames> {
    static TABLE: OnceLock<BTreeMap<&'static str, ElementNames>> = OnceLock::new();
    TABLE.get_or_init(|| {
        let mut map = BTreeMap::new();
        for line in SCHEMA_NAMES.lines() {
            if line.starts_with('#') || line.trim().is_empty() {
                continue;
            }
            let mut fields = line.split('|');
            let (Some(name), Some(props), Some(attrs)) =
                (fields.next(), fields.next(), fields.next())
            else {
                continue;
            };
            map.insert(
                name.trim(),
                ElementNames {
                    properties: props.split_whitespace().collect(),
                    attributes: attrs.split_whitespace().collect(),
                },
            );
        }
        for removed in REMOVED_ELEMENTS {
            map.entry(*removed).or_default();
        }
        map
    })
}

/// The names accepted by type element `name`, when ActiveMQ knows it.
pub fn element(name: &str) -> Option<&'static ElementNames> {
    table().get(name)
}

/// Every type element name (for suggestions).
pub fn element_names() -> impl Iterator<Item = &'static str> {
    table().keys().copied()
}

/// Whether `name` is an element that older ActiveMQ releases had but 5.17 removed.
pub fn is_removed_element(name: &str) -> bool {
    REMOVED_ELEMENTS.contains(&name)
}

/// The candidate closest to `name`, when it is close enough to be a plausible typo. Case is
/// ignored for the comparison (`TransportConnectors` suggests `transportConnectors`).
pub fn suggest<'a>(name: &str, candidates: impl IntoIterator<Item = &'a str>) -> Option<&'a str> {
    let lower = name.to_ascii_lowercase();
    candidates
        .into_iter()
        .map(|c| {
            let score = strsim::normalized_damerau_levenshtein(&lower, &c.to_ascii_lowercase());
            (c, score)
        })
        .filter(|(_, score)| *score >= 0.7)
        .max_by(|a, b| a.1.total_cmp(&b.1))
        .map(|(c, _)| c)
}

/// `did you mean `x`?` when there is a plausible candidate.
pub fn did_you_mean<'a>(
    name: &str,
    candidates: impl IntoIterator<Item = &'a str>,
) -> Option<String> {
    suggest(name, candidates).map(|s| format!("did you mean `{s}`?"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn table_has_the_elements_ferromq_reads() {
        let broker = element("broker").expect("broker is known");
        assert!(broker.properties.contains("transportConnectors"));
        assert!(broker.attributes.contains("dataDirectory"));
        assert!(!broker.attributes.contains("transportConnectors2"));
        let connector = element("transportConnector").expect("known");
        assert!(connector.attributes.contains("uri"));
        assert!(element("levelDB").is_some(), "removed elements stay known");
        assert!(element("transportConector").is_none());
        assert!(element_names().count() > 140);
    }

    #[test]
    fn suggestions_find_typos_and_ignore_unrelated_names() {
        let props = &element("broker").expect("known").properties;
        assert_eq!(
            suggest("transportConectors", props.iter().copied()),
            Some("transportConnectors")
        );
        assert_eq!(
            suggest("transportConector", element_names()),
            Some("transportConnector")
        );
        assert_eq!(suggest("zzz", element_names()), None);
    }
}
