//! What the compiler builds from security sections: TLS material, authentication plugins,
//! JAAS login.config and its files, authorization entries.

use std::path::Path;

use super::tests::{connectors, has, load, load_in, messages, options, valid};
use crate::config::model::*;

fn write(dir: &Path, name: &str, contents: impl AsRef<[u8]>) {
    let path = dir.join(name);
    if let Some(parent) = path.parent() {
        std::fs::create_dir_all(parent).expect("mkdir");
    }
    std::fs::write(path, contents).expect("write");
}

fn self_signed() -> (String, String) {
    let certified = rcgen::generate_simple_self_signed(vec!["localhost".into()]).expect("rcgen");
    (certified.cert.pem(), certified.key_pair.serialize_pem())
}

#[test]
fn tls_pem_with_separate_key_and_trust_store() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (cert, key) = self_signed();
    write(dir.path(), "tls/cert.pem", &cert);
    write(dir.path(), "tls/key.pem", &key);
    write(dir.path(), "tls/ca.pem", &cert);
    let inner = format!(
        "<sslContext><sslContext keyStore=\"file:tls/cert.pem\" ferromq:keyFile=\"tls/key.pem\" trustStore=\"tls/ca.pem\"/></sslContext>{}",
        connectors(&["mqtt+ssl://0.0.0.0:8883?transport.needClientAuth=true", "wss://0.0.0.0:8884"])
    );
    let config = valid(load_in(dir.path(), "", &inner, &options()));
    let ssl = config.ssl.as_ref().expect("ssl");
    let key_store = ssl.key_store.as_ref().expect("key store");
    assert_eq!(key_store.kind, StoreKind::Pem);
    assert_eq!(key_store.path, dir.path().join("tls/cert.pem"));
    assert_eq!(
        key_store.key_file.as_deref(),
        Some(dir.path().join("tls/key.pem").as_path())
    );
    assert_eq!(
        ssl.trust_store.as_ref().map(|t| t.kind),
        Some(StoreKind::Pem)
    );
    assert!(config.listeners[0].options.need_client_auth);
    for file in ["tls/cert.pem", "tls/key.pem", "tls/ca.pem"] {
        assert!(
            config.files.contains(&dir.path().join(file)),
            "{file} in files"
        );
    }
}

#[test]
fn tls_store_kinds_and_missing_keys() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (cert, key) = self_signed();
    write(dir.path(), "combined.pem", format!("{cert}{key}"));
    write(dir.path(), "cert-only.pem", &cert);
    write(dir.path(), "store.bin", [0x30u8, 0x82, 0x01, 0x00]);
    let listener = connectors(&["mqtt+ssl://0.0.0.0:8883"]);
    let with = |attrs: &str| {
        load_in(
            dir.path(),
            "",
            &format!("<sslContext><sslContext {attrs}/></sslContext>{listener}"),
            &options(),
        )
    };
    let combined = valid(with("keyStore=\"combined.pem\""));
    assert_eq!(
        combined.ssl.and_then(|s| s.key_store).map(|k| k.kind),
        Some(StoreKind::Pem)
    );
    let p12 = valid(with("keyStore=\"store.bin\" keyStorePassword=\"secret\""));
    let store = p12.ssl.and_then(|s| s.key_store).expect("store");
    assert_eq!(store.kind, StoreKind::Pkcs12);
    assert_eq!(store.password.as_ref().map(Secret::expose), Some("secret"));
    assert!(
        !format!("{store:?}").contains("secret"),
        "passwords never print"
    );
    assert!(has(
        &with("keyStore=\"cert-only.pem\"").diagnostics,
        "holds no private key"
    ));
    assert!(has(
        &with("keyStore=\"missing.p12\"").diagnostics,
        "cannot read keyStore"
    ));
    assert!(has(
        &with("keyStore=\"combined.pem\" keyStoreType=\"bks\"").diagnostics,
        "unknown store type"
    ));
    let no_ssl = load_in(dir.path(), "", &listener, &options());
    assert!(has(&no_ssl.diagnostics, "needs a server certificate"));
}

const AUTHZ: &str = r#"<authorizationPlugin><map><authorizationMap>
    <authorizationEntries>
        <authorizationEntry topic="USERS.>,GUEST.>" read="users" write="users, admins" admin="admins"/>
        <authorizationEntry queue=">" read="admins" groupClass="org.apache.activemq.jaas.UserPrincipal"/>
    </authorizationEntries>
    <defaultEntry><authorizationEntry read="*"/></defaultEntry>
    <tempDestinationAuthorizationEntry><tempDestinationAuthorizationEntry read="admins" write="admins" admin="admins"/></tempDestinationAuthorizationEntry>
</authorizationMap></map></authorizationPlugin>"#;

