//! Backend requests of the HTTP API, parsed from JSON bodies into typed values: a publish
//! (`{"target": .., "message": {"type": .., "payload": {..}}}`) and a kick
//! (`{"target": {"user": ..} | {"connection": ..}}`). Each failure is a typed error whose text
//! names the field that is wrong.

use serde_json::{Map, Value};

use crate::envelope::{Envelope, Payload, Target};
use crate::ids::{
    ConnectionId, InvalidConnectionId, InvalidMessageType, InvalidRole, InvalidUserId, MessageType,
    Role, UserId,
};
use crate::protocol;

/// A parsed `POST /api/publish` body.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PublishRequest {
    /// Who the message is for.
    pub target: Target,
    /// The message.
    pub message: Envelope,
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
    "\"broadcast\" or an object with one of \"user\", \"role\" or \"connection\"";
/// The forms of a kick target, for error messages.
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
        Ok(PublishRequest { target, message })
    }
}

impl KickTarget {
    /// Parses a kick body: `{"target": {"user": ..}}` or `{"target": {"connection": ..}}`.
    ///
    /// # Errors
    /// [`RequestError`] names the first field that is wrong.
    pub fn parse(body: &[u8]) -> Result<KickTarget, RequestError> {
        let mut request = object(body)?;
        match parse_target(request.remove("target")) {
            Ok(Target::User(user)) => Ok(KickTarget::User(user)),
            Ok(Target::Connection(id)) => Ok(KickTarget::Connection(id)),
            Ok(_) | Err(RequestError::TargetForm(_)) => Err(RequestError::TargetForm(KICK_TARGETS)),
            Err(error) => Err(error),
        }
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
        "connection" => "connection",
        _ => return Err(form),
    };
    let Value::String(raw) = value else {
        return Err(RequestError::TargetNotString(kind));
    };
    match kind {
        "user" => UserId::new(&raw).map(Target::User).map_err(RequestError::User),
        "role" => Role::new(&raw).map(Target::Role).map_err(RequestError::Role),
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
                message: Envelope::new(kind, Payload::new())
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
}
