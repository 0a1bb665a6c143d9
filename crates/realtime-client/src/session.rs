//! The client's protocol state, without I/O: the last position of each stream, the topics
//! the application wants, the `since` of the next upgrade, and the delivery rule (a message
//! at or below its stream's position is a duplicate). The driver feeds it server frames;
//! it answers with values. Unit-tested on scripted frames.

use std::collections::{BTreeMap, BTreeSet};

use realtime_core::{Epoch, Position, StreamName, StreamState, TopicName};
use serde_json::{Map, Value, json};

use crate::event::{Connected, Event, Message};

/// What a `subscribed` frame said.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct SubscribedTopic {
    pub topic: TopicName,
    pub position: Option<Position>,
    pub recovered: bool,
}

/// Positions and wanted topics, kept across connections.
#[derive(Debug, Default)]
pub(crate) struct Session {
    positions: BTreeMap<StreamName, Position>,
    topics: BTreeSet<TopicName>,
}

/// The `(epoch, offset)` of a JSON object, when both are there and valid.
fn position_of(object: &Map<String, Value>) -> Option<Position> {
    let epoch = Epoch::new(object.get("epoch")?.as_str()?).ok()?;
    let offset = object.get("offset")?.as_u64()?;
    Some(Position { epoch, offset })
}

fn position_json(position: &Position) -> Value {
    json!({"epoch": position.epoch.as_str(), "offset": position.offset})
}

/// Percent-encodes every byte but the unreserved ones (RFC 3986: letters, digits, `-._~`),
/// as the JavaScript client's `encodeURIComponent` and the testkit's `since_query` do for
/// the characters of a `since` object.
fn percent_encode(raw: &str) -> String {
    let mut out = String::with_capacity(raw.len() * 3);
    for byte in raw.bytes() {
        if byte.is_ascii_alphanumeric() || matches!(byte, b'-' | b'.' | b'_' | b'~') {
            out.push(char::from(byte));
        } else {
            out.push_str(&format!("%{byte:02X}"));
        }
    }
    out
}

impl Session {
    /// The last position seen of each stream.
    pub fn positions(&self) -> &BTreeMap<StreamName, Position> {
        &self.positions
    }

    /// The topics the application wants, resubscribed on every connection.
    pub fn topics(&self) -> &BTreeSet<TopicName> {
        &self.topics
    }

    pub fn wants(&self, topic: &TopicName) -> bool {
        self.topics.contains(topic)
    }

    /// Adds a wanted topic; whether it is new.
    pub fn add_topic(&mut self, topic: TopicName) -> bool {
        self.topics.insert(topic)
    }

    /// Removes a wanted topic and forgets its position.
    pub fn remove_topic(&mut self, topic: &TopicName) {
        self.topics.remove(topic);
        self.positions.remove(&StreamName::Topic(topic.clone()));
    }

    /// The URL of the next upgrade: `base` with a `since` query parameter holding the
    /// positions of the connection's streams (topics recover through `subscribe`); any
    /// `since` already in `base` is replaced.
    pub fn connect_url(&self, base: &str) -> String {
        let (base, fragment) = match base.split_once('#') {
            Some((base, fragment)) => (base, Some(fragment)),
            None => (base, None),
        };
        let (path, query) = match base.split_once('?') {
            Some((path, query)) => (path, query),
            None => (base, ""),
        };
        let mut params: Vec<String> = query
            .split('&')
            .filter(|param| !param.is_empty() && *param != "since" && !param.starts_with("since="))
            .map(str::to_owned)
            .collect();
        let since: Map<String, Value> = self
            .positions
            .iter()
            .filter(|(stream, _)| !matches!(stream, StreamName::Topic(_)))
            .map(|(stream, position)| (stream.to_string(), position_json(position)))
            .collect();
        if !since.is_empty() {
            params.push(format!("since={}", percent_encode(&Value::Object(since).to_string())));
        }
        let mut url = path.to_owned();
        if !params.is_empty() {
            url.push('?');
            url.push_str(&params.join("&"));
        }
        if let Some(fragment) = fragment {
            url.push('#');
            url.push_str(fragment);
        }
        url
    }

    /// Takes a stream's position from `connected` or `subscribed`. A recovered stream keeps
    /// the client's own position (the replay that follows moves it message by message);
    /// otherwise the stream carries on from the server's position, and when the client had
    /// asked for it (`asked`) that is an [`Event::Unrecovered`].
    fn take_position(
        &mut self,
        stream: StreamName,
        position: Position,
        recovered: bool,
        asked: bool,
    ) -> Option<Event> {
        if recovered && self.positions.get(&stream).is_some_and(|own| own.epoch == position.epoch) {
            return Some(Event::Recovered { stream });
        }
        self.positions.insert(stream.clone(), position.clone());
        asked.then_some(Event::Unrecovered { stream, position })
    }

