//! `rstore-operator`: the Kubernetes controller, its offline tools, and
//! local mode (`local`, `status`, `switchover`, `partition`, `heal`): a
//! self-healing cluster of node processes on this machine run by the same
//! failover brain.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use clap::{Parser, Subcommand};

#[derive(Parser, Debug)]
#[command(
    name = "rstore-operator",
    version,
    about = "Operator for rstore clusters"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Print the ReplicatedStore CustomResourceDefinition as YAML.
    Crd,
    /// Print the objects the operator would create for a ReplicatedStore
    /// manifest (YAML; `-` reads standard input).
    Render {
        file: PathBuf,
        /// Node image used when the manifest has no spec.image.
        #[arg(long, env = "RSTORE_NODE_IMAGE", default_value = "rstore:latest")]
        node_image: String,
    },
    /// Run the controller (in a cluster, or against the current kubeconfig).
    Run {
        /// Address of the /metrics and /healthz server.
        #[arg(long, env = "RSTORE_OPERATOR_LISTEN", default_value = "0.0.0.0:8080")]
        listen: SocketAddr,
        /// Watch only this namespace (all namespaces when unset).
        #[arg(long, env = "RSTORE_WATCH_NAMESPACE")]
        watch_namespace: Option<String>,
        /// Node image for stores without spec.image.
        #[arg(long, env = "RSTORE_NODE_IMAGE")]
        node_image: Option<String>,
        /// Deadline of each admin API request to a member, in milliseconds.
        #[arg(long, env = "RSTORE_ADMIN_TIMEOUT_MS", default_value_t = 2000)]
        admin_timeout_ms: u64,
        /// Log filter (tracing env-filter syntax), e.g. info or rstore_operator=debug.
        #[arg(long, env = "RSTORE_LOG", default_value = "info")]
        log_level: String,
        /// Log as JSON lines instead of text.
        #[arg(long, env = "RSTORE_LOG_JSON", default_value_t = false)]
        log_json: bool,
        /// Run only while holding a coordination.k8s.io Lease, so several
        /// replicas can run: one acts, the others stand by.
        #[arg(long, env = "RSTORE_LEADER_ELECT", default_value_t = false)]
        leader_elect: bool,
        /// Name of that Lease.
        #[arg(long, env = "RSTORE_LEASE_NAME", default_value = "rstore-operator")]
        lease_name: String,
        /// The operator's own namespace: where its Lease is, and the only
        /// one the stores' NetworkPolicies admit the operator from.
        #[arg(long, env = "POD_NAMESPACE", default_value = "default")]
        lease_namespace: String,
        /// This replica's identity in the Lease (its pod name).
        #[arg(long, env = "POD_NAME")]
        identity: Option<String>,
        /// Seconds a holder may go without renewing before a standby takes over.
        #[arg(long, env = "RSTORE_LEASE_SECONDS", default_value_t = 15)]
        lease_seconds: u64,
        /// Give each store a NetworkPolicy: its replication and admin ports
        /// admit only its members and the operator's pods.
        #[arg(long, env = "RSTORE_NETWORK_POLICY", default_value_t = false)]
        network_policy: bool,
    },
    /// Run a self-healing cluster of rstore-node processes on this machine:
    /// the leader endpoint (--listen) follows failovers, the read endpoint
    /// (--read-listen) spreads reads over followers. Ctrl-C stops it; run it
    /// again on the same --data-dir to resume the same cluster.
    Local(Box<LocalArgs>),
    /// Show a local cluster: members, roles, offsets, lag and the last
    /// failover's phases.
    Status {
        /// Data dir of the local cluster.
        #[arg(long, default_value = "./rstore-local")]
        data_dir: PathBuf,
        /// Print only the leader's process id (for `kill -9 $(...)`).
        #[arg(long)]
        leader_pid: bool,
    },
    /// Cut a member of a `local --netns` cluster off the network: its link
    /// to the bridge goes down, so neither the operator nor the other
    /// members reach it (and it reaches none of them) until `heal`.
    Partition {
        /// The member to cut off (e.g. member-0; `status` lists them).
        member: String,
        /// Data dir of the local cluster.
        #[arg(long, default_value = "./rstore-local")]
        data_dir: PathBuf,
    },
    /// Restore the network link of a member cut off by `partition`.
    Heal {
        /// The member to reconnect.
        member: String,
        /// Data dir of the local cluster.
        #[arg(long, default_value = "./rstore-local")]
        data_dir: PathBuf,
    },
    /// Move a local cluster's leadership to another member (planned, no
    /// acknowledged write lost) and wait for it.
    Switchover {
        /// Member to promote [default: the most caught-up follower].
        #[arg(long)]
        to: Option<String>,
        /// Data dir of the local cluster.
        #[arg(long, default_value = "./rstore-local")]
        data_dir: PathBuf,
        /// How long to wait for the switchover, in seconds.
        #[arg(long, default_value_t = 30)]
        timeout_secs: u64,
    },
}

