//! What the transport is configured with ([`TransportConfig`], [`ApiKey`]) and what it is
//! wired to ([`Deps`]).

use std::fmt;
use std::ops::RangeInclusive;
use std::sync::Arc;
use std::time::Duration;

use realtime_core::{DecodeLimits, LivenessConfig, LivenessConfigError, RateLimitConfig};
use realtime_ports::{InboundHandler, RealtimeApi, TokenVerifier};
use subtle::ConstantTimeEq;

/// Largest accepted [`TransportConfig::read_buffer_bytes`], and the size of the read buffer
/// each worker thread shares among its connections.
pub const MAX_READ_BUFFER_BYTES: usize = 8 * 1024;

/// Bytes a `POST /api/publish` body may have beyond [`TransportConfig::max_message_bytes`]
/// for what surrounds the message (`target` and the other top-level fields).
pub const PUBLISH_BODY_OVERHEAD_BYTES: usize = 4 * 1024;

/// Settings of the transport. `Default` gives the production values; tests shorten the
/// timers.
#[derive(Clone)]
pub struct TransportConfig {
    /// Browser origins allowed to open a WebSocket (`Origin` header, compared without regard
    /// to ASCII case; `"*"` allows any). `None` allows any origin. A request without an
    /// `Origin` header (not a browser) is always allowed: the check exists to stop other web
    /// sites from using a visitor's browser, and browsers always send the header.
    pub allowed_origins: Option<Vec<String>>,
    /// Largest message, in bytes, in every direction; the one size setting:
    /// - a client message or frame larger than this closes the connection with 1009 (decided
    ///   from the frame header, before the payload is read), and it is the JSON decoder's
    ///   limit;
    /// - a `POST /api/publish` body larger than this plus [`PUBLISH_BODY_OVERHEAD_BYTES`]
    ///   gets 413, before it is read;
    /// - the service refuses to publish a message whose encoded size is over its own
    ///   `max_message_bytes` (413 over HTTP), so set both to the same value (the server
    ///   does).
    pub max_message_bytes: usize,
    /// Most bytes read from a socket at once (at most [`MAX_READ_BUFFER_BYTES`]). Connections
    /// hold no read buffer of their own: they read into one shared by the worker thread and
    /// keep bytes only while a frame is incomplete.
    pub read_buffer_bytes: usize,
    /// Kept for compatibility, not used: frames are written straight from their shared
    /// buffers, at once when nothing is queued, else in vectored writes of up to 64 frames.
    pub write_buffer_bytes: usize,
    /// Outbound frames queued per connection. When a client reads so slowly that its queue is
    /// full, it is closed with 4008 "slow consumer".
    pub outbound_queue: usize,
    /// Heartbeat: ping interval and pong timeout.
    pub liveness: LivenessConfig,
    /// Deepest nesting of arrays and objects accepted in a client message (the envelope
    /// itself is depth 1); a deeper one gets an `invalid_message` error.
    pub max_json_depth: usize,
    /// How long a closing connection may take to get its close frame out and see the
    /// client's answer before the socket is dropped.
    pub close_timeout: Duration,
    /// How long a graceful shutdown waits for connections to close before dropping them.
    pub shutdown_grace: Duration,
    /// The key backends present as `Authorization: Bearer <key>` on the HTTP API.
    pub api_key: ApiKey,
    /// Length of the kernel's accept queue.
    pub listen_backlog: u32,
    /// HTML served at `GET /` (the demo page), if any; with `None`, an adapter's `routes`
    /// leave `/` to the application.
    pub demo_page: Option<&'static str>,
    /// JavaScript served at `GET /client.js` (the realtime JavaScript client, so a page can
    /// import it without a build step), if any; with `None`, an adapter's `routes`
    /// leave `/client.js` to the application.
    pub client_script: Option<&'static str>,
    /// How long the token verifier may take for one upgrade request; a slower one gets 503.
    pub verify_timeout: Duration,
    /// Most upgrade requests being verified at once; more get 503 at once, so a slow or
    /// remote verifier cannot be made to carry unbounded unauthenticated traffic.
    pub max_concurrent_verifications: usize,
    /// Query parameters of the upgrade request copied into the connection's metadata as
    /// strings (for example `job_id`, so a job's progress can be routed to the connection
    /// that asked for it). At most 512 bytes each; a longer or repeated one gets 400.
    pub metadata_query_params: Vec<String>,

