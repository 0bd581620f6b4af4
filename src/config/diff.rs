//! Old model vs new model: what a reload has to add, change or remove.
//!
//! [`diff`] compares two [`Config`]s by meaning, never by position: moving an element, adding a
//! comment or reordering URI options changes spans and strings but not the diff. Connectors are
//! matched by name.
//!
//! Some files feed the runtime without their contents entering the model (TLS material, the
//! users/groups properties files named by login.config). [`diff_with_changed_files`] takes the
//! files whose contents changed (the reloader hashes them) and reports them under TLS or
//! authentication.
//!
//! # What cannot change at runtime
//!
//! The broker name, the data directory, `persistent` and the persistence adapter are fixed for
//! the life of the process: the store is open on them. The offline persistent session expiry
//! (`offlineDurableSubscriberTimeout`/`TaskSchedule`) is read at startup too, as in ActiveMQ. When a reload changes them, the diff lists
//! them in [`ConfigDiff::restart_needed`], the reloader logs "needs a restart; kept the running
//! value" and calls [`keep_running_values`] so the configuration it applies carries the running
//! values; **everything else in the same reload still applies**. Refusing the whole reload would
//! make an unrelated fix (a revoked permission) wait for a restart, which is the worse outcome.

use std::collections::BTreeMap;
use std::fmt;
use std::path::{Path, PathBuf};

use serde::Serialize;

use super::model::*;
use super::stomp_options::StompOptions;

#[cfg(test)]
mod connector_tests;
mod security;
use security::{diff_authentication, diff_authorization, diff_tls};

/// Everything that differs between a running configuration and a newly loaded one.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct ConfigDiff {
    /// Connector names present only in the new configuration, in file order.
    pub listeners_added: Vec<String>,
    /// Connector names present only in the running configuration.
    pub listeners_removed: Vec<String>,
    /// Connectors present in both whose address, scheme or options differ.
    pub listeners_changed: Vec<ListenerChange>,
    pub tls: Option<TlsChange>,
    pub authentication: Option<AuthenticationChange>,
    pub authorization: Option<AuthorizationChange>,
    /// `systemUsage` limits that differ: `memoryUsage`, `storeUsage`, `tempUsage`.
    pub limits: Vec<&'static str>,
    pub policies: Option<PoliciesChange>,
    /// `runtimeConfigurationPlugin` checkPeriod (ms) running -> new; `None` = no plugin. Acted on
    /// by the reloader itself (polling period), not by the broker.
    pub check_period_ms: Option<(Option<u64>, Option<u64>)>,
    /// `<ferromq:sharedSubscriptions strategy>` running -> new: applies to messages routed
    /// after the reload.
    pub shared_strategy: Option<(SharedStrategy, SharedStrategy)>,
    /// `<ferromq:systemTopics interval>` (ms, 0 = off) running -> new: the `$SYS` publisher
    /// takes the new period at once.
    pub system_topics_ms: Option<(u64, u64)>,
    /// Topics `<destinations>` declares that the running configuration did not (ActiveMQ
    /// names): created by the reload. Removed ones are not listed: they stay.
    pub topics_declared: Vec<String>,
    /// Dead-letter strategies, queue prefetch or the `<redeliveryPlugin>` differ: they apply
    /// to messages rejected, expired or dispatched after the reload.
    pub delivery: bool,
    /// The console's realm file gave other users, passwords or roles: the console uses them
    /// from the next request on (the console's address, TLS and metricsOpen need a restart).
    pub console_users: bool,
    /// Settings that need a restart; the running value is kept (see the module docs).
    pub restart_needed: Vec<RestartSetting>,
}

/// How one connector (matched by name) changed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ListenerChange {
    pub name: String,
    /// `host:port` running -> new.
    pub address: Option<(String, String)>,
    pub scheme: Option<(Scheme, Scheme)>,
    /// ActiveMQ names of the URI options that differ (`transport.defaultKeepAlive`, ...). They
    /// apply to connections accepted after the reload.
    pub options: Vec<&'static str>,
    /// The socket must be closed and bound again (new address or a different transport):
    /// [`Listener::needs_rebind`], the rule the running listeners follow.
    pub rebind: bool,
}

