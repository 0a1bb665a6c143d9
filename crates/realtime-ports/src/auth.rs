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

/// Verifies a bearer token and says who it belongs to.
///
/// `realtime-auth-jwt` implements it for JWTs; an application with its own user module
/// implements it to delegate there.
#[cfg_attr(feature = "mocks", mockall::automock)]
#[async_trait]
pub trait TokenVerifier: Send + Sync + 'static {
    /// Verifies `token` and returns the identity it proves.
    ///
    /// # Errors
    /// MUST return an [`AuthError`] for every token that is not valid now: bad signature,
    /// algorithm other than the configured one, expired, not yet valid, wrong issuer or
    /// audience, missing or ill-typed claims. MUST NOT put the token in the error.
    async fn verify(&self, token: &BearerToken) -> Result<Identity, AuthError>;
}
