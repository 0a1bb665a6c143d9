//! The WebSocket framing (RFC 6455) of the server side, pure: no I/O, no clock.
//!
//! - Writing: [`Header`] builds the header of a final, unmasked server frame on the stack,
//!   so that a publication's shared bytes go to every socket behind a 2-to-10-byte header
//!   (one vectored write), never copied per recipient; [`encode`] and [`close_frame`] build
//!   whole control frames.
//! - Reading: [`Decoder`] turns the client's bytes into whole messages. It keeps bytes only
//!   while a frame or a fragmented message is incomplete (an idle connection holds no
//!   buffer) and enforces what tungstenite's server does: masked client frames, no reserved
//!   bits (but RSV1 on the first frame of a compressed message, where permessage-deflate was
//!   agreed: it is inflated within the size limit) or opcodes, control frames final and at
//!   most 125 bytes, continuation rules, the
//!   size limit decided from the header before any payload is kept (1009), UTF-8 text and
//!   close reasons (1007), allowed close codes (1002 otherwise).

use std::collections::VecDeque;

use bytes::Bytes;

/// Frame opcodes.
pub(crate) mod opcode {
    pub(crate) const CONTINUATION: u8 = 0x0;
    pub(crate) const TEXT: u8 = 0x1;
    pub(crate) const BINARY: u8 = 0x2;
    pub(crate) const CLOSE: u8 = 0x8;
    pub(crate) const PING: u8 = 0x9;
    pub(crate) const PONG: u8 = 0xA;
}

/// The reserved bit permessage-deflate gives the first frame of a compressed message.
const RSV1: u8 = 0x40;

/// Largest payload of a control frame.
const MAX_CONTROL_PAYLOAD: usize = 125;

/// The header of a final, unmasked server frame (2, 4 or 10 bytes), built on the stack.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Header {
    bytes: [u8; 10],
    len: u8,
}

impl Header {
    /// No header at all (for a whole frame written as it is).
    pub(crate) const EMPTY: Header = Header { bytes: [0; 10], len: 0 };

    pub(crate) fn new(opcode: u8, payload_len: usize) -> Header {
        Header::with_first_byte(0x80 | (opcode & 0x0F), payload_len)
    }

    /// The header of a text frame whose payload is compressed (permessage-deflate: RSV1 set).
    pub(crate) fn deflated(payload_len: usize) -> Header {
        Header::with_first_byte(0x80 | RSV1 | opcode::TEXT, payload_len)
    }

    fn with_first_byte(first: u8, payload_len: usize) -> Header {
        let mut bytes = [0u8; 10];
        bytes[0] = first;
        let len = if payload_len < 126 {
            bytes[1] = payload_len as u8;
            2
        } else if let Ok(short) = u16::try_from(payload_len) {
            bytes[1] = 126;
            bytes[2..4].copy_from_slice(&short.to_be_bytes());
            4
        } else {
            bytes[1] = 127;
            bytes[2..10].copy_from_slice(&(payload_len as u64).to_be_bytes());
            10
        };
        Header { bytes, len }
    }

    pub(crate) fn as_bytes(&self) -> &[u8] {
        &self.bytes[..usize::from(self.len)]
    }
}

/// A whole final unmasked server frame (header and payload) in one buffer.
pub(crate) fn encode(opcode: u8, payload: &[u8]) -> Bytes {
    let header = Header::new(opcode, payload.len());
    let mut frame = Vec::with_capacity(header.as_bytes().len() + payload.len());
    frame.extend_from_slice(header.as_bytes());
    frame.extend_from_slice(payload);
    Bytes::from(frame)
}

/// A close frame: the code, then the reason cut at a char boundary so that the payload is at
/// most 125 bytes.
pub(crate) fn close_frame(code: u16, reason: &str) -> Bytes {
    let mut end = reason.len().min(MAX_CONTROL_PAYLOAD - 2);
    while !reason.is_char_boundary(end) {
        end -= 1;
    }
    let mut payload = Vec::with_capacity(2 + end);
    payload.extend_from_slice(&code.to_be_bytes());
    payload.extend_from_slice(&reason.as_bytes()[..end]);
    encode(opcode::CLOSE, &payload)
}

