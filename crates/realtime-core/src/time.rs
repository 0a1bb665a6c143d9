//! Wall-clock time as a plain value handed in by the shell.

use serde::{Deserialize, Serialize};

/// Milliseconds since the Unix epoch. The core never reads the clock: the shell passes this in.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(transparent)]
pub struct UnixMillis(pub u64);

impl UnixMillis {
    /// Whole seconds since the epoch.
    pub fn as_secs(self) -> u64 {
        self.0 / 1000
    }

    /// A time `secs` whole seconds after the epoch.
    pub fn from_secs(secs: u64) -> Self {
        UnixMillis(secs.saturating_mul(1000))
    }
}
