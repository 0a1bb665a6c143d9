//! The server's own frames, built here so every shell sends the same bytes: `pong`,
//! `error`, `subscribed`, `unsubscribed`, `refreshed`, presence and `connected`; the
//! client's request id ([`RequestId`]) they echo; and the `since` upgrade query parameter
//! ([`parse_since`]). Times go on the wire as Unix seconds, as in JWTs.

use std::collections::BTreeMap;
use std::fmt;

use serde::Serialize;
use serde::ser::{SerializeMap, Serializer};
use serde_json::{Number, Value};

use crate::connection::Connection;
use crate::frame::Frame;
use crate::ids::{TopicName, UserId};
use crate::protocol;
use crate::stream::{Epoch, InvalidStreamName, Position, StreamName};
use crate::time::UnixMillis;

/// The optional `"id"` of a client frame: a JSON string or number, echoed back as it came
/// (a number stays a number) in the reply to that frame.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RequestId(Id);

#[derive(Debug, Clone, PartialEq, Eq)]
enum Id {
    String(String),
    Number(Number),
}

/// Why a JSON value is not a [`RequestId`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum InvalidRequestId {
    /// Neither a string nor a number.
    #[error("\"id\" must be a string or a number")]
    WrongType,
    /// Longer than [`RequestId::MAX_LEN`] (characters of a string, or of a number's JSON text).
    #[error("\"id\" must be at most {max} characters, got {len}")]
    TooLong {
        /// Its length in characters.
        len: usize,
        /// The limit.
        max: usize,
    },
}

impl RequestId {
    /// Longest accepted id: characters of a string, or of a number's JSON text.
    pub const MAX_LEN: usize = 64;

    /// Reads the `id` field of a client frame.
    ///
    /// # Errors
    /// [`InvalidRequestId`] when it is not a string or a number, or too long.
    pub fn from_json(value: &Value) -> Result<RequestId, InvalidRequestId> {
        let (id, len) = match value {
            Value::String(s) => (Id::String(s.clone()), s.chars().count()),
            Value::Number(n) => (Id::Number(n.clone()), n.to_string().len()),
            _ => return Err(InvalidRequestId::WrongType),
        };
        if len > Self::MAX_LEN {
            return Err(InvalidRequestId::TooLong { len, max: Self::MAX_LEN });
        }
        Ok(RequestId(id))
    }
}

impl Serialize for RequestId {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        match &self.0 {
            Id::String(s) => serializer.serialize_str(s),
            Id::Number(n) => n.serialize(serializer),
        }
    }
}

impl fmt::Display for RequestId {
    /// The id's JSON text (a string in quotes).
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.0 {
            // Serialising a string cannot fail.
            Id::String(s) => f.write_str(&serde_json::to_string(s).unwrap_or_default()),
            Id::Number(n) => write!(f, "{n}"),
        }
    }
}

/// `{"type": kind, "id": id, "payload": payload}`, `id` only when there is one, `type` first
/// as in every frame.
pub(crate) fn server_frame(kind: &str, id: Option<&RequestId>, payload: &impl Serialize) -> Frame {
    #[derive(Serialize)]
    struct Wire<'a, P: Serialize> {
        #[serde(rename = "type")]
        kind: &'a str,
        #[serde(skip_serializing_if = "Option::is_none")]
        id: Option<&'a RequestId>,
        payload: &'a P,
    }
    // Serialising strings, numbers and JSON values cannot fail; the fallback is unreachable.
    let text = serde_json::to_string(&Wire { kind, id, payload })
        .unwrap_or_else(|_| format!(r#"{{"type":"{kind}","payload":{{}}}}"#));
    Frame::from_text(text)
}

/// `{"type":"error","id":..,"payload":{"code":..,"message":..}}`: the frame `id` asked for
/// was refused with `code` (one of the `protocol::ERROR_*` codes); the connection stays open.
pub fn error_frame(id: Option<&RequestId>, code: &str, message: &str) -> Frame {
    #[derive(Serialize)]
    struct ErrorPayload<'a> {
        code: &'a str,
        message: &'a str,
    }
    server_frame(protocol::ERROR, id, &ErrorPayload { code, message })
}

