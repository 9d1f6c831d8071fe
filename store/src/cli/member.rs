//! `member list|add|promote|remove|update`, with etcdctl's argument checks and output.
//!
//! `member add` in simple form also prints the environment a new member starts with
//! (`ETCD_NAME`, `ETCD_INITIAL_CLUSTER`, ...), built from the member list in the add response.
use std::fmt::Write as _;

use clap::{Args, Subcommand};
use prost::Message as _;

use super::gofmt::{json_string, quote, JsonObject};
use super::output::{fields_header, json_header};
use super::{emit, exit, table, CliError, Context, OutputFormat};
use crate::proto::etcdserverpb::{
    Member, MemberAddRequest, MemberAddResponse, MemberListRequest, MemberListResponse,
    MemberPromoteRequest, MemberRemoveRequest, MemberUpdateRequest, ResponseHeader,
};

#[derive(Debug, Subcommand)]
pub enum MemberCommand {
    /// Adds a member into the cluster.
    Add(AddArgs),
    /// Removes a member from the cluster.
    Remove(IdArgs),
    /// Updates a member in the cluster.
    Update(UpdateArgs),
    /// Lists all members in the cluster.
    List(ListArgs),
    /// Promotes a non-voting member in the cluster.
    Promote(IdArgs),
}

#[derive(Debug, Args)]
pub struct AddArgs {
    pub args: Vec<String>,
    /// Comma separated peer URLs for the new member.
    #[arg(long, default_value = "")]
    pub peer_urls: String,
    /// Indicates if the new member is raft learner.
    #[arg(long, num_args = 0..=1, require_equals = true, default_missing_value = "true", default_value = "false", value_parser = clap::builder::BoolishValueParser::new())]
    pub learner: bool,
}

#[derive(Debug, Args)]
pub struct IdArgs {
    pub args: Vec<String>,
}

#[derive(Debug, Args)]
pub struct UpdateArgs {
    pub args: Vec<String>,
    /// Comma separated peer URLs for the updated member.
    #[arg(long, default_value = "")]
    pub peer_urls: String,
}

#[derive(Debug, Args)]
pub struct ListArgs {
    /// To use linearizable fetch.
    #[arg(long, num_args = 0..=1, require_equals = true, default_missing_value = "true", default_value = "false", value_parser = clap::builder::BoolishValueParser::new())]
    pub consistency_linearizable: bool,
}

pub async fn run(ctx: &Context, cmd: MemberCommand) -> anyhow::Result<i32> {
    match cmd {
        MemberCommand::Add(a) => add(ctx, a).await,
        MemberCommand::Remove(a) => change(ctx, Change::Remove, &a.args, "").await,
        MemberCommand::Update(a) => change(ctx, Change::Update, &a.args, &a.peer_urls).await,
        MemberCommand::Promote(a) => change(ctx, Change::Promote, &a.args, "").await,
        MemberCommand::List(a) => list(ctx, a).await,
    }
}

/// Go's `strconv.ParseUint(s, 16, 64)` as etcdctl reports a bad member ID.
pub fn member_id(arg: &str) -> Result<u64, CliError> {
    u64::from_str_radix(arg, 16).map_err(|e| {
        let why = match e.kind() {
            std::num::IntErrorKind::PosOverflow => "value out of range",
            _ => "invalid syntax",
        };
        CliError::bad_args(format!(
            "bad member ID arg (strconv.ParseUint: parsing {}: {why}), expecting ID in Hex",
            quote(arg.as_bytes())
        ))
    })
}

/// clientv3 checks peer URLs (`types.NewURLs`) before sending them; its messages are kept.
pub fn validate_urls(urls: &[String]) -> Result<(), CliError> {
    let err = |m: String| CliError::new(exit::ERROR, m);
    if urls.is_empty() {
        return Err(err("no valid URLs given".into()));
    }
    for raw in urls {
        // Go parses "foo" as a URL without a scheme; the url crate refuses it, so the scheme is
        // checked first to keep Go's message.
        let scheme = raw.trim().split_once("://").map(|(s, _)| s).unwrap_or("");
        if !matches!(scheme, "http" | "https" | "unix" | "unixs") {
            return Err(err(format!(
                "URL scheme must be http, https, unix, or unixs: {raw}"
            )));
        }
        let u = url::Url::parse(raw.trim()).map_err(|e| err(format!("parse {raw:?}: {e}")))?;
        if u.host_str().is_none() || u.port().is_none() {
            return Err(err(format!(
                "URL address does not have the form \"host:port\": {raw}"
            )));
        }
        if !(u.path().is_empty() || u.path() == "/" && !raw.trim().ends_with('/')) {
            return Err(err(format!("URL must not contain a path: {raw}")));
        }
    }
    Ok(())
}

