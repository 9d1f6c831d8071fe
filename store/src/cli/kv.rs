//! `put`, `get`, `del` and `compaction`: flags, checks and messages as etcdctl has them.
//!
//! Each argument struct turns into its request through a pure `to_request`, which `txn` reuses
//! for the operations it reads from stdin.
use std::ffi::OsString;
use std::io::Read as _;

use clap::Args;

use super::{emit, exit, gofmt, CliError, Context, OutputFormat};
use crate::client::prefix_range_end;
use crate::proto::etcdserverpb::{
    range_request::{SortOrder, SortTarget},
    CompactionRequest, DeleteRangeRequest, PutRequest, RangeRequest,
};

// Boolean flags take an optional `=true|false` like Go's pflag (`--prefix=true` appears in etcd's
// own docs), so each is declared with an optional, equals-only value.

#[derive(Debug, Clone, Args)]
pub struct PutArgs {
    /// KEY [VALUE]; without VALUE the value is read from stdin.
    #[arg(value_name = "KEY [VALUE]")]
    pub args: Vec<OsString>,
    /// Lease ID (in hexadecimal) to attach to the key.
    #[arg(long, default_value = "0")]
    pub lease: String,
    /// Return the previous key-value pair before modification.
    #[arg(long, num_args = 0..=1, require_equals = true, default_missing_value = "true", default_value = "false", value_parser = clap::builder::BoolishValueParser::new())]
    pub prev_kv: bool,
    /// Update the key using its current value.
    #[arg(long, num_args = 0..=1, require_equals = true, default_missing_value = "true", default_value = "false", value_parser = clap::builder::BoolishValueParser::new())]
    pub ignore_value: bool,
    /// Update the key using its current lease.
    #[arg(long, num_args = 0..=1, require_equals = true, default_missing_value = "true", default_value = "false", value_parser = clap::builder::BoolishValueParser::new())]
    pub ignore_lease: bool,
}

const PUT_ARGS: &str = "put command needs 1 argument and input from stdin or 2 arguments";

impl PutArgs {
    /// Builds the request; `stdin` is consulted only when the value is not on the command line.
    pub fn to_request(
        &self,
        stdin: impl FnOnce() -> Option<Vec<u8>>,
    ) -> Result<PutRequest, CliError> {
        let key = self
            .args
            .first()
            .ok_or_else(|| CliError::bad_args(PUT_ARGS))?;
        if self.ignore_value && self.args.len() > 1 {
            return Err(CliError::bad_args(
                "put command needs only 1 argument when 'ignore-value' is set",
            ));
        }
        let value = if self.ignore_value {
            Vec::new()
        } else if let Some(v) = self.args.get(1) {
            v.clone().into_encoded_bytes()
        } else {
            match stdin() {
                Some(v) if !v.is_empty() => v,
                _ => return Err(CliError::bad_args(PUT_ARGS)),
            }
        };
        let lease = gofmt::parse_int(&self.lease, 16)
            .map_err(|e| CliError::bad_args(format!("bad lease ID ({e}), expecting ID in Hex")))?;
        Ok(PutRequest {
            key: key.clone().into_encoded_bytes(),
            value,
            lease,
            prev_kv: self.prev_kv,
            ignore_value: self.ignore_value,
            ignore_lease: self.ignore_lease,
        })
    }
}

