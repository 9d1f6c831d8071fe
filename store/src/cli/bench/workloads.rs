//! The request-response workloads: one [`Worker`] each, and the prefill they rely on.
//!
//! Every workload keeps to its own sub-prefix of `--prefix` (`put/`, `range/`, `txn/`, `list/`,
//! `mix/`), so running them one after another against the same cluster does not change what the
//! next one measures (a list over keys a put run left behind, say).

use std::collections::HashMap;

use crate::client::Transport;
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::Streaming;

use super::keys::{self, Rng};
use super::runner::{self, Measured, OpError, Outcome, Plan, Worker};
use super::stats::Report;
use super::{
    connect_all, CommonArgs, Consistency, FillArgs, LeaseArgs, ListArgs, MixArgs, PutArgs,
    RangeArgs, TxnPutArgs,
};
use crate::cli::Context;
use crate::client::{prefix_range_end, Client};
use crate::proto::etcdserverpb::{
    compare::{CompareResult, CompareTarget, TargetUnion},
    kv_client::KvClient,
    lease_client::LeaseClient,
    request_op, response_op, Compare, DeleteRangeRequest, LeaseGrantRequest, LeaseKeepAliveRequest,
    LeaseKeepAliveResponse, LeaseRevokeRequest, PutRequest, RangeRequest, RequestOp, TxnRequest,
};

/// What `cairn bench` prints: the report, and whether as JSON.
pub type Output = (Report, bool);

fn plan(common: &CommonArgs, title: &str, kinds: &[&str], default_total: u64) -> Plan {
    Plan {
        total: match (common.total, common.duration) {
            (None, None) => Some(default_total),
            (t, _) => t,
        },
        duration: common.duration,
        rate: common.rate,
        op_timeout: common.op_timeout,
        kinds: kinds.iter().map(|k| k.to_string()).collect(),
        title: title.to_string(),
    }
}

fn finish(
    ctx: &Context,
    workload: &str,
    common: &CommonArgs,
    plan: &Plan,
    measured: &Measured,
) -> anyhow::Result<Output> {
    measured.report_errors();
    Ok((
        Report {
            workload: workload.to_string(),
            label: common.label.clone(),
            endpoints: ctx.global.endpoints.clone(),
            clients: common.clients,
            conns: common.conns,
            rows: measured.rows(&plan.kinds)?,
        },
        common.json,
    ))
}

fn sub_prefix(common: &CommonArgs, sub: &str) -> Vec<u8> {
    format!("{}{sub}", common.prefix).into_bytes()
}

/// The `client`-th task's KV client: clients share the connections round-robin.
fn kv_for(conns: &[Client], client: usize) -> KvClient<Transport> {
    conns[client % conns.len()].kv()
}

fn put_request(key: Vec<u8>, value: Vec<u8>, lease: i64) -> PutRequest {
    PutRequest {
        key,
        value,
        lease,
        ..Default::default()
    }
}

// ---------------------------------------------------------------------------------------------
// put

pub struct PutWorker {
    kv: KvClient<Transport>,
    prefix: Vec<u8>,
    key_size: usize,
    space: u64,
    sequential: bool,
    rng: Rng,
    value: Vec<u8>,
}

impl Worker for PutWorker {
    async fn op(&mut self, i: u64) -> Result<Outcome, OpError> {
        let n = if self.sequential {
            i % self.space.max(1)
        } else {
            self.rng.below(self.space)
        };
        let key = keys::key(&self.prefix, n, self.key_size);
        self.kv
            .put(put_request(key, self.value.clone(), 0))
            .await
            .map_err(|s| OpError::status(0, &s))?;
        Ok(Outcome::of(0))
    }
}

