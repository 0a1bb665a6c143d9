//! Minimal HTTP/1.1 for the benchmark: a keep-alive client for `POST /api/publish` and
//! `GET /healthz`, and the request-head reader the baseline server uses.
//!
//! Only what the benchmark needs: `Content-Length` and chunked bodies, no TLS, no
//! redirects, no pipelining.

use std::net::SocketAddr;
use std::time::Duration;

use tokio::io::{AsyncBufReadExt, AsyncRead, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;

use crate::BenchError;

/// Largest response head or request head accepted, in bytes.
pub const MAX_HEAD: usize = 16 * 1024;
/// Largest response body the client reads, in bytes.
const MAX_BODY: usize = 1024 * 1024;

/// A keep-alive HTTP/1.1 client for one server. Reconnects when the server closed the
/// connection.
#[derive(Debug)]
pub struct HttpClient {
    addr: SocketAddr,
    bearer: Option<String>,
    timeout: Duration,
    conn: Option<BufReader<TcpStream>>,
}

/// A response: status and body.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Response {
    /// Status code.
    pub status: u16,
    /// Body bytes.
    pub body: Vec<u8>,
}

impl HttpClient {
    /// A client of `addr` that sends `Authorization: Bearer <bearer>` when given one.
    pub fn new(addr: SocketAddr, bearer: Option<String>, timeout: Duration) -> HttpClient {
        HttpClient { addr, bearer, timeout, conn: None }
    }

    /// `POST path` with a JSON body.
    ///
    /// # Errors
    /// [`BenchError::Io`] or [`BenchError::Protocol`] when the exchange fails twice (once on
    /// a reused connection, once on a fresh one), [`BenchError::Timeout`] when it is slow.
    pub async fn post_json(&mut self, path: &str, body: &[u8]) -> Result<Response, BenchError> {
        self.request("POST", path, body).await
    }

    /// `GET path`.
    ///
    /// # Errors
    /// As [`HttpClient::post_json`].
    pub async fn get(&mut self, path: &str) -> Result<Response, BenchError> {
        self.request("GET", path, b"").await
    }

    async fn request(
        &mut self,
        method: &str,
        path: &str,
        body: &[u8],
    ) -> Result<Response, BenchError> {
        let mut head = format!("{method} {path} HTTP/1.1\r\nHost: {}\r\n", self.addr);
        if let Some(bearer) = &self.bearer {
            head.push_str("Authorization: Bearer ");
            head.push_str(bearer);
            head.push_str("\r\n");
        }
        if method != "GET" {
            head.push_str("Content-Type: application/json\r\n");
            head.push_str(&format!("Content-Length: {}\r\n", body.len()));
        }
        head.push_str("\r\n");
        let mut message = head.into_bytes();
        message.extend_from_slice(body);

        // A reused connection may have been closed by the server meanwhile: retry once on a
        // fresh one.
        let reused = self.conn.is_some();
        match self.exchange(&message).await {
            Ok(r) => Ok(r),
            Err(_) if reused => self.exchange(&message).await,
            Err(e) => Err(e),
        }
    }

    async fn exchange(&mut self, message: &[u8]) -> Result<Response, BenchError> {
        let result = tokio::time::timeout(self.timeout, self.exchange_inner(message)).await;
        match result {
            Ok(Ok((response, keep))) => {
                if !keep {
                    self.conn = None;
                }
                Ok(response)
            }
            Ok(Err(e)) => {
                self.conn = None;
                Err(e)
            }
            Err(_) => {
                self.conn = None;
                Err(BenchError::Timeout(format!("HTTP request to {}", self.addr)))
            }
        }
    }

    async fn exchange_inner(&mut self, message: &[u8]) -> Result<(Response, bool), BenchError> {
        if self.conn.is_none() {
            let stream = TcpStream::connect(self.addr).await?;
            stream.set_nodelay(true)?;
            self.conn = Some(BufReader::new(stream));
        }
        let Some(conn) = self.conn.as_mut() else {
            return Err(BenchError::Protocol("no connection".into()));
        };
        conn.get_mut().write_all(message).await?;
        read_response(conn).await
    }
}

