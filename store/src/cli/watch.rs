//! `watch`: one Watch stream, one watcher (or, with `-i`, one per `watch ...` line read from
//! stdin, all on the same stream as clientv3 shares it), responses printed as they arrive.
//!
//! `watch KEY -- CMD ARGS` runs CMD once per event with etcdctl's `ETCD_WATCH_*` variables.
//! Exit codes follow etcdctl: a watch that the server cancels ends with 5 ("watch is canceled
//! by the server"); in interactive mode, end of input ends with 3.
use std::collections::{HashMap, VecDeque};
use std::ffi::OsString;
use std::io::BufRead as _;

use clap::{Args, Parser};
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;

use super::output::Printer;
use super::watch_print::{self, cancel_reason, format_response, is_progress_notify};
use super::{emit, exit, gofmt, CliError, Context};
use crate::client::{prefix_range_end, Client};
use crate::proto::etcdserverpb::{
    watch_request::RequestUnion, WatchCreateRequest, WatchProgressRequest, WatchRequest,
    WatchResponse,
};

#[derive(Debug, Clone, Args)]
pub struct WatchArgs {
    /// [key or prefix] [range_end]
    #[arg(value_name = "KEY [RANGE_END]")]
    pub args: Vec<OsString>,
    /// Interactive mode.
    #[arg(short = 'i', long, num_args = 0..=1, require_equals = true, default_missing_value = "true", default_value = "false", value_parser = clap::builder::BoolishValueParser::new())]
    pub interactive: bool,
    /// Watch on a prefix if prefix is set.
    #[arg(long, num_args = 0..=1, require_equals = true, default_missing_value = "true", default_value = "false", value_parser = clap::builder::BoolishValueParser::new())]
    pub prefix: bool,
    /// Revision to start watching.
    #[arg(long, default_value_t = 0, allow_negative_numbers = true)]
    pub rev: i64,
    /// Get the previous key-value pair before the event happens.
    #[arg(long, num_args = 0..=1, require_equals = true, default_missing_value = "true", default_value = "false", value_parser = clap::builder::BoolishValueParser::new())]
    pub prev_kv: bool,
    /// Get periodic watch progress notification from server.
    #[arg(long, num_args = 0..=1, require_equals = true, default_missing_value = "true", default_value = "false", value_parser = clap::builder::BoolishValueParser::new())]
    pub progress_notify: bool,
    /// [-- exec-command arg1 arg2 ...] run for every event.
    #[arg(last = true, value_name = "COMMAND")]
    pub exec: Vec<OsString>,
}

/// A `watch ...` line of interactive mode, parsed with the same flags.
#[derive(Debug, Parser)]
#[command(no_binary_name = true, disable_help_flag = true)]
struct InteractiveLine {
    #[command(flatten)]
    args: WatchArgs,
}

const BAD_ARGS_NUM: &str = "bad number of arguments";

/// One watcher's options: what to ask for and what to run per event.
#[derive(Debug, Clone)]
struct Watcher {
    create: WatchCreateRequest,
    exec: Vec<OsString>,
}

/// The etcdctl argument rules (`getWatchChan`, `parseWatchArgs`), turned into a watcher.
fn watcher_from(
    a: &WatchArgs,
    env_key: Option<Vec<u8>>,
    env_range: Option<Vec<u8>>,
    saw_separator: bool,
) -> Result<Watcher, CliError> {
    if saw_separator && a.exec.is_empty() {
        return Err(CliError::bad_args(
            "bad number of arguments (found separator --, but no commands)",
        ));
    }
    let mut args: Vec<Vec<u8>> = a
        .args
        .iter()
        .map(|s| s.clone().into_encoded_bytes())
        .collect();
    if let Some(key) = env_key {
        if !args.is_empty() {
            return Err(CliError::bad_args(
                "bad number of arguments (found conflicting environment key)",
            ));
        }
        args.push(key);
        args.extend(env_range);
    }
    let Some(key) = args.first().cloned() else {
        return Err(CliError::bad_args(BAD_ARGS_NUM));
    };
    let mut range_end = Vec::new();
    if args.len() == 2 {
        if a.prefix {
            return Err(CliError::bad_args(
                "`range_end` and `--prefix` are mutually exclusive",
            ));
        }
        range_end = args[1].clone();
    }
    let (key, range_end) = if a.prefix && key.is_empty() {
        // clientv3's WithPrefix on an empty key watches the whole keyspace.
        (vec![0], vec![0])
    } else if a.prefix {
        let end = prefix_range_end(&key);
        (key, end)
    } else {
        (key, range_end)
    };
    Ok(Watcher {
        create: WatchCreateRequest {
            key,
            range_end,
            start_revision: a.rev,
            progress_notify: a.progress_notify,
            prev_kv: a.prev_kv,
            ..Default::default()
        },
        exec: a.exec.clone(),
    })
}

