//! Connection and server commands: AUTH, HELLO, CLIENT, INFO, ROLE, WAIT...

use std::fmt::Write as _;

use bytes::Bytes;

use super::util::glob_match;
use super::{Action, COMMANDS, Ctx};
use crate::admin::{LinkStatus, ReplicationMode, Role};
use crate::config::same_secret;
use crate::context::Shared;
use crate::resp::string_to_i64;
use crate::resp::{Frame, Protocol};

pub(super) fn ping(ctx: &mut Ctx<'_>, args: &[Bytes]) -> Action {
    match args.len() {
        1 => ctx.simple("PONG"),
        2 => ctx.bulk(&args[1]),
        _ => ctx.err("ERR wrong number of arguments for 'ping' command"),
    }
    Action::Done
}

pub(super) fn echo(ctx: &mut Ctx<'_>, args: &[Bytes]) -> Action {
    ctx.bulk(&args[1]);
    Action::Done
}

pub(super) fn select(ctx: &mut Ctx<'_>, args: &[Bytes]) -> Action {
    match ctx.int_arg(&args[1]) {
        Some(0) => ctx.ok(),
        Some(_) => ctx.err("ERR DB index is out of range"),
        None => {}
    }
    Action::Done
}

pub(super) fn time(ctx: &mut Ctx<'_>, _args: &[Bytes]) -> Action {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default();
    ctx.array_len(2);
    ctx.bulk(now.as_secs().to_string().as_bytes());
    ctx.bulk(now.subsec_micros().to_string().as_bytes());
    Action::Done
}

pub(super) fn quit(ctx: &mut Ctx<'_>, _args: &[Bytes]) -> Action {
    ctx.ok();
    Action::Close
}

pub(super) fn reset(ctx: &mut Ctx<'_>, _args: &[Bytes]) -> Action {
    let needs_auth = ctx.shared.config.requirepass.is_some();
    ctx.sess.proto = Protocol::Resp2;
    ctx.sess.name = None;
    ctx.sess.authed = !needs_auth;
    ctx.simple("RESET");
    Action::Done
}

pub(super) fn info(ctx: &mut Ctx<'_>, args: &[Bytes]) -> Action {
    let sections: Vec<String> = args[1..]
        .iter()
        .map(|a| String::from_utf8_lossy(a).to_ascii_lowercase())
        .collect();
    let text = info_text(ctx.shared, &sections);
    ctx.frame(&Frame::Verbatim {
        format: *b"txt",
        text: Bytes::from(text),
    });
    Action::Done
}

pub(super) fn lastsave(ctx: &mut Ctx<'_>, _args: &[Bytes]) -> Action {
    ctx.int(ctx.shared.started_unix as i64);
    Action::Done
}

pub(super) fn wait(ctx: &mut Ctx<'_>, args: &[Bytes]) -> Action {
    // Redis: a negative count is already reached.
    let Some(replicas) = ctx.int_arg(&args[1]) else {
        return Action::Done;
    };
    let Some(timeout_ms) = timeout_arg(ctx, &args[2]) else {
        return Action::Done;
    };
    Action::WaitReplicas {
        replicas: u64::try_from(replicas).unwrap_or(0),
        timeout_ms,
    }
}

/// A millisecond timeout as Redis's `getTimeoutFromObjectOrReply` reads
/// it: an integer, not negative, not past the end of time.
fn timeout_arg(ctx: &mut Ctx<'_>, arg: &[u8]) -> Option<u64> {
    let Some(ms) = string_to_i64(arg) else {
        ctx.err("ERR timeout is not an integer or out of range");
        return None;
    };
    if ms < 0 {
        ctx.err("ERR timeout is negative");
        return None;
    }
    let now = i64::try_from(crate::engine::now_ms()).unwrap_or(i64::MAX);
    if ms > 0 && ms > i64::MAX - now {
        ctx.err("ERR timeout is out of range");
        return None;
    }
    Some(ms as u64)
}

pub(super) fn reploffset(ctx: &mut Ctx<'_>, _args: &[Bytes]) -> Action {
    ctx.int(ctx.sess.last_write_offset as i64);
    Action::Done
}

pub(super) fn waitoffset(ctx: &mut Ctx<'_>, args: &[Bytes]) -> Action {
    let Some(offset) = non_negative_arg(ctx, &args[1]) else {
        return Action::Done;
    };
    let Some(timeout) = non_negative_arg(ctx, &args[2]) else {
        return Action::Done;
    };
    Action::WaitOffset {
        offset,
        timeout_ms: timeout,
    }
}

