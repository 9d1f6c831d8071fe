//! 10,000 watchers on one member (100 streams x 100 watchers) keep working under a write load;
//! the member's resident memory is measured before and after creating them, and the cost per
//! watcher is printed (run with `--nocapture` to see it).

mod support;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use cairn_store::proto::etcdserverpb as pb;
use support::{eventually, Cluster};
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;

const CONNECTIONS: usize = 10;
const STREAMS_PER_CONNECTION: usize = 10;
const STREAMS: usize = CONNECTIONS * STREAMS_PER_CONNECTION;
const WATCHERS_PER_STREAM: usize = 100;
const WATCHERS: usize = STREAMS * WATCHERS_PER_STREAM;
const WRITES: usize = 1000;

/// Resident memory of a process, in bytes.
fn rss_bytes(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("read status");
    let kb: u64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .expect("VmRSS in /proc/<pid>/status");
    kb * 1024
}

fn stream_key(s: usize, j: usize) -> String {
    format!("s/{s:03}/{j:03}")
}

/// What a watcher watches: watcher 0 of each stream its stream's prefix; watcher 1 of every
/// tenth stream every key; the others one key each.
fn create_request(s: usize, j: usize) -> pb::WatchCreateRequest {
    let (key, range_end) = match j {
        0 => (format!("s/{s:03}/"), format!("s/{s:03}0")),
        1 if s % 10 == 0 => ("\0".to_string(), "\0".to_string()),
        _ => (stream_key(s, j), String::new()),
    };
    pb::WatchCreateRequest {
        key: key.into_bytes(),
        range_end: range_end.into_bytes(),
        ..Default::default()
    }
}

/// The write load: four writers putting `WRITES` keys spread over every stream's keys (under
/// `prefix`). Returns (stream, watcher, key, revision) of each write and the time it took.
async fn load(ep: &str, prefix: &'static str) -> (Vec<(usize, usize, Vec<u8>, i64)>, Duration) {
    let started = Instant::now();
    let writers: Vec<_> = (0..4)
        .map(|w| {
            let ep = ep.to_string();
            tokio::spawn(async move {
                let mut c = etcd_client::Client::connect([ep], None)
                    .await
                    .expect("connect");
                let mut done = Vec::new();
                for i in (w..WRITES).step_by(4) {
                    let (s, j) = (i % STREAMS, (i * 7 + i / STREAMS) % WATCHERS_PER_STREAM);
                    let key = stream_key(s, j).replacen('s', prefix, 1);
                    let r = c.put(key.clone(), "v", None).await.expect("put under load");
                    done.push((
                        s,
                        j,
                        key.into_bytes(),
                        r.header().expect("header").revision(),
                    ));
                }
                done
            })
        })
        .collect();
    let mut writes = Vec::new();
    for w in writers {
        writes.extend(w.await.expect("writer"));
    }
    (writes, started.elapsed())
}