/// `{"type":"subscribed","id":..,"payload":{"topic":..,"epoch":..,"offset":..,"recovered":..}}`:
/// the connection is in `topic`. `position` is the topic's position after any replayed
/// publications (`None`, and no `epoch`/`offset`, when the topic keeps no history);
/// `recovered` says whether everything since the client's `since` was replayed.
pub fn subscribed_frame(
    id: Option<&RequestId>,
    topic: &TopicName,
    position: Option<&Position>,
    recovered: bool,
) -> Frame {
    #[derive(Serialize)]
    struct Subscribed<'a> {
        topic: &'a str,
        #[serde(skip_serializing_if = "Option::is_none")]
        epoch: Option<&'a str>,
        #[serde(skip_serializing_if = "Option::is_none")]
        offset: Option<u64>,
        recovered: bool,
    }
    let payload = Subscribed {
        topic: topic.as_str(),
        epoch: position.map(|p| p.epoch.as_str()),
        offset: position.map(|p| p.offset),
        recovered,
    };
    server_frame(protocol::SUBSCRIBED, id, &payload)
}

/// `{"type":"unsubscribed","id":..,"payload":{"topic":..}}`: the connection left `topic`.
pub fn unsubscribed_frame(id: Option<&RequestId>, topic: &TopicName) -> Frame {
    #[derive(Serialize)]
    struct Unsubscribed<'a> {
        topic: &'a str,
    }
    server_frame(protocol::UNSUBSCRIBED, id, &Unsubscribed { topic: topic.as_str() })
}

/// `{"type":"refreshed","id":..,"payload":{"expires_at":..}}`: the connection now runs on
/// the new token, which expires at `expires_at` (Unix seconds; `null` when it never does).
pub fn refreshed_frame(id: Option<&RequestId>, expires_at: Option<UnixMillis>) -> Frame {
    #[derive(Serialize)]
    struct Refreshed {
        expires_at: Option<u64>,
    }
    server_frame(
        protocol::REFRESHED,
        id,
        &Refreshed { expires_at: expires_at.map(UnixMillis::as_secs) },
    )
}

/// `{"type":"presence.join","payload":{"topic":..,"user_id":..}}` (or `presence.leave` when
/// `join` is false): `user` joined or left `topic`.
pub fn presence_frame(join: bool, topic: &TopicName, user: &UserId) -> Frame {
    #[derive(Serialize)]
    struct Presence<'a> {
        topic: &'a str,
        user_id: &'a str,
    }
    let kind = if join { protocol::PRESENCE_JOIN } else { protocol::PRESENCE_LEAVE };
    server_frame(kind, None, &Presence { topic: topic.as_str(), user_id: user.as_str() })
}

/// Where one of the connection's streams stands at `connected`: its position, and whether
/// what the client missed since its `since` position was replayed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StreamState {
    /// The stream.
    pub stream: StreamName,
    /// Its position after any replayed publications.
    pub position: Position,
    /// Whether everything since the client's position was replayed.
    pub recovered: bool,
}

/// `{"type":"connected","payload":{"connection_id":..,"user_id":..,"roles":[..],
/// "expires_at":..,"streams":{"user:alice":{"epoch":..,"offset":..,"recovered":..},..}}}`:
/// the first frame of a connection. `expires_at` is in Unix seconds (`null` when the token
/// never expires); `streams` is keyed by stream name, in the order given.
pub fn connected_frame(
    connection: &Connection,
    expires_at: Option<UnixMillis>,
    streams: &[StreamState],
) -> Frame {
    #[derive(Serialize)]
    struct Connected<'a> {
        connection_id: String,
        user_id: &'a str,
        roles: Vec<&'a str>,
        expires_at: Option<u64>,
        streams: Streams<'a>,
    }
    struct Streams<'a>(&'a [StreamState]);
    impl Serialize for Streams<'_> {
        fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
            #[derive(Serialize)]
            struct State<'a> {
                epoch: &'a str,
                offset: u64,
                recovered: bool,
            }
            let mut map = serializer.serialize_map(Some(self.0.len()))?;
            for state in self.0 {
                map.serialize_entry(
                    &state.stream.to_string(),
                    &State {
                        epoch: state.position.epoch.as_str(),
                        offset: state.position.offset,
                        recovered: state.recovered,
                    },
                )?;
            }
            map.end()
        }
    }
    let payload = Connected {
        connection_id: connection.id.to_string(),
        user_id: connection.user_id.as_str(),
        roles: connection.roles.iter().map(|role| role.as_str()).collect(),
        expires_at: expires_at.map(UnixMillis::as_secs),
        streams: Streams(streams),
    };
    server_frame(protocol::CONNECTED, None, &payload)
}

