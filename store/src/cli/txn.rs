//! `txn`: etcdctl's transaction grammar, read from stdin, interactively or not.
//!
//! Three sections, each ended by an empty line: compares (`mod("k") > "5"`), then the requests
//! run on success, then those run on failure (`put k v`, `get k --prefix`, `del k`). Requests
//! take the same flags as the `put`/`get`/`del` commands. The parser mirrors etcdctl's Go code
//! (a `Sscanf("%q) %s %q")` per compare and a regex tokenizer per request) so inputs written for
//! etcdctl mean the same here; where etcdctl panics (an unknown operator, a bad lease id) cairn
//! reports an error instead.
use std::ffi::OsString;
use std::io::BufRead;

use clap::{Args, Parser};

use super::gofmt::{self, quote};
use super::kv::{DelArgs, GetArgs, PutArgs};
use super::{emit, exit, CliError, Context};
use crate::proto::etcdserverpb::{
    compare::{CompareResult, CompareTarget, TargetUnion},
    request_op, Compare, RequestOp, TxnRequest,
};

#[derive(Debug, Clone, Args)]
pub struct TxnArgs {
    /// Input transaction in interactive mode.
    #[arg(short, long, num_args = 0..=1, require_equals = true, default_missing_value = "true", default_value = "false", value_parser = clap::builder::BoolishValueParser::new())]
    pub interactive: bool,
    /// etcdctl's txn takes no arguments; they are accepted only to be refused with its message.
    #[arg(hide = true)]
    pub extra: Vec<String>,
}

fn invalid_input(message: String) -> CliError {
    CliError::new(exit::INVALID_INPUT, message)
}

/// Reads a whole transaction; `prompt` receives each section's heading before it is read.
pub fn read_txn<R: BufRead>(
    reader: &mut R,
    mut prompt: impl FnMut(&str),
) -> Result<TxnRequest, CliError> {
    prompt("compares:");
    let compare = read_section(reader, parse_compare)?;
    prompt("success requests (get, put, del):");
    let success = read_section(reader, parse_request)?;
    prompt("failure requests (get, put, del):");
    let failure = read_section(reader, parse_request)?;
    Ok(TxnRequest {
        compare,
        success,
        failure,
    })
}

/// Parses lines until an empty one. Each line is parsed as soon as it is read, so an
/// interactive user hears about a mistake at once. A section cut short by end of input is an
/// error ("EOF"), as in etcdctl.
fn read_section<R: BufRead, T>(
    reader: &mut R,
    parse: fn(&str) -> Result<T, CliError>,
) -> Result<Vec<T>, CliError> {
    let mut items = Vec::new();
    loop {
        let mut buf = Vec::new();
        reader
            .read_until(b'\n', &mut buf)
            .map_err(|e| invalid_input(e.to_string()))?;
        if buf.last() != Some(&b'\n') {
            return Err(invalid_input("EOF".to_string()));
        }
        let text = String::from_utf8_lossy(&buf);
        let line = text.trim();
        if line.is_empty() {
            return Ok(items);
        }
        items.push(parse(line)?);
    }
}

/// One compare line: `target("key") op "value"`.
pub fn parse_compare(line: &str) -> Result<Compare, CliError> {
    let Some((target, rest)) = line.split_once('(') else {
        return Err(invalid_input(format!("malformed comparison: {line}")));
    };
    let scanned = scan_compare(rest);
    let Scanned {
        key,
        op,
        value,
        count,
    } = scanned;
    if count != 3 {
        return Err(invalid_input(format!(
            "malformed comparison: {line}; got {target}({}) {op} {}",
            quote(&key),
            quote(&value)
        )));
    }
    let result = match op.as_str() {
        "=" => CompareResult::Equal,
        "!=" => CompareResult::NotEqual,
        "<" => CompareResult::Less,
        ">" => CompareResult::Greater,
        _ => {
            return Err(invalid_input(format!(
                "malformed comparison: {line} (unknown result op {op})"
            )))
        }
    };
    let bad_value = || invalid_input(format!("invalid txn compare request: {line}"));
    let number = |radix| {
        std::str::from_utf8(&value)
            .ok()
            .and_then(|v| gofmt::parse_int(v, radix).ok())
            .ok_or_else(bad_value)
    };
    let (target, union) = match target {
        "ver" | "version" => (CompareTarget::Version, TargetUnion::Version(number(10)?)),
        "c" | "create" => (
            CompareTarget::Create,
            TargetUnion::CreateRevision(number(10)?),
        ),
        "m" | "mod" => (CompareTarget::Mod, TargetUnion::ModRevision(number(10)?)),
        "val" | "value" => (CompareTarget::Value, TargetUnion::Value(value.clone())),
        "lease" => (CompareTarget::Lease, TargetUnion::Lease(number(16)?)),
        other => {
            return Err(invalid_input(format!(
                "malformed comparison: {line} (unknown target {other})"
            )))
        }
    };
    Ok(Compare {
        result: result as i32,
        target: target as i32,
        key,
        range_end: Vec::new(),
        target_union: Some(union),
    })
}

