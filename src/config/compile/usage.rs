//! `<systemUsage>`: memory, store and temp limits. The element is doubled in real files
//! (`<systemUsage><systemUsage>...`): the outer one is the broker's property, the inner one the
//! value; the same holds for `<memoryUsage><memoryUsage limit=.../></memoryUsage>`.
//!
//! A limit of 0 is no limit, as in ActiveMQ: its `Usage` counts 0 % of a limit of 0, so the
//! usage is never full. ActiveMQ's memory limit is also 0, so none, where the file leaves it
//! unset: a `<memoryUsage>` without `limit` (`percentOfJvmHeap` sets one only above 0), and a
//! `<systemUsage>` without `<memoryUsage>` (BrokerService gives its 1 GB default only to the
//! `SystemUsage` it makes itself, when the file has none). A negative limit is an error, as
//! ActiveMQ's size syntax (digits and a unit) refuses it.

use super::Ctx;
use crate::config::diagnostic::Diagnostic;
use crate::config::model::Limits;
use crate::config::tree::Element;

pub(super) fn limits(ctx: &mut Ctx<'_>, broker: &Element) -> Limits {
    let mut limits = Limits::default();
    for holder in broker
        .children
        .iter()
        .filter(|c| c.is_activemq() && c.name == "systemUsage")
    {
        let written_once = holder.child("systemUsage").is_none()
            && holder
                .children
                .iter()
                .any(|c| matches!(c.name.as_str(), "memoryUsage" | "storeUsage" | "tempUsage"));
        if written_once {
            ctx.mark_subtree(holder);
            ctx.push(
                Diagnostic::error(holder.span.clone(), "<systemUsage> must be written twice")
                    .with_hint("<systemUsage><systemUsage><memoryUsage><memoryUsage limit=\"64 mb\"/></memoryUsage>...</systemUsage></systemUsage>: the outer element is the broker's property, the inner one its value"),
            );
        }
    }
    for usage in ctx.items(broker, "systemUsage") {
        if usage.name != "systemUsage" {
            continue;
        }
        ctx.mark(usage);
        if let Some(fail) = ctx.bool_attr(usage, "sendFailIfNoSpace") {
            limits.send_fail_if_no_space = fail;
        }
        if let Some(attr) = usage.attr("sendFailIfNoSpaceAfterTimeout") {
            match ctx.int_attr(usage, "sendFailIfNoSpaceAfterTimeout") {
                Some(ms) if ms > 0 => {
                    limits.send_fail_if_no_space_after_timeout_ms = Some(ms as u64);
                }
                Some(_) => ctx.value_error(
                    attr,
                    "`sendFailIfNoSpaceAfterTimeout` must be a positive number of milliseconds",
                    "leave it out to block producers until there is room (the default)",
                ),
                None => {}
            }
        }
        limits.memory_limit_bytes = memory_limit(ctx, usage).or(limits.memory_limit_bytes);
        limits.store_limit_bytes = limit(ctx, usage, "storeUsage").or(limits.store_limit_bytes);
        limits.temp_limit_bytes = limit(ctx, usage, "tempUsage").or(limits.temp_limit_bytes);
    }
    limits
}

/// `<memoryUsage><memoryUsage limit="64 mb"/></memoryUsage>` inside the inner systemUsage.
fn limit(ctx: &mut Ctx<'_>, usage: &Element, name: &str) -> Option<u64> {
    for holder in usage
        .children
        .iter()
        .filter(|c| c.is_activemq() && c.name == name)
    {
        if let Some(attr) = holder.attr("limit") {
            ctx.mark_subtree(holder);
            ctx.push(
                Diagnostic::error(attr.span.clone(), format!("<{name}> must be written twice"))
                    .with_hint(format!(
                        "<{name}><{name} limit=\"{}\"/></{name}>",
                        attr.value
                    )),
            );
            return None;
        }
    }
    let mut found = None;
    for element in ctx.items(usage, name) {
        if element.name == name {
            ctx.mark(element);
            found = size_limit(ctx, element).or(found);
        }
    }
    found
}