/// `<sslContext>` changes. The transport swaps material for new handshakes.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct TlsChange {
    /// What differs in the element: `sslContext added`, `sslContext removed`, `keyStore`,
    /// `keyStorePassword`, `keyStoreType`, `ferromq:keyFile`, `trustStore`, ...
    pub settings: Vec<&'static str>,
    /// TLS files whose contents changed under the same path.
    pub files: Vec<PathBuf>,
}

/// Authentication plugin changes. Never carries a password.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct AuthenticationChange {
    /// The plugin itself changed, running -> new (`none`, `simple`, `jaas`, `jaasCertificate`,
    /// `jaasDual`). The user lists below are only filled when both sides are `simple`.
    pub plugin: Option<(&'static str, &'static str)>,
    pub users_added: Vec<String>,
    pub users_removed: Vec<String>,
    /// Users whose password or groups changed.
    pub users_changed: Vec<String>,
    /// Other attributes that differ: `anonymousAccessAllowed`, `anonymousUser`,
    /// `anonymousGroup`, `configuration`, `login.config`, `login modules`.
    pub settings: Vec<&'static str>,
    /// Credential files (users/groups properties named by login.config) whose contents changed.
    pub files: Vec<PathBuf>,
}

/// Authorization map changes. Entries are compared as a set (ActiveMQ unions every matching
/// entry, so their order carries no meaning).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct AuthorizationChange {
    /// `Some(true)`: the plugin was added, `Some(false)`: removed (everything is allowed again).
    pub plugin_added: Option<bool>,
    pub entries_added: usize,
    pub entries_removed: usize,
    pub default_entry_changed: bool,
    pub temp_entry_changed: bool,
    /// `<cachedLDAPAuthorizationMap>` added, removed or with other settings.
    pub ldap_map_changed: bool,
}

/// Destination policy changes (entries compared in order: the best match wins, ties by order).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct PoliciesChange {
    pub entries_added: usize,
    pub entries_removed: usize,
}

/// A setting that only takes effect after a restart.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct RestartSetting {
    /// ActiveMQ's name: `brokerName`, `dataDirectory`, `persistent`, `persistenceAdapter`.
    pub name: &'static str,
    pub running: String,
    pub requested: String,
}

impl fmt::Display for RestartSetting {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} changed from {} to {}: needs a restart; kept the running value",
            self.name, self.running, self.requested
        )
    }
}

/// Compare two configurations by meaning. Changes in file contents that the model does not hold
/// (TLS material, JAAS properties files) are not seen: use [`diff_with_changed_files`] for those.
pub fn diff(running: &Config, new: &Config) -> ConfigDiff {
    diff_with_changed_files(running, new, &[])
}

