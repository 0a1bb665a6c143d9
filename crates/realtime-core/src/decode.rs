//! Decoding of client text frames into typed client messages. Never panics on any input.

use serde_json::Value;

use crate::envelope::{Envelope, Payload};
use crate::ids::{InvalidMessageType, MessageType};
use crate::protocol;

/// Limits applied to every client text frame before and while it is parsed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DecodeLimits {
    /// Largest accepted frame, in bytes.
    pub max_bytes: usize,
    /// Deepest accepted nesting of arrays and objects (the envelope itself is depth 1).
    pub max_depth: usize,
}

impl Default for DecodeLimits {
    fn default() -> Self {
        DecodeLimits { max_bytes: 64 * 1024, max_depth: 32 }
    }
}

/// A decoded client message.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum ClientMessage {
    /// `{"type":"ping"}`: the server answers with a pong.
    Ping,
    /// Any other type: handed to the application's inbound handler.
    Message(Envelope),
}

/// Each way a client text frame can be bad.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum DecodeError {
    /// Larger than [`DecodeLimits::max_bytes`].
    #[error("message is {len} bytes, at most {max} are accepted")]
    TooLarge {
        /// Size of the frame in bytes.
        len: usize,
        /// The limit.
        max: usize,
    },
    /// Nested deeper than [`DecodeLimits::max_depth`].
    #[error("message nests arrays or objects deeper than {max} levels")]
    TooDeep {
        /// The limit.
        max: usize,
    },
    /// Not valid JSON; the text says where parsing failed.
    #[error("invalid JSON: {0}")]
    InvalidJson(String),
    /// Valid JSON, but not an object.
    #[error("message must be a JSON object")]
    NotAnObject,
    /// The object has no `type` field.
    #[error("message has no \"type\" field")]
    MissingType,
    /// The `type` field is not a string.
    #[error("\"type\" must be a string")]
    TypeNotString,
    /// The `type` field is the empty string.
    #[error("\"type\" must not be empty")]
    EmptyType,
    /// The `type` field breaks the message type rules (length, characters).
    #[error("invalid \"type\": {0}")]
    InvalidType(InvalidMessageType),
    /// The `payload` field is present but not an object.
    #[error("\"payload\" must be a JSON object")]
    PayloadNotObject,
    /// The `type` is one only the server sends ([`protocol::RESERVED_SERVER_TYPES`]).
    #[error("\"type\" {0:?} is reserved for the server")]
    ReservedType(MessageType),
}

/// Decodes one client text frame.
///
/// `payload` may be omitted (it then is `{}`); other top-level fields are ignored.
///
/// # Errors
/// [`DecodeError`] says what is wrong with the frame.
pub fn decode_client_text(text: &str, limits: &DecodeLimits) -> Result<ClientMessage, DecodeError> {
    if text.len() > limits.max_bytes {
        return Err(DecodeError::TooLarge { len: text.len(), max: limits.max_bytes });
    }
    if nesting_depth(text.as_bytes()) > limits.max_depth {
        return Err(DecodeError::TooDeep { max: limits.max_depth });
    }
    let value: Value =
        serde_json::from_str(text).map_err(|e| DecodeError::InvalidJson(e.to_string()))?;
    let Value::Object(mut object) = value else {
        return Err(DecodeError::NotAnObject);
    };
    let kind = match object.remove("type") {
        None => return Err(DecodeError::MissingType),
        Some(Value::String(s)) if s.is_empty() => return Err(DecodeError::EmptyType),
        Some(Value::String(s)) => MessageType::new(s).map_err(DecodeError::InvalidType)?,
        Some(_) => return Err(DecodeError::TypeNotString),
    };
    let payload = match object.remove("payload") {
        None => Payload::new(),
        Some(Value::Object(map)) => map,
        Some(_) => return Err(DecodeError::PayloadNotObject),
    };
    if kind.as_str() == protocol::PING {
        return Ok(ClientMessage::Ping);
    }
    if protocol::is_reserved_server_type(kind.as_str()) {
        return Err(DecodeError::ReservedType(kind));
    }
    Ok(ClientMessage::Message(Envelope::new(kind, payload)))
}

