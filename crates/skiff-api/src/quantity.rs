//! Kubernetes resource quantities (`100m`, `0.5`, `1.5Gi`, `12e6`) as integers.
//!
//! One parser for all of skiff: the scheduler adds and compares requests thousands of times a
//! second and the agent turns limits into cgroup values, so every quantity is
//! turned once into an integer in the unit the scheduler counts in: millicores for cpu, bytes for
//! memory. Integers keep the arithmetic exact: `0.1 + 0.2` cpu is exactly `300m`, never
//! `300.00000000000006m`.
//!
//! The grammar is apimachinery's (`pkg/api/resource/quantity.go`):
//!
//! ```text
//! quantity  ::= [sign] number suffix
//! number    ::= digits | digits "." [digits] | "." digits
//! suffix    ::= binary | decimal | exponent
//! binary    ::= Ki | Mi | Gi | Ti | Pi | Ei                     (powers of 1024)
//! decimal   ::= n | u | m | "" | k | M | G | T | P | E          (powers of 1000)
//! exponent  ::= ("e" | "E") [sign] digits                       (a power of ten)
//! ```
//!
//! Like Kubernetes' `MilliValue()` and `Value()`, a value that is not a whole number of the
//! target unit is rounded up (away from zero): `0.1m` cpu is `1m`, `0.5` bytes is `1`.

/// A quantity that is not Kubernetes' quantity syntax, or too large for an i64.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Error {
    #[error("invalid quantity {quantity:?}: {reason}")]
    InvalidQuantity {
        quantity: String,
        reason: &'static str,
    },
}

/// The most significant digits a mantissa may carry; more cannot be represented exactly and no
/// real manifest needs them.
const MAX_DIGITS: usize = 30;

/// A cpu quantity in millicores: `"100m"` → 100, `"0.5"` → 500, `"2"` → 2000.
pub fn cpu_millis(quantity: &str) -> Result<i64, Error> {
    parse_scaled(quantity, 3)
}

/// A memory (or any countable) quantity in whole units: `"1Ki"` → 1024, `"1k"` → 1000,
/// `"1e3"` → 1000.
pub fn bytes(quantity: &str) -> Result<i64, Error> {
    parse_scaled(quantity, 0)
}

/// Parses `quantity` and returns it in units of 10^-`scale` (scale 3 = milli-units), rounded
/// away from zero.
fn parse_scaled(quantity: &str, scale: i32) -> Result<i64, Error> {
    let invalid = |reason: &'static str| Error::InvalidQuantity {
        quantity: quantity.to_string(),
        reason,
    };

    // 1. Sign.
    let (negative, rest) = match quantity.as_bytes().first() {
        Some(b'-') => (true, &quantity[1..]),
        Some(b'+') => (false, &quantity[1..]),
        _ => (false, quantity),
    };

    // 2. Number: digits with at most one decimal point.
    let number_len = rest
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(rest.len());
    let (number, suffix) = rest.split_at(number_len);
    let (whole, fraction) = match number.split_once('.') {
        Some((whole, fraction)) => (whole, fraction),
        None => (number, ""),
    };
    if whole.is_empty() && fraction.is_empty() {
        return Err(invalid("expected a number"));
    }
    if fraction.contains('.') {
        return Err(invalid("more than one decimal point"));
    }
    let digits = whole
        .bytes()
        .chain(fraction.bytes())
        .skip_while(|&b| b == b'0');
    let mut mantissa: u128 = 0;
    for (count, digit) in digits.enumerate() {
        if count >= MAX_DIGITS {
            return Err(invalid("too many significant digits"));
        }
        mantissa = mantissa * 10 + u128::from(digit - b'0');
    }

    // 3. Suffix: a power of ten and a power of two to multiply by.
    let (mut exp10, exp2): (i32, u32) = match suffix {
        "" => (0, 0),
        "n" => (-9, 0),
        "u" => (-6, 0),
        "m" => (-3, 0),
        "k" => (3, 0),
        "M" => (6, 0),
        "G" => (9, 0),
        "T" => (12, 0),
        "P" => (15, 0),
        "E" => (18, 0),
        "Ki" => (0, 10),
        "Mi" => (0, 20),
        "Gi" => (0, 30),
        "Ti" => (0, 40),
        "Pi" => (0, 50),
        "Ei" => (0, 60),
        _ => (
            exponent(suffix).ok_or_else(|| invalid("unknown suffix"))?,
            0,
        ),
    };
    // Digits after the point divide by ten each; the target unit multiplies by 10^scale.
    let fraction_len = i32::try_from(fraction.len()).map_err(|_| invalid("number too long"))?;
    exp10 = exp10 - fraction_len + scale;

    // 4. value = mantissa × 2^exp2 × 10^exp10, rounded away from zero when exp10 < 0.
    let too_large = || invalid("value too large");
    if mantissa.leading_zeros() < exp2 {
        return Err(too_large());
    }
    let mut value = mantissa << exp2;
    if exp10 >= 0 {
        let factor = 10u128
            .checked_pow(exp10.unsigned_abs())
            .ok_or_else(too_large)?;
        value = value.checked_mul(factor).ok_or_else(too_large)?;
    } else {
        value = match 10u128.checked_pow(exp10.unsigned_abs()) {
            Some(divisor) => value.div_ceil(divisor),
            // Dividing by more than 10^38 leaves less than one unit: round up to one.
            None => u128::from(value > 0),
        };
    }
    let magnitude = i64::try_from(value).map_err(|_| too_large())?;
    Ok(if negative { -magnitude } else { magnitude })
}

