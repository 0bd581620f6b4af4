//! STOMP durable topic subscriptions (`activemq.subscriptionName`) in a cluster: the
//! persistent session that serves one (see `subscribe.rs`) is claimed from whichever node
//! holds it, exactly as an MQTT CONNECT claims a persistent session (`connect.rs`,
//! `src/cluster/sessions/`), so the cluster's session machinery keeps it: its record with
//! the subscription, its floors in the shard streams, what its consumer was sent and did not
//! acknowledge (re-sent with `redelivered:true` wherever it resumes), a dead node's sessions
//! taken over after the kick bound.
//!
//! What differs from MQTT:
//! - The claim does not take the session from a node whose consumer holds it: that node
//!   answers "in use" and the SUBSCRIBE gets ActiveMQ's ERROR `Durable consumer is in use`
//!   (ActiveMQ admits one consumer per durable subscription). A node that does not answer
//!   within the kick bound (dead) loses it.
//! - The SUBSCRIBE is asynchronous: the connection reads no further frame until it is
//!   settled (the claim can wait for a kick, up to 2 s), so later frames see it.
//! - Its RECEIPT leaves once the session's record holds the subscription and the node's live
//!   interest is in place; the store not answering is an ERROR, no RECEIPT.
//! - UNSUBSCRIBE with the name claims the session too (another node may hold it offline) and
//!   its RECEIPT leaves once the record is deleted.
//! - The session taken from this connection (another node's claim that won, the store's
//!   quorum lost, this node draining) ends the connection with an ERROR naming the
//!   subscription (`durable_kicked`).

use std::sync::Arc;

use super::subscribe::{durable_parts, SubscribeRequest};
use super::{Close, Ready, StompConn};
use crate::broker::durability::{
    BackplaneFuture, Change, ClaimRequest, Claimed, Commit, DurabilityError, SessionData,
};
use crate::broker::runtime::ClaimGate;
use crate::broker::session::Session;
use crate::protocol::stomp::Frame;

/// What a claimed durable subscription is for.
pub(super) enum ClaimFor {
    /// A SUBSCRIBE: attach its session and subscribe.
    Subscribe(SubscribeRequest),
    /// An UNSUBSCRIBE with the name of a subscription this connection does not hold: end it.
    Remove,
}

/// A claim settled by the cluster, applied in the connection's order (`apply_ready`).
pub(crate) struct ClaimedDurable {
    session_id: String,
    frame: Frame,
    purpose: ClaimFor,
    claimed: Result<Claimed, DurabilityError>,
    /// Held until the session is attached (see `BrokerCore::claim_gate`).
    gate: ClaimGate,
}

/// ActiveMQ's ERROR for a durable subscription that another consumer holds.
fn in_use(session_id: &str, frame: &Frame) -> Close {
    let (client_id, name) = durable_parts(session_id).unwrap_or_default();
    Close::error(
        format!("Durable consumer is in use for client: {client_id} and subscriptionName: {name}"),
        Some(frame),
    )
}

impl StompConn {
    /// Claim durable subscription `session_id` from the cluster for `purpose`; reading stops
    /// until it is settled ([`Self::finish_claim`]). ERROR at once when this node cannot
    /// keep it now (draining, quorum lost) or a consumer on this node holds it.
    pub(super) fn claim_durable(
        &mut self,
        session_id: String,
        frame: &Frame,
        purpose: ClaimFor,
    ) -> Result<(), Close> {
        let Some(backplane) = self.core.backplane().cloned() else {
            return Err(Close::error("not a cluster node", Some(frame)));
        };
        if backplane.is_draining() {
            return Err(Close::error(
                "this ferromq cluster node is draining (shutting down): durable subscriptions \
                 are served by the other nodes",
                Some(frame),
            ));
        }
        if !backplane.is_available() {
            return Err(Close::error(
                "the cluster store's quorum is unreachable from this node: durable \
                 subscriptions are served by the other nodes",
                Some(frame),
            ));
        }
        let attached_here = self
            .core
            .registry
            .by_client_id(&session_id)
            .is_some_and(|s| s.is_attached());
        if attached_here {
            return Err(match purpose {
                ClaimFor::Subscribe(_) => in_use(&session_id, frame),
                ClaimFor::Remove => Close::error("Durable consumer is in use", Some(frame)),
            });
        }
        let core = self.core.clone();
        let frame = frame.clone();
        self.held += 1;
        self.pending.push_back(Box::pin(async move {
            let client_id: Arc<str> = Arc::from(session_id.as_str());
            let gate = core.claim_gate(&client_id).await;
            let claimed = backplane
                .claim(ClaimRequest {
                    client_id,
                    clean_start: false,
                    persistent: true,
                    will: None,
                    take_over: false,
                })
                .await;
            Ready {
                released_hold: true,
                durable: Some(Box::new(ClaimedDurable {
                    session_id,
                    frame,
                    purpose,
                    claimed,
                    gate,
                })),
                ..Ready::default()
            }
        }));
        Ok(())
    }

