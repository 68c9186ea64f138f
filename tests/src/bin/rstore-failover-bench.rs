//! `rstore-failover-bench`: how fast `rstore-operator local` fails over and
//! what it loses, measured from a client's point of view. `bench/failover.sh`
//! is the entry point (it builds release binaries and sets
//! `RSTORE_OPERATOR_BIN` / `RSTORE_NODE_BIN`).
//!
//! One cluster per invocation, `--runs` failovers in a row, writers through
//! the leader endpoint all along (unique keys, every acknowledged one
//! recorded). Each run: the cluster settled, a second of writes, then the
//! fault on the leader:
//! - `--fault kill`: `kill -9` (the operator sees the process exit);
//! - `--fault stop`: `SIGSTOP` (found only by failed probes), `SIGCONT`
//!   once a new leader serves, so it rejoins as a follower;
//! - `--fault crash` (with `-- --netns`, root): the machine dies: its link
//!   goes down (`rstore-operator partition`) and then `kill -9`, so what
//!   the leader had sent but the followers not yet received is gone, as in
//!   a power cut (a plain `kill -9` lets the kernel deliver the dead
//!   process's socket buffers); healed once a new leader serves;
//! - `--fault crash-behind` (netns): both followers are cut off for
//!   `--behind-ms` (an async leader goes on acknowledging alone), then the
//!   leader crashes as they come back: the classic async loss, to compare
//!   with the `lostBytes` the brain reports.
//!
//! Printed per run: kill -> first write acknowledged through the leader
//! endpoint (a write sent after the fault), the brain's phases from
//! `cluster.json` `lastFailover`, and acknowledged writes lost (acknowledged
//! before the fault, absent from the new leader). Then the medians, and a
//! final check of every acknowledged key on the final leader. In async mode
//! each run also converts the reported `lostBytes` into writes with the
//! average log bytes per SET (leader offset growth / acknowledged writes).
//!
//! Usage: `rstore-failover-bench [--fault kill|stop|crash|crash-behind]
//! [--behind-ms MS] [--seed N] [--runs N] [--clients N] [--label TEXT] [--
//! <rstore-operator local flags>]`.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use rstore_e2e::local::{LocalCluster, Workload, missing};
use rstore_testkit::{Admin, alive, poll_until, signal, wait_until};
use serde_json::Value;

const SETTLE: Duration = Duration::from_secs(60);

#[derive(Clone, Copy, PartialEq, Eq)]
enum Fault {
    Kill,
    Stop,
    Crash,
    CrashBehind,
}

struct Args {
    fault: Fault,
    runs: usize,
    clients: usize,
    label: String,
    /// Seed of the random pause before each fault.
    seed: u64,
    /// `crash-behind`: how long the followers are cut off first.
    behind_ms: u64,
    flags: Vec<String>,
}

fn usage() -> ! {
    eprintln!(
        "usage: rstore-failover-bench [--fault kill|stop|crash|crash-behind] [--behind-ms MS] [--seed N] [--runs N] [--clients N] [--label TEXT] [-- <rstore-operator local flags>]"
    );
    std::process::exit(2)
}

fn parse_args() -> Args {
    let mut args = Args {
        fault: Fault::Kill,
        runs: 10,
        clients: 4,
        label: String::new(),
        seed: 1,
        behind_ms: 300,
        flags: Vec::new(),
    };
    let mut it = std::env::args().skip(1);
    while let Some(a) = it.next() {
        let mut value = || it.next().unwrap_or_else(|| usage());
        match a.as_str() {
            "--fault" => {
                args.fault = match value().as_str() {
                    "kill" => Fault::Kill,
                    "stop" => Fault::Stop,
                    "crash" => Fault::Crash,
                    "crash-behind" => Fault::CrashBehind,
                    _ => usage(),
                }
            }
            "--runs" => args.runs = value().parse().unwrap_or_else(|_| usage()),
            "--clients" => args.clients = value().parse().unwrap_or_else(|_| usage()),
            "--label" => args.label = value(),
            "--seed" => args.seed = value().parse().unwrap_or_else(|_| usage()),
            "--behind-ms" => args.behind_ms = value().parse().unwrap_or_else(|_| usage()),
            "--" => {
                args.flags = it.by_ref().collect();
                break;
            }
            _ => usage(),
        }
    }
    if args.runs == 0 || args.clients == 0 {
        usage();
    }
    args
}

/// One run's figures.
struct Run {
    old: String,
    new: String,
    /// Fault -> first write acknowledged through the leader endpoint.
    first_write_ms: f64,
    phases: Phases,
    lost_writes: usize,
    lost_bytes: u64,
}

#[derive(Default, Clone, Copy)]
struct Phases {
    detect: u64,
    fence: u64,
    promote: u64,
    repoint: u64,
    relabel: u64,
    total: u64,
}

fn phases(record: &Value) -> Phases {
    let ms = |key: &str| record[key].as_u64().unwrap_or(0);
    Phases {
        detect: ms("detectMs"),
        fence: ms("fenceMs"),
        promote: ms("promoteMs"),
        repoint: ms("repointMs"),
        relabel: ms("relabelMs"),
        total: ms("totalMs"),
    }
}

