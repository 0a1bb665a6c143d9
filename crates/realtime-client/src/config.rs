//! The client's settings ([`ClientConfig`], the JavaScript client's options) and where its
//! tokens come from ([`TokenSource`]).

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::time::Duration;

use tokio_tungstenite::tungstenite::client::IntoClientRequest;

use crate::backoff::Backoff;

/// Settings of a [`Client`](crate::Client). `ClientConfig::new(url)` has the defaults; set
/// the fields to change them.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub struct ClientConfig {
    /// The server's WebSocket endpoint, `ws://host:port/ws` (`http://` is turned into
    /// `ws://`). Other query parameters are kept; the token never goes in it.
    pub url: String,
    /// Backoff: the ceiling of the first reconnect's delay (500 ms).
    pub min_delay: Duration,
    /// Backoff: the largest ceiling (30 s).
    pub max_delay: Duration,
    /// Backoff: the ceiling's growth per attempt (2).
    pub factor: f64,
    /// A connection open this long resets the backoff (10 s).
    pub stable_after: Duration,
    /// How long a request (`subscribe`, `unsubscribe`, `request`, `ping`, a refresh) waits
    /// for its reply (10 s).
    pub request_timeout: Duration,
    /// How long an upgrade may take, TCP connect included (10 s).
    pub connect_timeout: Duration,
    /// Refresh the token in band this long before the `expires_at` of `connected` (60 s);
    /// `None` never refreshes (the server closes with 4001 at expiry and the client
    /// reconnects at once with a new token).
    pub refresh_before: Option<Duration>,
    /// Events buffered for the application before the client waits for it (1024).
    pub event_capacity: usize,
    /// Seeds the backoff's random draws (for tests); `None` seeds from the OS.
    pub seed: Option<u64>,
}

/// Why a [`ClientConfig`] is refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ConfigError {
    /// The URL is not a WebSocket URL.
    #[error("invalid url: {0}")]
    InvalidUrl(String),
    /// `wss://` needs TLS, which this build of the client does not include.
    #[error("wss:// is not supported by this build (no TLS); use ws:// behind a TLS proxy")]
    TlsUnsupported,
    /// `min_delay` is zero or above `max_delay`, or `factor` is below 1 or not finite.
    #[error("invalid backoff: min_delay must be > 0 and <= max_delay, factor finite and >= 1")]
    InvalidBackoff,
    /// `event_capacity` is zero.
    #[error("event_capacity must be at least 1")]
    ZeroEventCapacity,
}

impl ClientConfig {
    /// The defaults for `url`.
    pub fn new(url: impl Into<String>) -> ClientConfig {
        ClientConfig {
            url: url.into(),
            min_delay: Duration::from_millis(500),
            max_delay: Duration::from_secs(30),
            factor: 2.0,
            stable_after: Duration::from_secs(10),
            request_timeout: Duration::from_secs(10),
            connect_timeout: Duration::from_secs(10),
            refresh_before: Some(Duration::from_secs(60)),
            event_capacity: 1024,
            seed: None,
        }
    }

    /// The backoff these settings describe.
    pub fn backoff(&self) -> Backoff {
        Backoff { min: self.min_delay, max: self.max_delay, factor: self.factor }
    }

    /// Checks the settings; returns the URL to connect to (`ws://`).
    pub(crate) fn validate(&self) -> Result<String, ConfigError> {
        let url = if let Some(rest) = self.url.strip_prefix("http://") {
            format!("ws://{rest}")
        } else if self.url.starts_with("https://") || self.url.starts_with("wss://") {
            return Err(ConfigError::TlsUnsupported);
        } else {
            self.url.clone()
        };
        if !url.starts_with("ws://") {
            return Err(ConfigError::InvalidUrl("the scheme must be ws:// or http://".into()));
        }
        url.as_str().into_client_request().map_err(|e| ConfigError::InvalidUrl(e.to_string()))?;
        let backoff_ok = !self.min_delay.is_zero()
            && self.min_delay <= self.max_delay
            && self.factor.is_finite()
            && self.factor >= 1.0;
        if !backoff_ok {
            return Err(ConfigError::InvalidBackoff);
        }
        if self.event_capacity == 0 {
            return Err(ConfigError::ZeroEventCapacity);
        }
        Ok(url)
    }
}

/// Why a [`TokenSource`] could not give a token. Its text is reported in events: it must not
/// hold the token.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct TokenError(String);

impl TokenError {
    /// An error saying `what`.
    pub fn new(what: impl fmt::Display) -> TokenError {
        TokenError(what.to_string())
    }
}

/// The future of a token.
pub type TokenFuture = Pin<Box<dyn Future<Output = Result<String, TokenError>> + Send + 'static>>;

/// Where the client gets its JWT: asked before every connect and before every refresh. Any
/// `Fn() -> impl Future<Output = Result<String, E>>` (with `E: Display`) is one:
///
/// ```
/// # use realtime_client::TokenSource;
/// fn takes(_: impl TokenSource) {}
/// takes(|| async { Ok::<_, std::io::Error>("eyJ…".to_owned()) });
/// ```
pub trait TokenSource: Send + Sync + 'static {
    /// A fresh token (or the current one, if it is not about to expire).
    fn token(&self) -> TokenFuture;
}

impl<F, Fut, E> TokenSource for F
where
    F: Fn() -> Fut + Send + Sync + 'static,
    Fut: Future<Output = Result<String, E>> + Send + 'static,
    E: fmt::Display,
{
    fn token(&self) -> TokenFuture {
        let token = self();
        Box::pin(async move { token.await.map_err(TokenError::new) })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[track_caller]
    fn check(config: ClientConfig, expected: Result<&str, ConfigError>) {
        assert_eq!(config.validate().as_deref().map_err(Clone::clone), expected);
    }

    #[test]
    fn settings_are_checked() {
        check(ClientConfig::new("ws://127.0.0.1:1/ws"), Ok("ws://127.0.0.1:1/ws"));
        check(ClientConfig::new("http://h:1/ws?a=b"), Ok("ws://h:1/ws?a=b"));
        check(ClientConfig::new("wss://h/ws"), Err(ConfigError::TlsUnsupported));
        check(ClientConfig::new("https://h/ws"), Err(ConfigError::TlsUnsupported));
        assert!(matches!(
            ClientConfig::new("ftp://h/").validate(),
            Err(ConfigError::InvalidUrl(_))
        ));
        assert!(matches!(ClientConfig::new("ws://").validate(), Err(ConfigError::InvalidUrl(_))));
        let url = "ws://h/ws";
        let mut zero = ClientConfig::new(url);
        zero.min_delay = Duration::ZERO;
        check(zero, Err(ConfigError::InvalidBackoff));
        let mut inverted = ClientConfig::new(url);
        inverted.max_delay = Duration::from_millis(1);
        check(inverted, Err(ConfigError::InvalidBackoff));
        for factor in [0.5, f64::NAN, f64::INFINITY] {
            let mut bad = ClientConfig::new(url);
            bad.factor = factor;
            check(bad, Err(ConfigError::InvalidBackoff));
        }
        let mut no_events = ClientConfig::new(url);
        no_events.event_capacity = 0;
        check(no_events, Err(ConfigError::ZeroEventCapacity));
    }

    #[tokio::test]
    async fn a_closure_is_a_token_source() {
        let good = || async { Ok::<_, std::io::Error>("t".to_owned()) };
        assert_eq!(good.token().await, Ok("t".to_owned()));
        let bad = || async { Err::<String, _>("auth service down") };
        assert_eq!(bad.token().await, Err(TokenError::new("auth service down")));
    }
}