/// [`diff`], plus `changed_files`: files whose contents changed under the same path. Those that
/// the new configuration uses as TLS material or as JAAS credential files are reported; the
/// others (the XML, imports, placeholder properties) are already reflected in the model.
pub fn diff_with_changed_files(
    running: &Config,
    new: &Config,
    changed_files: &[PathBuf],
) -> ConfigDiff {
    // Destructured without `..` so that a field added to Config fails to compile here until the
    // diff decides what to do with it.
    let Config {
        source: _,
        files: _,
        broker,
        listeners,
        ssl,
        authentication,
        authorization,
        persistence,
        persistence_span: _,
        limits,
        policies,
        reload,
        shared_strategy,
        system_topics,
        destinations,
        virtual_destinations,
        delivery,
        console,
    } = running;
    let (added, removed, changed) = diff_listeners(listeners, &new.listeners);
    ConfigDiff {
        listeners_added: added,
        listeners_removed: removed,
        listeners_changed: changed,
        tls: diff_tls(ssl.as_ref(), new.ssl.as_ref(), changed_files),
        authentication: diff_authentication(authentication, &new.authentication, changed_files),
        authorization: diff_authorization(authorization.as_ref(), new.authorization.as_ref()),
        limits: diff_limits(limits, &new.limits),
        policies: diff_policies(policies, &new.policies),
        check_period_ms: {
            let period = |r: &Option<ReloadSettings>| r.as_ref().map(|r| r.check_period_ms);
            let (old, now) = (period(reload), period(&new.reload));
            (old != now).then_some((old, now))
        },
        shared_strategy: (*shared_strategy != new.shared_strategy)
            .then_some((*shared_strategy, new.shared_strategy)),
        system_topics_ms: (*system_topics != new.system_topics)
            .then_some((system_topics.interval_ms, new.system_topics.interval_ms)),
        // Only additions: a destination removed from the file stays (ActiveMQ keeps it).
        topics_declared: new
            .destinations
            .topics
            .iter()
            .filter(|name| !destinations.topics.contains(name))
            .cloned()
            .collect(),
        delivery: *delivery != new.delivery,
        console_users: match (console, &new.console) {
            (Some(old), Some(now)) => old.users != now.users,
            _ => false,
        },
        restart_needed: {
            let mut restart = diff_restart(broker, persistence, new);
            let show = |c: &Option<ConsoleConfig>| {
                c.as_ref().map_or_else(
                    || "off".to_owned(),
                    |c| {
                        let limit = crate::config::compile::console::DEFAULT_MAX_CONNECTIONS;
                        format!(
                            "{}{}{}{}",
                            c.address(),
                            if c.tls { " tls" } else { "" },
                            if c.metrics_open { " metricsOpen" } else { "" },
                            if c.max_connections == limit {
                                String::new()
                            } else {
                                format!(" maximumConnections={}", c.max_connections)
                            }
                        )
                    },
                )
            };
            for old in listeners {
                if let Some(now) = new.listeners.iter().find(|l| l.name == old.name) {
                    if now.options.backlog != old.options.backlog && !now.needs_rebind(old) {
                        restart.push(RestartSetting {
                            name: "backlog",
                            running: format!("{} (connector {})", old.options.backlog, old.name),
                            requested: now.options.backlog.to_string(),
                        });
                    }
                }
            }
            // Between a cluster node and a single broker neither of which writes them, the
            // default's presence follows the store already reported as needing a restart.
            let cluster = |p: &Persistence| matches!(p, Persistence::JetStream(_));
            let follows_the_store = !virtual_destinations.explicit
                && !new.virtual_destinations.explicit
                && cluster(persistence) != cluster(&new.persistence);
            if *virtual_destinations != new.virtual_destinations && !follows_the_store {
                let lines = |v: &crate::config::virtual_destinations::VirtualDestinations| {
                    let lines = v.lines();
                    if lines.is_empty() {
                        "none".to_owned()
                    } else {
                        lines.join("; ")
                    }
                };
                restart.push(RestartSetting {
                    name: "virtual destinations",
                    running: lines(virtual_destinations),
                    requested: lines(&new.virtual_destinations),
                });
            }
            let (running, requested) = (show(console), show(&new.console));
            if running != requested {
                restart.push(RestartSetting {
                    name: "console",
                    running,
                    requested,
                });
            }
            restart
        },
    }
}

/// Give `new` the running values of the settings that need a restart (see the module docs), so
/// that what is applied is what is actually running.
pub fn keep_running_values(running: &Config, new: &mut Config) {
    new.broker = running.broker.clone();
    new.persistence = running.persistence.clone();
    new.virtual_destinations = running.virtual_destinations.clone();
    // A connector's listen queue is the one its socket was bound with.
    for now in &mut new.listeners {
        if let Some(old) = running.listeners.iter().find(|l| l.name == now.name) {
            if !now.needs_rebind(old) {
                now.options.backlog = old.options.backlog;
            }
        }
    }
    // The console keeps its address; its users follow the new realm file.
    match (&running.console, new.console.as_mut()) {
        (Some(old), Some(now)) => {
            let users = std::mem::take(&mut now.users);
            *now = ConsoleConfig {
                users,
                ..old.clone()
            };
        }
        _ => new.console = running.console.clone(),
    }
}

