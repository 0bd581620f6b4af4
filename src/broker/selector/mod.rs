//! JMS message selectors (JMS 1.1 section 3.8.1: a subset of SQL-92 conditional expressions)
//! as Apache ActiveMQ 5.17 parses and evaluates them, for the STOMP `selector` header of
//! SUBSCRIBE. Protocol-free: a [`Selector`] is parsed once per subscription and evaluated per
//! delivered [`Message`] with [`Selector::matches`], without allocating for the common forms.
//!
//! What ActiveMQ does and we do too (see docs/selectors.md for the whole list):
//! - Message properties are the message's MQTT 5 user properties (a STOMP SEND's other headers),
//!   always strings. In a JMS selector a string compared with a number is false (not unknown);
//!   a selector starting with `convert_string_expressions:` converts the string to the number's
//!   type first, and ActiveMQ's STOMP connector puts that prefix in front of every STOMP
//!   selector: [`Selector::parse_stomp`] does the same, so `count > 5` selects `count:10`.
//! - The STOMP headers that become JMS headers in ActiveMQ (`priority`, `type`, `correlation-id`,
//!   `expires`, `persistent`, `reply-to`, ...) are not properties: they are read as
//!   `JMSPriority`, `JMSType`, `JMSCorrelationID`, `JMSExpiration`, `JMSDeliveryMode`,
//!   `JMSReplyTo`.
//! - Three-valued logic: a missing property is NULL, a comparison with NULL is unknown, `NOT
//!   unknown` is unknown, and only a true result selects.
//! - `NOT` binds tighter than comparisons (ActiveMQ's grammar; the JMS specification says the
//!   opposite): write `NOT (a = 1)`.
//! - `XPATH '...'` / `XQUERY '...'` (ActiveMQ extensions over XML bodies) are refused.

mod eval;
mod lexer;
mod like;
mod parser;
#[cfg(test)]
mod tests;

use std::fmt;

use crate::broker::message::Message;
use eval::{Arith, Ordering};
use like::LikePattern;

/// Longest selector accepted, in bytes (ActiveMQ has no limit; a STOMP header has to fit a
/// frame anyway).
pub const MAX_LEN: usize = 8 * 1024;

/// Deepest expression tree and deepest nesting of parentheses and unary operators accepted:
/// parsing, evaluating and dropping a selector recurse this deep at most.
pub const MAX_DEPTH: usize = 64;

/// What ActiveMQ's `convert_string_expressions:` prefix asks: string properties compared with
/// numbers or booleans are converted first.
const CONVERT_STRINGS_PREFIX: &str = "convert_string_expressions:";

/// A parsed selector. Cheap to evaluate; clone it or share it behind an `Arc`.
#[derive(Debug, Clone)]
pub struct Selector {
    text: Box<str>,
    expr: Expr,
    convert_strings: bool,
    /// Whether it reads `JMSMessageID` / `JMSDestination`: a caller builds those strings for
    /// [`DeliveryInfo`] only then.
    reads_message_id: bool,
    reads_destination: bool,
    reads_timestamp: bool,
}

/// Why a selector was refused: the 1-based column (in characters of the selector as given) and
/// what was wrong or expected, worded for a STOMP ERROR frame.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid selector at column {column}: {message}")]
pub struct SelectorError {
    pub column: usize,
    pub message: String,
}

/// What a delivery knows beyond the message itself, for the JMS headers a selector can read.
#[derive(Debug, Clone, Copy, Default)]
pub struct DeliveryInfo<'a> {
    /// Times this message was delivered to a consumer before (0 the first time):
    /// `JMSRedelivered` is `redelivery_count > 0`, `JMSXDeliveryCount` is this + 1.
    pub redelivery_count: u32,
    /// `JMSMessageID`: the `message-id` the MESSAGE frame carries; `None`: NULL.
    pub message_id: Option<&'a str>,
    /// `JMSTimestamp`: when the broker accepted the message, ms since the Unix epoch.
    pub timestamp_ms: u64,
    /// `JMSDestination` in ActiveMQ's form: `queue://orders`, `topic://a.b.c`; `None`: NULL.
    pub destination: Option<&'a str>,
}

