//! `endpoint status|health|hashkv`, one connection per endpoint as etcdctl makes them;
//! `--cluster` takes the endpoints from the member list's client URLs instead of `--endpoints`.
use std::fmt::Write as _;
use std::time::Instant;

use clap::{Args, Subcommand};

use super::gofmt::{self, json_string, quote, JsonObject};
use super::output::{fields_header, json_header};
use super::{emit, exit, table, CliError, Context, OutputFormat};
use crate::proto::etcdserverpb::{
    alarm_request::AlarmAction, AlarmRequest, AlarmType, HashKvRequest, HashKvResponse,
    RangeRequest, StatusRequest, StatusResponse,
};

#[derive(Debug, Subcommand)]
pub enum EndpointCommand {
    /// Prints out the status of endpoints specified in `--endpoints` flag.
    Status(ClusterArgs),
    /// Checks the healthiness of endpoints specified in `--endpoints` flag.
    Health(ClusterArgs),
    /// Prints the KV history hash for each endpoint in --endpoints.
    Hashkv(HashKvArgs),
}

#[derive(Debug, Args)]
pub struct ClusterArgs {
    /// Use all endpoints from the cluster member list.
    #[arg(long, num_args = 0..=1, require_equals = true, default_missing_value = "true", default_value = "false", value_parser = clap::builder::BoolishValueParser::new())]
    pub cluster: bool,
}

#[derive(Debug, Args)]
pub struct HashKvArgs {
    #[command(flatten)]
    pub cluster: ClusterArgs,
    /// Maximum revision to hash (default: latest revision).
    #[arg(long, default_value_t = 0, allow_negative_numbers = true)]
    pub rev: i64,
}

pub async fn run(ctx: &Context, cmd: EndpointCommand) -> anyhow::Result<i32> {
    match cmd {
        EndpointCommand::Status(a) => status(ctx, a.cluster).await,
        EndpointCommand::Health(a) => health(ctx, a.cluster).await,
        EndpointCommand::Hashkv(a) => hashkv(ctx, a).await,
    }
}

/// One endpoint's answer to `Maintenance.HashKV`.
#[derive(Debug, Clone)]
pub struct EpHashKv {
    pub endpoint: String,
    pub hash: HashKvResponse,
}

/// Formats `endpoint hashkv` output for `format`.
pub fn format_hashkv(format: OutputFormat, list: &[EpHashKv]) -> Result<String, CliError> {
    let rows: Vec<Vec<String>> = list
        .iter()
        .map(|h| vec![h.endpoint.clone(), h.hash.hash.to_string()])
        .collect();
    match format {
        OutputFormat::Simple => Ok(rows.iter().map(|r| format!("{}\n", r.join(", "))).collect()),
        OutputFormat::Table => Ok(table::render(&["endpoint", "hash"], &rows)),
        OutputFormat::Json => {
            let items: Vec<String> = list
                .iter()
                .map(|h| {
                    let r = &h.hash;
                    let hash = JsonObject::new()
                        .object("header", json_header(&r.header))
                        .uint("hash", u64::from(r.hash))
                        .int("compact_revision", r.compact_revision)
                        .int("hash_revision", r.hash_revision)
                        .finish();
                    JsonObject::new()
                        .raw("Endpoint", &json_string(&h.endpoint))
                        .raw("HashKV", &hash)
                        .finish()
                })
                .collect();
            Ok(format!("[{}]\n", items.join(",")))
        }
        OutputFormat::Fields => {
            let mut out = String::new();
            for h in list {
                fields_header(&mut out, &h.hash.header);
                let _ = writeln!(out, "\"Endpoint\" : {}", quote(h.endpoint.as_bytes()));
                let _ = writeln!(out, "\"Hash\" : {}", h.hash.hash);
                out.push('\n');
            }
            Ok(out)
        }
        OutputFormat::Protobuf => Err(CliError::new(
            exit::BAD_FEATURE,
            "only support simple or json as output format",
        )),
    }
}

async fn hashkv(ctx: &Context, a: HashKvArgs) -> anyhow::Result<i32> {
    let mut list = Vec::new();
    let mut last_err = None;
    for endpoint in super::maintenance::endpoints(ctx, a.cluster.cluster).await? {
        let answer = match ctx.connect_to(std::slice::from_ref(&endpoint)).await {
            Ok(client) => {
                let req = HashKvRequest { revision: a.rev };
                ctx.call(client.maintenance().hash_kv(ctx.request(req)))
                    .await
            }
            // etcdctl dials lazily, so an unreachable member shows as the RPC timing out.
            Err(_) => Err(CliError::new(exit::ERROR, "context deadline exceeded")),
        };
        match answer {
            Ok(hash) => list.push(EpHashKv { endpoint, hash }),
            Err(e) => {
                eprintln!(
                    "Failed to get the hash of endpoint {endpoint} ({})",
                    e.message
                );
                last_err = Some(e);
            }
        }
    }
    emit(format_hashkv(ctx.global.write_out, &list)?.as_bytes())?;
    match last_err {
        Some(e) => Err(e.into()),
        None => Ok(exit::SUCCESS),
    }
}

