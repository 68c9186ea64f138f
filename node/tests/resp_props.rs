//! Property tests for the RESP codec: round trips, splitting at any point,
//! pipelining, hostile input and limits.
#![allow(clippy::unwrap_used)] // a failed unwrap is a failed test

use bytes::{Bytes, BytesMut};
use proptest::collection::vec;
use proptest::prelude::*;
use rstore_node::resp::{
    Frame, Limits, Protocol, ProtocolError, encode, format_double, parse_frame, parse_request,
};

// ---------------------------------------------------------------- generators

/// Text for line frames: anything but CR and LF (the encoder would replace them).
fn line_text() -> impl Strategy<Value = String> {
    "[^\r\n]{0,20}"
}

fn bytes_up_to(max: usize) -> impl Strategy<Value = Bytes> {
    vec(any::<u8>(), 0..max).prop_map(Bytes::from)
}

fn leaf() -> impl Strategy<Value = Frame> {
    prop_oneof![
        line_text().prop_map(Frame::Simple),
        line_text().prop_map(Frame::Error),
        any::<i64>().prop_map(Frame::Integer),
        bytes_up_to(40).prop_map(Frame::Bulk),
        Just(Frame::Null),
        Just(Frame::NullArray),
        any::<f64>().prop_map(Frame::Double),
        prop_oneof![Just(f64::NAN), Just(f64::INFINITY), Just(-0.0), Just(1e300)]
            .prop_map(Frame::Double),
        any::<bool>().prop_map(Frame::Boolean),
        (any::<[u8; 3]>(), bytes_up_to(20))
            .prop_map(|(format, text)| Frame::Verbatim { format, text }),
        "-?[1-9][0-9]{0,60}".prop_map(Frame::BigNumber),
    ]
}

fn any_frame() -> impl Strategy<Value = Frame> {
    leaf().prop_recursive(4, 64, 6, |inner| {
        prop_oneof![
            vec(inner.clone(), 0..6).prop_map(Frame::Array),
            vec(inner.clone(), 0..6).prop_map(Frame::Set),
            vec(inner.clone(), 0..6).prop_map(Frame::Push),
            vec((inner.clone(), inner), 0..4).prop_map(Frame::Map),
        ]
    })
}

/// Frames made only of the types RESP2 has.
fn resp2_frame() -> impl Strategy<Value = Frame> {
    let leaf = prop_oneof![
        line_text().prop_map(Frame::Simple),
        line_text().prop_map(Frame::Error),
        any::<i64>().prop_map(Frame::Integer),
        bytes_up_to(40).prop_map(Frame::Bulk),
        Just(Frame::Null),
        Just(Frame::NullArray),
    ];
    leaf.prop_recursive(4, 64, 6, |inner| vec(inner, 0..6).prop_map(Frame::Array))
}

/// A request's arguments: 1..8 arbitrary binary strings.
/// Up to 11 arguments: the parser notes the first 8 positions and walks
/// the headers again for longer requests; both paths are drawn.
fn request_args() -> impl Strategy<Value = Vec<Bytes>> {
    vec(bytes_up_to(30), 1..12)
}

/// Wire forms of a request.
#[derive(Debug, Clone)]
enum Wire {
    Multibulk,
    /// Every argument double-quoted with `\xHH` escapes (any bytes survive).
    InlineQuoted,
    /// Bare words; only for arguments that are plain words.
    InlineBare,
}

fn multibulk(args: &[Bytes]) -> Vec<u8> {
    let args: Vec<&[u8]> = args.iter().map(|a| a.as_ref()).collect();
    rstore_testkit::encode_cmd(&args)
}

fn wire(args: &[Bytes], form: &Wire) -> Vec<u8> {
    match form {
        Wire::Multibulk => multibulk(args),
        Wire::InlineQuoted => {
            let mut out = Vec::new();
            for arg in args {
                out.extend_from_slice(b" \"");
                for byte in arg.iter() {
                    out.extend_from_slice(format!("\\x{byte:02x}").as_bytes());
                }
                out.push(b'"');
            }
            out.extend_from_slice(b"\r\n");
            out
        }
        Wire::InlineBare => {
            let mut out = args.join(&b' ');
            out.extend_from_slice(b"\n");
            out
        }
    }
}

