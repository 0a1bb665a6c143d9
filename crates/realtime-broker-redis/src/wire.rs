//! Key and channel names, and the compact messages carried on pub/sub channels: pure
//! functions, encoded and parsed here only, so both sides agree.
//!
//! A stream's keys share one hash tag (`{<stream>}`), so they live in one Redis Cluster slot:
//! `<prefix>:{<stream>}:meta` (hash: `epoch`, `offset`), `<prefix>:{<stream>}:hist` (the
//! history, a Redis stream), `<prefix>:{<stream>}:idem:<key>` (an idempotency result) and
//! the pub/sub channel `<prefix>:{<stream>}:ch`.

use realtime_core::{
    ConnectionId, Epoch, Frame, IdempotencyKey, Position, StreamName, UnixMillis, UserId,
};

/// The names of one broker's keys and channels, under one prefix.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Names {
    prefix: String,
}

impl Names {
    pub(crate) fn new(prefix: &str) -> Names {
        Names { prefix: prefix.to_owned() }
    }

    /// The prefix of every key and channel.
    pub(crate) fn prefix(&self) -> &str {
        &self.prefix
    }

    /// `<prefix>:{<stream>}:meta`.
    pub(crate) fn meta(&self, stream: &StreamName) -> String {
        format!("{}:{{{stream}}}:meta", self.prefix)
    }

    /// `<prefix>:{<stream>}:hist`.
    pub(crate) fn history(&self, stream: &StreamName) -> String {
        format!("{}:{{{stream}}}:hist", self.prefix)
    }

    /// `<prefix>:{<stream>}:idem:<key>`.
    pub(crate) fn idempotency(&self, stream: &StreamName, key: &IdempotencyKey) -> String {
        format!("{}:{{{stream}}}:idem:{}", self.prefix, key.as_str())
    }

    /// `<prefix>:{<stream>}:ch`.
    pub(crate) fn channel(&self, stream: &StreamName) -> String {
        format!("{}:{{{stream}}}:ch", self.prefix)
    }

    /// `<prefix>:revoked:{<user>}`.
    pub(crate) fn revoked(&self, user: &UserId) -> String {
        format!("{}:revoked:{{{user}}}", self.prefix)
    }

    /// `<prefix>:conn`: messages to one connection, which every node subscribes to.
    pub(crate) fn connections(&self) -> String {
        format!("{}:conn", self.prefix)
    }

    /// `<prefix>:control`: revocations, which every node subscribes to.
    pub(crate) fn control(&self) -> String {
        format!("{}:control", self.prefix)
    }

    /// `<prefix>:node:<id>`: this node's own channel, on every shard (barriers, receipts and
    /// idle probes).
    pub(crate) fn node(&self, id: &str) -> String {
        format!("{}:node:{id}", self.prefix)
    }

    /// The SCAN pattern of every revocation key.
    pub(crate) fn revoked_pattern(&self) -> String {
        let mut pattern = String::with_capacity(self.prefix.len() + 10);
        for c in self.prefix.chars() {
            // Glob characters in a prefix are matched as themselves.
            if matches!(c, '*' | '?' | '[' | ']' | '\\') {
                pattern.push('\\');
            }
            pattern.push(c);
        }
        pattern.push_str(":revoked:*");
        pattern
    }

    /// The user of a revocation key, if `key` is one.
    pub(crate) fn revoked_user(&self, key: &str) -> Option<UserId> {
        let inner = key
            .strip_prefix(self.prefix.as_str())?
            .strip_prefix(":revoked:{")?
            .strip_suffix('}')?;
        UserId::new(inner).ok()
    }

    /// The stream whose channel is `channel`, if it is one of this prefix's stream channels.
    /// The stream name is everything between `<prefix>:{` and the final `}:ch`, so a name
    /// holding braces (a user id may) still comes back whole.
    pub(crate) fn stream_of(&self, channel: &str) -> Option<StreamName> {
        let inner =
            channel.strip_prefix(self.prefix.as_str())?.strip_prefix(":{")?.strip_suffix("}:ch")?;
        StreamName::parse(inner).ok()
    }
}

