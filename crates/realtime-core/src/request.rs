//! Backend requests of the HTTP API, parsed from JSON bodies into typed values: a publish
//! (`{"target": .., "message": {"type": .., "payload": {..}}, "idempotency_key": ..}`), a kick
//! (`{"target": {"user": ..} | {"connection": ..}}`), a server-side subscribe or unsubscribe
//! (`{"target": {"user": ..} | {"connection": ..}, "topic": ..}`) and a revocation
//! (`{"user": .., "issued_before": <unix seconds>}`). Each failure is a typed error whose text
//! names the field that is wrong.

use serde_json::{Map, Value};

use crate::envelope::{Envelope, Payload, Target};
use crate::ids::{
    ConnectionId, InvalidConnectionId, InvalidMessageType, InvalidRole, InvalidTopicName,
    InvalidUserId, MessageType, Role, TopicName, UserId,
};
use crate::protocol;
use crate::time::UnixMillis;

/// A parsed `POST /api/publish` body.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PublishRequest {
    /// Who the message is for.
    pub target: Target,
    /// The message.
    pub message: Envelope,
    /// Makes a retried publish return the first result instead of delivering again.
    pub idempotency_key: Option<IdempotencyKey>,
    /// `"receipts": true`: wait (a bounded time) for every node's delivered count.
    pub receipts: bool,
}

/// A publisher's key for one publication: a retry with the same key (to the same stream,
/// within the broker's retention, 300 s by default) returns the first result and delivers
/// nothing again. 1 to 128 bytes, no control characters.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct IdempotencyKey(String);

/// Why a string is not an [`IdempotencyKey`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("an idempotency key is 1 to 128 bytes without control characters")]
pub struct InvalidIdempotencyKey;

impl IdempotencyKey {
    /// Longest accepted key, in bytes.
    pub const MAX_LEN: usize = 128;

    /// Validates `raw`.
    ///
    /// # Errors
    /// [`InvalidIdempotencyKey`] when it is empty, too long or holds a control character.
    pub fn new(raw: impl Into<String>) -> Result<IdempotencyKey, InvalidIdempotencyKey> {
        let raw = raw.into();
        let valid =
            !raw.is_empty() && raw.len() <= Self::MAX_LEN && !raw.chars().any(char::is_control);
        if valid { Ok(IdempotencyKey(raw)) } else { Err(InvalidIdempotencyKey) }
    }

    /// The key as a string slice.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// Whose connections a server-side subscribe, unsubscribe or kick addresses.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ConnectionsOf {
    /// Every connection of one user.
    User(UserId),
    /// One connection.
    Connection(ConnectionId),
}

/// A parsed `POST /api/subscribe` or `POST /api/unsubscribe` body.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TopicRequest {
    /// Whose connections.
    pub target: ConnectionsOf,
    /// Which topic.
    pub topic: TopicName,
}

/// A parsed `POST /api/revoke` body: the user's tokens issued before a moment are revoked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RevokeRequest {
    /// Whose tokens.
    pub user: UserId,
    /// Tokens with an `iat` before this are revoked (and tokens without an `iat`).
    pub issued_before: UnixMillis,
}

/// Who a kick (`POST /api/disconnect`) removes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum KickTarget {
    /// Every connection of one user.
    User(UserId),
    /// One connection.
    Connection(ConnectionId),
}

