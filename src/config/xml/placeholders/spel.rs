//! The part of Spring's expression language (SpEL, `#{...}`) that published `activemq.xml`
//! files use to read the process environment: `#{systemEnvironment['NAME']}` and
//! `#{systemProperties['name']}`, each with an optional Elvis default
//! (`#{systemEnvironment['HOST'] ?: '0.0.0.0'}`). Spring evaluates such expressions when it
//! creates the bean, after the placeholder configurer replaced `${...}`; so here, after
//! placeholders. Any other expression is refused with an error (ActiveMQ would evaluate it,
//! and a value ferromq cannot compute must not start a broker that differs), as is a variable
//! that is not set and has no default (Spring would write nothing there).

/// Why a value's expression cannot be evaluated.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub(in crate::config::xml) enum SpelError {
    #[error(
        "the Spring expression `#{{{0}}}` is not evaluated by ferromq (it reads \
         systemEnvironment['NAME'] and systemProperties['name'], with ?: 'default')"
    )]
    Unsupported(String),
    #[error(
        "the Spring expression `#{{{expression}}}` reads {variables}['{name}'], which is not set \
         (Spring would write nothing there)"
    )]
    Unset {
        expression: String,
        variables: &'static str,
        name: String,
    },
    #[error("a `#{{` is never closed")]
    Unclosed,
}

/// Where an expression's variable is looked up.
pub(in crate::config::xml) trait SpelSources {
    /// An environment variable.
    fn env(&self, name: &str) -> Option<String>;
    /// A Java system property (ferromq: `--set`/`-D`, then the launcher's `activemq.*`).
    fn property(&self, name: &str) -> Option<String>;
}

/// `text` with each `#{...}` replaced by its value; `text` itself when it has none.
pub(in crate::config::xml) fn evaluate(
    text: &str,
    sources: &dyn SpelSources,
) -> Result<String, SpelError> {
    if !text.contains("#{") {
        return Ok(text.to_owned());
    }
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(start) = rest.find("#{") {
        out.push_str(&rest[..start]);
        let after = &rest[start + 2..];
        let end = after.find('}').ok_or(SpelError::Unclosed)?;
        out.push_str(&expression(&after[..end], sources)?);
        rest = &after[end + 1..];
    }
    out.push_str(rest);
    Ok(out)
}

/// One expression (the text between `#{` and `}`).
fn expression(inner: &str, sources: &dyn SpelSources) -> Result<String, SpelError> {
    let unsupported = || SpelError::Unsupported(inner.to_owned());
    let (lookup, default) = match inner.split_once("?:") {
        Some((lookup, default)) => (
            lookup,
            Some(quoted(default.trim()).ok_or_else(unsupported)?),
        ),
        None => (inner, None),
    };
    let lookup = lookup.trim();
    let (source, rest) = if let Some(rest) = lookup.strip_prefix("systemEnvironment") {
        ("systemEnvironment", rest)
    } else if let Some(rest) = lookup.strip_prefix("systemProperties") {
        ("systemProperties", rest)
    } else {
        return Err(unsupported());
    };
    let name = rest
        .trim()
        .strip_prefix('[')
        .and_then(|r| r.strip_suffix(']'))
        .and_then(|r| quoted(r.trim()))
        .ok_or_else(unsupported)?;
    let found = match source {
        "systemEnvironment" => sources.env(name),
        _ => sources.property(name),
    };
    match (found, default) {
        (Some(value), _) => Ok(value),
        (None, Some(default)) => Ok(default.to_owned()),
        (None, None) => Err(SpelError::Unset {
            expression: inner.to_owned(),
            variables: source,
            name: name.to_owned(),
        }),
    }
}

/// The text of a SpEL string literal in single or double quotes (no escapes inside).
fn quoted(text: &str) -> Option<&str> {
    ['\'', '"'].into_iter().find_map(|q| {
        let inner = text.strip_prefix(q)?.strip_suffix(q)?;
        (!inner.contains(q)).then_some(inner)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    struct Fixed;
    impl SpelSources for Fixed {
        fn env(&self, name: &str) -> Option<String> {
            (name == "HOST_IP").then(|| "10.0.0.7".to_owned())
        }
        fn property(&self, name: &str) -> Option<String> {
            (name == "activemq.data").then(|| "/var/lib/amq".to_owned())
        }
    }

    #[test]
    fn environment_and_properties_with_defaults() {
        let eval = |text: &str| evaluate(text, &Fixed);
        assert_eq!(
            eval("mqtt://#{systemEnvironment['HOST_IP']}:1883"),
            Ok("mqtt://10.0.0.7:1883".to_owned())
        );
        assert_eq!(
            eval("#{ systemProperties[\"activemq.data\"] }/kahadb"),
            Ok("/var/lib/amq/kahadb".to_owned())
        );
        assert_eq!(
            eval("#{systemEnvironment['NOPE'] ?: '0.0.0.0'}"),
            Ok("0.0.0.0".to_owned())
        );
        assert_eq!(eval("no expression"), Ok("no expression".to_owned()));
    }

    #[test]
    fn other_expressions_unset_variables_and_unclosed_ones_are_errors() {
        let eval = |text: &str| evaluate(text, &Fixed);
        assert!(matches!(
            eval("#{T(java.lang.Math).random()}"),
            Err(SpelError::Unsupported(_))
        ));
        assert!(matches!(
            eval("#{systemEnvironment['NOPE']}"),
            Err(SpelError::Unset { .. })
        ));
        assert_eq!(eval("#{systemEnvironment['X'"), Err(SpelError::Unclosed));
        assert!(matches!(
            eval("#{systemEnvironment[NOPE]}"),
            Err(SpelError::Unsupported(_))
        ));
    }
}
