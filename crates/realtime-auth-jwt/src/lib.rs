//! realtime-auth-jwt: a [`realtime_ports::TokenVerifier`] for JSON Web Tokens, on
//! `jsonwebtoken` 11.
//!
//! # Configuration
//!
//! A [`JwtConfig`] names exactly one key, and the key's kind pins the one algorithm accepted:
//!
//! | [`JwtKey`] | algorithm | key |
//! | --- | --- | --- |
//! | `Hs256 { secret }` | HS256 | shared secret, at least 32 bytes |
//! | `Rs256 { public_key_pem }` | RS256 | RSA public key (PEM), at least 2048 bits |
//! | `Es256 { public_key_pem }` | ES256 | P-256 public key (PEM) |
//!
//! plus `issuer` (when set, `iss` is required and must match), `audience` (when set, `aud`
//! is required and must match; when unset, `aud` is ignored) and `leeway` (clock skew allowed
//! on `exp` and `nbf`, default 10 s; a larger leeway lets expired tokens live longer, so keep
//! it under a minute).
//!
//! ```
//! use realtime_auth_jwt::{JwtConfig, JwtVerifier};
//!
//! let config = JwtConfig::hs256(b"0123456789abcdef0123456789abcdef".to_vec())
//!     .with_issuer("https://auth.example")
//!     .with_audience("realtime");
//! let verifier = JwtVerifier::new(config)?;
//! # Ok::<(), realtime_auth_jwt::JwtConfigError>(())
//! ```
//!
//! [`JwtVerifier::new`] checks the key once (secret length, PEM, RSA size, curve), so a bad
//! key fails at startup.
//!
//! # What a token must be
//!
//! - Signed with the configured algorithm: the algorithm is never taken from the token
//!   header. `alg: none`, another algorithm, and the HS256-with-the-RSA-public-key confusion
//!   are [`realtime_ports::AuthError::AlgorithmNotAllowed`].
//! - `exp` present, a number, and not past (beyond the leeway); `nbf`, if present, not in the
//!   future; `sub` present. `iss`/`aud` as configured.
//! - `sub`, `roles`, `permissions` as [`realtime_core::RawClaims`] describes; the identity
//!   is [`realtime_core::Identity::from_claims`]; its `expires_at` is `exp` plus the leeway
//!   (when the verifier starts refusing the token), so a connection admitted inside the
//!   leeway is closed with 4001 only when the leeway is over, never at once.
//!
//! Every refusal is one [`realtime_ports::AuthError`] variant, mapped from jsonwebtoken's
//! `ErrorKind` in one `match`.
//!
//! # Crypto backend
//!
//! jsonwebtoken is built with its `rust_crypto` feature: a pure-Rust backend (RustCrypto's
//! `rsa`, `p256`, `hmac`, `sha2`), chosen because it builds fast and needs no C toolchain
//! (unlike `aws_lc_rs`). `use_pem` is on to read PEM keys.
//!
//! **Architecture Invariant:** among workspace crates this depends on `realtime-core` and
//! `realtime-ports` only, and it never logs a token nor puts one in an error (it does not log
//! at all).

mod config;
mod verifier;

pub use config::{JwtConfig, JwtConfigError, JwtKey};
pub use verifier::{JwtVerifier, MAX_TOKEN_BYTES};
