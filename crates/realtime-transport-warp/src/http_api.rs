//! The HTTP API for backends and operators: `POST /api/publish`, `GET /healthz`,
//! `GET /metrics` and the demo page at `GET /`.

use std::sync::Arc;

use bytes::Buf;
use futures_util::{Stream, StreamExt};
use http::StatusCode;
use http::header::{AUTHORIZATION, CONTENT_LENGTH, HeaderMap};
use realtime_core::{ConnectionId, Envelope, MessageType, Payload, Role, Target, UserId};
use realtime_ports::RealtimeApi;
use serde_json::{Value, json};
use tracing::debug;
use warp::Filter;
use warp::reply::Response;

use crate::config::{ApiKey, MetricsRenderer};
use crate::shutdown::ShutdownHandle;
use crate::wire::{self, PublishRefusal};

/// What the publish route needs.
pub(crate) struct PublishEndpoint {
    pub(crate) api: Arc<dyn RealtimeApi>,
    pub(crate) api_key: ApiKey,
    pub(crate) max_body_bytes: u64,
}

/// `POST /api/publish`.
pub(crate) fn publish(
    endpoint: Arc<PublishEndpoint>,
) -> impl Filter<Extract = (Response,), Error = warp::Rejection> + Clone {
    warp::path!("api" / "publish")
        .and(warp::post())
        .and(warp::header::headers_cloned())
        .and(warp::body::stream())
        .then(move |headers: HeaderMap, body| {
            let endpoint = Arc::clone(&endpoint);
            async move {
                match endpoint.publish(&headers, body).await {
                    Ok(delivered) => {
                        wire::json_response(StatusCode::OK, &json!({ "delivered": delivered }))
                    }
                    Err(refusal) => {
                        debug!(?refusal, "publish refused");
                        refusal.into_response()
                    }
                }
            }
        })
}

impl PublishEndpoint {
    async fn publish<S, B>(&self, headers: &HeaderMap, body: S) -> Result<usize, PublishRefusal>
    where
        S: Stream<Item = Result<B, warp::Error>>,
        B: Buf,
    {
        if !self.authorized(headers) {
            return Err(PublishRefusal::Unauthorized);
        }
        let body = read_limited(headers, body, self.max_body_bytes).await?;
        let (target, message) = parse_publish(&body)?;
        let delivered =
            self.api.publish(&target, &message).await.map_err(PublishRefusal::Service)?;
        debug!(target = target.kind(), kind = message.kind.as_str(), delivered, "published");
        Ok(delivered)
    }

    /// `Authorization: Bearer <key>` (scheme in any case) with the configured key.
    fn authorized(&self, headers: &HeaderMap) -> bool {
        let Some(value) = headers.get(AUTHORIZATION).and_then(|v| v.to_str().ok()) else {
            return false;
        };
        let Some((scheme, key)) = value.trim().split_once(' ') else {
            return false;
        };
        scheme.eq_ignore_ascii_case("bearer") && self.api_key.matches(key.trim())
    }
}

/// Reads the body, refusing it as soon as it is known to exceed `max` bytes (by its
/// `Content-Length`, or while streaming a body without one).
async fn read_limited<S, B>(
    headers: &HeaderMap,
    body: S,
    max: u64,
) -> Result<Vec<u8>, PublishRefusal>
where
    S: Stream<Item = Result<B, warp::Error>>,
    B: Buf,
{
    let too_large = PublishRefusal::TooLarge { max };
    let declared = headers
        .get(CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse::<u64>().ok());
    if declared.is_some_and(|len| len > max) {
        return Err(too_large);
    }
    let max = usize::try_from(max).unwrap_or(usize::MAX);
    let mut buffer = Vec::with_capacity(declared.map_or(0, |len| len as usize));
    let mut body = std::pin::pin!(body);
    while let Some(chunk) = body.next().await {
        let mut chunk = chunk.map_err(|_| PublishRefusal::BodyUnreadable)?;
        if buffer.len().saturating_add(chunk.remaining()) > max {
            return Err(too_large);
        }
        while chunk.has_remaining() {
            let bytes = chunk.chunk();
            let len = bytes.len();
            buffer.extend_from_slice(bytes);
            chunk.advance(len);
        }
    }
    Ok(buffer)
}

