//! The benchmark's view of realtime's wire protocol: benchmark messages (with their send
//! timestamp and, in a stream with history, their position), publish bodies, the `connected`
//! frame and the stream positions it reports, the `since` upgrade parameter, bench JWTs and
//! the wall clock in microseconds.

use std::borrow::Cow;
use std::collections::BTreeMap;
use std::time::{SystemTime, UNIX_EPOCH};

use realtime_core::Target;
use serde::{Deserialize, Serialize};

/// The message type of every benchmark message.
pub const BENCH_TYPE: &str = "bench";

/// The payload of a benchmark message.
///
/// Field names are one letter to keep frames small (every receiver parses every one).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BenchPayload {
    /// The round the message belongs to.
    pub r: u64,
    /// Its sequence number within the round, from 0.
    pub s: u32,
    /// When it was published: microseconds since the Unix epoch (publisher's wall clock,
    /// which on one machine is every receiver's clock too).
    pub t: u64,
    /// For targeted messages, the user it is for; receivers of other users count it as
    /// misrouted.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub to: Option<String>,
}

/// A frame as received by a client, with every payload field the benchmark might read.
///
/// Unknown fields are ignored, so the same type reads `connected` frames and benchmark
/// messages.
#[derive(Debug, Deserialize)]
pub struct Incoming<'a> {
    /// The message type.
    #[serde(rename = "type", borrow)]
    pub kind: Cow<'a, str>,
    /// The payload fields the benchmark reads.
    #[serde(default)]
    pub payload: IncomingPayload<'a>,
    /// The stream of a publication in a stream with history (`"user:alice"`).
    #[serde(default, borrow)]
    pub stream: Option<Cow<'a, str>>,
    /// Its offset in that stream.
    #[serde(default)]
    pub offset: Option<u64>,
    /// The stream's epoch.
    #[serde(default, borrow)]
    pub epoch: Option<Cow<'a, str>>,
}

/// The payload fields of [`Incoming`].
#[derive(Debug, Default, Deserialize)]
pub struct IncomingPayload<'a> {
    /// Round (benchmark messages).
    pub r: Option<u64>,
    /// Sequence number (benchmark messages).
    pub s: Option<u32>,
    /// Send timestamp in microseconds (benchmark messages).
    pub t: Option<u64>,
    /// Intended user (targeted benchmark messages).
    #[serde(borrow)]
    pub to: Option<Cow<'a, str>>,
    /// The connection id (`connected` frames).
    #[serde(borrow)]
    pub connection_id: Option<Cow<'a, str>>,
    /// The user id (`connected` frames).
    #[serde(borrow)]
    pub user_id: Option<Cow<'a, str>>,
}

/// Parses a received text frame; `None` when it is not a JSON object with a `type`.
pub fn parse_incoming(text: &str) -> Option<Incoming<'_>> {
    serde_json::from_str(text).ok()
}

/// A position in a stream: its epoch and the offset of the last publication seen.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Position {
    /// The stream's epoch (a new epoch means the history before it is gone).
    pub epoch: String,
    /// The offset of the last publication.
    pub offset: u64,
}

/// Where one stream stood at `connected`: `{"epoch":..,"offset":..,"recovered":..}`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct StreamState {
    /// The stream's epoch.
    pub epoch: String,
    /// Its offset after any replayed publications.
    pub offset: u64,
    /// Whether everything since the client's `since` position was replayed.
    #[serde(default)]
    pub recovered: bool,
}

/// The positions of a connection's streams, by stream name.
pub type Positions = BTreeMap<String, Position>;

/// The `payload.streams` of a `connected` frame, by stream name: `Ok` and empty when the
/// frame has none (a server without stream positions).
///
/// # Errors
/// [`crate::BenchError::Protocol`] when `text` is not a `connected` frame, or its
/// `streams` is not an object of `{"epoch":..,"offset":..,"recovered":..}`.
pub fn connected_streams(text: &str) -> Result<BTreeMap<String, StreamState>, crate::BenchError> {
    #[derive(Deserialize)]
    struct Connected {
        #[serde(rename = "type")]
        kind: String,
        #[serde(default)]
        payload: ConnectedPayload,
    }
    #[derive(Default, Deserialize)]
    struct ConnectedPayload {
        #[serde(default)]
        streams: Option<BTreeMap<String, StreamState>>,
    }
    let bad = |why: String| {
        crate::BenchError::Protocol(format!(
            "{why}: {}",
            text.chars().take(160).collect::<String>()
        ))
    };
    let frame: Connected =
        serde_json::from_str(text).map_err(|e| bad(format!("unreadable `connected` ({e})")))?;
    if frame.kind != realtime_core::protocol::CONNECTED {
        return Err(bad("first frame is not `connected`".to_owned()));
    }
    Ok(frame.payload.streams.unwrap_or_default())
}