    /// A `connected` payload: the [`Connected`] value and the recovery verdicts of the
    /// streams the client had asked for. Streams the connection no longer has (a role gone,
    /// a topic the backend had subscribed the old connection to) are forgotten.
    pub fn handle_connected(&mut self, payload: &Value) -> (Connected, Vec<Event>) {
        let text = |key: &str| payload.get(key).and_then(Value::as_str).unwrap_or("").to_owned();
        let roles = payload
            .get("roles")
            .and_then(Value::as_array)
            .map(|roles| roles.iter().filter_map(Value::as_str).map(str::to_owned).collect())
            .unwrap_or_default();
        let asked: BTreeSet<StreamName> = self
            .positions
            .keys()
            .filter(|stream| !matches!(stream, StreamName::Topic(_)))
            .cloned()
            .collect();
        let mut streams = Vec::new();
        let mut events = Vec::new();
        if let Some(object) = payload.get("streams").and_then(Value::as_object) {
            for (name, state) in object {
                let (Ok(stream), Some(state)) = (StreamName::parse(name), state.as_object()) else {
                    continue;
                };
                let Some(position) = position_of(state) else { continue };
                let recovered = state.get("recovered").and_then(Value::as_bool) == Some(true);
                let asked = asked.contains(&stream);
                events.extend(self.take_position(
                    stream.clone(),
                    position.clone(),
                    recovered,
                    asked,
                ));
                streams.push(StreamState { stream, position, recovered });
            }
        }
        let current: BTreeSet<&StreamName> = streams.iter().map(|state| &state.stream).collect();
        let topics = &self.topics;
        self.positions.retain(|stream, _| match stream {
            StreamName::Topic(topic) => topics.contains(topic),
            other => current.contains(other),
        });
        let connected = Connected {
            connection_id: text("connection_id"),
            user_id: text("user_id"),
            roles,
            expires_at: payload.get("expires_at").and_then(Value::as_u64),
            streams,
        };
        (connected, events)
    }

    /// The payload of a `subscribe` of `topic`: with `since` when the client has a position.
    pub fn subscribe_payload(&self, topic: &TopicName) -> Value {
        match self.positions.get(&StreamName::Topic(topic.clone())) {
            Some(position) => json!({"topic": topic.as_str(), "since": position_json(position)}),
            None => json!({"topic": topic.as_str()}),
        }
    }

    /// A `subscribed` payload: what it says, and the recovery verdict when the client had
    /// asked with `since`. `None` when the topic is not valid.
    pub fn handle_subscribed(
        &mut self,
        payload: &Value,
    ) -> Option<(SubscribedTopic, Option<Event>)> {
        let object = payload.as_object()?;
        let topic = TopicName::new(object.get("topic")?.as_str()?).ok()?;
        let recovered = object.get("recovered").and_then(Value::as_bool) == Some(true);
        let stream = StreamName::Topic(topic.clone());
        let (position, event) = match position_of(object) {
            Some(position) => {
                let asked = self.positions.contains_key(&stream);
                let event = self.take_position(stream.clone(), position, recovered, asked);
                (self.positions.get(&stream).cloned(), event)
            }
            // A topic without history: no position to keep.
            None => (None, None),
        };
        Some((SubscribedTopic { topic, position, recovered }, event))
    }

    /// An `unsubscribed` payload: the topic's position is forgotten unless the application
    /// wants the topic again.
    pub fn handle_unsubscribed(&mut self, payload: &Value) {
        let Some(topic) = payload.get("topic").and_then(Value::as_str) else { return };
        let Ok(topic) = TopicName::new(topic) else { return };
        if !self.topics.contains(&topic) {
            self.positions.remove(&StreamName::Topic(topic));
        }
    }

