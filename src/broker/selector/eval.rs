//! Evaluating a selector against one message, with ActiveMQ 5.17's value rules
//! (`org.apache.activemq.filter`): Java `int`/`long`/`double` arithmetic, comparisons that are
//! false (not unknown) across types, SQL three-valued logic. Strings are borrowed from the
//! message and the selector; only `+` on a string and a few JMS headers build one.

use std::borrow::Cow;
use std::cmp::Ordering as Cmp;
use std::time::Instant;

use super::{DeliveryInfo, Expr, JmsHeader, Literal, Property};
use crate::broker::durability::now_ms;
use crate::broker::message::Message;
use crate::protocol::QoS;

/// The ordering comparisons.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Ordering {
    Gt,
    Ge,
    Lt,
    Le,
}

impl Ordering {
    pub fn symbol(self) -> &'static str {
        match self {
            Ordering::Gt => ">",
            Ordering::Ge => ">=",
            Ordering::Lt => "<",
            Ordering::Le => "<=",
        }
    }

    fn holds(self, cmp: Cmp) -> bool {
        match self {
            Ordering::Gt => cmp == Cmp::Greater,
            Ordering::Ge => cmp != Cmp::Less,
            Ordering::Lt => cmp == Cmp::Less,
            Ordering::Le => cmp != Cmp::Greater,
        }
    }
}

/// The arithmetic operators.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Arith {
    Add,
    Sub,
    Mul,
    Div,
    Mod,
}

/// A value during evaluation, typed as ActiveMQ types it.
#[derive(Debug, Clone, PartialEq)]
pub(super) enum Value<'a> {
    Null,
    Bool(bool),
    Int(i32),
    Long(i64),
    Double(f64),
    Str(Cow<'a, str>),
}

/// ActiveMQ gave up on the evaluation with an exception (arithmetic on a string or a
/// boolean): the message is not selected.
#[derive(Debug)]
pub(super) struct Abandon;

type Eval<T> = Result<T, Abandon>;

/// STOMP headers that ActiveMQ turns into JMS headers or drops, so they are no message
/// properties there (names with `-` cannot be identifiers anyway).
const NOT_PROPERTIES: [&str; 11] = [
    "destination",
    "expires",
    "timestamp",
    "priority",
    "type",
    "persistent",
    "receipt",
    "redelivered",
    "subscription",
    "transaction",
    "JMSXUserID",
];

pub(super) struct Context<'a> {
    pub message: &'a Message,
    pub info: &'a DeliveryInfo<'a>,
    pub convert_strings: bool,
}

impl<'a> Context<'a> {
    /// True, false or unknown (`None`).
    pub fn condition(&self, expr: &'a Expr) -> Eval<Option<bool>> {
        Ok(match expr {
            Expr::Literal(Literal::Bool(b)) => Some(*b),
            Expr::BoolCast(property) => match self.property(property) {
                Value::Null => None,
                Value::Bool(b) => Some(b),
                _ => Some(false),
            },
            Expr::Not(inner) => self.condition(inner)?.map(|b| !b),
            Expr::And(terms) => {
                let mut unknown = false;
                for term in terms {
                    match self.condition(term)? {
                        Some(false) => return Ok(Some(false)),
                        None => unknown = true,
                        Some(true) => {}
                    }
                }
                (!unknown).then_some(true)
            }
            Expr::Or(terms) => {
                let mut unknown = false;
                for term in terms {
                    match self.condition(term)? {
                        Some(true) => return Ok(Some(true)),
                        None => unknown = true,
                        Some(false) => {}
                    }
                }
                (!unknown).then_some(false)
            }
            Expr::Eq(left, right) => {
                let (lv, rv) = (self.value(left)?, self.value(right)?);
                match (&lv, &rv) {
                    (Value::Null, Value::Null) => Some(true),
                    // ActiveMQ: unknown when the left side is missing, false when the right is.
                    (Value::Null, _) => None,
                    (_, Value::Null) => Some(false),
                    _ => Some(self.compare(&lv, &rv)? == Some(Cmp::Equal)),
                }
            }
            Expr::IsNull(inner) => Some(self.value(inner)? == Value::Null),
            Expr::Compare(op, left, right) => {
                let lv = self.value(left)?;
                if lv == Value::Null {
                    return Ok(None);
                }
                let rv = self.value(right)?;
                if rv == Value::Null {
                    return Ok(None);
                }
                Some(self.compare(&lv, &rv)?.is_some_and(|cmp| op.holds(cmp)))
            }
            Expr::Like(inner, pattern) => match self.value(inner)? {
                Value::Null => None,
                Value::Str(text) => Some(pattern.matches(&text)),
                _ => Some(false),
            },
            Expr::In {
                property,
                list,
                negated,
            } => match self.property(property) {
                Value::Str(text) => Some(list.iter().any(|s| **s == *text) != *negated),
                _ => None,
            },
            other => match self.value(other)? {
                Value::Null => None,
                Value::Bool(b) => Some(b),
                _ => Some(false),
            },
        })
    }

