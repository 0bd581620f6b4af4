//! `<broker useVirtualTopics>` and `<destinationInterceptors><virtualDestinationInterceptor>`:
//! virtual topics and composite topics (see `config::virtual_destinations` for the rules).
//!
//! What is served: `<virtualTopic>` (`name`, `prefix`, `postfix`, `selectorAware`),
//! `<compositeTopic>` forwarding to queues and topics, `<compositeQueue>` forwarding to queues.
//! What is refused, so that nothing is advertised that the broker does not do: a composite
//! queue forwarding to a topic, a forward through `<filteredDestination>`, chains of composite
//! topics, and any of them on a cluster node.

use super::Ctx;
use crate::config::diagnostic::{Diagnostic, Span};
use crate::config::tree::Element;
use crate::config::virtual_destinations::{Composite, VirtualDestinations, VirtualTopic};

/// The virtual destinations of `broker`. `cluster`: the node runs the cluster engine, which
/// serves none (explicit ones are an error there; ActiveMQ's default is not applied).
pub(super) fn virtual_destinations(
    ctx: &mut Ctx<'_>,
    broker: &Element,
    cluster: bool,
) -> VirtualDestinations {
    let use_virtual_topics = ctx
        .attr(broker, "useVirtualTopics")
        .map(|a| (a.clone(), crate::config::values::parse_bool(&a.value)));
    let written: Vec<&Element> = broker
        .children
        .iter()
        .filter(|c| c.is_activemq() && c.name == "destinationInterceptors")
        .collect();
    if written.is_empty() {
        let on = match use_virtual_topics {
            Some((attr, Err(e))) => {
                ctx.push(e.into_diagnostic(attr.value_span.clone()));
                true
            }
            Some((_, Ok(on))) => on,
            None => true,
        };
        return if on && !cluster {
            VirtualDestinations::default()
        } else {
            VirtualDestinations::none(false)
        };
    }
    if let Some((attr, _)) = use_virtual_topics {
        ctx.push(
            Diagnostic::warning(
                attr.span.clone(),
                "useVirtualTopics has no effect: <destinationInterceptors> replaces ActiveMQ's \
                 default virtual topic",
            )
            .with_hint(
                "declare <virtualTopic name=\"VirtualTopic.>\"/> in <virtualDestinations> to \
                 keep it, and remove the attribute",
            ),
        );
    }
    let mut found = VirtualDestinations::none(true);
    // Where each composite was written, for the checks across them below.
    let mut topic_spans: Vec<Span> = Vec::new();
    let mut queue_spans: Vec<Span> = Vec::new();
    for interceptor in ctx.items(broker, "destinationInterceptors") {
        if interceptor.name != "virtualDestinationInterceptor" {
            continue; // <mirroredQueue> and the like: left to the unknown-name check
        }
        ctx.mark(interceptor);
        for item in ctx.items(interceptor, "virtualDestinations") {
            match item.name.as_str() {
                "virtualTopic" => {
                    if let Some(topic) = virtual_topic(ctx, item) {
                        found.topics.push(topic);
                    }
                }
                "compositeTopic" => {
                    if let Some(composite) = composite_topic(ctx, item) {
                        found.composite_topics.push(composite);
                        topic_spans.push(item.span.clone());
                    }
                }
                "compositeQueue" => {
                    if let Some(composite) = composite_topic(ctx, item) {
                        found.composite_queues.push(composite);
                        queue_spans.push(item.span.clone());
                    }
                }
                _ => {} // left to the unknown-name check
            }
        }
    }
    // A forward to a topic that forwards again could loop; ActiveMQ follows such chains.
    let composite_names: Vec<String> = found
        .composite_topics
        .iter()
        .map(|c| c.name.clone())
        .collect();
    let mut chained = false;
    for c in &found.composite_topics {
        if let Some(next) = c
            .forward_to_topics
            .iter()
            .find(|t| composite_names.contains(t))
        {
            ctx.push(
                Diagnostic::error(
                    written[0].span.clone(),
                    format!(
                        "composite topic `{}` forwards to composite topic `{next}`: chains of \
                         composites are not served by ferromq yet",
                        c.name
                    ),
                )
                .with_hint("forward to the final destinations directly"),
            );
            chained = true;
        }
    }
    if chained {
        found.composite_topics.clear();
    }
    if !composites_stand_alone(ctx, &found, &topic_spans, &queue_spans) {
        found.composite_topics.clear();
        found.composite_queues.clear();
    }
    if cluster && !found.is_empty() {
        let at = written[0].span.clone();
        ctx.push(
            Diagnostic::error(
                at,
                "virtual destinations are not served on a cluster node yet (a topic's copies \
                 for queues are made by a single broker only)",
            )
            .with_hint(
                "remove <destinationInterceptors> from the cluster's configuration, or run a \
                 single broker (docs/cluster.md)",
            ),
        );
        return VirtualDestinations::none(true);
    }
    found
}

