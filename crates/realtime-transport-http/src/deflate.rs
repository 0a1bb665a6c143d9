//! permessage-deflate (RFC 7692), off unless configured
//! ([`TransportConfig::permessage_deflate`](crate::TransportConfig::permessage_deflate)):
//! the negotiation of the upgrade request's `Sec-WebSocket-Extensions`, the compression of a
//! publication once for every recipient, and the bounded inflation of a client's message.
//!
//! The one set of parameters the server agrees to, whatever the offer:
//! `server_no_context_takeover` (every message is compressed on its own, so that the same
//! compressed bytes serve every connection and no connection keeps a compressor) and
//! `client_no_context_takeover` (every client message is inflated on its own, so that no
//! connection keeps an inflater either; RFC 7692 7.1.1.2 lets the server add it unasked).
//! An idle connection holds nothing for compression; the compressor and the inflater are one
//! per worker thread. An offer this cannot honour (`server_max_window_bits` below 15, an
//! unknown or repeated parameter, a bad value) is declined, and the next offer is tried;
//! with none left the connection goes on uncompressed.

use std::cell::RefCell;

use bytes::Bytes;
use flate2::{Compress, Compression, Decompress, FlushCompress, FlushDecompress, Status};
use http::HeaderMap;
use http::header::SEC_WEBSOCKET_EXTENSIONS;
use realtime_core::Frame;

use crate::ws_codec::ReadFault;

/// The extension's name.
const NAME: &str = "permessage-deflate";

/// What the server answers to an offer it accepts.
const ACCEPTED: &str = "permessage-deflate; server_no_context_takeover; client_no_context_takeover";

/// What it answers to an offer with `server_max_window_bits=15`: RFC 7692 7.1.2.1 accepts
/// that parameter only by echoing it (with the same or a smaller value).
const ACCEPTED_WITH_WINDOW: &str = "permessage-deflate; server_no_context_takeover; \
     client_no_context_takeover; server_max_window_bits=15";

/// What a sync flush ends the compressed data with and RFC 7692 7.2.1 leaves off the wire.
const TAIL: [u8; 4] = [0x00, 0x00, 0xff, 0xff];

/// The compression level: zlib's fastest (measured: a 3 KiB dashboard frame to 656 bytes
/// in about 9 us, once per publication; docs/benchmarks.md, Findings, fifth step).
const LEVEL: u32 = 1;

/// The `Sec-WebSocket-Extensions` answer to the request's first permessage-deflate offer
/// with parameters the server can honour; `None` when there is none.
pub(crate) fn negotiate(headers: &HeaderMap) -> Option<&'static str> {
    headers
        .get_all(SEC_WEBSOCKET_EXTENSIONS)
        .iter()
        .find_map(|value| value.to_str().ok()?.split(',').find_map(|offer| answer(offer.trim())))
}

/// The answer to one extension offer, if it is permessage-deflate with parameters the
/// server can honour.
fn answer(offer: &str) -> Option<&'static str> {
    let mut parts = offer.split(';').map(str::trim);
    if parts.next() != Some(NAME) {
        return None;
    }
    let mut seen = [false; 4];
    for param in parts {
        let (name, value) = match param.split_once('=') {
            Some((name, value)) => (name.trim(), Some(unquoted(value.trim()))),
            None => (param, None),
        };
        let (index, valid) = match name {
            "server_no_context_takeover" => (0, value.is_none()),
            "client_no_context_takeover" => (1, value.is_none()),
            // Compressed with a 32 KiB window: a smaller one asked for is declined.
            "server_max_window_bits" => {
                (2, value.is_some_and(|bits| window_bits(bits) == Some(15)))
            }
            // Any window the client compresses with inflates with a 32 KiB one.
            "client_max_window_bits" => (3, value.is_none_or(|bits| window_bits(bits).is_some())),
            _ => return None,
        };
        if !valid || std::mem::replace(&mut seen[index], true) {
            return None;
        }
    }
    Some(if seen[2] { ACCEPTED_WITH_WINDOW } else { ACCEPTED })
}

/// A parameter value without the quotes of a quoted string.
fn unquoted(value: &str) -> &str {
    value.strip_prefix('"').and_then(|v| v.strip_suffix('"')).unwrap_or(value)
}

/// A window size of RFC 7692: 8 to 15, in plain digits.
fn window_bits(value: &str) -> Option<u8> {
    if value.is_empty() || value.len() > 2 || !value.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    value.parse().ok().filter(|bits| (8..=15).contains(bits))
}

