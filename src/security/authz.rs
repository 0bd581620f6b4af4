//! Destination authorization: `authorizationPlugin` entries compiled into a casbin model and
//! policy, plus a precompiled evaluator built from that same policy for the hot path.
//!
//! Casbin is the source of truth: the entries become casbin policy rows
//! `p = subject, kind, action, pattern, entry` (subject `*`, `u:<user>` or `g:<group>` per the
//! entry's `groupClass`; kind `topic`/`queue`/`temp-topic`/`temp-queue`; action
//! `read`/`write`/`admin`; one row per pattern of a composite entry). The matcher uses two
//! functions registered with casbin: `principalIn` (is the row's subject one of the principal's
//! names, which always include `*`) and `destinationMatch` (is the entry found by ActiveMQ's
//! destination map lookup of the destination, see [`super::destination`]). The effect `some(where (p.eft == allow))` is the union rule: allowed
//! when any matching entry grants the action to any of the principal's names; no matching row
//! means denied. `defaultEntry` becomes rows on `>` for topics and queues (ActiveMQ adds it to the
//! entries of every destination), `tempDestinationAuthorizationEntry` rows on `>` for temporary
//! destinations. Temporary destinations are decided by that entry alone, as ActiveMQ's
//! `AuthorizationBroker` does (`getTempDestination*ACLs`): `authorizationEntry`s naming
//! `tempQueue`/`tempTopic` give no rows, and without a `tempDestinationAuthorizationEntry`
//! every principal may use temporary destinations (ActiveMQ's ACL set is then null, which
//! allows).
//!
//! Casbin's enforce interprets the matcher for every row (tens of microseconds), so decisions are
//! made by `CompiledPolicy`, which is built by reading the rows back out of the enforcer and
//! evaluates the same rule without allocating. `ferromq explain` and the tests run both and
//! compare.

use std::collections::{BTreeSet, HashMap, HashSet};
use std::future::Future;
use std::pin::pin;
use std::sync::Arc;
use std::task::{Context, Poll, Wake, Waker};

use casbin::function_map::{dynamic_to_str, OperatorFunction};
use casbin::rhai::Dynamic;
use casbin::{CoreApi, DefaultModel, Enforcer, MemoryAdapter, MgmtApi};

use super::destination::{activemq_selects, CompiledPattern};
use super::{Action, Principal};
use crate::config::{AuthorizationConfig, AuthzEntry, DestinationKind, PrincipalKind};

/// The casbin model. `entry` carries the index of the configuration entry (for explain).
pub const CASBIN_MODEL: &str = "\
[request_definition]
r = names, kind, act, dest

[policy_definition]
p = sub, kind, act, pattern, entry

[policy_effect]
e = some(where (p.eft == allow))

[matchers]
m = r.kind == p.kind && r.act == p.act && principalIn(r.names, p.sub) && destinationMatch(r.dest, p.pattern)
";

const EVERYONE: &str = "*";

/// Where an entry came from in the `authorizationMap`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EntryOrigin {
    Entry,
    Default,
    TempDestination,
}

pub struct Authorizer {
    enforcer: Enforcer,
    entries: Vec<(EntryOrigin, AuthzEntry)>,
    compiled: CompiledPolicy,
    /// Whether logins carry a user principal that entries naming users can match. ActiveMQ's
    /// `simpleAuthenticationPlugin` gives a connection its group principals only (measured on
    /// 5.17: an entry with `groupClass="org.apache.activemq.jaas.UserPrincipal"` grants its
    /// user nothing there), while JAAS logins carry a `UserPrincipal`.
    user_principals: bool,
    /// A `tempDestinationAuthorizationEntry` is configured; without one temporary destinations
    /// are open to every principal (see the module docs).
    temp_entry: bool,
}

impl std::fmt::Debug for Authorizer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Authorizer")
            .field("entries", &self.entries.len())
            .finish_non_exhaustive()
    }
}

