//! JWT minting for tests and benchmarks: HS256 tokens from a claims builder, and tokens with
//! any header and key for tests of odd or hostile tokens.
//!
//! Uses `jsonwebtoken` with its RustCrypto backend. The secret in [`DEV_SECRET`] is public:
//! never configure it outside tests.

use std::time::{SystemTime, UNIX_EPOCH};

pub use jsonwebtoken;
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use serde::Serialize;
use serde_json::{Map, Value};

/// A public HS256 secret for tests and local development (48 bytes). Never use it in
/// production: anyone can mint tokens with it.
pub const DEV_SECRET: &str = "realtime-dev-secret-for-tests-only-do-not-deploy";

/// Signs `claims` as an HS256 JWT with `secret`.
///
/// # Panics
/// If `claims` does not serialise to a JSON object (HS256 signing itself cannot fail).
pub fn mint_hs256(secret: &[u8], claims: &Value) -> String {
    mint_with_header(&Header::new(Algorithm::HS256), &EncodingKey::from_secret(secret), claims)
}

/// Signs `claims` with an explicit `header` and `key`, for tests that need unusual tokens
/// (another algorithm, a `kid`, extra header fields, a different key).
///
/// # Panics
/// If `jsonwebtoken` refuses, for example when `header.alg` does not fit the key's family.
pub fn mint_with_header<T: Serialize>(header: &Header, key: &EncodingKey, claims: &T) -> String {
    jsonwebtoken::encode(header, claims, key)
        .unwrap_or_else(|e| panic!("minting a test token with alg {:?} failed: {e}", header.alg))
}

/// An HS256 token for `user` with `roles`, expiring at `exp_unix_secs` (seconds since the
/// Unix epoch). Shorthand for `Claims::new(user).roles(roles).exp(exp_unix_secs).mint(secret)`.
pub fn token_for(secret: &[u8], user: &str, roles: &[&str], exp_unix_secs: u64) -> String {
    Claims::new(user).roles(roles).exp(exp_unix_secs).mint(secret)
}

/// Seconds since the Unix epoch now, for `exp` claims (`now_unix_secs() + 3600`).
pub fn now_unix_secs() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0)
}

/// A builder of JWT claims as a JSON object; any claim can be set to any JSON value, or
/// removed, so tests can build invalid claims as easily as valid ones.
///
/// ```
/// use realtime_testkit::jwt::{Claims, DEV_SECRET};
///
/// let token = Claims::new("alice")
///     .roles(&["admin"])
///     .permissions(&["dashboard:read"])
///     .exp(4_102_444_800)
///     .mint(DEV_SECRET.as_bytes());
/// assert_eq!(token.split('.').count(), 3);
/// ```
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Claims(Map<String, Value>);

impl Claims {
    /// Claims with `sub` set to `user`.
    pub fn new(user: &str) -> Self {
        Claims::empty().set("sub", Value::from(user))
    }

    /// No claims at all (not even `sub`).
    pub fn empty() -> Self {
        Claims(Map::new())
    }

    /// Sets `roles` to an array of strings.
    pub fn roles(self, roles: &[&str]) -> Self {
        self.set("roles", Value::from(roles.to_vec()))
    }

    /// Sets `permissions` to an array of strings.
    pub fn permissions(self, permissions: &[&str]) -> Self {
        self.set("permissions", Value::from(permissions.to_vec()))
    }

    /// Sets `topics` to an array of topic patterns (`orders`, `chat:*`).
    pub fn topics(self, topics: &[&str]) -> Self {
        self.set("topics", Value::from(topics.to_vec()))
    }

    /// Sets `iat` (seconds since the Unix epoch).
    pub fn iat(self, iat_unix_secs: u64) -> Self {
        self.set("iat", Value::from(iat_unix_secs))
    }

    /// Sets `exp` (seconds since the Unix epoch).
    pub fn exp(self, exp_unix_secs: u64) -> Self {
        self.set("exp", Value::from(exp_unix_secs))
    }

    /// Sets claim `name` to `value`, replacing any previous value.
    pub fn set(mut self, name: &str, value: Value) -> Self {
        self.0.insert(name.to_owned(), value);
        self
    }

    /// Removes claim `name`.
    pub fn without(mut self, name: &str) -> Self {
        self.0.remove(name);
        self
    }