/// The memory limit of one inner `<systemUsage>`: `Some(0)` (no limit) where ActiveMQ's stays
/// 0, `None` where ferromq applies its default (and after an error) (a `percentOfJvmHeap` above 0: there is no JVM
/// heap to take a share of; the attribute is reported as not acted on).
fn memory_limit(ctx: &mut Ctx<'_>, usage: &Element) -> Option<u64> {
    const HINT: &str = "write <memoryUsage><memoryUsage limit=\"1 gb\"/></memoryUsage> to bound \
                        the memory messages take (1 gb is the limit of a broker without \
                        <systemUsage>), or limit=\"0\" to say that no limit is meant";
    let written = usage
        .children
        .iter()
        .any(|c| c.is_activemq() && c.name == "memoryUsage");
    if !written {
        ctx.push(
            Diagnostic::warning(
                usage.span.clone(),
                "this <systemUsage> has no <memoryUsage>: ActiveMQ's memory limit is then 0, \
                 which is no limit (its 1 gb default is for a broker without <systemUsage>), \
                 and so is ferromq's",
            )
            .with_hint(HINT),
        );
        return Some(0);
    }
    if usage
        .children
        .iter()
        .filter(|c| c.is_activemq() && c.name == "memoryUsage")
        .any(|holder| holder.attr("limit").is_some())
    {
        // Written once: reported by `limit`, which applies nothing.
        return limit(ctx, usage, "memoryUsage");
    }
    let mut found = None;
    for element in ctx.items(usage, "memoryUsage") {
        if element.name != "memoryUsage" {
            continue;
        }
        ctx.mark(element);
        if element.attr("limit").is_some() {
            found = size_limit(ctx, element).or(found);
            continue;
        }
        let Some(percent) = element.attr("percentOfJvmHeap") else {
            ctx.push(
                Diagnostic::warning(
                    element.span.clone(),
                    "<memoryUsage> without `limit`: ActiveMQ's memory limit stays 0, which is \
                     no limit, and so is ferromq's",
                )
                .with_hint(HINT),
            );
            found = Some(0);
            continue;
        };
        match percent.value.trim().parse::<i32>() {
            // Not acted on (no JVM heap): the default applies and the attribute is reported.
            Ok(p) if p > 0 => found = None,
            Ok(_) => {
                ctx.mark_attr(percent);
                ctx.push(
                    Diagnostic::warning(
                        percent.value_span.clone(),
                        format!(
                            "percentOfJvmHeap=\"{}\" sets no limit: ActiveMQ applies it only \
                             above 0, and its memory limit stays 0, which is no limit; so is \
                             ferromq's",
                            percent.value
                        ),
                    )
                    .with_hint(HINT),
                );
                found = Some(0);
            }
            Err(_) => {
                ctx.mark_attr(percent);
                ctx.value_error(
                    percent,
                    format!(
                        "`percentOfJvmHeap` must be a whole number, not `{}`",
                        percent.value
                    ),
                    "ActiveMQ refuses it too; write limit=\"64 mb\" instead: ferromq has no JVM \
                     heap to take a share of",
                );
            }
        }
    }
    found
}

/// A usage's `limit` attribute: a size, 0 for no limit. A negative one is refused with its
/// own words (the size syntax would only say "not a size").
fn size_limit(ctx: &mut Ctx<'_>, element: &Element) -> Option<u64> {
    let attr = element.attr("limit")?;
    if attr.value.trim_start().starts_with('-') {
        ctx.mark_attr(attr);
        ctx.value_error(
            attr,
            format!(
                "`{}` is a negative limit: ActiveMQ refuses it too (a size has no sign)",
                attr.value
            ),
            "write a size such as \"64 mb\", or 0 for no limit",
        );
        return None;
    }
    ctx.size_attr(element, "limit")
}
