//! `${name}` and `${name:default}` placeholders, resolved the way Spring does in ActiveMQ.
//!
//! ActiveMQ resolves placeholders only when the file declares a placeholder configurer bean
//! (see [`configurer`]); without one `${...}` stays literal. Where a value is looked up depends
//! on the configurer's class, following Spring:
//! - `PropertyPlaceholderConfigurer` (mode FALLBACK, the default): its properties files, then
//!   system properties (`--set`/`-D`), then environment variables. Mode OVERRIDE puts system
//!   properties and the environment first; mode NEVER consults the files only.
//! - `PropertySourcesPlaceholderConfigurer` and `<context:property-placeholder>`: the Spring
//!   environment (system properties, then environment variables) first, then the files, unless
//!   `localOverride` is true.
//!
//! The launcher's `activemq.base`/`.home`/`.conf`/`.data` system properties are defaults derived
//! from the configuration file's location, consulted last so that `--set` and the environment
//! (`activemq.base` or `ACTIVEMQ_BASE`, as ActiveMQ's start script reads it) override them.

mod configurer;
mod encryption;
mod resolver;
mod spel;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use super::directory_of;
use crate::config::diagnostic::{Diagnostic, Diagnostics, Span};
use crate::config::tree::Element;
use crate::config::LoadOptions;
pub(super) use resolver::Environment;
use resolver::{PlaceholderError, Resolver};

/// Resolve every placeholder under `root` when a configurer is declared; return every known
/// property (the effective value of each key of the files, overrides and `activemq.*` defaults).
///
/// Several configurers are merged into one lookup: their files in declaration order (the first
/// to define a key wins), the first configurer's lookup order, and "unresolved is an error"
/// unless every one of them ignores unresolvable placeholders. Spring would run them one after
/// the other; the outcome differs only for files that rely on that sequence.
pub(super) fn resolve(
    root: &mut Element,
    environment: &Environment,
    files: &mut Vec<PathBuf>,
    diagnostics: &mut Diagnostics,
    from_command_line: &mut Vec<FromCommandLine>,
) -> BTreeMap<String, String> {
    let properties = substitute(root, environment, files, diagnostics, from_command_line);
    evaluate_expressions(root, environment);
    properties
}

/// [`resolve`]'s placeholders.
fn substitute(
    root: &mut Element,
    environment: &Environment,
    files: &mut Vec<PathBuf>,
    diagnostics: &mut Diagnostics,
    from_command_line: &mut Vec<FromCommandLine>,
) -> BTreeMap<String, String> {
    let configurers = configurer::find(root, environment, diagnostics);
    let Some(first) = configurers.first() else {
        note_literal_placeholders(root, diagnostics);
        return environment.resolver_without_files().effective_properties();
    };
    let mut file_properties = BTreeMap::new();
    let mut property_files = Vec::new();
    for found in &configurers {
        let loaded = found.load_properties(environment, files, diagnostics);
        property_files.extend(loaded.files);
        // Spring runs configurers in declaration order; the first one to know a key wins.
        for (key, value) in loaded.properties {
            file_properties.entry(key).or_insert(value);
        }
    }
    let resolver = Resolver {
        environment,
        files: file_properties,
        file_names: property_files,
        order: first.lookup_order(),
        ignore_unresolvable: configurers.iter().all(|c| c.ignore_unresolvable),
        // One merged lookup: the first jasypt configurer's encryptor decrypts every ENC(...).
        decryptor: configurers.iter().find_map(|c| c.decryptor.clone()),
        overridden: Default::default(),
    };
    let skip: Vec<&[usize]> = configurers.iter().map(|c| c.path.as_slice()).collect();
    let mut walker = Substitution {
        resolver: &resolver,
        environment_only: environment.resolver_without_files(),
        skip: &skip,
        diagnostics,
        from_command_line,
    };
    walker.element(root, &mut Vec::new());
    resolver.effective_properties()
}

/// An attribute value whose placeholders took a `--set`/`-D` value: a diagnostic about the
/// value says so, since the file alone does not show where the value came from.
#[derive(Debug, Clone)]
pub struct FromCommandLine {
    /// The value's first character.
    pub span: Span,
    /// How many characters from there belong to the value (as written or resolved, the
    /// longer).
    pub chars: usize,
    /// The `--set`/`-D` names it took, in order.
    pub properties: Vec<String>,
}

impl FromCommandLine {
    /// Whether `span` falls within the value.
    pub fn covers(&self, span: &Span) -> bool {
        span.file == self.span.file
            && span.line == self.span.line
            && span.col >= self.span.col
            && ((span.col - self.span.col) as usize) < self.chars
    }

