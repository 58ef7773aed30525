//! [`IdleExit`]: when a server with no connection for a given time should
//! exit (`--exit-when-idle SECS`).

use std::time::{Duration, Instant};

/// Tracks how long a server has had no connection and says when that
/// passed its limit. The clock starts at creation (a server nobody ever
/// uses exits too) and again whenever the last connection ends; any
/// connection stops it.
#[derive(Clone, Copy, Debug)]
pub struct IdleExit {
    limit: Option<Duration>,
    idle_since: Option<Instant>,
}

impl IdleExit {
    /// Exit after `limit` without a connection; `None` never.
    pub fn new(limit: Option<Duration>) -> Self {
        IdleExit {
            limit,
            idle_since: Some(Instant::now()),
        }
    }

    /// Records how many connections are open at `now`; true once there
    /// were none for the whole limit.
    pub fn observe(&mut self, connections: usize, now: Instant) -> bool {
        let Some(limit) = self.limit else {
            return false;
        };
        if connections > 0 {
            self.idle_since = None;
            return false;
        }
        let since = *self.idle_since.get_or_insert(now);
        now.saturating_duration_since(since) >= limit
    }

    /// How long until the limit passes if nothing connects (for a wait's
    /// timeout); `None` with no limit or while connections are open.
    pub fn remaining(&self, now: Instant) -> Option<Duration> {
        let limit = self.limit?;
        let since = self.idle_since?;
        Some(limit.saturating_sub(now.saturating_duration_since(since)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_clock_restarts_when_the_last_connection_ends() {
        let t0 = Instant::now();
        let mut idle = IdleExit::new(Some(Duration::from_secs(10)));
        assert!(!idle.observe(0, t0 + Duration::from_secs(5)));
        assert!(!idle.observe(2, t0 + Duration::from_secs(11)));
        assert_eq!(idle.remaining(t0), None);
        assert!(!idle.observe(0, t0 + Duration::from_secs(12)));
        assert!(!idle.observe(0, t0 + Duration::from_secs(21)));
        assert!(idle.observe(0, t0 + Duration::from_secs(22)));
        assert!(!IdleExit::new(None).observe(0, t0 + Duration::from_secs(1 << 20)));
    }
}
