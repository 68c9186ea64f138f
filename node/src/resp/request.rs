//! Server side: client requests, as Redis's `processInputBuffer` reads them.
//!
//! A request starting with `*` is a multibulk (array of bulk strings); any
//! other first byte starts an inline command line, split by the rules of
//! Redis's `sdssplitargs`. Empty requests (`*0`, `*-1`, a blank line) are
//! consumed and skipped, as Redis skips them.

use bytes::{Buf, Bytes, BytesMut};

use super::{Limits, LineEnd, ProtocolError, find_line_end, string_to_i64};

/// Parses one client request from the front of `buf`.
///
/// - `Ok(Some(args))`: exactly that request was removed from `buf`; `args` are
///   zero-copy slices of it. Never empty.
/// - `Ok(None)`: no whole request is buffered yet. Any complete *empty*
///   requests in front of it were consumed (they are no-ops in Redis), but
///   never part of a real request, so the caller just reads more and calls
///   again.
/// - `Err(e)`: protocol error. The caller replies `-ERR {e}` and closes the
///   connection; `buf` is then in an unspecified state.
pub fn parse_request(
    buf: &mut BytesMut,
    limits: &Limits,
) -> Result<Option<Vec<Bytes>>, ProtocolError> {
    loop {
        let Some(&first) = buf.first() else {
            return Ok(None);
        };
        let step = if first == b'*' {
            parse_multibulk(buf, limits)?
        } else {
            parse_inline(buf, limits)?
        };
        match step {
            Step::NeedMore => return Ok(None),
            Step::Skipped => {}
            Step::Request(args) => return Ok(Some(args)),
        }
    }
}

enum Step {
    NeedMore,
    /// An empty request was consumed; look at what follows it.
    Skipped,
    Request(Vec<Bytes>),
}

enum Scan {
    NeedMore,
    /// The request occupies `buf[..end]` and has `argc` arguments.
    Complete {
        end: usize,
        argc: usize,
    },
}

/// Walks the headers of a multibulk request, calling `on_arg(start, len)` for
/// each argument's data. Payload bytes are never looked at, only counted, so
/// checking a partly arrived large request is O(number of arguments).
///
/// Error order follows Redis: a header line is judged only once its CR has
/// arrived, except that a header with no CR within `max_inline_len` bytes is
/// refused at once.
fn scan_multibulk(
    buf: &[u8],
    limits: &Limits,
    mut on_arg: impl FnMut(usize, usize),
) -> Result<Scan, ProtocolError> {
    let cr = match find_line_end(buf, 0, limits.max_inline_len, b'\r') {
        LineEnd::Found(cr) => cr,
        LineEnd::NeedMore => return Ok(Scan::NeedMore),
        LineEnd::TooLong => return Err(ProtocolError::TooBigMbulkCount),
    };
    let Some(&lf) = buf.get(cr + 1) else {
        return Ok(Scan::NeedMore);
    };
    let count = buf
        .get(1..cr)
        .and_then(string_to_i64)
        .ok_or(ProtocolError::InvalidMultibulkLength)?;
    // Redis does not look at the byte after CR; a line that does not end in
    // CRLF is malformed, and its length cannot be trusted either.
    if lf != b'\n' {
        return Err(ProtocolError::InvalidMultibulkLength);
    }
    let mut pos = cr + 2;
    // `*0`, `*-1`, `*-10`: Redis consumes the header and runs nothing.
    let Ok(argc) = usize::try_from(count) else {
        return Ok(Scan::Complete { end: pos, argc: 0 });
    };
    if argc > limits.max_args {
        return Err(ProtocolError::InvalidMultibulkLength);
    }
    for _ in 0..argc {
        let cr = match find_line_end(buf, pos, limits.max_inline_len, b'\r') {
            LineEnd::Found(cr) => cr,
            LineEnd::NeedMore => return Ok(Scan::NeedMore),
            LineEnd::TooLong => return Err(ProtocolError::TooBigBulkCount),
        };
        let (Some(&prefix), Some(&lf)) = (buf.get(pos), buf.get(cr + 1)) else {
            return Ok(Scan::NeedMore);
        };
        if prefix != b'$' {
            return Err(ProtocolError::ExpectedDollar(prefix));
        }
        let len = buf
            .get(pos + 1..cr)
            .and_then(string_to_i64)
            .and_then(|len| usize::try_from(len).ok())
            .filter(|&len| len <= limits.max_bulk_len)
            .ok_or(ProtocolError::InvalidBulkLength)?;
        if lf != b'\n' {
            return Err(ProtocolError::InvalidBulkLength);
        }
        let start = cr + 2;
        let end = start
            .checked_add(len)
            .and_then(|e| e.checked_add(2))
            .ok_or(ProtocolError::InvalidBulkLength)?;
        match buf.get(end - 2..end) {
            None => return Ok(Scan::NeedMore),
            Some(b"\r\n") => {}
            Some(_) => return Err(ProtocolError::ExpectedCrlf),
        }
        on_arg(start, len);
        pos = end;
    }
    Ok(Scan::Complete { end: pos, argc })
}

