//! Turning a record's deadline into a memcached exptime.
//!
//! memcached reads an exptime of at most 30 days as "seconds from now" and a
//! larger one as an absolute Unix time; 0 means "never expires" and a
//! negative one "already expired". Its clock ticks in whole seconds. So:
//!
//! * a deadline up to 30 days away is sent as relative seconds, rounded up,
//!   plus [`GRACE`]; one further away as the absolute Unix time, rounded up,
//!   plus [`GRACE`] (relative where possible, because a relative time does not
//!   depend on the server's clock agreeing with ours);
//! * a deadline that has already passed is never sent at all (the store
//!   deletes instead), so it can never turn into 0, "never expires";
//! * the store enforces the exact deadline itself on load, so the grace
//!   second only keeps memcached from dropping an item early, it never keeps
//!   a session alive longer.
//!
//! [`exptime`] takes `now` so that tests need no clock.

use time::{Duration, OffsetDateTime};

/// The largest exptime memcached reads as relative seconds (30 days).
pub(crate) const MAX_RELATIVE: i64 = 30 * 24 * 60 * 60;

/// Seconds that memcached keeps an item past its deadline, covering the
/// server's one-second clock so it never expires a live session early.
pub(crate) const GRACE: i64 = 1;

/// The exptime to send for `deadline`, or `None` if it has already passed.
///
/// Absolute times are capped at `i32::MAX` (January 2038), the largest value
/// memcached parses: such an item is dropped then, before its deadline.
pub(crate) fn exptime(deadline: OffsetDateTime, now: OffsetDateTime) -> Option<i64> {
    if deadline <= now {
        return None;
    }
    let relative = ceil_seconds(deadline - now).saturating_add(GRACE);
    if relative <= MAX_RELATIVE {
        return Some(relative);
    }
    let absolute = ceil_seconds(deadline - OffsetDateTime::UNIX_EPOCH).saturating_add(GRACE);
    Some(absolute.clamp(MAX_RELATIVE + 1, i64::from(i32::MAX)))
}

fn ceil_seconds(d: Duration) -> i64 {
    let whole = d.whole_seconds();
    if d.subsec_nanoseconds() > 0 {
        whole.saturating_add(1)
    } else {
        whole
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)] // a failing unwrap is a failing test
mod tests {
    use super::*;

    fn at(unix: i64) -> OffsetDateTime {
        OffsetDateTime::from_unix_timestamp(unix).unwrap()
    }

    const NOW: i64 = 1_800_000_000;

    #[test]
    fn short_deadlines_are_relative_and_rounded_up() {
        let now = at(NOW);
        assert_eq!(exptime(now + Duration::seconds(60), now), Some(61));
        assert_eq!(exptime(now + Duration::milliseconds(1), now), Some(2));
        assert_eq!(exptime(now + Duration::milliseconds(1500), now), Some(3));
        // Two weeks, Django's default cookie age.
        assert_eq!(exptime(now + Duration::days(14), now), Some(1_209_601));
    }

    #[test]
    fn thirty_days_is_the_last_relative_value() {
        let now = at(NOW);
        let just_under = now + Duration::seconds(MAX_RELATIVE - GRACE);
        assert_eq!(exptime(just_under, now), Some(MAX_RELATIVE));
        let just_over = now + Duration::seconds(MAX_RELATIVE - GRACE + 1);
        assert_eq!(exptime(just_over, now), Some(NOW + MAX_RELATIVE + 1));
    }

    #[test]
    fn long_deadlines_are_absolute_unix_times() {
        let now = at(NOW);
        let forty_days = now + Duration::days(40);
        assert_eq!(exptime(forty_days, now), Some(NOW + 40 * 86_400 + GRACE));
        let with_millis = forty_days + Duration::milliseconds(250);
        assert_eq!(
            exptime(with_millis, now),
            Some(NOW + 40 * 86_400 + 1 + GRACE)
        );
    }

    #[test]
    fn past_deadlines_are_never_sent_and_never_zero() {
        let now = at(NOW);
        assert_eq!(exptime(now, now), None);
        assert_eq!(exptime(now - Duration::milliseconds(1), now), None);
        assert_eq!(exptime(now - Duration::days(400), now), None);
        for ms in [1, 999, 1000, 1001, 86_400_000] {
            let sent = exptime(now + Duration::milliseconds(ms), now).unwrap();
            assert!(sent > 0, "{ms} ms gave {sent}");
        }
    }

    #[test]
    fn far_future_is_capped_where_memcached_can_parse_it() {
        let now = at(NOW);
        let far = at(3_000_000_000);
        assert_eq!(exptime(far, now), Some(i64::from(i32::MAX)));
    }
}
