//! What a parked connection keeps of its [`Conn`]: only the state that outlives a quiet
//! moment.
//!
//! A connection parks only when [`Conn::quiet`] holds: nothing in its output buffer, no
//! acknowledgement waiting for the store, no held or deferred publish. Those parts (88 bytes of
//! `Conn`) are therefore empty and are rebuilt empty on waking. The publisher pause is kept
//! (one pointer): no pause is running, but it remembers the subscribers a pause gave up on, so
//! that a publisher is not paused for them again after every park. The
//! authorization cache is dropped too (a cache, refilled on demand; for a client that published
//! before parking, a sensor reporting once a minute, its largest allocation). The client id
//! is the session's (neither a `Conn` nor a record holds its own).
//!
//! The record lives inside the lot's one allocation per connection ([`super::Parked`]) instead
//! of a boxed `Conn` beside it, and is kept within the same allocator size class as `Conn`
//! (glibc rounds a request plus 8 bytes up to 16): a park frees the `Conn` box and allocates
//! the record, a wake-up the reverse, and each gets the memory the other just gave back
//! instead of leaving it as a hole among long-lived objects (docs/scaling.md). The size test
//! in `parking/mod.rs` checks the two classes.

use std::sync::Arc;

use super::super::durable_acks::PendingAcks;
use super::super::{
    enhanced_auth::EnhancedAuth, ClientLimits, Conn, FlowControl, HeldWill, Identity,
    ListenerSettings, Output, PublisherPause,
};
use crate::broker::runtime::BrokerCore;
use crate::broker::session::{AttachToken, Session};
use crate::protocol::ProtocolVersion;
use crate::security::{AuthzCache, Principal};

/// A parked connection's lasting state (see the module's documentation).
pub(crate) struct ParkedConn {
    pub(crate) core: Arc<BrokerCore>,
    pub(crate) listener: Arc<ListenerSettings>,
    pub(crate) version: ProtocolVersion,
    pub(crate) session: Arc<Session>,
    pub(crate) token: AttachToken,
    /// Not paused (see [`Conn::quiet`]); the sessions it gave up on, if any.
    pause: PublisherPause,
    principal: Principal,
    will: Option<Box<HeldWill>>,
    enhanced_auth: Option<Box<EnhancedAuth>>,
    limits: ClientLimits,
}

impl ParkedConn {
    /// Keep what `conn` needs after a park. The caller checked [`Conn::quiet`]: the parts
    /// left behind hold nothing (a debug build checks).
    pub(super) fn keep(conn: Box<Conn>) -> ParkedConn {
        let Conn {
            core,
            listener,
            version,
            keep_alive_limit_ms: _,
            session,
            token,
            identity,
            limits,
            output,
            pending_acks,
            pause,
            flow,
        } = *conn;
        debug_assert!(output.out.is_empty() && !output.pump_wanted && output.page_in.is_none());
        debug_assert!(pending_acks.is_empty());
        debug_assert!(pause.overfilled().is_empty());
        debug_assert!(flow.held.is_none() && flow.deferred.is_empty());
        let Identity {
            principal,
            authz: _,
            will,
            enhanced_auth,
        } = identity;
        ParkedConn {
            core,
            listener,
            version,
            session,
            token,
            pause,
            principal,
            will,
            enhanced_auth,
            limits,
        }
    }

    /// The connection's state for its new task.
    pub(in crate::broker::connection) fn into_conn(self) -> Box<Conn> {
        Box::new(Conn {
            core: self.core,
            listener: self.listener,
            version: self.version,
            keep_alive_limit_ms: None,
            identity: Identity {
                principal: self.principal,
                authz: AuthzCache::default(),
                will: self.will,
                enhanced_auth: self.enhanced_auth,
            },
            session: self.session,
            token: self.token,
            limits: self.limits,
            output: Output::default(),
            pending_acks: PendingAcks::default(),
            pause: self.pause,
            flow: FlowControl::default(),
        })
    }
}
