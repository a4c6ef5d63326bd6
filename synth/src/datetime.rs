//! Dates and timestamps: the `datetime` kind.
//!
//! A datetime column is read from ISO 8601 text in one of [`PATTERNS`] (a date, a date and
//! time with or without seconds, `T` or a space between them, naive, `Z` or a `±hh:mm`
//! offset, fractional seconds dropped). Inside fedsynth it is three columns of the schema:
//! - the column itself: the **day**, a whole number of days since 1970-01-01 (UTC for
//!   timestamps with a zone, the wall clock for naive ones), with DP range and bins like a
//!   number (its range from a histogram over calendar years, see
//!   [`crate::stats`]);
//! - `NAME#hour`: the **hour of the day** (0–23), an integer column with public bounds and a
//!   bin per hour, so that daily rhythms keep their exact hours; with `NAME#minute` (minute
//!   of the hour, 0–59) or `NAME#second` (second of the hour, 0–3,599) where the values are
//!   that fine; absent for dates and for timestamps that are all at midnight;
//! - `NAME#weekday`: the **day of the week** (`Mon` … `Sun`, a public category set), so a
//!   weekly rhythm survives bins that span weeks: decoding moves the day by at most three
//!   to the nearest one with the generated weekday (when that stays within the column's
//!   range).
//!
//! The pattern and the unit are chosen by the DP release that decides the column's kind
//! ([`crate::stats::private_kinds`]): every cell is counted in one bucket per pattern and
//! unit. The output writes each value in the input's pattern; a `±hh:mm` offset is written
//! as `+00:00` (the same instant in UTC: polars reads both as a UTC datetime).

use chrono::{DateTime, Datelike, NaiveDate, NaiveDateTime};

use crate::table::{ColumnData, Table};

/// The text patterns a datetime column may have (chrono `strftime` syntax), most specific
/// first. A `%.f` accepts and drops fractional seconds.
pub const PATTERNS: [&str; 8] = [
    "%Y-%m-%dT%H:%M:%S%.fZ",
    "%Y-%m-%dT%H:%M:%S%.f%:z",
    "%Y-%m-%d %H:%M:%S%.f%:z",
    "%Y-%m-%dT%H:%M:%S%.f",
    "%Y-%m-%d %H:%M:%S%.f",
    "%Y-%m-%dT%H:%M",
    "%Y-%m-%d %H:%M",
    "%Y-%m-%d",
];

/// How the pattern carries a zone.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Zone {
    /// No zone: a wall clock.
    Naive,
    /// A literal `Z`.
    Utc,
    /// A numeric offset (`+02:00`, `+0200`), written back as `+00:00`.
    Offset,
}

fn zone(pattern: usize) -> Zone {
    match pattern {
        0 => Zone::Utc,
        1 | 2 => Zone::Offset,
        _ => Zone::Naive,
    }
}

/// Whether the pattern is a date without a time.
pub fn is_date(pattern: usize) -> bool {
    pattern == 7
}

/// The finest time unit of a value: the coarsest unit it is a whole multiple of.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Grain {
    /// Midnight.
    Day,
    /// A whole hour.
    Hour,
    /// A whole minute.
    Minute,
    /// Anything else (whole seconds; fractions are dropped).
    Second,
}

/// The grains, coarse to fine.
pub const GRAINS: [Grain; 4] = [Grain::Day, Grain::Hour, Grain::Minute, Grain::Second];

impl Grain {
    /// The grain of a number of seconds since the epoch.
    pub fn of(seconds: i64) -> Self {
        let s = seconds.rem_euclid(86_400);
        if s == 0 {
            Self::Day
        } else if s % 3_600 == 0 {
            Self::Hour
        } else if s % 60 == 0 {
            Self::Minute
        } else {
            Self::Second
        }
    }

    /// The time-of-day parts this grain needs (none for a column whose values are all at
    /// midnight).
    pub fn parts(self) -> &'static [Part] {
        match self {
            Self::Day => &[],
            Self::Hour => &[Part::Hour],
            Self::Minute => &[Part::Hour, Part::Minute],
            Self::Second => &[Part::Hour, Part::Second],
        }
    }
}