    /// The value of `expr`.
    fn value(&self, expr: &'a Expr) -> Eval<Value<'a>> {
        Ok(match expr {
            Expr::Literal(literal) => match literal {
                Literal::Null => Value::Null,
                Literal::Bool(b) => Value::Bool(*b),
                Literal::Int(v) => Value::Int(*v),
                Literal::Long(v) => Value::Long(*v),
                Literal::Double(v) => Value::Double(*v),
                Literal::Str(s) => Value::Str(Cow::Borrowed(s)),
            },
            Expr::Property(property) => self.property(property),
            Expr::Arith(op, left, right) => {
                let lv = self.value(left)?;
                if lv == Value::Null {
                    return Ok(Value::Null);
                }
                let rv = self.value(right)?;
                if rv == Value::Null {
                    return Ok(Value::Null);
                }
                arithmetic(*op, lv, rv)?
            }
            Expr::Negate(inner) => match self.value(inner)? {
                Value::Int(v) => Value::Int(v.wrapping_neg()),
                Value::Long(v) => Value::Long(v.wrapping_neg()),
                Value::Double(v) => Value::Double(-v),
                _ => Value::Null,
            },
            condition => match self.condition(condition)? {
                Some(b) => Value::Bool(b),
                None => Value::Null,
            },
        })
    }

    /// ActiveMQ's `ComparisonExpression.compare`: the order of two non-NULL values after
    /// widening numbers; `None` (the comparison is false) when the types differ otherwise,
    /// unless strings are converted (`convert_string_expressions:`), where a string that does not
    /// parse is `None` too.
    fn compare(&self, lv: &Value<'_>, rv: &Value<'_>) -> Eval<Option<Cmp>> {
        use Value::{Bool, Double, Int, Long, Str};
        let convert = self.convert_strings;
        Ok(match (lv, rv) {
            (Bool(a), Bool(b)) => Some(a.cmp(b)),
            (Int(a), Int(b)) => Some(a.cmp(b)),
            (Long(a), Long(b)) => Some(a.cmp(b)),
            (Double(a), Double(b)) => Some(java_double_cmp(*a, *b)),
            (Str(a), Str(b)) if a == b => Some(Cmp::Equal),
            (Str(a), Str(b)) => Some(a.encode_utf16().cmp(b.encode_utf16())),
            (Int(a), Long(b)) => Some(i64::from(*a).cmp(b)),
            (Long(a), Int(b)) => Some(a.cmp(&i64::from(*b))),
            (Int(a), Double(b)) => Some(java_double_cmp(f64::from(*a), *b)),
            (Double(a), Int(b)) => Some(java_double_cmp(*a, f64::from(*b))),
            (Long(a), Double(b)) => Some(java_double_cmp(*a as f64, *b)),
            (Double(a), Long(b)) => Some(java_double_cmp(*a, *b as f64)),
            // ActiveMQ casts the boolean to a string here and fails.
            (Bool(_), Str(_)) if convert => return Err(Abandon),
            (Int(a), Str(b)) if convert => b.parse::<i32>().ok().map(|b| a.cmp(&b)),
            (Long(a), Str(b)) if convert => b.parse::<i64>().ok().map(|b| a.cmp(&b)),
            (Double(a), Str(b)) if convert => java_parse_double(b).map(|b| java_double_cmp(*a, b)),
            (Str(a), Bool(b)) if convert => Some(a.eq_ignore_ascii_case("true").cmp(b)),
            (Str(a), Int(b)) if convert => a.parse::<i32>().ok().map(|a| a.cmp(b)),
            (Str(a), Long(b)) if convert => a.parse::<i64>().ok().map(|a| a.cmp(b)),
            (Str(a), Double(b)) if convert => java_parse_double(a).map(|a| java_double_cmp(a, *b)),
            _ => None,
        })
    }

    fn user_property(&self, name: &str) -> Option<&'a str> {
        let v5 = self.message.v5.as_deref()?;
        v5.properties
            .user_properties
            .iter()
            .find(|(key, _)| key == name)
            .map(|(_, value)| value.as_str())
    }

