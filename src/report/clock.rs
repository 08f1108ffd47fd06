//! The reporter's clock: Unix milliseconds (the outbox's unit) that also
//! move with tokio's paused time, so that retry tests need not wait.

use std::time::{Duration, SystemTime, UNIX_EPOCH};
use tokio::time::Instant;

/// Wall-clock time in Unix milliseconds, never behind tokio's clock.
///
/// `now_ms` is the later of the system clock and "the system clock when the
/// clock was made, plus tokio's elapsed time". In production both agree (and
/// a system clock stepped backwards does not move the reporter back); under
/// paused tokio time the second runs ahead, so a retry due in ten minutes is
/// due as soon as the test runtime advances ten minutes.
#[derive(Debug, Clone, Copy)]
pub struct Clock {
    wall_at_start_ms: i64,
    start: Instant,
}

impl Clock {
    /// A clock reading the system time now. Call inside the runtime whose
    /// time it should follow.
    pub fn new() -> Clock {
        Clock {
            wall_at_start_ms: system_ms(),
            start: Instant::now(),
        }
    }

    /// Now, in Unix milliseconds.
    pub fn now_ms(&self) -> i64 {
        let elapsed = i64::try_from(self.start.elapsed().as_millis()).unwrap_or(i64::MAX);
        system_ms().max(self.wall_at_start_ms.saturating_add(elapsed))
    }

    /// The tokio instant at which this clock will read `ms` (now, if past).
    pub fn instant_at(&self, ms: i64) -> Instant {
        let wait = ms.saturating_sub(self.now_ms()).max(0);
        Instant::now() + Duration::from_millis(wait as u64)
    }
}

impl Default for Clock {
    fn default() -> Self {
        Clock::new()
    }
}

fn system_ms() -> i64 {
    match SystemTime::now().duration_since(UNIX_EPOCH) {
        Ok(d) => i64::try_from(d.as_millis()).unwrap_or(i64::MAX),
        Err(_) => 0,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn paused_time_moves_the_clock() {
        let clock = Clock::new();
        let before = clock.now_ms();
        tokio::time::advance(Duration::from_secs(600)).await;
        assert!(clock.now_ms() - before >= 600_000);
    }

    #[tokio::test(start_paused = true)]
    async fn an_instant_in_the_past_is_now() {
        let clock = Clock::new();
        let at = clock.instant_at(clock.now_ms() - 5_000);
        assert!(at <= Instant::now());
        let later = clock.instant_at(clock.now_ms() + 5_000);
        assert!(later >= Instant::now() + Duration::from_millis(4_990));
    }
}
