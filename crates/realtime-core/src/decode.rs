//! Decoding of client text frames into typed client messages. Never panics on any input.

use serde_json::Value;

use crate::envelope::{Envelope, Payload};
use crate::ids::{InvalidMessageType, InvalidTopicName, MessageType, TopicName};
use crate::protocol;
use crate::stream::Position;
use crate::token::BearerToken;
use crate::wire::{InvalidRequestId, RequestId, position_from_json};

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

/// A decoded client message. `id` is the frame's optional `"id"`, to echo in the reply.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum ClientMessage {
    /// `{"type":"ping"}`: the server answers with a pong.
    Ping {
        /// The request id, if any.
        id: Option<RequestId>,
    },
    /// `{"type":"subscribe","payload":{"topic":..,"since":{"epoch":..,"offset":..}}}`: join
    /// a topic, recovering what was missed after `since` if given.
    Subscribe {
        /// The request id, if any.
        id: Option<RequestId>,
        /// The topic to join.
        topic: TopicName,
        /// The last position the client saw in the topic.
        since: Option<Position>,
    },
    /// `{"type":"unsubscribe","payload":{"topic":..}}`: leave a topic.
    Unsubscribe {
        /// The request id, if any.
        id: Option<RequestId>,
        /// The topic to leave.
        topic: TopicName,
    },
    /// `{"type":"refresh","payload":{"token":..}}`: a new token for this connection.
    Refresh {
        /// The request id, if any.
        id: Option<RequestId>,
        /// The new token, not yet verified (redacted in `Debug`).
        token: BearerToken,
    },
    /// Any other type: handed to the application's inbound handler.
    Message {
        /// The request id, if any.
        id: Option<RequestId>,
        /// The message.
        envelope: Envelope,
    },
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
    /// The `id` field is neither a string nor a number, or too long.
    #[error("invalid \"id\": {0}")]
    InvalidId(InvalidRequestId),
    /// A `subscribe` or `unsubscribe` without a string `payload.topic`.
    #[error("\"payload.topic\" must be a topic name string")]
    MissingTopic,
    /// `payload.topic` breaks the topic name rules.
    #[error("invalid \"payload.topic\": {0}")]
    InvalidTopic(InvalidTopicName),
    /// `payload.since` is not `{"epoch": <epoch>, "offset": <non-negative integer>}`.
    #[error("invalid \"payload.since\": {0}")]
    InvalidSince(String),
    /// A `refresh` without a non-empty string `payload.token`.
    #[error("\"payload.token\" must be a non-empty string")]
    MissingToken,
}

/// A client frame that does not decode: what is wrong, and the frame's `id` when it had a
/// valid one, so that the `error` reply can echo it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{error}")]
pub struct DecodeFailure {
    /// What is wrong with the frame.
    pub error: DecodeError,
    /// The frame's request id, when it was an object with a valid `id`.
    pub id: Option<RequestId>,
}

impl From<DecodeError> for DecodeFailure {
    fn from(error: DecodeError) -> Self {
        DecodeFailure { error, id: None }
    }
}

/// Decodes one client text frame.
///
/// `payload` may be omitted (it then is `{}`); `id` may be omitted or `null`; other
/// top-level fields are ignored. `ping`, `subscribe`, `unsubscribe` and `refresh` are the
/// protocol's own ([`protocol::CLIENT_PROTOCOL_TYPES`]); any other type that is not
/// reserved for the server is an application [`ClientMessage::Message`].
///
/// # Errors
/// [`DecodeFailure`] says what is wrong with the frame, with its `id` when that was valid.
pub fn decode_client_text(
    text: &str,
    limits: &DecodeLimits,
) -> Result<ClientMessage, DecodeFailure> {
    if text.len() > limits.max_bytes {
        return Err(DecodeError::TooLarge { len: text.len(), max: limits.max_bytes }.into());
    }
    if nesting_depth(text.as_bytes()) > limits.max_depth {
        return Err(DecodeError::TooDeep { max: limits.max_depth }.into());
    }
    let value: Value =
        serde_json::from_str(text).map_err(|e| DecodeError::InvalidJson(e.to_string()))?;
    let Value::Object(mut object) = value else {
        return Err(DecodeError::NotAnObject.into());
    };
    let id = match object.remove("id") {
        None | Some(Value::Null) => None,
        Some(raw) => Some(RequestId::from_json(&raw).map_err(DecodeError::InvalidId)?),
    };
    match decode_object(object) {
        Ok(decoded) => Ok(decoded.with_id(id)),
        Err(error) => Err(DecodeFailure { error, id }),
    }
}

