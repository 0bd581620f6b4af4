//! Transports on their own: TLS (PEM, PKCS#12, JKS/JCEKS made by keytool, client certificates), WebSocket, and TLS
//! material reloaded while serving, through `transport::upgrade` and an echo server.

#[path = "../support/mod.rs"]
mod support;

mod jks;
mod reload;
mod tls;
mod trust;
mod ws;
