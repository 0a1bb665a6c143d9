//! [`ConnectionRegistry`]: where live connections are found by id, user and role.

use std::sync::Arc;

use realtime_core::{Connection, ConnectionId, Role, UserId};

use crate::sink::ConnectionSink;

/// A registered connection: the domain record and its outbound sink. Cheap to clone (two
/// reference counts).
#[derive(Clone)]
pub struct Registered {
    /// What the domain knows of the connection.
    pub connection: Arc<Connection>,
    /// Where its frames go.
    pub sink: Arc<dyn ConnectionSink>,
}

impl std::fmt::Debug for Registered {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Registered").field("connection", &self.connection).finish_non_exhaustive()
    }
}

/// Why a connection could not be registered.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum RegisterError {
    /// A connection with this id is already registered.
    #[error("connection {0} is already registered")]
    Duplicate(ConnectionId),
}

/// The set of live connections of this node, indexed for routing.
///
/// # Contract
/// (checked by `realtime_testkit::registry_contract`, which every implementation runs)
/// - Lookups return exactly the connections the pure rule `realtime_core::route` selects
///   from the registered set, each once, in no particular order.
/// - `find_by_user` and `find_by_role` cost grows with the number of matches, not with the
///   number of registered connections.
/// - After `unregister(id)` returns, no lookup returns `id`.
/// - Safe under concurrent calls from many threads; no method awaits or does I/O.
#[cfg_attr(feature = "mocks", mockall::automock)]
pub trait ConnectionRegistry: Send + Sync + 'static {
    /// Adds a connection.
    ///
    /// # Errors
    /// MUST return [`RegisterError::Duplicate`] if the id is already registered, and leave
    /// the registered connection unchanged.
    fn register(
        &self,
        connection: Connection,
        sink: Arc<dyn ConnectionSink>,
    ) -> Result<(), RegisterError>;

    /// Removes a connection from every index and returns it; `None` if it was not registered
    /// (so a second call is harmless).
    fn unregister(&self, id: ConnectionId) -> Option<Registered>;

    /// The connection with this id.
    fn get(&self, id: ConnectionId) -> Option<Registered>;

    /// Every connection of `user`.
    fn find_by_user(&self, user: &UserId) -> Vec<Registered>;

    /// Every connection holding `role`.
    fn find_by_role(&self, role: &Role) -> Vec<Registered>;

    /// Every connection.
    fn all(&self) -> Vec<Registered>;

    /// How many connections are registered.
    fn count(&self) -> usize;
}
