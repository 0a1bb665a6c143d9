//! A WebSocket test client for the realtime endpoint (`/ws`): open an upgrade with a token in
//! the query or the subprotocol header, read JSON frames, expect the close frame, and read a
//! client on a task of its own.
//!
//! Every wait is bounded by [`WAIT`]; a helper that fails panics with what went wrong.

use std::net::SocketAddr;

use futures_util::{SinkExt, StreamExt};
use realtime_core::ConnectionId;
use serde_json::Value;
use tokio::net::TcpStream;
use tokio::sync::mpsc::{UnboundedReceiver, unbounded_channel};
use tokio::task::JoinHandle;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::http::HeaderValue;
use tokio_tungstenite::tungstenite::protocol::CloseFrame;
use tokio_tungstenite::tungstenite::{Error as WsError, Message};
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

use crate::WAIT;

/// A client WebSocket over plain TCP.
pub type Ws = WebSocketStream<MaybeTlsStream<TcpStream>>;

/// Options of an upgrade request to `ws://{addr}/ws`.
#[derive(Debug, Default, Clone)]
pub struct Connect<'a> {
    /// Sent as `?token=…` (as it is, not percent-encoded).
    pub token_query: Option<&'a str>,
    /// The `Sec-WebSocket-Protocol` header value, e.g. `"realtime.v1, bearer.<jwt>"`.
    pub subprotocol: Option<&'a str>,
    /// The `Origin` header value.
    pub origin: Option<&'a str>,
    /// The `Cookie` header value.
    pub cookie: Option<&'a str>,
    /// More query parameters, appended as they are (e.g. `"job_id=7"`).
    pub query: Option<&'a str>,
}

/// Opens a WebSocket to `ws://{addr}/ws`; on success returns it with the subprotocol the
/// server chose, and `Err(status)` when the server answers something other than 101.
///
/// # Panics
/// When the request cannot be built, the connection fails for another reason than an HTTP
/// refusal, or nothing is answered within [`WAIT`].
pub async fn try_connect(
    addr: SocketAddr,
    options: Connect<'_>,
) -> Result<(Ws, Option<String>), u16> {
    let params: Vec<String> = options
        .token_query
        .map(|token| format!("token={token}"))
        .into_iter()
        .chain(options.query.map(str::to_owned))
        .collect();
    let url = match params.as_slice() {
        [] => format!("ws://{addr}/ws"),
        params => format!("ws://{addr}/ws?{}", params.join("&")),
    };
    let mut request = url.into_client_request().unwrap_or_else(|e| panic!("{e}"));
    if let Some(protocols) = options.subprotocol {
        request.headers_mut().insert(
            "sec-websocket-protocol",
            HeaderValue::from_str(protocols).unwrap_or_else(|e| panic!("{e}")),
        );
    }
    if let Some(cookie) = options.cookie {
        request
            .headers_mut()
            .insert("cookie", HeaderValue::from_str(cookie).unwrap_or_else(|e| panic!("{e}")));
    }
    if let Some(origin) = options.origin {
        request
            .headers_mut()
            .insert("origin", HeaderValue::from_str(origin).unwrap_or_else(|e| panic!("{e}")));
    }
    match tokio::time::timeout(WAIT, tokio_tungstenite::connect_async(request)).await {
        Err(_) => panic!("connect timed out"),
        Ok(Ok((ws, response))) => {
            assert_eq!(response.status().as_u16(), 101);
            let protocol = response
                .headers()
                .get("sec-websocket-protocol")
                .and_then(|v| v.to_str().ok())
                .map(str::to_owned);
            Ok((ws, protocol))
        }
        Ok(Err(WsError::Http(response))) => Err(response.status().as_u16()),
        Ok(Err(e)) => panic!("connect failed: {e}"),
    }
}

/// Opens a WebSocket with `token` in the query and reads the `connected` frame; returns the
/// socket and the connection id the server announced.
///
/// # Panics
/// When the upgrade is refused or the first frame is not a well-formed `connected` frame.
pub async fn connect(addr: SocketAddr, token: &str) -> (Ws, ConnectionId) {
    let (mut ws, _) = try_connect(addr, Connect { token_query: Some(token), ..Connect::default() })
        .await
        .unwrap_or_else(|status| panic!("upgrade refused with {status}"));
    let hello = next_json(&mut ws).await;
    assert_eq!(hello["type"], "connected", "{hello}");
    let id = hello["payload"]["connection_id"].as_str().unwrap_or_else(|| panic!("{hello}"));
    (ws, ConnectionId::parse(id).unwrap_or_else(|e| panic!("{e}")))
}

/// The next text message as JSON, skipping pings and pongs.
///
/// # Panics
/// When nothing comes within [`WAIT`], the stream ends or fails, the next data message is
/// not text, or the text is not JSON.
pub async fn next_json(ws: &mut Ws) -> Value {
    loop {
        let message = tokio::time::timeout(WAIT, ws.next())
            .await
            .unwrap_or_else(|_| panic!("no message in time"))
            .unwrap_or_else(|| panic!("stream ended"))
            .unwrap_or_else(|e| panic!("read failed: {e}"));
        match message {
            Message::Text(text) => {
                return serde_json::from_str(text.as_str()).unwrap_or_else(|e| panic!("{e}"));
            }
            Message::Ping(_) | Message::Pong(_) => {}
            other => panic!("expected a text message, got {other:?}"),
        }
    }
}

/// Sends a text message.
///
/// # Panics
/// When the send fails.
pub async fn send_text(ws: &mut Ws, text: &str) {
    ws.send(Message::text(text)).await.unwrap_or_else(|e| panic!("send failed: {e}"));
}