/// A request and its wire bytes, in any of the forms.
fn request() -> impl Strategy<Value = (Vec<Bytes>, Vec<u8>)> {
    let words = vec("[a-zA-Z0-9:_.-]{1,12}".prop_map(Bytes::from), 1..6);
    prop_oneof![
        request_args().prop_map(|a| {
            let w = wire(&a, &Wire::Multibulk);
            (a, w)
        }),
        request_args().prop_map(|a| {
            let w = wire(&a, &Wire::InlineQuoted);
            (a, w)
        }),
        words.prop_map(|a| {
            let w = wire(&a, &Wire::InlineBare);
            (a, w)
        }),
    ]
}

/// Bytes that look like RESP, so hostile-input tests reach deep parser states
/// rather than failing on the first byte.
fn resp_like_bytes() -> impl Strategy<Value = Vec<u8>> {
    let token = prop_oneof![
        Just(b"*".to_vec()),
        Just(b"$".to_vec()),
        Just(b"\r\n".to_vec()),
        Just(b"\r".to_vec()),
        Just(b"\n".to_vec()),
        Just(b"-1".to_vec()),
        Just(b"0".to_vec()),
        Just(b"\"".to_vec()),
        Just(b"'".to_vec()),
        Just(b"\\x4".to_vec()),
        Just(b"\\".to_vec()),
        Just(b" ".to_vec()),
        Just(b"\0".to_vec()),
        Just(b"%:,#(=_!~>|+".to_vec()),
        "[0-9]{1,3}".prop_map(String::into_bytes),
        vec(any::<u8>(), 0..4),
    ];
    vec(token, 0..40).prop_map(|tokens| tokens.concat())
}

// ---------------------------------------------------------------- helpers

fn encoded(frame: &Frame, proto: Protocol) -> BytesMut {
    let mut out = BytesMut::new();
    encode(frame, proto, &mut out);
    out
}

/// Equality with NaN equal to itself and doubles compared bit for bit (so
/// `-0` must come back as `-0`).
fn same(a: &Frame, b: &Frame) -> bool {
    match (a, b) {
        (Frame::Double(x), Frame::Double(y)) => {
            (x.is_nan() && y.is_nan()) || x.to_bits() == y.to_bits()
        }
        (Frame::Array(x), Frame::Array(y))
        | (Frame::Set(x), Frame::Set(y))
        | (Frame::Push(x), Frame::Push(y)) => {
            x.len() == y.len() && x.iter().zip(y).all(|(a, b)| same(a, b))
        }
        (Frame::Map(x), Frame::Map(y)) => {
            x.len() == y.len()
                && x.iter()
                    .zip(y)
                    .all(|((ka, va), (kb, vb))| same(ka, kb) && same(va, vb))
        }
        _ => a == b,
    }
}

/// What a frame reads back as after a RESP3 round trip: Redis sends the null
/// array as `_` in RESP3, which is indistinguishable from the null bulk.
fn as_resp3(frame: &Frame) -> Frame {
    match frame {
        Frame::NullArray => Frame::Null,
        Frame::Array(items) => Frame::Array(items.iter().map(as_resp3).collect()),
        Frame::Set(items) => Frame::Set(items.iter().map(as_resp3).collect()),
        Frame::Push(items) => Frame::Push(items.iter().map(as_resp3).collect()),
        Frame::Map(pairs) => Frame::Map(
            pairs
                .iter()
                .map(|(k, v)| (as_resp3(k), as_resp3(v)))
                .collect(),
        ),
        other => other.clone(),
    }
}

/// What a frame reads back as after a RESP2 round trip: Redis's degradation.
fn as_resp2(frame: &Frame) -> Frame {
    match frame {
        Frame::Array(items) | Frame::Set(items) | Frame::Push(items) => {
            Frame::Array(items.iter().map(as_resp2).collect())
        }
        Frame::Map(pairs) => Frame::Array(
            pairs
                .iter()
                .flat_map(|(k, v)| [as_resp2(k), as_resp2(v)])
                .collect(),
        ),
        Frame::Double(d) => {
            let mut buf = [0u8; 64];
            let len = format_double(*d, &mut buf);
            Frame::Bulk(Bytes::copy_from_slice(&buf[..len]))
        }
        Frame::Boolean(b) => Frame::Integer(i64::from(*b)),
        Frame::Verbatim { text, .. } => Frame::Bulk(text.clone()),
        Frame::BigNumber(digits) => Frame::Bulk(Bytes::from(digits.clone().into_bytes())),
        other => other.clone(),
    }
}

