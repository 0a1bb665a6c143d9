//! Server configuration: command-line flags and `REALTIME_*` environment variables.

use std::net::SocketAddr;
use std::ops::RangeInclusive;
use std::path::PathBuf;
use std::time::Duration;

use clap::{Parser, ValueEnum};
use realtime_core::{HistoryLimits, HistoryPolicy, LivenessConfig, Permission, TopicName};
use realtime_transport_warp::{
    COMPRESSION_MIN_BYTES_RANGE, HEADER_READ_TIMEOUT_RANGE, INBOUND_RATE_RANGE,
    INBOUND_TIMEOUT_RANGE, MAX_HEADER_BYTES_RANGE, MAX_MESSAGE_BYTES_RANGE, OUTBOUND_QUEUE_RANGE,
    SHUTDOWN_GRACE_RANGE,
};

/// The realtime server: authenticated WebSocket messaging for web backends.
///
/// With no configuration it starts a development server on 127.0.0.1:3000 with a random JWT
/// secret and API key, and prints ready-to-use tokens (development mode listens on loopback
/// addresses only). Every flag can also be set through the environment variable shown with it.
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

    /// Clock skew allowed when checking `exp` and `nbf`, in seconds (0 to 300). A connection
    /// lives until `exp` plus the leeway.
    #[arg(long, env = "REALTIME_JWT_LEEWAY_SECS", default_value_t = 10)]
    pub jwt_leeway_secs: u64,

    /// Comma-separated permissions every client token must carry in its `permissions` claim
    /// (for example `realtime:connect`); a valid token without one of them gets 403. Unset:
    /// none required.
    #[arg(long, env = "REALTIME_REQUIRED_PERMISSIONS", value_delimiter = ',')]
    pub required_permissions: Vec<String>,

    /// API key (at least 16 bytes) backends send as `Authorization: Bearer <key>` to
    /// POST /api/publish, and the scraper to GET /metrics unless `--metrics-listen` is set.
    /// Generated and printed when not set.
    #[arg(long, env = "REALTIME_API_KEY", hide_env_values = true)]
    pub api_key: Option<String>,

    /// Serve GET /metrics on this address instead, without the API key (and not on the main
    /// listener). Unset: GET /metrics on the main listener, behind the API key.
    #[arg(long, env = "REALTIME_METRICS_LISTEN")]
    pub metrics_listen: Option<SocketAddr>,

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

    /// Where streams live: `memory` (one node, nothing else needed) or `redis` (any number of
    /// nodes sharing `--redis-url`, one Redis or several shards).
    #[arg(long, env = "REALTIME_BROKER", value_enum, default_value = "memory")]
    pub broker: BrokerKind,

    /// The Redis of `--broker redis`, e.g. `redis://:password@127.0.0.1:6379/0`, or a
    /// comma-separated list of them: streams are sharded over the servers by a consistent
    /// hash of their names; connections, revocations and presence live on the first. Every
    /// node lists the same servers in the same order.
    #[arg(long, env = "REALTIME_REDIS_URL", hide_env_values = true)]
    pub redis_url: Option<String>,

    /// Prefix of every Redis key and channel (letters, digits, `_ - .`).
    #[arg(long, env = "REALTIME_REDIS_PREFIX", default_value = "rt")]
    pub redis_prefix: String,

    /// This node's id on Redis (letters, digits, `_ - .`); generated when unset.
    #[arg(long, env = "REALTIME_NODE_ID")]
    pub node_id: Option<String>,

    /// With `--broker redis`: seconds a node's presence entries outlive its last heartbeat
    /// (sent every third of it), so a crashed node's connections leave presence within it.
    #[arg(long, env = "REALTIME_PRESENCE_TTL_SECS", default_value_t = 60)]
    pub presence_ttl_secs: u64,

    /// Publications kept per stream for recovery after a reconnect (0 keeps none but still
    /// counts offsets).
    #[arg(long, env = "REALTIME_HISTORY_SIZE", default_value_t = 100)]
    pub history_size: usize,

    /// How long a publication is kept for recovery, in seconds.
    #[arg(long, env = "REALTIME_HISTORY_TTL_SECS", default_value_t = 300)]
    pub history_ttl_secs: u64,

    /// Comma-separated stream kinds without history, offsets or recovery (`user`, `role`,
    /// `topic`, `broadcast`).
    #[arg(long, env = "REALTIME_HISTORY_OFF", value_delimiter = ',')]
    pub history_off: Vec<String>,

    /// Comma-separated history settings per topic prefix, `PREFIX=SIZE:TTL_SECS` or
    /// `PREFIX=off` (for example `chat:=50:60,metrics:=off`); the longest prefix wins.
    #[arg(long, env = "REALTIME_HISTORY_TOPIC_PREFIXES", value_delimiter = ',')]
    pub history_topic_prefixes: Vec<String>,

    /// Comma-separated topic prefixes whose subscribers get `presence.join` and
    /// `presence.leave` (an empty entry, or `*`, enables them for every topic).
    #[arg(long, env = "REALTIME_PRESENCE_EVENTS", value_delimiter = ',')]
    pub presence_events: Vec<String>,

    /// Most topics one connection may subscribe to.
    #[arg(long, env = "REALTIME_MAX_TOPICS", default_value_t = 128)]
    pub max_topics: usize,

    /// How long a revocation (`POST /api/revoke`) is remembered, in seconds: at least the
    /// longest lifetime of a token.
    #[arg(long, env = "REALTIME_REVOCATION_TTL_SECS", default_value_t = 24 * 3600)]
    pub revocation_ttl_secs: u64,

    /// Most publications one recovery replays per stream; a longer gap is `recovered: false`.
    #[arg(long, env = "REALTIME_MAX_RECOVERY", default_value_t = 300)]
    pub max_recovery: usize,

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

    /// Agree to permessage-deflate (RFC 7692) with clients that offer it (browsers do):
    /// frames of at least `--websocket-compression-min-bytes` go compressed, each
    /// publication compressed once for all its recipients. Off by default: it costs CPU
    /// and pays only where bandwidth is scarce.
    #[arg(
        long,
        env = "REALTIME_WEBSOCKET_COMPRESSION",
        default_value_t = false,
        action = clap::ArgAction::Set,
        num_args = 0..=1,
        default_missing_value = "true"
    )]
    pub websocket_compression: bool,

    /// With `--websocket-compression`, frames shorter than this are sent uncompressed.
    #[arg(long, env = "REALTIME_WEBSOCKET_COMPRESSION_MIN_BYTES", default_value_t = 256)]
    pub websocket_compression_min_bytes: usize,

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

