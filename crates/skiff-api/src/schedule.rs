//! CronJob schedules: the standard five cron fields (`*/5 * * * *`, ranges, steps, names) and
//! the `@hourly`-style macros, parsed by the croner crate, evaluated in a time zone (the
//! CronJob's `timeZone`, from the system's tz database through jiff; UTC when unset).
//!
//! croner works on chrono date-times; a zone's wall-clock time is handed to it as if it were
//! UTC, and the answer turned back into an instant in the zone (so `0 2 * * *` in
//! `Europe/Berlin` is 02:00 Berlin time, summer or winter).
use std::str::FromStr;

use croner::Cron;
use jiff::civil::DateTime;
use jiff::tz::TimeZone;
use jiff::Timestamp;

/// A parsed schedule.
#[derive(Debug, Clone)]
pub struct Schedule(Cron);

impl Schedule {
    /// Parses `text`; the error says what is wrong, for a 422.
    pub fn parse(text: &str) -> Result<Schedule, String> {
        let trimmed = text.trim();
        if trimmed.starts_with("TZ=") || trimmed.starts_with("CRON_TZ=") {
            return Err("cannot use TZ or CRON_TZ in schedule, use timeZone field instead".into());
        }
        if trimmed.split_whitespace().count() > 5 {
            return Err("expected exactly 5 fields, found more".into());
        }
        Cron::from_str(trimmed)
            .map(Schedule)
            .map_err(|e| e.to_string())
    }

    /// The first time after `after` that the schedule fires, in `zone`.
    pub fn next_after(&self, after: Timestamp, zone: &TimeZone) -> Option<Timestamp> {
        let mut from = after;
        // A wall-clock time that repeats (the hour after a DST change) may map to an instant
        // not after `after`: look again from the next minute.
        for _ in 0..3 {
            let wall = zone.to_datetime(from);
            let naive = chrono::NaiveDate::from_ymd_opt(
                i32::from(wall.year()),
                wall.month() as u32,
                wall.day() as u32,
            )?
            .and_hms_opt(
                wall.hour() as u32,
                wall.minute() as u32,
                wall.second() as u32,
            )?
            .and_utc();
            let next = self.0.find_next_occurrence(&naive, false).ok()?;
            let civil = DateTime::new(
                i16::try_from(chrono::Datelike::year(&next)).ok()?,
                chrono::Datelike::month(&next) as i8,
                chrono::Datelike::day(&next) as i8,
                chrono::Timelike::hour(&next) as i8,
                chrono::Timelike::minute(&next) as i8,
                0,
                0,
            )
            .ok()?;
            let at = zone.to_ambiguous_timestamp(civil).compatible().ok()?;
            if at > after {
                return Some(at);
            }
            from = at + jiff::SignedDuration::from_mins(1);
        }
        None
    }
}

/// The time zone called `name` (`None`: UTC), or why not.
pub fn zone(name: Option<&str>) -> Result<TimeZone, String> {
    match name.filter(|n| !n.is_empty()) {
        None => Ok(TimeZone::UTC),
        Some(name) => TimeZone::get(name).map_err(|_| format!("unknown time zone {name}")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(text: &str) -> Timestamp {
        text.parse().expect("timestamp")
    }

    #[test]
    fn schedules_fire_when_cron_says_in_their_zone() {
        let every5 = Schedule::parse("*/5 * * * *").expect("parse");
        assert_eq!(
            every5.next_after(at("2026-12-04T12:01:30Z"), &TimeZone::UTC),
            Some(at("2026-12-04T12:05:00Z"))
        );
        let hourly = Schedule::parse("@hourly").expect("parse");
        assert_eq!(
            hourly.next_after(at("2026-12-04T12:00:00Z"), &TimeZone::UTC),
            Some(at("2026-12-04T13:00:00Z"))
        );
        // 02:00 in Berlin is 01:00 UTC in winter.
        let berlin = zone(Some("Europe/Berlin")).expect("zone");
        let nightly = Schedule::parse("0 2 * * *").expect("parse");
        assert_eq!(
            nightly.next_after(at("2026-12-04T12:00:00Z"), &berlin),
            Some(at("2026-12-05T01:00:00Z"))
        );
        assert!(Schedule::parse("61 * * * *").is_err());
        assert!(Schedule::parse("* * * *").is_err());
        assert!(Schedule::parse("0 * * * * *").is_err());
        assert!(Schedule::parse("TZ=UTC * * * * *").is_err());
        assert!(zone(Some("Mars/Base")).is_err());
    }
}