/// The worker thread's compressor, and the publication it compressed last with the result
/// (`None`: not smaller compressed, so sent as it is). A fan-out sends one publication to
/// every recipient from one loop on one thread, so the payload is compressed once per
/// publication and thread. Keeping the last frame keeps its bytes allocated until the
/// thread compresses another: one frame per worker thread.
struct Deflater {
    compress: Compress,
    last: Option<(Frame, Option<Bytes>)>,
}

thread_local! {
    static DEFLATER: RefCell<Deflater> = RefCell::new(Deflater {
        compress: Compress::new(Compression::new(LEVEL), false),
        last: None,
    });
}

/// The compressed payload of `frame` for the wire (without the 4-byte tail), or `None` when
/// compressing does not make it smaller. Compressed once per publication: every recipient's
/// `send` on this thread gets the same bytes.
pub(crate) fn deflated(frame: &Frame) -> Option<Bytes> {
    DEFLATER.with_borrow_mut(|deflater| {
        if let Some((last, result)) = &deflater.last
            && same_bytes(last.as_bytes(), frame.as_bytes())
        {
            return result.clone();
        }
        let result = compress(&mut deflater.compress, frame.as_bytes());
        metrics::counter!("realtime_frames_compressed_total").increment(1);
        deflater.last = Some((frame.clone(), result.clone()));
        result
    })
}

/// Whether `a` and `b` are the same bytes in memory (clones of one frame). The caller keeps
/// `a` alive, so its memory cannot be reused for another frame meanwhile.
fn same_bytes(a: &[u8], b: &[u8]) -> bool {
    std::ptr::eq(a.as_ptr(), b.as_ptr()) && a.len() == b.len()
}

/// `payload` deflated with a fresh context and a sync flush, the tail left off; `None` when
/// that is not smaller than the payload.
fn compress(compress: &mut Compress, payload: &[u8]) -> Option<Bytes> {
    compress.reset();
    // Room for the payload and the tail: output that needs more is not worth sending.
    let mut out = Vec::with_capacity(payload.len() + TAIL.len());
    let status = compress.compress_vec(payload, &mut out, FlushCompress::Sync).ok()?;
    let done = status == Status::Ok
        && usize::try_from(compress.total_in()).is_ok_and(|read| read == payload.len())
        && out.len() < out.capacity()
        && out.ends_with(&TAIL);
    if !done {
        return None;
    }
    out.truncate(out.len() - TAIL.len());
    // Exact: the buffer had room for the whole payload, and every queued copy of the frame
    // shares it.
    (out.len() < payload.len()).then(|| Bytes::copy_from_slice(&out))
}

thread_local! {
    static INFLATER: RefCell<Decompress> = RefCell::new(Decompress::new(false));
}