impl Authorizer {
    pub fn new(config: &AuthorizationConfig) -> Result<Authorizer, String> {
        let mut entries: Vec<(EntryOrigin, AuthzEntry)> = config
            .entries
            .iter()
            .map(|e| (EntryOrigin::Entry, e.clone()))
            .collect();
        entries.extend(
            config
                .default_entry
                .iter()
                .map(|e| (EntryOrigin::Default, e.clone())),
        );
        entries.extend(
            config
                .temp_entry
                .iter()
                .map(|e| (EntryOrigin::TempDestination, e.clone())),
        );
        let rows = policy_rows(&entries);
        let enforcer = block_on(build_enforcer(rows))?;
        let compiled = CompiledPolicy::from_rows(&enforcer.get_policy())?;
        Ok(Authorizer {
            enforcer,
            entries,
            compiled,
            user_principals: true,
            temp_entry: config.temp_entry.is_some(),
        })
    }

    /// The same policy for logins that carry no user principal (`simpleAuthenticationPlugin`):
    /// entries naming users grant nothing.
    pub fn without_user_principals(mut self) -> Authorizer {
        self.user_principals = false;
        self
    }

    /// Whether entries naming users can match a login (false under `simpleAuthenticationPlugin`).
    pub fn user_principals(&self) -> bool {
        self.user_principals
    }

    /// The fast decision for an MQTT topic name or filter (`kind` is normally `Topic`).
    pub fn decide_mqtt(
        &self,
        principal: &Principal,
        action: Action,
        kind: DestinationKind,
        mqtt_name: &str,
    ) -> bool {
        if self.temporary_open(kind) {
            return true;
        }
        self.compiled
            .decide(principal, self.user_principals, action, kind, mqtt_name)
    }

    /// A temporary destination while no `tempDestinationAuthorizationEntry` is configured:
    /// allowed to everyone, as ActiveMQ does.
    pub fn temporary_open(&self, kind: DestinationKind) -> bool {
        is_temporary(kind) && !self.temp_entry
    }

    /// The decision as casbin's enforcer makes it (slow; for explain and verification).
    pub fn decide_with_casbin(
        &self,
        principal: &Principal,
        action: Action,
        kind: DestinationKind,
        activemq_name: &str,
    ) -> Result<bool, String> {
        if self.temporary_open(kind) {
            return Ok(true);
        }
        self.enforcer
            .enforce((
                principal_names(principal, self.user_principals),
                kind_name(kind),
                action_name(action),
                activemq_name,
            ))
            .map_err(|e| format!("casbin enforce failed: {e}"))
    }

    /// Every entry that ActiveMQ's destination map lookup of `activemq_name` finds, with the policy subjects granting
    /// `action` in it, as stored in casbin.
    pub fn matching_entries(
        &self,
        action: Action,
        kind: DestinationKind,
        activemq_name: &str,
    ) -> Vec<EntryMatch<'_>> {
        let mut matches: Vec<EntryMatch<'_>> = Vec::new();
        for row in self.enforcer.get_policy() {
            let [subject, row_kind, row_action, pattern, index] = row.as_slice() else {
                continue;
            };
            if row_kind != kind_name(kind) || !activemq_selects(activemq_name, pattern) {
                continue;
            }
            let Some(index) = index.parse::<usize>().ok() else {
                continue;
            };
            let Some((origin, entry)) = self.entries.get(index) else {
                continue;
            };
            let position = match matches.iter().position(|m| m.index == index) {
                Some(position) => position,
                None => {
                    matches.push(EntryMatch {
                        index,
                        origin: *origin,
                        entry,
                        patterns: Vec::new(),
                        granted_to: Vec::new(),
                    });
                    matches.len() - 1
                }
            };
            let m = &mut matches[position];
            if !m.patterns.contains(pattern) {
                m.patterns.push(pattern.clone());
            }
            if row_action == action_name(action) && !m.granted_to.contains(subject) {
                m.granted_to.push(subject.clone());
            }
        }
        matches.sort_by_key(|m| m.index);
        matches
    }
}

/// One entry that applies to a destination (for explain).
#[derive(Debug)]
pub struct EntryMatch<'a> {
    index: usize,
    pub origin: EntryOrigin,
    pub entry: &'a AuthzEntry,
    /// The entry's patterns that the lookup of the destination finds.
    pub patterns: Vec<String>,
    /// Policy subjects (`*`, `u:name`, `g:name`) granted the action by this entry.
    pub granted_to: Vec<String>,
}