/// Reads until the close frame (data frames are skipped) and returns its code and reason.
/// What comes after the close frame is not read; see [`expect_close_then_end`] for the
/// stricter check.
///
/// # Panics
/// When no close frame comes within [`WAIT`], it has no code, or the stream fails or ends
/// before it.
pub async fn expect_close(ws: &mut Ws) -> (u16, String) {
    tokio::time::timeout(WAIT, read_close(ws))
        .await
        .unwrap_or_else(|_| panic!("no close frame in time"))
}

/// Like [`expect_close`], then reads on to the end of the stream so that the closing
/// handshake completes, and requires that no data follows the close frame. A read error
/// after the close frame ends the stream; a later close frame's code and reason replace the
/// first's.
///
/// # Panics
/// As [`expect_close`], and when data follows the close frame or the whole exchange takes
/// longer than [`WAIT`].
pub async fn expect_close_then_end(ws: &mut Ws) -> (u16, String) {
    let read = async {
        let mut close = read_close(ws).await;
        while let Some(message) = ws.next().await {
            match message {
                Ok(Message::Close(Some(CloseFrame { code, reason }))) => {
                    close = (u16::from(code), reason.as_str().to_owned());
                }
                Ok(Message::Close(None)) => panic!("close frame without a code"),
                Ok(_) => panic!("data after the close frame"),
                Err(_) => break,
            }
        }
        close
    };
    tokio::time::timeout(WAIT, read).await.unwrap_or_else(|_| panic!("no close frame in time"))
}

/// Reads up to and including the first close frame, with no time limit.
async fn read_close(ws: &mut Ws) -> (u16, String) {
    while let Some(message) = ws.next().await {
        match message {
            Ok(Message::Close(Some(CloseFrame { code, reason }))) => {
                return (u16::from(code), reason.as_str().to_owned());
            }
            Ok(Message::Close(None)) => panic!("close frame without a code"),
            Ok(_) => {}
            Err(e) => panic!("read failed before the close frame: {e}"),
        }
    }
    panic!("stream ended without a close frame")
}

/// Reads `ws` on a task of its own: every text message is parsed as JSON, passed through
/// `map`, and sent on the returned channel; other messages are skipped. The task ends at the
/// end of the stream, at a read error, or when the receiver is dropped (or the task is
/// aborted through the returned handle).
///
/// # Panics
/// The task panics when a text message is not JSON.
pub fn spawn_json_reader<T, F>(mut ws: Ws, map: F) -> (JoinHandle<()>, UnboundedReceiver<T>)
where
    T: Send + 'static,
    F: Fn(Value) -> T + Send + 'static,
{
    let (tx, rx) = unbounded_channel();
    let task = tokio::spawn(async move {
        while let Some(Ok(message)) = ws.next().await {
            if let Message::Text(text) = message {
                let value: Value =
                    serde_json::from_str(text.as_str()).unwrap_or_else(|e| panic!("{e}"));
                if tx.send(map(value)).is_err() {
                    break;
                }
            }
        }
    });
    (task, rx)
}

/// The `since` query parameter of a reconnect (`since=<percent-encoded JSON>`) for
/// `positions`, a JSON object of stream names to `{"epoch": .., "offset": ..}`; pass it as
/// [`Connect::query`].
pub fn since_query(positions: &Value) -> String {
    format!("since={}", percent_encode(&positions.to_string()))
}

/// Percent-encodes every byte of `raw` but the unreserved ones (RFC 3986: letters, digits,
/// `-._~`).
pub fn percent_encode(raw: &str) -> String {
    let mut out = String::with_capacity(raw.len() * 3);
    for byte in raw.bytes() {
        if byte.is_ascii_alphanumeric() || matches!(byte, b'-' | b'.' | b'_' | b'~') {
            out.push(char::from(byte));
        } else {
            out.push_str(&format!("%{byte:02X}"));
        }
    }
    out
}

/// The next text message as JSON, skipping pings and pongs; `Err(Some(code))` when a close
/// frame comes instead (its code), `Err(None)` when the stream ends or fails without one.
/// For clients that expect the server may close them (a slow consumer, a lagged stream).
///
/// # Panics
/// When nothing comes within [`WAIT`], a data message is not text, or the text is not JSON.
pub async fn next_json_or_close(ws: &mut Ws) -> Result<Value, Option<u16>> {
    loop {
        let message = tokio::time::timeout(WAIT, ws.next())
            .await
            .unwrap_or_else(|_| panic!("no message in time"));
        match message {
            Some(Ok(Message::Text(text))) => {
                return Ok(serde_json::from_str(text.as_str()).unwrap_or_else(|e| panic!("{e}")));
            }
            Some(Ok(Message::Ping(_) | Message::Pong(_))) => {}
            Some(Ok(Message::Close(frame))) => return Err(frame.map(|f| u16::from(f.code))),
            Some(Ok(other)) => panic!("expected a text message, got {other:?}"),
            Some(Err(_)) | None => return Err(None),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn since_query_percent_encodes_the_positions() {
        let since = json!({"user:alice": {"epoch": "hD3kQz9a", "offset": 17}});
        assert_eq!(
            since_query(&since),
            "since=%7B%22user%3Aalice%22%3A%7B%22epoch%22%3A%22hD3kQz9a%22%2C%22offset%22%3A17%7D%7D"
        );
        assert_eq!(percent_encode("a-b.c_d~e f/é"), "a-b.c_d~e%20f%2F%C3%A9");
    }
}