/// One endpoint's answer to `Maintenance.Status`.
#[derive(Debug, Clone)]
pub struct EpStatus {
    pub endpoint: String,
    pub status: StatusResponse,
}

/// One endpoint's health, as etcdctl reports it (`took` is a Go duration string).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EpHealth {
    pub endpoint: String,
    pub health: bool,
    pub took: String,
    pub error: String,
}

const STATUS_HEADERS: [&str; 10] = [
    "endpoint",
    "ID",
    "version",
    "db size",
    "is leader",
    "is learner",
    "raft term",
    "raft index",
    "raft applied index",
    "errors",
];

fn status_rows(list: &[EpStatus]) -> Vec<Vec<String>> {
    list.iter()
        .map(|s| {
            let r = &s.status;
            let member = r.header.as_ref().map(|h| h.member_id).unwrap_or(0);
            vec![
                s.endpoint.clone(),
                format!("{member:x}"),
                r.version.clone(),
                gofmt::humanize_bytes(u64::try_from(r.db_size).unwrap_or(0)),
                (r.leader == member).to_string(),
                r.is_learner.to_string(),
                r.raft_term.to_string(),
                r.raft_index.to_string(),
                r.raft_applied_index.to_string(),
                r.errors.join(", "),
            ]
        })
        .collect()
}

fn json_status(r: &StatusResponse) -> String {
    let errors: Vec<String> = r.errors.iter().map(|e| json_string(e)).collect();
    JsonObject::new()
        .object("header", json_header(&r.header))
        .string("version", &r.version)
        .int("dbSize", r.db_size)
        .uint("leader", r.leader)
        .uint("raftIndex", r.raft_index)
        .uint("raftTerm", r.raft_term)
        .uint("raftAppliedIndex", r.raft_applied_index)
        .array("errors", &errors)
        .int("dbSizeInUse", r.db_size_in_use)
        .bool("isLearner", r.is_learner)
        .string("storageVersion", &r.storage_version)
        .int("dbSizeQuota", r.db_size_quota)
        .finish()
}

/// Formats `endpoint status` output for `format`.
pub fn format_status(format: OutputFormat, list: &[EpStatus]) -> Result<String, CliError> {
    match format {
        OutputFormat::Simple => Ok(status_rows(list)
            .iter()
            .map(|row| format!("{}\n", row.join(", ")))
            .collect()),
        OutputFormat::Table => Ok(table::render(&STATUS_HEADERS, &status_rows(list))),
        OutputFormat::Json => {
            let items: Vec<String> = list
                .iter()
                .map(|s| {
                    JsonObject::new()
                        .raw("Endpoint", &json_string(&s.endpoint))
                        .raw("Status", &json_status(&s.status))
                        .finish()
                })
                .collect();
            Ok(format!("[{}]\n", items.join(",")))
        }
        OutputFormat::Fields => {
            let mut out = String::new();
            for s in list {
                let r = &s.status;
                fields_header(&mut out, &r.header);
                let _ = writeln!(out, "\"Version\" : {}", quote(r.version.as_bytes()));
                let _ = writeln!(out, "\"DBSize\" : {}", r.db_size);
                let _ = writeln!(out, "\"Leader\" : {}", r.leader);
                let _ = writeln!(out, "\"IsLearner\" : {}", r.is_learner);
                let _ = writeln!(out, "\"RaftIndex\" : {}", r.raft_index);
                let _ = writeln!(out, "\"RaftTerm\" : {}", r.raft_term);
                let _ = writeln!(out, "\"RaftAppliedIndex\" : {}", r.raft_applied_index);
                let _ = writeln!(out, "\"Errors\" : [{}]", r.errors.join(" "));
                let _ = writeln!(out, "\"Endpoint\" : {}", quote(s.endpoint.as_bytes()));
                out.push('\n');
            }
            Ok(out)
        }
        OutputFormat::Protobuf => Err(CliError::new(
            exit::BAD_FEATURE,
            "protobuf not supported as output format",
        )),
    }
}

