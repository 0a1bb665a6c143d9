//! Server configuration: command-line flags and `REALTIME_*` environment variables.

use std::net::SocketAddr;
use std::path::PathBuf;

use clap::{Parser, ValueEnum};

/// The realtime server: authenticated WebSocket messaging for web backends.
///
/// With no configuration it starts a development server on 127.0.0.1:3000 with a random JWT
/// secret and API key, and prints ready-to-use tokens. Every flag can also be set through the
/// environment variable shown with it.
#[derive(Debug, Clone, Parser)]
#[command(name = "realtime-server", version, about, long_about = None)]
pub struct Config {
    /// Address to listen on.
    #[arg(long, env = "REALTIME_LISTEN", default_value = "127.0.0.1:3000")]
    pub listen: SocketAddr,

    /// HS256 secret for verifying client JWTs (at least 32 bytes). Without it (and without a
    /// public key) a random secret is generated and development tokens are printed.
    #[arg(long, env = "REALTIME_JWT_SECRET", hide_env_values = true)]
    pub jwt_secret: Option<String>,

    /// PEM file with the public key for RS256 or ES256 tokens (instead of a secret).
    #[arg(long, env = "REALTIME_JWT_PUBLIC_KEY_FILE", conflicts_with = "jwt_secret")]
    pub jwt_public_key_file: Option<PathBuf>,

    /// Algorithm of client JWTs; pinned, never taken from the token.
    #[arg(long, env = "REALTIME_JWT_ALGORITHM", value_enum, default_value = "hs256")]
    pub jwt_algorithm: JwtAlgorithm,

    /// Required `iss` claim, if set.
    #[arg(long, env = "REALTIME_JWT_ISSUER")]
    pub jwt_issuer: Option<String>,

    /// Required `aud` claim, if set.
    #[arg(long, env = "REALTIME_JWT_AUDIENCE")]
    pub jwt_audience: Option<String>,

    /// Clock skew allowed when checking `exp` and `nbf`, in seconds.
    #[arg(long, env = "REALTIME_JWT_LEEWAY_SECS", default_value_t = 10)]
    pub jwt_leeway_secs: u64,

    /// API key backends send as `Authorization: Bearer <key>` to POST /api/publish. Generated
    /// and printed when not set.
    #[arg(long, env = "REALTIME_API_KEY", hide_env_values = true)]
    pub api_key: Option<String>,

    /// Comma-separated Origins allowed to open WebSockets (for example
    /// `https://app.example.com`). Unset: any Origin.
    #[arg(long, env = "REALTIME_ALLOWED_ORIGINS", value_delimiter = ',')]
    pub allowed_origins: Option<Vec<String>>,

    /// Most simultaneous connections; further upgrades get 503.
    #[arg(long, env = "REALTIME_MAX_CONNECTIONS", default_value_t = 10_000)]
    pub max_connections: usize,

    /// Largest client message (and frame), in bytes; larger ones close the connection with 1009.
    #[arg(long, env = "REALTIME_MAX_MESSAGE_BYTES", default_value_t = 64 * 1024)]
    pub max_message_bytes: usize,

    /// Frames queued per connection before it is closed as a slow consumer (4008).
    #[arg(long, env = "REALTIME_OUTBOUND_QUEUE", default_value_t = 256)]
    pub outbound_queue: usize,

    /// Idle seconds before the server pings a connection.
    #[arg(long, env = "REALTIME_PING_INTERVAL_SECS", default_value_t = 25)]
    pub ping_interval_secs: u64,

    /// Seconds after a ping within which the client must answer.
    #[arg(long, env = "REALTIME_PONG_TIMEOUT_SECS", default_value_t = 10)]
    pub pong_timeout_secs: u64,

    /// Seconds a client may take to send a request's head (request line and headers); a
    /// slower one is disconnected. Also how long an idle kept-alive HTTP connection stays open.
    #[arg(long, env = "REALTIME_HEADER_READ_TIMEOUT_SECS", default_value_t = 10)]
    pub header_read_timeout_secs: u64,

    /// Largest request head (request line and headers), in bytes; a larger one gets 431.
    #[arg(long, env = "REALTIME_MAX_HEADER_BYTES", default_value_t = 16 * 1024)]
    pub max_header_bytes: usize,

    /// Most connections in the HTTP phase at once (not upgraded to a WebSocket: handshakes in
    /// progress, API requests, idle kept-alive connections); beyond it the server stops
    /// accepting until one ends.
    #[arg(long, env = "REALTIME_MAX_HTTP_CONNECTIONS", default_value_t = 1024)]
    pub max_http_connections: usize,

    /// Milliseconds an inbound handler call may take before the client gets `internal_error`.
    #[arg(long, env = "REALTIME_INBOUND_TIMEOUT_MS", default_value_t = 10_000)]
    pub inbound_timeout_ms: u64,

    /// Client messages per second a connection may send on average; more are answered with
    /// `rate_limited`, and ten refused in a row close the connection with 4029.
    #[arg(long, env = "REALTIME_INBOUND_RATE", default_value_t = 100)]
    pub inbound_rate: u32,

    /// Client messages a connection may send at once (the rate limit's burst).
    #[arg(long, env = "REALTIME_INBOUND_BURST", default_value_t = 200)]
    pub inbound_burst: u32,

    /// Seconds the shutdown drain may take before the process exits.
    #[arg(long, env = "REALTIME_SHUTDOWN_GRACE_SECS", default_value_t = 5)]
    pub shutdown_grace_secs: u64,

    /// Serve the demo page at `/` and answer its `demo.*` messages. Defaults to on in
    /// development mode (no JWT key configured) and off otherwise.
    #[arg(long, env = "REALTIME_DEMO")]
    pub demo: Option<bool>,

    /// Log filter (tracing-subscriber `EnvFilter` syntax), for example `info` or
    /// `realtime=debug,warn`.
    #[arg(long, env = "REALTIME_LOG", default_value = "info")]
    pub log: String,

    /// Log format.
    #[arg(long, env = "REALTIME_LOG_FORMAT", value_enum, default_value = "text")]
    pub log_format: LogFormat,
}

/// JWT signature algorithms the server accepts (one at a time).
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum JwtAlgorithm {
    /// HMAC-SHA256 with a shared secret.
    Hs256,
    /// RSA PKCS#1 v1.5 with SHA-256, public key from a PEM file.
    Rs256,
    /// ECDSA P-256 with SHA-256, public key from a PEM file.
    Es256,
}

/// Log output format.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum LogFormat {
    /// Human-readable lines.
    Text,
    /// One JSON object per line.
    Json,
}

impl Config {
    /// The defaults, as if started with no flags and no environment (development mode).
    pub fn dev() -> Config {
        Config::parse_from(["realtime-server"])
    }

    /// Whether no JWT key is configured, so the server runs in development mode.
    pub fn is_dev(&self) -> bool {
        self.jwt_secret.is_none() && self.jwt_public_key_file.is_none()
    }
}
