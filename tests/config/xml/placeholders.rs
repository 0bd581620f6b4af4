//! `${...}` placeholders: configurer beans, properties files, lookup order and errors.

use super::*;

#[test]
fn placeholders_come_from_properties_files_with_nesting_and_defaults() {
    let conf = placeholder_conf();
    let doc = load_ok(&conf.join("activemq.xml"), &no_env());
    let broker = find(&doc.root, "broker");
    // Nested: broker.name=${activemq.username}-broker.
    assert_eq!(value(broker, "brokerName"), "system-broker");
    assert_eq!(
        broker.attr("brokerName").expect("attr").raw,
        "${broker.name}"
    );
    // activemq.base is the parent of `conf`; activemq.data = base/data.
    let base = fixtures().join("placeholders");
    assert_eq!(
        value(broker, "dataDirectory"),
        format!("{}/kahadb", base.join("data").display())
    );
    let user = find(broker, "authenticationUser");
    assert_eq!(value(user, "username"), "system");
    assert_eq!(value(user, "password"), "manager");
    assert_eq!(value(user, "groups"), "admins,users");
    // The later file (tuning.properties) overrides mqtt.port.
    assert_eq!(
        value(find(broker, "transportConnector"), "uri"),
        "mqtt://127.0.0.1:1884?transport.defaultKeepAlive=60000"
    );
    assert_eq!(
        doc.files,
        vec![
            conf.join("activemq.xml"),
            conf.join("credentials.properties"),
            conf.join("tuning.properties"),
        ]
    );
    assert_eq!(
        doc.properties.get("broker.name").map(String::as_str),
        Some("system-broker")
    );
    assert_eq!(
        doc.properties.get("activemq.conf").map(PathBuf::from),
        Some(conf.clone())
    );
}

#[test]
fn overrides_fill_gaps_but_files_win_with_the_default_configurer() {
    let mut options = no_env();
    options.overrides.insert("mqtt.port".into(), "9999".into());
    options.overrides.insert("groups".into(), "ops".into());
    options
        .overrides
        .insert("activemq.base".into(), "/opt/amq".into());
    let doc = load_ok(&placeholder_conf().join("activemq.xml"), &options);
    let broker = find(&doc.root, "broker");
    // PropertyPlaceholderConfigurer's default mode is FALLBACK: files first.
    assert!(value(find(broker, "transportConnector"), "uri").contains(":1884?"));
    // Not in the files: the override beats the `${groups:admins,users}` default.
    assert_eq!(value(find(broker, "authenticationUser"), "groups"), "ops");
    // activemq.data follows an overridden activemq.base.
    assert_eq!(value(broker, "dataDirectory"), "/opt/amq/data/kahadb");
}

const CONFIGURER_HEAD: &str = "<beans xmlns=\"http://www.springframework.org/schema/beans\">\n\
  <bean class=\"org.springframework.beans.factory.config.PropertyPlaceholderConfigurer\">\n\
    <property name=\"location\" value=\"credentials.properties\"/>\n";

fn with_configurer(extra_properties: &str, body: &str) -> String {
    format!("{CONFIGURER_HEAD}{extra_properties}  </bean>\n{body}\n</beans>\n")
}

#[test]
fn sources_configurer_puts_overrides_before_files() {
    let xml = "<beans xmlns=\"http://www.springframework.org/schema/beans\">\n\
      <bean class=\"org.springframework.context.support.PropertySourcesPlaceholderConfigurer\">\n\
        <property name=\"location\" value=\"credentials.properties\"/>\n  </bean>\n\
      <x port=\"${mqtt.port}\" user=\"${activemq.username}\"/>\n</beans>";
    let mut options = no_env();
    options.overrides.insert("mqtt.port".into(), "9999".into());
    let (doc, diagnostics) = load_in(&placeholder_conf(), xml, &options);
    assert!(!diagnostics.has_errors(), "{diagnostics}");
    let x = find(&doc.expect("document").root, "x").clone();
    assert_eq!((value(&x, "port"), value(&x, "user")), ("9999", "system"));
}

