//! Valid tokens verify into the right identity, for each algorithm and each optional check.

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::Duration;

use realtime_auth_jwt::JwtConfig;
use realtime_core::{BearerToken, Identity, Permission, Role, TopicPattern, UnixMillis, UserId};
use realtime_ports::TokenVerifier;
use serde_json::{Value, json};

use crate::mint::{SECRET, es256, hs256, mint_es256, mint_hs256, mint_rs256, now, rs256, verifier};

fn expected(user: &str, roles: &[&str], permissions: &[&str], exp: u64) -> Identity {
    Identity {
        user_id: UserId::new(user).unwrap_or_else(|e| panic!("{e}")),
        roles: roles.iter().map(|r| Role::new(r).unwrap_or_else(|e| panic!("{e}"))).collect(),
        permissions: permissions
            .iter()
            .map(|p| Permission::new(p).unwrap_or_else(|e| panic!("{e}")))
            .collect::<BTreeSet<_>>(),
        // `exp` plus the default leeway: when the verifier starts refusing the token.
        expires_at: Some(UnixMillis::from_secs(exp + JwtConfig::DEFAULT_LEEWAY.as_secs())),
        topics: Vec::new(),
        issued_at: None,
    }
}

/// Claims with every grant, issued an hour before `exp`.
fn full_claims(exp: u64) -> Value {
    json!({
        "sub": "user-42",
        "roles": ["staff", "admin", "staff"],
        "permissions": ["chat:read", "chat:write"],
        "topics": ["orders", "chat:*"],
        "exp": exp,
        "iat": exp - 3600,
        "jti": "abc",
    })
}

/// The identity [`full_claims`] proves.
fn full_expected(exp: u64) -> Identity {
    let pattern = |raw: &str| TopicPattern::parse(raw).unwrap_or_else(|e| panic!("{e}"));
    Identity {
        topics: vec![pattern("orders"), pattern("chat:*")],
        issued_at: Some(UnixMillis::from_secs(exp - 3600)),
        ..expected("user-42", &["admin", "staff"], &["chat:read", "chat:write"], exp)
    }
}

async fn verify(v: Arc<dyn TokenVerifier>, token: &str) -> Identity {
    v.verify(&BearerToken::new(token)).await.unwrap_or_else(|e| panic!("refused: {e:?}"))
}

#[tokio::test]
async fn hs256_token_gives_identity() {
    let exp = now() + 3600;
    let identity = verify(Arc::new(hs256()), &mint_hs256(&full_claims(exp))).await;
    assert_eq!(identity, full_expected(exp));
}

#[tokio::test]
async fn rs256_token_gives_identity() {
    let exp = now() + 3600;
    let identity = verify(Arc::new(rs256()), &mint_rs256(&full_claims(exp))).await;
    assert_eq!(identity, full_expected(exp));
}

#[tokio::test]
async fn es256_token_gives_identity() {
    let exp = now() + 3600;
    let identity = verify(Arc::new(es256()), &mint_es256(&full_claims(exp))).await;
    assert_eq!(identity, full_expected(exp));
}

#[tokio::test]
async fn topics_and_iat_reach_the_identity() {
    let exp = now() + 3600;
    let iat = now() - 10;
    let token = mint_hs256(&json!({"sub": "u", "exp": exp, "iat": iat, "topics": ["*"]}));
    let identity = verify(Arc::new(hs256()), &token).await;
    let all = TopicPattern::parse("*").unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(identity.topics, vec![all]);
    assert_eq!(identity.issued_at, Some(UnixMillis::from_secs(iat)));
    let refused = hs256().verify_now(&BearerToken::new(mint_hs256(
        &json!({"sub": "u", "exp": exp, "topics": ["chat:*", "a b"]}),
    )));
    assert!(
        matches!(
            refused,
            Err(realtime_ports::AuthError::Identity(realtime_core::ClaimsError::InvalidTopic {
                index: 1,
                ..
            }))
        ),
        "{refused:?}"
    );
}

#[tokio::test]
async fn minimal_token_has_no_grants() {
    let exp = now() + 60;
    let identity = verify(Arc::new(hs256()), &mint_hs256(&json!({"sub": "u", "exp": exp}))).await;
    assert_eq!(identity, expected("u", &[], &[], exp));
}

#[tokio::test]
async fn optional_checks_pass_when_met() {
    let exp = now() + 600;
    let with_checks = verifier(
        JwtConfig::hs256(SECRET).with_issuer("https://auth.example").with_audience("realtime"),
    );
    let cases = [
        // Audience not configured: any `aud` is fine.
        (hs256(), json!({"sub": "u", "exp": exp, "aud": "someone-else"})),
        (hs256(), json!({"sub": "u", "exp": exp, "aud": ["a", "b"], "iss": "anyone"})),
        // `nbf` in the past.
        (hs256(), json!({"sub": "u", "exp": exp, "nbf": now() - 60})),
        // Configured issuer and audience, the audience as a string or in an array.
        (
            with_checks.clone(),
            json!({"sub": "u", "exp": exp, "iss": "https://auth.example", "aud": "realtime"}),
        ),
        (
            with_checks,
            json!({"sub": "u", "exp": exp, "iss": "https://auth.example", "aud": ["x", "realtime"]}),
        ),
    ];
    for (v, claims) in cases {
        let identity = verify(Arc::new(v), &mint_hs256(&claims)).await;
        assert_eq!(identity, expected("u", &[], &[], exp), "{claims}");
    }
}

#[tokio::test]
async fn leeway_tolerates_small_skew() {
    // Five seconds past `exp` (or before `nbf`) is inside the default 10 s leeway.
    let v = Arc::new(hs256());
    // The identity expires when the leeway is over, not at `exp`, so the connection is not
    // admitted only to be closed at once.
    let late = now() - 5;
    assert_eq!(
        verify(v.clone(), &mint_hs256(&json!({"sub": "u", "exp": late}))).await.expires_at,
        Some(UnixMillis::from_secs(late + 10))
    );
    verify(v, &mint_hs256(&json!({"sub": "u", "exp": now() + 60, "nbf": now() + 5}))).await;

    let wide = Arc::new(verifier(JwtConfig::hs256(SECRET).with_leeway(Duration::from_secs(120))));
    let exp = now() - 60;
    assert_eq!(
        verify(wide, &mint_hs256(&json!({"sub": "u", "exp": exp}))).await.expires_at,
        Some(UnixMillis::from_secs(exp + 120))
    );
    let none = Arc::new(verifier(JwtConfig::hs256(SECRET).with_leeway(Duration::ZERO)));
    let exp = now() + 60;
    assert_eq!(
        verify(none, &mint_hs256(&json!({"sub": "u", "exp": exp}))).await.expires_at,
        Some(UnixMillis::from_secs(exp))
    );
}
