//! The driver: one tokio task that owns the socket, the [`Session`] and the pending
//! requests. It connects (a token from the [`TokenSource`] first), reads frames, answers the
//! [`Client`](crate::Client)'s commands, refreshes the token before it expires, and after a
//! disconnect asks the policy what next and waits out the backoff. Commands are answered in
//! every phase, so nothing waits on a connection that may never come.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use futures_util::{SinkExt, StreamExt};
use rand::SeedableRng;
use rand::rngs::StdRng;
use realtime_core::protocol::{self, close};
use realtime_core::{BEARER_PREFIX, Position, SUBPROTOCOL, StreamName, TopicName};
use serde_json::{Value, json};
use tokio::net::TcpStream;
use tokio::sync::{mpsc, oneshot};
use tokio::time::{Instant, sleep, sleep_until, timeout};
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::handshake::client::Request;
use tokio_tungstenite::tungstenite::http::HeaderValue;
use tokio_tungstenite::tungstenite::http::header::SEC_WEBSOCKET_PROTOCOL;
use tokio_tungstenite::tungstenite::protocol::CloseFrame;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::{Error as WsError, Message as WsMessage};
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};
use tokio_util::sync::CancellationToken;

use crate::client::Reply;
use crate::config::{ClientConfig, TokenError, TokenFuture, TokenSource};
use crate::event::{ClientError, Event};
use crate::policy::{Disconnect, Step, Stop, next_step};
use crate::session::Session;

type Ws = WebSocketStream<MaybeTlsStream<TcpStream>>;

/// The least time between two refreshes of one connection, so a short-lived token cannot
/// make the client spin.
const MIN_REFRESH_INTERVAL: Duration = Duration::from_secs(1);
/// How long the client waits for the closing handshake once it closes (or was closed).
const CLOSE_WAIT: Duration = Duration::from_secs(1);
/// How much of a refused upgrade's body an event carries.
const BODY_MAX: usize = 256;

/// The answer to a subscribe: the topic's position and whether it was recovered.
pub(crate) type SubscribeAnswer = Result<(Option<Position>, bool), ClientError>;

/// What a [`Client`](crate::Client) asks of the driver.
#[derive(Debug)]
pub(crate) enum Command {
    Subscribe { topic: TopicName, reply: oneshot::Sender<SubscribeAnswer> },
    Unsubscribe { topic: TopicName, reply: oneshot::Sender<Result<(), ClientError>> },
    Send { kind: String, payload: Value, reply: oneshot::Sender<Result<u64, ClientError>> },
    Request { kind: String, payload: Value, reply: oneshot::Sender<Result<Reply, ClientError>> },
    Positions { reply: oneshot::Sender<Result<BTreeMap<StreamName, Position>, ClientError>> },
}

/// A `subscribe` call waiting for its answer, until its deadline.
#[derive(Debug)]
struct Waiter {
    deadline: Instant,
    reply: oneshot::Sender<SubscribeAnswer>,
}

/// A request on the wire, waiting for the frame with its id.
#[derive(Debug)]
enum Pending {
    Request(oneshot::Sender<Result<Reply, ClientError>>),
    /// A subscribe, by a call (with its waiters) or by a reconnect (none).
    Subscribe {
        topic: TopicName,
        waiters: Vec<Waiter>,
    },
    Unsubscribe(oneshot::Sender<Result<(), ClientError>>),
    Refresh,
}

#[derive(Debug)]
struct Entry {
    deadline: Instant,
    pending: Pending,
}

/// The state of one open socket.
#[derive(Default)]
struct Link {
    /// When the `connected` frame came; requests are sent only after it.
    connected_at: Option<Instant>,
    refresh_at: Option<Instant>,
    refreshing: Option<TokenFuture>,
    last_refresh: Option<Instant>,
}

/// How a connection (or an attempt) ended.
enum Ended {
    Stop(Stop),
    Disconnect { reason: Disconnect, connected_at: Option<Instant> },
}

pub(crate) struct Driver {
    config: ClientConfig,
    url: String,
    tokens: Arc<dyn TokenSource>,
    commands: mpsc::Receiver<Command>,
    commands_open: bool,
    events: mpsc::Sender<Event>,
    closing: CancellationToken,
    rng: StdRng,
    attempt: u32,
    session: Session,
    next_id: u64,
    pending: HashMap<u64, Entry>,
    /// Subscribe calls made between connections, sent with the next one's resubscribes.
    waiting: BTreeMap<TopicName, Vec<Waiter>>,
    /// The topics the current connection is subscribed to.
    confirmed: BTreeSet<TopicName>,
}

