//! Redis command semantics: lookup, arity, auth and role checks, dispatch.
//!
//! Handlers write their reply straight into the connection's output buffer
//! (no intermediate frames on the hot path). Write commands run inside
//! [`Engine::write`] and return the log offset their reply depends on; the
//! connection waits for its acknowledgement before sending the reply.

mod keys;
mod server;
mod strings;
pub mod util;

use std::time::Instant;

use bytes::{Bytes, BytesMut};

use crate::engine::{Engine, EngineError};
use crate::resp::{self, Frame, Protocol};
use crate::stats::Stats;

pub use server::info_text;
/// The node-wide context moved to [`crate::context`]; still named here for
/// the replication tasks that import it from this path.
pub use crate::context::Shared;

/// Per-connection state.
#[derive(Debug)]
pub struct Session {
    pub id: u64,
    pub proto: Protocol,
    pub authed: bool,
    pub name: Option<Bytes>,
    pub addr: String,
    /// End offset of this connection's last write (REPLOFFSET, WAIT).
    pub last_write_offset: u64,
    pub created: Instant,
    pub lib_name: Option<Bytes>,
    pub lib_ver: Option<Bytes>,
}

impl Session {
    pub fn new(id: u64, addr: String, needs_auth: bool) -> Session {
        Session {
            id,
            proto: Protocol::Resp2,
            authed: !needs_auth,
            name: None,
            addr,
            last_write_offset: 0,
            created: Instant::now(),
            lib_name: None,
            lib_ver: None,
        }
    }
}

/// What the connection must do after a command.
#[derive(Debug, PartialEq, Eq)]
pub enum Action {
    /// Reply is complete in the buffer.
    Done,
    /// Reply is in the buffer from `reply_start`; send it only once the
    /// record ending at `offset` is acknowledged.
    Write { offset: u64, reply_start: usize },
    /// Reply written; close the connection after sending it.
    Close,
    /// WAIT numreplicas timeout-ms.
    WaitReplicas { replicas: u64, timeout_ms: u64 },
    /// WAITOFFSET offset timeout-ms.
    WaitOffset { offset: u64, timeout_ms: u64 },
}

/// Command class, for role checks, visibility and metrics.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Read,
    Write,
    Other,
}

/// Static description of a command.
pub struct Spec {
    pub name: &'static str,
    /// Redis arity: n = exactly n args (incl. name), -n = at least n.
    pub arity: i32,
    pub kind: Kind,
    /// Allowed before AUTH.
    pub no_auth: bool,
    pub first_key: i32,
    pub last_key: i32,
    pub step: i32,
}

macro_rules! spec {
    ($name:literal, $arity:expr, $kind:ident) => {
        spec!($name, $arity, $kind, false, 1, 1, 1)
    };
    ($name:literal, $arity:expr, $kind:ident, noauth) => {
        spec!($name, $arity, $kind, true, 0, 0, 0)
    };
    ($name:literal, $arity:expr, $kind:ident, nokeys) => {
        spec!($name, $arity, $kind, false, 0, 0, 0)
    };
    ($name:literal, $arity:expr, $kind:ident, $noauth:expr, $f:expr, $l:expr, $s:expr) => {
        Spec {
            name: $name,
            arity: $arity,
            kind: Kind::$kind,
            no_auth: $noauth,
            first_key: $f,
            last_key: $l,
            step: $s,
        }
    };
}

/// Every supported command.
pub static COMMANDS: &[Spec] = &[
    spec!("get", 2, Read),
    spec!("set", -3, Write),
    spec!("setnx", 3, Write),
    spec!("setex", 4, Write),
    spec!("psetex", 4, Write),
    spec!("getset", 3, Write),
    spec!("getdel", 2, Write),
    spec!("getex", -2, Write),
    spec!("mget", -2, Read, false, 1, -1, 1),
    spec!("mset", -3, Write, false, 1, -1, 2),
    spec!("msetnx", -3, Write, false, 1, -1, 2),
    spec!("del", -2, Write, false, 1, -1, 1),
    spec!("unlink", -2, Write, false, 1, -1, 1),
    spec!("exists", -2, Read, false, 1, -1, 1),
    spec!("incr", 2, Write),
    spec!("decr", 2, Write),
    spec!("incrby", 3, Write),
    spec!("decrby", 3, Write),
    spec!("incrbyfloat", 3, Write),
    spec!("append", 3, Write),
    spec!("strlen", 2, Read),
    spec!("getrange", 4, Read),
    spec!("substr", 4, Read),
    spec!("setrange", 4, Write),
    spec!("expire", -3, Write),
    spec!("pexpire", -3, Write),
    spec!("expireat", -3, Write),
    spec!("pexpireat", -3, Write),
    spec!("ttl", 2, Read),
    spec!("pttl", 2, Read),
    spec!("expiretime", 2, Read),
    spec!("pexpiretime", 2, Read),
    spec!("persist", 2, Write),
    spec!("type", 2, Read),
    spec!("keys", 2, Read, nokeys),
    spec!("scan", -2, Read, nokeys),
    spec!("dbsize", 1, Read, nokeys),
    spec!("randomkey", 1, Read, nokeys),
    spec!("flushall", -1, Write, nokeys),
    spec!("flushdb", -1, Write, nokeys),
    spec!("ping", -1, Other, nokeys),
    spec!("echo", 2, Other, nokeys),
    spec!("auth", -2, Other, noauth),
    spec!("hello", -1, Other, noauth),
    spec!("select", 2, Other, nokeys),
    spec!("client", -2, Other, nokeys),
    spec!("command", -1, Other, nokeys),
    spec!("config", -2, Other, nokeys),
    spec!("time", 1, Other, nokeys),
    spec!("quit", -1, Other, noauth),
    spec!("reset", 1, Other, noauth),
    spec!("info", -1, Other, nokeys),
    spec!("role", 1, Other, nokeys),
    spec!("wait", 3, Other, nokeys),
    spec!("lastsave", 1, Other, nokeys),
    spec!("reploffset", 1, Other, nokeys),
    spec!("waitoffset", 3, Other, nokeys),
    spec!("debug", -2, Other, nokeys),
];

