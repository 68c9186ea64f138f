//! RESP2/RESP3 codec.
//!
//! Three jobs, three submodules:
//! - [`parse_request`] (server side): one client command, either a RESP array
//!   of bulk strings or an inline line, with Redis's limits and Redis's exact
//!   protocol error texts, because clients and tests match on them.
//! - [`encode`] and the `encode_*` fast paths: replies in the protocol the
//!   connection negotiated (RESP3 types degrade in RESP2 exactly as Redis does).
//! - [`parse_frame`] (client side): any RESP2/RESP3 reply, for tests, tools and
//!   the replication client.
//!
//! Decoding is two-phase everywhere: first check that a whole request or frame
//! is buffered (walking only the headers and comparing lengths, so a 100 MB
//! bulk that trickles in costs O(1) per call, not a rescan of the payload),
//! then split it off the buffer once with `split_to(..).freeze()` and hand out
//! zero-copy [`Bytes`] slices of it. "Need more bytes" is `Ok(None)`, never an
//! error; a malformed input is an error the caller replies with and then closes
//! the connection, as Redis does.
//!
//! No length read from the wire is ever used to allocate before the bytes it
//! announces have arrived: counts and lengths are checked against [`Limits`]
//! first, and vectors are sized only after the completeness check.

mod encode;
mod frame;
mod request;

use bytes::Bytes;

pub use encode::{
    encode, encode_array_len, encode_bool, encode_bulk, encode_double, encode_error, encode_int,
    encode_map_len, encode_null, encode_null_array, encode_push_len, encode_set_len, encode_simple,
    format_double,
};
pub use frame::parse_frame;
pub use request::parse_request;

/// A RESP value. Replies are built from these (or written directly with the
/// `encode_*` fast paths); [`parse_frame`] produces them on the client side.
#[derive(Debug, Clone, PartialEq)]
pub enum Frame {
    /// `+OK`: a status line. Must not contain CR or LF (they are replaced by
    /// spaces when encoding, so a reply can never break the framing).
    Simple(String),
    /// `-ERR message`: the full error text including its code prefix
    /// (`ERR`, `WRONGTYPE`, `READONLY`, ...). CR/LF are replaced as above.
    Error(String),
    /// `:123`
    Integer(i64),
    /// `$3\r\nabc\r\n`: binary-safe string.
    Bulk(Bytes),
    /// The null reply: `$-1` in RESP2, `_` in RESP3.
    Null,
    /// `*n`: an array of frames.
    Array(Vec<Frame>),
    /// The null array: `*-1` in RESP2, `_` in RESP3 (as Redis sends it).
    NullArray,
    /// RESP3 `%n`; a flat array of 2n elements in RESP2.
    Map(Vec<(Frame, Frame)>),
    /// RESP3 `~n`; an array in RESP2.
    Set(Vec<Frame>),
    /// RESP3 `,1.5`; a bulk string in RESP2.
    Double(f64),
    /// RESP3 `#t`/`#f`; integer 1/0 in RESP2.
    Boolean(bool),
    /// RESP3 `=len\r\ntxt:...`; a bulk string of `text` alone in RESP2.
    Verbatim { format: [u8; 3], text: Bytes },
    /// RESP3 `(12345...`; a bulk string in RESP2.
    BigNumber(String),
    /// RESP3 out-of-band `>n`; an array in RESP2.
    Push(Vec<Frame>),
}

impl Frame {
    /// `+OK`, the most common reply.
    pub fn ok() -> Frame {
        Frame::Simple("OK".to_owned())
    }

    /// A bulk string from anything that converts to [`Bytes`].
    pub fn bulk(data: impl Into<Bytes>) -> Frame {
        Frame::Bulk(data.into())
    }
}

/// The reply protocol of a connection; `HELLO 3` switches to RESP3.
#[derive(Clone, Copy, PartialEq, Eq, Debug, Default)]
pub enum Protocol {
    #[default]
    Resp2,
    Resp3,
}

/// Input limits. They bound the memory an unauthenticated or hostile client
/// can make the server hold: a length or count above a limit is refused as
/// soon as its header line is read, before any of the payload is buffered.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Limits {
    /// Largest bulk string accepted (Redis's `proto-max-bulk-len`, 512 MiB).
    pub max_bulk_len: usize,
    /// Largest argument count of one request, and largest aggregate count in
    /// [`parse_frame`] (Redis 6's 1024*1024).
    pub max_args: usize,
    /// Longest inline command line, and longest header line (`*n` / `$n`)
    /// before its CR arrives (Redis's `PROTO_INLINE_MAX_SIZE`, 64 KiB).
    pub max_inline_len: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_bulk_len: 512 * 1024 * 1024,
            max_args: 1024 * 1024,
            max_inline_len: 64 * 1024,
        }
    }
}