fn far_future() -> Instant {
    Instant::now() + Duration::from_secs(86_400 * 365)
}

/// Awaits the future in `slot`, or never when there is none.
async fn maybe<F: Future + Unpin>(slot: &mut Option<F>) -> F::Output {
    match slot {
        Some(future) => future.await,
        None => std::future::pending().await,
    }
}

/// Sends a close frame and waits (briefly) for the closing handshake.
async fn close_socket(ws: &mut Ws, code: u16, reason: &str) {
    let frame = CloseFrame { code: CloseCode::from(code), reason: reason.into() };
    let _ = timeout(CLOSE_WAIT, async {
        let _ = ws.close(Some(frame)).await;
        while let Some(Ok(_)) = ws.next().await {}
    })
    .await;
}

fn text_of(frame: &Value, key: &str) -> String {
    frame.get(key).and_then(Value::as_str).unwrap_or_default().to_owned()
}

impl Driver {
    pub(crate) fn new(
        config: ClientConfig,
        url: String,
        tokens: Arc<dyn TokenSource>,
        commands: mpsc::Receiver<Command>,
        events: mpsc::Sender<Event>,
        closing: CancellationToken,
    ) -> Driver {
        let rng = match config.seed {
            Some(seed) => StdRng::seed_from_u64(seed),
            None => StdRng::from_os_rng(),
        };
        Driver {
            config,
            url,
            tokens,
            commands,
            commands_open: true,
            events,
            closing,
            rng,
            attempt: 0,
            session: Session::default(),
            next_id: 1,
            pending: HashMap::new(),
            waiting: BTreeMap::new(),
            confirmed: BTreeSet::new(),
        }
    }

    /// Connects, reconnects, and returns when the client stops.
    pub(crate) async fn run(mut self) {
        let stop = loop {
            self.emit(Event::Connecting { attempt: self.attempt }).await;
            let (reason, connected_at) = match self.connection().await {
                Ended::Stop(stop) => break stop,
                Ended::Disconnect { reason, connected_at } => (reason, connected_at),
            };
            self.connection_lost();
            if connected_at.is_some_and(|at| at.elapsed() >= self.config.stable_after) {
                self.attempt = 0;
            }
            let delay = match next_step(&reason) {
                Step::Stop(stop) => break stop,
                Step::ReconnectNow => Duration::ZERO,
                Step::Backoff => {
                    let delay = self.config.backoff().delay_with(self.attempt, &mut self.rng);
                    self.attempt = self.attempt.saturating_add(1);
                    delay
                }
            };
            self.emit(Event::Disconnected { reason, reconnect_in: delay }).await;
            if let Err(stop) = self.offline(sleep(delay)).await {
                break stop;
            }
        };
        self.finish(stop).await;
    }

    /// One connection: a token, the upgrade, then frames until the socket ends.
    async fn connection(&mut self) -> Ended {
        let tokens = self.tokens.clone();
        let token = match self.offline(tokens.token()).await {
            Err(stop) => return Ended::Stop(stop),
            Ok(Err(error)) => {
                let reason = Disconnect::Token { error: error.to_string() };
                return Ended::Disconnect { reason, connected_at: None };
            }
            Ok(Ok(token)) => token,
        };
        let request = match self.upgrade_request(&token) {
            Ok(request) => request,
            Err(reason) => return Ended::Disconnect { reason, connected_at: None },
        };
        drop(token);
        let upgrade =
            timeout(self.config.connect_timeout, tokio_tungstenite::connect_async(request));
        let failed = |reason| Ended::Disconnect { reason, connected_at: None };
        match self.offline(upgrade).await {
            Err(stop) => Ended::Stop(stop),
            Ok(Err(_elapsed)) => {
                failed(Disconnect::Failed { error: "the upgrade timed out".to_owned() })
            }
            Ok(Ok(Err(WsError::Http(response)))) => {
                let body = response.body().as_deref().unwrap_or_default();
                let body: String = String::from_utf8_lossy(body).chars().take(BODY_MAX).collect();
                failed(Disconnect::Refused { status: response.status().as_u16(), body })
            }
            Ok(Ok(Err(error))) => failed(Disconnect::Failed { error: error.to_string() }),
            Ok(Ok(Ok((ws, _response)))) => self.open(ws).await,
        }
    }

