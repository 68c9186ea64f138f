//! Every command of DESIGN.md against the real binary, with Redis 7's exact
//! replies and error strings.
#![allow(clippy::unwrap_used)] // a failed unwrap is a failed test

use std::collections::HashSet;
use std::time::{SystemTime, UNIX_EPOCH};

use redis::{FromRedisValue, Value};
use rstore_testkit::{DEADLINE, Node, Reply, expect_err, wait_until};

fn cmd(args: &[&str]) -> redis::Cmd {
    let mut c = redis::cmd(args[0]);
    for a in &args[1..] {
        c.arg(*a);
    }
    c
}

fn q<T: FromRedisValue>(con: &mut redis::Connection, args: &[&str]) -> T {
    cmd(args)
        .query(con)
        .unwrap_or_else(|e| panic!("{args:?} failed: {e}"))
}

fn e(con: &mut redis::Connection, args: &[&str]) -> String {
    expect_err(con, &cmd(args))
}

fn s(con: &mut redis::Connection, args: &[&str]) -> Option<String> {
    q(con, args)
}

fn i(con: &mut redis::Connection, args: &[&str]) -> i64 {
    q(con, args)
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64
}

const SYNTAX: &str = "ERR syntax error";
const NOT_INT: &str = "ERR value is not an integer or out of range";

#[test]
fn set_get_and_options() {
    let node = Node::leader(&[]);
    let mut c = node.client();

    assert_eq!(q::<Value>(&mut c, &["SET", "k", "v"]), Value::Okay);
    assert_eq!(s(&mut c, &["GET", "k"]).as_deref(), Some("v"));
    assert_eq!(q::<Value>(&mut c, &["GET", "missing"]), Value::Nil);

    // NX / XX
    assert_eq!(q::<Value>(&mut c, &["SET", "k", "v2", "NX"]), Value::Nil);
    assert_eq!(s(&mut c, &["GET", "k"]).as_deref(), Some("v"));
    assert_eq!(q::<Value>(&mut c, &["SET", "k", "v2", "XX"]), Value::Okay);
    assert_eq!(q::<Value>(&mut c, &["SET", "nx", "1", "XX"]), Value::Nil);
    assert_eq!(i(&mut c, &["EXISTS", "nx"]), 0);
    assert_eq!(q::<Value>(&mut c, &["SET", "nx", "1", "nx"]), Value::Okay);

    // GET option
    assert_eq!(s(&mut c, &["SET", "k", "v3", "GET"]).as_deref(), Some("v2"));
    assert_eq!(q::<Value>(&mut c, &["SET", "new", "x", "GET"]), Value::Nil);
    assert_eq!(s(&mut c, &["GET", "new"]).as_deref(), Some("x"));
    // NX GET (Redis 7): old value, no change when it exists.
    assert_eq!(
        s(&mut c, &["SET", "new", "y", "NX", "GET"]).as_deref(),
        Some("x")
    );
    assert_eq!(s(&mut c, &["GET", "new"]).as_deref(), Some("x"));

    // EX / PX / EXAT / PXAT / KEEPTTL
    assert_eq!(
        q::<Value>(&mut c, &["SET", "t", "1", "EX", "100"]),
        Value::Okay
    );
    let ttl = i(&mut c, &["TTL", "t"]);
    assert!((70..=100).contains(&ttl), "ttl {ttl}");
    q::<()>(&mut c, &["SET", "t", "2", "PX", "100000"]);
    let pttl = i(&mut c, &["PTTL", "t"]);
    assert!((70_000..=100_000).contains(&pttl), "pttl {pttl}");
    q::<()>(&mut c, &["SET", "t", "3", "KEEPTTL"]);
    let pttl = i(&mut c, &["PTTL", "t"]);
    assert!((70_000..=100_000).contains(&pttl), "KEEPTTL kept {pttl}");
    q::<()>(&mut c, &["SET", "t", "4"]);
    assert_eq!(i(&mut c, &["TTL", "t"]), -1, "plain SET clears the TTL");
    let at = (now_ms() / 1000 + 200).to_string();
    q::<()>(&mut c, &["SET", "t", "5", "EXAT", &at]);
    assert_eq!(i(&mut c, &["EXPIRETIME", "t"]).to_string(), at);
    let pat = (now_ms() + 300_000).to_string();
    q::<()>(&mut c, &["SET", "t", "6", "PXAT", &pat]);
    assert_eq!(i(&mut c, &["PEXPIRETIME", "t"]).to_string(), pat);

    // invalid combinations
    for bad in [
        &["SET", "k", "v", "NX", "XX"][..],
        &["SET", "k", "v", "XX", "NX"],
        &["SET", "k", "v", "EX", "10", "PX", "100"],
        &["SET", "k", "v", "EX", "10", "KEEPTTL"],
        &["SET", "k", "v", "KEEPTTL", "EXAT", "10"],
        &["SET", "k", "v", "EX"],
        &["SET", "k", "v", "FOO"],
        &["SET", "k", "v", "PXAT"],
    ] {
        assert_eq!(e(&mut c, bad), SYNTAX, "{bad:?}");
    }
    for bad in [
        &["SET", "k", "v", "EX", "0"][..],
        &["SET", "k", "v", "EX", "-1"],
        &["SET", "k", "v", "PX", "0"],
        &["SET", "k", "v", "EXAT", "0"],
        &["SET", "k", "v", "PXAT", "-5"],
        &["SET", "k", "v", "PX", "9223372036854775807"],
        &["SET", "k", "v", "EX", "9223372036854775807"],
    ] {
        assert_eq!(
            e(&mut c, bad),
            "ERR invalid expire time in 'set' command",
            "{bad:?}"
        );
    }
    assert_eq!(e(&mut c, &["SET", "k", "v", "EX", "ten"]), NOT_INT);
    assert_eq!(
        s(&mut c, &["GET", "k"]).as_deref(),
        Some("v3"),
        "errors changed nothing"
    );

    // binary-safe values
    let bin: Vec<u8> = (0..=255u8).collect();
    redis::cmd("SET")
        .arg("bin")
        .arg(&bin[..])
        .query::<()>(&mut c)
        .unwrap();
    let got: Vec<u8> = redis::cmd("GET").arg("bin").query(&mut c).unwrap();
    assert_eq!(got, bin);
}