#[test]
fn environment_variables_come_last_and_can_be_turned_off() {
    std::env::set_var("FERROMQ_XML_TEST_ONLY_IN_ENV", "from-env");
    std::env::set_var("activemq.username", "env-user");
    let xml = with_configurer(
        "",
        "<x a=\"${FERROMQ_XML_TEST_ONLY_IN_ENV}\" u=\"${activemq.username}\"/>",
    );
    let with_env = LoadOptions::default();
    let (doc, diagnostics) = load_in(&placeholder_conf(), &xml, &with_env);
    assert!(!diagnostics.has_errors(), "{diagnostics}");
    let x = find(&doc.expect("document").root, "x").clone();
    // The file's activemq.username wins over the environment's.
    assert_eq!((value(&x, "a"), value(&x, "u")), ("from-env", "system"));

    let (_, diagnostics) = load_in(&placeholder_conf(), &xml, &no_env());
    assert_eq!(
        only_error(&diagnostics).message,
        "unresolved placeholder `${FERROMQ_XML_TEST_ONLY_IN_ENV}`"
    );
}

#[test]
fn an_unresolved_placeholder_is_an_error_at_the_attribute_value() {
    let xml = with_configurer("", "  <broker brokerName=\"${no.such.key}\"/>");
    let (doc, diagnostics) = load_in(&placeholder_conf(), &xml, &no_env());
    let error = only_error(&diagnostics);
    assert_eq!(
        position(error),
        (placeholder_conf().join("<memory>.xml"), 5, 23)
    );
    assert_eq!(error.message, "unresolved placeholder `${no.such.key}`");
    let hint = error.hint.as_deref().expect("hint");
    assert!(hint.contains("credentials.properties"), "{hint}");
    assert!(hint.contains("--set/-D values"), "{hint}");
    // The raw text stays in the tree.
    let broker = find(&doc.expect("document").root, "broker").clone();
    assert_eq!(value(&broker, "brokerName"), "${no.such.key}");
}

/// `${header.x}` in a `<camelContext>` is Camel's Simple language, which Spring's configurer
/// never resolves: no error, the text kept as written (seen in a published activemq.xml).
#[test]
fn camel_expressions_are_not_placeholders() {
    let xml = with_configurer(
        "",
        "  <broker brokerName=\"b\"/>\n  <camelContext xmlns=\"http://camel.apache.org/schema/spring\">\n    <log message=\"Failed endpoint: ${header.CamelFailureEndpoint}\"/>\n  </camelContext>",
    );
    let (doc, diagnostics) = load_in(&placeholder_conf(), &xml, &no_env());
    assert!(
        diagnostics
            .0
            .iter()
            .all(|d| !d.message.contains("unresolved placeholder")),
        "{diagnostics:?}"
    );
    let log = find(&doc.expect("document").root, "log").clone();
    assert_eq!(
        value(&log, "message"),
        "Failed endpoint: ${header.CamelFailureEndpoint}"
    );
}

#[test]
fn an_unclosed_placeholder_is_a_warning_at_the_attribute_value_that_hides_it() {
    let xml = with_configurer(
        "",
        "  <x uri=\"mqtt://h:${mqtt.port:1883\" secret=\"a${b\"/>",
    );
    let (doc, diagnostics) = load_in(&placeholder_conf(), &xml, &no_env());
    assert!(!diagnostics.has_errors(), "{diagnostics}");
    let warnings: Vec<_> = diagnostics.warnings().collect();
    assert_eq!(warnings.len(), 2, "{diagnostics}");
    assert_eq!(position(warnings[0]).1, 5);
    assert!(
        warnings[0].message.contains("`uri` is never closed"),
        "{}",
        warnings[0].message
    );
    // The value is not repeated: it may be a password.
    assert!(
        !warnings[1].message.contains("a${b"),
        "{}",
        warnings[1].message
    );
    // Left as written, as Spring does.
    let x = find(&doc.expect("document").root, "x").clone();
    assert_eq!(value(&x, "uri"), "mqtt://h:${mqtt.port:1883");
}

#[test]
fn an_unclosed_placeholder_in_a_path_is_an_error_at_its_value() {
    let xml = with_configurer(
        "",
        "  <broker dataDirectory=\"${activemq.data\">\n\
           <kahaDB directory=\"${activemq.data/kahadb\"/>\n\
           <sslContext keyStore=\"file:${activemq.conf/broker.ks\" trustStore=\"${t\"/>\n\
           <bean><property name=\"tmpDataDirectory\" value=\"${x\"/></bean>\n\
           <x brokerName=\"n${b\"/>\n\
         </broker>",
    );
    let (_, diagnostics) = load_in(&placeholder_conf(), &xml, &no_env());
    let errors: Vec<_> = diagnostics.errors().collect();
    let at: Vec<(u32, u32)> = errors
        .iter()
        .map(|e| (position(e).1, position(e).2))
        .collect();
    assert_eq!(
        at,
        vec![(5, 26), (6, 20), (7, 23), (7, 67), (8, 48)],
        "{diagnostics}"
    );
    for error in &errors {
        assert!(
            error.message.contains("is never closed"),
            "{}",
            error.message
        );
        let hint = error.hint.as_deref().expect("hint");
        assert!(hint.starts_with("close the placeholder with }"), "{hint}");
    }
    assert!(
        errors[1].message.contains("the path `directory`"),
        "{}",
        errors[1].message
    );
    assert!(
        errors[4].message.contains("the path `tmpDataDirectory`"),
        "{}",
        errors[4].message
    );
    // Free text stays a warning.
    let warnings: Vec<_> = diagnostics.warnings().collect();
    assert_eq!(warnings.len(), 1, "{diagnostics}");
    assert!(
        warnings[0].message.contains("`brokerName`"),
        "{}",
        warnings[0].message
    );
}

