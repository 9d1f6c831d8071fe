//! `elect NAME PROPOSAL` / `elect -l NAME`: etcdctl's elect, through the Election service.
//! Campaigning prints the leader key (as `get` prints it) once elected and leads until
//! ^C/SIGTERM, then resigns; `-l` prints the leader each time it changes.
use std::ffi::OsString;

use clap::Args;

use super::lock::{Interrupts, Session};
use super::{emit, exit, CliError, Context};
use crate::client::Client;
use crate::proto::etcdserverpb::RangeRequest;
use crate::proto::v3electionpb::election_client::ElectionClient;
use crate::proto::v3electionpb::{CampaignRequest, LeaderRequest, ResignRequest};

#[derive(Debug, Clone, Args)]
pub struct ElectArgs {
    /// <election-name> [proposal]
    #[arg(value_name = "ELECTION-NAME [PROPOSAL]")]
    pub args: Vec<OsString>,
    /// Observation mode.
    #[arg(short = 'l', long, num_args = 0..=1, require_equals = true, default_missing_value = "true", default_value = "false", value_parser = clap::builder::BoolishValueParser::new())]
    pub listen: bool,
    /// Timeout for session (seconds); etcdctl has no flag and uses clientv3's default, 60.
    #[arg(long, default_value_t = 60)]
    pub ttl: i64,
}

fn election_client(client: &Client) -> ElectionClient<crate::client::Transport> {
    ElectionClient::new(client.channel()).max_decoding_message_size(i32::MAX as usize)
}

pub async fn run(ctx: &Context, args: ElectArgs) -> anyhow::Result<i32> {
    if args.args.len() != 1 && args.args.len() != 2 {
        return Err(CliError::bad_args(
            "elect takes one election name argument and an optional proposal argument",
        )
        .into());
    }
    let name = args.args[0].as_encoded_bytes().to_vec();
    if args.listen {
        return observe(ctx, name).await;
    }
    let Some(proposal) = args.args.get(1) else {
        return Err(CliError::bad_args("no proposal argument but -l not set").into());
    };
    campaign(ctx, name, proposal.as_encoded_bytes().to_vec(), args.ttl).await
}

async fn observe(ctx: &Context, name: Vec<u8>) -> anyhow::Result<i32> {
    let mut interrupts = Interrupts::install()?;
    let client = ctx.connect().await?;
    let mut elections = election_client(&client);
    let stream = tokio::select! {
        r = elections.observe(LeaderRequest { name }) => r,
        _ = interrupts.recv() => return Ok(exit::SUCCESS),
    };
    let mut stream = stream.map_err(|s| CliError::from_status(&s))?.into_inner();
    let printer = ctx.printer();
    loop {
        let next = tokio::select! {
            m = stream.message() => m,
            _ = interrupts.recv() => return Ok(exit::SUCCESS),
        };
        match next {
            Ok(Some(resp)) => {
                // etcdctl prints each leader as a one-key `get` response.
                let as_get = crate::proto::etcdserverpb::RangeResponse {
                    header: resp.header,
                    kvs: resp.kv.into_iter().collect(),
                    more: false,
                    count: 1,
                };
                emit(&printer.get(&as_get)?)?;
            }
            Ok(None) | Err(_) => {
                return Err(CliError::new(exit::ERROR, "elect: observer lost").into())
            }
        }
    }
}

async fn campaign(ctx: &Context, name: Vec<u8>, value: Vec<u8>, ttl: i64) -> anyhow::Result<i32> {
    let mut interrupts = Interrupts::install()?;
    let client = ctx.connect().await?;
    let session = Session::start(ctx, &client, ttl).await?;
    let mut elections = election_client(&client);
    // No deadline: waiting to be elected is the point. ^C abandons the request, and the server
    // withdraws the candidacy when it sees the request cancelled.
    let attempt = elections.campaign(CampaignRequest {
        name,
        lease: session.lease,
        value,
    });
    let won = tokio::select! {
        r = attempt => r,
        _ = interrupts.recv() => {
            session.close(ctx).await;
            return Err(CliError::new(exit::ERROR, "context canceled").into());
        }
        _ = session.expired() => {
            return Err(CliError::new(exit::ERROR, "elect: session expired").into());
        }
    };
    let won = match won {
        Ok(r) => r.into_inner(),
        Err(status) => {
            session.close(ctx).await;
            return Err(CliError::from_status(&status).into());
        }
    };
    let leader = won.leader.unwrap_or_default();
    let got = ctx
        .call(client.kv().range(ctx.request(RangeRequest {
            key: leader.key.clone(),
            ..Default::default()
        })))
        .await?;
    emit(&ctx.printer().get(&got)?)?;
    tokio::select! {
        _ = interrupts.recv() => {
            let resigned = ctx
                .call(election_client(&client).resign(ctx.request(ResignRequest {
                    leader: Some(leader),
                })))
                .await;
            session.close(ctx).await;
            resigned?;
            Ok(exit::SUCCESS)
        }
        _ = session.expired() => Err(CliError::new(exit::ERROR, "elect: session expired").into()),
    }
}
