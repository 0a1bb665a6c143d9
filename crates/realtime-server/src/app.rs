//! Builds the stack from a [`Config`] and runs it.

use std::sync::{Arc, OnceLock};
use std::time::Duration;

use anyhow::Context;
use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusHandle};
use realtime_auth_jwt::{JwtConfig, JwtKey, JwtVerifier};
use realtime_broker_mem::{InMemoryBroker, InMemoryBrokerConfig, InMemoryPresence};
use realtime_broker_redis::{RedisBroker, RedisBrokerConfig};
use realtime_core::{LivenessConfig, RateLimitConfig};
use realtime_ports::{Broker, InboundHandler, Presence, RealtimeApi, TokenVerifier};
use realtime_registry_mem::InMemoryRegistry;
use realtime_service::{Adapters, RealtimeService, ServiceConfig};
use realtime_transport_warp::{
    ApiKey, Deps, MetricsServer, Server, ShutdownHandle, TransportConfig,
};
use tokio::task::JoinHandle;

use crate::config::{BrokerKind, Config, JwtAlgorithm};
use crate::demo::{DEMO_PAGE, DemoHandler};
use crate::dev::{self, DevCredentials};

/// The JavaScript client (`clients/js/src/index.js`), served at `/client.js` whether or not
/// the demo is on: it is public code, and any page of the application may import it.
pub(crate) const CLIENT_SCRIPT: &str = include_str!("../../../clients/js/src/index.js");

/// A started server.
pub struct Running {
    /// The address it listens on (useful with port 0).
    pub addr: std::net::SocketAddr,
    /// The address `GET /metrics` is served on without a key, when `metrics_listen` is set.
    pub metrics_addr: Option<std::net::SocketAddr>,
    /// Triggers the graceful shutdown.
    pub shutdown: ShutdownHandle,
    /// The API key for POST /api/publish (configured or generated).
    pub api_key: String,
    /// Development credentials, when no JWT key was configured.
    pub dev: Option<DevCredentials>,
    /// The service, for publishing from Rust in the same process.
    pub api: Arc<dyn RealtimeApi>,
    task: JoinHandle<()>,
    metrics_task: Option<JoinHandle<()>>,
}

impl std::fmt::Debug for Running {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Running").field("addr", &self.addr).finish_non_exhaustive()
    }
}

impl Running {
    /// Waits until the server has shut down and drained its connections.
    pub async fn join(self) {
        if let Err(e) = self.task.await {
            tracing::error!(error = %e, "server task failed");
        }
        if let Some(metrics) = self.metrics_task
            && let Err(e) = metrics.await
        {
            tracing::error!(error = %e, "metrics server task failed");
        }
    }
}

/// The process-wide Prometheus recorder (the `metrics` facade takes one global recorder, so
/// several servers in one process, as in tests, share it).
fn prometheus() -> Option<PrometheusHandle> {
    static HANDLE: OnceLock<Option<PrometheusHandle>> = OnceLock::new();
    HANDLE
        .get_or_init(|| match PrometheusBuilder::new().install_recorder() {
            Ok(handle) => {
                realtime_service::describe_metrics();
                realtime_broker_redis::describe_metrics();
                Some(handle)
            }
            Err(e) => {
                tracing::warn!(error = %e, "metrics recorder not installed; /metrics disabled");
                None
            }
        })
        .clone()
}

