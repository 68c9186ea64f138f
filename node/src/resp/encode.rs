//! Reply encoding, with RESP3 types degraded for RESP2 clients the way Redis
//! degrades them (`addReplyMap`, `addReplyDouble`, `addReplyBool`, ... in
//! networking.c).
//!
//! The hot replies (bulk, integer, null, status, array header) have direct
//! `encode_*` functions so a command can answer without building a [`Frame`],
//! and integers are formatted by hand into a stack buffer: no `format!`, no
//! allocation beyond growing `out`.

use std::io::Write as _;

use bytes::{BufMut, BytesMut};

use super::{Frame, Protocol};

/// Appends `frame` to `out` in protocol `proto`.
pub fn encode(frame: &Frame, proto: Protocol, out: &mut BytesMut) {
    match frame {
        Frame::Simple(s) => encode_simple(s, out),
        Frame::Error(s) => encode_error(s, out),
        Frame::Integer(n) => encode_int(*n, out),
        Frame::Bulk(data) => encode_bulk(data, out),
        Frame::Null => encode_null(proto, out),
        Frame::NullArray => encode_null_array(proto, out),
        Frame::Array(items) => {
            encode_array_len(items.len(), out);
            encode_all(items, proto, out);
        }
        Frame::Map(pairs) => {
            encode_map_len(pairs.len(), proto, out);
            for (key, value) in pairs {
                encode(key, proto, out);
                encode(value, proto, out);
            }
        }
        Frame::Set(items) => {
            encode_set_len(items.len(), proto, out);
            encode_all(items, proto, out);
        }
        Frame::Push(items) => {
            encode_push_len(items.len(), proto, out);
            encode_all(items, proto, out);
        }
        Frame::Double(d) => encode_double(*d, proto, out),
        Frame::Boolean(b) => encode_bool(*b, proto, out),
        Frame::Verbatim { format, text } => match proto {
            Protocol::Resp3 => {
                write_header(b'=', text.len() as u64 + 4, out);
                out.reserve(text.len() + 6);
                out.put_slice(format);
                out.put_u8(b':');
                out.put_slice(text);
                out.put_slice(b"\r\n");
            }
            // Redis's addReplyVerbatim sends only the text to RESP2 clients.
            Protocol::Resp2 => encode_bulk(text, out),
        },
        Frame::BigNumber(digits) => match proto {
            Protocol::Resp3 => write_line(b'(', digits.as_bytes(), out),
            Protocol::Resp2 => encode_bulk(digits.as_bytes(), out),
        },
    }
}

fn encode_all(items: &[Frame], proto: Protocol, out: &mut BytesMut) {
    for item in items {
        encode(item, proto, out);
    }
}

/// `$len\r\ndata\r\n`.
pub fn encode_bulk(data: &[u8], out: &mut BytesMut) {
    out.reserve(data.len() + 26);
    write_header(b'$', data.len() as u64, out);
    out.put_slice(data);
    out.put_slice(b"\r\n");
}

/// The null bulk reply: `$-1` in RESP2, `_` in RESP3.
pub fn encode_null(proto: Protocol, out: &mut BytesMut) {
    out.extend_from_slice(match proto {
        Protocol::Resp2 => b"$-1\r\n",
        Protocol::Resp3 => b"_\r\n",
    });
}

/// The null array reply: `*-1` in RESP2, `_` in RESP3.
pub fn encode_null_array(proto: Protocol, out: &mut BytesMut) {
    out.extend_from_slice(match proto {
        Protocol::Resp2 => b"*-1\r\n",
        Protocol::Resp3 => b"_\r\n",
    });
}

/// `:n`.
pub fn encode_int(n: i64, out: &mut BytesMut) {
    let mut buf = [0u8; 24];
    let len = format_header(b':', n < 0, n.unsigned_abs(), &mut buf);
    out.extend_from_slice(&buf[..len]);
}

/// `+status`. CR and LF are replaced by spaces so a status can never inject
/// a second reply.
pub fn encode_simple(status: &str, out: &mut BytesMut) {
    write_line(b'+', status.as_bytes(), out);
}

