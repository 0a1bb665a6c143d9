//! A raw WebSocket client for protocol-violation tests: a real upgrade on a plain
//! `TcpStream`, then hand-made frame bytes (bad opcodes, reserved bits, unmasked or broken
//! frames) that a real client library refuses to send, and a reader of the server's frames.
//!
//! Every wait is bounded by [`WAIT`]; a helper that fails panics with what went wrong.
//!
//! permessage-deflate (RFC 7692) on the client's side, for the server's compression tests:
//! [`RawWs::upgrade_with`] sends extra headers (an extension offer) and returns the response
//! head; [`ServerFrame::rsv1`] tells a compressed frame; [`deflate`] and [`inflate`] are the
//! client's codec, flate2's raw deflate, independent of the server's code.

use std::net::SocketAddr;

use realtime_core::ConnectionId;
use serde_json::Value;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::WAIT;

/// Opcode of a text frame.
pub const TEXT: u8 = 0x1;
/// Opcode of a continuation frame.
pub const CONTINUATION: u8 = 0x0;
/// Opcode of a close frame.
pub const CLOSE: u8 = 0x8;
/// Opcode of a ping frame.
pub const PING: u8 = 0x9;

/// One frame as the client writes it: every header bit is the caller's choice.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RawFrame {
    /// The FIN bit.
    pub fin: bool,
    /// The three reserved bits (RSV1 is `0b100`).
    pub rsv: u8,
    /// The 4-bit opcode.
    pub opcode: u8,
    /// Whether the payload is masked (RFC 6455 requires it from clients).
    pub masked: bool,
    /// The payload, unmasked.
    pub payload: Vec<u8>,
}

impl RawFrame {
    /// A final, masked frame with no reserved bits.
    pub fn new(opcode: u8, payload: impl Into<Vec<u8>>) -> Self {
        RawFrame { fin: true, rsv: 0, opcode, masked: true, payload: payload.into() }
    }

    /// The frame's bytes on the wire (mask key `[1, 2, 3, 4]` when masked).
    pub fn encode(&self) -> Vec<u8> {
        let mut out = vec![(u8::from(self.fin) << 7) | ((self.rsv & 0b111) << 4) | self.opcode];
        let mask_bit = if self.masked { 0x80 } else { 0 };
        let len = self.payload.len();
        match u16::try_from(len) {
            Ok(short) if short < 126 => out.push(mask_bit | short as u8),
            Ok(medium) => {
                out.push(mask_bit | 126);
                out.extend_from_slice(&medium.to_be_bytes());
            }
            Err(_) => {
                out.push(mask_bit | 127);
                out.extend_from_slice(&(len as u64).to_be_bytes());
            }
        }
        if self.masked {
            let key = [1u8, 2, 3, 4];
            out.extend_from_slice(&key);
            out.extend(self.payload.iter().enumerate().map(|(i, b)| b ^ key[i % 4]));
        } else {
            out.extend_from_slice(&self.payload);
        }
        out
    }
}

/// A frame the server sent: its opcode and payload (server frames are never masked).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServerFrame {
    /// The 4-bit opcode.
    pub opcode: u8,
    /// RSV1: with permessage-deflate, the payload is compressed ([`inflate`] it).
    pub rsv1: bool,
    /// The payload.
    pub payload: Vec<u8>,
}

impl ServerFrame {
    /// The code and reason of a close frame; `None` for another frame or an empty close.
    pub fn close(&self) -> Option<(u16, String)> {
        if self.opcode != CLOSE || self.payload.len() < 2 {
            return None;
        }
        let code = u16::from_be_bytes([self.payload[0], self.payload[1]]);
        Some((code, String::from_utf8_lossy(&self.payload[2..]).into_owned()))
    }
}

/// A client socket after a completed upgrade, with what was read past the response head.
#[derive(Debug)]
pub struct RawWs {
    /// The TCP stream.
    pub stream: TcpStream,
    buffer: Vec<u8>,
}

impl RawWs {
    /// Upgrades `ws://{addr}{path_and_query}` by hand and checks for 101.
    ///
    /// # Panics
    /// When the connection fails, the answer is not 101, or nothing comes within [`WAIT`].
    pub async fn upgrade(addr: SocketAddr, path_and_query: &str) -> RawWs {
        RawWs::upgrade_with(addr, path_and_query, &[]).await.0
    }

