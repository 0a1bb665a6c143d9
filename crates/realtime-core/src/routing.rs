//! The routing rules as pure functions: the reference model for every registry.

use std::collections::BTreeSet;

use crate::connection::Connection;
use crate::envelope::Target;
use crate::ids::{ConnectionId, TopicName};
use crate::stream::StreamName;

/// The ids of the connections among `connections` that a message for `target` reaches, in
/// the order given. This is the record's `route-message`; registries index the same rule
/// and are tested against this function. A [`Target::Topic`] selects nothing here, since a
/// [`Connection`] does not hold its subscriptions: [`route_stream`] is the rule for topics.
pub fn route<'a>(
    target: &Target,
    connections: impl IntoIterator<Item = &'a Connection>,
) -> Vec<ConnectionId> {
    connections
        .into_iter()
        .filter(|c| match target {
            Target::Broadcast => true,
            Target::User(user) => &c.user_id == user,
            Target::Role(role) => c.has_role(role),
            Target::Connection(id) => &c.id == id,
            // A topic's members are its subscribers, which a `Connection` does not hold.
            Target::Topic(_) => false,
        })
        .map(|c| c.id)
        .collect()
}

/// The ids of the connections among `connections` that are in `stream`, in the order given.
/// Each connection comes with the topics it is subscribed to: it is in its user's stream,
/// in each of its roles' streams, in the broadcast stream, and in each of its topics'
/// streams. Registries index the same rule and are tested against this function.
pub fn route_stream<'a>(
    stream: &StreamName,
    connections: impl IntoIterator<Item = (&'a Connection, &'a BTreeSet<TopicName>)>,
) -> Vec<ConnectionId> {
    connections
        .into_iter()
        .filter(|(c, topics)| match stream {
            StreamName::Broadcast => true,
            StreamName::User(user) => &c.user_id == user,
            StreamName::Role(role) => c.has_role(role),
            StreamName::Topic(topic) => topics.contains(topic),
        })
        .map(|(c, _)| c.id)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{Identity, Role, UnixMillis, UserId};
    use uuid::Uuid;

    fn conn(n: u128, user: &str, roles: &[&str]) -> Connection {
        let identity = Identity::new(UserId::new(user).unwrap_or_else(|e| panic!("{e}")))
            .with_roles(roles.iter().map(|r| Role::new(r).unwrap_or_else(|e| panic!("{e}"))));
        Connection::new(
            ConnectionId::from_uuid(Uuid::from_u128(n)),
            &identity,
            Default::default(),
            UnixMillis(0),
        )
    }

    #[test]
    fn routes_by_target() {
        let conns = [
            conn(1, "alice", &["admin"]),
            conn(2, "alice", &[]),
            conn(3, "bob", &["admin", "ops"]),
        ];
        let ids = |ns: &[u128]| {
            ns.iter().map(|n| ConnectionId::from_uuid(Uuid::from_u128(*n))).collect::<Vec<_>>()
        };
        let user = |u: &str| Target::User(UserId::new(u).unwrap_or_else(|e| panic!("{e}")));
        let role = |r: &str| Target::Role(Role::new(r).unwrap_or_else(|e| panic!("{e}")));
        assert_eq!(route(&Target::Broadcast, &conns), ids(&[1, 2, 3]));
        assert_eq!(route(&user("alice"), &conns), ids(&[1, 2]));
        assert_eq!(route(&user("carol"), &conns), ids(&[]));
        assert_eq!(route(&role("admin"), &conns), ids(&[1, 3]));
        assert_eq!(route(&role("ops"), &conns), ids(&[3]));
        assert_eq!(
            route(&Target::Connection(ConnectionId::from_uuid(Uuid::from_u128(2))), &conns),
            ids(&[2])
        );
        assert_eq!(
            route(&Target::Connection(ConnectionId::from_uuid(Uuid::from_u128(9))), &conns),
            ids(&[])
        );
    }

    #[test]
    fn routes_by_stream() {
        let topics = |ts: &[&str]| -> BTreeSet<TopicName> {
            ts.iter().map(|t| TopicName::new(*t).unwrap_or_else(|e| panic!("{e}"))).collect()
        };
        let conns = [
            (conn(1, "alice", &["admin"]), topics(&["orders", "chat:room-7"])),
            (conn(2, "alice", &[]), topics(&[])),
            (conn(3, "bob", &["admin", "ops"]), topics(&["orders"])),
        ];
        let pairs = || conns.iter().map(|(c, t)| (c, t));
        let ids = |ns: &[u128]| {
            ns.iter().map(|n| ConnectionId::from_uuid(Uuid::from_u128(*n))).collect::<Vec<_>>()
        };
        let stream = |raw: &str| StreamName::parse(raw).unwrap_or_else(|e| panic!("{e}"));
        #[rustfmt::skip]
        let cases: &[(&str, &[u128])] = &[
            ("broadcast", &[1, 2, 3]),
            ("user:alice", &[1, 2]),
            ("user:carol", &[]),
            ("role:admin", &[1, 3]),
            ("role:ops", &[3]),
            ("topic:orders", &[1, 3]),
            ("topic:chat:room-7", &[1]),
            ("topic:chat", &[]),
            // A role and a topic of the same name are different streams.
            ("topic:admin", &[]),
        ];
        for (raw, want) in cases {
            assert_eq!(route_stream(&stream(raw), pairs()), ids(want), "{raw}");
        }
        // The same rule as `route` for the streams both know.
        for (raw, target) in [
            ("broadcast", Target::Broadcast),
            ("user:alice", Target::User(UserId::new("alice").unwrap_or_else(|e| panic!("{e}")))),
            ("role:ops", Target::Role(Role::new("ops").unwrap_or_else(|e| panic!("{e}")))),
        ] {
            let plain = conns.iter().map(|(c, _)| c);
            assert_eq!(route_stream(&stream(raw), pairs()), route(&target, plain), "{raw}");
        }
    }
}