    /// `` `-D a` ``, or `` `-D a`, `-D b` ``.
    pub fn describe(&self) -> String {
        let names: Vec<String> = self
            .properties
            .iter()
            .map(|p| format!("`-D {p}`"))
            .collect();
        names.join(", ")
    }
}

/// Walks the tree replacing placeholders in attribute values and text.
struct Substitution<'r, 'd> {
    resolver: &'r Resolver<'r>,
    /// For the configurer beans themselves, which Spring resolves against its environment only
    /// (their files are not loaded yet when their own properties are set).
    environment_only: Resolver<'r>,
    /// Tree paths (child indexes from the root) of the configurer beans.
    skip: &'r [&'r [usize]],
    diagnostics: &'d mut Diagnostics,
    /// The attribute values that took a `--set`/`-D` value.
    from_command_line: &'d mut Vec<FromCommandLine>,
}

impl Substitution<'_, '_> {
    fn element(&mut self, element: &mut Element, path: &mut Vec<usize>) {
        if self.skip.contains(&path.as_slice()) {
            resolve_quietly(element, &self.environment_only);
            return;
        }
        if is_camel(element) {
            // Camel's XML (`<camelContext>`) is Camel's: `${header.x}` there is its Simple
            // language, which Spring's configurer never sees (Camel's own placeholders are
            // `{{name}}`). ferromq skips the element; an unresolved `${...}` in it is no error.
            resolve_quietly(element, &self.environment_only);
            return;
        }
        let element_name = element.name.as_str();
        let property_name = element.attr_value("name").map(str::to_owned);
        let property_name = property_name.as_deref();
        for attr in &mut element.attrs {
            if resolver::has_unclosed_placeholder(&attr.raw) {
                // Not the value itself in the message: it may be a password.
                let named = path_name(element_name, property_name, &attr.name);
                let found = if is_path(named, &attr.raw) {
                    // Spring would leave it as written: the broker would then create and use
                    // a directory (or look for a file) of that literal name.
                    Diagnostic::error(
                        attr.value_span.clone(),
                        format!(
                            "a `${{` in the path `{named}` is never closed: Spring would use it as \
                             written, a file or directory named with the `${{`"
                        ),
                    )
                } else {
                    Diagnostic::warning(
                        attr.value_span.clone(),
                        format!(
                            "a `${{` in the value of `{}` is never closed: left as written, as Spring does",
                            attr.name
                        ),
                    )
                };
                self.diagnostics.push(
                    found.with_hint("close the placeholder with }: `${name}` or `${name:default}`"),
                );
            }
            self.resolver.take_overridden();
            match self.resolver.resolve(&attr.raw) {
                Ok(value) => {
                    let properties = self.resolver.take_overridden();
                    if !properties.is_empty() {
                        self.from_command_line.push(FromCommandLine {
                            span: attr.value_span.clone(),
                            chars: attr.raw.chars().count().max(value.chars().count()),
                            properties,
                        });
                    }
                    attr.value = value;
                }
                Err(err) => self.report(&err, &attr.value_span),
            }
        }
        if element.text.contains("${") {
            match self.resolver.resolve(&element.text) {
                Ok(text) => element.text = text,
                Err(err) => self.report(&err, &element.span),
            }
        }
        for (index, child) in element.children.iter_mut().enumerate() {
            path.push(index);
            self.element(child, path);
            path.pop();
        }
    }

    fn report(&mut self, err: &PlaceholderError, span: &Span) {
        let diagnostic = Diagnostic::error(span.clone(), err.to_string());
        let hint = match err {
            PlaceholderError::Unresolved(name) => format!(
                "looked in {}; define `{name}` there, or write `${{{name}:default}}`",
                self.resolver.sources_description()
            ),
            PlaceholderError::Circular(_) => {
                "a property's value refers back to itself; break the loop".to_owned()
            }
            PlaceholderError::TooDeep(_) => "simplify the nesting of ${...}".to_owned(),
            PlaceholderError::Decryption { hint, .. } => hint.clone(),
            PlaceholderError::Encrypted(name) => format!(
                "declare the properties file with jasypt's EncryptablePropertyPlaceholderConfigurer \
                 (as ActiveMQ's activemq-security.xml does), or put the plain value of `{name}` in the properties file (readable only by the \
                 broker's user) or pass it with --set {name}=... or an environment variable"
            ),
        };
        self.diagnostics.push(diagnostic.with_hint(hint));
    }
}