#[derive(Debug, Clone, Args)]
pub struct GetArgs {
    #[arg(value_name = "KEY [RANGE_END]")]
    pub args: Vec<OsString>,
    /// Linearizable(l) or Serializable(s).
    #[arg(long, default_value = "l")]
    pub consistency: String,
    /// Order of results; ASCEND or DESCEND (ASCEND by default).
    #[arg(long, default_value = "")]
    pub order: String,
    /// Sort target; CREATE, KEY, MODIFY, VALUE, or VERSION.
    #[arg(long, default_value = "")]
    pub sort_by: String,
    /// Maximum number of results.
    #[arg(long, default_value_t = 0, allow_negative_numbers = true)]
    pub limit: i64,
    /// Get keys with matching prefix.
    #[arg(long, num_args = 0..=1, require_equals = true, default_missing_value = "true", default_value = "false", value_parser = clap::builder::BoolishValueParser::new())]
    pub prefix: bool,
    /// Get keys that are greater than or equal to the given key using byte compare.
    #[arg(long, num_args = 0..=1, require_equals = true, default_missing_value = "true", default_value = "false", value_parser = clap::builder::BoolishValueParser::new())]
    pub from_key: bool,
    /// Specify the kv revision.
    #[arg(long, default_value_t = 0, allow_negative_numbers = true)]
    pub rev: i64,
    /// Get only the keys.
    #[arg(long, num_args = 0..=1, require_equals = true, default_missing_value = "true", default_value = "false", value_parser = clap::builder::BoolishValueParser::new())]
    pub keys_only: bool,
    /// Get only the count (with -w fields).
    #[arg(long, num_args = 0..=1, require_equals = true, default_missing_value = "true", default_value = "false", value_parser = clap::builder::BoolishValueParser::new())]
    pub count_only: bool,
    /// Only write values when using the "simple" output format.
    #[arg(long, num_args = 0..=1, require_equals = true, default_missing_value = "true", default_value = "false", value_parser = clap::builder::BoolishValueParser::new())]
    pub print_value_only: bool,
}

const PREFIX_AND_FROM_KEY: &str =
    "`--prefix` and `--from-key` cannot be set at the same time, choose one";
const TOO_MANY_WITH_PREFIX: &str =
    "too many arguments, only accept one argument when `--prefix` or `--from-key` is set";

/// The `[key, range_end)` etcdctl derives from its arguments and `--prefix`/`--from-key`.
fn key_range(
    key: Vec<u8>,
    range_end: Option<Vec<u8>>,
    prefix: bool,
    from_key: bool,
) -> (Vec<u8>, Vec<u8>) {
    // An empty key with --prefix or --from-key means the whole keyspace: ["\0", "\0").
    if (prefix || from_key) && key.is_empty() {
        return (vec![0], vec![0]);
    }
    if prefix {
        let end = prefix_range_end(&key);
        return (key, end);
    }
    if from_key {
        return (key, vec![0]);
    }
    (key, range_end.unwrap_or_default())
}

impl GetArgs {
    pub fn to_request(&self) -> Result<RangeRequest, CliError> {
        let key = self.args.first().ok_or_else(|| {
            CliError::bad_args(
                "get command needs one argument as key and an optional argument as range_end",
            )
        })?;
        if self.prefix && self.from_key {
            return Err(CliError::bad_args(PREFIX_AND_FROM_KEY));
        }
        if self.keys_only && self.count_only {
            return Err(CliError::bad_args(
                "`--keys-only` and `--count-only` cannot be set at the same time, choose one",
            ));
        }
        let serializable = match self.consistency.as_str() {
            "s" => true,
            "l" => false,
            other => {
                return Err(CliError::new(
                    exit::BAD_FEATURE,
                    format!(
                        "unknown consistency flag {}",
                        gofmt::quote(other.as_bytes())
                    ),
                ))
            }
        };
        let range_end = self.args.get(1).map(|e| e.clone().into_encoded_bytes());
        if range_end.is_some() && (self.prefix || self.from_key) {
            return Err(CliError::bad_args(TOO_MANY_WITH_PREFIX));
        }
        let mut sort_order = match self.order.to_uppercase().as_str() {
            "ASCEND" => SortOrder::Ascend,
            "DESCEND" => SortOrder::Descend,
            "" => SortOrder::None,
            _ => {
                return Err(CliError::new(
                    exit::BAD_FEATURE,
                    format!("bad sort order {}", self.order),
                ))
            }
        };
        let sort_target = match self.sort_by.to_uppercase().as_str() {
            "CREATE" => SortTarget::Create,
            "KEY" | "" => SortTarget::Key,
            "MODIFY" => SortTarget::Mod,
            "VALUE" => SortTarget::Value,
            "VERSION" => SortTarget::Version,
            _ => {
                return Err(CliError::new(
                    exit::BAD_FEATURE,
                    format!("bad sort target {}", self.sort_by),
                ))
            }
        };
        // The server already returns keys in ascending order; clientv3 drops that sort so the
        // server need not sort the whole range before applying the limit.
        if sort_target == SortTarget::Key && sort_order == SortOrder::Ascend {
            sort_order = SortOrder::None;
        }
        let (key, range_end) = key_range(
            key.clone().into_encoded_bytes(),
            range_end,
            self.prefix,
            self.from_key,
        );
        Ok(RangeRequest {
            key,
            range_end,
            limit: self.limit,
            revision: self.rev.max(0),
            sort_order: sort_order as i32,
            sort_target: sort_target as i32,
            serializable,
            keys_only: self.keys_only,
            count_only: self.count_only,
            ..Default::default()
        })
    }
}

