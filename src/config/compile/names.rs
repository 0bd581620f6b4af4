//! The names pass: after the sections have read what they act on, walk the whole document and
//! report the rest. A name ActiveMQ 5.17 knows is a warning (reported once, at the outermost
//! ignored element); a name nobody knows is an error with a suggestion, wherever it is, because
//! ActiveMQ itself would refuse such a file.

use super::Ctx;
use crate::config::diagnostic::Diagnostic;
use crate::config::known_names::{self, ElementNames};
use crate::config::tree::{Element, Namespace};

/// Extension attributes ferromq reads (namespace `urn:ferromq`).
const FERROMQ_ATTRIBUTES: &[&str] = &[
    "keyFile",
    super::ssl::KEY_ALIAS,
    super::shared_store::LOCAL_STORE,
];
/// Extension elements ferromq reads (namespace `urn:ferromq`) inside `<broker>`.
const FERROMQ_ELEMENTS: &[&str] = &[super::shared::ELEMENT, super::system_topics::ELEMENT];
/// Extension elements ferromq reads inside `<persistenceAdapter>`.
const FERROMQ_ADAPTERS: &[&str] = &[super::jetstream::ELEMENT];

/// Why some common names are ignored, for the warning's hint.
const WHY_IGNORED: &[(&str, &str)] = &[
    (
        "managementContext",
        "ferromq has no JMX; `ferromq check` shows what it builds",
    ),
    ("useJmx", "ferromq has no JMX"),
    (
        "shutdownHooks",
        "ferromq shuts down cleanly on SIGINT/SIGTERM by itself",
    ),
    (
        "advisorySupport",
        "ferromq publishes no ActiveMQ advisory messages",
    ),
    (
        "schedulerSupport",
        "ferromq has no JMS scheduler (a redeliveryPlugin is served without it)",
    ),
    (
        "prioritizedMessages",
        "queues deliver in arrival order; `priority` is kept as a header but does not reorder",
    ),
    (
        "strictOrderDispatch",
        "queues dispatch in arrival order, round-robin over consumers with room (docs/queues.md)",
    ),
    (
        "consumersBeforeDispatchStarts",
        "a queue dispatches to the first consumer at once",
    ),
    (
        "timeBeforeDispatchStarts",
        "a queue dispatches to the first consumer at once",
    ),
    (
        "useConsumerPriority",
        "consumer priorities are not served: round-robin over consumers with room",
    ),
    (
        "allConsumersExclusiveByDefault",
        "only consumers that ask for it (`activemq.exclusive:true`) are exclusive",
    ),
    (
        "useCollisionAvoidance",
        "redelivery delays are exact (no random jitter)",
    ),
    (
        "collisionAvoidancePercent",
        "redelivery delays are exact (no random jitter)",
    ),
    (
        "producerFlowControl",
        "ferromq applies the systemUsage limits instead",
    ),
    (
        "memoryLimit",
        "ferromq applies the systemUsage limits instead",
    ),
    (
        "percentOfJvmHeap",
        "there is no JVM heap; the memory limit is <memoryUsage limit=\"...\"/> (default 1 gb)",
    ),
];

const GENERIC_WHY: &str = "ActiveMQ 5.17 knows this name; ferromq ignores it";

fn why(name: &str) -> &'static str {
    WHY_IGNORED
        .iter()
        .find(|(n, _)| *n == name)
        .map_or(GENERIC_WHY, |(_, why)| why)
}

pub(super) fn check_document(ctx: &mut Ctx<'_>, root: &Element) {
    if root.is_activemq() {
        check_type(ctx, root, false);
        return;
    }
    for child in &root.children {
        match &child.ns {
            Namespace::ActiveMq => check_type(ctx, child, false),
            Namespace::Other(uri) => ctx.push(Diagnostic::note(
                child.span.clone(),
                format!(
                    "<{}> ({uri}) is skipped: ferromq reads the ActiveMQ broker only",
                    child.name
                ),
            )),
            Namespace::Ferromq => unknown_ferromq_element(ctx, root, child),
            Namespace::Beans => {}
        }
    }
}

