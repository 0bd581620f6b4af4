//! jasypt's `Encryptable...PlaceholderConfigurer`: the string encryptor its constructor takes
//! (`StandardPBEStringEncryptor`, with a `config` such as `EnvironmentStringPBEConfig`), read
//! from the beans as ActiveMQ's `activemq-security.xml` declares them, and the decryption of
//! `ENC(...)` property values with it.

use super::resolver::Environment;
use crate::config::jasypt::{self, Algorithm};
use crate::config::tree::{Element, Namespace};

/// The settings of the encryptor an encryptable configurer uses. Its `Debug` omits the password.
#[derive(Clone, PartialEq, Eq)]
pub(super) struct Decryptor {
    /// The algorithm name as configured (jasypt's default when unset).
    algorithm_name: String,
    password: Option<String>,
    /// Where the password comes from, for messages: "environment variable `X`", ...
    password_source: String,
}

impl std::fmt::Debug for Decryptor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Decryptor")
            .field("algorithm_name", &self.algorithm_name)
            .field("password", &self.password.as_ref().map(|_| "<redacted>"))
            .field("password_source", &self.password_source)
            .finish()
    }
}

/// Why an `ENC(...)` value could not be decrypted; never carries the clear value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct DecryptError {
    pub(super) reason: String,
    pub(super) hint: String,
}

impl Decryptor {
    /// Read the encryptor of the configurer `bean` (its constructor argument: a `ref` to a bean
    /// of the document, or an inline bean) and the beans it refers to.
    pub(super) fn of_configurer(root: &Element, bean: &Element, environment: &Environment) -> Self {
        let mut settings = Settings::default();
        for arg in bean.children.iter().filter(|c| c.name == "constructor-arg") {
            if let Some(encryptor) = referenced_bean(root, arg) {
                settings.read(encryptor, root, 0);
            }
        }
        let (password, password_source) = if let Some(name) = &settings.password_env_name {
            (
                std::env::var(name).ok(),
                format!("environment variable `{name}`"),
            )
        } else if let Some(name) = &settings.password_sys_property_name {
            (
                environment.overrides.get(name).cloned(),
                format!("system property `{name}` (--set {name}=...)"),
            )
        } else if settings.password.is_some() {
            (
                settings.password.clone(),
                "the encryptor's `password` property".to_owned(),
            )
        } else {
            (None, NO_PASSWORD_SOURCE.to_owned())
        };
        Decryptor {
            algorithm_name: settings
                .algorithm
                .unwrap_or_else(|| Algorithm::PbeWithMd5AndDes.name().to_owned()),
            password,
            password_source,
        }
    }

    /// The clear text of an `ENC(...)` value (`inner` is what is between the parentheses).
    pub(super) fn decrypt(&self, inner: &str) -> Result<String, DecryptError> {
        let Some(algorithm) = Algorithm::from_name(&self.algorithm_name) else {
            return Err(DecryptError {
                reason: format!(
                    "jasypt algorithm `{}` is not supported",
                    self.algorithm_name
                ),
                hint: format!("use one of {}", Algorithm::SUPPORTED),
            });
        };
        let Some(password) = &self.password else {
            if self.password_source == NO_PASSWORD_SOURCE {
                return Err(DecryptError {
                    reason: "no jasypt password: the configurer has no encryptor password".into(),
                    hint: "give the configurer a <constructor-arg> StandardPBEStringEncryptor \
                           whose config is an EnvironmentStringPBEConfig with passwordEnvName \
                           (as ActiveMQ's activemq-security.xml does)"
                        .into(),
                });
            }
            return Err(DecryptError {
                reason: format!("no jasypt password: {} is not set", self.password_source),
                hint: format!(
                    "set {} to the password the values were encrypted with (`ferromq encrypt`)",
                    self.password_source
                ),
            });
        };
        jasypt::decrypt(algorithm, password, inner).map_err(|err| DecryptError {
            reason: format!("cannot decrypt the ENC(...) value: {err}"),
            hint: format!(
                "check the password in {} and that the value was encrypted with {} \
                 (`ferromq decrypt --password ... --input ...` to try)",
                self.password_source,
                algorithm.name()
            ),
        })
    }
}

#[derive(Default)]
struct Settings {
    algorithm: Option<String>,
    password: Option<String>,
    password_env_name: Option<String>,
    password_sys_property_name: Option<String>,
}

const NO_PASSWORD_SOURCE: &str = "no password setting";

/// Bounds `config` references between beans.
const MAX_REFERENCES: usize = 8;

impl Settings {
    /// Properties of an encryptor or PBE config bean; the encryptor's own values win over its
    /// `config`'s, as in jasypt.
    fn read(&mut self, bean: &Element, root: &Element, depth: usize) {
        if depth > MAX_REFERENCES {
            return;
        }
        let properties = bean
            .children
            .iter()
            .filter(|c| c.ns == Namespace::Beans && c.name == "property");
        let mut config = None;
        for property in properties {
            let Some(name) = property.attr("name").map(|a| a.raw.trim()) else {
                continue;
            };
            let value = property
                .attr("value")
                .map(|a| a.value.trim().to_owned())
                .or_else(|| {
                    property
                        .children_named("value")
                        .next()
                        .map(|v| v.text.trim().to_owned())
                });
            let slot = match name {
                "algorithm" => &mut self.algorithm,
                "password" => &mut self.password,
                "passwordEnvName" => &mut self.password_env_name,
                "passwordSysPropertyName" => &mut self.password_sys_property_name,
                "config" => {
                    config = referenced_bean(root, property);
                    continue;
                }
                _ => continue,
            };
            if slot.is_none() {
                *slot = value;
            }
        }
        if let Some(config) = config {
            self.read(config, root, depth + 1);
        }
    }
}

/// The bean a `<constructor-arg>` or `<property>` names: `ref="id"`, `<ref bean="id"/>`, or an
/// inline `<bean>`.
fn referenced_bean<'a>(root: &'a Element, holder: &'a Element) -> Option<&'a Element> {
    if let Some(id) = holder.attr("ref") {
        return bean_by_id(root, id.value.trim());
    }
    for child in &holder.children {
        match child.name.as_str() {
            "bean" => return Some(child),
            "ref" => {
                let id = child.attr("bean").or_else(|| child.attr("local"))?;
                return bean_by_id(root, id.value.trim());
            }
            _ => {}
        }
    }
    None
}

fn bean_by_id<'a>(element: &'a Element, id: &str) -> Option<&'a Element> {
    if element.name == "bean" && element.attr("id").is_some_and(|a| a.value.trim() == id) {
        return Some(element);
    }
    element.children.iter().find_map(|c| bean_by_id(c, id))
}
