//! Timestamps of every feed format → UTC nanoseconds since the epoch.
//!
//! FIX `UTCTimestamp`s, RFC 3339 (Atom, IEX news), RFC 2822 with obsolete zone names (RSS
//! `pubDate ... EST`), Twitter's `created_at`, epoch numbers, and LEAN's "milliseconds since
//! midnight New York" (US Eastern daylight-saving rules written out, no tz database). Every
//! function returns `None`/`Err` on bad input, never panics, and refuses out-of-range values
//! instead of wrapping.

use chrono::{DateTime, Datelike, NaiveDate, NaiveDateTime, NaiveTime, Timelike, Weekday};

const NS_PER_MS: i64 = 1_000_000;
const MS_PER_DAY: i64 = 86_400_000;

/// UTC nanoseconds of a naive date-time taken as UTC.
pub(crate) fn utc_ns(date_time: NaiveDateTime) -> Option<i64> {
    date_time.and_utc().timestamp_nanos_opt()
}

fn digits(text: &str) -> Option<u32> {
    if text.is_empty() || !text.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    text.parse().ok()
}

/// `YYYYMMDD` (FIX `UTCDateOnly` / `LocalMktDate`).
pub(crate) fn fix_date(text: &str) -> Option<NaiveDate> {
    if text.len() != 8 {
        return None;
    }
    let year = digits(text.get(0..4)?)?;
    let month = digits(text.get(4..6)?)?;
    let day = digits(text.get(6..8)?)?;
    NaiveDate::from_ymd_opt(i32::try_from(year).ok()?, month, day)
}

/// `HH:MM:SS[.f{1,9}]` (FIX `UTCTimeOnly`); second 60 (a leap second) is accepted.
pub(crate) fn fix_time_of_day(text: &str) -> Option<NaiveTime> {
    let (whole, fraction) = match text.split_once('.') {
        Some((whole, fraction)) => (whole, Some(fraction)),
        None => (text, None),
    };
    let mut parts = whole.split(':');
    let hour = digits(parts.next()?).filter(|_| whole.len() == 8)?;
    let minute = digits(parts.next()?)?;
    let second = digits(parts.next()?)?;
    if parts.next().is_some() {
        return None;
    }
    let nanos = match fraction {
        None => 0,
        Some(f) if (1..=9).contains(&f.len()) => {
            let value = digits(f)?;
            let missing = u32::try_from(9 - f.len()).ok()?;
            value.checked_mul(10u32.checked_pow(missing)?)?
        }
        Some(_) => return None,
    };
    if second == 60 {
        // chrono's leap-second form: second 59 with a nanosecond past one second.
        return NaiveTime::from_hms_nano_opt(hour, minute, 59, nanos.checked_add(1_000_000_000)?);
    }
    NaiveTime::from_hms_nano_opt(hour, minute, second, nanos)
}

/// FIX `UTCTimestamp` `YYYYMMDD-HH:MM:SS[.sss[sss[sss]]]`.
pub(crate) fn fix_timestamp(text: &str) -> Option<i64> {
    let (date, time) = text.split_once('-')?;
    utc_ns(fix_date(date)?.and_time(fix_time_of_day(time)?))
}

/// RFC 3339 / ISO 8601 with an offset (`2018-10-05T19:33:39-04:00`, `...Z`).
pub(crate) fn rfc3339(text: &str) -> Option<i64> {
    DateTime::parse_from_rfc3339(text.trim())
        .ok()?
        .timestamp_nanos_opt()
}

/// RFC 2822 (`Fri, 24 Jan 2025 11:00:00 -0500`), including the obsolete zone names
/// (`UT`, `GMT`, `EST`, `EDT`, `CST`, ... `PDT`) that RSS feeds still use.
pub(crate) fn rfc2822(text: &str) -> Option<i64> {
    DateTime::parse_from_rfc2822(text.trim())
        .ok()?
        .timestamp_nanos_opt()
}

/// Twitter API v1.1 `created_at`: `Sun Jun 01 12:34:56 +0000 2014`.
pub(crate) fn twitter(text: &str) -> Option<i64> {
    DateTime::parse_from_str(text.trim(), "%a %b %d %H:%M:%S %z %Y")
        .ok()?
        .timestamp_nanos_opt()
}

/// An epoch number whose unit is told by its magnitude: seconds, milliseconds, microseconds or
/// nanoseconds (valid for instants between 1973 and 2286 in every unit).
pub(crate) fn epoch_any_unit(value: i64) -> Option<i64> {
    let magnitude = value.checked_abs()?;
    let factor = if magnitude < 100_000_000_000 {
        1_000_000_000
    } else if magnitude < 100_000_000_000_000 {
        1_000_000
    } else if magnitude < 100_000_000_000_000_000 {
        1_000
    } else {
        1
    };
    value.checked_mul(factor)
}