/// Reads one response; returns it and whether the connection may be reused.
async fn read_response<R: AsyncRead + Unpin>(
    conn: &mut BufReader<R>,
) -> Result<(Response, bool), BenchError> {
    let mut line = String::new();
    let mut head_len = 0usize;
    let mut status = None;
    let mut content_length = None;
    let mut chunked = false;
    let mut keep = true;
    loop {
        line.clear();
        let n = conn.read_line(&mut line).await?;
        if n == 0 {
            return Err(BenchError::Protocol("connection closed before the response".into()));
        }
        head_len += n;
        if head_len > MAX_HEAD {
            return Err(BenchError::Protocol("response head too large".into()));
        }
        let trimmed = line.trim_end();
        if status.is_none() {
            let code = trimmed
                .strip_prefix("HTTP/1.")
                .and_then(|rest| rest.get(2..5))
                .and_then(|code| code.parse::<u16>().ok())
                .ok_or_else(|| BenchError::Protocol(format!("bad status line {trimmed:?}")))?;
            status = Some(code);
            keep = !trimmed.starts_with("HTTP/1.0");
            continue;
        }
        if trimmed.is_empty() {
            break;
        }
        if let Some((name, value)) = trimmed.split_once(':') {
            let value = value.trim();
            if name.eq_ignore_ascii_case("content-length") {
                content_length = value.parse::<usize>().ok();
            } else if name.eq_ignore_ascii_case("transfer-encoding") {
                chunked = value.to_ascii_lowercase().contains("chunked");
            } else if name.eq_ignore_ascii_case("connection") {
                keep = !value.eq_ignore_ascii_case("close");
            }
        }
    }
    let status = status.unwrap_or(0);
    let body = if chunked {
        read_chunked(conn).await?
    } else if let Some(len) = content_length {
        if len > MAX_BODY {
            return Err(BenchError::Protocol("response body too large".into()));
        }
        let mut body = vec![0; len];
        conn.read_exact(&mut body).await?;
        body
    } else {
        // No length: the body runs to the end of the connection.
        keep = false;
        let mut body = Vec::new();
        conn.take(MAX_BODY as u64).read_to_end(&mut body).await?;
        body
    };
    Ok((Response { status, body }, keep))
}

async fn read_chunked<R: AsyncRead + Unpin>(
    conn: &mut BufReader<R>,
) -> Result<Vec<u8>, BenchError> {
    let mut body = Vec::new();
    let mut line = String::new();
    loop {
        line.clear();
        conn.read_line(&mut line).await?;
        let size_text = line.trim().split(';').next().unwrap_or("");
        let size = usize::from_str_radix(size_text, 16)
            .map_err(|_| BenchError::Protocol(format!("bad chunk size {size_text:?}")))?;
        if body.len() + size > MAX_BODY {
            return Err(BenchError::Protocol("response body too large".into()));
        }
        if size == 0 {
            // Trailers, then the empty line.
            loop {
                line.clear();
                let n = conn.read_line(&mut line).await?;
                if n == 0 || line.trim().is_empty() {
                    return Ok(body);
                }
            }
        }
        let start = body.len();
        body.resize(start + size, 0);
        conn.read_exact(&mut body[start..]).await?;
        line.clear();
        conn.read_line(&mut line).await?;
    }
}

/// A parsed request head (for the baseline server).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RequestHead {
    /// Method, such as `GET`.
    pub method: String,
    /// Path without the query.
    pub path: String,
    /// Query string without `?`; empty when there is none.
    pub query: String,
    /// Header names (lower-cased) and values.
    pub headers: Vec<(String, String)>,
}