#[test]
fn set_variants_getset_getdel_getex() {
    let node = Node::leader(&[]);
    let mut c = node.client();

    assert_eq!(i(&mut c, &["SETNX", "a", "1"]), 1);
    assert_eq!(i(&mut c, &["SETNX", "a", "2"]), 0);
    assert_eq!(s(&mut c, &["GET", "a"]).as_deref(), Some("1"));

    assert_eq!(q::<Value>(&mut c, &["SETEX", "b", "100", "x"]), Value::Okay);
    assert!((70..=100).contains(&i(&mut c, &["TTL", "b"])));
    assert_eq!(
        e(&mut c, &["SETEX", "b", "0", "x"]),
        "ERR invalid expire time in 'setex' command"
    );
    assert_eq!(
        e(&mut c, &["SETEX", "b", "-10", "x"]),
        "ERR invalid expire time in 'setex' command"
    );
    assert_eq!(e(&mut c, &["SETEX", "b", "x", "x"]), NOT_INT);
    assert_eq!(
        q::<Value>(&mut c, &["PSETEX", "p", "100000", "y"]),
        Value::Okay
    );
    let pttl = i(&mut c, &["PTTL", "p"]);
    assert!((70_000..=100_000).contains(&pttl), "{pttl}");
    assert_eq!(
        e(&mut c, &["PSETEX", "p", "0", "y"]),
        "ERR invalid expire time in 'psetex' command"
    );

    // GETSET returns the old value and clears the TTL.
    assert_eq!(s(&mut c, &["GETSET", "b", "z"]).as_deref(), Some("x"));
    assert_eq!(i(&mut c, &["TTL", "b"]), -1);
    assert_eq!(q::<Value>(&mut c, &["GETSET", "nokey", "1"]), Value::Nil);
    assert_eq!(s(&mut c, &["GET", "nokey"]).as_deref(), Some("1"));

    assert_eq!(s(&mut c, &["GETDEL", "b"]).as_deref(), Some("z"));
    assert_eq!(q::<Value>(&mut c, &["GETDEL", "b"]), Value::Nil);
    assert_eq!(i(&mut c, &["EXISTS", "b"]), 0);

    // GETEX
    q::<()>(&mut c, &["SET", "g", "v"]);
    assert_eq!(s(&mut c, &["GETEX", "g"]).as_deref(), Some("v"));
    assert_eq!(i(&mut c, &["TTL", "g"]), -1);
    assert_eq!(
        s(&mut c, &["GETEX", "g", "EX", "100"]).as_deref(),
        Some("v")
    );
    assert!((70..=100).contains(&i(&mut c, &["TTL", "g"])));
    assert_eq!(s(&mut c, &["GETEX", "g", "PERSIST"]).as_deref(), Some("v"));
    assert_eq!(i(&mut c, &["TTL", "g"]), -1);
    assert_eq!(
        s(&mut c, &["GETEX", "g", "PX", "100000"]).as_deref(),
        Some("v")
    );
    assert!(i(&mut c, &["PTTL", "g"]) > 70_000);
    let at = (now_ms() / 1000 + 500).to_string();
    assert_eq!(
        s(&mut c, &["GETEX", "g", "EXAT", &at]).as_deref(),
        Some("v")
    );
    assert_eq!(i(&mut c, &["EXPIRETIME", "g"]).to_string(), at);
    assert_eq!(
        q::<Value>(&mut c, &["GETEX", "missing", "EX", "10"]),
        Value::Nil
    );
    assert_eq!(e(&mut c, &["GETEX", "g", "EX", "10", "PX", "10"]), SYNTAX);
    assert_eq!(e(&mut c, &["GETEX", "g", "PERSIST", "EX", "10"]), SYNTAX);
    assert_eq!(e(&mut c, &["GETEX", "g", "EX"]), SYNTAX);
    assert_eq!(
        e(&mut c, &["GETEX", "g", "EX", "0"]),
        "ERR invalid expire time in 'getex' command"
    );
    assert_eq!(e(&mut c, &["GETEX", "g", "EX", "abc"]), NOT_INT);
}

#[test]
fn multi_key_commands() {
    let node = Node::leader(&[]);
    let mut c = node.client();

    assert_eq!(
        q::<Value>(&mut c, &["MSET", "a", "1", "b", "2"]),
        Value::Okay
    );
    let got: Vec<Option<String>> = q(&mut c, &["MGET", "a", "nope", "b", "a"]);
    assert_eq!(
        got,
        vec![Some("1".into()), None, Some("2".into()), Some("1".into())]
    );
    assert_eq!(
        e(&mut c, &["MSET", "a", "1", "b"]),
        "ERR wrong number of arguments for 'mset' command"
    );
    assert_eq!(
        e(&mut c, &["MSETNX", "a"]),
        "ERR wrong number of arguments for 'msetnx' command"
    );
    assert_eq!(i(&mut c, &["MSETNX", "x", "1", "a", "9"]), 0);
    assert_eq!(i(&mut c, &["EXISTS", "x"]), 0, "MSETNX is all or nothing");
    assert_eq!(i(&mut c, &["MSETNX", "x", "1", "y", "2"]), 1);
    // Last one wins for a key given twice.
    q::<()>(&mut c, &["MSET", "d", "1", "d", "2"]);
    assert_eq!(s(&mut c, &["GET", "d"]).as_deref(), Some("2"));

    // EXISTS counts duplicates; DEL counts each key once.
    assert_eq!(i(&mut c, &["EXISTS", "a", "a", "nope", "b"]), 3);
    assert_eq!(i(&mut c, &["DEL", "a", "a", "nope"]), 1);
    assert_eq!(i(&mut c, &["UNLINK", "b", "x", "b", "nope"]), 2);
    assert_eq!(i(&mut c, &["EXISTS", "a", "b", "x"]), 0);
    assert_eq!(i(&mut c, &["DEL", "nope"]), 0);
}