/// `-message`, where `message` includes its code (`ERR ...`, `WRONGTYPE ...`).
/// CR and LF are replaced by spaces, as Redis's `addReplyErrorFormat` does.
pub fn encode_error(message: &str, out: &mut BytesMut) {
    write_line(b'-', message.as_bytes(), out);
}

/// `*n`: the header of an array of `n` elements that the caller writes next.
pub fn encode_array_len(n: usize, out: &mut BytesMut) {
    write_header(b'*', n as u64, out);
}

/// The header of a map of `n` pairs: `%n` in RESP3, `*2n` (flat array) in RESP2.
pub fn encode_map_len(n: usize, proto: Protocol, out: &mut BytesMut) {
    match proto {
        Protocol::Resp3 => write_header(b'%', n as u64, out),
        Protocol::Resp2 => write_header(b'*', (n as u64).saturating_mul(2), out),
    }
}

/// The header of a set: `~n` in RESP3, `*n` in RESP2.
pub fn encode_set_len(n: usize, proto: Protocol, out: &mut BytesMut) {
    let prefix = match proto {
        Protocol::Resp3 => b'~',
        Protocol::Resp2 => b'*',
    };
    write_header(prefix, n as u64, out);
}

/// The header of a push message: `>n` in RESP3, `*n` in RESP2.
pub fn encode_push_len(n: usize, proto: Protocol, out: &mut BytesMut) {
    let prefix = match proto {
        Protocol::Resp3 => b'>',
        Protocol::Resp2 => b'*',
    };
    write_header(prefix, n as u64, out);
}

/// `#t`/`#f` in RESP3, `:1`/`:0` in RESP2.
pub fn encode_bool(value: bool, proto: Protocol, out: &mut BytesMut) {
    out.extend_from_slice(match (proto, value) {
        (Protocol::Resp3, true) => b"#t\r\n",
        (Protocol::Resp3, false) => b"#f\r\n",
        (Protocol::Resp2, true) => b":1\r\n",
        (Protocol::Resp2, false) => b":0\r\n",
    });
}

/// `,1.5` in RESP3, the same text as a bulk string in RESP2.
pub fn encode_double(value: f64, proto: Protocol, out: &mut BytesMut) {
    let mut buf = [0u8; 64];
    let len = format_double(value, &mut buf);
    let text = buf.get(..len).unwrap_or_default();
    match proto {
        Protocol::Resp3 => write_line(b',', text, out),
        Protocol::Resp2 => encode_bulk(text, out),
    }
}

/// Writes `value` into `buf` the way Redis's `d2string` does, returning the
/// length: `nan`, `inf`, `-inf`, `0`/`-0`, integral values as integers, and
/// otherwise the shortest text that parses back to the same value (Redis
/// uses fpconv's shortest representation too; the exponent is written in
/// Rust's style, `1e300`, which every RESP client parses).
pub fn format_double(value: f64, buf: &mut [u8; 64]) -> usize {
    // 2^53: every integral f64 below it is exact as an i64.
    const EXACT_INT: f64 = 9_007_199_254_740_992.0;
    if value.is_nan() {
        return copy_into(buf, b"nan");
    }
    if value.is_infinite() {
        return copy_into(buf, if value > 0.0 { b"inf" } else { b"-inf" });
    }
    if value == 0.0 {
        return copy_into(
            buf,
            if value.is_sign_negative() {
                b"-0"
            } else {
                b"0"
            },
        );
    }
    if value.fract() == 0.0 && value.abs() < EXACT_INT {
        let mut header = [0u8; 24];
        // Truncation is exact: the value is integral and below 2^53.
        let int = value as i64;
        let len = format_header(b' ', int < 0, int.unsigned_abs(), &mut header);
        // Drop the prefix byte and the trailing CRLF.
        return copy_into(buf, header.get(1..len - 2).unwrap_or_default());
    }
    let capacity = buf.len();
    let mut cursor = &mut buf[..];
    // Plain notation only where it stays short; `{}` would spell 1e300 out.
    let written = if (1e-4..1e17).contains(&value.abs()) {
        write!(cursor, "{value}")
    } else {
        write!(cursor, "{value:e}")
    };
    // 64 bytes always suffice (the longest is ~24); a failure would leave a
    // truncated number, so fall back to a value that is at least well formed.
    match written {
        Ok(()) => capacity - cursor.len(),
        Err(_) => copy_into(buf, b"nan"),
    }
}