/// Why a JSON value is not a position; the text of [`DecodeError::InvalidSince`] and
/// [`SinceError::InvalidPosition`].
///
/// [`DecodeError::InvalidSince`]: crate::DecodeError::InvalidSince
pub(crate) fn position_from_json(value: &Value) -> Result<Position, String> {
    let Value::Object(object) = value else {
        return Err("a position must be an object {\"epoch\":..,\"offset\":..}".to_owned());
    };
    let epoch = match object.get("epoch") {
        Some(Value::String(raw)) => {
            Epoch::new(raw.as_str()).map_err(|e| format!("\"epoch\": {e}"))?
        }
        _ => return Err("\"epoch\" must be a string".to_owned()),
    };
    let offset = object
        .get("offset")
        .and_then(Value::as_u64)
        .ok_or_else(|| "\"offset\" must be a non-negative integer".to_owned())?;
    Ok(Position { epoch, offset })
}

/// Longest accepted `since` query parameter, in bytes (after percent-decoding).
pub const SINCE_MAX_BYTES: usize = 4096;
/// Most streams one `since` query parameter may name.
pub const SINCE_MAX_STREAMS: usize = 64;

/// Why the `since` query parameter is refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum SinceError {
    /// Longer than [`SINCE_MAX_BYTES`].
    #[error("\"since\" is {len} bytes, at most {max} are accepted")]
    TooLarge {
        /// Its length in bytes.
        len: usize,
        /// The limit.
        max: usize,
    },
    /// Not valid JSON; the text says where parsing failed.
    #[error("\"since\" is not valid JSON: {0}")]
    InvalidJson(String),
    /// Valid JSON, but not an object.
    #[error("\"since\" must be a JSON object of stream names to positions")]
    NotAnObject,
    /// A key is not a stream name.
    #[error("\"since\" names an invalid stream {stream:?}: {error}")]
    InvalidStream {
        /// The key, cut to its first 64 characters.
        stream: String,
        /// What is wrong with it.
        error: InvalidStreamName,
    },
    /// A value is not a position.
    #[error("\"since\" has an invalid position for {stream:?}: {reason}")]
    InvalidPosition {
        /// The stream.
        stream: String,
        /// What is wrong with the position.
        reason: String,
    },
    /// More than [`SINCE_MAX_STREAMS`] streams.
    #[error("\"since\" names {count} streams, at most {max} are accepted")]
    TooManyStreams {
        /// How many were named.
        count: usize,
        /// The limit.
        max: usize,
    },
}