fn virtual_topic(ctx: &mut Ctx<'_>, item: &Element) -> Option<VirtualTopic> {
    ctx.mark(item);
    let mut ok = true;
    let name = match ctx.attr(item, "name") {
        Some(a) if a.value.trim().is_empty() => {
            ctx.value_error(
                a,
                "an empty virtual topic name",
                "remove it for `>`, or write `VirtualTopic.>`",
            );
            ok = false;
            String::new()
        }
        Some(a) => a.value.trim().to_owned(),
        None => ">".to_owned(),
    };
    let prefix = match ctx.attr(item, "prefix") {
        Some(a) => {
            let v = a.value.trim().to_owned();
            if !(v.is_empty() || v.ends_with('.')) || v.contains('>') {
                ctx.value_error(
                    a,
                    format!("prefix `{v}` is not whole levels ending with `.`"),
                    "write levels, `*` for any one, ending with a dot: `Consumer.*.`",
                );
                ok = false;
            }
            v
        }
        None => "Consumer.*.".to_owned(),
    };
    let postfix = match ctx.attr(item, "postfix") {
        Some(a) => {
            let v = a.value.trim().to_owned();
            if !(v.is_empty() || v.starts_with('.')) || v.contains('>') {
                ctx.value_error(
                    a,
                    format!("postfix `{v}` is not whole levels starting with `.`"),
                    "write levels starting with a dot, e.g. `.copy`, or remove it",
                );
                ok = false;
            }
            v
        }
        None => String::new(),
    };
    let selector_aware = ctx.bool_attr(item, "selectorAware").unwrap_or(false);
    // Copies are kept with the publish in one commit already (transactedSend), in one pass
    // (concurrentSend), and there is no network of brokers for `local` to act on.
    for quiet in ["transactedSend", "concurrentSend", "local"] {
        ctx.bool_attr(item, quiet);
    }
    if let Some(false) = ctx.bool_attr(item, "setOriginalDestination") {
        if let Some(a) = item.attr("setOriginalDestination") {
            ctx.push(
                Diagnostic::warning(
                    a.span.clone(),
                    "setOriginalDestination=\"false\" is not acted on: a queue copy always \
                     carries the topic as original-destination",
                )
                .with_hint("remove it"),
            );
        }
    }
    if let Some(true) = ctx.bool_attr(item, "dropOnResourceLimit") {
        if let Some(a) = item.attr("dropOnResourceLimit") {
            ctx.push(
                Diagnostic::warning(
                    a.span.clone(),
                    "dropOnResourceLimit=\"true\" is not acted on: a copy that cannot be kept \
                     holds or refuses the publish, it is never dropped",
                )
                .with_hint("remove it"),
            );
        }
    }
    ok.then_some(VirtualTopic {
        name,
        prefix,
        postfix,
        selector_aware,
    })
}

