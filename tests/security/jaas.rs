//! JAAS login domains: PropertiesLoginModule users with groups, reload=true, control
//! flags as LoginContext evaluates them, GuestLoginModule, certificate DNs, the dual plugin.

use std::collections::BTreeMap;
use std::io::Write as _;
use std::path::Path;
use std::time::{Duration, SystemTime};

use crate::support::security::*;
use ferromq::config::{Authentication, JaasAuth, LoginModule, LoginModuleKind};
use ferromq::security::{AuthFailure, AuthRequest, Security};

// ---- JAAS ----

fn properties_module(flag: &str, dir: &Path, reload: bool) -> LoginModule {
    LoginModule {
        class: "org.apache.activemq.jaas.PropertiesLoginModule".into(),
        flag: flag.into(),
        options: BTreeMap::new(),
        kind: LoginModuleKind::Properties {
            users_file: dir.join("users.properties"),
            groups_file: dir.join("groups.properties"),
            reload,
        },
    }
}

fn guest_module(flag: &str, credentials_invalidate: bool) -> LoginModule {
    LoginModule {
        class: "org.apache.activemq.jaas.GuestLoginModule".into(),
        flag: flag.into(),
        options: BTreeMap::new(),
        kind: LoginModuleKind::Guest {
            user: "guest".into(),
            group: "guests".into(),
            credentials_invalidate,
        },
    }
}

fn jaas_config(modules: Vec<LoginModule>, dir: &Path) -> JaasAuth {
    JaasAuth {
        configuration: "activemq".into(),
        login_config: dir.join("login.config"),
        modules,
        span: span(),
    }
}

fn jaas(modules: Vec<LoginModule>, dir: &Path) -> Security {
    Security::from_parts(&Authentication::Jaas(jaas_config(modules, dir)), None).expect("valid")
}

fn user_files() -> tempfile::TempDir {
    let dir = tempfile::tempdir().expect("tempdir");
    write(
        dir.path(),
        "users.properties",
        "admin=adminpw\nuser=userpw\nnopw=\n",
    );
    write(
        dir.path(),
        "groups.properties",
        "admins=admin\nusers=admin,user\n",
    );
    dir
}

#[tokio::test]
async fn jaas_properties_users_with_groups() {
    let dir = user_files();
    let sec = jaas(
        vec![properties_module("required", dir.path(), false)],
        dir.path(),
    );
    let admin = sec
        .authenticate(&req(Some("admin"), Some("adminpw")))
        .await
        .expect("admin");
    assert_eq!(groups(&admin), vec!["admins", "users"]);
    let user = sec
        .authenticate(&req(Some("user"), Some("userpw")))
        .await
        .expect("user");
    assert_eq!(groups(&user), vec!["users"]);
    let bad = Err(AuthFailure::BadCredentials);
    assert_eq!(
        sec.authenticate(&req(Some("user"), Some("adminpw"))).await,
        bad
    );
    assert_eq!(sec.authenticate(&req(Some("ghost"), Some("x"))).await, bad);
    assert_eq!(
        sec.authenticate(&req(None, None)).await,
        Err(AuthFailure::NotAuthorized)
    );
    // PropertiesLoginModule treats a missing password as the empty one.
    assert!(sec.authenticate(&req(Some("nopw"), None)).await.is_ok());
}

#[test]
fn missing_users_file_is_a_clear_error() {
    let dir = tempfile::tempdir().expect("tempdir");
    let err = Security::from_parts(
        &Authentication::Jaas(jaas_config(
            vec![properties_module("required", dir.path(), false)],
            dir.path(),
        )),
        None,
    )
    .expect_err("no users file");
    assert!(err.contains("users.properties"), "{err}");
}

/// Rewrite a file so that its stamp surely changes (coarse file systems keep seconds).
fn rewrite(path: &Path, text: &str) {
    let mut file = std::fs::File::create(path).expect("open");
    file.write_all(text.as_bytes()).expect("write");
    let later = SystemTime::now() + Duration::from_secs(5);
    file.set_modified(later).expect("set mtime");
}

