//! The console's users: Jetty's `jetty-realm.properties`, as `HashLoginService` reads it
//! (`PropertyUserStore`, with `java.util.Properties`): one `user: password [,role ...]` per
//! entry, `#` and `!` comments, `:`, `=` or white space between the name and the rest, `\`
//! continuations and escapes. The password is read as Jetty's `Credential` does:
//! `OBF:` (Jetty's reversible obfuscation, decoded here), `MD5:` (hex MD5 of the password),
//! `CRYPT:` (Unix DES crypt(3), salt = its first two characters), anything else plain text.
//! Checking a password never logs it and compares in constant time.

use std::fmt;

use md5::{Digest, Md5};
use subtle::ConstantTimeEq;

/// The role that may act (disconnect, delete, purge). Either role reads.
pub const ADMIN_ROLE: &str = "admin";
/// The role that may read.
pub const USER_ROLE: &str = "user";

/// How a user's password is kept in the realm file.
#[derive(Clone, PartialEq, Eq)]
pub enum Credential {
    /// Plain text, or `OBF:` decoded.
    Plain(String),
    /// `MD5:<32 hex digits>`.
    Md5([u8; 16]),
    /// `CRYPT:<13 characters>`: traditional DES crypt(3).
    Crypt(String),
}

impl fmt::Debug for Credential {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let kind = match self {
            Credential::Plain(_) => "Plain",
            Credential::Md5(_) => "Md5",
            Credential::Crypt(_) => "Crypt",
        };
        write!(f, "{kind}(<redacted>)")
    }
}

impl Credential {
    /// Parse a realm value's password part (already trimmed).
    pub fn parse(value: &str) -> Result<Credential, String> {
        if let Some(hex) = value.strip_prefix("MD5:") {
            return parse_md5(hex.trim()).map(Credential::Md5);
        }
        if let Some(hash) = value.strip_prefix("CRYPT:") {
            let hash = hash.trim();
            if hash.len() != 13 || !hash.bytes().all(is_crypt_char) {
                return Err(
                    "a CRYPT: password is 13 characters of [a-zA-Z0-9./] (Unix DES crypt)".into(),
                );
            }
            return Ok(Credential::Crypt(hash.to_owned()));
        }
        let mut plain = value.to_owned();
        // Jetty's Password decodes repeatedly while the value still starts with OBF:.
        while plain.starts_with("OBF:") {
            plain = deobfuscate(&plain)?;
        }
        Ok(Credential::Plain(plain))
    }

    /// Whether `password` matches, in constant time for plain and MD5 values.
    pub fn matches(&self, password: &str) -> bool {
        match self {
            Credential::Plain(expected) => {
                // Compare digests: equal length inputs, so the time does not tell the length.
                let a = Md5::digest(expected.as_bytes());
                let b = Md5::digest(password.as_bytes());
                bool::from(a.as_slice().ct_eq(b.as_slice()))
                    && bool::from(expected.as_bytes().ct_eq(password.as_bytes()))
            }
            Credential::Md5(expected) => {
                let digest = Md5::digest(password.as_bytes());
                bool::from(digest.as_slice().ct_eq(expected.as_slice()))
            }
            #[allow(deprecated)]
            Credential::Crypt(hash) => {
                // Jetty's UnixCrypt takes the low byte of each of the first 8 Java chars (not
                // UTF-8 bytes). pwhash computes the hash; the comparison is ours.
                // `hash_with` is deprecated only as advice against making new DES hashes; here
                // it checks existing ones, which is what CRYPT: compatibility needs.
                let key: Vec<u8> = password.chars().take(8).map(|c| c as u32 as u8).collect();
                match pwhash::unix_crypt::hash_with(hash.as_str(), key) {
                    Ok(computed) => bool::from(computed.as_bytes().ct_eq(hash.as_bytes())),
                    Err(_) => false,
                }
            }
        }
    }
}

fn is_crypt_char(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b == b'.' || b == b'/'
}

fn parse_md5(hex: &str) -> Result<[u8; 16], String> {
    let bad = || "an MD5: password is 32 hexadecimal digits (the MD5 of the password)".to_owned();
    if hex.len() != 32 {
        return Err(bad());
    }
    let mut out = [0u8; 16];
    for (i, byte) in out.iter_mut().enumerate() {
        let pair = hex.get(i * 2..i * 2 + 2).ok_or_else(bad)?;
        *byte = u8::from_str_radix(pair, 16).map_err(|_| bad())?;
    }
    Ok(out)
}

