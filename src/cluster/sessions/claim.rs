//! The claim of a CONNECT: read the record from the bucket's leader, take the session over
//! from its owner (a kick) under a new epoch, and restore what it held.

use super::*;

/// CONNECT of `request.client_id` (see [`crate::broker::durability::Backplane::claim`]).
pub async fn claim(inner: &Arc<Inner>, request: ClaimRequest) -> Result<Claimed, DurabilityError> {
    let client_id = request.client_id.clone();
    let key = client_key(&client_id);
    crate::cluster::confirmed::count(inner, |c| c.cluster_claims());
    if let (false, Some(will)) = (request.persistent, &request.will) {
        crate::cluster::wills::claim_clean(inner, &client_id, will).await;
    }
    // Announced to every node once attached (see `claims.rs`).
    inner
        .claims
        .lock()
        .claimed_here(&client_id, crate::cluster::claims::now_us(), inner.instance);
    // A resume right after a claim, or a write, that found this node the owner (a client
    // reconnecting over and over): the same answer, without reading again.
    if crate::cluster::confirmed::still_ours(inner, &request) {
        crate::cluster::confirmed::count(inner, |c| c.cluster_claims_confirmed());
        tracing::debug!(client_id = %client_id, "claim: this node owns the session (confirmed just before)");
        return Ok(Claimed::Here);
    }
    // The owner last asked to hand over: a claim that loses a race re-reads the record and
    // asks the winner in turn, so two nodes never both hold the session.
    let mut kicked: Option<(String, u64)> = None;
    for attempt in 0..CLAIM_ATTEMPTS {
        let sent = crate::cluster::confirmed::Sent::now(inner);
        let entry = read_record(inner, &key).await?;
        let entry = match entry {
            Some(e) if e.operation == Operation::Put => Some(e),
            // A clean start discards any session anyway: nothing of the client's is lost if a
            // lagging replica hides its record (the new session's first write, a create,
            // finds it and the client is sent to connect again).
            other if request.clean_start => other,
            // "No record" makes a new session where one is to be resumed: believed only from
            // the bucket's leader. A read may be answered by any replica, and one that
            // rejoined after a partition and has not caught up yet does not have the record.
            _ => {
                let leader = leader_entry(inner, &key).await?;
                if leader.is_some() {
                    tracing::warn!(
                        client_id = %client_id,
                        "a replica answered without the session record; its leader has it"
                    );
                }
                leader
            }
        };
        // A copy being handed over has left the broker's registry: attaching "this node's
        // session" would make a new, empty one while its record still names this node. It is
        // taken over from its record like another node's.
        let tracked = inner
            .tracker
            .lock()
            .sessions
            .get(&client_id)
            .map(|t| (t.epoch, t.revision, t.handed_over));
        let local_epoch = tracked
            .filter(|(_, _, handed_over)| !handed_over)
            .map(|(epoch, revision, _)| (epoch, revision));
        let Some((record, revision)) =
            entry
                .filter(|e| e.operation == Operation::Put)
                .and_then(|e| {
                    SessionRecord::decode(&e.value)
                        .ok()
                        .map(|r| (r, e.revision))
                })
        else {
            tracing::debug!(
                client_id = %client_id,
                local = ?local_epoch,
                clean_start = request.clean_start,
                "claim: no session record; the session starts here"
            );
            // No record: a local copy whose record was written is stale (ended elsewhere).
            // (A copy being handed over too: the session it would be written for is gone.)
            if tracked.is_some_and(|(_, revision, _)| revision > 0) {
                drop_local(inner, &client_id);
            }
            inner.claims.lock().starts_here(&client_id);
            return Ok(Claimed::Here);
        };
        let ours = record.owner == inner.node_id
            && local_epoch.is_some_and(|(epoch, _)| epoch == record.epoch);
        tracing::debug!(
            client_id = %client_id,
            owner = %record.owner,
            epoch = record.epoch,
            revision,
            local = ?local_epoch,
            ours,
            "claim: session record read"
        );
        if ours {
            if request.clean_start {
                // The broker discards it at attach; the record goes with it (SessionEnded).
                inner.claims.lock().starts_here(&client_id);
                return Ok(Claimed::Here);
            }
            if let Some(t) = inner.tracker.lock().sessions.get_mut(&client_id) {
                if t.epoch == record.epoch && !t.handed_over {
                    sent.confirm(t);
                }
            }
            return Ok(Claimed::Here);
        }
        if local_epoch.is_some() {
            drop_local(inner, &client_id);
        }
        let owner_at = (record.owner.clone(), record.epoch);
        // No owner: released by a drained node, nobody to ask.
        if !record.owner.is_empty()
            && record.owner != inner.node_id
            && kicked.as_ref() != Some(&owner_at)
        {
            kicked = Some(owner_at);
            // A silent owner is taken over after the kick's bound: waiting until its heartbeat
            // is `quorumLossTimeout` old (so that an owner cut off from NATS has stopped
            // serving) was tried, and with it a node SIGKILLed under QoS 2 load left messages
            // delivered twice (in every run, for a cause not found; none without it); see
            // docs/cluster.md, "Sessions across nodes".
            let answer = kick_owner(inner, &record.owner, &client_id, !request.take_over).await;
            if answer == KickAnswer::InUse {
                return Ok(Claimed::InUse {
                    holder: Some(record.owner.clone()),
                });
            }
            continue;
        }
        // The old connection's will, when this claim is the one to publish it (see
        // `wills.rs`): published once the record without it is written.
        let now = now_ms();
        if request.clean_start || record.expired(now) {
            let will = crate::cluster::wills::due_when_taken(&record, true, now);
            crate::cluster::confirmed::count(inner, |c| c.cluster_record_writes());
            match inner
                .sessions_kv
                .delete_expect_revision(&key, Some(revision))
                .await
            {
                Ok(()) => {
                    if let Some(will) = will {
                        crate::cluster::wills::publish(
                            inner,
                            &client_id,
                            will,
                            "its session ended",
                        );
                    }
                    inner.claims.lock().starts_here(&client_id);
                    return Ok(Claimed::Here);
                }
                Err(_) => continue,
            }
        }
        let will = crate::cluster::wills::due_when_taken(&record, false, now);
        let taken = SessionRecord {
            owner: inner.node_id.clone(),
            epoch: record.epoch + 1,
            connected: true,
            // A will still within its delay is cancelled by this resume (MQTT 5 3.1.3-9);
            // the new connection's is kept from now on, before the CONNACK.
            will: request
                .will
                .as_ref()
                .filter(|_| request.persistent)
                .map(crate::cluster::codec::WillRecord::of),
            owner_instance: inner.instance,
            ..record.clone()
        };
        crate::cluster::confirmed::count(inner, |c| c.cluster_record_writes());
        let sent = crate::cluster::confirmed::Sent::now(inner);
        match tokio::time::timeout(
            inner.store_timeout,
            inner.sessions_kv.update(&key, taken.encode(), revision),
        )
        .await
        {
            Ok(Ok(new_revision)) => {
                tracing::debug!(
                    client_id = %client_id,
                    // No owner: released (a clean end, a dead node's sessions cleared).
                    from = if record.owner.is_empty() { "none" } else { record.owner.as_str() },
                    epoch = taken.epoch,
                    read_revision = revision,
                    revision = new_revision,
                    "claim: session taken over"
                );
                if let Some(will) = will {
                    crate::cluster::wills::publish(
                        inner,
                        &client_id,
                        will,
                        "its connection was lost on another node",
                    );
                }
                let image = match restore(inner, &client_id, taken, new_revision).await {
                    Ok(image) => image,
                    Err(e) => {
                        // Owned by the record now, not served: the client's next CONNECT
                        // (here or elsewhere) restores it again from the same record.
                        drop_local(inner, &client_id);
                        return Err(e);
                    }
                };
                if let Some(t) = inner.tracker.lock().sessions.get_mut(&client_id) {
                    if t.revision == new_revision {
                        sent.confirm(t);
                    }
                }
                return Ok(Claimed::Image(Box::new(image)));
            }
            Ok(Err(e)) if crate::cluster::lost_race::update(&e) => {
                tracing::debug!(client_id = %client_id, read_revision = revision, "claim: the record changed since it was read; reading again");
                // The other writer is usually the node the client just left, writing the
                // session offline or handing it over: a moment lets it finish, where reading
                // again at once could lose every attempt to its writes (a client hopping
                // nodes one CONNECT after another was refused 0x88 once in 300 hops).
                tokio::time::sleep(CLAIM_RETRY_PAUSE * (1 << attempt.min(4))).await;
                continue;
            }
            Ok(Err(e)) => return Err(unavailable(e)),
            Err(_) => return Err(unavailable("no answer taking a session over")),
        }
    }
    Err(unavailable(format!(
        "session {client_id} is being taken over by other nodes at the same time"
    )))
}