    // HTTP limits, applied by [`serve`](crate::serve) (every adapter's `Server`) below the
    // WebSocket layer (an embedder that serves an adapter's routes itself sets its own).
    /// How long a client may take to send a request's whole head (request line and headers)
    /// once the connection is accepted or, on a kept-alive connection, once the previous
    /// response went out; a client that is slower is disconnected without an answer. So this
    /// is also how long an idle kept-alive connection stays open.
    /// Between [`HEADER_READ_TIMEOUT_RANGE`]'s bounds; 10 s by default.
    pub header_read_timeout: Duration,
    /// Largest request head (request line and headers), in bytes; a larger one gets 431 and
    /// the connection is closed. It is also the most an HTTP connection buffers before its
    /// request is parsed. Between [`MAX_HEADER_BYTES_RANGE`]'s bounds; 16 KiB by default.
    pub max_header_bytes: usize,
    /// Most connections in the HTTP phase at once: accepted and not upgraded to a WebSocket
    /// (handshakes in progress, HTTP API requests, idle kept-alive connections). When that
    /// many are open the server stops accepting until one ends; further clients wait in the
    /// kernel's accept queue (`listen_backlog`). Upgraded WebSockets do not count (they are
    /// bounded by the service's capacity). With `header_read_timeout`, it bounds what
    /// clients that never finish a request (slowloris) can hold: file descriptors and about
    /// `max_header_bytes` of memory each. 1024 by default.
    pub max_http_connections: usize,

    // The session's inbound side (handler timeout, rate limit).
    /// Longest one [`InboundHandler::handle`] call may take (within
    /// [`INBOUND_TIMEOUT_RANGE`]); then it is dropped and the client gets an `internal_error`
    /// frame. The connection's timers and shutdown run on meanwhile. 10 s by default.
    pub inbound_timeout: Duration,
    /// Inbound rate limit per connection (every frame but close counts). A message over it
    /// is dropped and answered with a `rate_limited` error frame;
    /// [`REFUSALS_BEFORE_CLOSE`](realtime_core::REFUSALS_BEFORE_CLOSE) in a row close the
    /// connection with 4029. Both numbers within [`INBOUND_RATE_RANGE`]; 100 per second,
    /// bursts of 200 by default.
    pub inbound_rate: RateLimitConfig,

    // Compression.
    /// Whether the server agrees to permessage-deflate (RFC 7692) when a client offers it
    /// (browsers do). Off by default: on loopback or a fast network it costs CPU for nothing;
    /// it pays where bandwidth does (mobile clients, large JSON frames). When agreed, the
    /// parameters are always `server_no_context_takeover; client_no_context_takeover`: each
    /// publication is compressed once, for every recipient on the worker thread, and no
    /// connection keeps a compressor or an inflater. An offer limiting the server's window
    /// below 15 bits is declined (the connection goes on uncompressed). A recovery's replay
    /// goes uncompressed. Client messages are inflated within
    /// [`max_message_bytes`](Self::max_message_bytes), up to about nine per connection at a
    /// time: with compression on, keep that limit modest.
    pub permessage_deflate: bool,
    /// With [`permessage_deflate`](Self::permessage_deflate) agreed, frames shorter than
    /// this are sent uncompressed (as is a frame that compression does not make smaller).
    /// Within [`COMPRESSION_MIN_BYTES_RANGE`]; 256 by default: below that, a JSON frame
    /// shrinks by a few bytes for several microseconds of CPU (docs/benchmarks.md, Findings).
    pub compression_min_bytes: usize,
}

/// Accepted values of [`TransportConfig::inbound_timeout`].
pub const INBOUND_TIMEOUT_RANGE: std::ops::RangeInclusive<Duration> =
    Duration::from_millis(1)..=Duration::from_secs(3600);

/// Accepted values of [`TransportConfig::inbound_rate`]'s `per_second` and `burst`.
pub const INBOUND_RATE_RANGE: std::ops::RangeInclusive<u32> = 1..=RateLimitConfig::MAX;

/// Accepted values of [`TransportConfig::header_read_timeout`].
pub const HEADER_READ_TIMEOUT_RANGE: std::ops::RangeInclusive<Duration> =
    Duration::from_millis(1)..=Duration::from_secs(300);

/// Accepted values of [`TransportConfig::max_header_bytes`]: at least what browsers send
/// with a few cookies, at most what hyper can buffer sensibly.
pub const MAX_HEADER_BYTES_RANGE: std::ops::RangeInclusive<usize> = 1024..=1024 * 1024;

