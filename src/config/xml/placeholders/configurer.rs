//! Placeholder configurer declarations: Spring beans of class `PropertyPlaceholderConfigurer`,
//! `PropertySourcesPlaceholderConfigurer` (and jasypt's `Encryptable...` subclasses), and
//! `<context:property-placeholder>`; their settings and the `.properties` files they name.

use std::collections::BTreeMap;
use std::path::PathBuf;

use super::directory_of_span;
use super::encryption::Decryptor;
use super::resolver::{Environment, Source};
use crate::config::diagnostic::{Diagnostic, Diagnostics, Span};
use crate::config::properties;
use crate::config::tree::{Element, Namespace};
use crate::config::values::parse_bool;
use crate::config::xml::resource_path;

const NS_SPRING_CONTEXT: &str = "http://www.springframework.org/schema/context";

/// Which Spring class, which decides the lookup order.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    /// `PropertyPlaceholderConfigurer`: files, then system properties by `mode`.
    Legacy(SystemPropertiesMode),
    /// `PropertySourcesPlaceholderConfigurer`: Spring's environment, then files.
    Sources,
}

/// `systemPropertiesMode` of a `PropertyPlaceholderConfigurer`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum SystemPropertiesMode {
    Never,
    Fallback,
    Override,
}

/// A location string as written, with where it was written.
struct Location {
    raw: String,
    span: Span,
}

/// One declared placeholder configurer.
pub(super) struct Configurer {
    /// Child indexes from the root down to the declaring element.
    pub(super) path: Vec<usize>,
    kind: Kind,
    pub(super) ignore_unresolvable: bool,
    ignore_resource_not_found: bool,
    /// Inline properties override the files instead of the reverse.
    local_override: bool,
    /// `searchSystemEnvironment` (PropertyPlaceholderConfigurer only; default true).
    search_environment: bool,
    locations: Vec<Location>,
    local_properties: Vec<(String, String)>,
    /// jasypt's `Encryptable...` configurers: the encryptor that decrypts `ENC(...)` values.
    pub(super) decryptor: Option<Decryptor>,
}

/// The properties a configurer contributes and the files they came from.
pub(super) struct LoadedProperties {
    pub(super) properties: BTreeMap<String, String>,
    pub(super) files: Vec<PathBuf>,
}

/// Every configurer under `root`, in document order.
pub(super) fn find(
    root: &Element,
    environment: &Environment,
    diagnostics: &mut Diagnostics,
) -> Vec<Configurer> {
    let mut found = Vec::new();
    walk(
        root,
        root,
        &mut Vec::new(),
        environment,
        diagnostics,
        &mut found,
    );
    found
}

fn walk(
    root: &Element,
    element: &Element,
    path: &mut Vec<usize>,
    environment: &Environment,
    diagnostics: &mut Diagnostics,
    found: &mut Vec<Configurer>,
) {
    if let Some(kind) = bean_kind(element) {
        let mut configurer = from_bean(element, kind, path.clone(), environment, diagnostics);
        if is_encryptable(element) {
            configurer.decryptor = Some(Decryptor::of_configurer(root, element, environment));
        }
        found.push(configurer);
        return;
    }
    if is_context_placeholder(element) {
        found.push(from_context_element(
            element,
            path.clone(),
            environment,
            diagnostics,
        ));
        return;
    }
    for (index, child) in element.children.iter().enumerate() {
        path.push(index);
        walk(root, child, path, environment, diagnostics, found);
        path.pop();
    }
}

/// The configurer kind of a `<bean class="...">`, by simple class name so that the Spring,
/// jasypt and older package names all match.
fn bean_kind(element: &Element) -> Option<Kind> {
    if element.ns != Namespace::Beans || element.name != "bean" {
        return None;
    }
    let class = element.attr("class")?.raw.trim();
    let simple_name = class.rsplit('.').next().unwrap_or(class);
    match simple_name {
        "PropertyPlaceholderConfigurer"
        | "EncryptablePropertyPlaceholderConfigurer"
        | "PreferencesPlaceholderConfigurer" => Some(Kind::Legacy(SystemPropertiesMode::Fallback)),
        "PropertySourcesPlaceholderConfigurer"
        | "EncryptablePropertySourcesPlaceholderConfigurer" => Some(Kind::Sources),
        _ => None,
    }
}

/// jasypt's configurers (`EncryptablePropertyPlaceholderConfigurer`, ...).
fn is_encryptable(bean: &Element) -> bool {
    bean.attr("class").is_some_and(|class| {
        let class = class.raw.trim();
        class
            .rsplit('.')
            .next()
            .unwrap_or(class)
            .starts_with("Encryptable")
    })
}