    fn property(&self, property: &'a Property) -> Value<'a> {
        let header = match property {
            Property::User(name) => {
                if NOT_PROPERTIES.contains(&&**name) {
                    return Value::Null;
                }
                return self
                    .user_property(name)
                    .map_or(Value::Null, |v| Value::Str(Cow::Borrowed(v)));
            }
            Property::Header(header) => *header,
        };
        let text = |value: Option<&'a str>| value.map_or(Value::Null, |v| Value::Str(v.into()));
        let v5 = self.message.v5.as_deref();
        let info = self.info;
        match header {
            JmsHeader::Destination => text(info.destination),
            JmsHeader::ReplyTo => v5
                .and_then(|v5| v5.properties.response_topic.as_deref())
                .map_or(Value::Null, |reply| Value::Str(jms_destination(reply))),
            JmsHeader::Type => text(self.user_property("type")),
            JmsHeader::DeliveryMode => {
                Value::Str(Cow::Borrowed(if self.message.qos == QoS::AtMostOnce {
                    "NON_PERSISTENT"
                } else {
                    "PERSISTENT"
                }))
            }
            JmsHeader::Priority => Value::Int(
                self.user_property("priority")
                    .and_then(|p| p.trim().parse::<i32>().ok())
                    .filter(|p| (0..=9).contains(p))
                    .unwrap_or(4),
            ),
            JmsHeader::MessageId => text(info.message_id),
            // A STOMP SEND may set the timestamp itself (ActiveMQ's `timestamp` header).
            JmsHeader::Timestamp => match self.user_property("timestamp").map(str::parse) {
                Some(Ok(sent)) => Value::Long(sent),
                _ => Value::Long(i64::try_from(info.timestamp_ms).unwrap_or(i64::MAX)),
            },
            JmsHeader::BrokerInTime => {
                Value::Long(i64::try_from(info.timestamp_ms).unwrap_or(i64::MAX))
            }
            JmsHeader::BrokerOutTime => Value::Long(0),
            JmsHeader::CorrelationId => text(
                v5.and_then(|v5| v5.properties.correlation_data.as_deref())
                    .and_then(|data| std::str::from_utf8(data).ok()),
            ),
            JmsHeader::Expiration => Value::Long(self.expiration_ms()),
            JmsHeader::Redelivered => Value::Bool(info.redelivery_count > 0),
            JmsHeader::DeliveryCount => Value::Int(
                i32::try_from(info.redelivery_count)
                    .unwrap_or(i32::MAX)
                    .saturating_add(1),
            ),
            JmsHeader::GroupId => text(self.user_property("JMSXGroupID")),
            JmsHeader::GroupSeq => Value::Int(
                self.user_property("JMSXGroupSeq")
                    .and_then(|s| s.parse().ok())
                    .unwrap_or(0),
            ),
            JmsHeader::UserId | JmsHeader::ProducerTxId => Value::Null,
        }
    }

    /// `JMSExpiration`: the STOMP `expires` header as sent, else the message's expiry as ms
    /// since the epoch, else 0 (never).
    fn expiration_ms(&self) -> i64 {
        if let Some(expires) = self.user_property("expires").and_then(|e| e.parse().ok()) {
            return expires;
        }
        let Some(at) = self.message.v5.as_deref().and_then(|v5| v5.expires_at) else {
            return 0;
        };
        let now = Instant::now();
        let ms = if at >= now {
            now_ms().saturating_add(u64::try_from((at - now).as_millis()).unwrap_or(u64::MAX))
        } else {
            now_ms().saturating_sub(u64::try_from((now - at).as_millis()).unwrap_or(u64::MAX))
        };
        i64::try_from(ms).unwrap_or(i64::MAX)
    }
}

/// A STOMP destination as ActiveMQ prints one: `/queue/a` -> `queue://a`, `/topic/a.b` ->
/// `topic://a.b`, temporary ones alike; anything else as written.
fn jms_destination(stomp: &str) -> Cow<'_, str> {
    for kind in ["queue", "topic", "temp-queue", "temp-topic"] {
        if let Some(name) = stomp
            .strip_prefix('/')
            .and_then(|s| s.strip_prefix(kind))
            .and_then(|s| s.strip_prefix('/'))
        {
            return Cow::Owned(format!("{kind}://{name}"));
        }
    }
    Cow::Borrowed(stomp)
}

