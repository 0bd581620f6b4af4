//! Placeholder syntax (`${name}`, `${name:default}`, nested `${${name}}`, values that contain
//! placeholders) and the lookup of names in an ordered list of sources.

use std::cell::RefCell;
use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;

use super::encryption::Decryptor;
use crate::config::jasypt::enc_inner;

/// Where placeholders can be looked up besides the properties files: the command line, the
/// process environment and the launcher's `activemq.*` defaults.
pub(in crate::config::xml) struct Environment {
    /// `--set name=value` / `-Dname=value`: Java system properties.
    pub(super) overrides: BTreeMap<String, String>,
    pub(super) use_env: bool,
    /// `activemq.base`, `activemq.home`, `activemq.conf`, `activemq.data`.
    pub(super) defaults: BTreeMap<String, String>,
    /// A file of the built-in default configuration missing from disk is read from the
    /// binary ([`LoadOptions::embedded_default`](crate::config::LoadOptions::embedded_default)).
    pub(in crate::config::xml) embedded_default: bool,
}

/// The system properties ActiveMQ's start script sets (from `ACTIVEMQ_BASE` and the like):
/// directories.
const LAUNCHER_PROPERTIES: [&str; 4] = [
    "activemq.base",
    "activemq.home",
    "activemq.conf",
    "activemq.data",
];

/// A launcher property's value as the command line or the environment gives it. ActiveMQ's
/// start script hands a relative `ACTIVEMQ_CONF` (or `-Dactivemq.conf=`) to the JVM as written
/// and does not change directory, so Java resolves it against the working directory: here too,
/// rather than against the directory of the file that uses it. A value with a placeholder in
/// it is left as written (it resolves first, and its result is then taken as a location is).
/// A value of white space only is taken as empty: made absolute it would name a directory
/// called " " in the working directory, where `dataDirectory="  "` written in the file is an
/// error ("dataDirectory is empty"); empty, it meets the same rules as `-D activemq.data=`.
pub(super) fn launcher_directory(name: &str, value: String) -> String {
    if !LAUNCHER_PROPERTIES.contains(&name) {
        return value;
    }
    if value.trim().is_empty() {
        return String::new();
    }
    if value.contains("${") {
        return value;
    }
    match std::path::absolute(&value) {
        Ok(path) => path.to_string_lossy().into_owned(),
        Err(_) => value,
    }
}

/// Whether the environment variable `name` is one of the launcher's directories, under any
/// of the names a lookup tries (`ACTIVEMQ_CONF`, `activemq.conf`, `activemq_conf`).
fn is_launcher_variable(name: &str) -> bool {
    let normalized = name.replace(['.', '-'], "_").to_ascii_lowercase();
    LAUNCHER_PROPERTIES
        .iter()
        .any(|property| property.replace('.', "_") == normalized)
}

impl Environment {
    /// The environment variable `name`. An empty launcher directory variable counts as unset:
    /// ActiveMQ's start script tests them with `[ -z "$ACTIVEMQ_CONF" ]` and uses its default,
    /// where taking the empty value would put `${activemq.conf}/x` at the filesystem's root.
    pub(super) fn env_var(&self, name: &str) -> Option<String> {
        if !self.use_env || name.is_empty() || name.contains(['=', '\0']) {
            return None;
        }
        std::env::var(name)
            .ok()
            .filter(|value| !(value.is_empty() && is_launcher_variable(name)))
    }

    /// Spring's environment lookup: the name, then with `.` and `-` as `_`, then that in upper
    /// case (`activemq.data` -> `ACTIVEMQ_DATA`).
    fn env_var_relaxed(&self, name: &str) -> Option<String> {
        let underscored = name.replace(['.', '-'], "_");
        self.env_var(name)
            .or_else(|| self.env_var(&underscored))
            .or_else(|| self.env_var(&underscored.to_ascii_uppercase()))
    }

    /// Resolve placeholders the way Spring resolves resource locations (`<import resource>`,
    /// a configurer's `location`): against system properties and the environment only.
    pub(in crate::config::xml) fn resolve_location(
        &self,
        text: &str,
    ) -> Result<String, PlaceholderError> {
        self.resolver_without_files().resolve(text)
    }

