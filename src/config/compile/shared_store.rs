//! Store configurations that assume several brokers share one store (a JDBC database, a
//! replicated LevelDB, a shared-file or database locker on kahaDB): ActiveMQ runs them as
//! master/slave, the lock deciding which broker serves. ferromq's store is local and its lock
//! does not reach a database or another host, so running two ferromq brokers on such a
//! configuration would let both serve at once (split brain). Refused by default; the operator
//! may accept a local store with `ferromq:localStore="true"` on the adapter or `--local-store`.

use std::path::Path;

use super::Ctx;
use crate::config::diagnostic::Diagnostic;
use crate::config::tree::Element;
use crate::config::values;

/// The extension attribute (namespace `urn:ferromq`) on a persistence adapter.
pub(super) const LOCAL_STORE: &str = "localStore";

/// Adapters whose store lives outside this host or is replicated between brokers.
const SHARED_ADAPTERS: &[&str] = &[
    "jdbcPersistenceAdapter",
    "journaledJDBC",
    "replicatedLevelDB",
];

/// Lockers (inside an adapter's `<locker>`) that arbitrate between brokers sharing a store.
const SHARED_LOCKERS: &[&str] = &[
    "shared-file-locker",
    "lease-database-locker",
    "database-locker",
    "transact-database-locker",
];

pub(super) fn is_shared_adapter(name: &str) -> bool {
    SHARED_ADAPTERS.contains(&name)
}

/// Whether `adapter` declares a shared-store locker (`<locker><shared-file-locker/></locker>`);
/// the locker elements are marked read (this module reports them).
pub(super) fn has_shared_locker(ctx: &mut Ctx<'_>, adapter: &Element) -> bool {
    let lockers = ctx.items(adapter, "locker");
    let shared = lockers
        .iter()
        .any(|l| SHARED_LOCKERS.contains(&l.name.as_str()));
    if shared {
        for locker in lockers {
            ctx.mark_subtree(locker);
        }
    }
    shared
}

/// Report a shared store configuration: an error, unless a local store was accepted (then a
/// warning). `directory` is where the local store goes.
pub(super) fn refuse_or_warn(ctx: &mut Ctx<'_>, adapter: &Element, directory: &Path) {
    let accepted_here = match ctx.ext_attr(adapter, LOCAL_STORE) {
        Some(attr) => match values::parse_bool(&attr.value) {
            Ok(b) => b,
            Err(e) => {
                let d = e.into_diagnostic(attr.value_span.clone());
                ctx.push(d);
                false
            }
        },
        None => false,
    };
    // LevelDB left ActiveMQ in 5.17: its schema has no such element and ActiveMQ refuses the
    // file, whatever ferromq does with it.
    let removed = if adapter.name == "replicatedLevelDB" {
        " (ActiveMQ 5.17 no longer has it either: LevelDB was removed)"
    } else {
        ""
    };
    let what = format!(
        "<{}> configures a store shared between brokers (master/slave){removed}",
        adapter.name
    );
    if accepted_here || ctx.local_store {
        ctx.push(
            Diagnostic::warning(
                adapter.span.clone(),
                format!(
                    "{what}; ferromq runs it on its own local store in {} instead",
                    directory.display()
                ),
            )
            .with_hint(
                "the local store is not shared: do not start a second broker on this \
                 configuration, it would serve the same clients from another store",
            ),
        );
    } else {
        ctx.push(
            Diagnostic::error(
                adapter.span.clone(),
                format!(
                    "{what}; ferromq cannot share its store, so two brokers started on this \
                     configuration would both serve (split brain)"
                ),
            )
            .with_hint(
                "for a single broker, accept a local store with ferromq:localStore=\"true\" on \
                 this element (declare xmlns:ferromq=\"urn:ferromq\") or `--local-store`; \
                 otherwise use <kahaDB directory=\"...\"/>",
            ),
        );
    }
}
