//! The JSON gateway (`POST /v3/...`) with real `curl` against a real cairn and a real etcd 3.4:
//! the same requests, the same statuses and the same JSON once the values that differ by nature
//! (cluster/member ids, raft term, sizes, versions) are masked.

mod support;

use std::process::Stdio;
use std::time::Duration;

use serde_json::Value;
use support::{Cluster, Etcd};
use tokio::io::{AsyncBufReadExt, BufReader};

/// One HTTP answer: status, body (parsed as JSON when it is JSON).
#[derive(Debug, Clone, PartialEq)]
struct Answer {
    status: u16,
    body: Body,
}

#[derive(Debug, Clone, PartialEq)]
enum Body {
    Json(Value),
    /// A streamed answer: one JSON value per line.
    Lines(Vec<Value>),
    Text(String),
}

impl Answer {
    fn json(&self) -> &Value {
        match &self.body {
            Body::Json(v) => v,
            other => panic!("expected one JSON value, got {other:?}"),
        }
    }
}

/// `curl -X method base+path [-d body]`.
async fn curl(base: &str, method: &str, path: &str, body: Option<&str>) -> Answer {
    let mut cmd = tokio::process::Command::new("curl");
    cmd.args(["-s", "-w", "\n%{http_code}", "-X", method])
        .arg(format!("{base}{path}"));
    if let Some(b) = body {
        cmd.args(["-d", b]);
    }
    let out = cmd.output().await.expect("run curl");
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let (body, status) = text.rsplit_once('\n').expect("status line");
    let status = status.trim().parse().expect("status code");
    let lines: Result<Vec<Value>, _> = body.lines().map(serde_json::from_str).collect();
    let body = match (serde_json::from_str(body), lines) {
        (Ok(v), _) => Body::Json(v),
        (Err(_), Ok(lines)) if lines.len() > 1 => Body::Lines(lines),
        _ => Body::Text(body.to_string()),
    };
    Answer { status, body }
}

/// The base64 of `n` zero bytes.
fn base64_of_zeros(n: usize) -> String {
    let mut s = "AAAA".repeat(n / 3);
    match n % 3 {
        1 => s.push_str("AA=="),
        2 => s.push_str("AAA="),
        _ => {}
    }
    s
}

/// Masks what differs between two servers by nature.
fn normalize(v: &mut Value) {
    match v {
        Value::Object(map) => {
            for key in ["cluster_id", "member_id", "raft_term"] {
                if map.contains_key(key) {
                    map.insert(key.into(), "X".into());
                }
            }
            for (_, child) in map.iter_mut() {
                normalize(child);
            }
        }
        Value::Array(items) => items.iter_mut().for_each(normalize),
        _ => {}
    }
}

fn mask(answer: &Answer, keys: &[&str]) -> Answer {
    let mut a = answer.clone();
    let values = match &mut a.body {
        Body::Json(v) => std::slice::from_mut(v),
        Body::Lines(lines) => lines.as_mut_slice(),
        Body::Text(_) => &mut [],
    };
    for v in values {
        normalize(v);
        mask_keys(v, keys);
    }
    a
}

/// Replaces the given keys anywhere in `v` by "X" (or drops them when prefixed with `-`).
fn mask_keys(v: &mut Value, keys: &[&str]) {
    match v {
        Value::Object(map) => {
            for k in keys {
                if let Some(k) = k.strip_prefix('-') {
                    map.remove(k);
                } else if map.contains_key(*k) {
                    map.insert((*k).into(), "X".into());
                }
            }
            for (_, child) in map.iter_mut() {
                mask_keys(child, keys);
            }
        }
        Value::Array(items) => items.iter_mut().for_each(|i| mask_keys(i, keys)),
        _ => {}
    }
}

/// Both servers under one request.
struct Pair {
    etcd: String,
    cairn: String,
}

