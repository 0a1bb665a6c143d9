//! What the client tells the application: [`Event`]s, read from [`Events`] (a `Stream`, or
//! [`Events::next_event`]), and the errors of its calls ([`ClientError`]).

use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use futures_util::Stream;
use realtime_core::{
    InvalidMessageType, InvalidTopicName, Position, StreamName, StreamState, TopicName,
};
use serde_json::Value;
use tokio::sync::mpsc;

use crate::policy::{Disconnect, Stop};

/// Something that happened to the client, in order. After [`Event::Stopped`] the stream ends.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub enum Event {
    /// A connect attempt starts (the token source is asked for a token first).
    Connecting {
        /// Attempts since the last stable connection (0 for the first).
        attempt: u32,
    },
    /// The server's `connected` frame: the connection is open. The recovery verdicts of
    /// its streams follow as [`Event::Recovered`] / [`Event::Unrecovered`], then the replayed
    /// messages.
    Connected(Connected),
    /// The connection ended; the client reconnects after `reconnect_in`.
    Disconnected {
        /// Why it ended.
        reason: Disconnect,
        /// The delay before the next attempt (zero after 4001, token expired).
        reconnect_in: Duration,
    },
    /// A stream the client asked for with `since` was recovered: the messages it missed
    /// follow, each once.
    Recovered {
        /// The stream.
        stream: StreamName,
    },
    /// A stream the client asked for with `since` could not be recovered (`recovered:
    /// false`: its history was lost or no longer covers the gap). Messages were missed:
    /// reload the state this stream feeds (for example from the backend's API).
    Unrecovered {
        /// The stream.
        stream: StreamName,
        /// Its position now; the client carries on from there.
        position: Position,
    },
    /// A message from the server for the application (published by the backend, a
    /// presence event, an inbound handler's reply). Each message of a stream is delivered
    /// once and in order, across reconnects.
    Message(Message),
    /// The token was refreshed in band; the connection stays open.
    Refreshed {
        /// The new expiry, in Unix seconds (`None`: it never expires).
        expires_at: Option<u64>,
    },
    /// A refresh failed (the token source failed, the server refused the token, or no
    /// answer came); the client tries again, and reconnects with a new token if the server
    /// closes the connection first (4001).
    RefreshFailed {
        /// What failed.
        error: ClientError,
    },
    /// An automatic resubscribe after a reconnect failed; the topic is dropped.
    SubscribeFailed {
        /// The topic.
        topic: TopicName,
        /// What failed.
        error: ClientError,
    },
    /// An `error` frame that answers no pending request (for example the refusal of a
    /// [`Client::send`](crate::Client::send), with its id).
    ServerError {
        /// The id of the refused frame, when it had one.
        id: Option<Value>,
        /// The error code (`docs/protocol.md`, Error codes).
        code: String,
        /// The server's text.
        message: String,
    },
    /// The client stopped for good; nothing follows.
    Stopped(Stop),
}

/// The `connected` frame's payload.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Connected {
    /// The connection's id: the address of per-connection messages.
    pub connection_id: String,
    /// The token's user.
    pub user_id: String,
    /// The token's roles.
    pub roles: Vec<String>,
    /// The token's expiry in Unix seconds (`None`: it never expires).
    pub expires_at: Option<u64>,
    /// The position of each of the connection's streams, and whether what the client
    /// missed in it was replayed.
    pub streams: Vec<StreamState>,
}

/// A message for the application.
#[derive(Debug, Clone, PartialEq)]
pub struct Message {
    /// Its `type`.
    pub kind: String,
    /// Its `payload` (an object; `{}` when the frame had none).
    pub payload: Value,
    /// The stream it came through, when it has a position.
    pub stream: Option<StreamName>,
    /// Its position in that stream.
    pub position: Option<Position>,
    /// The `id` of the client frame it answers (an inbound handler's reply), if any.
    pub id: Option<Value>,
}

impl Message {
    /// The topic, for a message of a `topic:` stream.
    pub fn topic(&self) -> Option<&TopicName> {
        match &self.stream {
            Some(StreamName::Topic(topic)) => Some(topic),
            _ => None,
        }
    }
}

/// The error of a [`Client`](crate::Client) call.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ClientError {
    /// The client is not connected right now (nothing was queued).
    #[error("not connected")]
    NotConnected,
    /// No reply came within the request timeout.
    #[error("no reply within {0:?}")]
    Timeout(Duration),
    /// The connection closed before the reply came.
    #[error("the connection closed before the reply")]
    Disconnected,
    /// The client stopped (closed, kicked, revoked, forbidden).
    #[error("the client is stopped")]
    Stopped,
    /// The server refused the request with an `error` frame.
    #[error("refused by the server: {code}: {message}")]
    Refused {
        /// The error code (`docs/protocol.md`, Error codes).
        code: String,
        /// The server's text.
        message: String,
    },
    /// The topic was unsubscribed before its subscribe was answered.
    #[error("unsubscribed before the server answered")]
    Unsubscribed,
    /// Not a valid topic name.
    #[error(transparent)]
    InvalidTopic(#[from] InvalidTopicName),
    /// Not a valid message type.
    #[error(transparent)]
    InvalidType(#[from] InvalidMessageType),
    /// A payload must serialize to a JSON object.
    #[error("the payload must be a JSON object: {0}")]
    InvalidPayload(String),
    /// The token source failed.
    #[error("the token source failed: {0}")]
    Token(String),
}

/// The client's events, in order: a [`Stream`] of [`Event`]s, or [`Events::next_event`].
/// Read them: the client waits (and stops reading its socket) while the buffer
/// ([`ClientConfig::event_capacity`](crate::ClientConfig::event_capacity)) is full, so a
/// consumer that falls far behind is eventually closed by the server as a slow consumer
/// (4008), and catches up by recovery after the reconnect.
#[derive(Debug)]
pub struct Events {
    pub(crate) rx: mpsc::Receiver<Event>,
}

impl Events {
    /// The next event; `None` after [`Event::Stopped`].
    pub async fn next_event(&mut self) -> Option<Event> {
        self.rx.recv().await
    }
}

impl Stream for Events {
    type Item = Event;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Event>> {
        self.rx.poll_recv(cx)
    }
}
