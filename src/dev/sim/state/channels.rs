//! Channels: the per-session pending-delivery queues, injected messages, `recv` snapshots,
//! `send` to a channel and `reply` to a received message, with idempotency-key dedupe.

use std::collections::BTreeSet;

use serde_json::{Map, Value, json};

use super::super::clock::Timestamp;
use super::super::errors::SimError;
use super::super::requests::{
    ReplyRequest, SendRequest, contains_claim_material, is_empty_metadata, validate_coordination,
    validate_say_body,
};
use super::super::types::{MessageSpec, SessionState};
use super::render::put;
use super::{Envelope, Session, SimState, new_id};

/// Delivered messages kept per session so `reply` can still find a source message.
const KEPT_DELIVERED_MESSAGES: usize = 100;
/// Idempotency keys remembered for send/reply dedupe.
const KEPT_IDEMPOTENCY_KEYS: usize = 10_000;
/// External peers (senders of injected messages) remembered as live.
const KEPT_EXTERNAL_PEERS: usize = 1_000;

/// The outcome of a `recv` snapshot.
#[derive(Debug)]
pub(crate) struct RecvSnapshot {
    /// Whether any envelope on the channel is queued (the `wait` wake-up condition).
    pub any_on_channel: bool,
    pub messages: Vec<Value>,
}

impl Envelope {
    /// Whether `recv` and the context inbox show it: coordination metadata and no lease
    /// credentials.
    pub(super) fn is_visible(&self) -> bool {
        self.coordination.is_some() && !self.claim_material
    }

    /// Oldest first: whole seconds of the send time, then message id.
    pub(super) fn order_key(&self) -> (u64, &str) {
        (self.sent_at.unix_seconds(), &self.message_id)
    }

    /// The metadata's `coordination_channel_id`, or else the channel it was sent on.
    pub(super) fn channel_id(&self) -> Value {
        channel_id(
            self.coordination.as_ref().unwrap_or(&Value::Null),
            &self.channel,
        )
    }
}

fn channel_id(metadata: &Value, channel: &str) -> Value {
    metadata
        .get("coordination_channel_id")
        .cloned()
        .unwrap_or_else(|| json!(channel))
}

/// A validated `send` or `reply`, ready to be delivered.
struct Outgoing<'a> {
    session_id: &'a str,
    workspace: String,
    idempotency_key: Option<String>,
    channel: String,
    from_peer: String,
    to_peer: Option<String>,
    body: Value,
    metadata: Value,
}

impl SimState {
    /// Runtime channels of the caller's workspace plus the caller's own channel (§3.3).
    pub(crate) fn channels(&self, session_id: &str) -> Result<Value, SimError> {
        let caller = self.session(session_id)?;
        let mut names: BTreeSet<&str> = self
            .sessions
            .values()
            .filter(|session| {
                session.state.is_live() && session.workspace_id == caller.workspace_id
            })
            .filter_map(|session| session.channel.as_deref())
            .collect();
        if let Some(channel) = caller.channel.as_deref() {
            names.insert(channel);
        }
        let channels: Vec<Value> = names
            .into_iter()
            .map(|name| Self::channel_payload(caller.workspace_id.as_deref(), name))
            .collect();
        Ok(json!({ "channels": channels }))
    }

    fn deliver(&mut self, session_id: &str, envelope: Envelope) {
        let depth = self.config.max_queue_depth.max(1);
        if let Some(session) = self.sessions.get_mut(session_id) {
            while session.queue.len() >= depth {
                session.queue.pop_front();
            }
            session.queue.push_back(envelope);
        }
    }

    fn remember_external_peer(&mut self, peer: &str) {
        if self.external_peers.insert(peer.to_owned()) {
            self.external_peer_order.push_back(peer.to_owned());
            if self.external_peer_order.len() > KEPT_EXTERNAL_PEERS
                && let Some(oldest) = self.external_peer_order.pop_front()
            {
                self.external_peers.remove(&oldest);
            }
        }
    }

    /// Records an idempotency key; false when it was already used in this workspace.
    fn first_use_of_key(&mut self, workspace: &str, message_id: &str) -> bool {
        let key = (workspace.to_owned(), message_id.to_owned());
        if self.idempotency_keys.contains(&key) {
            return false;
        }
        self.idempotency_keys.insert(key.clone());
        self.idempotency_order.push_back(key);
        if self.idempotency_order.len() > KEPT_IDEMPOTENCY_KEYS
            && let Some(oldest) = self.idempotency_order.pop_front()
        {
            self.idempotency_keys.remove(&oldest);
        }
        true
    }