pub async fn put(ctx: &Context, a: PutArgs) -> anyhow::Result<Output> {
    let c = &a.common;
    let conns = connect_all(ctx, c.conns).await?;
    let prefix = sub_prefix(c, "put/");
    let workers = (0..c.clients.max(1))
        .map(|i| PutWorker {
            kv: kv_for(&conns, i),
            prefix: prefix.clone(),
            key_size: c.key_size,
            space: a.key_space_size,
            sequential: a.sequential_keys,
            rng: Rng::new(i as u64 + 1),
            value: keys::value(c.val_size),
        })
        .collect();
    let plan = plan(c, "put", &["put"], 10_000);
    let (m, _) = runner::drive(&plan, workers).await?;
    finish(ctx, "put", c, &plan, &m)
}

// ---------------------------------------------------------------------------------------------
// range

pub struct RangeWorker {
    kv: KvClient<Transport>,
    key: Vec<u8>,
    serializable: bool,
}

impl Worker for RangeWorker {
    async fn op(&mut self, _i: u64) -> Result<Outcome, OpError> {
        self.kv
            .range(RangeRequest {
                key: self.key.clone(),
                serializable: self.serializable,
                ..Default::default()
            })
            .await
            .map_err(|s| OpError::status(0, &s))?;
        Ok(Outcome::of(0))
    }
}

pub async fn range(ctx: &Context, a: RangeArgs) -> anyhow::Result<Output> {
    let c = &a.common;
    let conns = connect_all(ctx, c.conns).await?;
    let key = keys::key(&sub_prefix(c, "range/"), 0, c.key_size);
    // A range over a missing key is cheaper than a real read; make sure there is one.
    conns[0]
        .kv()
        .put(put_request(key.clone(), keys::value(c.val_size), 0))
        .await?;
    let serializable = a.consistency == Consistency::S;
    let workers = (0..c.clients.max(1))
        .map(|i| RangeWorker {
            kv: kv_for(&conns, i),
            key: key.clone(),
            serializable,
        })
        .collect();
    let name = if serializable { "range-s" } else { "range-l" };
    let plan = plan(c, name, &[name], 10_000);
    let (m, _) = runner::drive(&plan, workers).await?;
    finish(ctx, "range", c, &plan, &m)
}

// ---------------------------------------------------------------------------------------------
// txn-put: Kubernetes' GuaranteedUpdate

/// Compare-and-put against a cache of the mod revisions this client last saw, as
/// kube-apiserver updates an object from its watch cache: `txn(mod_revision(key) == cached,
/// then put, else get)`; on a conflict the else-branch's read refreshes the cache and the update
/// is tried again.
pub struct Updater {
    kv: KvClient<Transport>,
    cache: HashMap<Vec<u8>, i64>,
    value: Vec<u8>,
}

/// Gives up on an update after this many conflicts in a row (the objects are partitioned
/// between clients, so a healthy run needs at most one).
const MAX_CONFLICTS: u64 = 100;

impl Updater {
    /// Fills the cache from one read of the prefix, as the watch cache starts from a LIST.
    async fn warm(&mut self, prefix: &[u8]) -> Result<(), tonic::Status> {
        let resp = self
            .kv
            .range(RangeRequest {
                key: prefix.to_vec(),
                range_end: prefix_range_end(prefix),
                ..Default::default()
            })
            .await?
            .into_inner();
        for kv in resp.kvs {
            self.cache.insert(kv.key, kv.mod_revision);
        }
        Ok(())
    }

