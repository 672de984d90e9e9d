//! Human units on the command line and in tables: sizes (`10GiB`), durations (`7d`), times.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bytesize::ByteSize;

/// `10GiB`, `64MiB`, `1000`: a byte count.
pub fn parse_size(text: &str) -> Result<u64, String> {
    text.trim().parse::<ByteSize>().map(|b| b.as_u64()).map_err(|e| format!("'{text}' is not a size like 64MiB ({e})"))
}

/// `7d`, `100ms`, `1h30m`: a duration.
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    humantime::parse_duration(text.trim()).map_err(|e| format!("'{text}' is not a duration like 7d or 100ms ({e})"))
}

/// A limit that can be switched off: `forever`/`unlimited`/`none` mean -1 on the wire.
pub fn parse_limit(text: &str, parse: fn(&str) -> Result<u64, String>) -> Result<i64, String> {
    if matches!(text.trim(), "forever" | "unlimited" | "none" | "-1") {
        return Ok(-1);
    }
    parse(text).and_then(|v| i64::try_from(v).map_err(|_| format!("'{text}' is too large")))
}

/// `--retention`: a duration in ms, or -1.
pub fn parse_retention(text: &str) -> Result<i64, String> {
    parse_limit(text, |t| parse_duration(t).map(|d| d.as_millis() as u64))
}

/// `--retention-bytes`: a size, or -1.
pub fn parse_retention_bytes(text: &str) -> Result<i64, String> {
    parse_limit(text, parse_size)
}

/// Milliseconds since the Unix epoch, now.
pub fn now_ms() -> i64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
}

/// `--since`: an RFC 3339 time (`2026-11-23T08:00:00Z`) or a duration ago (`10m`), as ms
/// since the epoch.
pub fn parse_since(text: &str) -> Result<i64, String> {
    if let Ok(time) = humantime::parse_rfc3339_weak(text.trim()) {
        let ms = time.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_millis());
        return i64::try_from(ms).map_err(|_| format!("'{text}' is too far in the future"));
    }
    let ago = humantime::parse_duration(text.trim())
        .map_err(|_| format!("'{text}' is neither a time like 2026-11-23T08:00:00Z nor a duration like 10m"))?;
    Ok(now_ms().saturating_sub(i64::try_from(ago.as_millis()).unwrap_or(i64::MAX)))
}

/// `1.5 MiB`.
pub fn format_size(bytes: u64) -> String {
    ByteSize(bytes).display().iec().to_string()
}

/// A wire limit: `7d`, `forever`.
pub fn format_retention(ms: Option<i64>) -> String {
    match ms {
        None => "default".into(),
        Some(ms) if ms < 0 => "forever".into(),
        Some(ms) => format_age(ms),
    }
}

/// A size limit: `10 GiB`, `unlimited`.
pub fn format_size_limit(bytes: Option<i64>) -> String {
    match bytes {
        None => "default".into(),
        Some(b) if b < 0 => "unlimited".into(),
        Some(b) => format_size(b as u64),
    }
}

/// A span in its two largest units: `45s`, `3m12s`, `2h5m`, `7d`, `250ms`.
pub fn format_age(ms: i64) -> String {
    let ms = ms.max(0);
    if ms < 1000 {
        return format!("{ms}ms");
    }
    let mut rest = ms / 1000;
    let units = [(86_400, "d"), (3600, "h"), (60, "m"), (1, "s")];
    let parts: Vec<String> = units
        .iter()
        .filter_map(|&(size, name)| {
            let value = rest / size;
            rest %= size;
            (value > 0).then(|| format!("{value}{name}"))
        })
        .collect();
    parts.into_iter().take(2).collect()
}

/// ms since the epoch as RFC 3339 with milliseconds, UTC.
pub fn format_time(ms: i64) -> String {
    match u64::try_from(ms) {
        Ok(ms) => humantime::format_rfc3339_millis(UNIX_EPOCH + Duration::from_millis(ms)).to_string(),
        Err(_) => ms.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_and_durations_parse_in_human_units() {
        assert_eq!(parse_size("10GiB"), Ok(10 << 30));
        assert_eq!(parse_size("64 MiB"), Ok(64 << 20));
        assert_eq!(parse_size("1000"), Ok(1000));
        assert!(parse_size("ten").is_err());
        assert_eq!(parse_retention("7d"), Ok(7 * 86_400_000));
        assert_eq!(parse_retention("forever"), Ok(-1));
        assert_eq!(parse_retention_bytes("unlimited"), Ok(-1));
        assert_eq!(parse_duration("100ms"), Ok(Duration::from_millis(100)));
        assert!(parse_duration("soon").is_err());
    }

    #[test]
    fn since_takes_a_time_or_a_duration_ago() {
        assert_eq!(parse_since("1970-01-01T00:00:01Z"), Ok(1000));
        let ten_minutes_ago = parse_since("10m").unwrap();
        assert!((now_ms() - ten_minutes_ago - 600_000).abs() < 5_000);
        assert!(parse_since("yesterday-ish").is_err());
    }

    #[test]
    fn spans_print_in_their_two_largest_units() {
        assert_eq!(format_age(250), "250ms");
        assert_eq!(format_age(45_000), "45s");
        assert_eq!(format_age(192_000), "3m12s");
        assert_eq!(format_age(7 * 86_400_000), "7d");
        assert_eq!(format_age(2 * 3_600_000 + 5 * 60_000 + 7_000), "2h5m");
        assert_eq!(format_retention(Some(-1)), "forever");
        assert_eq!(format_size(1536), "1.5 KiB");
        assert_eq!(format_time(1000), "1970-01-01T00:00:01.000Z");
    }
}