fn is_context_placeholder(element: &Element) -> bool {
    element.name == "property-placeholder"
        && element.ns == Namespace::Other(NS_SPRING_CONTEXT.to_owned())
}

fn new_configurer(kind: Kind, path: Vec<usize>) -> Configurer {
    Configurer {
        path,
        kind,
        ignore_unresolvable: false,
        ignore_resource_not_found: false,
        local_override: false,
        search_environment: true,
        locations: Vec::new(),
        local_properties: Vec::new(),
        decryptor: None,
    }
}

fn from_bean(
    bean: &Element,
    kind: Kind,
    path: Vec<usize>,
    environment: &Environment,
    diagnostics: &mut Diagnostics,
) -> Configurer {
    let mut configurer = new_configurer(kind, path);
    let properties = bean
        .children
        .iter()
        .filter(|c| c.ns == Namespace::Beans && c.name == "property");
    for property in properties {
        let Some(name) = property.attr("name").map(|a| a.raw.trim()) else {
            continue;
        };
        let values = property_values(property);
        let mut flag = |target: &mut bool| {
            if let Some((raw, span)) = values.first() {
                if let Some(value) = setting_bool(raw, span, environment, diagnostics) {
                    *target = value;
                }
            }
        };
        match name {
            "location" | "locations" => {
                configurer
                    .locations
                    .extend(values.iter().map(|(raw, span)| Location {
                        raw: raw.clone(),
                        span: span.clone(),
                    }));
            }
            "ignoreUnresolvablePlaceholders" => flag(&mut configurer.ignore_unresolvable),
            "ignoreResourceNotFound" => flag(&mut configurer.ignore_resource_not_found),
            "localOverride" => flag(&mut configurer.local_override),
            "searchSystemEnvironment" => flag(&mut configurer.search_environment),
            "systemPropertiesModeName" | "systemPropertiesMode" => {
                if let Some((raw, span)) = values.first() {
                    configurer.kind = legacy_mode(configurer.kind, raw, span, diagnostics);
                }
            }
            "properties" => configurer.local_properties = inline_properties(property),
            _ => {}
        }
    }
    configurer
}

/// `<context:property-placeholder location="a.properties,b.properties" .../>`.
fn from_context_element(
    element: &Element,
    path: Vec<usize>,
    environment: &Environment,
    diagnostics: &mut Diagnostics,
) -> Configurer {
    let mut configurer = new_configurer(Kind::Sources, path);
    for attr in &element.attrs {
        let mut flag = |target: &mut bool| {
            if let Some(value) = setting_bool(&attr.raw, &attr.value_span, environment, diagnostics)
            {
                *target = value;
            }
        };
        match attr.name.as_str() {
            "location" => {
                configurer.locations.extend(
                    attr.raw
                        .split(',')
                        .map(str::trim)
                        .filter(|l| !l.is_empty())
                        .map(|raw| Location {
                            raw: raw.to_owned(),
                            span: attr.value_span.clone(),
                        }),
                );
            }
            "ignore-unresolvable" => flag(&mut configurer.ignore_unresolvable),
            "ignore-resource-not-found" => flag(&mut configurer.ignore_resource_not_found),
            "local-override" => flag(&mut configurer.local_override),
            "system-properties-mode" if attr.raw.trim() != "ENVIRONMENT" => {
                configurer.kind = legacy_mode(
                    Kind::Legacy(SystemPropertiesMode::Fallback),
                    &attr.raw,
                    &attr.value_span,
                    diagnostics,
                );
            }
            _ => {}
        }
    }
    configurer
}

/// The values of a `<property>`: its `value` attribute, or its `<value>` children, directly or
/// inside `<list>`, `<set>` or `<array>`.
fn property_values(property: &Element) -> Vec<(String, Span)> {
    if let Some(attr) = property.attr("value") {
        return vec![(attr.raw.clone(), attr.value_span.clone())];
    }
    let mut values = Vec::new();
    for child in &property.children {
        match child.name.as_str() {
            "value" => values.push((child.text.clone(), child.span.clone())),
            "list" | "set" | "array" => values.extend(
                child
                    .children_named("value")
                    .map(|v| (v.text.clone(), v.span.clone())),
            ),
            _ => {}
        }
    }
    values
}

