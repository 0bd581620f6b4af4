//! Kicks between nodes: asking a session's owner to hand it over, answering other nodes'
//! kicks (the hand-over writes the last record), and flushing the records at shutdown.

use super::*;

/// The header of a kick that only takes an idle session (see [`ClaimRequest::take_over`]).
pub(in crate::cluster) const KICK_IF_IDLE: &str = "Fmq-Kick-If-Idle";
/// The header naming the kicking node's claim (`<µs>.<instance>`, its [`ClaimStamp`]): a
/// kick read late (the owner did not run meanwhile) that is older than the owner's own claim
/// under way hands over the copy it was about, not that newer claim. Absent (a node of an
/// earlier version): the kick is taken as the newest.
pub(in crate::cluster) const KICK_CLAIM: &str = "Fmq-Kick-Claim";
/// The answer of an owner whose client holds the session (a kick with [`KICK_IF_IDLE`]).
pub(in crate::cluster) const IN_USE: &[u8] = b"in-use";

/// How an owner answered a kick.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(in crate::cluster) enum KickAnswer {
    HandedOver,
    /// A kick with [`KICK_IF_IDLE`]: its client holds the session there, which it keeps.
    InUse,
    /// No answer within [`KICK_TIMEOUT`] (a dead or paused owner), or no responder.
    Silent,
}

/// Ask `owner` to hand `client_id`'s session over (close its connection, write its last
/// record) and wait for its answer, at most [`KICK_TIMEOUT`]: a dead or paused owner does not
/// answer, and its last record is the truth (its later writes are fenced by the epoch).
/// `if_idle`: only a session no client holds there is handed over.
pub(in crate::cluster) async fn kick_owner(
    inner: &Inner,
    owner: &str,
    client_id: &str,
    if_idle: bool,
) -> KickAnswer {
    let payload = client_id.to_owned().into();
    let mut headers = async_nats::HeaderMap::new();
    if if_idle {
        headers.insert(KICK_IF_IDLE, "1");
    }
    if let Some((us, instance)) = inner.claims.lock().local(client_id) {
        headers.insert(KICK_CLAIM, format!("{us}.{instance}").as_str());
    }
    let request = inner
        .client
        .request_with_headers(kick_subject(owner), headers, payload);
    match tokio::time::timeout(KICK_TIMEOUT, request).await {
        Ok(Ok(answer)) if &answer.payload[..] == IN_USE => KickAnswer::InUse,
        Ok(Ok(_)) => KickAnswer::HandedOver,
        Ok(Err(e)) => {
            tracing::debug!(owner, client_id, "kick: {e}");
            KickAnswer::Silent
        }
        Err(_) => {
            tracing::info!(
                owner,
                client_id,
                "node did not hand the session over within {} ms",
                KICK_TIMEOUT.as_millis()
            );
            KickAnswer::Silent
        }
    }
}

/// Whether a client of this node holds `client_id`'s session, or is claiming it now (between
/// its claim and its attach): a kick with [`KICK_IF_IDLE`] leaves it here.
pub(in crate::cluster) fn in_use_here(inner: &Inner, client_id: &str) -> bool {
    inner.core().is_some_and(|core| {
        core.registry
            .by_client_id(client_id)
            .is_some_and(|s| s.is_attached())
            || core.is_claiming(client_id)
    })
}

/// Tell every node that `client_id` connected here, with when its claim started: an older
/// connection with that client id anywhere closes (see `claims.rs`).
pub fn announce(inner: &Arc<Inner>, client_id: &Arc<str>) {
    let Some((claimed_us, instance)) = inner.claims.lock().local(client_id) else {
        return;
    };
    let mut payload = instance.to_be_bytes().to_vec();
    payload.extend_from_slice(&claimed_us.to_be_bytes());
    payload.extend_from_slice(client_id.as_bytes());
    let subject = format!("fmq.kick.{}", client_key(client_id));
    let node = inner.clone();
    tokio::spawn(async move {
        let _ = node.client.publish(subject, payload.into()).await;
    });
}

