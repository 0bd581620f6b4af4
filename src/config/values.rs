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
    "write a whole number with an optional unit: b, k/kb, m/mb, g/gb (powers of 1024, \
     case-free), e.g. \"64 mb\"; a plain number is bytes";

/// Java's `\s` in ActiveMQ's size pattern: ASCII space, tab, line feed, vertical tab, form feed
/// and carriage return, nothing else (a no-break space is not a separator there).
fn is_java_space(c: char) -> bool {
    matches!(c, ' ' | '\t' | '\n' | '\u{b}' | '\u{c}' | '\r')
}

/// A size in bytes, as ActiveMQ 5.17's `MemoryPropertyEditor` reads it
/// (`XBeanByteConverterUtil.convertToLongBytes`: `^\s*(\d+)\s*(b|k(b)?|m(b)?|g(b)?)?\s*$`,
/// case-insensitive): ASCII digits, then an optional unit `b`, `k`/`kb`, `m`/`mb`, `g`/`gb`
/// (powers of 1024), with spaces (Java's `\s`) allowed around the unit. A plain number is
/// bytes. No sign, no fraction, no `t`/`tb`, no `MiB`: ActiveMQ refuses those too; the error's
/// hint then gives the same size in a unit it accepts (`64 MiB` -> `64 mb`, `1 tb` -> `1024 gb`).
/// Sizes above `i64::MAX` bytes are refused (ActiveMQ's `long` overflows silently there).
///
/// Errors: a [`ValueError`] naming the text, with what to write instead.
pub fn parse_size_bytes(text: &str) -> Result<u64, ValueError> {
    let trimmed = text.trim_matches(is_java_space);
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
    if let Some(fraction) = unit.strip_prefix(['.', ',']) {
        return Err(fractional_size(text, digits, fraction));
    }
    let unit = unit.trim_start_matches(is_java_space).to_ascii_lowercase();
    let multiplier: u64 = match unit.as_str() {
        "" | "b" => 1,
        "k" | "kb" => 1 << 10,
        "m" | "mb" => 1 << 20,
        "g" | "gb" => 1 << 30,
        other => {
            return Err(match accepted_spelling(digits, other) {
                Some(instead) => ValueError::new(
                    format!(
                        "`{text}` is not a size ActiveMQ reads: its units are b, kb, mb and gb \
                         (powers of 1024), not `{}`",
                        other.trim()
                    ),
                    format!("write \"{instead}\", the same size in a unit ActiveMQ reads"),
                ),
                None => ValueError::new(
                    format!("`{text}` is not a size: unknown unit `{other}`"),
                    SIZE_HINT,
                ),
            })
        }
    };
    digits
        .parse::<u64>()
        .ok()
        .and_then(|n| n.checked_mul(multiplier))
        .filter(|&bytes| i64::try_from(bytes).is_ok())
        .ok_or_else(|| {
            ValueError::new(
                format!("`{text}` is too large (more than {} bytes)", i64::MAX),
                SIZE_HINT,
            )
        })
}

/// The error for a size with a fraction (`1.5 gb`): ActiveMQ's pattern takes whole numbers
/// only. The hint gives the same size in a smaller unit when it is whole there
/// (`1.5 gb` -> `1536 mb`, `0.5 kb` -> `512 b`).
fn fractional_size(text: &str, whole: &str, rest: &str) -> ValueError {
    let fraction_end = rest
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(rest.len());
    let (fraction, unit) = rest.split_at(fraction_end);
    let unit = unit.trim_matches(is_java_space).to_ascii_lowercase();
    let shift = match unit.as_str() {
        "" | "b" => None,
        "k" | "kb" | "kib" => Some((10, ["b", "b"])),
        "m" | "mb" | "mib" => Some((20, ["kb", "b"])),
        "g" | "gb" | "gib" => Some((30, ["mb", "kb"])),
        _ => None,
    };
    let message = format!("`{text}` is not a size: ActiveMQ reads whole numbers only");
    let instead =
        shift.and_then(|(bits, smaller)| whole_in_smaller_unit(whole, fraction, bits, smaller));
    match instead {
        Some(instead) => ValueError::new(
            message,
            format!("write \"{instead}\", the same size as a whole number"),
        ),
        None => ValueError::new(message, SIZE_HINT),
    }
}