    /// The upgrade request: the URL with `since`, the token in the subprotocol header.
    fn upgrade_request(&self, token: &str) -> Result<Request, Disconnect> {
        let url = self.session.connect_url(&self.url);
        let mut request =
            url.into_client_request().map_err(|e| Disconnect::Failed { error: e.to_string() })?;
        let mut value =
            HeaderValue::from_str(&subprotocols(token)).map_err(|_| Disconnect::Token {
                error: "the token holds characters a header cannot carry".to_owned(),
            })?;
        value.set_sensitive(true);
        request.headers_mut().insert(SEC_WEBSOCKET_PROTOCOL, value);
        Ok(request)
    }

    /// Runs `future` while answering commands as a client without a connection, and
    /// expiring what waits. `Err` when the client must stop first.
    async fn offline<F: Future>(&mut self, future: F) -> Result<F::Output, Stop> {
        tokio::pin!(future);
        loop {
            let deadline = self.next_deadline();
            tokio::select! {
                output = &mut future => return Ok(output),
                () = self.closing.cancelled() => return Err(Stop::Closed),
                command = self.commands.recv(), if self.commands_open => match command {
                    Some(command) => self.command_offline(command),
                    None => self.commands_open = false,
                },
                () = self.events.closed(), if !self.commands_open => return Err(Stop::Dropped),
                () = sleep_until(deadline.unwrap_or_else(far_future)), if deadline.is_some() => {
                    self.expire(None).await;
                }
            }
        }
    }

    /// An open socket, until it ends.
    async fn open(&mut self, mut ws: Ws) -> Ended {
        let mut link = Link::default();
        loop {
            let deadline = self.next_deadline();
            let refresh_at = link.refresh_at;
            tokio::select! {
                message = ws.next() => match message {
                    Some(Ok(WsMessage::Text(text))) => {
                        self.handle_text(&mut ws, &mut link, text.as_str()).await;
                    }
                    Some(Ok(WsMessage::Close(frame))) => {
                        let (code, reason) = frame.map_or((1005, String::new()), |frame| {
                            (u16::from(frame.code), frame.reason.as_str().to_owned())
                        });
                        let _ = timeout(CLOSE_WAIT, async { while let Some(Ok(_)) = ws.next().await {} }).await;
                        let reason = Disconnect::Closed { code, reason };
                        return Ended::Disconnect { reason, connected_at: link.connected_at };
                    }
                    // Pings are answered by tungstenite; binary frames are not the protocol.
                    Some(Ok(_)) => {}
                    Some(Err(error)) => {
                        let reason = Disconnect::Lost { error: error.to_string() };
                        return Ended::Disconnect { reason, connected_at: link.connected_at };
                    }
                    None => {
                        let error = "the connection ended without a close frame".to_owned();
                        let reason = Disconnect::Lost { error };
                        return Ended::Disconnect { reason, connected_at: link.connected_at };
                    }
                },
                () = self.closing.cancelled() => {
                    close_socket(&mut ws, close::NORMAL, "client closed").await;
                    return Ended::Stop(Stop::Closed);
                }
                command = self.commands.recv(), if self.commands_open => match command {
                    Some(command) if link.connected_at.is_some() => {
                        self.command_online(&mut ws, command).await;
                    }
                    Some(command) => self.command_offline(command),
                    None => self.commands_open = false,
                },
                () = self.events.closed(), if !self.commands_open => {
                    close_socket(&mut ws, close::NORMAL, "client dropped").await;
                    return Ended::Stop(Stop::Dropped);
                }
                () = sleep_until(deadline.unwrap_or_else(far_future)), if deadline.is_some() => {
                    self.expire(Some(&mut link)).await;
                }
                () = sleep_until(refresh_at.unwrap_or_else(far_future)), if refresh_at.is_some() => {
                    link.refresh_at = None;
                    link.last_refresh = Some(Instant::now());
                    link.refreshing = Some(self.tokens.token());
                }
                token = maybe(&mut link.refreshing) => {
                    link.refreshing = None;
                    self.refresh_with(&mut ws, &mut link, token).await;
                }
            }
        }
    }

    // ---- frames from the server ----