    /// Updates `key` (with `lease`); returns the number of conflicts on the way.
    async fn update(&mut self, key: &[u8], lease: i64) -> Result<u64, tonic::Status> {
        let mut conflicts = 0;
        loop {
            // A key this client never saw is compared against "absent" (mod_revision 0), as a
            // create is.
            let expected = self.cache.get(key).copied().unwrap_or(0);
            let resp = self
                .kv
                .txn(TxnRequest {
                    compare: vec![Compare {
                        result: CompareResult::Equal as i32,
                        target: CompareTarget::Mod as i32,
                        key: key.to_vec(),
                        range_end: Vec::new(),
                        target_union: Some(TargetUnion::ModRevision(expected)),
                    }],
                    success: vec![RequestOp {
                        request: Some(request_op::Request::RequestPut(put_request(
                            key.to_vec(),
                            self.value.clone(),
                            lease,
                        ))),
                    }],
                    failure: vec![RequestOp {
                        request: Some(request_op::Request::RequestRange(RangeRequest {
                            key: key.to_vec(),
                            ..Default::default()
                        })),
                    }],
                })
                .await?
                .into_inner();
            if resp.succeeded {
                let revision = resp.header.map(|h| h.revision).unwrap_or(0);
                self.cache.insert(key.to_vec(), revision);
                return Ok(conflicts);
            }
            conflicts += 1;
            if conflicts >= MAX_CONFLICTS {
                return Err(tonic::Status::aborted(format!(
                    "gave up after {conflicts} conflicts"
                )));
            }
            let current = resp
                .responses
                .into_iter()
                .find_map(|r| match r.response {
                    Some(response_op::Response::ResponseRange(range)) => {
                        Some(range.kvs.first().map(|kv| kv.mod_revision).unwrap_or(0))
                    }
                    _ => None,
                })
                .unwrap_or(0);
            self.cache.insert(key.to_vec(), current);
        }
    }
}

pub struct TxnPutWorker {
    updater: Updater,
    keys: Vec<Vec<u8>>,
    rng: Rng,
}

impl Worker for TxnPutWorker {
    async fn op(&mut self, _i: u64) -> Result<Outcome, OpError> {
        if self.keys.is_empty() {
            return Err(OpError::new(0, "no key owned by this client"));
        }
        let key = &self.keys[self.rng.below(self.keys.len() as u64) as usize];
        let retries = self
            .updater
            .update(key, 0)
            .await
            .map_err(|s| OpError::status(0, &s))?;
        Ok(Outcome { kind: 0, retries })
    }
}

pub async fn txn_put(ctx: &Context, a: TxnPutArgs) -> anyhow::Result<Output> {
    let c = &a.common;
    let conns = connect_all(ctx, c.conns).await?;
    let prefix = sub_prefix(c, "txn/");
    let clients = c.clients.max(1);
    let mut workers = Vec::with_capacity(clients);
    for i in 0..clients {
        let mut updater = Updater {
            kv: kv_for(&conns, i),
            cache: HashMap::new(),
            value: keys::value(c.val_size),
        };
        updater.warm(&prefix).await?;
        workers.push(TxnPutWorker {
            updater,
            keys: keys::owned(a.key_space_size, i, clients)
                .into_iter()
                .map(|n| keys::key(&prefix, n, c.key_size))
                .collect(),
            rng: Rng::new(i as u64 + 1),
        });
    }
    let plan = plan(c, "txn-put", &["txn-put"], 10_000);
    let (m, _) = runner::drive(&plan, workers).await?;
    finish(ctx, "txn-put", c, &plan, &m)
}

// ---------------------------------------------------------------------------------------------
// list

/// Lists everything under `prefix` in pages of `limit`, as kube-apiserver pages a LIST: the
/// first page at the current revision (linearizable unless `serializable`), the rest pinned to
/// that revision and continuing after the last key seen. Returns the number of keys.
async fn paged_list(
    kv: &mut KvClient<Transport>,
    prefix: &[u8],
    limit: i64,
    serializable: bool,
) -> Result<u64, tonic::Status> {
    let end = prefix_range_end(prefix);
    let mut from = prefix.to_vec();
    let mut revision = 0;
    let mut seen = 0u64;
    loop {
        let resp = kv
            .range(RangeRequest {
                key: from.clone(),
                range_end: end.clone(),
                limit,
                revision,
                // kube-apiserver keeps every page linearizable; the pinned revision only makes
                // the pages one consistent snapshot.
                serializable,
                ..Default::default()
            })
            .await?
            .into_inner();
        if revision == 0 {
            revision = resp.header.map(|h| h.revision).unwrap_or(0);
        }
        seen += resp.kvs.len() as u64;
        match resp.kvs.last() {
            Some(last) if resp.more => {
                from = last.key.clone();
                from.push(0);
            }
            _ => return Ok(seen),
        }
    }
}

pub struct ListWorker {
    kv: KvClient<Transport>,
    prefix: Vec<u8>,
    limit: i64,
    serializable: bool,
    expect: u64,
}