/// A `<compositeTopic>` or `<compositeQueue>` (`item.name` says which).
/// What ActiveMQ does with composites that ferromq does not follow, refused at the composite
/// (true when none is): two composites of one name (ActiveMQ refuses to start: the name is
/// the bean's, "Bean name ... is already used"), a forward into a composite queue (ActiveMQ
/// sends the copy through that composite again; to itself, until a `StackOverflowError`),
/// and a composite queue that is a virtual topic's consumer queue (ActiveMQ forwards the
/// virtual topic's copies). Accepting them would deliver where ActiveMQ does not.
fn composites_stand_alone(
    ctx: &mut Ctx<'_>,
    found: &VirtualDestinations,
    topic_spans: &[Span],
    queue_spans: &[Span],
) -> bool {
    let all: Vec<(&str, &Composite, &Span)> = found
        .composite_topics
        .iter()
        .zip(topic_spans)
        .map(|(c, at)| ("compositeTopic", c, at))
        .chain(
            found
                .composite_queues
                .iter()
                .zip(queue_spans)
                .map(|(c, at)| ("compositeQueue", c, at)),
        )
        .collect();
    let mut ok = true;
    for (i, (kind, composite, at)) in all.iter().enumerate() {
        if let Some((first_kind, _, first_at)) =
            all[..i].iter().find(|(_, c, _)| c.name == composite.name)
        {
            ctx.push(
                Diagnostic::error(
                    (*at).clone(),
                    format!(
                        "a second composite named `{}` (the first, a <{first_kind}>, is at line \
                         {}): ActiveMQ refuses to start (\"Bean name '{}' is already used\"), \
                         and only one of them could apply",
                        composite.name, first_at.line, composite.name
                    ),
                )
                .with_hint(format!(
                    "merge the two <{kind}> into one forwardTo list, or rename one"
                )),
            );
            ok = false;
        }
        for target in &composite.forward_to_queues {
            if !found.composite_queues.iter().any(|q| &q.name == target) {
                continue;
            }
            let message = if *kind == "compositeQueue" && *target == composite.name {
                format!(
                    "composite queue `{target}` forwards to itself: ActiveMQ's send then \
                     fails (it forwards again without end)"
                )
            } else {
                format!(
                    "<{kind}> `{}` forwards to composite queue `{target}`: chains of \
                     composites are not served by ferromq yet",
                    composite.name
                )
            };
            ctx.push(Diagnostic::error((*at).clone(), message).with_hint(
                if *target == composite.name {
                    "remove the forward; forwardOnly=\"false\" keeps a copy on the queue itself"
                        .to_owned()
                } else {
                    format!("forward to the destinations of `{target}` directly")
                },
            ));
            ok = false;
        }
        if *kind != "compositeQueue" {
            continue;
        }
        if let Some(topic) = found
            .topics
            .iter()
            .find_map(|t| Some((t.topic_of_queue(&composite.name)?, &t.name)))
        {
            ctx.push(
                Diagnostic::error(
                    (*at).clone(),
                    format!(
                        "composite queue `{}` is a consumer queue of virtual topic `{}` (topic \
                         `{}`): ferromq does not forward a virtual topic's copies yet",
                        composite.name, topic.1, topic.0
                    ),
                )
                .with_hint(format!(
                    "forward from a <compositeTopic name=\"{}\" forwardOnly=\"false\">, or \
                     consume from `{}`",
                    topic.0, composite.name
                )),
            );
            ok = false;
        }
    }
    ok
}

