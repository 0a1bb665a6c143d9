//! [`TokenVerifier`]: where an application plugs in how bearer tokens are verified.

use async_trait::async_trait;
use realtime_core::{BearerToken, ClaimsError, Identity};

/// Why a token was refused. Clients all see the same 401; the variant is for logs and
/// metrics (`reason`), and never carries the token.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum AuthError {
    /// No token was presented.
    #[error("no token")]
    Missing,
    /// Not a well-formed token (bad encoding, bad header, unparseable claims).
    #[error("malformed token")]
    Malformed,
    /// The token names an algorithm other than the configured one (including `none`).
    #[error("algorithm not allowed")]
    AlgorithmNotAllowed,
    /// The signature does not verify with the configured key.
    #[error("invalid signature")]
    InvalidSignature,
    /// `exp` is in the past (beyond the leeway). A missing `exp` is [`AuthError::InvalidClaim`].
    #[error("token expired")]
    Expired,
    /// `nbf` is in the future (beyond the leeway).
    #[error("token not yet valid")]
    NotYetValid,
    /// `iss` is not the configured issuer.
    #[error("wrong issuer")]
    InvalidIssuer,
    /// `aud` does not contain the configured audience.
    #[error("wrong audience")]
    InvalidAudience,
    /// A required claim is missing or has the wrong type.
    #[error("missing or invalid claim: {0}")]
    InvalidClaim(String),
    /// The claims verify but do not make an identity.
    #[error(transparent)]
    Identity(#[from] ClaimsError),
    /// The verifier could not decide (for example, a remote key set is unreachable).
    #[error("verifier unavailable: {0}")]
    Unavailable(String),
}

impl AuthError {
    /// A short, stable label for metrics and logs (`reason`).
    pub fn reason(&self) -> &'static str {
        match self {
            AuthError::Missing => "missing",
            AuthError::Malformed => "malformed",
            AuthError::AlgorithmNotAllowed => "algorithm",
            AuthError::InvalidSignature => "signature",
            AuthError::Expired => "expired",
            AuthError::NotYetValid => "not_yet_valid",
            AuthError::InvalidIssuer => "issuer",
            AuthError::InvalidAudience => "audience",
            AuthError::InvalidClaim(_) => "claim",
            AuthError::Identity(_) => "identity",
            AuthError::Unavailable(_) => "unavailable",
        }
    }
}

/// The upgrade request as a verifier may see it: the token the client presented (if any),
/// the headers and the raw query. Implemented by the transport over its own request type.
///
/// It exists so that authentication can use more than the bearer token: a session cookie, a
/// header set by a proxy, a query parameter. Values that are not visible ASCII are not
/// shown (`None`). Never log what these methods return: they may hold credentials.
pub trait HandshakeRequest: Send + Sync {
    /// The bearer token from the `bearer.<token>` subprotocol or the `token` query parameter;
    /// `None` when the client presented none.
    fn token(&self) -> Option<&BearerToken>;

    /// The first value of header `name` (case-insensitive).
    fn header(&self, name: &str) -> Option<&str>;

    /// The raw query string, without the `?`.
    fn query(&self) -> Option<&str>;

    /// The value of cookie `name` from the `Cookie` header.
    fn cookie(&self, name: &str) -> Option<&str> {
        self.header("cookie")?.split(';').find_map(|pair| {
            let (key, value) = pair.trim().split_once('=')?;
            (key == name).then_some(value)
        })
    }
}

/// A [`HandshakeRequest`] as the verifier receives it (a trait object the transport owns).
pub type UpgradeRequest = dyn HandshakeRequest;

/// Verifies a bearer token and says who it belongs to.
///
/// `realtime-auth-jwt` implements it for JWTs; an application with its own user module
/// implements it to delegate there. An application that authenticates by something else
/// than a bearer token (a session cookie) overrides
/// [`authenticate`](TokenVerifier::authenticate).
#[cfg_attr(feature = "mocks", mockall::automock)]
#[async_trait]
pub trait TokenVerifier: Send + Sync + 'static {
    /// Verifies `token` and returns the identity it proves.
    ///
    /// `Identity::expires_at` MUST be when the connection must close (4001): the moment
    /// from which this verifier refuses the token, so the token's `exp` plus any leeway the
    /// verifier allowed. A token it admits inside the leeway is then never closed at once
    /// for having expired.
    ///
    /// # Errors
    /// MUST return an [`AuthError`] for every token that is not valid now: bad signature,
    /// algorithm other than the configured one, expired, not yet valid, wrong issuer or
    /// audience, missing or ill-typed claims. MUST NOT put the token in the error.
    async fn verify(&self, token: &BearerToken) -> Result<Identity, AuthError>;

    /// Authenticates an upgrade request. The transport calls this, never
    /// [`verify`](TokenVerifier::verify) directly; the default verifies the presented token
    /// and answers [`AuthError::Missing`] without one.
    ///
    /// # Errors
    /// As [`verify`](TokenVerifier::verify); MUST NOT put any credential in the error.
    async fn authenticate(&self, request: &UpgradeRequest) -> Result<Identity, AuthError> {
        match request.token() {
            Some(token) => self.verify(token).await,
            None => Err(AuthError::Missing),
        }
    }
}
