//! Transports: everything that turns an accepted `TcpStream` into the byte stream an MQTT
//! connection runs over, for the `mqtt`, `mqtt+nio`, `mqtt+ssl`, `mqtt+nio+ssl`, `ws` and `wss`
//! connectors.
//!
//! - [`tls`]: `<sslContext>` key and trust stores (PEM, PKCS#12, JKS/JCEKS through `keystore`) -> rustls `ServerConfig`, with
//!   ActiveMQ's `needClientAuth` / `wantClientAuth`.
//! - [`reload`]: [`SharedTls`], that configuration behind an atomic pointer, renewed when the
//!   files change on disk.
//! - [`accept`]: [`upgrade`], the per-connection TLS and WebSocket handshakes under a timeout.
//! - [`ws`]: WebSocket sub-protocol negotiation and the message-to-byte-stream adapter.
//! - [`dn`]: client certificate subject DNs as Java prints them, for certificate login.

pub mod accept;
pub mod dn;
mod error;
mod keystore;
mod material;
pub mod reload;
pub mod tls;
mod trust;
pub mod ws;

pub use accept::{upgrade, Accepted, AsyncStream, UpgradeLimits};
pub use error::{StoreRole, TlsError, TransportError};
pub use keystore::KeyStoreError;
pub use material::{read_store_file, MAX_STORE_FILE_BYTES};
pub use reload::{ReloadOutcome, SharedTls};
pub use tls::{ClientAuth, TlsMaterial};