fn composite_topic(ctx: &mut Ctx<'_>, item: &Element) -> Option<Composite> {
    ctx.mark(item);
    let mut ok = true;
    let name = match ctx.attr(item, "name") {
        Some(a) if is_concrete(&a.value) => a.value.trim().to_owned(),
        Some(a) => {
            let kind = if item.name == "compositeQueue" {
                "queue"
            } else {
                "topic"
            };
            ctx.value_error(
                a,
                format!(
                    "composite {kind} name `{}` is not one concrete {kind}",
                    a.value
                ),
                &format!("name one {kind}, without `*`, `>` or `,`"),
            );
            ok = false;
            String::new()
        }
        None => {
            ctx.push(
                Diagnostic::error(item.span.clone(), format!("<{}> has no name", item.name))
                    .with_hint("name the destination it forwards, e.g. name=\"orders.all\""),
            );
            ok = false;
            String::new()
        }
    };
    let forward_only = ctx.bool_attr(item, "forwardOnly").unwrap_or(true);
    // Every forward is a copy here; the message is never shared between destinations.
    ctx.bool_attr(item, "copyMessage");
    ctx.bool_attr(item, "concurrentSend");
    let mut queues: Vec<String> = Vec::new();
    let mut topics: Vec<String> = Vec::new();
    for target in ctx.items(item, "forwardTo") {
        match target.name.as_str() {
            "topic" if item.name == "compositeTopic" => {
                ctx.mark(target);
                match ctx.attr(target, "physicalName") {
                    Some(a) if is_concrete(&a.value) && a.value.trim() != name => {
                        let t = a.value.trim().to_owned();
                        if !topics.contains(&t) {
                            topics.push(t);
                        }
                    }
                    Some(a) => {
                        ctx.value_error(
                            a,
                            format!(
                                "forwarding to topic `{}`: not one concrete topic other than `{name}`",
                                a.value
                            ),
                            "name one other topic, without `*`, `>` or `,`",
                        );
                        ok = false;
                    }
                    None => {
                        ctx.push(
                            Diagnostic::error(target.span.clone(), "<topic> has no physicalName")
                                .with_hint("name the topic, e.g. physicalName=\"orders.eu\""),
                        );
                        ok = false;
                    }
                }
            }
            "queue" => {
                ctx.mark(target);
                match ctx.attr(target, "physicalName") {
                    Some(a) if is_concrete(&a.value) => {
                        let q = a.value.trim().to_owned();
                        if !queues.contains(&q) {
                            queues.push(q);
                        }
                    }
                    Some(a) => {
                        ctx.value_error(
                            a,
                            format!("forwarding to `{}`: not one concrete queue", a.value),
                            "name one queue, without `*`, `>` or `,`",
                        );
                        ok = false;
                    }
                    None => {
                        ctx.push(
                            Diagnostic::error(target.span.clone(), "<queue> has no physicalName")
                                .with_hint("name the queue, e.g. physicalName=\"orders\""),
                        );
                        ok = false;
                    }
                }
            }
            "topic" | "filteredDestination" => {
                ctx.mark_subtree(target);
                ctx.push(
                    Diagnostic::error(
                        target.span.clone(),
                        format!(
                            "a <{}> forwarding to a <{}> is not served by ferromq yet",
                            item.name, target.name
                        ),
                    )
                    .with_hint(if item.name == "compositeQueue" {
                        "forward to queues only"
                    } else {
                        "forward to queues and topics only"
                    }),
                );
                ok = false;
            }
            _ => {} // left to the unknown-name check
        }
    }
    if queues.is_empty() && topics.is_empty() && ok {
        ctx.push(
            Diagnostic::error(
                item.span.clone(),
                format!("<{}> forwards to nothing", item.name),
            )
            .with_hint("add <forwardTo><queue physicalName=\"...\"/></forwardTo>"),
        );
        ok = false;
    }
    ok.then_some(Composite {
        name,
        forward_only,
        forward_to_queues: queues,
        forward_to_topics: topics,
    })
}

fn is_concrete(name: &str) -> bool {
    let name = name.trim();
    !name.is_empty()
        && !name.contains(',')
        && name
            .split('.')
            .all(|l| l != "*" && l != ">" && !l.is_empty())
}

#[cfg(test)]
mod tests {
    use super::super::tests::{has, load, valid};
    use crate::config::virtual_destinations::VirtualDestinations;

    #[test]
    fn the_default_applies_unless_turned_off_or_replaced() {
        let config = valid(load(""));
        assert_eq!(config.virtual_destinations, VirtualDestinations::default());
        let loaded = load("");
        let report = crate::config::report::text(&loaded);
        assert!(
            report.contains("virtual topic VirtualTopic.>: copies to existing queues Consumer.*.<topic> (ActiveMQ's default)"),
            "{report}"
        );
        let dir = tempfile::tempdir().expect("tempdir");
        let off = super::super::tests::load_in(
            dir.path(),
            r#"useVirtualTopics="false""#,
            "",
            &super::super::tests::options(),
        );
        assert!(valid(off).virtual_destinations.is_empty());
        let replaced = valid(load(
            "<destinationInterceptors><virtualDestinationInterceptor><virtualDestinations/></virtualDestinationInterceptor></destinationInterceptors>",
        ));
        assert!(replaced.virtual_destinations.is_empty());
        assert!(replaced.virtual_destinations.explicit);
    }