    /// [`resolve_location`](Self::resolve_location), with the `--set`/`-D` names the result
    /// took, so that an error about the location can say where its value came from.
    pub(in crate::config::xml) fn resolve_location_noting(
        &self,
        text: &str,
    ) -> Result<(String, Vec<String>), PlaceholderError> {
        let resolver = self.resolver_without_files();
        let resolved = resolver.resolve(text)?;
        Ok((resolved, resolver.take_overridden()))
    }

    pub(super) fn resolver_without_files(&self) -> Resolver<'_> {
        Resolver {
            environment: self,
            files: BTreeMap::new(),
            file_names: Vec::new(),
            order: vec![
                Source::Overrides,
                Source::Env { relaxed: true },
                Source::Defaults,
            ],
            ignore_unresolvable: false,
            decryptor: None,
            overridden: RefCell::default(),
        }
    }
}

/// One place a placeholder's value can come from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Source {
    /// The configurers' properties files (and inline properties).
    Files,
    /// `--set` / `-D`.
    Overrides,
    /// Environment variables; `relaxed` also tries `ACTIVEMQ_DATA` for `activemq.data`.
    Env { relaxed: bool },
    /// The `activemq.*` launcher defaults.
    Defaults,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub(in crate::config::xml) enum PlaceholderError {
    #[error("unresolved placeholder `${{{0}}}`")]
    Unresolved(String),
    #[error("circular placeholder reference: {0}")]
    Circular(String),
    #[error("placeholders nested more than {MAX_DEPTH} deep in `{0}`")]
    TooDeep(String),
    #[error("`${{{0}}}` is a jasypt-encrypted value (ENC(...)) but no placeholder configurer decrypts it")]
    Encrypted(String),
    #[error("`${{{name}}}`: {reason}")]
    Decryption {
        name: String,
        reason: String,
        hint: String,
    },
}

/// Bounds the recursion of nested placeholders and of values that refer to other values, so
/// that no input can exhaust the stack.
const MAX_DEPTH: usize = 64;

pub(super) struct Resolver<'e> {
    pub(super) environment: &'e Environment,
    /// Every file property (later files already merged over earlier ones).
    pub(super) files: BTreeMap<String, String>,
    /// The properties files read, for messages.
    pub(super) file_names: Vec<PathBuf>,
    pub(super) order: Vec<Source>,
    /// Spring's `ignoreUnresolvablePlaceholders`: keep an unknown `${name}` as written.
    pub(super) ignore_unresolvable: bool,
    /// The encryptor of a jasypt configurer, for `ENC(...)` values.
    pub(super) decryptor: Option<Decryptor>,
    /// The names found among the `--set`/`-D` values since the last
    /// [`take_overridden`](Resolver::take_overridden).
    pub(super) overridden: RefCell<Vec<String>>,
}

