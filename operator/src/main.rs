//! `rstore-operator`: the Kubernetes controller and its offline tools.

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
    },
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
        } => {
            init_tracing(&log_level, log_json);
            return match run(listen, watch_namespace, node_image, admin_timeout_ms) {
                Ok(()) => ExitCode::SUCCESS,
                Err(err) => {
                    tracing::error!(%err, "operator stopped");
                    ExitCode::FAILURE
                }
            };
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
    let builder = tracing_subscriber::fmt().with_env_filter(filter);
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
) -> Result<(), String> {
    use rstore_operator::controller::{self, Context, Settings};
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
        },
    ));
    let listener = tokio::net::TcpListener::bind(listen)
        .await
        .map_err(|e| format!("cannot listen on {listen}: {e}"))?;
    tracing::info!(%listen, namespace = ?watch_namespace, "rstore-operator starting");
    let server = axum::serve(listener, rstore_operator::http::router(metrics));
    tokio::select! {
        () = controller::run(ctx, watch_namespace) => {
            tracing::info!("controller stopped");
            Ok(())
        }
        result = server => result.map_err(|e| format!("HTTP server failed: {e}")),
    }
}