#[derive(Debug, Clone, Args)]
pub struct DelArgs {
    #[arg(value_name = "KEY [RANGE_END]")]
    pub args: Vec<OsString>,
    /// Delete keys with matching prefix.
    #[arg(long, num_args = 0..=1, require_equals = true, default_missing_value = "true", default_value = "false", value_parser = clap::builder::BoolishValueParser::new())]
    pub prefix: bool,
    /// Return deleted key-value pairs.
    #[arg(long, num_args = 0..=1, require_equals = true, default_missing_value = "true", default_value = "false", value_parser = clap::builder::BoolishValueParser::new())]
    pub prev_kv: bool,
    /// Delete keys that are greater than or equal to the given key using byte compare.
    #[arg(long, num_args = 0..=1, require_equals = true, default_missing_value = "true", default_value = "false", value_parser = clap::builder::BoolishValueParser::new())]
    pub from_key: bool,
}

impl DelArgs {
    pub fn to_request(&self) -> Result<DeleteRangeRequest, CliError> {
        if self.args.is_empty() || self.args.len() > 2 {
            return Err(CliError::bad_args(
                "del command needs one argument as key and an optional argument as range_end",
            ));
        }
        if self.prefix && self.from_key {
            return Err(CliError::bad_args(PREFIX_AND_FROM_KEY));
        }
        let range_end = self.args.get(1).map(|e| e.clone().into_encoded_bytes());
        if range_end.is_some() && (self.prefix || self.from_key) {
            return Err(CliError::bad_args(TOO_MANY_WITH_PREFIX));
        }
        let key = self.args[0].clone().into_encoded_bytes();
        let (key, range_end) = key_range(key, range_end, self.prefix, self.from_key);
        Ok(DeleteRangeRequest {
            key,
            range_end,
            prev_kv: self.prev_kv,
        })
    }
}

#[derive(Debug, Clone, Args)]
pub struct CompactionArgs {
    /// The revision to compact up to.
    #[arg(value_name = "REVISION", allow_negative_numbers = true)]
    pub args: Vec<String>,
    /// Wait until the compaction is physically applied on the members.
    #[arg(long, num_args = 0..=1, require_equals = true, default_missing_value = "true", default_value = "false", value_parser = clap::builder::BoolishValueParser::new())]
    pub physical: bool,
}

impl CompactionArgs {
    pub fn to_request(&self) -> Result<CompactionRequest, CliError> {
        let [rev] = self.args.as_slice() else {
            return Err(CliError::bad_args("compaction command needs 1 argument"));
        };
        let revision = gofmt::parse_int(rev, 10).map_err(|e| CliError::new(exit::ERROR, e))?;
        Ok(CompactionRequest {
            revision,
            physical: self.physical,
        })
    }
}