impl Worker for ListWorker {
    async fn op(&mut self, _i: u64) -> Result<Outcome, OpError> {
        let n = paged_list(&mut self.kv, &self.prefix, self.limit, self.serializable)
            .await
            .map_err(|s| OpError::status(0, &s))?;
        if n != self.expect {
            return Err(OpError::new(
                0,
                format!("listed {n} keys, expected {}", self.expect),
            ));
        }
        Ok(Outcome::of(0))
    }
}

pub async fn list(ctx: &Context, a: ListArgs) -> anyhow::Result<Output> {
    let c = &a.common;
    let conns = connect_all(ctx, c.conns).await?;
    let prefix = sub_prefix(c, "list/");
    ensure_keys(&conns, c, &prefix, a.keys).await?;
    let serializable = a.consistency == Consistency::S;
    let workers = (0..c.clients.max(1))
        .map(|i| ListWorker {
            kv: kv_for(&conns, i),
            prefix: prefix.clone(),
            limit: a.limit,
            serializable,
            expect: a.keys,
        })
        .collect();
    let plan = plan(c, "list", &["list"], 100);
    let (m, _) = runner::drive(&plan, workers).await?;
    finish(ctx, "list", c, &plan, &m)
}

// ---------------------------------------------------------------------------------------------
// lease-keepalive

pub struct KeepAliveWorker {
    lease: LeaseClient<Transport>,
    id: i64,
    tx: mpsc::Sender<LeaseKeepAliveRequest>,
    rx: Streaming<LeaseKeepAliveResponse>,
}

impl Worker for KeepAliveWorker {
    async fn op(&mut self, _i: u64) -> Result<Outcome, OpError> {
        self.tx
            .send(LeaseKeepAliveRequest { id: self.id })
            .await
            .map_err(|_| OpError::new(0, "keep-alive stream closed"))?;
        match self.rx.message().await {
            Ok(Some(resp)) if resp.ttl > 0 => Ok(Outcome::of(0)),
            Ok(Some(_)) => Err(OpError::new(0, "lease expired or revoked")),
            Ok(None) => Err(OpError::new(0, "keep-alive stream ended")),
            Err(s) => Err(OpError::status(0, &s)),
        }
    }
}

pub async fn lease_keepalive(ctx: &Context, a: LeaseArgs) -> anyhow::Result<Output> {
    let c = &a.common;
    let conns = connect_all(ctx, c.conns).await?;
    let mut workers = Vec::new();
    for i in 0..c.clients.max(1) {
        let mut lease = conns[i % conns.len()].lease();
        let id = lease
            .lease_grant(LeaseGrantRequest { ttl: a.ttl, id: 0 })
            .await?
            .into_inner()
            .id;
        // The first keep-alive goes in before the call: tonic waits for response headers, which
        // grpc-go (etcd) sends only with its first answer. That round trip is not measured.
        let (tx, rx) = mpsc::channel(1);
        tx.send(LeaseKeepAliveRequest { id }).await?;
        let mut stream = lease
            .lease_keep_alive(ReceiverStream::new(rx))
            .await?
            .into_inner();
        if stream.message().await?.is_none_or(|r| r.ttl <= 0) {
            anyhow::bail!("lease {id:x} was not kept alive");
        }
        workers.push(KeepAliveWorker {
            lease,
            id,
            tx,
            rx: stream,
        });
    }
    let plan = plan(c, "lease-keepalive", &["keepalive"], 10_000);
    let (m, workers) = runner::drive(&plan, workers).await?;
    // Leave nothing behind for the next workload's measurements.
    for mut w in workers {
        drop(w.tx);
        let _ = w.lease.lease_revoke(LeaseRevokeRequest { id: w.id }).await;
    }
    finish(ctx, "lease-keepalive", c, &plan, &m)
}

// ---------------------------------------------------------------------------------------------
// k8s-mix

const MIX_KINDS: [&str; 4] = ["get", "list", "update", "lease-grant"];

