//! JAAS `login.config` files, parsed with the grammar of Java's `sun.security.provider.ConfigFile`:
//!
//! ```text
//! activemq {                                   // entry name
//!     org.apache.activemq.jaas.PropertiesLoginModule required   // class, flag
//!         org.apache.activemq.jaas.properties.user="users.properties"   // options
//!         reload=true;
//! };
//! ```
//!
//! Comments are `//`, `/* */` and `#`; values are bare words or `"quoted"` / `'quoted'` strings
//! with backslash escapes. `${...}` in values is left as written (the compiler expands it, as
//! Java does with `policy.expandProperties`). Errors carry a 1-based line and column.

use std::fmt;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LoginConfig {
    pub entries: Vec<JaasEntry>,
}

impl LoginConfig {
    pub fn entry(&self, name: &str) -> Option<&JaasEntry> {
        self.entries.iter().find(|e| e.name == name)
    }
}

/// `name { modules };`
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JaasEntry {
    pub name: String,
    pub line: u32,
    pub col: u32,
    pub modules: Vec<JaasModule>,
}

/// `class flag key=value ... ;`
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JaasModule {
    pub class: String,
    /// Lower-cased: `required`, `requisite`, `sufficient` or `optional`.
    pub flag: String,
    pub options: Vec<JaasOption>,
    pub line: u32,
    pub col: u32,
}

impl JaasModule {
    /// The last value given for `key` (later options replace earlier ones, as in Java's map).
    pub fn option(&self, key: &str) -> Option<&JaasOption> {
        self.options.iter().rev().find(|o| o.key == key)
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JaasOption {
    pub key: String,
    pub value: String,
    /// Position of the value.
    pub line: u32,
    pub col: u32,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JaasError {
    pub line: u32,
    pub col: u32,
    pub message: String,
}

impl fmt::Display for JaasError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}: {}", self.line, self.col, self.message)
    }
}

impl std::error::Error for JaasError {}

const FLAGS: &[&str] = &["required", "requisite", "sufficient", "optional"];

/// Parse a whole login.config.
pub fn parse(text: &str) -> Result<LoginConfig, JaasError> {
    let tokens = tokenize(text)?;
    Parser {
        tokens: &tokens,
        pos: 0,
        end: end_position(text),
    }
    .config()
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Tok {
    /// A bare word or a quoted string.
    Word(String),
    Open,
    Close,
    Semi,
    Equals,
}

#[derive(Debug, Clone)]
struct Token {
    tok: Tok,
    line: u32,
    col: u32,
}

fn describe(tok: &Tok) -> String {
    match tok {
        Tok::Word(text) => format!("`{text}`"),
        Tok::Open => "`{`".into(),
        Tok::Close => "`}`".into(),
        Tok::Semi => "`;`".into(),
        Tok::Equals => "`=`".into(),
    }
}

fn end_position(text: &str) -> (u32, u32) {
    let mut cursor = Cursor::new(text);
    while cursor.bump().is_some() {}
    (cursor.line, cursor.col)
}

/// Characters with their line and column.
struct Cursor<'a> {
    chars: std::iter::Peekable<std::str::Chars<'a>>,
    line: u32,
    col: u32,
}

impl<'a> Cursor<'a> {
    fn new(text: &'a str) -> Self {
        Cursor {
            chars: text.chars().peekable(),
            line: 1,
            col: 1,
        }
    }

    fn peek(&mut self) -> Option<char> {
        self.chars.peek().copied()
    }

    fn bump(&mut self) -> Option<char> {
        let c = self.chars.next()?;
        if c == '\n' {
            self.line += 1;
            self.col = 1;
        } else {
            self.col += 1;
        }
        Some(c)
    }

    /// The character after the next one, without consuming anything.
    fn peek_second(&self) -> Option<char> {
        let mut clone = self.chars.clone();
        clone.next();
        clone.next()
    }
}

fn is_word_char(c: char) -> bool {
    !c.is_whitespace() && !matches!(c, '{' | '}' | ';' | '=' | '"' | '\'')
}

fn tokenize(text: &str) -> Result<Vec<Token>, JaasError> {
    let mut cursor = Cursor::new(text);
    let mut tokens = Vec::new();
    while let Some(c) = cursor.peek() {
        let (line, col) = (cursor.line, cursor.col);
        let single = match c {
            '{' => Some(Tok::Open),
            '}' => Some(Tok::Close),
            ';' => Some(Tok::Semi),
            '=' => Some(Tok::Equals),
            _ => None,
        };
        if let Some(tok) = single {
            cursor.bump();
            tokens.push(Token { tok, line, col });
        } else if c.is_whitespace() {
            cursor.bump();
        } else if c == '#' || (c == '/' && cursor.peek_second() == Some('/')) {
            while cursor.peek().is_some_and(|c| c != '\n') {
                cursor.bump();
            }
        } else if c == '/' && cursor.peek_second() == Some('*') {
            skip_block_comment(&mut cursor, line, col)?;
        } else if c == '"' || c == '\'' {
            let text = quoted(&mut cursor, c, line, col)?;
            tokens.push(Token {
                tok: Tok::Word(text),
                line,
                col,
            });
        } else {
            let mut word = String::new();
            while let Some(c) = cursor.peek().filter(|&c| is_word_char(c)) {
                if c == '/' && matches!(cursor.peek_second(), Some('/' | '*')) {
                    break;
                }
                word.push(c);
                cursor.bump();
            }
            tokens.push(Token {
                tok: Tok::Word(word),
                line,
                col,
            });
        }
    }
    Ok(tokens)
}

