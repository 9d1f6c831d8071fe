use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use cairn_operator::leader::LeaseConfig;
use cairn_operator::run::{run, Config};
use clap::{Parser, Subcommand, ValueEnum};

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

#[derive(Clone, Copy, ValueEnum)]
enum LogFormat {
    Text,
    Json,
}

#[derive(Subcommand)]
enum Command {
    /// Print the CRDs as YAML, or write one file per CRD into --dir.
    Crd {
        #[arg(long)]
        dir: Option<PathBuf>,
    },
    /// Run the controller.
    Run {
        /// Namespace to watch (repeat or comma-separate); all namespaces when absent.
        #[arg(long = "namespace", env = "WATCH_NAMESPACES", value_delimiter = ',')]
        namespaces: Vec<String>,
        /// Address of /metrics, /healthz and /readyz.
        #[arg(long, env = "LISTEN_ADDRESS", default_value = "0.0.0.0:8080")]
        listen: SocketAddr,
        #[arg(long, env = "LEADER_ELECT", default_value_t = false)]
        leader_elect: bool,
        #[arg(long, env = "LEASE_NAME", default_value = "cairn-operator")]
        lease_name: String,
        /// Namespace of the Lease (the operator's own namespace).
        #[arg(long, env = "POD_NAMESPACE", default_value = "default")]
        lease_namespace: String,
        /// This replica's identity in the Lease and in events.
        #[arg(long, env = "POD_NAME")]
        identity: Option<String>,
        #[arg(long, env = "LOG_FORMAT", value_enum, default_value = "text")]
        log_format: LogFormat,
        /// Log filter, e.g. `info` or `cairn_operator=debug,kube=info`.
        #[arg(long, env = "LOG_LEVEL", default_value = "info")]
        log_level: String,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Crd { dir } => write_crds(dir),
        Command::Run {
            namespaces,
            listen,
            leader_elect,
            lease_name,
            lease_namespace,
            identity,
            log_format,
            log_level,
        } => {
            init_logging(log_format, &log_level);
            let identity =
                identity.unwrap_or_else(|| format!("cairn-operator-{}", std::process::id()));
            let lease = leader_elect.then(|| LeaseConfig {
                namespace: lease_namespace,
                name: lease_name,
                identity: identity.clone(),
                duration: Duration::from_secs(15),
                retry: Duration::from_secs(2),
            });
            let cfg = Config {
                namespaces,
                listen,
                lease,
                instance: Some(identity),
            };
            tokio::runtime::Runtime::new()
                .map_err(|e| Box::new(e) as Box<dyn std::error::Error>)
                .and_then(|rt| rt.block_on(run(cfg)).map_err(Into::into))
        }
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("cairn-operator: {e}");
            ExitCode::FAILURE
        }
    }
}

fn init_logging(format: LogFormat, level: &str) {
    let filter = tracing_subscriber::EnvFilter::try_new(level)
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt().with_env_filter(filter);
    match format {
        LogFormat::Json => builder.json().init(),
        LogFormat::Text => builder.init(),
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
