//! `lease grant|revoke|timetolive|list|keep-alive`, printed as etcdctl prints clientv3's lease
//! responses.
//!
//! clientv3 wraps most lease responses in structs that embed `*pb.ResponseHeader`, so their JSON
//! carries the header fields at top level and their protobuf output is the header alone (the
//! header's `Marshal` is the one promoted to the wrapper). Scripts see exactly that, so it is kept.
use std::fmt::Write as _;
use std::time::Duration;

use clap::{Args, Subcommand};
use prost::Message as _;

use super::gofmt::{self, json_bytes, JsonObject};
use super::output::fields_header;
use super::{emit, exit, CliError, Context, OutputFormat};
use crate::proto::etcdserverpb::{
    LeaseGrantRequest, LeaseGrantResponse, LeaseKeepAliveRequest, LeaseKeepAliveResponse,
    LeaseLeasesRequest, LeaseLeasesResponse, LeaseRevokeRequest, LeaseRevokeResponse,
    LeaseTimeToLiveRequest, LeaseTimeToLiveResponse, ResponseHeader,
};

#[derive(Debug, Subcommand)]
pub enum LeaseCommand {
    /// Creates leases.
    Grant(IdArgs),
    /// Revokes leases.
    Revoke(IdArgs),
    /// Get lease information.
    Timetolive(TimeToLiveArgs),
    /// List all active leases.
    List,
    /// Keeps leases alive (renew).
    #[command(name = "keep-alive")]
    KeepAlive(KeepAliveArgs),
}

/// A single positional argument; its count is checked by hand so the messages are etcdctl's.
#[derive(Debug, Args)]
pub struct IdArgs {
    pub args: Vec<String>,
}

#[derive(Debug, Args)]
pub struct TimeToLiveArgs {
    pub args: Vec<String>,
    /// Get keys attached to this lease.
    #[arg(long, num_args = 0..=1, require_equals = true, default_missing_value = "true", default_value = "false", value_parser = clap::builder::BoolishValueParser::new())]
    pub keys: bool,
}

#[derive(Debug, Args)]
pub struct KeepAliveArgs {
    pub args: Vec<String>,
    /// Resets the keep-alive time to its original value and exits immediately.
    #[arg(long, num_args = 0..=1, require_equals = true, default_missing_value = "true", default_value = "false", value_parser = clap::builder::BoolishValueParser::new())]
    pub once: bool,
}

pub async fn run(ctx: &Context, cmd: LeaseCommand) -> anyhow::Result<i32> {
    match cmd {
        LeaseCommand::Grant(a) => grant(ctx, a).await,
        LeaseCommand::Revoke(a) => revoke(ctx, a).await,
        LeaseCommand::Timetolive(a) => time_to_live(ctx, a).await,
        LeaseCommand::List => list(ctx).await,
        LeaseCommand::KeepAlive(a) => keep_alive(ctx, a).await,
    }
}

fn one_arg(args: &[String], message: &str) -> Result<String, CliError> {
    match args {
        [one] => Ok(one.clone()),
        _ => Err(CliError::bad_args(message)),
    }
}

/// etcdctl's `leaseFromArgs`: a lease ID is hexadecimal.
pub fn lease_id(arg: &str) -> Result<i64, CliError> {
    gofmt::parse_int(arg, 16)
        .map_err(|e| CliError::bad_args(format!("bad lease ID arg ({e}), expecting ID in Hex")))
}

async fn grant(ctx: &Context, a: IdArgs) -> anyhow::Result<i32> {
    let ttl = one_arg(&a.args, "lease grant command needs TTL argument")?;
    let ttl =
        gofmt::parse_int(&ttl, 10).map_err(|e| CliError::bad_args(format!("bad TTL ({e})")))?;
    let client = ctx.connect().await?;
    let req = LeaseGrantRequest { ttl, id: 0 };
    let resp = ctx
        .call(client.lease().lease_grant(ctx.request(req)))
        .await
        .map_err(|e| {
            CliError::new(
                exit::ERROR,
                format!("failed to grant lease ({})", e.message),
            )
        })?;
    emit(&format_grant(ctx.global.write_out, &resp)?)?;
    Ok(exit::SUCCESS)
}

async fn revoke(ctx: &Context, a: IdArgs) -> anyhow::Result<i32> {
    let id = lease_id(&one_arg(&a.args, "lease revoke command needs 1 argument")?)?;
    let client = ctx.connect().await?;
    let resp = ctx
        .call(
            client
                .lease()
                .lease_revoke(ctx.request(LeaseRevokeRequest { id })),
        )
        .await
        .map_err(|e| {
            CliError::new(
                exit::ERROR,
                format!("failed to revoke lease ({})", e.message),
            )
        })?;
    emit(&format_revoke(ctx.global.write_out, id, &resp)?)?;
    Ok(exit::SUCCESS)
}

