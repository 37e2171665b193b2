//! The simulator's controllable clock and RFC 3339 timestamp formatting.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// A point in simulated time, in nanoseconds since the Unix epoch.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Timestamp(pub u64);

impl Timestamp {
    pub fn from_unix_seconds(seconds: u64) -> Timestamp {
        Timestamp(seconds.saturating_mul(1_000_000_000))
    }

    pub fn unix_seconds(self) -> u64 {
        self.0 / 1_000_000_000
    }

    pub fn plus(self, by: Duration) -> Timestamp {
        let nanos = u64::try_from(by.as_nanos()).unwrap_or(u64::MAX);
        Timestamp(self.0.saturating_add(nanos))
    }

    /// The same instant truncated to whole seconds (network message timestamps have 1 s resolution).
    pub fn truncated_to_seconds(self) -> Timestamp {
        Timestamp::from_unix_seconds(self.unix_seconds())
    }

    /// RFC 3339 in UTC with a `Z` suffix and the fraction trimmed of trailing zeros, like Go's
    /// `time.Time` JSON encoding.
    pub fn to_rfc3339(self) -> String {
        let seconds = self.unix_seconds();
        let nanos = self.0 % 1_000_000_000;
        let days = (seconds / 86_400) as i64;
        let second_of_day = seconds % 86_400;
        let (year, month, day) = civil_from_days(days);
        let mut text = format!(
            "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}",
            second_of_day / 3600,
            (second_of_day % 3600) / 60,
            second_of_day % 60
        );
        if nanos > 0 {
            let fraction = format!("{nanos:09}");
            text.push('.');
            text.push_str(fraction.trim_end_matches('0'));
        }
        text.push('Z');
        text
    }
}

/// Howard Hinnant's days-to-civil algorithm: days since 1970-01-01 to (year, month, day).
fn civil_from_days(days: i64) -> (i64, u32, u32) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let day_of_era = z.rem_euclid(146_097);
    let year_of_era =
        (day_of_era - day_of_era / 1460 + day_of_era / 36_524 - day_of_era / 146_096) / 365;
    let day_of_year = day_of_era - (365 * year_of_era + year_of_era / 4 - year_of_era / 100);
    let month_index = (5 * day_of_year + 2) / 153;
    let day = (day_of_year - (153 * month_index + 2) / 5 + 1) as u32;
    let month = if month_index < 10 {
        month_index + 3
    } else {
        month_index - 9
    } as u32;
    let year = year_of_era + era * 400 + i64::from(month <= 2);
    (year, month, day)
}

/// Real time plus an offset that tests advance, so leases and TTLs expire without sleeping.
#[derive(Debug, Default)]
pub(super) struct SimClock {
    offset_nanos: AtomicU64,
}

impl SimClock {
    pub(super) fn now(&self) -> Timestamp {
        let real = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap_or(Duration::ZERO);
        Timestamp(u64::try_from(real.as_nanos()).unwrap_or(u64::MAX)).plus(Duration::from_nanos(
            self.offset_nanos.load(Ordering::SeqCst),
        ))
    }

    pub(super) fn advance(&self, by: Duration) {
        let nanos = u64::try_from(by.as_nanos()).unwrap_or(u64::MAX);
        self.offset_nanos.fetch_add(nanos, Ordering::SeqCst);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_epoch_formats_as_1970_with_a_z_suffix() {
        assert_eq!(Timestamp(0).to_rfc3339(), "1970-01-01T00:00:00Z");
    }

    #[test]
    fn a_known_instant_formats_like_go() {
        // 2019-08-24T14:15:22Z is the placeholder in the API reference.
        assert_eq!(
            Timestamp::from_unix_seconds(1_566_656_122).to_rfc3339(),
            "2019-08-24T14:15:22Z"
        );
    }

    #[test]
    fn fractions_are_trimmed_of_trailing_zeros() {
        let instant = Timestamp(1_566_656_122 * 1_000_000_000 + 120_000_000);
        assert_eq!(instant.to_rfc3339(), "2019-08-24T14:15:22.12Z");
        let instant = Timestamp(1_566_656_122 * 1_000_000_000 + 1);
        assert_eq!(instant.to_rfc3339(), "2019-08-24T14:15:22.000000001Z");
    }

    #[test]
    fn leap_days_and_year_ends_are_handled() {
        // 2024-02-29T23:59:59Z and 2000-12-31T00:00:00Z
        assert_eq!(
            Timestamp::from_unix_seconds(1_709_251_199).to_rfc3339(),
            "2024-02-29T23:59:59Z"
        );
        assert_eq!(
            Timestamp::from_unix_seconds(978_220_800).to_rfc3339(),
            "2000-12-31T00:00:00Z"
        );
    }

    #[test]
    fn advancing_the_clock_moves_now_forward() {
        let clock = SimClock::default();
        let before = clock.now();
        clock.advance(Duration::from_secs(3600));
        assert!(clock.now().0 >= before.0 + 3_600_000_000_000);
    }
}
