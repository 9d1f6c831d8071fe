//! The clients: each loops over random operations (linearizable get, put, compare-and-set txn,
//! delete, lease-bound put and lease revoke, put on a short lease left to expire, and txns that
//! write or read a pair of keys together) on a few keys, against a random member, and records
//! every call and return. A failed or timed-out write is recorded with an unknown outcome; the
//! client then moves to another member.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use cairn_store::client::{Client, ConnectOptions};
use cairn_store::proto::etcdserverpb::{
    compare::{CompareResult, CompareTarget, TargetUnion},
    request_op, response_op, Compare, DeleteRangeRequest, LeaseGrantRequest, LeaseRevokeRequest,
    PutRequest, RangeRequest, RequestOp, TxnRequest,
};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

use crate::history::{Input, OpRecord, Output};

/// The prefix every key of a run lives under (watchers watch it).
pub const PREFIX: &str = "/torture/";

/// What the clients, watchers and nemesis share.
pub struct Shared {
    pub start: Instant,
    pub stop: AtomicBool,
    pub next_id: AtomicU64,
    pub history: Mutex<Vec<OpRecord>>,
    /// Client endpoints of the current members (the nemesis changes membership).
    pub endpoints: Mutex<Vec<String>>,
}

impl Shared {
    pub fn new(endpoints: Vec<String>) -> Arc<Shared> {
        Arc::new(Shared {
            start: Instant::now(),
            stop: AtomicBool::new(false),
            next_id: AtomicU64::new(1),
            history: Mutex::new(Vec::new()),
            endpoints: Mutex::new(endpoints),
        })
    }

    pub fn now(&self) -> u64 {
        u64::try_from(self.start.elapsed().as_nanos()).unwrap_or(u64::MAX)
    }

    pub fn stopped(&self) -> bool {
        self.stop.load(Ordering::SeqCst)
    }

    pub fn endpoints(&self) -> Vec<String> {
        self.endpoints.lock().map(|e| e.clone()).unwrap_or_default()
    }

    pub fn record(&self, op: OpRecord) {
        if let Ok(mut h) = self.history.lock() {
            h.push(op);
        }
    }
}

/// The workload's shape.
#[derive(Debug, Clone)]
pub struct Workload {
    pub keys: usize,
    pub lease_keys: usize,
    /// Keys put on short leases nobody keeps alive (they must expire).
    pub expiring_keys: usize,
    /// The TTL asked for those leases, in seconds.
    pub expiry_ttl: i64,
    /// Pairs of keys written and read together in one txn.
    pub pairs: usize,
    pub request_timeout: Duration,
}

impl Default for Workload {
    fn default() -> Self {
        Self {
            keys: 8,
            lease_keys: 3,
            expiring_keys: 4,
            expiry_ttl: 2,
            pairs: 2,
            request_timeout: Duration::from_secs(2),
        }
    }
}

pub fn key(i: usize) -> String {
    format!("{PREFIX}k{i}")
}

pub fn lease_key(i: usize) -> String {
    format!("{PREFIX}l{i}")
}

pub fn expiring_key(i: usize) -> String {
    format!("{PREFIX}e{i}")
}

/// The two keys of pair `i` (`history::pair_partner` maps one to the other).
pub fn pair_keys(i: usize) -> [String; 2] {
    [format!("{PREFIX}pa{i}"), format!("{PREFIX}pb{i}")]
}

/// Every key the workload touches (for the final reads).
pub fn all_keys(w: &Workload) -> Vec<String> {
    (0..w.keys)
        .map(key)
        .chain((0..w.lease_keys).map(lease_key))
        .chain((0..w.expiring_keys).map(expiring_key))
        .chain((0..w.pairs).flat_map(pair_keys))
        .collect()
}

/// Connects to one endpoint quickly (a paused member must not hold a client up).
pub async fn connect(endpoint: &str) -> Option<Client> {
    let opts = ConnectOptions {
        dial_timeout: Duration::from_millis(500),
        request_timeout: None,
        ..Default::default()
    };
    Client::connect(&[endpoint.to_string()], &opts).await.ok()
}