#[derive(Default)]
struct Seen {
    created: usize,
    /// watch id -> (key, revision) of each event
    events: HashMap<i64, Vec<(Vec<u8>, i64)>>,
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn ten_thousand_watchers_keep_working_under_load() {
    let cluster = Cluster::start(1).await;
    let member = &cluster.members[0];
    let ep = member.endpoint();
    let pid = member.pid().expect("member running");
    // The same load without watchers, for comparison.
    let (_, baseline) = load(&ep, "base").await;
    let rss_before = rss_bytes(pid);

    let started = Instant::now();
    let mut senders = Vec::new();
    let mut seen: Vec<Arc<Mutex<Seen>>> = Vec::new();
    for _ in 0..CONNECTIONS {
        // One HTTP/2 connection carries several streams, as one etcd client does.
        let client = cairn_store::client::Client::connect(
            std::slice::from_ref(&ep),
            &cairn_store::client::ConnectOptions::default(),
        )
        .await
        .expect("connect");
        for _ in 0..STREAMS_PER_CONNECTION {
            let (tx, rx) = mpsc::channel(WATCHERS_PER_STREAM + 8);
            let mut responses = client
                .watch()
                .watch(ReceiverStream::new(rx))
                .await
                .expect("open a watch stream")
                .into_inner();
            let state = Arc::new(Mutex::new(Seen::default()));
            let sink = state.clone();
            tokio::spawn(async move {
                while let Ok(Some(r)) = responses.message().await {
                    let mut s = sink.lock().unwrap();
                    if r.created {
                        assert!(!r.canceled, "create failed: {}", r.cancel_reason);
                        s.created += 1;
                    }
                    let evs = s.events.entry(r.watch_id).or_default();
                    for e in &r.events {
                        let kv = e.kv.as_ref().expect("kv");
                        evs.push((kv.key.clone(), kv.mod_revision));
                    }
                }
            });
            senders.push(tx);
            seen.push(state);
        }
    }
    for (s, tx) in senders.iter().enumerate() {
        for j in 0..WATCHERS_PER_STREAM {
            tx.send(pb::WatchRequest {
                request_union: Some(pb::watch_request::RequestUnion::CreateRequest(
                    create_request(s, j),
                )),
            })
            .await
            .expect("send create");
        }
    }
    let all = seen.clone();
    eventually(Duration::from_secs(30), "10,000 created responses", || {
        let n: usize = all.iter().map(|s| s.lock().unwrap().created).sum();
        async move { (n == WATCHERS).then_some(()) }
    })
    .await;
    let create_time = started.elapsed();
    let rss_created = rss_bytes(pid);

    let (mut writes, write_time) = load(&ep, "s").await;
    writes.sort_by_key(|w| w.3);

    // Every stream's prefix watcher, every all-keys watcher and every single-key watcher of a
    // sample of streams get exactly their events, in revision order.
    let expected = |s: usize, j: usize| -> Vec<(Vec<u8>, i64)> {
        writes
            .iter()
            .filter(|(ws, wj, _, _)| match j {
                0 => *ws == s,
                1 if s % 10 == 0 => true,
                _ => *ws == s && *wj == j,
            })
            .map(|(_, _, k, r)| (k.clone(), *r))
            .collect()
    };
    let mut sample = Vec::new();
    for s in 0..STREAMS {
        sample.push((s, 0));
        if s % 10 == 0 {
            sample.push((s, 1));
        }
        if s % 7 == 0 {
            sample.extend((2..WATCHERS_PER_STREAM).map(|j| (s, j)));
        }
    }
    let mut events_checked = 0;
    for &(s, j) in &sample {
        let want = expected(s, j);
        let state = seen[s].clone();
        // Server-assigned watch ids are 0, 1, ... in creation order.
        let id = j as i64;
        let n = want.len();
        eventually(
            Duration::from_secs(30),
            "events to reach a sampled watcher",
            || {
                let got = state.lock().unwrap().events.get(&id).map_or(0, |e| e.len());
                async move { (got >= n).then_some(()) }
            },
        )
        .await;
        let got = seen[s]
            .lock()
            .unwrap()
            .events
            .get(&id)
            .cloned()
            .unwrap_or_default();
        assert_eq!(got, want, "stream {s} watcher {j}");
        events_checked += n;
    }
    let rss_after = rss_bytes(pid);
    let per_watcher = rss_created.saturating_sub(rss_before) / WATCHERS as u64;
    eprintln!(
        "{WATCHERS} watchers on {STREAMS} streams ({CONNECTIONS} connections): created in \
         {create_time:?}; member RSS {} KiB before, {} KiB with the watchers ({per_watcher} bytes \
         per watcher, streams included), {} KiB after {WRITES} writes in {write_time:?} \
         ({:.0} writes/s; {:.0} writes/s without watchers); {} sampled watchers, {events_checked} \
         events checked",
        rss_before / 1024,
        rss_created / 1024,
        rss_after / 1024,
        WRITES as f64 / write_time.as_secs_f64(),
        WRITES as f64 / baseline.as_secs_f64(),
        sample.len(),
    );
    assert!(events_checked > WRITES, "the sample saw real traffic");
    // Writes keep going with 10,000 watchers attached. Each revision is matched against every
    // watcher of every stream (no key index yet), which costs a debug build several times its
    // write throughput here; the bound only catches writes stalling behind watchers.
    assert!(
        write_time < baseline * 10 + Duration::from_secs(10),
        "{WRITES} writes took {write_time:?} with the watchers, {baseline:?} without"
    );
}