/// Parses one cell: the first pattern that reads all of it, and the value as seconds since
/// 1970-01-01 (UTC for a zoned value, the wall clock for a naive one).
pub fn parse(cell: &str) -> Option<(usize, i64)> {
    let s = cell.trim();
    // Cheap rejection first: every pattern starts with a year and a dash.
    let b = s.as_bytes();
    if b.len() < 10 || !b[..4].iter().all(u8::is_ascii_digit) || b[4] != b'-' {
        return None;
    }
    for (p, pattern) in PATTERNS.iter().enumerate() {
        let seconds = match zone(p) {
            Zone::Offset => DateTime::parse_from_str(s, pattern)
                .ok()
                .map(|t| t.timestamp()),
            Zone::Utc | Zone::Naive if is_date(p) => NaiveDate::parse_from_str(s, pattern)
                .ok()
                .and_then(|d| d.and_hms_opt(0, 0, 0))
                .map(|t| t.and_utc().timestamp()),
            Zone::Utc | Zone::Naive => NaiveDateTime::parse_from_str(s, pattern)
                .ok()
                .map(|t| t.and_utc().timestamp()),
        };
        if let Some(seconds) = seconds {
            return Some((p, seconds));
        }
    }
    None
}

/// Seconds since the epoch of any cell in a supported pattern.
pub fn seconds(cell: &str) -> Option<i64> {
    parse(cell).map(|(_, s)| s)
}

/// The pattern written for `pattern` at `grain`: the input's own, without the fraction.
pub fn output_pattern(pattern: &str) -> String {
    pattern.replace("%.f", "")
}

/// Formats seconds since the epoch in `pattern` (an offset as UTC).
pub fn format(seconds: i64, pattern: &str) -> Option<String> {
    let t = DateTime::from_timestamp(seconds, 0)?;
    Some(
        t.naive_utc()
            .format(&output_pattern(pattern).replace("%:z", "+00:00"))
            .to_string(),
    )
}

/// Whether `pattern` is one fedsynth reads and writes.
pub fn known(pattern: &str) -> bool {
    PATTERNS.contains(&pattern)
}

/// Days since 1970-01-01 of a time in seconds.
pub fn day(seconds: i64) -> i64 {
    seconds.div_euclid(86_400)
}

/// The calendar year of a day number (clamped to chrono's range).
pub fn year(day: i64) -> i32 {
    DateTime::from_timestamp(day.saturating_mul(86_400), 0)
        .map_or(if day < 0 { -262_000 } else { 262_000 }, |t| t.year())
}

/// The day number of 1 January of `year`.
pub fn first_day(year: i32) -> i64 {
    NaiveDate::from_ymd_opt(year, 1, 1)
        .map(|d| d.and_time(chrono::NaiveTime::MIN).and_utc().timestamp())
        .map_or(0, day)
}

/// Names of the days of the week, Monday first: the public category set of `NAME#weekday`.
pub const WEEKDAYS: [&str; 7] = ["Mon", "Tue", "Wed", "Thu", "Fri", "Sat", "Sun"];

/// The weekday (0 = Monday) of a day number (1970-01-01 was a Thursday).
pub fn weekday(day: i64) -> usize {
    (day + 3).rem_euclid(7) as usize
}

/// The separator of a datetime column's derived parts: `NAME#hour`, `NAME#weekday`.
pub const PART_SEP: char = '#';

/// A derived part of a datetime column.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Part {
    /// Hour of the day, 0–23.
    Hour,
    /// Minute of the hour, 0–59.
    Minute,
    /// Second of the hour, 0–3,599.
    Second,
    /// Day of the week.
    Weekday,
}

impl Part {
    /// The part's name suffix.
    pub fn suffix(self) -> &'static str {
        match self {
            Self::Hour => "hour",
            Self::Minute => "minute",
            Self::Second => "second",
            Self::Weekday => "weekday",
        }
    }

    /// The part's value for a time in seconds.
    pub fn value(self, seconds: i64) -> ColumnValue {
        match self {
            Self::Hour => ColumnValue::Int(seconds.rem_euclid(86_400) / 3_600),
            Self::Minute => ColumnValue::Int(seconds.rem_euclid(3_600) / 60),
            Self::Second => ColumnValue::Int(seconds.rem_euclid(3_600)),
            Self::Weekday => ColumnValue::Text(WEEKDAYS[weekday(day(seconds))]),
        }
    }

    /// A time-of-day part's values run over 0..count, and each is worth this many seconds:
    /// (count, seconds); `None` for the weekday.
    pub fn clock(self) -> Option<(i64, i64)> {
        match self {
            Self::Hour => Some((24, 3_600)),
            Self::Minute => Some((60, 60)),
            Self::Second => Some((3_600, 1)),
            Self::Weekday => None,
        }
    }
}

