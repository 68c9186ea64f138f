//! String commands: GET/SET family, counters, ranges.

use bytes::Bytes;

use super::string_args::{
    Condition, ExpireArg, ExpireUnit, StringCommand, StringOptions, TtlOption, parse_string_options,
};
use super::util::{ArgError, format_f64_sum, parse_f64};
use super::{Action, Ctx};
use crate::engine::Current;
use crate::resp::string_to_i64;

pub(super) fn get(ctx: &mut Ctx<'_>, args: &[Bytes]) -> Action {
    let key = &args[1];
    let Ctx { shared, sess, out } = ctx;
    let counters = &sess.counters;
    shared.engine.read(|ks, now| match ks.get(key) {
        Some(e) if !e.is_expired(now) => {
            counters.keyspace_hits.inc();
            crate::resp::encode_bulk(e.value(), out);
        }
        _ => {
            counters.keyspace_misses.inc();
            crate::resp::encode_null(sess.proto, out);
        }
    });
    Action::Done
}

pub(super) fn mget(ctx: &mut Ctx<'_>, args: &[Bytes]) -> Action {
    let keys = &args[1..];
    let Ctx { shared, sess, out } = ctx;
    crate::resp::encode_array_len(keys.len(), out);
    shared.engine.read(|ks, now| {
        for key in keys {
            match ks.get(key) {
                Some(e) if !e.is_expired(now) => crate::resp::encode_bulk(e.value(), out),
                _ => crate::resp::encode_null(sess.proto, out),
            }
        }
    });
    Action::Done
}

pub(super) fn strlen(ctx: &mut Ctx<'_>, args: &[Bytes]) -> Action {
    let len = ctx
        .engine()
        .read(|ks, now| {
            ks.get(&args[1])
                .filter(|e| !e.is_expired(now))
                .map(|e| e.value().len())
        })
        .unwrap_or(0);
    ctx.int(len as i64);
    Action::Done
}

pub(super) fn setnx(ctx: &mut Ctx<'_>, args: &[Bytes]) -> Action {
    let (key, value) = (args[1].clone(), args[2].clone());
    ctx.write(
        move |v| {
            let absent = v.live_expiry(&key).is_none();
            if absent {
                v.set(key, value, 0);
            }
            absent
        },
        |c, done| c.int(i64::from(done)),
    )
}

pub(super) fn setex(ctx: &mut Ctx<'_>, args: &[Bytes]) -> Action {
    set_with_ttl(ctx, args, "setex", ExpireUnit::Seconds)
}

pub(super) fn psetex(ctx: &mut Ctx<'_>, args: &[Bytes]) -> Action {
    set_with_ttl(ctx, args, "psetex", ExpireUnit::Millis)
}

/// SETEX / PSETEX key ttl value: SET's expire time check, alone.
fn set_with_ttl(ctx: &mut Ctx<'_>, args: &[Bytes], name: &'static str, unit: ExpireUnit) -> Action {
    let ttl = ExpireArg {
        unit,
        value: args[2].clone(),
    };
    let now = ctx.engine_now();
    let Some(at) = ctx.parsed(ttl.deadline_ms(name, now)) else {
        return Action::Done;
    };
    let (key, value) = (args[1].clone(), args[3].clone());
    ctx.write(move |v| v.set(key, value, at), |c, ()| c.ok())
}

pub(super) fn getset(ctx: &mut Ctx<'_>, args: &[Bytes]) -> Action {
    let (key, value) = (args[1].clone(), args[2].clone());
    ctx.write(
        |v| {
            let old = v.get(&key);
            v.set(key, value, 0);
            old
        },
        reply_opt,
    )
}

pub(super) fn getdel(ctx: &mut Ctx<'_>, args: &[Bytes]) -> Action {
    let key = args[1].clone();
    ctx.write(
        |v| {
            let old = v.get(&key);
            if old.is_some() {
                v.del(&key);
            }
            old
        },
        reply_opt,
    )
}

pub(super) fn mset(ctx: &mut Ctx<'_>, args: &[Bytes]) -> Action {
    mset_generic(ctx, args, false)
}

pub(super) fn msetnx(ctx: &mut Ctx<'_>, args: &[Bytes]) -> Action {
    mset_generic(ctx, args, true)
}

pub(super) fn incr(ctx: &mut Ctx<'_>, args: &[Bytes]) -> Action {
    incr_by(ctx, args[1].clone(), 1)
}

pub(super) fn decr(ctx: &mut Ctx<'_>, args: &[Bytes]) -> Action {
    incr_by(ctx, args[1].clone(), -1)
}

pub(super) fn incrby(ctx: &mut Ctx<'_>, args: &[Bytes]) -> Action {
    let Some(n) = ctx.int_arg(&args[2]) else {
        return Action::Done;
    };
    incr_by(ctx, args[1].clone(), n)
}

pub(super) fn decrby(ctx: &mut Ctx<'_>, args: &[Bytes]) -> Action {
    let Some(n) = ctx.int_arg(&args[2]) else {
        return Action::Done;
    };
    let Some(n) = n.checked_neg() else {
        ctx.err("ERR decrement would overflow");
        return Action::Done;
    };
    incr_by(ctx, args[1].clone(), n)
}