/// Jetty's `Password.deobfuscate`: groups of 4 base-36 digits, or `U` + 4 digits for bytes
/// outside ASCII.
pub fn deobfuscate(value: &str) -> Result<String, String> {
    let s = value.strip_prefix("OBF:").unwrap_or(value);
    let bad = || "an OBF: password that Jetty's Password tool did not make".to_owned();
    let mut bytes = Vec::with_capacity(s.len() / 2);
    let mut i = 0;
    while i < s.len() {
        if s.as_bytes()[i] == b'U' {
            let group = s.get(i + 1..i + 5).ok_or_else(bad)?;
            let n = i64::from_str_radix(group, 36).map_err(|_| bad())?;
            bytes.push(((n >> 8) & 0xff) as u8);
            i += 5;
        } else {
            let group = s.get(i..i + 4).ok_or_else(bad)?;
            let n = i64::from_str_radix(group, 36).map_err(|_| bad())?;
            let (hi, lo) = (n / 256, n % 256);
            bytes.push((((hi + lo - 254) / 2) & 0xff) as u8);
            i += 4;
        }
    }
    String::from_utf8(bytes).map_err(|_| bad())
}

/// One user of the realm file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RealmUser {
    pub name: String,
    pub credential: Credential,
    pub roles: Vec<String>,
}

impl RealmUser {
    /// `admin` role: may act.
    pub fn is_admin(&self) -> bool {
        self.roles.iter().any(|r| r == ADMIN_ROLE)
    }

    /// `admin` or `user`: may read.
    pub fn may_read(&self) -> bool {
        self.is_admin() || self.roles.iter().any(|r| r == USER_ROLE)
    }
}

/// A realm line that cannot be read: 1-based line and column.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RealmError {
    pub line: u32,
    pub col: u32,
    pub message: String,
}

/// The users of a realm file's text, and the lines that could not be read. The text is read
/// as Jetty's `PropertyUserStore` reads it, with `java.util.Properties` (the repository's
/// [`crate::config::properties`]): `:`, `=` or white space between name and value, `\`
/// line continuations, escapes in names (`esc\:aped`), `#`/`!` comments.
pub fn parse(text: &str) -> (Vec<RealmUser>, Vec<RealmError>) {
    let mut users: Vec<RealmUser> = Vec::new();
    let mut errors = Vec::new();
    let raw_lines: Vec<&str> = text.lines().collect();
    let properties = match crate::config::properties::parse(text) {
        Ok(properties) => properties,
        Err(e) => {
            // java.util.Properties.load throws: Jetty reads no user from the file.
            errors.push(RealmError {
                line: e.line,
                col: 1,
                message: "a malformed \\uXXXX escape (Jetty cannot read this file)".into(),
            });
            return (users, errors);
        }
    };
    for property in properties {
        let line = property.line;
        let raw = raw_lines
            .get((line as usize).saturating_sub(1))
            .copied()
            .unwrap_or("");
        let indent = raw.len() - raw.trim_start().len();
        let col = u32::try_from(indent + 1).unwrap_or(u32::MAX);
        let name = property.key.trim();
        let value = property.value.trim();
        if name.is_empty() {
            errors.push(RealmError {
                line,
                col,
                message: "a realm line without a user name".into(),
            });
            continue;
        }
        let (password, roles) = match value.split_once(',') {
            Some((password, roles)) => (password.trim(), roles),
            None => (value, ""),
        };
        if password.is_empty() {
            // Jetty would take an empty password; a console login without one is refused here.
            errors.push(RealmError {
                line,
                col,
                message: format!(
                    "user `{name}` has no password: a realm line is `user: password [,role ...]`"
                ),
            });
            continue;
        }
        // The password's column when it is on the line the entry starts on.
        let value_col = raw
            .get(indent..)
            .and_then(|rest| rest.find(password).map(|at| indent + at + 1))
            .and_then(|c| u32::try_from(c).ok())
            .unwrap_or(col);
        let credential = match Credential::parse(password) {
            Ok(c) => c,
            Err(message) => {
                errors.push(RealmError {
                    line,
                    col: value_col,
                    message: format!("user `{name}`: {message}"),
                });
                continue;
            }
        };
        let roles = roles
            .split(',')
            .map(str::trim)
            .filter(|r| !r.is_empty())
            .map(str::to_owned)
            .collect();
        // A later line for the same user replaces the earlier one (java.util.Properties).
        users.retain(|u| u.name != name);
        users.push(RealmUser {
            name: name.to_owned(),
            credential,
            roles,
        });
    }
    (users, errors)
}

#[cfg(test)]
mod tests {
    use super::*;