#[test]
fn counters() {
    let node = Node::leader(&[]);
    let mut c = node.client();

    assert_eq!(i(&mut c, &["INCR", "n"]), 1);
    assert_eq!(i(&mut c, &["INCRBY", "n", "41"]), 42);
    assert_eq!(i(&mut c, &["DECR", "n"]), 41);
    assert_eq!(i(&mut c, &["DECRBY", "n", "50"]), -9);
    assert_eq!(i(&mut c, &["INCRBY", "n", "-1"]), -10);
    assert_eq!(s(&mut c, &["GET", "n"]).as_deref(), Some("-10"));
    assert_eq!(i(&mut c, &["DECR", "fresh"]), -1);

    // A counter keeps its TTL.
    q::<()>(&mut c, &["SET", "ttl", "5", "EX", "100"]);
    assert_eq!(i(&mut c, &["INCR", "ttl"]), 6);
    assert!(i(&mut c, &["TTL", "ttl"]) > 0);

    for bad in [
        "abc",
        "1.5",
        " 1",
        "1 ",
        "+1",
        "01",
        "",
        "99999999999999999999",
    ] {
        q::<()>(&mut c, &["SET", "s", bad]);
        assert_eq!(e(&mut c, &["INCR", "s"]), NOT_INT, "INCR on {bad:?}");
        assert_eq!(
            e(&mut c, &["INCRBY", "n", bad]),
            NOT_INT,
            "INCRBY by {bad:?}"
        );
        assert_eq!(
            e(&mut c, &["DECRBY", "n", bad]),
            NOT_INT,
            "DECRBY by {bad:?}"
        );
    }
    q::<()>(&mut c, &["SET", "max", "9223372036854775807"]);
    assert_eq!(
        e(&mut c, &["INCR", "max"]),
        "ERR increment or decrement would overflow"
    );
    assert_eq!(
        e(&mut c, &["INCRBY", "max", "1"]),
        "ERR increment or decrement would overflow"
    );
    q::<()>(&mut c, &["SET", "min", "-9223372036854775808"]);
    assert_eq!(
        e(&mut c, &["DECR", "min"]),
        "ERR increment or decrement would overflow"
    );
    assert_eq!(
        e(&mut c, &["DECRBY", "n", "-9223372036854775808"]),
        "ERR decrement would overflow"
    );
    assert_eq!(
        s(&mut c, &["GET", "max"]).as_deref(),
        Some("9223372036854775807")
    );

    // INCRBYFLOAT, the examples of the Redis documentation.
    q::<()>(&mut c, &["SET", "f", "10.50"]);
    assert_eq!(
        s(&mut c, &["INCRBYFLOAT", "f", "0.1"]).as_deref(),
        Some("10.6")
    );
    assert_eq!(
        s(&mut c, &["INCRBYFLOAT", "f", "-5"]).as_deref(),
        Some("5.6")
    );
    q::<()>(&mut c, &["SET", "f", "5.0e3"]);
    assert_eq!(
        s(&mut c, &["INCRBYFLOAT", "f", "2.0e2"]).as_deref(),
        Some("5200")
    );
    assert_eq!(s(&mut c, &["INCRBYFLOAT", "nf", "3"]).as_deref(), Some("3"));
    assert_eq!(
        s(&mut c, &["INCRBYFLOAT", "nf", "-3"]).as_deref(),
        Some("0")
    );
    q::<()>(&mut c, &["SET", "p", "0.1"]);
    assert_eq!(
        s(&mut c, &["INCRBYFLOAT", "p", "0.2"]).as_deref(),
        Some("0.3")
    );
    assert_eq!(
        e(&mut c, &["INCRBYFLOAT", "f", "nan"]),
        "ERR value is not a valid float"
    );
    assert_eq!(
        e(&mut c, &["INCRBYFLOAT", "f", "abc"]),
        "ERR value is not a valid float"
    );
    assert_eq!(
        e(&mut c, &["INCRBYFLOAT", "f", "inf"]),
        "ERR increment would produce NaN or Infinity"
    );
    q::<()>(&mut c, &["SET", "txt", "hello"]);
    assert_eq!(
        e(&mut c, &["INCRBYFLOAT", "txt", "1"]),
        "ERR value is not a valid float"
    );
    assert_eq!(s(&mut c, &["GET", "f"]).as_deref(), Some("5200"));
}

#[test]
fn append_strlen_ranges() {
    let node = Node::leader(&[]);
    let mut c = node.client();

    assert_eq!(i(&mut c, &["APPEND", "a", "Hello"]), 5);
    assert_eq!(i(&mut c, &["APPEND", "a", " World"]), 11);
    assert_eq!(s(&mut c, &["GET", "a"]).as_deref(), Some("Hello World"));
    assert_eq!(i(&mut c, &["STRLEN", "a"]), 11);
    assert_eq!(i(&mut c, &["STRLEN", "missing"]), 0);

    q::<()>(&mut c, &["SET", "r", "This is a string"]);
    for (start, end, want) in [
        ("0", "3", "This"),
        ("-3", "-1", "ing"),
        ("0", "-1", "This is a string"),
        ("10", "100", "string"),
        ("5", "3", ""),
        ("-1", "-5", ""),
        ("-100", "3", "This"),
        ("100", "200", ""),
        // Redis 7 clamps a too-negative end to 0 (one byte).
        ("0", "-100", "T"),
    ] {
        assert_eq!(
            s(&mut c, &["GETRANGE", "r", start, end]).as_deref(),
            Some(want),
            "GETRANGE {start} {end}"
        );
    }
    assert_eq!(
        s(&mut c, &["GETRANGE", "missing", "0", "-1"]).as_deref(),
        Some("")
    );
    assert_eq!(e(&mut c, &["GETRANGE", "r", "a", "1"]), NOT_INT);

    q::<()>(&mut c, &["SET", "key1", "Hello World"]);
    assert_eq!(i(&mut c, &["SETRANGE", "key1", "6", "Redis"]), 11);
    assert_eq!(s(&mut c, &["GET", "key1"]).as_deref(), Some("Hello Redis"));
    assert_eq!(i(&mut c, &["SETRANGE", "key2", "6", "Redis"]), 11);
    let padded: Vec<u8> = redis::cmd("GET").arg("key2").query(&mut c).unwrap();
    assert_eq!(padded, b"\0\0\0\0\0\0Redis");
    assert_eq!(i(&mut c, &["SETRANGE", "key1", "20", "!"]), 21);
    assert_eq!(i(&mut c, &["SETRANGE", "empty", "5", ""]), 0);
    assert_eq!(
        i(&mut c, &["EXISTS", "empty"]),
        0,
        "empty patch creates nothing"
    );
    assert_eq!(i(&mut c, &["SETRANGE", "key1", "0", ""]), 21);
    assert_eq!(
        e(&mut c, &["SETRANGE", "key1", "-1", "x"]),
        "ERR offset is out of range"
    );
    assert_eq!(e(&mut c, &["SETRANGE", "key1", "x", "x"]), NOT_INT);
    assert_eq!(
        e(&mut c, &["SETRANGE", "key1", "536870912", "x"]),
        "ERR string exceeds maximum allowed size (proto-max-bulk-len)"
    );
}

