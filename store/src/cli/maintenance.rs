//! `alarm list|disarm`, `defrag`, `move-leader` and `snapshot save`: the Maintenance service
//! commands, with etcdctl's messages and exit codes.
use std::fmt::Write as _;
use std::io::{IsTerminal as _, Write as _};

use clap::{Args, Subcommand};
use prost::Message as _;
use sha2::{Digest as _, Sha256};

use super::gofmt::{self, JsonObject};
use super::output::{fields_header, json_header};
use super::{emit, exit, CliError, Context, OutputFormat};
use crate::proto::etcdserverpb::{
    alarm_request::AlarmAction, AlarmMember, AlarmRequest, AlarmResponse, AlarmType,
    DefragmentRequest, MoveLeaderRequest, MoveLeaderResponse, SnapshotRequest, StatusRequest,
};

#[derive(Debug, Subcommand)]
pub enum AlarmCommand {
    /// Lists all alarms.
    List(NoArgs),
    /// Disarms all alarms.
    Disarm(NoArgs),
}

#[derive(Debug, Args)]
pub struct NoArgs {
    pub args: Vec<String>,
}

#[derive(Debug, Args)]
pub struct DefragArgs {
    /// Use all endpoints from the cluster member list.
    #[arg(long, num_args = 0..=1, require_equals = true, default_missing_value = "true", default_value = "false", value_parser = clap::builder::BoolishValueParser::new())]
    pub cluster: bool,
}

#[derive(Debug, Args)]
pub struct MoveLeaderArgs {
    pub args: Vec<String>,
}

#[derive(Debug, Subcommand)]
pub enum SnapshotCommand {
    /// Stores an etcd node backend snapshot to a given file.
    Save(NoArgs),
    /// Restores a snapshot file into a new data dir, for a new cluster (offline).
    Restore(super::snapshot_offline::RestoreArgs),
    /// Gets backend snapshot status of a given file (offline).
    Status(super::snapshot_offline::StatusArgs),
}

/// Go's `%+v` of a gogoproto message is its compact text form (note the trailing space).
fn alarm_text(a: &AlarmMember) -> String {
    let name = match AlarmType::try_from(a.alarm) {
        Ok(AlarmType::Nospace) => "NOSPACE",
        Ok(AlarmType::Corrupt) => "CORRUPT",
        _ => "NONE",
    };
    let mut out = String::new();
    if a.member_id != 0 {
        let _ = write!(out, "memberID:{} ", a.member_id);
    }
    if a.alarm != 0 {
        let _ = write!(out, "alarm:{name} ");
    }
    out
}

pub fn format_alarms(f: OutputFormat, r: &AlarmResponse) -> Result<Vec<u8>, CliError> {
    Ok(match f {
        OutputFormat::Simple => r
            .alarms
            .iter()
            .map(|a| format!("{}\n", alarm_text(a)))
            .collect::<String>()
            .into_bytes(),
        OutputFormat::Json => {
            let alarms: Vec<String> = r
                .alarms
                .iter()
                .map(|a| {
                    JsonObject::new()
                        .uint("memberID", a.member_id)
                        .int("alarm", i64::from(a.alarm))
                        .finish()
                })
                .collect();
            let obj = JsonObject::new()
                .object("header", json_header(&r.header))
                .array("alarms", &alarms)
                .finish();
            format!("{obj}\n").into_bytes()
        }
        OutputFormat::Fields => {
            let mut out = String::new();
            fields_header(&mut out, &r.header);
            for a in &r.alarms {
                let name = alarm_text(a);
                let kind = name.rsplit(':').next().unwrap_or("NONE").trim();
                let _ = writeln!(out, "\"MemberID\" : {}", a.member_id);
                let _ = writeln!(out, "\"AlarmType\" : {kind}");
            }
            out.into_bytes()
        }
        OutputFormat::Protobuf => r.encode_to_vec(),
        OutputFormat::Table => return Err(super::output::unsupported(f)),
    })
}

