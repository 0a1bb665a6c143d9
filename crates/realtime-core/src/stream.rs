//! Streams, positions and history as pure values: [`StreamName`] (`user:<id>`, `role:<name>`,
//! `topic:<name>`, `broadcast`), [`Epoch`] and [`Position`], and [`StreamHistory`], the
//! bounded history of one stream with the all-or-nothing recovery decision.
//!
//! The shell draws epochs (randomness) and passes `now`; nothing here reads a clock.

use std::collections::VecDeque;
use std::fmt;

use crate::frame::Frame;
use crate::ids::{InvalidRole, InvalidTopicName, InvalidUserId, Role, TopicName, UserId};
use crate::time::UnixMillis;

/// The stream every connection is in.
pub const BROADCAST: &str = "broadcast";

/// Where a publication goes: one of the four kinds of stream.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum StreamName {
    /// Every connection.
    Broadcast,
    /// Every connection of one user.
    User(UserId),
    /// Every connection holding a role.
    Role(Role),
    /// Every connection subscribed to a topic.
    Topic(TopicName),
}

/// Why a string is not a [`StreamName`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum InvalidStreamName {
    /// Not `broadcast` and no `user:`, `role:` or `topic:` prefix.
    #[error("a stream is \"broadcast\", \"user:<id>\", \"role:<name>\" or \"topic:<name>\"")]
    UnknownKind,
    /// The user id after `user:` is invalid.
    #[error(transparent)]
    User(#[from] InvalidUserId),
    /// The role after `role:` is invalid.
    #[error(transparent)]
    Role(#[from] InvalidRole),
    /// The topic after `topic:` is invalid.
    #[error(transparent)]
    Topic(#[from] InvalidTopicName),
}

impl StreamName {
    /// Parses the wire form (`broadcast`, `user:alice`, `role:admin`, `topic:orders`).
    ///
    /// # Errors
    /// [`InvalidStreamName`] says what is wrong.
    pub fn parse(raw: &str) -> Result<StreamName, InvalidStreamName> {
        if raw == BROADCAST {
            return Ok(StreamName::Broadcast);
        }
        let (kind, name) = raw.split_once(':').ok_or(InvalidStreamName::UnknownKind)?;
        match kind {
            "user" => Ok(StreamName::User(UserId::new(name)?)),
            "role" => Ok(StreamName::Role(Role::new(name)?)),
            "topic" => Ok(StreamName::Topic(TopicName::new(name)?)),
            _ => Err(InvalidStreamName::UnknownKind),
        }
    }

    /// A short, stable name of the stream's kind, for metrics and per-kind settings.
    pub fn kind(&self) -> &'static str {
        match self {
            StreamName::Broadcast => "broadcast",
            StreamName::User(_) => "user",
            StreamName::Role(_) => "role",
            StreamName::Topic(_) => "topic",
        }
    }
}

impl fmt::Display for StreamName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            StreamName::Broadcast => f.write_str(BROADCAST),
            StreamName::User(user) => write!(f, "user:{user}"),
            StreamName::Role(role) => write!(f, "role:{role}"),
            StreamName::Topic(topic) => write!(f, "topic:{topic}"),
        }
    }
}

/// The generation of a stream's history: new whenever the history is lost (a restart), so
/// a client's old offsets are known not to apply. 1 to 32 ASCII letters and digits, drawn by
/// the shell.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Epoch(String);

/// Why a string is not an [`Epoch`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("an epoch is 1 to 32 ASCII letters and digits")]
pub struct InvalidEpoch;

impl Epoch {
    /// Longest accepted epoch, in bytes.
    pub const MAX_LEN: usize = 32;