fn env_bytes(name: &str) -> Option<Vec<u8>> {
    std::env::var_os(name)
        .filter(|v| !v.is_empty())
        .map(|v| v.into_encoded_bytes())
}

/// Whether `--` followed `watch` on the command line (clap drops a trailing, empty one).
fn separator_given() -> bool {
    std::env::args_os()
        .skip_while(|a| a != "watch")
        .any(|a| a == "--")
}

pub async fn run(ctx: &Context, a: WatchArgs) -> anyhow::Result<i32> {
    let env_key = env_bytes("ETCDCTL_WATCH_KEY");
    let env_range = env_bytes("ETCDCTL_WATCH_RANGE_END");
    if env_key.is_none() {
        if let Some(r) = &env_range {
            return Err(CliError::bad_args(format!(
                "ETCDCTL_WATCH_KEY is empty but got ETCDCTL_WATCH_RANGE_END={}",
                gofmt::quote(r)
            ))
            .into());
        }
    }
    watch_print::check_format(ctx.global.write_out)?;
    let mut session = Session::new(ctx.connect().await?, ctx.printer());
    if a.interactive {
        return interactive(&mut session, &a, env_key, env_range).await;
    }
    let watcher = watcher_from(&a, env_key, env_range, separator_given())?;
    session.create(watcher).await?;
    loop {
        let msg = session.next().await;
        session.handle(msg)?;
        if session.is_idle() {
            return Err(CliError::new(exit::INTERRUPTED, "watch is canceled by the server").into());
        }
    }
}

async fn interactive(
    session: &mut Session,
    cmd: &WatchArgs,
    env_key: Option<Vec<u8>>,
    env_range: Option<Vec<u8>>,
) -> anyhow::Result<i32> {
    let mut lines = stdin_lines();
    loop {
        tokio::select! {
            line = lines.recv() => {
                let Some(line) = line else {
                    return Err(CliError::new(
                        exit::INVALID_INPUT,
                        "error reading watch request line: EOF",
                    )
                    .into());
                };
                interactive_line(session, cmd, &line, env_key.clone(), env_range.clone()).await?;
            }
            msg = session.next() => session.handle(msg)?,
        }
    }
}

async fn interactive_line(
    session: &mut Session,
    cmd: &WatchArgs,
    line: &str,
    env_key: Option<Vec<u8>>,
    env_range: Option<Vec<u8>>,
) -> Result<(), CliError> {
    let words: Vec<OsString> = super::txn::argify(line)?
        .into_iter()
        .map(|w| OsString::from(String::from_utf8_lossy(&w).into_owned()))
        .collect();
    let Some(first) = words.first() else {
        eprintln!("Invalid command: {line} (watch and progress supported)");
        return Ok(());
    };
    match first.to_str() {
        Some("watch") => {
            if words.len() < 2 && env_key.is_none() {
                eprintln!("Invalid command {line} (command type or key is not provided)");
                return Ok(());
            }
            let parsed = InteractiveLine::try_parse_from(&words[1..]).map_err(|e| {
                let text = e.to_string();
                let first = text.lines().next().unwrap_or_default();
                CliError::bad_args(first.trim_start_matches("error: ").to_string())
            })?;
            let mut args = parsed.args;
            args.progress_notify |= cmd.progress_notify;
            let saw_separator = words.iter().any(|w| w == "--");
            match watcher_from(&args, env_key, env_range, saw_separator) {
                Ok(w) => session.create(w).await?,
                Err(e)
                    if e.message
                        .starts_with("bad number of arguments (found separator") =>
                {
                    return Err(e)
                }
                Err(e) => eprintln!("Invalid command {line} ({})", e.message),
            }
        }
        Some("progress") => session.request_progress().await,
        _ => eprintln!("Invalid command {line} (only support watch)"),
    }
    Ok(())
}

