//! [`Frame`]: an envelope serialised once to wire bytes, shared by every recipient.

use std::fmt::{self, Write as _};

use bytes::Bytes;

use crate::envelope::Envelope;
use crate::protocol;
use crate::stream::{Position, StreamName};
use crate::wire::{RequestId, server_frame};

/// One outbound text message, serialised once and shared by every recipient.
///
/// A `Frame` holds reference-counted bytes ([`bytes::Bytes`]): cloning it for another
/// recipient is an atomic increment, never a copy, an allocation or a re-serialisation.
///
/// **Invariant:** the bytes are valid UTF-8 (they are produced by `serde_json` or taken from a
/// `String`), so a transport may write them as a text frame without validating them again.
/// Nothing relies on it for memory safety: the WebSocket transport hands the bytes over as a
/// ready-made frame, and the workspace forbids `unsafe` code.
#[derive(Clone, PartialEq, Eq)]
pub struct Frame(Bytes);

impl Frame {
    /// Serialises `envelope` to its JSON wire form, once.
    pub fn encode(envelope: &Envelope) -> Frame {
        // Serialising a `Serialize` type made of strings and `serde_json::Value`s cannot fail
        // (all map keys are strings), so the fallback is unreachable in practice.
        let bytes = serde_json::to_vec(envelope).unwrap_or_else(|_| b"{}".to_vec());
        Frame(Bytes::from(bytes))
    }

    /// `envelope` as the reply to the client frame `id` came in: its wire form with the
    /// request's `"id"` between `type` and `payload`, `{"type":..,"id":..,"payload":{..}}`,
    /// serialised once. Without an id it is exactly [`Frame::encode`]'s bytes.
    pub fn encode_reply(envelope: &Envelope, id: Option<&RequestId>) -> Frame {
        server_frame(envelope.kind.as_str(), id, &envelope.payload)
    }

    /// A frame from text the caller already holds.
    pub fn from_text(text: String) -> Frame {
        Frame(Bytes::from(text))
    }

    /// `{"type":"pong","id":..,"payload":{}}`: the answer to a `ping` (`id` only when the
    /// ping had one).
    pub fn pong(id: Option<&RequestId>) -> Frame {
        server_frame(protocol::PONG, id, &serde_json::Map::new())
    }

    /// This frame (a JSON object) with `"stream":..,"offset":..,"epoch":..` added at its end:
    /// a publication as it goes out in `stream` at `position`. A splice into one new
    /// buffer, not a re-serialisation. A frame that is not a JSON object (never, for an
    /// encoded envelope) is returned unchanged.
    pub fn with_position(&self, stream: &StreamName, position: &Position) -> Frame {
        let text = self.as_str().trim_end();
        let Some(body) = text.strip_suffix('}') else {
            return self.clone();
        };
        let empty = body.trim_end().ends_with('{');
        let stream_len = match stream {
            StreamName::Broadcast => 9,
            StreamName::User(user) => 5 + user.as_str().len(),
            StreamName::Role(role) => 5 + role.as_str().len(),
            StreamName::Topic(topic) => 6 + topic.as_str().len(),
        };
        // `,"stream":"","offset":<at most 20 digits>,"epoch":""}` is at most 54 bytes.
        let capacity = body.len() + 54 + stream_len + position.epoch.as_str().len();
        let mut out = String::with_capacity(capacity);
        out.push_str(body);
        out.push_str(if empty { "\"stream\":\"" } else { ",\"stream\":\"" });
        // Writing to a `String` cannot fail.
        let _ = write!(JsonEscaped(&mut out), "{stream}");
        let _ = write!(out, "\",\"offset\":{},\"epoch\":\"", position.offset);
        // An epoch is ASCII letters and digits: nothing to escape.
        out.push_str(position.epoch.as_str());
        out.push_str("\"}");
        Frame::from_text(out)
    }

    /// The frame as text.
    pub fn as_str(&self) -> &str {
        // Valid by construction: every constructor takes UTF-8.
        std::str::from_utf8(&self.0).unwrap_or_default()
    }

    /// The shared bytes (valid UTF-8).
    pub fn as_bytes(&self) -> &Bytes {
        &self.0
    }

    /// The shared bytes (valid UTF-8), without copying.
    pub fn into_bytes(self) -> Bytes {
        self.0
    }

    /// Length in bytes.
    pub fn len(&self) -> usize {
        self.0.len()
    }

