//! Integration tests of the warp transport: real sockets on 127.0.0.1:0, a real WebSocket
//! client, and fakes of the service, the verifier and the inbound handler.

mod backend_api;
mod closing;
mod embedding;
mod handler;
mod handshake;
mod http_api;
mod http_limits;
mod lifecycle;
mod logs;
mod rate_limit;
mod session;
mod slow_consumer;
mod support;
mod verifier;
mod violations;
