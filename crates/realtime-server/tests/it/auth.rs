//! Every bad token gets 401 (the same body) and never 101, against HS256 and RS256 servers;
//! the control tokens beside them are accepted, so each refusal is for the reason tested. A
//! valid token without a required permission gets 403, so clients do not refresh and retry.

use std::path::PathBuf;

use realtime_server::JwtAlgorithm;
use realtime_testkit::jwt::jsonwebtoken::{Algorithm, EncodingKey, Header};
use realtime_testkit::jwt::{Claims, mint_with_header, now_unix_secs};
use serde_json::json;

use crate::support::{self, SECRET, b64url};

const ISSUER: &str = "https://auth.example";
const AUDIENCE: &str = "realtime";

fn fixture(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/it/fixtures").join(name)
}

fn read_fixture(name: &str) -> Vec<u8> {
    std::fs::read(fixture(name)).unwrap_or_else(|e| panic!("{name}: {e}"))
}

/// Claims that pass every check of the HS256 server.
fn good() -> Claims {
    Claims::new("alice")
        .roles(&["user"])
        .exp(now_unix_secs() + 3600)
        .set("iss", json!(ISSUER))
        .set("aud", json!(AUDIENCE))
}

/// `{"alg":"none"}` with the claims and an empty signature.
fn unsigned(claims: &Claims) -> String {
    let header = b64url(br#"{"alg":"none","typ":"JWT"}"#);
    format!("{header}.{}.", b64url(claims.to_json().to_string().as_bytes()))
}

/// Asserts that `token` is refused with 401 in the query and as a subprotocol, and that the
/// body is the one every authentication failure gets.
async fn assert_refused(addr: std::net::SocketAddr, what: &str, token: &str) {
    assert_refused_with(addr, what, token, 401, "unauthorized").await;
}

/// Asserts that `token` is refused with `status` and `{"error": error}`, in the query and
/// (when it can travel there) as a subprotocol.
async fn assert_refused_with(
    addr: std::net::SocketAddr,
    what: &str,
    token: &str,
    status: u16,
    error: &str,
) {
    assert_eq!(support::try_connect(addr, Some(token), None).await.err(), Some(status), "{what}");
    let protocols = format!("realtime.v1, bearer.{token}");
    if !token.is_empty() && token.bytes().all(|b| b.is_ascii_graphic()) {
        assert_eq!(
            support::try_connect(addr, None, Some(&protocols)).await.err(),
            Some(status),
            "{what} (subprotocol)"
        );
    }
    let request = format!(
        "GET /ws?token={token} HTTP/1.1\r\nHost: x\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\
         Sec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n"
    );
    let response = support::raw_http(addr, request.as_bytes()).await;
    assert_eq!(response.status, status, "{what}");
    assert_eq!(response.json(), json!({ "error": error }), "{what}");
}

#[tokio::test]
async fn every_bad_token_gets_401_from_an_hs256_server() {
    let mut config = support::config();
    config.jwt_issuer = Some(ISSUER.to_owned());
    config.jwt_audience = Some(AUDIENCE.to_owned());
    let running = support::start(config).await;
    let addr = running.addr;
    let now = now_unix_secs();

    // Controls: the good token works in the query and as a subprotocol.
    let good_token = good().mint(SECRET);
    let (mut ws, _) = support::connect(addr, &good_token).await;
    let protocols = format!("realtime.v1, bearer.{good_token}");
    let mut ws2 = support::try_connect(addr, None, Some(&protocols))
        .await
        .unwrap_or_else(|s| panic!("subprotocol token refused: {s}"));
    assert_eq!(support::next_json(&mut ws2).await["payload"]["user_id"], "alice");

    let other_secret = b"another-secret-that-is-32-bytes-long!!";
    let hs512 = mint_with_header(
        &Header::new(Algorithm::HS512),
        &EncodingKey::from_secret(SECRET),
        &good().to_json(),
    );
    let cases: Vec<(&str, String)> = vec![
        ("missing", String::new()),
        ("not a JWT", "not-a-jwt".to_owned()),
        ("bad signature", good().mint(other_secret)),
        ("tampered payload", {
            let parts: Vec<&str> = good_token.split('.').collect();
            let evil = good().set("sub", json!("admin")).to_json().to_string();
            format!("{}.{}.{}", parts[0], b64url(evil.as_bytes()), parts[2])
        }),
        ("expired", good().exp(now - 3600).mint(SECRET)),
        ("no exp", good().without("exp").mint(SECRET)),
        ("exp as a string", good().set("exp", json!((now + 3600).to_string())).mint(SECRET)),
        ("nbf in the future", good().set("nbf", json!(now + 3600)).mint(SECRET)),
        ("alg none", unsigned(&good())),
        ("HS512 instead of HS256", hs512),
        ("wrong iss", good().set("iss", json!("https://evil.example")).mint(SECRET)),
        ("no iss", good().without("iss").mint(SECRET)),
        ("wrong aud", good().set("aud", json!("other")).mint(SECRET)),
        ("no sub", good().without("sub").mint(SECRET)),
        ("bad role", good().roles(&["a b"]).mint(SECRET)),
    ];
    for (what, token) in &cases {
        assert_refused(addr, what, token).await;
    }
    assert_eq!(running.api.connection_count(), 2, "only the controls are connected");
    // The controls still work.
    support::send_text(&mut ws, r#"{"type":"ping"}"#).await;
    assert_eq!(support::next_json(&mut ws).await["type"], "pong");
    drop((ws, ws2));
    support::stop(running).await;
}

#[tokio::test]
async fn an_rs256_server_refuses_hs256_tokens_signed_with_its_public_key() {
    let mut config = support::config();
    config.jwt_secret = None;
    config.jwt_public_key_file = Some(fixture("rsa_public.pem"));
    config.jwt_algorithm = JwtAlgorithm::Rs256;
    let running = support::start(config).await;
    let addr = running.addr;
    let claims = Claims::new("alice").exp(now_unix_secs() + 3600).to_json();

    // Control: a real RS256 token is accepted.
    let private = EncodingKey::from_rsa_pem(&read_fixture("rsa_private.pem"))
        .unwrap_or_else(|e| panic!("{e}"));
    let rs256 = mint_with_header(&Header::new(Algorithm::RS256), &private, &claims);
    let (ws, _) = support::connect(addr, &rs256).await;

    // The classic confusion attack: HS256 keyed with the public key's PEM text.
    let public_pem = read_fixture("rsa_public.pem");
    let confused = mint_with_header(
        &Header::new(Algorithm::HS256),
        &EncodingKey::from_secret(&public_pem),
        &claims,
    );
    assert_refused(addr, "HS256 signed with the RSA public key", &confused).await;
    assert_refused(addr, "HS256 with the dev secret", &Claims::from_json_for(&claims).mint(SECRET))
        .await;
    assert_refused(addr, "alg none", &unsigned(&Claims::from_json_for(&claims))).await;
    assert_eq!(running.api.connection_count(), 1);
    drop(ws);
    support::stop(running).await;
}

#[tokio::test]
async fn a_token_without_a_required_permission_gets_403_and_one_with_it_connects() {
    let mut config = support::config();
    config.required_permissions = vec!["realtime:connect".to_owned(), "chat:read".to_owned()];
    let running = support::start(config).await;
    let addr = running.addr;
    let exp = now_unix_secs() + 3600;
    let with = |permissions: &[&str]| Claims::new("alice").permissions(permissions).exp(exp);

    let lacking = [
        ("no permissions", with(&[]).mint(SECRET)),
        ("one of two", with(&["realtime:connect"]).mint(SECRET)),
        ("other permissions", with(&["chat:write", "admin"]).mint(SECRET)),
    ];
    for (what, token) in &lacking {
        assert_refused_with(addr, what, token, 403, "forbidden").await;
    }
    // A bad token is still 401, not 403: the permission check comes after verification.
    let forged =
        with(&["realtime:connect", "chat:read"]).mint(b"another-secret-that-is-32-bytes-long!!");
    assert_refused(addr, "forged token with the permissions", &forged).await;
    assert_eq!(running.api.connection_count(), 0);

    // With both permissions (and more), the same user connects.
    let token = with(&["chat:read", "chat:write", "realtime:connect"]).mint(SECRET);
    let (mut ws, _) = support::connect(addr, &token).await;
    support::send_text(&mut ws, r#"{"type":"ping"}"#).await;
    assert_eq!(support::next_json(&mut ws).await["type"], "pong");
    assert_eq!(running.api.connection_count(), 1);
    drop(ws);
    support::stop(running).await;
}

/// Rebuilds `Claims` from a JSON object (the testkit builder has no such constructor).
trait FromJsonFor {
    fn from_json_for(value: &serde_json::Value) -> Claims;
}

impl FromJsonFor for Claims {
    fn from_json_for(value: &serde_json::Value) -> Claims {
        let mut claims = Claims::empty();
        for (name, value) in value.as_object().into_iter().flatten() {
            claims = claims.set(name, value.clone());
        }
        claims
    }
}