fn skip_block_comment(cursor: &mut Cursor<'_>, line: u32, col: u32) -> Result<(), JaasError> {
    cursor.bump();
    cursor.bump();
    loop {
        match cursor.bump() {
            Some('*') if cursor.peek() == Some('/') => {
                cursor.bump();
                return Ok(());
            }
            Some(_) => {}
            None => {
                return Err(JaasError {
                    line,
                    col,
                    message: "`/*` comment is never closed".into(),
                })
            }
        }
    }
}

fn quoted(cursor: &mut Cursor<'_>, quote: char, line: u32, col: u32) -> Result<String, JaasError> {
    cursor.bump();
    let mut out = String::new();
    loop {
        match cursor.bump() {
            Some(c) if c == quote => return Ok(out),
            Some('\\') => match cursor.bump() {
                Some('n') => out.push('\n'),
                Some('t') => out.push('\t'),
                Some('r') => out.push('\r'),
                Some(other) => out.push(other),
                None => break,
            },
            Some('\n') | None => break,
            Some(c) => out.push(c),
        }
    }
    Err(JaasError {
        line,
        col,
        message: format!("string starting with {quote} is never closed on its line"),
    })
}

struct Parser<'t> {
    tokens: &'t [Token],
    pos: usize,
    end: (u32, u32),
}

