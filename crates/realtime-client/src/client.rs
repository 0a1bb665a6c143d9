//! [`Client`], the application's handle: it sends commands to the driver task that owns the
//! socket, and awaits their answers. Cheap to clone.

use std::collections::BTreeMap;
use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use realtime_core::{MessageType, Position, StreamName, TopicName};
use serde::Serialize;
use serde_json::Value;
use tokio::sync::{mpsc, oneshot, watch};
use tokio_util::sync::CancellationToken;

use crate::config::{ClientConfig, ConfigError, TokenSource};
use crate::driver::{Command, Driver};
use crate::event::{ClientError, Events};

/// A server frame that answered a request: its `type` and `payload`.
#[derive(Debug, Clone, PartialEq)]
pub struct Reply {
    /// The reply's `type` (`pong`, `subscribed`, or an inbound handler's type).
    pub kind: String,
    /// Its `payload`.
    pub payload: Value,
}

/// A topic the client is subscribed to, after the server's `subscribed`. The subscription is
/// kept across reconnects (resubscribed with `since`) until [`Subscription::unsubscribe`] or
/// [`Client::unsubscribe`]; dropping the handle does not unsubscribe. The topic's messages
/// arrive as [`Event::Message`](crate::Event::Message) with a `topic:` stream.
#[derive(Debug, Clone)]
pub struct Subscription {
    pub(crate) topic: TopicName,
    pub(crate) position: Option<Position>,
    pub(crate) recovered: bool,
    pub(crate) client: Client,
}

impl Subscription {
    /// The topic.
    pub fn topic(&self) -> &TopicName {
        &self.topic
    }

    /// The topic's position when the subscription was answered (`None` for a topic without
    /// history).
    pub fn position(&self) -> Option<&Position> {
        self.position.as_ref()
    }

    /// Whether the answer recovered what the client had missed since its position.
    pub fn recovered(&self) -> bool {
        self.recovered
    }

    /// Leaves the topic.
    ///
    /// # Errors
    /// As [`Client::unsubscribe`].
    pub async fn unsubscribe(self) -> Result<(), ClientError> {
        self.client.unsubscribe(self.topic.as_str()).await
    }
}

/// A client of one realtime server: one WebSocket, kept open from [`Client::start`] until
/// [`Client::close`] or a close code that says stop (see the crate documentation).
#[derive(Clone)]
pub struct Client {
    commands: mpsc::Sender<Command>,
    closing: CancellationToken,
    stopped: watch::Receiver<bool>,
}

impl fmt::Debug for Client {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Client").field("stopped", &*self.stopped.borrow()).finish_non_exhaustive()
    }
}

impl Client {
    /// Starts the client on the current tokio runtime and returns at once; the first event
    /// is [`Event::Connecting`](crate::Event::Connecting). `tokens` is asked for a JWT
    /// before every connect and before the token expires.
    ///
    /// # Errors
    /// [`ConfigError`] when the settings are not valid.
    ///
    /// # Panics
    /// Outside a tokio runtime.
    pub fn start(
        config: ClientConfig,
        tokens: impl TokenSource,
    ) -> Result<(Client, Events), ConfigError> {
        let url = config.validate()?;
        let (commands, command_rx) = mpsc::channel(64);
        let (event_tx, event_rx) = mpsc::channel(config.event_capacity);
        let closing = CancellationToken::new();
        let (stopped_tx, stopped) = watch::channel(false);
        let driver =
            Driver::new(config, url, Arc::new(tokens), command_rx, event_tx, closing.clone());
        tokio::spawn(async move {
            driver.run().await;
            let _ = stopped_tx.send(true);
        });
        let client = Client { commands, closing, stopped };
        Ok((client, Events { rx: event_rx }))
    }

    /// Whether the client stopped for good.
    pub fn is_stopped(&self) -> bool {
        *self.stopped.borrow()
    }

    async fn call<T>(
        &self,
        command: impl FnOnce(oneshot::Sender<Result<T, ClientError>>) -> Command,
    ) -> Result<T, ClientError> {
        let (tx, rx) = oneshot::channel();
        self.commands.send(command(tx)).await.map_err(|_| ClientError::Stopped)?;
        rx.await.unwrap_or(Err(ClientError::Stopped))
    }

    /// Subscribes to `topic` and resolves with the server's `subscribed` answer. When the
    /// client is between connections, the subscribe goes out on the next one. The topic is
    /// resubscribed with `since` on every reconnect.
    ///
    /// # Errors
    /// [`ClientError::InvalidTopic`]; [`ClientError::Refused`] when the server refuses it
    /// (`forbidden`, `too_many_subscriptions`: nothing is kept); [`ClientError::Timeout`]
    /// when no answer came within the request timeout (nothing is kept either);
    /// [`ClientError::Stopped`].
    pub async fn subscribe(&self, topic: &str) -> Result<Subscription, ClientError> {
        let topic = TopicName::new(topic)?;
        let (position, recovered) =
            self.call(|reply| Command::Subscribe { topic: topic.clone(), reply }).await?;
        Ok(Subscription { topic, position, recovered, client: self.clone() })
    }