    pub(crate) fn inject_message(
        &mut self,
        to_session_id: &str,
        spec: MessageSpec,
        now: Timestamp,
    ) -> String {
        let message_id = spec
            .message_id
            .filter(|id| !id.is_empty())
            .unwrap_or_else(|| new_id("msg"));
        let coordination = spec
            .metadata
            .clone()
            .filter(|metadata| validate_coordination(metadata).is_ok());
        let claim_material = contains_claim_material(&spec.body)
            || spec.metadata.as_ref().is_some_and(contains_claim_material);
        if !spec.from_peer.is_empty() {
            self.remember_external_peer(&spec.from_peer);
        }
        let envelope = Envelope {
            message_id: message_id.clone(),
            channel: spec.channel,
            from_peer: spec.from_peer,
            to_peer: spec.to_peer,
            body: spec.body,
            coordination,
            claim_material,
            sent_at: now,
        };
        self.deliver(to_session_id, envelope);
        message_id
    }

    /// The daemon handing the queue to the agent turn: the messages leave the queue.
    pub(crate) fn dequeue_messages(&mut self, session_id: &str) -> usize {
        let Some(session) = self.sessions.get_mut(session_id) else {
            return 0;
        };
        let count = session.queue.len();
        while let Some(envelope) = session.queue.pop_front() {
            if session.delivered.len() == KEPT_DELIVERED_MESSAGES {
                session.delivered.pop_front();
            }
            session.delivered.push_back(envelope);
        }
        count
    }

    /// Channel queues live in memory only; a daemon restart loses them.
    pub(crate) fn drop_channel_queues(&mut self) {
        for session in self.sessions.values_mut() {
            session.queue.clear();
        }
    }

    /// Non-destructive snapshot of the caller's queue for one channel (§5.1).
    pub(crate) fn recv(
        &self,
        session_id: &str,
        channel: &str,
        limit: Option<usize>,
    ) -> Result<RecvSnapshot, SimError> {
        let session = self.session(session_id)?;
        let on_channel: Vec<&Envelope> = session
            .queue
            .iter()
            .filter(|envelope| envelope.channel == channel)
            .collect();
        let any_on_channel = !on_channel.is_empty();
        let mut visible: Vec<&Envelope> = on_channel
            .into_iter()
            .filter(|envelope| envelope.is_visible())
            .collect();
        visible.sort_by(|a, b| a.order_key().cmp(&b.order_key()));
        let messages = visible
            .into_iter()
            .take(limit.unwrap_or(usize::MAX))
            .map(|envelope| {
                let mut map = Map::new();
                map.insert("message_id".into(), json!(envelope.message_id));
                map.insert("channel_id".into(), envelope.channel_id());
                map.insert("from_session_id".into(), json!(envelope.from_peer));
                put(&mut map, "to_session_id", json!(envelope.to_peer));
                map.insert("body".into(), envelope.body.clone());
                map.insert(
                    "metadata".into(),
                    envelope.coordination.clone().unwrap_or(Value::Null),
                );
                map.insert(
                    "timestamp".into(),
                    json!(envelope.sent_at.truncated_to_seconds().to_rfc3339()),
                );
                Value::Object(map)
            })
            .collect();
        Ok(RecvSnapshot {
            any_on_channel,
            messages,
        })
    }

    fn local_peer_error(session: &Session, channel: &str) -> SimError {
        SimError::new(
            404,
            format!(
                "network: local peer not found: session={} channel={channel}",
                session.id
            ),
        )
    }

    pub(crate) fn send(
        &mut self,
        session_id: &str,
        channel: &str,
        request: SendRequest,
        now: Timestamp,
    ) -> Result<Value, SimError> {
        let session = self.session(session_id)?;
        if session.channel.as_deref() != Some(channel) || session.state != SessionState::Active {
            return Err(Self::local_peer_error(session, channel));
        }
        validate_say_body(request.body.as_ref())?;
        let body = request.body.unwrap_or(Value::Null);
        if contains_claim_material(&body) {
            return Err(SimError::bad_request(
                "network: invalid body: body must not contain raw lease credentials",
            ));
        }
        let workspace = session.workspace_id.clone().unwrap_or_default();
        let recipients: Vec<String> = self
            .sessions
            .values()
            .filter(|other| {
                other.id != session_id
                    && other.state.is_live()
                    && other.channel.as_deref() == Some(channel)
                    && other.workspace_id.as_deref().unwrap_or_default() == workspace
            })
            .map(|other| other.id.clone())
            .collect();
        let outgoing = Outgoing {
            session_id,
            workspace,
            idempotency_key: request.idempotency_key,
            channel: channel.to_owned(),
            from_peer: session.peer_id(),
            to_peer: None,
            body,
            metadata: request.metadata.unwrap_or(Value::Null),
        };
        Ok(self.post(outgoing, &recipients, now))
    }

