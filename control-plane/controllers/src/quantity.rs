//! Resource quantities ("100m", "1.5Gi", "2e3") as integers: CPU in millicores, everything else
//! in units, rounded up as Kubernetes does when a request is finer than the unit.

/// Parses `q` and returns its value times `scale` (1000 for millicores, 1 for bytes), rounded up.
/// `None` for a string that is not a quantity.
pub fn parse_scaled(q: &str, scale: i64) -> Option<i64> {
    let q = q.trim();
    let split = q
        .find(|c: char| !(c.is_ascii_digit() || c == '.' || c == '+' || c == '-'))
        .unwrap_or(q.len());
    let (number, suffix) = q.split_at(split);
    if number.is_empty() {
        return None;
    }
    let multiplier: f64 = match suffix {
        "" => 1.0,
        "n" => 1e-9,
        "u" => 1e-6,
        "m" => 1e-3,
        "k" => 1e3,
        "M" => 1e6,
        "G" => 1e9,
        "T" => 1e12,
        "P" => 1e15,
        "E" => 1e18,
        "Ki" => 1024.0,
        "Mi" => 1024.0 * 1024.0,
        "Gi" => 1024.0 * 1024.0 * 1024.0,
        "Ti" => 1024.0_f64.powi(4),
        "Pi" => 1024.0_f64.powi(5),
        "Ei" => 1024.0_f64.powi(6),
        s if s.starts_with(['e', 'E']) => 10f64.powi(s[1..].parse::<i32>().ok()?),
        _ => return None,
    };
    let value: f64 = number.parse().ok()?;
    let scaled = value * multiplier * scale as f64;
    if !scaled.is_finite() {
        return None;
    }
    // "0.1" * 1000 is 100.00000000000001 in binary floating point: that is 100, not 101.
    let rounded = scaled.round();
    let result = if (scaled - rounded).abs() < 1e-6 {
        rounded
    } else {
        scaled.ceil()
    };
    #[expect(
        clippy::cast_possible_truncation,
        reason = "saturating float-to-int conversion is the intent for absurdly large quantities"
    )]
    Some(result as i64)
}

/// CPU in millicores (0 for an invalid quantity, which the API server would have refused).
pub fn cpu_millis(q: &str) -> i64 {
    parse_scaled(q, 1000).unwrap_or(0)
}

/// Any other resource in its base unit (bytes for memory).
pub fn units(q: &str) -> i64 {
    parse_scaled(q, 1).unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cpu() {
        assert_eq!(cpu_millis("100m"), 100);
        assert_eq!(cpu_millis("0.1"), 100);
        assert_eq!(cpu_millis("2"), 2000);
        assert_eq!(cpu_millis("1.5"), 1500);
        assert_eq!(cpu_millis("250000n"), 1);
        assert_eq!(cpu_millis("1e3"), 1_000_000);
    }

    #[test]
    fn memory() {
        assert_eq!(units("128Mi"), 128 * 1024 * 1024);
        assert_eq!(units("1Gi"), 1 << 30);
        assert_eq!(units("1G"), 1_000_000_000);
        assert_eq!(units("1.5Ki"), 1536);
        assert_eq!(units("110"), 110);
    }

    #[test]
    fn invalid() {
        assert_eq!(parse_scaled("", 1), None);
        assert_eq!(parse_scaled("abc", 1), None);
        assert_eq!(parse_scaled("1Xi", 1), None);
        assert_eq!(units("lots"), 0);
    }
}