    // Values printed by Jetty 9.4's own tool:
    // java -cp jetty-util-9.4.57.jar org.eclipse.jetty.util.security.Password admin 's3cret!'
    const JETTY_OBF: &str = "OBF:1ihd1m4e1sot1y7z1sox1m801ict";
    const JETTY_MD5: &str = "MD5:ca6c5d8960b5f761e1676d26b282889c";
    const JETTY_CRYPT: &str = "CRYPT:ad.MvP/CoudYw";
    // ... and for user ops, password "pässwörd" (bytes outside ASCII).
    const JETTY_OBF_UTF8: &str = "OBF:1v2jU12luU0wjaU0mv71zej1zerU12lvU102sU0mo31v1v";
    const JETTY_CRYPT_UTF8: &str = "CRYPT:op1XEaKuNjx0s";

    #[test]
    fn jetty_obfuscated_md5_and_crypt_values_match_their_password_only() {
        for value in [JETTY_OBF, JETTY_MD5, JETTY_CRYPT, "s3cret!"] {
            let credential = Credential::parse(value).expect(value);
            assert!(credential.matches("s3cret!"), "{value}");
            assert!(!credential.matches("s3cret"), "{value}");
            assert!(!credential.matches(""), "{value}");
        }
        let obf = Credential::parse(JETTY_OBF_UTF8).expect("obf");
        assert_eq!(obf, Credential::Plain("pässwörd".into()));
        let crypt = Credential::parse(JETTY_CRYPT_UTF8).expect("crypt");
        assert!(crypt.matches("pässwörd"));
    }

    #[test]
    fn crypt_matches_pythons_crypt_module() {
        // python3 -c "import crypt; print(crypt.crypt('secret','ab'))"
        let credential = Credential::parse("CRYPT:abNANd1rDfiNc").expect("crypt");
        assert!(credential.matches("secret"));
        assert!(!credential.matches("secreT"));
    }

    #[test]
    fn activemq_default_realm_reads_with_roles() {
        let text = "# comment\n! also\nadmin: admin, admin\nuser: user, user\n\nx = y\n";
        let (users, errors) = parse(text);
        assert!(errors.is_empty(), "{errors:?}");
        assert_eq!(users.len(), 3);
        assert!(users[0].is_admin() && users[0].may_read());
        assert!(!users[1].is_admin() && users[1].may_read());
        assert!(users[2].roles.is_empty() && !users[2].may_read());
        assert!(users[0].credential.matches("admin"));
    }

    #[test]
    fn bad_lines_are_reported_with_line_and_column() {
        let (users, errors) = parse("ok: pw, admin\n  nocolon\nbad: MD5:12, admin\n: x\n");
        assert_eq!(users.len(), 1);
        assert_eq!(errors.len(), 3);
        assert_eq!((errors[0].line, errors[0].col), (2, 3));
        assert_eq!((errors[1].line, errors[1].col), (3, 6));
        assert!(errors[1].message.contains("MD5"));
        assert!(!errors[1].message.contains("12"), "never echo a password");
        assert_eq!(errors[2].line, 4);
    }

    #[test]
    fn separators_continuations_and_escapes_read_as_jetty_reads_them() {
        // Realm lines java.util.Properties accepts (Jetty's HashLoginService reads the file with it):
        // a space as separator, `=`, a continued line, an escaped `:` in a key.
        let text =
            "admin admin, admin\nuser=user,user\nlong: lo\\\n  ng, admin\nesc\\:aped: x, admin\n";
        let (users, errors) = parse(text);
        assert!(errors.is_empty(), "{errors:?}");
        let find = |name: &str| users.iter().find(|u| u.name == name).cloned();
        let admin = find("admin").expect("whitespace separator");
        assert!(admin.is_admin() && admin.credential.matches("admin"));
        let user = find("user").expect("= separator");
        assert!(!user.is_admin() && user.may_read() && user.credential.matches("user"));
        let long = find("long").expect("continued line");
        assert!(long.is_admin() && long.credential.matches("long"));
        let escaped = find("esc:aped").expect("escaped colon in the name");
        assert!(escaped.is_admin() && escaped.credential.matches("x"));
    }

    #[test]
    fn a_malformed_unicode_escape_is_an_error_at_its_line() {
        let (users, errors) = parse("ok: pw, admin\nbad: \\uZZZZ, admin\n");
        assert!(users.is_empty());
        assert_eq!(errors.len(), 1);
        assert_eq!(errors[0].line, 2);
    }

    #[test]
    fn debug_never_shows_a_password() {
        let (users, _) = parse("admin: topsecret, admin\n");
        assert!(!format!("{users:?}").contains("topsecret"));
    }

    #[test]
    fn malformed_obfuscation_is_an_error_not_a_panic() {
        for v in ["OBF:1", "OBF:zzzz!", "OBF:U1", "OBF:ÿÿÿÿ"] {
            let _ = Credential::parse(v);
        }
        assert!(Credential::parse("OBF:1").is_err());
    }
}