/// The positions of `streams` (a `connected` frame's), without their `recovered` flags.
pub fn positions_of(streams: &BTreeMap<String, StreamState>) -> Positions {
    streams
        .iter()
        .map(|(name, s)| (name.clone(), Position { epoch: s.epoch.clone(), offset: s.offset }))
        .collect()
}

/// Percent-encodes `text` for a URL query value: every byte but the unreserved
/// `A-Z a-z 0-9 - . _ ~` becomes `%XX` (RFC 3986).
pub fn percent_encode(text: &str) -> String {
    let mut out = String::with_capacity(text.len() * 3);
    for &b in text.as_bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~') {
            out.push(char::from(b));
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// The value of the `since` upgrade query parameter for `positions`: the JSON object
/// `{"broadcast":{"epoch":..,"offset":..},..}`, percent-encoded.
pub fn since_param(positions: &Positions) -> String {
    // Serialising strings and numbers cannot fail.
    percent_encode(&serde_json::to_string(positions).unwrap_or_default())
}

/// The JSON body of `POST /api/publish` for a benchmark message to `target`.
pub fn publish_body(target: &Target, payload: &BenchPayload) -> Vec<u8> {
    let body = serde_json::json!({
        "target": target,
        "message": { "type": BENCH_TYPE, "payload": payload },
    });
    body.to_string().into_bytes()
}

/// The `delivered` count of a publish response body `{"delivered": N}`.
pub fn delivered_count(body: &[u8]) -> Option<u64> {
    #[derive(Deserialize)]
    struct Reply {
        delivered: u64,
    }
    serde_json::from_slice::<Reply>(body).ok().map(|r| r.delivered)
}

/// The `connected` frame the server sends first.
pub fn connected_frame(connection_id: &str, user_id: &str, roles: &[String]) -> String {
    serde_json::json!({
        "type": realtime_core::protocol::CONNECTED,
        "payload": { "connection_id": connection_id, "user_id": user_id, "roles": roles },
    })
    .to_string()
}

/// Microseconds since the Unix epoch, from the wall clock (0 if the clock is before 1970).
pub fn unix_micros() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_micros()).unwrap_or(u64::MAX))
}

/// Claims of a benchmark client token.
#[derive(Debug, Serialize)]
struct Claims<'a> {
    sub: &'a str,
    roles: &'a [String],
    exp: u64,
}

/// Mints an HS256 JWT for `sub` with `roles`, valid for `ttl_secs` from now.
///
/// # Errors
/// [`crate::BenchError::Token`] when signing fails.
pub fn mint_token(
    secret: &[u8],
    sub: &str,
    roles: &[String],
    ttl_secs: u64,
) -> Result<String, crate::BenchError> {
    let claims = Claims { sub, roles, exp: unix_micros() / 1_000_000 + ttl_secs };
    jsonwebtoken::encode(
        &jsonwebtoken::Header::new(jsonwebtoken::Algorithm::HS256),
        &claims,
        &jsonwebtoken::EncodingKey::from_secret(secret),
    )
    .map_err(|e| crate::BenchError::Token(e.to_string()))
}

/// The `sub` claim of a JWT, read WITHOUT verifying the signature (the baseline server
/// deliberately skips auth); `None` when the token is not a decodable JWT or has no `sub`.
pub fn unverified_subject(token: &str) -> Option<String> {
    #[derive(Deserialize)]
    struct Sub {
        sub: Option<String>,
    }
    jsonwebtoken::dangerous::insecure_decode_claims::<Sub>(token).ok().and_then(|c| c.sub)
}

#[cfg(test)]
mod tests {
    use super::*;
    use realtime_core::UserId;

    #[test]
    fn publish_body_is_the_http_api_shape() {
        let payload = BenchPayload { r: 3, s: 7, t: 42, to: None };
        let body: serde_json::Value =
            serde_json::from_slice(&publish_body(&Target::Broadcast, &payload)).unwrap();
        assert_eq!(
            body,
            serde_json::json!({"target": "broadcast",
                "message": {"type": "bench", "payload": {"r": 3, "s": 7, "t": 42}}})
        );
        let user = Target::User(UserId::new("u1").unwrap());
        let payload = BenchPayload { to: Some("u1".into()), ..payload };
        let body: serde_json::Value =
            serde_json::from_slice(&publish_body(&user, &payload)).unwrap();
        assert_eq!(body["target"], serde_json::json!({"user": "u1"}));
        assert_eq!(body["message"]["payload"]["to"], "u1");
    }