/// The session record under `key`, read within `storeTimeout`. A read refused before then
/// is tried again every [`READ_RETRY`]: NATS answers "no responders" while a bucket's raft
/// group elects a leader and before a replica that just started serves direct gets, which
/// lasts well under a second; a read changes nothing, so trying again is always safe.
pub(in crate::cluster) async fn read_record(
    inner: &Inner,
    key: &str,
) -> Result<Option<async_nats::jetstream::kv::Entry>, DurabilityError> {
    let deadline = tokio::time::Instant::now() + inner.store_timeout;
    loop {
        crate::cluster::confirmed::count(inner, |c| c.cluster_record_reads());
        let read = tokio::time::timeout_at(deadline, inner.sessions_kv.entry(key)).await;
        match read {
            Ok(Ok(entry)) => return Ok(entry),
            Ok(Err(e)) if tokio::time::Instant::now() + READ_RETRY < deadline => {
                tracing::debug!("cluster store: session read refused, trying again: {e}");
                tokio::time::sleep(READ_RETRY).await;
            }
            Ok(Err(e)) => return Err(unavailable(e)),
            Err(_) => return Err(unavailable("no answer reading a session")),
        }
    }
}

/// How long a refused session read waits before it is tried again.
pub(in crate::cluster) const READ_RETRY: Duration = Duration::from_millis(100);