/// `<property name="properties">` with `<props><prop key="k">v</prop></props>` or a
/// `.properties`-formatted `<value>`.
fn inline_properties(property: &Element) -> Vec<(String, String)> {
    let mut out = Vec::new();
    let add_text = |out: &mut Vec<(String, String)>, text: &str| {
        if let Ok(parsed) = properties::parse(text) {
            out.extend(parsed.into_iter().map(|p| (p.key, p.value)));
        }
    };
    if let Some(attr) = property.attr("value") {
        add_text(&mut out, &attr.raw);
    }
    for child in &property.children {
        match child.name.as_str() {
            "props" => {
                for prop in child.children_named("prop") {
                    if let Some(key) = prop.attr("key") {
                        out.push((key.raw.clone(), prop.text.clone()));
                    }
                }
            }
            "value" => add_text(&mut out, &child.text),
            _ => {}
        }
    }
    out
}

fn setting_bool(
    raw: &str,
    span: &Span,
    environment: &Environment,
    diagnostics: &mut Diagnostics,
) -> Option<bool> {
    let text = match environment.resolve_location(raw) {
        Ok(text) => text,
        Err(err) => {
            diagnostics.push(Diagnostic::error(span.clone(), err.to_string()));
            return None;
        }
    };
    match parse_bool(&text) {
        Ok(value) => Some(value),
        Err(err) => {
            diagnostics.push(err.into_diagnostic(span.clone()));
            None
        }
    }
}

fn legacy_mode(current: Kind, raw: &str, span: &Span, diagnostics: &mut Diagnostics) -> Kind {
    let mode = match raw.trim().trim_start_matches("SYSTEM_PROPERTIES_MODE_") {
        "NEVER" | "0" => SystemPropertiesMode::Never,
        "FALLBACK" | "1" => SystemPropertiesMode::Fallback,
        "OVERRIDE" | "2" => SystemPropertiesMode::Override,
        _ => {
            diagnostics.push(
                Diagnostic::error(
                    span.clone(),
                    format!("unknown system properties mode `{raw}`"),
                )
                .with_hint(
                    "use SYSTEM_PROPERTIES_MODE_FALLBACK (the default), _OVERRIDE or _NEVER",
                ),
            );
            return current;
        }
    };
    match current {
        Kind::Legacy(_) => Kind::Legacy(mode),
        // PropertySourcesPlaceholderConfigurer has no such mode; Spring ignores it there.
        Kind::Sources => Kind::Sources,
    }
}

impl Configurer {
    /// The sources a placeholder is looked up in, in Spring's order for this configurer.
    pub(super) fn lookup_order(&self) -> Vec<Source> {
        let system = |relaxed: bool, with_env: bool| {
            let mut sources = vec![Source::Overrides];
            if with_env {
                sources.push(Source::Env { relaxed });
            }
            sources.push(Source::Defaults);
            sources
        };
        match self.kind {
            Kind::Legacy(SystemPropertiesMode::Never) => vec![Source::Files],
            Kind::Legacy(SystemPropertiesMode::Fallback) => {
                let mut order = vec![Source::Files];
                order.extend(system(false, self.search_environment));
                order
            }
            Kind::Legacy(SystemPropertiesMode::Override) => {
                let mut order = system(false, self.search_environment);
                order.push(Source::Files);
                order
            }
            Kind::Sources if self.local_override => {
                let mut order = vec![Source::Files];
                order.extend(system(true, true));
                order
            }
            Kind::Sources => {
                let mut order = system(true, true);
                order.push(Source::Files);
                order
            }
        }
    }

    /// Read the configurer's properties files (recording each in `files`) and merge them with
    /// its inline properties: later files override earlier ones; inline properties are
    /// overridden by the files unless `localOverride` is set (Spring's `mergeProperties`).
    pub(super) fn load_properties(
        &self,
        environment: &Environment,
        files: &mut Vec<PathBuf>,
        diagnostics: &mut Diagnostics,
    ) -> LoadedProperties {
        let mut merged = BTreeMap::new();
        let mut loaded_files = Vec::new();
        if !self.local_override {
            merged.extend(self.local_properties.iter().cloned());
        }
        for location in &self.locations {
            if let Some((path, properties)) = self.load_location(location, environment, diagnostics)
            {
                merged.extend(properties);
                files.push(path.clone());
                loaded_files.push(path);
            }
        }
        if self.local_override {
            merged.extend(self.local_properties.iter().cloned());
        }
        LoadedProperties {
            properties: merged,
            files: loaded_files,
        }
    }