/// An integer argument that must not be negative (a negative one is "out
/// of range").
fn non_negative_arg(ctx: &mut Ctx<'_>, arg: &[u8]) -> Option<u64> {
    let n = ctx.int_arg(arg)?;
    match u64::try_from(n) {
        Ok(n) => Some(n),
        Err(_) => {
            ctx.not_integer();
            None
        }
    }
}

pub(super) fn debug(ctx: &mut Ctx<'_>, args: &[Bytes]) -> Action {
    let sub = args[1].to_ascii_lowercase();
    match sub.as_slice() {
        b"digest" => {
            let (digest, _) = ctx.engine().digest();
            ctx.bulk(format!("{digest:016x}").as_bytes());
        }
        b"digest-offset" => {
            let (digest, offset) = ctx.engine().digest();
            ctx.array_len(2);
            ctx.bulk(format!("{digest:016x}").as_bytes());
            ctx.int(offset as i64);
        }
        _ => ctx.err(&format!(
            "ERR unknown subcommand '{}'. Try DEBUG HELP.",
            String::from_utf8_lossy(&args[1])
        )),
    }
    Action::Done
}

fn check_password(ctx: &mut Ctx<'_>, user: &[u8], pass: &[u8]) -> bool {
    match &ctx.shared.config.requirepass {
        None => {
            ctx.err("ERR AUTH <password> called without any password configured for the default user. Are you sure your configuration is correct?");
            false
        }
        Some(expected) => {
            if user == b"default" && same_secret(pass, expected.as_bytes()) {
                ctx.sess.authed = true;
                true
            } else {
                ctx.err("WRONGPASS invalid username-password pair or user is disabled.");
                false
            }
        }
    }
}

pub(super) fn auth(ctx: &mut Ctx<'_>, args: &[Bytes]) -> Action {
    let ok = match args.len() {
        2 => check_password(ctx, b"default", &args[1]),
        3 => check_password(ctx, &args[1], &args[2]),
        _ => {
            ctx.syntax_error();
            false
        }
    };
    if ok {
        ctx.ok();
    }
    Action::Done
}

pub(super) fn hello(ctx: &mut Ctx<'_>, args: &[Bytes]) -> Action {
    let mut i = 1;
    let mut proto = ctx.sess.proto;
    if let Some(v) = args.get(1) {
        match string_to_i64(v) {
            Some(2) => proto = Protocol::Resp2,
            Some(3) => proto = Protocol::Resp3,
            Some(_) => {
                ctx.err("NOPROTO unsupported protocol version");
                return Action::Done;
            }
            None => {
                ctx.err("ERR Protocol version is not an integer or out of range");
                return Action::Done;
            }
        }
        i = 2;
    }
    let mut setname = None;
    while i < args.len() {
        let opt = args[i].to_ascii_lowercase();
        match opt.as_slice() {
            b"auth" if i + 2 < args.len() => {
                if !check_password(ctx, &args[i + 1], &args[i + 2]) {
                    return Action::Done;
                }
                i += 3;
            }
            b"setname" if i + 1 < args.len() => {
                setname = Some(args[i + 1].clone());
                i += 2;
            }
            _ => {
                ctx.err(&format!(
                    "ERR Syntax error in HELLO option '{}'",
                    String::from_utf8_lossy(&args[i])
                ));
                return Action::Done;
            }
        }
    }
    if !ctx.sess.authed {
        ctx.err("NOAUTH HELLO must be called with the client already authenticated, otherwise the HELLO <proto> AUTH <user> <pass> option can be used to authenticate the client and select the RESP protocol version at the same time");
        return Action::Done;
    }
    if let Some(n) = setname {
        ctx.sess.name = Some(n);
    }
    ctx.sess.proto = proto;
    let role = match ctx.engine().role().role {
        Role::Leader => "master",
        _ => "replica",
    };
    let s = |t: &str| Frame::Bulk(Bytes::copy_from_slice(t.as_bytes()));
    ctx.frame(&Frame::Map(vec![
        (s("server"), s("redis")),
        (s("version"), s(REDIS_COMPAT_VERSION)),
        (
            s("proto"),
            Frame::Integer(if proto == Protocol::Resp3 { 3 } else { 2 }),
        ),
        (s("id"), Frame::Integer(ctx.sess.id as i64)),
        (s("mode"), s("standalone")),
        (s("role"), s(role)),
        (s("modules"), Frame::Array(vec![])),
    ]));
    Action::Done
}

