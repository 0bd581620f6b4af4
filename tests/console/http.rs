//! A small HTTP/1.1 client on hyper for the tests: one request per connection.

use std::net::SocketAddr;

use base64::Engine;
use http_body_util::{BodyExt, Full};
use hyper::body::Bytes;
use hyper_util::rt::TokioIo;

use crate::support::STEP;

#[derive(Debug)]
pub struct Response {
    pub status: u16,
    pub headers: hyper::HeaderMap,
    pub body: Vec<u8>,
}

impl Response {
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body)
            .unwrap_or_else(|e| panic!("not JSON ({e}): {}", String::from_utf8_lossy(&self.body)))
    }

    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }

    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
}

/// A request to the console at `addr`; `auth`: basic credentials; `headers`: more headers.
pub async fn request(
    addr: SocketAddr,
    method: &str,
    path: &str,
    auth: Option<(&str, &str)>,
    headers: &[(&str, &str)],
) -> Response {
    let stream = tokio::time::timeout(STEP, tokio::net::TcpStream::connect(addr))
        .await
        .expect("connect in time")
        .expect("connect");
    send(stream, &addr.to_string(), method, path, auth, headers).await
}

/// A POST of `body` (JSON) to the console at `addr`, with no CSRF token.
pub async fn post_json(
    addr: SocketAddr,
    path: &str,
    auth: Option<(&str, &str)>,
    body: &str,
) -> Response {
    let stream = tokio::time::timeout(STEP, tokio::net::TcpStream::connect(addr))
        .await
        .expect("connect in time")
        .expect("connect");
    send_body(
        stream,
        &addr.to_string(),
        "POST",
        path,
        auth,
        &[("content-type", "application/json")],
        body.as_bytes().to_vec(),
    )
    .await
}

/// A request over `stream` (plain TCP or TLS) to the console at `host`.
pub async fn send<S>(
    stream: S,
    host: &str,
    method: &str,
    path: &str,
    auth: Option<(&str, &str)>,
    headers: &[(&str, &str)],
) -> Response
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    send_body(stream, host, method, path, auth, headers, Vec::new()).await
}

/// [`send`] with a request body.
pub async fn send_body<S>(
    stream: S,
    host: &str,
    method: &str,
    path: &str,
    auth: Option<(&str, &str)>,
    headers: &[(&str, &str)],
    body: Vec<u8>,
) -> Response
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let (mut sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .expect("handshake");
    tokio::spawn(connection);
    let mut builder = hyper::Request::builder()
        .method(method)
        .uri(path)
        .header("host", host);
    if let Some((user, password)) = auth {
        let encoded =
            base64::engine::general_purpose::STANDARD.encode(format!("{user}:{password}"));
        builder = builder.header("authorization", format!("Basic {encoded}"));
    }
    for (name, value) in headers {
        builder = builder.header(*name, *value);
    }
    let request = builder.body(Full::new(Bytes::from(body))).expect("request");
    let response = tokio::time::timeout(STEP, sender.send_request(request))
        .await
        .expect("answer in time")
        .expect("answer");
    let status = response.status().as_u16();
    let headers = response.headers().clone();
    let body = response
        .into_body()
        .collect()
        .await
        .expect("body")
        .to_bytes()
        .to_vec();
    Response {
        status,
        headers,
        body,
    }
}

pub async fn get(addr: SocketAddr, path: &str, auth: Option<(&str, &str)>) -> Response {
    request(addr, "GET", path, auth, &[]).await
}

/// The CSRF token of `auth`'s user, from /api/overview.
pub async fn csrf_token(addr: SocketAddr, auth: (&str, &str)) -> String {
    let overview = get(addr, "/api/overview", Some(auth)).await;
    assert_eq!(overview.status, 200, "{}", overview.text());
    overview.json()["csrf_token"]
        .as_str()
        .expect("csrf_token")
        .to_owned()
}

/// An admin action with the right token.
pub async fn act(addr: SocketAddr, path: &str, auth: (&str, &str)) -> Response {
    let token = csrf_token(addr, auth).await;
    request(addr, "POST", path, Some(auth), &[("x-csrf-token", &token)]).await
}