pub struct MixWorker {
    kv: KvClient<Transport>,
    lease: LeaseClient<Transport>,
    updater: Updater,
    objects: Vec<Vec<u8>>,
    owned: Vec<Vec<u8>>,
    collection: Vec<u8>,
    events: Vec<u8>,
    key_size: usize,
    limit: i64,
    expect: u64,
    weights: [u32; 4],
    rng: Rng,
    value: Vec<u8>,
}

impl Worker for MixWorker {
    async fn op(&mut self, i: u64) -> Result<Outcome, OpError> {
        let sum: u64 = self.weights.iter().map(|w| u64::from(*w)).sum();
        let kind = keys::pick_weighted(&self.weights, self.rng.below(sum));
        match kind {
            // A quorum GET of one object (kube-apiserver reads through to etcd for
            // resourceVersion="").
            0 => {
                let key = self.objects[self.rng.below(self.objects.len() as u64) as usize].clone();
                self.kv
                    .range(RangeRequest {
                        key,
                        ..Default::default()
                    })
                    .await
                    .map_err(|s| OpError::status(kind, &s))?;
                Ok(Outcome::of(kind))
            }
            // A paged LIST of the whole collection (a relist, or a LIST that bypasses the cache).
            1 => {
                let n = paged_list(&mut self.kv, &self.collection, self.limit, false)
                    .await
                    .map_err(|s| OpError::status(kind, &s))?;
                if n != self.expect {
                    return Err(OpError::new(
                        kind,
                        format!("listed {n} objects, expected {}", self.expect),
                    ));
                }
                Ok(Outcome::of(kind))
            }
            // GuaranteedUpdate of one of this client's objects (status updates, node leases).
            2 => {
                if self.owned.is_empty() {
                    return Err(OpError::new(kind, "no object owned by this client"));
                }
                let key = self.owned[self.rng.below(self.owned.len() as u64) as usize].clone();
                let retries = self
                    .updater
                    .update(&key, 0)
                    .await
                    .map_err(|s| OpError::status(kind, &s))?;
                Ok(Outcome { kind, retries })
            }
            // An Event: a lease grant and a create attached to it (kube-apiserver attaches
            // Events to leases so they expire with them).
            _ => {
                let id = self
                    .lease
                    .lease_grant(LeaseGrantRequest { ttl: 60, id: 0 })
                    .await
                    .map_err(|s| OpError::status(kind, &s))?
                    .into_inner()
                    .id;
                let key = keys::key(&self.events, i, self.key_size.max(10));
                self.kv
                    .put(put_request(key, self.value.clone(), id))
                    .await
                    .map_err(|s| OpError::status(kind, &s))?;
                Ok(Outcome::of(kind))
            }
        }
    }
}

pub async fn k8s_mix(ctx: &Context, a: MixArgs) -> anyhow::Result<Output> {
    let c = &a.common;
    let conns = connect_all(ctx, c.conns).await?;
    let collection = sub_prefix(c, "mix/obj/");
    let events = sub_prefix(c, "mix/ev/");
    ensure_keys(&conns, c, &collection, a.objects).await?;
    let weights = [a.get_weight, a.list_weight, a.update_weight, a.lease_weight];
    if weights.iter().all(|w| *w == 0) {
        anyhow::bail!("every weight is 0");
    }
    let objects: Vec<Vec<u8>> = (0..a.objects)
        .map(|n| keys::key(&collection, n, c.key_size))
        .collect();
    let clients = c.clients.max(1);
    let mut workers = Vec::with_capacity(clients);
    for i in 0..clients {
        let conn = &conns[i % conns.len()];
        let mut updater = Updater {
            kv: conn.kv(),
            cache: HashMap::new(),
            value: keys::value(c.val_size),
        };
        updater.warm(&collection).await?;
        workers.push(MixWorker {
            kv: conn.kv(),
            lease: conn.lease(),
            updater,
            objects: objects.clone(),
            owned: keys::owned(a.objects, i, clients)
                .into_iter()
                .map(|n| objects[n as usize].clone())
                .collect(),
            collection: collection.clone(),
            events: events.clone(),
            key_size: c.key_size,
            limit: a.limit,
            expect: a.objects,
            weights,
            rng: Rng::new(i as u64 + 1),
            value: keys::value(c.val_size),
        });
    }
    let plan = plan(c, "k8s-mix", &MIX_KINDS, 10_000);
    let (m, _) = runner::drive(&plan, workers).await?;
    finish(ctx, "k8s-mix", c, &plan, &m)
}

