//! Mounting realtime into an existing axum app: the README's example, compiled by
//! `cargo xtask test`.
//!
//! Run it with `JWT_SECRET=<32+ bytes> API_KEY=<16+ bytes> cargo run -p realtime-server --example mount_axum`.

use std::sync::Arc;

use axum::Router;
use axum::extract::State;
use axum::routing::get;
use realtime_auth_jwt::{JwtConfig, JwtVerifier};
use realtime_broker_mem::{InMemoryBroker, InMemoryPresence};
use realtime_core::{Envelope, UserId};
use realtime_ports::RealtimeApi;
use realtime_registry_mem::InMemoryRegistry;
use realtime_service::{Adapters, RealtimeService, ServiceConfig};
use realtime_transport_axum::{ApiKey, Deps, ShutdownHandle, TransportConfig};

/// The application's own state.
#[derive(Clone)]
struct AppState {
    realtime: Arc<dyn RealtimeApi>,
}

/// An application route that publishes: `POST /orders/<user>` notifies that user's tabs.
async fn order_placed(
    State(state): State<AppState>,
    axum::extract::Path(user): axum::extract::Path<String>,
) -> String {
    let Ok(user) = UserId::new(user) else { return "invalid user".to_owned() };
    let Ok(note) = Envelope::from_parts("notification", serde_json::json!({"order": 1234})) else {
        return "invalid message".to_owned();
    };
    match state.realtime.send_to_user(&user, &note).await {
        Ok(delivered) => format!("delivered to {delivered} connections"),
        Err(error) => format!("not delivered: {error}"),
    }
}

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

    // README: mount-axum begin
    // The existing app, with its state and its routes...
    let shutdown = ShutdownHandle::new();
    let app = Router::new()
        .route("/orders/{user}", axum::routing::post(order_placed))
        .route("/", get(|| async { "the app's home page" }))
        // ...and realtime's routes (`/ws`, `/api/..`, `/healthz`) merged in, or
        // `.nest("/realtime", ..)` to put them under a prefix. They set no fallback, so the
        // app keeps its own (here the transport's JSON 404).
        .merge(realtime_transport_axum::router(deps, config.clone(), &shutdown))
        .fallback(realtime_transport_axum::not_found)
        .with_state(AppState { realtime: service });

    // axum's server serves the upgrades `/ws` needs; stop it when realtime's shutdown starts.
    let listener = tokio::net::TcpListener::bind("127.0.0.1:3000").await?;
    let serving = tokio::spawn(
        axum::serve(listener, app).with_graceful_shutdown(shutdown.requested()).into_future(),
    );
    tokio::signal::ctrl_c().await?;
    // Clients get 1012 "server restart" and are unregistered; then the server stops.
    shutdown.drain(config.shutdown_grace).await;
    serving.await??;
    // README: mount-axum end
    Ok(())
}
