//! Parsing and matching helpers with Redis's exact rules.

use crate::resp::string_to_i64;

/// Why a command argument was refused; the message is Redis's reply.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ArgError {
    #[error("ERR syntax error")]
    Syntax,
    #[error("ERR value is not an integer or out of range")]
    NotInteger,
    /// Carries the command's name, which the message quotes.
    #[error("ERR invalid expire time in '{0}' command")]
    InvalidExpireTime(&'static str),
}

/// An integer argument. Every command reads integers through here, so all
/// of them accept exactly what Redis's `string2ll` accepts: the one parser
/// is [`crate::resp::string_to_i64`], which the protocol decoder uses too.
pub fn int_arg(arg: &[u8]) -> Result<i64, ArgError> {
    string_to_i64(arg).ok_or(ArgError::NotInteger)
}

/// Redis's `string2ld`: a float without surrounding spaces; NaN rejected.
pub fn parse_f64(s: &[u8]) -> Option<f64> {
    if s.is_empty() || s.len() > 5000 {
        return None;
    }
    if s[0].is_ascii_whitespace() || s[s.len() - 1].is_ascii_whitespace() {
        return None;
    }
    let text = std::str::from_utf8(s).ok()?;
    let v: f64 = match text.to_ascii_lowercase().as_str() {
        "inf" | "+inf" | "infinity" | "+infinity" => f64::INFINITY,
        "-inf" | "-infinity" => f64::NEG_INFINITY,
        _ => text.parse().ok()?,
    };
    if v.is_nan() { None } else { Some(v) }
}

/// Format a float as INCRBYFLOAT does: shortest exact form, no exponent,
/// no trailing zeros.
pub fn format_f64(v: f64) -> String {
    if v == 0.0 {
        return "0".into();
    }
    let s = format!("{v}");
    s
}

/// INCRBYFLOAT's reply for `a + b`. Redis adds in long double and prints
/// with 17 decimals, so decimal operands give the decimal result
/// (0.1 + 0.2 = "0.3", 10.6 + -10.5 = "0.1"); an f64 sum carries binary
/// noise in its last bits instead. Remove it: round the sum to the decimal
/// places that 15 significant digits of the larger operand allow, and keep
/// that when it moves the sum by no more than the operands' rounding error.
pub fn format_f64_sum(a: f64, b: f64) -> String {
    let sum = a + b;
    let big = a.abs().max(b.abs()).max(sum.abs());
    if sum == 0.0 || !big.is_finite() {
        return format_f64(sum);
    }
    let places = 14 - big.log10().floor() as i64;
    if places >= 0 {
        let rounded: f64 = format!("{:.*}", places as usize, sum)
            .parse()
            .unwrap_or(sum);
        if (rounded - sum).abs() <= 2.0 * big * f64::EPSILON {
            return format_f64(rounded);
        }
    }
    format_f64(sum)
}

/// Redis's glob matching (`stringmatchlen`): `*`, `?`, `[...]` with ranges
/// and `^`, and `\` escapes.
pub fn glob_match(pattern: &[u8], s: &[u8]) -> bool {
    glob_inner(pattern, s, 0)
}

fn glob_inner(mut p: &[u8], mut s: &[u8], depth: usize) -> bool {
    // Bound recursion like Redis does against pathological patterns.
    if depth > 1000 {
        return false;
    }
    while !p.is_empty() {
        match p[0] {
            b'*' => {
                while p.len() > 1 && p[1] == b'*' {
                    p = &p[1..];
                }
                if p.len() == 1 {
                    return true;
                }
                for i in 0..=s.len() {
                    if glob_inner(&p[1..], &s[i..], depth + 1) {
                        return true;
                    }
                }
                return false;
            }
            b'?' => {
                if s.is_empty() {
                    return false;
                }
                s = &s[1..];
                p = &p[1..];
            }
            b'[' => {
                if s.is_empty() {
                    return false;
                }
                let c = s[0];
                p = &p[1..];
                let not = p.first() == Some(&b'^');
                if not {
                    p = &p[1..];
                }
                let mut matched = false;
                loop {
                    match p {
                        [] => break,
                        [b'\\', x, rest @ ..] => {
                            matched |= *x == c;
                            p = rest;
                        }
                        [b']', ..] => break,
                        [a, b'-', b, rest @ ..] if *b != b']' => {
                            let (lo, hi) = if a <= b { (*a, *b) } else { (*b, *a) };
                            matched |= lo <= c && c <= hi;
                            p = rest;
                        }
                        [x, rest @ ..] => {
                            matched |= *x == c;
                            p = rest;
                        }
                    }
                }
                if not {
                    matched = !matched;
                }
                if !matched {
                    return false;
                }
                if !p.is_empty() {
                    p = &p[1..]; // the ']'
                }
                s = &s[1..];
            }
            b'\\' if p.len() >= 2 => {
                if s.first() != Some(&p[1]) {
                    return false;
                }
                s = &s[1..];
                p = &p[2..];
            }
            c => {
                if s.first() != Some(&c) {
                    return false;
                }
                s = &s[1..];
                p = &p[1..];
            }
        }
    }
    s.is_empty()
}