/// The session record `key` as the bucket's leader has it (`STREAM.MSG.GET`, never a
/// replica's direct answer); `None` when there is none or it was deleted.
pub(in crate::cluster) async fn leader_entry(
    inner: &Arc<Inner>,
    key: &str,
) -> Result<Option<async_nats::jetstream::kv::Entry>, DurabilityError> {
    let subject = format!("{}{key}", inner.sessions_kv.prefix);
    crate::cluster::confirmed::count(inner, |c| c.cluster_record_reads());
    let read = inner
        .sessions_kv
        .stream
        .get_last_raw_message_by_subject(&subject);
    let message = match tokio::time::timeout(inner.store_timeout, read).await {
        Err(_) => return Err(unavailable("no answer reading a session from its leader")),
        Ok(Err(e))
            if e.kind()
                == async_nats::jetstream::stream::LastRawMessageErrorKind::NoMessageFound =>
        {
            return Ok(None)
        }
        Ok(Err(e)) => return Err(unavailable(e)),
        Ok(Ok(m)) => m,
    };
    let deleted = message
        .headers
        .get("KV-Operation")
        .is_some_and(|op| op.as_str() != "PUT");
    if deleted {
        return Ok(None);
    }
    Ok(Some(async_nats::jetstream::kv::Entry {
        bucket: inner.sessions_kv.name.clone(),
        key: key.to_owned(),
        value: message.payload,
        revision: message.sequence,
        delta: 0,
        created: message.time,
        operation: Operation::Put,
        seen_current: false,
    }))
}

/// Forget this node's copy of a session another node owns (or that ended elsewhere).
pub(in crate::cluster) fn drop_local(inner: &Arc<Inner>, client_id: &Arc<str>) {
    inner.q2.forget(client_id);
    inner.tracker.lock().sessions.remove(client_id);
    if let Some(core) = inner.core() {
        core.hand_over(client_id);
    }
}