const MIB: u64 = 1024 * 1024;
const MILLIS_10: Duration = Duration::from_millis(10);

/// Accepted values of [`TransportConfig::max_message_bytes`]: 1 byte to 64 MiB.
pub const MAX_MESSAGE_BYTES_RANGE: RangeInclusive<u64> = 1..=64 * MIB;
/// Accepted values of [`TransportConfig::write_buffer_bytes`]: 0 (write every frame at once)
/// to 1 MiB.
pub const WRITE_BUFFER_BYTES_RANGE: RangeInclusive<u64> = 0..=MIB;
/// Accepted values of [`TransportConfig::compression_min_bytes`]: 0 (compress every frame) to
/// 64 MiB.
pub const COMPRESSION_MIN_BYTES_RANGE: RangeInclusive<u64> = 0..=64 * MIB;
/// Accepted values of [`TransportConfig::outbound_queue`]: 1 to 65,536 frames.
pub const OUTBOUND_QUEUE_RANGE: RangeInclusive<u64> = 1..=65_536;
/// Accepted values of [`TransportConfig::max_json_depth`]: 1 (a flat envelope) to 128.
pub const MAX_JSON_DEPTH_RANGE: RangeInclusive<u64> = 1..=128;
/// Accepted values of [`TransportConfig::max_concurrent_verifications`]: 1 to 65,536.
pub const MAX_CONCURRENT_VERIFICATIONS_RANGE: RangeInclusive<u64> = 1..=65_536;
/// Accepted values of [`TransportConfig::listen_backlog`]: 1 to 65,535.
pub const LISTEN_BACKLOG_RANGE: RangeInclusive<u64> = 1..=65_535;
/// Accepted values of [`TransportConfig::verify_timeout`]: 10 ms to 1 minute.
pub const VERIFY_TIMEOUT_RANGE: RangeInclusive<Duration> = MILLIS_10..=Duration::from_secs(60);
/// Accepted values of [`TransportConfig::close_timeout`]: 10 ms to 1 minute.
pub const CLOSE_TIMEOUT_RANGE: RangeInclusive<Duration> = MILLIS_10..=Duration::from_secs(60);
/// Accepted values of [`TransportConfig::shutdown_grace`]: 10 ms to 1 hour.
pub const SHUTDOWN_GRACE_RANGE: RangeInclusive<Duration> = MILLIS_10..=Duration::from_secs(3600);

impl Default for TransportConfig {
    fn default() -> Self {
        TransportConfig {
            allowed_origins: None,
            max_message_bytes: 64 * 1024,
            read_buffer_bytes: 1024,
            write_buffer_bytes: 4 * 1024,
            outbound_queue: 256,
            liveness: LivenessConfig::default(),
            max_json_depth: DecodeLimits::default().max_depth,
            close_timeout: Duration::from_secs(2),
            shutdown_grace: Duration::from_secs(5),
            api_key: ApiKey::disabled(),
            listen_backlog: 4096,
            demo_page: None,
            client_script: None,
            verify_timeout: Duration::from_secs(5),
            max_concurrent_verifications: 1024,
            metadata_query_params: Vec::new(),
            header_read_timeout: Duration::from_secs(10),
            max_header_bytes: 16 * 1024,
            max_http_connections: 1024,
            inbound_timeout: Duration::from_secs(10),
            inbound_rate: RateLimitConfig::default(),
            permessage_deflate: false,
            compression_min_bytes: 256,
        }
    }
}

impl fmt::Debug for TransportConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TransportConfig")
            .field("allowed_origins", &self.allowed_origins)
            .field("max_message_bytes", &self.max_message_bytes)
            .field("read_buffer_bytes", &self.read_buffer_bytes)
            .field("write_buffer_bytes", &self.write_buffer_bytes)
            .field("outbound_queue", &self.outbound_queue)
            .field("liveness", &self.liveness)
            .field("max_json_depth", &self.max_json_depth)
            .field("close_timeout", &self.close_timeout)
            .field("shutdown_grace", &self.shutdown_grace)
            .field("api_key", &self.api_key)
            .field("listen_backlog", &self.listen_backlog)
            .field("demo_page", &self.demo_page.map(|page| format!("<{} bytes>", page.len())))
            .field(
                "client_script",
                &self.client_script.map(|script| format!("<{} bytes>", script.len())),
            )
            .field("verify_timeout", &self.verify_timeout)
            .field("max_concurrent_verifications", &self.max_concurrent_verifications)
            .field("metadata_query_params", &self.metadata_query_params)
            .field("header_read_timeout", &self.header_read_timeout)
            .field("max_header_bytes", &self.max_header_bytes)
            .field("max_http_connections", &self.max_http_connections)
            .field("inbound_timeout", &self.inbound_timeout)
            .field("inbound_rate", &self.inbound_rate)
            .field("permessage_deflate", &self.permessage_deflate)
            .field("compression_min_bytes", &self.compression_min_bytes)
            .finish()
    }
}

