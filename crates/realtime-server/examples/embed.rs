//! Embedding realtime in a Rust service: the README's example, compiled by `cargo xtask test`.
//!
//! Run it with `JWT_SECRET=<32+ bytes> API_KEY=<16+ bytes> cargo run -p realtime-server --example embed`.

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use realtime_auth_jwt::{JwtConfig, JwtVerifier};
use realtime_broker_mem::{InMemoryBroker, InMemoryPresence};
use realtime_core::{Connection, Envelope, UserId};
use realtime_ports::{InboundError, InboundHandler, InboundReply, RealtimeApi};
use realtime_registry_mem::InMemoryRegistry;
use realtime_service::{Adapters, RealtimeService, ServiceConfig};
use realtime_transport_warp::{ApiKey, Deps, Server, TransportConfig};

/// The application's handler for client messages (here: echo `chat` back, refuse the rest).
#[derive(Debug)]
struct MyInbound;

#[async_trait]
impl InboundHandler for MyInbound {
    async fn handle(
        &self,
        _from: &Connection,
        message: Envelope,
    ) -> Result<InboundReply, InboundError> {
        match message.kind.as_str() {
            "chat" => Ok(Some(message)),
            _ => Err(InboundError::Unsupported),
        }
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
    let verifier = Arc::new(JwtVerifier::new(
        JwtConfig::hs256(std::env::var("JWT_SECRET")?.into_bytes())
            .with_leeway(Duration::from_secs(10)),
    )?);
    let deps = Deps::new(service.clone(), verifier).with_inbound(Arc::new(MyInbound));
    // At least 16 bytes (`ApiKey::new` refuses shorter keys).
    let config =
        TransportConfig { api_key: ApiKey::new(std::env::var("API_KEY")?)?, ..Default::default() };

    // Serve it on its own port (or mount `realtime_transport_warp::routes(deps, config, &shutdown)`
    // inside an existing warp app).
    let server = Server::bind("127.0.0.1:3000".parse()?, deps, config).await?;
    let shutdown = server.shutdown_handle();
    let serving = tokio::spawn(server.run());

    // Publish from Rust, anywhere in the backend.
    let note =
        Envelope::from_parts("notification", serde_json::json!({"message": "New order #1234"}))?;
    let delivered = service.send_to_user(&UserId::new("alice")?, &note).await?;
    tracing::info!(delivered, "sent");

    tokio::signal::ctrl_c().await?;
    shutdown.shutdown(); // clients get 1012, then run() returns
    serving.await?;
    Ok(())
}