/// A type element (`<broker>`, `<kahaDB>`): its attributes and property elements.
fn check_type(ctx: &mut Ctx<'_>, element: &Element, quiet: bool) {
    let Some(names) = known_names::element(&element.name) else {
        let hint = known_names::did_you_mean(&element.name, known_names::element_names());
        let mut d = Diagnostic::error(
            element.span.clone(),
            format!("unknown element <{}>", element.name),
        );
        d = d.with_hint(hint.unwrap_or_else(|| {
            "not an element of ActiveMQ's broker schema that ferromq knows: check its spelling \
             (docs/migration.md, section 8, lists what ferromq reads)"
                .to_string()
        }));
        ctx.push(d);
        return;
    };
    let used = ctx.is_used(&element.span);
    if known_names::is_removed_element(&element.name) {
        if !used && !quiet {
            ctx.push(Diagnostic::warning(
                element.span.clone(),
                format!(
                    "<{}> was removed in ActiveMQ 5.17 and is ignored",
                    element.name
                ),
            ));
        }
        return;
    }
    if !used && !quiet {
        ctx.push(
            Diagnostic::warning(
                element.span.clone(),
                format!("<{}> is not acted on by ferromq", element.name),
            )
            .with_hint(why(&element.name)),
        );
    }
    let quiet = quiet || !used;
    check_attributes(ctx, element, names, quiet);
    for child in &element.children {
        if child.ns == Namespace::Ferromq && !ctx.is_used(&child.span) {
            unknown_ferromq_element(ctx, element, child);
            continue;
        }
        if !child.is_activemq() {
            // Spring beans and other namespaces: not ActiveMQ's names
            ferromq_name_in_another_namespace(ctx, child);
            continue;
        }
        if names.properties.contains(child.name.as_str()) {
            check_property(ctx, element, child, quiet);
        } else if !ctx.is_used(&child.span) {
            misplaced_or_unknown(ctx, element, names, child);
        }
    }
}

fn check_attributes(ctx: &mut Ctx<'_>, element: &Element, names: &ElementNames, quiet: bool) {
    for attr in &element.attrs {
        if ctx.is_used(&attr.span) {
            continue;
        }
        match &attr.ns {
            None | Some(Namespace::ActiveMq) => {}
            Some(Namespace::Ferromq) => {
                let mut d = Diagnostic::error(
                    attr.span.clone(),
                    format!(
                        "unknown ferromq attribute `ferromq:{}` on <{}>",
                        attr.name, element.name
                    ),
                );
                d = d.with_hint(
                    known_names::did_you_mean(&attr.name, FERROMQ_ATTRIBUTES.iter().copied())
                        .unwrap_or_else(|| {
                            "ferromq reads keyFile and keyAlias on <sslContext>, localStore on a persistence adapter".into()
                        }),
                );
                ctx.push(d);
                continue;
            }
            Some(_) => continue,
        }
        if names.attributes.contains(attr.name.as_str()) {
            if !quiet && attr.name != "id" {
                ctx.push(
                    Diagnostic::warning(
                        attr.span.clone(),
                        format!(
                            "attribute `{}` of <{}> is not acted on by ferromq",
                            attr.name, element.name
                        ),
                    )
                    .with_hint(why(&attr.name)),
                );
            }
        } else {
            let mut d = Diagnostic::error(
                attr.span.clone(),
                format!("unknown attribute `{}` on <{}>", attr.name, element.name),
            );
            if let Some(h) = known_names::did_you_mean(&attr.name, names.attributes.iter().copied())
            {
                d = d.with_hint(h);
            }
            ctx.push(d);
        }
    }
}

/// A property element (`<transportConnectors>`): holds type elements.
fn check_property(ctx: &mut Ctx<'_>, parent: &Element, property: &Element, quiet: bool) {
    let used = ctx.is_used(&property.span);
    if !used && !quiet {
        ctx.push(
            Diagnostic::warning(
                property.span.clone(),
                format!(
                    "<{}> of <{}> is not acted on by ferromq",
                    property.name, parent.name
                ),
            )
            .with_hint(why(&property.name)),
        );
    }
    let quiet = quiet || !used;
    for attr in property.attrs.iter().filter(|a| a.ns.is_none()) {
        if !ctx.is_used(&attr.span) {
            ctx.push(
                Diagnostic::error(
                    attr.span.clone(),
                    format!("<{}> holds elements and takes no attributes", property.name),
                )
                .with_hint(format!(
                    "put `{}` on the element inside <{}>",
                    attr.name, property.name
                )),
            );
        }
    }
    for item in &property.children {
        if item.is_activemq() {
            check_type(ctx, item, quiet);
        } else if item.ns == Namespace::Ferromq && !ctx.is_used(&item.span) {
            unknown_ferromq_element(ctx, property, item);
        } else {
            ferromq_name_in_another_namespace(ctx, item);
        }
    }
}

