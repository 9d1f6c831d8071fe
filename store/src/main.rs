//! The `cairn` binary: `cairn serve` runs a member; every other subcommand is a client.
use clap::{Parser, Subcommand};

use cairn_store::cli;

#[derive(Parser)]
#[command(name = "cairn", version, about = "A strongly consistent key-value store that speaks etcd's v3 API")]
struct Cli {
    #[command(flatten)]
    global: cli::GlobalArgs,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    #[command(flatten)]
    Client(cli::ClientCommand),
}

#[tokio::main]
async fn main() {
    let args = Cli::parse();
    let code = match args.command {
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
