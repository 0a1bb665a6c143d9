//! Configuration of the JWT verifier: the pinned algorithm and key, issuer, audience, leeway,
//! and why a configuration is refused.

use std::fmt;
use std::time::Duration;

/// The key tokens must be signed with; its variant pins the one accepted algorithm.
///
/// `Debug` never prints key bytes: an HS256 secret shows as `<redacted, N bytes>`.
#[derive(Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum JwtKey {
    /// HMAC with SHA-256 and a shared secret of at least [`JwtKey::MIN_HS256_SECRET`] bytes.
    Hs256 {
        /// The shared secret (raw bytes, not base64).
        secret: Vec<u8>,
    },
    /// RSASSA-PKCS1-v1_5 with SHA-256; an RSA public key of at least
    /// [`JwtKey::MIN_RSA_BITS`] bits, PEM-encoded (`BEGIN PUBLIC KEY` or
    /// `BEGIN RSA PUBLIC KEY`).
    Rs256 {
        /// The PEM text of the public key.
        public_key_pem: Vec<u8>,
    },
    /// ECDSA on P-256 with SHA-256; a P-256 public key, PEM-encoded (`BEGIN PUBLIC KEY`).
    Es256 {
        /// The PEM text of the public key.
        public_key_pem: Vec<u8>,
    },
}

impl JwtKey {
    /// Shortest HS256 secret accepted, in bytes (the hash output size, RFC 7518 §3.2).
    pub const MIN_HS256_SECRET: usize = 32;
    /// Smallest RSA modulus accepted, in bits (RFC 7518 §3.3).
    pub const MIN_RSA_BITS: usize = 2048;

    /// The JWS `alg` name this key pins: `HS256`, `RS256` or `ES256`.
    pub fn algorithm_name(&self) -> &'static str {
        match self {
            JwtKey::Hs256 { .. } => "HS256",
            JwtKey::Rs256 { .. } => "RS256",
            JwtKey::Es256 { .. } => "ES256",
        }
    }
}

impl fmt::Debug for JwtKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            JwtKey::Hs256 { secret } => f
                .debug_struct("Hs256")
                .field("secret", &format_args!("<redacted, {} bytes>", secret.len()))
                .finish(),
            JwtKey::Rs256 { public_key_pem } => f
                .debug_struct("Rs256")
                .field("public_key_pem", &format_args!("<{} bytes>", public_key_pem.len()))
                .finish(),
            JwtKey::Es256 { public_key_pem } => f
                .debug_struct("Es256")
                .field("public_key_pem", &format_args!("<{} bytes>", public_key_pem.len()))
                .finish(),
        }
    }
}

/// What a [`crate::JwtVerifier`] accepts.
///
/// `Debug` is safe to log: the key is redacted (see [`JwtKey`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JwtConfig {
    /// The verification key; it also pins the algorithm.
    pub key: JwtKey,
    /// When set, `iss` is required and must equal it.
    pub issuer: Option<String>,
    /// When set, `aud` is required and must be (or contain) it. When unset, `aud` is not
    /// checked at all: tokens with any `aud` verify.
    pub audience: Option<String>,
    /// Clock skew tolerated on `exp` and `nbf`, in whole seconds (sub-second parts are
    /// dropped). Every second of leeway is a second an expired token still works, so keep it
    /// small; the default is [`JwtConfig::DEFAULT_LEEWAY`].
    pub leeway: Duration,
}

impl JwtConfig {
    /// The default leeway: 10 seconds.
    pub const DEFAULT_LEEWAY: Duration = Duration::from_secs(10);

    /// A configuration with `key`, no issuer or audience check, and the default leeway.
    pub fn new(key: JwtKey) -> Self {
        JwtConfig { key, issuer: None, audience: None, leeway: Self::DEFAULT_LEEWAY }
    }

    /// HS256 with a shared secret.
    pub fn hs256(secret: impl Into<Vec<u8>>) -> Self {
        Self::new(JwtKey::Hs256 { secret: secret.into() })
    }

    /// RS256 with a PEM-encoded RSA public key.
    pub fn rs256_pem(public_key_pem: impl Into<Vec<u8>>) -> Self {
        Self::new(JwtKey::Rs256 { public_key_pem: public_key_pem.into() })
    }

    /// ES256 with a PEM-encoded P-256 public key.
    pub fn es256_pem(public_key_pem: impl Into<Vec<u8>>) -> Self {
        Self::new(JwtKey::Es256 { public_key_pem: public_key_pem.into() })
    }

    /// Requires `iss` to equal `issuer`.
    pub fn with_issuer(mut self, issuer: impl Into<String>) -> Self {
        self.issuer = Some(issuer.into());
        self
    }

    /// Requires `aud` to be (or contain) `audience`.
    pub fn with_audience(mut self, audience: impl Into<String>) -> Self {
        self.audience = Some(audience.into());
        self
    }

    /// Sets the clock-skew leeway on `exp` and `nbf`.
    pub fn with_leeway(mut self, leeway: Duration) -> Self {
        self.leeway = leeway;
        self
    }
}

/// Why a [`JwtConfig`] cannot make a verifier.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum JwtConfigError {
    /// The HS256 secret is shorter than [`JwtKey::MIN_HS256_SECRET`].
    #[error("HS256 secret is {len} bytes; at least {min} are required")]
    SecretTooShort {
        /// Length of the given secret.
        len: usize,
        /// The minimum.
        min: usize,
    },
    /// The RSA key is smaller than [`JwtKey::MIN_RSA_BITS`].
    #[error("RSA key has {bits} bits; at least {min} are required")]
    KeyTooSmall {
        /// Size of the given modulus.
        bits: usize,
        /// The minimum.
        min: usize,
    },
    /// The public key is not a usable PEM key for the algorithm.
    #[error("invalid {algorithm} key: {message}")]
    InvalidKey {
        /// `RS256` or `ES256`.
        algorithm: &'static str,
        /// What is wrong with it (never key material).
        message: String,
    },
    /// `issuer` or `audience` is set to an empty string.
    #[error("`{setting}` is set but empty")]
    EmptySetting {
        /// `issuer` or `audience`.
        setting: &'static str,
    },
}