    /// Whether the frame is empty (never, for an encoded envelope).
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

impl fmt::Debug for Frame {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_tuple("Frame").field(&self.as_str()).finish()
    }
}

/// Writes into a `String` as the inside of a JSON string literal.
struct JsonEscaped<'a>(&'a mut String);

impl fmt::Write for JsonEscaped<'_> {
    fn write_str(&mut self, s: &str) -> fmt::Result {
        for c in s.chars() {
            match c {
                '"' => self.0.push_str("\\\""),
                '\\' => self.0.push_str("\\\\"),
                c if u32::from(c) < 0x20 => write!(self.0, "\\u{:04x}", u32::from(c))?,
                c => self.0.push(c),
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::stream::Epoch;
    use serde_json::json;

    #[test]
    fn encodes_the_wire_form_once_and_shares_it() {
        let env = Envelope::from_parts("notification", json!({"message": "hi"}))
            .unwrap_or_else(|e| panic!("{e}"));
        let frame = Frame::encode(&env);
        assert_eq!(frame.as_str(), r#"{"type":"notification","payload":{"message":"hi"}}"#);
        let copy = frame.clone();
        // Same allocation: a clone shares the bytes.
        assert_eq!(copy.as_bytes().as_ptr(), frame.as_bytes().as_ptr());
    }

    #[test]
    fn a_reply_carries_the_request_id_and_is_otherwise_the_encoded_envelope() {
        let env = Envelope::from_parts("demo.ack", json!({"action": "notify", "n": [1, "}"]}))
            .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(Frame::encode_reply(&env, None), Frame::encode(&env));
        for (id, text) in [(json!(7), "7"), (json!("r\"1"), r#""r\"1""#), (json!(-1.5), "-1.5")] {
            let id = RequestId::from_json(&id).unwrap_or_else(|e| panic!("{e}"));
            let reply = Frame::encode_reply(&env, Some(&id));
            assert_eq!(
                reply.as_str(),
                format!(
                    r#"{{"type":"demo.ack","id":{text},"payload":{{"action":"notify","n":[1,"}}"]}}}}"#
                )
            );
            let value: serde_json::Value =
                serde_json::from_str(reply.as_str()).unwrap_or_else(|e| panic!("{e}"));
            assert_eq!(value["payload"], json!({"action": "notify", "n": [1, "}"]}));
        }
    }

    #[test]
    fn with_position_appends_stream_offset_and_epoch() {
        let env =
            Envelope::from_parts("chat", json!({"text": "}\"{"})).unwrap_or_else(|e| panic!("{e}"));
        let stream = StreamName::parse("user:alice").unwrap_or_else(|e| panic!("{e}"));
        let position = Position {
            epoch: Epoch::new("hD3kQz9a").unwrap_or_else(|e| panic!("{e}")),
            offset: 18,
        };
        let framed = Frame::encode(&env).with_position(&stream, &position);
        assert_eq!(
            framed.as_str(),
            r#"{"type":"chat","payload":{"text":"}\"{"},"stream":"user:alice","offset":18,"epoch":"hD3kQz9a"}"#
        );
        let value: serde_json::Value =
            serde_json::from_str(framed.as_str()).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(
            value,
            json!({"type":"chat","payload":{"text":"}\"{"},"stream":"user:alice","offset":18,"epoch":"hD3kQz9a"})
        );
        let max = Position { offset: u64::MAX, ..position.clone() };
        let broadcast = Frame::encode(&env).with_position(&StreamName::Broadcast, &max);
        let value: serde_json::Value =
            serde_json::from_str(broadcast.as_str()).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(
            (value["stream"].as_str(), value["offset"].as_u64()),
            (Some("broadcast"), Some(u64::MAX))
        );
        // An empty object gets no leading comma; a non-object is left alone.
        let empty = Frame::from_text("{}".into()).with_position(&stream, &position);
        assert_eq!(empty.as_str(), r#"{"stream":"user:alice","offset":18,"epoch":"hD3kQz9a"}"#);
        let odd = Frame::from_text("[1]".into());
        assert_eq!(odd.with_position(&stream, &position), odd);
    }

    #[test]
    fn json_escaping() {
        let mut out = String::new();
        let _ = write!(JsonEscaped(&mut out), "a\"b\\c\nd\u{1}é");
        assert_eq!(out, r#"a\"b\\c\u000ad\u0001é"#);
        let parsed: String =
            serde_json::from_str(&format!("\"{out}\"")).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(parsed, "a\"b\\c\nd\u{1}é");
    }
}