/// The Redis version we report, so clients enable the features we have.
pub const REDIS_COMPAT_VERSION: &str = "7.2.0";

pub(super) fn client(ctx: &mut Ctx<'_>, args: &[Bytes]) -> Action {
    client_subcommand(ctx, args);
    Action::Done
}

fn client_subcommand(ctx: &mut Ctx<'_>, args: &[Bytes]) {
    let sub = args[1].to_ascii_lowercase();
    let arity_err = |ctx: &mut Ctx<'_>, name: &str| {
        ctx.err(&format!(
            "ERR wrong number of arguments for 'client|{name}' command"
        ))
    };
    match sub.as_slice() {
        b"setname" => {
            if args.len() != 3 {
                return arity_err(ctx, "setname");
            }
            let name = &args[2];
            if name.iter().any(|c| *c <= b' ' || *c > b'~') {
                ctx.err("ERR Client names cannot contain spaces, newlines or special characters.");
                return;
            }
            ctx.sess.name = if name.is_empty() {
                None
            } else {
                Some(name.clone())
            };
            ctx.ok();
        }
        b"getname" => match ctx.sess.name.clone() {
            Some(n) => ctx.bulk(&n),
            None => ctx.null(),
        },
        b"id" => ctx.int(ctx.sess.id as i64),
        b"info" => {
            let line = client_line(ctx);
            ctx.bulk(line.as_bytes());
        }
        b"list" => {
            // Only this connection is tracked here; enough for tooling.
            let line = client_line(ctx);
            ctx.bulk(line.as_bytes());
        }
        b"setinfo" => {
            if args.len() != 4 {
                return arity_err(ctx, "setinfo");
            }
            match args[2].to_ascii_lowercase().as_slice() {
                b"lib-name" => ctx.sess.lib_name = Some(args[3].clone()),
                b"lib-ver" => ctx.sess.lib_ver = Some(args[3].clone()),
                _ => {
                    ctx.err(&format!(
                        "ERR Unrecognized option '{}'",
                        String::from_utf8_lossy(&args[2])
                    ));
                    return;
                }
            }
            ctx.ok();
        }
        b"no-evict" | b"no-touch" | b"reply" => ctx.ok(),
        _ => ctx.err(&format!(
            "ERR unknown subcommand '{}'. Try CLIENT HELP.",
            String::from_utf8_lossy(&args[1])
        )),
    }
}

fn client_line(ctx: &Ctx<'_>) -> String {
    let name = ctx
        .sess
        .name
        .as_ref()
        .map(|n| String::from_utf8_lossy(n).into_owned())
        .unwrap_or_default();
    format!(
        "id={} addr={} name={} age={} db=0 resp={} lib-name={} lib-ver={}\n",
        ctx.sess.id,
        ctx.sess.addr,
        name,
        ctx.sess.created.elapsed().as_secs(),
        if ctx.sess.proto == Protocol::Resp3 {
            3
        } else {
            2
        },
        ctx.sess
            .lib_name
            .as_ref()
            .map(|n| String::from_utf8_lossy(n).into_owned())
            .unwrap_or_default(),
        ctx.sess
            .lib_ver
            .as_ref()
            .map(|n| String::from_utf8_lossy(n).into_owned())
            .unwrap_or_default(),
    )
}

fn command_info(spec: &super::Spec) -> Frame {
    let flags = match spec.kind {
        super::Kind::Read => vec!["readonly", "fast"],
        super::Kind::Write => vec!["write", "denyoom"],
        super::Kind::Other => vec!["fast"],
    };
    Frame::Array(vec![
        Frame::Bulk(Bytes::from_static(spec.name.as_bytes())),
        Frame::Integer(i64::from(spec.arity)),
        Frame::Set(flags.into_iter().map(|f| Frame::Simple(f.into())).collect()),
        Frame::Integer(i64::from(spec.first_key)),
        Frame::Integer(i64::from(spec.last_key)),
        Frame::Integer(i64::from(spec.step)),
        Frame::Set(vec![]),
        Frame::Set(vec![]),
        Frame::Array(vec![]),
        Frame::Array(vec![]),
    ])
}

pub(super) fn command(ctx: &mut Ctx<'_>, args: &[Bytes]) -> Action {
    command_subcommand(ctx, args);
    Action::Done
}