    /// Validates `raw` as an epoch.
    ///
    /// # Errors
    /// [`InvalidEpoch`] when it is empty, too long or not alphanumeric.
    pub fn new(raw: impl Into<String>) -> Result<Epoch, InvalidEpoch> {
        let raw = raw.into();
        let valid = !raw.is_empty()
            && raw.len() <= Self::MAX_LEN
            && raw.bytes().all(|b| b.is_ascii_alphanumeric());
        if valid { Ok(Epoch(raw)) } else { Err(InvalidEpoch) }
    }

    /// The epoch as a string slice.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for Epoch {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// A place in a stream: the epoch and the offset of the last publication (0 before any).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Position {
    /// The stream's epoch.
    pub epoch: Epoch,
    /// The offset of a publication; each publication is the previous offset + 1.
    pub offset: u64,
}

/// How much history a stream keeps.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HistoryLimits {
    /// Most publications kept (0 keeps none: the stream still counts offsets).
    pub max_len: usize,
    /// Oldest publication kept, in milliseconds of age.
    pub max_age_millis: u64,
}

impl Default for HistoryLimits {
    /// 100 publications, 300 s.
    fn default() -> Self {
        HistoryLimits { max_len: 100, max_age_millis: 300_000 }
    }
}

/// Which streams keep history, and how much: per stream kind, and per topic prefix (the
/// longest matching prefix wins over the topic default). `None` turns history off: the stream
/// then has no offsets, its messages carry no position, and it cannot be recovered.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HistoryPolicy {
    /// The `broadcast` stream.
    pub broadcast: Option<HistoryLimits>,
    /// Every `user:<id>` stream.
    pub user: Option<HistoryLimits>,
    /// Every `role:<name>` stream.
    pub role: Option<HistoryLimits>,
    /// Every `topic:<name>` stream without a matching prefix below.
    pub topic: Option<HistoryLimits>,
    /// Topic prefixes with their own setting (`("chat:", None)` turns history off for every
    /// `chat:` topic).
    pub topic_prefixes: Vec<(String, Option<HistoryLimits>)>,
}

impl Default for HistoryPolicy {
    /// History on for every stream, with [`HistoryLimits::default`].
    fn default() -> Self {
        let on = Some(HistoryLimits::default());
        HistoryPolicy { broadcast: on, user: on, role: on, topic: on, topic_prefixes: Vec::new() }
    }
}

impl HistoryPolicy {
    /// The history `stream` keeps; `None` when it keeps none.
    pub fn limits(&self, stream: &StreamName) -> Option<HistoryLimits> {
        match stream {
            StreamName::Broadcast => self.broadcast,
            StreamName::User(_) => self.user,
            StreamName::Role(_) => self.role,
            StreamName::Topic(topic) => self
                .topic_prefixes
                .iter()
                .filter(|(prefix, _)| topic.as_str().starts_with(prefix.as_str()))
                .max_by_key(|(prefix, _)| prefix.len())
                .map_or(self.topic, |(_, limits)| *limits),
        }
    }
}

/// One kept publication: its offset, when it was published, and its wire frame (which
/// already carries the stream, offset and epoch).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Publication {
    /// Its offset in the stream.
    pub offset: u64,
    /// When it was appended.
    pub published_at: UnixMillis,
    /// The frame every recipient gets.
    pub frame: Frame,
}

/// The answer to a recovery request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Recovery {
    /// Every publication after the client's offset is still here: these, in order.
    Recovered(Vec<Frame>),
    /// The epoch differs, the offset is ahead of the stream, the gap is no longer covered,
    /// or it is larger than allowed: nothing is replayed.
    NotRecovered,
}

/// The bounded history of one stream and its current position.
#[derive(Debug, Clone)]
pub struct StreamHistory {
    epoch: Epoch,
    top: u64,
    limits: HistoryLimits,
    kept: VecDeque<Publication>,
}

impl StreamHistory {
    /// An empty stream in `epoch`.
    pub fn new(epoch: Epoch, limits: HistoryLimits) -> StreamHistory {
        StreamHistory { epoch, top: 0, limits, kept: VecDeque::new() }
    }

