//! Every bad token is refused with the right `AuthError`, and no error shows the token.

use std::time::Duration;

use jsonwebtoken::{Algorithm, EncodingKey};
use realtime_auth_jwt::{JwtConfig, JwtVerifier, MAX_TOKEN_BYTES};
use realtime_core::{BearerToken, ClaimsError, InvalidRole, InvalidUserId};
use realtime_ports::{AuthError, TokenVerifier};
use serde_json::{Value, json};

use crate::mint::{
    OTHER_SECRET, SECRET, b64, es256, fixture, hs256, mint, mint_es256, mint_hs256, mint_rs256,
    now, rs256, sign_raw_hs256, verifier, with_payload,
};

struct Case {
    name: &'static str,
    verifier: JwtVerifier,
    token: String,
    expected: AuthError,
}

fn case(name: &'static str, verifier: JwtVerifier, token: String, expected: AuthError) -> Case {
    Case { name, verifier, token, expected }
}

fn later() -> u64 {
    now() + 3600
}

fn ok_claims() -> Value {
    json!({"sub": "user-1", "roles": ["admin"], "exp": later()})
}

fn claim(name: &str) -> AuthError {
    AuthError::InvalidClaim(name.to_owned())
}

fn cases() -> Vec<Case> {
    let strict = || {
        verifier(
            JwtConfig::hs256(SECRET).with_issuer("https://auth.example").with_audience("realtime"),
        )
    };
    let strict_claims = |extra: Value| {
        let mut claims = json!({"sub": "u", "exp": later()});
        if let (Some(claims), Some(extra)) = (claims.as_object_mut(), extra.as_object()) {
            claims.extend(extra.clone());
        }
        claims
    };
    let alg_none = format!(
        "{}.{}.",
        b64(br#"{"alg":"none","typ":"JWT"}"#),
        b64(ok_claims().to_string().as_bytes())
    );
    let alg_none_upper =
        format!("{}.{}.", b64(br#"{"alg":"None"}"#), b64(ok_claims().to_string().as_bytes()));
    // The classic key confusion: HS256 "signed" with the RSA public key's PEM bytes as the
    // HMAC secret, presented to a verifier that holds that public key.
    let confused =
        mint(Algorithm::HS256, &EncodingKey::from_secret(&fixture("rsa_public.pem")), &ok_claims());
    vec![
        case(
            "other secret",
            hs256(),
            mint(Algorithm::HS256, &EncodingKey::from_secret(OTHER_SECRET), &ok_claims()),
            AuthError::InvalidSignature,
        ),
        case(
            "tampered HS256 payload",
            hs256(),
            with_payload(&mint_hs256(&ok_claims()), &json!({"sub": "admin", "exp": later()})),
            AuthError::InvalidSignature,
        ),
        case(
            "tampered RS256 payload",
            rs256(),
            with_payload(&mint_rs256(&ok_claims()), &json!({"sub": "admin", "exp": later()})),
            AuthError::InvalidSignature,
        ),
        case(
            "tampered ES256 payload",
            es256(),
            with_payload(&mint_es256(&ok_claims()), &json!({"sub": "admin", "exp": later()})),
            AuthError::InvalidSignature,
        ),
        case(
            "signature stripped",
            hs256(),
            {
                let t = mint_hs256(&ok_claims());
                format!("{}.", &t[..t.rfind('.').unwrap_or(0)])
            },
            AuthError::InvalidSignature,
        ),
        case(
            "expired",
            hs256(),
            mint_hs256(&json!({"sub": "u", "exp": now() - 3600})),
            AuthError::Expired,
        ),
        case(
            "expired beyond a zero leeway",
            verifier(JwtConfig::hs256(SECRET).with_leeway(Duration::ZERO)),
            mint_hs256(&json!({"sub": "u", "exp": now() - 5})),
            AuthError::Expired,
        ),
        case(
            "expired RS256",
            rs256(),
            mint_rs256(&json!({"sub": "u", "exp": now() - 3600})),
            AuthError::Expired,
        ),
        case(
            "nbf in the future",
            hs256(),
            mint_hs256(&json!({"sub": "u", "exp": later(), "nbf": now() + 600})),
            AuthError::NotYetValid,
        ),
        case("alg none", hs256(), alg_none.clone(), AuthError::AlgorithmNotAllowed),
        case("alg none to RS256", rs256(), alg_none, AuthError::AlgorithmNotAllowed),
        case("alg None", hs256(), alg_none_upper, AuthError::AlgorithmNotAllowed),
        case("HS256 with the RSA public key", rs256(), confused, AuthError::AlgorithmNotAllowed),
        case("RS256 to HS256", hs256(), mint_rs256(&ok_claims()), AuthError::AlgorithmNotAllowed),
        case("ES256 to RS256", rs256(), mint_es256(&ok_claims()), AuthError::AlgorithmNotAllowed),
        case("HS256 to ES256", es256(), mint_hs256(&ok_claims()), AuthError::AlgorithmNotAllowed),
        case(
            "HS512 to HS256",
            hs256(),
            mint(Algorithm::HS512, &EncodingKey::from_secret(SECRET), &ok_claims()),
            AuthError::AlgorithmNotAllowed,
        ),
        case(
            "wrong iss",
            strict(),
            mint_hs256(&strict_claims(json!({"iss": "https://evil.example", "aud": "realtime"}))),
            AuthError::InvalidIssuer,
        ),
        case(
            "missing iss",
            strict(),
            mint_hs256(&strict_claims(json!({"aud": "realtime"}))),
            claim("iss"),
        ),
        case(
            "wrong aud",
            strict(),
            mint_hs256(&strict_claims(json!({"iss": "https://auth.example", "aud": "other"}))),
            AuthError::InvalidAudience,
        ),
        case(
            "wrong aud array",
            strict(),
            mint_hs256(&strict_claims(json!({"iss": "https://auth.example", "aud": ["a", "b"]}))),
            AuthError::InvalidAudience,
        ),
        case(
            "missing aud",
            strict(),
            mint_hs256(&strict_claims(json!({"iss": "https://auth.example"}))),
            claim("aud"),
        ),
        case("missing exp", hs256(), mint_hs256(&json!({"sub": "u"})), claim("exp")),
        case(
            "exp as a string",
            hs256(),
            mint_hs256(&json!({"sub": "u", "exp": later().to_string()})),
            claim("exp"),
        ),
        case(
            "exp as a fraction",
            hs256(),
            mint_hs256(&json!({"sub": "u", "exp": later() as f64 + 0.5})),
            claim("exp"),
        ),
        case(
            "nbf as a string",
            hs256(),
            mint_hs256(&json!({"sub": "u", "exp": later(), "nbf": "0"})),
            claim("nbf"),
        ),
        case("missing sub", hs256(), mint_hs256(&json!({"exp": later()})), claim("sub")),
        case(
            "sub as a number",
            hs256(),
            mint_hs256(&json!({"sub": 42, "exp": later()})),
            claim("sub"),
        ),
        case(
            "empty sub",
            hs256(),
            mint_hs256(&json!({"sub": "", "exp": later()})),
            AuthError::Identity(ClaimsError::InvalidSubject(InvalidUserId::Empty)),
        ),
        case(
            "roles not an array",
            hs256(),
            mint_hs256(&json!({"sub": "u", "exp": later(), "roles": "admin"})),
            claim("roles"),
        ),
        case(
            "permissions not strings",
            hs256(),
            mint_hs256(&json!({"sub": "u", "exp": later(), "permissions": [1]})),
            claim("permissions"),
        ),
        case(
            "invalid role",
            hs256(),
            mint_hs256(&json!({"sub": "u", "exp": later(), "roles": ["ok", "bad role"]})),
            AuthError::Identity(ClaimsError::InvalidRole {
                index: 1,
                error: InvalidRole::InvalidCharacter(' '),
            }),
        ),
        case(
            "signed payload that is not JSON",
            hs256(),
            sign_raw_hs256(r#"{"alg":"HS256","typ":"JWT"}"#, b"not json"),
            AuthError::Malformed,
        ),
        case(
            "signed payload that is a JSON array",
            hs256(),
            sign_raw_hs256(r#"{"alg":"HS256"}"#, b"[1,2]"),
            AuthError::Malformed,
        ),
        case("garbage", hs256(), "this is not a token".to_owned(), AuthError::Malformed),
        case("garbage with dots", rs256(), "a.b.c".to_owned(), AuthError::Malformed),
        case("empty", hs256(), String::new(), AuthError::Malformed),
        case(
            "two parts",
            hs256(),
            {
                let t = mint_hs256(&ok_claims());
                t[..t.rfind('.').unwrap_or(0)].to_owned()
            },
            AuthError::Malformed,
        ),
        case(
            "four parts",
            hs256(),
            format!("{}.x", mint_hs256(&ok_claims())),
            AuthError::Malformed,
        ),
        case(
            "oversize",
            hs256(),
            mint_hs256(&json!({"sub": "u", "exp": later(), "pad": "x".repeat(MAX_TOKEN_BYTES)})),
            AuthError::Malformed,
        ),
    ]
}

#[tokio::test]
async fn bad_tokens_are_refused_with_the_right_error() {
    let mut failures = Vec::new();
    for c in cases() {
        let got = c.verifier.verify(&BearerToken::new(c.token.clone())).await;
        if got != Err(c.expected.clone()) {
            failures.push(format!("{}: expected {:?}, got {:?}", c.name, c.expected, got));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

#[tokio::test]
async fn errors_never_show_the_token() {
    for c in cases() {
        let Err(error) = c.verifier.verify(&BearerToken::new(c.token.clone())).await else {
            panic!("{}: accepted", c.name);
        };
        let shown = format!("{error} {error:?} {}", error.reason());
        // The whole token, and each of its non-trivial parts.
        for part in std::iter::once(c.token.as_str()).chain(c.token.split('.')) {
            if part.len() >= 8 {
                assert!(!shown.contains(part), "{}: error `{shown}` shows the token", c.name);
            }
        }
    }
}

#[test]
fn verify_now_matches_the_port() {
    let token = BearerToken::new(mint_hs256(&json!({"sub": "u", "exp": now() - 3600})));
    assert_eq!(hs256().verify_now(&token), Err(AuthError::Expired));
}