/// Parses `{"target": .., "message": {"type": .., "payload": {..}}}`: 400 when it is not
/// JSON, 422 naming the first field that is wrong.
pub(crate) fn parse_publish(body: &[u8]) -> Result<(Target, Envelope), PublishRefusal> {
    let invalid = |text: &str| PublishRefusal::Invalid(text.to_owned());
    let value: Value = serde_json::from_slice(body)
        .map_err(|error| PublishRefusal::MalformedJson(error.to_string()))?;
    let Value::Object(mut request) = value else {
        return Err(invalid("the body must be a JSON object with \"target\" and \"message\""));
    };
    let target =
        parse_target(request.remove("target").ok_or_else(|| invalid("\"target\" is missing"))?)?;
    let message = match request.remove("message") {
        None => return Err(invalid("\"message\" is missing")),
        Some(Value::Object(message)) => message,
        Some(_) => return Err(invalid("\"message\" must be a JSON object")),
    };
    Ok((target, parse_message(message)?))
}

const TARGET_FORMS: &str = "\"target\" must be \"broadcast\" or an object with one of \"user\", \"role\" or \"connection\"";

fn parse_target(value: Value) -> Result<Target, PublishRefusal> {
    let invalid = |text: String| PublishRefusal::Invalid(text);
    let object = match value {
        Value::String(name) if name == "broadcast" => return Ok(Target::Broadcast),
        Value::Object(object) if object.len() == 1 => object,
        _ => return Err(invalid(TARGET_FORMS.to_owned())),
    };
    let Some((kind, value)) = object.into_iter().next() else {
        return Err(invalid(TARGET_FORMS.to_owned()));
    };
    let Value::String(raw) = value else {
        return Err(invalid(format!("\"target.{kind}\" must be a string")));
    };
    match kind.as_str() {
        "user" => UserId::new(&raw)
            .map(Target::User)
            .map_err(|e| invalid(format!("invalid \"target.user\": {e}"))),
        "role" => Role::new(&raw)
            .map(Target::Role)
            .map_err(|e| invalid(format!("invalid \"target.role\": {e}"))),
        "connection" => ConnectionId::parse(&raw)
            .map(Target::Connection)
            .map_err(|e| invalid(format!("invalid \"target.connection\": {e}"))),
        _ => Err(invalid(TARGET_FORMS.to_owned())),
    }
}

fn parse_message(mut message: serde_json::Map<String, Value>) -> Result<Envelope, PublishRefusal> {
    let invalid = |text: String| PublishRefusal::Invalid(text);
    let kind = match message.remove("type") {
        None => return Err(invalid("\"message.type\" is missing".to_owned())),
        Some(Value::String(kind)) => MessageType::new(&kind)
            .map_err(|e| invalid(format!("invalid \"message.type\": {e}")))?,
        Some(_) => return Err(invalid("\"message.type\" must be a string".to_owned())),
    };
    if realtime_core::protocol::is_reserved_server_type(kind.as_str()) {
        return Err(invalid(format!(
            "\"message.type\" \"{kind}\" is reserved for the protocol and cannot be published"
        )));
    }
    let payload = match message.remove("payload") {
        None => Payload::new(),
        Some(Value::Object(payload)) => payload,
        Some(_) => return Err(invalid("\"message.payload\" must be a JSON object".to_owned())),
    };
    Ok(Envelope::new(kind, payload))
}

/// `GET /healthz`: 200 `{"status":"ok","connections":N}`; 503 with `"shutting_down"` once a
/// shutdown has started, so that load balancers stop sending new clients.
pub(crate) fn healthz(
    api: Arc<dyn RealtimeApi>,
    shutdown: ShutdownHandle,
) -> impl Filter<Extract = (Response,), Error = warp::Rejection> + Clone {
    warp::path!("healthz").and(warp::get()).map(move || {
        let connections = api.connection_count();
        if shutdown.is_shutdown() {
            let body = json!({ "status": "shutting_down", "connections": connections });
            wire::json_response(StatusCode::SERVICE_UNAVAILABLE, &body)
        } else {
            wire::json_response(
                StatusCode::OK,
                &json!({ "status": "ok", "connections": connections }),
            )
        }
    })
}