impl Parser<'_> {
    fn peek(&self) -> Option<&Token> {
        self.tokens.get(self.pos)
    }

    fn error_here(&self, message: impl Into<String>) -> JaasError {
        let (line, col) = self.peek().map(|t| (t.line, t.col)).unwrap_or(self.end);
        JaasError {
            line,
            col,
            message: message.into(),
        }
    }

    fn found(&self) -> String {
        self.peek()
            .map(|t| describe(&t.tok))
            .unwrap_or_else(|| "the end of the file".into())
    }

    fn expect(&mut self, want: &Tok, what: &str) -> Result<(), JaasError> {
        if self.peek().map(|t| &t.tok) == Some(want) {
            self.pos += 1;
            Ok(())
        } else {
            Err(self.error_here(format!("expected {what}, found {}", self.found())))
        }
    }

    /// [`Self::expect`] without quoting what was found (it may be part of a secret).
    fn expect_quietly(&mut self, want: &Tok, what: &str) -> Result<(), JaasError> {
        if self.peek().map(|t| &t.tok) == Some(want) {
            self.pos += 1;
            Ok(())
        } else {
            Err(self.error_here(format!("expected {what}")))
        }
    }

    /// A word (bare or quoted) with its position.
    fn word(&mut self, what: &str) -> Result<(String, u32, u32), JaasError> {
        match self.peek() {
            Some(Token {
                tok: Tok::Word(text),
                line,
                col,
            }) => {
                let out = (text.clone(), *line, *col);
                self.pos += 1;
                Ok(out)
            }
            _ => Err(self.error_here(format!("expected {what}, found {}", self.found()))),
        }
    }

    fn config(mut self) -> Result<LoginConfig, JaasError> {
        let mut entries: Vec<JaasEntry> = Vec::new();
        while self.peek().is_some() {
            let entry = self.entry()?;
            if entries.iter().any(|e| e.name == entry.name) {
                return Err(JaasError {
                    line: entry.line,
                    col: entry.col,
                    message: format!("entry `{}` is defined twice", entry.name),
                });
            }
            entries.push(entry);
        }
        Ok(LoginConfig { entries })
    }

    fn entry(&mut self) -> Result<JaasEntry, JaasError> {
        let (name, line, col) = self.word("an entry name such as `activemq`")?;
        self.expect(&Tok::Open, &format!("`{{` after entry name `{name}`"))?;
        let mut modules = Vec::new();
        while !matches!(self.peek().map(|t| &t.tok), Some(Tok::Close) | None) {
            modules.push(self.module()?);
        }
        self.expect(&Tok::Close, &format!("`}}` closing entry `{name}`"))?;
        self.expect(&Tok::Semi, &format!("`;` after the `}}` of entry `{name}`"))?;
        Ok(JaasEntry {
            name,
            line,
            col,
            modules,
        })
    }

    fn module(&mut self) -> Result<JaasModule, JaasError> {
        let (class, line, col) = self.word("a login module class name")?;
        let (flag, flag_line, flag_col) = self.word(&format!(
            "a control flag (required, requisite, sufficient or optional) after `{class}`"
        ))?;
        let flag = flag.to_ascii_lowercase();
        if !FLAGS.contains(&flag.as_str()) {
            return Err(JaasError {
                line: flag_line,
                col: flag_col,
                message: format!(
                    "`{flag}` is not a control flag; use required, requisite, sufficient or optional"
                ),
            });
        }
        let mut options: Vec<JaasOption> = Vec::new();
        loop {
            match self.peek().map(|t| &t.tok) {
                Some(Tok::Semi) => {
                    self.pos += 1;
                    break;
                }
                Some(Tok::Word(_)) => {
                    let (key, _, _) = self.word("an option name")?;
                    // After a password option, a word that is not followed by `=` is most
                    // likely the rest of an unquoted password with a space: never echo it.
                    let after_secret = options
                        .last()
                        .map(|o| o.key.to_ascii_lowercase())
                        .filter(|k| k.contains("password"));
                    match after_secret {
                        Some(_) => {
                            let secret = options.last().map_or("", |o| o.key.as_str());
                            self.expect_quietly(
                                &Tok::Equals,
                                &format!(
                                    "`=` after an option name following `{secret}` (a value \
                                     with spaces must be quoted: {secret}=\"...\")"
                                ),
                            )?
                        }
                        None => self.expect(&Tok::Equals, &format!("`=` after option `{key}`"))?,
                    }
                    let (value, vline, vcol) = self.word(&format!("a value for option `{key}`"))?;
                    options.push(JaasOption {
                        key,
                        value,
                        line: vline,
                        col: vcol,
                    });
                }
                _ => {
                    return Err(self.error_here(format!(
                        "expected an option or `;` ending module `{class}`, found {}",
                        self.found()
                    )))
                }
            }
        }
        Ok(JaasModule {
            class,
            flag,
            options,
            line,
            col,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const UPSTREAM: &str = r#"/* Licensed to the Apache Software Foundation */
activemq {
    org.apache.activemq.jaas.PropertiesLoginModule required
        org.apache.activemq.jaas.properties.user="users.properties"
        org.apache.activemq.jaas.properties.group="groups.properties"
        reload=true;  // re-read on change
};

# guests are welcome
guests {
    org.apache.activemq.jaas.GuestLoginModule Optional
        org.apache.activemq.jaas.guest.user='guest'
        org.apache.activemq.jaas.guest.group=guests;
};
"#;

    /// An unquoted password with a space: the error must not show the rest of it.
    #[test]
    fn an_unquoted_password_with_a_space_is_not_echoed() {
        let text = "ldap {\n  org.apache.activemq.jaas.LDAPLoginModule required\n    \
                    connectionPassword=Hunter2 Secret;\n};\n";
        let e = parse(text).expect_err("unquoted space");
        assert!(!e.message.contains("Secret"), "{}", e.message);
        assert!(e.message.contains("must be quoted"), "{}", e.message);
    }

    #[test]
    fn parses_entries_modules_and_options() {
        let config = parse(UPSTREAM).expect("valid");
        assert_eq!(config.entries.len(), 2);
        let activemq = config.entry("activemq").expect("entry");
        assert_eq!((activemq.line, activemq.col), (2, 1));
        let module = &activemq.modules[0];
        assert_eq!(
            module.class,
            "org.apache.activemq.jaas.PropertiesLoginModule"
        );
        assert_eq!(module.flag, "required");
        let user = module
            .option("org.apache.activemq.jaas.properties.user")
            .expect("option");
        assert_eq!(
            (user.value.as_str(), user.line, user.col),
            ("users.properties", 4, 50)
        );
        assert_eq!(
            module.option("reload").map(|o| o.value.as_str()),
            Some("true")
        );
        let guest = &config.entry("guests").expect("entry").modules[0];
        assert_eq!(guest.flag, "optional");
        assert_eq!(
            guest
                .option("org.apache.activemq.jaas.guest.user")
                .map(|o| o.value.as_str()),
            Some("guest")
        );
    }

    #[test]
    fn errors_have_line_and_column() {
        let missing_semi = "activemq {\n  a.B required x=\"1\"\n};\n";
        let e = parse(missing_semi).expect_err("missing ;");
        assert_eq!((e.line, e.col), (3, 1));
        assert!(e.message.contains("ending module `a.B`"), "{}", e.message);

        let bad_flag = "activemq {\n  a.B mandatory;\n};";
        let e = parse(bad_flag).expect_err("flag");
        assert_eq!((e.line, e.col), (2, 7));

        let unclosed = "activemq {\n  a.B required k=\"v;\n};";
        assert_eq!(parse(unclosed).expect_err("quote").line, 2);

        let end = parse("activemq {\n a.B required;\n}").expect_err("no ;");
        assert_eq!((end.line, end.col), (3, 2));

        let dup = parse("a { };\na { };").expect_err("dup");
        assert_eq!(dup.line, 2);
        assert!(parse("/* never closed").is_err());
    }
}
