//! Criterion benchmark of the connect path's token check: `JwtVerifier::verify_now` on an
//! HS256 token with realtime's claims (and one claim it skips), accepted and refused.

use std::hint::black_box;

use criterion::{Criterion, criterion_group, criterion_main};
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use realtime_auth_jwt::{JwtConfig, JwtVerifier};
use realtime_core::BearerToken;

const SECRET: &[u8] = b"bench-only-secret-0123456789-abcdefghijkl";

fn token(claims: &serde_json::Value) -> BearerToken {
    let key = EncodingKey::from_secret(SECRET);
    let raw = jsonwebtoken::encode(&Header::new(Algorithm::HS256), claims, &key)
        .unwrap_or_else(|e| panic!("encode: {e}"));
    BearerToken::new(raw)
}

fn verify(c: &mut Criterion) {
    let verifier =
        JwtVerifier::new(JwtConfig::hs256(SECRET)).unwrap_or_else(|e| panic!("config: {e}"));
    let exp = jsonwebtoken::get_current_timestamp() + 24 * 3600;
    let accepted = token(&serde_json::json!({
        "sub": "user-12345",
        "exp": exp,
        "iat": exp - 3600,
        "roles": ["admin", "support"],
        "permissions": ["realtime:connect", "orders:read"],
    }));
    assert!(verifier.verify_now(&accepted).is_ok(), "the bench token must verify");
    c.bench_function("verify_hs256_accepted", |b| {
        b.iter(|| verifier.verify_now(black_box(&accepted)))
    });
    let wrong_type = token(&serde_json::json!({"sub": "user-12345", "exp": exp, "roles": "admin"}));
    assert!(verifier.verify_now(&wrong_type).is_err(), "the bench token must be refused");
    c.bench_function("verify_hs256_roles_not_an_array", |b| {
        b.iter(|| verifier.verify_now(black_box(&wrong_type)))
    });
}

criterion_group!(benches, verify);
criterion_main!(benches);