/// One client until `shared.stop`.
pub async fn run_client(id: usize, seed: u64, w: Workload, shared: Arc<Shared>) {
    let mut rng = StdRng::seed_from_u64(seed);
    let mut conn: Option<Client> = None;
    let mut last_seen: HashMap<String, Option<String>> = HashMap::new();
    let mut my_leases: HashMap<String, i64> = HashMap::new();
    let mut seq = 0u64;
    while !shared.stopped() {
        let Some(client) = conn.clone() else {
            let eps = shared.endpoints();
            if eps.is_empty() {
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
            let ep = &eps[rng.gen_range(0..eps.len())];
            conn = connect(ep).await;
            if conn.is_none() {
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            continue;
        };
        seq += 1;
        let value = format!("c{id}-{seq}");
        let kind = rng.gen_range(0..100);
        if kind < 10 && w.pairs > 0 {
            let pair = rng.gen_range(0..w.pairs);
            let write = rng.gen_bool(0.5).then(|| value.clone());
            if !pair_op(id, &client, pair, write, &w, &shared).await {
                conn = None;
            }
            continue;
        }
        if kind < 18 && w.expiring_keys > 0 {
            let k = expiring_key(rng.gen_range(0..w.expiring_keys));
            // Mostly reads: a key put again before its TTL ran out would rarely expire.
            let input = if rng.gen_bool(0.7) {
                Input::Get
            } else {
                let grant = tokio::time::timeout(
                    w.request_timeout,
                    client.lease().lease_grant(LeaseGrantRequest {
                        ttl: w.expiry_ttl,
                        id: 0,
                    }),
                )
                .await;
                match grant {
                    Ok(Ok(r)) => {
                        let r = r.into_inner();
                        Input::PutExpiring {
                            value,
                            lease: r.id,
                            ttl: r.ttl,
                        }
                    }
                    _ => {
                        conn = None;
                        continue;
                    }
                }
            };
            if !single_op(id, &client, k, input, &w, &shared).await {
                conn = None;
            }
            continue;
        }
        let roll = rng.gen_range(0..100);
        let (k, input) = if roll < 12 && w.lease_keys > 0 {
            let k = lease_key(rng.gen_range(0..w.lease_keys));
            match my_leases.remove(&k) {
                Some(lease) if rng.gen_bool(0.5) => (k, Input::Revoke { lease }),
                other => {
                    if let Some(l) = other {
                        my_leases.insert(k.clone(), l);
                    }
                    // A fresh lease for each put: its TTL outlives the run, so only Revoke
                    // deletes (expiry would make the key's history depend on timing).
                    let grant = tokio::time::timeout(
                        w.request_timeout,
                        client
                            .lease()
                            .lease_grant(LeaseGrantRequest { ttl: 3600, id: 0 }),
                    )
                    .await;
                    match grant {
                        Ok(Ok(r)) => {
                            let lease = r.into_inner().id;
                            my_leases.insert(k.clone(), lease);
                            (k, Input::PutLease { value, lease })
                        }
                        _ => {
                            conn = None;
                            continue;
                        }
                    }
                }
            }
        } else {
            let k = key(rng.gen_range(0..w.keys));
            let input = match roll {
                0..=46 => Input::Get,
                47..=71 => Input::Put { value },
                72..=89 => Input::Cas {
                    expect: last_seen.get(&k).cloned().flatten(),
                    value,
                },
                _ => Input::Delete,
            };
            (k, input)
        };
        let call = shared.now();
        let output = bounded(w.request_timeout, execute(&client, &k, &input)).await;
        let ret = shared.now();
        match (&input, &output) {
            (_, Output::Unknown { .. }) => conn = None,
            (Input::Get, Output::Get { value, .. }) => {
                last_seen.insert(k.clone(), value.clone());
            }
            (Input::Put { value } | Input::PutLease { value, .. }, _) => {
                last_seen.insert(k.clone(), Some(value.clone()));
            }
            (Input::Delete, _) => {
                last_seen.insert(k.clone(), None);
            }
            _ => {}
        }
        shared.record(OpRecord {
            id: shared.next_id.fetch_add(1, Ordering::SeqCst),
            client: id,
            endpoint: client.endpoint().to_string(),
            key: k,
            input,
            output,
            call,
            ret,
            txn: None,
        });
    }
}

/// Runs `op` under `timeout`; an error or a timeout is an unknown outcome.
async fn bounded(
    timeout: Duration,
    op: impl std::future::Future<Output = Result<Output, tonic::Status>>,
) -> Output {
    match tokio::time::timeout(timeout, op).await {
        Ok(Ok(o)) => o,
        Ok(Err(status)) => Output::Unknown {
            error: format!("{:?}: {}", status.code(), status.message()),
        },
        Err(_) => Output::Unknown {
            error: "client timeout".into(),
        },
    }
}

/// One recorded single-key operation; false when its outcome is unknown (the client then
/// moves to another member).
async fn single_op(
    client_id: usize,
    client: &Client,
    key: String,
    input: Input,
    w: &Workload,
    shared: &Shared,
) -> bool {
    let call = shared.now();
    let output = bounded(w.request_timeout, execute(client, &key, &input)).await;
    let ret = shared.now();
    let known = !matches!(output, Output::Unknown { .. });
    shared.record(OpRecord {
        id: shared.next_id.fetch_add(1, Ordering::SeqCst),
        client: client_id,
        endpoint: client.endpoint().to_string(),
        key,
        input,
        output,
        call,
        ret,
        txn: None,
    });
    known
}

/// One txn on both keys of pair `pair`: two puts (`<value>/a`, `<value>/b`) when `write`,
/// else two ranges. Recorded as one operation per key sharing a txn id, call and return.
async fn pair_op(
    client_id: usize,
    client: &Client,
    pair: usize,
    write: Option<String>,
    w: &Workload,
    shared: &Shared,
) -> bool {
    let keys = pair_keys(pair);
    let inputs: [Input; 2] = match &write {
        Some(v) => [
            Input::Put {
                value: format!("{v}/a"),
            },
            Input::Put {
                value: format!("{v}/b"),
            },
        ],
        None => [Input::Get, Input::Get],
    };
    let call = shared.now();
    let outputs =
        match tokio::time::timeout(w.request_timeout, execute_pair(client, &keys, &inputs)).await {
            Ok(Ok(o)) => o,
            Ok(Err(status)) => {
                let error = format!("{:?}: {}", status.code(), status.message());
                [
                    Output::Unknown {
                        error: error.clone(),
                    },
                    Output::Unknown { error },
                ]
            }
            Err(_) => [
                Output::Unknown {
                    error: "client timeout".into(),
                },
                Output::Unknown {
                    error: "client timeout".into(),
                },
            ],
        };
    let ret = shared.now();
    let known = !matches!(outputs[0], Output::Unknown { .. });
    let txn = shared.next_id.fetch_add(1, Ordering::SeqCst);
    for ((key, input), output) in keys.into_iter().zip(inputs).zip(outputs) {
        shared.record(OpRecord {
            id: shared.next_id.fetch_add(1, Ordering::SeqCst),
            client: client_id,
            endpoint: client.endpoint().to_string(),
            key,
            input,
            output,
            call,
            ret,
            txn: Some(txn),
        });
    }
    known
}

/// The txn behind `pair_op`: both puts, or both ranges, in one request.
pub async fn execute_pair(
    client: &Client,
    keys: &[String; 2],
    inputs: &[Input; 2],
) -> Result<[Output; 2], tonic::Status> {
    let ops = keys
        .iter()
        .zip(inputs)
        .map(|(k, input)| RequestOp {
            request: Some(match input {
                Input::Put { value } => request_op::Request::RequestPut(PutRequest {
                    key: k.as_bytes().to_vec(),
                    value: value.clone().into_bytes(),
                    ..Default::default()
                }),
                _ => request_op::Request::RequestRange(RangeRequest {
                    key: k.as_bytes().to_vec(),
                    ..Default::default()
                }),
            }),
        })
        .collect();
    let r = client
        .kv()
        .txn(TxnRequest {
            compare: vec![],
            success: ops,
            failure: vec![],
        })
        .await?
        .into_inner();
    let revision = r.header.map(|h| h.revision).unwrap_or(0);
    let mut out = r.responses.into_iter().map(|resp| match resp.response {
        Some(response_op::Response::ResponseRange(rr)) => {
            let kv = rr.kvs.first();
            Output::Get {
                value: kv.map(|kv| String::from_utf8_lossy(&kv.value).into_owned()),
                mod_revision: kv.map(|kv| kv.mod_revision).unwrap_or(0),
                revision,
            }
        }
        _ => Output::Put { revision },
    });
    match (out.next(), out.next()) {
        (Some(a), Some(b)) => Ok([a, b]),
        _ => Err(tonic::Status::internal(
            "a pair txn answered fewer than two responses",
        )),
    }
}

/// Sends one operation; the answer as the history records it.
pub async fn execute(client: &Client, key: &str, input: &Input) -> Result<Output, tonic::Status> {
    let k = key.as_bytes().to_vec();
    Ok(match input {
        Input::Get => {
            let r = client
                .kv()
                .range(RangeRequest {
                    key: k,
                    ..Default::default()
                })
                .await?
                .into_inner();
            let kv = r.kvs.first();
            Output::Get {
                value: kv.map(|kv| String::from_utf8_lossy(&kv.value).into_owned()),
                mod_revision: kv.map(|kv| kv.mod_revision).unwrap_or(0),
                revision: r.header.map(|h| h.revision).unwrap_or(0),
            }
        }
        Input::Put { value } | Input::PutLease { value, .. } | Input::PutExpiring { value, .. } => {
            let lease = match input {
                Input::PutLease { lease, .. } | Input::PutExpiring { lease, .. } => *lease,
                _ => 0,
            };
            let r = client
                .kv()
                .put(PutRequest {
                    key: k,
                    value: value.clone().into_bytes(),
                    lease,
                    ..Default::default()
                })
                .await?
                .into_inner();
            Output::Put {
                revision: r.header.map(|h| h.revision).unwrap_or(0),
            }
        }
        Input::Cas { expect, value } => {
            let compare = match expect {
                Some(v) => Compare {
                    result: CompareResult::Equal as i32,
                    target: CompareTarget::Value as i32,
                    key: k.clone(),
                    target_union: Some(TargetUnion::Value(v.clone().into_bytes())),
                    ..Default::default()
                },
                None => Compare {
                    result: CompareResult::Equal as i32,
                    target: CompareTarget::Version as i32,
                    key: k.clone(),
                    target_union: Some(TargetUnion::Version(0)),
                    ..Default::default()
                },
            };
            let put = RequestOp {
                request: Some(request_op::Request::RequestPut(PutRequest {
                    key: k,
                    value: value.clone().into_bytes(),
                    ..Default::default()
                })),
            };
            let r = client
                .kv()
                .txn(TxnRequest {
                    compare: vec![compare],
                    success: vec![put],
                    failure: vec![],
                })
                .await?
                .into_inner();
            Output::Cas {
                succeeded: r.succeeded,
                revision: r.header.map(|h| h.revision).unwrap_or(0),
            }
        }
        Input::Delete => {
            let r = client
                .kv()
                .delete_range(DeleteRangeRequest {
                    key: k,
                    ..Default::default()
                })
                .await?
                .into_inner();
            Output::Delete {
                deleted: r.deleted,
                revision: r.header.map(|h| h.revision).unwrap_or(0),
            }
        }
        Input::Revoke { lease } => {
            let r = client
                .lease()
                .lease_revoke(LeaseRevokeRequest { id: *lease })
                .await?
                .into_inner();
            Output::Revoke {
                revision: r.header.map(|h| h.revision).unwrap_or(0),
            }
        }
    })
}
