//! The part of Spring's expression language (SpEL, `#{...}`) that published `activemq.xml`
//! files use to read the process environment: `#{systemEnvironment['NAME']}` and
//! `#{systemProperties['name']}`, each with an optional Elvis default
//! (`#{systemEnvironment['HOST'] ?: '0.0.0.0'}`). Spring evaluates such expressions when it
//! creates the bean, after the placeholder configurer replaced `${...}`; so here, after
//! placeholders. An expression of another kind, or one whose variable is not set and has no
//! default, is left as written, as ferromq left every expression before: ActiveMQ's own
//! `jetty.xml` reads `#{systemProperties['jetty.host']}`, a property its `jettyPort` bean sets
//! while the broker starts, and a bean value ferromq does not read must not stop it. Where the
//! value matters (a connector's URI) the error about that value says what was not evaluated.

/// Why an expression is left as written.
#[derive(Debug, Clone, PartialEq, Eq)]
enum SpelError {
    /// Not one of the forms this module evaluates.
    Unsupported(String),
    /// Its variable is not set and it has no default.
    Unset {
        variables: &'static str,
        name: String,
    },
}

/// Where an expression's variable is looked up.
pub(in crate::config::xml) trait SpelSources {
    /// An environment variable.
    fn env(&self, name: &str) -> Option<String>;
    /// A Java system property (ferromq: `--set`/`-D`, then the launcher's `activemq.*`).
    fn property(&self, name: &str) -> Option<String>;
}

/// `text` with each `#{...}` this module evaluates replaced by its value (the others left as
/// written); `None` when nothing was replaced.
pub(in crate::config::xml) fn evaluate(text: &str, sources: &dyn SpelSources) -> Option<String> {
    if !text.contains("#{") {
        return None;
    }
    let mut out = String::with_capacity(text.len());
    let mut replaced = false;
    let mut rest = text;
    while let Some(start) = rest.find("#{") {
        out.push_str(&rest[..start]);
        let after = &rest[start + 2..];
        let Some(end) = after.find('}') else {
            out.push_str(&rest[start..]);
            rest = "";
            break;
        };
        match expression(&after[..end], sources) {
            Ok(value) => {
                out.push_str(&value);
                replaced = true;
            }
            Err(_) => out.push_str(&rest[start..start + 2 + end + 1]),
        }
        rest = &after[end + 1..];
    }
    out.push_str(rest);
    replaced.then_some(out)
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
    // Spring's Elvis operator takes an empty string as null too.
    let found = found.filter(|value| default.is_none() || !value.is_empty());
    match (found, default) {
        (Some(value), _) => Ok(value),
        (None, Some(default)) => Ok(default.to_owned()),
        (None, None) => Err(SpelError::Unset {
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
            eval("mqtt://#{systemEnvironment['HOST_IP']}:1883").as_deref(),
            Some("mqtt://10.0.0.7:1883")
        );
        assert_eq!(
            eval("#{ systemProperties[\"activemq.data\"] }/kahadb").as_deref(),
            Some("/var/lib/amq/kahadb")
        );
        assert_eq!(
            eval("#{systemEnvironment['NOPE'] ?: '0.0.0.0'}").as_deref(),
            Some("0.0.0.0")
        );
        assert_eq!(eval("no expression"), None);
        struct Empty;
        impl SpelSources for Empty {
            fn env(&self, _: &str) -> Option<String> {
                Some(String::new())
            }
            fn property(&self, _: &str) -> Option<String> {
                None
            }
        }
        assert_eq!(
            evaluate("#{systemEnvironment['H'] ?: 'x'}", &Empty).as_deref(),
            Some("x")
        );
        assert_eq!(
            evaluate("#{systemEnvironment['H']}", &Empty).as_deref(),
            Some("")
        );
    }

    #[test]
    fn other_expressions_unset_variables_and_unclosed_ones_stay_as_written() {
        let eval = |text: &str| evaluate(text, &Fixed);
        assert_eq!(eval("#{T(java.lang.Math).random()}"), None);
        assert_eq!(eval("#{systemProperties['jetty.host']}"), None);
        assert_eq!(eval("#{systemEnvironment['X'"), None);
        assert_eq!(eval("#{systemEnvironment[NOPE]}"), None);
        assert_eq!(
            eval("#{systemEnvironment['NOPE']}-#{systemEnvironment['HOST_IP']}").as_deref(),
            Some("#{systemEnvironment['NOPE']}-10.0.0.7")
        );
        assert!(matches!(
            expression("systemEnvironment['NOPE']", &Fixed),
            Err(SpelError::Unset { .. })
        ));
        assert!(matches!(
            expression("T(java.lang.Math).random()", &Fixed),
            Err(SpelError::Unsupported(_))
        ));
    }
}