/// A message on a stream's channel.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum StreamMessage {
    /// A publication with its position:
    /// `p:<epoch>:<offset>:<published at, ms>:<reply>:<envelope>` (the publish script
    /// writes it).
    Positioned(Position, Frame),
    /// A frame without a position (history off, or ephemeral): `e:<reply>:<envelope>`.
    Plain(Frame),
}

/// Where a node that received a message sends its delivered count: `<node>.<token>` in a
/// message (empty: no receipt asked for).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Reply {
    pub(crate) node: String,
    pub(crate) token: u64,
}

impl Reply {
    /// The tag written into a message.
    pub(crate) fn tag(reply: Option<&Reply>) -> String {
        reply.map(|r| format!("{}.{}", r.node, r.token)).unwrap_or_default()
    }

    fn parse(tag: &str) -> Option<Option<Reply>> {
        if tag.is_empty() {
            return Some(None);
        }
        let (node, token) = tag.split_once('.')?;
        valid_node_id(node).then_some(())?;
        Some(Some(Reply { node: node.to_owned(), token: token.parse().ok()? }))
    }
}

/// A parsed stream message: the message, when Redis published it (positioned ones only) and
/// where to send the receipt.
pub(crate) type Parsed = (StreamMessage, Option<UnixMillis>, Option<Reply>);

/// `e::<frame>`, a stream message without a position or a receipt.
pub(crate) fn plain(frame: &Frame) -> String {
    format!("e::{}", frame.as_str())
}

/// Parses a stream channel's message; `None` when it is not one (a foreign publisher).
pub(crate) fn parse_stream_message(raw: &str) -> Option<Parsed> {
    if let Some(rest) = raw.strip_prefix("e:") {
        let (reply, frame) = rest.split_once(':')?;
        let reply = Reply::parse(reply)?;
        return Some((StreamMessage::Plain(Frame::from_text(frame.to_owned())), None, reply));
    }
    let rest = raw.strip_prefix("p:")?;
    let (epoch, rest) = rest.split_once(':')?;
    let (offset, rest) = rest.split_once(':')?;
    let (at, rest) = rest.split_once(':')?;
    let (reply, frame) = rest.split_once(':')?;
    let position = Position { epoch: Epoch::new(epoch).ok()?, offset: offset.parse().ok()? };
    let at = UnixMillis(at.parse().ok()?);
    let message = StreamMessage::Positioned(position, Frame::from_text(frame.to_owned()));
    Some((message, Some(at), Reply::parse(reply)?))
}

/// The idle probe on a node's own channel.
pub(crate) const PROBE: &str = "probe";

/// `b:<token>:<channel>` (or `b:<token>:` for every worker) on a node's own channel.
pub(crate) fn barrier(token: u64, channel: Option<&str>) -> String {
    format!("b:{token}:{}", channel.unwrap_or(""))
}

/// Parses a barrier: its token and channel; `None` for anything else (a probe, a receipt).
pub(crate) fn parse_barrier(raw: &str) -> Option<(u64, Option<&str>)> {
    let (token, channel) = raw.strip_prefix("b:")?.split_once(':')?;
    Some((token.parse().ok()?, (!channel.is_empty()).then_some(channel)))
}

/// `r:<token>:<delivered>` on the publishing node's own channel.
pub(crate) fn receipt(token: u64, delivered: usize) -> String {
    format!("r:{token}:{delivered}")
}

/// Parses a receipt: its token and count.
pub(crate) fn parse_receipt(raw: &str) -> Option<(u64, usize)> {
    let (token, delivered) = raw.strip_prefix("r:")?.split_once(':')?;
    Some((token.parse().ok()?, delivered.parse().ok()?))
}

/// `<connection id>:<reply>:<frame>` on the connections channel.
pub(crate) fn to_connection(id: ConnectionId, reply: Option<&Reply>, frame: &Frame) -> String {
    format!("{id}:{}:{}", Reply::tag(reply), frame.as_str())
}