fn copy_into(buf: &mut [u8; 64], text: &[u8]) -> usize {
    let len = text.len().min(buf.len());
    buf[..len].copy_from_slice(&text[..len]);
    len
}

/// `prefix` + line + CRLF, with any CR/LF in the line replaced by spaces:
/// line-typed replies cannot carry them, and passing them through would let
/// data (a key name in an error message, say) forge protocol.
fn write_line(prefix: u8, line: &[u8], out: &mut BytesMut) {
    out.reserve(line.len() + 3);
    out.put_u8(prefix);
    if line.iter().any(|&b| b == b'\r' || b == b'\n') {
        out.extend(line.iter().map(|&b| match b {
            b'\r' | b'\n' => b' ',
            other => other,
        }));
    } else {
        out.put_slice(line);
    }
    out.put_slice(b"\r\n");
}

/// `prefix` + decimal `n` + CRLF in one copy.
fn write_header(prefix: u8, n: u64, out: &mut BytesMut) {
    let mut buf = [0u8; 24];
    let len = format_header(prefix, false, n, &mut buf);
    out.extend_from_slice(&buf[..len]);
}

/// Formats `prefix [-] digits CRLF` at the start of `buf`, returning its
/// length (at most 1 + 1 + 20 + 2 = 24). Digits are produced two at a time
/// from a lookup table, like itoa, because this runs for every reply.
fn format_header(prefix: u8, negative: bool, mut n: u64, buf: &mut [u8; 24]) -> usize {
    const PAIRS: &[u8; 200] = b"0001020304050607080910111213141516171819\
        2021222324252627282930313233343536373839\
        4041424344454647484950515253545556575859\
        6061626364656667686970717273747576777879\
        8081828384858687888990919293949596979899";
    let mut digits = [0u8; 20];
    let mut i = digits.len();
    while n >= 100 {
        let pair = (n % 100) as usize * 2;
        n /= 100;
        i -= 2;
        digits[i..i + 2].copy_from_slice(&PAIRS[pair..pair + 2]);
    }
    if n >= 10 {
        let pair = n as usize * 2;
        i -= 2;
        digits[i..i + 2].copy_from_slice(&PAIRS[pair..pair + 2]);
    } else {
        i -= 1;
        digits[i] = b'0' + n as u8;
    }
    let mut len = 0;
    buf[len] = prefix;
    len += 1;
    if negative {
        buf[len] = b'-';
        len += 1;
    }
    let count = digits.len() - i;
    buf[len..len + count].copy_from_slice(&digits[i..]);
    len += count;
    buf[len..len + 2].copy_from_slice(b"\r\n");
    len + 2
}

#[cfg(test)]
#[allow(clippy::unwrap_used)] // a failed unwrap is a failed test
mod tests {
    use bytes::Bytes;

    use super::*;

    fn enc(frame: &Frame, proto: Protocol) -> Vec<u8> {
        let mut out = BytesMut::new();
        encode(frame, proto, &mut out);
        out.to_vec()
    }

    fn both(frame: Frame, resp2: &[u8], resp3: &[u8]) {
        assert_eq!(enc(&frame, Protocol::Resp2), resp2, "RESP2 {frame:?}");
        assert_eq!(enc(&frame, Protocol::Resp3), resp3, "RESP3 {frame:?}");
    }