pub async fn alarm(ctx: &Context, cmd: AlarmCommand) -> anyhow::Result<i32> {
    let (args, disarm) = match &cmd {
        AlarmCommand::List(a) => (&a.args, false),
        AlarmCommand::Disarm(a) => (&a.args, true),
    };
    if !args.is_empty() {
        let which = if disarm { "disarm" } else { "list" };
        return Err(
            CliError::bad_args(format!("alarm {which} command accepts no arguments")).into(),
        );
    }
    let client = ctx.connect().await?;
    let mut m = client.maintenance();
    let get = AlarmRequest {
        action: AlarmAction::Get as i32,
        ..Default::default()
    };
    let list = ctx.call(m.alarm(ctx.request(get))).await?;
    let resp = if disarm {
        // clientv3's AlarmDisarm with no member: deactivate each raised alarm in turn and
        // report what was deactivated (with no header).
        let mut out = AlarmResponse::default();
        for a in &list.alarms {
            let req = AlarmRequest {
                action: AlarmAction::Deactivate as i32,
                member_id: a.member_id,
                alarm: a.alarm,
            };
            let r = ctx.call(m.alarm(ctx.request(req))).await?;
            out.alarms.extend(r.alarms);
        }
        out
    } else {
        list
    };
    emit(&format_alarms(ctx.global.write_out, &resp)?)?;
    Ok(exit::SUCCESS)
}

/// A failed per-endpoint connection reads, in etcdctl, as the RPC timing out.
async fn call_endpoint<T, F, Fut>(ctx: &Context, ep: &str, rpc: F) -> Result<T, CliError>
where
    F: FnOnce(crate::client::Client) -> Fut,
    Fut: std::future::Future<Output = Result<tonic::Response<T>, tonic::Status>>,
{
    let client = ctx
        .connect_to(&[ep.to_string()])
        .await
        .map_err(|_| CliError::new(exit::ERROR, "context deadline exceeded"))?;
    ctx.call(rpc(client)).await
}

/// The endpoints a per-member command visits: `--endpoints`, or with `--cluster` every
/// member's client URLs.
pub async fn endpoints(ctx: &Context, cluster: bool) -> Result<Vec<String>, CliError> {
    if cluster {
        super::member::cluster_endpoints(ctx).await
    } else {
        Ok(ctx.global.endpoints.clone())
    }
}

pub async fn defrag(ctx: &Context, a: DefragArgs) -> anyhow::Result<i32> {
    let mut failures = 0;
    for ep in endpoints(ctx, a.cluster).await? {
        let req = ctx.request(DefragmentRequest {});
        match call_endpoint(ctx, &ep, |c| async move {
            c.maintenance().defragment(req).await
        })
        .await
        {
            Ok(_) => emit(format!("Finished defragmenting etcd member[{ep}]\n").as_bytes())?,
            Err(e) => {
                failures += 1;
                eprintln!("Failed to defragment etcd member[{ep}] ({})", e.message);
            }
        }
    }
    Ok(if failures == 0 {
        exit::SUCCESS
    } else {
        exit::ERROR
    })
}

pub fn format_move_leader(
    f: OutputFormat,
    leader: u64,
    target: u64,
    r: &MoveLeaderResponse,
) -> Result<Vec<u8>, CliError> {
    Ok(match f {
        OutputFormat::Simple => {
            format!("Leadership transferred from {leader:x} to {target:x}\n").into_bytes()
        }
        OutputFormat::Json => format!(
            "{}\n",
            JsonObject::new()
                .object("header", json_header(&r.header))
                .finish()
        )
        .into_bytes(),
        OutputFormat::Fields => {
            let mut out = String::new();
            fields_header(&mut out, &r.header);
            out.into_bytes()
        }
        OutputFormat::Protobuf => r.encode_to_vec(),
        OutputFormat::Table => return Err(super::output::unsupported(f)),
    })
}

