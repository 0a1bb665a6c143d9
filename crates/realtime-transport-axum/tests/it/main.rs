//! Integration tests of the axum transport: the transport suite of
//! `realtime-transport-http` (the same tests the warp transport runs) against [`Server`],
//! and embedding into an application's own axum router.

/// The bundled server the suite starts.
use realtime_transport_axum::Server as TransportServer;

mod embedding;
#[path = "../../../realtime-transport-http/tests/suite/mod.rs"]
mod suite;
