//! Selector text -> tokens, as ActiveMQ 5.17's `SelectorParser.jj` tokenizes it: keywords and
//! identifiers are ASCII and case-insensitive (`[a-zA-Z_$][a-zA-Z0-9_$]*`), string literals are
//! single-quoted with `''` for a quote, numbers are decimal (optional `L`), hex (`0x..`), octal
//! (`0..`) or floating point, and `-- ...` line comments and `/* ... */` block comments are
//! skipped like whitespace (` `, tab, CR, LF, form feed).

use super::SelectorError;

/// One token and the 1-based column (in characters) where it starts.
#[derive(Debug, Clone, PartialEq)]
pub(super) struct Token {
    pub kind: Tok,
    pub column: usize,
}

#[derive(Debug, Clone, PartialEq)]
pub(super) enum Tok {
    Not,
    And,
    Or,
    Between,
    Like,
    Escape,
    In,
    Is,
    True,
    False,
    Null,
    Xpath,
    Xquery,
    /// A decimal, hex or octal literal that fits a Java `int`.
    Int(i32),
    /// A decimal, hex or octal literal that needs a Java `long`.
    Long(i64),
    Float(f64),
    Str(String),
    Id(String),
    Eq,
    Ne,
    Gt,
    Ge,
    Lt,
    Le,
    LParen,
    Comma,
    RParen,
    Plus,
    Minus,
    Star,
    Slash,
    Percent,
    Eof,
}

impl Tok {
    /// How a token is named in an error message.
    pub fn describe(&self) -> String {
        match self {
            Tok::Int(v) => format!("number {v}"),
            Tok::Long(v) => format!("number {v}"),
            Tok::Float(v) => format!("number {v}"),
            Tok::Str(s) => format!("string '{s}'"),
            Tok::Id(s) => format!("identifier {s}"),
            Tok::Eof => "the end of the selector".to_string(),
            other => format!("'{}'", other.symbol()),
        }
    }

    fn symbol(&self) -> &'static str {
        match self {
            Tok::Not => "NOT",
            Tok::And => "AND",
            Tok::Or => "OR",
            Tok::Between => "BETWEEN",
            Tok::Like => "LIKE",
            Tok::Escape => "ESCAPE",
            Tok::In => "IN",
            Tok::Is => "IS",
            Tok::True => "TRUE",
            Tok::False => "FALSE",
            Tok::Null => "NULL",
            Tok::Xpath => "XPATH",
            Tok::Xquery => "XQUERY",
            Tok::Eq => "=",
            Tok::Ne => "<>",
            Tok::Gt => ">",
            Tok::Ge => ">=",
            Tok::Lt => "<",
            Tok::Le => "<=",
            Tok::LParen => "(",
            Tok::Comma => ",",
            Tok::RParen => ")",
            Tok::Plus => "+",
            Tok::Minus => "-",
            Tok::Star => "*",
            Tok::Slash => "/",
            Tok::Percent => "%",
            _ => "?",
        }
    }
}

