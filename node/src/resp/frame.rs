//! Client side: any RESP2/RESP3 reply frame.
//!
//! Two phases, as in the request parser: [`check`] walks the frame without
//! allocating and reports where it ends (or that more bytes are needed); only
//! then is it split off the buffer and [`decode`]d into a [`Frame`] whose bulk
//! strings are zero-copy slices. Attributes (`|`) are read and dropped, since
//! nothing in rstore uses them; streamed aggregates (`*?`) are refused.

use bytes::{Bytes, BytesMut};

use super::{Frame, Limits, LineEnd, ProtocolError, find_line_end, string_to_i64};

/// Aggregates nest at most this deep. Real replies nest a few levels; the
/// bound keeps a hostile `*1\r\n*1\r\n...` from overflowing the stack.
const MAX_DEPTH: usize = 128;

/// Parses one frame from the front of `buf`. `Ok(None)`: incomplete, `buf`
/// untouched. `Ok(Some(frame))`: exactly that frame was removed from `buf`.
pub fn parse_frame(buf: &mut BytesMut, limits: &Limits) -> Result<Option<Frame>, ProtocolError> {
    let Some(end) = check(buf, 0, limits, 0)? else {
        return Ok(None);
    };
    let data = buf.split_to(end).freeze();
    let (frame, _) = decode(&data, 0, limits, 0)?;
    Ok(Some(frame))
}

/// The line after the type byte at `pos`: `(content start, content end,
/// position after the CRLF)`, or `None` when its CRLF has not arrived.
fn read_line(
    buf: &[u8],
    pos: usize,
    limits: &Limits,
) -> Result<Option<(usize, usize, usize)>, ProtocolError> {
    let cr = match find_line_end(buf, pos + 1, limits.max_inline_len, b'\r') {
        LineEnd::Found(cr) => cr,
        LineEnd::NeedMore => return Ok(None),
        LineEnd::TooLong => return Err(ProtocolError::TooBigLine),
    };
    match buf.get(cr + 1) {
        None => Ok(None),
        Some(b'\n') => Ok(Some((pos + 1, cr, cr + 2))),
        Some(_) => Err(ProtocolError::ExpectedCrlf),
    }
}

/// What a frame's header line announces.
enum Header {
    /// A complete one-line value.
    Line,
    /// `len` bytes of data and a CRLF follow.
    Blob(usize),
    /// `count` frames follow.
    Aggregate(usize),
    /// The frame is the null bulk or null array; nothing follows.
    Null,
}

/// Classifies and validates the header of the frame of type `kind` whose line
/// content is `line`.
fn header(kind: u8, line: &[u8], limits: &Limits) -> Result<Header, ProtocolError> {
    match kind {
        b'+' | b'-' => Ok(Header::Line),
        b':' => string_to_i64(line)
            .map(|_| Header::Line)
            .ok_or(ProtocolError::InvalidValue("integer")),
        b'_' if line.is_empty() => Ok(Header::Line),
        b'_' => Err(ProtocolError::InvalidValue("null")),
        b',' => parse_double(line).map(|_| Header::Line),
        b'#' if line == b"t" || line == b"f" => Ok(Header::Line),
        b'#' => Err(ProtocolError::InvalidValue("boolean")),
        b'(' if is_big_number(line) => Ok(Header::Line),
        b'(' => Err(ProtocolError::InvalidValue("big number")),
        b'$' | b'=' | b'!' => match string_to_i64(line) {
            Some(-1) if kind == b'$' => Ok(Header::Null),
            Some(len) => usize::try_from(len)
                .ok()
                .filter(|&len| len <= limits.max_bulk_len)
                .filter(|&len| kind != b'=' || len >= 4)
                .map(Header::Blob)
                .ok_or(ProtocolError::InvalidBulkLength),
            None => Err(ProtocolError::InvalidBulkLength),
        },
        b'*' | b'~' | b'>' | b'%' | b'|' => match string_to_i64(line) {
            Some(-1) if kind == b'*' => Ok(Header::Null),
            Some(count) => {
                let count = usize::try_from(count)
                    .ok()
                    .filter(|&count| count <= limits.max_args)
                    .ok_or(ProtocolError::InvalidMultibulkLength)?;
                // Maps and attributes carry a key and a value per entry.
                let frames = if matches!(kind, b'%' | b'|') {
                    count.saturating_mul(2)
                } else {
                    count
                };
                Ok(Header::Aggregate(frames))
            }
            None => Err(ProtocolError::InvalidMultibulkLength),
        },
        other => Err(ProtocolError::UnknownType(other)),
    }
}

fn is_known_type(kind: u8) -> bool {
    b"+-:_,#($=!*~>%|".contains(&kind)
}

fn is_big_number(line: &[u8]) -> bool {
    let digits = match line.split_first() {
        Some((b'-' | b'+', rest)) => rest,
        _ => line,
    };
    !digits.is_empty() && digits.iter().all(u8::is_ascii_digit)
}

fn parse_double(line: &[u8]) -> Result<f64, ProtocolError> {
    std::str::from_utf8(line)
        .ok()
        .and_then(|text| text.parse::<f64>().ok())
        .ok_or(ProtocolError::InvalidValue("double"))
}