#[test]
fn expire_family() {
    let node = Node::leader(&[]);
    let mut c = node.client();

    assert_eq!(i(&mut c, &["EXPIRE", "missing", "100"]), 0);
    assert_eq!(i(&mut c, &["TTL", "missing"]), -2);
    assert_eq!(i(&mut c, &["PTTL", "missing"]), -2);
    assert_eq!(i(&mut c, &["EXPIRETIME", "missing"]), -2);
    assert_eq!(i(&mut c, &["PEXPIRETIME", "missing"]), -2);
    assert_eq!(i(&mut c, &["PERSIST", "missing"]), 0);

    q::<()>(&mut c, &["SET", "k", "v"]);
    assert_eq!(i(&mut c, &["TTL", "k"]), -1);
    assert_eq!(i(&mut c, &["PTTL", "k"]), -1);
    assert_eq!(i(&mut c, &["EXPIRETIME", "k"]), -1);
    assert_eq!(i(&mut c, &["PERSIST", "k"]), 0);

    // NX / XX / GT / LT on a key without TTL.
    assert_eq!(i(&mut c, &["EXPIRE", "k", "100", "XX"]), 0);
    assert_eq!(
        i(&mut c, &["EXPIRE", "k", "100", "GT"]),
        0,
        "no TTL = infinite"
    );
    assert_eq!(i(&mut c, &["TTL", "k"]), -1);
    assert_eq!(i(&mut c, &["EXPIRE", "k", "100", "NX"]), 1);
    assert_eq!(i(&mut c, &["EXPIRE", "k", "200", "NX"]), 0);
    assert!((70..=100).contains(&i(&mut c, &["TTL", "k"])));
    assert_eq!(i(&mut c, &["EXPIRE", "k", "50", "GT"]), 0);
    assert_eq!(i(&mut c, &["EXPIRE", "k", "200", "GT"]), 1);
    assert!((170..=200).contains(&i(&mut c, &["TTL", "k"])));
    assert_eq!(i(&mut c, &["EXPIRE", "k", "300", "LT"]), 0);
    assert_eq!(i(&mut c, &["EXPIRE", "k", "150", "lt"]), 1);
    assert_eq!(i(&mut c, &["EXPIRE", "k", "120", "XX"]), 1);
    assert!((90..=120).contains(&i(&mut c, &["TTL", "k"])));
    assert_eq!(i(&mut c, &["PERSIST", "k"]), 1);
    assert_eq!(i(&mut c, &["TTL", "k"]), -1);
    assert_eq!(
        i(&mut c, &["EXPIRE", "k", "100", "LT"]),
        1,
        "LT on no TTL sets it"
    );

    assert_eq!(
        e(&mut c, &["EXPIRE", "k", "10", "NX", "XX"]),
        "ERR NX and XX, GT or LT options at the same time are not compatible"
    );
    assert_eq!(
        e(&mut c, &["EXPIRE", "k", "10", "NX", "GT"]),
        "ERR NX and XX, GT or LT options at the same time are not compatible"
    );
    assert_eq!(
        e(&mut c, &["EXPIRE", "k", "10", "GT", "LT"]),
        "ERR GT and LT options at the same time are not compatible"
    );
    assert_eq!(
        e(&mut c, &["EXPIRE", "k", "10", "Foo"]),
        "ERR Unsupported option Foo"
    );
    assert_eq!(e(&mut c, &["EXPIRE", "k", "ten"]), NOT_INT);
    assert_eq!(
        e(&mut c, &["EXPIRE", "k", "9223372036854775807"]),
        "ERR invalid expire time in 'expire' command"
    );
    assert_eq!(
        e(&mut c, &["PEXPIRE", "k", "9223372036854775807"]),
        "ERR invalid expire time in 'pexpire' command"
    );
    assert_eq!(
        e(&mut c, &["EXPIREAT", "k", "9223372036854775807"]),
        "ERR invalid expire time in 'expireat' command"
    );

    // PEXPIRE / EXPIREAT / PEXPIREAT / EXPIRETIME.
    assert_eq!(i(&mut c, &["PEXPIRE", "k", "100000"]), 1);
    let pttl = i(&mut c, &["PTTL", "k"]);
    assert!((70_000..=100_000).contains(&pttl), "{pttl}");
    let at = now_ms() / 1000 + 1000;
    assert_eq!(i(&mut c, &["EXPIREAT", "k", &at.to_string()]), 1);
    assert_eq!(i(&mut c, &["EXPIRETIME", "k"]), at as i64);
    assert_eq!(i(&mut c, &["PEXPIRETIME", "k"]), at as i64 * 1000);
    let pat = now_ms() + 2_000_000;
    assert_eq!(i(&mut c, &["PEXPIREAT", "k", &pat.to_string()]), 1);
    assert_eq!(i(&mut c, &["PEXPIRETIME", "k"]), pat as i64);
    assert_eq!(i(&mut c, &["EXPIRETIME", "k"]), (pat / 1000) as i64);

    // A time in the past deletes the key.
    q::<()>(&mut c, &["SET", "gone", "v"]);
    assert_eq!(i(&mut c, &["EXPIRE", "gone", "-1"]), 1);
    assert_eq!(i(&mut c, &["EXISTS", "gone"]), 0);
    q::<()>(&mut c, &["SET", "gone", "v"]);
    assert_eq!(i(&mut c, &["PEXPIREAT", "gone", "1"]), 1);
    assert_eq!(q::<Value>(&mut c, &["GET", "gone"]), Value::Nil);
    q::<()>(&mut c, &["SET", "gone", "v"]);
    assert_eq!(i(&mut c, &["EXPIREAT", "gone", "0"]), 1);
    assert_eq!(i(&mut c, &["TTL", "gone"]), -2);

    // TYPE
    assert_eq!(q::<String>(&mut c, &["TYPE", "k"]), "string");
    assert_eq!(q::<String>(&mut c, &["TYPE", "gone"]), "none");
}