    async fn handle_text(&mut self, ws: &mut Ws, link: &mut Link, text: &str) {
        let Ok(Value::Object(frame)) = serde_json::from_str::<Value>(text) else { return };
        let Some(kind) = frame.get("type").and_then(Value::as_str).map(str::to_owned) else {
            return;
        };
        let payload = frame.get("payload").cloned().unwrap_or_else(|| json!({}));
        let pending = frame
            .get("id")
            .and_then(Value::as_u64)
            .and_then(|id| self.pending.remove(&id))
            .map(|entry| entry.pending);
        match kind.as_str() {
            protocol::CONNECTED => self.on_connected(ws, link, &payload).await,
            protocol::SUBSCRIBED => self.on_subscribed(&payload, pending).await,
            protocol::UNSUBSCRIBED => {
                self.session.handle_unsubscribed(&payload);
                if let Some(topic) = payload.get("topic").and_then(Value::as_str) {
                    self.confirmed.retain(|t| t.as_str() != topic);
                }
                match pending {
                    Some(Pending::Unsubscribe(reply)) => {
                        let _ = reply.send(Ok(()));
                    }
                    other => self.settle(other, Reply { kind, payload }),
                }
            }
            protocol::REFRESHED => {
                let expires_at = payload.get("expires_at").and_then(Value::as_u64);
                self.schedule_refresh(link, expires_at);
                self.emit(Event::Refreshed { expires_at }).await;
            }
            protocol::PONG => self.settle(pending, Reply { kind, payload }),
            protocol::ERROR => {
                let code = text_of(&payload, "code");
                let message = text_of(&payload, "message");
                match pending {
                    Some(pending) => self.refused(pending, code, message, Some(link)).await,
                    None => {
                        let id = frame.get("id").cloned();
                        self.emit(Event::ServerError { id, code, message }).await;
                    }
                }
            }
            _ => {
                let message = self.session.deliver(&kind, &frame);
                self.settle(pending, Reply { kind, payload });
                if let Some(message) = message {
                    self.emit(Event::Message(message)).await;
                }
            }
        }
    }

    async fn on_connected(&mut self, ws: &mut Ws, link: &mut Link, payload: &Value) {
        let (connected, verdicts) = self.session.handle_connected(payload);
        link.connected_at = Some(Instant::now());
        self.schedule_refresh(link, connected.expires_at);
        self.emit(Event::Connected(connected)).await;
        for event in verdicts {
            self.emit(event).await;
        }
        let topics: Vec<TopicName> = self.session.topics().iter().cloned().collect();
        for topic in topics {
            let waiters = self.waiting.remove(&topic).unwrap_or_default();
            self.send_subscribe(ws, topic, waiters).await;
        }
    }

    async fn on_subscribed(&mut self, payload: &Value, pending: Option<Pending>) {
        let Some((subscribed, verdict)) = self.session.handle_subscribed(payload) else {
            self.settle(
                pending,
                Reply { kind: protocol::SUBSCRIBED.into(), payload: payload.clone() },
            );
            return;
        };
        self.confirmed.insert(subscribed.topic.clone());
        if let Some(event) = verdict {
            self.emit(event).await;
        }
        match pending {
            Some(Pending::Subscribe { waiters, .. }) => {
                for waiter in waiters {
                    let answer = Ok((subscribed.position.clone(), subscribed.recovered));
                    let _ = waiter.reply.send(answer);
                }
            }
            other => {
                let reply = Reply { kind: protocol::SUBSCRIBED.into(), payload: payload.clone() };
                self.settle(other, reply);
            }
        }
    }

    /// A reply that is not an `error` for `pending`.
    fn settle(&mut self, pending: Option<Pending>, reply: Reply) {
        let unexpected = |reply: &Reply| ClientError::Refused {
            code: "unexpected_reply".to_owned(),
            message: format!("the server answered with {:?}", reply.kind),
        };
        match pending {
            None | Some(Pending::Refresh) => {}
            Some(Pending::Request(tx)) => {
                let _ = tx.send(Ok(reply));
            }
            Some(Pending::Subscribe { topic, waiters }) => {
                self.session.remove_topic(&topic);
                for waiter in waiters {
                    let _ = waiter.reply.send(Err(unexpected(&reply)));
                }
            }
            Some(Pending::Unsubscribe(tx)) => {
                let _ = tx.send(Err(unexpected(&reply)));
            }
        }
    }