fn split_urls(s: &str) -> Vec<String> {
    s.split(',').map(str::to_string).collect()
}

async fn add(ctx: &Context, a: AddArgs) -> anyhow::Result<i32> {
    let name = match a.args.as_slice() {
        [] => return Err(CliError::bad_args("member name not provided").into()),
        [one] => one.clone(),
        many => {
            let mut ev = "too many arguments".to_string();
            for s in many {
                if s.to_lowercase().starts_with("http") {
                    let _ = write!(ev, ", did you mean --peer-urls={s}");
                }
            }
            return Err(CliError::bad_args(ev).into());
        }
    };
    if a.peer_urls.is_empty() {
        return Err(CliError::bad_args("member peer urls not provided").into());
    }
    let urls = split_urls(&a.peer_urls);
    validate_urls(&urls)?;
    let client = ctx.connect().await?;
    let req = MemberAddRequest {
        peer_ur_ls: urls,
        is_learner: a.learner,
    };
    let resp = ctx
        .call(client.cluster().member_add(ctx.request(req)))
        .await?;
    emit(&format_add(
        ctx.global.write_out,
        &resp,
        &name,
        &a.peer_urls,
    )?)?;
    Ok(exit::SUCCESS)
}

#[derive(Debug, Clone, Copy)]
enum Change {
    Remove,
    Update,
    Promote,
}

async fn change(
    ctx: &Context,
    kind: Change,
    args: &[String],
    peer_urls: &str,
) -> anyhow::Result<i32> {
    let [arg] = args else {
        return Err(CliError::bad_args("member ID is not provided").into());
    };
    let id = member_id(arg)?;
    let client = ctx.connect().await?;
    let mut cluster = client.cluster();
    let f = ctx.global.write_out;
    let (verb, header, members, pb) = match kind {
        Change::Remove => {
            let r = ctx
                .call(cluster.member_remove(ctx.request(MemberRemoveRequest { id })))
                .await?;
            (
                "removed from",
                r.header,
                r.members.clone(),
                r.encode_to_vec(),
            )
        }
        Change::Promote => {
            let r = ctx
                .call(cluster.member_promote(ctx.request(MemberPromoteRequest { id })))
                .await?;
            (
                "promoted in",
                r.header,
                r.members.clone(),
                r.encode_to_vec(),
            )
        }
        Change::Update => {
            if peer_urls.is_empty() {
                return Err(CliError::bad_args("member peer urls not provided").into());
            }
            let urls = split_urls(peer_urls);
            validate_urls(&urls)?;
            let req = MemberUpdateRequest {
                id,
                peer_ur_ls: urls,
            };
            let r = ctx.call(cluster.member_update(ctx.request(req))).await?;
            ("updated in", r.header, r.members.clone(), r.encode_to_vec())
        }
    };
    emit(&format_change(f, verb, id, &header, &members, &pb)?)?;
    Ok(exit::SUCCESS)
}

async fn list(ctx: &Context, a: ListArgs) -> anyhow::Result<i32> {
    let client = ctx.connect().await?;
    let req = MemberListRequest {
        linearizable: a.consistency_linearizable,
    };
    let resp = ctx
        .call(client.cluster().member_list(ctx.request(req)))
        .await?;
    emit(&format_list(ctx.global.write_out, ctx.global.hex, &resp)?)?;
    Ok(exit::SUCCESS)
}