/// Parses a connections channel's message.
pub(crate) fn parse_to_connection(raw: &str) -> Option<(ConnectionId, Option<Reply>, Frame)> {
    let (id, rest) = raw.split_once(':')?;
    let (reply, frame) = rest.split_once(':')?;
    Some((ConnectionId::parse(id).ok()?, Reply::parse(reply)?, Frame::from_text(frame.to_owned())))
}

/// A revocation on the control channel.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct RevocationMessage {
    /// The node that revoked (it ignores its own message).
    pub(crate) node: String,
    /// Whose tokens.
    pub(crate) user: UserId,
    /// Tokens issued before this are revoked.
    pub(crate) issued_before: UnixMillis,
    /// Until when the revocation is kept.
    pub(crate) keep_until: UnixMillis,
}

/// `r:<node>:<issued_before>:<keep_until>:<user>` (the user last: it may hold colons). A node
/// id holds no colon (see [`valid_node_id`]).
pub(crate) fn revocation(message: &RevocationMessage) -> String {
    format!(
        "r:{}:{}:{}:{}",
        message.node, message.issued_before.0, message.keep_until.0, message.user
    )
}

/// Parses a control channel's message.
pub(crate) fn parse_revocation(raw: &str) -> Option<RevocationMessage> {
    let rest = raw.strip_prefix("r:")?;
    let mut parts = rest.splitn(4, ':');
    let node = parts.next()?.to_owned();
    let issued_before = UnixMillis(parts.next()?.parse().ok()?);
    let keep_until = UnixMillis(parts.next()?.parse().ok()?);
    let user = UserId::new(parts.next()?).ok()?;
    Some(RevocationMessage { node, user, issued_before, keep_until })
}

/// Whether `id` can name a node: 1 to 64 ASCII letters, digits, `-` or `_`.
pub(crate) fn valid_node_id(id: &str) -> bool {
    !id.is_empty()
        && id.len() <= 64
        && id.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}

#[cfg(test)]
mod tests {
    use super::*;

    fn stream(raw: &str) -> StreamName {
        StreamName::parse(raw).unwrap_or_else(|e| panic!("{raw}: {e}"))
    }

    fn position(epoch: &str, offset: u64) -> Position {
        Position { epoch: Epoch::new(epoch).unwrap_or_else(|e| panic!("{e}")), offset }
    }

    #[test]
    fn keys_of_one_stream_share_a_hash_tag() {
        let names = Names::new("rt");
        let to = stream("topic:chat:room-7");
        let key = IdempotencyKey::new("k 1").unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(names.meta(&to), "rt:{topic:chat:room-7}:meta");
        assert_eq!(names.history(&to), "rt:{topic:chat:room-7}:hist");
        assert_eq!(names.idempotency(&to, &key), "rt:{topic:chat:room-7}:idem:k 1");
        assert_eq!(names.channel(&to), "rt:{topic:chat:room-7}:ch");
        let alice = UserId::new("alice").unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(names.revoked(&alice), "rt:revoked:{alice}");
        assert_eq!((names.connections(), names.control()), ("rt:conn".into(), "rt:control".into()));
    }

    #[test]
    fn a_channel_gives_back_its_stream_and_nothing_else_does() {
        let names = Names::new("rt");
        for raw in ["broadcast", "user:a}b{c", "topic:x:y", "role:ops"] {
            let to = stream(raw);
            assert_eq!(names.stream_of(&names.channel(&to)), Some(to), "{raw}");
        }
        for channel in
            ["rt:conn", "rt:control", "other:{broadcast}:ch", "rt:{broadcast}:meta", "rt:{nope}:ch"]
        {
            assert_eq!(names.stream_of(channel), None, "{channel}");
        }
    }