fn limits() -> Limits {
    Limits::default()
}

// ---------------------------------------------------------------- properties

proptest! {
    #![proptest_config(ProptestConfig { cases: 512, ..ProptestConfig::default() })]

    /// (1) RESP3: every frame survives encode -> parse_frame exactly.
    #[test]
    fn resp3_round_trip(frame in any_frame()) {
        let mut buf = encoded(&frame, Protocol::Resp3);
        let parsed = parse_frame(&mut buf, &limits()).unwrap().unwrap();
        prop_assert!(same(&parsed, &as_resp3(&frame)), "{frame:?} came back as {parsed:?}");
        prop_assert!(buf.is_empty());
    }

    /// (1) RESP2: its own types round trip exactly.
    #[test]
    fn resp2_round_trip(frame in resp2_frame()) {
        let mut buf = encoded(&frame, Protocol::Resp2);
        let parsed = parse_frame(&mut buf, &limits()).unwrap().unwrap();
        prop_assert_eq!(parsed, frame);
        prop_assert!(buf.is_empty());
    }

    /// (1) RESP2: RESP3 types degrade exactly as Redis degrades them.
    #[test]
    fn resp2_degrades_like_redis(frame in any_frame()) {
        let mut buf = encoded(&frame, Protocol::Resp2);
        let parsed = parse_frame(&mut buf, &limits()).unwrap().unwrap();
        prop_assert_eq!(parsed, as_resp2(&frame));
        prop_assert!(buf.is_empty());
    }

    /// (1) A frame split at any point: the prefix is incomplete and untouched,
    /// the whole parses.
    #[test]
    fn frame_split_anywhere(frame in any_frame(), cut in any::<prop::sample::Index>()) {
        let whole = encoded(&frame, Protocol::Resp3);
        let cut = cut.index(whole.len());
        let mut buf = BytesMut::from(&whole[..cut]);
        prop_assert_eq!(parse_frame(&mut buf, &limits()), Ok(None));
        prop_assert_eq!(&buf[..], &whole[..cut]);
        buf.extend_from_slice(&whole[cut..]);
        let parsed = parse_frame(&mut buf, &limits()).unwrap().unwrap();
        prop_assert!(same(&parsed, &as_resp3(&frame)));
    }

    /// (2) A request split at every point: each prefix needs more and is left
    /// untouched; adding the rest gives the request and consumes it exactly.
    #[test]
    fn request_split_anywhere((args, wire) in request()) {
        for cut in 0..wire.len() {
            let mut buf = BytesMut::from(&wire[..cut]);
            prop_assert_eq!(parse_request(&mut buf, &limits()), Ok(None), "cut {}", cut);
            prop_assert_eq!(&buf[..], &wire[..cut]);
            buf.extend_from_slice(&wire[cut..]);
            prop_assert_eq!(parse_request(&mut buf, &limits()), Ok(Some(args.clone())), "cut {}", cut);
            prop_assert!(buf.is_empty());
        }
    }

    /// (3) Pipelined requests, with Redis's empty requests between them, fed
    /// in arbitrary chunks, come out complete and in order.
    #[test]
    fn pipelined_requests_in_order(
        requests in vec((request(), prop_oneof![Just(&b""[..]), Just(&b"*0\r\n"[..]), Just(&b"*-1\r\n"[..]), Just(&b"\r\n"[..])]), 1..10),
        chunk in 1usize..64,
    ) {
        let mut stream = Vec::new();
        for ((_, wire), empty) in &requests {
            stream.extend_from_slice(empty);
            stream.extend_from_slice(wire);
        }
        let mut buf = BytesMut::new();
        let mut got = Vec::new();
        for piece in stream.chunks(chunk) {
            buf.extend_from_slice(piece);
            while let Some(args) = parse_request(&mut buf, &limits()).unwrap() {
                got.push(args);
            }
        }
        let want: Vec<_> = requests.into_iter().map(|((args, _), _)| args).collect();
        prop_assert_eq!(got, want);
        prop_assert!(buf.is_empty());
    }

    /// (4) Arbitrary bytes never panic the request parser. Every answer is
    /// need-more (with nothing of a request consumed), a non-empty request
    /// whose bytes are exactly its canonical form (multibulk) or a whole
    /// line (inline), or an error.
    #[test]
    fn request_parser_survives_garbage(input in prop_oneof![vec(any::<u8>(), 0..200), resp_like_bytes()]) {
        let limits = Limits { max_inline_len: 64, max_args: 16, max_bulk_len: 64 };
        let mut buf = BytesMut::from(&input[..]);
        loop {
            let before = buf.clone();
            match parse_request(&mut buf, &limits) {
                Ok(None) => {
                    // Only whole empty requests may have been consumed.
                    prop_assert!(before.ends_with(&buf));
                    break;
                }
                Ok(Some(args)) => {
                    prop_assert!(!args.is_empty());
                    let consumed = &before[..before.len() - buf.len()];
                    // An inline request is the last line of what was consumed
                    // (lines before it were skipped blank ones) and does not
                    // start with `*`.
                    let body = &consumed[..consumed.len().saturating_sub(1)];
                    let last_line = &body[body.iter().rposition(|&b| b == b'\n').map_or(0, |i| i + 1)..];
                    let inline = consumed.ends_with(b"\n") && !last_line.starts_with(b"*");
                    prop_assert!(
                        consumed.ends_with(&multibulk(&args)) || inline,
                        "{:?} from {:?}", args, consumed
                    );
                }
                Err(_) => break,
            }
        }
    }

    /// (4) A valid multibulk request with one byte changed: whatever the
    /// parser answers, it never hands out a request that is not exactly what
    /// the consumed bytes say (a wrong length or a missing CRLF must not slip
    /// through as a shifted request).
    #[test]
    fn corrupted_request_is_never_misread(
        args in request_args(),
        at in any::<prop::sample::Index>(),
        byte in any::<u8>(),
    ) {
        let mut wire = multibulk(&args);
        let at = at.index(wire.len());
        wire[at] = byte;
        let limits = Limits { max_inline_len: 64, max_args: 16, max_bulk_len: 64 };
        let mut buf = BytesMut::from(&wire[..]);
        let before = buf.clone();
        match parse_request(&mut buf, &limits) {
            Ok(Some(got)) => {
                let consumed = &before[..before.len() - buf.len()];
                if wire[0] == b'*' {
                    prop_assert_eq!(consumed, &multibulk(&got)[..]);
                }
                if wire == multibulk(&args) {
                    prop_assert_eq!(got, args);
                }
            }
            Ok(None) => prop_assert_eq!(&buf[..], &wire[..]),
            Err(_) => {}
        }
    }

    /// (4) The same for the frame parser, with nothing consumed on need-more.
    #[test]
    fn frame_parser_survives_garbage(input in prop_oneof![vec(any::<u8>(), 0..200), resp_like_bytes()]) {
        let limits = Limits { max_inline_len: 64, max_args: 16, max_bulk_len: 64 };
        let mut buf = BytesMut::from(&input[..]);
        loop {
            let len = buf.len();
            match parse_frame(&mut buf, &limits) {
                Ok(None) => {
                    prop_assert_eq!(buf.len(), len);
                    break;
                }
                Ok(Some(_)) => prop_assert!(buf.len() < len),
                Err(_) => break,
            }
        }
    }

    /// (5) A bulk length over the limit is refused from its header alone,
    /// one at the limit waits for its payload.
    #[test]
    fn oversize_bulk_rejected(
        max in 0usize..10_000,
        over in prop_oneof![Just(1u64), 1u64..u64::from(u32::MAX)],
        args_before in 0usize..3,
    ) {
        let limits = Limits { max_bulk_len: max, ..Limits::default() };
        let mut head = format!("*{}\r\n", args_before + 1).into_bytes();
        for _ in 0..args_before {
            head.extend_from_slice(b"$0\r\n\r\n");
        }
        let mut too_big = head.clone();
        too_big.extend_from_slice(format!("${}\r\n", max as u64 + over).as_bytes());
        prop_assert_eq!(
            parse_request(&mut BytesMut::from(&too_big[..]), &limits),
            Err(ProtocolError::InvalidBulkLength)
        );
        let mut at_limit = head;
        at_limit.extend_from_slice(format!("${max}\r\n").as_bytes());
        prop_assert_eq!(parse_request(&mut BytesMut::from(&at_limit[..]), &limits), Ok(None));
    }

    /// (5) An argument count over the limit is refused from the header alone.
    #[test]
    fn oversize_argc_rejected(max in 0usize..100_000, over in prop_oneof![Just(1usize), 1usize..1_000_000]) {
        let limits = Limits { max_args: max, ..Limits::default() };
        let header = format!("*{}\r\n", max + over);
        prop_assert_eq!(
            parse_request(&mut BytesMut::from(header.as_bytes()), &limits),
            Err(ProtocolError::InvalidMultibulkLength)
        );
        let header = format!("*{}\r\n", max.max(1));
        let limits = Limits { max_args: max.max(1), ..Limits::default() };
        prop_assert_eq!(parse_request(&mut BytesMut::from(header.as_bytes()), &limits), Ok(None));
    }

    /// (5) An inline line over the limit is refused whether or not its
    /// newline has arrived.
    #[test]
    fn oversize_inline_rejected(
        max in 1usize..2_000,
        over in prop_oneof![Just(1usize), 1usize..100],
        newline in any::<bool>(),
    ) {
        let limits = Limits { max_inline_len: max, ..Limits::default() };
        let mut line = vec![b'a'; max + over];
        if newline {
            line.push(b'\n');
        }
        prop_assert_eq!(
            parse_request(&mut BytesMut::from(&line[..]), &limits),
            Err(ProtocolError::TooBigInlineRequest)
        );
        let mut ok = vec![b'a'; max];
        ok.push(b'\n');
        prop_assert_eq!(
            parse_request(&mut BytesMut::from(&ok[..]), &limits),
            Ok(Some(vec![Bytes::from(vec![b'a'; max])]))
        );
    }
}

