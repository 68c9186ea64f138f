//! Keyspace commands: DEL, EXISTS, expiry, TYPE, KEYS, SCAN, DBSIZE, FLUSHALL.

use bytes::Bytes;

use super::util::glob_match;
use super::{Action, Ctx};
use crate::keyspace::{SHARDS, ValueKind};

/// DEL and UNLINK (which frees nothing in the background here).
pub(super) fn del(ctx: &mut Ctx<'_>, args: &[Bytes]) -> Action {
    let keys: Vec<Bytes> = args[1..].to_vec();
    ctx.write(
        move |v| keys.iter().filter(|k| v.del(k)).count(),
        |c, n| c.int(n as i64),
    )
}

pub(super) fn exists(ctx: &mut Ctx<'_>, args: &[Bytes]) -> Action {
    let n = ctx.engine().read(|ks, now| {
        args[1..]
            .iter()
            .filter(|k| ks.get(k).is_some_and(|e| !e.is_expired(now)))
            .count()
    });
    ctx.int(n as i64);
    Action::Done
}

pub(super) fn expire(ctx: &mut Ctx<'_>, args: &[Bytes]) -> Action {
    expire_generic(ctx, ExpireCommand::Expire, args)
}

pub(super) fn pexpire(ctx: &mut Ctx<'_>, args: &[Bytes]) -> Action {
    expire_generic(ctx, ExpireCommand::Pexpire, args)
}

pub(super) fn expireat(ctx: &mut Ctx<'_>, args: &[Bytes]) -> Action {
    expire_generic(ctx, ExpireCommand::Expireat, args)
}

pub(super) fn pexpireat(ctx: &mut Ctx<'_>, args: &[Bytes]) -> Action {
    expire_generic(ctx, ExpireCommand::Pexpireat, args)
}

pub(super) fn persist(ctx: &mut Ctx<'_>, args: &[Bytes]) -> Action {
    let key = args[1].clone();
    ctx.write(
        move |v| match v.live_expiry(&key) {
            Some(exp) if exp != 0 => v.set_expiry(&key, 0),
            _ => false,
        },
        |c, done| c.int(i64::from(done)),
    )
}

pub(super) fn ttl(ctx: &mut Ctx<'_>, args: &[Bytes]) -> Action {
    ttl_generic(ctx, args, |at, now| {
        ((at.saturating_sub(now) + 500) / 1000) as i64
    })
}

pub(super) fn pttl(ctx: &mut Ctx<'_>, args: &[Bytes]) -> Action {
    ttl_generic(ctx, args, |at, now| at.saturating_sub(now) as i64)
}

pub(super) fn expiretime(ctx: &mut Ctx<'_>, args: &[Bytes]) -> Action {
    ttl_generic(ctx, args, |at, _| (at / 1000) as i64)
}

pub(super) fn pexpiretime(ctx: &mut Ctx<'_>, args: &[Bytes]) -> Action {
    ttl_generic(ctx, args, |at, _| at as i64)
}

/// TTL family: -2 when the key is missing, -1 when it has no expiry, else
/// `reply(expire_at_ms, now_ms)`.
fn ttl_generic(ctx: &mut Ctx<'_>, args: &[Bytes], reply: fn(u64, u64) -> i64) -> Action {
    let exp = ctx.engine().read(|ks, now| {
        ks.get(&args[1])
            .filter(|e| !e.is_expired(now))
            .map(|e| e.expire_at_ms)
    });
    let n = match exp {
        None => -2,
        Some(0) => -1,
        Some(at) => reply(at, crate::engine::now_ms()),
    };
    ctx.int(n);
    Action::Done
}

pub(super) fn type_(ctx: &mut Ctx<'_>, args: &[Bytes]) -> Action {
    let name = ctx.engine().read(|ks, now| {
        ks.get(&args[1])
            .filter(|e| !e.is_expired(now))
            .map_or("none", |e| type_name(e.kind()))
    });
    ctx.simple(name);
    Action::Done
}

/// The type of a stored value, as TYPE reports it and SCAN's TYPE option
/// matches it: answered from the kind the keyspace stores with each value.
pub fn type_name(kind: ValueKind) -> &'static str {
    match kind {
        ValueKind::String => "string",
    }
}

pub(super) fn dbsize(ctx: &mut Ctx<'_>, _args: &[Bytes]) -> Action {
    let n = ctx.engine().keys();
    ctx.int(n as i64);
    Action::Done
}