/// Arguments whose positions the first walk keeps (on the stack); a request
/// with more is walked a second time to slice them.
const NOTED_ARGS: usize = 8;

fn parse_multibulk(buf: &mut BytesMut, limits: &Limits) -> Result<Step, ProtocolError> {
    // Phase 1: is the whole request here? Nothing is allocated; the first
    // few arguments' positions are noted on the way.
    let mut noted = [(0usize, 0usize); NOTED_ARGS];
    let mut seen = 0;
    let found = scan_multibulk(buf, limits, |start, len| {
        if let Some(slot) = noted.get_mut(seen) {
            *slot = (start, len);
        }
        seen += 1;
    })?;
    let (end, argc) = match found {
        Scan::NeedMore => return Ok(Step::NeedMore),
        Scan::Complete { end, argc } => (end, argc),
    };
    if argc == 0 {
        buf.advance(end);
        return Ok(Step::Skipped);
    }
    // Phase 2: detach it once and slice the arguments out of it: from the
    // noted positions (most commands), or by walking the header lines again
    // (cheaper than collecting every position for every incomplete attempt
    // of a large request).
    let request = buf.split_to(end).freeze();
    let mut args = Vec::with_capacity(argc);
    if let Some(spans) = noted.get(..argc) {
        args.extend(
            spans
                .iter()
                .map(|&(start, len)| request.slice(start..start + len)),
        );
    } else {
        scan_multibulk(&request, limits, |start, len| {
            args.push(request.slice(start..start + len));
        })?;
    }
    Ok(Step::Request(args))
}

fn parse_inline(buf: &mut BytesMut, limits: &Limits) -> Result<Step, ProtocolError> {
    let newline = match find_line_end(buf, 0, limits.max_inline_len, b'\n') {
        LineEnd::Found(newline) => newline,
        LineEnd::NeedMore => return Ok(Step::NeedMore),
        LineEnd::TooLong => return Err(ProtocolError::TooBigInlineRequest),
    };
    let line = buf.split_to(newline + 1).freeze();
    // Both "\n" and "\r\n" end an inline line.
    let content_len = match newline.checked_sub(1).and_then(|i| line.get(i)) {
        Some(b'\r') => newline - 1,
        _ => newline,
    };
    let args = split_args(&line, content_len)?;
    if args.is_empty() {
        Ok(Step::Skipped)
    } else if args.len() > limits.max_args {
        Err(ProtocolError::InvalidMultibulkLength)
    } else {
        Ok(Step::Request(args))
    }
}

/// C's `isspace` in the C locale, which `sdssplitargs` uses to skip blanks.
fn is_c_space(b: u8) -> bool {
    matches!(b, b' ' | b'\t' | b'\n' | 0x0b | 0x0c | b'\r')
}

fn hex_value(b: u8) -> Option<u8> {
    match b {
        b'0'..=b'9' => Some(b - b'0'),
        b'a'..=b'f' => Some(b - b'a' + 10),
        b'A'..=b'F' => Some(b - b'A' + 10),
        _ => None,
    }
}