/// etcdctl finds the leader among `--endpoints` (by Status) and asks it to hand over.
pub async fn move_leader(ctx: &Context, a: MoveLeaderArgs) -> anyhow::Result<i32> {
    let [arg] = a.args.as_slice() else {
        return Err(CliError::bad_args("move-leader command needs 1 argument").into());
    };
    let target = u64::from_str_radix(arg, 16).map_err(|e| {
        let why = match e.kind() {
            std::num::IntErrorKind::PosOverflow => "value out of range",
            _ => "invalid syntax",
        };
        CliError::bad_args(format!(
            "strconv.ParseUint: parsing {}: {why}",
            gofmt::quote(arg.as_bytes())
        ))
    })?;
    let mut leader = None;
    for ep in &ctx.global.endpoints {
        let req = ctx.request(StatusRequest {});
        let status = call_endpoint(
            ctx,
            ep,
            |c| async move { c.maintenance().status(req).await },
        )
        .await?;
        let me = status.header.map(|h| h.member_id).unwrap_or(0);
        if me == status.leader {
            leader = Some((ep.clone(), me));
            break;
        }
    }
    let Some((ep, leader_id)) = leader else {
        return Err(CliError::bad_args(format!(
            "no leader endpoint given at [{}]",
            ctx.global.endpoints.join(" ")
        ))
        .into());
    };
    let req = ctx.request(MoveLeaderRequest { target_id: target });
    let resp = call_endpoint(ctx, &ep, |c| async move {
        c.maintenance().move_leader(req).await
    })
    .await?;
    emit(&format_move_leader(
        ctx.global.write_out,
        leader_id,
        target,
        &resp,
    )?)?;
    Ok(exit::SUCCESS)
}

/// Go's wording of common file errors (`open x: no such file or directory`).
fn go_io_error(op: &str, path: &str, e: &std::io::Error) -> String {
    let why = match e.kind() {
        std::io::ErrorKind::NotFound => "no such file or directory".to_string(),
        std::io::ErrorKind::PermissionDenied => "permission denied".to_string(),
        _ => e.to_string(),
    };
    format!("{op} {path}: {why}")
}

/// Checks the end of a snapshot stream: etcd appends the sha256 of everything before it.
pub fn verify_checksum(data_len: u64, digest: &[u8], trailer: &[u8]) -> Result<(), String> {
    if trailer.len() != 32 {
        return Err(format!("sha256 checksum not found [bytes: {data_len}]"));
    }
    if digest != trailer {
        return Err(format!(
            "sha256 checksum mismatch [bytes: {data_len}]: the snapshot stream is corrupt"
        ));
    }
    Ok(())
}

/// A one-line progress display on stderr, drawn only on a terminal.
struct Progress {
    enabled: bool,
    total: u64,
}

impl Progress {
    fn draw(&self, done: u64) {
        if !self.enabled {
            return;
        }
        let total = self.total.max(done);
        let width = 30usize;
        let filled = done
            .saturating_mul(width as u64)
            .checked_div(total)
            .map_or(width, |f| usize::try_from(f).unwrap_or(width));
        let mut err = std::io::stderr().lock();
        let _ = write!(
            err,
            "\r[{}{}] {} / {}",
            "#".repeat(filled),
            "-".repeat(width - filled.min(width)),
            gofmt::humanize_bytes(done),
            gofmt::humanize_bytes(total)
        );
        let _ = err.flush();
    }

    fn finish(&self) {
        if self.enabled {
            eprintln!();
        }
    }
}

pub async fn snapshot(ctx: &Context, cmd: SnapshotCommand) -> anyhow::Result<i32> {
    let a = match cmd {
        SnapshotCommand::Save(a) => a,
        SnapshotCommand::Restore(args) => return super::snapshot_offline::restore(ctx, args).await,
        SnapshotCommand::Status(args) => return super::snapshot_offline::status(ctx, args).await,
    };
    let [path] = a.args.as_slice() else {
        return Err(CliError::bad_args("snapshot save expects one argument").into());
    };
    let interrupted = |m: String| CliError::new(exit::INTERRUPTED, m);
    if ctx.global.endpoints.len() != 1 {
        return Err(interrupted(format!(
            "snapshot must be requested to one selected node, not multiple [{}]",
            ctx.global.endpoints.join(" ")
        ))
        .into());
    }
    let part = format!("{path}.part");
    let result = save(ctx, path, &part).await;
    // etcdctl removes the partial file whatever happened.
    let _ = std::fs::remove_file(&part);
    let version = result.map_err(interrupted)?;
    let mut out = format!("Snapshot saved at {path}\n");
    if !version.is_empty() {
        let _ = writeln!(out, "Server version {version}");
    }
    emit(out.as_bytes())?;
    Ok(exit::SUCCESS)
}

