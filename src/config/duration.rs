//! Human durations in settings: `250ms`, `30s`, `5m`, `1h`.

use std::time::Duration;

const EXPECTED: &str = "a whole number followed by ms, s, m or h, such as 250ms, 30s, 5m or 1h";

/// Parses one duration; the error says what is expected.
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    let text = text.trim();
    let split = text.find(|c: char| !c.is_ascii_digit()).unwrap_or(text.len());
    let (digits, unit) = text.split_at(split);
    let amount: u64 = digits.parse().map_err(|_| EXPECTED.to_owned())?;
    let seconds_per = match unit {
        "ms" => return Ok(Duration::from_millis(amount)),
        "s" => 1,
        "m" => 60,
        "h" => 3_600,
        _ => return Err(EXPECTED.to_owned()),
    };
    amount
        .checked_mul(seconds_per)
        .map(Duration::from_secs)
        .ok_or_else(|| "a duration that fits in 64 bits of seconds".to_owned())
}

/// Parses a comma-separated ladder such as `5m,15m,1h,6h`; it may not be empty.
pub fn parse_duration_list(text: &str) -> Result<Vec<Duration>, String> {
    let list = text
        .split(',')
        .map(parse_duration)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| format!("a comma-separated list of durations, each {e}"))?;
    if list.is_empty() {
        return Err("at least one duration".into());
    }
    Ok(list)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn units_are_read_and_junk_refused() {
        // Proves the accepted forms and a refusal that explains itself.
        assert_eq!(parse_duration("250ms"), Ok(Duration::from_millis(250)));
        assert_eq!(parse_duration("5m"), Ok(Duration::from_secs(300)));
        assert_eq!(parse_duration(" 6h "), Ok(Duration::from_secs(21_600)));
        assert!(parse_duration("5").unwrap_err().contains("ms, s, m or h"));
        assert!(parse_duration("m").is_err());
        assert_eq!(parse_duration_list("5m,15m,1h,6h").map(|l| l.len()), Ok(4));
    }
}