/// Splits `line[..len]` into arguments exactly as Redis's `sdssplitargs`:
/// blanks separate; `"..."` understands `\xHH`, `\n`, `\r`, `\t`, `\b`, `\a`
/// and `\<any>`; `'...'` understands only `\'`; a closing quote must be
/// followed by a blank or the end; an unquoted prefix may run into a quote
/// (`a"b c"` is `ab c`). Like the C code, a NUL byte ends the line.
///
/// Unquoted arguments are zero-copy slices of `line`; only quoted ones, whose
/// bytes differ from the wire, are copied.
fn split_args(line: &Bytes, len: usize) -> Result<Vec<Bytes>, ProtocolError> {
    let content = line.get(..len).unwrap_or_default();
    let end = content
        .iter()
        .position(|&b| b == 0)
        .unwrap_or(content.len());
    let s = content.get(..end).unwrap_or_default();
    // `at` mirrors reading the C string: past the end is the terminating NUL.
    let at = |i: usize| s.get(i).copied().unwrap_or(0);

    let mut args = Vec::new();
    let mut p = 0;
    loop {
        while p < s.len() && is_c_space(s[p]) {
            p += 1;
        }
        if p >= s.len() {
            return Ok(args);
        }
        let start = p;
        // Set once the argument meets a quote: from then on its bytes differ
        // from the wire and must be copied.
        let mut quoted: Option<Vec<u8>> = None;
        let mut quote = 0u8;
        let mut unquoted_end = p;
        loop {
            let c = at(p);
            match (quote, &mut quoted) {
                (b'"', Some(cur)) => {
                    if c == b'\\'
                        && at(p + 1) == b'x'
                        && let (Some(hi), Some(lo)) = (hex_value(at(p + 2)), hex_value(at(p + 3)))
                    {
                        cur.push(hi * 16 + lo);
                        p += 4;
                        continue;
                    }
                    if c == b'\\' && at(p + 1) != 0 {
                        cur.push(match at(p + 1) {
                            b'n' => b'\n',
                            b'r' => b'\r',
                            b't' => b'\t',
                            b'b' => 0x08,
                            b'a' => 0x07,
                            other => other,
                        });
                        p += 2;
                    } else if c == b'"' {
                        if at(p + 1) != 0 && !is_c_space(at(p + 1)) {
                            return Err(ProtocolError::UnbalancedQuotes);
                        }
                        p += 1;
                        break;
                    } else if c == 0 {
                        return Err(ProtocolError::UnbalancedQuotes);
                    } else {
                        cur.push(c);
                        p += 1;
                    }
                }
                (b'\'', Some(cur)) => {
                    if c == b'\\' && at(p + 1) == b'\'' {
                        cur.push(b'\'');
                        p += 2;
                    } else if c == b'\'' {
                        if at(p + 1) != 0 && !is_c_space(at(p + 1)) {
                            return Err(ProtocolError::UnbalancedQuotes);
                        }
                        p += 1;
                        break;
                    } else if c == 0 {
                        return Err(ProtocolError::UnbalancedQuotes);
                    } else {
                        cur.push(c);
                        p += 1;
                    }
                }
                _ => match c {
                    // sdssplitargs ends an unquoted token on exactly these
                    // (not on \v or \f, although it skips them between tokens).
                    b' ' | b'\n' | b'\r' | b'\t' => {
                        unquoted_end = p;
                        p += 1;
                        break;
                    }
                    0 => {
                        unquoted_end = p;
                        break;
                    }
                    b'"' | b'\'' => {
                        quote = c;
                        quoted = Some(s[start..p].to_vec());
                        p += 1;
                    }
                    _ => p += 1,
                },
            }
        }
        args.push(match quoted {
            Some(bytes) => Bytes::from(bytes),
            None => line.slice(start..unquoted_end),
        });
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)] // a failed unwrap is a failed test
mod tests {
    use super::*;

    fn parse(input: &[u8]) -> Result<Option<Vec<Bytes>>, ProtocolError> {
        parse_request(&mut BytesMut::from(input), &Limits::default())
    }