/// FLUSHALL and FLUSHDB (one database) [ASYNC|SYNC].
pub(super) fn flushall(ctx: &mut Ctx<'_>, args: &[Bytes]) -> Action {
    if let Some(opt) = args.get(1) {
        let o = opt.to_ascii_lowercase();
        if args.len() > 2 || (o != b"async" && o != b"sync") {
            ctx.syntax_error();
            return Action::Done;
        }
    }
    ctx.write(|v| v.flush_all(), |c, ()| c.ok())
}

#[derive(Clone, Copy)]
enum ExpireCommand {
    Expire,
    Pexpire,
    Expireat,
    Pexpireat,
}

impl ExpireCommand {
    fn name(self) -> &'static str {
        match self {
            ExpireCommand::Expire => "expire",
            ExpireCommand::Pexpire => "pexpire",
            ExpireCommand::Expireat => "expireat",
            ExpireCommand::Pexpireat => "pexpireat",
        }
    }
}

fn expire_generic(ctx: &mut Ctx<'_>, command: ExpireCommand, args: &[Bytes]) -> Action {
    let Some(n) = ctx.int_arg(&args[2]) else {
        return Action::Done;
    };
    let (mut nx, mut xx, mut gt, mut lt) = (false, false, false, false);
    for opt in &args[3..] {
        match opt.to_ascii_lowercase().as_slice() {
            b"nx" => nx = true,
            b"xx" => xx = true,
            b"gt" => gt = true,
            b"lt" => lt = true,
            _ => {
                // Redis echoes the option as given, not lowercased.
                ctx.err(&format!(
                    "ERR Unsupported option {}",
                    String::from_utf8_lossy(opt)
                ));
                return Action::Done;
            }
        }
    }
    if nx && (xx || gt || lt) {
        ctx.err("ERR NX and XX, GT or LT options at the same time are not compatible");
        return Action::Done;
    }
    if gt && lt {
        ctx.err("ERR GT and LT options at the same time are not compatible");
        return Action::Done;
    }
    let now = crate::engine::now_ms() as i64;
    let at: Option<i64> = match command {
        ExpireCommand::Expire => n.checked_mul(1000).and_then(|ms| ms.checked_add(now)),
        ExpireCommand::Pexpire => n.checked_add(now),
        ExpireCommand::Expireat => n.checked_mul(1000),
        ExpireCommand::Pexpireat => Some(n),
    };
    let Some(at) = at else {
        ctx.err(&format!(
            "ERR invalid expire time in '{}' command",
            command.name()
        ));
        return Action::Done;
    };
    let key = args[1].clone();
    ctx.write(
        move |v| {
            let Some(cur) = v.live_expiry(&key) else {
                return false;
            };
            // A persistent key counts as an infinite TTL for GT and LT.
            let cur_ttl = if cur == 0 { i64::MAX } else { cur as i64 };
            if (nx && cur != 0)
                || (xx && cur == 0)
                || (gt && at <= cur_ttl)
                || (lt && at >= cur_ttl)
            {
                return false;
            }
            if at <= now {
                // In the past: the key is deleted now, as Redis does.
                v.del(&key)
            } else {
                v.set_expiry(&key, at as u64)
            }
        },
        |c, done| c.int(i64::from(done)),
    )
}

pub(super) fn keys(ctx: &mut Ctx<'_>, args: &[Bytes]) -> Action {
    let pattern: &[u8] = &args[1];
    let mut found: Vec<Bytes> = Vec::new();
    let match_all = pattern == b"*";
    let engine = ctx.engine();
    for shard in 0..SHARDS {
        engine.read(|ks, now| {
            ks.for_each_in_shard(shard, |e| {
                if !e.is_expired(now) && (match_all || glob_match(pattern, e.key())) {
                    found.push(Bytes::copy_from_slice(e.key()));
                }
            })
        });
    }
    ctx.array_len(found.len());
    for k in &found {
        ctx.bulk(k);
    }
    Action::Done
}

/// SCAN's cursor. Redis reads it with `strtoull`, not `string2ll`: leading
/// zeros and a sign are accepted (`-1` wraps around, as in C) and so is
/// any u64; a leading space, other bytes or overflow are not.
fn parse_cursor(arg: &[u8]) -> Option<u64> {
    let (negative, digits) = match arg.split_first() {
        Some((b'-', rest)) => (true, rest),
        Some((b'+', rest)) => (false, rest),
        _ => (false, arg),
    };
    if digits.is_empty() {
        return None;
    }
    let value = digits.iter().try_fold(0u64, |v, &b| {
        if !b.is_ascii_digit() {
            return None;
        }
        v.checked_mul(10)?.checked_add(u64::from(b - b'0'))
    })?;
    Some(if negative {
        value.wrapping_neg()
    } else {
        value
    })
}