impl RequestHead {
    /// The value of header `name` (lower-case).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.iter().find(|(n, _)| n == name).map(|(_, v)| v.as_str())
    }

    /// The `Content-Length`, 0 when absent.
    ///
    /// # Errors
    /// When the header is not a number.
    pub fn content_length(&self) -> Result<usize, BenchError> {
        match self.header("content-length") {
            None => Ok(0),
            Some(v) => {
                v.trim().parse().map_err(|_| BenchError::Protocol("bad content-length".into()))
            }
        }
    }

    /// Whether the client asked to close the connection after this request.
    pub fn wants_close(&self) -> bool {
        self.header("connection").is_some_and(|v| v.eq_ignore_ascii_case("close"))
    }
}

/// Where the head ends in `buf` (the index after `\r\n\r\n`), if it is complete.
pub fn head_end(buf: &[u8]) -> Option<usize> {
    buf.windows(4).position(|w| w == b"\r\n\r\n").map(|i| i + 4)
}

/// Parses a complete request head (up to and including the blank line).
///
/// # Errors
/// [`BenchError::Protocol`] when it is not an HTTP/1.x request head.
pub fn parse_request_head(head: &[u8]) -> Result<RequestHead, BenchError> {
    let text = std::str::from_utf8(head)
        .map_err(|_| BenchError::Protocol("request head is not UTF-8".into()))?;
    let mut lines = text.split("\r\n");
    let request_line = lines.next().unwrap_or("");
    let mut parts = request_line.split(' ');
    let (Some(method), Some(target), Some(version)) = (parts.next(), parts.next(), parts.next())
    else {
        return Err(BenchError::Protocol("bad request line".into()));
    };
    if !version.starts_with("HTTP/1.") || method.is_empty() {
        return Err(BenchError::Protocol("bad request line".into()));
    }
    let (path, query) = target.split_once('?').unwrap_or((target, ""));
    let mut headers = Vec::new();
    for line in lines.filter(|l| !l.is_empty()) {
        let (name, value) =
            line.split_once(':').ok_or_else(|| BenchError::Protocol("bad header".into()))?;
        headers.push((name.trim().to_ascii_lowercase(), value.trim().to_owned()));
    }
    Ok(RequestHead {
        method: method.to_owned(),
        path: path.to_owned(),
        query: query.to_owned(),
        headers,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_request_heads() {
        let raw = b"GET /ws?token=abc HTTP/1.1\r\nHost: x\r\nSec-WebSocket-Key: k==\r\n\r\n";
        assert_eq!(head_end(raw), Some(raw.len()));
        assert_eq!(head_end(b"GET / HTTP/1.1\r\n"), None);
        let head = parse_request_head(raw).unwrap();
        assert_eq!((head.method.as_str(), head.path.as_str()), ("GET", "/ws"));
        assert_eq!(head.query, "token=abc");
        assert_eq!(head.header("sec-websocket-key"), Some("k=="));
        assert_eq!(head.content_length(), Ok(0));
        assert!(!head.wants_close());
        for bad in [
            &b"\r\n\r\n"[..],
            b"GET /\r\n\r\n",
            b"GET / SPDY\r\n\r\n",
            b"GET / HTTP/1.1\r\nnocolon\r\n\r\n",
        ] {
            assert!(parse_request_head(bad).is_err(), "{:?}", String::from_utf8_lossy(bad));
        }
    }

    #[tokio::test]
    async fn reads_length_and_chunked_responses() {
        let cases: [(&[u8], u16, &[u8], bool); 4] = [
            (b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nhello", 200, b"hello", true),
            (
                b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n2\r\nde\r\n0\r\n\r\n",
                200,
                b"abcde",
                true,
            ),
            (b"HTTP/1.1 401 Unauthorized\r\nConnection: close\r\nContent-Length: 0\r\n\r\n", 401, b"", false),
            (b"HTTP/1.0 200 OK\r\n\r\nrest", 200, b"rest", false),
        ];
        for (raw, status, body, keep) in cases {
            let mut reader = BufReader::new(raw);
            let (response, kept) = read_response(&mut reader).await.unwrap();
            assert_eq!((response.status, response.body.as_slice(), kept), (status, body, keep));
        }
        let mut reader = BufReader::new(&b"garbage\r\n\r\n"[..]);
        assert!(read_response(&mut reader).await.is_err());
    }
}