    /// As [`upgrade`](Self::upgrade), with `headers` added to the request; returns the
    /// response head (status line and headers) too.
    ///
    /// # Panics
    /// As [`upgrade`](Self::upgrade).
    pub async fn upgrade_with(
        addr: SocketAddr,
        path_and_query: &str,
        headers: &[(&str, &str)],
    ) -> (RawWs, String) {
        let extra: String =
            headers.iter().map(|(name, value)| format!("{name}: {value}\r\n")).collect();
        let request = format!(
            "GET {path_and_query} HTTP/1.1\r\nHost: {addr}\r\nConnection: Upgrade\r\n\
             Upgrade: websocket\r\nSec-WebSocket-Version: 13\r\n\
             Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n{extra}\r\n"
        );
        let exchange = async {
            let mut stream = TcpStream::connect(addr).await.unwrap_or_else(|e| panic!("{e}"));
            stream.write_all(request.as_bytes()).await.unwrap_or_else(|e| panic!("{e}"));
            let (head, buffer) = crate::http::read_head(&mut stream).await;
            assert!(head.starts_with("HTTP/1.1 101"), "upgrade refused: {head}");
            (RawWs { stream, buffer }, head)
        };
        tokio::time::timeout(WAIT, exchange).await.unwrap_or_else(|_| panic!("upgrade timed out"))
    }

    /// Upgrades with `?token=…` and reads the `connected` frame; returns the socket and the
    /// announced connection id.
    ///
    /// # Panics
    /// As [`upgrade`](Self::upgrade), and when the first frame is not `connected`.
    pub async fn connect(addr: SocketAddr, token: &str) -> (RawWs, ConnectionId) {
        let mut ws = RawWs::upgrade(addr, &format!("/ws?token={token}")).await;
        let frame = ws.next_frame().await.unwrap_or_else(|| panic!("no connected frame"));
        assert_eq!(frame.opcode, TEXT, "{frame:?}");
        let hello: Value = serde_json::from_slice(&frame.payload).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(hello["type"], "connected", "{hello}");
        let id = hello["payload"]["connection_id"].as_str().unwrap_or_else(|| panic!("{hello}"));
        (ws, ConnectionId::parse(id).unwrap_or_else(|e| panic!("{e}")))
    }

    /// Writes `bytes` as they are.
    ///
    /// # Panics
    /// When the write fails.
    pub async fn write(&mut self, bytes: &[u8]) {
        self.stream.write_all(bytes).await.unwrap_or_else(|e| panic!("write failed: {e}"));
    }

    /// The next frame from the server; `None` when the stream ends (or is reset) first.
    ///
    /// # Panics
    /// When nothing comes within [`WAIT`].
    pub async fn next_frame(&mut self) -> Option<ServerFrame> {
        tokio::time::timeout(WAIT, self.read_frame())
            .await
            .unwrap_or_else(|_| panic!("no frame in time"))
    }

    /// Reads frames until a close frame and returns its code and reason; `None` when the
    /// stream ends without one (the server dropped the TCP connection).
    ///
    /// # Panics
    /// When nothing comes within [`WAIT`].
    pub async fn expect_close(&mut self) -> Option<(u16, String)> {
        loop {
            let frame = self.next_frame().await?;
            if frame.opcode == CLOSE {
                return Some(frame.close().unwrap_or((1005, String::new())));
            }
        }
    }

    async fn read_frame(&mut self) -> Option<ServerFrame> {
        loop {
            if let Some((frame, used)) = parse_server_frame(&self.buffer) {
                self.buffer.drain(..used);
                return Some(frame);
            }
            let mut chunk = [0u8; 4096];
            match self.stream.read(&mut chunk).await {
                Ok(0) | Err(_) => return None,
                Ok(read) => self.buffer.extend_from_slice(&chunk[..read]),
            }
        }
    }
}

/// What a sync flush ends deflated data with, and permessage-deflate leaves off the wire.
const DEFLATE_TAIL: [u8; 4] = [0x00, 0x00, 0xff, 0xff];