/// A setting of [`TransportConfig`] that cannot work.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ConfigError {
    /// `read_buffer_bytes` is 0 or above [`MAX_READ_BUFFER_BYTES`].
    #[error("read_buffer_bytes must be between 1 and {max}, got {got}")]
    ReadBuffer {
        /// The configured value.
        got: usize,
        /// The largest accepted value.
        max: usize,
    },
    /// A size or count that must be positive is 0.
    #[error("{0} must be greater than 0")]
    Zero(&'static str),
    /// A setting is outside the range that can work.
    #[error("{setting} must be between {min} and {max}, got {got}")]
    OutOfRange {
        /// The setting's field name.
        setting: &'static str,
        /// The smallest accepted value, as text.
        min: String,
        /// The largest accepted value, as text.
        max: String,
        /// The configured value, as text.
        got: String,
    },
    /// `metadata_query_params` names the `token` parameter: the bearer token would be
    /// copied into every connection's metadata.
    #[error("metadata_query_params must not contain \"token\": it carries the credential")]
    TokenInMetadata,
}

impl ConfigError {
    /// The name of the refused setting (a field of [`TransportConfig`]; `liveness.<field>`
    /// for the heartbeat).
    pub fn setting(&self) -> &'static str {
        match self {
            ConfigError::ReadBuffer { .. } => "read_buffer_bytes",
            ConfigError::Zero(setting) | ConfigError::OutOfRange { setting, .. } => setting,
            ConfigError::TokenInMetadata => "metadata_query_params",
        }
    }
}

impl From<LivenessConfigError> for ConfigError {
    fn from(error: LivenessConfigError) -> Self {
        let (setting, got, min, max) = match error {
            LivenessConfigError::PingInterval { got, min, max } => {
                ("liveness.ping_interval", got, min, max)
            }
            LivenessConfigError::PongTimeout { got, min, max } => {
                ("liveness.pong_timeout", got, min, max)
            }
            _ => ("liveness", Duration::ZERO, Duration::ZERO, Duration::ZERO),
        };
        out_of_range(setting, &(min..=max), &got)
    }
}

/// [`ConfigError::OutOfRange`] for `setting`, with the bounds and value as their `Debug` text.
fn out_of_range<T: fmt::Debug>(
    setting: &'static str,
    range: &RangeInclusive<T>,
    got: &T,
) -> ConfigError {
    ConfigError::OutOfRange {
        setting,
        min: format!("{:?}", range.start()),
        max: format!("{:?}", range.end()),
        got: format!("{got:?}"),
    }
}

impl TransportConfig {
    /// Checks that the settings can work.
    ///
    /// # Errors
    /// [`ConfigError`] names the first setting that cannot.
    pub fn validate(&self) -> Result<(), ConfigError> {
        if self.metadata_query_params.iter().any(|name| name == "token") {
            return Err(ConfigError::TokenInMetadata);
        }
        if self.read_buffer_bytes == 0 || self.read_buffer_bytes > MAX_READ_BUFFER_BYTES {
            return Err(ConfigError::ReadBuffer {
                got: self.read_buffer_bytes,
                max: MAX_READ_BUFFER_BYTES,
            });
        }
        let positive = [
            ("max_message_bytes", self.max_message_bytes),
            ("max_json_depth", self.max_json_depth),
            ("max_concurrent_verifications", self.max_concurrent_verifications),
            ("outbound_queue", self.outbound_queue),
        ];
        if let Some((name, _)) = positive.iter().find(|(_, value)| *value == 0) {
            return Err(ConfigError::Zero(name));
        }
        if self.verify_timeout.is_zero() {
            return Err(ConfigError::Zero("verify_timeout"));
        }
        self.validate_http_limits()?;
        self.validate_inbound()?;
        self.validate_ranges()
    }