/// ActiveMQ's `ArithmeticExpression`: `+` on a string appends the other value as Java prints
/// it; `int` with `int` stays `int` (wrapping), with a `long` becomes `long`, with a `double`
/// `double`; `/` and `%` always compute in `double`. Anything else abandons the evaluation.
fn arithmetic<'a>(op: Arith, lv: Value<'a>, rv: Value<'a>) -> Eval<Value<'a>> {
    if op == Arith::Add {
        if let Value::Str(text) = &lv {
            return Ok(Value::Str(Cow::Owned(format!(
                "{text}{}",
                java_string(&rv)
            ))));
        }
    }
    let (a, b) = (Number::of(&lv)?, Number::of(&rv)?);
    if matches!(op, Arith::Div | Arith::Mod) {
        let (a, b) = (a.as_f64(), b.as_f64());
        return Ok(Value::Double(if op == Arith::Div { a / b } else { a % b }));
    }
    Ok(match (a, b) {
        (Number::Int(a), Number::Int(b)) => Value::Int(match op {
            Arith::Add => a.wrapping_add(b),
            Arith::Sub => a.wrapping_sub(b),
            _ => a.wrapping_mul(b),
        }),
        (Number::Double(_), _) | (_, Number::Double(_)) => {
            let (a, b) = (a.as_f64(), b.as_f64());
            Value::Double(match op {
                Arith::Add => a + b,
                Arith::Sub => a - b,
                _ => a * b,
            })
        }
        _ => {
            let (a, b) = (a.as_i64(), b.as_i64());
            Value::Long(match op {
                Arith::Add => a.wrapping_add(b),
                Arith::Sub => a.wrapping_sub(b),
                _ => a.wrapping_mul(b),
            })
        }
    })
}

#[derive(Clone, Copy)]
enum Number {
    Int(i32),
    Long(i64),
    Double(f64),
}

impl Number {
    fn of(value: &Value<'_>) -> Eval<Number> {
        match value {
            Value::Int(v) => Ok(Number::Int(*v)),
            Value::Long(v) => Ok(Number::Long(*v)),
            Value::Double(v) => Ok(Number::Double(*v)),
            _ => Err(Abandon),
        }
    }

    fn as_f64(self) -> f64 {
        match self {
            Number::Int(v) => f64::from(v),
            Number::Long(v) => v as f64,
            Number::Double(v) => v,
        }
    }

    fn as_i64(self) -> i64 {
        match self {
            Number::Int(v) => i64::from(v),
            Number::Long(v) => v,
            // Not reached: doubles are handled before.
            Number::Double(v) => v as i64,
        }
    }
}