    #[test]
    fn every_frame_type_in_both_protocols() {
        both(Frame::ok(), b"+OK\r\n", b"+OK\r\n");
        both(
            Frame::Error("ERR bad".into()),
            b"-ERR bad\r\n",
            b"-ERR bad\r\n",
        );
        both(Frame::Integer(-42), b":-42\r\n", b":-42\r\n");
        both(Frame::bulk("hi"), b"$2\r\nhi\r\n", b"$2\r\nhi\r\n");
        both(Frame::bulk(""), b"$0\r\n\r\n", b"$0\r\n\r\n");
        both(Frame::Null, b"$-1\r\n", b"_\r\n");
        both(Frame::NullArray, b"*-1\r\n", b"_\r\n");
        both(
            Frame::Array(vec![Frame::Integer(1), Frame::bulk("a")]),
            b"*2\r\n:1\r\n$1\r\na\r\n",
            b"*2\r\n:1\r\n$1\r\na\r\n",
        );
        both(Frame::Array(vec![]), b"*0\r\n", b"*0\r\n");
        both(
            Frame::Map(vec![(Frame::bulk("k"), Frame::Integer(7))]),
            b"*2\r\n$1\r\nk\r\n:7\r\n",
            b"%1\r\n$1\r\nk\r\n:7\r\n",
        );
        both(
            Frame::Set(vec![Frame::bulk("m")]),
            b"*1\r\n$1\r\nm\r\n",
            b"~1\r\n$1\r\nm\r\n",
        );
        both(Frame::Double(1.5), b"$3\r\n1.5\r\n", b",1.5\r\n");
        both(Frame::Double(3.0), b"$1\r\n3\r\n", b",3\r\n");
        both(Frame::Double(f64::INFINITY), b"$3\r\ninf\r\n", b",inf\r\n");
        both(
            Frame::Double(f64::NEG_INFINITY),
            b"$4\r\n-inf\r\n",
            b",-inf\r\n",
        );
        both(Frame::Double(f64::NAN), b"$3\r\nnan\r\n", b",nan\r\n");
        both(Frame::Double(-0.0), b"$2\r\n-0\r\n", b",-0\r\n");
        both(Frame::Double(1e300), b"$5\r\n1e300\r\n", b",1e300\r\n");
        both(Frame::Boolean(true), b":1\r\n", b"#t\r\n");
        both(Frame::Boolean(false), b":0\r\n", b"#f\r\n");
        both(
            Frame::Verbatim {
                format: *b"txt",
                text: Bytes::from_static(b"Some string"),
            },
            b"$11\r\nSome string\r\n",
            b"=15\r\ntxt:Some string\r\n",
        );
        both(
            Frame::BigNumber("3492890328409238509324850943850943825024385".into()),
            b"$43\r\n3492890328409238509324850943850943825024385\r\n",
            b"(3492890328409238509324850943850943825024385\r\n",
        );
        both(
            Frame::Push(vec![Frame::bulk("message")]),
            b"*1\r\n$7\r\nmessage\r\n",
            b">1\r\n$7\r\nmessage\r\n",
        );
    }

    #[test]
    fn integers_at_the_edges() {
        for n in [0, 1, 9, 10, 99, 100, 12345, -1, -10, i64::MAX, i64::MIN] {
            let mut out = BytesMut::new();
            encode_int(n, &mut out);
            assert_eq!(&out[..], format!(":{n}\r\n").as_bytes());
        }
        let mut out = BytesMut::new();
        encode_array_len(1_000_000, &mut out);
        assert_eq!(&out[..], b"*1000000\r\n");
    }

    #[test]
    fn line_replies_cannot_inject_protocol() {
        both(
            Frame::Simple("a\r\n+b".into()),
            b"+a  +b\r\n",
            b"+a  +b\r\n",
        );
        both(
            Frame::Error("ERR x\ny".into()),
            b"-ERR x y\r\n",
            b"-ERR x y\r\n",
        );
    }

    #[test]
    fn fast_paths_match_frames() {
        let mut fast = BytesMut::new();
        encode_array_len(2, &mut fast);
        encode_bulk(b"v", &mut fast);
        encode_null(Protocol::Resp2, &mut fast);
        encode_simple("OK", &mut fast);
        encode_error("ERR e", &mut fast);
        let mut framed = BytesMut::new();
        let frames = [
            Frame::Array(vec![Frame::bulk("v"), Frame::Null]),
            Frame::ok(),
            Frame::Error("ERR e".into()),
        ];
        for frame in &frames {
            encode(frame, Protocol::Resp2, &mut framed);
        }
        assert_eq!(fast, framed);
    }

    #[test]
    fn doubles_round_trip_through_their_text() {
        for value in [
            0.1,
            -2.5e-10,
            1.0 / 3.0,
            123456789.125,
            1e17,
            2e-5,
            f64::MAX,
            f64::MIN_POSITIVE,
        ] {
            let mut buf = [0u8; 64];
            let len = format_double(value, &mut buf);
            let text = std::str::from_utf8(&buf[..len]).unwrap();
            assert_eq!(text.parse::<f64>().unwrap(), value, "{text}");
        }
    }
}
