//! The client side of the `cairn` binary: etcdctl-like subcommands (owned by the CLI work).
use clap::{Args, Subcommand};

/// Options every client subcommand shares (etcdctl's global flags).
#[derive(Debug, Clone, Args)]
pub struct GlobalArgs {
    /// gRPC endpoints, comma separated.
    #[arg(long, global = true, value_delimiter = ',', default_value = "127.0.0.1:2379", env = "ETCDCTL_ENDPOINTS")]
    pub endpoints: Vec<String>,
}

/// Client subcommands.
#[derive(Debug, Subcommand)]
pub enum ClientCommand {}

/// Runs one client subcommand; returns the process exit code.
pub async fn run(_global: GlobalArgs, command: ClientCommand) -> anyhow::Result<i32> {
    match command {}
}