// ---------------------------------------------------------------------------------------------
// fill and prefill

/// Writes keys `batch` at a time in one txn each: far fewer fsyncs than single puts, so a
/// million keys load in minutes on a small machine.
pub struct FillWorker {
    kv: KvClient<Transport>,
    prefix: Vec<u8>,
    key_size: usize,
    keys: u64,
    batch: u64,
    value: Vec<u8>,
}

impl Worker for FillWorker {
    async fn op(&mut self, i: u64) -> Result<Outcome, OpError> {
        let start = i * self.batch;
        let end = (start + self.batch).min(self.keys);
        let success = (start..end)
            .map(|n| RequestOp {
                request: Some(request_op::Request::RequestPut(put_request(
                    keys::key(&self.prefix, n, self.key_size),
                    self.value.clone(),
                    0,
                ))),
            })
            .collect();
        self.kv
            .txn(TxnRequest {
                compare: Vec::new(),
                success,
                failure: Vec::new(),
            })
            .await
            .map_err(|s| OpError::status(0, &s))?;
        Ok(Outcome::of(0))
    }
}

fn fill_workers(
    conns: &[Client],
    c: &CommonArgs,
    prefix: &[u8],
    n: u64,
    batch: u64,
) -> Vec<FillWorker> {
    (0..c.clients.max(1))
        .map(|i| FillWorker {
            kv: kv_for(conns, i),
            prefix: prefix.to_vec(),
            key_size: c.key_size,
            keys: n,
            batch: batch.max(1),
            value: keys::value(c.val_size),
        })
        .collect()
}

fn fill_plan(c: &CommonArgs, title: &str, n: u64, batch: u64) -> Plan {
    Plan {
        total: Some(n.div_ceil(batch.max(1))),
        duration: None,
        rate: None,
        op_timeout: c.op_timeout,
        kinds: vec!["txn-fill".into()],
        title: title.into(),
    }
}

/// Makes `prefix` hold exactly keys `0..n` (not measured): workloads that read a collection
/// need it in place, and re-running them should not rewrite it every time.
async fn ensure_keys(
    conns: &[Client],
    c: &CommonArgs,
    prefix: &[u8],
    n: u64,
) -> anyhow::Result<()> {
    let mut kv = conns[0].kv();
    let end = prefix_range_end(prefix);
    let count = kv
        .range(RangeRequest {
            key: prefix.to_vec(),
            range_end: end.clone(),
            count_only: true,
            ..Default::default()
        })
        .await?
        .into_inner()
        .count;
    if u64::try_from(count).ok() == Some(n) {
        return Ok(());
    }
    kv.delete_range(DeleteRangeRequest {
        key: prefix.to_vec(),
        range_end: end,
        ..Default::default()
    })
    .await?;
    let batch = 100;
    let plan = fill_plan(c, "prefill", n, batch);
    let (m, _) = runner::drive(&plan, fill_workers(conns, c, prefix, n, batch)).await?;
    let errors: u64 = m.errors.iter().sum();
    if errors > 0 {
        m.report_errors();
        anyhow::bail!("prefill of {n} keys failed {errors} times");
    }
    Ok(())
}

pub async fn fill(ctx: &Context, a: FillArgs) -> anyhow::Result<Output> {
    let c = &a.common;
    let conns = connect_all(ctx, c.conns).await?;
    let prefix = c.prefix.clone().into_bytes();
    let plan = fill_plan(c, "fill", a.keys, a.batch);
    let (m, _) = runner::drive(&plan, fill_workers(&conns, c, &prefix, a.keys, a.batch)).await?;
    finish(ctx, "fill", c, &plan, &m)
}