    /// The current position: the epoch and the offset of the last publication.
    pub fn position(&self) -> Position {
        Position { epoch: self.epoch.clone(), offset: self.top }
    }

    /// Appends a publication at `now`: `encode` builds its frame from its position (so the
    /// frame carries it). Returns the new position. Drops what the limits no longer allow.
    pub fn append(&mut self, now: UnixMillis, encode: impl FnOnce(&Position) -> Frame) -> Position {
        self.top += 1;
        let position = self.position();
        let frame = encode(&position);
        if self.limits.max_len > 0 {
            self.kept.push_back(Publication { offset: self.top, published_at: now, frame });
        }
        self.handle_timeout(now);
        position
    }

    /// Time has reached `now`: drops publications past the age limit and beyond the length.
    pub fn handle_timeout(&mut self, now: UnixMillis) {
        while self.kept.len() > self.limits.max_len {
            self.kept.pop_front();
        }
        let oldest_allowed = now.0.saturating_sub(self.limits.max_age_millis);
        while self.kept.front().is_some_and(|p| p.published_at.0 < oldest_allowed) {
            self.kept.pop_front();
        }
    }

    /// How many publications are kept.
    pub fn len(&self) -> usize {
        self.kept.len()
    }

    /// Whether no publication is kept (the stream may still have a position).
    pub fn is_empty(&self) -> bool {
        self.kept.is_empty()
    }

    /// When the oldest kept publication ages out; `None` when nothing is kept.
    pub fn poll_timeout(&self) -> Option<UnixMillis> {
        let oldest = self.kept.front()?;
        Some(UnixMillis(oldest.published_at.0.saturating_add(self.limits.max_age_millis)))
    }

    /// Recovery for a client that last saw `since`, at `now`, replaying at most `max`
    /// publications: all or nothing.
    pub fn recover(&mut self, since: &Position, now: UnixMillis, max: usize) -> Recovery {
        self.handle_timeout(now);
        if since.epoch != self.epoch || since.offset > self.top {
            return Recovery::NotRecovered;
        }
        let missed = self.top - since.offset;
        if missed == 0 {
            return Recovery::Recovered(Vec::new());
        }
        if usize::try_from(missed).map_or(true, |missed| missed > max) {
            return Recovery::NotRecovered;
        }
        // Kept offsets are consecutive and end at `top`; the gap is covered when the oldest
        // kept one is no later than the first missed one.
        let covered = self.kept.front().is_some_and(|oldest| oldest.offset <= since.offset + 1);
        if !covered {
            return Recovery::NotRecovered;
        }
        let frames = self
            .kept
            .iter()
            .filter(|publication| publication.offset > since.offset)
            .map(|publication| publication.frame.clone())
            .collect();
        Recovery::Recovered(frames)
    }
}

/// An entry of a token's `topics` claim: an exact topic name, or `prefix*` for every topic
/// that starts with `prefix` (`chat:*` allows `chat:room-7`; `*` alone allows every topic).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum TopicPattern {
    /// Exactly this topic.
    Exact(TopicName),
    /// Every topic starting with this prefix (possibly empty).
    Prefix(String),
}

impl TopicPattern {
    /// Parses one claim entry.
    ///
    /// # Errors
    /// [`InvalidTopicName`] when the name (or the prefix, with `*` removed) breaks the topic
    /// name rules; a `*` anywhere but at the end is such a character.
    pub fn parse(raw: &str) -> Result<TopicPattern, InvalidTopicName> {
        match raw.strip_suffix('*') {
            Some("") => Ok(TopicPattern::Prefix(String::new())),
            Some(prefix) => Ok(TopicPattern::Prefix(TopicName::new(prefix)?.as_str().to_owned())),
            None => Ok(TopicPattern::Exact(TopicName::new(raw)?)),
        }
    }