/// Formats `endpoint health` output: (stdout, stderr). In simple form etcdctl reports healthy
/// endpoints on stdout and unhealthy ones on stderr.
pub fn format_health(
    format: OutputFormat,
    list: &[EpHealth],
) -> Result<(String, String), CliError> {
    let mut out = String::new();
    let mut err = String::new();
    match format {
        OutputFormat::Simple => {
            for h in list {
                if h.error.is_empty() {
                    let _ = writeln!(
                        out,
                        "{} is healthy: successfully committed proposal: took = {}",
                        h.endpoint, h.took
                    );
                } else {
                    let _ = writeln!(
                        err,
                        "{} is unhealthy: failed to commit proposal: {}",
                        h.endpoint, h.error
                    );
                }
            }
        }
        OutputFormat::Table => {
            let rows: Vec<Vec<String>> = list
                .iter()
                .map(|h| {
                    vec![
                        h.endpoint.clone(),
                        h.health.to_string(),
                        h.took.clone(),
                        h.error.clone(),
                    ]
                })
                .collect();
            out = table::render(&["endpoint", "health", "took", "error"], &rows);
        }
        OutputFormat::Json => {
            let items: Vec<String> = list
                .iter()
                .map(|h| {
                    JsonObject::new()
                        .raw("endpoint", &json_string(&h.endpoint))
                        .raw("health", if h.health { "true" } else { "false" })
                        .raw("took", &json_string(&h.took))
                        .string("error", &h.error)
                        .finish()
                })
                .collect();
            out = format!("[{}]\n", items.join(","));
        }
        OutputFormat::Fields => {
            for h in list {
                let _ = writeln!(out, "\"Endpoint\" : {}", quote(h.endpoint.as_bytes()));
                let _ = writeln!(out, "\"Health\" : {}", h.health);
                let _ = writeln!(out, "\"Took\" : {}", h.took);
                let _ = writeln!(out, "\"Error\" : {}", h.error);
                out.push('\n');
            }
        }
        OutputFormat::Protobuf => {
            return Err(CliError::new(
                exit::BAD_FEATURE,
                "protobuf not supported as output format",
            ))
        }
    }
    Ok((out, err))
}

async fn status(ctx: &Context, cluster: bool) -> anyhow::Result<i32> {
    let mut list = Vec::new();
    let mut failed = false;
    for endpoint in &super::maintenance::endpoints(ctx, cluster).await? {
        let answer = match ctx.connect_to(std::slice::from_ref(endpoint)).await {
            Ok(client) => {
                ctx.call(client.maintenance().status(ctx.request(StatusRequest {})))
                    .await
            }
            Err(e) => Err(e),
        };
        match answer {
            Ok(status) => list.push(EpStatus {
                endpoint: endpoint.clone(),
                status,
            }),
            Err(e) => {
                failed = true;
                eprintln!(
                    "Failed to get the status of endpoint {endpoint} ({})",
                    e.message
                );
            }
        }
    }
    emit(format_status(ctx.global.write_out, &list)?.as_bytes())?;
    // etcdctl exits 1 without an "Error:" line; the failures are already on stderr.
    Ok(if failed { exit::ERROR } else { exit::SUCCESS })
}

async fn health(ctx: &Context, cluster: bool) -> anyhow::Result<i32> {
    let endpoints = super::maintenance::endpoints(ctx, cluster).await?;
    let checks = endpoints.iter().map(|ep| check_health(ctx, ep.clone()));
    let list = futures::future::join_all(checks).await;
    let (out, err) = format_health(ctx.global.write_out, &list)?;
    emit(out.as_bytes())?;
    eprint!("{err}");
    if list.iter().any(|h| !h.error.is_empty()) {
        return Err(CliError::new(exit::ERROR, "unhealthy cluster").into());
    }
    Ok(exit::SUCCESS)
}