/// What Go's `Sscanf(rest, "%q) %s %q", &key, &op, &val)` fills in, and how many it filled.
#[derive(Debug, Default)]
struct Scanned {
    key: Vec<u8>,
    op: String,
    value: Vec<u8>,
    count: usize,
}

fn scan_compare(input: &str) -> Scanned {
    let mut out = Scanned::default();
    let mut s = Scanner { rest: input };
    let Some(key) = s.quoted() else { return out };
    out.key = key;
    out.count = 1;
    if !s.literal(')') || !s.format_space() {
        return out;
    }
    let Some(op) = s.word() else { return out };
    out.op = op;
    out.count = 2;
    if !s.format_space() {
        return out;
    }
    let Some(value) = s.quoted() else { return out };
    out.value = value;
    out.count = 3;
    out
}

/// The subset of Go's `fmt` scanning that the compare format needs.
struct Scanner<'a> {
    rest: &'a str,
}

fn is_go_space(c: char) -> bool {
    c.is_whitespace()
}

impl Scanner<'_> {
    fn skip_space(&mut self) {
        self.rest = self.rest.trim_start_matches(is_go_space);
    }

    /// `%q`: a double-quoted (escapes allowed) or back-quoted Go string literal.
    fn quoted(&mut self) -> Option<Vec<u8>> {
        self.skip_space();
        let (lit, rest) = split_quoted(self.rest)?;
        self.rest = rest;
        unquote(lit)
    }

    /// A literal character of the format must be the next input character.
    fn literal(&mut self, c: char) -> bool {
        match self.rest.strip_prefix(c) {
            Some(rest) => {
                self.rest = rest;
                true
            }
            None => false,
        }
    }

    /// A space in the format needs at least one space in the input, unless the input ended.
    fn format_space(&mut self) -> bool {
        match self.rest.chars().next() {
            None => true,
            Some(c) if is_go_space(c) => {
                self.skip_space();
                true
            }
            Some(_) => false,
        }
    }

    /// `%s`: the next run of non-space characters.
    fn word(&mut self) -> Option<String> {
        self.skip_space();
        if self.rest.is_empty() {
            return None;
        }
        let end = self.rest.find(is_go_space).unwrap_or(self.rest.len());
        let (word, rest) = self.rest.split_at(end);
        self.rest = rest;
        Some(word.to_string())
    }
}

/// Splits a leading Go string literal (quotes included) off `s`.
fn split_quoted(s: &str) -> Option<(&str, &str)> {
    let mut chars = s.char_indices();
    let (_, open) = chars.next()?;
    match open {
        '`' => {
            let end = s[1..].find('`')? + 1;
            Some((&s[..=end], &s[end + 1..]))
        }
        '"' => {
            let mut escaped = false;
            for (i, c) in chars {
                if escaped {
                    escaped = false;
                } else if c == '\\' {
                    escaped = true;
                } else if c == '"' {
                    return Some((&s[..=i], &s[i + 1..]));
                }
            }
            None
        }
        _ => None,
    }
}

