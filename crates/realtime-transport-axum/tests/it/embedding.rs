//! Embedding: `router` merged into an application's own axum router (with its state and its
//! fallback), or nested under a prefix, served by `axum::serve`: both are served, unknown
//! paths reach the application's fallback, the transport's wrong methods get its JSON 405.

use std::net::SocketAddr;
use std::sync::Arc;

use axum::Router;
use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::get;
use realtime_transport_axum::{Deps, ShutdownHandle, not_found, router, routes};
use serde_json::json;
use tokio::net::TcpListener;

use crate::suite::support::{self, FakeApi, FakeInbound, FakeVerifier, http, test_config};

/// The application's state.
#[derive(Clone)]
struct AppState {
    greeting: &'static str,
}

/// `GET /app/hello` answers from the state; anything unknown gets the app's plain 404.
fn app() -> Router<AppState> {
    Router::new()
        .route("/app/hello", get(|State(state): State<AppState>| async move { state.greeting }))
        .fallback(|| async { (StatusCode::NOT_FOUND, "the app's 404") })
}

/// Serves `app` with axum's own server on 127.0.0.1:0 until `shutdown`.
async fn serve(app: Router, shutdown: &ShutdownHandle) -> SocketAddr {
    let listener = TcpListener::bind(("127.0.0.1", 0)).await.unwrap_or_else(|e| panic!("{e}"));
    let addr = listener.local_addr().unwrap_or_else(|e| panic!("{e}"));
    let serving = axum::serve(listener, app).with_graceful_shutdown(shutdown.requested());
    tokio::spawn(async move { serving.await.unwrap_or_else(|e| panic!("{e}")) });
    addr
}

fn deps(api: &Arc<FakeApi>) -> Deps {
    Deps {
        api: api.clone(),
        verifier: Arc::new(FakeVerifier),
        inbound: Some(Arc::new(FakeInbound::default())),
        metrics: Some(Arc::new(|| "realtime_up 1\n".to_owned())),
    }
}

#[tokio::test]
async fn merged_into_an_app_with_state_and_fallback_serves_both() {
    let api = FakeApi::new(10);
    let shutdown = ShutdownHandle::new();
    let app = app()
        .merge(router(deps(&api), test_config(), &shutdown))
        .with_state(AppState { greeting: "hello" });
    let addr = serve(app, &shutdown).await;
    // The application's routes and fallback.
    let hello = http(addr, "GET", "/app/hello", &[], b"").await;
    assert_eq!((hello.status, hello.text().as_str()), (200, "hello"));
    let unknown = http(addr, "GET", "/no/such/page", &[], b"").await;
    assert_eq!((unknown.status, unknown.text().as_str()), (404, "the app's 404"));
    // No demo page was configured, so `/` is the application's too.
    assert_eq!(http(addr, "GET", "/", &[], b"").await.text(), "the app's 404");
    // The transport's routes, with its own answers to a wrong method.
    let health = http(addr, "GET", "/healthz", &[], b"").await;
    assert_eq!((health.status, &health.json()["status"]), (200, &json!("ok")));
    let wrong = http(addr, "GET", "/api/publish", &[], b"").await;
    assert_eq!((wrong.status, wrong.json()), (405, json!({"error": "method not allowed"})));
    let auth = format!("Bearer {}", support::API_KEY);
    let metrics = http(addr, "GET", "/metrics", &[("Authorization", &auth)], b"").await;
    assert_eq!(metrics.text(), "realtime_up 1\n");
    assert_eq!(http(addr, "GET", "/metrics", &[], b"").await.status, 401);
    let (mut ws, id) = support::connect(addr, "good.alice").await;
    let body = json!({"target": "broadcast", "message": {"type": "n"}});
    assert_eq!(support::publish(addr, &body).await.json(), json!({"delivered": 1}));
    assert_eq!(support::next_json(&mut ws).await["type"], "n");
    drop(ws);
    api.disconnected(id).await;
    shutdown.drain(test_config().shutdown_grace).await;
}

#[tokio::test]
async fn nested_under_a_prefix_every_route_moves_with_it() {
    let api = FakeApi::new(10);
    let shutdown = ShutdownHandle::new();
    let app = Router::new()
        .nest("/realtime", router(deps(&api), test_config(), &shutdown))
        .fallback(not_found);
    let addr = serve(app, &shutdown).await;
    let url = format!("ws://{addr}/realtime/ws?token=good.carol");
    let (mut ws, _) = tokio_tungstenite::connect_async(url).await.unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(support::next_json(&mut ws).await["type"], "connected");
    // The presence path is read relative to the prefix, and percent-decoded by the toolkit.
    let carol = support::get(addr, "/realtime/api/presence/user/carol").await;
    assert_eq!(carol.json(), json!({"user_id": "carol", "online": true, "connections": 1}));
    let encoded = support::get(addr, "/realtime/api/presence/user/auth0%7C42").await;
    assert_eq!(encoded.json()["user_id"], "auth0|42");
    let moved = http(addr, "GET", "/healthz", &[], b"").await;
    assert_eq!((moved.status, moved.json()), (404, json!({"error": "not found"})));
    assert_eq!(http(addr, "GET", "/realtime/healthz", &[], b"").await.status, 200);
    drop(ws);
    shutdown.drain(test_config().shutdown_grace).await;
}

#[tokio::test]
async fn the_routes_can_be_chosen_one_by_one() {
    let api = FakeApi::new(10);
    let shutdown = ShutdownHandle::new();
    let (deps, config) = (deps(&api), test_config());
    // WebSockets, health and a demo page only, with the transport's JSON 404 for the rest.
    let chosen = routes::ws(&deps, &config, &shutdown)
        .merge(routes::healthz(&deps, &shutdown))
        .merge(routes::demo("<h1>demo</h1>"))
        .fallback(not_found);
    let addr = serve(chosen, &shutdown).await;
    assert_eq!(http(addr, "GET", "/healthz", &[], b"").await.status, 200);
    assert_eq!(http(addr, "GET", "/", &[], b"").await.text(), "<h1>demo</h1>");
    for path in ["/metrics", "/api/publish"] {
        let response = http(addr, "GET", path, &[], b"").await;
        assert_eq!((response.status, response.json()), (404, json!({"error": "not found"})));
    }
    let (ws, id) = support::connect(addr, "good.alice").await;
    drop(ws);
    api.disconnected(id).await;
    shutdown.drain(config.shutdown_grace).await;
}
