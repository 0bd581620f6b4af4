//! ferromq's one-attribute extension elements inside `<broker>` (`<ferromq:sharedSubscriptions
//! strategy="..."/>`, `<ferromq:systemTopics interval="..."/>`): the rules they share, so that
//! each element's module only says what its value means.

use super::Ctx;
use crate::config::diagnostic::Diagnostic;
use crate::config::tree::{Attr, Element, Namespace};

/// The `<ferromq:{name}>` element of `broker` that takes one attribute, `attribute`, and no
/// children. Marks it read and reports, as errors, a second such element, any other
/// attribute and any child (`example` is the hint's sample, e.g. `strategy="round-robin"`).
/// Returns the attribute of the first element, marked read, or `None` when there is no
/// element or it leaves the attribute out (the caller's default then holds).
pub(super) fn single_attribute<'t>(
    ctx: &mut Ctx<'_>,
    broker: &'t Element,
    name: &str,
    attribute: &str,
    example: &str,
) -> Option<&'t Attr> {
    let mut chosen = None;
    let elements = broker
        .children
        .iter()
        .filter(|c| c.ns == Namespace::Ferromq && c.name == name);
    for (n, element) in elements.enumerate() {
        ctx.mark(element);
        if n > 0 {
            ctx.push(
                Diagnostic::error(
                    element.span.clone(),
                    format!("a second <ferromq:{name}>: write it once"),
                )
                .with_hint(format!("keep one element with the {attribute} you want")),
            );
            continue;
        }
        for attr in &element.attrs {
            if attr.name != attribute || !matches!(attr.ns, None | Some(Namespace::Ferromq)) {
                ctx.push(
                    Diagnostic::error(
                        attr.span.clone(),
                        format!("unknown attribute `{}` on <ferromq:{name}>", attr.name),
                    )
                    .with_hint(format!("its only attribute is {example}")),
                );
            }
        }
        for child in &element.children {
            ctx.mark_subtree(child);
            ctx.push(Diagnostic::error(
                child.span.clone(),
                format!("<ferromq:{name}> takes no elements, only {attribute}=\"...\""),
            ));
        }
        if let Some(attr) = element.attr(attribute) {
            ctx.mark_attr(attr);
            chosen = Some(attr);
        }
    }
    chosen
}