    #[test]
    fn stream_messages_parse_back() {
        let frame = Frame::from_text(r#"{"type":"n","payload":{"s":"a:b"}}"#.to_owned());
        let positioned = format!("p:Ep0ch:42:1700000000123:node-1.7:{}", frame.as_str());
        assert_eq!(
            parse_stream_message(&positioned),
            Some((
                StreamMessage::Positioned(position("Ep0ch", 42), frame.clone()),
                Some(UnixMillis(1_700_000_000_123)),
                Some(Reply { node: "node-1".to_owned(), token: 7 })
            ))
        );
        let unasked = format!("p:Ep0ch:42:1:{}", frame.as_str()).replacen(":1:", ":1::", 1);
        assert!(matches!(parse_stream_message(&unasked), Some((_, _, None))), "{unasked}");
        assert_eq!(
            parse_stream_message(&plain(&frame)),
            Some((StreamMessage::Plain(frame), None, None))
        );
        assert_eq!(parse_receipt(&receipt(9, 3)), Some((9, 3)));
        assert_eq!(parse_receipt("r:x:1"), None);
        for raw in [
            "",
            "x:{}",
            "p:",
            "p:bad-epoch:1:2:{}",
            "p:e:notanumber:2:{}",
            "p:e:1:{}",
            "p:e:1",
            "p:e:1:2:bad:{}",
            "e:n.x:{}",
        ] {
            assert_eq!(parse_stream_message(raw), None, "{raw}");
        }
    }

    #[test]
    fn connection_messages_parse_back() {
        let id = ConnectionId::parse("67e55044-10b1-426f-9247-bb680e5fe0c8")
            .unwrap_or_else(|e| panic!("{e}"));
        let frame = Frame::from_text(r#"{"type":"n","payload":{"s":"a:b"}}"#.to_owned());
        assert_eq!(
            parse_to_connection(&to_connection(id, None, &frame)),
            Some((id, None, frame.clone()))
        );
        let reply = Reply { node: "n".to_owned(), token: 4 };
        assert_eq!(
            parse_to_connection(&to_connection(id, Some(&reply), &frame)),
            Some((id, Some(reply), frame))
        );
        assert_eq!(parse_to_connection("not-a-uuid::{}"), None);
        assert_eq!(parse_to_connection("no colon"), None);
    }

    #[test]
    fn revocations_parse_back_with_colons_in_the_user() {
        let message = RevocationMessage {
            node: "node-1".to_owned(),
            user: UserId::new("urn:user:7").unwrap_or_else(|e| panic!("{e}")),
            issued_before: UnixMillis(2_000),
            keep_until: UnixMillis(9_000),
        };
        assert_eq!(revocation(&message), "r:node-1:2000:9000:urn:user:7");
        assert_eq!(parse_revocation(&revocation(&message)), Some(message));
        for raw in ["", "r:", "r:n:x:1:u", "r:n:1:2:", "x:n:1:2:u"] {
            assert_eq!(parse_revocation(raw), None, "{raw}");
        }
    }

    #[test]
    fn barriers_and_revocation_keys_parse_back() {
        assert_eq!(parse_barrier(&barrier(7, Some("rt:{a:b}:ch"))), Some((7, Some("rt:{a:b}:ch"))));
        assert_eq!(parse_barrier(&barrier(8, None)), Some((8, None)));
        for raw in [PROBE, "b:", "b:x:c", ""] {
            assert_eq!(parse_barrier(raw), None, "{raw}");
        }
        let names = Names::new("app.v2:rt");
        let user = UserId::new("urn:{7}").unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(names.revoked_user(&names.revoked(&user)), Some(user));
        assert_eq!(names.revoked_user("app.v2:rt:conn"), None);
        assert_eq!(names.revoked_pattern(), "app.v2:rt:revoked:*");
        assert_eq!(names.node("n1"), "app.v2:rt:node:n1");
    }

    #[test]
    fn node_ids() {
        assert!(valid_node_id("a-B_9"));
        for bad in ["", "a:b", "a b", &"x".repeat(65)] {
            assert!(!valid_node_id(bad), "{bad:?}");
        }
    }
}
