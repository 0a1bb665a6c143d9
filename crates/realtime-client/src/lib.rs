//! The Rust client of realtime: one WebSocket to a realtime server, kept open, for Rust
//! services, tools and tests. It behaves as the JavaScript client (`clients/js`) does and
//! follows `docs/protocol.md`:
//!
//! - the token comes from a [`TokenSource`] (any async closure), asked before every connect
//!   and again before the token's `expires_at`, when it is refreshed in band (a `refresh`
//!   request: no reconnect). It travels in the `bearer.<JWT>` subprotocol beside
//!   `realtime.v1`, never in the URL;
//! - reconnects wait a full-jitter exponential [`Backoff`] (reset after a stable connection);
//! - the close code decides the next step ([`next_step`]): 4001 (token expired) reconnects at
//!   once with a new token; 4003 (kicked), 4005 (revoked) and a handshake 403 stop
//!   ([`Event::Stopped`]); anything else (1012 restart, 4004 heartbeat, 4008 slow consumer,
//!   4010 lagged, a lost socket) reconnects with backoff;
//! - the last `(epoch, offset)` of each stream is kept; every reconnect sends them as
//!   `since` and resubscribes the topics with theirs, so what was missed is replayed and the
//!   application sees each message once, in order (a message at or below its stream's
//!   position is dropped). A stream that could not be recovered is an explicit
//!   [`Event::Unrecovered`];
//! - requests carry an `id` and are answered by the frame with that id, or time out.
//!
//! ```no_run
//! use realtime_client::{Client, ClientConfig, Event};
//!
//! # async fn fetch_token() -> Result<String, std::io::Error> { Ok(String::new()) }
//! # async fn run() -> Result<(), Box<dyn std::error::Error>> {
//! let config = ClientConfig::new("ws://127.0.0.1:3000/ws");
//! let (client, mut events) = Client::start(config, || fetch_token())?;
//! let orders = client.subscribe("orders").await?;
//! client.send("chat.say", serde_json::json!({"text": "hi"})).await?;
//! while let Some(event) = events.next_event().await {
//!     match event {
//!         Event::Message(message) => println!("{} {}", message.kind, message.payload),
//!         Event::Unrecovered { stream, .. } => println!("missed messages of {stream}: reload"),
//!         Event::Stopped(reason) => println!("stopped: {reason:?}"),
//!         _ => {}
//!     }
//! }
//! orders.unsubscribe().await?;
//! client.close().await;
//! # Ok(())
//! # }
//! ```
//!
//! The client runs on a task of the current tokio runtime; [`Client`] is a cheap handle to
//! it, [`Events`] the single stream of what happened. It stops on [`Client::close`], on a
//! stopping close code, or when every `Client` and the `Events` are dropped. Only `ws://`
//! is supported (no TLS in this build: put a TLS-terminating proxy in front).

mod backoff;
mod client;
mod config;
mod driver;
mod event;
mod policy;
mod session;

pub use backoff::Backoff;
pub use client::{Client, Reply, Subscription};
pub use config::{ClientConfig, ConfigError, TokenError, TokenFuture, TokenSource};
pub use event::{ClientError, Connected, Event, Events, Message};
pub use policy::{Disconnect, Step, Stop, next_step};
pub use realtime_core::{Epoch, Position, StreamName, StreamState, TopicName};
