//! `<broker>` attributes, `<persistenceAdapter>` and `<persistenceFactory>`.

use std::path::PathBuf;

use super::{jetstream, shared_store, Ctx};
use crate::config::diagnostic::Diagnostic;
use crate::config::model::{BrokerSettings, Persistence};
use crate::config::tree::Element;
use crate::config::values;

pub(super) fn settings(ctx: &mut Ctx<'_>, broker: &Element) -> BrokerSettings {
    let defaults = BrokerSettings::default();
    ctx.mark(broker);
    let broker_name = match ctx.attr(broker, "brokerName") {
        Some(a) if a.value.trim().is_empty() => {
            ctx.value_error(
                a,
                "brokerName is empty",
                "remove the attribute to use `localhost`",
            );
            defaults.broker_name
        }
        Some(a) => a.value.trim().to_owned(),
        None => defaults.broker_name,
    };
    let data_directory = match ctx.attr(broker, "dataDirectory") {
        Some(a) if a.value.trim().is_empty() => {
            // Empty from a placeholder: the blank value was given outside the file (`-D
            // activemq.data= `, `ACTIVEMQ_DATA=" "`), and that is what to change.
            let hint = if a.raw.contains("${") {
                "give the placeholder a directory (`-D activemq.data=DIR`, `ACTIVEMQ_DATA=DIR`) \
                 or leave it unset for the default"
            } else {
                "remove the attribute to use `activemq-data`, or write `${activemq.data}`"
            };
            ctx.value_error(a, "dataDirectory is empty", hint);
            defaults.data_directory
        }
        Some(a) if blank_leading_placeholder(a).is_some() => {
            blank_placeholder_error(ctx, a, "dataDirectory");
            defaults.data_directory
        }
        // As in ActiveMQ, a relative data directory is relative to the working directory.
        Some(a) => PathBuf::from(strip_file_prefix(a.value.trim())),
        None => defaults.data_directory,
    };
    BrokerSettings {
        broker_name,
        data_directory,
        persistent: ctx
            .bool_attr(broker, "persistent")
            .unwrap_or(defaults.persistent),
        start: ctx.bool_attr(broker, "start").unwrap_or(defaults.start),
        offline_durable_subscriber_timeout_ms: offline_timeout_ms(ctx, broker),
        offline_durable_subscriber_task_schedule_ms: offline_task_schedule_ms(ctx, broker)
            .unwrap_or(defaults.offline_durable_subscriber_task_schedule_ms),
    }
}

/// `offlineDurableSubscriberTimeout`: milliseconds; -1 (ActiveMQ's default) = never expire.
/// 0 is taken literally as in ActiveMQ: every offline persistent session goes at the next check.
fn offline_timeout_ms(ctx: &mut Ctx<'_>, broker: &Element) -> Option<u64> {
    let attr = ctx.attr(broker, "offlineDurableSubscriberTimeout")?;
    match values::parse_duration_ms(&attr.value) {
        Ok(-1) => None,
        Ok(ms) if ms < 0 => {
            ctx.value_error(
                attr,
                "offlineDurableSubscriberTimeout cannot be negative (other than -1)",
                "-1 keeps offline persistent sessions forever; a positive number of milliseconds expires them",
            );
            None
        }
        Ok(ms) => Some(ms.unsigned_abs()),
        Err(e) => {
            ctx.push(e.into_diagnostic(attr.value_span.clone()));
            None
        }
    }
}

/// `offlineDurableSubscriberTaskSchedule`: milliseconds, more than 0.
fn offline_task_schedule_ms(ctx: &mut Ctx<'_>, broker: &Element) -> Option<u64> {
    let attr = ctx.attr(broker, "offlineDurableSubscriberTaskSchedule")?;
    match values::parse_duration_ms(&attr.value) {
        Ok(ms) if ms > 0 => Some(ms.unsigned_abs()),
        Ok(_) => {
            ctx.value_error(
                attr,
                "offlineDurableSubscriberTaskSchedule must be more than 0",
                "the default checks every 300000 ms (5 minutes)",
            );
            None
        }
        Err(e) => {
            ctx.push(e.into_diagnostic(attr.value_span.clone()));
            None
        }
    }
}

fn strip_file_prefix(value: &str) -> &str {
    value.strip_prefix("file:").unwrap_or(value)
}