    /// Every other size, count and duration within its `*_RANGE`, and the heartbeat as
    /// [`LivenessConfig::validate`] says (a zero ping interval pings in a loop, a zero pong
    /// timeout closes every idle client).
    fn validate_ranges(&self) -> Result<(), ConfigError> {
        let sizes = [
            ("max_message_bytes", self.max_message_bytes as u64, MAX_MESSAGE_BYTES_RANGE),
            ("write_buffer_bytes", self.write_buffer_bytes as u64, WRITE_BUFFER_BYTES_RANGE),
            (
                "compression_min_bytes",
                self.compression_min_bytes as u64,
                COMPRESSION_MIN_BYTES_RANGE,
            ),
            ("outbound_queue", self.outbound_queue as u64, OUTBOUND_QUEUE_RANGE),
            ("max_json_depth", self.max_json_depth as u64, MAX_JSON_DEPTH_RANGE),
            (
                "max_concurrent_verifications",
                self.max_concurrent_verifications as u64,
                MAX_CONCURRENT_VERIFICATIONS_RANGE,
            ),
            ("listen_backlog", u64::from(self.listen_backlog), LISTEN_BACKLOG_RANGE),
        ];
        if let Some((setting, got, range)) = sizes.iter().find(|(_, got, r)| !r.contains(got)) {
            return Err(out_of_range(setting, range, got));
        }
        let durations = [
            ("verify_timeout", self.verify_timeout, VERIFY_TIMEOUT_RANGE),
            ("close_timeout", self.close_timeout, CLOSE_TIMEOUT_RANGE),
            ("shutdown_grace", self.shutdown_grace, SHUTDOWN_GRACE_RANGE),
        ];
        if let Some((setting, got, range)) = durations.iter().find(|(_, got, r)| !r.contains(got)) {
            return Err(out_of_range(setting, range, got));
        }
        self.liveness.validate()?;
        Ok(())
    }

    /// The session's inbound side: `inbound_timeout` and `inbound_rate`.
    fn validate_inbound(&self) -> Result<(), ConfigError> {
        let out_of_range =
            |setting, min: &dyn fmt::Debug, max: &dyn fmt::Debug, got: &dyn fmt::Debug| {
                ConfigError::OutOfRange {
                    setting,
                    min: format!("{min:?}"),
                    max: format!("{max:?}"),
                    got: format!("{got:?}"),
                }
            };
        let timeout = (&INBOUND_TIMEOUT_RANGE, &self.inbound_timeout);
        if !timeout.0.contains(timeout.1) {
            return Err(out_of_range(
                "inbound_timeout",
                timeout.0.start(),
                timeout.0.end(),
                timeout.1,
            ));
        }
        let rates = [
            ("inbound_rate.per_second", self.inbound_rate.per_second),
            ("inbound_rate.burst", self.inbound_rate.burst),
        ];
        match rates.into_iter().find(|(_, got)| !INBOUND_RATE_RANGE.contains(got)) {
            Some((setting, got)) => Err(out_of_range(
                setting,
                INBOUND_RATE_RANGE.start(),
                INBOUND_RATE_RANGE.end(),
                &got,
            )),
            None => Ok(()),
        }
    }

    /// The HTTP limits: `header_read_timeout`, `max_header_bytes`, `max_http_connections`.
    fn validate_http_limits(&self) -> Result<(), ConfigError> {
        fn out_of_range<T: fmt::Debug>(
            setting: &'static str,
            range: &std::ops::RangeInclusive<T>,
            got: &T,
        ) -> ConfigError {
            ConfigError::OutOfRange {
                setting,
                min: format!("{:?}", range.start()),
                max: format!("{:?}", range.end()),
                got: format!("{got:?}"),
            }
        }
        if !HEADER_READ_TIMEOUT_RANGE.contains(&self.header_read_timeout) {
            let (setting, range) = ("header_read_timeout", HEADER_READ_TIMEOUT_RANGE);
            return Err(out_of_range(setting, &range, &self.header_read_timeout));
        }
        if !MAX_HEADER_BYTES_RANGE.contains(&self.max_header_bytes) {
            let (setting, range) = ("max_header_bytes", MAX_HEADER_BYTES_RANGE);
            return Err(out_of_range(setting, &range, &self.max_header_bytes));
        }
        if self.max_http_connections == 0 {
            return Err(ConfigError::Zero("max_http_connections"));
        }
        Ok(())
    }

