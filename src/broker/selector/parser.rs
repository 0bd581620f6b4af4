//! Tokens -> expression tree, with ActiveMQ 5.17's grammar (`SelectorParser.jj`) and its
//! construction-time checks (`ComparisonExpression`, `asBooleanExpression`).
//!
//! Precedence, loosest first: `OR`, `AND`, `=` `<>` `IS [NOT] NULL`, `>` `>=` `<` `<=` `[NOT]
//! LIKE` `[NOT] BETWEEN` `[NOT] IN`, `+` `-`, `*` `/` `%`, then the unary `+` `-` `NOT`. Note that
//! ActiveMQ parses `NOT` as a unary operator binding tighter than comparisons (`NOT a = 1` is
//! `(NOT a) = 1`), unlike the JMS specification; we do the same so that a selector selects the
//! same messages as on ActiveMQ.

use super::lexer::{Tok, Token};
use super::{Expr, JmsHeader, Literal, Property, SelectorError, MAX_DEPTH};
use crate::broker::selector::like::LikePattern;

/// An expression and the depth of its tree (bounded by [`MAX_DEPTH`] so that evaluating and
/// dropping it cannot exhaust the stack).
type Parsed = (Expr, usize);

pub(super) struct Parser {
    tokens: Vec<Token>,
    at: usize,
    /// Nesting of the recursive descent itself (parentheses, unary operators).
    nesting: usize,
}

impl Parser {
    pub fn new(tokens: Vec<Token>) -> Self {
        Parser {
            tokens,
            at: 0,
            nesting: 0,
        }
    }

    /// The whole selector: one condition, then the end.
    pub fn selector(mut self) -> Result<Expr, SelectorError> {
        let column = self.column();
        let expr = self.or()?;
        if self.peek() != &Tok::Eof {
            return Err(self.expected("an operator or the end of the selector"));
        }
        as_condition(expr, column).map(|(e, _)| e)
    }

    fn peek(&self) -> &Tok {
        self.tokens.get(self.at).map_or(&Tok::Eof, |t| &t.kind)
    }

    fn peek2(&self) -> &Tok {
        self.tokens.get(self.at + 1).map_or(&Tok::Eof, |t| &t.kind)
    }

    fn column(&self) -> usize {
        self.tokens
            .get(self.at)
            .or(self.tokens.last())
            .map_or(1, |t| t.column)
    }

    fn bump(&mut self) -> Tok {
        let tok = self.peek().clone();
        if self.at < self.tokens.len() {
            self.at += 1;
        }
        tok
    }

    fn eat(&mut self, tok: &Tok) -> bool {
        if self.peek() == tok {
            self.bump();
            true
        } else {
            false
        }
    }

    fn expected(&self, what: &str) -> SelectorError {
        SelectorError {
            column: self.column(),
            message: format!("expected {what}, found {}", self.peek().describe()),
        }
    }

    fn expect(&mut self, tok: &Tok, what: &str) -> Result<(), SelectorError> {
        if self.eat(tok) {
            Ok(())
        } else {
            Err(self.expected(what))
        }
    }

    fn or(&mut self) -> Result<Parsed, SelectorError> {
        let column = self.column();
        let first = self.and()?;
        if self.peek() != &Tok::Or {
            return Ok(first);
        }
        let mut depth = first.1;
        let mut terms = vec![as_condition(first, column)?.0];
        while self.peek() == &Tok::Or {
            self.bump();
            let column = self.column();
            let (term, d) = as_condition(self.and()?, column)?;
            depth = depth.max(d);
            terms.push(term);
        }
        deeper(Expr::Or(terms), depth, column)
    }

    fn and(&mut self) -> Result<Parsed, SelectorError> {
        let column = self.column();
        let first = self.equality()?;
        if self.peek() != &Tok::And {
            return Ok(first);
        }
        let mut depth = first.1;
        let mut terms = vec![as_condition(first, column)?.0];
        while self.peek() == &Tok::And {
            self.bump();
            let column = self.column();
            let (term, d) = as_condition(self.equality()?, column)?;
            depth = depth.max(d);
            terms.push(term);
        }
        deeper(Expr::And(terms), depth, column)
    }

    fn equality(&mut self) -> Result<Parsed, SelectorError> {
        let mut left = self.comparison()?;
        loop {
            let column = self.column();
            left = match self.peek() {
                Tok::Eq | Tok::Ne => {
                    let negated = self.bump() == Tok::Ne;
                    let right = self.comparison()?;
                    check_equal_operand(&left.0, column)?;
                    check_equal_operand(&right.0, column)?;
                    if left.0.is_constant()
                        && right.0.is_constant()
                        && left.0.is_condition()
                        && !right.0.is_condition()
                    {
                        return Err(SelectorError {
                            column,
                            message: "a boolean cannot be compared with a value of another type"
                                .into(),
                        });
                    }
                    let depth = left.1.max(right.1);
                    let eq = deeper(Expr::Eq(Box::new(left.0), Box::new(right.0)), depth, column)?;
                    if negated {
                        deeper(Expr::Not(Box::new(eq.0)), eq.1, column)?
                    } else {
                        eq
                    }
                }
                Tok::Is => {
                    self.bump();
                    let negated = self.eat(&Tok::Not);
                    self.expect(&Tok::Null, "NULL after IS")?;
                    let is_null = deeper(Expr::IsNull(Box::new(left.0)), left.1, column)?;
                    if negated {
                        deeper(Expr::Not(Box::new(is_null.0)), is_null.1, column)?
                    } else {
                        is_null
                    }
                }
                _ => return Ok(left),
            };
        }
    }