/// One complete client message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Incoming {
    Text(String),
    /// A binary message (refused by the server; its bytes are not kept).
    Binary,
    Ping(Vec<u8>),
    Pong,
    /// A close frame, with its code and reason if it had a code.
    Close(Option<(u16, String)>),
}

/// Why the client's byte stream cannot be read any further.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum ReadFault {
    /// A violation of RFC 6455 (close code 1002).
    Protocol(&'static str),
    /// A frame or message over the size limit (1009).
    TooBig,
    /// A text message or close reason that is not UTF-8 (1007).
    InvalidUtf8,
}

/// A message whose first fragments arrived.
#[derive(Debug)]
struct Fragmented {
    text: bool,
    /// Compressed (permessage-deflate): `data` is inflated when the message is complete.
    compressed: bool,
    /// The text so far (a binary message's bytes are counted, not kept).
    data: Vec<u8>,
    len: usize,
}

/// The client-to-server frame decoder of one connection.
#[derive(Debug)]
pub(crate) struct Decoder {
    /// At most 64 MiB (the config's range), so 4 bytes: every connection has a decoder.
    max_message: u32,
    /// Whether permessage-deflate was negotiated: a message's first frame may have RSV1 set
    /// (its payload is compressed).
    inflate: bool,
    /// Set by [`Decoder::discard_messages`]: data messages are skipped, not inflated or
    /// checked (a closing connection waits only for the close frame).
    discard: bool,
    /// Input not consumed yet (an incomplete frame, or frames beyond the caller's room).
    kept: Vec<u8>,
    /// Boxed: only a connection in the middle of a fragmented message needs it.
    fragmented: Option<Box<Fragmented>>,
    /// Set after a close frame: nothing more is decoded.
    closed: bool,
    /// Boxed: every connection has a decoder, only a failed one a fault.
    fault: Option<Box<ReadFault>>,
}

/// A parsed frame header.
struct FrameHeader {
    fin: bool,
    /// RSV1: a compressed message (valid only where permessage-deflate allows it).
    rsv1: bool,
    opcode: u8,
    mask: [u8; 4],
    header_len: usize,
    payload_len: usize,
}

impl Decoder {
    /// A decoder for messages of at most `max_message` bytes (inflated, when compressed)
    /// that takes compressed messages when `inflate` (permessage-deflate was negotiated);
    /// allocates nothing.
    pub(crate) fn new(max_message: usize, inflate: bool) -> Decoder {
        let max_message = u32::try_from(max_message).unwrap_or(u32::MAX);
        Decoder {
            max_message,
            inflate,
            discard: false,
            kept: Vec::new(),
            fragmented: None,
            closed: false,
            fault: None,
        }
    }

    /// Decodes what was kept from earlier calls followed by `input`, appending at most `room`
    /// messages to `out`; what is not consumed is kept for the next call (which may pass an
    /// empty `input`). An error is final. After a close frame nothing more is decoded.
    pub(crate) fn decode(
        &mut self,
        input: &[u8],
        room: usize,
        out: &mut VecDeque<Incoming>,
    ) -> Result<(), ReadFault> {
        if let Some(fault) = self.fault.as_deref() {
            return Err(*fault);
        }
        if self.closed {
            self.kept = Vec::new();
            return Ok(());
        }
        let result = if self.kept.is_empty() {
            let consumed = self.decode_from(input, room, out);
            consumed.map(|consumed| {
                if consumed < input.len() && !self.closed {
                    self.kept = input[consumed..].to_vec();
                }
            })
        } else {
            let mut kept = std::mem::take(&mut self.kept);
            kept.extend_from_slice(input);
            self.decode_from(&kept, room, out).map(|consumed| {
                if consumed < kept.len() && !self.closed {
                    kept.drain(..consumed);
                    kept.shrink_to_fit();
                    self.kept = kept;
                }
            })
        };
        if let Err(fault) = result {
            self.fault = Some(Box::new(fault));
            self.kept = Vec::new();
            self.fragmented = None;
        }
        result
    }

    /// From now on, data messages come out as [`Incoming::Binary`], whatever they hold:
    /// neither inflated nor checked for UTF-8 (the frame rules still apply). For a closing
    /// connection, which reads only to see the client's close frame.
    pub(crate) fn discard_messages(&mut self) {
        self.discard = true;
    }