impl ConfigDiff {
    /// Nothing differs at all.
    pub fn is_empty(&self) -> bool {
        !self.has_runtime_changes()
            && self.check_period_ms.is_none()
            && self.restart_needed.is_empty()
    }

    /// Something the broker must apply differs (listeners, TLS, security, limits, policies).
    pub fn has_runtime_changes(&self) -> bool {
        !self.listeners_added.is_empty()
            || !self.listeners_removed.is_empty()
            || !self.listeners_changed.is_empty()
            || self.tls.is_some()
            || self.authentication.is_some()
            || self.authorization.is_some()
            || !self.limits.is_empty()
            || self.policies.is_some()
            || self.shared_strategy.is_some()
            || self.system_topics_ms.is_some()
            || !self.topics_declared.is_empty()
            || self.delivery
            || self.console_users
    }

    /// One line for the log, e.g. `+1 listener (mqtt2), ~authorization (+2/-1 entries), restart
    /// needed for: dataDirectory`; `no change` when empty.
    pub fn summary(&self) -> String {
        let mut parts = Vec::new();
        let count = |n: usize| if n == 1 { "listener" } else { "listeners" };
        if !self.listeners_added.is_empty() {
            let n = self.listeners_added.len();
            let names = self.listeners_added.join(", ");
            parts.push(format!("+{n} {} ({names})", count(n)));
        }
        if !self.listeners_removed.is_empty() {
            let n = self.listeners_removed.len();
            let names = self.listeners_removed.join(", ");
            parts.push(format!("-{n} {} ({names})", count(n)));
        }
        if !self.listeners_changed.is_empty() {
            let n = self.listeners_changed.len();
            let each: Vec<String> = self
                .listeners_changed
                .iter()
                .map(describe_listener)
                .collect();
            parts.push(format!("~{n} {} ({})", count(n), each.join("; ")));
        }
        if let Some(tls) = &self.tls {
            let mut what: Vec<String> = tls.settings.iter().map(|s| s.to_string()).collect();
            what.extend(tls.files.iter().map(|f| file_name(f)));
            parts.push(format!("~tls ({})", what.join(", ")));
        }
        if let Some(auth) = &self.authentication {
            parts.push(format!(
                "~authentication ({})",
                describe_authentication(auth)
            ));
        }
        if let Some(authz) = &self.authorization {
            parts.push(describe_authorization(authz));
        }
        if !self.limits.is_empty() {
            parts.push(format!("~limits ({})", self.limits.join(", ")));
        }
        if let Some(p) = &self.policies {
            parts.push(format!(
                "~policies (+{}/-{} entries)",
                p.entries_added, p.entries_removed
            ));
        }
        if let Some((old, now)) = self.shared_strategy {
            parts.push(format!("~sharedSubscriptions (strategy {old} -> {now})"));
        }
        if let Some((old, now)) = self.system_topics_ms {
            let show = |ms: u64| match ms {
                0 => "off".to_owned(),
                ms => format!("{ms} ms"),
            };
            parts.push(format!("~systemTopics ({} -> {})", show(old), show(now)));
        }
        if !self.topics_declared.is_empty() {
            parts.push(format!(
                "+destinations ({})",
                self.topics_declared.join(", ")
            ));
        }
        if let Some((old, now)) = self.check_period_ms {
            let show = |p: Option<u64>| p.map_or("off".to_owned(), |ms| format!("{ms} ms"));
            parts.push(format!(
                "~runtimeConfigurationPlugin (checkPeriod {} -> {})",
                show(old),
                show(now)
            ));
        }
        if self.delivery {
            parts.push("~delivery policy (dead letters, redelivery, queue prefetch)".to_owned());
        }
        if self.console_users {
            parts.push("~console users".to_owned());
        }
        if !self.restart_needed.is_empty() {
            let names: Vec<&str> = self.restart_needed.iter().map(|r| r.name).collect();
            parts.push(format!("restart needed for: {}", names.join(", ")));
        }
        if parts.is_empty() {
            "no change".to_owned()
        } else {
            parts.join(", ")
        }
    }
}

