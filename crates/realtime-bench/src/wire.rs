//! The benchmark's view of realtime's wire protocol: benchmark messages (with their send
//! timestamp), publish bodies, the `connected` frame, bench JWTs and the wall clock in
//! microseconds.

use std::borrow::Cow;
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
    fn minted_tokens_carry_the_subject() {
        let token = mint_token(&[7; 32], "alice", &["admin".to_owned()], 60).unwrap();
        assert_eq!(unverified_subject(&token).as_deref(), Some("alice"));
        assert_eq!(unverified_subject("garbage"), None);
        assert_eq!(delivered_count(br#"{"delivered":12}"#), Some(12));
        assert_eq!(delivered_count(b"{}"), None);
    }
}