#[test]
fn expired_keys_vanish_and_are_reclaimed() {
    let node = Node::leader(&[]);
    let mut c = node.client();

    q::<()>(&mut c, &["SET", "short", "v", "PX", "50"]);
    wait_until(DEADLINE, "GET of a PX 50 key to return nil", || {
        (q::<Value>(&mut c, &["GET", "short"]) == Value::Nil).then_some(())
    });
    assert_eq!(i(&mut c, &["EXISTS", "short"]), 0);
    assert_eq!(i(&mut c, &["TTL", "short"]), -2);

    // Keys never touched again are deleted by the active expiry cycle.
    q::<()>(&mut c, &["FLUSHALL"]);
    // Long enough that all 50 are still there when DBSIZE counts them on a
    // loaded machine (it failed with 50 ms while the suite built in parallel).
    for n in 0..50 {
        q::<()>(&mut c, &["SET", &format!("exp:{n}"), "v", "PX", "1000"]);
    }
    q::<()>(&mut c, &["SET", "stays", "v"]);
    assert_eq!(i(&mut c, &["DBSIZE"]), 51);
    wait_until(
        DEADLINE,
        "the active cycle to delete 50 expired keys",
        || (i(&mut c, &["DBSIZE"]) == 1).then_some(()),
    );
    let info: String = q(&mut c, &["INFO", "stats"]);
    let expired: u64 = info
        .lines()
        .find_map(|l| l.strip_prefix("expired_keys:"))
        .expect("expired_keys in INFO stats")
        .trim()
        .parse()
        .unwrap();
    assert!(expired >= 50, "expired_keys:{expired}");
    assert_eq!(s(&mut c, &["GET", "stays"]).as_deref(), Some("v"));
}

#[test]
fn keys_scan_dbsize_flushall() {
    let node = Node::leader(&[]);
    let mut c = node.client();

    for k in [
        "hello",
        "hallo",
        "hxllo",
        "hllo",
        "heeeello",
        "user:1:name",
        "key:*",
    ] {
        q::<()>(&mut c, &["SET", k, "v"]);
    }
    let keys = |c: &mut redis::Connection, pat: &str| -> HashSet<String> { q(c, &["KEYS", pat]) };
    let set = |v: &[&str]| -> HashSet<String> { v.iter().map(|s| (*s).to_string()).collect() };
    assert_eq!(keys(&mut c, "h?llo"), set(&["hello", "hallo", "hxllo"]));
    assert_eq!(
        keys(&mut c, "h*llo"),
        set(&["hello", "hallo", "hxllo", "hllo", "heeeello"])
    );
    assert_eq!(keys(&mut c, "h[ae]llo"), set(&["hello", "hallo"]));
    assert_eq!(keys(&mut c, "h[^e]llo"), set(&["hallo", "hxllo"]));
    assert_eq!(keys(&mut c, "h[a-b]llo"), set(&["hallo"]));
    assert_eq!(keys(&mut c, "user:*:name"), set(&["user:1:name"]));
    assert_eq!(keys(&mut c, "key:\\*"), set(&["key:*"]));
    assert_eq!(keys(&mut c, "nomatch*"), set(&[]));
    assert_eq!(keys(&mut c, "*").len(), 7);
    assert_eq!(i(&mut c, &["DBSIZE"]), 7);

    assert_eq!(q::<Value>(&mut c, &["FLUSHALL"]), Value::Okay);
    assert_eq!(i(&mut c, &["DBSIZE"]), 0);
    assert_eq!(q::<Value>(&mut c, &["FLUSHALL", "ASYNC"]), Value::Okay);
    assert_eq!(e(&mut c, &["FLUSHALL", "NOW"]), SYNTAX);

    // SCAN: a full iteration returns every key (as a set).
    let mut all = HashSet::new();
    let mut pipe = redis::pipe();
    for n in 0..1000 {
        let k = format!("scan:{n}");
        pipe.cmd("SET").arg(&k).arg(n).ignore();
        all.insert(k);
    }
    pipe.query::<()>(&mut c).unwrap();
    assert_eq!(i(&mut c, &["DBSIZE"]), 1000);
    let scan_all = |c: &mut redis::Connection, extra: &[&str]| -> (HashSet<String>, usize) {
        let mut cursor = "0".to_string();
        let mut seen = HashSet::new();
        let mut calls = 0;
        loop {
            let mut args = vec!["SCAN", cursor.as_str()];
            args.extend_from_slice(extra);
            let (next, batch): (String, Vec<String>) = q(c, &args);
            calls += 1;
            assert!(calls < 100_000, "SCAN does not terminate");
            seen.extend(batch);
            if next == "0" {
                return (seen, calls);
            }
            cursor = next;
        }
    };
    let (seen, calls) = scan_all(&mut c, &[]);
    assert_eq!(seen, all);
    assert!(calls > 1, "1000 keys with COUNT 10 take several calls");
    let (seen, _) = scan_all(&mut c, &["COUNT", "100"]);
    assert_eq!(seen, all);
    let (seen, _) = scan_all(&mut c, &["COUNT", "5000"]);
    assert_eq!(seen, all);
    let (seen, _) = scan_all(&mut c, &["MATCH", "scan:1*", "COUNT", "50"]);
    let want: HashSet<String> = all
        .iter()
        .filter(|k| k.starts_with("scan:1"))
        .cloned()
        .collect();
    assert_eq!(seen, want);
    let (seen, _) = scan_all(&mut c, &["TYPE", "string"]);
    assert_eq!(seen, all);
    let (seen, _) = scan_all(&mut c, &["TYPE", "hash"]);
    assert!(seen.is_empty());
    assert_eq!(e(&mut c, &["SCAN", "abc"]), "ERR invalid cursor");
    assert_eq!(e(&mut c, &["SCAN", "0", "COUNT", "0"]), SYNTAX);
    assert_eq!(e(&mut c, &["SCAN", "0", "COUNT", "x"]), NOT_INT);
    assert_eq!(e(&mut c, &["SCAN", "0", "MATCH"]), SYNTAX);
    assert_eq!(e(&mut c, &["SCAN", "0", "BOGUS", "1"]), SYNTAX);
}