    #[test]
    fn virtual_and_composite_topics_are_read() {
        let loaded = load(
            r#"<destinationInterceptors><virtualDestinationInterceptor><virtualDestinations>
                 <virtualTopic name="VirtualTopic.>" prefix="Consumer.*." selectorAware="false" transactedSend="true"/>
                 <virtualTopic prefix="Copy." postfix=".in"/>
                 <compositeTopic name="MY.TOPIC" forwardOnly="false"><forwardTo><queue physicalName="C"/><queue physicalName="D"/></forwardTo></compositeTopic>
                 <compositeQueue name="MY.QUEUE"><forwardTo><queue physicalName="A"/></forwardTo></compositeQueue>
               </virtualDestinations></virtualDestinationInterceptor></destinationInterceptors>"#,
        );
        assert!(!loaded.diagnostics.has_errors(), "{}", loaded.diagnostics);
        assert!(
            !has(&loaded.diagnostics, "not acted on"),
            "{}",
            loaded.diagnostics
        );
        let v = valid(loaded).virtual_destinations;
        assert_eq!(v.topics.len(), 2);
        assert_eq!(v.topics[1].name, ">");
        assert_eq!(v.topics[1].postfix, ".in");
        assert_eq!(v.composite_topics[0].forward_to_queues, ["C", "D"]);
        assert!(!v.composite_topics[0].forward_only);
        assert_eq!(v.composite_queues[0].forward_to_queues, ["A"]);
        assert!(v.composite_queues[0].forward_only);
    }

    #[test]
    fn what_is_not_served_is_refused_at_its_place() {
        let loaded = load(
            r#"<destinationInterceptors><virtualDestinationInterceptor><virtualDestinations>
                 <compositeQueue name="MY.QUEUE"><forwardTo><queue physicalName="A"/><topic physicalName="B"/></forwardTo></compositeQueue>
                 <compositeTopic name="T"><forwardTo><filteredDestination selector="a = 1" queue="B"/></forwardTo></compositeTopic>
                 <virtualTopic prefix="Consumer"/>
               </virtualDestinations></virtualDestinationInterceptor></destinationInterceptors>"#,
        );
        let d = &loaded.diagnostics;
        assert!(
            has(d, "<compositeQueue> forwarding to a <topic> is not served"),
            "{d}"
        );
        assert!(
            has(
                d,
                "<compositeTopic> forwarding to a <filteredDestination> is not served"
            ),
            "{d}"
        );
        assert!(has(d, "prefix `Consumer` is not whole levels"), "{d}");
    }