    #[test]
    fn incoming_reads_bench_and_connected_frames() {
        let frame = r#"{"type":"bench","payload":{"r":1,"s":2,"t":3,"to":"u9"}}"#;
        let m = parse_incoming(frame).unwrap();
        assert_eq!(m.kind, "bench");
        assert_eq!((m.payload.r, m.payload.s, m.payload.t), (Some(1), Some(2), Some(3)));
        assert_eq!(m.payload.to.as_deref(), Some("u9"));

        let connected = connected_frame("6f1c5a7e-0d2b-4c8e-9a57-3b1f2e4d5c6a", "u1", &[]);
        let m = parse_incoming(&connected).unwrap();
        assert_eq!(m.kind, "connected");
        assert_eq!(m.payload.user_id.as_deref(), Some("u1"));
        assert!(m.payload.connection_id.is_some());

        for bad in ["", "[]", "{}", "not json", r#"{"type":5}"#] {
            assert!(parse_incoming(bad).is_none(), "{bad:?} parsed");
        }
    }

    #[test]
    fn incoming_reads_stream_positions() {
        let frame = r#"{"type":"bench","payload":{"r":1,"s":0,"t":3},"stream":"broadcast","offset":18,"epoch":"hD3k"}"#;
        let m = parse_incoming(frame).unwrap();
        assert_eq!(
            (m.stream.as_deref(), m.offset, m.epoch.as_deref()),
            (Some("broadcast"), Some(18), Some("hD3k"))
        );
        let plain = parse_incoming(r#"{"type":"bench","payload":{"r":1,"s":0,"t":3}}"#).unwrap();
        assert_eq!((plain.stream, plain.offset, plain.epoch), (None, None, None));
    }

    #[test]
    fn connected_streams_are_read_with_their_recovery() {
        let text = r#"{"type":"connected","payload":{"connection_id":"c","user_id":"alice","roles":[],"expires_at":null,
            "streams":{"user:alice":{"epoch":"e1","offset":22,"recovered":true},"broadcast":{"epoch":"e2","offset":0,"recovered":false}}}}"#;
        let streams = connected_streams(text).unwrap();
        assert_eq!(
            streams.get("user:alice"),
            Some(&StreamState { epoch: "e1".into(), offset: 22, recovered: true })
        );
        assert_eq!(streams.get("broadcast").map(|s| (s.offset, s.recovered)), Some((0, false)));
        let positions = positions_of(&streams);
        assert_eq!(positions.get("user:alice"), Some(&Position { epoch: "e1".into(), offset: 22 }));
        assert_eq!(positions.len(), 2);

        // A server without positions: no streams.
        let bare = connected_frame("c", "alice", &[]);
        assert_eq!(connected_streams(&bare), Ok(BTreeMap::new()));
        for bad in [
            r#"{"type":"bench","payload":{}}"#,
            "not json",
            r#"{"type":"connected","payload":{"streams":{"broadcast":{"epoch":"e","offset":-1}}}}"#,
            r#"{"type":"connected","payload":{"streams":[]}}"#,
        ] {
            assert!(
                matches!(connected_streams(bad), Err(crate::BenchError::Protocol(_))),
                "{bad:?} was read"
            );
        }
    }

    #[test]
    fn since_is_percent_encoded_json_of_the_positions() {
        assert_eq!(percent_encode("aZ09-._~"), "aZ09-._~");
        assert_eq!(percent_encode("{\"a b\":1}&=%/é"), "%7B%22a%20b%22%3A1%7D%26%3D%25%2F%C3%A9");
        let mut positions = Positions::new();
        positions.insert("user:alice".into(), Position { epoch: "e1".into(), offset: 17 });
        positions.insert("broadcast".into(), Position { epoch: "e2".into(), offset: 3 });
        let since = since_param(&positions);
        assert_eq!(
            since,
            "%7B%22broadcast%22%3A%7B%22epoch%22%3A%22e2%22%2C%22offset%22%3A3%7D%2C\
             %22user%3Aalice%22%3A%7B%22epoch%22%3A%22e1%22%2C%22offset%22%3A17%7D%7D"
        );
        // The server's query decoding gives back the protocol's `since` object.
        let query = format!("token=x&since={since}");
        let decoded = realtime_core::query_param(&query, "since").unwrap().unwrap();
        let parsed = realtime_core::parse_since(&decoded).unwrap();
        assert_eq!(parsed.len(), 2);
        let alice = realtime_core::StreamName::parse("user:alice").unwrap();
        assert_eq!(parsed[&alice].offset, 17);
        assert_eq!(parsed[&alice].epoch.as_str(), "e1");
        assert_eq!(parsed[&realtime_core::StreamName::Broadcast].offset, 3);
    }

    #[test]
    fn minted_tokens_carry_the_subject() {
        let token = mint_token(&[7; 32], "alice", &["admin".to_owned()], 60).unwrap();
        assert_eq!(unverified_subject(&token).as_deref(), Some("alice"));
        assert_eq!(unverified_subject("garbage"), None);
        assert_eq!(delivered_count(br#"{"delivered":12}"#), Some(12));
        assert_eq!(delivered_count(b"{}"), None);
    }
}