/// The placeholder a path attribute starts with (`${activemq.data}` in
/// `${activemq.data}/kahadb`, also after `file:`) when it resolved to nothing but spaces, so
/// that the path became one from the root (`/kahadb`). Only a placeholder followed by literal text
/// from `/` on is judged: its resolved value is what precedes that text.
fn blank_leading_placeholder(attr: &crate::config::tree::Attr) -> Option<&str> {
    let raw = strip_file_prefix(attr.raw.trim());
    let after_open = raw.strip_prefix("${")?;
    let close = after_open.find('}')?;
    let (placeholder, rest) = raw.split_at(close + 3);
    if !rest.starts_with('/') || rest.contains("${") {
        return None;
    }
    let value = strip_file_prefix(attr.value.trim_start());
    let resolved = value.strip_suffix(rest.trim_end())?;
    // An attribute whose whole value is blank is refused as empty already.
    (resolved.trim().is_empty() && !value.trim().is_empty()).then_some(placeholder)
}

/// A path attribute made from a blank placeholder: an error at its value, naming the
/// placeholder and what the path became.
fn blank_placeholder_error(ctx: &mut Ctx<'_>, attr: &crate::config::tree::Attr, what: &str) {
    let placeholder = blank_leading_placeholder(attr).unwrap_or("${...}");
    let name = placeholder
        .trim_start_matches("${")
        .trim_end_matches('}')
        .split(':')
        .next()
        .unwrap_or_default();
    let hint = if name == "activemq.data" {
        "give the placeholder a directory (`-D activemq.data=DIR`, `ACTIVEMQ_DATA=DIR`) or leave \
         it unset for the default"
            .to_owned()
    } else {
        format!("give {placeholder} a directory (`-D {name}=DIR`) or remove it from the path")
    };
    ctx.value_error(
        attr,
        format!(
            "{what} `{}` starts with {placeholder}, which is blank: the path would become `{}`, \
             from the root of the filesystem",
            attr.raw.trim(),
            strip_file_prefix(attr.value.trim())
        ),
        &hint,
    );
}

/// Elements of `<persistenceAdapter>` that ferromq replaces by its own durable store, with a
/// warning. (levelDB was removed in ActiveMQ 5.17 but is still found in older files.)
const REPLACED_ADAPTERS: &[&str] = &[
    "journalPersistenceAdapter",
    "mKahaDB",
    "levelDB",
    "amqPersistenceAdapter",
];

/// Adapter factories of `<persistenceFactory>`: ActiveMQ 4's journal in front of a JDBC store.
/// `journaledJDBC` is a shared store like `<jdbcPersistenceAdapter>`; a
/// `journalPersistenceAdapterFactory` is one when it names a `dataSource` (without one its JDBC
/// store is an embedded Derby database in its `dataDirectory`: local, like ferromq's).
const ADAPTER_FACTORIES: &[&str] = &["journalPersistenceAdapterFactory", "journaledJDBC"];

/// `<persistenceFactory>`'s factory: refused like a shared store when it shares a database,
/// otherwise replaced by ferromq's store in `directory`, with a warning either way. Other
/// elements are left to the names pass (unknown: an error; known: not acted on).
fn adapter_factory(ctx: &mut Ctx<'_>, factory: &Element, directory: &std::path::Path) {
    if !ADAPTER_FACTORIES.contains(&factory.name.as_str()) {
        return;
    }
    ctx.mark_subtree(factory);
    let names_data_source = factory
        .attrs
        .iter()
        .any(|a| a.ns.is_none() && a.name == "dataSource")
        || factory.children.iter().any(|c| c.name == "dataSource");
    if shared_store::is_shared_adapter(&factory.name) || names_data_source {
        shared_store::refuse_or_warn(ctx, factory, directory);
        return;
    }
    ctx.push(
        Diagnostic::warning(
            factory.span.clone(),
            format!(
                "<{}> is not supported; ferromq keeps durable sessions and messages in its own store in {}",
                factory.name,
                directory.display()
            ),
        )
        .with_hint(
            "replace <persistenceFactory> with <persistenceAdapter><kahaDB directory=\"...\"/></persistenceAdapter> to choose the directory",
        ),
    );
}

/// ActiveMQ's default store location when no adapter is declared:
/// `<dataDirectory>/<brokerName>/KahaDB`.
fn default_store(broker: &BrokerSettings) -> PathBuf {
    broker
        .data_directory
        .join(&broker.broker_name)
        .join("KahaDB")
}