/// Any of the textual forms above, or a plain `YYYY-MM-DD[ T]HH:MM:SS[.f]` taken as UTC, or an
/// epoch number; for free-form columns (CSV time columns, JSON `date` fields).
pub(crate) fn any_text(text: &str) -> Option<i64> {
    let text = text.trim();
    if let Ok(value) = text.parse::<i64>() {
        return epoch_any_unit(value);
    }
    if let Some(ns) = rfc3339(text)
        .or_else(|| rfc2822(text))
        .or_else(|| twitter(text))
        .or_else(|| fix_timestamp(text))
    {
        return Some(ns);
    }
    for format in [
        "%Y-%m-%d %H:%M:%S%.f",
        "%Y-%m-%dT%H:%M:%S%.f",
        "%Y%m%d %H:%M:%S%.f",
    ] {
        if let Ok(naive) = NaiveDateTime::parse_from_str(text, format) {
            return utc_ns(naive);
        }
    }
    None
}

fn nth_sunday(year: i32, month: u32, n: u32) -> Option<NaiveDate> {
    NaiveDate::from_weekday_of_month_opt(year, month, Weekday::Sun, u8::try_from(n).ok()?)
}

fn last_sunday(year: i32, month: u32) -> Option<NaiveDate> {
    let last = NaiveDate::from_ymd_opt(year, month + 1, 1)?.pred_opt()?;
    let back = last.weekday().num_days_from_sunday();
    last.checked_sub_days(chrono::Days::new(u64::from(back)))
}

/// Whether US Eastern daylight time is in force at local wall-clock `date` + `ms_of_day`.
/// Rules since 2007: second Sunday of March 02:00 to first Sunday of November 02:00; 1987–2006
/// (and, as an approximation, earlier years): first Sunday of April to last Sunday of October.
/// The repeated hour at the end of daylight time is read as daylight time.
fn eastern_daylight(date: NaiveDate, ms_of_day: i64) -> Option<bool> {
    let year = date.year();
    let (start, end) = if year >= 2007 {
        (nth_sunday(year, 3, 2)?, nth_sunday(year, 11, 1)?)
    } else {
        (nth_sunday(year, 4, 1)?, last_sunday(year, 10)?)
    };
    let two_am = 2 * 3_600_000;
    let after_start = date > start || (date == start && ms_of_day >= two_am);
    let before_end = date < end || (date == end && ms_of_day < two_am);
    Some(after_start && before_end)
}

/// UTC nanoseconds of `ms_of_day` milliseconds after midnight New York time on `date`.
pub(crate) fn new_york_to_utc(date: NaiveDate, ms_of_day: i64) -> Option<i64> {
    if !(0..MS_PER_DAY).contains(&ms_of_day) {
        return None;
    }
    let offset_hours = if eastern_daylight(date, ms_of_day)? {
        4
    } else {
        5
    };
    let midnight = utc_ns(date.and_time(NaiveTime::MIN))?;
    let local_ms = ms_of_day.checked_add(offset_hours * 3_600_000)?;
    midnight.checked_add(local_ms.checked_mul(NS_PER_MS)?)
}

