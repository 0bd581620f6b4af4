//! Attribute values as ActiveMQ parses them: sizes (`"100 gb"`), millisecond durations,
//! booleans and comma lists. Each parser returns a [`ValueError`] whose message and hint are
//! ready to become a [`Diagnostic`] at the attribute's value span.

use super::diagnostic::{Diagnostic, Span};

/// Why a value could not be parsed; `message` names the value, `hint` says what is accepted.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{message}")]
pub struct ValueError {
    pub message: String,
    pub hint: String,
}

impl ValueError {
    fn new(message: impl Into<String>, hint: impl Into<String>) -> Self {
        ValueError {
            message: message.into(),
            hint: hint.into(),
        }
    }

    /// An error diagnostic at `span` (normally the attribute's `value_span`).
    pub fn into_diagnostic(self, span: Span) -> Diagnostic {
        Diagnostic::error(span, self.message).with_hint(self.hint)
    }
}

const SIZE_HINT: &str =
    "write a whole number with an optional unit: b, k/kb, m/mb, g/gb, t/tb (powers of 1024), e.g. \"64 mb\"";

/// A size in bytes, as ActiveMQ's memory property editor reads it: a whole number followed by
/// an optional unit `b`, `k`/`kb`, `m`/`mb`, `g`/`gb`, `t`/`tb` (powers of 1024), case-free,
/// spaces allowed around the unit. A plain number is bytes.
pub fn parse_size_bytes(text: &str) -> Result<u64, ValueError> {
    let trimmed = text.trim();
    let digits_end = trimmed
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(trimmed.len());
    let (digits, unit) = trimmed.split_at(digits_end);
    if digits.is_empty() {
        return Err(ValueError::new(
            format!("`{text}` is not a size"),
            SIZE_HINT,
        ));
    }
    let multiplier: u64 = match unit.trim().to_ascii_lowercase().as_str() {
        "" | "b" => 1,
        "k" | "kb" => 1 << 10,
        "m" | "mb" => 1 << 20,
        "g" | "gb" => 1 << 30,
        "t" | "tb" => 1 << 40,
        other => {
            return Err(ValueError::new(
                format!("`{text}` is not a size: unknown unit `{other}`"),
                SIZE_HINT,
            ))
        }
    };
    digits
        .parse::<u64>()
        .ok()
        .and_then(|n| n.checked_mul(multiplier))
        .ok_or_else(|| {
            ValueError::new(
                format!("`{text}` is too large (more than {} bytes)", u64::MAX),
                SIZE_HINT,
            )
        })
}

/// A duration in milliseconds, written as a whole number the way ActiveMQ's attributes
/// (`checkPeriod`, `transport.connectAttemptTimeout`) take it: Java `long` syntax, optional sign.
/// Negative values are returned as they are; each caller decides what `<= 0` means (ActiveMQ
/// often reads it as "off").
pub fn parse_duration_ms(text: &str) -> Result<i64, ValueError> {
    let trimmed = text.trim();
    let well_formed = {
        let unsigned = trimmed.strip_prefix(['+', '-']).unwrap_or(trimmed);
        !unsigned.is_empty() && unsigned.bytes().all(|b| b.is_ascii_digit())
    };
    if !well_formed {
        return Err(ValueError::new(
            format!("`{text}` is not a duration in milliseconds"),
            "write a whole number of milliseconds, e.g. \"30000\" for 30 seconds",
        ));
    }
    trimmed.parse::<i64>().map_err(|_| {
        ValueError::new(
            format!("`{text}` is out of range for a duration in milliseconds"),
            format!("the largest accepted value is {}", i64::MAX),
        )
    })
}

/// `true` or `false`, case-free. Anything else is an error: Java's `Boolean.parseBoolean` would
/// quietly read a typo such as `ture` as false, which is how a security option gets switched off.
pub fn parse_bool(text: &str) -> Result<bool, ValueError> {
    let trimmed = text.trim();
    if trimmed.eq_ignore_ascii_case("true") {
        Ok(true)
    } else if trimmed.eq_ignore_ascii_case("false") {
        Ok(false)
    } else {
        Err(ValueError::new(
            format!("`{text}` is not a boolean"),
            "write true or false",
        ))
    }
}

/// A comma-separated list (`groups="admins, users"`): items trimmed, empty items dropped. Never
/// fails: every string is a list.
pub fn parse_comma_list(text: &str) -> Vec<String> {
    text.split(',')
        .map(str::trim)
        .filter(|item| !item.is_empty())
        .map(str::to_owned)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_in_every_spelling() {
        let cases = [
            ("100 gb", 100 << 30),
            ("32mb", 32 << 20),
            ("64 MB", 64 << 20),
            ("1k", 1024),
            ("1 KB", 1024),
            ("2t", 2 << 40),
            ("7", 7),
            ("7b", 7),
            ("  5 m  ", 5 << 20),
            ("0", 0),
        ];
        for (text, bytes) in cases {
            assert_eq!(parse_size_bytes(text), Ok(bytes), "{text}");
        }
    }

    #[test]
    fn bad_sizes_say_why() {
        for text in ["", "gb", "1.5 gb", "-1", "10 zb", "1 g b"] {
            let err = parse_size_bytes(text).expect_err(text);
            assert!(err.message.contains(text), "{}", err.message);
        }
        let err = parse_size_bytes("99999999999 tb").expect_err("overflow");
        assert!(err.message.contains("too large"), "{}", err.message);
    }

    #[test]
    fn durations_are_java_longs() {
        assert_eq!(parse_duration_ms("1000"), Ok(1000));
        assert_eq!(parse_duration_ms(" -1 "), Ok(-1));
        assert_eq!(parse_duration_ms("+5"), Ok(5));
        for text in ["", "5s", "1.5", "-", "ten"] {
            assert!(parse_duration_ms(text).is_err(), "{text}");
        }
        let err = parse_duration_ms("99999999999999999999").expect_err("overflow");
        assert!(err.message.contains("out of range"), "{}", err.message);
    }

    #[test]
    fn booleans_are_strict() {
        assert_eq!(parse_bool("true"), Ok(true));
        assert_eq!(parse_bool(" FALSE "), Ok(false));
        assert_eq!(parse_bool("True"), Ok(true));
        for text in ["yes", "1", "ture", "", "on"] {
            let err = parse_bool(text).expect_err(text);
            assert_eq!(err.hint, "write true or false");
        }
    }

    #[test]
    fn comma_lists_drop_empty_items() {
        assert_eq!(parse_comma_list(" a, b ,,c ,"), vec!["a", "b", "c"]);
        assert!(parse_comma_list(" , ").is_empty());
    }

    #[test]
    fn errors_become_diagnostics_at_the_value() {
        let span = Span::new(std::sync::Arc::new("x.xml".into()), 3, 7);
        let diagnostic = parse_bool("maybe")
            .expect_err("not a bool")
            .into_diagnostic(span.clone());
        assert_eq!(diagnostic.span, Some(span));
        assert_eq!(diagnostic.hint.as_deref(), Some("write true or false"));
    }
}