fn read_stdin() -> Option<Vec<u8>> {
    let mut buf = Vec::new();
    std::io::stdin().read_to_end(&mut buf).ok()?;
    Some(buf)
}

pub async fn put(ctx: &Context, args: PutArgs) -> anyhow::Result<i32> {
    let req = args.to_request(read_stdin)?;
    let client = ctx.connect().await?;
    let resp = ctx.call(client.kv().put(ctx.request(req))).await?;
    emit(&ctx.printer().put(&resp)?)?;
    Ok(exit::SUCCESS)
}

pub async fn get(ctx: &Context, args: GetArgs) -> anyhow::Result<i32> {
    let req = args.to_request()?;
    let client = ctx.connect().await?;
    let resp = ctx.call(client.kv().range(ctx.request(req))).await?;
    let mut printer = ctx.printer();
    // etcdctl checks these after the request, so an RPC error wins over a format complaint.
    if args.count_only && printer.format != OutputFormat::Fields {
        return Err(CliError::bad_args("--count-only is only for `--write-out=fields`").into());
    }
    if args.print_value_only {
        if printer.format != OutputFormat::Simple {
            return Err(
                CliError::bad_args("print-value-only is only for `--write-out=simple`").into(),
            );
        }
        printer.value_only = true;
    }
    emit(&printer.get(&resp)?)?;
    Ok(exit::SUCCESS)
}

pub async fn del(ctx: &Context, args: DelArgs) -> anyhow::Result<i32> {
    let req = args.to_request()?;
    let client = ctx.connect().await?;
    let resp = ctx.call(client.kv().delete_range(ctx.request(req))).await?;
    emit(&ctx.printer().del(&resp)?)?;
    Ok(exit::SUCCESS)
}