#[tokio::test]
async fn reload_true_picks_up_an_edited_users_file_and_reload_false_does_not() {
    let dir = user_files();
    let reloading = jaas(
        vec![properties_module("required", dir.path(), true)],
        dir.path(),
    );
    let fixed = jaas(
        vec![properties_module("required", dir.path(), false)],
        dir.path(),
    );
    assert!(reloading
        .authenticate(&req(Some("user"), Some("userpw")))
        .await
        .is_ok());

    rewrite(
        &dir.path().join("users.properties"),
        "user=changed\nnew=newpw\n",
    );
    rewrite(&dir.path().join("groups.properties"), "newgroup=new\n");
    let bad = Err(AuthFailure::BadCredentials);
    assert_eq!(
        reloading
            .authenticate(&req(Some("user"), Some("userpw")))
            .await,
        bad
    );
    assert!(reloading
        .authenticate(&req(Some("user"), Some("changed")))
        .await
        .is_ok());
    let new = reloading
        .authenticate(&req(Some("new"), Some("newpw")))
        .await
        .expect("new user");
    assert_eq!(groups(&new), vec!["newgroup"]);
    // Without reload the file read at start stays in force.
    assert!(fixed
        .authenticate(&req(Some("user"), Some("userpw")))
        .await
        .is_ok());
    assert_eq!(
        fixed.authenticate(&req(Some("new"), Some("newpw"))).await,
        bad
    );

    // A broken edit keeps the last good contents.
    rewrite(&dir.path().join("users.properties"), "user=\\u12\n");
    assert!(reloading
        .authenticate(&req(Some("user"), Some("changed")))
        .await
        .is_ok());
}

/// The outcome of a login as (user, groups), or the failure.
async fn outcome(
    sec: &Security,
    user: Option<&str>,
    pw: Option<&str>,
) -> Result<String, AuthFailure> {
    let p = sec.authenticate(&req(user, pw)).await?;
    Ok(format!("{}:{}", p.user, groups(&p).join("+")))
}

#[tokio::test]
async fn jaas_control_flags_as_login_context_evaluates_them() {
    let dir = user_files();
    let d = dir.path();
    let bad = Err(AuthFailure::BadCredentials);
    let ok = |s: &str| Ok::<String, AuthFailure>(s.to_owned());

    // ActiveMQ's "guest when no credentials" domain.
    let sec = jaas(
        vec![
            properties_module("sufficient", d, false),
            guest_module("sufficient", true),
        ],
        d,
    );
    assert_eq!(outcome(&sec, None, None).await, ok("guest:guests"));
    assert_eq!(
        outcome(&sec, Some("user"), Some("userpw")).await,
        ok("user:users")
    );
    // A wrong password is not turned into a guest login (guest module ignored).
    assert_eq!(outcome(&sec, Some("user"), Some("nope")).await, bad);

    // Without credentialsInvalidate a bad password falls through to guest.
    let sec = jaas(
        vec![
            properties_module("sufficient", d, false),
            guest_module("sufficient", false),
        ],
        d,
    );
    assert_eq!(
        outcome(&sec, Some("user"), Some("nope")).await,
        ok("guest:guests")
    );

    // required + optional: both commit; the first module's user, the union of groups.
    let sec = jaas(
        vec![
            properties_module("required", d, false),
            guest_module("optional", false),
        ],
        d,
    );
    assert_eq!(
        outcome(&sec, Some("user"), Some("userpw")).await,
        ok("user:users+guests")
    );
    // A required failure fails the login although a later module succeeds.
    assert_eq!(outcome(&sec, Some("user"), Some("nope")).await, bad);

    // requisite failure stops at once.
    let sec = jaas(
        vec![
            properties_module("requisite", d, false),
            guest_module("sufficient", false),
        ],
        d,
    );
    assert_eq!(outcome(&sec, Some("user"), Some("nope")).await, bad);

    // A sufficient success after a required failure does not rescue the login.
    let sec = jaas(
        vec![
            properties_module("required", d, false),
            guest_module("sufficient", false),
        ],
        d,
    );
    assert_eq!(outcome(&sec, Some("user"), Some("nope")).await, bad);

    // A sufficient success first ends the login before a required module runs.
    let sec = jaas(
        vec![
            guest_module("sufficient", false),
            properties_module("required", d, false),
        ],
        d,
    );
    assert_eq!(
        outcome(&sec, Some("user"), Some("nope")).await,
        ok("guest:guests")
    );

    // optional failures with one optional success: success.
    let sec = jaas(
        vec![
            properties_module("optional", d, false),
            guest_module("optional", false),
        ],
        d,
    );
    assert_eq!(
        outcome(&sec, Some("x"), Some("y")).await,
        ok("guest:guests")
    );

    // All modules ignored is a failure.
    let sec = jaas(vec![guest_module("optional", true)], d);
    assert_eq!(outcome(&sec, Some("x"), Some("y")).await, bad);

    // An unknown flag is a configuration error.
    let err = Security::from_parts(
        &Authentication::Jaas(jaas_config(vec![guest_module("mandatory", false)], d)),
        None,
    )
    .expect_err("bad flag");
    assert!(err.contains("mandatory"), "{err}");
}

