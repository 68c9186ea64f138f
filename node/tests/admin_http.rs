//! The admin HTTP API of the real binary: health, readiness, status,
//! metrics, fencing and promotion.
#![allow(clippy::unwrap_used)] // a failed unwrap is a failed test

use rstore_testkit::{DEADLINE, Node, Reply, wait_until};

/// The value of an un-labelled sample (or the sum over labels) in
/// Prometheus text.
fn metric(text: &str, name: &str) -> Option<f64> {
    let mut found = None;
    for line in text.lines() {
        if line.starts_with('#') {
            continue;
        }
        let Some((series, value)) = line.rsplit_once(' ') else {
            continue;
        };
        let base = series.split('{').next().unwrap_or(series);
        if base == name {
            *found.get_or_insert(0.0) += value.parse::<f64>().unwrap_or(f64::NAN);
        }
    }
    found
}

/// Logical offset at the end of the last WAL segment file: the segment's
/// start (its name) plus the record bytes after its 16-byte header.
fn wal_end(node: &Node) -> u64 {
    let last = std::fs::read_dir(node.wal_dir())
        .unwrap()
        .filter_map(|e| {
            let e = e.unwrap();
            let name = e.file_name().into_string().unwrap();
            let start: u64 = name.strip_suffix(".wal")?.parse().ok()?;
            Some((start, e.metadata().unwrap().len()))
        })
        .max();
    let (start, len) = last.expect("a WAL segment");
    start + len - 16
}

#[test]
fn health_readiness_status_and_metrics_of_a_leader() {
    let node = Node::leader(&[]);
    let health = node.http("GET", "/healthz", None);
    assert_eq!(health.status, 200, "{}", health.body);
    let ready = node.http("GET", "/readyz", None);
    assert_eq!(ready.status, 200, "{}", ready.body);
    assert_eq!(node.http("GET", "/nope", None).status, 404);

    let st = node.http("GET", "/status", None);
    assert_eq!(st.status, 200);
    let s0 = st.json();
    assert_eq!(s0["role"], "leader", "{s0}");
    assert_eq!(s0["node_id"], "it-node", "{s0}");
    assert!(s0["epoch"].as_u64().unwrap() >= 1, "{s0}");
    assert_eq!(s0["fenced"], false);
    // A fresh leader starts its log's history at epoch 1.
    assert_eq!(s0["last_log_epoch"], 1, "{s0}");
    for field in ["appended", "durable", "applied", "committed"] {
        assert!(s0["offsets"][field].is_u64(), "offsets.{field} in {s0}");
    }
    assert!(s0["followers"].is_array(), "{s0}");
    assert_eq!(s0["mode"], "async", "{s0}");
    // The digest costs a pass over the keyspace: only on request.
    assert!(s0["digest"].is_null(), "{s0}");
    let digest0 = node.http("GET", "/status?digest=1", None).json()["digest"]
        .as_str()
        .unwrap()
        .to_string();

    let mut c = node.client();
    let mut pipe = redis::pipe();
    for n in 0..20 {
        pipe.cmd("SET").arg(format!("k{n}")).arg(n).ignore();
    }
    pipe.cmd("GET").arg("k1").ignore();
    pipe.cmd("GET").arg("missing").ignore();
    pipe.query::<()>(&mut c).unwrap();

    let s1 = node.http("GET", "/status?digest=1", None).json();
    let appended0 = s0["offsets"]["appended"].as_u64().unwrap();
    let appended1 = s1["offsets"]["appended"].as_u64().unwrap();
    assert!(appended1 > appended0, "appended {appended0} -> {appended1}");
    // `appended` is the end of the local log: where the last segment file
    // ends (every write above is acknowledged, so it is on disk).
    assert_eq!(appended1, wal_end(&node), "{s1}");
    // fsync always: acknowledged means durable.
    assert!(s1["offsets"]["durable"].as_u64().unwrap() >= appended1);
    assert_ne!(
        s1["digest"].as_str().unwrap(),
        digest0,
        "digest follows the data"
    );
    assert_eq!(s1["keys"], 20, "{s1}");

    let m = node.http("GET", "/metrics", None);
    assert_eq!(m.status, 200);
    let text = &m.body;
    for name in [
        "rstore_commands_total",
        "rstore_fsync_duration_seconds_bucket",
        "rstore_keys",
        "rstore_connected_clients",
    ] {
        assert!(
            text.lines().any(|l| l.starts_with(name)),
            "/metrics lacks {name}:\n{text}"
        );
    }
    assert_eq!(metric(text, "rstore_keys"), Some(20.0), "{text}");
    let commands = metric(text, "rstore_commands_total").unwrap();
    assert!(commands >= 22.0, "rstore_commands_total {commands}");
    let fsyncs = metric(text, "rstore_fsync_duration_seconds_count");
    assert!(
        fsyncs.is_some_and(|n| n >= 1.0),
        "fsync histogram count {fsyncs:?}"
    );
    // Every line is a comment or "series value".
    for line in text
        .lines()
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
    {
        let value = line.rsplit_once(' ').map(|(_, v)| v).unwrap_or("");
        assert!(
            value.parse::<f64>().is_ok() || value == "+Inf" || value == "NaN",
            "bad sample line {line:?}"
        );
    }
}

