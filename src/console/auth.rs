//! Who is asking: HTTP basic auth against the realm's users, the per-user CSRF token, and the
//! Origin check of actions.
//!
//! The CSRF token is HMAC-SHA256(per-process random secret, user name), hex: a page served to
//! a logged-in user reads it from `/api/overview` and sends it back in `X-CSRF-Token`; a
//! foreign site cannot read it (no CORS headers are ever sent), so it cannot forge an action
//! even though the browser would add the basic-auth credentials. Tokens change when the
//! process restarts.

use std::sync::Arc;

use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use base64::Engine;
use hmac::{Hmac, Mac};
use sha2::Sha256;
use subtle::ConstantTimeEq;

use super::realm::RealmUser;
use crate::broker::BrokerCore;

/// The realm name of `WWW-Authenticate`, as ActiveMQ's jetty.xml names it.
pub const REALM_NAME: &str = "ActiveMQRealm";
/// The header an action carries the token in.
pub const CSRF_HEADER: &str = "x-csrf-token";

/// A logged-in user.
#[derive(Debug, Clone)]
pub struct User {
    pub name: String,
    pub admin: bool,
}

/// A per-process secret for CSRF tokens.
pub struct CsrfSecret([u8; 32]);

impl CsrfSecret {
    pub fn random() -> CsrfSecret {
        CsrfSecret(rand::random())
    }

    /// The token of `user` (64 hex digits).
    pub fn token(&self, user: &str) -> String {
        let mut mac = match Hmac::<Sha256>::new_from_slice(&self.0) {
            Ok(mac) => mac,
            // HMAC takes keys of any length: never reached.
            Err(_) => return String::new(),
        };
        mac.update(user.as_bytes());
        mac.finalize()
            .into_bytes()
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect()
    }

    /// Whether `given` is `user`'s token, in constant time.
    pub fn verify(&self, user: &str, given: &str) -> bool {
        let expected = self.token(user);
        !expected.is_empty() && bool::from(expected.as_bytes().ct_eq(given.as_bytes()))
    }
}

/// Why a request is refused.
#[derive(Debug)]
pub enum Denied {
    /// No or wrong credentials: 401 with a challenge.
    Unauthenticated,
    /// Logged in, not allowed: 403 with the reason.
    Forbidden(&'static str),
}

impl IntoResponse for Denied {
    fn into_response(self) -> Response {
        match self {
            Denied::Unauthenticated => (
                StatusCode::UNAUTHORIZED,
                [(
                    header::WWW_AUTHENTICATE,
                    format!("Basic realm=\"{REALM_NAME}\""),
                )],
                axum::Json(serde_json::json!({ "error": "authentication required" })),
            )
                .into_response(),
            Denied::Forbidden(reason) => (
                StatusCode::FORBIDDEN,
                axum::Json(serde_json::json!({ "error": reason })),
            )
                .into_response(),
        }
    }
}

/// The user of the request's `Authorization: Basic` header, with a role that may read.
pub fn authenticate(core: &BrokerCore, headers: &HeaderMap) -> Result<User, Denied> {
    let (name, password) = basic_credentials(headers).ok_or(Denied::Unauthenticated)?;
    let users: Arc<Vec<RealmUser>> = core.console_users.load_full();
    // Every user's credential is checked, so the time does not tell which names exist.
    let mut found: Option<&RealmUser> = None;
    for user in users.iter() {
        let name_matches = bool::from(user.name.as_bytes().ct_eq(name.as_bytes()));
        if name_matches && user.credential.matches(&password) {
            found = Some(user);
        }
    }
    let user = found.ok_or(Denied::Unauthenticated)?;
    if !user.may_read() {
        return Err(Denied::Forbidden(
            "the user has neither the admin nor the user role",
        ));
    }
    Ok(User {
        name: user.name.clone(),
        admin: user.is_admin(),
    })
}

/// The user name of the request's `Authorization: Basic` header (for the log of a failed
/// login: never the password).
pub fn basic_user_name(headers: &HeaderMap) -> Option<String> {
    basic_credentials(headers).map(|(name, _password)| name)
}

/// The peer of a console connection, put in each request's extensions by the accept loop.
#[derive(Debug, Clone, Copy)]
pub struct Peer(pub std::net::SocketAddr);

fn basic_credentials(headers: &HeaderMap) -> Option<(String, String)> {
    let value = headers.get(header::AUTHORIZATION)?.to_str().ok()?;
    let (scheme, encoded) = value.trim().split_once(' ')?;
    if !scheme.eq_ignore_ascii_case("basic") {
        return None;
    }
    let decoded = base64::engine::general_purpose::STANDARD
        .decode(encoded.trim())
        .ok()?;
    let text = String::from_utf8(decoded).ok()?;
    let (name, password) = text.split_once(':')?;
    Some((name.to_owned(), password.to_owned()))
}

/// An action (POST): the user must be an admin, the CSRF token right, and the Origin, when
/// the browser sent one, this console's own (`own_hosts`: the Host header the request came
/// with).
pub fn authorize_action(
    user: &User,
    headers: &HeaderMap,
    secret: &CsrfSecret,
) -> Result<(), Denied> {
    if !user.admin {
        return Err(Denied::Forbidden("actions need the admin role"));
    }
    if let Some(origin) = headers.get(header::ORIGIN) {
        let host = headers.get(header::HOST).and_then(|h| h.to_str().ok());
        let same = match (origin.to_str().ok(), host) {
            (Some(origin), Some(host)) => origin_host(origin) == Some(host),
            _ => false,
        };
        if !same {
            return Err(Denied::Forbidden("cross-origin request refused"));
        }
    }
    let token = headers
        .get(CSRF_HEADER)
        .and_then(|t| t.to_str().ok())
        .unwrap_or("");
    if !secret.verify(&user.name, token) {
        return Err(Denied::Forbidden(
            "missing or wrong X-CSRF-Token (read it from /api/overview)",
        ));
    }
    Ok(())
}

/// `host[:port]` of an `Origin` value (`http://127.0.0.1:8161` -> `127.0.0.1:8161`).
fn origin_host(origin: &str) -> Option<&str> {
    let rest = origin
        .strip_prefix("http://")
        .or_else(|| origin.strip_prefix("https://"))?;
    Some(rest.trim_end_matches('/'))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_are_per_user_and_verified() {
        let secret = CsrfSecret::random();
        let token = secret.token("admin");
        assert_eq!(token.len(), 64);
        assert!(secret.verify("admin", &token));
        assert!(!secret.verify("user", &token));
        assert!(!secret.verify("admin", ""));
        assert_ne!(CsrfSecret::random().token("admin"), token);
    }

    #[test]
    fn origin_host_strips_the_scheme() {
        assert_eq!(origin_host("http://127.0.0.1:8161"), Some("127.0.0.1:8161"));
        assert_eq!(origin_host("https://h/"), Some("h"));
        assert_eq!(origin_host("null"), None);
    }
}