    #[cfg(test)]
    /// Bytes kept between calls (unconsumed input and a fragmented message's data so far).
    pub(crate) fn buffered(&self) -> usize {
        self.kept.len() + self.fragmented.as_ref().map_or(0, |f| f.data.len())
    }

    fn max_message(&self) -> usize {
        self.max_message as usize
    }

    /// Whether a complete frame may be waiting in what is kept.
    pub(crate) fn has_pending(&self) -> bool {
        self.fault.is_none()
            && !self.closed
            && Self::header(&self.kept)
                .ok()
                .flatten()
                .is_some_and(|h| self.kept.len() >= h.header_len + h.payload_len)
    }

    #[cfg(test)]
    /// Heap bytes held; 0 whenever nothing is kept.
    pub(crate) fn heap_bytes(&self) -> usize {
        self.kept.capacity() + self.fragmented.as_ref().map_or(0, |f| f.data.capacity())
    }

    /// Decodes frames from `input` while there is room; returns the bytes consumed.
    fn decode_from(
        &mut self,
        input: &[u8],
        room: usize,
        out: &mut VecDeque<Incoming>,
    ) -> Result<usize, ReadFault> {
        let mut at = 0;
        let mut produced = 0;
        while produced < room && !self.closed {
            let rest = &input[at..];
            let Some(header) = Self::header(rest)? else { break };
            self.check(&header)?;
            let end = header.header_len + header.payload_len;
            if rest.len() < end {
                break;
            }
            let payload = &rest[header.header_len..end];
            at += end;
            if let Some(message) = self.frame(&header, payload)? {
                out.push_back(message);
                produced += 1;
            }
        }
        Ok(at)
    }

    /// The header at the start of `input`; `None` while incomplete.
    fn header(input: &[u8]) -> Result<Option<FrameHeader>, ReadFault> {
        let [first, second, ..] = *input else { return Ok(None) };
        // RSV1 is decided in `check`, which knows whether permessage-deflate was negotiated.
        if first & 0x30 != 0 {
            return Err(ReadFault::Protocol("reserved bits set"));
        }
        if second & 0x80 == 0 {
            return Err(ReadFault::Protocol("unmasked client frame"));
        }
        let (length_len, payload_len) = match second & 0x7F {
            126 => {
                let Some(bytes) = input.get(2..4) else { return Ok(None) };
                (2, usize::from(u16::from_be_bytes([bytes[0], bytes[1]])))
            }
            127 => {
                let Some(bytes) = input.get(2..10) else { return Ok(None) };
                let mut raw = [0u8; 8];
                raw.copy_from_slice(bytes);
                let len = u64::from_be_bytes(raw);
                if len >> 63 != 0 {
                    return Err(ReadFault::Protocol("frame length with its top bit set"));
                }
                (8, usize::try_from(len).unwrap_or(usize::MAX))
            }
            short => (0, usize::from(short)),
        };
        let header_len = 2 + length_len + 4;
        let Some(mask) = input.get(2 + length_len..header_len) else { return Ok(None) };
        Ok(Some(FrameHeader {
            fin: first & 0x80 != 0,
            rsv1: first & RSV1 != 0,
            opcode: first & 0x0F,
            mask: [mask[0], mask[1], mask[2], mask[3]],
            header_len,
            payload_len,
        }))
    }

    /// What the header alone decides: opcodes, control frame rules, continuation, size.
    fn check(&self, header: &FrameHeader) -> Result<(), ReadFault> {
        // RSV1 only on the first frame of a data message, and only with permessage-deflate.
        let first_data = matches!(header.opcode, opcode::TEXT | opcode::BINARY);
        if header.rsv1 && !(self.inflate && first_data) {
            return Err(ReadFault::Protocol("reserved bits set"));
        }
        match header.opcode {
            opcode::CLOSE | opcode::PING | opcode::PONG => {
                if !header.fin {
                    return Err(ReadFault::Protocol("fragmented control frame"));
                }
                if header.payload_len > MAX_CONTROL_PAYLOAD {
                    return Err(ReadFault::Protocol("control frame over 125 bytes"));
                }
            }
            opcode::CONTINUATION => {
                let Some(fragmented) = &self.fragmented else {
                    return Err(ReadFault::Protocol("continuation with no message started"));
                };
                if fragmented.len.saturating_add(header.payload_len) > self.max_message() {
                    return Err(ReadFault::TooBig);
                }
            }
            opcode::TEXT | opcode::BINARY => {
                if self.fragmented.is_some() {
                    return Err(ReadFault::Protocol("new message inside a fragmented one"));
                }
                if header.payload_len > self.max_message() {
                    return Err(ReadFault::TooBig);
                }
            }
            _ => return Err(ReadFault::Protocol("reserved opcode")),
        }
        Ok(())
    }

