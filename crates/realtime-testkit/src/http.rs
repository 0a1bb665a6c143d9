//! A minimal HTTP/1.1 test client on a plain `TcpStream`: one request per connection
//! (`Connection: close`), the response read by its `Content-Length` or to the end of the
//! stream. Enough for the publish API, health and metrics endpoints, and for sending
//! hand-made (malformed, oversized, head-only) requests that a real client would refuse to.
//!
//! Every exchange is bounded by [`WAIT`]; a helper that fails panics with what went wrong.

use std::net::SocketAddr;

use serde_json::Value;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::WAIT;

/// An HTTP response: status, headers (names in lower case, values trimmed), body.
#[derive(Debug)]
pub struct HttpResponse {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl HttpResponse {
    /// The body as JSON.
    ///
    /// # Panics
    /// When the body is not JSON (the message shows the body).
    pub fn json(&self) -> Value {
        serde_json::from_slice(&self.body)
            .unwrap_or_else(|e| panic!("not JSON ({e}): {}", self.text()))
    }

    /// The value of the first header named `name` (lower case).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.iter().find(|(n, _)| n == name).map(|(_, v)| v.as_str())
    }

    /// The body as text, invalid UTF-8 replaced.
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
}

/// Sends one HTTP/1.1 request (`Host`, `Connection: close`, then `headers`, then a
/// `Content-Length` of `body` unless `headers` has one) and reads the response.
///
/// # Panics
/// As [`raw_http`].
pub async fn http(
    addr: SocketAddr,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &[u8],
) -> HttpResponse {
    let mut head = format!("{method} {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n");
    for (name, value) in headers {
        head.push_str(&format!("{name}: {value}\r\n"));
    }
    if !headers.iter().any(|(n, _)| n.eq_ignore_ascii_case("content-length")) {
        head.push_str(&format!("Content-Length: {}\r\n", body.len()));
    }
    head.push_str("\r\n");
    let mut request = head.into_bytes();
    request.extend_from_slice(body);
    raw_http(addr, &request).await
}

/// Sends `request` exactly as it is (it may be only a head, or malformed) and reads the
/// response.
///
/// # Panics
/// When the connection fails, the response is cut short or has no parsable status line, or
/// the whole exchange takes longer than [`WAIT`].
pub async fn raw_http(addr: SocketAddr, request: &[u8]) -> HttpResponse {
    let exchange = async {
        let mut stream = TcpStream::connect(addr).await.unwrap_or_else(|e| panic!("{e}"));
        stream.write_all(request).await.unwrap_or_else(|e| panic!("{e}"));
        read_response(&mut stream).await
    };
    tokio::time::timeout(WAIT, exchange).await.unwrap_or_else(|_| panic!("HTTP request timed out"))
}

/// Reads up to the blank line that ends a response head; returns the head (without the
/// blank line) and the bytes read after it.
///
/// # Panics
/// When the connection fails or closes before the head is complete.
pub(crate) async fn read_head(stream: &mut TcpStream) -> (String, Vec<u8>) {
    let mut data = Vec::new();
    let mut buffer = [0u8; 4096];
    let head_end = loop {
        if let Some(pos) = data.windows(4).position(|w| w == b"\r\n\r\n") {
            break pos;
        }
        let read = stream.read(&mut buffer).await.unwrap_or_else(|e| panic!("{e}"));
        assert!(read > 0, "connection closed before the response head");
        data.extend_from_slice(&buffer[..read]);
    };
    let head = String::from_utf8_lossy(&data[..head_end]).into_owned();
    (head, data[head_end + 4..].to_vec())
}

/// Reads one response: the head up to the blank line, then `Content-Length` bytes of body,
/// or everything up to the end of the stream when there is no such header.
async fn read_response(stream: &mut TcpStream) -> HttpResponse {
    let mut buffer = [0u8; 4096];
    let (head, mut body) = read_head(stream).await;
    let mut lines = head.split("\r\n");
    let status_line = lines.next().unwrap_or_default();
    let status: u16 = status_line
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("bad status line {status_line:?}"));
    let headers: Vec<(String, String)> = lines
        .filter_map(|line| line.split_once(':'))
        .map(|(n, v)| (n.trim().to_ascii_lowercase(), v.trim().to_owned()))
        .collect();
    let length = headers
        .iter()
        .find(|(n, _)| n == "content-length")
        .and_then(|(_, v)| v.parse::<usize>().ok());
    match length {
        Some(length) => {
            while body.len() < length {
                let read = stream.read(&mut buffer).await.unwrap_or_else(|e| panic!("{e}"));
                assert!(read > 0, "connection closed before the whole body");
                body.extend_from_slice(&buffer[..read]);
            }
            body.truncate(length);
        }
        None => {
            let _ = stream.read_to_end(&mut body).await;
        }
    }
    HttpResponse { status, headers, body }
}

#[cfg(test)]
mod tests {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::net::TcpListener;

    use super::*;

    /// Serves one connection on 127.0.0.1:0: reads the request head and `body_len` more
    /// bytes, answers `response`, closes, and returns the request as text.
    async fn serve_once(
        response: &'static [u8],
        body_len: usize,
    ) -> (SocketAddr, tokio::task::JoinHandle<String>) {
        let listener = TcpListener::bind(("127.0.0.1", 0)).await.unwrap_or_else(|e| panic!("{e}"));
        let addr = listener.local_addr().unwrap_or_else(|e| panic!("{e}"));
        let task = tokio::spawn(async move {
            let (mut stream, _) = listener.accept().await.unwrap_or_else(|e| panic!("{e}"));
            let mut request = Vec::new();
            let mut buffer = [0u8; 1024];
            loop {
                let head_end = request.windows(4).position(|w| w == b"\r\n\r\n");
                if head_end.is_some_and(|end| request.len() >= end + 4 + body_len) {
                    break;
                }
                let read = stream.read(&mut buffer).await.unwrap_or_else(|e| panic!("{e}"));
                assert!(read > 0, "the client closed early");
                request.extend_from_slice(&buffer[..read]);
            }
            stream.write_all(response).await.unwrap_or_else(|e| panic!("{e}"));
            String::from_utf8_lossy(&request).into_owned()
        });
        (addr, task)
    }

    #[tokio::test]
    async fn a_request_is_framed_and_the_response_read_by_content_length() {
        let response = b"HTTP/1.1 201 Created\r\nContent-Type: application/json\r\nContent-Length: 7\r\n\r\n{\"a\":1}trailing";
        let (addr, server) = serve_once(response, 2).await;
        let got = http(addr, "POST", "/p", &[("X-Key", "v")], b"{}").await;
        assert_eq!(got.status, 201);
        assert_eq!(got.header("content-type"), Some("application/json"));
        assert_eq!(got.json()["a"], 1);
        let request = server.await.unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(
            request,
            format!(
                "POST /p HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\nX-Key: v\r\nContent-Length: 2\r\n\r\n{{}}"
            )
        );
    }

    #[tokio::test]
    async fn a_given_content_length_is_not_repeated_and_a_body_without_one_is_read_to_the_end() {
        let (addr, server) = serve_once(b"HTTP/1.1 200 OK\r\n\r\nall of it", 0).await;
        let got = http(addr, "GET", "/", &[("content-length", "0")], b"").await;
        assert_eq!((got.status, got.text().as_str()), (200, "all of it"));
        let request = server.await.unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(request.matches("ontent-length").count(), 1, "{request}");
    }
}