    fn comparison(&mut self) -> Result<Parsed, SelectorError> {
        let mut left = self.add()?;
        loop {
            let column = self.column();
            let negated = self.peek() == &Tok::Not
                && matches!(self.peek2(), Tok::Like | Tok::Between | Tok::In);
            if negated {
                self.bump();
            }
            left = match self.peek().clone() {
                op @ (Tok::Gt | Tok::Ge | Tok::Lt | Tok::Le) if !negated => {
                    self.bump();
                    let right = self.add()?;
                    let op = match op {
                        Tok::Gt => Ordering::Gt,
                        Tok::Ge => Ordering::Ge,
                        Tok::Lt => Ordering::Lt,
                        _ => Ordering::Le,
                    };
                    ordered(op, left, right, column)?
                }
                Tok::Like => {
                    self.bump();
                    let pattern = self.string_literal("a string pattern after LIKE")?;
                    let escape = if self.eat(&Tok::Escape) {
                        let escape = self.string_literal("a string after ESCAPE")?;
                        let mut chars = escape.chars();
                        match (chars.next(), chars.next()) {
                            (Some(c), None) => Some(c),
                            _ => {
                                return Err(SelectorError {
                                    column,
                                    message: format!(
                                        "the ESCAPE string must be one character, not '{escape}'"
                                    ),
                                })
                            }
                        }
                    } else {
                        None
                    };
                    let like = Expr::Like(Box::new(left.0), LikePattern::new(&pattern, escape));
                    let like = deeper(like, left.1, column)?;
                    negate_if(negated, like, column)?
                }
                Tok::Between => {
                    self.bump();
                    let low = self.add()?;
                    self.expect(&Tok::And, "AND in BETWEEN ... AND ...")?;
                    let high = self.add()?;
                    let value = left.clone();
                    if negated {
                        let below = ordered(Ordering::Lt, value, low, column)?;
                        let above = ordered(Ordering::Gt, left, high, column)?;
                        let depth = below.1.max(above.1);
                        deeper(Expr::Or(vec![below.0, above.0]), depth, column)?
                    } else {
                        let from = ordered(Ordering::Ge, value, low, column)?;
                        let to = ordered(Ordering::Le, left, high, column)?;
                        let depth = from.1.max(to.1);
                        deeper(Expr::And(vec![from.0, to.0]), depth, column)?
                    }
                }
                Tok::In => {
                    self.bump();
                    self.expect(&Tok::LParen, "( after IN")?;
                    let mut list = vec![self.string_literal("a string in the IN list")?.into()];
                    while self.eat(&Tok::Comma) {
                        list.push(self.string_literal("a string in the IN list")?.into());
                    }
                    self.expect(&Tok::RParen, ", or ) in the IN list")?;
                    let Expr::Property(property) = left.0 else {
                        return Err(SelectorError {
                            column,
                            message: "IN needs a property on its left".into(),
                        });
                    };
                    deeper(
                        Expr::In {
                            property,
                            list,
                            negated,
                        },
                        left.1,
                        column,
                    )?
                }
                _ if negated => return Err(self.expected("LIKE, BETWEEN or IN after NOT")),
                _ => return Ok(left),
            };
        }
    }

    fn add(&mut self) -> Result<Parsed, SelectorError> {
        let mut left = self.mult()?;
        loop {
            let column = self.column();
            let op = match self.peek() {
                Tok::Plus => Arith::Add,
                Tok::Minus => Arith::Sub,
                _ => return Ok(left),
            };
            self.bump();
            let right = self.mult()?;
            left = arith(op, left, right, column)?;
        }
    }

    fn mult(&mut self) -> Result<Parsed, SelectorError> {
        let mut left = self.unary()?;
        loop {
            let column = self.column();
            let op = match self.peek() {
                Tok::Star => Arith::Mul,
                Tok::Slash => Arith::Div,
                Tok::Percent => Arith::Mod,
                _ => return Ok(left),
            };
            self.bump();
            let right = self.unary()?;
            left = arith(op, left, right, column)?;
        }
    }

    fn unary(&mut self) -> Result<Parsed, SelectorError> {
        let column = self.column();
        self.nesting += 1;
        if self.nesting > MAX_DEPTH {
            return Err(too_deep(column));
        }
        let result = self.unary_inner(column);
        self.nesting -= 1;
        result
    }