fn median(mut values: Vec<f64>) -> f64 {
    if values.is_empty() {
        return 0.0;
    }
    values.sort_by(f64::total_cmp);
    let mid = values.len() / 2;
    if values.len() % 2 == 1 {
        values[mid]
    } else {
        (values[mid - 1] + values[mid]) / 2.0
    }
}

/// `rstore-operator partition|heal <member>`, or exit with its error.
fn net_tool(cluster: &LocalCluster, what: &str, member: &str) {
    let out = cluster.tool(&[what, member]);
    if !out.status.success() {
        eprintln!(
            "rstore-failover-bench: {what} {member} failed (crash faults need a cluster started with -- --netns, as root): {}",
            String::from_utf8_lossy(&out.stderr).trim()
        );
        std::process::exit(2);
    }
}

/// The leader's log end (`/status` `offsets.appended`).
fn leader_offset(cluster: &LocalCluster, leader: &str) -> Option<u64> {
    Admin::new(cluster.admin_addr(leader))
        .status()
        .ok()
        .map(|s| s.offsets.appended)
}

fn main() {
    let args = parse_args();
    let fault_name = match args.fault {
        Fault::Kill => "kill -9",
        Fault::Stop => "SIGSTOP",
        Fault::Crash => "crash (link down + kill -9)",
        Fault::CrashBehind => "crash behind (followers cut off, then leader crash)",
    };
    let tmp = match tempfile::tempdir() {
        Ok(t) => t,
        Err(e) => {
            eprintln!("rstore-failover-bench: cannot make a temporary dir: {e}");
            std::process::exit(1);
        }
    };
    let flags: Vec<&str> = args.flags.iter().map(String::as_str).collect();
    // RSTORE_BENCH_KEEP=1 keeps the data dirs and logs for a look.
    let dir = if std::env::var_os("RSTORE_BENCH_KEEP").is_some() {
        let kept = tmp.keep();
        eprintln!("keeping {}", kept.display());
        kept
    } else {
        tmp.path().to_path_buf()
    };
    let mut cluster = LocalCluster::start(&dir.join("c"), 3, &flags);
    let (leader, _) = cluster.wait_settled(SETTLE);
    let mode = cluster.must_state()["mode"]
        .as_str()
        .unwrap_or("?")
        .to_string();
    let label = if args.label.is_empty() {
        format!("{fault_name}, {mode}")
    } else {
        args.label.clone()
    };
    println!(
        "== {label}: {} runs, {} writers through the leader endpoint {}, operator flags: {}",
        args.runs,
        args.clients,
        cluster.listen(),
        if flags.is_empty() {
            "(defaults)".to_string()
        } else {
            flags.join(" ")
        }
    );
    let workload = Workload::start(cluster.listen(), args.clients);
    // Log bytes per acknowledged SET, from a steady second of writes.
    wait_until(SETTLE, "first writes", || {
        (workload.count() > 100).then_some(())
    });
    let (o1, c1) = (leader_offset(&cluster, &leader), workload.count());
    std::thread::sleep(Duration::from_secs(1));
    let (o2, c2) = (leader_offset(&cluster, &leader), workload.count());
    let bytes_per_write = match (o1, o2) {
        (Some(a), Some(b)) if c2 > c1 && b > a => (b - a) as f64 / (c2 - c1) as f64,
        _ => 0.0,
    };
    println!(
        "   {} writes/s before the faults; {bytes_per_write:.1} log bytes per acknowledged SET",
        c2 - c1
    );

    let mut rng = StdRng::seed_from_u64(args.seed);
    let mut runs: Vec<Run> = Vec::new();
    let mut lost_so_far = 0usize;
    for n in 1..=args.runs {
        let (old, epoch) = cluster.wait_settled(SETTLE);
        // A second (and a random part of a probe period, so the fault does
        // not always fall at the same point of the operator's probe cycle)
        // of steady writes before each fault.
        let before = workload.count();
        std::thread::sleep(Duration::from_millis(1000 + rng.random_range(0..500)));
        if workload.count() <= before {
            eprintln!("   run {n}: no write acknowledged in the second before the fault");
        }
        let pid = wait_until(SETTLE, "the leader's pid", || {
            cluster.member_pid(&old).filter(|p| alive(*p))
        });
        let followers: Vec<String> = cluster
            .member_names()
            .into_iter()
            .filter(|m| *m != old)
            .collect();
        let fault_at = match args.fault {
            // The clock starts once the signal is sent (`kill` returned):
            // a write sent before may still be acknowledged by the old
            // leader, one sent after may not.
            Fault::Kill => {
                signal(pid, "-9");
                Instant::now()
            }
            Fault::Stop => {
                signal(pid, "-STOP");
                Instant::now()
            }
            Fault::Crash => {
                net_tool(&cluster, "partition", &old);
                signal(pid, "-9");
                Instant::now()
            }
            Fault::CrashBehind => {
                for f in &followers {
                    net_tool(&cluster, "partition", f);
                }
                std::thread::sleep(Duration::from_millis(args.behind_ms));
                net_tool(&cluster, "partition", &old);
                signal(pid, "-9");
                let at = Instant::now();
                for f in &followers {
                    net_tool(&cluster, "heal", f);
                }
                at
            }
        };
        let first = wait_until(SETTLE, "a write acknowledged after the fault", || {
            workload.first_ack_sent_after(fault_at)
        });
        let first_write_ms = first.duration_since(fault_at).as_secs_f64() * 1000.0;
        let (new, _) = wait_until(SETTLE, "a new settled leader", || {
            cluster
                .settled_leader()
                .filter(|(l, e)| *l != old && *e > epoch)
        });
        match args.fault {
            Fault::Stop => signal(pid, "-CONT"),
            Fault::Crash | Fault::CrashBehind => net_tool(&cluster, "heal", &old),
            Fault::Kill => {}
        }
        // In async mode the old leader, back with its log, corrects the
        // reported loss before it is repointed: read it once it follows.
        let _ = poll_until(SETTLE, || {
            let m = cluster.member(&old);
            (m["role"] == "follower" && m["epoch"].as_u64() > Some(epoch)).then_some(())
        });
        let record = cluster.must_state()["lastFailover"].clone();
        let lost_bytes = record["lostBytes"].as_u64().unwrap_or(0);
        // Everything acknowledged before the fault must be on the new
        // leader; what is not (and was not lost in an earlier run) is this
        // run's loss.
        let before_fault = workload.acked_before(Some(fault_at));
        let absent = missing(cluster.data_addr(&new), &before_fault).len();
        let lost_writes = absent.saturating_sub(lost_so_far);
        lost_so_far = lost_so_far.max(absent);
        let run = Run {
            old: old.clone(),
            new: new.clone(),
            first_write_ms,
            phases: phases(&record),
            lost_writes,
            lost_bytes,
        };
        let p = run.phases;
        println!(
            "   run {n:>2}: {fault_name} {} -> {} ({}): first write acknowledged after {:>6.0} ms | detect {} fence {} promote {} repoint {} relabel {} total {} ms | lost {} writes, lostBytes {}{}",
            run.old,
            run.new,
            record["reason"].as_str().unwrap_or("?"),
            run.first_write_ms,
            p.detect,
            p.fence,
            p.promote,
            p.repoint,
            p.relabel,
            p.total,
            run.lost_writes,
            run.lost_bytes,
            if bytes_per_write > 0.0 && run.lost_bytes > 0 {
                format!(" (= {:.1} writes)", run.lost_bytes as f64 / bytes_per_write)
            } else {
                String::new()
            }
        );
        runs.push(run);
    }

    let acked = workload.finish();
    let (leader, _) = cluster.wait_settled(SETTLE);
    let final_lost = missing(cluster.data_addr(&leader), &acked);
    let col = |f: fn(&Run) -> f64| median(runs.iter().map(f).collect());
    println!(
        "== {label}: median of {} runs: first write acknowledged {:.0} ms after the fault | detect {:.0} fence {:.0} promote {:.0} repoint {:.0} relabel {:.0} total {:.0} ms",
        runs.len(),
        col(|r| r.first_write_ms),
        col(|r| r.phases.detect as f64),
        col(|r| r.phases.fence as f64),
        col(|r| r.phases.promote as f64),
        col(|r| r.phases.repoint as f64),
        col(|r| r.phases.relabel as f64),
        col(|r| r.phases.total as f64),
    );
    let min_max = |f: fn(&Run) -> f64| {
        let v: Vec<f64> = runs.iter().map(f).collect();
        (
            v.iter().copied().fold(f64::INFINITY, f64::min),
            v.iter().copied().fold(0.0, f64::max),
        )
    };
    let (lo, hi) = min_max(|r| r.first_write_ms);
    let lost_bytes: u64 = runs.iter().map(|r| r.lost_bytes).sum();
    let lost_writes: usize = runs.iter().map(|r| r.lost_writes).sum();
    println!(
        "== {label}: first write range {lo:.0}..{hi:.0} ms; {} writes acknowledged in all, lost over the runs: {lost_writes} writes (reported lostBytes {lost_bytes}{}); final check on leader {leader}: {} of {} acknowledged keys missing",
        acked.len(),
        if bytes_per_write > 0.0 {
            format!(" = {:.1} writes", lost_bytes as f64 / bytes_per_write)
        } else {
            String::new()
        },
        final_lost.len(),
        acked.len()
    );
    let per_run: BTreeMap<usize, (usize, u64)> = runs
        .iter()
        .enumerate()
        .map(|(i, r)| (i + 1, (r.lost_writes, r.lost_bytes)))
        .collect();
    if lost_writes > 0 || lost_bytes > 0 {
        println!("== {label}: per run (lost writes, lostBytes): {per_run:?}");
    }
    drop(cluster);
}