async fn time_to_live(ctx: &Context, a: TimeToLiveArgs) -> anyhow::Result<i32> {
    let arg = one_arg(
        &a.args,
        "lease timetolive command needs lease ID as argument",
    )?;
    let id = lease_id(&arg)?;
    let client = ctx.connect().await?;
    let req = LeaseTimeToLiveRequest { id, keys: a.keys };
    let resp = ctx
        .call(client.lease().lease_time_to_live(ctx.request(req)))
        .await
        .map_err(|e| CliError::new(exit::BAD_CONNECTION, e.message))?;
    emit(&format_time_to_live(ctx.global.write_out, &resp, a.keys)?)?;
    Ok(exit::SUCCESS)
}

async fn list(ctx: &Context) -> anyhow::Result<i32> {
    let client = ctx.connect().await?;
    let resp = ctx
        .call(
            client
                .lease()
                .lease_leases(ctx.request(LeaseLeasesRequest {})),
        )
        .await
        .map_err(|e| {
            CliError::new(
                exit::ERROR,
                format!("failed to list leases ({})", e.message),
            )
        })?;
    emit(&format_leases(ctx.global.write_out, &resp)?)?;
    Ok(exit::SUCCESS)
}

/// clientv3 sends a keep-alive a third of the TTL after the previous answer, checking twice a
/// second; the stream ends when the server reports the lease gone (TTL <= 0).
async fn keep_alive(ctx: &Context, a: KeepAliveArgs) -> anyhow::Result<i32> {
    let id = lease_id(&one_arg(
        &a.args,
        "lease keep-alive command needs lease ID as argument",
    )?)?;
    let client = ctx.connect().await?;
    let (tx, rx) = tokio::sync::mpsc::channel(4);
    // Queued before the call: grpc-go sends no response headers until its first answer.
    let _ = tx.send(LeaseKeepAliveRequest { id }).await;
    let mut responses = client
        .lease()
        .lease_keep_alive(tokio_stream::wrappers::ReceiverStream::new(rx))
        .await
        .map_err(|s| CliError::new(exit::BAD_CONNECTION, super::status_message(&s)))?
        .into_inner();
    let format = ctx.global.write_out;
    loop {
        let resp = match responses.message().await {
            Ok(Some(r)) => r,
            Ok(None) => break,
            Err(s) => {
                return Err(CliError::new(exit::BAD_CONNECTION, super::status_message(&s)).into())
            }
        };
        if resp.ttl <= 0 {
            if a.once {
                return Err(CliError::new(
                    exit::BAD_CONNECTION,
                    "etcdserver: requested lease not found",
                )
                .into());
            }
            break;
        }
        emit(&format_keep_alive(format, &resp)?)?;
        if a.once {
            return Ok(exit::SUCCESS);
        }
        let wait = Duration::from_millis(u64::try_from(resp.ttl).unwrap_or(1) * 1000 / 3);
        tokio::time::sleep(wait.max(Duration::from_millis(500))).await;
        if tx.send(LeaseKeepAliveRequest { id }).await.is_err() {
            break;
        }
    }
    if format == OutputFormat::Simple {
        emit(format!("lease {id:016x} expired or revoked.\n").as_bytes())?;
    }
    Ok(exit::SUCCESS)
}

/// The header's fields at the top level of a JSON object (Go's embedded-struct encoding).
fn flat_header(h: &Option<ResponseHeader>) -> JsonObject {
    let h = h.unwrap_or_default();
    JsonObject::new()
        .uint("cluster_id", h.cluster_id)
        .uint("member_id", h.member_id)
        .int("revision", h.revision)
        .uint("raft_term", h.raft_term)
}

fn header_pb(h: &Option<ResponseHeader>) -> Vec<u8> {
    h.unwrap_or_default().encode_to_vec()
}

fn line(s: String) -> Vec<u8> {
    format!("{s}\n").into_bytes()
}

pub fn format_grant(f: OutputFormat, r: &LeaseGrantResponse) -> Result<Vec<u8>, CliError> {
    Ok(match f {
        OutputFormat::Simple => line(format!("lease {:016x} granted with TTL({}s)", r.id, r.ttl)),
        OutputFormat::Json => line(
            flat_header(&r.header)
                .raw("ID", &r.id.to_string())
                .raw("TTL", &r.ttl.to_string())
                .raw("Error", &gofmt::json_string(&r.error))
                .finish(),
        ),
        OutputFormat::Fields => {
            let mut out = String::new();
            fields_header(&mut out, &r.header);
            let _ = writeln!(out, "\"ID\" : {}\n\"TTL\" : {}", r.id, r.ttl);
            out.into_bytes()
        }
        OutputFormat::Protobuf => header_pb(&r.header),
        OutputFormat::Table => return Err(super::output::unsupported(f)),
    })
}