    /// Handles one complete frame; returns the message it completes, if any.
    fn frame(
        &mut self,
        header: &FrameHeader,
        payload: &[u8],
    ) -> Result<Option<Incoming>, ReadFault> {
        match header.opcode {
            opcode::PING => Ok(Some(Incoming::Ping(unmasked(payload, header.mask)))),
            opcode::PONG => Ok(Some(Incoming::Pong)),
            opcode::CLOSE => {
                self.closed = true;
                self.kept = Vec::new();
                self.fragmented = None;
                let payload = unmasked(payload, header.mask);
                match payload.as_slice() {
                    [] => Ok(Some(Incoming::Close(None))),
                    [_] => Err(ReadFault::Protocol("close frame of one byte")),
                    [high, low, reason @ ..] => {
                        let code = u16::from_be_bytes([*high, *low]);
                        if !close_code_allowed(code) {
                            return Err(ReadFault::Protocol("close code not allowed"));
                        }
                        let Ok(reason) = std::str::from_utf8(reason) else {
                            return Err(ReadFault::InvalidUtf8);
                        };
                        Ok(Some(Incoming::Close(Some((code, reason.to_owned())))))
                    }
                }
            }
            opcode::TEXT | opcode::BINARY => {
                let text = header.opcode == opcode::TEXT && !self.discard;
                if header.fin {
                    return Ok(Some(if text {
                        Incoming::Text(self.text(unmasked(payload, header.mask), header.rsv1)?)
                    } else {
                        Incoming::Binary
                    }));
                }
                let data = if text { unmasked(payload, header.mask) } else { Vec::new() };
                self.fragmented = Some(Box::new(Fragmented {
                    text,
                    compressed: header.rsv1,
                    data,
                    len: payload.len(),
                }));
                Ok(None)
            }
            // CONTINUATION: `check` made sure a message is in progress.
            _ => {
                let Some(fragmented) = self.fragmented.as_mut() else {
                    return Err(ReadFault::Protocol("continuation with no message started"));
                };
                fragmented.len += payload.len();
                if self.discard {
                    // A message begun before the discard is dropped with its bytes so far.
                    fragmented.text = false;
                    fragmented.data = Vec::new();
                }
                if fragmented.text {
                    let start = fragmented.data.len();
                    fragmented.data.extend_from_slice(payload);
                    unmask(&mut fragmented.data[start..], header.mask);
                }
                if !header.fin {
                    return Ok(None);
                }
                let Some(done) = self.fragmented.take() else { return Ok(None) };
                Ok(Some(if done.text {
                    Incoming::Text(self.text(done.data, done.compressed)?)
                } else {
                    Incoming::Binary
                }))
            }
        }
    }

    /// A complete text message's payload as text, inflated first when `compressed`.
    fn text(&self, data: Vec<u8>, compressed: bool) -> Result<String, ReadFault> {
        let data =
            if compressed { crate::deflate::inflate(data, self.max_message())? } else { data };
        utf8(data)
    }
}

/// Whether a close code may be sent by a peer (RFC 6455 7.4 and the IANA registry).
fn close_code_allowed(code: u16) -> bool {
    matches!(code, 1000..=1003 | 1007..=1014 | 3000..=4999)
}

fn utf8(bytes: Vec<u8>) -> Result<String, ReadFault> {
    String::from_utf8(bytes).map_err(|_| ReadFault::InvalidUtf8)
}

fn unmasked(payload: &[u8], mask: [u8; 4]) -> Vec<u8> {
    let mut data = payload.to_vec();
    unmask(&mut data, mask);
    data
}

/// XORs `data` with the mask, 8 bytes at a time where it can.
fn unmask(data: &mut [u8], mask: [u8; 4]) {
    let wide = u64::from_ne_bytes([
        mask[0], mask[1], mask[2], mask[3], mask[0], mask[1], mask[2], mask[3],
    ]);
    let mut chunks = data.chunks_exact_mut(8);
    for chunk in &mut chunks {
        let mut word = [0u8; 8];
        word.copy_from_slice(chunk);
        chunk.copy_from_slice(&(u64::from_ne_bytes(word) ^ wide).to_ne_bytes());
    }
    for (index, byte) in chunks.into_remainder().iter_mut().enumerate() {
        *byte ^= mask[index % 4];
    }
}

