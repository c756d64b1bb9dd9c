//! Timestamps as vendors send them, to UTC epoch milliseconds: RFC 3339 text (with the
//! option to reinterpret a mislabelled `Z`) and epoch numbers in s, ms, µs or ns.

/// Parses a UTC offset such as `+05:30`, `-0300`, `Z` or `UTC` into milliseconds.
pub fn parse_utc_offset(text: &str) -> Result<i64, String> {
    let t = text.trim();
    if t.eq_ignore_ascii_case("z") || t.eq_ignore_ascii_case("utc") {
        return Ok(0);
    }
    let bad = || format!("`{text}` is not a UTC offset (expected e.g. +05:30, -03:00 or Z)");
    let (sign, rest) = match t.as_bytes().first() {
        Some(b'+') => (1, &t[1..]),
        Some(b'-') => (-1, &t[1..]),
        _ => return Err(bad()),
    };
    let digits: String = rest.chars().filter(|c| *c != ':').collect();
    if digits.len() != 4 || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return Err(bad());
    }
    let hours: i64 = digits[..2].parse().map_err(|_| bad())?;
    let minutes: i64 = digits[2..].parse().map_err(|_| bad())?;
    if hours > 14 || minutes > 59 {
        return Err(bad());
    }
    Ok(sign * (hours * 60 + minutes) * 60_000)
}

/// Parses `YYYY-MM-DDTHH:MM:SS[.fraction][Z|±HH:MM]` to UTC epoch milliseconds.
///
/// `z_means`: the real offset of times written with `Z` or with no zone at all, for feeds
/// that write local time and label it UTC; `None` trusts the label.
pub fn parse_rfc3339_ms(text: &str, z_means: Option<i64>) -> Result<u64, String> {
    let bad = |why: &str| format!("`{}` is not an RFC 3339 time: {why}", truncate(text));
    let b = text.as_bytes();
    if b.len() < 19 || !text.is_ascii() {
        return Err(bad("too short"));
    }
    let field = |from: usize, to: usize| -> Result<i64, String> {
        let part = &text[from..to];
        if !part.bytes().all(|c| c.is_ascii_digit()) {
            return Err(bad("expected digits"));
        }
        part.parse::<i64>().map_err(|_| bad("expected digits"))
    };
    if b[4] != b'-'
        || b[7] != b'-'
        || !(b[10] == b'T' || b[10] == b't' || b[10] == b' ')
        || b[13] != b':'
        || b[16] != b':'
    {
        return Err(bad("expected YYYY-MM-DDTHH:MM:SS"));
    }
    let (year, month, day) = (field(0, 4)?, field(5, 7)?, field(8, 10)?);
    let (hour, minute, second) = (field(11, 13)?, field(14, 16)?, field(17, 19)?);
    if !(1..=12).contains(&month)
        || day < 1
        || day > days_in_month(year, month)
        || hour > 23
        || minute > 59
        || second > 60
    {
        return Err(bad("a field is out of range"));
    }
    let mut rest = &text[19..];
    let mut millis = 0i64;
    if let Some(frac) = rest.strip_prefix('.') {
        let digits = frac.bytes().take_while(u8::is_ascii_digit).count();
        if digits == 0 {
            return Err(bad("empty fraction of a second"));
        }
        let padded = format!("{:0<3}", &frac[..digits.min(3)]);
        millis = padded.parse::<i64>().map_err(|_| bad("bad fraction"))?;
        rest = &frac[digits..];
    }
    let offset = if rest.is_empty() || rest.eq_ignore_ascii_case("z") {
        z_means.unwrap_or(0)
    } else {
        parse_utc_offset(rest).map_err(|_| bad("bad zone"))?
    };
    let days = days_from_civil(year, month, day);
    let local_ms = ((days * 24 + hour) * 60 + minute) * 60_000 + second * 1000 + millis;
    u64::try_from(local_ms - offset).map_err(|_| bad("before 1970"))
}

/// An epoch number in seconds, milliseconds, microseconds or nanoseconds (told apart by
/// magnitude: any real time since 1973 in ms is above 1e11) to milliseconds.
pub fn epoch_ms_from_number(n: f64) -> Option<u64> {
    let ms = match n {
        n if !n.is_finite() || n <= 0.0 => return None,
        n if n < 1e11 => n * 1e3,
        n if n < 1e14 => n,
        n if n < 1e17 => n / 1e3,
        n if n < 1e20 => n / 1e6,
        _ => return None,
    };
    Some(ms.round() as u64)
}

fn truncate(text: &str) -> &str {
    match text.char_indices().nth(40) {
        Some((i, _)) => &text[..i],
        None => text,
    }
}

fn is_leap(year: i64) -> bool {
    (year % 4 == 0 && year % 100 != 0) || year % 400 == 0
}

fn days_in_month(year: i64, month: i64) -> i64 {
    match month {
        2 if is_leap(year) => 29,
        2 => 28,
        4 | 6 | 9 | 11 => 30,
        _ => 31,
    }
}

// Howard Hinnant's days_from_civil: days since 1970-01-01 of a proleptic Gregorian date.
fn days_from_civil(year: i64, month: i64, day: i64) -> i64 {
    let y = if month <= 2 { year - 1 } else { year };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (month + 9) % 12;
    let doy = (153 * mp + 2) / 5 + day - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_utc_and_offsets() {
        assert_eq!(parse_rfc3339_ms("1970-01-01T00:00:00Z", None), Ok(0));
        assert_eq!(parse_rfc3339_ms("2025-12-01T13:21:52Z", None), Ok(1_764_595_312_000));
        assert_eq!(parse_rfc3339_ms("2025-12-01T13:21:52.5+05:30", None), Ok(1_764_575_512_500));
        assert_eq!(parse_rfc3339_ms("2025-12-01T13:21:52Z", Some(19_800_000)), Ok(1_764_575_512_000));
        assert!(parse_rfc3339_ms("2025-02-30T00:00:00Z", None).is_err());
        assert!(parse_rfc3339_ms("yesterday", None).is_err());
    }

    #[test]
    fn epoch_units_by_magnitude() {
        assert_eq!(epoch_ms_from_number(1_234_567_890.0), Some(1_234_567_890_000));
        assert_eq!(epoch_ms_from_number(1_730_000_000_000.0), Some(1_730_000_000_000));
        assert_eq!(epoch_ms_from_number(-1.0), None);
    }
}