/// Why a request body is not a valid request. [`RequestError::Json`] means the body is not
/// JSON at all (HTTP 400); every other variant is well-formed JSON with a wrong field (422).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum RequestError {
    /// Not JSON; the text says where parsing failed.
    #[error("malformed JSON body: {0}")]
    Json(String),
    /// JSON, but not an object.
    #[error("the body must be a JSON object")]
    NotAnObject,
    /// A required top-level field is missing.
    #[error("\"{0}\" is missing")]
    Missing(&'static str),
    /// `target` has none of the accepted forms.
    #[error("\"target\" must be {0}")]
    TargetForm(&'static str),
    /// `target.<kind>` is not a string.
    #[error("\"target.{0}\" must be a string")]
    TargetNotString(&'static str),
    /// `target.user` is not a valid user id.
    #[error("invalid \"target.user\": {0}")]
    User(InvalidUserId),
    /// `target.role` is not a valid role.
    #[error("invalid \"target.role\": {0}")]
    Role(InvalidRole),
    /// `target.connection` is not a connection id.
    #[error("invalid \"target.connection\": {0}")]
    Connection(InvalidConnectionId),
    /// `target.topic` (or `topic`) is not a valid topic name.
    #[error("invalid topic: {0}")]
    Topic(InvalidTopicName),
    /// `topic` is not a string.
    #[error("\"topic\" must be a string")]
    TopicNotString,
    /// `idempotency_key` is not a valid key.
    #[error("invalid \"idempotency_key\": {0}")]
    IdempotencyKey(InvalidIdempotencyKey),
    /// `receipts` is not a boolean.
    #[error("\"receipts\" must be true or false")]
    ReceiptsNotBool,
    /// `user` (of a revocation) is not a string.
    #[error("\"user\" must be a string")]
    UserNotString,
    /// `issued_before` is not a non-negative integer number of seconds.
    #[error("\"issued_before\" must be a non-negative integer (unix seconds)")]
    IssuedBefore,
    /// `message` is not an object.
    #[error("\"message\" must be a JSON object")]
    MessageNotObject,
    /// `message.type` is missing.
    #[error("\"message.type\" is missing")]
    MissingType,
    /// `message.type` is not a string.
    #[error("\"message.type\" must be a string")]
    TypeNotString,
    /// `message.type` breaks the type rules.
    #[error("invalid \"message.type\": {0}")]
    Type(InvalidMessageType),
    /// `message.type` is reserved for the protocol.
    #[error("\"message.type\" \"{0}\" is reserved for the protocol and cannot be published")]
    ReservedType(MessageType),
    /// `message.payload` is present but not an object.
    #[error("\"message.payload\" must be a JSON object")]
    PayloadNotObject,
}

/// The forms of a publish target, for error messages.
const PUBLISH_TARGETS: &str =
    "\"broadcast\" or an object with one of \"user\", \"role\", \"topic\" or \"connection\"";
/// The forms of a kick (and server-side subscribe) target, for error messages.
const KICK_TARGETS: &str = "an object with one of \"user\" or \"connection\"";

impl PublishRequest {
    /// Parses a publish body. Other top-level fields are ignored.
    ///
    /// # Errors
    /// [`RequestError`] names the first field that is wrong.
    pub fn parse(body: &[u8]) -> Result<PublishRequest, RequestError> {
        let mut request = object(body)?;
        let target = parse_target(request.remove("target"))?;
        let message = match request.remove("message") {
            None => return Err(RequestError::Missing("message")),
            Some(Value::Object(message)) => parse_message(message)?,
            Some(_) => return Err(RequestError::MessageNotObject),
        };
        let idempotency_key = match request.remove("idempotency_key") {
            None | Some(Value::Null) => None,
            Some(Value::String(key)) => {
                Some(IdempotencyKey::new(key).map_err(RequestError::IdempotencyKey)?)
            }
            Some(_) => return Err(RequestError::IdempotencyKey(InvalidIdempotencyKey)),
        };
        let receipts = match request.remove("receipts") {
            None | Some(Value::Null) => false,
            Some(Value::Bool(receipts)) => receipts,
            Some(_) => return Err(RequestError::ReceiptsNotBool),
        };
        Ok(PublishRequest { target, message, idempotency_key, receipts })
    }
}

impl KickTarget {
    /// Parses a kick body: `{"target": {"user": ..}}` or `{"target": {"connection": ..}}`.
    ///
    /// # Errors
    /// [`RequestError`] names the first field that is wrong.
    pub fn parse(body: &[u8]) -> Result<KickTarget, RequestError> {
        let mut request = object(body)?;
        match connections_of(request.remove("target"))? {
            ConnectionsOf::User(user) => Ok(KickTarget::User(user)),
            ConnectionsOf::Connection(id) => Ok(KickTarget::Connection(id)),
        }
    }
}

impl TopicRequest {
    /// Parses `{"target": {"user": ..} | {"connection": ..}, "topic": ".."}`.
    ///
    /// # Errors
    /// [`RequestError`] names the first field that is wrong.
    pub fn parse(body: &[u8]) -> Result<TopicRequest, RequestError> {
        let mut request = object(body)?;
        let target = connections_of(request.remove("target"))?;
        let topic = match request.remove("topic") {
            None => return Err(RequestError::Missing("topic")),
            Some(Value::String(raw)) => TopicName::new(raw).map_err(RequestError::Topic)?,
            Some(_) => return Err(RequestError::TopicNotString),
        };
        Ok(TopicRequest { target, topic })
    }
}

impl RevokeRequest {
    /// Parses `{"user": "..", "issued_before": <unix seconds>}`.
    ///
    /// # Errors
    /// [`RequestError`] names the first field that is wrong.
    pub fn parse(body: &[u8]) -> Result<RevokeRequest, RequestError> {
        let mut request = object(body)?;
        let user = match request.remove("user") {
            None => return Err(RequestError::Missing("user")),
            Some(Value::String(raw)) => UserId::new(raw).map_err(RequestError::User)?,
            Some(_) => return Err(RequestError::UserNotString),
        };
        let issued_before = match request.remove("issued_before") {
            None => return Err(RequestError::Missing("issued_before")),
            Some(Value::Number(n)) => n.as_u64().ok_or(RequestError::IssuedBefore)?,
            Some(_) => return Err(RequestError::IssuedBefore),
        };
        let issued_before = UnixMillis(issued_before.saturating_mul(1000));
        Ok(RevokeRequest { user, issued_before })
    }
}

/// A `{"user": ..}` or `{"connection": ..}` target.
fn connections_of(value: Option<Value>) -> Result<ConnectionsOf, RequestError> {
    match parse_target(value) {
        Ok(Target::User(user)) => Ok(ConnectionsOf::User(user)),
        Ok(Target::Connection(id)) => Ok(ConnectionsOf::Connection(id)),
        Ok(_) | Err(RequestError::TargetForm(_)) => Err(RequestError::TargetForm(KICK_TARGETS)),
        Err(error) => Err(error),
    }
}

fn object(body: &[u8]) -> Result<Map<String, Value>, RequestError> {
    match serde_json::from_slice(body).map_err(|error| RequestError::Json(error.to_string()))? {
        Value::Object(object) => Ok(object),
        _ => Err(RequestError::NotAnObject),
    }
}

fn parse_target(value: Option<Value>) -> Result<Target, RequestError> {
    let form = RequestError::TargetForm(PUBLISH_TARGETS);
    let object = match value {
        None => return Err(RequestError::Missing("target")),
        Some(Value::String(name)) if name == "broadcast" => return Ok(Target::Broadcast),
        Some(Value::Object(object)) if object.len() == 1 => object,
        Some(_) => return Err(form),
    };
    let Some((kind, value)) = object.into_iter().next() else {
        return Err(form);
    };
    let kind: &'static str = match kind.as_str() {
        "user" => "user",
        "role" => "role",
        "topic" => "topic",
        "connection" => "connection",
        _ => return Err(form),
    };
    let Value::String(raw) = value else {
        return Err(RequestError::TargetNotString(kind));
    };
    match kind {
        "user" => UserId::new(&raw).map(Target::User).map_err(RequestError::User),
        "role" => Role::new(&raw).map(Target::Role).map_err(RequestError::Role),
        "topic" => TopicName::new(raw).map(Target::Topic).map_err(RequestError::Topic),
        _ => ConnectionId::parse(&raw).map(Target::Connection).map_err(RequestError::Connection),
    }
}

fn parse_message(mut message: Map<String, Value>) -> Result<Envelope, RequestError> {
    let kind = match message.remove("type") {
        None => return Err(RequestError::MissingType),
        Some(Value::String(kind)) => MessageType::new(&kind).map_err(RequestError::Type)?,
        Some(_) => return Err(RequestError::TypeNotString),
    };
    if protocol::is_reserved_server_type(kind.as_str()) {
        return Err(RequestError::ReservedType(kind));
    }
    let payload = match message.remove("payload") {
        None => Payload::new(),
        Some(Value::Object(payload)) => payload,
        Some(_) => return Err(RequestError::PayloadNotObject),
    };
    Ok(Envelope::new(kind, payload))
}

#[cfg(test)]
mod tests {
    use super::*;

    const ID: &str = "6f1c5a7e-0d2b-4c8e-9a57-3b1f2e4d5c6a";
    const M: &str = r#""message":{"type":"n","payload":{"a":1}}"#;

    fn user(raw: &str) -> UserId {
        UserId::new(raw).unwrap_or_else(|e| panic!("{e}"))
    }

    fn id() -> ConnectionId {
        ConnectionId::parse(ID).unwrap_or_else(|e| panic!("{e}"))
    }

    #[track_caller]
    fn check(body: &str, expected: Result<Target, RequestError>) {
        let got = PublishRequest::parse(body.as_bytes()).map(|request| request.target);
        assert_eq!(got, expected, "{body}");
    }

    #[test]
    fn publish_targets() {
        check(&format!(r#"{{"target":"broadcast",{M}}}"#), Ok(Target::Broadcast));
        check(&format!(r#"{{"target":{{"user":"u1"}},{M}}}"#), Ok(Target::User(user("u1"))));
        check(
            &format!(r#"{{"target":{{"role":"admin"}},{M}}}"#),
            Ok(Target::Role(Role::new("admin").unwrap_or_else(|e| panic!("{e}")))),
        );
        check(
            &format!(r#"{{"target":{{"connection":"{ID}"}},{M}}}"#),
            Ok(Target::Connection(id())),
        );
        let form = Err(RequestError::TargetForm(PUBLISH_TARGETS));
        check(&format!("{{{M}}}"), Err(RequestError::Missing("target")));
        check(&format!(r#"{{"target":"everyone",{M}}}"#), form.clone());
        check(&format!(r#"{{"target":{{"user":"a","role":"b"}},{M}}}"#), form.clone());
        check(&format!(r#"{{"target":{{"team":"a"}},{M}}}"#), form.clone());
        check(&format!(r#"{{"target":{{}},{M}}}"#), form);
        check(
            &format!(r#"{{"target":{{"user":5}},{M}}}"#),
            Err(RequestError::TargetNotString("user")),
        );
        check(
            &format!(r#"{{"target":{{"user":""}},{M}}}"#),
            Err(RequestError::User(InvalidUserId::Empty)),
        );
        assert!(matches!(
            PublishRequest::parse(format!(r#"{{"target":{{"connection":"x"}},{M}}}"#).as_bytes()),
            Err(RequestError::Connection(_))
        ));
    }

    #[test]
    fn publish_bodies_and_messages() {
        let parsed = PublishRequest::parse(br#"{"target":"broadcast","message":{"type":"n"}}"#);
        let kind = MessageType::new("n").unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(
            parsed,
            Ok(PublishRequest {
                target: Target::Broadcast,
                message: Envelope::new(kind, Payload::new()),
                idempotency_key: None,
                receipts: false,
            })
        );
        let error = |body: &str| PublishRequest::parse(body.as_bytes()).err();
        assert!(matches!(error("{not json"), Some(RequestError::Json(_))));
        assert!(matches!(error(""), Some(RequestError::Json(_))));
        assert_eq!(error("[]"), Some(RequestError::NotAnObject));
        assert_eq!(error(r#"{"target":"broadcast"}"#), Some(RequestError::Missing("message")));
        assert_eq!(
            error(r#"{"target":"broadcast","message":5}"#),
            Some(RequestError::MessageNotObject)
        );
        assert_eq!(
            error(r#"{"target":"broadcast","message":{}}"#),
            Some(RequestError::MissingType)
        );
        assert_eq!(
            error(r#"{"target":"broadcast","message":{"type":3}}"#),
            Some(RequestError::TypeNotString)
        );
        assert_eq!(
            error(r#"{"target":"broadcast","message":{"type":"a b"}}"#),
            Some(RequestError::Type(InvalidMessageType::InvalidCharacter(' ')))
        );
        assert_eq!(
            error(r#"{"target":"broadcast","message":{"type":"n","payload":[1]}}"#),
            Some(RequestError::PayloadNotObject)
        );
        for reserved in protocol::RESERVED_SERVER_TYPES {
            let body = format!(r#"{{"target":"broadcast","message":{{"type":"{reserved}"}}}}"#);
            assert!(matches!(error(&body), Some(RequestError::ReservedType(_))), "{reserved}");
        }
    }

    #[test]
    fn kick_targets() {
        let kick = |body: &str| KickTarget::parse(body.as_bytes());
        assert_eq!(kick(r#"{"target":{"user":"u1"}}"#), Ok(KickTarget::User(user("u1"))));
        assert_eq!(
            kick(&format!(r#"{{"target":{{"connection":"{ID}"}}}}"#)),
            Ok(KickTarget::Connection(id()))
        );
        let form = Err(RequestError::TargetForm(KICK_TARGETS));
        assert_eq!(kick(r#"{"target":"broadcast"}"#), form);
        assert_eq!(kick(r#"{"target":{"role":"admin"}}"#), form);
        assert_eq!(kick(r#"{"target":{"team":"a"}}"#), form);
        assert_eq!(kick("{}"), Err(RequestError::Missing("target")));
        assert_eq!(kick(r#"{"target":{"user":7}}"#), Err(RequestError::TargetNotString("user")));
    }

    #[test]
    fn errors_name_the_field() {
        assert_eq!(RequestError::Missing("target").to_string(), "\"target\" is missing");
        assert_eq!(
            RequestError::TargetNotString("user").to_string(),
            "\"target.user\" must be a string"
        );
        assert!(
            RequestError::TargetForm(KICK_TARGETS).to_string().starts_with("\"target\" must be")
        );
    }

    #[test]
    fn topic_targets_and_idempotency_keys() {
        let parsed = PublishRequest::parse(
            br#"{"target":{"topic":"orders"},"message":{"type":"n"},"idempotency_key":"k-1"}"#,
        )
        .unwrap_or_else(|e| panic!("{e}"));
        let topic = TopicName::new("orders").unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(parsed.target, Target::Topic(topic));
        assert_eq!(parsed.idempotency_key.as_ref().map(IdempotencyKey::as_str), Some("k-1"));
        assert!(!parsed.receipts);
        let counted = PublishRequest::parse(
            br#"{"target":"broadcast","message":{"type":"n"},"receipts":true}"#,
        );
        assert!(counted.is_ok_and(|r| r.receipts));
        let bad =
            PublishRequest::parse(br#"{"target":"broadcast","message":{"type":"n"},"receipts":1}"#);
        assert_eq!(bad.err(), Some(RequestError::ReceiptsNotBool));
        let error = |body: &str| PublishRequest::parse(body.as_bytes()).err();
        assert!(matches!(
            error(r#"{"target":{"topic":"a b"},"message":{"type":"n"}}"#),
            Some(RequestError::Topic(_))
        ));
        for key in [r#""""#, "7", "{}", &format!("\"{}\"", "k".repeat(129)), r#""a\nb""#] {
            assert_eq!(
                error(&format!(
                    r#"{{"target":"broadcast","message":{{"type":"n"}},"idempotency_key":{key}}}"#
                )),
                Some(RequestError::IdempotencyKey(InvalidIdempotencyKey)),
                "{key}"
            );
        }
        assert!(IdempotencyKey::new("k".repeat(128)).is_ok());
    }

    #[test]
    fn topic_requests() {
        let topic = TopicName::new("orders").unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(
            TopicRequest::parse(br#"{"target":{"user":"u1"},"topic":"orders"}"#),
            Ok(TopicRequest { target: ConnectionsOf::User(user("u1")), topic: topic.clone() })
        );
        assert_eq!(
            TopicRequest::parse(
                format!(r#"{{"target":{{"connection":"{ID}"}},"topic":"orders"}}"#).as_bytes()
            ),
            Ok(TopicRequest { target: ConnectionsOf::Connection(id()), topic })
        );
        let error = |body: &str| TopicRequest::parse(body.as_bytes()).err();
        assert_eq!(error(r#"{"target":{"user":"u1"}}"#), Some(RequestError::Missing("topic")));
        assert_eq!(
            error(r#"{"target":{"user":"u1"},"topic":3}"#),
            Some(RequestError::TopicNotString)
        );
        assert!(matches!(
            error(r#"{"target":{"user":"u1"},"topic":"a*b"}"#),
            Some(RequestError::Topic(_))
        ));
        assert_eq!(
            error(r#"{"target":"broadcast","topic":"orders"}"#),
            Some(RequestError::TargetForm(KICK_TARGETS))
        );
    }

    #[test]
    fn revoke_requests() {
        assert_eq!(
            RevokeRequest::parse(br#"{"user":"u1","issued_before":1767225600}"#),
            Ok(RevokeRequest { user: user("u1"), issued_before: UnixMillis(1_767_225_600_000) })
        );
        let error = |body: &str| RevokeRequest::parse(body.as_bytes()).err();
        assert_eq!(error(r#"{"issued_before":1}"#), Some(RequestError::Missing("user")));
        assert_eq!(error(r#"{"user":1,"issued_before":1}"#), Some(RequestError::UserNotString));
        assert_eq!(error(r#"{"user":"u1"}"#), Some(RequestError::Missing("issued_before")));
        for bad in ["-1", "1.5", r#""1""#, "null"] {
            assert_eq!(
                error(&format!(r#"{{"user":"u1","issued_before":{bad}}}"#)),
                Some(RequestError::IssuedBefore),
                "{bad}"
            );
        }
    }
}
