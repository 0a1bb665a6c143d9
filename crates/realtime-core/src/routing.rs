//! The routing rule as a pure function: the reference model for every registry.

use crate::connection::Connection;
use crate::envelope::Target;
use crate::ids::ConnectionId;

/// The ids of the connections among `connections` that a message for `target` reaches, in
/// the order given. This is the record's `route-message`; registries index the same rule
/// and are tested against this function.
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
}
