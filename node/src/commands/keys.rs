//! Keyspace commands: DEL, EXISTS, expiry, TYPE, KEYS, SCAN, DBSIZE, FLUSHALL.

use bytes::Bytes;

use super::util::{glob_match, parse_i64, parse_u64};
use super::{Action, Ctx};
use crate::keyspace::SHARDS;

pub(super) fn dispatch(
    ctx: &mut Ctx<'_>,
    name: &str,
    args: &[Bytes],
    start: usize,
) -> Option<Action> {
    Some(match name {
        "del" | "unlink" => {
            let keys: Vec<Bytes> = args[1..].to_vec();
            ctx.write(
                start,
                move |v| keys.iter().filter(|k| v.del(k)).count(),
                |c, n| c.int(n as i64),
            )
        }
        "exists" => {
            let n = ctx.engine().read(|ks, now| {
                args[1..]
                    .iter()
                    .filter(|k| ks.get(k).is_some_and(|e| !e.is_expired(now)))
                    .count()
            });
            ctx.int(n as i64);
            Action::Done
        }
        "expire" | "pexpire" | "expireat" | "pexpireat" => expire(ctx, name, args, start),
        "persist" => {
            let key = args[1].clone();
            ctx.write(
                start,
                move |v| match v.live_expiry(&key) {
                    Some(exp) if exp != 0 => v.set_expiry(&key, 0),
                    _ => false,
                },
                |c, done| c.int(i64::from(done)),
            )
        }
        "ttl" | "pttl" | "expiretime" | "pexpiretime" => {
            let exp = ctx.engine().read(|ks, now| {
                ks.get(&args[1])
                    .filter(|e| !e.is_expired(now))
                    .map(|e| e.expire_at_ms)
            });
            let now = crate::engine::now_ms();
            let n = match exp {
                None => -2,
                Some(0) => -1,
                Some(at) => match name {
                    "ttl" => ((at.saturating_sub(now) + 500) / 1000) as i64,
                    "pttl" => at.saturating_sub(now) as i64,
                    "expiretime" => (at / 1000) as i64,
                    _ => at as i64,
                },
            };
            ctx.int(n);
            Action::Done
        }
        "type" => {
            let exists = ctx
                .engine()
                .read(|ks, now| ks.get(&args[1]).is_some_and(|e| !e.is_expired(now)));
            ctx.simple(if exists { "string" } else { "none" });
            Action::Done
        }
        "keys" => {
            keys(ctx, &args[1]);
            Action::Done
        }
        "scan" => {
            scan(ctx, args);
            Action::Done
        }
        "dbsize" => {
            let n = ctx.engine().keys();
            ctx.int(n as i64);
            Action::Done
        }
        "randomkey" => {
            randomkey(ctx);
            Action::Done
        }
        "flushall" | "flushdb" => {
            if let Some(opt) = args.get(1) {
                let o = opt.to_ascii_lowercase();
                if args.len() > 2 || (o != b"async" && o != b"sync") {
                    ctx.syntax_error();
                    return Some(Action::Done);
                }
            }
            ctx.write(start, |v| v.flush_all(), |c, ()| c.ok())
        }
        _ => return None,
    })
}

fn expire(ctx: &mut Ctx<'_>, name: &str, args: &[Bytes], start: usize) -> Action {
    let Some(n) = parse_i64(&args[2]) else {
        ctx.not_integer();
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
    let at: Option<i64> = match name {
        "expire" => n.checked_mul(1000).and_then(|ms| ms.checked_add(now)),
        "pexpire" => n.checked_add(now),
        "expireat" => n.checked_mul(1000),
        _ => Some(n),
    };
    let Some(at) = at else {
        ctx.err(&format!("ERR invalid expire time in '{name}' command"));
        return Action::Done;
    };
    let key = args[1].clone();
    ctx.write(
        start,
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

fn keys(ctx: &mut Ctx<'_>, pattern: &[u8]) {
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
}

/// SCAN: the cursor is a shard index, so a full iteration returns every key
/// that existed throughout it at least once (and each only once per shard).
fn scan(ctx: &mut Ctx<'_>, args: &[Bytes]) {
    let Some(cursor) = parse_u64(&args[1]) else {
        ctx.err("ERR invalid cursor");
        return;
    };
    let mut count = 10usize;
    let mut pattern: Option<Bytes> = None;
    let mut type_filter: Option<Vec<u8>> = None;
    let mut i = 2;
    while i < args.len() {
        let opt = args[i].to_ascii_lowercase();
        if i + 1 >= args.len() {
            ctx.syntax_error();
            return;
        }
        match opt.as_slice() {
            b"count" => match parse_i64(&args[i + 1]) {
                Some(n) if n >= 1 => count = n as usize,
                Some(_) => {
                    ctx.syntax_error();
                    return;
                }
                None => {
                    ctx.not_integer();
                    return;
                }
            },
            b"match" => pattern = Some(args[i + 1].clone()),
            b"type" => type_filter = Some(args[i + 1].to_ascii_lowercase()),
            _ => {
                ctx.syntax_error();
                return;
            }
        }
        i += 2;
    }
    let strings_wanted = type_filter.as_deref().is_none_or(|t| t == b"string");
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
                if strings_wanted
                    && !e.is_expired(now)
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
}

fn randomkey(ctx: &mut Ctx<'_>) {
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
}
