//! Redis command semantics: lookup, arity, auth and role checks, dispatch.
//!
//! Every command is one entry of [`COMMANDS`]: its name, arity, kind, key
//! positions and handler. [`execute`] checks what the entry says and calls
//! the handler; COMMAND answers from the same table. Handlers live with
//! their family (`strings`, `keys`, `server`): each parses its arguments
//! first and only then applies the command.
//!
//! Handlers write their reply straight into the connection's output buffer
//! (no intermediate frames on the hot path). Write commands run inside
//! [`Engine::write`] and return the log offset their reply depends on; the
//! connection waits for its acknowledgement before sending the reply.

mod keys;
mod server;
mod string_args;
mod strings;
pub mod util;

use std::sync::Arc;
use std::time::Instant;

use bytes::{Bytes, BytesMut};

use crate::engine::{Engine, EngineError};
use crate::resp::{self, Frame, Protocol};
use crate::stats::ClientCounters;

use crate::context::Shared;
pub use server::info_text;

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
    /// What this connection counts for INFO and /metrics.
    pub counters: Arc<ClientCounters>,
}

impl Session {
    pub fn new(id: u64, addr: String, needs_auth: bool, counters: Arc<ClientCounters>) -> Session {
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
            counters,
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

/// What runs a command: it parses `args` (`args[0]` is the name), applies
/// the command and writes the reply into `ctx.out`.
pub type Handler = fn(&mut Ctx<'_>, &[Bytes]) -> Action;

/// Static description of a command: one table entry carries everything
/// about it, its handler included, so a command cannot be listed without
/// being implemented, nor implemented without being listed.
pub struct Spec {
    /// Lowercase name.
    pub name: &'static str,
    /// Redis arity: n = exactly n args (incl. name), -n = at least n.
    pub arity: i32,
    pub kind: Kind,
    /// Allowed before AUTH.
    pub no_auth: bool,
    pub first_key: i32,
    pub last_key: i32,
    pub step: i32,
    pub handler: Handler,
}

macro_rules! spec {
    ($name:literal, $arity:expr, $kind:ident, $handler:expr) => {
        spec!($name, $arity, $kind, $handler, false, 1, 1, 1)
    };
    ($name:literal, $arity:expr, $kind:ident, $handler:expr, noauth) => {
        spec!($name, $arity, $kind, $handler, true, 0, 0, 0)
    };
    ($name:literal, $arity:expr, $kind:ident, $handler:expr, nokeys) => {
        spec!($name, $arity, $kind, $handler, false, 0, 0, 0)
    };
    ($name:literal, $arity:expr, $kind:ident, $handler:expr, keys($f:expr, $l:expr, $s:expr)) => {
        spec!($name, $arity, $kind, $handler, false, $f, $l, $s)
    };
    ($name:literal, $arity:expr, $kind:ident, $handler:expr, $noauth:expr, $f:expr, $l:expr, $s:expr) => {
        Spec {
            name: $name,
            arity: $arity,
            kind: Kind::$kind,
            no_auth: $noauth,
            first_key: $f,
            last_key: $l,
            step: $s,
            handler: $handler,
        }
    };
}

/// Every supported command, sorted by name (checked when compiling, since
/// [`lookup`] searches it by bisection).
pub static COMMANDS: &[Spec] = TABLE;

const TABLE: &[Spec] = &[
    spec!("append", 3, Write, strings::append),
    spec!("auth", -2, Other, server::auth, noauth),
    spec!("client", -2, Other, server::client, nokeys),
    spec!("command", -1, Other, server::command, nokeys),
    spec!("config", -2, Other, server::config, nokeys),
    spec!("dbsize", 1, Read, keys::dbsize, nokeys),
    spec!("debug", -2, Other, server::debug, nokeys),
    spec!("decr", 2, Write, strings::decr),
    spec!("decrby", 3, Write, strings::decrby),
    spec!("del", -2, Write, keys::del, keys(1, -1, 1)),
    spec!("echo", 2, Other, server::echo, nokeys),
    spec!("exists", -2, Read, keys::exists, keys(1, -1, 1)),
    spec!("expire", -3, Write, keys::expire),
    spec!("expireat", -3, Write, keys::expireat),
    spec!("expiretime", 2, Read, keys::expiretime),
    spec!("flushall", -1, Write, keys::flushall, nokeys),
    spec!("flushdb", -1, Write, keys::flushall, nokeys),
    spec!("get", 2, Read, strings::get),
    spec!("getdel", 2, Write, strings::getdel),
    spec!("getex", -2, Write, strings::getex),
    spec!("getrange", 4, Read, strings::getrange),
    spec!("getset", 3, Write, strings::getset),
    spec!("hello", -1, Other, server::hello, noauth),
    spec!("incr", 2, Write, strings::incr),
    spec!("incrby", 3, Write, strings::incrby),
    spec!("incrbyfloat", 3, Write, strings::incrbyfloat),
    spec!("info", -1, Other, server::info, nokeys),
    spec!("keys", 2, Read, keys::keys, nokeys),
    spec!("lastsave", 1, Other, server::lastsave, nokeys),
    spec!("mget", -2, Read, strings::mget, keys(1, -1, 1)),
    spec!("mset", -3, Write, strings::mset, keys(1, -1, 2)),
    spec!("msetnx", -3, Write, strings::msetnx, keys(1, -1, 2)),
    spec!("persist", 2, Write, keys::persist),
    spec!("pexpire", -3, Write, keys::pexpire),
    spec!("pexpireat", -3, Write, keys::pexpireat),
    spec!("pexpiretime", 2, Read, keys::pexpiretime),
    spec!("ping", -1, Other, server::ping, nokeys),
    spec!("psetex", 4, Write, strings::psetex),
    spec!("pttl", 2, Read, keys::pttl),
    spec!("quit", -1, Other, server::quit, noauth),
    spec!("randomkey", 1, Read, keys::randomkey, nokeys),
    spec!("reploffset", 1, Other, server::reploffset, nokeys),
    spec!("reset", 1, Other, server::reset, noauth),
    spec!("role", 1, Other, server::role, nokeys),
    spec!("scan", -2, Read, keys::scan, nokeys),
    spec!("select", 2, Other, server::select, nokeys),
    spec!("set", -3, Write, strings::set),
    spec!("setex", 4, Write, strings::setex),
    spec!("setnx", 3, Write, strings::setnx),
    spec!("setrange", 4, Write, strings::setrange),
    spec!("strlen", 2, Read, strings::strlen),
    spec!("substr", 4, Read, strings::getrange),
    spec!("time", 1, Other, server::time, nokeys),
    spec!("ttl", 2, Read, keys::ttl),
    spec!("type", 2, Read, keys::type_),
    spec!("unlink", -2, Write, keys::del, keys(1, -1, 1)),
    spec!("wait", 3, Other, server::wait, nokeys),
    spec!("waitoffset", 3, Other, server::waitoffset, nokeys),
];

/// Longest command name; longer input is no command, without looking.
const MAX_NAME: usize = 16;

/// True when every name is lowercase, at most [`MAX_NAME`] bytes, and
/// strictly after the one before it.
const fn is_sorted_lowercase(table: &[Spec]) -> bool {
    let mut i = 0;
    while i < table.len() {
        let name = table[i].name.as_bytes();
        if name.len() > MAX_NAME {
            return false;
        }
        let mut c = 0;
        while c < name.len() {
            if name[c].is_ascii_uppercase() {
                return false;
            }
            c += 1;
        }
        if i > 0 && !is_before(table[i - 1].name.as_bytes(), name) {
            return false;
        }
        i += 1;
    }
    true
}

/// `a < b` in byte order (`Ord` is not usable in a `const fn`).
const fn is_before(a: &[u8], b: &[u8]) -> bool {
    let mut i = 0;
    while i < a.len() && i < b.len() {
        if a[i] != b[i] {
            return a[i] < b[i];
        }
        i += 1;
    }
    a.len() < b.len()
}

const _: () = assert!(
    is_sorted_lowercase(TABLE),
    "COMMANDS must be sorted, lowercase and short"
);

/// Find a command by (case-insensitive) name: lowercased on the stack, then
/// a scan of the few table entries that share its first letter, comparing
/// lengths before bytes; no allocation. (A bisection of the whole table cost
/// six library `memcmp` calls per command: 4% of a GET's instructions.)
pub fn lookup(name: &[u8]) -> Option<&'static Spec> {
    if name.is_empty() || name.len() > MAX_NAME {
        return None;
    }
    let mut lower = [0u8; MAX_NAME];
    let lower = &mut lower[..name.len()];
    lower.copy_from_slice(name);
    lower.make_ascii_lowercase();
    let lower = &*lower;
    let first = lower[0];
    if !first.is_ascii_lowercase() {
        return None;
    }
    let (start, end) = letter_ranges()[usize::from(first - b'a')];
    COMMANDS[start..end]
        .iter()
        .find(|s| s.name.len() == lower.len() && s.name.as_bytes() == lower)
}

/// For each letter, the range of [`COMMANDS`] (sorted) whose names start
/// with it.
fn letter_ranges() -> &'static [(usize, usize); 26] {
    static RANGES: std::sync::OnceLock<[(usize, usize); 26]> = std::sync::OnceLock::new();
    RANGES.get_or_init(|| {
        let mut ranges = [(0, 0); 26];
        for (i, spec) in COMMANDS.iter().enumerate() {
            let first = spec.name.as_bytes()[0];
            if first.is_ascii_lowercase() {
                let range = &mut ranges[usize::from(first - b'a')];
                if range.1 == 0 {
                    range.0 = i;
                }
                range.1 = i + 1;
            }
        }
        ranges
    })
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
        self.arg_error(&util::ArgError::NotInteger);
    }
    pub fn arg_error(&mut self, e: &util::ArgError) {
        self.err(&e.to_string());
    }
    /// An integer argument (Redis's `string2ll` rules); on failure the
    /// error reply is written and None returned.
    pub fn int_arg(&mut self, arg: &[u8]) -> Option<i64> {
        self.parsed(util::int_arg(arg))
    }
    /// The value of a parse; on failure the error reply is written and
    /// None returned, so a handler can `let Some(x) = .. else { return }`.
    pub fn parsed<T>(&mut self, parse: Result<T, util::ArgError>) -> Option<T> {
        match parse {
            Ok(v) => Some(v),
            Err(e) => {
                self.arg_error(&e);
                None
            }
        }
    }