impl fmt::Display for ConfigDiff {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.summary())
    }
}

fn describe_listener(change: &ListenerChange) -> String {
    let mut what = Vec::new();
    if let Some((old, new)) = &change.address {
        what.push(format!("address {old} -> {new}"));
    }
    if let Some((old, new)) = &change.scheme {
        what.push(format!("scheme {old} -> {new}"));
    }
    what.extend(change.options.iter().map(|o| o.to_string()));
    format!("{}: {}", change.name, what.join(", "))
}

fn describe_authentication(auth: &AuthenticationChange) -> String {
    let mut what = Vec::new();
    if let Some((old, new)) = auth.plugin {
        what.push(format!("{old} -> {new}"));
    }
    let users = |n: usize| if n == 1 { "user" } else { "users" };
    for (sign, list) in [
        ('+', &auth.users_added),
        ('-', &auth.users_removed),
        ('~', &auth.users_changed),
    ] {
        if !list.is_empty() {
            what.push(format!("{sign}{} {}", list.len(), users(list.len())));
        }
    }
    what.extend(auth.settings.iter().map(|s| s.to_string()));
    what.extend(auth.files.iter().map(|f| file_name(f)));
    what.join(", ")
}

fn describe_authorization(authz: &AuthorizationChange) -> String {
    match authz.plugin_added {
        Some(true) => format!("+authorization ({} entries)", authz.entries_added),
        Some(false) => "-authorization (everything allowed)".to_owned(),
        None => {
            let mut what = Vec::new();
            if authz.entries_added + authz.entries_removed > 0 {
                what.push(format!(
                    "+{}/-{} entries",
                    authz.entries_added, authz.entries_removed
                ));
            }
            if authz.default_entry_changed {
                what.push("defaultEntry".to_owned());
            }
            if authz.temp_entry_changed {
                what.push("tempDestinationAuthorizationEntry".to_owned());
            }
            if authz.ldap_map_changed {
                what.push("cachedLDAPAuthorizationMap".to_owned());
            }
            format!("~authorization ({})", what.join(", "))
        }
    }
}

fn file_name(path: &Path) -> String {
    path.file_name().map_or_else(
        || path.display().to_string(),
        |n| n.to_string_lossy().into_owned(),
    )
}

type ListenerDiff = (Vec<String>, Vec<String>, Vec<ListenerChange>);

fn diff_listeners(running: &[Listener], new: &[Listener]) -> ListenerDiff {
    let old_by_name: BTreeMap<&str, &Listener> =
        running.iter().map(|l| (l.name.as_str(), l)).collect();
    let new_by_name: BTreeMap<&str, &Listener> = new.iter().map(|l| (l.name.as_str(), l)).collect();
    let added = new
        .iter()
        .filter(|l| !old_by_name.contains_key(l.name.as_str()))
        .map(|l| l.name.clone())
        .collect();
    let removed = running
        .iter()
        .filter(|l| !new_by_name.contains_key(l.name.as_str()))
        .map(|l| l.name.clone())
        .collect();
    let changed = new
        .iter()
        .filter_map(|l| {
            let old = old_by_name.get(l.name.as_str())?;
            let change = diff_listener(old, l);
            let unchanged =
                change.address.is_none() && change.scheme.is_none() && change.options.is_empty();
            (!unchanged).then_some(change)
        })
        .collect();
    (added, removed, changed)
}

fn diff_listener(old: &Listener, new: &Listener) -> ListenerChange {
    let address = |l: &Listener| {
        if l.host.contains(':') {
            format!("[{}]:{}", l.host, l.port)
        } else {
            format!("{}:{}", l.host, l.port)
        }
    };
    let (old_address, new_address) = (address(old), address(new));
    ListenerChange {
        name: new.name.clone(),
        address: (old_address != new_address).then_some((old_address, new_address)),
        scheme: (old.scheme != new.scheme).then_some((old.scheme, new.scheme)),
        options: diff_listener_options(&old.options, &new.options),
        rebind: new.needs_rebind(old),
    }
}

