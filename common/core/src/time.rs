//! Time as the app stores it (Unix milliseconds) and shows it (RFC 3339, UTC, with
//! milliseconds).

use time::OffsetDateTime;

/// Now, as Unix milliseconds.
pub fn now_millis() -> i64 {
    i64::try_from(OffsetDateTime::now_utc().unix_timestamp_nanos() / 1_000_000)
        .expect("BUG: the clock is within i64 milliseconds")
}

/// Unix milliseconds as RFC 3339 UTC with millisecond precision.
pub fn rfc3339_millis(millis: i64) -> String {
    let format = time::macros::format_description!(
        "[year]-[month]-[day]T[hour]:[minute]:[second].[subsecond digits:3]Z"
    );
    OffsetDateTime::from_unix_timestamp_nanos(i128::from(millis) * 1_000_000)
        .ok()
        .and_then(|t| t.format(&format).ok())
        .unwrap_or_else(|| "1970-01-01T00:00:00.000Z".to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn millis_format_as_rfc3339_utc() {
        assert_eq!(rfc3339_millis(0), "1970-01-01T00:00:00.000Z");
        assert_eq!(
            rfc3339_millis(1_700_000_000_123),
            "2023-11-14T22:13:20.123Z"
        );
        assert!(rfc3339_millis(now_millis()).ends_with('Z'));
    }
}