#[derive(clap::Args, Debug)]
struct LocalArgs {
    /// Members [default: as recorded in the data dir, else 3].
    #[arg(long)]
    replicas: Option<u32>,
    /// Leader endpoint: clients write here.
    #[arg(long, default_value = "127.0.0.1:6379")]
    listen: SocketAddr,
    /// Read endpoint: round robin over followers.
    #[arg(long, default_value = "127.0.0.1:6380")]
    read_listen: SocketAddr,
    /// Where cluster.json and each member's data and log live.
    #[arg(long, default_value = "./rstore-local")]
    data_dir: PathBuf,
    #[arg(long, default_value = "semi-sync", value_parser = ["async", "semi-sync", "sync"])]
    replication_mode: String,
    /// Semi-sync: follower acks per write (K).
    #[arg(long, default_value_t = 1)]
    sync_replicas: u32,
    /// Milliseconds a write waits for follower acks.
    #[arg(long, default_value_t = 1000)]
    sync_timeout_ms: u64,
    #[arg(long, default_value = "block", value_parser = ["block", "degrade"])]
    on_sync_timeout: String,
    /// Which follower progress counts as an ack [node default: durable].
    #[arg(long, value_parser = ["received", "durable", "applied"])]
    ack_level: Option<String>,
    /// always | batch | interval:MS | never
    #[arg(long, default_value = "batch", value_parser = parse_fsync)]
    fsync: String,
    /// Milliseconds between probes of each member.
    #[arg(long, default_value_t = 500)]
    probe_period_ms: u64,
    /// Deadline of each probe, milliseconds.
    #[arg(long, default_value_t = 300)]
    probe_timeout_ms: u64,
    /// Consecutive failed probes before the leader counts as failed (a
    /// leader whose process exits is failed at once).
    #[arg(long, default_value_t = 3)]
    failure_threshold: u32,
    /// How long a switchover waits for its target to catch up, milliseconds.
    #[arg(long, default_value_t = 10_000)]
    switchover_timeout_ms: u64,
    /// The rstore-node binary [default: next to this program, else on PATH].
    #[arg(long, env = "RSTORE_NODE_BIN")]
    node_bin: Option<PathBuf>,
    /// Password for clients and replication (passed to the nodes by
    /// environment, not on their command line).
    #[arg(long, env = "RSTORE_REQUIREPASS", hide_env_values = true)]
    requirepass: Option<String>,
    /// Run each member in its own network namespace, joined to a bridge
    /// by a veth link (root only), so that `rstore-operator partition` can
    /// cut one off. Members listen on 10.213.X.(ordinal+2), one /24 per
    /// cluster; the endpoints stay on --listen and --read-listen.
    #[arg(long)]
    netns: bool,
    /// Log filter (tracing env-filter syntax).
    #[arg(long, env = "RSTORE_LOG", default_value = "info")]
    log_level: String,
    /// Extra flags for every rstore-node, after `--`.
    #[arg(last = true)]
    node_args: Vec<String>,
}

fn parse_fsync(s: &str) -> Result<String, String> {
    s.parse::<rstore_node::wal::FsyncPolicy>()
        .map(|_| s.to_string())
        .map_err(|e| e.to_string())
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Run {
            listen,
            watch_namespace,
            node_image,
            admin_timeout_ms,
            log_level,
            log_json,
            leader_elect,
            lease_name,
            lease_namespace,
            identity,
            lease_seconds,
            network_policy,
        } => {
            init_tracing(&log_level, log_json);
            let operator_namespace = lease_namespace.clone();
            let lease = leader_elect.then(|| {
                let duration = Duration::from_secs(lease_seconds.max(3));
                rstore_operator::controller::lease::LeaseSettings {
                    namespace: lease_namespace,
                    name: lease_name,
                    identity: identity
                        .unwrap_or_else(|| format!("rstore-operator-{}", std::process::id())),
                    duration,
                    renew_every: duration / 3,
                }
            });
            return match run(
                listen,
                watch_namespace,
                node_image,
                admin_timeout_ms,
                lease,
                network_policy,
                operator_namespace,
            ) {
                Ok(()) => ExitCode::SUCCESS,
                Err(err) => {
                    tracing::error!(%err, "operator stopped");
                    ExitCode::FAILURE
                }
            };
        }
        Command::Local(args) => {
            init_tracing(&args.log_level, false);
            return match run_local(*args) {
                Ok(()) => ExitCode::SUCCESS,
                Err(err) => {
                    tracing::error!("rstore-operator local: {err}");
                    ExitCode::FAILURE
                }
            };
        }
        Command::Status {
            data_dir,
            leader_pid: true,
        } => rstore_operator::local::cli::leader_pid(&data_dir).map(|pid| format!("{pid}\n")),
        Command::Status { data_dir, .. } => {
            runtime().and_then(|rt| rt.block_on(rstore_operator::local::cli::status(&data_dir)))
        }
        Command::Switchover {
            to,
            data_dir,
            timeout_secs,
        } => runtime().and_then(|rt| {
            rt.block_on(rstore_operator::local::cli::switchover(
                &data_dir,
                to.as_deref(),
                Duration::from_secs(timeout_secs),
            ))
            .map(|text| format!("{text}\n"))
        }),
        Command::Partition { member, data_dir } => {
            rstore_operator::local::cli::partition(&data_dir, &member, false)
                .map(|text| format!("{text}\n"))
        }
        Command::Heal { member, data_dir } => {
            rstore_operator::local::cli::partition(&data_dir, &member, true)
                .map(|text| format!("{text}\n"))
        }
        Command::Crd => {
            rstore_operator::crd::crd_yaml().map_err(|e| format!("cannot render the CRD: {e}"))
        }
        Command::Render { file, node_image } => read_input(&file).and_then(|manifest| {
            rstore_operator::render::render(&manifest, Some(&node_image))
                .map_err(|e| format!("{}: {e}", file.display()))
        }),
    };
    match result {
        Ok(yaml) => {
            print!("{yaml}");
            ExitCode::SUCCESS
        }
        Err(err) => {
            eprintln!("error: {err}");
            ExitCode::FAILURE
        }
    }
}

