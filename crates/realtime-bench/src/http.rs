//! The benchmark's HTTP/1.1 client (`POST /api/publish`, `GET /healthz`, `GET /metrics`) on
//! hyper: one keep-alive connection, opened again when the server closed it.

use std::net::SocketAddr;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full, Limited};
use hyper::client::conn::http1::SendRequest;
use hyper::header::{AUTHORIZATION, CONTENT_TYPE, HOST};
use hyper::{Method, Request};
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;

use crate::BenchError;

/// Largest response body the client reads, in bytes.
const MAX_BODY: usize = 1024 * 1024;

/// A keep-alive HTTP/1.1 client for one server. Reconnects when the server closed the
/// connection.
#[derive(Debug)]
pub struct HttpClient {
    addr: SocketAddr,
    bearer: Option<String>,
    timeout: Duration,
    conn: Option<SendRequest<Full<Bytes>>>,
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
        self.request(Method::POST, path, Bytes::copy_from_slice(body)).await
    }

    /// `GET path`.
    ///
    /// # Errors
    /// As [`HttpClient::post_json`].
    pub async fn get(&mut self, path: &str) -> Result<Response, BenchError> {
        self.request(Method::GET, path, Bytes::new()).await
    }

    async fn request(
        &mut self,
        method: Method,
        path: &str,
        body: Bytes,
    ) -> Result<Response, BenchError> {
        // A reused connection may have been closed by the server meanwhile: retry once on a
        // fresh one.
        let reused = self.conn.is_some();
        match self.exchange(&method, path, body.clone()).await {
            Ok(r) => Ok(r),
            Err(_) if reused => self.exchange(&method, path, body).await,
            Err(e) => Err(e),
        }
    }

    async fn exchange(
        &mut self,
        method: &Method,
        path: &str,
        body: Bytes,
    ) -> Result<Response, BenchError> {
        let result = tokio::time::timeout(self.timeout, self.exchange_inner(method, path, body));
        match result.await {
            Ok(Ok(response)) => Ok(response),
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

    async fn exchange_inner(
        &mut self,
        method: &Method,
        path: &str,
        body: Bytes,
    ) -> Result<Response, BenchError> {
        let mut builder =
            Request::builder().method(method).uri(path).header(HOST, self.addr.to_string());
        if let Some(bearer) = &self.bearer {
            builder = builder.header(AUTHORIZATION, format!("Bearer {bearer}"));
        }
        if method != Method::GET {
            builder = builder.header(CONTENT_TYPE, "application/json");
        }
        let request =
            builder.body(Full::new(body)).map_err(|e| BenchError::Protocol(e.to_string()))?;
        let sender = match self.conn.take() {
            Some(sender) if !sender.is_closed() => self.conn.insert(sender),
            _ => self.conn.insert(connect(self.addr).await?),
        };
        sender.ready().await.map_err(http_error)?;
        let response = sender.send_request(request).await.map_err(http_error)?;
        let status = response.status().as_u16();
        let body = Limited::new(response.into_body(), MAX_BODY)
            .collect()
            .await
            .map_err(|e| BenchError::Protocol(format!("reading the response body: {e}")))?
            .to_bytes()
            .to_vec();
        Ok(Response { status, body })
    }
}

/// Opens a connection to `addr`; its I/O runs on a task of its own until either side closes.
async fn connect(addr: SocketAddr) -> Result<SendRequest<Full<Bytes>>, BenchError> {
    let stream = TcpStream::connect(addr).await?;
    stream.set_nodelay(true)?;
    let (sender, connection) =
        hyper::client::conn::http1::handshake(TokioIo::new(stream)).await.map_err(http_error)?;
    tokio::spawn(async move {
        // The error, if any, reaches the next request through `SendRequest`.
        let _ = connection.await;
    });
    Ok(sender)
}

fn http_error(e: hyper::Error) -> BenchError {
    BenchError::Protocol(format!("HTTP: {e}"))
}