pub fn format_revoke(
    f: OutputFormat,
    id: i64,
    r: &LeaseRevokeResponse,
) -> Result<Vec<u8>, CliError> {
    Ok(match f {
        OutputFormat::Simple => line(format!("lease {id:016x} revoked")),
        OutputFormat::Json => line(
            JsonObject::new()
                .object("header", super::output::json_header(&r.header))
                .finish(),
        ),
        OutputFormat::Fields => {
            let mut out = String::new();
            fields_header(&mut out, &r.header);
            out.into_bytes()
        }
        OutputFormat::Protobuf => r.encode_to_vec(),
        OutputFormat::Table => return Err(super::output::unsupported(f)),
    })
}

pub fn format_keep_alive(f: OutputFormat, r: &LeaseKeepAliveResponse) -> Result<Vec<u8>, CliError> {
    Ok(match f {
        OutputFormat::Simple => line(format!(
            "lease {:016x} keepalived with TTL({})",
            r.id, r.ttl
        )),
        OutputFormat::Json => line(
            flat_header(&r.header)
                .raw("ID", &r.id.to_string())
                .raw("TTL", &r.ttl.to_string())
                .finish(),
        ),
        OutputFormat::Fields => {
            let mut out = String::new();
            fields_header(&mut out, &r.header);
            let _ = writeln!(out, "\"ID\" : {}\n\"TTL\" : {}", r.id, r.ttl);
            out.into_bytes()
        }
        OutputFormat::Protobuf => header_pb(&r.header),
        OutputFormat::Table => return Err(super::output::unsupported(f)),
    })
}

pub fn format_time_to_live(
    f: OutputFormat,
    r: &LeaseTimeToLiveResponse,
    keys: bool,
) -> Result<Vec<u8>, CliError> {
    Ok(match f {
        OutputFormat::Simple => {
            if r.granted_ttl == 0 && r.ttl == -1 {
                return Ok(line(format!("lease {:016x} already expired", r.id)));
            }
            let mut txt = format!(
                "lease {:016x} granted with TTL({}s), remaining({}s)",
                r.id, r.granted_ttl, r.ttl
            );
            if keys {
                // Go's %v of a []string: [a b c], the keys as raw bytes.
                let names: Vec<String> = r
                    .keys
                    .iter()
                    .map(|k| String::from_utf8_lossy(k).into_owned())
                    .collect();
                let _ = write!(txt, ", attached keys([{}])", names.join(" "));
            }
            line(txt)
        }
        OutputFormat::Json => {
            let keys = if r.keys.is_empty() {
                "null".to_string()
            } else {
                let items: Vec<String> = r.keys.iter().map(|k| json_bytes(k)).collect();
                format!("[{}]", items.join(","))
            };
            line(
                flat_header(&r.header)
                    .raw("id", &r.id.to_string())
                    .raw("ttl", &r.ttl.to_string())
                    .raw("granted-ttl", &r.granted_ttl.to_string())
                    .raw("keys", &keys)
                    .finish(),
            )
        }
        OutputFormat::Fields => {
            let mut out = String::new();
            fields_header(&mut out, &r.header);
            let _ = writeln!(out, "\"ID\" : {}", r.id);
            let _ = writeln!(out, "\"TTL\" : {}", r.ttl);
            let _ = writeln!(out, "\"GrantedTTL\" : {}", r.granted_ttl);
            for k in &r.keys {
                let _ = writeln!(out, "\"Key\" : {}", gofmt::quote(k));
            }
            out.into_bytes()
        }
        OutputFormat::Protobuf => header_pb(&r.header),
        OutputFormat::Table => return Err(super::output::unsupported(f)),
    })
}