/// `payload` compressed as a permessage-deflate client sends a message: raw deflate, a fresh
/// context, a sync flush, the 4-byte tail left off.
///
/// # Panics
/// When flate2 fails (it does not on a buffer this large).
pub fn deflate(payload: &[u8]) -> Vec<u8> {
    use flate2::{Compress, Compression, FlushCompress};
    let mut compress = Compress::new(Compression::default(), false);
    let mut out = Vec::with_capacity(payload.len() + 1024);
    compress
        .compress_vec(payload, &mut out, FlushCompress::Sync)
        .unwrap_or_else(|e| panic!("deflate: {e}"));
    assert!(out.ends_with(&DEFLATE_TAIL), "sync flush incomplete");
    out.truncate(out.len() - DEFLATE_TAIL.len());
    out
}

/// A compressed message's payload inflated (the tail put back first).
///
/// # Panics
/// When it does not inflate.
pub fn inflate(payload: &[u8]) -> Vec<u8> {
    use std::io::Read;
    let mut data = payload.to_vec();
    data.extend_from_slice(&DEFLATE_TAIL);
    let mut out = Vec::new();
    // A sync-flushed stream has no end block: flate2's reader decodes everything, then
    // reports the missing end as `UnexpectedEof` (an empty message would need the end block).
    let mut reader = flate2::read::DeflateDecoder::new(data.as_slice());
    match reader.read_to_end(&mut out) {
        Ok(_) => out,
        Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof && !out.is_empty() => out,
        Err(e) => panic!("inflate: {e}"),
    }
}

/// One unmasked frame from the front of `data` and how many bytes it took.
fn parse_server_frame(data: &[u8]) -> Option<(ServerFrame, usize)> {
    let (&b0, &b1) = (data.first()?, data.get(1)?);
    let (len, mut at) = match b1 & 0x7f {
        126 => (usize::from(u16::from_be_bytes([*data.get(2)?, *data.get(3)?])), 4),
        127 => {
            let bytes: [u8; 8] = data.get(2..10)?.try_into().ok()?;
            (usize::try_from(u64::from_be_bytes(bytes)).ok()?, 10)
        }
        short => (usize::from(short), 2),
    };
    let mask = if b1 & 0x80 != 0 {
        let key: [u8; 4] = data.get(at..at + 4)?.try_into().ok()?;
        at += 4;
        Some(key)
    } else {
        None
    };
    let mut payload = data.get(at..at + len)?.to_vec();
    if let Some(key) = mask {
        payload.iter_mut().enumerate().for_each(|(i, b)| *b ^= key[i % 4]);
    }
    Some((ServerFrame { opcode: b0 & 0x0f, rsv1: b0 & 0x40 != 0, payload }, at + len))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frames_encode_and_parse_back() {
        for len in [0usize, 5, 125, 126, 300, 70_000] {
            let frame = RawFrame { masked: false, ..RawFrame::new(TEXT, vec![b'a'; len]) };
            let bytes = frame.encode();
            let (parsed, used) =
                parse_server_frame(&bytes).unwrap_or_else(|| panic!("{len}: no frame"));
            assert_eq!(used, bytes.len(), "{len}");
            assert_eq!(
                parsed,
                ServerFrame { opcode: TEXT, rsv1: false, payload: vec![b'a'; len] },
                "{len}"
            );
            assert!(parse_server_frame(&bytes[..bytes.len() - 1]).is_none() || len == 0);
        }
        let masked = RawFrame::new(CLOSE, [0x03, 0xe8, b'o', b'k']).encode();
        assert_eq!(masked[1], 0x80 | 4);
        let (parsed, _) = parse_server_frame(&masked).unwrap_or_else(|| panic!("no frame"));
        assert_eq!(parsed.close(), Some((1000, "ok".to_owned())));
        let odd = RawFrame { fin: false, rsv: 0b100, ..RawFrame::new(PING, []) }.encode();
        assert_eq!(odd[0], 0x40 | PING);
        let text = "abc".repeat(100);
        let packed = deflate(text.as_bytes());
        assert!(packed.len() < 50, "{}", packed.len());
        assert_eq!(inflate(&packed), text.as_bytes());
        let mut compressed = RawFrame { masked: false, ..RawFrame::new(TEXT, packed) }.encode();
        compressed[0] |= 0x40;
        let (parsed, _) = parse_server_frame(&compressed).unwrap_or_else(|| panic!("no frame"));
        assert!(parsed.rsv1);
    }
}