/// Phase 1: the end of the frame at `pos`, or `None` if it is incomplete.
fn check(
    buf: &[u8],
    pos: usize,
    limits: &Limits,
    depth: usize,
) -> Result<Option<usize>, ProtocolError> {
    if depth > MAX_DEPTH {
        return Err(ProtocolError::TooDeep);
    }
    let Some(&kind) = buf.get(pos) else {
        return Ok(None);
    };
    // Refuse garbage at once rather than waiting for a line that may not come.
    if !is_known_type(kind) {
        return Err(ProtocolError::UnknownType(kind));
    }
    let Some((start, end, mut next)) = read_line(buf, pos, limits)? else {
        return Ok(None);
    };
    match header(kind, &buf[start..end], limits)? {
        Header::Line | Header::Null => {}
        Header::Blob(len) => {
            let data_end = next.saturating_add(len);
            match buf.get(data_end..data_end.saturating_add(2)) {
                None => return Ok(None),
                Some(b"\r\n") => {}
                Some(_) => return Err(ProtocolError::ExpectedCrlf),
            }
            if kind == b'=' && buf.get(next + 3) != Some(&b':') {
                return Err(ProtocolError::InvalidValue("verbatim string"));
            }
            next = data_end + 2;
        }
        Header::Aggregate(count) => {
            for _ in 0..count {
                let Some(child_end) = check(buf, next, limits, depth + 1)? else {
                    return Ok(None);
                };
                next = child_end;
            }
            // An attribute annotates the frame that follows it.
            if kind == b'|' {
                return check(buf, next, limits, depth + 1);
            }
        }
    }
    Ok(Some(next))
}

/// Phase 2: the frame at `pos` of a buffer that [`check`] accepted, and the
/// position after it. Errors cannot happen here on checked input, but the
/// checks stay so that no input can make this panic.
fn decode(
    data: &Bytes,
    pos: usize,
    limits: &Limits,
    depth: usize,
) -> Result<(Frame, usize), ProtocolError> {
    // Decoding the same bytes as `check` can only fail the same way; this is
    // the error for "check accepted something decode cannot read".
    const TRUNCATED: ProtocolError = ProtocolError::InvalidValue("frame");
    if depth > MAX_DEPTH {
        return Err(ProtocolError::TooDeep);
    }
    let kind = *data.get(pos).ok_or(TRUNCATED)?;
    let (start, end, next) = read_line(data, pos, limits)?.ok_or(TRUNCATED)?;
    let line = &data[start..end];
    let text = || String::from_utf8_lossy(line).into_owned();
    let blob = |len: usize| {
        let blob_end = next.checked_add(len)?;
        data.get(next..blob_end).map(|_| data.slice(next..blob_end))
    };
    let frame = match header(kind, line, limits)? {
        Header::Null if kind == b'*' => (Frame::NullArray, next),
        Header::Null => (Frame::Null, next),
        Header::Line => {
            let frame = match kind {
                b'+' => Frame::Simple(text()),
                b'-' => Frame::Error(text()),
                b':' => Frame::Integer(string_to_i64(line).ok_or(TRUNCATED)?),
                b'_' => Frame::Null,
                b',' => Frame::Double(parse_double(line)?),
                b'#' => Frame::Boolean(line == b"t"),
                _ => Frame::BigNumber(text()),
            };
            (frame, next)
        }
        Header::Blob(len) => {
            let bytes = blob(len).ok_or(TRUNCATED)?;
            let frame = match kind {
                b'$' => Frame::Bulk(bytes),
                b'!' => Frame::Error(String::from_utf8_lossy(&bytes).into_owned()),
                _ => {
                    let format = bytes
                        .get(..3)
                        .and_then(|f| <[u8; 3]>::try_from(f).ok())
                        .ok_or(TRUNCATED)?;
                    if bytes.len() < 4 {
                        return Err(TRUNCATED);
                    }
                    Frame::Verbatim {
                        format,
                        text: bytes.slice(4..),
                    }
                }
            };
            (frame, next + len + 2)
        }
        Header::Aggregate(count) => {
            let mut next = next;
            // `count` was bounded by the limits and `check` saw every
            // element, so this capacity is backed by received bytes.
            let mut items = Vec::with_capacity(count);
            for _ in 0..count {
                let (item, after) = decode(data, next, limits, depth + 1)?;
                items.push(item);
                next = after;
            }
            let frame = match kind {
                b'*' => Frame::Array(items),
                b'~' => Frame::Set(items),
                b'>' => Frame::Push(items),
                _ => {
                    let mut pairs = Vec::with_capacity(items.len() / 2);
                    let mut iter = items.into_iter();
                    while let (Some(key), Some(value)) = (iter.next(), iter.next()) {
                        pairs.push((key, value));
                    }
                    if kind == b'|' {
                        return decode(data, next, limits, depth + 1);
                    }
                    Frame::Map(pairs)
                }
            };
            (frame, next)
        }
    };
    Ok(frame)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)] // a failed unwrap is a failed test
mod tests {
    use super::*;
    use crate::resp::{Protocol, encode};