/// Lines of stdin, read on a thread; the channel closes at end of input. A last line without a
/// newline counts as end of input, as Go's `ReadString('\n')` reports it.
fn stdin_lines() -> mpsc::Receiver<String> {
    let (tx, rx) = mpsc::channel(16);
    std::thread::spawn(move || {
        let stdin = std::io::stdin();
        let mut lock = stdin.lock();
        loop {
            let mut buf = String::new();
            match lock.read_line(&mut buf) {
                Ok(n) if n > 0 && buf.ends_with('\n') => {
                    buf.pop();
                    if tx.blocking_send(buf).is_err() {
                        return;
                    }
                }
                _ => return,
            }
        }
    });
    rx
}

type Incoming = Option<Result<WatchResponse, tonic::Status>>;

/// The shared Watch stream and the watchers on it.
struct Session {
    client: Client,
    printer: Printer,
    tx: Option<mpsc::Sender<WatchRequest>>,
    stream: Option<tonic::Streaming<WatchResponse>>,
    /// Creates sent but not yet acknowledged; the server answers them in order.
    pending: VecDeque<Watcher>,
    active: HashMap<i64, Watcher>,
    /// Events of a fragmented response, until its last fragment arrives.
    fragments: HashMap<i64, Vec<crate::proto::mvccpb::Event>>,
}

impl Session {
    fn new(client: Client, printer: Printer) -> Self {
        Self {
            client,
            printer,
            tx: None,
            stream: None,
            pending: VecDeque::new(),
            active: HashMap::new(),
            fragments: HashMap::new(),
        }
    }

    fn is_idle(&self) -> bool {
        self.pending.is_empty() && self.active.is_empty()
    }

    async fn send(&mut self, req: WatchRequest) -> Result<(), CliError> {
        if self.tx.is_none() {
            let (tx, rx) = mpsc::channel(16);
            // Queue the request first: a server may send no headers before its first response.
            let _ = tx.send(req).await;
            let mut request = tonic::Request::new(ReceiverStream::new(rx));
            // clientv3.WithRequireLeader: the server cancels the stream while it has no leader.
            request.metadata_mut().insert(
                "hasleader",
                tonic::metadata::MetadataValue::from_static("true"),
            );
            let stream = self
                .client
                .watch()
                .watch(request)
                .await
                .map_err(|s| CliError::from_status(&s))?
                .into_inner();
            self.tx = Some(tx);
            self.stream = Some(stream);
            return Ok(());
        }
        if let Some(tx) = &self.tx {
            tx.send(req)
                .await
                .map_err(|_| CliError::new(exit::ERROR, "watch stream closed"))?;
        }
        Ok(())
    }

    async fn create(&mut self, w: Watcher) -> Result<(), CliError> {
        let req = WatchRequest {
            request_union: Some(RequestUnion::CreateRequest(w.create.clone())),
        };
        self.pending.push_back(w);
        self.send(req).await
    }

    async fn request_progress(&mut self) {
        // Like clientv3, a progress request without any watch stream is a no-op.
        if self.tx.is_some() {
            let req = WatchRequest {
                request_union: Some(RequestUnion::ProgressRequest(WatchProgressRequest {})),
            };
            let _ = self.send(req).await;
        }
    }

    /// The next message of the stream; never resolves while there is no stream.
    async fn next(&mut self) -> Incoming {
        match &mut self.stream {
            Some(s) => s.message().await.transpose(),
            None => std::future::pending().await,
        }
    }

    fn handle(&mut self, msg: Incoming) -> Result<(), CliError> {
        let mut resp = match msg {
            Some(Ok(r)) => r,
            Some(Err(status)) => {
                eprintln!("watch was canceled ({})", super::status_message(&status));
                return Err(CliError::new(
                    exit::INTERRUPTED,
                    "watch is canceled by the server",
                ));
            }
            None => {
                return Err(CliError::new(
                    exit::INTERRUPTED,
                    "watch is canceled by the server",
                ))
            }
        };
        if resp.fragment {
            self.fragments
                .entry(resp.watch_id)
                .or_default()
                .append(&mut resp.events);
            return Ok(());
        }
        if let Some(mut head) = self.fragments.remove(&resp.watch_id) {
            head.append(&mut resp.events);
            resp.events = head;
        }
        if resp.created {
            if let Some(w) = self.pending.pop_front() {
                self.active.insert(resp.watch_id, w);
            }
            // clientv3 does not pass creation acknowledgements on to etcdctl.
            if !resp.canceled {
                return Ok(());
            }
        }
        // A RequestProgress answer (watch_id -1) reaches every watcher of the stream.
        let targets: Vec<i64> = if resp.watch_id == -1 {
            let mut ids: Vec<i64> = self.active.keys().copied().collect();
            ids.sort_unstable();
            ids
        } else {
            vec![resp.watch_id]
        };
        for id in targets {
            let Some(w) = self.active.get(&id).cloned() else {
                continue;
            };
            self.deliver(&resp, &w)?;
            if resp.canceled {
                self.active.remove(&id);
            }
        }
        Ok(())
    }

