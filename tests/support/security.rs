//! Helpers shared by the security test binaries: requests, principals and a simple-plugin
//! `Security` built from model values (no XML needed).

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;

use ferromq::config::{Authentication, Secret, SimpleAuth, SimpleUser, Span};
use ferromq::security::{AuthRequest, Principal, Security};

/// A comma-separated list (`a,b`; empty items dropped).
pub fn list(s: &str) -> Vec<String> {
    s.split(',')
        .filter(|x| !x.is_empty())
        .map(str::to_owned)
        .collect()
}

/// Write `text` to `dir/name`; returns the path.
pub fn write(dir: &std::path::Path, name: &str, text: &str) -> PathBuf {
    let path = dir.join(name);
    std::fs::write(&path, text).expect("write file");
    path
}

pub fn span() -> Span {
    Span::new(Arc::new(PathBuf::from("conf/activemq.xml")), 1, 1)
}

pub fn peer(ip: &str) -> SocketAddr {
    format!("{ip}:40000").parse().expect("socket address")
}

/// A CONNECT from 127.0.0.1 as `client-1` with the given credentials.
pub fn req<'a>(user: Option<&'a str>, password: Option<&'a str>) -> AuthRequest<'a> {
    AuthRequest {
        client_id: "client-1",
        username: user,
        password: password.map(str::as_bytes),
        peer: peer("127.0.0.1"),
        tls: false,
        peer_cert_subject: None,
    }
}

pub fn groups(p: &Principal) -> Vec<&str> {
    p.groups.iter().map(|g| &**g).collect()
}

pub fn simple_user(name: &str, password: &str, groups: &str) -> SimpleUser {
    SimpleUser {
        username: name.into(),
        password: Secret(password.into()),
        groups: groups.split(',').map(str::to_owned).collect(),
        span: span(),
    }
}

/// `simpleAuthenticationPlugin` with `users`; anonymous user `anon` in group `visitors`.
pub fn simple(users: Vec<SimpleUser>, anonymous: bool) -> Security {
    Security::from_parts(
        &Authentication::Simple(SimpleAuth {
            users,
            anonymous_access_allowed: anonymous,
            anonymous_user: "anon".into(),
            anonymous_group: "visitors".into(),
            span: span(),
        }),
        None,
    )
    .expect("valid")
}