    fn parse(input: &[u8]) -> Result<Option<Frame>, ProtocolError> {
        parse_frame(&mut BytesMut::from(input), &Limits::default())
    }

    fn bulk(s: &'static str) -> Frame {
        Frame::Bulk(Bytes::from_static(s.as_bytes()))
    }

    #[test]
    fn every_type() {
        let cases: Vec<(&[u8], Frame)> = vec![
            (b"+OK\r\n", Frame::ok()),
            (b"-ERR x\r\n", Frame::Error("ERR x".into())),
            (b":-7\r\n", Frame::Integer(-7)),
            (b"$3\r\na\r\n\r\n", bulk("a\r\n")),
            (b"$-1\r\n", Frame::Null),
            (b"_\r\n", Frame::Null),
            (b"*-1\r\n", Frame::NullArray),
            (
                b"*2\r\n:1\r\n+a\r\n",
                Frame::Array(vec![Frame::Integer(1), Frame::Simple("a".into())]),
            ),
            (
                b"%1\r\n+k\r\n:1\r\n",
                Frame::Map(vec![(Frame::Simple("k".into()), Frame::Integer(1))]),
            ),
            (b"~1\r\n#t\r\n", Frame::Set(vec![Frame::Boolean(true)])),
            (b">1\r\n#f\r\n", Frame::Push(vec![Frame::Boolean(false)])),
            (b",1.25\r\n", Frame::Double(1.25)),
            (b",-inf\r\n", Frame::Double(f64::NEG_INFINITY)),
            (b",1e3\r\n", Frame::Double(1000.0)),
            (
                b"=8\r\nmkd:abcd\r\n",
                Frame::Verbatim {
                    format: *b"mkd",
                    text: Bytes::from_static(b"abcd"),
                },
            ),
            (b"(-123\r\n", Frame::BigNumber("-123".into())),
            (b"!5\r\nERR x\r\n", Frame::Error("ERR x".into())),
            (b"|1\r\n+ttl\r\n:3\r\n:42\r\n", Frame::Integer(42)),
        ];
        for (input, want) in cases {
            let mut buf = BytesMut::from(input);
            assert_eq!(
                parse_frame(&mut buf, &Limits::default()),
                Ok(Some(want)),
                "{:?}",
                String::from_utf8_lossy(input)
            );
            assert!(buf.is_empty());
            for cut in 0..input.len() {
                let mut buf = BytesMut::from(&input[..cut]);
                assert_eq!(parse_frame(&mut buf, &Limits::default()), Ok(None));
                assert_eq!(buf.len(), cut);
            }
        }
        let nan = parse(b",nan\r\n").unwrap();
        assert!(matches!(nan, Some(Frame::Double(d)) if d.is_nan()));
    }

    #[test]
    fn errors() {
        use ProtocolError::*;
        let cases: &[(&[u8], ProtocolError)] = &[
            (b"@x\r\n", UnknownType(b'@')),
            (b"*1\r\n@", UnknownType(b'@')),
            (b":1.5\r\n", InvalidValue("integer")),
            (b"_x\r\n", InvalidValue("null")),
            (b",abc\r\n", InvalidValue("double")),
            (b"#x\r\n", InvalidValue("boolean")),
            (b"(12a\r\n", InvalidValue("big number")),
            (b"$-2\r\n", InvalidBulkLength),
            (b"=3\r\nabc\r\n", InvalidBulkLength),
            (b"=4\r\nabcd\r\n", InvalidValue("verbatim string")),
            (b"$1\r\nab\r\n", ExpectedCrlf),
            (b"+a\rb\r\n", ExpectedCrlf),
            (b"%-1\r\n", InvalidMultibulkLength),
            (b"*?\r\n", InvalidMultibulkLength),
        ];
        for (input, err) in cases {
            assert_eq!(
                parse(input).as_ref(),
                Err(err),
                "{:?}",
                String::from_utf8_lossy(input)
            );
        }
        let mut deep = b"*1\r\n".repeat(MAX_DEPTH + 2);
        deep.extend_from_slice(b":1\r\n");
        assert_eq!(parse(&deep), Err(TooDeep));
        let limits = Limits {
            max_args: 3,
            max_bulk_len: 3,
            max_inline_len: 8,
        };
        let parse_limited = |input: &[u8]| parse_frame(&mut BytesMut::from(input), &limits);
        assert_eq!(parse_limited(b"*4\r\n"), Err(InvalidMultibulkLength));
        assert_eq!(parse_limited(b"$4\r\n"), Err(InvalidBulkLength));
        assert_eq!(parse_limited(b"+123456789"), Err(TooBigLine));
    }

    #[test]
    fn pipelined_replies_come_out_in_order() {
        let mut buf = BytesMut::new();
        let frames = [Frame::ok(), Frame::Integer(3), bulk("x")];
        for frame in &frames {
            encode(frame, Protocol::Resp3, &mut buf);
        }
        for frame in frames {
            assert_eq!(parse_frame(&mut buf, &Limits::default()), Ok(Some(frame)));
        }
        assert_eq!(parse_frame(&mut buf, &Limits::default()), Ok(None));
    }
}