/// Go's `strconv.Unquote` for a double- or back-quoted literal; bytes, since `\xNN` may make the
/// result invalid UTF-8 (keys and values are bytes).
pub fn unquote(lit: &str) -> Option<Vec<u8>> {
    if lit.len() >= 2 && lit.starts_with('`') && lit.ends_with('`') {
        let body = &lit[1..lit.len() - 1];
        return (!body.contains('`')).then(|| body.replace('\r', "").into_bytes());
    }
    let body = lit.strip_prefix('"')?.strip_suffix('"')?;
    let mut out = Vec::with_capacity(body.len());
    let mut chars = body.chars();
    while let Some(c) = chars.next() {
        match c {
            '"' | '\n' => return None,
            '\\' => {
                let e = chars.next()?;
                let simple = match e {
                    'a' => Some(0x07),
                    'b' => Some(0x08),
                    'f' => Some(0x0c),
                    'n' => Some(b'\n'),
                    'r' => Some(b'\r'),
                    't' => Some(b'\t'),
                    'v' => Some(0x0b),
                    '\\' => Some(b'\\'),
                    '"' => Some(b'"'),
                    _ => None,
                };
                if let Some(b) = simple {
                    out.push(b);
                    continue;
                }
                match e {
                    'x' => out.push(u8::from_str_radix(&take(&mut chars, 2)?, 16).ok()?),
                    'u' | 'U' => {
                        let digits = take(&mut chars, if e == 'u' { 4 } else { 8 })?;
                        let cp = u32::from_str_radix(&digits, 16).ok()?;
                        let ch = char::from_u32(cp)?;
                        out.extend_from_slice(ch.encode_utf8(&mut [0; 4]).as_bytes());
                    }
                    '0'..='7' => {
                        let rest = take(&mut chars, 2)?;
                        let v = u32::from_str_radix(&format!("{e}{rest}"), 8).ok()?;
                        out.push(u8::try_from(v).ok()?);
                    }
                    _ => return None,
                }
            }
            c => out.extend_from_slice(c.encode_utf8(&mut [0; 4]).as_bytes()),
        }
    }
    Some(out)
}

fn take(chars: &mut std::str::Chars<'_>, n: usize) -> Option<String> {
    let s: String = chars.take(n).collect();
    (s.chars().count() == n).then_some(s)
}

/// etcdctl's `Argify`: splits a request line into words, honouring "double" (Go escapes) and
/// 'single' quotes. Tokens follow the regex `"(?:[^"\\]|\\.)*"|'[^']*'|[^'"\s]\S*[^'"\s]?`;
/// an unmatched quote character is skipped, as the regex skips it.
pub fn argify(line: &str) -> Result<Vec<Vec<u8>>, CliError> {
    let is_space = |c: char| matches!(c, ' ' | '\t' | '\n' | '\r' | '\x0c');
    let mut args = Vec::new();
    let mut rest = line;
    while let Some(c) = rest.chars().next() {
        match c {
            '"' => match split_quoted(rest) {
                Some((lit, tail)) => {
                    args.push(unquote(lit).ok_or_else(|| invalid_input("invalid syntax".into()))?);
                    rest = tail;
                }
                None => rest = &rest[1..],
            },
            '\'' => match rest[1..].find('\'') {
                Some(end) => {
                    args.push(rest.as_bytes()[1..end + 1].to_vec());
                    rest = &rest[end + 2..];
                }
                None => rest = &rest[1..],
            },
            c if is_space(c) => rest = &rest[c.len_utf8()..],
            _ => {
                let end = rest.find(is_space).unwrap_or(rest.len());
                args.push(rest.as_bytes()[..end].to_vec());
                rest = &rest[end..];
            }
        }
    }
    Ok(args)
}

/// The requests a txn line may hold, with the flags of the matching commands.
#[derive(Debug, Parser)]
#[command(no_binary_name = true, disable_help_subcommand = true)]
enum TxnOp {
    Put(PutArgs),
    Get(GetArgs),
    Del(DelArgs),
}

fn os_string(bytes: Vec<u8>) -> OsString {
    #[cfg(unix)]
    {
        std::os::unix::ffi::OsStringExt::from_vec(bytes)
    }
    #[cfg(not(unix))]
    {
        OsString::from(String::from_utf8_lossy(&bytes).into_owned())
    }
}

/// One request line: `put k v [--lease=..]`, `get k [range_end] [--prefix ...]`, `del k ...`.
pub fn parse_request(line: &str) -> Result<RequestOp, CliError> {
    let args = argify(line)?;
    if args.len() < 2 {
        return Err(invalid_input(format!(
            "invalid txn compare request: {line}"
        )));
    }
    let op = TxnOp::try_parse_from(args.into_iter().map(os_string))
        .map_err(|_| invalid_input(format!("invalid txn request: {line}")))?;
    let request = match op {
        // etcdctl would read a missing value from the same stdin the txn comes from; cairn
        // reports the missing argument instead.
        TxnOp::Put(a) => request_op::Request::RequestPut(a.to_request(|| None)?),
        TxnOp::Get(a) => request_op::Request::RequestRange(a.to_request()?),
        TxnOp::Del(a) => request_op::Request::RequestDeleteRange(a.to_request()?),
    };
    Ok(RequestOp {
        request: Some(request),
    })
}