/// The New York calendar date of a UTC instant (the US trading date).
pub(crate) fn new_york_date(utc_ns_value: i64) -> Option<NaiveDate> {
    let standard = utc_ns_value.checked_sub(5 * 3_600 * 1_000_000_000)?;
    let local = DateTime::from_timestamp_nanos(standard).naive_utc();
    let ms_of_day = i64::from(local.time().num_seconds_from_midnight()) * 1_000;
    if eastern_daylight(local.date(), ms_of_day)? {
        let daylight = utc_ns_value.checked_sub(4 * 3_600 * 1_000_000_000)?;
        Some(DateTime::from_timestamp_nanos(daylight).naive_utc().date())
    } else {
        Some(local.date())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ymd(y: i32, m: u32, d: u32) -> NaiveDate {
        NaiveDate::from_ymd_opt(y, m, d).unwrap()
    }

    #[test]
    fn fix_timestamps_with_every_precision() {
        // 2004-05-21T13:27:25Z
        assert_eq!(
            fix_timestamp("20040521-13:27:25"),
            Some(1_085_146_045_000_000_000)
        );
        assert_eq!(
            fix_timestamp("20040521-13:27:25.5"),
            Some(1_085_146_045_500_000_000)
        );
        assert_eq!(
            fix_timestamp("20040521-13:27:25.123456789"),
            Some(1_085_146_045_123_456_789)
        );
        assert_eq!(
            fix_timestamp("20161231-23:59:60"),
            Some(1_483_228_800_000_000_000)
        );
        for bad in [
            "",
            "20040521",
            "20040521-13:27",
            "20041321-13:27:25",
            "20040521-25:00:00",
            "20040521-13:27:25.",
            "20040521-13:27:25.1234567890",
            "2004052-113:27:25",
            "20040521-1:27:25",
            "20040521-13:27:25:00",
            "+0040521-13:27:25",
        ] {
            assert_eq!(fix_timestamp(bad), None, "{bad}");
        }
    }

    #[test]
    fn feed_dates() {
        let est = rfc2822("Fri, 24 Jan 2025 17:08:44 EST").unwrap();
        assert_eq!(est, rfc3339("2025-01-24T22:08:44Z").unwrap());
        assert_eq!(
            rfc2822("Fri, 24 Jan 2025 11:00:00 -0500"),
            rfc3339("2025-01-24T16:00:00Z")
        );
        assert_eq!(
            rfc3339("2018-10-05T19:33:39-04:00"),
            Some(1_538_782_419_000_000_000)
        );
        assert_eq!(
            twitter("Mon Dec 14 14:41:45 +0000 2015"),
            Some(1_450_104_105_000_000_000)
        );
        assert_eq!(rfc2822("not a date"), None);
        assert_eq!(
            any_text("2015-12-14 14:41:45"),
            Some(1_450_104_105_000_000_000)
        );
        assert_eq!(any_text("1450104105666"), Some(1_450_104_105_666_000_000));
        assert_eq!(any_text("1450104105"), Some(1_450_104_105_000_000_000));
        assert_eq!(any_text("99999999999999999999"), None);
    }

    #[test]
    fn new_york_wall_clock_to_utc_across_daylight_saving() {
        // 2013-10-07 is daylight time: 09:30 EDT = 13:30 UTC.
        assert_eq!(
            new_york_to_utc(ymd(2013, 10, 7), 34_200_000),
            rfc3339("2013-10-07T13:30:00Z")
        );
        // 2015-12-24 is standard time: 09:30 EST = 14:30 UTC.
        assert_eq!(
            new_york_to_utc(ymd(2015, 12, 24), 34_200_000),
            rfc3339("2015-12-24T14:30:00Z")
        );
        // 2014-03-09 02:00 EST becomes 03:00 EDT; 2014-11-02 02:00 EDT becomes 01:00 EST.
        assert_eq!(
            new_york_to_utc(ymd(2014, 3, 9), 3_600_000),
            rfc3339("2014-03-09T06:00:00Z")
        );
        assert_eq!(
            new_york_to_utc(ymd(2014, 3, 9), 3 * 3_600_000),
            rfc3339("2014-03-09T07:00:00Z")
        );
        assert_eq!(
            new_york_to_utc(ymd(2014, 11, 2), 3 * 3_600_000),
            rfc3339("2014-11-02T08:00:00Z")
        );
        // Pre-2007 rules: 2006-10-29 was the last Sunday of October.
        assert_eq!(
            new_york_to_utc(ymd(2006, 10, 28), 43_200_000),
            rfc3339("2006-10-28T16:00:00Z")
        );
        assert_eq!(
            new_york_to_utc(ymd(2006, 10, 30), 43_200_000),
            rfc3339("2006-10-30T17:00:00Z")
        );
        assert_eq!(new_york_to_utc(ymd(2013, 10, 7), -1), None);
        assert_eq!(new_york_to_utc(ymd(2013, 10, 7), MS_PER_DAY), None);
    }

    #[test]
    fn new_york_trading_date() {
        // 2023-10-03T01:30Z is 21:30 EDT on the 2nd.
        let ns = rfc3339("2023-10-03T01:30:00Z").unwrap();
        assert_eq!(new_york_date(ns), Some(ymd(2023, 10, 2)));
        let ns = rfc3339("2023-12-03T04:30:00Z").unwrap();
        assert_eq!(new_york_date(ns), Some(ymd(2023, 12, 2)));
        assert_eq!(new_york_date(i64::MIN), None);
    }

    #[test]
    fn epoch_units() {
        assert_eq!(
            epoch_any_unit(1_538_782_419),
            Some(1_538_782_419_000_000_000)
        );
        assert_eq!(
            epoch_any_unit(1_538_782_419_000),
            Some(1_538_782_419_000_000_000)
        );
        assert_eq!(
            epoch_any_unit(1_538_782_419_000_000),
            Some(1_538_782_419_000_000_000)
        );
        assert_eq!(
            epoch_any_unit(1_538_782_419_000_000_001),
            Some(1_538_782_419_000_000_001)
        );
        assert_eq!(epoch_any_unit(i64::MIN), None);
    }
}