    /// The cluster answered a claim: attach and subscribe, or remove, or the ERROR.
    pub(super) fn finish_claim(&mut self, claimed: ClaimedDurable) -> Result<(), Close> {
        let ClaimedDurable {
            session_id,
            frame,
            purpose,
            claimed,
            gate,
        } = claimed;
        match claimed {
            Ok(Claimed::Here) => {}
            Ok(Claimed::Image(image)) => {
                self.core.restore_claimed(*image);
            }
            Ok(Claimed::InUse { .. }) => {
                return Err(match purpose {
                    ClaimFor::Subscribe(_) => in_use(&session_id, &frame),
                    ClaimFor::Remove => Close::error("Durable consumer is in use", Some(&frame)),
                })
            }
            Err(e) => {
                return Err(Close::error(
                    format!("the durable subscription's session could not be claimed: {e}"),
                    Some(&frame),
                ))
            }
        }
        match purpose {
            ClaimFor::Remove => {
                drop(gate);
                self.remove_local_durable(&session_id, &frame)
            }
            ClaimFor::Subscribe(request) => {
                let attached = self.attach_durable(&session_id);
                if let (Ok(attached), Some(backplane)) = (&attached, self.core.backplane()) {
                    backplane.attached(&attached.session);
                }
                drop(gate);
                self.finish_subscribe(request, attached, &frame)
            }
        }
    }

    /// The RECEIPT of a durable SUBSCRIBE in a cluster: once the live interest is in place
    /// (`ready`) and the session's record holds the subscription (`kept`); else an ERROR.
    /// Subscription `key` delivers nothing before it.
    pub(super) fn receipt_when_kept(
        &mut self,
        key: u64,
        ready: BackplaneFuture<()>,
        kept: Commit,
        frame: &Frame,
    ) {
        let receipt = Self::receipt_for(frame);
        let frame = frame.clone();
        self.pending.push_back(Box::pin(async move {
            ready.await;
            match kept.wait().await {
                Ok(()) => Ready {
                    frames: receipt.into_iter().collect(),
                    receipted_sub: Some(key),
                    ..Ready::default()
                },
                Err(e) => Ready {
                    fail: Some(Close::error(
                        format!("the durable subscription is not kept by the cluster store: {e}"),
                        Some(&frame),
                    )),
                    ..Ready::default()
                },
            }
        }));
    }

    /// The RECEIPT of `frame` once `commit` is done; else an ERROR saying `what`.
    pub(super) fn receipt_after(&mut self, commit: Commit, frame: &Frame, what: &'static str) {
        let receipt = Self::receipt_for(frame);
        let frame = frame.clone();
        self.pending.push_back(Box::pin(async move {
            match commit.wait().await {
                Ok(()) => Ready {
                    frames: receipt.into_iter().collect(),
                    ..Ready::default()
                },
                Err(e) => Ready {
                    fail: Some(Close::error(format!("{what}: {e}"), Some(&frame))),
                    ..Ready::default()
                },
            }
        }));
    }

    /// A durable subscription whose session was taken from this connection (its attachment
    /// kicked): the ERROR that ends the connection, naming it. The connection's other
    /// subscriptions end as at any close (durable ones kept offline).
    pub(super) fn durable_kicked(&self) -> Option<Close> {
        let session = self
            .subs
            .iter()
            .find_map(|s| (s.durable && s.token.signals.is_kicked()).then_some(&s.session))?;
        let (client_id, name) = durable_parts(session.client_id()).unwrap_or_default();
        let backplane = self.core.backplane();
        let why = if session.is_handed_over() {
            "taken over by a consumer on another ferromq node"
        } else if backplane.is_some_and(|b| b.is_draining()) {
            "this ferromq node is draining (shutting down); subscribe again on another node"
        } else if backplane.is_some_and(|b| !b.is_available()) {
            "this ferromq node lost the cluster store's quorum; subscribe again on another node"
        } else {
            "taken over"
        };
        Some(Close::error(
            format!("Durable consumer for client: {client_id} and subscriptionName: {name} ended: {why}"),
            None,
        ))
    }
}

/// The commit that writes `session`'s record as it is now (its subscriptions): what a
/// durable SUBSCRIBE's RECEIPT waits for in a cluster.
pub(super) fn kept_record(
    core: &crate::broker::runtime::BrokerCore,
    session: &Session,
    generation: u64,
) -> Commit {
    match session.with_state(generation, |s| SessionData::of(s)) {
        Some(data) => core.durability().commit(vec![Change::SessionSaved(data)]),
        None => Commit::Done(Err(DurabilityError::Unavailable(
            "the session was taken over meanwhile".into(),
        ))),
    }
}
