//! End-to-end tests of the realtime server: the real stack (in-memory registry, service, JWT
//! verifier, warp transport) on 127.0.0.1:0, a real WebSocket client and real JWTs.

mod auth;
mod browser;
mod closing;
mod cluster;
mod compression;
mod config;
mod demo;
mod disconnect;
mod http_limits;
mod http_streams;
mod js_client;
mod kick;
mod lifecycle;
mod limits;
mod logs;
mod node_crash;
mod presence_events;
mod publish_api;
mod recovery_model;
mod redis_nodes;
mod routing;
mod rust_client;
mod smoke;
mod streams;
mod support;