    fn load_location(
        &self,
        location: &Location,
        environment: &Environment,
        diagnostics: &mut Diagnostics,
    ) -> Option<(PathBuf, BTreeMap<String, String>)> {
        let at = || location.span.clone();
        let (text, from_command_line) = match environment.resolve_location_noting(&location.raw) {
            Ok(resolved) => resolved,
            Err(err) => {
                diagnostics.push(Diagnostic::error(at(), err.to_string()).with_hint(
                    "a configurer's location is resolved against --set/-D values, environment \
                     variables and the activemq.* defaults only",
                ));
                return None;
            }
        };
        let path = match resource_path(&text, &directory_of_span(&location.span)) {
            Ok(path) => path,
            Err(message) => {
                diagnostics.push(Diagnostic::error(at(), message));
                return None;
            }
        };
        let bytes = match crate::config::embedded::read(&path, environment.embedded_default) {
            Ok((bytes, _)) => bytes,
            Err(err)
                if err.kind() == std::io::ErrorKind::NotFound && self.ignore_resource_not_found =>
            {
                return None;
            }
            Err(err) => {
                // As a value's diagnostics say it (`Ctx::push`): the file alone does not show
                // that `-D activemq.conf=` made the path.
                let given = if from_command_line.is_empty() {
                    String::new()
                } else {
                    let names: Vec<String> = from_command_line
                        .iter()
                        .map(|name| format!("`-D {name}`"))
                        .collect();
                    format!(
                        " (the location's value comes from {} on the command line)",
                        names.join(", ")
                    )
                };
                diagnostics.push(
                    Diagnostic::error(
                        at(),
                        format!(
                            "cannot read properties file `{}` of the placeholder configurer: \
                             {err}{given}",
                            path.display()
                        ),
                    )
                    .with_hint(missing_file_hint(
                        &location.raw,
                        &location.span,
                        environment,
                    )),
                );
                return None;
            }
        };
        match properties::to_map(&decode_properties_text(bytes)) {
            Ok(map) => Some((path, map)),
            Err(err) => {
                diagnostics.push(
                    Diagnostic::error(at(), format!("properties file `{}`: {err}", path.display()))
                        .with_hint("a \\u escape needs four hexadecimal digits, e.g. \\u00e9"),
                );
                None
            }
        }
    }
}

/// `.properties` files are ISO-8859-1 for `java.util.Properties`; most are ASCII or UTF-8 in
/// practice. Read UTF-8 when the bytes are UTF-8, else ISO-8859-1 (every byte is a character).
fn decode_properties_text(bytes: Vec<u8>) -> String {
    String::from_utf8(bytes)
        .unwrap_or_else(|err| err.into_bytes().into_iter().map(char::from).collect())
}

/// The hint of a properties file that cannot be read at `raw` (the location as written, at
/// `span`). A location under `${activemq.conf}` that the command line or the environment names
/// (`-D activemq.conf=DIR`, `ACTIVEMQ_CONF=DIR`) says which of them named it: the file is to
/// be created there, or the value left out to read `./conf` (and, with no file named, the
/// built-in default's files). The built-in configuration is no file on disk whose location
/// could be changed: `ferromq init` writes one out.
fn missing_file_hint(raw: &str, span: &Span, environment: &Environment) -> String {
    let general = if span.builtin {
        "create the file, or write the configuration out with `ferromq init` and change the \
         location there (the built-in configuration is no file on disk to edit)"
            .to_owned()
    } else {
        // A launcher directory given relative was made absolute against the working
        // directory before the location was resolved against this file's directory.
        let names_a_given_directory = [
            "activemq.base",
            "activemq.home",
            "activemq.conf",
            "activemq.data",
        ]
        .iter()
        .any(|name| {
            raw.contains(&format!("${{{name}}}")) && environment.named_launcher(name).is_some()
        });
        let relative = if names_a_given_directory {
            "a relative location is relative to this XML file's directory, a relative \
             activemq.* directory in it to the working directory"
        } else {
            "a relative location is relative to this XML file's directory"
        };
        format!(
            "fix the location ({relative}), create the file, or set the bean property \
             ignoreResourceNotFound to true"
        )
    };
    const UNSET: &str = "leave activemq.conf unset to read ./conf (the built-in default's \
                         files when no file is named and there is none)";
    match environment
        .named_launcher("activemq.conf")
        .filter(|_| raw.contains("${activemq.conf}"))
    {
        Some((dir, origin)) if dir.is_empty() => format!(
            "`${{activemq.conf}}` is empty here, as {origin} gives it: name the directory \
             that holds the file, or {UNSET}; else {general}"
        ),
        Some((dir, origin)) => format!(
            "`${{activemq.conf}}` is `{dir}` here, named by {origin}: create the file in that \
             directory (an empty one will do when the placeholders it would set have \
             defaults), or {UNSET}; else {general}"
        ),
        None => general,
    }
}
