//! A publish planned again keeps its queue entry numbers.
//!
//! A persistent session's queue is recovered in entry-number order (`store/recover.rs`),
//! while a live broker queues copies in the order their publishes complete. A publish whose
//! commit the store refused (full, for a moment) or whose plan went stale (a receiving
//! session ended) is planned again by its connection; with new numbers it would sort after
//! the publishes of the same connection kept meanwhile, and a restart would deliver it after
//! them (MQTT 4.6 ordered topics). The refused commit wrote none of its entries, so the new
//! plan takes the numbers the same sessions had in the first one.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use super::route::RoutePlan;
use crate::broker::durability::{Change, QueueOwner, QueueSeq};

/// The entry numbers a plan gave its sessions' kept copies, in plan order.
#[derive(Debug, Default)]
pub struct EntrySeqs(Vec<(Arc<str>, QueueSeq)>);

impl RoutePlan {
    /// The entry numbers of this plan's kept copies (its forwards' included).
    pub fn entry_seqs(&self) -> EntrySeqs {
        let mut seqs = Vec::new();
        self.collect_entry_seqs(&mut seqs);
        EntrySeqs(seqs)
    }

    fn collect_entry_seqs(&self, out: &mut Vec<(Arc<str>, QueueSeq)>) {
        for target in &self.targets {
            if let Some(seq) = target.seq {
                out.push((target.session.client_id().clone(), seq));
            }
        }
        for forward in &self.forwarded {
            forward.collect_entry_seqs(out);
        }
    }

    /// This plan, made again for the publish `previous` was planned for, takes `previous`'s
    /// numbers: each kept copy of a session that had one there (each number used once, in
    /// plan order), in its targets and in `changes` alike. Copies of sessions new to this
    /// plan keep their new numbers; a copy whose number `changes` does not name (the shared
    /// engine's own) is left alone.
    pub fn reuse_entry_seqs(&mut self, previous: EntrySeqs, changes: &mut [Change]) {
        let mut unused = previous.0;
        if unused.is_empty() {
            return;
        }
        let named = session_entries(changes);
        let mut renumbered = HashMap::new();
        self.renumber(&mut unused, &named, &mut renumbered);
        if renumbered.is_empty() {
            return;
        }
        for change in changes {
            if let Change::Message { queued_for, .. } = change {
                for entry in queued_for {
                    if matches!(entry.owner, QueueOwner::Session(_)) {
                        if let Some(old) = renumbered.get(&entry.seq) {
                            entry.seq = *old;
                        }
                    }
                }
            }
        }
    }

    fn renumber(
        &mut self,
        unused: &mut Vec<(Arc<str>, QueueSeq)>,
        named: &HashSet<(Arc<str>, QueueSeq)>,
        renumbered: &mut HashMap<QueueSeq, QueueSeq>,
    ) {
        for target in &mut self.targets {
            let Some(seq) = target.seq else {
                continue;
            };
            let client_id = target.session.client_id();
            if !named.contains(&(client_id.clone(), seq)) {
                continue;
            }
            let Some(at) = unused.iter().position(|(id, _)| id == client_id) else {
                continue;
            };
            let (_, old) = unused.remove(at);
            renumbered.insert(seq, old);
            target.seq = Some(old);
        }
        for forward in &mut self.forwarded {
            forward.renumber(unused, named, renumbered);
        }
    }
}

/// The (session, entry number) pairs `changes` keeps.
fn session_entries(changes: &[Change]) -> HashSet<(Arc<str>, QueueSeq)> {
    let mut named = HashSet::new();
    for change in changes {
        if let Change::Message { queued_for, .. } = change {
            for entry in queued_for {
                if let QueueOwner::Session(client_id) = &entry.owner {
                    named.insert((client_id.clone(), entry.seq));
                }
            }
        }
    }
    named
}

#[cfg(test)]
mod tests {
    use std::num::NonZeroU32;

    use bytes::Bytes;

    use super::*;
    use crate::broker::durability::Recording;
    use crate::broker::message::{Message, SampleStamp};
    use crate::broker::session::registry::SessionLifetime;
    use crate::broker::session::SubscriptionOptions;
    use crate::protocol::{self, QoS, RetainHandling};

    fn published() -> Message {
        Message {
            stamp: SampleStamp::NONE,
            topic: Arc::from("a/b"),
            payload: Bytes::from_static(b"x"),
            qos: QoS::ExactlyOnce,
            retain: false,
            v5: None,
        }
    }

    /// A persistent MQTT 5 session subscribed to `filters` (QoS 1, identifiers 1, 2, ...).
    fn subscriber(core: &super::super::BrokerCore, client_id: &str, filters: &[&str]) {
        let lifetime = SessionLifetime::Kept { expiry_secs: None };
        let attached = core
            .attach(client_id, true, lifetime, true, None, true)
            .expect("attach");
        for (n, filter) in filters.iter().enumerate() {
            let wire = protocol::SubscriptionOptions {
                qos: QoS::AtLeastOnce,
                no_local: false,
                retain_as_published: false,
                retain_handling: RetainHandling::SendAtSubscribe,
            };
            let id = NonZeroU32::new(u32::try_from(n).expect("few") + 1);
            let options = SubscriptionOptions::from_subscribe(&wire, id);
            assert!(core.subscribe(
                &attached.session,
                attached.token.generation,
                filter,
                options
            ));
        }
    }

    /// Every (session, number) of `changes`, sorted.
    fn kept(changes: &[Change]) -> Vec<(Arc<str>, QueueSeq)> {
        let mut kept: Vec<_> = session_entries(changes).into_iter().collect();
        kept.sort();
        kept
    }

    #[test]
    fn a_publish_planned_again_keeps_its_entry_numbers() {
        let (core, _) = crate::broker::runtime::test_core(Recording::new());
        subscriber(&core, "two-copies", &["a/#", "a/+"]);
        subscriber(&core, "one-copy", &["a/b"]);
        let (first, first_changes) = core.plan_route(published(), None);
        let before = kept(&first_changes);
        assert_eq!(before.len(), 3, "{before:?}");
        let previous = first.entry_seqs();
        let (mut again, mut changes) = core.plan_route(first.into_message(), None);
        assert_ne!(kept(&changes), before, "a new plan takes new numbers");
        again.reuse_entry_seqs(previous, &mut changes);
        assert_eq!(kept(&changes), before);
        let mut targets = again.entry_seqs().0;
        targets.sort();
        assert_eq!(targets, before, "the targets name the same entries");
    }

    #[test]
    fn a_session_new_to_the_plan_keeps_its_new_number() {
        let (core, _) = crate::broker::runtime::test_core(Recording::new());
        subscriber(&core, "first", &["a/b"]);
        let (plan, first_changes) = core.plan_route(published(), None);
        let before = kept(&first_changes);
        let previous = plan.entry_seqs();
        subscriber(&core, "later", &["a/#"]);
        let (mut again, mut changes) = core.plan_route(plan.into_message(), None);
        again.reuse_entry_seqs(previous, &mut changes);
        let after = kept(&changes);
        assert_eq!(after.len(), 2);
        assert!(after.contains(&before[0]), "{after:?}");
        let later = after
            .iter()
            .find(|(id, _)| &**id == "later")
            .expect("later");
        assert!(later.1 > before[0].1, "a new number: {after:?}");
    }
}
