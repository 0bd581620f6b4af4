//! Shared subscriptions (MQTT 5.0 4.8.2; MQTT 3.1.1 clients use `$share/{group}/{filter}` the
//! same way, as mosquitto and EMQX allow): which member of a group receives a message.
//!
//! The choice is in two steps:
//! 1. **Who may receive it**: the members whose client is online; when none is, the members
//!    whose session is kept offline (persistent), so a QoS 1/2 message waits in one of their
//!    queues (a QoS 0 one is then dropped, as for any offline session); when there is neither,
//!    nobody.
//! 2. **Which one** of those, by the configured [`SharedStrategy`] (`<ferromq:sharedSubscriptions
//!    strategy="..."/>`): round robin, random, sticky, or a hash of the publisher's client id.
//!
//! The syntax (`$share/{ShareName}/{filter}`) is read by
//! [`crate::protocol::topic::parse_shared_subscription`]. Everything here is pure apart from the group's [`GroupCursor`] (atomics, so publishers that
//! hold the subscription tree for reading can advance it) and the random draw, which the caller
//! passes in. The strategy itself is held by [`StrategyCell`], swapped by a reload.

use std::sync::atomic::{AtomicU64, AtomicU8, Ordering};

use smallvec::SmallVec;

pub use crate::config::SharedStrategy;

/// The running strategy, swapped as a whole by a reload (it applies to the next message).
#[derive(Debug)]
pub struct StrategyCell(AtomicU8);

impl StrategyCell {
    pub fn new(strategy: SharedStrategy) -> Self {
        StrategyCell(AtomicU8::new(Self::code(strategy)))
    }

    pub fn load(&self) -> SharedStrategy {
        let code = self.0.load(Ordering::Relaxed);
        SharedStrategy::ALL
            .into_iter()
            .find(|s| Self::code(*s) == code)
            .unwrap_or_default()
    }

    pub fn store(&self, strategy: SharedStrategy) {
        self.0.store(Self::code(strategy), Ordering::Relaxed);
    }

    fn code(strategy: SharedStrategy) -> u8 {
        match strategy {
            SharedStrategy::RoundRobin => 0,
            SharedStrategy::Random => 1,
            SharedStrategy::Sticky => 2,
            SharedStrategy::HashClientId => 3,
        }
    }
}

/// What one group remembers between messages: whose turn was last (round robin, and sticky
/// when it picks a new member) and the member it sticks to (sticky). Lives with the group in
/// the subscription tree.
///
/// The turn is remembered as a member, not as a position: when members leave or go offline
/// the positions shift, and a position would skip the member after the one that left.
#[derive(Debug, Default)]
pub struct GroupCursor {
    /// The id + 1 of the member the last turn went to; 0: no turn yet.
    last: AtomicU64,
    /// The sticky member's id + 1; 0: none yet.
    sticky: AtomicU64,
}

/// A member as the choice sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Candidate {
    /// The member's session id (unique for the life of the process).
    pub id: u64,
    /// Its client is connected.
    pub online: bool,
    /// Its session is kept while offline (clean session 0 / session expiry > 0).
    pub persistent: bool,
}

/// What the strategies other than round robin draw on, for one message.
#[derive(Debug, Clone, Copy, Default)]
pub struct Draw {
    /// Hash of the publisher's client id ([`publisher_hash`]); used by `hash-client-id`.
    pub publisher_hash: u64,
    /// A random number; used by `random`.
    pub random: u64,
}

/// Hash of a publisher's client id for [`Draw::publisher_hash`]: fixed seeds, so one client id
/// maps to one member for as long as the group does not change.
pub fn publisher_hash(client_id: &str) -> u64 {
    ahash::RandomState::with_seeds(0x5eed, 0xfe77, 0x0a11, 0x5a4e).hash_one(client_id)
}

/// The index in `candidates` of the member that receives the message, or `None` when no
/// member can (all offline and none kept). Candidates are taken in ascending id order whatever
/// order they come in, so a turn means the same member however the group is stored.
pub fn choose(
    strategy: SharedStrategy,
    cursor: &GroupCursor,
    candidates: &[Candidate],
    draw: Draw,
) -> Option<usize> {
    let mut eligible: SmallVec<[usize; 8]> = (0..candidates.len())
        .filter(|&i| candidates[i].online)
        .collect();
    if eligible.is_empty() {
        eligible = (0..candidates.len())
            .filter(|&i| candidates[i].persistent)
            .collect();
    }
    if eligible.is_empty() {
        return None;
    }
    eligible.sort_unstable_by_key(|&i| candidates[i].id);
    let n = eligible.len();
    let turn = |cursor: &GroupCursor| take_turn(cursor, candidates, &eligible);
    let pick = match strategy {
        SharedStrategy::RoundRobin => turn(cursor),
        SharedStrategy::Random => eligible[(draw.random % n as u64) as usize],
        SharedStrategy::HashClientId => eligible[(draw.publisher_hash % n as u64) as usize],
        SharedStrategy::Sticky => {
            let stuck = cursor.sticky.load(Ordering::Relaxed);
            match eligible
                .iter()
                .copied()
                .find(|&i| stuck != 0 && candidates[i].id.wrapping_add(1) == stuck)
            {
                Some(i) => i,
                None => {
                    let i = turn(cursor);
                    cursor
                        .sticky
                        .store(candidates[i].id.wrapping_add(1), Ordering::Relaxed);
                    i
                }
            }
        }
    };
    Some(pick)
}