impl Ctx<'_> {
    fn engine_now(&self) -> u64 {
        crate::engine::now_ms()
    }
    fn max_value(&self) -> usize {
        self.shared.config.max_bulk_bytes
    }
}

fn reply_opt(c: &mut Ctx<'_>, v: Option<Current>) {
    match v {
        Some(cur) => c.bulk(&cur.value),
        None => c.null(),
    }
}

/// GETRANGE's index arithmetic, exactly as Redis 7 does it.
pub fn range_bounds(start: i64, end: i64, len: usize) -> Option<(usize, usize)> {
    let len = len as i64;
    if start < 0 && end < 0 && start > end {
        return None;
    }
    let mut s = if start < 0 { len + start } else { start };
    let mut e = if end < 0 { len + end } else { end };
    if s < 0 {
        s = 0;
    }
    if e < 0 {
        e = 0;
    }
    if e >= len {
        e = len - 1;
    }
    if s > e || len == 0 {
        return None;
    }
    Some((s as usize, e as usize))
}

/// GETRANGE and its old name SUBSTR.
pub(super) fn getrange(ctx: &mut Ctx<'_>, args: &[Bytes]) -> Action {
    let Some(start) = ctx.int_arg(&args[2]) else {
        return Action::Done;
    };
    let Some(end) = ctx.int_arg(&args[3]) else {
        return Action::Done;
    };
    let Ctx { shared, out, .. } = ctx;
    shared.engine.read(|ks, now| {
        let value = ks
            .get(&args[1])
            .filter(|e| !e.is_expired(now))
            .map(|e| e.value())
            .unwrap_or(b"");
        match range_bounds(start, end, value.len()) {
            Some((s, e)) => crate::resp::encode_bulk(&value[s..=e], out),
            None => crate::resp::encode_bulk(b"", out),
        }
    });
    Action::Done
}

/// SET key value [NX|XX] [GET] [EX|PX|EXAT|PXAT time|KEEPTTL]
pub(super) fn set(ctx: &mut Ctx<'_>, args: &[Bytes]) -> Action {
    let Some(opts) = ctx.parsed(parse_string_options(&args[3..], StringCommand::Set)) else {
        return Action::Done;
    };
    let now = ctx.engine_now();
    let Some(deadline) = ctx.parsed(opts.deadline_ms(StringCommand::Set, now)) else {
        return Action::Done;
    };
    let StringOptions {
        condition,
        get,
        ttl,
    } = opts;
    let keep_ttl = ttl == TtlOption::Keep;
    let (key, value) = (args[1].clone(), args[2].clone());
    ctx.write(
        move |v| {
            // A plain SET overwrites without looking: no copy of the old
            // value on the hottest write path.
            let needs_old = get || condition != Condition::Always || keep_ttl;
            let old = if needs_old { v.get(&key) } else { None };
            let allowed = match condition {
                Condition::Always => true,
                Condition::IfAbsent => old.is_none(),
                Condition::IfPresent => old.is_some(),
            };
            if allowed {
                let at = match deadline {
                    Some(at) => at,
                    None if keep_ttl => old.as_ref().map_or(0, |c| c.expire_at_ms),
                    None => 0,
                };
                v.set(key, value, at);
            }
            (allowed, old)
        },
        move |c, (allowed, old)| {
            if get {
                reply_opt(c, old);
            } else if allowed {
                c.ok();
            } else {
                c.null();
            }
        },
    )
}

/// GETEX key [EX|PX|EXAT|PXAT time|PERSIST]
pub(super) fn getex(ctx: &mut Ctx<'_>, args: &[Bytes]) -> Action {
    let Some(opts) = ctx.parsed(parse_string_options(&args[2..], StringCommand::GetEx)) else {
        return Action::Done;
    };
    // As in Redis, a bad time matters only once the key is found: GETEX
    // on a missing key answers nil.
    let deadline = opts.deadline_ms(StringCommand::GetEx, ctx.engine_now());
    let persist = opts.ttl == TtlOption::Persist;
    let key = args[1].clone();
    ctx.write(
        move |v| {
            let Some(cur) = v.get(&key) else {
                return Ok(None);
            };
            match deadline? {
                Some(at) => {
                    v.set_expiry(&key, at);
                }
                None if persist && cur.expire_at_ms != 0 => {
                    v.set_expiry(&key, 0);
                }
                None => {}
            }
            Ok(Some(cur))
        },
        |c, r: Result<Option<Current>, ArgError>| match r {
            Ok(cur) => reply_opt(c, cur),
            Err(e) => c.arg_error(&e),
        },
    )
}