pub async fn run(ctx: &Context, args: TxnArgs) -> anyhow::Result<i32> {
    if !args.extra.is_empty() {
        return Err(CliError::bad_args("txn command does not accept argument").into());
    }
    // Connect first, as etcdctl does, so an unreachable cluster is reported before any typing.
    let client = ctx.connect().await?;
    let interactive = args.interactive;
    let req = tokio::task::spawn_blocking(move || {
        read_txn(&mut std::io::stdin().lock(), |heading| {
            if interactive {
                println!("{heading}");
            }
        })
    })
    .await??;
    let resp = ctx.call(client.kv().txn(ctx.request(req))).await?;
    emit(&ctx.printer().txn(&resp)?)?;
    Ok(exit::SUCCESS)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::proto::etcdserverpb::{DeleteRangeRequest, PutRequest};

    fn cmp(result: CompareResult, target: CompareTarget, key: &[u8], u: TargetUnion) -> Compare {
        Compare {
            result: result as i32,
            target: target as i32,
            key: key.to_vec(),
            range_end: vec![],
            target_union: Some(u),
        }
    }

    #[test]
    fn compares_cover_every_target_and_alias() {
        use CompareResult::*;
        use CompareTarget as T;
        let cases = [
            (
                r#"mod("key1") > "0""#,
                cmp(Greater, T::Mod, b"key1", TargetUnion::ModRevision(0)),
            ),
            (
                r#"m("k") != "5""#,
                cmp(NotEqual, T::Mod, b"k", TargetUnion::ModRevision(5)),
            ),
            (
                r#"version("k") = "3""#,
                cmp(Equal, T::Version, b"k", TargetUnion::Version(3)),
            ),
            (
                r#"ver("k") < "3""#,
                cmp(Less, T::Version, b"k", TargetUnion::Version(3)),
            ),
            (
                r#"create("k") = "0""#,
                cmp(Equal, T::Create, b"k", TargetUnion::CreateRevision(0)),
            ),
            (
                r#"c("k") = "7""#,
                cmp(Equal, T::Create, b"k", TargetUnion::CreateRevision(7)),
            ),
            (
                r#"value("k") = "v""#,
                cmp(Equal, T::Value, b"k", TargetUnion::Value(b"v".to_vec())),
            ),
            (
                r#"val("k") = "a b""#,
                cmp(Equal, T::Value, b"k", TargetUnion::Value(b"a b".to_vec())),
            ),
            (
                r#"lease("k") = "694d77aa9e38260f""#,
                cmp(
                    Equal,
                    T::Lease,
                    b"k",
                    TargetUnion::Lease(0x694d77aa9e38260f),
                ),
            ),
        ];
        for (line, want) in cases {
            assert_eq!(parse_compare(line).unwrap(), want, "{line}");
        }
    }

    #[test]
    fn compare_values_take_go_escapes_and_spacing() {
        let c = parse_compare(r#"value("k\t1") = "a\"b\x41\u00e9\n""#).unwrap();
        assert_eq!(c.key, b"k\t1");
        assert_eq!(
            c.target_union,
            Some(TargetUnion::Value("a\"bAé\n".as_bytes().to_vec()))
        );
        let c = parse_compare(r#"value( "k") =   `raw\n` trailing"#).unwrap();
        assert_eq!(c.target_union, Some(TargetUnion::Value(br"raw\n".to_vec())));
        let c = parse_compare(r#"value("k") = "\xff\377""#).unwrap();
        assert_eq!(c.target_union, Some(TargetUnion::Value(vec![0xff, 0xff])));
    }

    #[test]
    fn malformed_compares_report_like_etcdctl() {
        let msg = |line: &str| parse_compare(line).unwrap_err().message;
        assert_eq!(msg("nothing"), "malformed comparison: nothing");
        assert_eq!(
            msg(r#"mod(k1) > "0""#),
            r#"malformed comparison: mod(k1) > "0"; got mod("")  """#
        );
        assert_eq!(
            msg(r#"mod("k1")"#),
            r#"malformed comparison: mod("k1"); got mod("k1")  """#
        );
        assert_eq!(
            msg(r#"value("k1")="x""#),
            r#"malformed comparison: value("k1")="x"; got value("k1")  """#
        );
        assert_eq!(
            msg(r#"foo("k1") > "0""#),
            r#"malformed comparison: foo("k1") > "0" (unknown target foo)"#
        );
        assert_eq!(
            msg(r#"mod("k1") > "x""#),
            r#"invalid txn compare request: mod("k1") > "x""#
        );
        assert_eq!(
            msg(r#"lease("k1") = "zz""#),
            r#"invalid txn compare request: lease("k1") = "zz""#
        );
        assert!(msg(r#"mod("k1") >> "1""#).contains("unknown result op >>"));
        assert!(msg(r#"value("k\q") = "1""#).starts_with("malformed comparison"));
        assert_eq!(
            parse_compare("nothing").unwrap_err().code,
            exit::INVALID_INPUT
        );
    }

    #[test]
    fn argify_splits_like_etcdctl() {
        let words = |line: &str| -> Vec<String> {
            argify(line)
                .unwrap()
                .into_iter()
                .map(|w| String::from_utf8(w).unwrap())
                .collect()
        };
        assert_eq!(words(r#"put k1 "over wrote""#), ["put", "k1", "over wrote"]);
        assert_eq!(words("put 'a b' 'c d'"), ["put", "a b", "c d"]);
        assert_eq!(words(r#"put "a\tb" "c\"d""#), ["put", "a\tb", "c\"d"]);
        assert_eq!(
            words(r#"get k --prefix  --limit=2"#),
            ["get", "k", "--prefix", "--limit=2"]
        );
        assert_eq!(words(r#"put a"b c"#), ["put", "a\"b", "c"]);
        assert_eq!(words(r#"put "unterminated"#), ["put", "unterminated"]);
        assert_eq!(
            argify(r#"put "bad\q" v"#).unwrap_err().message,
            "invalid syntax"
        );
    }

    #[test]
    fn requests_reuse_command_flags() {
        let put = parse_request(r#"put k1 "over wrote" --prev-kv"#).unwrap();
        assert_eq!(
            put.request,
            Some(request_op::Request::RequestPut(PutRequest {
                key: b"k1".to_vec(),
                value: b"over wrote".to_vec(),
                prev_kv: true,
                ..Default::default()
            }))
        );
        let Some(request_op::Request::RequestRange(get)) =
            parse_request("get k --prefix --limit=1").unwrap().request
        else {
            panic!("not a range")
        };
        assert_eq!(
            (get.key, get.range_end, get.limit),
            (b"k".to_vec(), b"l".to_vec(), 1)
        );
        assert_eq!(
            parse_request("del k z").unwrap().request,
            Some(request_op::Request::RequestDeleteRange(
                DeleteRangeRequest {
                    key: b"k".to_vec(),
                    range_end: b"z".to_vec(),
                    prev_kv: false,
                }
            ))
        );
    }

    #[test]
    fn bad_requests_report_like_etcdctl() {
        let err = |line: &str| parse_request(line).unwrap_err();
        assert_eq!(
            err("foo a b"),
            invalid_input("invalid txn request: foo a b".into())
        );
        assert_eq!(
            err("get k1 --bogus").message,
            "invalid txn request: get k1 --bogus"
        );
        assert_eq!(
            err("put"),
            invalid_input("invalid txn compare request: put".into())
        );
        assert_eq!(
            err("put a"),
            CliError::bad_args("put command needs 1 argument and input from stdin or 2 arguments")
        );
        assert_eq!(err("get a --prefix --from-key").code, exit::BAD_ARGS);
    }

    #[test]
    fn sections_end_at_blank_lines_and_eof_is_an_error() {
        let input =
            "mod(\"k1\") > \"0\"\n\nput k1 \"overwrote-k1\"\nget k1\n\n  put k1 created  \n\n";
        let mut prompts = Vec::new();
        let txn = read_txn(&mut input.as_bytes(), |p| prompts.push(p.to_string())).unwrap();
        assert_eq!(
            (txn.compare.len(), txn.success.len(), txn.failure.len()),
            (1, 2, 1)
        );
        assert_eq!(
            prompts,
            [
                "compares:",
                "success requests (get, put, del):",
                "failure requests (get, put, del):"
            ]
        );
        let short = "mod(\"k1\") > \"0\"\n\nput k1 x\n\n";
        let err = read_txn(&mut short.as_bytes(), |_| {}).unwrap_err();
        assert_eq!(err, invalid_input("EOF".into()));
        let empty = read_txn(&mut "\n\n\n".as_bytes(), |_| {}).unwrap();
        assert_eq!(empty, TxnRequest::default());
        let bad = read_txn(&mut "oops\n\n\n".as_bytes(), |_| {}).unwrap_err();
        assert_eq!(bad.message, "malformed comparison: oops");
    }
}