/// The next turn among `eligible` (indexes into `candidates`, in ascending id order, not
/// empty): the first member whose id is above the last turn's, or, past the end, the first
/// one. A compare-and-swap makes publishers that choose at the same time take distinct turns.
fn take_turn(cursor: &GroupCursor, candidates: &[Candidate], eligible: &[usize]) -> usize {
    let mut last = cursor.last.load(Ordering::Relaxed);
    loop {
        let pick = eligible
            .iter()
            .copied()
            .find(|&i| candidates[i].id.wrapping_add(1) > last)
            .unwrap_or(eligible[0]);
        let mark = candidates[pick].id.wrapping_add(1);
        match cursor
            .last
            .compare_exchange_weak(last, mark, Ordering::Relaxed, Ordering::Relaxed)
        {
            Ok(_) => return pick,
            Err(now) => last = now,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn online(id: u64) -> Candidate {
        Candidate {
            id,
            online: true,
            persistent: false,
        }
    }

    fn offline_kept(id: u64) -> Candidate {
        Candidate {
            id,
            online: false,
            persistent: true,
        }
    }

    fn picks(strategy: SharedStrategy, candidates: &[Candidate], times: usize) -> Vec<u64> {
        let cursor = GroupCursor::default();
        (0..times)
            .map(|i| {
                let draw = Draw {
                    publisher_hash: 7,
                    random: (i as u64).wrapping_mul(0x9e37_79b9_7f4a_7c15) >> 7,
                };
                let index = choose(strategy, &cursor, candidates, draw).expect("a member");
                candidates[index].id
            })
            .collect()
    }

    #[test]
    fn round_robin_takes_members_in_turn_whatever_their_order() {
        let members = [online(9), online(3), online(5)];
        assert_eq!(
            picks(SharedStrategy::RoundRobin, &members, 6),
            [3, 5, 9, 3, 5, 9]
        );
    }

    #[test]
    fn online_members_are_preferred_then_kept_offline_ones_then_nobody() {
        let members = [offline_kept(1), online(2), offline_kept(3)];
        assert_eq!(picks(SharedStrategy::RoundRobin, &members, 3), [2, 2, 2]);
        let all_offline = [offline_kept(1), offline_kept(3)];
        assert_eq!(
            picks(SharedStrategy::RoundRobin, &all_offline, 4),
            [1, 3, 1, 3]
        );
        let gone = Candidate {
            id: 4,
            online: false,
            persistent: false,
        };
        let cursor = GroupCursor::default();
        for strategy in SharedStrategy::ALL {
            assert_eq!(choose(strategy, &cursor, &[gone], Draw::default()), None);
            assert_eq!(choose(strategy, &cursor, &[], Draw::default()), None);
        }
    }

    #[test]
    fn sticky_keeps_one_member_until_it_goes_offline() {
        let cursor = GroupCursor::default();
        let mut members = [online(1), online(2), online(3)];
        let first = choose(SharedStrategy::Sticky, &cursor, &members, Draw::default());
        for _ in 0..5 {
            assert_eq!(
                choose(SharedStrategy::Sticky, &cursor, &members, Draw::default()),
                first
            );
        }
        let stuck = first.expect("a member");
        members[stuck].online = false;
        let next = choose(SharedStrategy::Sticky, &cursor, &members, Draw::default());
        assert!(next.is_some_and(|i| i != stuck));
        assert_eq!(
            choose(SharedStrategy::Sticky, &cursor, &members, Draw::default()),
            next
        );
    }

    /// The id `choose` picks for one message.
    fn pick(strategy: SharedStrategy, cursor: &GroupCursor, members: &[Candidate]) -> u64 {
        let index = choose(strategy, cursor, members, Draw::default()).expect("a member");
        members[index].id
    }

    #[test]
    fn round_robin_goes_on_with_the_next_member_when_the_current_one_leaves() {
        let cursor = GroupCursor::default();
        let (a, b, c) = (online(1), online(2), online(3));
        assert_eq!(pick(SharedStrategy::RoundRobin, &cursor, &[a, b, c]), 1);
        // a leaves (out of the group) or goes offline (still in it): b's turn either way.
        assert_eq!(pick(SharedStrategy::RoundRobin, &cursor, &[b, c]), 2);
        assert_eq!(pick(SharedStrategy::RoundRobin, &cursor, &[b, c]), 3);
        assert_eq!(pick(SharedStrategy::RoundRobin, &cursor, &[b, c]), 2);
        let cursor = GroupCursor::default();
        let a_offline = Candidate { online: false, ..a };
        assert_eq!(pick(SharedStrategy::RoundRobin, &cursor, &[a, b, c]), 1);
        assert_eq!(
            pick(SharedStrategy::RoundRobin, &cursor, &[a_offline, b, c]),
            2
        );
        // The last one in turn leaves: the turn wraps to the first.
        assert_eq!(pick(SharedStrategy::RoundRobin, &cursor, &[a, b, c]), 3);
        assert_eq!(pick(SharedStrategy::RoundRobin, &cursor, &[a, b]), 1);
        // A member that joins after the last turn's gets its turn in order.
        let d = online(4);
        assert_eq!(pick(SharedStrategy::RoundRobin, &cursor, &[a, b, d]), 2);
        assert_eq!(pick(SharedStrategy::RoundRobin, &cursor, &[a, b, d]), 4);
        assert_eq!(pick(SharedStrategy::RoundRobin, &cursor, &[a, b, d]), 1);
    }

    #[test]
    fn sticky_moves_to_the_next_member_in_turn_however_many_messages_it_had() {
        for before in 1..6 {
            let cursor = GroupCursor::default();
            let (a, b, c) = (online(1), online(2), online(3));
            for _ in 0..before {
                assert_eq!(pick(SharedStrategy::Sticky, &cursor, &[a, b, c]), 1);
            }
            assert_eq!(
                pick(SharedStrategy::Sticky, &cursor, &[b, c]),
                2,
                "{before}"
            );
            assert_eq!(
                pick(SharedStrategy::Sticky, &cursor, &[b, c]),
                2,
                "{before}"
            );
            assert_eq!(pick(SharedStrategy::Sticky, &cursor, &[c]), 3, "{before}");
            assert_eq!(
                pick(SharedStrategy::Sticky, &cursor, &[a, c]),
                3,
                "{before}"
            );
        }
    }

    #[test]
    fn concurrent_turns_go_to_distinct_members() {
        let cursor = GroupCursor::default();
        let members: Vec<Candidate> = (1..=4).map(online).collect();
        let picked: Vec<u64> = std::thread::scope(|scope| {
            let threads: Vec<_> = (0..4)
                .map(|_| {
                    scope.spawn(|| {
                        (0..1000)
                            .map(|_| pick(SharedStrategy::RoundRobin, &cursor, &members))
                            .collect::<Vec<_>>()
                    })
                })
                .collect();
            threads
                .into_iter()
                .flat_map(|t| t.join().expect("no panic"))
                .collect()
        });
        for id in 1..=4 {
            let count = picked.iter().filter(|&&p| p == id).count();
            assert_eq!(
                count, 1000,
                "member {id}: every member gets exactly its share"
            );
        }
    }

    #[test]
    fn hash_of_client_id_sends_one_publisher_to_one_member() {
        let members = [online(1), online(2), online(3)];
        let cursor = GroupCursor::default();
        for publisher in ["a", "sensor-17", "another"] {
            let draw = Draw {
                publisher_hash: publisher_hash(publisher),
                random: 0,
            };
            let first = choose(SharedStrategy::HashClientId, &cursor, &members, draw);
            for _ in 0..4 {
                assert_eq!(
                    choose(SharedStrategy::HashClientId, &cursor, &members, draw),
                    first
                );
            }
        }
        let spread: std::collections::BTreeSet<u64> = (0..64)
            .map(|i| publisher_hash(&format!("client-{i}")) % 3)
            .collect();
        assert_eq!(spread.len(), 3, "64 client ids reach every member");
    }

    #[test]
    fn random_reaches_every_member_and_only_eligible_ones() {
        let members = [online(1), offline_kept(2), online(3)];
        let seen: std::collections::BTreeSet<u64> = picks(SharedStrategy::Random, &members, 64)
            .into_iter()
            .collect();
        assert_eq!(seen, [1, 3].into_iter().collect());
    }

    #[test]
    fn the_strategy_cell_round_trips_every_strategy() {
        let cell = StrategyCell::new(SharedStrategy::default());
        assert_eq!(cell.load(), SharedStrategy::RoundRobin);
        for strategy in SharedStrategy::ALL {
            cell.store(strategy);
            assert_eq!(cell.load(), strategy);
        }
    }
}