#[test]
fn simple_authentication_and_authorization() {
    let inner = format!(
        r#"<plugins><simpleAuthenticationPlugin anonymousAccessAllowed="true" anonymousGroup="guests">
            <users><authenticationUser username="admin" password="pw" groups="admins, users"/></users>
        </simpleAuthenticationPlugin>{AUTHZ}</plugins>{}"#,
        connectors(&["mqtt://0.0.0.0:1883"])
    );
    let config = valid(load(&inner));
    let Authentication::Simple(simple) = &config.authentication else {
        panic!("simple authentication expected");
    };
    assert!(simple.anonymous_access_allowed);
    assert_eq!(
        (
            simple.anonymous_user.as_str(),
            simple.anonymous_group.as_str()
        ),
        ("anonymous", "guests")
    );
    assert_eq!(simple.users[0].username, "admin");
    assert_eq!(simple.users[0].password.expose(), "pw");
    assert_eq!(simple.users[0].groups, vec!["admins", "users"]);
    let authz = config.authorization.expect("authorization");
    assert_eq!(authz.entries[0].patterns, vec!["USERS.>", "GUEST.>"]);
    assert_eq!(authz.entries[0].write, vec!["users", "admins"]);
    assert_eq!(
        (authz.entries[1].kind, authz.entries[1].principal_kind),
        (DestinationKind::Queue, PrincipalKind::User)
    );
    assert_eq!(authz.entries[0].principal_kind, PrincipalKind::Group);
    let default = authz.default_entry.expect("default entry");
    assert_eq!(
        (default.patterns.clone(), default.read.clone()),
        (vec![">".to_owned()], vec!["*".to_owned()])
    );
    assert_eq!(
        authz.temp_entry.map(|t| t.kind),
        Some(DestinationKind::TempTopic)
    );
}

#[test]
fn two_authentication_plugins_are_an_error() {
    let loaded =
        load("<plugins><simpleAuthenticationPlugin/><simpleAuthenticationPlugin/></plugins>");
    assert!(has(&loaded.diagnostics, "a second authentication plugin"));
}

/// An authorization map written as a Spring bean (ActiveMQ's legacy `LDAPAuthorizationMap`) is
/// refused at the bean, naming its class and the element ferromq reads instead.
#[test]
fn an_authorization_map_bean_is_refused_by_its_class() {
    let loaded = load(
        r#"<plugins><authorizationPlugin><map>
            <bean xmlns="http://www.springframework.org/schema/beans" id="ldap"
                  class="org.apache.activemq.security.LDAPAuthorizationMap"/>
        </map></authorizationPlugin></plugins>"#,
    );
    let shown = format!("{:?}", loaded.diagnostics);
    assert!(
        has(
            &loaded.diagnostics,
            "`org.apache.activemq.security.LDAPAuthorizationMap`"
        ),
        "{shown}"
    );
    assert!(shown.contains("cachedLDAPAuthorizationMap"), "{shown}");
    assert!(!has(&loaded.diagnostics, "without a <map>"), "{shown}");
}

const LOGIN_CONFIG: &str = r#"
activemq {
    org.apache.activemq.jaas.PropertiesLoginModule sufficient
        org.apache.activemq.jaas.properties.user="users.properties"
        org.apache.activemq.jaas.properties.group="${activemq.conf}/groups.properties"
        reload=true;
    org.apache.activemq.jaas.GuestLoginModule optional
        org.apache.activemq.jaas.guest.user="visitor"
        credentialsInvalidate=true;
};
activemq-ssl {
    org.apache.activemq.jaas.TextFileCertificateLoginModule required
        org.apache.activemq.jaas.textfiledn.user="dns.properties"
        org.apache.activemq.jaas.textfiledn.group="groups.properties";
};
broken {
    com.example.LdapLoginModule required;
    com.example.OtherModule optional;
};
"#;

fn jaas_dir() -> tempfile::TempDir {
    let dir = tempfile::tempdir().expect("tempdir");
    write(dir.path(), "login.config", LOGIN_CONFIG);
    write(dir.path(), "users.properties", "admin=secret\nalice=pw\n");
    write(dir.path(), "dns.properties", "admin=CN=admin,O=Example\n");
    write(
        dir.path(),
        "groups.properties",
        "admins=admin\nusers=alice,bob\n",
    );
    dir
}

