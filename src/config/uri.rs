//! Transport connector URIs as ActiveMQ writes them: `mqtt+nio+ssl://0.0.0.0:8883?opt=val&...`.
//!
//! Only the shape is parsed here (scheme, host, port, path, query options); what the options mean
//! is the compiler's business. The XML loader has already decoded `&amp;`, so `&` separates
//! options. Option values are percent-decoded as Java's `URLDecoder` would (ActiveMQ's
//! `URISupport.parseQuery`), and `+` stays a plus.

use std::fmt;

/// A parsed transport URI.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TransportUri {
    /// Lower-cased scheme, e.g. `mqtt+nio`.
    pub scheme: String,
    /// Host without IPv6 brackets (`0.0.0.0`, `localhost`, `::`).
    pub host: String,
    /// `None` when the URI has no port (`vm://localhost`) or a bad one (see `bad_port`).
    pub port: Option<u16>,
    /// A port that is not a number from 0 to 65535: kept apart from the fatal shape errors so
    /// that the compiler reports it together with the options' problems, not instead of them.
    pub bad_port: Option<UriError>,
    /// Path after the authority, e.g. `/mqtt` for WebSocket URIs; empty when absent.
    pub path: String,
    /// Query options in the order written (duplicates kept so the compiler can warn).
    pub options: Vec<UriOption>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UriOption {
    pub key: String,
    pub value: String,
}

/// Why a URI could not be parsed; `offset` is the character index in the URI where the problem
/// starts, so a diagnostic can point inside the attribute value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UriError {
    pub offset: usize,
    pub message: String,
    pub hint: Option<String>,
}

impl fmt::Display for UriError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for UriError {}

fn error(offset: usize, message: impl Into<String>, hint: Option<&str>) -> UriError {
    UriError {
        offset,
        message: message.into(),
        hint: hint.map(str::to_owned),
    }
}

const EXAMPLE: &str =
    "a transport URI looks like `mqtt://0.0.0.0:1883?transport.defaultKeepAlive=60000`";

/// Parse `scheme://host[:port][/path][?k=v&k=v]`.
pub fn parse(uri: &str) -> Result<TransportUri, UriError> {
    let uri_trimmed = uri.trim_start();
    let lead = char_count(&uri[..uri.len() - uri_trimmed.len()]);
    let uri = uri_trimmed.trim_end();
    let Some(scheme_end) = uri.find("://") else {
        return Err(error(
            lead,
            format!("`{uri}` has no `scheme://`"),
            Some(EXAMPLE),
        ));
    };
    let scheme = &uri[..scheme_end];
    let scheme_ok = scheme
        .chars()
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic())
        && scheme
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '+' | '-' | '.'));
    if !scheme_ok {
        return Err(error(
            lead,
            format!("`{scheme}` is not a valid URI scheme"),
            Some(EXAMPLE),
        ));
    }
    let after_scheme = scheme_end + 3;
    let rest = &uri[after_scheme..];
    // A fragment is meaningless for a listener; ignore it like java.net.URI's query does.
    let rest = rest.split('#').next().unwrap_or("");
    let (before_query, query) = match rest.split_once('?') {
        Some((b, q)) => (b, Some(q)),
        None => (rest, None),
    };
    let (authority, path) = match before_query.find('/') {
        Some(i) => (&before_query[..i], &before_query[i..]),
        None => (before_query, ""),
    };
    let authority_offset = lead + char_count(&uri[..after_scheme]);
    let (host, port) = parse_authority(
        authority,
        authority_offset,
        // An unknown scheme is reported by the connector check; its hints say MQTT's port.
        crate::config::model::Scheme::parse(&scheme.to_ascii_lowercase())
            .map_or(1883, crate::config::model::Scheme::usual_port),
    )?;
    let (port, bad_port) = match port {
        Ok(port) => (port, None),
        Err(e) => (None, Some(e)),
    };
    let query_offset = authority_offset + char_count(before_query) + 1;
    let options = match query {
        Some(q) => parse_query(q, query_offset)?,
        None => Vec::new(),
    };
    Ok(TransportUri {
        scheme: scheme.to_ascii_lowercase(),
        host,
        port,
        bad_port,
        path: path.to_owned(),
        options,
    })
}