#[cfg(test)]
mod tests {
    use realtime_testkit::raw_ws::RawFrame;

    use super::*;

    fn frame(opcode: u8, payload: &[u8]) -> Vec<u8> {
        RawFrame::new(opcode, payload.to_vec()).encode()
    }

    fn decode_all(input: &[u8], max: usize) -> Result<Vec<Incoming>, ReadFault> {
        let mut decoder = Decoder::new(max, false);
        let mut out = VecDeque::new();
        decoder.decode(input, usize::MAX, &mut out)?;
        Ok(out.into_iter().collect())
    }

    fn text(s: &str) -> Incoming {
        Incoming::Text(s.to_owned())
    }

    #[test]
    fn headers_use_the_shortest_length_encoding() {
        for (len, expected) in [
            (0usize, vec![0x81, 0]),
            (125, vec![0x81, 125]),
            (126, vec![0x81, 126, 0, 126]),
            (65_535, vec![0x81, 126, 0xff, 0xff]),
            (65_536, vec![0x81, 127, 0, 0, 0, 0, 0, 1, 0, 0]),
        ] {
            assert_eq!(Header::new(opcode::TEXT, len).as_bytes(), expected.as_slice(), "{len}");
        }
        assert!(Header::EMPTY.as_bytes().is_empty());
        assert_eq!(encode(opcode::PONG, b"ab").as_ref(), &[0x8A, 2, b'a', b'b']);
    }

    #[test]
    fn close_reasons_are_cut_at_a_char_boundary() {
        let reason = "é".repeat(100);
        let frame = close_frame(4003, &reason);
        let payload = &frame[2..];
        assert!(payload.len() <= 125, "{}", payload.len());
        assert_eq!(&payload[..2], &4003u16.to_be_bytes());
        assert!(std::str::from_utf8(&payload[2..]).is_ok());
        assert_eq!(close_frame(1000, "bye").as_ref(), &[0x88, 5, 0x03, 0xe8, b'b', b'y', b'e']);
    }

    #[test]
    fn messages_of_every_length_encoding_decode() {
        for len in [0usize, 125, 126, 65_535, 65_536] {
            let body = "x".repeat(len);
            assert_eq!(
                decode_all(&frame(opcode::TEXT, body.as_bytes()), 1 << 20),
                Ok(vec![text(&body)])
            );
        }
    }

    #[test]
    fn every_violation_is_refused() {
        let cases: Vec<(&str, Vec<u8>, ReadFault)> = vec![
            (
                "rsv",
                RawFrame { rsv: 0b100, ..RawFrame::new(opcode::TEXT, *b"{}") }.encode(),
                ReadFault::Protocol("reserved bits set"),
            ),
            (
                "unmasked",
                RawFrame { masked: false, ..RawFrame::new(opcode::TEXT, *b"{}") }.encode(),
                ReadFault::Protocol("unmasked client frame"),
            ),
            ("opcode 3", frame(0x3, b""), ReadFault::Protocol("reserved opcode")),
            ("opcode 0xb", frame(0xb, b""), ReadFault::Protocol("reserved opcode")),
            (
                "fragmented ping",
                RawFrame { fin: false, ..RawFrame::new(opcode::PING, []) }.encode(),
                ReadFault::Protocol("fragmented control frame"),
            ),
            (
                "big ping",
                frame(opcode::PING, &[0; 126]),
                ReadFault::Protocol("control frame over 125 bytes"),
            ),
            (
                "lone continuation",
                frame(opcode::CONTINUATION, b"x"),
                ReadFault::Protocol("continuation with no message started"),
            ),
            (
                "close of 1 byte",
                frame(opcode::CLOSE, &[3]),
                ReadFault::Protocol("close frame of one byte"),
            ),
            (
                "close code 999",
                frame(opcode::CLOSE, &999u16.to_be_bytes()),
                ReadFault::Protocol("close code not allowed"),
            ),
            (
                "close code 1005",
                frame(opcode::CLOSE, &1005u16.to_be_bytes()),
                ReadFault::Protocol("close code not allowed"),
            ),
            (
                "close code 2999",
                frame(opcode::CLOSE, &2999u16.to_be_bytes()),
                ReadFault::Protocol("close code not allowed"),
            ),
            (
                "close reason not UTF-8",
                frame(opcode::CLOSE, &[0x03, 0xe8, 0xff]),
                ReadFault::InvalidUtf8,
            ),
            ("text not UTF-8", frame(opcode::TEXT, &[b'{', 0xff, b'}']), ReadFault::InvalidUtf8),
            ("too big", frame(opcode::TEXT, &[b'a'; 11]), ReadFault::TooBig),
        ];
        for (name, bytes, fault) in cases {
            assert_eq!(decode_all(&bytes, 10), Err(fault), "{name}");
        }
        let mut started = RawFrame { fin: false, ..RawFrame::new(opcode::TEXT, *b"ab") }.encode();
        started.extend(frame(opcode::TEXT, b"cd"));
        assert_eq!(
            decode_all(&started, 10),
            Err(ReadFault::Protocol("new message inside a fragmented one"))
        );
        let mut top_bit = vec![0x81, 0xFF];
        top_bit.extend_from_slice(&[0x80, 0, 0, 0, 0, 0, 0, 0, 1, 2, 3, 4]);
        assert_eq!(
            decode_all(&top_bit, 10),
            Err(ReadFault::Protocol("frame length with its top bit set"))
        );
    }