    fn args(list: &[&[u8]]) -> Vec<Bytes> {
        list.iter().map(|a| Bytes::copy_from_slice(a)).collect()
    }

    #[test]
    fn multibulk_request() {
        let mut buf =
            BytesMut::from(&b"*3\r\n$3\r\nSET\r\n$16\r\nkey:000000001234\r\n$3\r\nxxx\r\nrest"[..]);
        let got = parse_request(&mut buf, &Limits::default()).unwrap();
        assert_eq!(got, Some(args(&[b"SET", b"key:000000001234", b"xxx"])));
        assert_eq!(&buf[..], b"rest");
    }

    #[test]
    fn binary_and_empty_args() {
        let got = parse(b"*2\r\n$0\r\n\r\n$4\r\n\r\n\0\xff\r\n").unwrap();
        assert_eq!(got, Some(args(&[b"", b"\r\n\0\xff"])));
    }

    #[test]
    fn incomplete_leaves_buffer_untouched() {
        let whole = b"*2\r\n$4\r\nECHO\r\n$5\r\nhello\r\n";
        for cut in 0..whole.len() {
            let mut buf = BytesMut::from(&whole[..cut]);
            assert_eq!(
                parse_request(&mut buf, &Limits::default()),
                Ok(None),
                "cut {cut}"
            );
            assert_eq!(&buf[..], &whole[..cut]);
        }
    }

    #[test]
    fn empty_multibulk_is_skipped() {
        let mut buf = BytesMut::from(&b"*0\r\n*-1\r\n*-10\r\n*1\r\n$4\r\nPING\r\n"[..]);
        let got = parse_request(&mut buf, &Limits::default()).unwrap();
        assert_eq!(got, Some(args(&[b"PING"])));
        assert!(buf.is_empty());
        let mut buf = BytesMut::from(&b"*0\r\n"[..]);
        assert_eq!(parse_request(&mut buf, &Limits::default()), Ok(None));
        assert!(buf.is_empty());
    }

    #[test]
    fn multibulk_errors() {
        use ProtocolError::*;
        let cases: &[(&[u8], ProtocolError)] = &[
            (b"*20000000\r\n", InvalidMultibulkLength),
            (b"*3000000000\r\n", InvalidMultibulkLength),
            (b"*abc\r\n", InvalidMultibulkLength),
            (b"*\r\n", InvalidMultibulkLength),
            (b"*+1\r\n", InvalidMultibulkLength),
            (b"*1\rx", InvalidMultibulkLength),
            (
                b"*3\r\n$3\r\nSET\r\n$1\r\nx\r\nfooz\r\n",
                ExpectedDollar(b'f'),
            ),
            (b"*1\r\n\r\n", ExpectedDollar(b'\r')),
            (b"*3\r\n$3\r\nSET\r\n$1\r\nx\r\n$-10\r\n", InvalidBulkLength),
            (b"*1\r\n$-1\r\n", InvalidBulkLength),
            (b"*1\r\n$x\r\n", InvalidBulkLength),
            (b"*1\r\n$\r\n", InvalidBulkLength),
            (b"*1\r\n$536870913\r\n", InvalidBulkLength),
            (b"*1\r\n$99999999999999999999999\r\n", InvalidBulkLength),
            (b"*1\r\n$1\rx", InvalidBulkLength),
            (b"*1\r\n$1\r\nabc\r\n", ExpectedCrlf),
        ];
        for (input, err) in cases {
            assert_eq!(
                parse(input).as_ref(),
                Err(err),
                "{:?}",
                String::from_utf8_lossy(input)
            );
        }
    }

    #[test]
    fn header_line_limits() {
        let limits = Limits::default();
        let mut long = vec![b'*'];
        long.resize(64 * 1024, b'1');
        assert_eq!(
            parse_request(&mut BytesMut::from(&long[..]), &limits),
            Ok(None)
        );
        long.push(b'1');
        assert_eq!(
            parse_request(&mut BytesMut::from(&long[..]), &limits),
            Err(ProtocolError::TooBigMbulkCount)
        );

        let mut bulk = b"*1\r\n".to_vec();
        bulk.resize(4 + 64 * 1024 + 1, b'X');
        assert_eq!(
            parse_request(&mut BytesMut::from(&bulk[..]), &limits),
            Err(ProtocolError::TooBigBulkCount)
        );
    }