    fn unary_inner(&mut self, column: usize) -> Result<Parsed, SelectorError> {
        match self.peek() {
            Tok::Plus => {
                self.bump();
                self.unary()
            }
            Tok::Minus => {
                self.bump();
                let (operand, depth) = self.unary()?;
                deeper(Expr::Negate(Box::new(operand)), depth, column)
            }
            Tok::Not => {
                self.bump();
                let operand_column = self.column();
                let (operand, depth) = as_condition(self.unary()?, operand_column)?;
                deeper(Expr::Not(Box::new(operand)), depth, column)
            }
            Tok::Xpath | Tok::Xquery => Err(SelectorError {
                column,
                message: "XPATH and XQUERY selectors (ActiveMQ's extension for XML bodies) are \
                          not supported"
                    .into(),
            }),
            Tok::LParen => {
                self.bump();
                let inner = self.or()?;
                self.expect(&Tok::RParen, ")")?;
                Ok(inner)
            }
            Tok::Id(_) => {
                let Tok::Id(name) = self.bump() else {
                    return Err(self.expected("an identifier"));
                };
                Ok((Expr::Property(Property::named(&name)), 1))
            }
            _ => {
                let literal = match self.peek().clone() {
                    Tok::Str(s) => Literal::Str(s.into()),
                    Tok::Int(v) => Literal::Int(v),
                    Tok::Long(v) => Literal::Long(v),
                    Tok::Float(v) => Literal::Double(v),
                    Tok::True => Literal::Bool(true),
                    Tok::False => Literal::Bool(false),
                    Tok::Null => Literal::Null,
                    _ => return Err(self.expected("a value, an identifier or (")),
                };
                self.bump();
                Ok((Expr::Literal(literal), 1))
            }
        }
    }

    fn string_literal(&mut self, what: &str) -> Result<String, SelectorError> {
        match self.peek() {
            Tok::Str(_) => match self.bump() {
                Tok::Str(s) => Ok(s),
                _ => Err(self.expected(what)),
            },
            _ => Err(self.expected(what)),
        }
    }
}

pub(super) use super::eval::{Arith, Ordering};

fn too_deep(column: usize) -> SelectorError {
    SelectorError {
        column,
        message: format!("the selector nests more than {MAX_DEPTH} levels"),
    }
}

/// `expr` one level above children `depth` deep, refused past [`MAX_DEPTH`].
fn deeper(expr: Expr, depth: usize, column: usize) -> Result<Parsed, SelectorError> {
    if depth + 1 > MAX_DEPTH {
        return Err(too_deep(column));
    }
    Ok((expr, depth + 1))
}

fn negate_if(negated: bool, parsed: Parsed, column: usize) -> Result<Parsed, SelectorError> {
    if negated {
        deeper(Expr::Not(Box::new(parsed.0)), parsed.1, column)
    } else {
        Ok(parsed)
    }
}

/// ActiveMQ's `asBooleanExpression`: a condition stays one, a property is read as a boolean,
/// anything else (a number, a string, arithmetic) is refused.
fn as_condition(parsed: Parsed, column: usize) -> Result<Parsed, SelectorError> {
    match parsed.0 {
        Expr::Property(property) => deeper(Expr::BoolCast(property), parsed.1, column),
        expr if expr.is_condition() => Ok((expr, parsed.1)),
        _ => Err(SelectorError {
            column,
            message: "expected a condition (a comparison, TRUE, FALSE or a property), found a \
                      value"
                .into(),
        }),
    }
}

/// ActiveMQ's `checkEqualOperand`: `= NULL` is refused (`IS NULL` is the way).
fn check_equal_operand(expr: &Expr, column: usize) -> Result<(), SelectorError> {
    if matches!(expr, Expr::Literal(Literal::Null)) {
        return Err(SelectorError {
            column,
            message: "NULL cannot be compared with = or <> (use IS NULL)".into(),
        });
    }
    Ok(())
}

/// ActiveMQ's `checkLessThanOperand`: only numbers, properties and arithmetic can be ordered.
fn ordered(
    op: Ordering,
    left: Parsed,
    right: Parsed,
    column: usize,
) -> Result<Parsed, SelectorError> {
    for side in [&left.0, &right.0] {
        let refused = match side {
            Expr::Literal(literal) => !literal.is_number(),
            other => other.is_condition(),
        };
        if refused {
            return Err(SelectorError {
                column,
                message: format!("only numbers can be compared with {}", op.symbol()),
            });
        }
    }
    let depth = left.1.max(right.1);
    deeper(
        Expr::Compare(op, Box::new(left.0), Box::new(right.0)),
        depth,
        column,
    )
}

fn arith(op: Arith, left: Parsed, right: Parsed, column: usize) -> Result<Parsed, SelectorError> {
    let depth = left.1.max(right.1);
    deeper(
        Expr::Arith(op, Box::new(left.0), Box::new(right.0)),
        depth,
        column,
    )
}

impl Property {
    /// The JMS header a name stands for, or a message property.
    fn named(name: &str) -> Property {
        match JmsHeader::of(name) {
            Some(header) => Property::Header(header),
            None => Property::User(name.into()),
        }
    }
}