fn char_count(s: &str) -> usize {
    s.chars().count()
}

/// The host, and the port (an error of its own: see `TransportUri::bad_port`).
type Authority = (String, Result<Option<u16>, UriError>);

fn parse_authority(authority: &str, offset: usize, port: u16) -> Result<Authority, UriError> {
    if authority.is_empty() {
        return Err(error(
            offset,
            "the URI has no host",
            Some("use `0.0.0.0` to listen on every IPv4 address, `[::]` for every address, or `127.0.0.1` for this machine only"),
        ));
    }
    if authority.contains('@') {
        return Err(error(
            offset,
            "user information (`user@`) is not allowed in a listener URI",
            Some("configure users with an authentication plugin instead"),
        ));
    }
    let (host, port_text, port_offset) = if let Some(inner) = authority.strip_prefix('[') {
        let Some(close) = inner.find(']') else {
            return Err(error(
                offset,
                "`[` of an IPv6 address is never closed",
                Some(&format!("write IPv6 hosts as `[::1]:{port}`")),
            ));
        };
        let host = &inner[..close];
        let after = &inner[close + 1..];
        let port_offset = offset + char_count(host) + 2;
        match after.strip_prefix(':') {
            Some(p) => (host, Some(p), port_offset + 1),
            None if after.is_empty() => (host, None, port_offset),
            None => {
                return Err(error(
                    port_offset,
                    format!("unexpected `{after}` after the IPv6 address"),
                    Some(&format!("write IPv6 hosts as `[::1]:{port}`")),
                ))
            }
        }
    } else {
        // An unclosed `${` left as written (warned about at its attribute) has its own colon
        // (`${port:1883`): not an IPv6 address.
        if let Some(at) = authority.find("${") {
            return Err(error(
                offset + char_count(&authority[..at]),
                format!("`{authority}` holds a placeholder that was never resolved"),
                Some(
                    "close the placeholder (`${name}` or `${name:default}`) or define its property",
                ),
            ));
        }
        if authority.matches(':').count() > 1 {
            return Err(error(
                offset,
                format!("`{authority}` looks like an IPv6 address without brackets"),
                Some(&format!("write IPv6 hosts in brackets: `[::]:{port}`")),
            ));
        }
        match authority.split_once(':') {
            Some((h, p)) => (h, Some(p), offset + char_count(h) + 1),
            None => (authority, None, offset),
        }
    };
    if host.is_empty() {
        return Err(error(
            offset,
            "the URI has no host",
            Some("use `0.0.0.0` to listen on every IPv4 address or `127.0.0.1` for this machine only"),
        ));
    }
    if let Some(bad) = host
        .chars()
        .position(|c| !(c.is_alphanumeric() || matches!(c, '.' | '-' | '_' | ':' | '%')))
    {
        return Err(error(
            offset + bad,
            format!("`{host}` is not a valid host name or address"),
            None,
        ));
    }
    let port = port_text.map(|p| parse_port(p, port_offset)).transpose();
    Ok((host.to_owned(), port))
}

fn parse_port(text: &str, offset: usize) -> Result<u16, UriError> {
    if text.is_empty() || !text.chars().all(|c| c.is_ascii_digit()) {
        return Err(error(
            offset,
            format!("port `{text}` is not a number"),
            Some("ports are 0-65535; 0 picks any free port"),
        ));
    }
    text.parse::<u16>().map_err(|_| {
        error(
            offset,
            format!("port {text} is out of range"),
            Some("ports are 0-65535; 0 picks any free port"),
        )
    })
}

fn parse_query(query: &str, offset: usize) -> Result<Vec<UriOption>, UriError> {
    let mut options = Vec::new();
    let mut position = offset;
    for part in query.split('&') {
        let part_offset = position;
        position += char_count(part) + 1;
        if part.is_empty() {
            continue;
        }
        let (raw_key, raw_value) = part.split_once('=').unwrap_or((part, ""));
        let key = percent_decode(raw_key, part_offset)?;
        let value = percent_decode(raw_value, part_offset + char_count(raw_key) + 1)?;
        options.push(UriOption { key, value });
    }
    Ok(options)
}