/// The deepest nesting of `[` and `{` outside strings. Runs before parsing, so that a
/// pathological frame is refused in linear time without recursion.
fn nesting_depth(bytes: &[u8]) -> usize {
    let (mut depth, mut max, mut in_string, mut escaped) = (0usize, 0usize, false, false);
    for &b in bytes {
        if in_string {
            match (escaped, b) {
                (true, _) => escaped = false,
                (false, b'\\') => escaped = true,
                (false, b'"') => in_string = false,
                _ => {}
            }
            continue;
        }
        match b {
            b'"' => in_string = true,
            b'[' | b'{' => {
                depth += 1;
                max = max.max(depth);
            }
            b']' | b'}' => depth = depth.saturating_sub(1),
            _ => {}
        }
    }
    max
}

#[cfg(test)]
mod tests {
    use super::*;

    #[track_caller]
    fn check(text: &str, expected: Result<ClientMessage, DecodeError>) {
        assert_eq!(decode_client_text(text, &DecodeLimits::default()), expected);
    }

    fn message(kind: &str, payload: &str) -> ClientMessage {
        let payload: Payload = serde_json::from_str(payload).unwrap_or_else(|e| panic!("{e}"));
        ClientMessage::Message(Envelope::new(
            MessageType::new(kind).unwrap_or_else(|e| panic!("{e}")),
            payload,
        ))
    }

    #[test]
    fn good_messages() {
        check(r#"{"type":"ping"}"#, Ok(ClientMessage::Ping));
        check(r#"{"type":"ping","payload":{}}"#, Ok(ClientMessage::Ping));
        check(
            r#"{"type":"chat","payload":{"text":"hi"}}"#,
            Ok(message("chat", r#"{"text":"hi"}"#)),
        );
        check(r#"{"type":"chat","extra":1}"#, Ok(message("chat", "{}")));
        check(
            r#"{"type":"s","payload":{"s":"]]]}}}\"{{{"}}"#,
            Ok(message("s", r#"{"s":"]]]}}}\"{{{"}"#)),
        );
    }

    #[test]
    fn every_error_path() {
        let limits = DecodeLimits { max_bytes: 64, max_depth: 3 };
        let big = format!(r#"{{"type":"x","payload":{{"p":"{}"}}}}"#, "a".repeat(64));
        assert_eq!(
            decode_client_text(&big, &limits),
            Err(DecodeError::TooLarge { len: big.len(), max: 64 })
        );
        assert_eq!(
            decode_client_text(r#"{"type":"x","payload":{"a":[[1]]}}"#, &limits),
            Err(DecodeError::TooDeep { max: 3 })
        );
        assert!(decode_client_text(r#"{"type":"x","payload":{"a":[1]}}"#, &limits).is_ok());
        assert!(matches!(
            decode_client_text("{not json", &limits),
            Err(DecodeError::InvalidJson(_))
        ));
        assert!(matches!(decode_client_text("", &limits), Err(DecodeError::InvalidJson(_))));
        check("[1,2]", Err(DecodeError::NotAnObject));
        check("\"ping\"", Err(DecodeError::NotAnObject));
        check("null", Err(DecodeError::NotAnObject));
        check(r#"{"payload":{}}"#, Err(DecodeError::MissingType));
        check(r#"{"type":5}"#, Err(DecodeError::TypeNotString));
        check(r#"{"type":null}"#, Err(DecodeError::TypeNotString));
        check(r#"{"type":""}"#, Err(DecodeError::EmptyType));
        check(
            r#"{"type":"a b"}"#,
            Err(DecodeError::InvalidType(InvalidMessageType::InvalidCharacter(' '))),
        );
        check(r#"{"type":"x","payload":[1]}"#, Err(DecodeError::PayloadNotObject));
        check(r#"{"type":"x","payload":"s"}"#, Err(DecodeError::PayloadNotObject));
        for reserved in protocol::RESERVED_SERVER_TYPES {
            let text = format!(r#"{{"type":"{reserved}","payload":{{}}}}"#);
            let kind = MessageType::new(reserved).unwrap_or_else(|e| panic!("{e}"));
            check(&text, Err(DecodeError::ReservedType(kind)));
        }
    }

    #[test]
    fn deep_nesting_is_refused_before_parsing() {
        let deep = format!("{}{}", "[".repeat(100_000), "]".repeat(100_000));
        let limits = DecodeLimits { max_bytes: usize::MAX, max_depth: 32 };
        assert_eq!(decode_client_text(&deep, &limits), Err(DecodeError::TooDeep { max: 32 }));
    }

    #[test]
    fn errors_read_well() {
        assert_eq!(
            DecodeError::TooLarge { len: 10, max: 5 }.to_string(),
            "message is 10 bytes, at most 5 are accepted"
        );
    }
}