    /// Leaves `topic`: it is not resubscribed any more, and when connected the client sends
    /// `unsubscribe` and waits for `unsubscribed`.
    ///
    /// # Errors
    /// [`ClientError::InvalidTopic`]; [`ClientError::Refused`] (`not_subscribed`);
    /// [`ClientError::Timeout`]; [`ClientError::Stopped`].
    pub async fn unsubscribe(&self, topic: &str) -> Result<(), ClientError> {
        let topic = TopicName::new(topic)?;
        self.call(|reply| Command::Unsubscribe { topic, reply }).await
    }

    /// Sends a message to the server's inbound handler, with a fresh `id` (returned); a
    /// refusal arrives as [`Event::ServerError`](crate::Event::ServerError) with that id,
    /// a reply as [`Event::Message`](crate::Event::Message). Nothing is queued while the
    /// client is not connected.
    ///
    /// # Errors
    /// [`ClientError::InvalidType`], [`ClientError::InvalidPayload`],
    /// [`ClientError::NotConnected`], [`ClientError::Stopped`].
    pub async fn send(&self, kind: &str, payload: impl Serialize) -> Result<u64, ClientError> {
        let (kind, payload) = message(kind, payload)?;
        self.call(|reply| Command::Send { kind, payload, reply }).await
    }

    /// Sends a message with an `id` and resolves with the server's frame carrying the same
    /// id: `pong` for `ping`, the inbound handler's reply for an application type (the
    /// server echoes the request's id on every reply and refusal). The reply is also
    /// delivered as [`Event::Message`](crate::Event::Message), with its `id`. A handler that
    /// answers nothing leaves the request to time out.
    ///
    /// # Errors
    /// [`ClientError::Refused`] on an `error` frame with that id; [`ClientError::Timeout`];
    /// [`ClientError::Disconnected`] when the socket closed first; and as [`Client::send`].
    pub async fn request(&self, kind: &str, payload: impl Serialize) -> Result<Reply, ClientError> {
        let (kind, payload) = message(kind, payload)?;
        self.call(|reply| Command::Request { kind, payload, reply }).await
    }

    /// Sends a `ping` and resolves with the round trip.
    ///
    /// # Errors
    /// As [`Client::request`].
    pub async fn ping(&self) -> Result<Duration, ClientError> {
        let start = tokio::time::Instant::now();
        self.request(realtime_core::protocol::PING, serde_json::json!({})).await?;
        Ok(start.elapsed())
    }

    /// The last position seen of each stream, as the next reconnect's `since` (and the
    /// topics' `subscribe`) will send them.
    ///
    /// # Errors
    /// [`ClientError::Stopped`].
    pub async fn positions(&self) -> Result<BTreeMap<StreamName, Position>, ClientError> {
        self.call(|reply| Command::Positions { reply }).await
    }

    /// Closes the connection (close code 1000) for good and waits for the client to stop:
    /// no reconnect; pending requests fail with [`ClientError::Stopped`]; the last event is
    /// [`Event::Stopped`](crate::Event::Stopped). Returns at once if it had stopped already.
    pub async fn close(&self) {
        self.closing.cancel();
        let mut stopped = self.stopped.clone();
        // An error means the driver is gone: stopped as well.
        let _ = stopped.wait_for(|stopped| *stopped).await;
    }
}

/// Validates an application message's type and payload.
fn message(kind: &str, payload: impl Serialize) -> Result<(String, Value), ClientError> {
    let kind = MessageType::new(kind)?;
    match serde_json::to_value(payload) {
        Ok(payload @ Value::Object(_)) => Ok((kind.as_str().to_owned(), payload)),
        Ok(other) => Err(ClientError::InvalidPayload(format!("got {}", kind_of(&other)))),
        Err(e) => Err(ClientError::InvalidPayload(e.to_string())),
    }
}

fn kind_of(value: &Value) -> &'static str {
    match value {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn messages_need_a_valid_type_and_an_object_payload() {
        assert_eq!(message("chat.say", json!({"a": 1})), Ok(("chat.say".into(), json!({"a": 1}))));
        assert!(matches!(message("bad type", json!({})), Err(ClientError::InvalidType(_))));
        assert_eq!(
            message("t", json!([1])),
            Err(ClientError::InvalidPayload("got an array".into()))
        );
        #[derive(Serialize)]
        struct Say {
            text: &'static str,
        }
        assert_eq!(message("t", Say { text: "hi" }), Ok(("t".into(), json!({"text": "hi"}))));
    }
}