/// The tokens of `text`, ending with [`Tok::Eof`]; columns are counted from `column_offset + 1`
/// (the length of a prefix the caller removed). Errors: a character no token starts with, an
/// unterminated string or comment, a number out of range.
pub(super) fn tokenize(text: &str, column_offset: usize) -> Result<Vec<Token>, SelectorError> {
    let chars: Vec<char> = text.chars().collect();
    let mut tokens = Vec::new();
    let mut i = 0;
    let err = |at: usize, message: String| SelectorError {
        column: column_offset + at + 1,
        message,
    };
    while i < chars.len() {
        let c = chars[i];
        let start = i;
        if matches!(c, ' ' | '\t' | '\n' | '\r' | '\u{c}') {
            i += 1;
            continue;
        }
        if c == '-' && chars.get(i + 1) == Some(&'-') {
            // ActiveMQ's grammar wants the line comment ended by a line break.
            match chars[i..].iter().position(|&c| c == '\n' || c == '\r') {
                Some(end) => i += end + 1,
                None => return Err(err(start, "line comment not ended by a line break".into())),
            }
            continue;
        }
        if c == '/' && chars.get(i + 1) == Some(&'*') {
            let body = &chars[i + 2..];
            match body.windows(2).position(|w| w == ['*', '/']) {
                Some(end) => i += 2 + end + 2,
                None => return Err(err(start, "unterminated comment (no */)".into())),
            }
            continue;
        }
        let kind = match c {
            '\'' => {
                let mut value = String::new();
                i += 1;
                loop {
                    match chars.get(i) {
                        None => return Err(err(start, "unterminated string literal".into())),
                        Some('\'') if chars.get(i + 1) == Some(&'\'') => {
                            value.push('\'');
                            i += 2;
                        }
                        Some('\'') => {
                            i += 1;
                            break;
                        }
                        Some(&other) => {
                            value.push(other);
                            i += 1;
                        }
                    }
                }
                Tok::Str(value)
            }
            '0'..='9' | '.' => {
                let (tok, end) = number(&chars, i).map_err(|m| err(start, m))?;
                i = end;
                tok
            }
            c if c.is_ascii_alphabetic() || c == '_' || c == '$' => {
                let end = chars[i..]
                    .iter()
                    .position(|&c| !(c.is_ascii_alphanumeric() || c == '_' || c == '$'))
                    .map_or(chars.len(), |n| i + n);
                let word: String = chars[i..end].iter().collect();
                i = end;
                keyword(&word).unwrap_or(Tok::Id(word))
            }
            _ => {
                let two = chars.get(i + 1).copied();
                let (tok, len) = match (c, two) {
                    ('<', Some('>')) => (Tok::Ne, 2),
                    ('<', Some('=')) => (Tok::Le, 2),
                    ('>', Some('=')) => (Tok::Ge, 2),
                    ('<', _) => (Tok::Lt, 1),
                    ('>', _) => (Tok::Gt, 1),
                    ('=', _) => (Tok::Eq, 1),
                    ('(', _) => (Tok::LParen, 1),
                    (')', _) => (Tok::RParen, 1),
                    (',', _) => (Tok::Comma, 1),
                    ('+', _) => (Tok::Plus, 1),
                    ('-', _) => (Tok::Minus, 1),
                    ('*', _) => (Tok::Star, 1),
                    ('/', _) => (Tok::Slash, 1),
                    ('%', _) => (Tok::Percent, 1),
                    _ => return Err(err(start, format!("unexpected character {c:?}"))),
                };
                i += len;
                tok
            }
        };
        tokens.push(Token {
            kind,
            column: column_offset + start + 1,
        });
    }
    tokens.push(Token {
        kind: Tok::Eof,
        column: column_offset + chars.len() + 1,
    });
    Ok(tokens)
}

fn keyword(word: &str) -> Option<Tok> {
    const KEYWORDS: [(&str, Tok); 13] = [
        ("NOT", Tok::Not),
        ("AND", Tok::And),
        ("OR", Tok::Or),
        ("BETWEEN", Tok::Between),
        ("LIKE", Tok::Like),
        ("ESCAPE", Tok::Escape),
        ("IN", Tok::In),
        ("IS", Tok::Is),
        ("TRUE", Tok::True),
        ("FALSE", Tok::False),
        ("NULL", Tok::Null),
        ("XPATH", Tok::Xpath),
        ("XQUERY", Tok::Xquery),
    ];
    KEYWORDS
        .iter()
        .find(|(name, _)| name.eq_ignore_ascii_case(word))
        .map(|(_, tok)| tok.clone())
}

