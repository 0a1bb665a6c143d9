//! One-line fixtures: identities, connections, connection ids and topics for tests.
//!
//! Every helper panics with the offending value when given something the domain rejects
//! (an empty user id, a role with a space): fixtures are written by test authors, not peers.

use realtime_core::{Connection, ConnectionId, Identity, Role, TopicName, UnixMillis, UserId};
use uuid::Uuid;

/// A valid [`UserId`].
///
/// # Panics
/// If `user` is not a valid user id.
#[track_caller]
pub fn user(user: &str) -> UserId {
    UserId::new(user).unwrap_or_else(|e| panic!("fixture user id {user:?}: {e}"))
}

/// A valid [`Role`].
///
/// # Panics
/// If `role` is not a valid role.
#[track_caller]
pub fn role(role: &str) -> Role {
    Role::new(role).unwrap_or_else(|e| panic!("fixture role {role:?}: {e}"))
}

/// A valid [`TopicName`].
///
/// # Panics
/// If `topic` is not a valid topic name.
#[track_caller]
pub fn topic(topic: &str) -> TopicName {
    TopicName::new(topic).unwrap_or_else(|e| panic!("fixture topic {topic:?}: {e}"))
}

/// The connection id whose UUID is the number `n` (stable, readable in failure output).
pub fn connection_id(n: u128) -> ConnectionId {
    ConnectionId::from_uuid(Uuid::from_u128(n))
}

/// A random (v4) connection id, as the shell would generate one.
pub fn fresh_connection_id() -> ConnectionId {
    ConnectionId::from_uuid(Uuid::new_v4())
}

/// An identity for `user` with `roles`, no permissions and no expiry.
///
/// # Panics
/// If `user` or one of `roles` is invalid.
#[track_caller]
pub fn identity(user_id: &str, roles: &[&str]) -> Identity {
    Identity::new(user(user_id)).with_roles(roles.iter().map(|r| role(r)))
}

/// A connection with id [`connection_id(id)`](connection_id) for `user` with `roles`, no
/// metadata, connected at time zero.
///
/// # Panics
/// If `user` or one of `roles` is invalid.
#[track_caller]
pub fn connection(id: u128, user: &str, roles: &[&str]) -> Connection {
    Connection::new(connection_id(id), &identity(user, roles), Default::default(), UnixMillis(0))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fixtures_build_what_they_say() {
        let c = connection(7, "alice", &["ops", "admin", "ops"]);
        assert_eq!(c.id, connection_id(7));
        assert_eq!(c.id.to_string(), "00000000-0000-0000-0000-000000000007");
        assert_eq!(c.user_id.as_str(), "alice");
        assert_eq!(c.roles.iter().map(Role::as_str).collect::<Vec<_>>(), ["admin", "ops"]);
        assert!(c.metadata.is_empty());
        assert_eq!(identity("bob", &[]).roles.len(), 0);
        assert_eq!(topic("chat:room-7").as_str(), "chat:room-7");
        assert_ne!(fresh_connection_id(), fresh_connection_id());
    }

    #[test]
    #[should_panic(expected = "fixture role \"bad role\"")]
    fn invalid_fixture_panics_with_the_value() {
        let _ = identity("alice", &["bad role"]);
    }
}