/// The session of `record` (claimed at `revision`) as this node restores it: subscriptions,
/// and the messages sent and not acknowledged, read back from the log with their packet ids
/// in send order. Tracked from its floors, every shard catching up.
pub(in crate::cluster) async fn restore(
    inner: &Arc<Inner>,
    client_id: &Arc<str>,
    record: SessionRecord,
    revision: u64,
) -> Result<SessionImage, DurabilityError> {
    let offline_for = if record.offline_since_ms == 0 {
        Duration::ZERO
    } else {
        Duration::from_millis(now_ms().saturating_sub(record.offline_since_ms))
    };
    let mut state = SessionState::new(client_id, true);
    state.mqtt5 = record.mqtt5;
    state.expiry_secs = record.expiry_secs;
    *state.subscriptions_mut() = record
        .subscriptions
        .iter()
        .cloned()
        .collect::<BTreeMap<_, _>>();
    let data = SessionData::of(&state);
    let mut floors = record.floors.clone();
    floors.resize(inner.shards, 0);
    let mut tracked = Tracked::new(data, inner.shards, &floors);
    tracked.epoch = record.epoch;
    tracked.revision = revision;
    // A record of an older node has none: the new one is written at the attach.
    tracked.dirty = record.incarnation == 0;
    if record.incarnation != 0 {
        tracked.incarnation = record.incarnation;
    }
    for cursor in &mut tracked.shards {
        cursor.catching_up = true;
    }
    tracked.done_above_floors(&record.done);
    // The copy enters the tracker only once its in-flight list is complete (below). Inserted
    // first, a kick that came while the messages were read back handed over a copy lacking
    // the entries not read yet: its last record (`hand_over`) dropped exchanges the client
    // still held open, and the node taking the session gave their packet ids to other
    // messages (lost at the client as re-sends) and sent their messages again as new
    // (duplicates). A QoS 2 subscriber moving among three nodes every 10-300 ms hit it.
    for inflight in &record.inflight {
        let shard = inflight.shard as usize;
        if shard >= inner.shards {
            continue;
        }
        let stored = in_flight_message(inner, shard, inflight.seq).await?;
        let message = match stored.and_then(|s| decode_message(s.payload).ok()) {
            Some(frame) => frame.message,
            // A PUBREL to re-send needs no message.
            None if inflight.released => crate::cluster::qos2::released_placeholder(),
            // Gone from the log (older than maxOfflineAge): nothing to re-send.
            None => continue,
        };
        let queue_seq =
            crate::broker::durability::Durability::next_seq(&crate::cluster::ClusterEngine {
                inner: inner.clone(),
            });
        let (qos, stage) = match (inflight.qos, inflight.released) {
            (0, _) => continue,
            (1, _) => (QoS::AtLeastOnce, InflightStage::AwaitingPubAck),
            (_, false) => (QoS::ExactlyOnce, InflightStage::AwaitingPubRec),
            (_, true) => (QoS::ExactlyOnce, InflightStage::AwaitingPubComp),
        };
        let entry = InflightEntry {
            packet_id: inflight.packet_id,
            message: crate::broker::message::Message {
                retain: false,
                ..message
            },
            qos,
            retain: false,
            subscription_id: inflight.subscription_id.and_then(std::num::NonZeroU32::new),
            stage,
            seq: Some(queue_seq),
            shared_group: None,
        };
        if state.inflight_mut().restore(entry) {
            tracked.restore_entry(
                queue_seq,
                Entry {
                    shard: inflight.shard,
                    seq: inflight.seq,
                    qos: inflight.qos,
                    subscription_id: inflight.subscription_id,
                    packet_id: Some(inflight.packet_id),
                    released: inflight.released,
                },
            );
        }
    }
    {
        let mut tracker = inner.tracker.lock();
        // A kick that came while the messages were read back found no copy here and let the
        // session go at once (`hand_over`): another node may hold it already, from the record
        // this claim wrote (which lists every entry). Neither tracked nor served here: the
        // CONNECT is refused and its client connects again. (Checked under the tracker's
        // lock, which `hand_over` takes after `let_go`: a kick after this finds the whole
        // copy and hands it over with every entry.)
        let claims = inner.claims.lock();
        if claims.new_session(client_id) == NewSession::LetGo {
            return Err(unavailable(format!(
                "session {client_id} was taken by another node while it was restored here"
            )));
        }
        tracked.claim = claims.local(client_id);
        drop(claims);
        tracker.sessions.insert(client_id.clone(), tracked);
    }
    Ok(SessionImage { state, offline_for })
}

/// The message at `seq` of shard `shard`, for an in-flight entry of a restored session: from
/// any replica first, then from the stream's leader, which alone says for sure that it is
/// gone (`None`: older than `maxOfflineAge`). A replica behind the others answers "not
/// found" for a message stored a moment ago; taken for gone, the entry was dropped and its
/// message delivered again as new, under another packet id, while the client still held the
/// first exchange open (a subscriber moving between nodes every few hundred milliseconds).
pub(in crate::cluster) async fn in_flight_message(
    inner: &Arc<Inner>,
    shard: usize,
    seq: u64,
) -> Result<Option<async_nats::jetstream::message::StreamMessage>, DurabilityError> {
    let stream = inner
        .js
        .get_stream_no_info(shard_stream(shard))
        .await
        .map_err(unavailable)?;
    if let Ok(Ok(message)) = tokio::time::timeout(inner.store_timeout, stream.direct_get(seq)).await
    {
        return Ok(Some(message));
    }
    match tokio::time::timeout(inner.store_timeout, stream.get_raw_message(seq)).await {
        Ok(Ok(message)) => Ok(Some(message)),
        Ok(Err(e))
            if matches!(
                e.kind(),
                async_nats::jetstream::stream::LastRawMessageErrorKind::NoMessageFound
            ) =>
        {
            Ok(None)
        }
        Ok(Err(e)) => Err(unavailable(format!(
            "reading in-flight message {seq} of shard {shard}: {e}"
        ))),
        Err(_) => Err(unavailable(format!(
            "no answer reading in-flight message {seq} of shard {shard}"
        ))),
    }
}
