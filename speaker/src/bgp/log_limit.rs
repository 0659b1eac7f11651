//! Rate limits for warnings that someone else can trigger at will (anyone who reaches port 179
//! can open connections): a few lines per period, then one line saying how many were left out.

use std::sync::Mutex;
use std::time::{Duration, Instant};

/// A budget of `burst` lines per `period`.
#[derive(Debug)]
pub struct LogLimit {
    burst: u32,
    period: Duration,
    state: Mutex<Option<Window>>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Window {
    start: Instant,
    logged: u32,
    suppressed: u64,
}

/// Whether a line may be logged now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// Log it; `suppressed` lines were left out since the last one logged.
    Log { suppressed: u64 },
    /// Leave it out (counted, and reported with the next line logged).
    Suppress,
}

impl LogLimit {
    pub const fn new(burst: u32, period: Duration) -> Self {
        Self {
            burst,
            period,
            state: Mutex::new(None),
        }
    }

    pub fn check(&self, now: Instant) -> Verdict {
        let mut state = self.state.lock().unwrap_or_else(|e| e.into_inner());
        decide(&mut state, now, self.burst, self.period)
    }
}

/// The one decision: a new window once `period` has passed since the current one began;
/// within a window, the first `burst` lines are logged and the rest counted.
fn decide(state: &mut Option<Window>, now: Instant, burst: u32, period: Duration) -> Verdict {
    let w = state.get_or_insert(Window {
        start: now,
        logged: 0,
        suppressed: 0,
    });
    if now.saturating_duration_since(w.start) >= period {
        w.start = now;
        w.logged = 0;
    }
    if w.logged < burst {
        w.logged += 1;
        let suppressed = std::mem::take(&mut w.suppressed);
        Verdict::Log { suppressed }
    } else {
        w.suppressed += 1;
        Verdict::Suppress
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_burst_per_period_then_a_count_of_what_was_left_out() {
        let limit = LogLimit::new(2, Duration::from_secs(10));
        let t0 = Instant::now();
        assert_eq!(limit.check(t0), Verdict::Log { suppressed: 0 });
        assert_eq!(limit.check(t0), Verdict::Log { suppressed: 0 });
        for _ in 0..1000 {
            assert_eq!(limit.check(t0 + Duration::from_secs(1)), Verdict::Suppress);
        }
        let later = t0 + Duration::from_secs(10);
        assert_eq!(limit.check(later), Verdict::Log { suppressed: 1000 });
        assert_eq!(limit.check(later), Verdict::Log { suppressed: 0 });
        assert_eq!(limit.check(later), Verdict::Suppress);
    }
}
