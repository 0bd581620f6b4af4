//! Why a connection ended or was refused: one list for the access log's `reason` field and the
//! `reason` label of `ferromq_connections_closed_total` / `ferromq_connections_refused_total`.

/// Why a connection ended (after it was established) or was refused (before).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reason {
    // Ends of an established connection.
    /// The client sent DISCONNECT (MQTT) or DISCONNECT (STOMP).
    ClientDisconnect,
    /// The peer closed the socket without DISCONNECT.
    PeerClosed,
    /// A socket error (reset, broken pipe ...).
    SocketError,
    /// Nothing received for longer than the keep-alive (or STOMP heart-beat) allows.
    KeepAliveTimeout,
    /// A malformed packet or frame, or a protocol violation.
    ProtocolError,
    /// An MQTT 5 re-authentication failed.
    ReauthFailed,
    /// Another connection took the session over (`allowLinkStealing`).
    TakenOver,
    /// The broker (or the connector, on reload) shut down.
    ServerShutdown,
    /// A publish stayed refused by a full memory or store past `sendFailIfNoSpace`.
    NoSpace,
    /// Closed by an administrator.
    AdminDisconnect,
    /// A broker-side error.
    Internal,
    // Refusals: the connection never got established.
    /// The connector's `maximumConnections` was reached (closed at accept).
    MaxConnections,
    /// Wrong user name or password.
    BadCredentials,
    /// Authenticated but not allowed to connect.
    NotAuthorized,
    /// The authentication backend (LDAP) did not answer.
    AuthServerUnavailable,
    /// The client id is not valid, or in use and link stealing is off.
    ClientIdRejected,
    /// A protocol version the broker does not serve.
    UnsupportedVersion,
    /// No CONNECT within `connectAttemptTimeout`.
    ConnectTimeout,
    /// The peer closed (or the socket failed) before CONNECT.
    ClosedBeforeConnect,
    /// The TLS or WebSocket handshake failed.
    HandshakeFailed,
    /// The CONNACK would exceed the client's Maximum Packet Size, or a STOMP CONNECT header
    /// could not be honoured.
    ConnectNotHonoured,
    /// A cluster node's shared store (the NATS JetStream quorum) did not answer: a persistent
    /// session was refused or sent to another node.
    StoreUnavailable,
}

impl Reason {
    /// Every reason, in label order.
    pub const ALL: [Reason; 22] = [
        Reason::ClientDisconnect,
        Reason::PeerClosed,
        Reason::SocketError,
        Reason::KeepAliveTimeout,
        Reason::ProtocolError,
        Reason::ReauthFailed,
        Reason::TakenOver,
        Reason::ServerShutdown,
        Reason::NoSpace,
        Reason::AdminDisconnect,
        Reason::Internal,
        Reason::MaxConnections,
        Reason::BadCredentials,
        Reason::NotAuthorized,
        Reason::AuthServerUnavailable,
        Reason::ClientIdRejected,
        Reason::UnsupportedVersion,
        Reason::ConnectTimeout,
        Reason::ClosedBeforeConnect,
        Reason::HandshakeFailed,
        Reason::ConnectNotHonoured,
        Reason::StoreUnavailable,
    ];

    /// The reasons an established connection ends with (`closed` series).
    pub const CLOSE: [Reason; 12] = [
        Reason::ClientDisconnect,
        Reason::PeerClosed,
        Reason::SocketError,
        Reason::KeepAliveTimeout,
        Reason::ProtocolError,
        Reason::ReauthFailed,
        Reason::TakenOver,
        Reason::ServerShutdown,
        Reason::NoSpace,
        Reason::AdminDisconnect,
        Reason::Internal,
        Reason::StoreUnavailable,
    ];

    /// The reasons a connection is refused with before it is established (`refused` series).
    pub const REFUSE: [Reason; 13] = [
        Reason::MaxConnections,
        Reason::HandshakeFailed,
        Reason::ConnectTimeout,
        Reason::ClosedBeforeConnect,
        Reason::ProtocolError,
        Reason::UnsupportedVersion,
        Reason::BadCredentials,
        Reason::NotAuthorized,
        Reason::AuthServerUnavailable,
        Reason::ClientIdRejected,
        Reason::ConnectNotHonoured,
        Reason::ServerShutdown,
        Reason::StoreUnavailable,
    ];

    /// Number of reasons (the size of a per-reason counter array).
    pub const COUNT: usize = Reason::ALL.len();

    /// The label value (snake case).
    pub fn as_str(self) -> &'static str {
        match self {
            Reason::ClientDisconnect => "client_disconnect",
            Reason::PeerClosed => "peer_closed",
            Reason::SocketError => "socket_error",
            Reason::KeepAliveTimeout => "keep_alive_timeout",
            Reason::ProtocolError => "protocol_error",
            Reason::ReauthFailed => "reauth_failed",
            Reason::TakenOver => "taken_over",
            Reason::ServerShutdown => "server_shutdown",
            Reason::NoSpace => "no_space",
            Reason::AdminDisconnect => "admin_disconnect",
            Reason::Internal => "internal",
            Reason::MaxConnections => "max_connections",
            Reason::BadCredentials => "bad_credentials",
            Reason::NotAuthorized => "not_authorized",
            Reason::AuthServerUnavailable => "auth_server_unavailable",
            Reason::ClientIdRejected => "client_id_rejected",
            Reason::UnsupportedVersion => "unsupported_version",
            Reason::ConnectTimeout => "connect_timeout",
            Reason::ClosedBeforeConnect => "closed_before_connect",
            Reason::HandshakeFailed => "handshake_failed",
            Reason::ConnectNotHonoured => "connect_not_honoured",
            Reason::StoreUnavailable => "store_unavailable",
        }
    }

    /// Index into a per-reason array.
    pub fn index(self) -> usize {
        self as usize
    }

    /// An authentication failure (counted in `ferromq_auth_failures_total`).
    pub fn is_auth_failure(self) -> bool {
        matches!(
            self,
            Reason::BadCredentials
                | Reason::NotAuthorized
                | Reason::AuthServerUnavailable
                | Reason::ReauthFailed
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn all_lists_every_reason_in_index_order() {
        for (i, reason) in Reason::ALL.iter().enumerate() {
            assert_eq!(reason.index(), i, "{reason:?}");
        }
    }
}