fn diff_listener_options(old: &ListenerOptions, new: &ListenerOptions) -> Vec<&'static str> {
    let ListenerOptions {
        default_keep_alive_ms,
        max_keep_alive_ms,
        connect_attempt_timeout_ms,
        max_frame_size_bytes,
        maximum_connections,
        // Set at bind time: a change is a restart setting (see `diff_with_changed_files`).
        backlog: _,
        subscription_prefetch,
        publish_dollar_topics,
        use_inactivity_monitor,
        allow_link_stealing,
        need_client_auth,
        want_client_auth,
        subscription_strategy,
        stomp,
    } = old;
    let mut changed = Vec::new();
    let mut check = |differs: bool, name: &'static str| {
        if differs {
            changed.push(name);
        }
    };
    check(
        *default_keep_alive_ms != new.default_keep_alive_ms,
        "transport.defaultKeepAlive",
    );
    check(
        *max_keep_alive_ms != new.max_keep_alive_ms,
        "transport.maxKeepAlive",
    );
    check(
        *connect_attempt_timeout_ms != new.connect_attempt_timeout_ms,
        "transport.connectAttemptTimeout",
    );
    check(
        *max_frame_size_bytes != new.max_frame_size_bytes,
        "wireFormat.maxFrameSize",
    );
    check(
        *maximum_connections != new.maximum_connections,
        "maximumConnections",
    );
    check(
        *subscription_prefetch != new.subscription_prefetch,
        "transport.activeMQSubscriptionPrefetch",
    );
    check(
        *publish_dollar_topics != new.publish_dollar_topics,
        "transport.publishDollarTopics",
    );
    check(
        *use_inactivity_monitor != new.use_inactivity_monitor,
        "transport.useInactivityMonitor",
    );
    check(
        *allow_link_stealing != new.allow_link_stealing,
        "allowLinkStealing",
    );
    check(*need_client_auth != new.need_client_auth, "needClientAuth");
    check(*want_client_auth != new.want_client_auth, "wantClientAuth");
    check(
        *subscription_strategy != new.subscription_strategy,
        "transport.subscriptionStrategy",
    );
    let StompOptions {
        default_heart_beat,
        hb_grace_period_multiplier,
        max_data_length_bytes,
        max_frame_size_bytes: stomp_max_frame_size_bytes,
    } = stomp;
    check(
        *default_heart_beat != new.stomp.default_heart_beat,
        "transport.defaultHeartBeat",
    );
    check(
        *hb_grace_period_multiplier != new.stomp.hb_grace_period_multiplier,
        "transport.hbGracePeriodMultiplier",
    );
    check(
        *max_data_length_bytes != new.stomp.max_data_length_bytes,
        "transport.maxDataLength",
    );
    // The same option sets the MQTT and the STOMP limit on ws:// connectors: named once.
    if *stomp_max_frame_size_bytes != new.stomp.max_frame_size_bytes
        && *max_frame_size_bytes == new.max_frame_size_bytes
    {
        changed.push("wireFormat.maxFrameSize");
    }
    changed
}

/// How many items of `a` have no counterpart in `b`, counting duplicates. Quadratic, which is
/// fine for the tens to hundreds of entries a configuration has.
fn multiset_missing<K: PartialEq>(a: &[K], b: &[K]) -> usize {
    let mut used = vec![false; b.len()];
    a.iter()
        .filter(|k| {
            let counterpart = b
                .iter()
                .zip(used.iter_mut())
                .find(|(candidate, used)| !**used && candidate == k);
            match counterpart {
                Some((_, used)) => {
                    *used = true;
                    false
                }
                None => true,
            }
        })
        .count()
}