#[test]
fn jaas_properties_and_guest_modules() {
    let dir = jaas_dir();
    let inner = format!(
        "<plugins><jaasAuthenticationPlugin/></plugins>{}",
        connectors(&["mqtt://0.0.0.0:1883"])
    );
    let loaded = load_in(dir.path(), "", &inner, &options());
    assert!(
        messages(&loaded.diagnostics)
            .iter()
            .any(|m| m.starts_with("warning: group `users` lists `bob`")),
        "{}",
        loaded.diagnostics
    );
    let config = valid(loaded);
    let Authentication::Jaas(jaas) = &config.authentication else {
        panic!("jaas expected");
    };
    assert_eq!(jaas.configuration, "activemq");
    let LoginModuleKind::Properties {
        users_file,
        groups_file,
        reload,
    } = &jaas.modules[0].kind
    else {
        panic!("properties module expected");
    };
    assert_eq!(users_file, &dir.path().join("users.properties"));
    assert_eq!(groups_file, &dir.path().join("groups.properties"));
    assert!(*reload);
    assert_eq!(jaas.modules[0].flag, "sufficient");
    let LoginModuleKind::Guest {
        user,
        group,
        credentials_invalidate,
    } = &jaas.modules[1].kind
    else {
        panic!("guest module expected");
    };
    assert_eq!(
        (user.as_str(), group.as_str(), *credentials_invalidate),
        ("visitor", "guests", true)
    );
    for file in ["login.config", "users.properties", "groups.properties"] {
        assert!(
            config.files.contains(&dir.path().join(file)),
            "{file} in files"
        );
    }
}

#[test]
fn jaas_dual_and_login_config_from_a_property() {
    let dir = jaas_dir();
    // Only the property can find it: it is not called login.config.
    std::fs::rename(
        dir.path().join("login.config"),
        dir.path().join("custom.conf"),
    )
    .expect("rename");
    let elsewhere = tempfile::tempdir().expect("tempdir");
    let mut opts = options();
    opts.overrides.insert(
        "java.security.auth.login.config".into(),
        dir.path().join("custom.conf").display().to_string(),
    );
    // login.config expands ${activemq.conf}; point it at the same directory.
    opts.overrides
        .insert("activemq.conf".into(), dir.path().display().to_string());
    let inner = format!(
        "<plugins><jaasDualAuthenticationPlugin/></plugins>{}",
        connectors(&["mqtt://0.0.0.0:1883"])
    );
    let config = valid(load_in(elsewhere.path(), "", &inner, &opts));
    let Authentication::JaasDual {
        password,
        certificate,
    } = &config.authentication
    else {
        panic!("dual expected");
    };
    assert_eq!(
        (
            password.configuration.as_str(),
            certificate.configuration.as_str()
        ),
        ("activemq", "activemq-ssl")
    );
    assert!(matches!(
        certificate.modules[0].kind,
        LoginModuleKind::TextFileCertificate { .. }
    ));
}

#[test]
fn jaas_unsupported_modules_fail_closed_and_missing_entries_suggest() {
    let dir = jaas_dir();
    let broken = load_in(
        dir.path(),
        "",
        "<plugins><jaasAuthenticationPlugin configuration=\"broken\"/></plugins>",
        &options(),
    );
    let found = messages(&broken.diagnostics);
    assert!(
        found
            .iter()
            .any(|m| m
                .starts_with("error: login module `com.example.LdapLoginModule` is not supported")),
        "{found:?}"
    );
    assert!(
        found
            .iter()
            .any(|m| m.starts_with("warning: login module `com.example.OtherModule`")),
        "{found:?}"
    );
    let typo = load_in(
        dir.path(),
        "",
        "<plugins><jaasAuthenticationPlugin configuration=\"activemq-sl\"/></plugins>",
        &options(),
    );
    let d = typo
        .diagnostics
        .0
        .iter()
        .find(|d| d.message.contains("has no entry"))
        .expect("entry error");
    assert_eq!(d.hint.as_deref(), Some("did you mean `activemq-ssl`?"));
}

#[test]
fn entries_for_temporary_destinations_are_warned_as_never_consulted() {
    let loaded = load(
        "<plugins><authorizationPlugin><map><authorizationMap><authorizationEntries>\
         <authorizationEntry tempQueue=\">\" read=\"g\"/>\
         <authorizationEntry queue=\"orders.>\" read=\"g\"/>\
         </authorizationEntries>\
         <tempDestinationAuthorizationEntry><tempDestinationAuthorizationEntry read=\"g\" write=\"g\" admin=\"g\"/></tempDestinationAuthorizationEntry>\
         </authorizationMap></map></authorizationPlugin></plugins>",
    );
    let d = &loaded.diagnostics;
    assert!(!d.has_errors(), "{d}");
    let warned: Vec<_> = d
        .warnings()
        .filter(|w| {
            w.message
                .contains("temporary destinations is never consulted")
        })
        .collect();
    assert_eq!(warned.len(), 1, "{d}");
    let config = valid(loaded);
    let authz = config.authorization.expect("authorization");
    assert_eq!(authz.entries[1].kind, DestinationKind::Queue);
    assert!(authz.temp_entry.is_some());
}