// ---- certificates ----

fn certificate_module(dir: &Path) -> LoginModule {
    // In a .properties file a DN's `\,` is written `\\,` (Java unescapes the file first).
    write(
        dir,
        "cert-users.properties",
        "alice=CN=Alice, O=Example\\\\, Inc., C=GB\n",
    );
    write(dir, "cert-groups.properties", "devices=alice\n");
    LoginModule {
        class: "org.apache.activemq.jaas.TextFileCertificateLoginModule".into(),
        flag: "required".into(),
        options: BTreeMap::new(),
        kind: LoginModuleKind::TextFileCertificate {
            users_file: dir.join("cert-users.properties"),
            groups_file: dir.join("cert-groups.properties"),
            reload: false,
        },
    }
}

fn tls_req(subject: Option<&str>) -> AuthRequest<'_> {
    AuthRequest {
        tls: true,
        peer_cert_subject: subject,
        ..req(None, None)
    }
}

#[tokio::test]
async fn certificate_dn_maps_to_a_user_compared_normalised() {
    let dir = tempfile::tempdir().expect("tempdir");
    let sec = Security::from_parts(
        &Authentication::JaasCertificate(jaas_config(
            vec![certificate_module(dir.path())],
            dir.path(),
        )),
        None,
    )
    .expect("valid");
    let alice = sec
        .authenticate(&tls_req(Some("CN=alice,O=Example\\2C Inc.,C=gb")))
        .await
        .expect("mapped DN");
    assert_eq!(&*alice.user, "alice");
    assert_eq!(groups(&alice), vec!["devices"]);
    assert_eq!(
        sec.authenticate(&tls_req(Some("CN=mallory,O=Example")))
            .await,
        Err(AuthFailure::BadCredentials)
    );
    assert_eq!(
        sec.authenticate(&tls_req(None)).await,
        Err(AuthFailure::NotAuthorized)
    );
}

#[tokio::test]
async fn dual_uses_certificates_on_tls_and_passwords_elsewhere() {
    let dir = user_files();
    let d = dir.path();
    let sec = Security::from_parts(
        &Authentication::JaasDual {
            password: jaas_config(vec![properties_module("required", d, false)], d),
            certificate: jaas_config(vec![certificate_module(d)], d),
        },
        None,
    )
    .expect("valid");
    let on_tls = sec
        .authenticate(&tls_req(Some("CN=Alice,O=Example\\, Inc.,C=GB")))
        .await
        .expect("certificate login");
    assert_eq!(&*on_tls.user, "alice");
    let plain = sec
        .authenticate(&req(Some("user"), Some("userpw")))
        .await
        .expect("password login");
    assert_eq!(&*plain.user, "user");
    // A password is not accepted on the TLS side without a certificate.
    let tls_with_password = AuthRequest {
        tls: true,
        ..req(Some("user"), Some("userpw"))
    };
    assert_eq!(
        sec.authenticate(&tls_with_password).await,
        Err(AuthFailure::NotAuthorized)
    );
}