#[test]
fn ignore_unresolvable_placeholders_keeps_them_literal() {
    let xml = with_configurer(
        "    <property name=\"ignoreUnresolvablePlaceholders\" value=\"true\"/>\n",
        "<broker brokerName=\"${no.such.key}\" user=\"${activemq.username}\"/>",
    );
    let (doc, diagnostics) = load_in(&placeholder_conf(), &xml, &no_env());
    assert!(diagnostics.0.is_empty(), "{diagnostics}");
    let broker = find(&doc.expect("document").root, "broker").clone();
    assert_eq!(value(&broker, "brokerName"), "${no.such.key}");
    assert_eq!(value(&broker, "user"), "system");
}

#[test]
fn jasypt_values_without_an_encryptor_password_are_a_clear_error() {
    let xml = "<beans xmlns=\"http://www.springframework.org/schema/beans\">\n\
      <bean class=\"org.jasypt.spring31.properties.EncryptablePropertyPlaceholderConfigurer\">\n\
        <property name=\"location\" value=\"encrypted.properties\"/>\n  </bean>\n\
      <user password=\"${activemq.password}\"/>\n</beans>";
    let (_, diagnostics) = load_in(&placeholder_conf(), xml, &no_env());
    let error = only_error(&diagnostics);
    assert!(
        error
            .message
            .contains("no jasypt password: the configurer has no encryptor password"),
        "{}",
        error.message
    );
    assert!(error.message.contains("activemq.password"));
    assert_eq!(position(error).1, 5);
    assert!(error.hint.is_some());
}

#[test]
fn a_missing_properties_file_is_an_error_unless_ignored() {
    let xml = "<beans xmlns=\"http://www.springframework.org/schema/beans\">\n\
      <bean class=\"org.springframework.beans.factory.config.PropertyPlaceholderConfigurer\">\n\
        <property name=\"locations\"><list><value>file:${activemq.conf}/absent.properties</value></list></property>\n\
      </bean>\n</beans>";
    let (_, diagnostics) = load_in(&placeholder_conf(), xml, &no_env());
    let error = only_error(&diagnostics);
    assert_eq!(position(error).1, 3);
    assert!(
        error.message.contains("absent.properties"),
        "{}",
        error.message
    );
    assert!(error
        .hint
        .as_deref()
        .is_some_and(|h| h.contains("ignoreResourceNotFound")));

    let ignoring = xml.replace(
        "<property name=\"locations\">",
        "<property name=\"ignoreResourceNotFound\" value=\"true\"/><property name=\"locations\">",
    );
    let (_, diagnostics) = load_in(&placeholder_conf(), &ignoring, &no_env());
    assert!(diagnostics.0.is_empty(), "{diagnostics}");
}

#[test]
fn without_a_configurer_placeholders_stay_literal_with_a_note() {
    let xml = "<beans>\n  <broker dataDirectory=\"${activemq.data}/kahadb\"/>\n</beans>";
    let (doc, diagnostics) = load_in(&placeholder_conf(), xml, &no_env());
    assert!(!diagnostics.has_errors());
    let broker = find(&doc.expect("document").root, "broker").clone();
    assert_eq!(value(&broker, "dataDirectory"), "${activemq.data}/kahadb");
    let notes: Vec<&Diagnostic> = diagnostics
        .0
        .iter()
        .filter(|d| d.severity == Severity::Note)
        .collect();
    assert_eq!(notes.len(), 1, "{diagnostics}");
    assert_eq!(position(notes[0]).1, 2);
}