/// The names a principal is known by in the policy: `*`, `u:<user>` (when logins carry a user
/// principal, see [`Authorizer::user_principals`]) and `g:<group>` for each group. Prefixes keep
/// a user and a group of the same name apart.
pub fn principal_names(principal: &Principal, user_principal: bool) -> Vec<String> {
    let mut names = vec![EVERYONE.to_owned()];
    if user_principal {
        names.push(format!("u:{}", principal.user));
    }
    names.extend(principal.groups.iter().map(|g| format!("g:{g}")));
    names
}

fn is_temporary(kind: DestinationKind) -> bool {
    matches!(
        kind,
        DestinationKind::TempTopic | DestinationKind::TempQueue
    )
}

pub fn kind_name(kind: DestinationKind) -> &'static str {
    match kind {
        DestinationKind::Topic => "topic",
        DestinationKind::Queue => "queue",
        DestinationKind::TempTopic => "temp-topic",
        DestinationKind::TempQueue => "temp-queue",
    }
}

pub fn action_name(action: Action) -> &'static str {
    match action {
        Action::Read => "read",
        Action::Write => "write",
        Action::Admin => "admin",
    }
}

const ACTIONS: [Action; 3] = [Action::Read, Action::Write, Action::Admin];
const KINDS: [DestinationKind; 4] = [
    DestinationKind::Topic,
    DestinationKind::Queue,
    DestinationKind::TempTopic,
    DestinationKind::TempQueue,
];

fn policy_rows(entries: &[(EntryOrigin, AuthzEntry)]) -> Vec<Vec<String>> {
    // A BTreeSet both orders the rows and drops duplicates (casbin refuses a batch that
    // contains a row twice, e.g. `read="a,a"`).
    let mut rows: BTreeSet<Vec<String>> = BTreeSet::new();
    for (index, (origin, entry)) in entries.iter().enumerate() {
        let (kinds, patterns): (Vec<DestinationKind>, Vec<String>) = match origin {
            // ActiveMQ never consults these for temporary destinations (warned by `check`).
            EntryOrigin::Entry if is_temporary(entry.kind) => continue,
            EntryOrigin::Entry => (vec![entry.kind], entry.patterns.clone()),
            EntryOrigin::Default => (
                vec![DestinationKind::Topic, DestinationKind::Queue],
                vec![">".to_owned()],
            ),
            EntryOrigin::TempDestination => (
                vec![DestinationKind::TempTopic, DestinationKind::TempQueue],
                vec![">".to_owned()],
            ),
        };
        for action in ACTIONS {
            let names = match action {
                Action::Read => &entry.read,
                Action::Write => &entry.write,
                Action::Admin => &entry.admin,
            };
            for name in names.iter().map(|n| n.trim()).filter(|n| !n.is_empty()) {
                let subject = match (name, entry.principal_kind) {
                    (EVERYONE, _) => EVERYONE.to_owned(),
                    (n, PrincipalKind::Group) => format!("g:{n}"),
                    (n, PrincipalKind::User) => format!("u:{n}"),
                };
                for kind in &kinds {
                    for pattern in patterns.iter().map(|p| p.trim()).filter(|p| !p.is_empty()) {
                        rows.insert(vec![
                            subject.clone(),
                            kind_name(*kind).to_owned(),
                            action_name(action).to_owned(),
                            pattern.to_owned(),
                            index.to_string(),
                        ]);
                    }
                }
            }
        }
    }
    rows.into_iter().collect()
}

async fn build_enforcer(rows: Vec<Vec<String>>) -> Result<Enforcer, String> {
    let model = DefaultModel::from_str(CASBIN_MODEL)
        .await
        .map_err(|e| format!("casbin model: {e}"))?;
    let mut enforcer = Enforcer::new(model, MemoryAdapter::default())
        .await
        .map_err(|e| format!("casbin enforcer: {e}"))?;
    enforcer.add_function("principalIn", OperatorFunction::Arg2(principal_in));
    enforcer.add_function(
        "destinationMatch",
        OperatorFunction::Arg2(destination_match),
    );
    if !rows.is_empty() {
        enforcer
            .add_policies(rows)
            .await
            .map_err(|e| format!("casbin policy: {e}"))?;
    }
    Ok(enforcer)
}