    /// `pending` failed: refused by an `error` frame, or timed out.
    async fn fail(&mut self, pending: Pending, error: ClientError, link: Option<&mut Link>) {
        match pending {
            Pending::Request(tx) => {
                let _ = tx.send(Err(error));
            }
            Pending::Subscribe { topic, waiters } => {
                // A subscribe that failed leaves nothing behind.
                self.session.remove_topic(&topic);
                self.confirmed.remove(&topic);
                if waiters.is_empty() {
                    self.emit(Event::SubscribeFailed { topic, error }).await;
                } else {
                    for waiter in waiters {
                        let _ = waiter.reply.send(Err(error.clone()));
                    }
                }
            }
            Pending::Unsubscribe(tx) => {
                let _ = tx.send(Err(error));
            }
            Pending::Refresh => {
                self.emit(Event::RefreshFailed { error }).await;
                if let Some(link) = link {
                    self.retry_refresh(link);
                }
            }
        }
    }

    async fn refused(
        &mut self,
        pending: Pending,
        code: String,
        message: String,
        link: Option<&mut Link>,
    ) {
        self.fail(pending, ClientError::Refused { code, message }, link).await;
    }

    // ---- commands ----

    fn command_offline(&mut self, command: Command) {
        match command {
            Command::Subscribe { topic, reply } => {
                let waiter =
                    Waiter { deadline: Instant::now() + self.config.request_timeout, reply };
                if let Some(waiters) = self.waiting.get_mut(&topic) {
                    waiters.push(waiter);
                } else if self.session.wants(&topic) {
                    // Subscribed before: resubscribed on the next connection.
                    let position = self.session.positions().get(&StreamName::Topic(topic)).cloned();
                    let _ = waiter.reply.send(Ok((position, false)));
                } else {
                    self.session.add_topic(topic.clone());
                    self.waiting.insert(topic, vec![waiter]);
                }
            }
            Command::Unsubscribe { topic, reply } => {
                self.drop_topic(&topic);
                let _ = reply.send(Ok(()));
            }
            Command::Send { reply, .. } => {
                let _ = reply.send(Err(ClientError::NotConnected));
            }
            Command::Request { reply, .. } => {
                let _ = reply.send(Err(ClientError::NotConnected));
            }
            Command::Positions { reply } => {
                let _ = reply.send(Ok(self.session.positions().clone()));
            }
        }
    }

    async fn command_online(&mut self, ws: &mut Ws, command: Command) {
        match command {
            Command::Subscribe { topic, reply } => {
                let waiter =
                    Waiter { deadline: Instant::now() + self.config.request_timeout, reply };
                if self.confirmed.contains(&topic) {
                    self.session.add_topic(topic.clone());
                    let position = self.session.positions().get(&StreamName::Topic(topic)).cloned();
                    let _ = waiter.reply.send(Ok((position, false)));
                } else if let Some(waiters) = self.subscribe_waiters(&topic) {
                    waiters.push(waiter);
                } else {
                    self.session.add_topic(topic.clone());
                    self.send_subscribe(ws, topic, vec![waiter]).await;
                }
            }
            Command::Unsubscribe { topic, reply } => {
                let on_server =
                    self.confirmed.contains(&topic) || self.subscribe_waiters(&topic).is_some();
                self.drop_topic(&topic);
                // Not confirmed any more: a subscribe before the `unsubscribed` reply must
                // ask the server again.
                self.confirmed.remove(&topic);
                if on_server {
                    let payload = json!({"topic": topic.as_str()});
                    self.send_request(
                        ws,
                        protocol::UNSUBSCRIBE,
                        payload,
                        Pending::Unsubscribe(reply),
                    )
                    .await;
                } else {
                    let _ = reply.send(Ok(()));
                }
            }
            Command::Send { kind, payload, reply } => {
                let id = self.take_id();
                self.write(ws, json!({"type": kind, "id": id, "payload": payload})).await;
                let _ = reply.send(Ok(id));
            }
            Command::Request { kind, payload, reply } => {
                self.send_request(ws, &kind, payload, Pending::Request(reply)).await;
            }
            Command::Positions { reply } => {
                let _ = reply.send(Ok(self.session.positions().clone()));
            }
        }
    }

    /// The waiters of the subscribe of `topic` on the wire, if one is.
    fn subscribe_waiters(&mut self, topic: &TopicName) -> Option<&mut Vec<Waiter>> {
        self.pending.values_mut().find_map(|entry| match &mut entry.pending {
            Pending::Subscribe { topic: t, waiters } if t == topic => Some(waiters),
            _ => None,
        })
    }

