//! Exact decimals as scaled integers.
//!
//! Prices and quantities never pass through `f64`: a feed's `"182.3100"` becomes the integer
//! `18_231_000_000` at [`PRICE_SCALE`] 8, stored in Arrow/Parquet as `Decimal128(18, 8)`
//! (physically an INT64, which every engine reads as an exact decimal).

/// Digits after the point of every price column (`Decimal128(18, 8)`).
pub const PRICE_SCALE: u32 = 8;
/// Digits after the point of every quantity/volume column (`Decimal128(18, 4)`).
pub const QTY_SCALE: u32 = 4;
/// Precision of both decimal column types (fits an INT64 in Parquet).
pub const DECIMAL_PRECISION: u8 = 18;

/// Why a decimal text could not be read exactly.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DecimalError {
    #[error("`{0}` is not a decimal number")]
    NotANumber(String),
    #[error("`{text}` has more than {scale} digits after the point")]
    TooPrecise { text: String, scale: u32 },
    #[error("`{0}` is out of range")]
    OutOfRange(String),
}

/// Parse `text` (optional sign, digits, optional point and digits; no exponent) into an integer
/// scaled by `10^scale`. Refuses rather than rounds when the text has more digits than `scale`,
/// except for trailing zeros.
pub fn parse_scaled(text: &str, scale: u32) -> Result<i64, DecimalError> {
    let trimmed = text.trim();
    let (negative, digits) = match trimmed.as_bytes().first() {
        Some(b'-') => (true, &trimmed[1..]),
        Some(b'+') => (false, &trimmed[1..]),
        _ => (false, trimmed),
    };
    let (whole, fraction) = match digits.split_once('.') {
        Some((w, f)) => (w, f),
        None => (digits, ""),
    };
    let valid = |s: &str| s.bytes().all(|b| b.is_ascii_digit());
    if (whole.is_empty() && fraction.is_empty()) || !valid(whole) || !valid(fraction) {
        return Err(DecimalError::NotANumber(text.to_string()));
    }
    let fraction = fraction.trim_end_matches('0');
    if fraction.len() > scale as usize {
        return Err(DecimalError::TooPrecise {
            text: text.to_string(),
            scale,
        });
    }
    let overflow = || DecimalError::OutOfRange(text.to_string());
    let mut value: i64 = 0;
    for b in whole.bytes().chain(fraction.bytes()) {
        value = value
            .checked_mul(10)
            .and_then(|v| v.checked_add(i64::from(b - b'0')))
            .ok_or_else(overflow)?;
    }
    let pad = scale as usize - fraction.len();
    for _ in 0..pad {
        value = value.checked_mul(10).ok_or_else(overflow)?;
    }
    Ok(if negative { -value } else { value })
}

/// Render a scaled integer as decimal text without trailing zeros (`18231000000`, 8 → `182.31`).
pub fn format_scaled(value: i64, scale: u32) -> String {
    let factor = 10_i128.pow(scale);
    let v = i128::from(value);
    let sign = if v < 0 { "-" } else { "" };
    let whole = v.abs() / factor;
    let fraction = v.abs() % factor;
    if fraction == 0 {
        return format!("{sign}{whole}");
    }
    let text = format!("{fraction:0width$}", width = scale as usize);
    format!("{sign}{whole}.{}", text.trim_end_matches('0'))
}

/// Change the scale of a value, rounding half away from zero when digits are dropped.
pub fn rescale(value: i128, from: u32, to: u32) -> i128 {
    if to >= from {
        value * 10_i128.pow(to - from)
    } else {
        let factor = 10_i128.pow(from - to);
        let quotient = value / factor;
        let remainder = value % factor;
        if remainder.abs() * 2 >= factor {
            quotient + value.signum()
        } else {
            quotient
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_exactly_and_refuses_what_it_cannot_hold() {
        assert_eq!(parse_scaled("182.3100", PRICE_SCALE), Ok(18_231_000_000));
        assert_eq!(parse_scaled("-0.5", QTY_SCALE), Ok(-5_000));
        assert_eq!(parse_scaled("100", QTY_SCALE), Ok(1_000_000));
        assert_eq!(parse_scaled(".25", 2), Ok(25));
        assert!(matches!(
            parse_scaled("1.00001", QTY_SCALE),
            Err(DecimalError::TooPrecise { .. })
        ));
        assert!(parse_scaled("1e5", 2).is_err());
        assert!(parse_scaled("", 2).is_err());
        assert!(parse_scaled(".", 2).is_err());
        assert!(parse_scaled("99999999999999999999", 2).is_err());
    }

    #[test]
    fn formats_and_rescales() {
        assert_eq!(format_scaled(18_231_000_000, PRICE_SCALE), "182.31");
        assert_eq!(format_scaled(-5_000, QTY_SCALE), "-0.5");
        assert_eq!(format_scaled(1_000_000, QTY_SCALE), "100");
        assert_eq!(rescale(12_345, 4, 2), 123);
        assert_eq!(rescale(12_350, 4, 2), 124);
        assert_eq!(rescale(-12_350, 4, 2), -124);
        assert_eq!(rescale(5, 0, 3), 5_000);
    }
}