/// Decode `%XX` escapes (UTF-8). A `%` not followed by two hex digits is an error, as in Java.
fn percent_decode(text: &str, offset: usize) -> Result<String, UriError> {
    if !text.contains('%') {
        return Ok(text.to_owned());
    }
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let hex = text.get(i + 1..i + 3);
            match hex.and_then(|h| u8::from_str_radix(h, 16).ok()) {
                Some(b) => {
                    out.push(b);
                    i += 3;
                    continue;
                }
                None => {
                    return Err(error(
                        offset + char_count(&text[..i]),
                        format!("bad percent escape in `{text}`"),
                        Some("write `%` as `%25`"),
                    ))
                }
            }
        }
        out.push(bytes[i]);
        i += 1;
    }
    String::from_utf8(out).map_err(|_| {
        error(
            offset,
            format!("`{text}` does not decode to UTF-8 text"),
            None,
        )
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn opts(uri: &TransportUri) -> Vec<(&str, &str)> {
        uri.options
            .iter()
            .map(|o| (o.key.as_str(), o.value.as_str()))
            .collect()
    }

    #[test]
    fn full_uri_with_options() {
        let uri = parse(
            "mqtt+nio+ssl://0.0.0.0:8883?transport.defaultKeepAlive=60000&maximumConnections=1000",
        )
        .expect("valid");
        assert_eq!(uri.scheme, "mqtt+nio+ssl");
        assert_eq!(uri.host, "0.0.0.0");
        assert_eq!(uri.port, Some(8883));
        assert_eq!(
            opts(&uri),
            vec![
                ("transport.defaultKeepAlive", "60000"),
                ("maximumConnections", "1000")
            ]
        );
    }

    #[test]
    fn ipv6_path_no_port_and_decoding() {
        let uri = parse("ws://[::]:61614/mqtt?a=%2Fx&flag").expect("valid");
        assert_eq!((uri.host.as_str(), uri.port), ("::", Some(61614)));
        assert_eq!(uri.path, "/mqtt");
        assert_eq!(opts(&uri), vec![("a", "/x"), ("flag", "")]);
        let vm = parse("VM://localhost").expect("valid");
        assert_eq!((vm.scheme.as_str(), vm.port), ("vm", None));
    }

    #[test]
    fn errors_point_at_the_problem() {
        // A bad port is not fatal to the parse: the options after it are still read.
        let uri = parse("mqtt://0.0.0.0:99999?a=1").expect("options still parsed");
        let e = uri.bad_port.as_ref().expect("out of range");
        assert_eq!(e.offset, 15);
        assert!(e.message.contains("out of range"));
        assert_eq!((uri.port, opts(&uri)), (None, vec![("a", "1")]));
        assert_eq!(parse("0.0.0.0:1883").expect_err("no scheme").offset, 0);
        assert!(parse("mqtt://:::1883")
            .expect_err("brackets")
            .message
            .contains("IPv6"));
        assert!(parse("mqtt://:1883").is_err());
        let placeholder = parse("mqtt://0.0.0.0:${port:1883").expect_err("unresolved");
        assert!(
            placeholder.message.contains("never resolved"),
            "{placeholder:?}"
        );
        assert_eq!(placeholder.offset, 15);
        let hint = |uri: &str| parse(uri).expect_err("IPv6 without brackets").hint;
        assert_eq!(
            hint("stomp://:::61613").as_deref(),
            Some("write IPv6 hosts in brackets: `[::]:61613`")
        );
        assert_eq!(
            hint("mqtt+ssl://::1:8883").as_deref(),
            Some("write IPv6 hosts in brackets: `[::]:8883`")
        );
        assert!(parse("mqtt://host:12ab").is_ok_and(|uri| uri.bad_port.is_some()));
        assert!(parse("mqtt://[::1:1883").is_err());
        let bad_escape = parse("mqtt://h:1?k=%zz").expect_err("escape");
        assert_eq!(bad_escape.offset, 13);
    }
}