/// Where streams (positions, history, fan-out) live.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum BrokerKind {
    /// In this process: one node.
    Memory,
    /// In Redis: every node sharing it is one system.
    Redis,
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

    /// Checks every setting that [`start`](crate::start) would otherwise turn into a server
    /// that cannot work (a zero ping interval pings in a loop, a zero pong timeout closes
    /// every idle client), and development mode on an address other hosts can reach.
    ///
    /// # Errors
    /// A message naming the flag and its environment variable, the accepted range and the
    /// value given.
    pub fn validate(&self) -> Result<(), String> {
        let secs = |range: &RangeInclusive<Duration>| {
            range.start().as_secs().max(1)..=range.end().as_secs()
        };
        let millis = |range: &RangeInclusive<Duration>| {
            let ms = |d: &Duration| u64::try_from(d.as_millis()).unwrap_or(u64::MAX);
            ms(range.start()).max(1)..=ms(range.end())
        };
        let count = |range: &RangeInclusive<usize>| *range.start() as u64..=*range.end() as u64;
        let rate = u64::from(*INBOUND_RATE_RANGE.start())..=u64::from(*INBOUND_RATE_RANGE.end());
        const S: &str = " seconds";
        let checks: [(&str, &str, u64, RangeInclusive<u64>, &str); 20] = [
            (
                "--ping-interval-secs",
                "REALTIME_PING_INTERVAL_SECS",
                self.ping_interval_secs,
                secs(&LivenessConfig::PING_INTERVAL),
                S,
            ),
            (
                "--pong-timeout-secs",
                "REALTIME_PONG_TIMEOUT_SECS",
                self.pong_timeout_secs,
                secs(&LivenessConfig::PONG_TIMEOUT),
                S,
            ),
            (
                "--shutdown-grace-secs",
                "REALTIME_SHUTDOWN_GRACE_SECS",
                self.shutdown_grace_secs,
                secs(&SHUTDOWN_GRACE_RANGE),
                S,
            ),
            (
                "--jwt-leeway-secs",
                "REALTIME_JWT_LEEWAY_SECS",
                self.jwt_leeway_secs,
                0..=MAX_LEEWAY_SECS,
                S,
            ),
            (
                "--header-read-timeout-secs",
                "REALTIME_HEADER_READ_TIMEOUT_SECS",
                self.header_read_timeout_secs,
                secs(&HEADER_READ_TIMEOUT_RANGE),
                S,
            ),
            (
                "--inbound-timeout-ms",
                "REALTIME_INBOUND_TIMEOUT_MS",
                self.inbound_timeout_ms,
                millis(&INBOUND_TIMEOUT_RANGE),
                " ms",
            ),
            (
                "--max-connections",
                "REALTIME_MAX_CONNECTIONS",
                self.max_connections as u64,
                1..=u64::MAX,
                "",
            ),
            (
                "--max-message-bytes",
                "REALTIME_MAX_MESSAGE_BYTES",
                self.max_message_bytes as u64,
                MAX_MESSAGE_BYTES_RANGE,
                "",
            ),
            (
                "--websocket-compression-min-bytes",
                "REALTIME_WEBSOCKET_COMPRESSION_MIN_BYTES",
                self.websocket_compression_min_bytes as u64,
                COMPRESSION_MIN_BYTES_RANGE,
                "",
            ),
            (
                "--outbound-queue",
                "REALTIME_OUTBOUND_QUEUE",
                self.outbound_queue as u64,
                OUTBOUND_QUEUE_RANGE,
                "",
            ),
            (
                "--max-header-bytes",
                "REALTIME_MAX_HEADER_BYTES",
                self.max_header_bytes as u64,
                count(&MAX_HEADER_BYTES_RANGE),
                "",
            ),
            (
                "--max-http-connections",
                "REALTIME_MAX_HTTP_CONNECTIONS",
                self.max_http_connections as u64,
                1..=u64::MAX,
                "",
            ),
            (
                "--inbound-rate",
                "REALTIME_INBOUND_RATE",
                u64::from(self.inbound_rate),
                rate.clone(),
                "",
            ),
            ("--inbound-burst", "REALTIME_INBOUND_BURST", u64::from(self.inbound_burst), rate, ""),
            ("--history-size", "REALTIME_HISTORY_SIZE", self.history_size as u64, 0..=100_000, ""),
            (
                "--history-ttl-secs",
                "REALTIME_HISTORY_TTL_SECS",
                self.history_ttl_secs,
                1..=7 * 24 * 3600,
                S,
            ),
            ("--max-topics", "REALTIME_MAX_TOPICS", self.max_topics as u64, 1..=100_000, ""),
            ("--max-recovery", "REALTIME_MAX_RECOVERY", self.max_recovery as u64, 1..=100_000, ""),
            (
                "--presence-ttl-secs",
                "REALTIME_PRESENCE_TTL_SECS",
                self.presence_ttl_secs,
                1..=24 * 3600,
                S,
            ),
            (
                "--revocation-ttl-secs",
                "REALTIME_REVOCATION_TTL_SECS",
                self.revocation_ttl_secs,
                1..=365 * 24 * 3600,
                S,
            ),
        ];
        for (flag, env, got, range, unit) in checks {
            if !range.contains(&got) {
                let (min, max) = (range.start(), range.end());
                return Err(if *max == u64::MAX {
                    format!("{flag} ({env}) must be at least {min}{unit}, got {got}")
                } else {
                    format!("{flag} ({env}) must be between {min} and {max}{unit}, got {got}")
                });
            }
        }
        self.permissions()?;
        self.history_policy()?;
        self.presence_event_prefixes()?;
        if self.broker == BrokerKind::Redis && self.redis_url.is_none() {
            return Err("--broker redis (REALTIME_BROKER) needs --redis-url (REALTIME_REDIS_URL)"
                .to_owned());
        }
        if let Some(list) = &self.redis_url {
            // Never the URLs themselves in the message: they may carry passwords.
            let urls: Vec<&str> = list.split(',').map(str::trim).collect();
            if let Some(empty) = urls.iter().position(|url| url.is_empty()) {
                return Err(format!(
                    "--redis-url (REALTIME_REDIS_URL) is a comma-separated list of Redis URLs, \
                     and entry {} of {} is empty",
                    empty + 1,
                    urls.len()
                ));
            }
            for (i, url) in urls.iter().enumerate() {
                if let Some(first) = urls[..i].iter().position(|other| other == url) {
                    return Err(format!(
                        "--redis-url (REALTIME_REDIS_URL) lists the same Redis twice (entries {} \
                         and {})",
                        first + 1,
                        i + 1
                    ));
                }
            }
        }
        if self.is_dev() {
            let listeners = [
                ("--listen (REALTIME_LISTEN)", Some(self.listen)),
                ("--metrics-listen (REALTIME_METRICS_LISTEN)", self.metrics_listen),
            ];
            for (setting, addr) in listeners {
                if let Some(addr) = addr.filter(|addr| !addr.ip().is_loopback()) {
                    return Err(format!(
                        "development mode (no REALTIME_JWT_SECRET or REALTIME_JWT_PUBLIC_KEY_FILE) \
                         listens on loopback addresses only, and {setting} is {addr}: its \
                         generated secrets and demo must not be reachable from other hosts. \
                         Configure a JWT key, or listen on 127.0.0.1 or [::1]"
                    ));
                }
            }
        }
        Ok(())
    }

    /// `required_permissions` parsed (empty entries skipped).
    ///
    /// # Errors
    /// A message naming the setting and the invalid permission.
    /// The history policy from `--history-*`.
    ///
    /// # Errors
    /// A message naming the flag and the entry that is wrong.
    pub fn history_policy(&self) -> Result<HistoryPolicy, String> {
        let limits = HistoryLimits {
            max_len: self.history_size,
            max_age_millis: self.history_ttl_secs.saturating_mul(1000),
        };
        let on = Some(limits);
        let mut policy = HistoryPolicy {
            broadcast: on,
            user: on,
            role: on,
            topic: on,
            topic_prefixes: Vec::new(),
        };
        for kind in self.history_off.iter().map(|k| k.trim()).filter(|k| !k.is_empty()) {
            match kind {
                "user" => policy.user = None,
                "role" => policy.role = None,
                "topic" => policy.topic = None,
                "broadcast" => policy.broadcast = None,
                other => {
                    return Err(format!(
                        "--history-off (REALTIME_HISTORY_OFF): {other:?} is not a stream kind \
                         (user, role, topic, broadcast)"
                    ));
                }
            }
        }
        for entry in self.history_topic_prefixes.iter().map(|e| e.trim()).filter(|e| !e.is_empty())
        {
            let error = |why: &str| {
                format!(
                    "--history-topic-prefixes (REALTIME_HISTORY_TOPIC_PREFIXES): {entry:?}: {why} \
                     (PREFIX=SIZE:TTL_SECS or PREFIX=off)"
                )
            };
            let (prefix, setting) = entry.split_once('=').ok_or_else(|| error("no '='"))?;
            let limits = if setting == "off" {
                None
            } else {
                let (size, ttl) = setting.split_once(':').ok_or_else(|| error("no ':'"))?;
                let max_len = size.parse().map_err(|_| error("SIZE is not a number"))?;
                let ttl: u64 = ttl.parse().map_err(|_| error("TTL_SECS is not a number"))?;
                if ttl == 0 {
                    return Err(error("TTL_SECS must be at least 1"));
                }
                Some(HistoryLimits { max_len, max_age_millis: ttl.saturating_mul(1000) })
            };
            policy.topic_prefixes.push((prefix.to_owned(), limits));
        }
        Ok(policy)
    }

    /// The topic prefixes with presence events, from `--presence-events` (`*` is every topic).
    ///
    /// # Errors
    /// When an entry is not a topic prefix.
    pub fn presence_event_prefixes(&self) -> Result<Vec<String>, String> {
        self.presence_events
            .iter()
            .map(|raw| raw.trim())
            .map(|raw| match raw {
                "" | "*" => Ok(String::new()),
                prefix => TopicName::new(prefix).map(|_| prefix.to_owned()).map_err(|e| {
                    format!("--presence-events (REALTIME_PRESENCE_EVENTS): {prefix:?}: {e}")
                }),
            })
            .collect()
    }

    /// The required permissions from `--required-permissions`.
    ///
    /// # Errors
    /// When an entry is not a valid permission.
    pub fn permissions(&self) -> Result<Vec<Permission>, String> {
        self.required_permissions
            .iter()
            .map(|raw| raw.trim())
            .filter(|raw| !raw.is_empty())
            .map(|raw| {
                Permission::new(raw).map_err(|e| {
                    format!("--required-permissions (REALTIME_REQUIRED_PERMISSIONS): {raw:?}: {e}")
                })
            })
            .collect()
    }
}