    /// Whether `topic` matches.
    pub fn matches(&self, topic: &TopicName) -> bool {
        match self {
            TopicPattern::Exact(name) => name == topic,
            TopicPattern::Prefix(prefix) => topic.as_str().starts_with(prefix.as_str()),
        }
    }
}

/// Whether any of `patterns` allows `topic`.
pub fn topic_allowed<'a>(
    patterns: impl IntoIterator<Item = &'a TopicPattern>,
    topic: &TopicName,
) -> bool {
    patterns.into_iter().any(|pattern| pattern.matches(topic))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn epoch(raw: &str) -> Epoch {
        Epoch::new(raw).unwrap_or_else(|e| panic!("{e}"))
    }

    fn frame(position: &Position) -> Frame {
        Frame::from_text(format!(r#"{{"offset":{}}}"#, position.offset))
    }

    fn offsets(recovery: &Recovery) -> Option<Vec<u64>> {
        match recovery {
            Recovery::Recovered(frames) => Some(
                frames
                    .iter()
                    .map(|f| {
                        let value: serde_json::Value =
                            serde_json::from_str(f.as_str()).unwrap_or_else(|e| panic!("{e}"));
                        value["offset"].as_u64().unwrap_or_else(|| panic!("{value}"))
                    })
                    .collect(),
            ),
            Recovery::NotRecovered => None,
        }
    }

    fn at(epoch_name: &str, offset: u64) -> Position {
        Position { epoch: epoch(epoch_name), offset }
    }

    #[test]
    fn stream_names_round_trip_and_refuse_the_rest() {
        for raw in ["broadcast", "user:alice", "role:admin", "topic:chat:room-7"] {
            let name = StreamName::parse(raw).unwrap_or_else(|e| panic!("{raw}: {e}"));
            assert_eq!(name.to_string(), raw);
        }
        assert_eq!(StreamName::parse("topic:orders").map(|n| n.kind()), Ok("topic"));
        for raw in ["", "everyone", "team:x", "user:", "topic:a b", "Broadcast"] {
            assert!(StreamName::parse(raw).is_err(), "{raw:?} accepted");
        }
    }

    #[test]
    fn topic_patterns() {
        let topic = |raw: &str| TopicName::new(raw).unwrap_or_else(|e| panic!("{e}"));
        let patterns: Vec<TopicPattern> = ["orders", "chat:*"]
            .iter()
            .map(|raw| TopicPattern::parse(raw).unwrap_or_else(|e| panic!("{e}")))
            .collect();
        for (name, allowed) in [
            ("orders", true),
            ("orders2", false),
            ("chat:room-7", true),
            ("chat", false),
            ("x", false),
        ] {
            assert_eq!(topic_allowed(&patterns, &topic(name)), allowed, "{name}");
        }
        let all = [TopicPattern::parse("*").unwrap_or_else(|e| panic!("{e}"))];
        assert!(topic_allowed(&all, &topic("anything")));
        assert!(!topic_allowed(&[], &topic("orders")));
        for bad in ["", "a*b", "**", "a b*"] {
            assert!(TopicPattern::parse(bad).is_err(), "{bad:?} accepted");
        }
    }

    #[test]
    fn epochs_are_short_alphanumerics() {
        assert!(Epoch::new("hD3kQz9a").is_ok());
        for bad in ["", "a-b", "é", &"a".repeat(33)] {
            assert_eq!(Epoch::new(bad), Err(InvalidEpoch), "{bad:?}");
        }
    }

    #[test]
    fn offsets_count_up_from_one_and_frames_carry_them() {
        let mut history = StreamHistory::new(epoch("e1"), HistoryLimits::default());
        assert_eq!(history.position(), at("e1", 0));
        for n in 1..=3 {
            assert_eq!(history.append(UnixMillis(n), frame), at("e1", n));
        }
        assert_eq!(
            offsets(&history.recover(&at("e1", 0), UnixMillis(4), 300)),
            Some(vec![1, 2, 3])
        );
    }

    /// The recovery decision, case by case: (kept limits, publications, since, max) ->
    /// replayed offsets or `None` for `recovered: false`.
    #[test]
    fn recovery_is_all_or_nothing() {
        #[track_caller]
        fn check(
            limits: HistoryLimits,
            published: u64,
            since: Position,
            max: usize,
            want: Option<Vec<u64>>,
        ) {
            let mut history = StreamHistory::new(epoch("e1"), limits);
            for n in 1..=published {
                history.append(UnixMillis(n * 1000), frame);
            }
            let now = UnixMillis(published * 1000);
            assert_eq!(offsets(&history.recover(&since, now, max)), want, "{limits:?} {since:?}");
        }
        let five = HistoryLimits { max_len: 5, max_age_millis: 1_000_000 };
        check(five, 10, at("e1", 7), 300, Some(vec![8, 9, 10]));
        check(five, 10, at("e1", 5), 300, Some(vec![6, 7, 8, 9, 10]));
        check(five, 10, at("e1", 4), 300, None); // 5 fell out of the history
        check(five, 10, at("e1", 10), 300, Some(vec![])); // nothing missed
        check(five, 10, at("e1", 11), 300, None); // ahead of the stream
        check(five, 10, at("e0", 9), 300, None); // another epoch
        check(five, 10, at("e1", 7), 2, None); // more than allowed
        check(five, 10, at("e1", 8), 2, Some(vec![9, 10]));
        let none = HistoryLimits { max_len: 0, max_age_millis: 1_000_000 };
        check(none, 3, at("e1", 2), 300, None);
        check(none, 3, at("e1", 3), 300, Some(vec![]));
        // Age: at t=10 s with 3.5 s of history, offsets 7..=10 remain.
        let young = HistoryLimits { max_len: 100, max_age_millis: 3_500 };
        check(young, 10, at("e1", 6), 300, Some(vec![7, 8, 9, 10]));
        check(young, 10, at("e1", 5), 300, None);
    }

    #[test]
    fn age_limit_is_applied_when_time_passes() {
        let limits = HistoryLimits { max_len: 100, max_age_millis: 1_000 };
        let mut history = StreamHistory::new(epoch("e1"), limits);
        history.append(UnixMillis(0), frame);
        history.append(UnixMillis(500), frame);
        assert_eq!(history.poll_timeout(), Some(UnixMillis(1_000)));
        history.handle_timeout(UnixMillis(1_200));
        assert_eq!(history.poll_timeout(), Some(UnixMillis(1_500)));
        assert_eq!(history.recover(&at("e1", 0), UnixMillis(1_200), 300), Recovery::NotRecovered);
        assert_eq!(offsets(&history.recover(&at("e1", 1), UnixMillis(1_200), 300)), Some(vec![2]));
        history.handle_timeout(UnixMillis(2_000));
        assert_eq!(history.poll_timeout(), None);
        assert_eq!(history.position(), at("e1", 2), "offsets survive an empty history");
    }

    #[test]
    fn history_policy_by_kind_and_longest_topic_prefix() {
        let short = HistoryLimits { max_len: 5, max_age_millis: 1_000 };
        let policy = HistoryPolicy {
            role: None,
            topic_prefixes: vec![("chat:".to_owned(), None), ("chat:vip:".to_owned(), Some(short))],
            ..HistoryPolicy::default()
        };
        let limits = |raw: &str| {
            policy.limits(&StreamName::parse(raw).unwrap_or_else(|e| panic!("{raw}: {e}")))
        };
        assert_eq!(limits("broadcast"), Some(HistoryLimits::default()));
        assert_eq!(limits("user:alice"), Some(HistoryLimits::default()));
        assert_eq!(limits("role:admin"), None);
        assert_eq!(limits("topic:orders"), Some(HistoryLimits::default()));
        assert_eq!(limits("topic:chat:room-1"), None);
        assert_eq!(limits("topic:chat:vip:room-1"), Some(short));
    }
}
