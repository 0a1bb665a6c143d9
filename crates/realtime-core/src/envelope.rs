//! The message envelope `{"type": ..., "payload": {...}}` and where a message goes ([`Target`]).

use serde::{Deserialize, Serialize};

use crate::ids::{ConnectionId, InvalidMessageType, MessageType, Role, TopicName, UserId};
use crate::stream::StreamName;

/// A message payload: always a JSON object.
pub type Payload = serde_json::Map<String, serde_json::Value>;

/// A message as applications and clients see it: a type name and an object payload.
///
/// Its JSON form is `{"type": "<type>", "payload": {...}}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Envelope {
    /// What kind of message this is, such as `notification`.
    #[serde(rename = "type")]
    pub kind: MessageType,
    /// The message body; a JSON object.
    pub payload: Payload,
}

/// Why an envelope could not be built.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum EnvelopeError {
    /// The type name is invalid.
    #[error(transparent)]
    InvalidType(#[from] InvalidMessageType),
    /// The payload is not a JSON object.
    #[error("payload must be a JSON object")]
    PayloadNotObject,
}

impl Envelope {
    /// An envelope of a type and an object payload.
    pub fn new(kind: MessageType, payload: Payload) -> Self {
        Envelope { kind, payload }
    }

    /// Builds an envelope from a raw type name and any JSON value for the payload.
    ///
    /// # Errors
    /// [`EnvelopeError`] when the type name is invalid or the payload is not an object.
    pub fn from_parts(kind: &str, payload: serde_json::Value) -> Result<Self, EnvelopeError> {
        let kind = MessageType::new(kind)?;
        match payload {
            serde_json::Value::Object(payload) => Ok(Envelope { kind, payload }),
            _ => Err(EnvelopeError::PayloadNotObject),
        }
    }
}

/// Who a published message is for.
///
/// JSON form (used by the HTTP API): `"broadcast"`, `{"user": "..."}`, `{"role": "..."}`,
/// `{"topic": "..."}`, `{"connection": "<uuid>"}`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Target {
    /// Every connection.
    Broadcast,
    /// Every connection of one user (all their tabs and devices).
    User(UserId),
    /// Every connection whose token grants the role.
    Role(Role),
    /// Every connection subscribed to a topic.
    Topic(TopicName),
    /// One connection (not a stream: no history).
    Connection(ConnectionId),
}

impl Target {
    /// A short, stable name of the target's kind, for metrics labels and logs.
    pub fn kind(&self) -> &'static str {
        match self {
            Target::Broadcast => "broadcast",
            Target::User(_) => "user",
            Target::Role(_) => "role",
            Target::Topic(_) => "topic",
            Target::Connection(_) => "connection",
        }
    }

    /// The stream this target publishes to; `None` for one connection, which is no stream.
    pub fn stream(&self) -> Option<StreamName> {
        match self {
            Target::Broadcast => Some(StreamName::Broadcast),
            Target::User(user) => Some(StreamName::User(user.clone())),
            Target::Role(role) => Some(StreamName::Role(role.clone())),
            Target::Topic(topic) => Some(StreamName::Topic(topic.clone())),
            Target::Connection(_) => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn target_json_form() {
        let id = ConnectionId::parse("6f1c5a7e-0d2b-4c8e-9a57-3b1f2e4d5c6a")
            .unwrap_or_else(|e| panic!("{e}"));
        let cases = [
            (json!("broadcast"), Target::Broadcast),
            (
                json!({"user": "u1"}),
                Target::User(UserId::new("u1").unwrap_or_else(|e| panic!("{e}"))),
            ),
            (
                json!({"role": "admin"}),
                Target::Role(Role::new("admin").unwrap_or_else(|e| panic!("{e}"))),
            ),
            (
                json!({"topic": "chat:room-7"}),
                Target::Topic(TopicName::new("chat:room-7").unwrap_or_else(|e| panic!("{e}"))),
            ),
            (json!({"connection": id.to_string()}), Target::Connection(id)),
        ];
        for (json, target) in cases {
            assert_eq!(serde_json::from_value::<Target>(json.clone()).ok(), Some(target.clone()));
            assert_eq!(serde_json::to_value(&target).ok(), Some(json));
            match (&target, target.stream()) {
                (Target::Connection(_), stream) => assert_eq!(stream, None),
                (_, Some(stream)) => assert_eq!(stream.kind(), target.kind()),
                (_, None) => panic!("{target:?} has no stream"),
            }
        }
        for bad in [
            json!("everyone"),
            json!({"user": ""}),
            json!({"role": "a b"}),
            json!({"connection": "x"}),
            json!({"topic": "a b"}),
            json!(5),
        ] {
            assert!(serde_json::from_value::<Target>(bad.clone()).is_err(), "{bad} accepted");
        }
    }

    #[test]
    fn envelope_from_parts() {
        assert!(Envelope::from_parts("n", json!({"a": 1})).is_ok());
        assert_eq!(Envelope::from_parts("n", json!([1])), Err(EnvelopeError::PayloadNotObject));
        assert_eq!(
            Envelope::from_parts("", json!({})),
            Err(EnvelopeError::InvalidType(InvalidMessageType::Empty))
        );
    }
}