    /// The application no longer wants `topic`: forget it, and answer the calls still
    /// waiting for its subscribe.
    fn drop_topic(&mut self, topic: &TopicName) {
        self.session.remove_topic(topic);
        let mut waiters = self.waiting.remove(topic).unwrap_or_default();
        if let Some(on_wire) = self.subscribe_waiters(topic) {
            waiters.append(on_wire);
        }
        for waiter in waiters {
            let _ = waiter.reply.send(Err(ClientError::Unsubscribed));
        }
    }

    fn take_id(&mut self) -> u64 {
        let id = self.next_id;
        self.next_id += 1;
        id
    }

    async fn send_subscribe(&mut self, ws: &mut Ws, topic: TopicName, waiters: Vec<Waiter>) {
        let payload = self.session.subscribe_payload(&topic);
        self.send_request(ws, protocol::SUBSCRIBE, payload, Pending::Subscribe { topic, waiters })
            .await;
    }

    async fn send_request(&mut self, ws: &mut Ws, kind: &str, payload: Value, pending: Pending) {
        let id = self.take_id();
        let deadline = Instant::now() + self.config.request_timeout;
        self.pending.insert(id, Entry { deadline, pending });
        self.write(ws, json!({"type": kind, "id": id, "payload": payload})).await;
    }

    /// Writes a frame. A failed write is not reported here: the read side sees the socket
    /// end next, and the pending requests fail then.
    async fn write(&mut self, ws: &mut Ws, frame: Value) {
        let _ = ws.send(WsMessage::text(frame.to_string())).await;
    }

    // ---- deadlines ----

    fn next_deadline(&self) -> Option<Instant> {
        let pending = self.pending.values().flat_map(|entry| {
            let waiters: &[Waiter] = match &entry.pending {
                Pending::Subscribe { waiters, .. } => waiters,
                _ => &[],
            };
            std::iter::once(entry.deadline).chain(waiters.iter().map(|w| w.deadline))
        });
        let waiting = self.waiting.values().flatten().map(|waiter| waiter.deadline);
        pending.chain(waiting).min()
    }

    /// Fails what waited past its deadline.
    async fn expire(&mut self, mut link: Option<&mut Link>) {
        let now = Instant::now();
        let timed_out = ClientError::Timeout(self.config.request_timeout);
        let expired: Vec<u64> =
            self.pending.iter().filter(|(_, e)| e.deadline <= now).map(|(id, _)| *id).collect();
        for id in expired {
            if let Some(entry) = self.pending.remove(&id) {
                self.fail(entry.pending, timed_out.clone(), link.as_deref_mut()).await;
            }
        }
        // A call waiting on a subscribe that is still on the wire gives up; the subscribe
        // stays (the answer will come, or the entry itself times out).
        for entry in self.pending.values_mut() {
            if let Pending::Subscribe { waiters, .. } = &mut entry.pending {
                for waiter in take_expired(waiters, now) {
                    let _ = waiter.reply.send(Err(timed_out.clone()));
                }
            }
        }
        // Calls made between connections: a topic whose every call gave up is dropped.
        let mut abandoned = Vec::new();
        for (topic, waiters) in &mut self.waiting {
            for waiter in take_expired(waiters, now) {
                let _ = waiter.reply.send(Err(timed_out.clone()));
            }
            if waiters.is_empty() {
                abandoned.push(topic.clone());
            }
        }
        for topic in abandoned {
            self.waiting.remove(&topic);
            self.session.remove_topic(&topic);
        }
    }

    // ---- token refresh ----

    /// Schedules the refresh `refresh_before` ahead of `expires_at` (Unix seconds), and not
    /// sooner than [`MIN_REFRESH_INTERVAL`] after the last one.
    fn schedule_refresh(&self, link: &mut Link, expires_at: Option<u64>) {
        link.refresh_at = None;
        let (Some(before), Some(expires_at)) = (self.config.refresh_before, expires_at) else {
            return;
        };
        // `expires_at` comes from the server: an absurd one means no refresh, never a panic.
        let Some(expiry) = UNIX_EPOCH.checked_add(Duration::from_secs(expires_at)) else {
            return;
        };
        let wait = expiry
            .checked_sub(before)
            .and_then(|due| due.duration_since(SystemTime::now()).ok())
            .unwrap_or(Duration::ZERO);
        let Some(mut at) = Instant::now().checked_add(wait) else { return };
        if let Some(last) = link.last_refresh {
            at = at.max(last + MIN_REFRESH_INTERVAL);
        }
        link.refresh_at = Some(at);
    }