/// Streams the snapshot into `part`, checks its trailing sha256, then renames it to `path`.
/// Returns the server version the stream reported.
async fn save(ctx: &Context, path: &str, part: &str) -> Result<String, String> {
    let mut file = open_private(part)
        .map_err(|e| format!("could not open {part} ({})", go_io_error("open", part, &e)))?;
    let client = ctx.connect().await.map_err(|e| e.message)?;
    // No deadline: etcdctl applies --command-timeout to snapshots only when it is given.
    let mut stream = client
        .maintenance()
        .snapshot(SnapshotRequest {})
        .await
        .map_err(|s| super::status_message(&s))?
        .into_inner();
    let mut hasher = Sha256::new();
    // The last 32 bytes seen so far are held back: they may be the checksum, not data.
    let mut tail: Vec<u8> = Vec::new();
    let mut received = 0u64;
    let mut version = String::new();
    let mut progress = Progress {
        enabled: std::io::stderr().is_terminal(),
        total: 0,
    };
    while let Some(msg) = stream
        .message()
        .await
        .map_err(|s| super::status_message(&s))?
    {
        if !msg.version.is_empty() {
            version = msg.version.clone();
        }
        received += msg.blob.len() as u64;
        if progress.total == 0 {
            progress.total = received + msg.remaining_bytes;
        }
        tail.extend_from_slice(&msg.blob);
        if tail.len() > 32 {
            let data: Vec<u8> = tail.drain(..tail.len() - 32).collect();
            hasher.update(&data);
            file.write_all(&data)
                .map_err(|e| go_io_error("write", part, &e))?;
        }
        progress.draw(received);
    }
    progress.finish();
    let digest = hasher.finalize();
    verify_checksum(received, &digest, &tail)?;
    // The checksum stays in the file, as etcdctl saves it, so a restore can verify it.
    file.write_all(&tail)
        .and_then(|_| file.sync_all())
        .map_err(|e| go_io_error("write", part, &e))?;
    drop(file);
    std::fs::rename(part, path).map_err(|e| format!("could not rename {part} to {path} ({e})"))?;
    Ok(version)
}

/// The snapshot holds the whole keyspace: readable by its owner only (etcd's 0600).
fn open_private(path: &str) -> std::io::Result<std::fs::File> {
    let mut opts = std::fs::OpenOptions::new();
    opts.write(true).create(true).truncate(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt as _;
        opts.mode(0o600);
    }
    opts.open(path)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::proto::etcdserverpb::ResponseHeader;

    #[test]
    fn alarms_print_like_gogoproto() {
        let r = AlarmResponse {
            header: None,
            alarms: vec![AlarmMember {
                member_id: 13195394291058371180,
                alarm: AlarmType::Nospace as i32,
            }],
        };
        assert_eq!(
            String::from_utf8(format_alarms(OutputFormat::Simple, &r).unwrap()).unwrap(),
            "memberID:13195394291058371180 alarm:NOSPACE \n"
        );
        assert_eq!(
            String::from_utf8(format_alarms(OutputFormat::Json, &r).unwrap()).unwrap(),
            "{\"alarms\":[{\"memberID\":13195394291058371180,\"alarm\":1}]}\n"
        );
        assert_eq!(
            String::from_utf8(
                format_alarms(OutputFormat::Json, &AlarmResponse::default()).unwrap()
            )
            .unwrap(),
            "{}\n"
        );
    }

    #[test]
    fn move_leader_names_both_members() {
        let r = MoveLeaderResponse {
            header: Some(ResponseHeader::default()),
        };
        assert_eq!(
            String::from_utf8(
                format_move_leader(OutputFormat::Simple, 0xb71f75320dc06a6c, 0x1234, &r).unwrap()
            )
            .unwrap(),
            "Leadership transferred from b71f75320dc06a6c to 1234\n"
        );
    }

    #[test]
    fn checksum_trailer_is_verified() {
        let data = b"some snapshot bytes";
        let digest = Sha256::digest(data);
        assert!(verify_checksum(51, &digest, &digest).is_ok());
        assert!(verify_checksum(51, &digest, &[0u8; 32])
            .unwrap_err()
            .contains("mismatch"));
        assert_eq!(
            verify_checksum(5, &digest, b"short").unwrap_err(),
            "sha256 checksum not found [bytes: 5]"
        );
    }

    #[test]
    fn file_errors_read_like_go() {
        let e = std::io::Error::from(std::io::ErrorKind::NotFound);
        assert_eq!(
            go_io_error("open", "/x.part", &e),
            "open /x.part: no such file or directory"
        );
    }
}