/// etcdctl's check: a linearizable Get of key "health" must go through consensus, then no
/// alarm may be raised.
async fn check_health(ctx: &Context, endpoint: String) -> EpHealth {
    let client = match ctx.connect_to(std::slice::from_ref(&endpoint)).await {
        Ok(c) => c,
        Err(e) => {
            return EpHealth {
                endpoint,
                health: false,
                took: String::new(),
                error: e.message,
            }
        }
    };
    let start = Instant::now();
    let get = RangeRequest {
        key: b"health".to_vec(),
        ..Default::default()
    };
    let answer = ctx.call_status(client.kv().range(ctx.request(get))).await;
    let took = gofmt::duration(start.elapsed());
    let mut h = EpHealth {
        endpoint,
        health: false,
        took,
        error: String::new(),
    };
    match answer {
        Ok(_) => h.health = true,
        // Permission denied still proves the request went through consensus.
        Err(s) if s.message() == "etcdserver: permission denied" => h.health = true,
        Err(s) => h.error = super::status_message(&s),
    }
    if !h.health {
        return h;
    }
    let alarms = AlarmRequest {
        action: AlarmAction::Get as i32,
        ..Default::default()
    };
    match ctx
        .call_status(client.maintenance().alarm(ctx.request(alarms)))
        .await
    {
        Ok(resp) if !resp.alarms.is_empty() => {
            h.health = false;
            h.error = "Active Alarm(s): ".to_string();
            for a in &resp.alarms {
                h.error.push_str(match AlarmType::try_from(a.alarm) {
                    Ok(AlarmType::Nospace) => "NOSPACE ",
                    Ok(AlarmType::Corrupt) => "CORRUPT ",
                    _ => "UNKNOWN ",
                });
            }
        }
        Ok(_) => {}
        // A server without alarms has none raised.
        Err(s) if s.code() == tonic::Code::Unimplemented => {}
        Err(_) => {
            h.health = false;
            h.error = "Unable to fetch the alarm list".to_string();
        }
    }
    h
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::proto::etcdserverpb::ResponseHeader;

    fn sample() -> Vec<EpStatus> {
        vec![EpStatus {
            endpoint: "127.0.0.1:23790".into(),
            status: StatusResponse {
                header: Some(ResponseHeader {
                    cluster_id: 324952591200643719,
                    member_id: 3319814642761637952,
                    revision: 13,
                    raft_term: 2,
                }),
                version: "3.4.23".into(),
                db_size: 20480,
                leader: 3319814642761637952,
                raft_index: 17,
                raft_term: 2,
                raft_applied_index: 17,
                db_size_in_use: 16384,
                ..Default::default()
            },
        }]
    }

    #[test]
    fn status_simple_and_table_match_etcdctl() {
        assert_eq!(
            format_status(OutputFormat::Simple, &sample()).unwrap(),
            "127.0.0.1:23790, 2e1259d415f2a040, 3.4.23, 20 kB, true, false, 2, 17, 17, \n"
        );
        let expected = "\
+-----------------+------------------+---------+---------+-----------+------------+-----------+------------+--------------------+--------+
|    ENDPOINT     |        ID        | VERSION | DB SIZE | IS LEADER | IS LEARNER | RAFT TERM | RAFT INDEX | RAFT APPLIED INDEX | ERRORS |
+-----------------+------------------+---------+---------+-----------+------------+-----------+------------+--------------------+--------+
| 127.0.0.1:23790 | 2e1259d415f2a040 |  3.4.23 |   20 kB |      true |      false |         2 |         17 |                 17 |        |
+-----------------+------------------+---------+---------+-----------+------------+-----------+------------+--------------------+--------+
";
        assert_eq!(
            format_status(OutputFormat::Table, &sample()).unwrap(),
            expected
        );
    }

    #[test]
    fn status_json_and_fields_match_etcdctl() {
        assert_eq!(
            format_status(OutputFormat::Json, &sample()).unwrap(),
            r#"[{"Endpoint":"127.0.0.1:23790","Status":{"header":{"cluster_id":324952591200643719,"member_id":3319814642761637952,"revision":13,"raft_term":2},"version":"3.4.23","dbSize":20480,"leader":3319814642761637952,"raftIndex":17,"raftTerm":2,"raftAppliedIndex":17,"dbSizeInUse":16384}}]"#
                .to_string()
                + "\n"
        );
        let fields = format_status(OutputFormat::Fields, &sample()).unwrap();
        assert!(fields.contains("\"Version\" : \"3.4.23\"\n\"DBSize\" : 20480\n"));
        assert!(fields.ends_with("\"Errors\" : []\n\"Endpoint\" : \"127.0.0.1:23790\"\n\n"));
        assert_eq!(
            format_status(OutputFormat::Protobuf, &sample())
                .unwrap_err()
                .message,
            "protobuf not supported as output format"
        );
    }

    #[test]
    fn health_reports_split_between_stdout_and_stderr() {
        let list = vec![
            EpHealth {
                endpoint: "127.0.0.1:23790".into(),
                health: true,
                took: "2.1ms".into(),
                error: String::new(),
            },
            EpHealth {
                endpoint: "127.0.0.1:1".into(),
                health: false,
                took: String::new(),
                error: "context deadline exceeded".into(),
            },
        ];
        let (out, err) = format_health(OutputFormat::Simple, &list).unwrap();
        assert_eq!(
            out,
            "127.0.0.1:23790 is healthy: successfully committed proposal: took = 2.1ms\n"
        );
        assert_eq!(
            err,
            "127.0.0.1:1 is unhealthy: failed to commit proposal: context deadline exceeded\n"
        );
        let (json, _) = format_health(OutputFormat::Json, &list).unwrap();
        assert_eq!(
            json,
            "[{\"endpoint\":\"127.0.0.1:23790\",\"health\":true,\"took\":\"2.1ms\"},{\"endpoint\":\"127.0.0.1:1\",\"health\":false,\"took\":\"\",\"error\":\"context deadline exceeded\"}]\n"
        );
        let (fields, _) = format_health(OutputFormat::Fields, &list[..1]).unwrap();
        assert_eq!(
            fields,
            "\"Endpoint\" : \"127.0.0.1:23790\"\n\"Health\" : true\n\"Took\" : 2.1ms\n\"Error\" : \n\n"
        );
    }
}
