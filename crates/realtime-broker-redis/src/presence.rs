//! [`RedisPresence`]: who is online and in each topic across every node sharing one Redis
//! (with several shards, the first: presence is not sharded).
//!
//! - Each node keeps its own connections in a [`PresenceBook`] (so `join` and `leave` answer
//!   "first" and "last" at once, without awaiting) and mirrors it into Redis: one sorted set
//!   per user (`<prefix>:presence:user:{<user>}`, connection ids), one per topic
//!   (`<prefix>:presence:topic:{<topic>}`, `<connection>:<user>`) and one of every online
//!   connection (`<prefix>:presence:all`), each member scored with its expiry.
//! - A heartbeat re-adds every local member every third of the TTL, so a crashed node's
//!   members disappear within the TTL; reads drop expired members first.
//! - Writes go through one queue, in the order `join` and `leave` were called; a query first
//!   waits until the writes queued before it are applied, so it reflects them.
//! - "First" and "last" are this node's: a user with tabs on two nodes gets a join event
//!   from each (events are at most once per node, documented in docs/scaling.md).

use std::collections::BTreeMap;
use std::time::Duration;

use async_trait::async_trait;
use parking_lot::Mutex;
use realtime_core::{ConnectionId, PresenceBook, TopicName, UserId};
use realtime_ports::{Presence, PresenceError, PresenceScope, TopicMember, UserPresence};
use redis::Script;
use redis::aio::ConnectionManager;
use tokio::sync::{mpsc, oneshot};
use tokio::task::AbortHandle;

use crate::wire::Names;

/// Writes per script call.
const BATCH: usize = 256;

/// Applies a batch of presence writes with one clock (Redis `TIME`).
///
/// KEYS: the sets. ARGV: 1 the TTL (ms), then per key an operation (`+` add, `-` remove)
/// and a member. Returns the number of writes.
const APPLY: &str = r"
local time = redis.call('TIME')
local now = tonumber(time[1]) * 1000 + math.floor(tonumber(time[2]) / 1000)
local ttl = tonumber(ARGV[1])
for i, key in ipairs(KEYS) do
  local member = ARGV[2 * i + 1]
  if ARGV[2 * i] == '+' then
    redis.call('ZADD', key, string.format('%d', now + ttl), member)
    redis.call('PEXPIRE', key, string.format('%d', ttl * 2))
  else
    redis.call('ZREM', key, member)
  end
end
return #KEYS
";

/// Reads one set without its expired members.
///
/// KEYS: 1 the set. ARGV: 1 `members` or `count`.
const READ: &str = r"
local time = redis.call('TIME')
local now = tonumber(time[1]) * 1000 + math.floor(tonumber(time[2]) / 1000)
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', string.format('%d', now))
if ARGV[1] == 'count' then return redis.call('ZCARD', KEYS[1]) end
return redis.call('ZRANGE', KEYS[1], 0, -1)
";

/// One write, or a flush that answers once the writes before it are applied.
enum Op {
    Write { key: String, add: bool, member: String },
    Flush(oneshot::Sender<Result<(), String>>),
}

/// Presence of every node sharing one Redis (see the module documentation). Made by
/// [`RedisBroker::presence`](crate::RedisBroker::presence).
pub struct RedisPresence {
    /// By scope: `None` is online, `Some(topic)` a topic.
    book: Mutex<PresenceBook<Option<TopicName>>>,
    names: Names,
    writes: mpsc::UnboundedSender<Op>,
    commands: ConnectionManager,
    read: Script,
    tasks: Vec<AbortHandle>,
}

impl std::fmt::Debug for RedisPresence {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisPresence").finish_non_exhaustive()
    }
}

impl Drop for RedisPresence {
    fn drop(&mut self) {
        for task in &self.tasks {
            task.abort();
        }
    }
}

impl Names {
    fn presence_user(&self, user: &UserId) -> String {
        format!("{}:presence:user:{{{user}}}", self.prefix())
    }

    fn presence_topic(&self, topic: &TopicName) -> String {
        format!("{}:presence:topic:{{{}}}", self.prefix(), topic.as_str())
    }

    fn presence_all(&self) -> String {
        format!("{}:presence:all", self.prefix())
    }
}

/// The writes that mirror one (scope, user, connection) entry.
fn writes(
    names: &Names,
    scope: Option<&TopicName>,
    user: &UserId,
    connection: ConnectionId,
    add: bool,
) -> Vec<Op> {
    match scope {
        None => vec![
            Op::Write { key: names.presence_user(user), add, member: connection.to_string() },
            Op::Write { key: names.presence_all(), add, member: connection.to_string() },
        ],
        Some(topic) => vec![Op::Write {
            key: names.presence_topic(topic),
            add,
            member: format!("{connection}:{user}"),
        }],
    }
}

impl RedisPresence {
    /// Spawns the writer and the heartbeat on the current tokio runtime.
    pub(crate) fn start(names: Names, commands: ConnectionManager, ttl: Duration) -> RedisPresence {
        let (writes, queue) = mpsc::unbounded_channel();
        let book = Mutex::new(PresenceBook::default());
        let mut presence = RedisPresence {
            book,
            names,
            writes,
            commands: commands.clone(),
            read: Script::new(READ),
            tasks: Vec::new(),
        };
        presence.tasks.push(tokio::spawn(write(commands, queue, ttl)).abort_handle());
        presence
    }

