//! [`Frame`]: an envelope serialised once to wire bytes, shared by every recipient.

use std::fmt;

use bytes::Bytes;

use crate::envelope::Envelope;

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

    /// A frame from text the caller already holds.
    pub fn from_text(text: String) -> Frame {
        Frame(Bytes::from(text))
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

#[cfg(test)]
mod tests {
    use super::*;
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
}