/// A client message's payload inflated (with a fresh context: `client_no_context_takeover`),
/// at most `max` bytes of it: more is [`ReadFault::TooBig`] (a decompression bomb stops
/// there), data that does not inflate is a protocol violation.
pub(crate) fn inflate(mut compressed: Vec<u8>, max: usize) -> Result<Vec<u8>, ReadFault> {
    const STEP: usize = 16 * 1024;
    const BROKEN: ReadFault = ReadFault::Protocol("invalid compressed data");
    compressed.extend_from_slice(&TAIL);
    let limit = max.saturating_add(1);
    INFLATER.with_borrow_mut(|inflater| {
        inflater.reset(false);
        let mut out = Vec::with_capacity(compressed.len().saturating_mul(4).min(STEP).min(limit));
        loop {
            let read = usize::try_from(inflater.total_in()).map_err(|_| BROKEN)?;
            let before = out.len();
            let status = inflater
                .decompress_vec(&compressed[read..], &mut out, FlushDecompress::Sync)
                .map_err(|_| BROKEN)?;
            if out.len() > max {
                return Err(ReadFault::TooBig);
            }
            let read_now = usize::try_from(inflater.total_in()).map_err(|_| BROKEN)?;
            let all_read = read_now == compressed.len();
            if status == Status::StreamEnd || (all_read && out.len() < out.capacity()) {
                return Ok(out);
            }
            if out.len() == out.capacity() {
                // Doubling, up to the limit plus one byte (one byte more than `max` tells);
                // exactly, so that no call can write past it.
                out.reserve_exact(out.capacity().max(STEP).min(limit - out.len()).max(1));
            } else if read_now == read && out.len() == before {
                // No progress with room to write: the input ends inside a block.
                return Err(BROKEN);
            }
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(values: &[&'static str]) -> HeaderMap {
        let mut map = HeaderMap::new();
        for value in values {
            map.append(SEC_WEBSOCKET_EXTENSIONS, http::HeaderValue::from_static(value));
        }
        map
    }

    #[test]
    fn offers_are_accepted_only_with_parameters_the_server_honours() {
        let offered = |map: &HeaderMap| negotiate(map).is_some();
        for accepted in [
            &["permessage-deflate"][..],
            // Chromium's and Firefox's offer.
            &["permessage-deflate; client_max_window_bits"],
            &["permessage-deflate; client_max_window_bits=10; server_no_context_takeover"],
            &["permessage-deflate;client_no_context_takeover;server_max_window_bits=15"],
            &["permessage-deflate; client_max_window_bits=\"12\""],
            &["x-webkit-deflate-frame, permessage-deflate"],
            &["permessage-deflate; server_max_window_bits=10, permessage-deflate"],
            &["foo", "permessage-deflate"],
        ] {
            assert!(offered(&headers(accepted)), "{accepted:?}");
        }
        // A window limit of 15 is accepted by echoing it; otherwise the answer is the same.
        assert_eq!(
            negotiate(&headers(&["permessage-deflate; client_max_window_bits"])),
            Some(ACCEPTED)
        );
        assert_eq!(
            negotiate(&headers(&["permessage-deflate; server_max_window_bits=15"])),
            Some(ACCEPTED_WITH_WINDOW)
        );
        assert_eq!(
            negotiate(&headers(&[
                "permessage-deflate; server_max_window_bits=9, permessage-deflate"
            ])),
            Some(ACCEPTED),
            "the first acceptable offer decides"
        );
        for declined in [
            &[][..],
            &["x-webkit-deflate-frame"],
            &["permessage-deflate; server_max_window_bits=10"],
            &["permessage-deflate; server_max_window_bits"],
            &["permessage-deflate; client_max_window_bits=16"],
            &["permessage-deflate; client_max_window_bits=7"],
            &["permessage-deflate; client_max_window_bits=+9"],
            &["permessage-deflate; server_no_context_takeover=1"],
            &["permessage-deflate; server_no_context_takeover; server_no_context_takeover"],
            &["permessage-deflate; unknown"],
            &["permessage-deflateX"],
        ] {
            assert!(!offered(&headers(declined)), "{declined:?}");
        }
    }

    #[test]
    fn compressed_payloads_inflate_back_and_incompressible_ones_are_left_as_they_are() {
        let text = format!(r#"{{"type":"dashboard","payload":{{"figures":[{}]}}}}"#, {
            (0..200).map(|n| format!("{{\"k\":{n},\"v\":\"ok\"}}")).collect::<Vec<_>>().join(",")
        });
        let frame = Frame::from_text(text.clone());
        let compressed = deflated(&frame).unwrap_or_else(|| panic!("not compressed"));
        assert!(compressed.len() * 4 < text.len(), "{} of {}", compressed.len(), text.len());
        assert!(!compressed.ends_with(&TAIL));
        assert_eq!(inflate(compressed.to_vec(), text.len()), Ok(text.clone().into_bytes()));
        assert_eq!(inflate(compressed.to_vec(), text.len() - 1), Err(ReadFault::TooBig));
        // Short payloads without repeats do not shrink: they go as they are.
        assert_eq!(deflated(&Frame::from_text("{}".to_owned())), None);
        assert_eq!(deflated(&Frame::from_text("0123456789abcdef".to_owned())), None);
    }

    #[test]
    fn a_publication_is_compressed_once_for_all_its_recipients() {
        let frame = Frame::from_text("abc".repeat(100));
        let first = deflated(&frame).unwrap_or_else(|| panic!("not compressed"));
        let again = deflated(&frame.clone()).unwrap_or_else(|| panic!("not compressed"));
        assert!(same_bytes(&first, &again), "the cached bytes, not a second compression");
        let equal_text = Frame::from_text("abc".repeat(100));
        let other = deflated(&equal_text).unwrap_or_else(|| panic!("not compressed"));
        assert_eq!(first, other);
        assert!(!same_bytes(&first, &other), "another publication is compressed again");
    }

    #[test]
    fn a_bomb_stops_at_the_limit_and_broken_data_is_refused() {
        let zeros = vec![b'0'; 2 * 1024 * 1024];
        let bomb = realtime_testkit::raw_ws::deflate(&zeros);
        assert!(bomb.len() < 64 * 1024, "{}", bomb.len());
        assert_eq!(inflate(bomb.clone(), 64 * 1024), Err(ReadFault::TooBig));
        assert_eq!(inflate(bomb, 2 * 1024 * 1024).map(|out| out.len()), Ok(2 * 1024 * 1024));
        assert_eq!(
            inflate(vec![0xff, 0xff, 0xff], 1024),
            Err(ReadFault::Protocol("invalid compressed data"))
        );
        // Nothing at all inflates to nothing (an empty message).
        assert_eq!(inflate(Vec::new(), 1024), Ok(Vec::new()));
    }
}