    /// Largest accepted backend API body: the message limit plus
    /// [`PUBLISH_BODY_OVERHEAD_BYTES`].
    pub fn max_publish_body_bytes(&self) -> u64 {
        u64::try_from(self.max_message_bytes.saturating_add(PUBLISH_BODY_OVERHEAD_BYTES))
            .unwrap_or(u64::MAX)
    }

    /// What the decoder of client messages accepts: [`TransportConfig::max_message_bytes`]
    /// and [`TransportConfig::max_json_depth`].
    pub fn decode_limits(&self) -> DecodeLimits {
        DecodeLimits { max_bytes: self.max_message_bytes, max_depth: self.max_json_depth }
    }
}

/// The HTTP API key. `Debug` never shows it and comparison takes the same time whatever the
/// presented key has in common with it (`subtle`'s constant-time equality; only the length
/// can show).
#[derive(Clone, Default)]
pub struct ApiKey(Option<Arc<str>>);

/// Why a string cannot be an [`ApiKey`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ApiKeyError {
    /// Shorter than [`ApiKey::MIN_BYTES`] (including empty: use [`ApiKey::disabled`] for no
    /// key). The key itself is never part of the error.
    #[error("the API key must be at least {min} bytes, got {len}")]
    TooShort {
        /// The length of the refused key, in bytes.
        len: usize,
        /// [`ApiKey::MIN_BYTES`].
        min: usize,
    },
}

impl ApiKey {
    /// The shortest accepted key, in bytes.
    pub const MIN_BYTES: usize = 16;

    /// A key.
    ///
    /// # Errors
    /// [`ApiKeyError::TooShort`] for a key under [`ApiKey::MIN_BYTES`] bytes.
    pub fn new(key: impl AsRef<str>) -> Result<Self, ApiKeyError> {
        let key = key.as_ref();
        if key.len() < Self::MIN_BYTES {
            return Err(ApiKeyError::TooShort { len: key.len(), min: Self::MIN_BYTES });
        }
        Ok(ApiKey(Some(Arc::from(key))))
    }

    /// No key: every request that needs one gets 401.
    pub fn disabled() -> Self {
        ApiKey(None)
    }

    /// Whether a key is set.
    pub fn is_enabled(&self) -> bool {
        self.0.is_some()
    }

    /// Whether `presented` is the key, compared in constant time (only the length can show).
    pub fn matches(&self, presented: &str) -> bool {
        match &self.0 {
            Some(key) => key.as_bytes().ct_eq(presented.as_bytes()).into(),
            None => false,
        }
    }
}

impl fmt::Debug for ApiKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.0 {
            Some(_) => f.write_str("ApiKey(<redacted>)"),
            None => f.write_str("ApiKey(<disabled>)"),
        }
    }
}

/// Renders the Prometheus text exposition for `GET /metrics`.
pub type MetricsRenderer = Arc<dyn Fn() -> String + Send + Sync>;

/// What the transport is wired to: the service, the token verifier and, optionally, the
/// application's inbound handler and a metrics renderer.
#[derive(Clone)]
pub struct Deps {
    /// The service: admits, removes and sends.
    pub api: Arc<dyn RealtimeApi>,
    /// Verifies the tokens of upgrade requests.
    pub verifier: Arc<dyn TokenVerifier>,
    /// Handles client messages other than the protocol's own; `None` answers every such
    /// message with an `unsupported_type` error.
    pub inbound: Option<Arc<dyn InboundHandler>>,
    /// Renders `GET /metrics`; with `None`, an adapter's `routes` leave that path to
    /// the application (the bundled server answers it 404).
    pub metrics: Option<MetricsRenderer>,
}

impl Deps {
    /// The service and the verifier; no inbound handler, no metrics.
    pub fn new(api: Arc<dyn RealtimeApi>, verifier: Arc<dyn TokenVerifier>) -> Self {
        Deps { api, verifier, inbound: None, metrics: None }
    }

    /// With `inbound` handling client messages.
    #[must_use]
    pub fn with_inbound(mut self, inbound: Arc<dyn InboundHandler>) -> Self {
        self.inbound = Some(inbound);
        self
    }

    /// With `metrics` rendering `GET /metrics`.
    #[must_use]
    pub fn with_metrics(mut self, metrics: MetricsRenderer) -> Self {
        self.metrics = Some(metrics);
        self
    }
}