    /// The claims as a JSON object.
    pub fn to_json(&self) -> Value {
        Value::Object(self.0.clone())
    }

    /// Signs the claims as an HS256 JWT with `secret`.
    pub fn mint(&self, secret: &[u8]) -> String {
        mint_with_header(&Header::new(Algorithm::HS256), &EncodingKey::from_secret(secret), &self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use jsonwebtoken::{DecodingKey, Validation, decode};
    use serde_json::json;

    const SECRET: &[u8] = DEV_SECRET.as_bytes();

    /// Verifies `token` with `secret` (HS256, `exp` required) and returns its claims.
    fn verify(token: &str, secret: &[u8]) -> Result<Value, jsonwebtoken::errors::Error> {
        let validation = Validation::new(Algorithm::HS256);
        decode::<Value>(token, &DecodingKey::from_secret(secret), &validation).map(|d| d.claims)
    }

    #[test]
    fn dev_secret_is_long_enough_for_hs256() {
        assert!(DEV_SECRET.len() >= 32);
    }

    #[test]
    fn minted_tokens_verify_with_the_same_secret_only() {
        let exp = now_unix_secs() + 3600;
        let cases: &[(String, Value)] = &[
            (
                token_for(SECRET, "alice", &["admin", "ops"], exp),
                json!({"sub": "alice", "roles": ["admin", "ops"], "exp": exp}),
            ),
            (token_for(SECRET, "bob", &[], exp), json!({"sub": "bob", "roles": [], "exp": exp})),
            (
                mint_hs256(SECRET, &json!({"sub": "carol", "exp": exp, "x": 1})),
                json!({"sub": "carol", "exp": exp, "x": 1}),
            ),
            (
                Claims::new("dave")
                    .permissions(&["a:read"])
                    .exp(exp)
                    .set("roles", json!("admin"))
                    .mint(SECRET),
                json!({"sub": "dave", "permissions": ["a:read"], "exp": exp, "roles": "admin"}),
            ),
        ];
        for (token, claims) in cases {
            assert_eq!(verify(token, SECRET).ok().as_ref(), Some(claims), "{claims}");
            assert!(verify(token, b"another-secret-another-secret-xx").is_err(), "{claims}");
        }
    }

    #[test]
    fn expired_tokens_are_minted_and_rejected_by_verifiers() {
        let token = token_for(SECRET, "alice", &[], 1_000);
        let err = verify(&token, SECRET).err().map(|e| e.into_kind());
        assert_eq!(err, Some(jsonwebtoken::errors::ErrorKind::ExpiredSignature));
    }

    #[test]
    fn claims_builder_sets_topics_and_iat() {
        let exp = now_unix_secs() + 3600;
        let token =
            Claims::new("erin").topics(&["orders", "chat:*"]).iat(exp - 60).exp(exp).mint(SECRET);
        assert_eq!(
            verify(&token, SECRET).ok(),
            Some(
                json!({"sub": "erin", "topics": ["orders", "chat:*"], "iat": exp - 60, "exp": exp})
            )
        );
    }

    #[test]
    fn claims_builder_can_build_invalid_claims() {
        let claims = Claims::new("alice").exp(5).without("sub").set("exp", json!("soon"));
        assert_eq!(claims.to_json(), json!({"exp": "soon"}));
        assert_eq!(Claims::empty().to_json(), json!({}));
    }

    #[test]
    fn mint_with_header_sets_the_header() {
        let mut header = Header::new(Algorithm::HS512);
        header.kid = Some("key-2".to_owned());
        let token =
            mint_with_header(&header, &EncodingKey::from_secret(SECRET), &json!({"sub": "a"}));
        let decoded = jsonwebtoken::decode_header(&token).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(decoded.alg, Algorithm::HS512);
        assert_eq!(decoded.kid.as_deref(), Some("key-2"));
        assert!(verify(&token, SECRET).is_err(), "an HS256-only verifier rejects HS512");
    }

    #[test]
    #[should_panic(expected = "minting a test token with alg RS256 failed")]
    fn mint_with_header_panics_when_the_key_does_not_fit() {
        let _ = mint_with_header(
            &Header::new(Algorithm::RS256),
            &EncodingKey::from_secret(SECRET),
            &json!({"sub": "a"}),
        );
    }
}