/// The `id` of a client text frame, read without decoding the rest of it: for a frame
/// that is dropped unhandled (over the rate limit) but still answered. `None` when the frame
/// is over the limits, is not a JSON object, or has no valid `id` (what
/// [`decode_client_text`] would put in the [`DecodeFailure`] or the message).
///
/// Cheaper than decoding: the other fields are scanned, not built.
pub fn request_id_of(text: &str, limits: &DecodeLimits) -> Option<RequestId> {
    use serde::de::{self, Deserializer as _, IgnoredAny, MapAccess, Visitor};

    /// An object's `id` (the last one, as in a decoded object), other fields skipped.
    struct IdOnly(Option<Value>);

    struct IdVisitor;

    impl<'de> Visitor<'de> for IdVisitor {
        type Value = IdOnly;

        fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            f.write_str("a JSON object")
        }

        fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<IdOnly, A::Error> {
            let mut id = None;
            while let Some(key) = map.next_key::<IsId>()? {
                if key.0 {
                    id = Some(map.next_value::<Value>()?);
                } else {
                    map.next_value::<IgnoredAny>()?;
                }
            }
            Ok(IdOnly(id))
        }
    }

    /// Whether a key is `id`, without keeping the key.
    struct IsId(bool);

    impl<'de> de::Deserialize<'de> for IsId {
        fn deserialize<D: de::Deserializer<'de>>(deserializer: D) -> Result<IsId, D::Error> {
            struct KeyVisitor;
            impl Visitor<'_> for KeyVisitor {
                type Value = IsId;

                fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                    f.write_str("a string key")
                }

                fn visit_str<E: de::Error>(self, key: &str) -> Result<IsId, E> {
                    Ok(IsId(key == "id"))
                }
            }
            deserializer.deserialize_str(KeyVisitor)
        }
    }

    if text.len() > limits.max_bytes || nesting_depth(text.as_bytes()) > limits.max_depth {
        return None;
    }
    let mut deserializer = serde_json::Deserializer::from_str(text);
    let IdOnly(id) = deserializer.deserialize_map(IdVisitor).ok()?;
    deserializer.end().ok()?;
    match id? {
        Value::Null => None,
        raw => RequestId::from_json(&raw).ok(),
    }
}

/// A decoded message still missing its id (added by [`Decoded::with_id`]), so that the
/// id is moved into the message on success and into the failure otherwise.
enum Decoded {
    Ping,
    Subscribe { topic: TopicName, since: Option<Position> },
    Unsubscribe { topic: TopicName },
    Refresh { token: BearerToken },
    Message(Envelope),
}

impl Decoded {
    fn with_id(self, id: Option<RequestId>) -> ClientMessage {
        match self {
            Decoded::Ping => ClientMessage::Ping { id },
            Decoded::Subscribe { topic, since } => ClientMessage::Subscribe { id, topic, since },
            Decoded::Unsubscribe { topic } => ClientMessage::Unsubscribe { id, topic },
            Decoded::Refresh { token } => ClientMessage::Refresh { id, token },
            Decoded::Message(envelope) => ClientMessage::Message { id, envelope },
        }
    }
}

/// Decodes the fields other than `id`.
fn decode_object(mut object: serde_json::Map<String, Value>) -> Result<Decoded, DecodeError> {
    let kind = match object.remove("type") {
        None => return Err(DecodeError::MissingType),
        Some(Value::String(s)) if s.is_empty() => return Err(DecodeError::EmptyType),
        Some(Value::String(s)) => MessageType::new(s).map_err(DecodeError::InvalidType)?,
        Some(_) => return Err(DecodeError::TypeNotString),
    };
    let mut payload = match object.remove("payload") {
        None => Payload::new(),
        Some(Value::Object(map)) => map,
        Some(_) => return Err(DecodeError::PayloadNotObject),
    };
    match kind.as_str() {
        protocol::PING => Ok(Decoded::Ping),
        protocol::SUBSCRIBE => {
            let topic = topic(&payload)?;
            let since = match payload.get("since") {
                None | Some(Value::Null) => None,
                Some(raw) => Some(position_from_json(raw).map_err(DecodeError::InvalidSince)?),
            };
            Ok(Decoded::Subscribe { topic, since })
        }
        protocol::UNSUBSCRIBE => Ok(Decoded::Unsubscribe { topic: topic(&payload)? }),
        protocol::REFRESH => match payload.remove("token") {
            Some(Value::String(token)) if !token.is_empty() => {
                Ok(Decoded::Refresh { token: BearerToken::new(token) })
            }
            _ => Err(DecodeError::MissingToken),
        },
        reserved if protocol::is_reserved_server_type(reserved) => {
            Err(DecodeError::ReservedType(kind))
        }
        _ => Ok(Decoded::Message(Envelope::new(kind, payload))),
    }
}