/// The value of one labelled series, e.g. `name{type="read"}`.
fn series(text: &str, series: &str) -> Option<f64> {
    text.lines()
        .find_map(|l| l.strip_prefix(series)?.strip_prefix(' ')?.parse().ok())
}

/// Counters are kept per connection (no shared atomics on the command
/// path); INFO and /metrics must still add up every command, from
/// connections still open and from ones that closed, each exactly once.
#[test]
fn command_counters_add_up_over_open_and_closed_connections() {
    let node = Node::leader(&["--fsync", "never"]);
    {
        let mut a = node.client();
        let _: () = redis::cmd("SET").arg("x").arg(1).query(&mut a).unwrap();
        let _: () = redis::cmd("SET").arg("y").arg("abc").query(&mut a).unwrap();
        let hit: Option<String> = redis::cmd("GET").arg("x").query(&mut a).unwrap();
        assert_eq!(hit.as_deref(), Some("1"));
        let miss: Option<String> = redis::cmd("GET").arg("nope").query(&mut a).unwrap();
        assert_eq!(miss, None);
        let err = redis::cmd("INCR").arg("y").query::<i64>(&mut a);
        assert!(err.is_err(), "INCR of a non-number must fail");
    }
    // The first connection is closed (and counted out) before the second
    // reads the totals.
    let text = wait_until(DEADLINE, "the first client to be counted out", || {
        let text = node.http("GET", "/metrics", None).body;
        (metric(&text, "rstore_connected_clients") == Some(0.0)).then_some(text)
    });
    let mut b = node.client();
    let hit: Option<String> = redis::cmd("GET").arg("x").query(&mut b).unwrap();
    assert_eq!(hit.as_deref(), Some("1"));
    let closed_only = series(&text, "rstore_commands_total{type=\"read\"}");
    assert_eq!(closed_only, Some(2.0), "{text}");

    let text = node.http("GET", "/metrics", None).body;
    let read = series(&text, "rstore_commands_total{type=\"read\"}");
    let write = series(&text, "rstore_commands_total{type=\"write\"}");
    assert_eq!((read, write), (Some(3.0), Some(3.0)), "{text}");
    assert_eq!(metric(&text, "rstore_command_errors_total"), Some(1.0));
    assert_eq!(metric(&text, "rstore_keyspace_hits_total"), Some(2.0));
    assert_eq!(metric(&text, "rstore_keyspace_misses_total"), Some(1.0));
    let reads_timed = series(
        &text,
        "rstore_command_duration_seconds_count{type=\"read\"}",
    );
    let writes_timed = series(
        &text,
        "rstore_command_duration_seconds_count{type=\"write\"}",
    );
    assert_eq!(
        (reads_timed, writes_timed),
        (Some(3.0), Some(3.0)),
        "{text}"
    );
    assert!(
        metric(&text, "rstore_net_input_bytes_total").is_some_and(|n| n > 0.0),
        "{text}"
    );

    let info: String = redis::cmd("INFO").arg("stats").query(&mut b).unwrap();
    let field = |name: &str| -> u64 {
        info.lines()
            .find_map(|l| l.strip_prefix(name)?.strip_prefix(':')?.trim().parse().ok())
            .unwrap_or_else(|| panic!("INFO lacks {name}: {info}"))
    };
    assert_eq!(field("keyspace_hits"), 2, "{info}");
    assert_eq!(field("keyspace_misses"), 1, "{info}");
    assert_eq!(field("total_error_replies"), 1, "{info}");
    // Six data commands, the ones the client library sends when it
    // connects (counted as other), and INFO itself.
    let other = series(&text, "rstore_commands_total{type=\"other\"}").unwrap();
    assert_eq!(
        field("total_commands_processed"),
        6 + other as u64 + 1,
        "{info}"
    );
}