/// What an attribute of `element` (whose `name` attribute is `property`) sets: its own name,
/// or for a Spring `<property name="..." value="...">` the property's name.
fn path_name<'a>(element: &str, property: Option<&'a str>, attribute: &'a str) -> &'a str {
    match (element, property) {
        ("property", Some(property)) if attribute == "value" => property,
        _ => attribute,
    }
}

/// Whether the attribute or property `name` with the value `raw` names a file or directory:
/// a data or store directory (`dataDirectory`, `<kahaDB directory>`, ...), key and trust
/// stores, ferromq's key, credentials and realm files, or any `file:` location. An unclosed
/// `${` there is an error: the broker would create or read a path of that literal name.
fn is_path(name: &str, raw: &str) -> bool {
    const FILE_ATTRIBUTES: [&str; 6] = [
        "directoryArchive",
        "keyStore",
        "trustStore",
        "keyFile",
        "credentials",
        "realm",
    ];
    name == "directory"
        || name.ends_with("Directory")
        || FILE_ATTRIBUTES.contains(&name)
        || raw.trim_start().starts_with("file:")
}

/// Resolve what can be resolved and leave the rest literal (errors in a configurer's own
/// locations are reported when its files are loaded).
impl spel::SpelSources for Environment {
    fn env(&self, name: &str) -> Option<String> {
        self.env_var(name)
    }

    fn property(&self, name: &str) -> Option<String> {
        self.overrides
            .get(name)
            .or_else(|| self.defaults.get(name))
            .cloned()
    }
}

/// Spring's `#{...}` expressions in attribute values and text, evaluated after the
/// placeholders as Spring does (the subset in [`spel`]); Camel's elements are Camel's.
fn evaluate_expressions(element: &mut Element, environment: &Environment) {
    if is_camel(element) {
        return;
    }
    for attr in &mut element.attrs {
        if let Some(value) = spel::evaluate(&attr.value, environment) {
            attr.value = value;
        }
    }
    if let Some(text) = spel::evaluate(&element.text, environment) {
        element.text = text;
    }
    for child in &mut element.children {
        evaluate_expressions(child, environment);
    }
}

/// An element of Apache Camel's Spring namespace (`http://camel.apache.org/schema/spring`).
fn is_camel(element: &Element) -> bool {
    matches!(&element.ns, crate::config::tree::Namespace::Other(uri) if uri.starts_with("http://camel.apache.org/schema/"))
}

fn resolve_quietly(element: &mut Element, resolver: &Resolver<'_>) {
    for attr in &mut element.attrs {
        if let Ok(value) = resolver.resolve(&attr.raw) {
            attr.value = value;
        }
    }
    if let Ok(text) = resolver.resolve(&element.text) {
        element.text = text;
    }
    for child in &mut element.children {
        resolve_quietly(child, resolver);
    }
}

/// Without a configurer `${...}` is kept as written (ActiveMQ's behaviour); say so once, since
/// a literal `${activemq.data}` directory is rarely what the author meant.
fn note_literal_placeholders(root: &Element, diagnostics: &mut Diagnostics) {
    if let Some((span, raw)) = first_placeholder(root) {
        diagnostics.push(
            Diagnostic::note(
                span,
                format!("`{raw}` is used literally: no placeholder configurer bean is declared"),
            )
            .with_hint(
                "declare <bean class=\"org.springframework.beans.factory.config.\
                 PropertyPlaceholderConfigurer\"/> to resolve ${...} placeholders",
            ),
        );
    }
}

fn first_placeholder(element: &Element) -> Option<(Span, String)> {
    if is_jetty_bean(element) {
        return None;
    }
    if let Some(attr) = element.attrs.iter().find(|a| a.raw.contains("${")) {
        return Some((attr.value_span.clone(), attr.raw.clone()));
    }
    if element.text.contains("${") {
        return Some((element.span.clone(), element.text.clone()));
    }
    element.children.iter().find_map(first_placeholder)
}

/// A bean of ActiveMQ's jetty.xml (Jetty's own classes, `WebConsolePort`): ferromq does not
/// build these, and the one value it takes from them, the realm file path of
/// `securityLoginService`, has `${activemq.conf}` resolved by the console itself; a note that
/// their placeholders stay literal would mislead.
fn is_jetty_bean(element: &Element) -> bool {
    element.name == "bean"
        && element.attr_value("class").is_some_and(|class| {
            class.starts_with("org.eclipse.jetty.") || class.starts_with("org.apache.activemq.web.")
        })
}