/// casbin function: is `subject` one of the principal's `names` (an array of strings)?
fn principal_in(names: Dynamic, subject: Dynamic) -> Dynamic {
    let subject = dynamic_to_str(&subject);
    let found = match names.as_array_ref() {
        Ok(names) => names.iter().any(|n| dynamic_to_str(n) == subject),
        Err(_) => false,
    };
    found.into()
}

/// casbin function: is an entry stored under `pattern` found by the lookup of `destination`?
fn destination_match(destination: Dynamic, pattern: Dynamic) -> Dynamic {
    activemq_selects(&dynamic_to_str(&destination), &dynamic_to_str(&pattern)).into()
}

/// Drive a future that does not wait on any I/O (casbin's in-memory model and adapter) to
/// completion on the current thread, parking while it is pending. Usable both inside and outside
/// a tokio runtime, so that building a `Security` stays synchronous.
fn block_on<F: Future>(future: F) -> F::Output {
    struct Unpark(std::thread::Thread);
    impl Wake for Unpark {
        fn wake(self: Arc<Self>) {
            self.0.unpark();
        }
    }
    let waker = Waker::from(Arc::new(Unpark(std::thread::current())));
    let mut context = Context::from_waker(&waker);
    let mut future = pin!(future);
    loop {
        match future.as_mut().poll(&mut context) {
            Poll::Ready(output) => return output,
            Poll::Pending => std::thread::park(),
        }
    }
}

/// The policy, indexed for allocation-free decisions on MQTT names.
#[derive(Debug, Default)]
struct CompiledPolicy {
    /// Indexed by `kind * 3 + action`.
    rules: [RuleSet; 12],
}

#[derive(Debug, Default)]
struct RuleSet {
    everyone: Vec<CompiledPattern>,
    users: HashMap<Box<str>, Vec<CompiledPattern>>,
    groups: HashMap<Box<str>, Vec<CompiledPattern>>,
}

fn rule_index(kind: DestinationKind, action: Action) -> usize {
    let k = KINDS.iter().position(|k| *k == kind).unwrap_or(0);
    let a = ACTIONS.iter().position(|a| *a == action).unwrap_or(0);
    k * ACTIONS.len() + a
}

impl CompiledPolicy {
    fn from_rows(rows: &[Vec<String>]) -> Result<CompiledPolicy, String> {
        let mut policy = CompiledPolicy::default();
        // Several entries may grant the same pattern to the same subject; a set keeps the
        // de-duplication linear (a list search made 20,000 entries take seconds).
        let mut seen: HashSet<(&str, &str, &str, &str)> = HashSet::new();
        for row in rows {
            let [subject, kind, action, pattern, _entry] = row.as_slice() else {
                return Err(format!("unexpected casbin policy row {row:?}"));
            };
            if !seen.insert((subject, kind, action, pattern)) {
                continue;
            }
            let kind = KINDS
                .into_iter()
                .find(|k| kind_name(*k) == kind)
                .ok_or_else(|| format!("unknown destination kind `{kind}` in policy"))?;
            let action = ACTIONS
                .into_iter()
                .find(|a| action_name(*a) == action)
                .ok_or_else(|| format!("unknown action `{action}` in policy"))?;
            let set = &mut policy.rules[rule_index(kind, action)];
            let list = if subject == EVERYONE {
                &mut set.everyone
            } else if let Some(user) = subject.strip_prefix("u:") {
                set.users.entry(Box::from(user)).or_default()
            } else if let Some(group) = subject.strip_prefix("g:") {
                set.groups.entry(Box::from(group)).or_default()
            } else {
                return Err(format!("unknown subject `{subject}` in policy"));
            };
            list.push(CompiledPattern::from_activemq(pattern));
        }
        Ok(policy)
    }

    fn decide(
        &self,
        principal: &Principal,
        user_principal: bool,
        action: Action,
        kind: DestinationKind,
        mqtt_name: &str,
    ) -> bool {
        let set = &self.rules[rule_index(kind, action)];
        let any = |patterns: &[CompiledPattern]| patterns.iter().any(|p| p.matches_mqtt(mqtt_name));
        any(&set.everyone)
            || (user_principal && set.users.get(&*principal.user).is_some_and(|p| any(p)))
            || principal
                .groups
                .iter()
                .any(|g| set.groups.get(&**g).is_some_and(|p| any(p)))
    }
}