    fn retry_refresh(&self, link: &mut Link) {
        link.refresh_at = Some(Instant::now() + MIN_REFRESH_INTERVAL.max(self.config.min_delay));
    }

    async fn refresh_with(
        &mut self,
        ws: &mut Ws,
        link: &mut Link,
        token: Result<String, TokenError>,
    ) {
        match token {
            Ok(token) => {
                let payload = json!({"token": token});
                self.send_request(ws, protocol::REFRESH, payload, Pending::Refresh).await;
            }
            Err(error) => {
                self.emit(Event::RefreshFailed { error: ClientError::Token(error.to_string()) })
                    .await;
                self.retry_refresh(link);
            }
        }
    }

    // ---- endings ----

    /// After a socket ended: requests fail, subscribe calls wait for the next connection.
    fn connection_lost(&mut self) {
        self.confirmed.clear();
        for (_, entry) in self.pending.drain() {
            match entry.pending {
                Pending::Request(tx) => {
                    let _ = tx.send(Err(ClientError::Disconnected));
                }
                Pending::Subscribe { topic, waiters } => {
                    if !waiters.is_empty() {
                        self.waiting.entry(topic).or_default().extend(waiters);
                    }
                }
                // The next connection is not subscribed to it: done.
                Pending::Unsubscribe(tx) => {
                    let _ = tx.send(Ok(()));
                }
                Pending::Refresh => {}
            }
        }
    }

    async fn finish(mut self, stop: Stop) {
        for (_, entry) in self.pending.drain() {
            match entry.pending {
                Pending::Request(tx) => {
                    let _ = tx.send(Err(ClientError::Stopped));
                }
                Pending::Subscribe { waiters, .. } => {
                    for waiter in waiters {
                        let _ = waiter.reply.send(Err(ClientError::Stopped));
                    }
                }
                Pending::Unsubscribe(tx) => {
                    let _ = tx.send(Err(ClientError::Stopped));
                }
                Pending::Refresh => {}
            }
        }
        for waiter in std::mem::take(&mut self.waiting).into_values().flatten() {
            let _ = waiter.reply.send(Err(ClientError::Stopped));
        }
        // Commands still queued are dropped with the receiver: their calls see `Stopped`.
        self.commands.close();
        // The last event is never dropped: with a full buffer after `close` it waits for
        // room in a task of its own, so that `close` is not held up (nothing comes after it).
        if let Err(mpsc::error::TrySendError::Full(last)) =
            self.events.try_send(Event::Stopped(stop))
        {
            let events = self.events.clone();
            tokio::spawn(async move {
                let _ = events.send(last).await;
            });
        }
    }

    /// Hands an event to the application, waiting while its buffer is full (but not past
    /// a [`Client::close`](crate::Client::close)).
    async fn emit(&self, event: Event) {
        if self.closing.is_cancelled() {
            let _ = self.events.try_send(event);
            return;
        }
        tokio::select! {
            _ = self.events.send(event) => {}
            () = self.closing.cancelled() => {}
        }
    }
}

/// The `Sec-WebSocket-Protocol` value that carries `token`: `realtime.v1, bearer.<JWT>`.
fn subprotocols(token: &str) -> String {
    format!("{SUBPROTOCOL}, {BEARER_PREFIX}{token}")
}

/// Removes and returns the waiters past `now`.
fn take_expired(waiters: &mut Vec<Waiter>, now: Instant) -> Vec<Waiter> {
    let (expired, kept): (Vec<Waiter>, Vec<Waiter>) =
        std::mem::take(waiters).into_iter().partition(|waiter| waiter.deadline <= now);
    *waiters = kept;
    expired
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_token_travels_as_the_server_reads_it() {
        let header = subprotocols("aaa.bbb.ccc");
        let token = realtime_core::token_from_subprotocols(&header)
            .unwrap_or_else(|e| panic!("{e}"))
            .unwrap_or_else(|| panic!("no token in {header}"));
        assert_eq!(token.expose(), "aaa.bbb.ccc");
    }
}