impl Resolver<'_> {
    /// `text` with every placeholder replaced.
    pub(super) fn resolve(&self, text: &str) -> Result<String, PlaceholderError> {
        if !text.contains("${") {
            return Ok(text.to_owned());
        }
        self.parse(text, &mut Vec::new(), 0)
    }

    fn lookup(&self, name: &str) -> Option<String> {
        self.order.iter().find_map(|source| match source {
            Source::Files => self.files.get(name).cloned(),
            Source::Overrides => {
                let value = self.environment.overrides.get(name).cloned();
                if value.is_some() {
                    self.overridden.borrow_mut().push(name.to_owned());
                }
                value.map(|value| launcher_directory(name, value))
            }
            Source::Env { relaxed: true } => self
                .environment
                .env_var_relaxed(name)
                .map(|value| launcher_directory(name, value)),
            Source::Env { relaxed: false } => self
                .environment
                .env_var(name)
                .map(|value| launcher_directory(name, value)),
            Source::Defaults => self.environment.defaults.get(name).cloned(),
        })
    }

    /// Spring's `PropertyPlaceholderHelper.parseStringValue`: placeholders in a placeholder's
    /// name are resolved first, then the name is looked up (falling back to the text after the
    /// first `:`), then placeholders in the value found are resolved in turn.
    fn parse(
        &self,
        text: &str,
        visiting: &mut Vec<String>,
        depth: usize,
    ) -> Result<String, PlaceholderError> {
        if depth > MAX_DEPTH {
            return Err(PlaceholderError::TooDeep(text.chars().take(60).collect()));
        }
        let mut out = String::with_capacity(text.len());
        let mut rest = text;
        while let Some(start) = rest.find("${") {
            out.push_str(&rest[..start]);
            let after_prefix = &rest[start + 2..];
            let Some(end) = placeholder_end(after_prefix) else {
                // No closing brace: Spring leaves the text as it is.
                out.push_str(&rest[start..]);
                return Ok(out);
            };
            let inner = &after_prefix[..end];
            let name = self.parse(inner, visiting, depth + 1)?;
            if visiting.contains(&name) {
                let mut chain = visiting.clone();
                chain.push(name);
                return Err(PlaceholderError::Circular(chain.join(" -> ")));
            }
            match self.lookup_with_default(&name)? {
                Some(value) => {
                    visiting.push(name);
                    let resolved = self.parse(&value, visiting, depth + 1);
                    visiting.pop();
                    out.push_str(&resolved?);
                }
                None if self.ignore_unresolvable => {
                    out.push_str("${");
                    out.push_str(inner);
                    out.push('}');
                }
                None => return Err(PlaceholderError::Unresolved(name)),
            }
            rest = &after_prefix[end + 1..];
        }
        out.push_str(rest);
        Ok(out)
    }

    fn lookup_with_default(&self, name: &str) -> Result<Option<String>, PlaceholderError> {
        let (found_under, value) = match self.lookup(name) {
            Some(value) => (name, Some(value)),
            None => match name.split_once(':') {
                Some((key, default)) => (
                    key,
                    Some(self.lookup(key).unwrap_or_else(|| default.to_owned())),
                ),
                None => (name, None),
            },
        };
        let Some(value) = value else {
            return Ok(None);
        };
        let Some(inner) = enc_inner(&value) else {
            return Ok(Some(value));
        };
        let Some(decryptor) = &self.decryptor else {
            return Err(PlaceholderError::Encrypted(found_under.to_owned()));
        };
        decryptor
            .decrypt(inner)
            .map(Some)
            .map_err(|err| PlaceholderError::Decryption {
                name: found_under.to_owned(),
                reason: err.reason,
                hint: err.hint,
            })
    }

    /// The names whose value came from `--set`/`-D` since the last call, in the order used,
    /// each once.
    pub(super) fn take_overridden(&self) -> Vec<String> {
        let mut names = std::mem::take(&mut *self.overridden.borrow_mut());
        let mut seen = BTreeSet::new();
        names.retain(|name| seen.insert(name.clone()));
        names
    }

    /// Where lookups go, in order, for an "unresolved placeholder" hint.
    pub(super) fn sources_description(&self) -> String {
        let names: Vec<String> = self
            .order
            .iter()
            .filter_map(|source| match source {
                Source::Files if self.file_names.is_empty() => {
                    Some("the configurer's properties (no file was loaded)".to_owned())
                }
                Source::Files => {
                    let files: Vec<String> = self
                        .file_names
                        .iter()
                        .map(|f| format!("`{}`", f.display()))
                        .collect();
                    Some(format!("the properties files {}", files.join(", ")))
                }
                Source::Overrides => Some("--set/-D values".to_owned()),
                Source::Env { .. } if !self.environment.use_env => None,
                Source::Env { .. } => Some("environment variables".to_owned()),
                Source::Defaults => Some("the activemq.base/home/conf/data defaults".to_owned()),
            })
            .collect();
        names.join(", then ")
    }

    /// The value each known key (files, overrides, defaults) resolves to; a value that does not
    /// resolve is given as written.
    pub(super) fn effective_properties(&self) -> BTreeMap<String, String> {
        let keys: BTreeSet<&String> = self
            .files
            .keys()
            .chain(self.environment.overrides.keys())
            .chain(self.environment.defaults.keys())
            .collect();
        keys.into_iter()
            .filter_map(|key| {
                let value = self.lookup(key)?;
                let resolved = self
                    .parse(&value, &mut vec![key.clone()], 0)
                    .unwrap_or(value);
                Some((key.clone(), resolved))
            })
            .collect()
    }
}

/// Index of the `}` that closes a placeholder whose `${` was just consumed, counting nested
/// braces as Spring does.
/// Whether `text` has a `${` that is never closed (Spring leaves it as written, so the value
/// then fails wherever it is used, far from the cause).
pub(super) fn has_unclosed_placeholder(text: &str) -> bool {
    let mut rest = text;
    while let Some(start) = rest.find("${") {
        let after_prefix = &rest[start + 2..];
        match placeholder_end(after_prefix) {
            Some(end) => rest = &after_prefix[end + 1..],
            None => return true,
        }
    }
    false
}