fn command_subcommand(ctx: &mut Ctx<'_>, args: &[Bytes]) {
    let Some(sub) = args.get(1).map(|a| a.to_ascii_lowercase()) else {
        let all = Frame::Array(COMMANDS.iter().map(command_info).collect());
        ctx.frame(&all);
        return;
    };
    match sub.as_slice() {
        b"count" => ctx.int(COMMANDS.len() as i64),
        b"info" => {
            let items = args[2..]
                .iter()
                .map(|n| {
                    super::lookup(n)
                        .map(command_info)
                        .unwrap_or(Frame::NullArray)
                })
                .collect();
            ctx.frame(&Frame::Array(items));
        }
        // redis-cli asks for docs to show hints; having none is fine.
        b"docs" => ctx.frame(&Frame::Map(vec![])),
        b"list" => {
            let names = COMMANDS
                .iter()
                .map(|s| Frame::Bulk(Bytes::from_static(s.name.as_bytes())))
                .collect();
            ctx.frame(&Frame::Array(names));
        }
        _ => ctx.err(&format!(
            "ERR unknown subcommand '{}'. Try COMMAND HELP.",
            String::from_utf8_lossy(&args[1])
        )),
    }
}

fn config_values(shared: &Shared) -> Vec<(&'static str, String)> {
    let c = &shared.config;
    let fsync = c.fsync.to_string();
    vec![
        ("appendonly", "yes".into()),
        (
            "appendfsync",
            match fsync.as_str() {
                "always" | "batch" => "always".to_string(),
                "never" => "no".into(),
                _ => "everysec".into(),
            },
        ),
        ("save", String::new()),
        ("databases", "1".into()),
        ("maxmemory", "0".into()),
        ("maxclients", c.max_clients.to_string()),
        ("proto-max-bulk-len", c.max_bulk_bytes.to_string()),
        ("port", shared.port.to_string()),
        ("bind", c.listen.ip().to_string()),
        ("dir", c.data_dir.display().to_string()),
        ("replica-read-only", "yes".into()),
        ("timeout", "0".into()),
        ("rstore-fsync", fsync),
        (
            "rstore-replication-mode",
            mode_name(c.replication_mode).into(),
        ),
        ("rstore-sync-replicas", c.sync_replicas.to_string()),
        ("rstore-sync-timeout", c.sync_timeout.to_string()),
    ]
}

pub(super) fn config(ctx: &mut Ctx<'_>, args: &[Bytes]) -> Action {
    config_subcommand(ctx, args);
    Action::Done
}

fn config_subcommand(ctx: &mut Ctx<'_>, args: &[Bytes]) {
    let sub = args[1].to_ascii_lowercase();
    match sub.as_slice() {
        b"get" => {
            if args.len() < 3 {
                ctx.err("ERR wrong number of arguments for 'config|get' command");
                return;
            }
            let values = config_values(ctx.shared);
            let mut pairs = Vec::new();
            for (name, value) in &values {
                if args[2..]
                    .iter()
                    .any(|p| glob_match(&p.to_ascii_lowercase(), name.as_bytes()))
                {
                    pairs.push((
                        Frame::Bulk(Bytes::from_static(name.as_bytes())),
                        Frame::Bulk(Bytes::from(value.clone())),
                    ));
                }
            }
            ctx.frame(&Frame::Map(pairs));
        }
        b"set" => ctx.err(
            "ERR CONFIG SET is not supported: rstore is configured by flags (restart to change)",
        ),
        b"resetstat" => ctx.ok(),
        _ => ctx.err(&format!(
            "ERR unknown subcommand '{}'. Try CONFIG HELP.",
            String::from_utf8_lossy(&args[1])
        )),
    }
}

pub fn mode_name(m: ReplicationMode) -> &'static str {
    match m {
        ReplicationMode::Async => "async",
        ReplicationMode::SemiSync => "semi-sync",
        ReplicationMode::Sync => "sync",
    }
}

fn split_host_port(addr: &str) -> (String, u16) {
    match addr.rsplit_once(':') {
        Some((h, p)) => (h.to_string(), p.parse().unwrap_or(0)),
        None => (addr.to_string(), 0),
    }
}