fn mset_generic(ctx: &mut Ctx<'_>, args: &[Bytes], nx: bool) -> Action {
    if args.len().is_multiple_of(2) {
        let name = if nx { "msetnx" } else { "mset" };
        ctx.err(&format!(
            "ERR wrong number of arguments for '{name}' command"
        ));
        return Action::Done;
    }
    let pairs: Vec<(Bytes, Bytes)> = args[1..]
        .chunks(2)
        .map(|p| (p[0].clone(), p[1].clone()))
        .collect();
    ctx.write(
        move |v| {
            if nx && pairs.iter().any(|(k, _)| v.live_expiry(k).is_some()) {
                return false;
            }
            for (k, val) in pairs {
                v.set(k, val, 0);
            }
            true
        },
        move |c, done| {
            if nx {
                c.int(i64::from(done));
            } else {
                c.ok();
            }
        },
    )
}

fn incr_by(ctx: &mut Ctx<'_>, key: Bytes, by: i64) -> Action {
    ctx.write(
        move |v| {
            let cur = v.get(&key);
            let (old, exp) = match &cur {
                Some(c) => match string_to_i64(&c.value) {
                    Some(n) => (n, c.expire_at_ms),
                    None => return Err("ERR value is not an integer or out of range"),
                },
                None => (0, 0),
            };
            let new = old
                .checked_add(by)
                .ok_or("ERR increment or decrement would overflow")?;
            v.set(key, Bytes::from(new.to_string()), exp);
            Ok(new)
        },
        |c, r| match r {
            Ok(n) => c.int(n),
            Err(e) => c.err(e),
        },
    )
}

pub(super) fn incrbyfloat(ctx: &mut Ctx<'_>, args: &[Bytes]) -> Action {
    let Some(by) = parse_f64(&args[2]) else {
        ctx.err("ERR value is not a valid float");
        return Action::Done;
    };
    let key = args[1].clone();
    ctx.write(
        move |v| {
            let cur = v.get(&key);
            let (old, exp) = match &cur {
                Some(c) => match parse_f64(&c.value) {
                    Some(n) => (n, c.expire_at_ms),
                    None => return Err("ERR value is not a valid float"),
                },
                None => (0.0, 0),
            };
            let new = old + by;
            if !new.is_finite() {
                return Err("ERR increment would produce NaN or Infinity");
            }
            let text = Bytes::from(format_f64_sum(old, by));
            v.set(key, text.clone(), exp);
            Ok(text)
        },
        |c, r| match r {
            Ok(t) => c.bulk(&t),
            Err(e) => c.err(e),
        },
    )
}

const TOO_BIG: &str = "ERR string exceeds maximum allowed size (proto-max-bulk-len)";

pub(super) fn append(ctx: &mut Ctx<'_>, args: &[Bytes]) -> Action {
    let (key, tail) = (args[1].clone(), args[2].clone());
    let max = ctx.max_value();
    ctx.write(
        move |v| {
            let cur = v.get(&key);
            let (mut value, exp) = match cur {
                Some(c) => (c.value.to_vec(), c.expire_at_ms),
                None => (Vec::new(), 0),
            };
            if value.len() + tail.len() > max {
                return Err(TOO_BIG);
            }
            value.extend_from_slice(&tail);
            let len = value.len();
            v.set(key, Bytes::from(value), exp);
            Ok(len)
        },
        |c, r| match r {
            Ok(n) => c.int(n as i64),
            Err(e) => c.err(e),
        },
    )
}

pub(super) fn setrange(ctx: &mut Ctx<'_>, args: &[Bytes]) -> Action {
    let Some(offset) = ctx.int_arg(&args[2]) else {
        return Action::Done;
    };
    if offset < 0 {
        ctx.err("ERR offset is out of range");
        return Action::Done;
    }
    let offset = offset as usize;
    let (key, patch) = (args[1].clone(), args[3].clone());
    let max = ctx.max_value();
    ctx.write(
        move |v| {
            let cur = v.get(&key);
            if patch.is_empty() {
                return Ok(cur.map(|c| c.value.len()).unwrap_or(0));
            }
            if offset.saturating_add(patch.len()) > max {
                return Err(TOO_BIG);
            }
            let (mut value, exp) = match cur {
                Some(c) => (c.value.to_vec(), c.expire_at_ms),
                None => (Vec::new(), 0),
            };
            if value.len() < offset + patch.len() {
                value.resize(offset + patch.len(), 0);
            }
            value[offset..offset + patch.len()].copy_from_slice(&patch);
            let len = value.len();
            v.set(key, Bytes::from(value), exp);
            Ok(len)
        },
        |c, r| match r {
            Ok(n) => c.int(n as i64),
            Err(e) => c.err(e),
        },
    )
}

#[cfg(test)]
mod tests {
    use super::range_bounds;

    #[test]
    fn getrange_bounds_match_redis() {
        // "This is a string" examples from the Redis docs.
        assert_eq!(range_bounds(0, 3, 16), Some((0, 3)));
        assert_eq!(range_bounds(-3, -1, 16), Some((13, 15)));
        assert_eq!(range_bounds(0, -1, 16), Some((0, 15)));
        assert_eq!(range_bounds(10, 100, 16), Some((10, 15)));
        assert_eq!(range_bounds(5, 3, 16), None);
        assert_eq!(range_bounds(-1, -5, 16), None);
        assert_eq!(range_bounds(0, 0, 0), None);
    }
}
