//! RESP framing over raw TCP: malformed input, limits, inline commands,
//! split requests, many clients, the client limit.
#![allow(clippy::unwrap_used)] // a failed unwrap is a failed test

use std::io::Write;
use std::sync::{Arc, Barrier};

use rstore_testkit::{Node, Raw, Reply, wait_until};

fn protocol_error(reply: &Reply) -> bool {
    matches!(reply, Reply::Error(e) if e.starts_with("ERR Protocol error"))
}

/// Send `bytes` on a fresh connection; the server must answer a protocol
/// error and close, while `witness` keeps working.
fn assert_rejected(node: &Node, witness: &mut Raw, bytes: &[u8], want: &str) {
    let mut raw = node.raw();
    raw.send(bytes);
    let reply = raw.read().unwrap();
    assert!(protocol_error(&reply), "{bytes:?} -> {reply:?}");
    assert_eq!(reply, Reply::Error(want.into()), "{bytes:?}");
    assert!(raw.closed_by_server(), "{bytes:?}: connection not closed");
    assert_eq!(witness.cmd_str(&["PING"]), Reply::Simple("PONG".into()));
    let mut fresh = node.raw();
    assert_eq!(fresh.cmd_str(&["PING"]), Reply::Simple("PONG".into()));
}

#[test]
fn malformed_requests_get_an_error_and_are_closed() {
    let node = Node::leader(&[]);
    let mut witness = node.raw();
    assert_eq!(
        witness.cmd_str(&["SET", "w", "1"]),
        Reply::Simple("OK".into())
    );

    for (bytes, want) in [
        (
            &b"*abc\r\n"[..],
            "ERR Protocol error: invalid multibulk length",
        ),
        (b"*1\r\n$-5\r\n", "ERR Protocol error: invalid bulk length"),
        (b"*1\r\n$abc\r\n", "ERR Protocol error: invalid bulk length"),
        (
            b"*1\r\n+PING\r\n",
            "ERR Protocol error: expected '$', got '+'",
        ),
        (b"*1\r\n$4\r\nPINGxx", "ERR Protocol error: expected CRLF"),
        (
            b"SET a \"b c\r\n",
            "ERR Protocol error: unbalanced quotes in request",
        ),
        (
            b"SET a 'b\r\n",
            "ERR Protocol error: unbalanced quotes in request",
        ),
    ] {
        assert_rejected(&node, &mut witness, bytes, want);
    }

    // Replies to requests before the bad one are still sent, in order.
    let mut raw = node.raw();
    raw.send(b"*1\r\n$4\r\nPING\r\n*1\r\n$-5\r\n");
    assert_eq!(raw.read().unwrap(), Reply::Simple("PONG".into()));
    assert!(protocol_error(&raw.read().unwrap()));
    assert!(raw.closed_by_server());

    assert_eq!(witness.cmd_str(&["GET", "w"]), Reply::Bulk(b"1".to_vec()));
}

#[test]
fn limits_on_bulk_length_and_argument_count() {
    let node = Node::leader(&["--max-bulk-bytes", "1024", "--max-args", "4"]);
    let mut witness = node.raw();

    // At the limit: fine.
    let value = vec![b'x'; 1024];
    assert_eq!(
        witness.cmd(&[b"SET", b"big", &value]),
        Reply::Simple("OK".into())
    );
    // Over it: rejected from the header alone, before any payload is sent.
    let mut raw = node.raw();
    raw.send(b"*3\r\n$3\r\nSET\r\n$3\r\nbig\r\n$1025\r\n");
    assert_eq!(
        raw.read().unwrap(),
        Reply::Error("ERR Protocol error: invalid bulk length".into())
    );
    assert!(raw.closed_by_server());
    // A huge declared length costs nothing either.
    assert_rejected(
        &node,
        &mut witness,
        b"*2\r\n$3\r\nGET\r\n$9000000000\r\n",
        "ERR Protocol error: invalid bulk length",
    );

    // Argument count: 4 is fine, 5 is refused from the header.
    assert_eq!(
        witness.cmd_str(&["MGET", "a", "b", "c"]),
        Reply::Array(vec![Reply::Nil, Reply::Nil, Reply::Nil])
    );
    let mut raw = node.raw();
    raw.send(b"*5\r\n");
    let reply = raw.read().unwrap();
    assert!(protocol_error(&reply), "{reply:?}");
    assert!(raw.closed_by_server());
    assert_rejected(
        &node,
        &mut witness,
        b"*1000000000\r\n",
        "ERR Protocol error: invalid multibulk length",
    );

    // APPEND cannot grow a value past the bulk limit either.
    assert_eq!(
        witness.cmd_str(&["APPEND", "big", "y"]),
        Reply::Error("ERR string exceeds maximum allowed size (proto-max-bulk-len)".into())
    );
    assert_eq!(witness.cmd_str(&["STRLEN", "big"]), Reply::Int(1024));
}