/// The largest accepted `--jwt-leeway-secs`: every second of leeway is a second an expired
/// token still works.
pub const MAX_LEEWAY_SECS: u64 = 300;

#[cfg(test)]
mod tests {
    use clap::Parser;
    use realtime_core::{HistoryLimits, StreamName};

    use super::Config;

    fn parse(args: &[&str]) -> Config {
        Config::try_parse_from(std::iter::once("realtime-server").chain(args.iter().copied()))
            .unwrap_or_else(|e| panic!("{e}"))
    }

    fn limits(config: &Config, stream: &str) -> Option<HistoryLimits> {
        let policy = config.history_policy().unwrap_or_else(|e| panic!("{e}"));
        policy.limits(&StreamName::parse(stream).unwrap_or_else(|e| panic!("{e}")))
    }

    #[test]
    fn history_flags_build_the_policy() {
        let default = parse(&[]);
        let on = Some(HistoryLimits { max_len: 100, max_age_millis: 300_000 });
        for stream in ["user:a", "role:b", "topic:c", "broadcast"] {
            assert_eq!(limits(&default, stream), on, "{stream}");
        }
        let config = parse(&[
            "--history-size",
            "10",
            "--history-ttl-secs",
            "60",
            "--history-off",
            "role,broadcast",
            "--history-topic-prefixes",
            "chat:=5:30,metrics:=off",
        ]);
        assert_eq!(
            limits(&config, "user:a"),
            Some(HistoryLimits { max_len: 10, max_age_millis: 60_000 })
        );
        assert_eq!(limits(&config, "role:b"), None);
        assert_eq!(limits(&config, "broadcast"), None);
        assert_eq!(
            limits(&config, "topic:chat:1"),
            Some(HistoryLimits { max_len: 5, max_age_millis: 30_000 })
        );
        assert_eq!(limits(&config, "topic:metrics:cpu"), None);
        for (flag, value, named) in [
            ("--history-off", "users", "--history-off (REALTIME_HISTORY_OFF): \"users\""),
            ("--history-topic-prefixes", "chat:", "no '='"),
            ("--history-topic-prefixes", "chat:=5", "no ':'"),
            ("--history-topic-prefixes", "chat:=x:3", "SIZE is not a number"),
            ("--history-topic-prefixes", "chat:=5:0", "TTL_SECS must be at least 1"),
        ] {
            let error = parse(&[flag, value]).validate().err().unwrap_or_default();
            assert!(error.contains(named), "{flag} {value}: {error}");
        }
    }