#[test]
fn an_idle_node_is_alive_but_not_ready() {
    let node = Node::start(&[]);
    assert_eq!(node.http("GET", "/healthz", None).status, 200);
    let ready = node.http("GET", "/readyz", None);
    assert_eq!(ready.status, 503, "{}", ready.body);
    let st = node.http("GET", "/status", None).json();
    assert_eq!(st["role"], "idle", "{st}");
    assert_eq!(st["last_log_epoch"], 0, "an empty history: {st}");
    // An idle node refuses writes like a replica would.
    let mut raw = node.raw();
    assert_eq!(
        raw.cmd_str(&["SET", "a", "1"]),
        Reply::Error("READONLY You can't write against a read only replica.".into())
    );
    // Promoting it makes it a ready leader.
    let p = node.http("POST", "/promote", Some(r#"{"epoch": 1}"#));
    assert_eq!(p.status, 200, "{}", p.body);
    assert_eq!(p.json()["last_log_epoch"], 1, "{}", p.body);
    assert_eq!(node.http("GET", "/readyz", None).status, 200);
    let mut raw = node.raw();
    assert_eq!(raw.cmd_str(&["SET", "a", "1"]), Reply::Simple("OK".into()));
}

#[test]
fn fence_stops_writes_and_promote_resumes_them() {
    let node = Node::leader(&[]);
    let mut c = node.client();
    let _: () = redis::cmd("SET")
        .arg("before")
        .arg("1")
        .query(&mut c)
        .unwrap();
    let epoch = node.http("GET", "/status", None).json()["epoch"]
        .as_u64()
        .unwrap();
    assert_eq!(epoch, 1, "a fresh leader starts at epoch 1");
    let appended = node.http("GET", "/status", None).json()["offsets"]["appended"]
        .as_u64()
        .unwrap();

    // An open connection, idle at the time of the fence.
    let mut open = node.raw();
    assert_eq!(open.cmd_str(&["PING"]), Reply::Simple("PONG".into()));

    let f = node.http("POST", "/fence", Some(r#"{"epoch": 2}"#));
    assert_eq!(f.status, 200, "{}", f.body);
    let body = f.json();
    assert_eq!(body["epoch"], 2, "{body}");
    assert_eq!(body["last_epoch"], 1, "{body}");
    assert_eq!(body["last_offset"].as_u64(), Some(appended), "{body}");

    // Connections of the fenced leader are closed.
    assert!(
        open.closed_by_server(),
        "a client connection survived the fence"
    );
    // New writes fail with FENCED; reads still work.
    let mut raw = node.raw();
    match raw.cmd_str(&["SET", "after", "1"]) {
        Reply::Error(e) => assert!(e.starts_with("FENCED"), "{e}"),
        other => panic!("write on a fenced leader: {other:?}"),
    }
    match raw.cmd_str(&["INCR", "n"]) {
        Reply::Error(e) => assert!(e.starts_with("FENCED"), "{e}"),
        other => panic!("write on a fenced leader: {other:?}"),
    }
    assert_eq!(raw.cmd_str(&["GET", "before"]), Reply::Bulk(b"1".to_vec()));
    assert_eq!(raw.cmd_str(&["EXISTS", "after"]), Reply::Int(0));

    let st = node.http("GET", "/status", None).json();
    assert_eq!(st["fenced"], true, "{st}");
    assert_eq!(st["epoch"], 2, "{st}");
    // The fence raises the node's epoch, not its log's.
    assert_eq!(st["last_log_epoch"], body["last_epoch"], "{st}");
    assert_eq!(st["last_log_epoch"], 1, "{st}");
    assert_eq!(node.http("GET", "/readyz", None).status, 503);
    assert_eq!(node.http("GET", "/healthz", None).status, 200);

    // A lower epoch is a conflict, for fence and promote alike.
    let low = node.http("POST", "/fence", Some(r#"{"epoch": 1}"#));
    assert_eq!(low.status, 409, "{}", low.body);
    let low = node.http("POST", "/promote", Some(r#"{"epoch": 1}"#));
    assert_eq!(low.status, 409, "{}", low.body);
    // Malformed bodies are client errors.
    let bad = node.http("POST", "/fence", Some("{not json"));
    assert!((400..500).contains(&bad.status), "{bad:?}");

    let p = node.http("POST", "/promote", Some(r#"{"epoch": 3}"#));
    assert_eq!(p.status, 200, "{}", p.body);
    let st = p.json();
    assert_eq!(st["role"], "leader", "{st}");
    assert_eq!(st["epoch"], 3, "{st}");
    assert_eq!(st["fenced"], false, "{st}");
    assert_eq!(st["last_log_epoch"], 3, "{st}");
    assert_eq!(node.http("GET", "/readyz", None).status, 200);

    let mut c = node.client();
    let _: () = redis::cmd("SET")
        .arg("after")
        .arg("2")
        .query(&mut c)
        .unwrap();
    let v: String = redis::cmd("GET").arg("after").query(&mut c).unwrap();
    assert_eq!(v, "2");
    let before: String = redis::cmd("GET").arg("before").query(&mut c).unwrap();
    assert_eq!(before, "1");

    // The new epoch is persisted: after kill -9 it is still 3.
    let mut node = node;
    node.kill9();
    node.restart();
    let st = wait_until(DEADLINE, "status after restart", || {
        let r = node.http("GET", "/status", None);
        (r.status == 200).then(|| r.json())
    });
    assert_eq!(st["epoch"], 3, "{st}");
    let mut c = node.client();
    let v: String = redis::cmd("GET").arg("after").query(&mut c).unwrap();
    assert_eq!(v, "2");
}

#[test]
fn admin_calls_without_the_token_are_refused_and_change_nothing() {
    use rstore_node::admin::Role;
    use rstore_testkit::Admin;

    let node = Node::leader(&["--admin-token", "s3cret-token"]);
    // Reads stay open: probes and scrapes need no secret.
    assert_eq!(node.http("GET", "/status", None).status, 200);
    assert_eq!(node.http("GET", "/metrics", None).status, 200);
    for (path, body) in [
        ("/fence", r#"{"epoch": 5}"#),
        ("/promote", r#"{"epoch": 5}"#),
        ("/follow", r#"{"leader": "127.0.0.1:1", "epoch": 5}"#),
        (
            "/config",
            r#"{"mode": "async", "sync_replicas": 1, "sync_timeout_ms": 1000, "on_sync_timeout": "block", "ack_level": "durable"}"#,
        ),
        ("/fence", "not json at all"),
    ] {
        let r = node.http("POST", path, Some(body));
        assert_eq!(r.status, 401, "{path} {body}: {}", r.body);
        assert!(r.body.contains("admin token"), "{}", r.body);
    }
    let wrong = Admin::new(node.addrs.admin).with_token(Some("s3cret-tokem".into()));
    let err = wrong.fence(5).unwrap_err();
    assert_eq!(err.status(), Some(401), "{err}");
    assert!(
        !format!("{wrong:?}").contains("s3cret"),
        "the client's Debug shows the token"
    );

    // Nothing changed: same epoch, still an unfenced leader taking writes.
    let status = node.status();
    assert_eq!(status.epoch, 1, "{status:?}");
    assert_eq!(status.role, Role::Leader);
    assert!(!status.fenced);
    assert_eq!(
        status.settings.map(|s| s.mode),
        Some(rstore_node::admin::ReplicationMode::Async),
        "{status:?}"
    );
    let mut c = node.client();
    let _: () = redis::cmd("SET").arg("k").arg("v").query(&mut c).unwrap();

    // The right token is obeyed.
    let right = Admin::new(node.addrs.admin).with_token(Some("s3cret-token".into()));
    let fenced = right.fence(2).unwrap();
    assert_eq!(fenced.epoch, 2);
    assert!(node.status().fenced);
}

#[test]
fn an_empty_admin_token_is_refused_at_start() {
    let dir = tempfile::tempdir().unwrap();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_rstore-node"))
        .args(["--role", "leader", "--admin-token", " "])
        .args(["--listen", "127.0.0.1:0", "--repl-listen", "127.0.0.1:0"])
        .args(["--admin-listen", "127.0.0.1:0", "--data-dir"])
        .arg(dir.path())
        .output()
        .unwrap();
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("--admin-token must not be empty"),
        "{stderr}"
    );
}

/// `--admin-token-file` is read on every mutating call: a token rotated in
/// the file (as the kubelet updates a Secret volume) is the only one
/// accepted from then on, without a restart; an empty or missing file
/// refuses every mutating call (fails closed), and nothing changes.
#[test]
fn an_admin_token_file_is_read_on_every_call_so_a_rotated_token_takes_effect() {
    let dir = tempfile::tempdir().expect("tmp");
    let file = dir.path().join("token");
    std::fs::write(&file, "first-token\n").expect("write the token");
    let node = Node::leader(&["--admin-token-file", file.to_str().expect("utf-8")]);
    let body = r#"{"mode": "async", "sync_replicas": 1, "sync_timeout_ms": 1000, "on_sync_timeout": "block", "ack_level": "durable"}"#;
    let call = |token: &str| {
        let auth = format!("Authorization: Bearer {token}");
        rstore_testkit::http(node.addrs.admin, "POST", "/config", &[&auth], Some(body))
    };
    assert_eq!(
        call("first-token").status,
        200,
        "the file's token (trimmed)"
    );
    assert_eq!(call("second-token").status, 401);

    std::fs::write(&file, "second-token").expect("rotate the token");
    let old = call("first-token");
    assert_eq!(
        old.status, 401,
        "the old token is refused at once: {}",
        old.body
    );
    assert_eq!(call("second-token").status, 200, "the new one works");

    std::fs::write(&file, "  \n").expect("empty the file");
    let r = call("second-token");
    assert_eq!(r.status, 503, "{}", r.body);
    assert!(r.body.contains("is empty"), "{}", r.body);
    std::fs::remove_file(&file).expect("remove the file");
    let r = call("second-token");
    assert_eq!(r.status, 503, "{}", r.body);
    assert!(
        r.body.contains("cannot read the admin token file"),
        "{}",
        r.body
    );
    // Reads stay open, and nothing changed.
    let status = node.status();
    assert_eq!(status.epoch, 1, "{status:?}");
    assert!(!status.fenced);
}