    /// etcdctl's `printWatchCh` body for one response.
    fn deliver(&self, resp: &WatchResponse, w: &Watcher) -> Result<(), CliError> {
        let io = |e: std::io::Error| CliError::new(exit::ERROR, e.to_string());
        if resp.canceled {
            eprintln!("watch was canceled ({})", cancel_reason(resp));
        }
        if is_progress_notify(resp) {
            let rev = resp.header.map(|h| h.revision).unwrap_or(0);
            emit(format!("progress notify: {rev}\n").as_bytes())
                .map_err(|e| CliError::new(exit::ERROR, e.to_string()))?;
        }
        emit(&format_response(&self.printer, resp))
            .map_err(|e| CliError::new(exit::ERROR, e.to_string()))?;
        if w.exec.is_empty() {
            return Ok(());
        }
        let rev = resp.header.map(|h| h.revision).unwrap_or(0);
        for ev in &resp.events {
            let kv = ev.kv.clone().unwrap_or_default();
            let status = std::process::Command::new(&w.exec[0])
                .args(&w.exec[1..])
                .env("ETCD_WATCH_REVISION", rev.to_string())
                .env("ETCD_WATCH_EVENT_TYPE", watch_print::quoted_type(ev))
                .env("ETCD_WATCH_KEY", gofmt::quote(&kv.key))
                .env("ETCD_WATCH_VALUE", gofmt::quote(&kv.value))
                .status();
            let failure = match status {
                Ok(s) if s.success() => continue,
                Ok(s) => match s.code() {
                    Some(c) => format!("exit status {c}"),
                    None => s.to_string(),
                },
                Err(e) => io(e).message,
            };
            let argv: Vec<String> = w
                .exec
                .iter()
                .map(|a| gofmt::quote(a.as_encoded_bytes()))
                .collect();
            eprintln!("command [{}] error ({failure})", argv.join(" "));
            // etcdctl exits straight away, without an "Error:" line.
            std::process::exit(exit::ERROR);
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(line: &[&str]) -> WatchArgs {
        InteractiveLine::try_parse_from(line).unwrap().args
    }

    #[test]
    fn arguments_follow_etcdctl() {
        let w = watcher_from(
            &args(&["foo", "--prefix", "--rev=3", "--prev-kv"]),
            None,
            None,
            false,
        )
        .unwrap();
        assert_eq!(w.create.key, b"foo");
        assert_eq!(w.create.range_end, b"fop");
        assert_eq!(w.create.start_revision, 3);
        assert!(w.create.prev_kv);
        let all = watcher_from(&args(&["", "--prefix"]), None, None, false).unwrap();
        assert_eq!((all.create.key, all.create.range_end), (vec![0], vec![0]));
        let range = watcher_from(&args(&["a", "c"]), None, None, false).unwrap();
        assert_eq!(range.create.range_end, b"c");
        let err = |a: &[&str], sep| watcher_from(&args(a), None, None, sep).unwrap_err();
        assert_eq!(err(&[], false).message, "bad number of arguments");
        assert_eq!(
            err(&["a", "b", "--prefix"], false).message,
            "`range_end` and `--prefix` are mutually exclusive"
        );
        assert_eq!(
            err(&["a"], true).message,
            "bad number of arguments (found separator --, but no commands)"
        );
    }

    #[test]
    fn exec_and_environment_key() {
        let w = watcher_from(&args(&["foo", "--", "echo", "hi"]), None, None, true).unwrap();
        assert_eq!(w.exec, vec![OsString::from("echo"), OsString::from("hi")]);
        let env =
            watcher_from(&args(&[]), Some(b"k".to_vec()), Some(b"z".to_vec()), false).unwrap();
        assert_eq!(
            (env.create.key, env.create.range_end),
            (b"k".to_vec(), b"z".to_vec())
        );
        assert_eq!(
            watcher_from(&args(&["x"]), Some(b"k".to_vec()), None, false)
                .unwrap_err()
                .message,
            "bad number of arguments (found conflicting environment key)"
        );
    }
}