fn placeholder_end(text: &str) -> Option<usize> {
    let mut nesting = 0usize;
    for (index, byte) in text.bytes().enumerate() {
        match byte {
            b'{' => nesting += 1,
            b'}' if nesting == 0 => return Some(index),
            b'}' => nesting -= 1,
            _ => {}
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    fn environment(overrides: &[(&str, &str)]) -> Environment {
        Environment {
            overrides: overrides
                .iter()
                .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
                .collect(),
            use_env: false,
            defaults: BTreeMap::from([("activemq.conf".to_owned(), "/etc/amq".to_owned())]),
            embedded_default: false,
        }
    }

    fn resolver<'e>(env: &'e Environment, files: &[(&str, &str)]) -> Resolver<'e> {
        Resolver {
            environment: env,
            files: files
                .iter()
                .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
                .collect(),
            file_names: Vec::new(),
            order: vec![Source::Files, Source::Overrides, Source::Defaults],
            ignore_unresolvable: false,
            decryptor: None,
            overridden: RefCell::default(),
        }
    }

    #[test]
    fn names_taken_from_overrides_are_reported_once() {
        let env = environment(&[("port", "99999"), ("host", "h")]);
        let r = resolver(&env, &[("uri", "mqtt://${host}:${port}"), ("host", "file")]);
        assert_eq!(
            r.resolve("${uri}/${port}").as_deref(),
            Ok("mqtt://file:99999/99999")
        );
        assert_eq!(r.take_overridden(), vec!["port".to_owned()]);
        assert!(r.take_overridden().is_empty(), "taken");
    }

    #[test]
    fn unclosed_placeholders_are_found() {
        assert!(has_unclosed_placeholder("mqtt://h:${port:1883"));
        assert!(has_unclosed_placeholder("${a}${b"));
        assert!(!has_unclosed_placeholder("${a}-${b:${c}}"));
        assert!(!has_unclosed_placeholder("no placeholder"));
    }

    #[test]
    fn nested_names_values_and_defaults() {
        let env = environment(&[("which", "b")]);
        let r = resolver(
            &env,
            &[("a", "x${b}"), ("b", "${activemq.conf}/y"), ("key.b", "kb")],
        );
        assert_eq!(r.resolve("1${a}2").as_deref(), Ok("1x/etc/amq/y2"));
        assert_eq!(r.resolve("${key.${which}}").as_deref(), Ok("kb"));
        assert_eq!(r.resolve("${missing:d${b}}").as_deref(), Ok("d/etc/amq/y"));
        assert_eq!(r.resolve("${missing:}").as_deref(), Ok(""));
        assert_eq!(r.resolve("${a:unused}").as_deref(), Ok("x/etc/amq/y"));
        assert_eq!(r.resolve("no ${ closing").as_deref(), Ok("no ${ closing"));
    }

    #[test]
    fn files_win_over_overrides_in_fallback_order() {
        let env = environment(&[("k", "override")]);
        let mut r = resolver(&env, &[("k", "file")]);
        assert_eq!(r.resolve("${k}").as_deref(), Ok("file"));
        r.order = vec![Source::Overrides, Source::Files];
        assert_eq!(r.resolve("${k}").as_deref(), Ok("override"));
    }

    #[test]
    fn errors_name_the_placeholder() {
        let env = environment(&[]);
        let mut r = resolver(&env, &[("a", "${b}"), ("b", "${a}"), ("pw", "ENC(xyz)")]);
        assert_eq!(
            r.resolve("${nope}"),
            Err(PlaceholderError::Unresolved("nope".into()))
        );
        assert_eq!(
            r.resolve("${a}"),
            Err(PlaceholderError::Circular("a -> b -> a".into()))
        );
        assert_eq!(
            r.resolve("${pw}"),
            Err(PlaceholderError::Encrypted("pw".into()))
        );
        r.ignore_unresolvable = true;
        assert_eq!(r.resolve("x${nope}y").as_deref(), Ok("x${nope}y"));
    }

    #[test]
    fn deep_nesting_is_an_error_not_a_stack_overflow() {
        let env = environment(&[]);
        let r = resolver(&env, &[]);
        let deep = format!("{}x{}", "${".repeat(10_000), "}".repeat(10_000));
        assert!(matches!(
            r.resolve(&deep),
            Err(PlaceholderError::TooDeep(_))
        ));
    }
}