/// `whole.fraction` units of `2^bits` bytes as a whole number of the next smaller unit
/// (`smaller[0]`, 2^(bits-10) bytes) or the one below it (`smaller[1]`), if either is whole.
fn whole_in_smaller_unit(
    whole: &str,
    fraction: &str,
    bits: u32,
    smaller: [&str; 2],
) -> Option<String> {
    if fraction.is_empty() || fraction.len() > 18 {
        return None;
    }
    let whole: u128 = whole.parse().ok()?;
    let numerator: u128 = fraction.parse().ok()?;
    let denominator = 10u128.pow(u32::try_from(fraction.len()).ok()?);
    let scaled = whole.checked_mul(denominator)?.checked_add(numerator)?;
    let bytes_times_denominator = scaled.checked_mul(1u128 << bits)?;
    if bytes_times_denominator % denominator != 0 {
        return None;
    }
    let bytes = bytes_times_denominator / denominator;
    let steps = [
        (bits - 10, smaller[0]),
        (bits.saturating_sub(20), smaller[1]),
    ];
    steps
        .into_iter()
        .find(|&(step_bits, _)| bytes % (1u128 << step_bits) == 0)
        .map(|(step_bits, name)| format!("{} {name}", bytes >> step_bits))
}

/// The spelling ActiveMQ accepts for `digits` followed by a unit it does not read but which
/// names a power of 1024 (`MiB`, `tb`, `bytes`, `megabytes`); `None` for anything else, and
/// when the size in gigabytes would not fit.
fn accepted_spelling(digits: &str, unit: &str) -> Option<String> {
    let unit = unit.trim();
    let unit = unit.strip_suffix('s').unwrap_or(unit);
    let (shift, name) = match unit {
        "byte" => (0, "b"),
        "kib" | "kilobyte" | "kbyte" => (0, "kb"),
        "mib" | "megabyte" | "mbyte" => (0, "mb"),
        "gib" | "gigabyte" | "gbyte" => (0, "gb"),
        "t" | "tb" | "tib" | "terabyte" | "tbyte" => (10, "gb"),
        _ => return None,
    };
    let n = digits.parse::<u64>().ok()?.checked_mul(1 << shift)?;
    Some(format!("{n} {name}"))
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
            ("1G", 1 << 30),
            ("3 Gb", 3 << 30),
            ("\t64\n mB ", 64 << 20),
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
        for text in [
            "",
            "gb",
            "1.5 gb",
            "-1",
            "+1",
            "10 zb",
            "1 g b",
            "2t",
            "64\u{a0}mb",
            "\u{661}",
        ] {
            let err = parse_size_bytes(text).expect_err(text);
            assert!(err.message.contains(text), "{}", err.message);
        }
        let err = parse_size_bytes("99999999999 gb").expect_err("overflow");
        assert!(err.message.contains("too large"), "{}", err.message);
        // ActiveMQ reads a `long`: one byte more is refused.
        assert_eq!(parse_size_bytes("9223372036854775807"), Ok(i64::MAX as u64));
        assert!(parse_size_bytes("9223372036854775808").is_err());
    }

    /// What `check` prints (`64 mb`) is read back, and the spellings ActiveMQ refuses but
    /// that name a size (`64 MiB`, `1 tb`) are refused with the size in a unit it reads.
    #[test]
    fn sizes_in_units_activemq_refuses_are_translated_in_the_hint() {
        for (text, instead) in [
            ("64 MiB", "64 mb"),
            ("64MiB", "64 mb"),
            ("100 GiB", "100 gb"),
            ("512 KiB", "512 kb"),
            ("1 tb", "1024 gb"),
            ("2 TiB", "2048 gb"),
            ("2t", "2048 gb"),
            ("7 bytes", "7 b"),
            ("3 megabytes", "3 mb"),
        ] {
            let err = parse_size_bytes(text).expect_err(text);
            assert_eq!(
                err.hint,
                format!("write \"{instead}\", the same size in a unit ActiveMQ reads"),
                "{text}"
            );
            assert!(err.message.contains(text), "{}", err.message);
            assert!(parse_size_bytes(instead).is_ok(), "{instead}");
        }
    }

    /// ActiveMQ reads whole numbers only: a fraction is refused, with the same size written
    /// whole in a smaller unit when there is one.
    #[test]
    fn fractional_sizes_are_refused_with_a_whole_spelling() {
        for (text, instead) in [
            ("1.5 gb", Some("1536 mb")),
            ("1.5gb", Some("1536 mb")),
            ("0.5 GB", Some("512 mb")),
            ("2.25 m", Some("2304 kb")),
            ("0.5 kb", Some("512 b")),
            ("1,5 mb", Some("1536 kb")),
            ("1.0001 gb", None),
            ("1.5", None),
            ("1.5 b", None),
            ("1.5 tb", None),
            ("1. gb", None),
        ] {
            let err = parse_size_bytes(text).expect_err(text);
            assert!(
                err.message.contains("whole numbers only"),
                "{text}: {}",
                err.message
            );
            match instead {
                Some(instead) => {
                    assert_eq!(
                        err.hint,
                        format!("write \"{instead}\", the same size as a whole number"),
                        "{text}"
                    );
                    assert!(parse_size_bytes(instead).is_ok(), "{instead}");
                }
                None => assert_eq!(err.hint, SIZE_HINT, "{text}"),
            }
        }
        assert!(parse_size_bytes("99999999999999999999999.5 gb").is_err());
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
