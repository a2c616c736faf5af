//! Times as people read them: "in 59 minutes, at 14:05 UTC" (the page's
//! script then shows the clock time in the reader's time zone).

use time::OffsetDateTime;

/// `at`, seen from `now`: how far off, and the clock time in UTC (with the
/// date when it is not today's). The page's script puts the clock time in
/// the reader's own time zone.
pub(crate) fn human(at: OffsetDateTime, now: OffsetDateTime) -> String {
    let at = at.to_offset(time::UtcOffset::UTC);
    let now = now.to_offset(time::UtcOffset::UTC);
    let until = until(at, now);
    let clock = format!("{:02}:{:02} UTC", at.hour(), at.minute());
    if at.date() == now.date() {
        format!("{until}, at {clock}")
    } else {
        format!(
            "{until}, at {clock} on {} {} {}",
            at.day(),
            at.month(),
            at.year()
        )
    }
}

/// How far off `at` is from `now`: "in 29 minutes", "now".
pub(crate) fn until(at: OffsetDateTime, now: OffsetDateTime) -> String {
    let secs = (at - now).whole_seconds();
    let minutes = (secs + 30) / 60;
    let hours = (secs + 1800) / 3600;
    let days = (secs + 43_200) / 86_400;
    match secs {
        s if s <= 0 => "now".to_owned(),
        s if s < 60 => "in less than a minute".to_owned(),
        _ if minutes < 120 => plural("in", minutes, "minute"),
        _ if hours < 48 => plural("in", hours, "hour"),
        _ => plural("in", days, "day"),
    }
}

fn plural(prefix: &str, n: i64, unit: &str) -> String {
    if n == 1 {
        format!("{prefix} 1 {unit}")
    } else {
        format!("{prefix} {n} {unit}s")
    }
}

#[cfg(test)]
mod tests {
    use time::Duration;

    use super::*;

    #[test]
    fn times_read_as_people_say_them() {
        let now = OffsetDateTime::from_unix_timestamp(1_796_477_100).expect("a time"); // 2026-12-05 13:25 UTC
        assert_eq!(now.hour(), 13);
        let at = |secs: i64| human(now + Duration::seconds(secs), now);
        assert_eq!(at(-5), "now, at 13:24 UTC");
        assert_eq!(at(20), "in less than a minute, at 13:25 UTC");
        assert_eq!(at(60), "in 1 minute, at 13:26 UTC");
        assert_eq!(at(29 * 60 + 10), "in 29 minutes, at 13:54 UTC");
        assert_eq!(at(3600), "in 60 minutes, at 14:25 UTC");
        assert_eq!(at(5 * 3600), "in 5 hours, at 18:25 UTC");
        assert_eq!(
            at(14 * 86_400),
            "in 14 days, at 13:25 UTC on 19 December 2026"
        );
        assert_eq!(
            at(11 * 3600),
            "in 11 hours, at 00:25 UTC on 6 December 2026"
        );
    }
}