/// Answer kicks and flush acknowledgement progress.
pub async fn start(inner: &Arc<Inner>) -> anyhow::Result<()> {
    let mut direct = inner
        .client
        .subscribe(kick_subject(&inner.node_id))
        .await
        .map_err(|e| anyhow::anyhow!("cluster: kick subscription: {e}"))?;
    let mut broadcast = inner
        .client
        .subscribe("fmq.kick.>")
        .await
        .map_err(|e| anyhow::anyhow!("cluster: kick subscription: {e}"))?;
    let node = inner.clone();
    tokio::spawn(async move {
        while let Some(message) = direct.next().await {
            let node = node.clone();
            tokio::spawn(async move {
                let client_id: Arc<str> = Arc::from(String::from_utf8_lossy(&message.payload));
                let if_idle = message
                    .headers
                    .as_ref()
                    .is_some_and(|h| h.get(KICK_IF_IDLE).is_some());
                let kicker = message
                    .headers
                    .as_ref()
                    .and_then(|h| h.get(KICK_CLAIM))
                    .and_then(|v| claim_stamp(v.as_str()));
                let answer: &'static [u8] = if if_idle && in_use_here(&node, &client_id) {
                    IN_USE
                } else {
                    hand_over(&node, &client_id, kicker).await;
                    b"ok"
                };
                if let Some(reply) = message.reply {
                    let _ = node
                        .client
                        .publish(reply, bytes::Bytes::from_static(answer))
                        .await;
                }
            });
        }
    });
    let node = inner.clone();
    tokio::spawn(async move {
        while let Some(message) = broadcast.next().await {
            let payload = &message.payload;
            if payload.len() < 16 {
                continue;
            }
            let (instance, rest) = payload.split_at(8);
            let (claimed_us, client_id) = rest.split_at(8);
            let instance = u64::from_be_bytes(instance.try_into().unwrap_or_default());
            let claimed_us = u64::from_be_bytes(claimed_us.try_into().unwrap_or_default());
            if instance == node.instance {
                continue;
            }
            let client_id: Arc<str> = Arc::from(String::from_utf8_lossy(client_id));
            let older_here = node
                .claims
                .lock()
                .announced(&client_id, (claimed_us, instance));
            let epoch = node
                .tracker
                .lock()
                .sessions
                .get(&client_id)
                .map(|t| t.epoch);
            match epoch {
                // Persistent: the owner's kick hands it over with its record; a node that
                // missed that kick (paused, cut off) finds out here that it lost the session.
                Some(epoch) => {
                    let node = node.clone();
                    tokio::spawn(async move {
                        tokio::time::sleep(KICK_TIMEOUT + Duration::from_millis(500)).await;
                        verify(&node, &client_id, epoch, VERIFY_QUICKLY).await;
                    });
                }
                None if older_here => {
                    if let Some(core) = node.core() {
                        core.hand_over(&client_id);
                    }
                }
                None => {}
            }
        }
    });
    let node = inner.clone();
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(FLUSH_INTERVAL);
        loop {
            tick.tick().await;
            let dirty: Vec<Arc<str>> = node
                .tracker
                .lock()
                .sessions
                .iter()
                .filter(|(_, t)| t.dirty)
                .map(|(c, _)| c.clone())
                .collect();
            futures_util::stream::iter(dirty)
                .for_each_concurrent(64, |client_id| {
                    let node = node.clone();
                    async move {
                        let _ = write_record(&node, &client_id).await;
                    }
                })
                .await;
        }
    });
    Ok(())
}

/// `<µs>.<instance>` of a [`KICK_CLAIM`] header.
fn claim_stamp(text: &str) -> Option<crate::cluster::claims::ClaimStamp> {
    let (us, instance) = text.split_once('.')?;
    Some((us.parse().ok()?, instance.parse().ok()?))
}