/// A 100 MB bulk arriving in 16 KiB pieces: each incomplete check must look
/// at the header and compare lengths, not rescan the payload. A quadratic
/// parser would scan ~300 GB here and blow the time bound by orders of
/// magnitude; a linear one needs well under a second even unoptimised.
#[test]
fn large_bulk_arriving_slowly_is_linear() {
    const SIZE: usize = 100 * 1024 * 1024;
    const PIECE: usize = 16 * 1024;
    let started = std::time::Instant::now();
    let mut buf = BytesMut::from(&b"*2\r\n$3\r\nSET\r\n"[..]);
    buf.extend_from_slice(format!("${SIZE}\r\n").as_bytes());
    let piece = vec![b'v'; PIECE];
    let mut sent = 0;
    while sent < SIZE {
        assert_eq!(parse_request(&mut buf, &limits()), Ok(None));
        let n = PIECE.min(SIZE - sent);
        buf.extend_from_slice(&piece[..n]);
        sent += n;
    }
    assert_eq!(parse_request(&mut buf, &limits()), Ok(None));
    buf.extend_from_slice(b"\r\n");
    let args = parse_request(&mut buf, &limits()).unwrap().unwrap();
    assert_eq!(args.len(), 2);
    assert_eq!(args[1].len(), SIZE);
    assert!(
        started.elapsed() < std::time::Duration::from_secs(20),
        "took {:?}",
        started.elapsed()
    );
}