/// The element that configures the store: `<ferromq:jetStream>`, else the first persistence
/// adapter, else `<broker>`.
pub(super) fn persistence_span(broker_element: &Element) -> crate::config::Span {
    if let Some(cluster) = jetstream::elements(broker_element).first() {
        return cluster.span.clone();
    }
    broker_element
        .children
        .iter()
        .filter(|c| c.is_activemq() && c.name == "persistenceAdapter")
        .flat_map(|p| p.children.iter().filter(|c| c.is_activemq()))
        .map(|adapter| adapter.span.clone())
        .next()
        .unwrap_or_else(|| broker_element.span.clone())
}

pub(super) fn persistence(
    ctx: &mut Ctx<'_>,
    broker_element: &Element,
    broker: &BrokerSettings,
) -> Persistence {
    let cluster = jetstream::elements(broker_element);
    if !cluster.is_empty() {
        return jetstream::persistence(ctx, broker_element, broker, &cluster);
    }
    let adapters = ctx.items(broker_element, "persistenceAdapter");
    if !broker.persistent {
        if let Some(first) = adapters.first() {
            ctx.push(
                Diagnostic::warning(
                    first.span.clone(),
                    format!(
                        "<{}> is ignored because the broker has persistent=\"false\"",
                        first.name
                    ),
                )
                .with_hint("messages and sessions are kept in memory only"),
            );
            for adapter in &adapters {
                ctx.mark_subtree(adapter);
            }
        }
        return Persistence::Memory;
    }
    if let Some(extra) = adapters.get(1) {
        ctx.push(Diagnostic::error(
            extra.span.clone(),
            "more than one persistence adapter; a broker has exactly one store",
        ));
    }
    let Some(adapter) = adapters.first() else {
        let directory = default_store(broker);
        // ActiveMQ asks `<persistenceFactory>` for the adapter only when none is given.
        if let Some(factory) = ctx.items(broker_element, "persistenceFactory").first() {
            adapter_factory(ctx, factory, &directory);
        }
        return Persistence::Durable {
            directory,
            journal_max_file_length_bytes: None,
        };
    };
    if shared_store::is_shared_adapter(&adapter.name) {
        ctx.mark_subtree(adapter);
        let directory = default_store(broker);
        shared_store::refuse_or_warn(ctx, adapter, &directory);
        return Persistence::Durable {
            directory,
            journal_max_file_length_bytes: None,
        };
    }
    if shared_store::has_shared_locker(ctx, adapter) {
        let directory = match adapter
            .attrs
            .iter()
            .find(|a| a.ns.is_none() && a.name == "directory")
        {
            Some(a) if adapter.name == "kahaDB" && !a.value.trim().is_empty() => {
                PathBuf::from(strip_file_prefix(a.value.trim()))
            }
            _ => default_store(broker),
        };
        shared_store::refuse_or_warn(ctx, adapter, &directory);
    }
    match adapter.name.as_str() {
        "kahaDB" => {
            ctx.mark(adapter);
            let directory = match ctx.attr(adapter, "directory") {
                Some(a) if blank_leading_placeholder(a).is_some() => {
                    blank_placeholder_error(ctx, a, "the kahaDB directory");
                    default_store(broker)
                }
                Some(a) if !a.value.trim().is_empty() => {
                    PathBuf::from(strip_file_prefix(a.value.trim()))
                }
                _ => default_store(broker),
            };
            Persistence::Durable {
                directory,
                journal_max_file_length_bytes: ctx.size_attr(adapter, "journalMaxFileLength"),
            }
        }
        "memoryPersistenceAdapter" => {
            ctx.mark(adapter);
            Persistence::Memory
        }
        name if REPLACED_ADAPTERS.contains(&name) => {
            ctx.mark_subtree(adapter);
            let directory = default_store(broker);
            ctx.push(
                Diagnostic::warning(
                    adapter.span.clone(),
                    format!(
                        "<{name}> is not supported; ferromq keeps durable sessions and messages in its own store in {}",
                        directory.display()
                    ),
                )
                .with_hint("replace it with <kahaDB directory=\"...\"/> to choose the directory"),
            );
            Persistence::Durable {
                directory,
                journal_max_file_length_bytes: None,
            }
        }
        // Unknown elements are reported by the names pass; keep the default store meanwhile.
        _ => Persistence::Durable {
            directory: default_store(broker),
            journal_max_file_length_bytes: None,
        },
    }
}