    #[test]
    fn a_huge_announced_length_is_refused_from_the_header_alone() {
        let mut decoder = Decoder::new(1024, false);
        let mut header = vec![0x81, 0xFF];
        header.extend_from_slice(&(1u64 << 30).to_be_bytes());
        header.extend_from_slice(&[1, 2, 3, 4]);
        let mut out = VecDeque::new();
        assert_eq!(decoder.decode(&header, 8, &mut out), Err(ReadFault::TooBig));
        assert_eq!(decoder.heap_bytes(), 0);
        assert_eq!(
            decoder.decode(&frame(opcode::TEXT, b"{}"), 8, &mut out),
            Err(ReadFault::TooBig),
            "sticky"
        );
    }

    #[test]
    fn fragments_reassemble_with_control_frames_between_and_sizes_add_up() {
        let mut bytes = RawFrame {
            fin: false,
            ..RawFrame::new(opcode::TEXT, "h\u{e9}".as_bytes()[..2].to_vec())
        }
        .encode();
        bytes.extend(frame(opcode::PING, b"p"));
        bytes.extend(
            RawFrame::new(opcode::CONTINUATION, "h\u{e9}".as_bytes()[2..].to_vec()).encode(),
        );
        assert_eq!(
            decode_all(&bytes, 10),
            Ok(vec![Incoming::Ping(b"p".to_vec()), text("h\u{e9}")])
        );
        let mut too_big =
            RawFrame { fin: false, ..RawFrame::new(opcode::TEXT, *b"123456") }.encode();
        too_big.extend(RawFrame::new(opcode::CONTINUATION, *b"78901").encode());
        assert_eq!(decode_all(&too_big, 10), Err(ReadFault::TooBig));
        let mut binary = RawFrame { fin: false, ..RawFrame::new(opcode::BINARY, *b"12") }.encode();
        binary.extend(RawFrame::new(opcode::CONTINUATION, *b"34").encode());
        assert_eq!(decode_all(&binary, 10), Ok(vec![Incoming::Binary]));
    }

