//! `<systemUsage>`: memory, store and temp limits. The element is doubled in real files
//! (`<systemUsage><systemUsage>...`): the outer one is the broker's property, the inner one the
//! value; the same holds for `<memoryUsage><memoryUsage limit=.../></memoryUsage>`.

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
        limits.memory_limit_bytes = limit(ctx, usage, "memoryUsage").or(limits.memory_limit_bytes);
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
            found = ctx.size_attr(element, "limit").or(found);
        }
    }
    found
}