    #[test]
    fn compression_flags() {
        assert!(!parse(&[]).websocket_compression, "off by default");
        assert_eq!(parse(&[]).websocket_compression_min_bytes, 256);
        assert!(parse(&["--websocket-compression"]).websocket_compression);
        assert!(parse(&["--websocket-compression", "true"]).websocket_compression);
        assert!(!parse(&["--websocket-compression", "false"]).websocket_compression);
        let config = parse(&["--websocket-compression-min-bytes", "0"]);
        assert_eq!((config.websocket_compression_min_bytes, config.validate()), (0, Ok(())));
        let error = parse(&["--websocket-compression-min-bytes", "67108865"])
            .validate()
            .err()
            .unwrap_or_default();
        assert!(
            error.starts_with(
                "--websocket-compression-min-bytes (REALTIME_WEBSOCKET_COMPRESSION_MIN_BYTES)"
            ),
            "{error}"
        );
    }

    #[test]
    fn presence_event_prefixes() {
        let config = parse(&["--presence-events", "chat:,*"]);
        assert_eq!(config.presence_event_prefixes(), Ok(vec!["chat:".to_owned(), String::new()]));
        let error = parse(&["--presence-events", "a b"]).validate().err().unwrap_or_default();
        assert!(
            error.starts_with("--presence-events (REALTIME_PRESENCE_EVENTS): \"a b\""),
            "{error}"
        );
        let error = parse(&["--broker", "redis"]).validate().err().unwrap_or_default();
        assert_eq!(
            error,
            "--broker redis (REALTIME_BROKER) needs --redis-url (REALTIME_REDIS_URL)"
        );
        let error = parse(&["--broker", "redis", "--redis-url", "redis://:pw@a/, ,redis://b/"])
            .validate()
            .err()
            .unwrap_or_default();
        assert_eq!(
            error,
            "--redis-url (REALTIME_REDIS_URL) is a comma-separated list of Redis URLs, and entry \
             2 of 3 is empty"
        );
        let error = parse(&["--redis-url", "redis://:pw@a/,redis://b/, redis://:pw@a/"])
            .validate()
            .err()
            .unwrap_or_default();
        assert_eq!(
            error,
            "--redis-url (REALTIME_REDIS_URL) lists the same Redis twice (entries 1 and 3)"
        );
        let sharded = parse(&["--broker", "redis", "--redis-url", "redis://a/, redis://b/"]);
        assert_eq!(sharded.validate(), Ok(()));
        let error = parse(&["--presence-ttl-secs", "0"]).validate().err().unwrap_or_default();
        assert_eq!(
            error,
            "--presence-ttl-secs (REALTIME_PRESENCE_TTL_SECS) must be between 1 and 86400 \
             seconds, got 0"
        );
        let error = parse(&["--max-topics", "0"]).validate().err().unwrap_or_default();
        assert!(
            error.starts_with("--max-topics (REALTIME_MAX_TOPICS) must be between 1"),
            "{error}"
        );
    }
}