/// Find a command by (case-insensitive) name.
pub fn lookup(name: &[u8]) -> Option<&'static Spec> {
    if name.len() > 16 {
        return None;
    }
    let mut lower = [0u8; 16];
    let lower = &mut lower[..name.len()];
    lower.copy_from_slice(name);
    lower.make_ascii_lowercase();
    COMMANDS.iter().find(|s| s.name.as_bytes() == lower)
}

/// Everything a handler needs.
pub struct Ctx<'a> {
    pub shared: &'a Shared,
    pub sess: &'a mut Session,
    pub out: &'a mut BytesMut,
}

impl Ctx<'_> {
    pub fn engine(&self) -> &Engine {
        &self.shared.engine
    }
    pub fn proto(&self) -> Protocol {
        self.sess.proto
    }
    pub fn ok(&mut self) {
        resp::encode_simple("OK", self.out);
    }
    pub fn simple(&mut self, s: &str) {
        resp::encode_simple(s, self.out);
    }
    pub fn err(&mut self, msg: &str) {
        resp::encode_error(msg, self.out);
    }
    pub fn int(&mut self, n: i64) {
        resp::encode_int(n, self.out);
    }
    pub fn bulk(&mut self, b: &[u8]) {
        resp::encode_bulk(b, self.out);
    }
    pub fn null(&mut self) {
        resp::encode_null(self.sess.proto, self.out);
    }
    pub fn array_len(&mut self, n: usize) {
        resp::encode_array_len(n, self.out);
    }
    pub fn frame(&mut self, f: &Frame) {
        resp::encode(f, self.sess.proto, self.out);
    }
    pub fn syntax_error(&mut self) {
        self.err("ERR syntax error");
    }
    pub fn not_integer(&mut self) {
        self.err("ERR value is not an integer or out of range");
    }

    /// Run a write through the engine; returns the action for the reply.
    pub fn write<R>(
        &mut self,
        reply_start: usize,
        f: impl FnOnce(&mut crate::engine::WriteView<'_>) -> R,
        reply: impl FnOnce(&mut Self, R),
    ) -> Action {
        let engine = self.shared.engine.clone();
        match engine.write(f) {
            Ok((r, offset)) => {
                reply(self, r);
                match offset {
                    Some(offset) => {
                        self.sess.last_write_offset = offset;
                        Action::Write {
                            offset,
                            reply_start,
                        }
                    }
                    None => Action::Done,
                }
            }
            Err(e) => {
                self.engine_error(&e);
                Action::Done
            }
        }
    }

    pub fn engine_error(&mut self, e: &EngineError) {
        self.err(&e.to_string());
    }
}

/// Execute one command (args[0] is the name), writing its reply.
/// `spec` is `lookup(&args[0])`, done once by the caller (which also needs
/// the command's kind before running it).
pub fn execute(ctx: &mut Ctx<'_>, spec: Option<&'static Spec>, args: &[Bytes]) -> Action {
    let Some(name) = args.first() else {
        return Action::Done;
    };
    let stats = &ctx.shared.engine.stats;
    Stats::inc(&stats.commands_total);
    let Some(spec) = spec else {
        Stats::inc(&stats.command_errors);
        let mut msg = format!(
            "ERR unknown command '{}', with args beginning with: ",
            util::printable(name, 128)
        );
        for a in args.iter().skip(1).take(8) {
            msg.push_str(&format!("'{}' ", util::printable(a, 128)));
        }
        ctx.err(&msg);
        return Action::Done;
    };
    let n = args.len() as i32;
    if (spec.arity > 0 && n != spec.arity) || (spec.arity < 0 && n < -spec.arity) {
        Stats::inc(&stats.command_errors);
        ctx.err(&format!(
            "ERR wrong number of arguments for '{}' command",
            spec.name
        ));
        return Action::Done;
    }
    if !ctx.sess.authed && !spec.no_auth {
        Stats::inc(&stats.command_errors);
        ctx.err("NOAUTH Authentication required.");
        return Action::Done;
    }
    match spec.kind {
        Kind::Read => Stats::inc(&stats.read_commands),
        Kind::Write => {
            Stats::inc(&stats.write_commands);
            if !ctx.shared.engine.is_leader() {
                ctx.err("READONLY You can't write against a read only replica.");
                return Action::Done;
            }
        }
        Kind::Other => Stats::inc(&stats.other_commands),
    }
    let reply_start = ctx.out.len();
    let action = strings::dispatch(ctx, spec.name, args, reply_start)
        .or_else(|| keys::dispatch(ctx, spec.name, args, reply_start))
        .or_else(|| server::dispatch(ctx, spec.name, args))
        .unwrap_or(Action::Done);
    if ctx.out.get(reply_start) == Some(&b'-') {
        Stats::inc(&stats.command_errors);
    }
    action
}