fn diff_limits(old: &Limits, new: &Limits) -> Vec<&'static str> {
    let Limits {
        memory_limit_bytes,
        store_limit_bytes,
        temp_limit_bytes,
        send_fail_if_no_space,
        send_fail_if_no_space_after_timeout_ms,
    } = old;
    [
        (*memory_limit_bytes != new.memory_limit_bytes, "memoryUsage"),
        (*store_limit_bytes != new.store_limit_bytes, "storeUsage"),
        (*temp_limit_bytes != new.temp_limit_bytes, "tempUsage"),
        (
            *send_fail_if_no_space != new.send_fail_if_no_space
                || *send_fail_if_no_space_after_timeout_ms
                    != new.send_fail_if_no_space_after_timeout_ms,
            "sendFailIfNoSpace",
        ),
    ]
    .into_iter()
    .filter_map(|(differs, name)| differs.then_some(name))
    .collect()
}

fn diff_policies(old: &[PolicyEntry], new: &[PolicyEntry]) -> Option<PoliciesChange> {
    let key = |p: &PolicyEntry| {
        let PolicyEntry {
            kind,
            pattern,
            pending_message_limit,
            span: _,
        } = p;
        (*kind, pattern.clone(), *pending_message_limit)
    };
    let old_keys: Vec<_> = old.iter().map(key).collect();
    let new_keys: Vec<_> = new.iter().map(key).collect();
    (old_keys != new_keys).then(|| PoliciesChange {
        entries_added: multiset_missing(&new_keys, &old_keys),
        entries_removed: multiset_missing(&old_keys, &new_keys),
    })
}

fn diff_restart(
    broker: &BrokerSettings,
    persistence: &Persistence,
    new: &Config,
) -> Vec<RestartSetting> {
    // `start` is only read at startup (start="false" builds the graph and exits), so a change
    // has nothing to act on and is not reported.
    let BrokerSettings {
        broker_name,
        data_directory,
        persistent,
        start: _,
        offline_durable_subscriber_timeout_ms,
        offline_durable_subscriber_task_schedule_ms,
    } = broker;
    let mut out = Vec::new();
    let mut check = |name: &'static str, running: String, requested: String| {
        if running != requested {
            out.push(RestartSetting {
                name,
                running,
                requested,
            });
        }
    };
    check(
        "brokerName",
        broker_name.clone(),
        new.broker.broker_name.clone(),
    );
    check(
        "dataDirectory",
        data_directory.display().to_string(),
        new.broker.data_directory.display().to_string(),
    );
    check(
        "persistent",
        persistent.to_string(),
        new.broker.persistent.to_string(),
    );
    let timeout = |ms: &Option<u64>| ms.map_or_else(|| "-1".to_owned(), |ms| ms.to_string());
    check(
        "offlineDurableSubscriberTimeout",
        timeout(offline_durable_subscriber_timeout_ms),
        timeout(&new.broker.offline_durable_subscriber_timeout_ms),
    );
    check(
        "offlineDurableSubscriberTaskSchedule",
        offline_durable_subscriber_task_schedule_ms.to_string(),
        new.broker
            .offline_durable_subscriber_task_schedule_ms
            .to_string(),
    );
    let (running, requested) = persistence_text(persistence, &new.persistence);
    check("persistenceAdapter", running, requested);
    out
}

/// Both sides as text; a change of the NATS password alone, which the text never shows, is
/// told as such.
fn persistence_text(running: &Persistence, new: &Persistence) -> (String, String) {
    let (old_text, mut new_text) = (describe_persistence(running), describe_persistence(new));
    if old_text == new_text && running != new {
        new_text.push_str(" (another password)");
    }
    (old_text, new_text)
}

fn describe_persistence(p: &Persistence) -> String {
    match p {
        Persistence::Memory => "memory".to_owned(),
        // Every setting but the password (see `persistence_text` for a changed password).
        Persistence::JetStream(js) => js.describe(),
        Persistence::Durable {
            directory,
            journal_max_file_length_bytes: None,
        } => format!("kahaDB {}", directory.display()),
        Persistence::Durable {
            directory,
            journal_max_file_length_bytes: Some(bytes),
        } => format!(
            "kahaDB {} (journalMaxFileLength {bytes} bytes)",
            directory.display()
        ),
    }
}