/// A malformed request or frame. `Display` is the text Redis sends after
/// `-ERR ` for the same condition (from `processMultibulkBuffer` and
/// `processInlineBuffer` in Redis's networking.c), so clients and test suites
/// written against Redis see the same thing. The caller replies with it and
/// closes the connection.
#[derive(Debug, Clone, thiserror::Error, PartialEq, Eq)]
pub enum ProtocolError {
    /// `*n` where n is not a valid integer or exceeds [`Limits::max_args`].
    #[error("Protocol error: invalid multibulk length")]
    InvalidMultibulkLength,
    /// `$n` where n is not a valid integer, negative, or exceeds
    /// [`Limits::max_bulk_len`].
    #[error("Protocol error: invalid bulk length")]
    InvalidBulkLength,
    /// An element of a request array that is not a bulk string. The byte is
    /// shown as Redis's `%c` does, except CR/LF become spaces (as Redis's
    /// `addReplyErrorFormat` does) so the error line stays one line.
    #[error("Protocol error: expected '$', got '{}'", printable(*.0))]
    ExpectedDollar(u8),
    /// An inline line longer than [`Limits::max_inline_len`].
    #[error("Protocol error: too big inline request")]
    TooBigInlineRequest,
    /// A `*n` header line longer than [`Limits::max_inline_len`].
    #[error("Protocol error: too big mbulk count string")]
    TooBigMbulkCount,
    /// A `$n` header line longer than [`Limits::max_inline_len`].
    #[error("Protocol error: too big bulk count string")]
    TooBigBulkCount,
    /// An inline line with an unterminated quote, or a closing quote not
    /// followed by a space (Redis's `sdssplitargs` rules).
    #[error("Protocol error: unbalanced quotes in request")]
    UnbalancedQuotes,
    /// Bulk data (or a reply line) not followed by CRLF. Redis silently skips
    /// the two bytes after a bulk; rstore refuses, because a client whose
    /// lengths disagree with its data would otherwise have garbage executed
    /// as the next command. There is no Redis text for this.
    #[error("Protocol error: expected CRLF")]
    ExpectedCrlf,
    /// Client side: a reply starting with a byte that is no RESP type
    /// (hiredis's wording).
    #[error("Protocol error, got '{}' as reply type byte", printable(*.0))]
    UnknownType(u8),
    /// Client side: a reply value that does not parse as its type.
    #[error("Protocol error: invalid {0}")]
    InvalidValue(&'static str),
    /// Client side: a reply line longer than [`Limits::max_inline_len`].
    #[error("Protocol error: too big reply line")]
    TooBigLine,
    /// Client side: aggregates nested deeper than the parser recurses.
    #[error("Protocol error: reply nested too deeply")]
    TooDeep,
}

/// How an offending byte is shown in an error line: as Latin-1, with CR and LF
/// turned into spaces so the error cannot split the reply.
fn printable(byte: u8) -> char {
    match byte {
        b'\r' | b'\n' => ' ',
        other => char::from(other),
    }
}

/// Parses a decimal i64 with exactly Redis's `string2ll` rules: no sign but a
/// leading `-`, no leading zeros, no spaces, at most 20 characters, no
/// overflow. Public because commands (INCR, EXPIRE, ...) must accept exactly
/// the integers Redis accepts.
pub fn string_to_i64(s: &[u8]) -> Option<i64> {
    // Redis: `slen == 0 || slen >= LONG_STR_SIZE` (21) is not a number.
    if s.is_empty() || s.len() >= 21 {
        return None;
    }
    if s == b"0" {
        return Some(0);
    }
    let (negative, digits) = match s.split_first() {
        Some((b'-', rest)) => (true, rest),
        _ => (false, s),
    };
    match digits.first() {
        Some(b'1'..=b'9') => {}
        _ => return None,
    }
    let mut value: u64 = 0;
    for &b in digits {
        if !b.is_ascii_digit() {
            return None;
        }
        value = value.checked_mul(10)?.checked_add(u64::from(b - b'0'))?;
    }
    if negative {
        // -(i64::MIN) does not fit in i64; go through i128-free arithmetic.
        if value == i64::MIN.unsigned_abs() {
            Some(i64::MIN)
        } else {
            i64::try_from(value).ok().map(|v| -v)
        }
    } else {
        i64::try_from(value).ok()
    }
}

/// Where a header line ends.
enum LineEnd {
    /// Index of the terminator byte.
    Found(usize),
    /// No terminator yet, and the line is still within the limit.
    NeedMore,
    /// No terminator within `max_len` bytes: refuse instead of buffering more.
    TooLong,
}

/// Finds `terminator` in `buf[start..]`, looking at most `max_len + 1` bytes
/// ahead so a hostile peer cannot make every call rescan a huge buffer, and
/// so the verdict for a given line does not depend on how it was split into
/// reads (a line of more than `max_len` bytes is refused either way).
fn find_line_end(buf: &[u8], start: usize, max_len: usize, terminator: u8) -> LineEnd {
    let rest = buf.get(start..).unwrap_or_default();
    let window = rest.get(..max_len.saturating_add(1)).unwrap_or(rest);
    match window.iter().position(|&b| b == terminator) {
        Some(i) => LineEnd::Found(start + i),
        None if rest.len() > max_len => LineEnd::TooLong,
        None => LineEnd::NeedMore,
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)] // a failed unwrap is a failed test
mod tests {
    use super::*;