    /// Re-adds every local member (with a fresh expiry), through the write queue so that it
    /// is ordered with joins and leaves.
    fn heartbeat(&self) {
        let book = self.book.lock();
        for (scope, user, connection) in book.entries() {
            for op in writes(&self.names, scope.as_ref(), user, connection, true) {
                let _ = self.writes.send(op);
            }
        }
    }

    /// Starts the heartbeat, every third of `ttl`, for as long as `presence` lives.
    pub(crate) fn beat(presence: &std::sync::Arc<RedisPresence>, ttl: Duration) -> AbortHandle {
        let weak = std::sync::Arc::downgrade(presence);
        tokio::spawn(async move {
            let mut every = tokio::time::interval((ttl / 3).max(Duration::from_millis(10)));
            every.tick().await;
            loop {
                every.tick().await;
                let Some(presence) = weak.upgrade() else { return };
                presence.heartbeat();
            }
        })
        .abort_handle()
    }

    fn change(&self, scope: PresenceScope<'_>, user: &UserId, id: ConnectionId, add: bool) -> bool {
        let key = match scope {
            PresenceScope::Online => None,
            PresenceScope::Topic(topic) => Some(topic.clone()),
        };
        let mut book = self.book.lock();
        let changed = if add {
            book.join(&key, user, id)
        } else {
            let before = book.connections(&key, user);
            let last = book.leave(&key, user, id);
            if !last && book.connections(&key, user) == before {
                return false;
            }
            last
        };
        // Queued under the lock: Redis sees the writes in the order of the book's changes.
        for op in writes(&self.names, key.as_ref(), user, id, add) {
            let _ = self.writes.send(op);
        }
        changed
    }

    /// Waits until every write queued so far is applied.
    async fn flush(&self) -> Result<(), PresenceError> {
        let (done, wait) = oneshot::channel();
        let _ = self.writes.send(Op::Flush(done));
        match wait.await {
            Ok(Ok(())) => Ok(()),
            Ok(Err(e)) => Err(PresenceError::Unavailable(e)),
            Err(_) => Err(PresenceError::Unavailable("redis presence stopped".to_owned())),
        }
    }

    /// After a flush, the READ script on `key` in `mode` (`members` or `count`).
    async fn read<T: redis::FromRedisValue>(
        &self,
        key: String,
        mode: &str,
    ) -> Result<T, PresenceError> {
        self.flush().await?;
        let mut invocation = self.read.key(key);
        invocation.arg(mode);
        invocation.invoke_async(&mut self.commands.clone()).await.map_err(unavailable)
    }
}

fn unavailable(error: redis::RedisError) -> PresenceError {
    PresenceError::Unavailable(format!("redis presence: {}", error.category()))
}

/// Applies the queued writes in order, in batches; answers each flush with the outcome of
/// the writes before it.
async fn write(
    mut commands: ConnectionManager,
    mut queue: mpsc::UnboundedReceiver<Op>,
    ttl: Duration,
) {
    let apply = Script::new(APPLY);
    let ttl = u64::try_from(ttl.as_millis()).unwrap_or(u64::MAX).max(1);
    let mut failed: Option<String> = None;
    while let Some(first) = queue.recv().await {
        let mut ops = vec![first];
        while ops.len() < BATCH {
            match queue.try_recv() {
                Ok(op) => ops.push(op),
                Err(_) => break,
            }
        }
        let mut invocation = apply.prepare_invoke();
        invocation.arg(ttl);
        let mut pending = 0;
        let mut flushes = Vec::new();
        for op in ops {
            match op {
                Op::Write { key, add, member } => {
                    invocation.key(key).arg(if add { "+" } else { "-" }).arg(member);
                    pending += 1;
                }
                Op::Flush(done) => flushes.push(done),
            }
        }
        if pending > 0 {
            let applied: Result<i64, redis::RedisError> =
                invocation.invoke_async(&mut commands).await;
            if let Err(error) = applied {
                tracing::warn!(category = error.category(), "redis presence: a write failed");
                failed = Some(format!("redis presence: {}", error.category()));
            }
        }
        for done in flushes {
            // A failure is reported to the next query, then forgotten (the heartbeat writes
            // every member again within a third of the TTL).
            let _ = done.send(failed.take().map_or(Ok(()), Err));
        }
    }
}

#[async_trait]
impl Presence for RedisPresence {
    fn join(&self, scope: PresenceScope<'_>, user: &UserId, connection: ConnectionId) -> bool {
        self.change(scope, user, connection, true)
    }

    fn leave(&self, scope: PresenceScope<'_>, user: &UserId, connection: ConnectionId) -> bool {
        self.change(scope, user, connection, false)
    }

    async fn user(&self, user: &UserId) -> Result<UserPresence, PresenceError> {
        let connections: usize = self.read(self.names.presence_user(user), "count").await?;
        Ok(UserPresence { user_id: user.clone(), online: connections > 0, connections })
    }

    async fn topic(&self, topic: &TopicName) -> Result<Vec<TopicMember>, PresenceError> {
        let mut counts: BTreeMap<UserId, usize> = BTreeMap::new();
        let members: Vec<String> = self.read(self.names.presence_topic(topic), "members").await?;
        for member in members {
            // `<connection id>:<user>`: the id is a hyphenated UUID (no colon).
            let Some((_, user)) = member.split_once(':') else { continue };
            let Ok(user) = UserId::new(user) else { continue };
            *counts.entry(user).or_default() += 1;
        }
        Ok(counts
            .into_iter()
            .map(|(user_id, connections)| TopicMember { user_id, connections })
            .collect())
    }

    async fn online_count(&self) -> Result<usize, PresenceError> {
        self.read(self.names.presence_all(), "count").await
    }
}