pub(super) fn role(ctx: &mut Ctx<'_>, _args: &[Bytes]) -> Action {
    let engine = ctx.engine();
    let rs = engine.role();
    let offsets = engine.offsets();
    let frame = match rs.role {
        Role::Leader => {
            let followers = engine
                .followers()
                .into_iter()
                .map(|f| {
                    let (host, port) = split_host_port(&f.addr);
                    Frame::Array(vec![
                        Frame::Bulk(Bytes::from(host)),
                        Frame::Bulk(Bytes::from(port.to_string())),
                        Frame::Bulk(Bytes::from(f.received.to_string())),
                    ])
                })
                .collect();
            Frame::Array(vec![
                Frame::Bulk(Bytes::from_static(b"master")),
                Frame::Integer(offsets.appended as i64),
                Frame::Array(followers),
            ])
        }
        _ => {
            let (host, port) = split_host_port(rs.leader.as_deref().unwrap_or("?:0"));
            let state = match ctx.shared.link.status() {
                LinkStatus::Up => "connected",
                LinkStatus::Snapshot => "sync",
                LinkStatus::Connecting => "connecting",
                LinkStatus::Down => "connect",
            };
            Frame::Array(vec![
                Frame::Bulk(Bytes::from_static(b"slave")),
                Frame::Bulk(Bytes::from(host)),
                Frame::Integer(i64::from(port)),
                Frame::Bulk(Bytes::from_static(state.as_bytes())),
                Frame::Integer(offsets.applied as i64),
            ])
        }
    };
    ctx.frame(&frame);
    Action::Done
}

