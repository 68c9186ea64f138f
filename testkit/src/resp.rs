//! Redis clients: a `redis`-crate connection, error texts, and a raw RESP
//! client that writes bytes and parses replies itself.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::{Duration, Instant};

use crate::DEADLINE;

/// One attempt at a `redis`-crate connection to `url`, with a connect
/// deadline and read and write timeouts of `io_timeout`.
pub fn try_connect(
    url: &str,
    connect_timeout: Duration,
    io_timeout: Duration,
) -> redis::RedisResult<redis::Connection> {
    let c = redis::Client::open(url)?.get_connection_with_timeout(connect_timeout)?;
    c.set_read_timeout(Some(io_timeout))?;
    c.set_write_timeout(Some(io_timeout))?;
    Ok(c)
}

/// A `redis`-crate connection to `url` (`redis://[:password@]host:port/`),
/// retried until [`DEADLINE`]; reads and writes time out after
/// [`DEADLINE`].
pub fn connect(url: &str) -> redis::Connection {
    let end = Instant::now() + DEADLINE;
    loop {
        let err = match try_connect(url, Duration::from_secs(5), DEADLINE) {
            Ok(c) => return c,
            Err(e) => e,
        };
        assert!(
            Instant::now() < end,
            "connect {url}: no connection within {DEADLINE:?}: {err}"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Exact error text of a server error reply ("CODE detail"), as Redis sent it.
pub fn err_text(e: &redis::RedisError) -> String {
    match (e.code(), e.detail()) {
        (Some(code), Some(detail)) => format!("{code} {detail}"),
        (Some(code), None) => code.to_string(),
        _ => format!("<not a server error: {e}>"),
    }
}

/// Run a command that must fail; returns its exact error text.
pub fn expect_err(con: &mut redis::Connection, cmd: &redis::Cmd) -> String {
    match cmd.query::<redis::Value>(con) {
        Ok(v) => panic!("expected an error from {:?}, got {v:?}", cmd_name(cmd)),
        Err(e) => err_text(&e),
    }
}

fn cmd_name(cmd: &redis::Cmd) -> String {
    String::from_utf8_lossy(&cmd.get_packed_command()).replace("\r\n", " ")
}

/// A parsed reply, RESP2 and RESP3.
#[derive(Debug, Clone, PartialEq)]
pub enum Reply {
    Simple(String),
    Error(String),
    Int(i64),
    Bulk(Vec<u8>),
    Nil,
    Array(Vec<Reply>),
    Map(Vec<(Reply, Reply)>),
    Set(Vec<Reply>),
    Double(String),
    Bool(bool),
    Verbatim(String),
    BigNum(String),
}

/// A raw TCP client that writes bytes and parses replies itself.
pub struct Raw {
    pub reader: BufReader<TcpStream>,
    pub stream: TcpStream,
}

impl Raw {
    /// Connect to a data port; reads time out after [`DEADLINE`].
    pub fn connect(addr: SocketAddr) -> Raw {
        let stream = TcpStream::connect(addr).unwrap_or_else(|e| panic!("connect to {addr}: {e}"));
        stream.set_read_timeout(Some(DEADLINE)).unwrap();
        stream.set_nodelay(true).unwrap();
        Raw {
            reader: BufReader::new(stream.try_clone().unwrap()),
            stream,
        }
    }

    pub fn send(&mut self, bytes: &[u8]) {
        self.stream.write_all(bytes).unwrap();
    }

    /// Send a command as a RESP array of bulk strings.
    pub fn cmd(&mut self, args: &[&[u8]]) -> Reply {
        self.send(&encode_cmd(args));
        self.read().unwrap()
    }

    pub fn cmd_str(&mut self, args: &[&str]) -> Reply {
        let a: Vec<&[u8]> = args.iter().map(|s| s.as_bytes()).collect();
        self.cmd(&a)
    }

    fn line(&mut self) -> std::io::Result<String> {
        let mut buf = Vec::new();
        let n = self.reader.read_until(b'\n', &mut buf)?;
        if n == 0 {
            return Err(std::io::ErrorKind::UnexpectedEof.into());
        }
        assert!(buf.ends_with(b"\r\n"), "line without CRLF: {buf:?}");
        buf.truncate(buf.len() - 2);
        Ok(String::from_utf8_lossy(&buf).into_owned())
    }

    /// The first byte of the next reply (peeked, not consumed).
    pub fn peek_type(&mut self) -> u8 {
        self.reader.fill_buf().unwrap()[0]
    }

    /// Read one reply; Err on EOF or I/O error.
    pub fn read(&mut self) -> std::io::Result<Reply> {
        let line = self.line()?;
        let (t, rest) = line.split_at(1);
        let int = |s: &str| -> i64 { s.parse().unwrap_or_else(|_| panic!("bad length {s:?}")) };
        Ok(match t {
            "+" => Reply::Simple(rest.into()),
            "-" => Reply::Error(rest.into()),
            ":" => Reply::Int(int(rest)),
            "_" => Reply::Nil,
            "#" => Reply::Bool(rest == "t"),
            "," => Reply::Double(rest.into()),
            "(" => Reply::BigNum(rest.into()),
            "$" | "=" => {
                let n = int(rest);
                if n < 0 {
                    Reply::Nil
                } else {
                    let mut buf = vec![0u8; n as usize + 2];
                    self.reader.read_exact(&mut buf)?;
                    assert_eq!(&buf[n as usize..], b"\r\n", "bulk terminator");
                    buf.truncate(n as usize);
                    if t == "=" {
                        Reply::Verbatim(String::from_utf8_lossy(&buf).into_owned())
                    } else {
                        Reply::Bulk(buf)
                    }
                }
            }
            "*" | "~" | ">" => {
                let n = int(rest);
                if n < 0 {
                    Reply::Nil
                } else {
                    let mut items = Vec::new();
                    for _ in 0..n {
                        items.push(self.read()?);
                    }
                    if t == "~" {
                        Reply::Set(items)
                    } else {
                        Reply::Array(items)
                    }
                }
            }
            "%" => {
                let n = int(rest);
                let mut items = Vec::new();
                for _ in 0..n {
                    let k = self.read()?;
                    let v = self.read()?;
                    items.push((k, v));
                }
                Reply::Map(items)
            }
            other => panic!("unknown reply type {other:?} in {line:?}"),
        })
    }

    /// True when the server closed the connection (EOF or reset) within
    /// the deadline, after consuming whatever else it sent.
    pub fn closed_by_server(&mut self) -> bool {
        let mut buf = [0u8; 1024];
        let end = Instant::now() + DEADLINE;
        loop {
            match self.reader.read(&mut buf) {
                Ok(0) => return true,
                Ok(_) => {}
                Err(e)
                    if matches!(
                        e.kind(),
                        std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                    ) =>
                {
                    return false;
                }
                Err(_) => return true,
            }
            if Instant::now() > end {
                return false;
            }
        }
    }
}

/// A command as a RESP array of bulk strings.
pub fn encode_cmd(args: &[&[u8]]) -> Vec<u8> {
    let mut out = format!("*{}\r\n", args.len()).into_bytes();
    for a in args {
        out.extend_from_slice(format!("${}\r\n", a.len()).as_bytes());
        out.extend_from_slice(a);
        out.extend_from_slice(b"\r\n");
    }
    out
}