/// The client URLs of every member: the endpoints `--cluster` commands talk to.
pub async fn cluster_endpoints(ctx: &Context) -> Result<Vec<String>, CliError> {
    let client = ctx.connect().await?;
    let resp = ctx
        .call(
            client
                .cluster()
                .member_list(ctx.request(MemberListRequest::default())),
        )
        .await
        .map_err(|e| {
            CliError::new(
                exit::ERROR,
                format!(
                    "failed to fetch endpoints from etcd cluster member list: {}",
                    e.message
                ),
            )
        })?;
    Ok(resp
        .members
        .into_iter()
        .flat_map(|m| m.client_ur_ls)
        .collect())
}

const LIST_HEADERS: [&str; 6] = [
    "ID",
    "Status",
    "Name",
    "Peer Addrs",
    "Client Addrs",
    "Is Learner",
];

fn list_rows(members: &[Member]) -> Vec<Vec<String>> {
    members
        .iter()
        .map(|m| {
            // A member that has never started has not published its name yet.
            let status = if m.name.is_empty() {
                "unstarted"
            } else {
                "started"
            };
            vec![
                format!("{:x}", m.id),
                status.to_string(),
                m.name.clone(),
                m.peer_ur_ls.join(","),
                m.client_ur_ls.join(","),
                m.is_learner.to_string(),
            ]
        })
        .collect()
}

fn json_strings(v: &[String]) -> Vec<String> {
    v.iter().map(|s| json_string(s)).collect()
}

fn json_member(m: &Member) -> String {
    JsonObject::new()
        .uint("ID", m.id)
        .string("name", &m.name)
        .array("peerURLs", &json_strings(&m.peer_ur_ls))
        .array("clientURLs", &json_strings(&m.client_ur_ls))
        .bool("isLearner", m.is_learner)
        .finish()
}

fn json_members(members: &[Member]) -> Vec<String> {
    members.iter().map(json_member).collect()
}

/// etcdctl 3.5's `--hex` JSON for member list: ids as hex strings, written by hand (and so
/// with its `clientURLS` spelling and without `isLearner`).
fn hex_json_list(r: &MemberListResponse) -> String {
    let h = r.header.unwrap_or_default();
    let mut out = format!(
        "{{\"header\":{{\"cluster_id\":\"{:x}\",\"member_id\":\"{:x}\",\"raft_term\":{}",
        h.cluster_id, h.member_id, h.raft_term
    );
    for (i, m) in r.members.iter().enumerate() {
        out.push_str(if i == 0 {
            "},\"members\":[{\"ID\":\""
        } else {
            "},{\"ID\":\""
        });
        let list = |v: &[String]| {
            if v.is_empty() {
                "null".to_string()
            } else {
                format!("[{}]", json_strings(v).join(","))
            }
        };
        let _ = write!(
            out,
            "{:x}\",\"name\":\"{}\",\"peerURLs\":{},\"clientURLS\":{}",
            m.id,
            m.name,
            list(&m.peer_ur_ls),
            list(&m.client_ur_ls)
        );
    }
    out.push_str("}]}");
    out
}

pub fn format_list(
    f: OutputFormat,
    hex: bool,
    r: &MemberListResponse,
) -> Result<Vec<u8>, CliError> {
    Ok(match f {
        OutputFormat::Simple => list_rows(&r.members)
            .iter()
            .map(|row| format!("{}\n", row.join(", ")))
            .collect::<String>()
            .into_bytes(),
        OutputFormat::Table => table::render(&LIST_HEADERS, &list_rows(&r.members)).into_bytes(),
        OutputFormat::Json if hex => format!("{}\n", hex_json_list(r)).into_bytes(),
        OutputFormat::Json => format!(
            "{}\n",
            JsonObject::new()
                .object("header", json_header(&r.header))
                .array("members", &json_members(&r.members))
                .finish()
        )
        .into_bytes(),
        OutputFormat::Fields => {
            let mut out = String::new();
            fields_header(&mut out, &r.header);
            for m in &r.members {
                let _ = writeln!(out, "\"ID\" : {}", m.id);
                let _ = writeln!(out, "\"Name\" : {}", quote(m.name.as_bytes()));
                for u in &m.peer_ur_ls {
                    let _ = writeln!(out, "\"PeerURL\" : {}", quote(u.as_bytes()));
                }
                for u in &m.client_ur_ls {
                    let _ = writeln!(out, "\"ClientURL\" : {}", quote(u.as_bytes()));
                }
                let _ = writeln!(out, "\"IsLearner\" : {}", m.is_learner);
                out.push('\n');
            }
            out.into_bytes()
        }
        OutputFormat::Protobuf => r.encode_to_vec(),
    })
}