/// The power of ten of an `e3`, `E-2` or `e+6` suffix; `None` if `suffix` is not one.
fn exponent(suffix: &str) -> Option<i32> {
    let digits = suffix.strip_prefix(['e', 'E'])?;
    let unsigned = digits.strip_prefix(['+', '-']).unwrap_or(digits);
    if unsigned.is_empty() || !unsigned.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    // Exponents beyond ±1000 could never yield an i64; reject them before they overflow i32.
    let power: i32 = digits.parse().ok()?;
    (-1000..=1000).contains(&power).then_some(power)
}

/// How a cpu amount in millicores is written back: `2`, `1500m`.
pub fn format_cpu(millis: i64) -> String {
    if millis % 1000 == 0 {
        (millis / 1000).to_string()
    } else {
        format!("{millis}m")
    }
}

/// How a byte amount is written back: the largest binary suffix that divides it exactly
/// (`4Gi`, `1536Mi`), else plain bytes.
pub fn format_bytes(bytes: i64) -> String {
    for (suffix, shift) in [("Ti", 40), ("Gi", 30), ("Mi", 20), ("Ki", 10)] {
        let unit = 1i64 << shift;
        if bytes != 0 && bytes % unit == 0 {
            return format!("{}{suffix}", bytes / unit);
        }
    }
    bytes.to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cpu_quantities_become_millicores() {
        let cases = [
            ("100m", 100),
            ("0.5", 500),
            ("2", 2000),
            ("1.5", 1500),
            (".25", 250),
            ("1.", 1000),
            ("0.1m", 1), // rounded up, as MilliValue() does
            ("1e3", 1_000_000),
            ("1k", 1_000_000),
            ("500000n", 1),
            ("+3", 3000),
            ("-1", -1000),
            ("0", 0),
        ];
        for (quantity, want) in cases {
            assert_eq!(cpu_millis(quantity), Ok(want), "{quantity}");
        }
    }

    #[test]
    fn memory_quantities_become_bytes() {
        let cases = [
            ("128974848", 128_974_848),
            ("129e6", 129_000_000),
            ("129M", 129_000_000),
            ("123Mi", 128_974_848),
            ("1Ki", 1024),
            ("1k", 1000),
            ("1.5Gi", 1_610_612_736),
            ("2Ti", 2_199_023_255_552),
            ("1T", 1_000_000_000_000),
            ("1G", 1_000_000_000),
            ("1E3", 1000),
            ("5e-1", 1), // half a byte rounds up
            ("0.5", 1),
            ("1m", 1),
            ("0Mi", 0),
        ];
        for (quantity, want) in cases {
            assert_eq!(bytes(quantity), Ok(want), "{quantity}");
        }
    }

    #[test]
    fn bad_quantities_say_why() {
        for quantity in ["", "m", "1.2.3", "1Gb", "1e", "e3", "1 Gi", "1.5x", "abc"] {
            assert!(bytes(quantity).is_err(), "{quantity:?} should not parse");
        }
        assert_eq!(
            bytes("8Ei"),
            Err(Error::InvalidQuantity {
                quantity: "8Ei".to_string(),
                reason: "value too large"
            })
        );
        assert!(bytes("1e999").is_err());
        assert!(bytes("1234567890123456789012345678901").is_err());
    }

    #[test]
    fn amounts_format_back_readably() {
        assert_eq!(format_cpu(2000), "2");
        assert_eq!(format_cpu(1500), "1500m");
        assert_eq!(format_bytes(4 << 30), "4Gi");
        assert_eq!(format_bytes(1536 << 20), "1536Mi");
        assert_eq!(format_bytes(1000), "1000");
        assert_eq!(format_bytes(0), "0");
    }
}
