//! When to try a report again: exponential backoff with jitter, a host's
//! `Retry-After` as a floor, and a time after which the reporter gives up.
//!
//! Everything here is pure: the random draw comes in as a number, so the
//! schedule is tested without a runtime or a clock.

use std::time::{Duration, SystemTime};

/// The retry schedule.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Schedule {
    /// The first retry's delay, and the least any retry waits.
    pub base: Duration,
    /// The most a retry waits for backoff alone.
    pub cap: Duration,
    /// A report still failing this long after it was written is given up
    /// (the try that crosses this line is the last).
    pub give_up_after: Duration,
    /// A host's `Retry-After` (or rate limit reset) is honoured up to this;
    /// a longer one (or a date far ahead) counts as this.
    pub max_retry_after: Duration,
}

impl Default for Schedule {
    /// 2 s doubling to 10 min, for 24 h; `Retry-After` honoured up to 1 h.
    fn default() -> Self {
        Schedule {
            base: Duration::from_secs(2),
            cap: Duration::from_secs(600),
            give_up_after: Duration::from_secs(24 * 3600),
            max_retry_after: Duration::from_secs(3600),
        }
    }
}

impl Schedule {
    /// The backoff ceiling after `failures` failed sends (1 = the first):
    /// `base * 2^(failures - 1)`, at most `cap`.
    pub fn ceiling(&self, failures: u32) -> Duration {
        let doublings = failures.saturating_sub(1).min(32);
        self.base
            .checked_mul(1u32 << doublings.min(31))
            .unwrap_or(self.cap)
            .min(self.cap)
            .max(self.base)
    }

    /// How long to wait after `failures` failed sends. The backoff is drawn
    /// uniformly from `[base, ceiling]` by `unit` (in `[0, 1)`: "full jitter"
    /// with `base` as its floor, so reports failing together spread out
    /// rather than return together); a host's `retry_after` is a floor.
    pub fn delay(&self, failures: u32, retry_after: Option<Duration>, unit: f64) -> Duration {
        let ceiling = self.ceiling(failures);
        let spread = ceiling.saturating_sub(self.base);
        let backoff = self.base + spread.mul_f64(unit.clamp(0.0, 1.0));
        match retry_after {
            Some(wait) => backoff.max(wait.min(self.max_retry_after)),
            None => backoff,
        }
    }

    /// True when a report written at `created_ms` is past retrying at `now_ms`.
    pub fn gives_up(&self, created_ms: i64, now_ms: i64) -> bool {
        let limit = i64::try_from(self.give_up_after.as_millis()).unwrap_or(i64::MAX);
        now_ms.saturating_sub(created_ms) >= limit
    }

    /// `give_up_after` in words for errors: "24h", "90s".
    pub fn give_up_words(&self) -> String {
        let secs = self.give_up_after.as_secs();
        if secs >= 3600 && secs % 3600 == 0 {
            format!("{}h", secs / 3600)
        } else if secs >= 60 && secs % 60 == 0 {
            format!("{}m", secs / 60)
        } else if secs > 0 {
            format!("{secs}s")
        } else {
            format!("{}ms", self.give_up_after.as_millis())
        }
    }
}

/// Reads a `Retry-After` value: delay seconds, or an HTTP date (taken
/// relative to `now`; a date in the past means "now").
pub fn parse_retry_after(value: &str, now: SystemTime) -> Option<Duration> {
    let value = value.trim();
    if let Ok(secs) = value.parse::<u64>() {
        return Some(Duration::from_secs(secs));
    }
    let at =
        time::OffsetDateTime::parse(value, &time::format_description::well_known::Rfc2822).ok()?;
    let at = SystemTime::from(at);
    Some(at.duration_since(now).unwrap_or(Duration::ZERO))
}

/// Reads a rate limit reset given as Unix seconds (GitHub's
/// `x-ratelimit-reset`): the wait from `now` until then.
pub fn parse_reset_epoch(value: &str, now: SystemTime) -> Option<Duration> {
    let secs: u64 = value.trim().parse().ok()?;
    let at = SystemTime::UNIX_EPOCH + Duration::from_secs(secs);
    Some(at.duration_since(now).unwrap_or(Duration::ZERO))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn secs(s: u64) -> Duration {
        Duration::from_secs(s)
    }

    #[test]
    fn the_ceiling_doubles_from_two_seconds_to_ten_minutes() {
        let s = Schedule::default();
        let ceilings: Vec<u64> = (1..=11).map(|n| s.ceiling(n).as_secs()).collect();
        assert_eq!(ceilings, [2, 4, 8, 16, 32, 64, 128, 256, 512, 600, 600]);
        assert_eq!(s.ceiling(0), secs(2));
        assert_eq!(s.ceiling(u32::MAX), secs(600));
    }

    #[test]
    fn jitter_spreads_the_delay_between_base_and_the_ceiling() {
        let s = Schedule::default();
        assert_eq!(s.delay(4, None, 0.0), secs(2));
        assert_eq!(s.delay(4, None, 0.5), secs(9));
        assert!(s.delay(4, None, 0.999_999) <= secs(16));
        assert_eq!(s.delay(4, None, 7.0), secs(16));
        assert_eq!(s.delay(1, None, 0.9), secs(2));
        assert_eq!(s.delay(40, None, 0.999_999).as_secs(), 599);
    }

    #[test]
    fn retry_after_is_a_floor_and_is_capped_at_an_hour() {
        let s = Schedule::default();
        assert_eq!(s.delay(1, Some(secs(30)), 0.0), secs(30));
        assert_eq!(s.delay(3, Some(secs(2)), 1.0), secs(8));
        assert_eq!(s.delay(1, Some(secs(86_400)), 0.0), secs(3600));
    }

    #[test]
    fn reports_are_retried_for_a_full_day_then_given_up() {
        let s = Schedule::default();
        let day = 86_400_000;
        assert!(!s.gives_up(1_000, 1_000 + day - 1));
        assert!(s.gives_up(1_000, 1_000 + day));
        assert_eq!(s.give_up_words(), "24h");
        let short = Schedule {
            give_up_after: secs(90),
            ..Schedule::default()
        };
        assert_eq!(short.give_up_words(), "90s");
    }

    #[test]
    fn retry_after_reads_seconds_and_http_dates() {
        let now = SystemTime::UNIX_EPOCH + secs(1_445_412_470); // Wed, 21 Oct 2015 07:27:50 GMT
        assert_eq!(parse_retry_after("120", now), Some(secs(120)));
        assert_eq!(parse_retry_after(" 2 ", now), Some(secs(2)));
        assert_eq!(
            parse_retry_after("Wed, 21 Oct 2015 07:28:00 GMT", now),
            Some(secs(10))
        );
        assert_eq!(
            parse_retry_after("Wed, 21 Oct 2015 07:00:00 GMT", now),
            Some(Duration::ZERO)
        );
        assert_eq!(parse_retry_after("soon", now), None);
        assert_eq!(parse_retry_after("-3", now), None);
    }

    #[test]
    fn a_rate_limit_reset_is_the_wait_until_that_second() {
        let now = SystemTime::UNIX_EPOCH + secs(1_000);
        assert_eq!(parse_reset_epoch("1060", now), Some(secs(60)));
        assert_eq!(parse_reset_epoch("900", now), Some(Duration::ZERO));
        assert_eq!(parse_reset_epoch("x", now), None);
    }
}