/// Parses the percent-decoded `since` upgrade query parameter,
/// `{"user:alice":{"epoch":"..","offset":17},"broadcast":{..}}`: the position the client
/// last saw in each stream.
///
/// # Errors
/// [`SinceError`] says what is wrong; the size is checked before anything is parsed.
pub fn parse_since(raw: &str) -> Result<BTreeMap<StreamName, Position>, SinceError> {
    if raw.len() > SINCE_MAX_BYTES {
        return Err(SinceError::TooLarge { len: raw.len(), max: SINCE_MAX_BYTES });
    }
    let value: Value =
        serde_json::from_str(raw).map_err(|e| SinceError::InvalidJson(e.to_string()))?;
    let Value::Object(object) = value else {
        return Err(SinceError::NotAnObject);
    };
    if object.len() > SINCE_MAX_STREAMS {
        return Err(SinceError::TooManyStreams { count: object.len(), max: SINCE_MAX_STREAMS });
    }
    object
        .iter()
        .map(|(key, value)| {
            let stream = StreamName::parse(key).map_err(|error| SinceError::InvalidStream {
                stream: key.chars().take(64).collect(),
                error,
            })?;
            let position = position_from_json(value)
                .map_err(|reason| SinceError::InvalidPosition { stream: key.clone(), reason })?;
            Ok((stream, position))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::auth::Identity;
    use crate::ids::{ConnectionId, Role};
    use serde_json::json;

    fn parse(frame: &Frame) -> Value {
        serde_json::from_str(frame.as_str()).unwrap_or_else(|e| panic!("{e}: {frame:?}"))
    }

    fn id(value: Value) -> RequestId {
        RequestId::from_json(&value).unwrap_or_else(|e| panic!("{e}"))
    }

    fn topic(raw: &str) -> TopicName {
        TopicName::new(raw).unwrap_or_else(|e| panic!("{e}"))
    }

    fn at(epoch: &str, offset: u64) -> Position {
        Position { epoch: Epoch::new(epoch).unwrap_or_else(|e| panic!("{e}")), offset }
    }

    fn stream(raw: &str) -> StreamName {
        StreamName::parse(raw).unwrap_or_else(|e| panic!("{e}"))
    }

    #[test]
    fn request_ids_keep_their_json_form() {
        for value in
            [json!(1), json!(-7), json!(1.5), json!("abc"), json!(""), json!("é".repeat(64))]
        {
            let text = serde_json::to_string(&id(value.clone())).unwrap_or_else(|e| panic!("{e}"));
            assert_eq!(serde_json::from_str::<Value>(&text).ok(), Some(value));
        }
        assert_eq!(id(json!(42)).to_string(), "42");
        assert_eq!(id(json!("a")).to_string(), "\"a\"");
        assert_eq!(id(json!("q\"\n")).to_string(), r#""q\"\n""#);
        for value in [json!(null), json!(true), json!({}), json!([1])] {
            assert_eq!(RequestId::from_json(&value), Err(InvalidRequestId::WrongType), "{value}");
        }
        assert_eq!(
            RequestId::from_json(&json!("a".repeat(65))),
            Err(InvalidRequestId::TooLong { len: 65, max: 64 })
        );
        // serde_json keeps big numbers as floats: their JSON text stays short.
        let long_number: Value =
            serde_json::from_str(&format!("1{}", "0".repeat(64))).unwrap_or_else(|e| panic!("{e}"));
        assert!(id(long_number).to_string().len() <= RequestId::MAX_LEN);
    }

    #[test]
    fn pong_and_error_frames() {
        assert_eq!(Frame::pong(None).as_str(), r#"{"type":"pong","payload":{}}"#);
        assert_eq!(
            parse(&Frame::pong(Some(&id(json!(3))))),
            json!({"type":"pong","id":3,"payload":{}})
        );
        assert_eq!(
            error_frame(None, "rejected", "not now").as_str(),
            r#"{"type":"error","payload":{"code":"rejected","message":"not now"}}"#
        );
        assert_eq!(
            error_frame(Some(&id(json!("r1"))), "forbidden", "no").as_str(),
            r#"{"type":"error","id":"r1","payload":{"code":"forbidden","message":"no"}}"#
        );
    }

    #[test]
    fn subscription_and_refresh_frames() {
        let one = id(json!(1));
        assert_eq!(
            parse(&subscribed_frame(Some(&one), &topic("orders"), Some(&at("abc", 22)), true)),
            json!({"type":"subscribed","id":1,"payload":{"topic":"orders","epoch":"abc","offset":22,"recovered":true}})
        );
        assert_eq!(
            parse(&subscribed_frame(None, &topic("orders"), None, false)),
            json!({"type":"subscribed","payload":{"topic":"orders","recovered":false}})
        );
        assert_eq!(
            parse(&unsubscribed_frame(Some(&one), &topic("chat:7"))),
            json!({"type":"unsubscribed","id":1,"payload":{"topic":"chat:7"}})
        );
        assert_eq!(
            parse(&refreshed_frame(Some(&one), Some(UnixMillis(1_767_225_600_999)))),
            json!({"type":"refreshed","id":1,"payload":{"expires_at":1_767_225_600_u64}})
        );
        assert_eq!(
            parse(&refreshed_frame(None, None)),
            json!({"type":"refreshed","payload":{"expires_at":null}})
        );
        let alice = UserId::new("alice").unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(
            parse(&presence_frame(true, &topic("room"), &alice)),
            json!({"type":"presence.join","payload":{"topic":"room","user_id":"alice"}})
        );
        assert_eq!(
            parse(&presence_frame(false, &topic("room"), &alice)),
            json!({"type":"presence.leave","payload":{"topic":"room","user_id":"alice"}})
        );
    }

    #[test]
    fn connected_frame_carries_identity_expiry_and_streams() {
        let alice = UserId::new("alice").unwrap_or_else(|e| panic!("{e}"));
        let role = Role::new("admin").unwrap_or_else(|e| panic!("{e}"));
        let identity = Identity::new(alice).with_roles([role]);
        let connection_id = ConnectionId::parse("67e55044-10b1-426f-9247-bb680e5fe0c8")
            .unwrap_or_else(|e| panic!("{e}"));
        let connection =
            Connection::new(connection_id, &identity, Default::default(), UnixMillis(0));
        let streams = [
            StreamState { stream: stream("user:alice"), position: at("e1", 22), recovered: true },
            StreamState { stream: stream("broadcast"), position: at("e2", 0), recovered: false },
        ];
        assert_eq!(
            parse(&connected_frame(&connection, Some(UnixMillis(1_767_225_600_000)), &streams)),
            json!({"type":"connected","payload":{
                "connection_id":"67e55044-10b1-426f-9247-bb680e5fe0c8",
                "user_id":"alice",
                "roles":["admin"],
                "expires_at":1_767_225_600_u64,
                "streams":{
                    "user:alice":{"epoch":"e1","offset":22,"recovered":true},
                    "broadcast":{"epoch":"e2","offset":0,"recovered":false},
                },
            }})
        );
        assert_eq!(
            parse(&connected_frame(&connection, None, &[]))["payload"],
            json!({"connection_id":"67e55044-10b1-426f-9247-bb680e5fe0c8","user_id":"alice",
                   "roles":["admin"],"expires_at":null,"streams":{}})
        );
    }

    #[test]
    fn since_parameter() {
        let got = parse_since(
            r#"{"user:alice":{"epoch":"e1","offset":17},"broadcast":{"epoch":"b","offset":0}}"#,
        );
        let want: BTreeMap<_, _> =
            [(stream("user:alice"), at("e1", 17)), (stream("broadcast"), at("b", 0))].into();
        assert_eq!(got, Ok(want));
        assert_eq!(parse_since("{}"), Ok(BTreeMap::new()));

        let big = format!(r#"{{"broadcast":{{"epoch":"e","offset":1}}{}}}"#, " ".repeat(4096));
        assert!(big.len() > SINCE_MAX_BYTES);
        assert_eq!(parse_since(&big), Err(SinceError::TooLarge { len: big.len(), max: 4096 }));
        let just_under = format!("{{}}{}", " ".repeat(4094));
        assert_eq!(just_under.len(), SINCE_MAX_BYTES);
        assert_eq!(parse_since(&just_under), Ok(BTreeMap::new()));
        let over = format!("{just_under} ");
        assert_eq!(over.len(), 4097);
        assert_eq!(parse_since(&over), Err(SinceError::TooLarge { len: 4097, max: 4096 }));

        let entries: Vec<String> =
            (0..65).map(|i| format!(r#""user:u{i}":{{"epoch":"e","offset":1}}"#)).collect();
        let many = format!("{{{}}}", entries.join(","));
        assert!(many.len() <= SINCE_MAX_BYTES);
        assert_eq!(parse_since(&many), Err(SinceError::TooManyStreams { count: 65, max: 64 }));
        let sixty_four = format!("{{{}}}", entries[..64].join(","));
        assert_eq!(parse_since(&sixty_four).map(|m| m.len()), Ok(64));

        assert!(matches!(parse_since("{"), Err(SinceError::InvalidJson(_))));
        assert!(matches!(parse_since(""), Err(SinceError::InvalidJson(_))));
        assert_eq!(parse_since("[]"), Err(SinceError::NotAnObject));
        assert_eq!(parse_since("17"), Err(SinceError::NotAnObject));
        assert_eq!(
            parse_since(r#"{"team:x":{"epoch":"e","offset":1}}"#),
            Err(SinceError::InvalidStream {
                stream: "team:x".into(),
                error: InvalidStreamName::UnknownKind
            })
        );
        let long_key = format!(r#"{{"x{}":{{"epoch":"e","offset":1}}}}"#, "y".repeat(100));
        assert!(matches!(
            parse_since(&long_key),
            Err(SinceError::InvalidStream { stream, .. }) if stream.chars().count() == 64
        ));
        for bad in [
            r#"{"epoch":"a-b","offset":1}"#,
            r#"{"epoch":"","offset":1}"#,
            r#"{"epoch":7,"offset":1}"#,
            r#"{"offset":1}"#,
            r#"{"epoch":"e","offset":-1}"#,
            r#"{"epoch":"e","offset":1.5}"#,
            r#"{"epoch":"e","offset":"1"}"#,
            r#"{"epoch":"e"}"#,
            r#"[1]"#,
            r#"17"#,
        ] {
            let text = format!(r#"{{"broadcast":{bad}}}"#);
            assert!(
                matches!(
                    parse_since(&text),
                    Err(SinceError::InvalidPosition { ref stream, .. }) if stream == "broadcast"
                ),
                "{bad}"
            );
        }
    }
}