#[test]
fn inline_commands() {
    let node = Node::leader(&[]);
    let mut raw = node.raw();
    raw.send(b"PING\r\n");
    assert_eq!(raw.read().unwrap(), Reply::Simple("PONG".into()));
    raw.send(b"SET a \"b c\"\r\n");
    assert_eq!(raw.read().unwrap(), Reply::Simple("OK".into()));
    raw.send(b"GET a\r\n");
    assert_eq!(raw.read().unwrap(), Reply::Bulk(b"b c".to_vec()));
    // Escapes in double quotes, single quotes, bare LF, blank lines.
    raw.send(b"SET b \"x\\ty\\x41\"\n\r\n\nGET b\r\n");
    assert_eq!(raw.read().unwrap(), Reply::Simple("OK".into()));
    assert_eq!(raw.read().unwrap(), Reply::Bulk(b"x\tyA".to_vec()));
    raw.send(b"set c 'it''s'\r\n");
    let r = raw.read().unwrap();
    // Redis: closing quote must be followed by a space -> unbalanced quotes.
    assert_eq!(
        r,
        Reply::Error("ERR Protocol error: unbalanced quotes in request".into())
    );
    assert!(raw.closed_by_server());

    // Inline and multibulk mixed in one pipeline.
    let mut raw = node.raw();
    let mut bytes = b"INCR n\r\n".to_vec();
    bytes.extend(rstore_testkit::encode_cmd(&[b"INCR", b"n"]));
    bytes.extend_from_slice(b"INCR n\r\n");
    raw.send(&bytes);
    for want in 1..=3 {
        assert_eq!(raw.read().unwrap(), Reply::Int(want));
    }
}

#[test]
fn requests_split_byte_by_byte() {
    let node = Node::leader(&[]);
    let mut raw = node.raw();
    let mut bytes = rstore_testkit::encode_cmd(&[b"SET", b"split", b"hello world"]);
    bytes.extend_from_slice(b"GET split\r\n");
    bytes.extend(rstore_testkit::encode_cmd(&[b"APPEND", b"split", b"!"]));
    for b in &bytes {
        raw.stream.write_all(&[*b]).unwrap();
        raw.stream.flush().unwrap();
        std::thread::sleep(std::time::Duration::from_micros(200));
    }
    assert_eq!(raw.read().unwrap(), Reply::Simple("OK".into()));
    assert_eq!(raw.read().unwrap(), Reply::Bulk(b"hello world".to_vec()));
    assert_eq!(raw.read().unwrap(), Reply::Int(12));
}

#[test]
fn a_hundred_clients_at_once() {
    a_hundred_clients_at_once_on(&[]);
}

/// The same on one worker thread (`--threads 1`): every connection, the
/// log writes and the expiry cycle share it.
#[test]
fn a_hundred_clients_at_once_on_one_worker_thread() {
    a_hundred_clients_at_once_on(&["--threads", "1"]);
}

fn a_hundred_clients_at_once_on(flags: &[&str]) {
    let node = Node::leader(flags);
    let addr = node.addrs.data;
    let n = 100;
    let connected = Arc::new(Barrier::new(n + 1));
    let done = Arc::new(Barrier::new(n + 1));
    let threads: Vec<_> = (0..n)
        .map(|i| {
            let connected = connected.clone();
            let done = done.clone();
            std::thread::spawn(move || {
                let mut raw = Raw::connect(addr);
                assert_eq!(raw.cmd_str(&["PING"]), Reply::Simple("PONG".into()));
                connected.wait();
                for j in 0..20 {
                    let key = format!("c{i}");
                    let val = format!("{j}");
                    assert_eq!(
                        raw.cmd_str(&["SET", &key, &val]),
                        Reply::Simple("OK".into())
                    );
                    assert_eq!(raw.cmd_str(&["GET", &key]), Reply::Bulk(val.into_bytes()));
                    assert!(matches!(raw.cmd_str(&["INCR", "shared"]), Reply::Int(v) if v > 0));
                }
                done.wait();
            })
        })
        .collect();
    connected.wait();
    let mut c = node.raw();
    let info = match c.cmd_str(&["INFO", "clients"]) {
        Reply::Verbatim(s) => s,
        Reply::Bulk(b) => String::from_utf8(b).unwrap(),
        other => panic!("INFO: {other:?}"),
    };
    let clients: usize = info
        .lines()
        .find_map(|l| l.strip_prefix("connected_clients:"))
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    assert!(
        clients > n,
        "connected_clients:{clients} with {n} clients open"
    );
    done.wait();
    for t in threads {
        t.join().unwrap();
    }
    assert_eq!(c.cmd_str(&["DBSIZE"]), Reply::Int(n as i64 + 1));
    assert_eq!(
        c.cmd_str(&["GET", "shared"]),
        Reply::Bulk(format!("{}", n * 20).into_bytes())
    );
}

#[test]
fn max_clients_refuses_the_third_connection() {
    let node = Node::leader(&["--max-clients", "2"]);
    let mut a = node.raw();
    let mut b = node.raw();
    assert_eq!(a.cmd_str(&["PING"]), Reply::Simple("PONG".into()));
    assert_eq!(b.cmd_str(&["PING"]), Reply::Simple("PONG".into()));
    let mut third = node.raw();
    assert_eq!(
        third.read().unwrap(),
        Reply::Error("ERR max number of clients reached".into())
    );
    assert!(third.closed_by_server());
    // The first two still work; after one leaves, a new client gets in.
    assert_eq!(a.cmd_str(&["PING"]), Reply::Simple("PONG".into()));
    drop(b);
    wait_until(rstore_testkit::DEADLINE, "a slot to free up", || {
        let mut c = node.raw();
        c.send(&rstore_testkit::encode_cmd(&[b"PING"]));
        match c.read() {
            Ok(Reply::Simple(p)) if p == "PONG" => Some(()),
            _ => None,
        }
    });
}