/// An element named like one of ferromq's (`<x:jetStream>`) in a namespace that is not
/// `urn:ferromq` is not read: without this error a cluster's store element with a mistyped
/// namespace would leave the broker on a local store, silently.
fn ferromq_name_in_another_namespace(ctx: &mut Ctx<'_>, element: &Element) {
    let Namespace::Other(uri) = &element.ns else {
        return;
    };
    let name = element.name.as_str();
    if ctx.is_used(&element.span)
        || !(FERROMQ_ELEMENTS.contains(&name) || FERROMQ_ADAPTERS.contains(&name))
    {
        return;
    }
    ctx.push(
        Diagnostic::error(
            element.span.clone(),
            format!(
                "<{name}> is in namespace `{uri}`, not ferromq's `{}`: it is not read",
                crate::config::tree::NS_FERROMQ
            ),
        )
        .with_hint(format!(
            "declare the prefix as ferromq's: xmlns:ferromq=\"{}\"",
            crate::config::tree::NS_FERROMQ
        )),
    );
}

/// A child of a type element that is not one of its properties: either a type element placed
/// without its property wrapper, or a typo.
fn misplaced_or_unknown(
    ctx: &mut Ctx<'_>,
    parent: &Element,
    names: &ElementNames,
    child: &Element,
) {
    let properties = names.properties.iter().copied();
    if known_names::element(&child.name).is_some() {
        let plural = format!("{}s", child.name);
        let wrapper = names
            .properties
            .iter()
            .find(|p| **p == plural.as_str())
            .map(|p| format!("wrap it in <{p}>...</{p}>"))
            .unwrap_or_else(|| {
                let some: Vec<&str> = names.properties.iter().take(6).copied().collect();
                format!(
                    "<{}> holds property elements such as <{}>",
                    parent.name,
                    some.join(">, <")
                )
            });
        ctx.push(
            Diagnostic::error(
                child.span.clone(),
                format!(
                    "<{}> cannot be placed directly in <{}>",
                    child.name, parent.name
                ),
            )
            .with_hint(wrapper),
        );
        return;
    }
    let mut d = Diagnostic::error(
        child.span.clone(),
        format!("unknown element <{}> in <{}>", child.name, parent.name),
    );
    let hint = known_names::did_you_mean(&child.name, properties)
        .or_else(|| known_names::did_you_mean(&child.name, known_names::element_names()));
    d = d.with_hint(hint.unwrap_or_else(|| no_such_element(&parent.name)));
    ctx.push(d);
}

/// The hint of an element ActiveMQ's schema does not have (no near name either).
fn no_such_element(parent: &str) -> String {
    format!(
        "not an element of ActiveMQ's broker schema that ferromq knows in <{parent}>: check its \
         spelling and where it sits (docs/migration.md, section 8, lists what ferromq reads)"
    )
}

/// A `urn:ferromq` element no section read: misspelt, or not where it belongs.
fn unknown_ferromq_element(ctx: &mut Ctx<'_>, parent: &Element, child: &Element) {
    let hint = if FERROMQ_ELEMENTS.contains(&child.name.as_str()) {
        format!("put <ferromq:{}> directly inside <broker>", child.name)
    } else if FERROMQ_ADAPTERS.contains(&child.name.as_str()) {
        format!(
            "put <ferromq:{}> inside <broker><persistenceAdapter>",
            child.name
        )
    } else {
        let known = FERROMQ_ELEMENTS.iter().chain(FERROMQ_ADAPTERS).copied();
        known_names::did_you_mean(&child.name, known).unwrap_or_else(|| {
            "<ferromq:sharedSubscriptions> and <ferromq:systemTopics> go inside <broker>, \
             <ferromq:jetStream> inside <persistenceAdapter>"
                .into()
        })
    };
    ctx.push(
        Diagnostic::error(
            child.span.clone(),
            format!(
                "unknown ferromq element <ferromq:{}> in <{}>",
                child.name, parent.name
            ),
        )
        .with_hint(hint),
    );
}