/// A part's value.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ColumnValue {
    /// A whole number.
    Int(i64),
    /// A category.
    Text(&'static str),
}

/// The datetime column and part that `name` denotes, if it is a part's name.
pub fn part_of(name: &str) -> Option<(&str, Part)> {
    let (base, suffix) = name.rsplit_once(PART_SEP)?;
    let part = match suffix {
        "hour" => Part::Hour,
        "minute" => Part::Minute,
        "second" => Part::Second,
        "weekday" => Part::Weekday,
        _ => return None,
    };
    (!base.is_empty()).then_some((base, part))
}

/// The name of `base`'s `part`.
pub fn part_name(base: &str, part: Part) -> String {
    format!("{base}{PART_SEP}{}", part.suffix())
}

/// How decoding puts a datetime column back together.
#[derive(Debug, Clone, PartialEq)]
pub struct Join {
    /// The column (its day number in a decoded table).
    pub base: String,
    /// The pattern to write.
    pub pattern: String,
    /// The time-of-day parts.
    pub clock: Vec<(String, Part)>,
    /// The weekday part.
    pub weekday: Option<String>,
    /// The day range (inclusive) a weekday may move a day within.
    pub days: (i64, i64),
}

/// A decoded table with each datetime column's day and parts joined into its text, the parts
/// removed: what is written out.
pub fn join(table: Table, joins: &[Join]) -> Table {
    if joins.is_empty() {
        return table;
    }
    let Table { names, columns } = table;
    let index = |name: &str| names.iter().position(|n| n == name);
    let mut out: Vec<Option<ColumnData>> = columns.into_iter().map(Some).collect();
    let mut drop = vec![false; names.len()];
    for j in joins {
        let Some(b) = index(&j.base) else { continue };
        let clock: Vec<(usize, Part)> = j
            .clock
            .iter()
            .filter_map(|(n, p)| Some((index(n)?, *p)))
            .collect();
        let wd = j.weekday.as_deref().and_then(index);
        let ints = |c: Option<&ColumnData>, r: usize| match c {
            Some(ColumnData::Int(v)) => v[r],
            _ => None,
        };
        let (days, wd_col) = (out[b].clone(), wd.and_then(|i| out[i].clone()));
        let clock_cols: Vec<(Option<ColumnData>, Part)> =
            clock.iter().map(|&(i, p)| (out[i].clone(), p)).collect();
        let rows = days.as_ref().map_or(0, ColumnData::len);
        let text: Vec<Option<String>> = (0..rows)
            .map(|r| {
                let mut d = ints(days.as_ref(), r)?;
                if let Some(ColumnData::Text(w)) = &wd_col
                    && let Some(want) = w[r]
                        .as_deref()
                        .and_then(|s| WEEKDAYS.iter().position(|x| *x == s))
                {
                    // The nearest day with the generated weekday, within the range.
                    let shift = (want as i64 - weekday(d) as i64 + 10).rem_euclid(7) - 3;
                    if (j.days.0..=j.days.1).contains(&(d + shift)) {
                        d += shift;
                    }
                }
                let secs: i64 = clock_cols
                    .iter()
                    .filter_map(|(col, p)| {
                        let (count, unit) = p.clock()?;
                        Some(ints(col.as_ref(), r).map_or(0, |v| v.clamp(0, count - 1) * unit))
                    })
                    .sum();
                format(d.saturating_mul(86_400).saturating_add(secs), &j.pattern)
            })
            .collect();
        out[b] = Some(ColumnData::Text(text));
        for i in clock.iter().map(|&(i, _)| i).chain(wd) {
            drop[i] = true;
        }
    }
    let (names, columns) = names
        .into_iter()
        .zip(out)
        .zip(drop)
        .filter(|(_, d)| !d)
        .filter_map(|((n, c), _)| Some((n, c?)))
        .unzip();
    Table { names, columns }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn every_pattern_parses_and_writes_back_its_own_text() {
        for (text, p, grain) in [
            ("2013-01-01T10:00:00Z", 0, Grain::Hour),
            ("2013-01-01T10:30:00+02:00", 1, Grain::Minute),
            ("2013-01-01 10:30:05-05:00", 2, Grain::Second),
            ("2013-06-30T23:59:59", 3, Grain::Second),
            ("2013-06-30 00:00:00", 4, Grain::Day),
            ("2013-06-30T07:15", 5, Grain::Minute),
            ("2013-06-30 07:00", 6, Grain::Hour),
            ("1969-12-31", 7, Grain::Day),
            ("2013-01-01T10:00:00+0000", 1, Grain::Hour),
        ] {
            let (pattern, secs) = parse(text).unwrap_or_else(|| panic!("{text}"));
            assert_eq!(pattern, p, "{text}");
            assert_eq!(Grain::of(secs), grain, "{text}");
            let written = format(secs, PATTERNS[p]).unwrap();
            if zone(p) == Zone::Offset {
                // The same instant, in UTC.
                assert_eq!(seconds(&written), Some(secs), "{text} → {written}");
            } else {
                assert_eq!(written, text);
            }
        }
        assert_eq!(seconds("1970-01-02"), Some(86_400));
        assert_eq!(
            seconds("2013-01-01T10:00:00.250Z"),
            seconds("2013-01-01T10:00:00Z")
        );
        for bad in [
            "",
            "2013",
            "2013-13-01",
            "2013-02-30",
            "10:00",
            "x2013-01-01",
            "2013-01-01T25:00",
        ] {
            assert_eq!(parse(bad), None, "{bad}");
        }
    }

    #[test]
    fn weekdays_and_days_follow_the_calendar() {
        assert_eq!(WEEKDAYS[weekday(0)], "Thu");
        assert_eq!(
            WEEKDAYS[weekday(day(seconds("2026-12-02").unwrap()))],
            "Wed"
        );
        assert_eq!(WEEKDAYS[weekday(-1)], "Wed");
        assert_eq!(year(first_day(2013)), 2013);
        assert_eq!(year(first_day(2013) - 1), 2012);
        assert_eq!(first_day(1970), 0);
        assert_eq!(part_of("t#hour"), Some(("t", Part::Hour)));
        assert_eq!(part_of("a#b#weekday"), Some(("a#b", Part::Weekday)));
        assert_eq!(part_of("t#day"), None);
        assert_eq!(part_of("#hour"), None);
    }

    #[test]
    fn a_join_writes_the_pattern_with_the_clock_and_the_weekday() {
        let d = day(seconds("2013-01-01").unwrap()); // a Tuesday
        let table = Table {
            names: vec![
                "x".into(),
                "t".into(),
                "t#hour".into(),
                "t#minute".into(),
                "t#weekday".into(),
            ],
            columns: vec![
                ColumnData::Int(vec![Some(1), Some(2), Some(3)]),
                ColumnData::Int(vec![Some(d), Some(d), None]),
                ColumnData::Int(vec![Some(10), Some(23), Some(4)]),
                ColumnData::Int(vec![Some(5), None, Some(4)]),
                ColumnData::Text(vec![Some("Tue".into()), Some("Fri".into()), None]),
            ],
        };
        let joined = join(
            table,
            &[Join {
                base: "t".into(),
                pattern: PATTERNS[0].into(),
                clock: vec![
                    ("t#hour".into(), Part::Hour),
                    ("t#minute".into(), Part::Minute),
                ],
                weekday: Some("t#weekday".into()),
                days: (d - 10, d + 10),
            }],
        );
        assert_eq!(joined.names, vec!["x", "t"]);
        assert_eq!(
            joined.columns[1],
            ColumnData::Text(vec![
                Some("2013-01-01T10:05:00Z".into()),
                Some("2013-01-04T23:00:00Z".into()),
                None
            ])
        );
    }
}