    #[test]
    fn big_bulk_is_refused_before_its_payload() {
        let limits = Limits {
            max_bulk_len: 10,
            ..Limits::default()
        };
        assert_eq!(
            parse_request(&mut BytesMut::from(&b"*1\r\n$11\r\n"[..]), &limits),
            Err(ProtocolError::InvalidBulkLength)
        );
        assert_eq!(
            parse_request(&mut BytesMut::from(&b"*1\r\n$10\r\n"[..]), &limits),
            Ok(None)
        );
        let limits = Limits {
            max_args: 2,
            ..Limits::default()
        };
        assert_eq!(
            parse_request(&mut BytesMut::from(&b"*3\r\n"[..]), &limits),
            Err(ProtocolError::InvalidMultibulkLength)
        );
    }

    #[test]
    fn inline_commands() {
        let cases: &[(&[u8], Vec<Bytes>)] = &[
            (b"PING\r\n", args(&[b"PING"])),
            (b"PING\n", args(&[b"PING"])),
            (b"  set  a   b \r\n", args(&[b"set", b"a", b"b"])),
            (b"set a\tb\r\n", args(&[b"set", b"a", b"b"])),
            (b"set \"a b\" c\r\n", args(&[b"set", b"a b", b"c"])),
            (b"set 'a b' c\r\n", args(&[b"set", b"a b", b"c"])),
            (
                b"echo \"\\x41\\x4a\\n\\r\\t\\b\\a\\\\\\\"\\q\"\r\n",
                args(&[b"echo", b"AJ\n\r\t\x08\x07\\\"q"]),
            ),
            (b"echo \"\\x4\"\r\n", args(&[b"echo", b"x4"])),
            (b"echo 'it\\'s \\n'\r\n", args(&[b"echo", b"it's \\n"])),
            (b"echo a\"b c\"\r\n", args(&[b"echo", b"ab c"])),
            (b"echo \"\" ''\r\n", args(&[b"echo", b"", b""])),
            (b"echo a\x0bb\r\n", args(&[b"echo", b"a\x0bb"])),
            (b"echo a\rb\r\n", args(&[b"echo", b"a", b"b"])),
            (b"echo a\0b c\r\n", args(&[b"echo", b"a"])),
            (b"$3\r\n", args(&[b"$3"])),
        ];
        for (input, want) in cases {
            assert_eq!(
                parse(input).unwrap().as_ref(),
                Some(want),
                "{:?}",
                String::from_utf8_lossy(input)
            );
        }
    }

    #[test]
    fn empty_inline_lines_are_skipped() {
        let mut buf = BytesMut::from(&b"\r\n\n   \r\nPING\r\n"[..]);
        assert_eq!(
            parse_request(&mut buf, &Limits::default()),
            Ok(Some(args(&[b"PING"])))
        );
        assert!(buf.is_empty());
        assert_eq!(parse(b"\r\n"), Ok(None));
    }

    #[test]
    fn inline_errors() {
        for input in [
            &b"set \"a\r\n"[..],
            b"set 'a\r\n",
            b"set \"a\"b\r\n",
            b"set 'a'b\r\n",
            b"set \"a\\\"\r\n",
            b"set \"a\0\"\r\n",
        ] {
            assert_eq!(
                parse(input),
                Err(ProtocolError::UnbalancedQuotes),
                "{:?}",
                String::from_utf8_lossy(input)
            );
        }
        let mut long = vec![b'a'; 64 * 1024];
        assert_eq!(parse(&long), Ok(None));
        long.push(b'a');
        assert_eq!(parse(&long), Err(ProtocolError::TooBigInlineRequest));
        // A line over the limit is refused even if its newline came with it,
        // so the verdict does not depend on how the bytes were split.
        long.push(b'\n');
        assert_eq!(parse(&long), Err(ProtocolError::TooBigInlineRequest));
    }
}
