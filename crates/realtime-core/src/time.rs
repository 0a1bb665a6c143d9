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

    /// `time` (which the shell read from its clock) in milliseconds since the epoch; 0 for a
    /// time before 1970, `u64::MAX` beyond what it can hold.
    pub fn from_system_time(time: std::time::SystemTime) -> Self {
        let millis = time
            .duration_since(std::time::UNIX_EPOCH)
            .map(|since| u64::try_from(since.as_millis()).unwrap_or(u64::MAX))
            .unwrap_or(0);
        UnixMillis(millis)
    }
}

#[cfg(test)]
mod tests {
    use std::time::{Duration, UNIX_EPOCH};

    use super::UnixMillis;

    #[test]
    fn system_times_convert_and_saturate() {
        let at = |millis: u64| UNIX_EPOCH + Duration::from_millis(millis);
        assert_eq!(
            UnixMillis::from_system_time(at(1_767_225_600_123)),
            UnixMillis(1_767_225_600_123)
        );
        assert_eq!(UnixMillis::from_system_time(UNIX_EPOCH), UnixMillis(0));
        let before = UNIX_EPOCH.checked_sub(Duration::from_secs(1)).unwrap_or(UNIX_EPOCH);
        assert_eq!(UnixMillis::from_system_time(before), UnixMillis(0));
        assert_eq!(UnixMillis::from_secs(2).as_secs(), 2);
    }
}