pub async fn compaction(ctx: &Context, args: CompactionArgs) -> anyhow::Result<i32> {
    let req = args.to_request()?;
    let revision = req.revision;
    let client = ctx.connect().await?;
    ctx.call(client.kv().compact(ctx.request(req))).await?;
    // etcdctl prints this line whatever the output format.
    emit(format!("compacted revision {revision}\n").as_bytes())?;
    Ok(exit::SUCCESS)
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(Parser)]
    struct Cmd {
        #[command(subcommand)]
        op: Op,
    }

    #[derive(clap::Subcommand)]
    enum Op {
        Put(PutArgs),
        Get(GetArgs),
        Del(DelArgs),
        Compaction(CompactionArgs),
    }

    fn parse(line: &str) -> Op {
        Cmd::try_parse_from(std::iter::once("cairn").chain(line.split_whitespace()))
            .unwrap()
            .op
    }

    fn get(line: &str) -> Result<RangeRequest, CliError> {
        match parse(line) {
            Op::Get(a) => a.to_request(),
            _ => unreachable!(),
        }
    }

    #[test]
    fn get_prefix_and_from_key_ranges() {
        let r = get("get foo --prefix").unwrap();
        assert_eq!((r.key, r.range_end), (b"foo".to_vec(), b"fop".to_vec()));
        let r = get("get foo --from-key").unwrap();
        assert_eq!((r.key, r.range_end), (b"foo".to_vec(), vec![0]));
        let r = get("get a z").unwrap();
        assert_eq!((r.key, r.range_end), (b"a".to_vec(), b"z".to_vec()));
        let r = get("get foo --prefix=true --keys-only").unwrap();
        assert!(r.keys_only);
        assert_eq!(r.range_end, b"fop".to_vec());
    }

    #[test]
    fn get_sort_follows_clientv3() {
        let r = get("get a --sort-by=key --order=ascend").unwrap();
        assert_eq!(
            (r.sort_target, r.sort_order),
            (SortTarget::Key as i32, SortOrder::None as i32)
        );
        let r = get("get a --sort-by=MODIFY --order=DESCEND --limit 3 --rev 7").unwrap();
        assert_eq!(r.sort_target, SortTarget::Mod as i32);
        assert_eq!(r.sort_order, SortOrder::Descend as i32);
        assert_eq!((r.limit, r.revision), (3, 7));
        assert!(get("get a --consistency=s").unwrap().serializable);
    }

    #[test]
    fn get_rejects_what_etcdctl_rejects() {
        let err = get("get foo --prefix --from-key").unwrap_err();
        assert_eq!(err, CliError::bad_args(PREFIX_AND_FROM_KEY));
        assert_eq!(
            get("get foo z --prefix").unwrap_err(),
            CliError::bad_args(TOO_MANY_WITH_PREFIX)
        );
        assert_eq!(
            get("get foo --sort-by=bogus").unwrap_err().message,
            "bad sort target bogus"
        );
        assert_eq!(
            get("get foo --order=up").unwrap_err().code,
            exit::BAD_FEATURE
        );
        assert_eq!(
            get("get foo --consistency=x").unwrap_err().message,
            "unknown consistency flag \"x\""
        );
        assert_eq!(get("get").unwrap_err().code, exit::BAD_ARGS);
        assert_eq!(
            get("get a --keys-only --count-only").unwrap_err().code,
            exit::BAD_ARGS
        );
    }

    #[test]
    fn put_value_from_args_or_stdin() {
        let Op::Put(a) = parse("put k v --prev-kv --lease=1a") else {
            unreachable!()
        };
        let r = a.to_request(|| panic!("stdin must not be read")).unwrap();
        assert_eq!(
            (r.key, r.value, r.lease, r.prev_kv),
            (b"k".to_vec(), b"v".to_vec(), 0x1a, true)
        );
        let Op::Put(a) = parse("put k") else {
            unreachable!()
        };
        assert_eq!(
            a.to_request(|| Some(b"from stdin\n".to_vec()))
                .unwrap()
                .value,
            b"from stdin\n"
        );
        assert_eq!(
            a.to_request(|| Some(Vec::new())).unwrap_err(),
            CliError::bad_args(PUT_ARGS)
        );
        let Op::Put(a) = parse("put k v --ignore-value") else {
            unreachable!()
        };
        assert_eq!(a.to_request(|| None).unwrap_err().code, exit::BAD_ARGS);
        let Op::Put(a) = parse("put k v --lease=zz") else {
            unreachable!()
        };
        assert_eq!(
            a.to_request(|| None).unwrap_err().message,
            r#"bad lease ID (strconv.ParseInt: parsing "zz": invalid syntax), expecting ID in Hex"#
        );
    }

    #[test]
    fn del_and_compaction_arguments() {
        let Op::Del(a) = parse("del ab --prefix --prev-kv") else {
            unreachable!()
        };
        let r = a.to_request().unwrap();
        assert_eq!(
            (r.key, r.range_end, r.prev_kv),
            (b"ab".to_vec(), b"ac".to_vec(), true)
        );
        let Op::Del(a) = parse("del a b c") else {
            unreachable!()
        };
        assert_eq!(a.to_request().unwrap_err().code, exit::BAD_ARGS);
        let Op::Compaction(a) = parse("compaction 5 --physical") else {
            unreachable!()
        };
        assert_eq!(
            a.to_request().unwrap(),
            CompactionRequest {
                revision: 5,
                physical: true
            }
        );
        let Op::Compaction(a) = parse("compaction x") else {
            unreachable!()
        };
        assert_eq!(
            a.to_request().unwrap_err(),
            CliError::new(
                exit::ERROR,
                r#"strconv.ParseInt: parsing "x": invalid syntax"#
            )
        );
    }

    #[test]
    fn empty_key_with_prefix_covers_everything() {
        let a = GetArgs {
            args: vec![OsString::new()],
            ..match parse("get x --prefix") {
                Op::Get(a) => a,
                _ => unreachable!(),
            }
        };
        let r = a.to_request().unwrap();
        assert_eq!((r.key, r.range_end), (vec![0], vec![0]));
    }
}