/// `GET /metrics`: the Prometheus text exposition, or 404 when no renderer is wired.
pub(crate) fn metrics(
    renderer: Option<MetricsRenderer>,
) -> impl Filter<Extract = (Response,), Error = warp::Rejection> + Clone {
    warp::path!("metrics").and(warp::get()).map(move || match &renderer {
        Some(render) => wire::text_response(
            StatusCode::OK,
            "text/plain; version=0.0.4; charset=utf-8",
            render(),
        ),
        None => wire::error_response(StatusCode::NOT_FOUND, "not found"),
    })
}

/// `GET /`: the demo page, or 404 when none is configured.
pub(crate) fn demo(
    page: Option<&'static str>,
) -> impl Filter<Extract = (Response,), Error = warp::Rejection> + Clone {
    warp::path::end().and(warp::get()).map(move || match page {
        Some(page) => {
            wire::text_response(StatusCode::OK, "text/html; charset=utf-8", page.to_owned())
        }
        None => wire::error_response(StatusCode::NOT_FOUND, "not found"),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[track_caller]
    fn check(body: &str, expected: Result<Target, &str>) {
        let got = parse_publish(body.as_bytes()).map(|(target, _)| target);
        match (got, expected) {
            (Ok(got), Ok(expected)) => assert_eq!(got, expected),
            (Err(PublishRefusal::Invalid(text)), Err(want)) => {
                assert!(text.contains(want), "{text:?} does not say {want:?}")
            }
            (Err(PublishRefusal::MalformedJson(_)), Err("JSON")) => {}
            (got, expected) => panic!("{body}: got {got:?}, expected {expected:?}"),
        }
    }

    #[test]
    fn publish_bodies() {
        let m = r#""message":{"type":"n","payload":{"a":1}}"#;
        let id = "6f1c5a7e-0d2b-4c8e-9a57-3b1f2e4d5c6a";
        check(&format!(r#"{{"target":"broadcast",{m}}}"#), Ok(Target::Broadcast));
        check(
            &format!(r#"{{"target":{{"user":"u1"}},{m}}}"#),
            Ok(Target::User(UserId::new("u1").unwrap_or_else(|e| panic!("{e}")))),
        );
        check(
            &format!(r#"{{"target":{{"role":"admin"}},{m}}}"#),
            Ok(Target::Role(Role::new("admin").unwrap_or_else(|e| panic!("{e}")))),
        );
        check(
            &format!(r#"{{"target":{{"connection":"{id}"}},{m}}}"#),
            Ok(Target::Connection(ConnectionId::parse(id).unwrap_or_else(|e| panic!("{e}")))),
        );
        check(r#"{"target":"broadcast","message":{"type":"n"}}"#, Ok(Target::Broadcast));
        check("{not json", Err("JSON"));
        check("", Err("JSON"));
        check("[]", Err("JSON object"));
        check(&format!("{{{m}}}"), Err("\"target\" is missing"));
        check(r#"{"target":"broadcast"}"#, Err("\"message\" is missing"));
        check(&format!(r#"{{"target":"everyone",{m}}}"#), Err("\"target\" must be"));
        check(&format!(r#"{{"target":{{"user":"a","role":"b"}},{m}}}"#), Err("\"target\" must be"));
        check(&format!(r#"{{"target":{{"team":"a"}},{m}}}"#), Err("\"target\" must be"));
        check(&format!(r#"{{"target":{{"user":""}},{m}}}"#), Err("invalid \"target.user\""));
        check(
            &format!(r#"{{"target":{{"user":5}},{m}}}"#),
            Err("\"target.user\" must be a string"),
        );
        check(
            &format!(r#"{{"target":{{"connection":"x"}},{m}}}"#),
            Err("invalid \"target.connection\""),
        );
        check(r#"{"target":"broadcast","message":5}"#, Err("\"message\" must be a JSON object"));
        check(r#"{"target":"broadcast","message":{}}"#, Err("\"message.type\" is missing"));
        check(r#"{"target":"broadcast","message":{"type":3}}"#, Err("must be a string"));
        check(
            r#"{"target":"broadcast","message":{"type":"a b"}}"#,
            Err("invalid \"message.type\""),
        );
        check(
            r#"{"target":"broadcast","message":{"type":"n","payload":[1]}}"#,
            Err("\"message.payload\" must be a JSON object"),
        );
    }
}