/// SCAN: the cursor is a shard index, so a full iteration returns every key
/// that existed throughout it at least once (and each only once per shard).
pub(super) fn scan(ctx: &mut Ctx<'_>, args: &[Bytes]) -> Action {
    let Some(cursor) = parse_cursor(&args[1]) else {
        ctx.err("ERR invalid cursor");
        return Action::Done;
    };
    let mut count = 10usize;
    let mut pattern: Option<Bytes> = None;
    let mut type_filter: Option<Vec<u8>> = None;
    let mut i = 2;
    while i < args.len() {
        let opt = args[i].to_ascii_lowercase();
        if i + 1 >= args.len() {
            ctx.syntax_error();
            return Action::Done;
        }
        match opt.as_slice() {
            b"count" => match ctx.int_arg(&args[i + 1]) {
                Some(n) if n >= 1 => count = usize::try_from(n).unwrap_or(usize::MAX),
                Some(_) => {
                    ctx.syntax_error();
                    return Action::Done;
                }
                None => return Action::Done,
            },
            b"match" => pattern = Some(args[i + 1].clone()),
            b"type" => type_filter = Some(args[i + 1].to_ascii_lowercase()),
            _ => {
                ctx.syntax_error();
                return Action::Done;
            }
        }
        i += 2;
    }
    let mut shard = if cursor >= SHARDS as u64 {
        SHARDS
    } else {
        cursor as usize
    };
    let mut found: Vec<Bytes> = Vec::new();
    let engine = ctx.engine();
    while shard < SHARDS && found.len() < count {
        engine.read(|ks, now| {
            ks.for_each_in_shard(shard, |e| {
                if !e.is_expired(now)
                    && type_filter
                        .as_deref()
                        .is_none_or(|t| t == type_name(e.kind()).as_bytes())
                    && pattern.as_ref().is_none_or(|p| glob_match(p, e.key()))
                {
                    found.push(Bytes::copy_from_slice(e.key()));
                }
            })
        });
        shard += 1;
    }
    let next = if shard >= SHARDS { 0 } else { shard };
    ctx.array_len(2);
    ctx.bulk(next.to_string().as_bytes());
    ctx.array_len(found.len());
    for k in &found {
        ctx.bulk(k);
    }
    Action::Done
}

pub(super) fn randomkey(ctx: &mut Ctx<'_>, _args: &[Bytes]) -> Action {
    let start: usize = rand::random::<u32>() as usize % SHARDS;
    let mut key = None;
    let engine = ctx.engine();
    for i in 0..SHARDS {
        engine.read(|ks, now| {
            ks.for_each_in_shard((start + i) % SHARDS, |e| {
                if key.is_none() && !e.is_expired(now) {
                    key = Some(Bytes::copy_from_slice(e.key()));
                }
            })
        });
        if key.is_some() {
            break;
        }
    }
    match key {
        Some(k) => ctx.bulk(&k),
        None => ctx.null(),
    }
    Action::Done
}

#[cfg(test)]
mod tests {
    use super::{parse_cursor, type_name};
    use crate::keyspace::Keyspace;

    #[test]
    fn a_stored_string_value_is_of_type_string() {
        let mut ks = Keyspace::new();
        ks.set(b"empty", b"", 0);
        ks.set(b"number", b"12", 0);
        for key in [&b"empty"[..], b"number"] {
            let kind = ks.get(key).map(|e| e.kind());
            assert_eq!(kind.map(type_name), Some("string"));
        }
    }

    #[test]
    fn scan_cursor_is_read_like_redis_strtoull() {
        assert_eq!(parse_cursor(b"0"), Some(0));
        assert_eq!(parse_cursor(b"007"), Some(7));
        assert_eq!(parse_cursor(b"+3"), Some(3));
        assert_eq!(parse_cursor(b"-1"), Some(u64::MAX));
        assert_eq!(parse_cursor(b"18446744073709551615"), Some(u64::MAX));
        for bad in [
            &b""[..],
            b"+",
            b"-",
            b" 1",
            b"1 ",
            b"1x",
            b"18446744073709551616",
        ] {
            assert_eq!(
                parse_cursor(bad),
                None,
                "{:?}",
                String::from_utf8_lossy(bad)
            );
        }
    }
}