/// The text of INFO for the given sections (empty = default).
pub fn info_text(shared: &Shared, sections: &[String]) -> String {
    let all = sections.is_empty()
        || sections
            .iter()
            .any(|s| s == "all" || s == "everything" || s == "default");
    let want = |name: &str| all || sections.iter().any(|s| s == name);
    let engine = &shared.engine;
    let stats = &engine.stats;
    let load = |c: &std::sync::atomic::AtomicU64| c.load(std::sync::atomic::Ordering::Relaxed);
    let mut out = String::new();
    if want("server") {
        let uptime = shared.started.elapsed().as_secs();
        let _ = write!(
            out,
            "# Server\r\nredis_version:{REDIS_COMPAT_VERSION}\r\nrstore_version:{}\r\nredis_mode:standalone\r\nos:{}\r\narch_bits:64\r\nprocess_id:{}\r\nrun_id:{}\r\ntcp_port:{}\r\nuptime_in_seconds:{uptime}\r\nuptime_in_days:{}\r\nexecutable:rstore-node\r\nrstore_node_id:{}\r\n\r\n",
            env!("CARGO_PKG_VERSION"),
            std::env::consts::OS,
            std::process::id(),
            shared.run_id,
            shared.port,
            uptime / 86400,
            engine.opts.node_id,
        );
    }
    if want("clients") {
        let _ = write!(
            out,
            "# Clients\r\nconnected_clients:{}\r\nmaxclients:{}\r\nblocked_clients:0\r\n\r\n",
            load(&stats.connected_clients),
            shared.config.max_clients
        );
    }
    if want("memory") {
        let rss = crate::admin::server::rss_bytes().unwrap_or(0);
        let _ = write!(
            out,
            "# Memory\r\nused_memory:{rss}\r\nused_memory_rss:{rss}\r\nmaxmemory:0\r\nmaxmemory_policy:noeviction\r\n\r\n"
        );
    }
    let offsets = engine.offsets();
    if want("persistence") {
        let wal = engine.wal();
        let _ = write!(
            out,
            "# Persistence\r\nloading:0\r\naof_enabled:1\r\naof_rewrite_in_progress:0\r\nrdb_bgsave_in_progress:{}\r\nrdb_last_save_time:{}\r\nrstore_fsync:{}\r\nrstore_wal_bytes:{}\r\nrstore_wal_segments:{}\r\nrstore_snapshot_bytes:{}\r\nrstore_last_checkpoint_offset:{}\r\nrstore_durable_offset:{}\r\n\r\n",
            u8::from(engine.checkpoint_running()),
            shared.started_unix,
            shared.config.fsync,
            wal.disk_bytes(),
            wal.segment_count(),
            engine.snapshot_bytes(),
            engine.last_checkpoint_offset(),
            offsets.durable,
        );
    }
    if want("stats") {
        let clients = stats.client_totals();
        let _ = write!(
            out,
            "# Stats\r\ntotal_connections_received:{}\r\ntotal_commands_processed:{}\r\nrejected_connections:{}\r\ntotal_net_input_bytes:{}\r\ntotal_net_output_bytes:{}\r\nexpired_keys:{}\r\nevicted_keys:0\r\nkeyspace_hits:{}\r\nkeyspace_misses:{}\r\ntotal_error_replies:{}\r\nsync_full:{}\r\nsync_partial_ok:{}\r\nrstore_sync_timeouts:{}\r\nrstore_degrade_events:{}\r\n\r\n",
            load(&stats.connections_total),
            clients.commands,
            load(&stats.rejected_connections),
            clients.net_input_bytes,
            clients.net_output_bytes,
            load(&stats.expired_keys),
            clients.keyspace_hits,
            clients.keyspace_misses,
            clients.command_errors,
            load(&stats.resyncs_full),
            load(&stats.resyncs_partial),
            load(&stats.sync_timeouts),
            load(&stats.degrade_events),
        );
    }
    if want("replication") {
        let rs = engine.role();
        out.push_str("# Replication\r\n");
        match rs.role {
            Role::Leader => {
                let followers = engine.followers();
                let _ = write!(
                    out,
                    "role:master\r\nconnected_slaves:{}\r\n",
                    followers.len()
                );
                for (i, f) in followers.iter().enumerate() {
                    let (host, port) = split_host_port(&f.addr);
                    let lag = f.caught_up_at.map(|t| t.elapsed().as_secs()).unwrap_or(0);
                    let state = if f.state == crate::domain::FollowerState::Streaming {
                        "online"
                    } else {
                        "wait_bgsave"
                    };
                    let _ = write!(
                        out,
                        "slave{i}:ip={host},port={port},state={state},offset={},lag={lag},rstore_node_id={},rstore_durable={},rstore_applied={}\r\n",
                        f.received, f.node_id, f.durable, f.applied
                    );
                }
            }
            _ => {
                let (host, port) = split_host_port(rs.leader.as_deref().unwrap_or("?:0"));
                let link = shared.link.status();
                let _ = write!(
                    out,
                    "role:slave\r\nmaster_host:{host}\r\nmaster_port:{port}\r\nmaster_link_status:{}\r\nmaster_last_io_seconds_ago:{}\r\nmaster_sync_in_progress:{}\r\nslave_read_repl_offset:{}\r\nslave_repl_offset:{}\r\nslave_priority:100\r\nslave_read_only:1\r\nreplica_announced:1\r\nconnected_slaves:0\r\n",
                    if link == LinkStatus::Up { "up" } else { "down" },
                    shared.link.last_io_secs().map(|s| s as i64).unwrap_or(-1),
                    u8::from(link == LinkStatus::Snapshot),
                    offsets.appended,
                    offsets.applied,
                );
            }
        }
        let _ = write!(
            out,
            "master_failover_state:no-failover\r\nmaster_replid:{}\r\nmaster_replid2:0000000000000000000000000000000000000000\r\nmaster_repl_offset:{}\r\nsecond_repl_offset:-1\r\nrepl_backlog_active:1\r\nrepl_backlog_size:{}\r\nrepl_backlog_first_byte_offset:{}\r\nrepl_backlog_histlen:{}\r\nrstore_epoch:{}\r\nrstore_fenced:{}\r\nrstore_replication_mode:{}\r\nrstore_sync_replicas:{}\r\nrstore_degraded:{}\r\nrstore_committed_offset:{}\r\nrstore_applied_offset:{}\r\nrstore_durable_offset:{}\r\n\r\n",
            replid(rs.epoch),
            offsets.appended,
            shared.config.wal_retention_bytes,
            engine.wal().first_offset() + 1,
            offsets.appended.saturating_sub(engine.wal().first_offset()),
            rs.epoch,
            u8::from(rs.fenced),
            mode_name(engine.settings().mode),
            engine.settings().sync_replicas,
            u8::from(engine.degraded()),
            offsets.committed,
            offsets.applied,
            offsets.durable,
        );
    }
    if want("keyspace") {
        out.push_str("# Keyspace\r\n");
        let (keys, expires) = engine.read(|ks, _| (ks.len(), ks.volatile_len()));
        if keys > 0 {
            let _ = write!(out, "db0:keys={keys},expires={expires},avg_ttl=0\r\n");
        }
        out.push_str("\r\n");
    }
    // Redis ends INFO without the trailing blank line.
    while out.ends_with("\r\n\r\n") {
        out.truncate(out.len() - 2);
    }
    out
}

/// A stable 40-hex replication id per epoch, like Redis's master_replid.
fn replid(epoch: u64) -> String {
    format!("{:040x}", u128::from(epoch) | (0x7273_746f_7265u128 << 64))
}