/// Builds the stack and starts serving. Returns once the listeners are bound.
///
/// # Errors
/// When a setting cannot work ([`Config::validate`] names it), development mode is asked to
/// listen on a non-loopback address, the JWT key is invalid (for example, a secret shorter
/// than 32 bytes or an unreadable PEM file) or an address cannot be bound.
pub async fn start(config: Config) -> anyhow::Result<Running> {
    config.validate().map_err(anyhow::Error::msg)?;
    let (verifier, dev) = verifier(&config)?;
    let api_key = match &config.api_key {
        Some(key) => key.clone(),
        None => dev::random_hex(24),
    };
    let key = ApiKey::new(&api_key).context("REALTIME_API_KEY (--api-key)")?;
    let service_config = ServiceConfig {
        max_connections: config.max_connections,
        required_permissions: config.permissions().map_err(anyhow::Error::msg)?,
        max_message_bytes: config.max_message_bytes,
        max_topics_per_connection: config.max_topics,
        max_recovery: config.max_recovery,
        presence_event_prefixes: config.presence_event_prefixes().map_err(anyhow::Error::msg)?,
        revocation_ttl: Duration::from_secs(config.revocation_ttl_secs),
        ..ServiceConfig::default()
    };
    service_config.validate().context("invalid service configuration")?;
    let history = config.history_policy().map_err(anyhow::Error::msg)?;
    let (broker, presence): (Arc<dyn Broker>, Arc<dyn Presence>) =
        match (config.broker, &config.redis_url) {
            (BrokerKind::Redis, Some(url)) => {
                let redis = RedisBrokerConfig {
                    prefix: config.redis_prefix.clone(),
                    history,
                    node_id: config.node_id.clone(),
                    presence_ttl: Duration::from_secs(config.presence_ttl_secs),
                    ..RedisBrokerConfig::new(url.clone())
                };
                let broker = RedisBroker::connect(redis)
                    .await
                    .context("cannot use Redis (REALTIME_BROKER=redis, REALTIME_REDIS_URL)")?;
                tracing::info!(
                    node_id = broker.node_id(),
                    shards = broker.state().shards,
                    "streams and presence on Redis"
                );
                let presence = broker.presence();
                (Arc::new(broker), presence)
            }
            _ => (
                Arc::new(InMemoryBroker::new(InMemoryBrokerConfig {
                    history,
                    ..InMemoryBrokerConfig::default()
                })),
                Arc::new(InMemoryPresence::new()),
            ),
        };
    let adapters = Adapters {
        registry: Arc::new(InMemoryRegistry::new()),
        broker,
        presence,
        authorizer: None,
    };
    let service: Arc<dyn RealtimeApi> = RealtimeService::new(adapters, service_config);
    let demo = config.demo.unwrap_or(dev.is_some());
    let inbound =
        demo.then(|| Arc::new(DemoHandler::new(service.clone())) as Arc<dyn InboundHandler>);
    let metrics = prometheus()
        .map(|handle| Arc::new(move || handle.render()) as Arc<dyn Fn() -> String + Send + Sync>);
    // With a metrics address, /metrics is served there (without the key) and not on the main
    // listener; without one, on the main listener behind the API key.
    let (metrics_server, metrics) = match (config.metrics_listen, metrics) {
        (Some(addr), Some(render)) => {
            let server = MetricsServer::bind(addr, render)
                .await
                .with_context(|| format!("cannot listen on {addr} (REALTIME_METRICS_LISTEN)"))?;
            (Some(server), None)
        }
        (_, metrics) => (None, metrics),
    };
    let transport = TransportConfig {
        allowed_origins: config.allowed_origins.clone(),
        max_message_bytes: config.max_message_bytes,
        outbound_queue: config.outbound_queue,
        liveness: LivenessConfig {
            ping_interval: Duration::from_secs(config.ping_interval_secs),
            pong_timeout: Duration::from_secs(config.pong_timeout_secs),
        },
        shutdown_grace: Duration::from_secs(config.shutdown_grace_secs),
        inbound_timeout: Duration::from_millis(config.inbound_timeout_ms),
        inbound_rate: RateLimitConfig {
            per_second: config.inbound_rate,
            burst: config.inbound_burst,
        },
        api_key: key,
        demo_page: demo.then_some(DEMO_PAGE),
        client_script: Some(CLIENT_SCRIPT),
        header_read_timeout: Duration::from_secs(config.header_read_timeout_secs),
        max_header_bytes: config.max_header_bytes,
        max_http_connections: config.max_http_connections,
        permessage_deflate: config.websocket_compression,
        compression_min_bytes: config.websocket_compression_min_bytes,
        ..TransportConfig::default()
    };
    transport.validate().context("invalid transport configuration")?;
    let deps = Deps { api: service.clone(), verifier, inbound, metrics };
    let server = Server::bind(config.listen, deps, transport)
        .await
        .with_context(|| format!("cannot listen on {}", config.listen))?;
    let addr = server.local_addr();
    let shutdown = server.shutdown_handle();
    let metrics_addr = metrics_server.as_ref().map(MetricsServer::local_addr);
    let metrics_task = metrics_server.map(|metrics| tokio::spawn(metrics.run(shutdown.clone())));
    let task = tokio::spawn(server.run());
    tracing::info!(%addr, ?metrics_addr, dev = dev.is_some(), demo, "realtime server listening");
    Ok(Running { addr, metrics_addr, shutdown, api_key, dev, api: service, task, metrics_task })
}

fn verifier(config: &Config) -> anyhow::Result<(Arc<dyn TokenVerifier>, Option<DevCredentials>)> {
    let (key, dev) = match (&config.jwt_secret, &config.jwt_public_key_file, config.jwt_algorithm) {
        (Some(secret), None, JwtAlgorithm::Hs256) => {
            (JwtKey::Hs256 { secret: secret.as_bytes().to_vec() }, None)
        }
        (Some(_), None, alg) => {
            anyhow::bail!(
                "REALTIME_JWT_SECRET is for HS256; {alg:?} needs REALTIME_JWT_PUBLIC_KEY_FILE"
            )
        }
        (None, Some(path), alg) => {
            let pem = std::fs::read(path)
                .with_context(|| format!("cannot read JWT public key {}", path.display()))?;
            match alg {
                JwtAlgorithm::Rs256 => (JwtKey::Rs256 { public_key_pem: pem }, None),
                JwtAlgorithm::Es256 => (JwtKey::Es256 { public_key_pem: pem }, None),
                JwtAlgorithm::Hs256 => {
                    anyhow::bail!("a public key file needs REALTIME_JWT_ALGORITHM=rs256 or es256")
                }
            }
        }
        (Some(_), Some(_), _) => anyhow::bail!("set either a JWT secret or a public key file"),
        (None, None, _) => {
            let creds = dev::credentials(dev::random_hex(32))?;
            (JwtKey::Hs256 { secret: creds.jwt_secret.as_bytes().to_vec() }, Some(creds))
        }
    };
    let verifier = JwtVerifier::new(JwtConfig {
        key,
        issuer: config.jwt_issuer.clone(),
        audience: config.jwt_audience.clone(),
        leeway: Duration::from_secs(config.jwt_leeway_secs),
    })
    .context("invalid JWT configuration")?;
    Ok((Arc::new(verifier), dev))
}
