use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(
    name = "cairn-operator",
    version,
    about = "Runs cairn clusters on Kubernetes"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Print the CRDs as YAML, or write one file per CRD into --dir.
    Crd {
        #[arg(long)]
        dir: Option<PathBuf>,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Crd { dir } => write_crds(dir),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("cairn-operator: {e}");
            ExitCode::FAILURE
        }
    }
}

fn write_crds(dir: Option<PathBuf>) -> Result<(), Box<dyn std::error::Error>> {
    use cairn_operator::crd::yaml;
    match dir {
        None => print!("{}", yaml::crd_stream()?),
        Some(dir) => {
            std::fs::create_dir_all(&dir)?;
            for (file, doc) in yaml::crd_files()? {
                std::fs::write(dir.join(file), doc)?;
            }
        }
    }
    Ok(())
}