    #[test]
    fn any_split_of_the_stream_gives_the_same_messages_and_idle_holds_nothing() {
        let mut stream = frame(opcode::TEXT, br#"{"type":"a"}"#);
        stream.extend(frame(opcode::PONG, b""));
        stream.extend(frame(opcode::TEXT, "x".repeat(300).as_bytes()));
        stream.extend(frame(opcode::CLOSE, &[0x03, 0xe8, b'o', b'k']));
        let whole = decode_all(&stream, 1024);
        assert_eq!(whole.as_ref().map(Vec::len), Ok(4));
        assert_eq!(
            whole.as_ref().ok().and_then(|m| m.last().cloned()),
            Some(Incoming::Close(Some((1000, "ok".to_owned()))))
        );
        for split in 0..stream.len() {
            let mut decoder = Decoder::new(1024, false);
            let mut out = VecDeque::new();
            assert_eq!(decoder.decode(&stream[..split], usize::MAX, &mut out), Ok(()));
            assert_eq!(decoder.decode(&stream[split..], usize::MAX, &mut out), Ok(()));
            assert_eq!(Ok(out.into_iter().collect::<Vec<_>>()), whole, "split at {split}");
            assert_eq!(decoder.heap_bytes(), 0, "split at {split}");
        }
        let mut decoder = Decoder::new(1024, false);
        let mut out = VecDeque::new();
        for byte in &stream {
            assert_eq!(decoder.decode(std::slice::from_ref(byte), usize::MAX, &mut out), Ok(()));
        }
        assert_eq!(Ok(out.into_iter().collect::<Vec<_>>()), whole, "byte by byte");
        // After the close, input is ignored.
        let mut out = VecDeque::new();
        assert_eq!(decoder.decode(&frame(opcode::TEXT, b"late"), 8, &mut out), Ok(()));
        assert!(out.is_empty());
    }

    #[test]
    fn room_bounds_the_messages_and_keeps_the_rest() {
        let mut stream = Vec::new();
        for n in 0..5 {
            stream.extend(frame(opcode::TEXT, format!("{n}").as_bytes()));
        }
        let mut decoder = Decoder::new(64, false);
        let mut out = VecDeque::new();
        assert_eq!(decoder.decode(&stream, 2, &mut out), Ok(()));
        assert_eq!(out.len(), 2);
        assert!(decoder.has_pending());
        assert!(decoder.buffered() > 0);
        out.clear();
        assert_eq!(decoder.decode(&[], 8, &mut out), Ok(()));
        assert_eq!(out.into_iter().collect::<Vec<_>>(), vec![text("2"), text("3"), text("4")]);
        assert!(!decoder.has_pending());
        assert_eq!(decoder.heap_bytes(), 0);
    }

    /// `text` compressed as permessage-deflate sends it (fresh context, tail left off).
    fn compressed(text: &str) -> Vec<u8> {
        realtime_testkit::raw_ws::deflate(text.as_bytes())
    }

    fn rsv1(frame: RawFrame) -> Vec<u8> {
        RawFrame { rsv: 0b100, ..frame }.encode()
    }

    #[test]
    fn discarded_messages_are_neither_inflated_nor_checked_but_the_close_frame_is_read() {
        let mut decoder = Decoder::new(16 * 1024, true);
        let mut out = VecDeque::new();
        let (head, rest) = b"abcdef".split_at(3);
        let started = RawFrame { fin: false, ..RawFrame::new(opcode::TEXT, head) }.encode();
        assert_eq!(decoder.decode(&started, usize::MAX, &mut out), Ok(()));
        decoder.discard_messages();
        let mut stream = RawFrame::new(opcode::CONTINUATION, rest).encode();
        // A bomb (about 10 KiB, 1 MiB inflated, limit 16 KiB) and text that is not UTF-8:
        // both skipped.
        stream.extend(rsv1(RawFrame::new(opcode::TEXT, compressed(&"0".repeat(1 << 20)))));
        stream.extend(frame(opcode::TEXT, &[0xff, 0xfe]));
        stream.extend(frame(opcode::CLOSE, &[0x03, 0xe8]));
        assert_eq!(decoder.decode(&stream, usize::MAX, &mut out), Ok(()));
        assert_eq!(
            out.into_iter().collect::<Vec<_>>(),
            vec![
                Incoming::Binary,
                Incoming::Binary,
                Incoming::Binary,
                Incoming::Close(Some((1000, String::new())))
            ]
        );
        // The frame rules still hold.
        let mut decoder = Decoder::new(64, true);
        decoder.discard_messages();
        let mut out = VecDeque::new();
        assert_eq!(
            decoder.decode(&frame(0x3, b""), usize::MAX, &mut out),
            Err(ReadFault::Protocol("reserved opcode"))
        );
    }

    #[test]
    fn any_split_of_a_compressed_stream_gives_the_same_messages() {
        let body = format!(r#"{{"type":"message","payload":{{"text":"{}"}}}}"#, "xy".repeat(150));
        let packed = compressed(&body);
        let (head, rest) = packed.split_at(packed.len() / 3);
        let mut stream = rsv1(RawFrame::new(opcode::TEXT, packed.clone()));
        stream.extend(frame(opcode::TEXT, b"{}"));
        stream.extend(rsv1(RawFrame { fin: false, ..RawFrame::new(opcode::TEXT, head) }));
        stream.extend(frame(opcode::PONG, b""));
        stream.extend(RawFrame::new(opcode::CONTINUATION, rest).encode());
        let expected = vec![text(&body), text("{}"), Incoming::Pong, text(&body)];
        for split in 0..stream.len() {
            let mut decoder = Decoder::new(1024, true);
            let mut out = VecDeque::new();
            assert_eq!(decoder.decode(&stream[..split], usize::MAX, &mut out), Ok(()));
            assert_eq!(decoder.decode(&stream[split..], usize::MAX, &mut out), Ok(()));
            assert_eq!(out.into_iter().collect::<Vec<_>>(), expected, "split at {split}");
            assert_eq!(decoder.heap_bytes(), 0, "split at {split}");
        }
    }

    #[test]
    fn compressed_messages_inflate_only_where_permessage_deflate_allows_them() {
        let body = format!(r#"{{"type":"message","payload":{{"text":"{}"}}}}"#, "ab".repeat(200));
        let packed = compressed(&body);
        let decode = |bytes: &[u8], inflate: bool, max: usize| {
            let mut decoder = Decoder::new(max, inflate);
            let mut out = VecDeque::new();
            decoder
                .decode(bytes, usize::MAX, &mut out)
                .map(|()| out.into_iter().collect::<Vec<_>>())
        };
        let whole = rsv1(RawFrame::new(opcode::TEXT, packed.clone()));
        assert_eq!(decode(&whole, true, 1024), Ok(vec![text(&body)]));
        // Not negotiated: RSV1 is a reserved bit as any other.
        assert_eq!(decode(&whole, false, 1024), Err(ReadFault::Protocol("reserved bits set")));
        // Fragmented: RSV1 on the first frame only, a ping between the fragments.
        let (head, rest) = packed.split_at(packed.len() / 2);
        let mut fragments = rsv1(RawFrame { fin: false, ..RawFrame::new(opcode::TEXT, head) });
        fragments.extend(frame(opcode::PING, b"p"));
        fragments.extend(RawFrame::new(opcode::CONTINUATION, rest).encode());
        assert_eq!(
            decode(&fragments, true, 1024),
            Ok(vec![Incoming::Ping(b"p".to_vec()), text(&body)])
        );
        let mut marked_continuation =
            rsv1(RawFrame { fin: false, ..RawFrame::new(opcode::TEXT, head) });
        marked_continuation.extend(rsv1(RawFrame::new(opcode::CONTINUATION, rest)));
        assert_eq!(
            decode(&marked_continuation, true, 1024),
            Err(ReadFault::Protocol("reserved bits set"))
        );
        assert_eq!(
            decode(&rsv1(RawFrame::new(opcode::PING, *b"p")), true, 1024),
            Err(ReadFault::Protocol("reserved bits set"))
        );
        // The limit is the inflated size; a message within it compressed but over it inflated
        // is too big, whatever it inflates to beyond.
        assert_eq!(decode(&whole, true, body.len() - 1), Err(ReadFault::TooBig));
        let bomb = compressed(&"0".repeat(1 << 20));
        assert!(bomb.len() < 16 * 1024, "{}", bomb.len());
        assert_eq!(
            decode(&rsv1(RawFrame::new(opcode::TEXT, bomb)), true, 64 * 1024),
            Err(ReadFault::TooBig)
        );
        assert_eq!(
            decode(&rsv1(RawFrame::new(opcode::TEXT, *b"\xff\xff\xff")), true, 1024),
            Err(ReadFault::Protocol("invalid compressed data"))
        );
        let not_utf8 = realtime_testkit::raw_ws::deflate(&[0xff; 300]);
        assert_eq!(
            decode(&rsv1(RawFrame::new(opcode::TEXT, not_utf8)), true, 1024),
            Err(ReadFault::InvalidUtf8)
        );
        // A compressed binary message is refused as any binary message, not inflated.
        assert_eq!(
            decode(&rsv1(RawFrame::new(opcode::BINARY, *b"\xff")), true, 1024),
            Ok(vec![Incoming::Binary])
        );
    }
}