    /// Run a write through the engine; returns the action for the reply.
    /// The reply is the one `reply` writes: nothing may be written to
    /// `out` before this call.
    pub fn write<R>(
        &mut self,
        f: impl FnOnce(&mut crate::engine::WriteView<'_>) -> R,
        reply: impl FnOnce(&mut Self, R),
    ) -> Action {
        let reply_start = self.out.len();
        // A copy of the `&Shared` (not an `Arc` clone: a shared atomic
        // increment and decrement per write).
        let shared: &Shared = self.shared;
        match shared.engine.write(f) {
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
    ctx.sess.counters.commands.inc();
    let Some(spec) = spec else {
        ctx.sess.counters.command_errors.inc();
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
        ctx.sess.counters.command_errors.inc();
        ctx.err(&format!(
            "ERR wrong number of arguments for '{}' command",
            spec.name
        ));
        return Action::Done;
    }
    if !ctx.sess.authed && !spec.no_auth {
        ctx.sess.counters.command_errors.inc();
        ctx.err("NOAUTH Authentication required.");
        return Action::Done;
    }
    match spec.kind {
        Kind::Read => ctx.sess.counters.read_commands.inc(),
        Kind::Write => {
            ctx.sess.counters.write_commands.inc();
            if !ctx.shared.engine.is_leader() {
                ctx.sess.counters.command_errors.inc();
                ctx.err("READONLY You can't write against a read only replica.");
                return Action::Done;
            }
        }
        Kind::Other => ctx.sess.counters.other_commands.inc(),
    }
    let reply_start = ctx.out.len();
    let action = (spec.handler)(ctx, args);
    if ctx.out.get(reply_start) == Some(&b'-') {
        ctx.sess.counters.command_errors.inc();
    }
    action
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_command_in_the_table_is_found_by_its_name_in_any_case() {
        for spec in COMMANDS {
            let found = lookup(spec.name.as_bytes()).map(|s| s.name);
            assert_eq!(found, Some(spec.name));
            let upper = spec.name.to_ascii_uppercase();
            assert_eq!(lookup(upper.as_bytes()).map(|s| s.name), Some(spec.name));
        }
        assert_eq!(lookup(b"GeTeX").map(|s| s.name), Some("getex"));
    }

    #[test]
    fn unknown_empty_and_overlong_names_are_not_commands() {
        for name in [
            &b""[..],
            b"gett",
            b"ge",
            b"a",
            b"zzz",
            b"get\0",
            b"incrbyfloatincrbyfloat",
            &[b'x'; 1000],
        ] {
            assert!(
                lookup(name).is_none(),
                "{:?}",
                String::from_utf8_lossy(name)
            );
        }
    }

    #[test]
    fn aliases_share_one_handler() {
        let handler = |name: &str| lookup(name.as_bytes()).map(|s| s.handler as usize);
        assert_eq!(handler("substr"), handler("getrange"));
        assert_eq!(handler("unlink"), handler("del"));
        assert_eq!(handler("flushdb"), handler("flushall"));
    }
}