/// The longest number token at `start` (JavaCC's rule): a float when a `.` or an exponent
/// follows the digits, else hex (`0x` + hex digits), octal (`0` + octal digits: `09` is the two
/// tokens `0` and `9`, as in ActiveMQ) or decimal with an optional `L`. Returns the token and
/// the index after it.
fn number(chars: &[char], start: usize) -> Result<(Tok, usize), String> {
    let digits_end = |from: usize| {
        chars[from..]
            .iter()
            .position(|c| !c.is_ascii_digit())
            .map_or(chars.len(), |n| from + n)
    };
    let int_end = digits_end(start);
    let exponent_end = |at: usize| -> Option<usize> {
        if !matches!(chars.get(at), Some('e' | 'E')) {
            return None;
        }
        let mut j = at + 1;
        if matches!(chars.get(j), Some('+' | '-')) {
            j += 1;
        }
        let end = digits_end(j);
        (end > j).then_some(end)
    };
    let text = |from: usize, to: usize| chars[from..to].iter().collect::<String>();
    // Floats: 5.5, 5., .5, 5.5E10, 5E10.
    if chars.get(int_end) == Some(&'.') {
        let frac_end = digits_end(int_end + 1);
        if int_end == start && frac_end == int_end + 1 {
            return Err("unexpected character '.'".into());
        }
        let end = exponent_end(frac_end).unwrap_or(frac_end);
        let (int, frac) = (text(start, int_end), text(int_end + 1, frac_end));
        let exponent = text(frac_end, end);
        let normal = format!(
            "{}.{}{}",
            if int.is_empty() { "0" } else { &int },
            if frac.is_empty() { "0" } else { &frac },
            exponent
        );
        let value: f64 = normal
            .parse()
            .map_err(|_| format!("invalid number {normal}"))?;
        return Ok((Tok::Float(value), end));
    }
    if let Some(end) = exponent_end(int_end) {
        let value: f64 = text(start, end)
            .parse()
            .map_err(|_| format!("invalid number {}", text(start, end)))?;
        return Ok((Tok::Float(value), end));
    }
    let narrow = |value: i64| match i32::try_from(value) {
        Ok(small) => Tok::Int(small),
        Err(_) => Tok::Long(value),
    };
    if chars[start] == '0' {
        if matches!(chars.get(start + 1), Some('x' | 'X'))
            && chars.get(start + 2).is_some_and(|c| c.is_ascii_hexdigit())
        {
            let end = chars[start + 2..]
                .iter()
                .position(|c| !c.is_ascii_hexdigit())
                .map_or(chars.len(), |n| start + 2 + n);
            let digits = text(start + 2, end);
            let value = i64::from_str_radix(&digits, 16)
                .map_err(|_| format!("hex number 0x{digits} does not fit 64 bits"))?;
            return Ok((narrow(value), end));
        }
        let end = chars[start + 1..]
            .iter()
            .position(|c| !('0'..='7').contains(c))
            .map_or(chars.len(), |n| start + 1 + n);
        let digits = text(start, end);
        let value = i64::from_str_radix(&digits, 8)
            .map_err(|_| format!("octal number {digits} does not fit 64 bits"))?;
        return Ok((narrow(value), end));
    }
    let digits = text(start, int_end);
    let value: i64 = digits
        .parse()
        .map_err(|_| format!("number {digits} does not fit 64 bits"))?;
    let end = if matches!(chars.get(int_end), Some('l' | 'L')) {
        int_end + 1
    } else {
        int_end
    };
    Ok((narrow(value), end))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn kinds(text: &str) -> Vec<Tok> {
        tokenize(text, 0)
            .expect("tokens")
            .into_iter()
            .map(|t| t.kind)
            .collect()
    }

    #[test]
    fn numbers_take_activemq_types() {
        assert_eq!(kinds("10")[0], Tok::Int(10));
        assert_eq!(kinds("10L")[0], Tok::Int(10));
        assert_eq!(kinds("3000000000")[0], Tok::Long(3_000_000_000));
        assert_eq!(kinds("0x1F")[0], Tok::Int(31));
        assert_eq!(kinds("017")[0], Tok::Int(15));
        assert_eq!(kinds("0")[0], Tok::Int(0));
        assert_eq!(kinds("5.")[0], Tok::Float(5.0));
        assert_eq!(kinds(".5")[0], Tok::Float(0.5));
        assert_eq!(kinds("5E2")[0], Tok::Float(500.0));
        assert_eq!(kinds("5.e-1")[0], Tok::Float(0.5));
        assert_eq!(kinds("09"), vec![Tok::Int(0), Tok::Int(9), Tok::Eof]);
        assert!(tokenize("99999999999999999999", 0).is_err());
    }

    #[test]
    fn keywords_ignore_case_and_identifiers_keep_it() {
        assert_eq!(
            kinds("not AnD Note $x _y1"),
            vec![
                Tok::Not,
                Tok::And,
                Tok::Id("Note".into()),
                Tok::Id("$x".into()),
                Tok::Id("_y1".into()),
                Tok::Eof
            ]
        );
    }

    #[test]
    fn strings_comments_and_columns() {
        let tokens = tokenize("/* c */ a = 'it''s' -- end\n", 0).expect("tokens");
        assert_eq!(tokens[0].kind, Tok::Id("a".into()));
        assert_eq!(tokens[0].column, 9);
        assert_eq!(tokens[2].kind, Tok::Str("it's".into()));
        assert!(tokenize("a = 'open", 0).is_err());
        assert!(tokenize("a = 1 -- no newline", 0).is_err());
        let e = tokenize("a ! b", 0).expect_err("bad char");
        assert_eq!(e.column, 3);
    }
}