impl fmt::Debug for Deps {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Deps").field("metrics", &self.metrics.is_some()).finish_non_exhaustive()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_token_parameter_is_never_copied_into_metadata() {
        let config = TransportConfig {
            metadata_query_params: vec!["job_id".to_owned(), "token".to_owned()],
            ..TransportConfig::default()
        };
        assert_eq!(config.validate(), Err(ConfigError::TokenInMetadata));
        assert_eq!(ConfigError::TokenInMetadata.setting(), "metadata_query_params");
    }

    #[test]
    fn api_key_compares_and_never_shows() {
        let key = ApiKey::new("s3cret-key-0123456").unwrap_or_else(|e| panic!("{e}"));
        assert!(key.is_enabled());
        assert!(key.matches("s3cret-key-0123456"));
        for wrong in ["", "s3cret-key-0123457", "s3cret-key-0123456 ", "S3CRET-KEY-0123456"] {
            assert!(!key.matches(wrong), "{wrong:?} matched");
        }
        assert!(!format!("{key:?}").contains("s3cret"));
        assert!(!ApiKey::disabled().matches(""));
        assert!(!ApiKey::disabled().is_enabled());
        let config = TransportConfig { api_key: key, ..TransportConfig::default() };
        assert!(!format!("{config:?}").contains("s3cret"));
    }

    #[test]
    fn api_key_has_a_minimum_length() {
        let cases = [("", Some(0)), ("s3cret", Some(6)), ("0123456789abcde", Some(15))];
        for (key, too_short) in cases {
            let got = ApiKey::new(key).map(|_| ());
            let want = too_short.map_or(Ok(()), |len| Err(ApiKeyError::TooShort { len, min: 16 }));
            assert_eq!(got, want, "{key:?}");
            if let Err(error) = got {
                assert!(key.is_empty() || !error.to_string().contains(key), "{error}");
            }
        }
        assert!(ApiKey::new("0123456789abcdef").is_ok());
    }

    /// Each case changes one setting of the default configuration; `None` means valid.
    #[track_caller]
    fn check(change: impl FnOnce(&mut TransportConfig), expected: Option<(&str, &str)>) {
        let mut config = TransportConfig::default();
        change(&mut config);
        match (config.validate(), expected) {
            (Ok(()), None) => {}
            (Err(error), Some((setting, message))) => {
                assert_eq!(error.setting(), setting, "{error}");
                assert_eq!(error.to_string(), message);
            }
            (got, expected) => panic!("got {got:?}, expected {expected:?}"),
        }
    }

    #[test]
    fn inbound_settings_are_validated() {
        let out_of_range = |setting, min: &str, max: &str, got: &str| {
            Err(ConfigError::OutOfRange {
                setting,
                min: min.to_owned(),
                max: max.to_owned(),
                got: got.to_owned(),
            })
        };
        let check = |config: TransportConfig, expected: Result<(), ConfigError>| {
            assert_eq!(config.validate(), expected, "{config:?}");
        };
        let base = TransportConfig::default;
        check(TransportConfig { inbound_timeout: Duration::from_millis(1), ..base() }, Ok(()));
        check(
            TransportConfig { inbound_timeout: Duration::ZERO, ..base() },
            out_of_range("inbound_timeout", "1ms", "3600s", "0ns"),
        );
        check(
            TransportConfig { inbound_timeout: Duration::from_secs(3601), ..base() },
            out_of_range("inbound_timeout", "1ms", "3600s", "3601s"),
        );
        let rate = |per_second, burst| RateLimitConfig { per_second, burst };
        check(
            TransportConfig { inbound_rate: rate(0, 5), ..base() },
            out_of_range("inbound_rate.per_second", "1", "1000000", "0"),
        );
        check(
            TransportConfig { inbound_rate: rate(5, 2_000_000), ..base() },
            out_of_range("inbound_rate.burst", "1", "1000000", "2000000"),
        );
    }

    #[test]
    fn validation() {
        assert_eq!(TransportConfig::default().validate(), Ok(()));
        let big = TransportConfig { read_buffer_bytes: 16 * 1024, ..TransportConfig::default() };
        assert_eq!(
            big.validate(),
            Err(ConfigError::ReadBuffer { got: 16 * 1024, max: MAX_READ_BUFFER_BYTES })
        );
        let zero = TransportConfig { outbound_queue: 0, ..TransportConfig::default() };
        assert_eq!(zero.validate(), Err(ConfigError::Zero("outbound_queue")));
    }

    #[test]
    fn http_limits_are_validated_by_name() {
        #[track_caller]
        fn check(config: TransportConfig, expected: Option<&str>) {
            match (config.validate(), expected) {
                (Ok(()), None) => {}
                (Err(error), Some(text)) => {
                    let message = error.to_string();
                    assert!(message.contains(text), "{message:?} does not say {text:?}");
                }
                (got, expected) => panic!("got {got:?}, expected {expected:?}"),
            }
        }
        let base = TransportConfig::default;
        let timeout = |d| TransportConfig { header_read_timeout: d, ..base() };
        let header = |n| TransportConfig { max_header_bytes: n, ..base() };
        check(timeout(Duration::ZERO), Some("header_read_timeout must be between 1ms and 300s"));
        check(timeout(Duration::from_secs(301)), Some("header_read_timeout"));
        check(timeout(Duration::from_secs(300)), None);
        check(header(1023), Some("max_header_bytes must be between 1024 and 1048576, got 1023"));
        check(header(1024 * 1024 + 1), Some("max_header_bytes"));
        check(header(1024), None);
        check(
            TransportConfig { max_http_connections: 0, ..base() },
            Some("max_http_connections must be greater than 0"),
        );
    }

    #[test]
    fn every_setting_has_a_range() {
        let ms = Duration::from_millis;
        check(|_| {}, None);
        check(|c| c.read_buffer_bytes = 8 * 1024, None);
        check(
            |c| c.read_buffer_bytes = 16 * 1024,
            Some(("read_buffer_bytes", "read_buffer_bytes must be between 1 and 8192, got 16384")),
        );
        check(
            |c| c.read_buffer_bytes = 0,
            Some(("read_buffer_bytes", "read_buffer_bytes must be between 1 and 8192, got 0")),
        );
        check(|c| c.write_buffer_bytes = 0, None);
        check(
            |c| c.write_buffer_bytes = 2 * 1024 * 1024,
            Some((
                "write_buffer_bytes",
                "write_buffer_bytes must be between 0 and 1048576, got 2097152",
            )),
        );
        check(
            |c| c.max_message_bytes = 0,
            Some(("max_message_bytes", "max_message_bytes must be greater than 0")),
        );
        check(|c| c.max_message_bytes = 64 * 1024 * 1024, None);
        check(
            |c| c.max_message_bytes = 64 * 1024 * 1024 + 1,
            Some((
                "max_message_bytes",
                "max_message_bytes must be between 1 and 67108864, got 67108865",
            )),
        );
        check(
            |c| c.outbound_queue = 0,
            Some(("outbound_queue", "outbound_queue must be greater than 0")),
        );
        check(
            |c| c.outbound_queue = 1_000_000,
            Some(("outbound_queue", "outbound_queue must be between 1 and 65536, got 1000000")),
        );
        check(
            |c| c.max_json_depth = 0,
            Some(("max_json_depth", "max_json_depth must be greater than 0")),
        );
        check(
            |c| c.max_concurrent_verifications = 0,
            Some((
                "max_concurrent_verifications",
                "max_concurrent_verifications must be greater than 0",
            )),
        );
        check(
            |c| c.verify_timeout = Duration::ZERO,
            Some(("verify_timeout", "verify_timeout must be greater than 0")),
        );
        check(
            |c| c.listen_backlog = 0,
            Some(("listen_backlog", "listen_backlog must be between 1 and 65535, got 0")),
        );
        check(
            |c| c.close_timeout = Duration::ZERO,
            Some(("close_timeout", "close_timeout must be between 10ms and 60s, got 0ns")),
        );
        check(|c| c.close_timeout = ms(10), None);
        check(
            |c| c.close_timeout = Duration::from_secs(3600),
            Some(("close_timeout", "close_timeout must be between 10ms and 60s, got 3600s")),
        );
        check(
            |c| c.shutdown_grace = Duration::ZERO,
            Some(("shutdown_grace", "shutdown_grace must be between 10ms and 3600s, got 0ns")),
        );
        check(
            |c| c.liveness.ping_interval = Duration::ZERO,
            Some((
                "liveness.ping_interval",
                "liveness.ping_interval must be between 10ms and 3600s, got 0ns",
            )),
        );
        check(
            |c| c.liveness.pong_timeout = Duration::ZERO,
            Some((
                "liveness.pong_timeout",
                "liveness.pong_timeout must be between 10ms and 600s, got 0ns",
            )),
        );
        check(|c| c.liveness.ping_interval = ms(200), None);
    }
}
