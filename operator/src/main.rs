//! `rstore-operator`: the Kubernetes controller and its offline tools.

use std::path::PathBuf;
use std::process::ExitCode;

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
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
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