#[test]
fn placeholders_in_text_and_import_locations_are_resolved() {
    let dir = tempfile::tempdir().expect("tempdir");
    let conf = dir.path().join("conf");
    std::fs::create_dir(&conf).expect("mkdir");
    std::fs::write(conf.join("app.properties"), "who=world\n").expect("write");
    std::fs::write(
        conf.join("part.xml"),
        "<beans><greeting>hello ${who}</greeting></beans>",
    )
    .expect("write");
    let main = conf.join("activemq.xml");
    std::fs::write(
        &main,
        "<beans>\n\
           <bean class=\"org.springframework.beans.factory.config.PropertyPlaceholderConfigurer\">\n\
             <property name=\"location\"><value>classpath:app.properties</value></property>\n\
           </bean>\n\
           <import resource=\"file:${activemq.conf}/part.xml\"/>\n\
         </beans>",
    )
    .expect("write");
    let doc = load_ok(&main, &no_env());
    assert_eq!(find(&doc.root, "greeting").text, "hello world");
    assert_eq!(
        doc.files,
        vec![
            main.clone(),
            conf.join("part.xml"),
            conf.join("app.properties")
        ]
    );
}

#[test]
fn circular_property_references_are_errors() {
    let dir = tempfile::tempdir().expect("tempdir");
    std::fs::write(dir.path().join("loop.properties"), "a=${b}\nb=x${a}\n").expect("write");
    let xml = "<beans>\n\
      <bean class=\"org.springframework.beans.factory.config.PropertyPlaceholderConfigurer\">\n\
        <property name=\"location\" value=\"loop.properties\"/>\n  </bean>\n\
      <x v=\"${a}\"/>\n</beans>";
    let (_, diagnostics) = load_in(dir.path(), xml, &no_env());
    assert_eq!(
        only_error(&diagnostics).message,
        "circular placeholder reference: a -> b -> a"
    );
}

#[test]
fn system_properties_mode_override_puts_overrides_first() {
    let xml = with_configurer(
        "    <property name=\"systemPropertiesModeName\" value=\"SYSTEM_PROPERTIES_MODE_OVERRIDE\"/>\n",
        "<x u=\"${activemq.username}\"/>",
    );
    let mut options = no_env();
    options
        .overrides
        .insert("activemq.username".into(), "cli-user".into());
    let (doc, diagnostics) = load_in(&placeholder_conf(), &xml, &options);
    assert!(diagnostics.0.is_empty(), "{diagnostics}");
    let x = find(&doc.expect("document").root, "x").clone();
    assert_eq!(value(&x, "u"), "cli-user");
}

#[test]
fn inline_props_are_overridden_by_files() {
    let xml = with_configurer(
        "    <property name=\"properties\"><props>\n\
               <prop key=\"activemq.username\">inline</prop><prop key=\"only.inline\">yes</prop>\n\
             </props></property>\n",
        "<x u=\"${activemq.username}\" o=\"${only.inline}\"/>",
    );
    let (doc, diagnostics) = load_in(&placeholder_conf(), &xml, &no_env());
    assert!(diagnostics.0.is_empty(), "{diagnostics}");
    let x = find(&doc.expect("document").root, "x").clone();
    assert_eq!((value(&x, "u"), value(&x, "o")), ("system", "yes"));
}

#[test]
fn context_property_placeholder_element_is_a_configurer() {
    let xml = "<beans xmlns=\"http://www.springframework.org/schema/beans\"\n\
         xmlns:context=\"http://www.springframework.org/schema/context\">\n\
      <context:property-placeholder location=\"credentials.properties, tuning.properties\"\n\
          ignore-unresolvable=\"true\"/>\n\
      <x u=\"${activemq.username}\" h=\"${mqtt.host}\" n=\"${nope}\"/>\n</beans>";
    let (doc, diagnostics) = load_in(&placeholder_conf(), xml, &no_env());
    assert!(diagnostics.0.is_empty(), "{diagnostics}");
    let doc = doc.expect("document");
    let x = find(&doc.root, "x");
    assert_eq!(
        (value(x, "u"), value(x, "h"), value(x, "n")),
        ("system", "127.0.0.1", "${nope}")
    );
    assert_eq!(doc.files.len(), 2);
}

#[test]
fn a_bad_boolean_setting_on_the_configurer_is_an_error_at_its_value() {
    let xml = with_configurer(
        "    <property name=\"ignoreResourceNotFound\" value=\"yes\"/>\n",
        "<x/>",
    );
    let (_, diagnostics) = load_in(&placeholder_conf(), &xml, &no_env());
    let error = only_error(&diagnostics);
    assert_eq!(error.message, "`yes` is not a boolean");
    assert_eq!(position(error).1, 4);
}
