//! A live connection: protocol pings, error frames that keep the connection open, the
//! inbound handler, oversize frames (1009) and every way a client can leave.

use futures_util::SinkExt;
use realtime_ports::DisconnectReason;
use serde_json::json;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::protocol::CloseFrame;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;

use super::support::{self, next_json, send_text, test_config};

#[tokio::test]
async fn ping_gets_pong() {
    let server = support::start(test_config()).await;
    let (mut ws, _) = support::connect(server.addr, "good.alice").await;
    send_text(&mut ws, r#"{"type":"ping"}"#).await;
    assert_eq!(next_json(&mut ws).await, json!({"type": "pong", "payload": {}}));
    server.stop().await;
}

#[tokio::test]
async fn malformed_messages_get_error_frames_and_the_connection_goes_on() {
    let server = support::start(test_config()).await;
    let (mut ws, _) = support::connect(server.addr, "good.alice").await;
    let cases = [
        ("{not json", "invalid JSON"),
        ("[1,2]", "must be a JSON object"),
        (r#"{"payload":{}}"#, "no \"type\""),
        (r#"{"type":5}"#, "must be a string"),
        (r#"{"type":"x","payload":[1]}"#, "\"payload\" must be a JSON object"),
        // Types only the server sends cannot come from a client.
        (r#"{"type":"pong","payload":{}}"#, "reserved for the server"),
        (r#"{"type":"connected"}"#, "reserved for the server"),
        (r#"{"type":"error","payload":{"code":"x"}}"#, "reserved for the server"),
    ];
    for (text, says) in cases {
        send_text(&mut ws, text).await;
        let error = next_json(&mut ws).await;
        assert_eq!(error["type"], "error", "{text}");
        assert_eq!(error["payload"]["code"], "invalid_message", "{text}");
        let message = error["payload"]["message"].as_str().unwrap_or_default();
        assert!(message.contains(says), "{text}: {message}");
    }
    send_text(&mut ws, r#"{"type":"ping"}"#).await;
    assert_eq!(next_json(&mut ws).await["type"], "pong");
    send_text(&mut ws, r#"{"type":"echo","payload":{"n":1}}"#).await;
    assert_eq!(next_json(&mut ws).await, json!({"type": "echo", "payload": {"n": 1}}));
    server.stop().await;
}

#[tokio::test]
async fn binary_frames_get_an_error_frame() {
    let server = support::start(test_config()).await;
    let (mut ws, _) = support::connect(server.addr, "good.alice").await;
    ws.send(Message::binary(vec![1u8, 2, 3])).await.unwrap_or_else(|e| panic!("{e}"));
    let error = next_json(&mut ws).await;
    assert_eq!(error["payload"]["code"], "binary_unsupported");
    send_text(&mut ws, r#"{"type":"ping"}"#).await;
    assert_eq!(next_json(&mut ws).await["type"], "pong");
    server.stop().await;
}

#[tokio::test]
async fn the_inbound_handler_answers_or_refuses() {
    let server = support::start(test_config()).await;
    let (mut ws, _) = support::connect(server.addr, "good.alice").await;
    let cases = [
        (r#"{"type":"reject"}"#, "rejected", Some("not allowed here")),
        (r#"{"type":"boom"}"#, "internal_error", Some("internal error")),
        (r#"{"type":"chat","payload":{"t":"hi"}}"#, "unsupported_type", None),
    ];
    for (text, code, message) in cases {
        send_text(&mut ws, text).await;
        let error = next_json(&mut ws).await;
        assert_eq!(error["type"], "error");
        assert_eq!(error["payload"]["code"], code, "{text}");
        if let Some(message) = message {
            assert_eq!(error["payload"]["message"], message, "{text}");
        }
        assert!(!error.to_string().contains("hunter2"), "internal detail leaked");
    }
    send_text(&mut ws, r#"{"type":"echo","payload":{"x":[1,2]}}"#).await;
    assert_eq!(next_json(&mut ws).await, json!({"type": "echo", "payload": {"x": [1, 2]}}));
    server.stop().await;
}

/// Every answer to an application message echoes its `id`, as sent: the handler's reply,
/// an `unsupported_type`, a refusal, a failure, a panic, a reply the service refuses; a
/// message without an id gets answers without one.
#[tokio::test]
async fn every_answer_to_an_application_message_echoes_its_id() {
    let server = support::start(test_config()).await;
    let (mut ws, _) = support::connect(server.addr, "good.alice").await;
    send_text(&mut ws, r#"{"type":"echo","id":7,"payload":{"n":1}}"#).await;
    assert_eq!(next_json(&mut ws).await, json!({"type": "echo", "id": 7, "payload": {"n": 1}}));
    send_text(&mut ws, r#"{"type":"echo","id":"e-2","payload":{"n":2}}"#).await;
    assert_eq!(next_json(&mut ws).await, json!({"type": "echo", "id": "e-2", "payload": {"n": 2}}));
    send_text(&mut ws, r#"{"type":"chat","id":"u1","payload":{"t":"hi"}}"#).await;
    let unsupported = next_json(&mut ws).await;
    assert_eq!(
        (&unsupported["type"], &unsupported["id"], &unsupported["payload"]["code"]),
        (&json!("error"), &json!("u1"), &json!("unsupported_type")),
        "{unsupported}"
    );
    let refusals = [
        ("reject", json!(11), "rejected"),
        ("boom", json!("b"), "internal_error"),
        ("panic", json!(12.5), "internal_error"),
        ("forge", json!("f"), "internal_error"),
    ];
    for (kind, id, code) in refusals {
        send_text(&mut ws, &json!({"type": kind, "id": id}).to_string()).await;
        let error = next_json(&mut ws).await;
        assert_eq!(
            (&error["type"], &error["id"], &error["payload"]["code"]),
            (&json!("error"), &id, &json!(code)),
            "{kind}: {error}"
        );
        assert!(!error.to_string().contains("hunter2"), "internal detail leaked");
    }
    send_text(&mut ws, r#"{"type":"echo","payload":{"n":3}}"#).await;
    assert_eq!(next_json(&mut ws).await, json!({"type": "echo", "payload": {"n": 3}}));
    send_text(&mut ws, r#"{"type":"chat"}"#).await;
    let error = next_json(&mut ws).await;
    assert_eq!(
        (error["payload"]["code"].as_str(), error.get("id")),
        (Some("unsupported_type"), None)
    );
    server.stop().await;
}

#[tokio::test]
async fn an_oversize_message_closes_with_1009() {
    let config =
        realtime_transport_http::TransportConfig { max_message_bytes: 1024, ..test_config() };
    let server = support::start(config).await;
    let (mut ws, id) = support::connect(server.addr, "good.alice").await;
    let big = format!(r#"{{"type":"echo","payload":{{"s":"{}"}}}}"#, "a".repeat(4096));
    send_text(&mut ws, &big).await;
    let (code, reason) = support::expect_close(&mut ws).await;
    assert_eq!((code, reason.as_str()), (1009, "message too big"));
    assert_eq!(server.api.disconnected(id).await, DisconnectReason::ProtocolError);
    server.stop().await;
}

#[tokio::test]
async fn a_client_close_unregisters_the_connection() {
    let server = support::start(test_config()).await;
    let (mut ws, id) = support::connect(server.addr, "good.alice").await;
    let (_other, other) = support::connect(server.addr, "good.bob").await;
    ws.close(Some(CloseFrame { code: CloseCode::Normal, reason: "bye".into() }))
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(server.api.disconnected(id).await, DisconnectReason::ClientClosed);
    assert_eq!(server.api.connection_count_now(), 1);
    assert!(server.api.disconnects().iter().all(|(i, _)| *i != other));
    server.stop().await;
}

#[tokio::test]
async fn a_dropped_tcp_connection_unregisters_it() {
    let server = support::start(test_config()).await;
    let (ws, id) = support::connect(server.addr, "good.alice").await;
    drop(ws);
    assert_eq!(server.api.disconnected(id).await, DisconnectReason::TransportError);
    assert_eq!(server.api.connection_count_now(), 0);
    assert_eq!(server.api.disconnects().len(), 1, "disconnect called exactly once");
    server.stop().await;
}

#[tokio::test]
async fn an_application_close_reaches_the_client() {
    let server = support::start(test_config()).await;
    let (mut ws, id) = support::connect(server.addr, "good.alice").await;
    server.api.close_one(id, realtime_ports::CloseReason::Kicked);
    assert_eq!(support::expect_close(&mut ws).await, (4003, "kicked".to_owned()));
    assert_eq!(server.api.disconnected(id).await, DisconnectReason::Kicked);
    server.stop().await;
}