    #[test]
    fn a_cluster_node_refuses_them_and_applies_no_default() {
        let store = r#"<persistenceAdapter><ferromq:jetStream servers="nats://127.0.0.1:4222"/></persistenceAdapter>"#;
        let dir = tempfile::tempdir().expect("tempdir");
        let opts = super::super::tests::options();
        let node = |inner: &str| {
            super::super::tests::load_in(dir.path(), r#"brokerName="n1""#, inner, &opts)
        };
        let default = node(store);
        assert!(!default.diagnostics.has_errors(), "{}", default.diagnostics);
        let report = crate::config::report::text(&default);
        assert!(
            report.contains("a cluster node applies no virtual destinations"),
            "{report}"
        );
        assert!(valid(default).virtual_destinations.is_empty());
        let explicit = node(&format!(
            "{store}<destinationInterceptors><virtualDestinationInterceptor><virtualDestinations>\
             <virtualTopic name=\"VirtualTopic.>\"/></virtualDestinations>\
             </virtualDestinationInterceptor></destinationInterceptors>"
        ));
        assert!(
            has(&explicit.diagnostics, "not served on a cluster node"),
            "{}",
            explicit.diagnostics
        );
        assert!(explicit.diagnostics.has_errors());
    }

    #[test]
    fn a_reload_that_changes_them_needs_a_restart() {
        let dir = tempfile::tempdir().expect("tempdir");
        let opts = super::super::tests::options();
        let running = valid(load(""));
        let off = valid(super::super::tests::load_in(
            dir.path(),
            r#"useVirtualTopics="false""#,
            "",
            &opts,
        ));
        let diff = crate::config::diff::diff(&running, &off);
        assert!(
            diff.restart_needed
                .iter()
                .any(|r| r.name == "virtual destinations" && r.requested == "none"),
            "{}",
            diff.summary()
        );
        let mut kept = off;
        crate::config::diff::keep_running_values(&running, &mut kept);
        assert_eq!(kept.virtual_destinations, running.virtual_destinations);
    }

    #[test]
    fn composites_activemq_would_follow_or_refuse_are_refused() {
        let cases = [
            (
                r#"<compositeQueue name="Q.X"><forwardTo><queue physicalName="Q.Y"/></forwardTo></compositeQueue>
                   <compositeQueue name="Q.Y" forwardOnly="false"><forwardTo><queue physicalName="Q.Z"/></forwardTo></compositeQueue>"#,
                "forwards to composite queue `Q.Y`: chains of composites",
            ),
            (
                r#"<compositeTopic name="T.A"><forwardTo><queue physicalName="Q.C"/></forwardTo></compositeTopic>
                   <compositeQueue name="Q.C"><forwardTo><queue physicalName="Q.OUT"/></forwardTo></compositeQueue>"#,
                "forwards to composite queue `Q.C`",
            ),
            (
                r#"<compositeQueue name="Q.LOOP" forwardOnly="false"><forwardTo><queue physicalName="Q.LOOP"/></forwardTo></compositeQueue>"#,
                "composite queue `Q.LOOP` forwards to itself",
            ),
            (
                r#"<compositeTopic name="T.A" forwardOnly="false"><forwardTo><queue physicalName="Q.B"/></forwardTo></compositeTopic>
                   <compositeTopic name="T.A"><forwardTo><queue physicalName="Q.C"/></forwardTo></compositeTopic>"#,
                "a second composite named `T.A`",
            ),
            (
                r#"<virtualTopic name="VirtualTopic.>" prefix="Consumer.*."/>
                   <compositeQueue name="Consumer.c.VirtualTopic.t7"><forwardTo><queue physicalName="Q.OUT"/></forwardTo></compositeQueue>"#,
                "is a consumer queue of virtual topic `VirtualTopic.>`",
            ),
            (
                r#"<compositeQueue name="Q.*"><forwardTo><queue physicalName="Q.OUT"/></forwardTo></compositeQueue>"#,
                "composite queue name `Q.*` is not one concrete queue",
            ),
        ];
        for (composites, expected) in cases {
            let loaded = load(&format!(
                r#"<destinationInterceptors><virtualDestinationInterceptor><virtualDestinations>
                 {composites}
               </virtualDestinations></virtualDestinationInterceptor></destinationInterceptors>"#
            ));
            assert!(
                has(&loaded.diagnostics, expected),
                "{expected}: {}",
                loaded.diagnostics
            );
            assert!(
                loaded.diagnostics.has_errors(),
                "{expected}: {}",
                loaded.diagnostics
            );
        }
        // Two composites, each forwarding to plain queues, one of them also a topic forward.
        let apart = load(
            r#"<destinationInterceptors><virtualDestinationInterceptor><virtualDestinations>
                 <compositeQueue name="Q.X"><forwardTo><queue physicalName="Q.Y"/></forwardTo></compositeQueue>
                 <compositeTopic name="T.X"><forwardTo><queue physicalName="Q.Y"/></forwardTo></compositeTopic>
               </virtualDestinations></virtualDestinationInterceptor></destinationInterceptors>"#,
        );
        assert!(!apart.diagnostics.has_errors(), "{}", apart.diagnostics);
    }

    #[test]
    fn a_composite_topic_forwards_to_topics_but_not_in_chains() {
        let loaded = load(
            r#"<destinationInterceptors><virtualDestinationInterceptor><virtualDestinations>
                 <compositeTopic name="A"><forwardTo><topic physicalName="B"/><queue physicalName="q"/></forwardTo></compositeTopic>
               </virtualDestinations></virtualDestinationInterceptor></destinationInterceptors>"#,
        );
        let report = crate::config::report::text(&loaded);
        assert!(
            report.contains("composite topic A: forwards to queues q and topics B only"),
            "{report}"
        );
        assert_eq!(
            valid(loaded).virtual_destinations.composite_topics[0].forward_to_topics,
            ["B"]
        );
        let chained = load(
            r#"<destinationInterceptors><virtualDestinationInterceptor><virtualDestinations>
                 <compositeTopic name="A"><forwardTo><topic physicalName="B"/></forwardTo></compositeTopic>
                 <compositeTopic name="B"><forwardTo><topic physicalName="A"/></forwardTo></compositeTopic>
                 <compositeTopic name="C"><forwardTo><topic physicalName="C"/></forwardTo></compositeTopic>
               </virtualDestinations></virtualDestinationInterceptor></destinationInterceptors>"#,
        );
        assert!(
            has(&chained.diagnostics, "chains of composites are not served"),
            "{}",
            chained.diagnostics
        );
        assert!(
            has(
                &chained.diagnostics,
                "not one concrete topic other than `C`"
            ),
            "{}",
            chained.diagnostics
        );
    }
}
