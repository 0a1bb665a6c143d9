//! Integration tests of the warp transport: the transport suite of
//! `realtime-transport-http` (the same tests the axum transport runs) against [`Server`],
//! and embedding into an application's own warp routes.

/// The bundled server the suite starts.
use realtime_transport_warp::Server as TransportServer;

mod embedding;
#[path = "../../../realtime-transport-http/tests/suite/mod.rs"]
mod suite;