/// Bytes as text for error messages, truncated.
pub fn printable(b: &[u8], max: usize) -> String {
    let cut = &b[..b.len().min(max)];
    String::from_utf8_lossy(cut).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn string2ll_rejects_leading_zeros_and_plus() {
        assert_eq!(int_arg(b"0"), Ok(0));
        assert_eq!(int_arg(b"-12"), Ok(-12));
        assert_eq!(int_arg(b"9223372036854775807"), Ok(i64::MAX));
        assert_eq!(int_arg(b"-9223372036854775808"), Ok(i64::MIN));
        for bad in [
            &b"9223372036854775808"[..],
            b"+1",
            b" 1",
            b"1 ",
            b"01",
            b"00",
            b"-0",
            b"-01",
            b"",
            b"-",
            b"1.0",
            b"1e3",
            b"abc",
        ] {
            assert_eq!(
                int_arg(bad),
                Err(ArgError::NotInteger),
                "{:?}",
                String::from_utf8_lossy(bad)
            );
        }
    }

    #[test]
    fn argument_errors_are_redis_replies() {
        assert_eq!(ArgError::Syntax.to_string(), "ERR syntax error");
        assert_eq!(
            ArgError::NotInteger.to_string(),
            "ERR value is not an integer or out of range"
        );
        assert_eq!(
            ArgError::InvalidExpireTime("getex").to_string(),
            "ERR invalid expire time in 'getex' command"
        );
    }

    #[test]
    fn floats() {
        assert_eq!(parse_f64(b"1.5"), Some(1.5));
        assert_eq!(parse_f64(b"5.0e3"), Some(5000.0));
        assert_eq!(parse_f64(b"-inf"), Some(f64::NEG_INFINITY));
        assert_eq!(parse_f64(b"nan"), None);
        assert_eq!(parse_f64(b" 1"), None);
        assert_eq!(parse_f64(b"x"), None);
        assert_eq!(format_f64(10.5 + 0.1), "10.6");
        assert_eq!(format_f64(3.0), "3");
        assert_eq!(format_f64(5000.0), "5000");
        assert_eq!(format_f64_sum(0.1, 0.2), "0.3");
        assert_eq!(format_f64_sum(10.6, -10.5), "0.1");
        assert_eq!(format_f64_sum(1.1, 2.2), "3.3");
        assert_eq!(format_f64_sum(10.5, 0.1), "10.6");
        assert_eq!(format_f64_sum(3.0, -3.0), "0");
        assert_eq!(
            format_f64_sum(0.0, 0.1234567890123456),
            "0.1234567890123456"
        );
        assert_eq!(format_f64_sum(5000.0, 200.0), "5200");
    }

    #[test]
    fn globs() {
        assert!(glob_match(b"*", b"anything"));
        assert!(glob_match(b"h?llo", b"hello"));
        assert!(glob_match(b"h*llo", b"heeeello"));
        assert!(glob_match(b"h[ae]llo", b"hallo"));
        assert!(!glob_match(b"h[ae]llo", b"hillo"));
        assert!(glob_match(b"h[^e]llo", b"hallo"));
        assert!(!glob_match(b"h[^e]llo", b"hello"));
        assert!(glob_match(b"h[a-b]llo", b"hbllo"));
        assert!(glob_match(b"key:\\*", b"key:*"));
        assert!(!glob_match(b"key:\\*", b"key:x"));
        assert!(!glob_match(b"a*b", b"acd"));
        assert!(glob_match(b"user:*:name", b"user:42:name"));
    }
}