impl Selector {
    /// Parse `text` (ActiveMQ 5.17's selector grammar, as `SelectorParser.parse`): a leading
    /// `convert_string_expressions:` turns string conversion on. Errors: too long
    /// ([`MAX_LEN`]), nested too deep ([`MAX_DEPTH`]), not a selector (with the column and what
    /// was expected; an empty text too), an expression ActiveMQ refuses when it builds it
    /// (`'a' > 'b'`, `x = NULL`, `TRUE = 1`, `IN` without a property on its left, a
    /// multi-character `ESCAPE`), `XPATH`/`XQUERY`.
    pub fn parse(text: &str) -> Result<Selector, SelectorError> {
        match text.strip_prefix(CONVERT_STRINGS_PREFIX) {
            Some(body) => Self::parse_body(text, body, true),
            None => Self::parse_body(text, text, false),
        }
    }

    /// Parse the `selector` header of a STOMP SUBSCRIBE as ActiveMQ's STOMP connector does: it
    /// puts `convert_string_expressions:` in front of every STOMP selector, so string
    /// properties (every STOMP header is one) compare with numbers and booleans by converting
    /// them (`count > 5` selects `count:10`). Errors as [`Selector::parse`], columns counted in
    /// the header's value.
    pub fn parse_stomp(text: &str) -> Result<Selector, SelectorError> {
        Self::parse_body(text, text, true)
    }

    fn parse_body(
        text: &str,
        body: &str,
        convert_strings: bool,
    ) -> Result<Selector, SelectorError> {
        if text.len() > MAX_LEN {
            return Err(SelectorError {
                column: 1,
                message: format!("the selector is longer than {MAX_LEN} bytes"),
            });
        }
        let offset = text.chars().count() - body.chars().count();
        let tokens = lexer::tokenize(body, offset)?;
        let expr = parser::Parser::new(tokens).selector()?;
        Ok(Selector {
            text: text.into(),
            reads_message_id: expr.reads(JmsHeader::MessageId),
            reads_destination: expr.reads(JmsHeader::Destination),
            reads_timestamp: expr.reads(JmsHeader::Timestamp)
                || expr.reads(JmsHeader::BrokerInTime),
            expr,
            convert_strings,
        })
    }

    /// Whether `message` is selected: the selector is true for it (false and unknown are not).
    /// An evaluation ActiveMQ abandons with an exception (arithmetic on a string) selects
    /// nothing, as there.
    pub fn matches(&self, message: &Message, info: &DeliveryInfo<'_>) -> bool {
        let context = eval::Context {
            message,
            info,
            convert_strings: self.convert_strings,
        };
        matches!(context.condition(&self.expr), Ok(Some(true)))
    }

    /// The selector as given.
    pub fn as_str(&self) -> &str {
        &self.text
    }

    /// Whether it reads `JMSMessageID`: otherwise [`DeliveryInfo::message_id`] may stay `None`.
    pub fn reads_message_id(&self) -> bool {
        self.reads_message_id
    }

    /// Whether it reads `JMSDestination`: otherwise [`DeliveryInfo::destination`] may stay
    /// `None`.
    pub fn reads_destination(&self) -> bool {
        self.reads_destination
    }

    /// Whether it reads the broker's timestamp (`JMSTimestamp`, `JMSActiveMQBrokerInTime`):
    /// otherwise [`DeliveryInfo::timestamp_ms`] may stay 0.
    pub fn reads_timestamp(&self) -> bool {
        self.reads_timestamp
    }
}

impl fmt::Display for Selector {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.text)
    }
}