/// Java's `Double.compare`: -0.0 below 0.0, NaN above everything and equal to itself.
fn java_double_cmp(a: f64, b: f64) -> Cmp {
    match a.partial_cmp(&b) {
        Some(Cmp::Equal) | None => {
            let bits = |v: f64| {
                if v.is_nan() {
                    0x7ff8_0000_0000_0000_i64
                } else {
                    v.to_bits() as i64
                }
            };
            bits(a).cmp(&bits(b))
        }
        Some(order) => order,
    }
}

/// Java's `Double.valueOf(String)` for the forms it takes: surrounding whitespace, a trailing
/// `f`/`d`, `NaN`, `Infinity`, and decimal numbers with an exponent.
fn java_parse_double(text: &str) -> Option<f64> {
    let text = text.trim_matches(|c: char| c <= ' ');
    let unsigned = text.trim_start_matches(['+', '-']);
    if unsigned == "NaN" {
        return (unsigned.len() == text.len()).then_some(f64::NAN);
    }
    if unsigned == "Infinity" {
        return text.parse::<f64>().ok();
    }
    let body = text.strip_suffix(['f', 'F', 'd', 'D']).unwrap_or(text);
    if body
        .chars()
        .any(|c| c.is_ascii_alphabetic() && c != 'e' && c != 'E')
    {
        return None;
    }
    body.parse().ok()
}

/// A value as Java's `String.valueOf` prints it (for `string + value`).
fn java_string(value: &Value<'_>) -> String {
    match value {
        Value::Null => "null".into(),
        Value::Bool(b) => b.to_string(),
        Value::Int(v) => v.to_string(),
        Value::Long(v) => v.to_string(),
        Value::Str(s) => s.to_string(),
        Value::Double(v) => java_double_string(*v),
    }
}

/// Java's `Double.toString`: `1.0`, `0.5`, `1.0E7`, `1.5E-4`, `NaN`, `Infinity`.
fn java_double_string(v: f64) -> String {
    if v.is_nan() {
        return "NaN".into();
    }
    if v.is_infinite() {
        return if v > 0.0 { "Infinity" } else { "-Infinity" }.into();
    }
    let magnitude = v.abs();
    if magnitude == 0.0 || (1e-3..1e7).contains(&magnitude) {
        let plain = format!("{v}");
        return if plain.contains('.') {
            plain
        } else {
            format!("{plain}.0")
        };
    }
    let scientific = format!("{v:e}");
    let (mantissa, exponent) = scientific.split_once('e').unwrap_or((&scientific, "0"));
    let mantissa = if mantissa.contains('.') {
        mantissa.to_string()
    } else {
        format!("{mantissa}.0")
    };
    format!("{mantissa}E{exponent}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn java_number_printing_and_parsing() {
        assert_eq!(java_double_string(1.0), "1.0");
        assert_eq!(java_double_string(0.5), "0.5");
        assert_eq!(java_double_string(1e7), "1.0E7");
        assert_eq!(java_double_string(1.5e-4), "1.5E-4");
        assert_eq!(java_double_string(-0.0), "-0.0");
        assert_eq!(java_parse_double(" 2.5 "), Some(2.5));
        assert_eq!(java_parse_double("2.5f"), Some(2.5));
        assert_eq!(java_parse_double("inf"), None);
        assert!(java_parse_double("NaN").is_some_and(f64::is_nan));
        assert_eq!(java_parse_double("-Infinity"), Some(f64::NEG_INFINITY));
    }

    #[test]
    fn java_double_order() {
        assert_eq!(java_double_cmp(-0.0, 0.0), Cmp::Less);
        assert_eq!(java_double_cmp(f64::NAN, f64::NAN), Cmp::Equal);
        assert_eq!(java_double_cmp(f64::NAN, f64::INFINITY), Cmp::Greater);
        assert_eq!(java_double_cmp(1.0, 2.0), Cmp::Less);
    }

    #[test]
    fn destinations_in_activemq_form() {
        assert_eq!(jms_destination("/queue/replies"), "queue://replies");
        assert_eq!(jms_destination("/temp-queue/r1"), "temp-queue://r1");
        assert_eq!(jms_destination("/topic/a.b"), "topic://a.b");
        assert_eq!(jms_destination("a/b"), "a/b");
    }
}
