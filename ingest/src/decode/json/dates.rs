//! Fast readings of the forms producers write most: `2024-05-01` and
//! `2024-05-01T12:30:00.123Z`. Anything else (another separator, an offset, a leap
//! second, a value out of range) is `None`, and the caller asks arrow's general
//! parser, which decides. arrow's parser builds a tokenizer and resolves a time zone
//! for every value; these forms need neither.

use chrono::{Datelike, NaiveDate};

/// Days since 1970-01-01 of `YYYY-MM-DD`.
pub fn date(s: &str) -> Option<i32> {
    let b = s.as_bytes();
    if b.len() != 10 || b[4] != b'-' || b[7] != b'-' {
        return None;
    }
    let day = NaiveDate::from_ymd_opt(
        digits(&b[0..4])? as i32,
        digits(&b[5..7])?,
        digits(&b[8..10])?,
    )?;
    Some(day.num_days_from_ce() - UNIX_EPOCH_DAYS_FROM_CE)
}

/// Seconds since the epoch and nanoseconds past them of
/// `YYYY-MM-DDTHH:MM:SS[.f…]Z` (1 to 9 fraction digits).
pub fn utc(s: &str) -> Option<(i64, u32)> {
    let b = s.as_bytes();
    if b.len() < 20 || b[10] != b'T' || b[13] != b':' || b[16] != b':' || b[b.len() - 1] != b'Z' {
        return None;
    }
    let days = date(&s[..10])? as i64;
    let (hour, minute, second) = (
        digits(&b[11..13])?,
        digits(&b[14..16])?,
        digits(&b[17..19])?,
    );
    if hour > 23 || minute > 59 || second > 59 {
        return None;
    }
    let nanos = match &b[19..b.len() - 1] {
        [] => 0,
        [b'.', fraction @ ..] if (1..=9).contains(&fraction.len()) => {
            digits(fraction)? * 10u32.pow(9 - fraction.len() as u32)
        }
        _ => return None,
    };
    let seconds = days * 86_400 + i64::from(hour * 3600 + minute * 60 + second);
    Some((seconds, nanos))
}

const UNIX_EPOCH_DAYS_FROM_CE: i32 = 719_163;

fn digits(b: &[u8]) -> Option<u32> {
    b.iter().try_fold(0u32, |n, &d| {
        d.is_ascii_digit().then(|| n * 10 + u32::from(d - b'0'))
    })
}

#[cfg(test)]
mod tests {
    use arrow_array::timezone::Tz;
    use arrow_array::types::Date32Type;
    use arrow_cast::parse::{Parser, string_to_datetime};
    use rand::{Rng, SeedableRng};

    /// Every string the fast path reads, arrow's parser reads the same; generated
    /// around the edges (month ends, leap years, before 1970, fraction lengths).
    #[test]
    fn agrees_with_arrows_parser() {
        let zone: Tz = "+02:00".parse().unwrap();
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(7);
        let mut read = 0;
        for _ in 0..100_000 {
            let date = format!(
                "{:04}-{:02}-{:02}",
                rng.random_range(1900..2101),
                rng.random_range(0..14),
                rng.random_range(0..33)
            );
            let fraction = match rng.random_range(0..4) {
                0 => String::new(),
                1 => ".".to_string(),
                n => format!(
                    ".{}",
                    &"1234567891"[..rng.random_range(1..=10) * (n - 1) / 2]
                ),
            };
            let time = format!(
                "{date}T{:02}:{:02}:{:02}{fraction}Z",
                rng.random_range(0..25),
                rng.random_range(0..61),
                rng.random_range(0..61)
            );
            if let Some(days) = super::date(&date) {
                assert_eq!(Some(days), Date32Type::parse(&date), "{date}");
            }
            if let Some((seconds, nanos)) = super::utc(&time) {
                let at = string_to_datetime(&zone, &time).expect(&time);
                assert_eq!(
                    (seconds, nanos),
                    (at.timestamp(), at.timestamp_subsec_nanos()),
                    "{time}"
                );
                read += 1;
            }
        }
        assert!(read > 10_000, "{read}");
    }
}