fn runtime() -> Result<tokio::runtime::Runtime, String> {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| format!("cannot start the runtime: {e}"))
}

#[tokio::main]
async fn run_local(args: LocalArgs) -> Result<(), String> {
    use rstore_operator::local::{self, LocalOptions};

    let mut options = LocalOptions::new(args.data_dir);
    options.replicas = args.replicas;
    options.listen = args.listen;
    options.read_listen = args.read_listen;
    options.mode = args.replication_mode.parse()?;
    options.sync_replicas = args.sync_replicas;
    options.sync_timeout_ms = args.sync_timeout_ms;
    options.on_sync_timeout = args.on_sync_timeout;
    options.ack_level = args.ack_level;
    options.fsync = args.fsync;
    options.probe_period = Duration::from_millis(args.probe_period_ms.max(10));
    options.probe_timeout = Duration::from_millis(args.probe_timeout_ms.max(10));
    options.failure_threshold = args.failure_threshold;
    options.switchover_timeout_ms = args.switchover_timeout_ms;
    options.node_bin = args.node_bin;
    options.requirepass = args.requirepass;
    options.node_args = args.node_args;
    options.netns = args.netns;
    local::run(options).await.map_err(|e| e.to_string())
}

fn read_input(file: &PathBuf) -> Result<String, String> {
    if file.as_os_str() == "-" {
        let mut text = String::new();
        std::io::Read::read_to_string(&mut std::io::stdin(), &mut text)
            .map_err(|e| format!("cannot read standard input: {e}"))?;
        return Ok(text);
    }
    std::fs::read_to_string(file).map_err(|e| format!("cannot read {}: {e}", file.display()))
}

fn init_tracing(filter: &str, json: bool) {
    let filter = tracing_subscriber::EnvFilter::try_new(filter)
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stdout()));
    if json {
        builder.json().init();
    } else {
        builder.init();
    }
}

#[tokio::main]
async fn run(
    listen: SocketAddr,
    watch_namespace: Option<String>,
    node_image: Option<String>,
    admin_timeout_ms: u64,
    lease: Option<rstore_operator::controller::lease::LeaseSettings>,
    network_policy: bool,
    operator_namespace: String,
) -> Result<(), String> {
    use rstore_operator::controller::{self, Context, Settings, lease as election};
    use rstore_operator::coordination::HttpNodeAdmin;
    use rstore_operator::metrics::Metrics;

    let client = kube::Client::try_default()
        .await
        .map_err(|e| format!("cannot configure a Kubernetes client: {e}"))?;
    let metrics = Arc::new(Metrics::default());
    let timeout = Duration::from_millis(admin_timeout_ms);
    let admin = Arc::new(HttpNodeAdmin::new(timeout, timeout));
    let ctx = Arc::new(Context::new(
        client,
        metrics.clone(),
        admin,
        Settings {
            default_image: node_image,
            network_policy,
            operator_namespace,
        },
    ));
    let listener = tokio::net::TcpListener::bind(listen)
        .await
        .map_err(|e| format!("cannot listen on {listen}: {e}"))?;
    tracing::info!(%listen, namespace = ?watch_namespace, "rstore-operator starting");
    let server = axum::serve(listener, rstore_operator::http::router(metrics));
    let client = ctx.client.clone();
    // Standing by, the replica still serves /healthz (it is healthy).
    let active = async {
        let renewed_at = match &lease {
            Some(lease) => Some(election::acquire(&client, lease).await),
            None => None,
        };
        tokio::select! {
            () = controller::run(ctx, watch_namespace) => {
                tracing::info!("controller stopped");
                Ok(())
            }
            () = async {
                match (&lease, renewed_at) {
                    (Some(lease), Some(at)) => election::keep(&client, lease, at).await,
                    _ => std::future::pending().await,
                }
            } => Err("lost the operator lease: stopping so a standby can act alone".to_string()),
        }
    };
    tokio::select! {
        result = active => result,
        result = server => result.map_err(|e| format!("HTTP server failed: {e}")),
    }
}
