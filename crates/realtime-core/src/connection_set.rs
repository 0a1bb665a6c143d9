//! [`ConnectionSet`]: a set of connection ids that holds one id without allocating.

use std::collections::HashSet;

use crate::ConnectionId;

/// A set of connection ids, kept inline while it has one.
///
/// Most index entries (a user's connections, the connections of one user in a presence
/// scope) hold a single id: stored inline, it costs no allocation and no hash table. From the
/// second id on it is a `HashSet`, so a set of thousands (a role, a busy topic) stays O(1) per
/// insert and remove. It goes back inline when it is down to one.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ConnectionSet {
    /// Exactly one id.
    One(ConnectionId),
    /// Two ids or more (never fewer: a removal that leaves one goes back to [`One`]). Boxed,
    /// so that the set is as small as an id (every index entry has one).
    ///
    /// [`One`]: ConnectionSet::One
    Many(Box<HashSet<ConnectionId>>),
}

impl ConnectionSet {
    /// A set of one.
    pub fn new(id: ConnectionId) -> Self {
        ConnectionSet::One(id)
    }

    /// Adds `id`; false if it was there already.
    pub fn insert(&mut self, id: ConnectionId) -> bool {
        match self {
            ConnectionSet::One(only) if *only == id => false,
            ConnectionSet::One(only) => {
                *self = ConnectionSet::Many(Box::new(HashSet::from([*only, id])));
                true
            }
            ConnectionSet::Many(ids) => ids.insert(id),
        }
    }

    /// Removes `id`; `Some(empty)` when it was there (`empty`: it was the last one), `None`
    /// when it was not. An emptied set is left holding its last id: the caller drops it.
    pub fn remove(&mut self, id: &ConnectionId) -> Option<bool> {
        match self {
            ConnectionSet::One(only) => (only == id).then_some(true),
            ConnectionSet::Many(ids) => {
                if !ids.remove(id) {
                    return None;
                }
                if ids.len() == 1
                    && let Some(last) = ids.iter().next().copied()
                {
                    *self = ConnectionSet::One(last);
                }
                Some(false)
            }
        }
    }

    /// Whether `id` is in the set.
    pub fn contains(&self, id: &ConnectionId) -> bool {
        match self {
            ConnectionSet::One(only) => only == id,
            ConnectionSet::Many(ids) => ids.contains(id),
        }
    }

    /// How many ids (at least one).
    pub fn count(&self) -> usize {
        match self {
            ConnectionSet::One(_) => 1,
            ConnectionSet::Many(ids) => ids.len(),
        }
    }

    /// The ids, in no particular order.
    pub fn iter(&self) -> impl ExactSizeIterator<Item = &ConnectionId> {
        let (one, many) = match self {
            ConnectionSet::One(only) => (Some(only), None),
            ConnectionSet::Many(ids) => (None, Some(ids.iter())),
        };
        Iter { one, many }
    }
}

/// [`ConnectionSet::iter`]: one inline id or the set's iterator, with an exact length.
struct Iter<'a> {
    one: Option<&'a ConnectionId>,
    many: Option<std::collections::hash_set::Iter<'a, ConnectionId>>,
}

impl<'a> Iterator for Iter<'a> {
    type Item = &'a ConnectionId;

    fn next(&mut self) -> Option<Self::Item> {
        match &mut self.many {
            Some(ids) => ids.next(),
            None => self.one.take(),
        }
    }

    fn size_hint(&self) -> (usize, Option<usize>) {
        let len =
            self.many.as_ref().map_or(usize::from(self.one.is_some()), ExactSizeIterator::len);
        (len, Some(len))
    }
}

impl ExactSizeIterator for Iter<'_> {}

#[cfg(test)]
mod tests {
    use super::*;

    fn id(n: u128) -> ConnectionId {
        ConnectionId::from_uuid(uuid::Uuid::from_u128(n))
    }

    fn sorted(set: &ConnectionSet) -> Vec<ConnectionId> {
        let mut ids: Vec<_> = set.iter().copied().collect();
        ids.sort();
        ids
    }

    #[test]
    fn one_id_is_inline_and_two_make_a_set() {
        let mut set = ConnectionSet::new(id(1));
        assert!(matches!(set, ConnectionSet::One(_)));
        assert!(!set.insert(id(1)), "already there");
        assert!(set.insert(id(2)));
        assert!(matches!(set, ConnectionSet::Many(_)));
        assert!(set.insert(id(3)));
        assert_eq!((set.count(), set.iter().len()), (3, 3));
        assert_eq!(sorted(&set), [id(1), id(2), id(3)]);
        assert!(set.contains(&id(2)) && !set.contains(&id(4)));
    }

    #[test]
    fn removal_goes_back_inline_and_reports_the_last() {
        let mut set = ConnectionSet::new(id(1));
        set.insert(id(2));
        assert_eq!(set.remove(&id(9)), None, "not there");
        assert_eq!(set.remove(&id(1)), Some(false));
        assert_eq!(set, ConnectionSet::One(id(2)), "down to one: inline again");
        assert_eq!(set.remove(&id(1)), None, "gone already");
        assert_eq!(set.remove(&id(2)), Some(true), "the last one");
        assert_eq!(set.iter().len(), 1, "an emptied set is the caller's to drop");
    }
}