    #[test]
    fn string_to_i64_follows_string2ll() {
        assert_eq!(string_to_i64(b"0"), Some(0));
        assert_eq!(string_to_i64(b"123"), Some(123));
        assert_eq!(string_to_i64(b"-5"), Some(-5));
        assert_eq!(string_to_i64(b"9223372036854775807"), Some(i64::MAX));
        assert_eq!(string_to_i64(b"-9223372036854775808"), Some(i64::MIN));
        for bad in [
            &b""[..],
            b"-",
            b"-0",
            b"+1",
            b"01",
            b" 1",
            b"1 ",
            b"1a",
            b"9223372036854775808",
            b"-9223372036854775809",
            b"99999999999999999999",
            b"000000000000000000001",
        ] {
            assert_eq!(
                string_to_i64(bad),
                None,
                "{:?}",
                String::from_utf8_lossy(bad)
            );
        }
    }

    #[test]
    fn error_texts_are_redis_texts() {
        use ProtocolError::*;
        let cases = [
            (
                InvalidMultibulkLength,
                "Protocol error: invalid multibulk length",
            ),
            (InvalidBulkLength, "Protocol error: invalid bulk length"),
            (
                ExpectedDollar(b'x'),
                "Protocol error: expected '$', got 'x'",
            ),
            (
                ExpectedDollar(b'\r'),
                "Protocol error: expected '$', got ' '",
            ),
            (
                TooBigInlineRequest,
                "Protocol error: too big inline request",
            ),
            (
                TooBigMbulkCount,
                "Protocol error: too big mbulk count string",
            ),
            (TooBigBulkCount, "Protocol error: too big bulk count string"),
            (
                UnbalancedQuotes,
                "Protocol error: unbalanced quotes in request",
            ),
            (ExpectedCrlf, "Protocol error: expected CRLF"),
            (
                UnknownType(b'@'),
                "Protocol error, got '@' as reply type byte",
            ),
            (InvalidValue("double"), "Protocol error: invalid double"),
            (TooBigLine, "Protocol error: too big reply line"),
            (TooDeep, "Protocol error: reply nested too deeply"),
        ];
        for (err, text) in cases {
            assert_eq!(err.to_string(), text);
        }
    }

    #[test]
    fn line_search_is_bounded() {
        assert!(matches!(
            find_line_end(b"*12\r\n", 0, 64, b'\r'),
            LineEnd::Found(3)
        ));
        assert!(matches!(
            find_line_end(b"*12", 0, 64, b'\r'),
            LineEnd::NeedMore
        ));
        assert!(matches!(
            find_line_end(b"*1234", 0, 4, b'\r'),
            LineEnd::TooLong
        ));
        assert!(matches!(
            find_line_end(b"*123\r", 0, 4, b'\r'),
            LineEnd::Found(4)
        ));
        assert!(matches!(
            find_line_end(b"*1234\r", 0, 4, b'\r'),
            LineEnd::TooLong
        ));
        assert!(matches!(
            find_line_end(b"ab", 5, 4, b'\r'),
            LineEnd::NeedMore
        ));
    }
}