/// The expression tree.
#[derive(Debug, Clone, PartialEq)]
enum Expr {
    Literal(Literal),
    Property(Property),
    /// A property used as a condition: true only when it is the boolean true.
    BoolCast(Property),
    Not(Box<Expr>),
    And(Vec<Expr>),
    Or(Vec<Expr>),
    Eq(Box<Expr>, Box<Expr>),
    IsNull(Box<Expr>),
    Compare(Ordering, Box<Expr>, Box<Expr>),
    Like(Box<Expr>, LikePattern),
    In {
        property: Property,
        list: Vec<Box<str>>,
        negated: bool,
    },
    Arith(Arith, Box<Expr>, Box<Expr>),
    Negate(Box<Expr>),
}

impl Expr {
    /// ActiveMQ's `BooleanExpression`: what yields true, false or unknown (TRUE, FALSE and NULL
    /// literals included).
    fn is_condition(&self) -> bool {
        match self {
            Expr::Literal(literal) => matches!(literal, Literal::Bool(_) | Literal::Null),
            Expr::Property(_) | Expr::Arith(..) | Expr::Negate(_) => false,
            _ => true,
        }
    }

    fn is_constant(&self) -> bool {
        matches!(self, Expr::Literal(_))
    }

    /// Whether `header` is read anywhere in the tree (recursion bounded by [`MAX_DEPTH`]).
    fn reads(&self, header: JmsHeader) -> bool {
        match self {
            Expr::Literal(_) => false,
            Expr::Property(p) | Expr::BoolCast(p) | Expr::In { property: p, .. } => {
                *p == Property::Header(header)
            }
            Expr::Not(e) | Expr::IsNull(e) | Expr::Negate(e) | Expr::Like(e, _) => e.reads(header),
            Expr::And(terms) | Expr::Or(terms) => terms.iter().any(|t| t.reads(header)),
            Expr::Eq(a, b) | Expr::Compare(_, a, b) | Expr::Arith(_, a, b) => {
                a.reads(header) || b.reads(header)
            }
        }
    }
}

#[derive(Debug, Clone, PartialEq)]
enum Literal {
    Null,
    Bool(bool),
    Int(i32),
    Long(i64),
    Double(f64),
    Str(Box<str>),
}

impl Literal {
    fn is_number(&self) -> bool {
        matches!(
            self,
            Literal::Int(_) | Literal::Long(_) | Literal::Double(_)
        )
    }
}

/// What an identifier reads.
#[derive(Debug, Clone, PartialEq)]
enum Property {
    Header(JmsHeader),
    User(Box<str>),
}

/// The JMS header identifiers ActiveMQ's `PropertyExpression` knows (case-sensitive), as its
/// STOMP support fills them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum JmsHeader {
    Destination,
    ReplyTo,
    Type,
    DeliveryMode,
    Priority,
    MessageId,
    Timestamp,
    CorrelationId,
    Expiration,
    Redelivered,
    DeliveryCount,
    GroupId,
    GroupSeq,
    UserId,
    ProducerTxId,
    BrokerInTime,
    BrokerOutTime,
}

impl JmsHeader {
    fn of(name: &str) -> Option<JmsHeader> {
        Some(match name {
            "JMSDestination" => JmsHeader::Destination,
            "JMSReplyTo" => JmsHeader::ReplyTo,
            "JMSType" => JmsHeader::Type,
            "JMSDeliveryMode" => JmsHeader::DeliveryMode,
            "JMSPriority" => JmsHeader::Priority,
            "JMSMessageID" => JmsHeader::MessageId,
            "JMSTimestamp" => JmsHeader::Timestamp,
            "JMSCorrelationID" => JmsHeader::CorrelationId,
            "JMSExpiration" => JmsHeader::Expiration,
            "JMSRedelivered" => JmsHeader::Redelivered,
            "JMSXDeliveryCount" => JmsHeader::DeliveryCount,
            "JMSXGroupID" => JmsHeader::GroupId,
            "JMSXGroupSeq" => JmsHeader::GroupSeq,
            "JMSXUserID" => JmsHeader::UserId,
            "JMSXProducerTXID" => JmsHeader::ProducerTxId,
            "JMSActiveMQBrokerInTime" => JmsHeader::BrokerInTime,
            "JMSActiveMQBrokerOutTime" => JmsHeader::BrokerOutTime,
            _ => return None,
        })
    }
}