#[test]
fn server_and_connection_commands() {
    let node = Node::leader(&[]);
    let mut c = node.client();

    assert_eq!(q::<String>(&mut c, &["PING"]), "PONG");
    assert_eq!(
        q::<Value>(&mut c, &["PING"]),
        Value::SimpleString("PONG".into())
    );
    assert_eq!(
        q::<Value>(&mut c, &["PING", "hi"]),
        Value::BulkString(b"hi".to_vec())
    );
    assert_eq!(
        s(&mut c, &["ECHO", "hello world"]).as_deref(),
        Some("hello world")
    );
    assert_eq!(
        e(&mut c, &["PING", "a", "b"]),
        "ERR wrong number of arguments for 'ping' command"
    );

    assert_eq!(q::<Value>(&mut c, &["SELECT", "0"]), Value::Okay);
    assert_eq!(e(&mut c, &["SELECT", "1"]), "ERR DB index is out of range");
    assert_eq!(e(&mut c, &["SELECT", "x"]), NOT_INT);

    assert_eq!(q::<Value>(&mut c, &["CLIENT", "GETNAME"]), Value::Nil);
    assert_eq!(
        q::<Value>(&mut c, &["CLIENT", "SETNAME", "worker-1"]),
        Value::Okay
    );
    assert_eq!(
        s(&mut c, &["CLIENT", "GETNAME"]).as_deref(),
        Some("worker-1")
    );
    assert_eq!(
        e(&mut c, &["CLIENT", "SETNAME", "a b"]),
        "ERR Client names cannot contain spaces, newlines or special characters."
    );
    let id = i(&mut c, &["CLIENT", "ID"]);
    assert!(id > 0);
    let mut c2 = node.client();
    let id2 = i(&mut c2, &["CLIENT", "ID"]);
    assert_ne!(id, id2, "client ids are unique");
    assert_eq!(q::<Value>(&mut c2, &["CLIENT", "GETNAME"]), Value::Nil);

    let count = i(&mut c, &["COMMAND", "COUNT"]);
    assert!(count >= 50, "COMMAND COUNT {count}");
    let cfg: Vec<String> = q(&mut c, &["CONFIG", "GET", "maxclients"]);
    assert_eq!(cfg, vec!["maxclients".to_string(), "10000".to_string()]);
    let cfg: Vec<String> = q(&mut c, &["CONFIG", "GET", "nonexistent-param"]);
    assert!(cfg.is_empty());
    let cfg: Vec<String> = q(&mut c, &["CONFIG", "GET", "port"]);
    assert_eq!(
        cfg,
        vec!["port".to_string(), node.addrs.data.port().to_string()]
    );

    let (secs, micros): (String, String) = q(&mut c, &["TIME"]);
    let secs: u64 = secs.parse().unwrap();
    let micros: u64 = micros.parse().unwrap();
    assert!(micros < 1_000_000);
    assert!(secs.abs_diff(now_ms() / 1000) < 60, "TIME {secs}");

    // INFO
    q::<()>(&mut c, &["SET", "a", "1"]);
    let info: String = q(&mut c, &["INFO"]);
    for field in [
        "# Server",
        "redis_version:",
        "# Replication",
        "role:master",
        "master_repl_offset:",
        "connected_clients:",
        "# Keyspace",
        "db0:keys=1",
        "# Persistence",
        "# Stats",
    ] {
        assert!(info.contains(field), "INFO lacks {field:?}:\n{info}");
    }
    let connected: u64 = info
        .lines()
        .find_map(|l| l.strip_prefix("connected_clients:"))
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    assert!(connected >= 2, "connected_clients:{connected}");
    let repl: String = q(&mut c, &["INFO", "replication"]);
    assert!(repl.starts_with("# Replication\r\n"), "{repl}");
    assert!(!repl.contains("# Server"), "INFO replication only:\n{repl}");
    let offset: u64 = repl
        .lines()
        .find_map(|l| l.strip_prefix("master_repl_offset:"))
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    assert!(offset > 0);

    // ROLE: master, offset, replicas.
    match q::<Value>(&mut c, &["ROLE"]) {
        Value::Array(items) => {
            assert_eq!(items.len(), 3, "{items:?}");
            assert_eq!(items[0], Value::BulkString(b"master".to_vec()));
            assert!(matches!(items[1], Value::Int(n) if n > 0), "{items:?}");
            assert_eq!(items[2], Value::Array(vec![]));
        }
        other => panic!("ROLE: {other:?}"),
    }

    // Unknown command and arity errors, byte-exact over raw TCP.
    let mut raw = node.raw();
    assert_eq!(
        raw.cmd_str(&["FOO", "a", "b"]),
        Reply::Error("ERR unknown command 'FOO', with args beginning with: 'a' 'b' ".into())
    );
    assert_eq!(
        raw.cmd_str(&["FOO"]),
        Reply::Error("ERR unknown command 'FOO', with args beginning with: ".into())
    );
    for (args, name) in [
        (&["GET"][..], "get"),
        (&["GET", "a", "b"], "get"),
        (&["SET", "a"], "set"),
        (&["ECHO"], "echo"),
        (&["EXPIRE", "a"], "expire"),
        (&["DEL"], "del"),
        (&["mget"], "mget"),
        (&["Incr"], "incr"),
        (&["DBSIZE", "x"], "dbsize"),
    ] {
        assert_eq!(
            raw.cmd_str(args),
            Reply::Error(format!(
                "ERR wrong number of arguments for '{name}' command"
            )),
            "{args:?}"
        );
    }
    // The connection still works after errors.
    assert_eq!(raw.cmd_str(&["PING"]), Reply::Simple("PONG".into()));
    assert_eq!(raw.cmd_str(&["QUIT"]), Reply::Simple("OK".into()));
    assert!(raw.closed_by_server(), "QUIT closes the connection");
}