    /// An application frame: the [`Message`], or `None` when its stream's position already
    /// covers it (a duplicate).
    pub fn deliver(&mut self, kind: &str, frame: &Map<String, Value>) -> Option<Message> {
        let stream =
            frame.get("stream").and_then(Value::as_str).and_then(|s| StreamName::parse(s).ok());
        let (stream, position) = match (stream, position_of(frame)) {
            (Some(stream), Some(position)) => {
                if let Some(seen) = self.positions.get(&stream)
                    && seen.epoch == position.epoch
                    && position.offset <= seen.offset
                {
                    return None;
                }
                self.positions.insert(stream.clone(), position.clone());
                (Some(stream), Some(position))
            }
            _ => (None, None),
        };
        Some(Message {
            kind: kind.to_owned(),
            payload: frame.get("payload").cloned().unwrap_or_else(|| json!({})),
            stream,
            position,
            id: frame.get("id").cloned(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(epoch: &str, offset: u64) -> Position {
        Position { epoch: Epoch::new(epoch).unwrap_or_else(|e| panic!("{e}")), offset }
    }

    fn stream(raw: &str) -> StreamName {
        StreamName::parse(raw).unwrap_or_else(|e| panic!("{e}"))
    }

    fn topic(raw: &str) -> TopicName {
        TopicName::new(raw).unwrap_or_else(|e| panic!("{e}"))
    }

    fn connected(streams: Value) -> Value {
        json!({"connection_id": "c", "user_id": "a", "roles": ["r"], "expires_at": 17, "streams": streams})
    }

    fn frame(value: Value) -> Map<String, Value> {
        match value {
            Value::Object(map) => map,
            other => panic!("{other}"),
        }
    }

    /// Delivers `frames` (`(n, stream, offset, epoch)`) and returns the `n`s that got through.
    fn deliver_all(session: &mut Session, frames: &[(u64, &str, u64, &str)]) -> Vec<u64> {
        frames
            .iter()
            .filter_map(|&(n, stream, offset, epoch)| {
                let f = frame(json!({"type": "note", "payload": {"n": n}, "stream": stream, "offset": offset, "epoch": epoch}));
                session.deliver("note", &f)
            })
            .map(|m| m.payload["n"].as_u64().unwrap_or_else(|| panic!("{m:?}")))
            .collect()
    }

    #[test]
    fn the_first_url_has_no_since_and_later_ones_name_every_stream_but_topics() {
        let mut session = Session::default();
        assert_eq!(session.connect_url("ws://x/ws"), "ws://x/ws");
        let (hello, events) = session.handle_connected(&connected(json!({
            "user:a": {"epoch": "E1", "offset": 4, "recovered": false},
            "broadcast": {"epoch": "B", "offset": 0, "recovered": false},
        })));
        assert_eq!(events, [], "nothing to recover on a first connect");
        assert_eq!(hello.connection_id, "c");
        assert_eq!(hello.roles, ["r"]);
        assert_eq!(hello.expires_at, Some(17));
        assert_eq!(hello.streams.len(), 2);
        session.add_topic(topic("orders"));
        session.handle_subscribed(
            &json!({"topic": "orders", "epoch": "T", "offset": 3, "recovered": false}),
        );
        // The same encoding as the testkit's `since_query` and the JavaScript client.
        assert_eq!(
            session.connect_url("ws://x/ws"),
            "ws://x/ws?since=%7B%22broadcast%22%3A%7B%22epoch%22%3A%22B%22%2C%22offset%22%3A0%7D%2C%22user%3Aa%22%3A%7B%22epoch%22%3A%22E1%22%2C%22offset%22%3A4%7D%7D"
        );
        // Other parameters are kept, an old `since` replaced, a fragment kept last.
        let url = session.connect_url("ws://x/ws?job_id=7&since=old#f");
        assert!(url.starts_with("ws://x/ws?job_id=7&since=%7B%22broadcast"), "{url}");
        assert!(url.ends_with("%7D%7D#f"), "{url}");
        assert_eq!(
            session.subscribe_payload(&topic("orders")),
            json!({"topic": "orders", "since": {"epoch": "T", "offset": 3}})
        );
        assert_eq!(session.subscribe_payload(&topic("other")), json!({"topic": "other"}));
    }

    #[test]
    fn a_frame_at_or_below_its_position_is_dropped_and_a_recovered_replay_is_not() {
        let mut session = Session::default();
        session.handle_connected(&connected(
            json!({"user:a": {"epoch": "E1", "offset": 2, "recovered": false}}),
        ));
        let seen = deliver_all(
            &mut session,
            &[
                (3, "user:a", 3, "E1"),
                (3, "user:a", 3, "E1"),
                (2, "user:a", 2, "E1"),
                (4, "user:a", 4, "E1"),
                (4, "user:a", 4, "E1"),
            ],
        );
        assert_eq!(seen, [3, 4]);
        assert_eq!(session.positions().get(&stream("user:a")), Some(&at("E1", 4)));

        // The server recovered: `connected` names the stream's top (7), then replays 5..7.
        let (_, events) = session.handle_connected(&connected(
            json!({"user:a": {"epoch": "E1", "offset": 7, "recovered": true}}),
        ));
        assert_eq!(events, [Event::Recovered { stream: stream("user:a") }]);
        let seen = deliver_all(
            &mut session,
            &[
                (5, "user:a", 5, "E1"),
                (6, "user:a", 6, "E1"),
                (6, "user:a", 6, "E1"),
                (7, "user:a", 7, "E1"),
            ],
        );
        assert_eq!(seen, [5, 6, 7]);

        // A new epoch (history lost): an explicit event, then the new epoch's messages.
        let (_, events) = session.handle_connected(&connected(
            json!({"user:a": {"epoch": "E2", "offset": 1, "recovered": false}}),
        ));
        assert_eq!(
            events,
            [Event::Unrecovered { stream: stream("user:a"), position: at("E2", 1) }]
        );
        assert_eq!(
            deliver_all(&mut session, &[(8, "user:a", 1, "E2"), (9, "user:a", 2, "E2")]),
            [9]
        );

        // `recovered: true` with another epoch than the client's is not trusted.
        let (_, events) = session.handle_connected(&connected(
            json!({"user:a": {"epoch": "E3", "offset": 5, "recovered": true}}),
        ));
        assert_eq!(
            events,
            [Event::Unrecovered { stream: stream("user:a"), position: at("E3", 5) }]
        );
    }

    #[test]
    fn messages_without_a_position_always_pass_and_streams_that_went_away_are_forgotten() {
        let mut session = Session::default();
        session.handle_connected(&connected(json!({
            "user:a": {"epoch": "E", "offset": 0, "recovered": false},
            "role:old": {"epoch": "R", "offset": 9, "recovered": false},
        })));
        for _ in 0..2 {
            let message = session.deliver(
                "presence.join",
                &frame(json!({"type": "presence.join", "payload": {"topic": "t", "user_id": "b"}})),
            );
            let message = message.unwrap_or_else(|| panic!("dropped"));
            assert_eq!((message.stream, message.position), (None, None));
        }
        let no_payload = session.deliver("n", &frame(json!({"type": "n", "id": 7})));
        assert_eq!(no_payload.map(|m| (m.payload, m.id)), Some((json!({}), Some(json!(7)))));
        // A topic the backend subscribed the connection to, not one the application wants.
        session.handle_subscribed(
            &json!({"topic": "pushed", "epoch": "P", "offset": 1, "recovered": false}),
        );
        assert!(session.positions().contains_key(&stream("topic:pushed")));
        session.handle_connected(&connected(
            json!({"user:a": {"epoch": "E", "offset": 0, "recovered": true}}),
        ));
        let streams: Vec<String> = session.positions().keys().map(ToString::to_string).collect();
        assert_eq!(streams, ["user:a"]);
    }

    #[test]
    fn topics_recover_through_subscribed() {
        let mut session = Session::default();
        session.add_topic(topic("orders"));
        let (first, event) = session
            .handle_subscribed(
                &json!({"topic": "orders", "epoch": "T", "offset": 0, "recovered": false}),
            )
            .unwrap_or_else(|| panic!("not parsed"));
        assert_eq!((first.position, first.recovered, event), (Some(at("T", 0)), false, None));
        assert_eq!(
            deliver_all(&mut session, &[(1, "topic:orders", 1, "T"), (1, "topic:orders", 1, "T")]),
            [1]
        );
        // Resubscribed with since 1: recovered, the client keeps its own position.
        let (again, event) = session
            .handle_subscribed(
                &json!({"topic": "orders", "epoch": "T", "offset": 4, "recovered": true}),
            )
            .unwrap_or_else(|| panic!("not parsed"));
        assert_eq!(event, Some(Event::Recovered { stream: stream("topic:orders") }));
        assert_eq!(again.position, Some(at("T", 1)));
        assert_eq!(
            deliver_all(&mut session, &[(2, "topic:orders", 2, "T"), (4, "topic:orders", 4, "T")]),
            [2, 4]
        );
        // Not recovered: an explicit event.
        let (_, event) = session
            .handle_subscribed(
                &json!({"topic": "orders", "epoch": "U", "offset": 9, "recovered": false}),
            )
            .unwrap_or_else(|| panic!("not parsed"));
        assert_eq!(
            event,
            Some(Event::Unrecovered { stream: stream("topic:orders"), position: at("U", 9) })
        );
        // Unsubscribing forgets the position; an `unsubscribed` of a wanted topic keeps it.
        session.handle_unsubscribed(&json!({"topic": "orders"}));
        assert!(session.positions().contains_key(&stream("topic:orders")));
        session.remove_topic(&topic("orders"));
        assert!(!session.positions().contains_key(&stream("topic:orders")));
        assert_eq!(session.handle_subscribed(&json!({"topic": "bad topic!"})), None);
    }
}