/// Another node takes `client_id`'s session: close it here, write its last record, forget it.
/// `kicker`: the kicking node's claim, when its kick said; a kick older than this node's own
/// latest claim lets go of the copy only, and the newer claim restores its own.
async fn hand_over(
    inner: &Arc<Inner>,
    client_id: &Arc<str>,
    kicker: Option<crate::cluster::claims::ClaimStamp>,
) {
    inner
        .claims
        .lock()
        .let_go_unless_newer_here(client_id, kicker);
    inner.q2.forget(client_id);
    // A kick the claiming node sent again (its first answer was slow) finds the session
    // handed over already: written again, logged once.
    let mut again = false;
    let tracked = {
        let mut tracker = inner.tracker.lock();
        match tracker.sessions.get_mut(client_id) {
            Some(t) => {
                again = t.handed_over;
                // Before the session leaves the registry: what the readers route from now on
                // no longer reaches it, so its floors must not follow them.
                t.freeze(&inner.routed());
                t.data_changes += 1;
                if t.connected {
                    t.connected = false;
                    t.offline_since_ms = now_ms();
                }
                // A will with a Will Delay (pending, or its connection closing now) goes with
                // the session, for the taking node to cancel (a resume, MQTT 5 3.1.3-9) or
                // publish (its session ends); one without is published by this node's
                // connection as it closes (taken over).
                if let Some(will) = t.data.will.take() {
                    t.data.will =
                        (will.deadline_ms.is_some() || will.delay_secs() > 0).then_some(will);
                }
                Some(t.epoch)
            }
            None => None,
        }
    };
    if again {
        tracing::debug!(client_id = %client_id, epoch = ?tracked, "asked again for a session handed over");
    } else {
        tracing::info!(
            client_id = %client_id,
            epoch = ?tracked,
            "another node's claim asked for the session: handed over"
        );
    }
    if let Some(core) = inner.core() {
        core.hand_over(client_id);
    }
    if let Some(epoch) = tracked {
        let _ = write_record(inner, client_id).await;
        // Only the copy handed over: a claim on this node may have restored the session
        // meanwhile (a newer copy, not handed over).
        let mut tracker = inner.tracker.lock();
        if tracker
            .sessions
            .get(client_id)
            .is_some_and(|t| t.handed_over && t.epoch == epoch)
        {
            tracker.sessions.remove(client_id);
        }
    }
}

/// Graceful shutdown: every local session's record written as offline, bounded.
pub fn flush_all_blocking(inner: &Arc<Inner>) {
    let client_ids: Vec<Arc<str>> = {
        let mut tracker = inner.tracker.lock();
        let now = now_ms();
        for t in tracker.sessions.values_mut() {
            if t.connected {
                t.connected = false;
                t.offline_since_ms = now;
                t.data_changes += 1;
            }
            t.dirty = true;
        }
        tracker.sessions.keys().cloned().collect()
    };
    // What the drain's deadline leaves (nothing when NATS was out of reach).
    let wait = inner.drain.store_wait(Duration::from_secs(5));
    let inner = inner.clone();
    let flush = async move {
        crate::cluster::wills::finish_deletes(&inner).await;
        futures_util::stream::iter(client_ids)
            .for_each_concurrent(64, |client_id| {
                let inner = inner.clone();
                async move {
                    let _ = write_record(&inner, &client_id).await;
                }
            })
            .await;
    };
    let Ok(handle) = tokio::runtime::Handle::try_current() else {
        return;
    };
    if handle.runtime_flavor() == tokio::runtime::RuntimeFlavor::MultiThread {
        tokio::task::block_in_place(|| {
            handle.block_on(async {
                if tokio::time::timeout(wait, flush).await.is_err() {
                    tracing::warn!(
                        "cluster: session records not all written at shutdown; their \
                         sessions resume from the last written record"
                    );
                }
            })
        });
    } else {
        tracing::warn!(
            "cluster: session records not flushed at shutdown (single-threaded runtime)"
        );
    }
}