pub fn format_leases(f: OutputFormat, r: &LeaseLeasesResponse) -> Result<Vec<u8>, CliError> {
    Ok(match f {
        OutputFormat::Simple => {
            let mut out = format!("found {} leases\n", r.leases.len());
            for l in &r.leases {
                let _ = writeln!(out, "{:016x}", l.id);
            }
            out.into_bytes()
        }
        OutputFormat::Json => {
            let items: Vec<String> = r
                .leases
                .iter()
                .map(|l| format!("{{\"id\":{}}}", l.id))
                .collect();
            line(
                flat_header(&r.header)
                    .raw("leases", &format!("[{}]", items.join(",")))
                    .finish(),
            )
        }
        OutputFormat::Fields => {
            let mut out = String::new();
            fields_header(&mut out, &r.header);
            for l in &r.leases {
                let _ = writeln!(out, "\"ID\" : {}", l.id);
            }
            out.into_bytes()
        }
        OutputFormat::Protobuf => header_pb(&r.header),
        OutputFormat::Table => return Err(super::output::unsupported(f)),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::proto::etcdserverpb::LeaseStatus;

    fn header() -> Option<ResponseHeader> {
        Some(ResponseHeader {
            cluster_id: 2037210783374497686,
            member_id: 13195394291058371180,
            revision: 3,
            raft_term: 2,
        })
    }

    fn s(b: Result<Vec<u8>, CliError>) -> String {
        String::from_utf8(b.unwrap()).unwrap()
    }

    #[test]
    fn grant_and_keep_alive_match_etcdctl() {
        let g = LeaseGrantResponse {
            header: header(),
            id: 7668682446789084936,
            ttl: 60,
            error: String::new(),
        };
        assert_eq!(
            s(format_grant(OutputFormat::Simple, &g)),
            "lease 6a6ca20e10230708 granted with TTL(60s)\n"
        );
        assert_eq!(
            s(format_grant(OutputFormat::Json, &g)),
            "{\"cluster_id\":2037210783374497686,\"member_id\":13195394291058371180,\"revision\":3,\"raft_term\":2,\"ID\":7668682446789084936,\"TTL\":60,\"Error\":\"\"}\n"
        );
        let k = LeaseKeepAliveResponse {
            header: header(),
            id: 7668682446789084936,
            ttl: 100,
        };
        assert_eq!(
            s(format_keep_alive(OutputFormat::Simple, &k)),
            "lease 6a6ca20e10230708 keepalived with TTL(100)\n"
        );
        assert_eq!(
            format_keep_alive(OutputFormat::Protobuf, &k).unwrap(),
            header().unwrap().encode_to_vec()
        );
        assert_eq!(
            format_grant(OutputFormat::Table, &g).unwrap_err().code,
            exit::BAD_FEATURE
        );
    }

    #[test]
    fn time_to_live_matches_etcdctl() {
        let mut r = LeaseTimeToLiveResponse {
            header: header(),
            id: 0x6a6ca20e1023070c,
            ttl: 99,
            granted_ttl: 100,
            keys: vec![b"lk".to_vec(), b"lk2".to_vec()],
        };
        assert_eq!(
            s(format_time_to_live(OutputFormat::Simple, &r, true)),
            "lease 6a6ca20e1023070c granted with TTL(100s), remaining(99s), attached keys([lk lk2])\n"
        );
        assert_eq!(
            s(format_time_to_live(OutputFormat::Simple, &r, false)),
            "lease 6a6ca20e1023070c granted with TTL(100s), remaining(99s)\n"
        );
        assert!(s(format_time_to_live(OutputFormat::Json, &r, true))
            .ends_with("\"id\":7668682446789084940,\"ttl\":99,\"granted-ttl\":100,\"keys\":[\"bGs=\",\"bGsy\"]}\n"));
        assert!(s(format_time_to_live(OutputFormat::Fields, &r, true))
            .ends_with("\"GrantedTTL\" : 100\n\"Key\" : \"lk\"\n\"Key\" : \"lk2\"\n"));
        r.ttl = -1;
        r.granted_ttl = 0;
        r.keys.clear();
        r.id = 0x1234;
        assert_eq!(
            s(format_time_to_live(OutputFormat::Simple, &r, true)),
            "lease 0000000000001234 already expired\n"
        );
        assert!(s(format_time_to_live(OutputFormat::Json, &r, false))
            .ends_with("\"id\":4660,\"ttl\":-1,\"granted-ttl\":0,\"keys\":null}\n"));
    }

    #[test]
    fn list_and_revoke_match_etcdctl() {
        let r = LeaseLeasesResponse {
            header: header(),
            leases: vec![LeaseStatus {
                id: 0x6a6ca20e10230706,
            }],
        };
        assert_eq!(
            s(format_leases(OutputFormat::Simple, &r)),
            "found 1 leases\n6a6ca20e10230706\n"
        );
        assert!(s(format_leases(OutputFormat::Json, &r))
            .ends_with("\"raft_term\":2,\"leases\":[{\"id\":7668682446789084934}]}\n"));
        let empty = LeaseLeasesResponse {
            header: header(),
            leases: vec![],
        };
        assert!(s(format_leases(OutputFormat::Json, &empty)).ends_with("\"leases\":[]}\n"));
        assert_eq!(
            s(format_revoke(
                OutputFormat::Simple,
                0x1234,
                &LeaseRevokeResponse::default()
            )),
            "lease 0000000000001234 revoked\n"
        );
    }

    #[test]
    fn lease_ids_are_hex() {
        assert_eq!(lease_id("6a6ca20e10230706").unwrap(), 0x6a6ca20e10230706);
        assert_eq!(
            lease_id("zz").unwrap_err().message,
            "bad lease ID arg (strconv.ParseInt: parsing \"zz\": invalid syntax), expecting ID in Hex"
        );
    }
}
