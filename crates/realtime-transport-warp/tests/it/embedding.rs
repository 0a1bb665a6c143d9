//! Embedding: `routes` composed with an application's own warp routes, in both orders, serves
//! both; unknown paths and the application's own rejections reach the application's recovery.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;

use realtime_transport_warp::{Deps, ShutdownHandle, filters, routes};
use serde_json::json;
use tokio::net::TcpListener;
use warp::Filter;
use warp::filters::BoxedFilter;
use warp::http::StatusCode;
use warp::reply::{Reply, Response};

use crate::suite::support::{self, FakeApi, FakeInbound, FakeVerifier, http, test_config};

/// The application's own refusal, recovered by the application.
#[derive(Debug)]
struct AppRefusal;

impl warp::reject::Reject for AppRefusal {}

/// `GET /app/hello` answers; `GET /app/secret` is refused with [`AppRefusal`].
fn app() -> BoxedFilter<(Response,)> {
    let hello = warp::path!("app" / "hello").and(warp::get()).map(|| "hello".into_response());
    let secret = warp::path!("app" / "secret")
        .and(warp::get())
        .and_then(|| async { Err::<Response, _>(warp::reject::custom(AppRefusal)) });
    hello.or(secret).unify().boxed()
}

/// The application's recovery: 418 for its refusal, its own plain-text 404 for the rest.
async fn app_recover(rejection: warp::Rejection) -> Result<Response, Infallible> {
    let reply = if rejection.find::<AppRefusal>().is_some() {
        warp::reply::with_status("refused by the app", StatusCode::IM_A_TEAPOT)
    } else {
        warp::reply::with_status("the app's 404", StatusCode::NOT_FOUND)
    };
    Ok(reply.into_response())
}

/// Serves `filter` with warp's own server on 127.0.0.1:0 until `shutdown`.
async fn serve(filter: BoxedFilter<(Response,)>, shutdown: &ShutdownHandle) -> SocketAddr {
    let listener = TcpListener::bind(("127.0.0.1", 0)).await.unwrap_or_else(|e| panic!("{e}"));
    let addr = listener.local_addr().unwrap_or_else(|e| panic!("{e}"));
    let serving = warp::serve(filter).incoming(listener).graceful(shutdown.requested()).run();
    tokio::spawn(serving);
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

/// What the embedded server must do whatever the order of composition.
async fn check_both_are_served(addr: SocketAddr, api: &FakeApi) {
    // The application's routes.
    let hello = http(addr, "GET", "/app/hello", &[], b"").await;
    assert_eq!((hello.status, hello.text().as_str()), (200, "hello"));
    let refused = http(addr, "GET", "/app/secret", &[], b"").await;
    assert_eq!((refused.status, refused.text().as_str()), (418, "refused by the app"));
    let unknown = http(addr, "GET", "/no/such/page", &[], b"").await;
    assert_eq!((unknown.status, unknown.text().as_str()), (404, "the app's 404"));
    // No demo page was configured, so `/` is the application's too.
    assert_eq!(http(addr, "GET", "/", &[], b"").await.text(), "the app's 404");
    // The transport's routes.
    let health = http(addr, "GET", "/healthz", &[], b"").await;
    assert_eq!(health.status, 200);
    assert_eq!(health.json()["status"], "ok");
    // `/metrics` is behind the API key.
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
}

#[tokio::test]
async fn realtime_or_app_serves_both_and_leaves_rejections_to_the_app() {
    let api = FakeApi::new(10);
    let shutdown = ShutdownHandle::new();
    let realtime = routes(deps(&api), test_config(), &shutdown);
    let addr =
        serve(realtime.or(app()).unify().recover(app_recover).unify().boxed(), &shutdown).await;
    check_both_are_served(addr, &api).await;
    shutdown.drain(test_config().shutdown_grace).await;
}

#[tokio::test]
async fn app_or_realtime_serves_both_and_leaves_rejections_to_the_app() {
    let api = FakeApi::new(10);
    let shutdown = ShutdownHandle::new();
    let realtime = routes(deps(&api), test_config(), &shutdown);
    let addr =
        serve(app().or(realtime).unify().recover(app_recover).unify().boxed(), &shutdown).await;
    check_both_are_served(addr, &api).await;
    shutdown.drain(test_config().shutdown_grace).await;
}

#[tokio::test]
async fn the_filters_can_be_chosen_one_by_one() {
    let api = FakeApi::new(10);
    let shutdown = ShutdownHandle::new();
    let (deps, config) = (deps(&api), test_config());
    // WebSockets and health only, with the transport's own JSON answers for the rest.
    let chosen = filters::ws(&deps, &config, &shutdown)
        .or(filters::healthz(&deps, &shutdown))
        .unify()
        .or(filters::demo("<h1>demo</h1>"))
        .unify()
        .recover(filters::recover)
        .unify()
        .boxed();
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