impl Pair {
    /// Sends the same request to both and asserts the same status and masked body.
    async fn same_masked(
        &self,
        method: &str,
        path: &str,
        body: Option<&str>,
        keys: &[&str],
    ) -> Answer {
        let e = curl(&self.etcd, method, path, body).await;
        let c = curl(&self.cairn, method, path, body).await;
        assert_eq!(
            mask(&c, keys),
            mask(&e, keys),
            "{method} {path} {body:?}: cairn (left) vs etcd (right)"
        );
        c
    }

    async fn same(&self, path: &str, body: &str) -> Answer {
        self.same_masked("POST", path, Some(body), &[]).await
    }
}

/// A streaming request: curl in the background, its output lines as they arrive.
struct Stream {
    child: tokio::process::Child,
    lines: tokio::io::Lines<BufReader<tokio::process::ChildStdout>>,
}

impl Stream {
    fn open(base: &str, path: &str, body: &str) -> Stream {
        let mut child = tokio::process::Command::new("curl")
            .args(["-s", "-N", "-d", body])
            .arg(format!("{base}{path}"))
            .stdout(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .expect("spawn curl");
        let stdout = child.stdout.take().expect("curl stdout");
        Stream {
            child,
            lines: BufReader::new(stdout).lines(),
        }
    }

    async fn next(&mut self) -> Value {
        let line = tokio::time::timeout(Duration::from_secs(10), self.lines.next_line())
            .await
            .expect("a streamed line within 10s")
            .expect("read curl output")
            .expect("the stream is still open");
        let mut v: Value = serde_json::from_str(&line).expect("a JSON line");
        normalize(&mut v);
        v
    }

    /// The client goes away (what a user's Ctrl-C does).
    async fn disconnect(mut self) {
        let _ = self.child.kill().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gateway_matches_etcd() {
    let Some(etcd) = Etcd::start().await else {
        eprintln!("SKIP: no etcd binary");
        return;
    };
    let cluster = Cluster::start(1).await;
    let pair = Pair {
        etcd: etcd.endpoint(),
        cairn: cluster.endpoints()[0].clone(),
    };

    // KV: put, prev_kv, range with prefix/limit/keys_only/count_only ("foo" = Zm9v, "fop" = Zm9w).
    let put = pair
        .same("/v3/kv/put", r#"{"key":"Zm9v","value":"YmFy"}"#)
        .await;
    assert_eq!(put.json()["header"]["revision"], "2");
    pair.same(
        "/v3/kv/put",
        r#"{"key":"Zm9vMg==","value":"YmF6","prev_kv":true}"#,
    )
    .await;
    let again = pair
        .same(
            "/v3/kv/put",
            r#"{"key":"Zm9v","value":"YmF6","prevKv":true}"#,
        )
        .await;
    assert_eq!(again.json()["prev_kv"]["value"], "YmFy");
    let limited = pair
        .same(
            "/v3/kv/range",
            r#"{"key":"Zm9v","range_end":"Zm9w","limit":1}"#,
        )
        .await;
    assert_eq!(limited.json()["more"], true);
    assert_eq!(limited.json()["count"], "2");
    pair.same(
        "/v3/kv/range",
        r#"{"key":"Zm9v","range_end":"Zm9w","keys_only":true,"limit":"5"}"#,
    )
    .await;
    pair.same(
        "/v3/kv/range",
        r#"{"key":"Zm9v","range_end":"Zm9w","count_only":true}"#,
    )
    .await;
    pair.same(
        "/v3/kv/range",
        r#"{"key":"Zm9v","range_end":"Zm9w","sort_order":"DESCEND","sort_target":"MOD","bogus":1}"#,
    )
    .await;

    // Txn with a value compare, taken then not taken; a version compare deleting with prev_kv.
    let txn = r#"{"compare":[{"key":"Zm9v","result":"EQUAL","target":"VALUE","value":"YmF6"}],"success":[{"request_put":{"key":"Zm9v","value":"cXV4"}}],"failure":[{"request_range":{"key":"Zm9v"}}]}"#;
    assert_eq!(pair.same("/v3/kv/txn", txn).await.json()["succeeded"], true);
    assert!(pair
        .same("/v3/kv/txn", txn)
        .await
        .json()
        .get("succeeded")
        .is_none());
    pair.same("/v3/kv/txn", r#"{"compare":[{"key":"Zm9v","result":"GREATER","target":"VERSION","version":"1"}],"success":[{"request_delete_range":{"key":"Zm9vMg==","prev_kv":true}}]}"#)
        .await;

    // DeleteRange with prev_kv, compaction, and a read below it: the gRPC error as JSON.
    let del = pair
        .same("/v3/kv/deleterange", r#"{"key":"Zm9v","prev_kv":true}"#)
        .await;
    assert_eq!(del.json()["deleted"], "1");
    pair.same("/v3/kv/compaction", r#"{"revision":"3"}"#).await;
    let compacted = pair
        .same("/v3/kv/range", r#"{"key":"Zm9v","revision":"2"}"#)
        .await;
    assert_eq!(compacted.status, 400);
    assert_eq!(compacted.json()["code"], 11);
    assert_eq!(
        compacted.json()["error"],
        "etcdserver: mvcc: required revision has been compacted"
    );
    let future = pair
        .same("/v3/kv/range", r#"{"key":"Zm9v","revision":1000}"#)
        .await;
    assert_eq!(future.status, 400);

    // Leases: grant, time-to-live (the remaining TTL may tick differently), leases, keepalive
    // (a stream of one answer per message, ending with the body), revoke, revoke again.
    pair.same("/v3/lease/grant", r#"{"TTL":"60","ID":"1234"}"#)
        .await;
    pair.same(
        "/v3/kv/put",
        r#"{"key":"bGs=","value":"dg==","lease":"1234"}"#,
    )
    .await;
    let ttl = pair
        .same_masked(
            "POST",
            "/v3/lease/timetolive",
            Some(r#"{"ID":"1234","keys":true}"#),
            &["TTL"],
        )
        .await;
    assert_eq!(ttl.json()["keys"][0], "bGs=");
    pair.same("/v3/kv/lease/leases", "{}").await;
    let ka = pair
        .same("/v3/lease/keepalive", r#"{"ID":"1234"}{"ID":"1234"}"#)
        .await;
    assert!(
        matches!(&ka.body, Body::Lines(l) if l.len() == 2),
        "two JSON lines"
    );
    pair.same("/v3/lease/revoke", r#"{"ID":"1234"}"#).await;
    let gone = pair.same("/v3/kv/lease/revoke", r#"{"ID":"1234"}"#).await;
    assert_eq!((gone.status, gone.json()["code"].clone()), (404, 5.into()));
    pair.same("/v3/lease/keepalive", r#"{"ID":"1234"}"#).await;

    // Maintenance and cluster: shapes and names (sizes, versions, indexes differ by nature).
    let status = pair
        .same_masked(
            "POST",
            "/v3/maintenance/status",
            Some("{}"),
            &[
                "version",
                "dbSize",
                "dbSizeInUse",
                "leader",
                "raftIndex",
                "raftTerm",
                "raftAppliedIndex",
                "-dbSizeQuota",
            ],
        )
        .await;
    assert!(status.json()["raftIndex"].is_string());
    pair.same_masked(
        "POST",
        "/v3/cluster/member/list",
        Some("{}"),
        // etcd 3.4 leaves MemberList's header revision out; cairn (3.5) fills it in.
        &["ID", "name", "peerURLs", "clientURLs", "-revision"],
    )
    .await;

    // Lock and Election (etcd serves them on the gateway as well): keys under the name bound
    // to the caller's lease ("my/63" for lease 0x63).
    pair.same("/v3/lease/grant", r#"{"TTL":"60","ID":"99"}"#)
        .await;
    let lock = pair
        .same("/v3/lock/lock", r#"{"name":"bXk=","lease":"99"}"#)
        .await;
    assert_eq!(lock.json()["key"], "bXkvNjM=");
    pair.same("/v3/lock/unlock", r#"{"key":"bXkvNjM="}"#).await;
    let campaign = pair
        .same(
            "/v3/election/campaign",
            r#"{"name":"ZWw=","lease":"99","value":"dg=="}"#,
        )
        .await;
    pair.same("/v3/election/leader", r#"{"name":"ZWw="}"#).await;
    let leader = campaign.json()["leader"].to_string();
    pair.same("/v3/election/resign", &format!(r#"{{"leader":{leader}}}"#))
        .await;
    pair.same("/v3/lease/revoke", r#"{"ID":"99"}"#).await;

    // Bad JSON, unknown paths, wrong methods: etcd's statuses and bodies.
    let bad = pair.same("/v3/kv/range", r#"{"key":"#).await;
    assert_eq!((bad.status, bad.json()["code"].clone()), (400, 3.into()));
    assert_eq!(pair.same("/v3/kv/nope", "{}").await.status, 404);
    assert_eq!(
        pair.same_masked("GET", "/v3/kv/range", None, &[])
            .await
            .status,
        405
    );
    assert_eq!(
        pair.same_masked("PUT", "/v3/kv/put", Some("{}"), &[])
            .await
            .status,
        405
    );
    assert_eq!(
        pair.same_masked("GET", "/nope", None, &[]).await.status,
        404
    );
    pair.same("/v3beta/kv/range", r#"{"key":"Zm9v"}"#).await;
    let bad_stream = pair.same("/v3/watch", r#"{"create_request":"#).await;
    assert_eq!(
        (bad_stream.status, bad_stream.json()["code"].clone()),
        (500, 2.into())
    );
    let missing = pair.same("/v3/kv/range", "").await;
    assert_eq!(missing.json()["error"], "etcdserver: key is not provided");

    // Size limits apply to the message (as over gRPC), not to its larger JSON: etcd's "request
    // is too large" past --max-request-bytes, gRPC's ResourceExhausted past its framing limit.
    let dir = tempfile::tempdir().expect("tempdir");
    for (name, size) in [("big", 1_600_000), ("huge", 2_500_000)] {
        let value = base64_of_zeros(size);
        let path = dir.path().join(name);
        std::fs::write(&path, format!(r#"{{"key":"Zm9v","value":"{value}"}}"#))
            .expect("write body");
        let body = format!("@{}", path.display());
        let big = pair.same("/v3/kv/put", &body).await;
        assert!(big.status == 400 || big.status == 429, "{big:?}");
    }

    // cairn's gateway also answers h2c (etcd 3.4 sends every h2c connection to gRPC).
    let h2 = tokio::process::Command::new("curl")
        .args(["-s", "--http2-prior-knowledge", "-d", r#"{"key":"Zm9v"}"#])
        .arg(format!("{}/v3/kv/range", pair.cairn))
        .output()
        .await
        .expect("run curl");
    let h2: Value = serde_json::from_slice(&h2.stdout).expect("JSON over h2c");
    assert!(h2["header"]["revision"].is_string(), "{h2}");

    // Gateway calls count as gRPC calls in /metrics, as in etcd (whose gateway is a gRPC client
    // of its own server): by code for unary calls, when their body ends for streams.
    let metrics = curl(&pair.cairn, "GET", "/metrics", None).await;
    let Body::Text(metrics) = metrics.body else {
        panic!("metrics text")
    };
    let sample = |series: &str| -> f64 {
        metrics
            .lines()
            .find_map(|l| l.strip_prefix(series)?.trim().parse().ok())
            .unwrap_or_else(|| panic!("no {series} in /metrics"))
    };
    let range = r#"grpc_server_handled_total{grpc_type="unary",grpc_service="etcdserverpb.KV",grpc_method="Range",grpc_code="OutOfRange"}"#;
    assert_eq!(sample(range), 2.0, "the compacted and the future read");
    let keepalive = r#"grpc_server_handled_total{grpc_type="bidi_stream",grpc_service="etcdserverpb.Lease",grpc_method="LeaseKeepAlive",grpc_code="OK"}"#;
    assert_eq!(sample(keepalive), 2.0);

    // Auth: etcd answers "not enabled"; until cairn's auth service is merged it answers
    // Unimplemented, in the same JSON shape.
    let auth = curl(
        &pair.cairn,
        "POST",
        "/v3/auth/authenticate",
        Some(r#"{"name":"root","password":"x"}"#),
    )
    .await;
    if auth.json()["code"] == 12 {
        assert_eq!(auth.status, 501);
    } else {
        pair.same("/v3/auth/authenticate", r#"{"name":"root","password":"x"}"#)
            .await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn watch_streams_like_etcd() {
    let Some(etcd) = Etcd::start().await else {
        eprintln!("SKIP: no etcd binary");
        return;
    };
    let cluster = Cluster::start(1).await;
    for base in [etcd.endpoint(), cluster.endpoints()[0].clone()] {
        watch_sequence(&base).await;
    }
    // The same lines from both: run once more and compare what each streamed.
    let etcd_lines = watch_lines(&etcd.endpoint()).await;
    let cairn_lines = watch_lines(&cluster.endpoints()[0]).await;
    assert_eq!(cairn_lines, etcd_lines, "cairn (left) vs etcd (right)");
}

/// A watch created from the request body keeps streaming events from concurrent writes after
/// the body ended, until the client disconnects; the server goes on serving afterwards.
async fn watch_sequence(base: &str) {
    let mut w = Stream::open(
        base,
        "/v3/watch",
        r#"{"create_request":{"key":"d2s=","prev_kv":true}}"#,
    );
    assert_eq!(w.next().await["result"]["created"], true);
    for value in ["MQ==", "Mg=="] {
        let put = curl(
            base,
            "POST",
            "/v3/kv/put",
            Some(&format!(r#"{{"key":"d2s=","value":"{value}"}}"#)),
        )
        .await;
        assert_eq!(put.status, 200);
        let ev = w.next().await;
        assert_eq!(ev["result"]["events"][0]["kv"]["value"], value);
    }
    w.disconnect().await;
    let after = curl(base, "POST", "/v3/kv/range", Some(r#"{"key":"d2s="}"#)).await;
    assert_eq!(after.status, 200);
}

/// Create, an event, a delete with prev_kv, then cancel; compaction and a compacted watch.
async fn watch_lines(base: &str) -> Vec<Value> {
    let mut out = Vec::new();
    let mut w = Stream::open(
        base,
        "/v3/watch",
        r#"{"create_request":{"key":"eA==","prev_kv":true,"watch_id":"7"}}"#,
    );
    out.push(w.next().await);
    curl(
        base,
        "POST",
        "/v3/kv/put",
        Some(r#"{"key":"eA==","value":"MQ=="}"#),
    )
    .await;
    out.push(w.next().await);
    curl(
        base,
        "POST",
        "/v3/kv/deleterange",
        Some(r#"{"key":"eA=="}"#),
    )
    .await;
    out.push(w.next().await);
    w.disconnect().await;

    let mut c = Stream::open(
        base,
        "/v3/watch",
        r#"{"create_request":{"key":"eA==","watch_id":"8"}}{"cancel_request":{"watch_id":"8"}}"#,
    );
    out.push(c.next().await);
    out.push(c.next().await);
    c.disconnect().await;

    let rev = curl(
        base,
        "POST",
        "/v3/kv/put",
        Some(r#"{"key":"eA==","value":"Mg=="}"#),
    )
    .await;
    let rev = rev.json()["header"]["revision"].clone();
    curl(
        base,
        "POST",
        "/v3/kv/compaction",
        Some(&format!(r#"{{"revision":{rev}}}"#)),
    )
    .await;
    let mut old = Stream::open(
        base,
        "/v3/watch",
        r#"{"create_request":{"key":"eA==","start_revision":"2"}}"#,
    );
    out.push(old.next().await);
    out.push(old.next().await);
    old.disconnect().await;
    out
}