/// The `payload.topic` of a `subscribe` or `unsubscribe`.
fn topic(payload: &Payload) -> Result<TopicName, DecodeError> {
    match payload.get("topic") {
        Some(Value::String(raw)) => TopicName::new(raw.as_str()).map_err(DecodeError::InvalidTopic),
        _ => Err(DecodeError::MissingTopic),
    }
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
    use crate::ids::InvalidTopicName;
    use crate::stream::Epoch;
    use serde_json::json;

    #[track_caller]
    fn check(text: &str, expected: Result<ClientMessage, DecodeError>) {
        let got = decode_client_text(text, &DecodeLimits::default());
        assert_eq!(got.map_err(|failure| failure.error), expected, "{text}");
    }

    /// A frame that fails with `error` and echoes `id`.
    #[track_caller]
    fn check_failure(text: &str, error: DecodeError, id: Option<Value>) {
        let id = id.map(|v| RequestId::from_json(&v).unwrap_or_else(|e| panic!("{e}")));
        assert_eq!(
            decode_client_text(text, &DecodeLimits::default()),
            Err(DecodeFailure { error, id }),
            "{text}"
        );
    }

    fn id(value: Value) -> Option<RequestId> {
        Some(RequestId::from_json(&value).unwrap_or_else(|e| panic!("{e}")))
    }

    fn topic(raw: &str) -> TopicName {
        TopicName::new(raw).unwrap_or_else(|e| panic!("{e}"))
    }

    fn message(kind: &str, payload: &str) -> ClientMessage {
        let payload: Payload = serde_json::from_str(payload).unwrap_or_else(|e| panic!("{e}"));
        ClientMessage::Message {
            id: None,
            envelope: Envelope::new(
                MessageType::new(kind).unwrap_or_else(|e| panic!("{e}")),
                payload,
            ),
        }
    }

    #[test]
    fn good_messages() {
        check(r#"{"type":"ping"}"#, Ok(ClientMessage::Ping { id: None }));
        check(r#"{"type":"ping","payload":{}}"#, Ok(ClientMessage::Ping { id: None }));
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
    fn ids_are_kept_as_sent() {
        check(r#"{"type":"ping","id":1}"#, Ok(ClientMessage::Ping { id: id(json!(1)) }));
        check(r#"{"type":"ping","id":"a-1"}"#, Ok(ClientMessage::Ping { id: id(json!("a-1")) }));
        check(r#"{"type":"ping","id":2.5}"#, Ok(ClientMessage::Ping { id: id(json!(2.5)) }));
        check(r#"{"type":"ping","id":null}"#, Ok(ClientMessage::Ping { id: None }));
        let Ok(ClientMessage::Message { id: Some(got), .. }) =
            decode_client_text(r#"{"id":7,"type":"chat"}"#, &DecodeLimits::default())
        else {
            panic!("not a message with an id");
        };
        assert_eq!(serde_json::to_string(&got).ok().as_deref(), Some("7"));
        let long = "x".repeat(64);
        check(
            &format!(r#"{{"type":"ping","id":"{long}"}}"#),
            Ok(ClientMessage::Ping { id: id(json!(long)) }),
        );
    }

    #[test]
    fn bad_ids() {
        let wrong = DecodeError::InvalidId(InvalidRequestId::WrongType);
        for raw in ["{}", "true", "[1]", r#"{"a":1}"#] {
            check_failure(&format!(r#"{{"type":"ping","id":{raw}}}"#), wrong.clone(), None);
        }
        check_failure(
            &format!(r#"{{"type":"ping","id":"{}"}}"#, "x".repeat(65)),
            DecodeError::InvalidId(InvalidRequestId::TooLong { len: 65, max: 64 }),
            None,
        );
        // A bad id wins over a bad type: there is nothing valid to echo.
        check_failure(r#"{"type":5,"id":false}"#, wrong, None);
    }

    #[test]
    fn subscribe_and_unsubscribe() {
        let epoch = Epoch::new("abc").unwrap_or_else(|e| panic!("{e}"));
        check(
            r#"{"type":"subscribe","id":1,"payload":{"topic":"orders","since":{"epoch":"abc","offset":17}}}"#,
            Ok(ClientMessage::Subscribe {
                id: id(json!(1)),
                topic: topic("orders"),
                since: Some(Position { epoch, offset: 17 }),
            }),
        );
        check(
            r#"{"type":"subscribe","payload":{"topic":"chat:room-7"}}"#,
            Ok(ClientMessage::Subscribe { id: None, topic: topic("chat:room-7"), since: None }),
        );
        check(
            r#"{"type":"subscribe","payload":{"topic":"t","since":null}}"#,
            Ok(ClientMessage::Subscribe { id: None, topic: topic("t"), since: None }),
        );
        check(
            r#"{"type":"unsubscribe","id":"u","payload":{"topic":"orders"}}"#,
            Ok(ClientMessage::Unsubscribe { id: id(json!("u")), topic: topic("orders") }),
        );
    }

    #[test]
    fn bad_subscriptions_echo_the_id() {
        for kind in ["subscribe", "unsubscribe"] {
            for payload in [
                "",
                r#","payload":{}"#,
                r#","payload":{"topic":5}"#,
                r#","payload":{"topic":null}"#,
            ] {
                check_failure(
                    &format!(r#"{{"type":"{kind}","id":9{payload}}}"#),
                    DecodeError::MissingTopic,
                    Some(json!(9)),
                );
            }
            check_failure(
                &format!(r#"{{"type":"{kind}","id":"q","payload":{{"topic":"a b"}}}}"#),
                DecodeError::InvalidTopic(InvalidTopicName::InvalidCharacter(' ')),
                Some(json!("q")),
            );
            check_failure(
                &format!(r#"{{"type":"{kind}","payload":{{"topic":""}}}}"#),
                DecodeError::InvalidTopic(InvalidTopicName::Empty),
                None,
            );
        }
        for since in [
            r#""abc""#,
            "17",
            "[]",
            r#"{"offset":1}"#,
            r#"{"epoch":"a-b","offset":1}"#,
            r#"{"epoch":"","offset":1}"#,
            r#"{"epoch":1,"offset":1}"#,
            r#"{"epoch":"abc"}"#,
            r#"{"epoch":"abc","offset":-1}"#,
            r#"{"epoch":"abc","offset":1.5}"#,
            r#"{"epoch":"abc","offset":1.0}"#,
            r#"{"epoch":"abc","offset":"1"}"#,
            r#"{"epoch":"abc","offset":18446744073709551616}"#,
        ] {
            let text = format!(
                r#"{{"type":"subscribe","id":3,"payload":{{"topic":"t","since":{since}}}}}"#
            );
            let got = decode_client_text(&text, &DecodeLimits::default());
            assert!(
                matches!(
                    &got,
                    Err(DecodeFailure { error: DecodeError::InvalidSince(_), id: Some(_) })
                ),
                "{since}: {got:?}"
            );
        }
        check_failure(
            r#"{"type":"subscribe","id":3,"payload":{"topic":"t","since":{"epoch":"abc","offset":-1}}}"#,
            DecodeError::InvalidSince("\"offset\" must be a non-negative integer".into()),
            Some(json!(3)),
        );
    }

    #[test]
    fn refresh() {
        let got = decode_client_text(
            r#"{"type":"refresh","id":4,"payload":{"token":"a.b.c"}}"#,
            &DecodeLimits::default(),
        );
        let Ok(ClientMessage::Refresh { id: got_id, token }) = got else {
            panic!("not a refresh: {got:?}");
        };
        assert_eq!((got_id, token.expose()), (id(json!(4)), "a.b.c"));
        for payload in
            ["", r#","payload":{}"#, r#","payload":{"token":""}"#, r#","payload":{"token":7}"#]
        {
            check_failure(
                &format!(r#"{{"type":"refresh","id":"r"{payload}}}"#),
                DecodeError::MissingToken,
                Some(json!("r")),
            );
        }
    }

    #[test]
    fn tokens_never_show() {
        let text = r#"{"type":"refresh","payload":{"token":"secret.jwt.value"}}"#;
        let got = decode_client_text(text, &DecodeLimits::default());
        assert!(!format!("{got:?}").contains("secret"), "{got:?}");
        let bad = r#"{"type":"refresh","id":"secret","payload":{"token":["secret"]}}"#;
        let failure = decode_client_text(bad, &DecodeLimits::default())
            .err()
            .unwrap_or_else(|| panic!("accepted"));
        assert!(!failure.to_string().contains("secret"), "{failure}");
    }

    #[test]
    fn every_error_path() {
        let limits = DecodeLimits { max_bytes: 64, max_depth: 3 };
        let decode = |text: &str| decode_client_text(text, &limits).map_err(|f| f.error);
        let big = format!(r#"{{"type":"x","payload":{{"p":"{}"}}}}"#, "a".repeat(64));
        assert_eq!(decode(&big), Err(DecodeError::TooLarge { len: big.len(), max: 64 }));
        assert_eq!(
            decode(r#"{"type":"x","payload":{"a":[[1]]}}"#),
            Err(DecodeError::TooDeep { max: 3 })
        );
        assert!(decode(r#"{"type":"x","payload":{"a":[1]}}"#).is_ok());
        assert!(matches!(decode("{not json"), Err(DecodeError::InvalidJson(_))));
        assert!(matches!(decode(""), Err(DecodeError::InvalidJson(_))));
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
            let text = format!(r#"{{"type":"{reserved}","id":1,"payload":{{}}}}"#);
            let kind = MessageType::new(reserved).unwrap_or_else(|e| panic!("{e}"));
            check_failure(&text, DecodeError::ReservedType(kind), Some(json!(1)));
        }
        // Every error after the id is read echoes it.
        check_failure(r#"{"id":"e","payload":{}}"#, DecodeError::MissingType, Some(json!("e")));
        check_failure(
            r#"{"id":2,"type":"x","payload":1}"#,
            DecodeError::PayloadNotObject,
            Some(json!(2)),
        );
    }

    #[test]
    fn deep_nesting_is_refused_before_parsing() {
        let deep = format!("{}{}", "[".repeat(100_000), "]".repeat(100_000));
        let limits = DecodeLimits { max_bytes: usize::MAX, max_depth: 32 };
        assert_eq!(
            decode_client_text(&deep, &limits),
            Err(DecodeFailure { error: DecodeError::TooDeep { max: 32 }, id: None })
        );
    }

    #[test]
    fn errors_read_well() {
        assert_eq!(
            DecodeError::TooLarge { len: 10, max: 5 }.to_string(),
            "message is 10 bytes, at most 5 are accepted"
        );
        let failure = DecodeFailure { error: DecodeError::MissingTopic, id: id(json!(1)) };
        assert_eq!(failure.to_string(), "\"payload.topic\" must be a topic name string");
        assert_eq!(
            DecodeError::InvalidId(InvalidRequestId::WrongType).to_string(),
            "invalid \"id\": \"id\" must be a string or a number"
        );
    }

    /// The id a frame decodes with (in the message or in the failure).
    fn decoded_id(text: &str, limits: &DecodeLimits) -> Option<RequestId> {
        match decode_client_text(text, limits) {
            Ok(
                ClientMessage::Ping { id }
                | ClientMessage::Subscribe { id, .. }
                | ClientMessage::Unsubscribe { id, .. }
                | ClientMessage::Refresh { id, .. }
                | ClientMessage::Message { id, .. },
            ) => id,
            Err(failure) => failure.id,
        }
    }

    #[test]
    fn the_id_alone_is_read_as_decoding_reads_it() {
        let limits = DecodeLimits { max_bytes: 200, max_depth: 4 };
        let cases = [
            (r#"{"type":"chat","id":7,"payload":{"id":"inner"}}"#, id(json!(7))),
            (r#"{"id":"a1","type":"ping"}"#, id(json!("a1"))),
            (r#"{"type":"x","payload":{"k":[1,{"id":2}]},"id":-1.5}"#, id(json!(-1.5))),
            (r#"{"type":"chat","id":1,"id":"last"}"#, id(json!("last"))),
            (r#"{"type":"\u0063hat","\u0069d":"escaped"}"#, id(json!("escaped"))),
            (r#"{"type":"nope!","id":"bad type"}"#, id(json!("bad type"))),
            (r#"{"type":"chat","payload":3,"id":4}"#, id(json!(4))),
            (r#"{"type":"chat"}"#, None),
            (r#"{"type":"chat","id":null}"#, None),
            (r#"{"type":"chat","id":true}"#, None),
            (r#"{"type":"chat","id":{"a":1}}"#, None),
            (r#"[{"id":1}]"#, None),
            (r#"{"id":1"#, None),
            (r#"{"id":1} {}"#, None),
            (r#""id""#, None),
            (r#"{"type":"chat","payload":{"a":[[[[1]]]]},"id":5}"#, None),
        ];
        for (text, expected) in cases {
            assert_eq!(request_id_of(text, &limits), expected, "{text}");
            assert_eq!(decoded_id(text, &limits), expected, "{text}");
        }
        let long = format!(r#"{{"id":"{}"}}"#, "a".repeat(65));
        assert_eq!(request_id_of(&long, &limits), None);
        let big = format!(r#"{{"id":1,"payload":{{"s":"{}"}}}}"#, "a".repeat(200));
        assert_eq!((request_id_of(&big, &limits), decoded_id(&big, &limits)), (None, None));
    }
}