/// The directory relative locations in the file that declared `span` resolve against.
fn directory_of_span(span: &Span) -> PathBuf {
    directory_of(Path::new(span.file.as_path()))
}

/// The configuration file's directory (`activemq.conf`) and the default `activemq.base`: the
/// parent of that directory when it is named `conf` (ActiveMQ's layout), else the directory.
fn launcher_locations(config_file: &Path) -> (PathBuf, PathBuf) {
    let config_dir = std::path::absolute(directory_of(config_file))
        .unwrap_or_else(|_| directory_of(config_file));
    let base = match (config_dir.file_name(), config_dir.parent()) {
        (Some(name), Some(parent)) if name == "conf" => parent.to_path_buf(),
        _ => config_dir.clone(),
    };
    (config_dir, base)
}

impl Environment {
    pub(in crate::config::xml) fn new(config_file: &Path, options: &LoadOptions) -> Self {
        let mut environment = Environment {
            overrides: options.overrides.clone(),
            use_env: options.use_env,
            defaults: BTreeMap::new(),
            embedded_default: false,
        };
        // The built-in set stands for `./conf` only while that is `activemq.conf` by default.
        // A conf directory named with `-D activemq.conf` or `ACTIVEMQ_CONF` is the user's: in
        // ActiveMQ `${activemq.conf}` is the system property the start script sets from
        // `ACTIVEMQ_CONF`, and a properties file missing there is an error (unless
        // `ignoreResourceNotFound`), never a file found somewhere else.
        environment.embedded_default =
            options.embedded_default && environment.named_launcher_value("activemq.conf").is_none();
        let (config_dir, default_base) = launcher_locations(config_file);
        let base = environment.launcher_value("activemq.base", default_base);
        // `activemq.home` and `activemq.data` follow an overridden `activemq.base`.
        let home = environment.launcher_value("activemq.home", PathBuf::from(&base));
        let conf = environment.launcher_value("activemq.conf", config_dir);
        // Through the rule for a given directory: a relative base (an empty `-D activemq.base=`
        // kept as given) puts the data under the working directory, said as an absolute path.
        let derived_data = resolver::launcher_directory(
            "activemq.data",
            Path::new(&base).join("data").to_string_lossy().into_owned(),
        );
        let data = environment.launcher_value("activemq.data", PathBuf::from(derived_data));
        for (name, value) in [
            ("activemq.base", base),
            ("activemq.home", home),
            ("activemq.conf", conf),
            ("activemq.data", data),
        ] {
            environment.defaults.insert(name.to_owned(), value);
        }
        environment
    }

    /// `activemq.base`: `--set activemq.base=...`, else the variable `activemq.base` or
    /// `ACTIVEMQ_BASE` (what ActiveMQ's start script reads), else `default`.
    fn launcher_value(&self, name: &str, default: PathBuf) -> String {
        self.named_launcher_value(name)
            .unwrap_or_else(|| default.to_string_lossy().into_owned())
    }

    /// `name` as the command line or the environment gives it, if either does; a relative
    /// directory made absolute against the working directory ([`resolver::launcher_directory`]).
    fn named_launcher_value(&self, name: &str) -> Option<String> {
        self.named_launcher(name).map(|(value, _)| value)
    }

    /// [`named_launcher_value`](Self::named_launcher_value), with where it was named. An empty
    /// environment variable names nothing ([`Environment::env_var`]), as in ActiveMQ's start
    /// script; an empty `-D` value is kept as given.
    pub(super) fn named_launcher(&self, name: &str) -> Option<(String, LauncherOrigin)> {
        let script_variable = name.replace('.', "_").to_ascii_uppercase();
        let (value, origin) = match self.overrides.get(name) {
            Some(value) => (value.clone(), LauncherOrigin::CommandLine(name.to_owned())),
            None => [name, script_variable.as_str()]
                .into_iter()
                .find_map(|variable| {
                    self.env_var(variable)
                        .map(|value| (value, LauncherOrigin::Variable(variable.to_owned())))
                })?,
        };
        Some((resolver::launcher_directory(name, value), origin))
    }
}

/// Where a launcher directory (`activemq.conf`, ...) was named, for messages about it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum LauncherOrigin {
    /// `-D name=...` (`--set`).
    CommandLine(String),
    /// The environment variable of this name (`ACTIVEMQ_CONF`).
    Variable(String),
}

impl std::fmt::Display for LauncherOrigin {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            LauncherOrigin::CommandLine(name) => write!(f, "`-D {name}` on the command line"),
            LauncherOrigin::Variable(name) => write!(f, "the environment variable {name}"),
        }
    }
}