pub fn format_add(
    f: OutputFormat,
    r: &MemberAddResponse,
    name: &str,
    peer_urls: &str,
) -> Result<Vec<u8>, CliError> {
    let new = r.member.clone().unwrap_or_default();
    let cluster = r.header.unwrap_or_default().cluster_id;
    Ok(match f {
        OutputFormat::Simple => {
            // etcdctl 3.5 says "added" for learners too ("added as learner" came with 3.6).
            let mut out = format!("Member {:16x} added to cluster {:16x}\n", new.id, cluster);
            let conf: Vec<String> = r
                .members
                .iter()
                .flat_map(|m| {
                    let n = if m.id == new.id {
                        name
                    } else {
                        m.name.as_str()
                    };
                    m.peer_ur_ls.iter().map(move |u| format!("{n}={u}"))
                })
                .collect();
            out.push('\n');
            let _ = writeln!(out, "ETCD_NAME={}", quote(name.as_bytes()));
            let _ = writeln!(
                out,
                "ETCD_INITIAL_CLUSTER={}",
                quote(conf.join(",").as_bytes())
            );
            let _ = writeln!(
                out,
                "ETCD_INITIAL_ADVERTISE_PEER_URLS={}",
                quote(peer_urls.as_bytes())
            );
            out.push_str("ETCD_INITIAL_CLUSTER_STATE=\"existing\"\n");
            out.into_bytes()
        }
        OutputFormat::Json => format!(
            "{}\n",
            JsonObject::new()
                .object("header", json_header(&r.header))
                .object("member", r.member.as_ref().map(json_member))
                .array("members", &json_members(&r.members))
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

/// remove/update/promote: `pb` is the response's wire encoding (for `-w protobuf`).
fn format_change(
    f: OutputFormat,
    verb: &str,
    id: u64,
    header: &Option<ResponseHeader>,
    members: &[Member],
    pb: &[u8],
) -> Result<Vec<u8>, CliError> {
    let cluster = header.unwrap_or_default().cluster_id;
    Ok(match f {
        OutputFormat::Simple => {
            format!("Member {id:16x} {verb} cluster {cluster:16x}\n").into_bytes()
        }
        OutputFormat::Json => format!(
            "{}\n",
            JsonObject::new()
                .object("header", json_header(header))
                .array("members", &json_members(members))
                .finish()
        )
        .into_bytes(),
        OutputFormat::Fields => {
            let mut out = String::new();
            fields_header(&mut out, header);
            out.into_bytes()
        }
        OutputFormat::Protobuf => pb.to_vec(),
        OutputFormat::Table => return Err(super::output::unsupported(f)),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn header() -> Option<ResponseHeader> {
        Some(ResponseHeader {
            cluster_id: 0x1c45a069f3a1d796,
            member_id: 0xb71f75320dc06a6c,
            revision: 0,
            raft_term: 2,
        })
    }

    fn members() -> Vec<Member> {
        vec![
            Member {
                id: 0x325a410f56cfeff,
                name: String::new(),
                peer_ur_ls: vec!["http://127.0.0.1:2580".into()],
                client_ur_ls: vec![],
                is_learner: true,
            },
            Member {
                id: 0xb71f75320dc06a6c,
                name: "default".into(),
                peer_ur_ls: vec!["http://127.0.0.1:2380".into()],
                client_ur_ls: vec!["http://127.0.0.1:23791".into()],
                is_learner: false,
            },
        ]
    }

    fn s(b: Result<Vec<u8>, CliError>) -> String {
        String::from_utf8(b.unwrap()).unwrap()
    }

    #[test]
    fn list_matches_etcdctl() {
        let r = MemberListResponse {
            header: header(),
            members: members(),
        };
        assert_eq!(
            s(format_list(OutputFormat::Simple, false, &r)),
            "325a410f56cfeff, unstarted, , http://127.0.0.1:2580, , true\n\
             b71f75320dc06a6c, started, default, http://127.0.0.1:2380, http://127.0.0.1:23791, false\n"
        );
        assert_eq!(
            s(format_list(OutputFormat::Json, false, &r)),
            "{\"header\":{\"cluster_id\":2037210783374497686,\"member_id\":13195394291058371180,\"raft_term\":2},\"members\":[{\"ID\":226767748996071167,\"peerURLs\":[\"http://127.0.0.1:2580\"],\"isLearner\":true},{\"ID\":13195394291058371180,\"name\":\"default\",\"peerURLs\":[\"http://127.0.0.1:2380\"],\"clientURLs\":[\"http://127.0.0.1:23791\"]}]}\n"
        );
        assert_eq!(
            s(format_list(OutputFormat::Json, true, &r)),
            "{\"header\":{\"cluster_id\":\"1c45a069f3a1d796\",\"member_id\":\"b71f75320dc06a6c\",\"raft_term\":2},\"members\":[{\"ID\":\"325a410f56cfeff\",\"name\":\"\",\"peerURLs\":[\"http://127.0.0.1:2580\"],\"clientURLS\":null},{\"ID\":\"b71f75320dc06a6c\",\"name\":\"default\",\"peerURLs\":[\"http://127.0.0.1:2380\"],\"clientURLS\":[\"http://127.0.0.1:23791\"]}]}\n"
        );
        let table = s(format_list(OutputFormat::Table, false, &r));
        assert!(table.contains("|        ID        |  STATUS   |  NAME   |"));
        let fields = s(format_list(OutputFormat::Fields, false, &r));
        assert!(fields.ends_with("\"ID\" : 13195394291058371180\n\"Name\" : \"default\"\n\"PeerURL\" : \"http://127.0.0.1:2380\"\n\"ClientURL\" : \"http://127.0.0.1:23791\"\n\"IsLearner\" : false\n\n"));
    }

    #[test]
    fn add_prints_the_new_members_environment() {
        let r = MemberAddResponse {
            header: header(),
            member: Some(members()[0].clone()),
            members: members(),
        };
        assert_eq!(
            s(format_add(
                OutputFormat::Simple,
                &r,
                "n3",
                "http://127.0.0.1:2580"
            )),
            "Member  325a410f56cfeff added to cluster 1c45a069f3a1d796\n\n\
             ETCD_NAME=\"n3\"\n\
             ETCD_INITIAL_CLUSTER=\"n3=http://127.0.0.1:2580,default=http://127.0.0.1:2380\"\n\
             ETCD_INITIAL_ADVERTISE_PEER_URLS=\"http://127.0.0.1:2580\"\n\
             ETCD_INITIAL_CLUSTER_STATE=\"existing\"\n"
        );
    }

    #[test]
    fn changes_print_one_line() {
        let out = format_change(
            OutputFormat::Simple,
            "removed from",
            0xb7492873f6f114ac,
            &header(),
            &[],
            &[],
        );
        assert_eq!(
            s(out),
            "Member b7492873f6f114ac removed from cluster 1c45a069f3a1d796\n"
        );
    }

    #[test]
    fn ids_and_urls_are_checked_like_etcdctl() {
        assert_eq!(
            member_id("zz").unwrap_err().message,
            "bad member ID arg (strconv.ParseUint: parsing \"zz\": invalid syntax), expecting ID in Hex"
        );
        assert_eq!(member_id("b71f75320dc06a6c").unwrap(), 0xb71f75320dc06a6c);
        assert!(validate_urls(&["http://127.0.0.1:2380".into()]).is_ok());
        assert_eq!(
            validate_urls(&["foo".into()]).unwrap_err().message,
            "URL scheme must be http, https, unix, or unixs: foo"
        );
        assert_eq!(
            validate_urls(&["http://127.0.0.1".into()])
                .unwrap_err()
                .message,
            "URL address does not have the form \"host:port\": http://127.0.0.1"
        );
        assert_eq!(
            validate_urls(&["http://127.0.0.1:1/x".into()])
                .unwrap_err()
                .message,
            "URL must not contain a path: http://127.0.0.1:1/x"
        );
    }
}