#[test]
fn hello_3_switches_to_resp3() {
    let node = Node::leader(&[]);
    let mut raw = node.raw();
    // RESP2 first: CONFIG GET is a flat array.
    raw.send(&rstore_testkit::encode_cmd(&[
        b"CONFIG",
        b"GET",
        b"maxclients",
    ]));
    assert_eq!(raw.peek_type(), b'*');
    raw.read().unwrap();

    raw.send(&rstore_testkit::encode_cmd(&[b"HELLO", b"3"]));
    assert_eq!(raw.peek_type(), b'%', "HELLO 3 answers with a RESP3 map");
    let Reply::Map(fields) = raw.read().unwrap() else {
        panic!("not a map")
    };
    let get = |name: &str| {
        fields
            .iter()
            .find(|(k, _)| *k == Reply::Bulk(name.as_bytes().to_vec()))
            .map(|(_, v)| v.clone())
    };
    assert_eq!(get("proto"), Some(Reply::Int(3)));
    assert_eq!(get("server"), Some(Reply::Bulk(b"redis".to_vec())));
    assert!(get("version").is_some());
    assert!(matches!(get("role"), Some(Reply::Bulk(r)) if r == b"master"));

    raw.send(&rstore_testkit::encode_cmd(&[
        b"CONFIG",
        b"GET",
        b"maxclients",
    ]));
    assert_eq!(raw.peek_type(), b'%', "CONFIG GET is a map in RESP3");
    raw.read().unwrap();
    // Null is '_' in RESP3.
    assert_eq!(raw.peek_type_of(&[b"GET", b"missing"]), b'_');
    raw.read().unwrap();
    assert_eq!(raw.cmd(&[b"GET", b"missing"]), Reply::Nil);

    // Back to RESP2.
    raw.send(&rstore_testkit::encode_cmd(&[b"HELLO", b"2"]));
    assert_eq!(raw.peek_type(), b'*');
    raw.read().unwrap();
    assert_eq!(raw.peek_type_of(&[b"GET", b"missing"]), b'$');
    raw.read().unwrap();
    assert_eq!(
        raw.cmd_str(&["HELLO", "4"]),
        Reply::Error("NOPROTO unsupported protocol version".into())
    );

    // The redis crate in RESP3 mode works too.
    let mut c = rstore_testkit::connect(&format!("redis://{}/?protocol=resp3", node.addrs.data));
    q::<()>(&mut c, &["SET", "a", "1"]);
    assert_eq!(s(&mut c, &["GET", "a"]).as_deref(), Some("1"));
}

trait PeekExt {
    fn peek_type_of(&mut self, args: &[&[u8]]) -> u8;
}

impl PeekExt for rstore_testkit::Raw {
    fn peek_type_of(&mut self, args: &[&[u8]]) -> u8 {
        self.send(&rstore_testkit::encode_cmd(args));
        self.peek_type()
    }
}

#[test]
fn reploffset_and_waitoffset() {
    let node = Node::leader(&[]);
    let mut c = node.client();
    assert_eq!(
        i(&mut c, &["REPLOFFSET"]),
        0,
        "no write on this connection yet"
    );
    q::<()>(&mut c, &["SET", "a", "1"]);
    let o1 = i(&mut c, &["REPLOFFSET"]);
    assert!(o1 > 0);
    q::<()>(&mut c, &["SET", "b", "2"]);
    let o2 = i(&mut c, &["REPLOFFSET"]);
    assert!(o2 > o1, "{o2} > {o1}");
    q::<()>(&mut c, &["GET", "a"]);
    assert_eq!(i(&mut c, &["REPLOFFSET"]), o2, "reads do not move it");
    // Another connection's writes do not move this one's offset.
    let mut other = node.client();
    q::<()>(&mut other, &["SET", "c", "3"]);
    assert!(i(&mut other, &["REPLOFFSET"]) > o2);
    assert_eq!(i(&mut c, &["REPLOFFSET"]), o2);

    let applied = i(&mut c, &["WAITOFFSET", &o2.to_string(), "1000"]);
    assert!(applied >= o2, "WAITOFFSET returned {applied} < {o2}");
    let applied = i(&mut c, &["WAITOFFSET", &o1.to_string(), "0"]);
    assert!(applied >= o1);
    let future = (o2 + 1_000_000).to_string();
    let err = e(&mut c, &["WAITOFFSET", &future, "100"]);
    assert!(err.starts_with("TIMEOUT"), "{err}");
    assert_eq!(e(&mut c, &["WAITOFFSET", "x", "100"]), NOT_INT);
}

#[test]
fn pipeline_of_1000_mixed_commands_replies_in_order() {
    let node = Node::leader(&[]);
    let mut c = node.client();
    let mut pipe = redis::pipe();
    for n in 0..250 {
        pipe.cmd("SET").arg(format!("p:{n}")).arg(n);
        pipe.cmd("INCR").arg("counter");
        pipe.cmd("GET").arg(format!("p:{n}"));
        pipe.cmd("ECHO").arg(format!("e{n}"));
    }
    let replies: Vec<Value> = pipe.query(&mut c).unwrap();
    assert_eq!(replies.len(), 1000);
    for (n, chunk) in replies.chunks(4).enumerate() {
        assert_eq!(chunk[0], Value::Okay, "reply {}", n * 4);
        assert_eq!(chunk[1], Value::Int(n as i64 + 1), "reply {}", n * 4 + 1);
        assert_eq!(
            chunk[2],
            Value::BulkString(n.to_string().into_bytes()),
            "reply {}",
            n * 4 + 2
        );
        assert_eq!(
            chunk[3],
            Value::BulkString(format!("e{n}").into_bytes()),
            "reply {}",
            n * 4 + 3
        );
    }
    assert_eq!(i(&mut c, &["DBSIZE"]), 251);

    // Raw: a pipeline whose middle command fails keeps its order.
    let mut raw = node.raw();
    let mut bytes = Vec::new();
    bytes.extend(rstore_testkit::encode_cmd(&[b"SET", b"x", b"1"]));
    bytes.extend(rstore_testkit::encode_cmd(&[b"INCR", b"p:1x"]));
    bytes.extend(rstore_testkit::encode_cmd(&[b"INCRBY", b"x", b"y"]));
    bytes.extend(rstore_testkit::encode_cmd(&[b"INCR", b"x"]));
    raw.send(&bytes);
    assert_eq!(raw.read().unwrap(), Reply::Simple("OK".into()));
    assert_eq!(raw.read().unwrap(), Reply::Int(1));
    assert_eq!(raw.read().unwrap(), Reply::Error(NOT_INT.into()));
    assert_eq!(raw.read().unwrap(), Reply::Int(2));
}

