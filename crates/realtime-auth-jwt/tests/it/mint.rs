//! Test support: fixture keys, verifiers and token minting with jsonwebtoken's `encode`.

use std::path::PathBuf;

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use realtime_auth_jwt::{JwtConfig, JwtVerifier};
use serde_json::Value;

/// The HS256 secret the verifiers are configured with (40 bytes).
pub const SECRET: &[u8] = b"test-only-secret-0123456789-abcdefghijkl";
/// Another valid secret: tokens signed with it must not verify.
pub const OTHER_SECRET: &[u8] = b"another-test-secret-0123456789-abcdefghi";

/// The bytes of `tests/fixtures/<name>`.
pub fn fixture(name: &str) -> Vec<u8> {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures").join(name);
    std::fs::read(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// Seconds since the epoch, as jsonwebtoken sees them.
pub fn now() -> u64 {
    jsonwebtoken::get_current_timestamp()
}

pub fn verifier(config: JwtConfig) -> JwtVerifier {
    JwtVerifier::new(config).unwrap_or_else(|e| panic!("config refused: {e}"))
}

pub fn hs256() -> JwtVerifier {
    verifier(JwtConfig::hs256(SECRET))
}

pub fn rs256() -> JwtVerifier {
    verifier(JwtConfig::rs256_pem(fixture("rsa_public.pem")))
}

pub fn es256() -> JwtVerifier {
    verifier(JwtConfig::es256_pem(fixture("ec_public.pem")))
}

/// A signed token over `claims`.
pub fn mint(alg: Algorithm, key: &EncodingKey, claims: &Value) -> String {
    jsonwebtoken::encode(&Header::new(alg), claims, key).unwrap_or_else(|e| panic!("encode: {e}"))
}

pub fn mint_hs256(claims: &Value) -> String {
    mint(Algorithm::HS256, &EncodingKey::from_secret(SECRET), claims)
}

pub fn mint_rs256(claims: &Value) -> String {
    let key = EncodingKey::from_rsa_pem(&fixture("rsa_private.pem"))
        .unwrap_or_else(|e| panic!("rsa_private.pem: {e}"));
    mint(Algorithm::RS256, &key, claims)
}

pub fn mint_es256(claims: &Value) -> String {
    let key = EncodingKey::from_ec_pem(&fixture("ec_private.pem"))
        .unwrap_or_else(|e| panic!("ec_private.pem: {e}"));
    mint(Algorithm::ES256, &key, claims)
}

pub fn b64(bytes: &[u8]) -> String {
    URL_SAFE_NO_PAD.encode(bytes)
}

/// `header.payload.signature` with an HS256 signature by [`SECRET`] over arbitrary bytes (so
/// the payload need not be JSON).
pub fn sign_raw_hs256(header: &str, payload: &[u8]) -> String {
    let message = format!("{}.{}", b64(header.as_bytes()), b64(payload));
    let signature = jsonwebtoken::crypto::sign(
        message.as_bytes(),
        &EncodingKey::from_secret(SECRET),
        Algorithm::HS256,
    )
    .unwrap_or_else(|e| panic!("sign: {e}"));
    format!("{message}.{signature}")
}

/// `token` with its payload replaced by `claims` and the original signature kept.
pub fn with_payload(token: &str, claims: &Value) -> String {
    let parts: Vec<&str> = token.split('.').collect();
    assert_eq!(parts.len(), 3, "not a JWS");
    format!("{}.{}.{}", parts[0], b64(claims.to_string().as_bytes()), parts[2])
}
