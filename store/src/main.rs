//! The `cairn` binary: `cairn serve` runs a member; every other subcommand is a client.
use clap::{Parser, Subcommand};
use tracing_subscriber::EnvFilter;

use cairn_store::{cli, server};

#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[derive(Parser)]
#[command(
    name = "cairn",
    version,
    about = "A strongly consistent key-value store that speaks etcd's v3 API"
)]
struct Cli {
    #[command(flatten)]
    global: cli::GlobalArgs,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run a cairn member (etcd's server flags).
    Serve(Box<server::ServeArgs>),
    #[command(flatten)]
    Client(cli::ClientCommand),
}

fn init_logging(level: &str) {
    let filter = EnvFilter::try_from_env("CAIRN_LOG").unwrap_or_else(|_| {
        EnvFilter::new(format!(
            "{level},openraft=warn,sled=warn,h2=warn,tower=warn,hyper=warn"
        ))
    });
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .init();
}

#[tokio::main]
async fn main() {
    let args = Cli::parse();
    let code = match args.command {
        Command::Serve(serve) => {
            init_logging(&serve.log_level);
            #[cfg(feature = "failpoints")]
            cairn_store::failpoints::setup_from_env();
            match server::serve(*serve).await {
                Ok(()) => 0,
                Err(e) => {
                    tracing::error!("{e:#}");
                    eprintln!("Error: {e:#}");
                    1
                }
            }
        }
        Command::Client(cmd) => match cli::run(args.global, cmd).await {
            Ok(code) => code,
            Err(e) => {
                eprintln!("Error: {e:#}");
                1
            }
        },
    };
    std::process::exit(code);
}