/// Rough timing of the hot path; run with
/// `cargo test --release -p rstore-node --test resp_props -- --ignored --nocapture`.
#[test]
#[ignore]
fn bench_parse_set_request() {
    const REQUEST: &[u8] = b"*3\r\n$3\r\nSET\r\n$16\r\nkey:000000001234\r\n$3\r\nxxx\r\n";
    const PIPELINE: usize = 16;
    const ROUNDS: usize = 200_000;
    let mut pipelined = Vec::new();
    for _ in 0..PIPELINE {
        pipelined.extend_from_slice(REQUEST);
    }
    let mut buf = BytesMut::with_capacity(pipelined.len());
    let mut total = 0usize;
    let started = std::time::Instant::now();
    for _ in 0..ROUNDS {
        buf.extend_from_slice(&pipelined);
        while let Some(args) = parse_request(&mut buf, &limits()).unwrap() {
            total += args.len();
        }
    }
    let per_request = started.elapsed() / (ROUNDS * PIPELINE) as u32;
    assert_eq!(total, ROUNDS * PIPELINE * 3);
    println!("parse_request SET: {per_request:?} per request");

    let mut out = BytesMut::with_capacity(1 << 20);
    let started = std::time::Instant::now();
    for i in 0..ROUNDS * PIPELINE {
        if out.len() > (1 << 19) {
            out.clear();
        }
        rstore_node::resp::encode_bulk(b"some value of moderate size", &mut out);
        rstore_node::resp::encode_int(i as i64, &mut out);
    }
    println!(
        "encode_bulk+encode_int: {:?} per pair",
        started.elapsed() / (ROUNDS * PIPELINE) as u32
    );
}