    pub(crate) fn reply(
        &mut self,
        session_id: &str,
        request: ReplyRequest,
        now: Timestamp,
    ) -> Result<Value, SimError> {
        let session = self.session(session_id)?;
        let source_id = request.reply_to_message_id.trim();
        let source = session
            .queue
            .iter()
            .chain(session.delivered.iter())
            .find(|envelope| envelope.message_id == source_id)
            .cloned()
            .ok_or_else(|| {
                SimError::new(
                    404,
                    format!("network: target peer not found: message_id={source_id:?}"),
                )
            })?;
        if source.channel.is_empty()
            || source.from_peer.is_empty()
            || session.workspace_id.is_none()
        {
            return Err(SimError::bad_request(
                "network: invalid field: source message has no workspace, channel or sender",
            ));
        }
        validate_say_body(request.body.as_ref())?;
        let metadata = if is_empty_metadata(request.metadata.as_ref()) {
            let Some(mut inherited) = source.coordination.clone() else {
                return Err(SimError::bad_request(
                    "metadata is required when the source message has no coordination metadata",
                ));
            };
            inherited["message_kind"] = json!("reply");
            inherited
        } else {
            let metadata = request.metadata.unwrap_or(Value::Null);
            validate_coordination(&metadata).map_err(SimError::bad_request)?;
            if metadata.get("message_kind").and_then(Value::as_str) != Some("reply") {
                return Err(SimError::bad_request(
                    "contract: invalid coordination message metadata: reply message_kind must be \"reply\"",
                ));
            }
            metadata
        };
        if session.channel.as_deref() != Some(source.channel.as_str())
            || session.state != SessionState::Active
        {
            return Err(Self::local_peer_error(session, &source.channel));
        }
        let caller_peer = session.peer_id();
        if source.from_peer == caller_peer {
            return Err(SimError::bad_request(
                "network: invalid field: direct room peers must differ",
            ));
        }
        let target_session = self
            .sessions
            .values()
            .find(|other| other.peer_id() == source.from_peer)
            .map(|other| {
                (
                    other.id.clone(),
                    other.state == SessionState::Active
                        && other.channel.as_deref() == Some(source.channel.as_str()),
                )
            });
        let target_present = match &target_session {
            Some((_, live)) => *live,
            None => self.external_peers.contains(&source.from_peer),
        };
        if !target_present {
            return Err(SimError::new(
                404,
                format!(
                    "network: target peer not found: peer_id={:?}",
                    source.from_peer
                ),
            ));
        }
        let outgoing = Outgoing {
            session_id,
            workspace: session.workspace_id.clone().unwrap_or_default(),
            idempotency_key: request.idempotency_key,
            channel: source.channel,
            from_peer: caller_peer,
            to_peer: Some(source.from_peer),
            body: request.body.unwrap_or(Value::Null),
            metadata,
        };
        let recipients: Vec<String> = target_session.into_iter().map(|(id, _)| id).collect();
        Ok(self.post(outgoing, &recipients, now))
    }

    /// Delivers a validated message to its recipients, once per idempotency key and workspace
    /// (a repeated key is answered again but not delivered again), and renders the answer.
    fn post(&mut self, outgoing: Outgoing<'_>, recipients: &[String], now: Timestamp) -> Value {
        let message_id = match outgoing.idempotency_key.as_deref().map(str::trim) {
            Some(key) if !key.is_empty() => key.to_owned(),
            _ => new_id("msg"),
        };
        if self.first_use_of_key(&outgoing.workspace, &message_id) {
            for recipient in recipients {
                self.deliver(
                    recipient,
                    Envelope {
                        message_id: message_id.clone(),
                        channel: outgoing.channel.clone(),
                        from_peer: outgoing.from_peer.clone(),
                        to_peer: outgoing.to_peer.clone(),
                        body: outgoing.body.clone(),
                        coordination: Some(outgoing.metadata.clone()),
                        claim_material: false,
                        sent_at: now,
                    },
                );
            }
        }
        let mut message = Map::new();
        message.insert("message_id".into(), json!(message_id));
        message.insert(
            "channel_id".into(),
            channel_id(&outgoing.metadata, &outgoing.channel),
        );
        message.insert("from_session_id".into(), json!(outgoing.session_id));
        put(&mut message, "to_session_id", json!(outgoing.to_peer));
        message.insert("body".into(), outgoing.body);
        message.insert("metadata".into(), outgoing.metadata);
        message.insert("timestamp".into(), json!(now.to_rfc3339()));
        json!({ "message": message })
    }
}
