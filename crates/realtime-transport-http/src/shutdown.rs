//! [`ShutdownHandle`]: triggers a graceful shutdown and tracks every upgraded connection so
//! that the drain can wait for them (warp's own graceful shutdown does not see them).

use std::collections::HashMap;
use std::future::Future;
use std::sync::{Arc, Weak};
use std::time::Duration;

use parking_lot::{Mutex, RwLock};
use realtime_core::ConnectionId;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::session::WsSink;
use crate::wire::SessionEnd;

/// How long connection tasks get to end once they are told to stop at once.
const FORCED_STOP_WAIT: Duration = Duration::from_secs(1);

/// Starts a graceful shutdown and tracks live connections. Cheap to clone; every clone
/// controls the same server.
#[derive(Clone, Debug, Default)]
pub struct ShutdownHandle {
    inner: Arc<Inner>,
}

#[derive(Debug, Default)]
struct Inner {
    /// Held (shared) while a handshake admits a connection and spawns its task, and
    /// (exclusively) while a shutdown starts: no connection is admitted after it began.
    admission: RwLock<()>,
    /// Cancelled when a graceful shutdown starts: connections close with 1012.
    graceful: CancellationToken,
    /// Every connection task.
    connections: Tracked,
    /// The sinks of the live WebSocket sessions: the shutdown ends each one itself, so that
    /// no session task polls a shared signal on every wake-up (each poll of a waiting
    /// `Notified` takes its lock, and one shared by every connection is contended).
    sessions: Mutex<HashMap<ConnectionId, Weak<WsSink>>>,
}

/// How a drain ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum DrainOutcome {
    /// Every connection closed within the grace period.
    Clean,
    /// Some connections were still open when the grace period ended and were dropped.
    Forced {
        /// How many connections were dropped.
        dropped: usize,
    },
}

impl ShutdownHandle {
    /// A handle for a server that is not shutting down.
    pub fn new() -> Self {
        ShutdownHandle::default()
    }

    /// Starts a graceful shutdown: no new WebSocket is admitted and every live one is closed
    /// with 1012 "server restart". Returns at once; calling it again does nothing more.
    pub fn shutdown(&self) {
        let exclusive = self.inner.admission.write();
        if self.inner.graceful.is_cancelled() {
            return;
        }
        self.inner.graceful.cancel();
        // No session is added from here on (they are added under the admission lock).
        drop(exclusive);
        for sink in self.sessions() {
            sink.end(SessionEnd::Shutdown);
        }
    }

    /// The live sessions' sinks.
    fn sessions(&self) -> Vec<Arc<WsSink>> {
        self.inner.sessions.lock().values().filter_map(Weak::upgrade).collect()
    }

    /// Runs `admit` unless a shutdown has started; a shutdown that starts meanwhile waits
    /// for it to return, so what it spawned is tracked by the drain. `admit` must not block.
    pub(crate) fn admit<R>(&self, admit: impl FnOnce() -> R) -> Option<R> {
        let _shared = self.inner.admission.read();
        (!self.inner.graceful.is_cancelled()).then(admit)
    }

    /// Whether [`shutdown`](ShutdownHandle::shutdown) was called.
    pub fn is_shutdown(&self) -> bool {
        self.inner.graceful.is_cancelled()
    }

    /// Completes when [`shutdown`](ShutdownHandle::shutdown) is called.
    pub fn requested(&self) -> impl Future<Output = ()> + Send + 'static {
        self.inner.graceful.clone().cancelled_owned()
    }

    /// How many WebSocket connections are live (upgraded or upgrading).
    pub fn live_connections(&self) -> usize {
        self.inner.connections.tracker.len()
    }

    /// Starts a graceful shutdown if none is running, waits up to `grace` for every
    /// connection to close and unregister, then drops the remaining ones (they are
    /// unregistered too) and returns.
    pub async fn drain(&self, grace: Duration) -> DrainOutcome {
        self.shutdown();
        let force = || {
            for sink in self.sessions() {
                sink.force();
            }
        };
        match self.inner.connections.close(grace, force).await {
            0 => DrainOutcome::Clean,
            dropped => DrainOutcome::Forced { dropped },
        }
    }

    pub(crate) fn graceful_token(&self) -> &CancellationToken {
        &self.inner.graceful
    }

    /// Puts connection `id`'s session on the shutdown's list: a shutdown ends it through
    /// `sink` (graceful: [`WsSink::end`], at the end of the grace period: [`WsSink::force`]).
    /// The session is taken off the list when the ticket is dropped; the session task keeps
    /// it (not a wrapper future around the task, which would hold the task's future twice).
    /// Call it under [`admit`](ShutdownHandle::admit), then [`spawn`](ShutdownHandle::spawn).
    pub(crate) fn enlist(&self, id: ConnectionId, sink: &Arc<WsSink>) -> SessionTicket {
        self.inner.sessions.lock().insert(id, Arc::downgrade(sink));
        SessionTicket { shutdown: Arc::clone(&self.inner), id }
    }

    /// Runs a connection task, tracked for the drain.
    pub(crate) fn spawn<F>(&self, task: F)
    where
        F: Future<Output = ()> + Send + 'static,
    {
        self.inner.connections.spawn(task);
    }
}

/// A session's place on the shutdown's list, given up on drop.
#[derive(Debug)]
pub(crate) struct SessionTicket {
    shutdown: Arc<Inner>,
    id: ConnectionId,
}

impl Drop for SessionTicket {
    fn drop(&mut self) {
        self.shutdown.sessions.lock().remove(&self.id);
    }
}

/// Tasks that a stopping server waits for, then stops: the WebSocket connections of a
/// [`ShutdownHandle`], the HTTP connections of the accept loop.
#[derive(Debug, Default)]
pub(crate) struct Tracked {
    tracker: TaskTracker,
    /// Cancelled when the grace period is over: the tasks drop their sockets at once.
    forced: CancellationToken,
}

impl Tracked {
    /// Runs `task`, tracked.
    pub(crate) fn spawn<F>(&self, task: F)
    where
        F: Future<Output = ()> + Send + 'static,
    {
        drop(self.tracker.spawn(task));
    }

    /// Cancelled when the tasks must stop at once; each task selects on it.
    pub(crate) fn forced(&self) -> &CancellationToken {
        &self.forced
    }

    /// Waits up to `grace` for every task to end (they were told to finish by other means),
    /// then stops the rest (the token, and `force` for those that do not select on it) and
    /// waits briefly for them. Returns how many were stopped.
    pub(crate) async fn close(&self, grace: Duration, force: impl FnOnce()) -> usize {
        self.tracker.close();
        if tokio::time::timeout(grace, self.tracker.wait()).await.is_ok() {
            return 0;
        }
        let dropped = self.tracker.len();
        self.forced.cancel();
        force();
        // Each task ends as soon as it is polled after the forced stop.
        let _ = tokio::time::timeout(FORCED_STOP_WAIT, self.tracker.wait()).await;
        dropped
    }
}
