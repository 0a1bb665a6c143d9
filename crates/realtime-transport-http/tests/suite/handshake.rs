//! The upgrade request: every refusal (400, 403, 503, 401) comes before any 101, the token
//! is accepted from the query or the subprotocol, and only `realtime.v1` is answered.

use realtime_transport_http::TransportConfig;

use super::support::{self, Connect, test_config, try_connect};

#[tokio::test]
async fn a_plain_get_is_not_an_upgrade() {
    let server = support::start(test_config()).await;
    let response = support::http(server.addr, "GET", "/ws?token=good.alice", &[], b"").await;
    assert_eq!(response.status, 400);
    assert_eq!(response.json(), serde_json::json!({"error": "WebSocket upgrade required"}));
    assert_eq!(server.api.connection_count_now(), 0);
    server.stop().await;
}

#[tokio::test]
async fn a_foreign_origin_gets_403_and_an_allowed_one_connects() {
    let config = TransportConfig {
        allowed_origins: Some(vec!["https://app.example".to_owned()]),
        ..test_config()
    };
    let server = support::start(config).await;
    let foreign = Connect {
        token_query: Some("good.alice"),
        origin: Some("https://evil.example"),
        ..Connect::default()
    };
    assert_eq!(try_connect(server.addr, foreign).await.err(), Some(403));
    let allowed = Connect {
        token_query: Some("good.alice"),
        origin: Some("https://app.example"),
        ..Connect::default()
    };
    assert!(try_connect(server.addr, allowed).await.is_ok());
    server.stop().await;
}

#[tokio::test]
async fn a_server_at_capacity_answers_503() {
    let server = support::start_with(test_config(), 1, None).await;
    let (_first, _) = support::connect(server.addr, "good.alice").await;
    let second = Connect { token_query: Some("good.bob"), ..Connect::default() };
    assert_eq!(try_connect(server.addr, second).await.err(), Some(503));
    server.stop().await;
}

#[tokio::test]
async fn every_authentication_failure_gets_the_same_401() {
    let server = support::start(test_config()).await;
    let cases: [(Option<&str>, Option<&str>); 6] = [
        (None, None),                                      // no token at all
        (Some(""), None),                                  // empty token
        (Some("bad-signature"), None),                     // verifier refuses
        (Some("good.a&token=good.b"), None),               // two tokens
        (None, Some("bearer.good.alice")),                 // token without realtime.v1
        (None, Some("realtime.v1, bearer.bad-signature")), // bad token as subprotocol
    ];
    for (query, subprotocol) in cases {
        let options = Connect { token_query: query, subprotocol, ..Connect::default() };
        assert_eq!(
            try_connect(server.addr, options).await.err(),
            Some(401),
            "{query:?} {subprotocol:?}"
        );
    }
    // A verifier that cannot decide is not the client's fault: 503, so the client retries
    // instead of refreshing its token.
    let unavailable = Connect { token_query: Some("unavailable"), ..Connect::default() };
    assert_eq!(try_connect(server.addr, unavailable).await.err(), Some(503));
    // Same body for every cause, checked over plain HTTP.
    let upgrade = |token: &str| {
        format!(
            "GET /ws?token={token} HTTP/1.1\r\nHost: x\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\
             Sec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n"
        )
    };
    let mut bodies = Vec::new();
    for token in ["bad-signature", "good.a&token=good.b"] {
        let response = support::raw_http(server.addr, upgrade(token).as_bytes()).await;
        assert_eq!(response.status, 401);
        assert!(!response.text().contains(token));
        bodies.push(response.body);
    }
    assert!(bodies.windows(2).all(|w| w[0] == w[1]), "401 bodies differ");
    // A valid token that the service refuses for a missing permission is 403, not 401: a
    // fresh token would not help, so the client must not refresh and retry.
    let forbidden = Connect { token_query: Some("good.forbidden"), ..Connect::default() };
    assert_eq!(try_connect(server.addr, forbidden).await.err(), Some(403));
    let response = support::raw_http(server.addr, upgrade("good.forbidden").as_bytes()).await;
    assert_eq!(response.status, 403);
    assert_eq!(response.json(), serde_json::json!({"error": "forbidden"}));
    assert_eq!(server.api.connection_count_now(), 0);
    server.stop().await;
}

#[tokio::test]
async fn the_token_can_travel_as_a_subprotocol() {
    let server = support::start(test_config()).await;
    let options =
        Connect { subprotocol: Some("realtime.v1, bearer.good.alice"), ..Connect::default() };
    let (mut ws, protocol) =
        try_connect(server.addr, options).await.unwrap_or_else(|s| panic!("refused: {s}"));
    assert_eq!(protocol.as_deref(), Some("realtime.v1"));
    let hello = support::next_json(&mut ws).await;
    assert_eq!(hello["type"], "connected");
    assert_eq!(hello["payload"]["user_id"], "alice");
    server.stop().await;
}

#[tokio::test]
async fn the_connected_frame_names_the_connection() {
    let server = support::start(test_config()).await;
    let (_ws, id) = support::connect(server.addr, "good.carol.admin!ops").await;
    // The id in the frame is the one the service registered.
    assert!(server.api.send_one(id, realtime_core::Frame::from_text("{}".to_owned())).is_ok());
    let (mut ws, _) = try_connect(
        server.addr,
        Connect { token_query: Some("good.dave.viewer"), ..Connect::default() },
    )
    .await
    .unwrap_or_else(|s| panic!("refused: {s}"));
    let hello = support::next_json(&mut ws).await;
    assert_eq!(hello["payload"]["roles"], serde_json::json!(["viewer"]));
    assert_eq!(hello["payload"]["user_id"], "dave");
    server.stop().await;
}