/// `--requirepass` guards replication connections too: a follower that
/// presents another password (or none) is refused, one with the same
/// password streams.
#[test]
fn replication_connections_need_the_leaders_requirepass() {
    let leader = Node::leader(&["--requirepass", "secret"]);
    let repl = leader.addrs.repl.to_string();
    let intruder = Node::start_named("intruder", &["--follow", &repl, "--requirepass", "secrex"]);
    let member = Node::start_named("member", &["--follow", &repl, "--requirepass", "secret"]);
    wait_until(DEADLINE, "the member to stream", || {
        (member.status().link == Some(rstore_node::admin::LinkStatus::Up)).then_some(())
    });
    assert_ne!(
        intruder.status().link,
        Some(rstore_node::admin::LinkStatus::Up)
    );
    let followers: Vec<String> = leader
        .status()
        .followers
        .into_iter()
        .map(|f| f.node_id)
        .collect();
    assert_eq!(followers, ["member"]);
}

#[test]
fn auth_with_requirepass() {
    let node = Node::leader(&["--requirepass", "secret"]);
    let mut raw = node.raw();
    let noauth = Reply::Error("NOAUTH Authentication required.".into());
    assert_eq!(raw.cmd_str(&["GET", "a"]), noauth);
    assert_eq!(raw.cmd_str(&["SET", "a", "1"]), noauth);
    assert_eq!(raw.cmd_str(&["PING"]), noauth);
    assert_eq!(
        raw.cmd_str(&["AUTH", "wrong"]),
        Reply::Error("WRONGPASS invalid username-password pair or user is disabled.".into())
    );
    assert_eq!(
        raw.cmd_str(&["AUTH", "admin", "secret"]),
        Reply::Error("WRONGPASS invalid username-password pair or user is disabled.".into())
    );
    assert_eq!(raw.cmd_str(&["GET", "a"]), noauth);
    assert_eq!(raw.cmd_str(&["AUTH", "secret"]), Reply::Simple("OK".into()));
    assert_eq!(raw.cmd_str(&["SET", "a", "1"]), Reply::Simple("OK".into()));
    assert_eq!(raw.cmd_str(&["GET", "a"]), Reply::Bulk(b"1".to_vec()));

    let mut raw2 = node.raw();
    assert_eq!(
        raw2.cmd_str(&["AUTH", "default", "secret"]),
        Reply::Simple("OK".into())
    );
    assert_eq!(raw2.cmd_str(&["GET", "a"]), Reply::Bulk(b"1".to_vec()));

    // HELLO 3 AUTH default secret authenticates and switches protocol.
    let mut raw3 = node.raw();
    assert_eq!(
        raw3.cmd_str(&["HELLO", "3"]),
        Reply::Error("NOAUTH HELLO must be called with the client already authenticated, otherwise the HELLO <proto> AUTH <user> <pass> option can be used to authenticate the client and select the RESP protocol version at the same time".into())
    );
    raw3.send(&rstore_testkit::encode_cmd(&[
        b"HELLO", b"3", b"AUTH", b"default", b"secret",
    ]));
    assert_eq!(raw3.peek_type(), b'%');
    raw3.read().unwrap();
    assert_eq!(raw3.cmd_str(&["GET", "a"]), Reply::Bulk(b"1".to_vec()));
    let mut raw4 = node.raw();
    let r = raw4.cmd_str(&["HELLO", "3", "AUTH", "default", "nope"]);
    assert_eq!(
        r,
        Reply::Error("WRONGPASS invalid username-password pair or user is disabled.".into())
    );
    assert_eq!(raw4.cmd_str(&["GET", "a"]), noauth);

    // The redis crate with a password in the URL.
    let mut c = rstore_testkit::connect(&format!("redis://:secret@{}/", node.addrs.data));
    assert_eq!(s(&mut c, &["GET", "a"]).as_deref(), Some("1"));
    let mut c = rstore_testkit::connect(&format!(
        "redis://:secret@{}/?protocol=resp3",
        node.addrs.data
    ));
    assert_eq!(s(&mut c, &["GET", "a"]).as_deref(), Some("1"));

    // Without a password configured, AUTH is an error.
    drop(node);
    let open = Node::leader(&[]);
    let mut raw = open.raw();
    assert_eq!(
        raw.cmd_str(&["AUTH", "x"]),
        Reply::Error("ERR AUTH <password> called without any password configured for the default user. Are you sure your configuration is correct?".into())
    );
}

#[test]
fn writes_survive_a_clean_restart_with_ttls() {
    let mut node = Node::leader(&[]);
    {
        let mut c = node.client();
        q::<()>(&mut c, &["SET", "a", "1"]);
        q::<()>(&mut c, &["SET", "t", "1", "EX", "1000"]);
        q::<()>(&mut c, &["INCRBY", "n", "5"]);
    }
    let status = node.terminate();
    assert!(status.success(), "{status:?}");
    node.restart();
    let mut c = node.client();
    assert_eq!(s(&mut c, &["GET", "a"]).as_deref(), Some("1"));
    assert_eq!(s(&mut c, &["GET", "n"]).as_deref(), Some("5"));
    let ttl = i(&mut c, &["TTL", "t"]);
    assert!((700..=1000).contains(&ttl), "TTL survives restart: {ttl}");
}
