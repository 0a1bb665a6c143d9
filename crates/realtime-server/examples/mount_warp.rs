//! Mounting realtime into an existing warp app: the README's example, compiled by
//! `cargo xtask test`.
//!
//! Run it with `JWT_SECRET=<32+ bytes> API_KEY=<16+ bytes> cargo run -p realtime-server --example mount_warp`.

use std::sync::Arc;

use realtime_auth_jwt::{JwtConfig, JwtVerifier};
use realtime_broker_mem::{InMemoryBroker, InMemoryPresence};
use realtime_ports::RealtimeApi;
use realtime_registry_mem::InMemoryRegistry;
use realtime_service::{Adapters, RealtimeService, ServiceConfig};
use realtime_transport_warp::{ApiKey, Deps, ShutdownHandle, TransportConfig, filters};
use warp::Filter;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let adapters = Adapters::new(
        Arc::new(InMemoryRegistry::new()),
        Arc::new(InMemoryBroker::default()),
        Arc::new(InMemoryPresence::new()),
    );
    let service: Arc<dyn RealtimeApi> = RealtimeService::new(adapters, ServiceConfig::default());
    let verifier =
        Arc::new(JwtVerifier::new(JwtConfig::hs256(std::env::var("JWT_SECRET")?.into_bytes()))?);
    let deps = Deps::new(service.clone(), verifier);
    let config =
        TransportConfig { api_key: ApiKey::new(std::env::var("API_KEY")?)?, ..Default::default() };
    config.validate()?;

    // README: mount-warp begin
    // The existing app's routes...
    let app = warp::path!("hello").and(warp::get()).map(|| "the app's hello");
    // ...and realtime's (`/ws`, `/api/..`, `/healthz`), in either order. Rejections stay the
    // app's to recover; `filters::recover` gives the transport's JSON 404/405.
    let shutdown = ShutdownHandle::new();
    let realtime = realtime_transport_warp::routes(deps, config.clone(), &shutdown);
    let routes = app.map(warp::Reply::into_response).or(realtime).unify().recover(filters::recover);

    // warp's server serves the upgrades `/ws` needs; stop it when realtime's shutdown starts.
    let listener = tokio::net::TcpListener::bind("127.0.0.1:3000").await?;
    let serving = warp::serve(routes).incoming(listener).graceful(shutdown.requested()).run();
    let serving = tokio::spawn(serving);
    tokio::signal::ctrl_c().await?;
    // Clients get 1012 "server restart" and are unregistered; then the server stops.
    shutdown.drain(config.shutdown_grace).await;
    serving.await?;
    // README: mount-warp end
    Ok(())
}
