//! The realtime server: wires the default adapters (in-memory registry, JWT verification, warp
//! transport) around the service, and adds the development conveniences (generated secrets,
//! printed tokens, the demo page).
//!
//! `main.rs` parses [`Config`] and calls [`start`]; tests call [`start`] directly.
//!
//! **Architecture Invariant:** this is the only crate that knows every adapter; no library crate
//! depends on it.

mod app;
mod config;
mod demo;
mod dev;

pub use app::{Running, start};
pub use config::{BrokerKind, Config, JwtAlgorithm, LogFormat};
pub use dev::DevCredentials;
