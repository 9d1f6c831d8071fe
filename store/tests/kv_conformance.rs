//! etcd KV compatibility, driven through the real `etcd-client` crate.
//!
//! Every scenario is written once, with etcd's exact values, codes and messages as assertions, and
//! run twice: first against a real etcd (Debian's `/usr/bin/etcd`, 3.4) — which proves the
//! expectation itself is etcd's behaviour — then against a fresh single-member `cairn serve`.
//! When etcd is absent the etcd side is skipped with a printed note.

mod support;

use std::future::Future;
use std::time::Duration;

use etcd_client::{
    Client, Compare, CompareOp, ConnectOptions, DeleteOptions, Error, GetOptions, GetResponse,
    PutOptions, SortOrder, SortTarget, Txn, TxnOp, TxnOpResponse,
};
use support::{Cluster, Etcd};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tonic::Code;

const MIB: usize = 1024 * 1024;

async fn connect(endpoint: &str) -> Client {
    let opts = ConnectOptions::new()
        .with_connect_timeout(Duration::from_secs(2))
        .with_timeout(Duration::from_secs(10));
    Client::connect([endpoint], Some(opts))
        .await
        .expect("connect")
}

/// Runs `scenario` against a real etcd (when installed), then against a fresh cairn member.
/// A failure on the etcd side means the test's expectation is wrong, not cairn.
async fn on_both<F, Fut>(name: &str, scenario: F)
where
    F: Fn(Client, Server) -> Fut,
    Fut: Future<Output = ()> + Send + 'static,
{
    match Etcd::start().await {
        Some(etcd) => {
            let c = connect(&etcd.endpoint()).await;
            let port = etcd.client_port;
            if let Err(e) = tokio::spawn(scenario(
                c,
                Server {
                    port,
                    is_etcd: true,
                },
            ))
            .await
            {
                panic!("{name}: the expectation does not hold on REAL etcd (test bug): {e}");
            }
        }
        None => eprintln!("note: {name}: /usr/bin/etcd is absent; comparing against cairn only"),
    }
    let cluster = Cluster::start(1).await;
    let m = &cluster.members[0];
    let c = m.client().await;
    let server = Server {
        port: m.client_port,
        is_etcd: false,
    };
    if let Err(e) = tokio::spawn(scenario(c, server)).await {
        panic!(
            "{name}: cairn differs from etcd: {e}\n{}",
            cluster.dump_logs()
        );
    }
}

/// Which server a scenario runs against.
#[derive(Clone, Copy, Debug)]
struct Server {
    port: u16,
    is_etcd: bool,
}

impl Server {
    fn name(&self) -> &'static str {
        if self.is_etcd {
            "etcd"
        } else {
            "cairn"
        }
    }
}

fn status(r: Result<impl std::fmt::Debug, Error>) -> (Code, String) {
    match r {
        Err(Error::GRpcStatus(s)) => (s.code(), s.message().to_string()),
        other => panic!("expected a gRPC error status, got {other:?}"),
    }
}

fn err(code: Code, msg: &str) -> (Code, String) {
    (code, msg.to_string())
}

const COMPACTED: &str = "etcdserver: mvcc: required revision has been compacted";
const FUTURE: &str = "etcdserver: mvcc: required revision is a future revision";

/// The store's revision, read from a Range header.
async fn rev(c: &mut Client) -> i64 {
    c.get("\x00rev-probe", None)
        .await
        .unwrap()
        .header()
        .unwrap()
        .revision()
}

fn keys(r: &GetResponse) -> Vec<String> {
    r.kvs()
        .iter()
        .map(|kv| String::from_utf8_lossy(kv.key()).into_owned())
        .collect()
}

fn values(r: &GetResponse) -> Vec<String> {
    r.kvs()
        .iter()
        .map(|kv| String::from_utf8_lossy(kv.value()).into_owned())
        .collect()
}

/// (create_revision, mod_revision, version) of the one key `r` returned.
fn meta(r: &GetResponse) -> (i64, i64, i64) {
    assert_eq!(
        r.kvs().len(),
        1,
        "expected exactly one kv, got {:?}",
        keys(r)
    );
    let kv = &r.kvs()[0];
    (kv.create_revision(), kv.mod_revision(), kv.version())
}

async fn put(c: &mut Client, k: &str, v: &str) -> i64 {
    c.put(k, v, None)
        .await
        .unwrap()
        .header()
        .unwrap()
        .revision()
}

// ---------------------------------------------------------------------------------------------
// Revisions
// ---------------------------------------------------------------------------------------------

#[tokio::test]
async fn revisions_follow_etcd() {
    on_both("revisions_follow_etcd", |mut c, _| async move {
        assert_eq!(rev(&mut c).await, 1, "a fresh store is at revision 1");
        assert_eq!(
            put(&mut c, "a", "1").await,
            2,
            "the first write is revision 2"
        );
        assert_eq!(meta(&c.get("a", None).await.unwrap()), (2, 2, 1));
        assert_eq!(put(&mut c, "a", "2").await, 3);
        assert_eq!(meta(&c.get("a", None).await.unwrap()), (2, 3, 2));
        assert_eq!(put(&mut c, "b", "1").await, 4);

        let d = c.delete("a", None).await.unwrap();
        assert_eq!((d.deleted(), d.header().unwrap().revision()), (1, 5));
        // Deleting a missing key changes nothing, so the revision stays.
        let d = c.delete("a", None).await.unwrap();
        assert_eq!((d.deleted(), d.header().unwrap().revision()), (0, 5));
        let d = c
            .delete("nothing/", Some(DeleteOptions::new().with_prefix()))
            .await
            .unwrap();
        assert_eq!((d.deleted(), d.header().unwrap().revision()), (0, 5));
        assert_eq!(rev(&mut c).await, 5);

        // Re-creating a deleted key starts a new life: version 1, new create_revision.
        assert_eq!(put(&mut c, "a", "3").await, 6);
        assert_eq!(meta(&c.get("a", None).await.unwrap()), (6, 6, 1));

        // A read-only Txn does not take a revision.
        let t = c
            .txn(Txn::new().and_then([TxnOp::get("a", None), TxnOp::get("b", None)]))
            .await
            .unwrap();
        assert!(t.succeeded());
        assert_eq!(t.header().unwrap().revision(), 6);
        assert_eq!(rev(&mut c).await, 6);

        // All writes of one Txn share one revision, and each op's header reports it.
        let t = c
            .txn(Txn::new().and_then([
                TxnOp::put("x", "1", None),
                TxnOp::put("y", "1", None),
                TxnOp::delete("b", None),
                TxnOp::put("z", "1", None),
            ]))
            .await
            .unwrap();
        assert_eq!(t.header().unwrap().revision(), 7);
        for op in t.op_responses() {
            let h = match &op {
                TxnOpResponse::Put(p) => p.header().unwrap().revision(),
                TxnOpResponse::Delete(d) => d.header().unwrap().revision(),
                other => panic!("unexpected {other:?}"),
            };
            assert_eq!(h, 7);
        }
        for k in ["x", "y", "z"] {
            assert_eq!(meta(&c.get(k, None).await.unwrap()), (7, 7, 1), "{k}");
        }
        assert_eq!(
            c.get("b", Some(GetOptions::new().with_revision(6)))
                .await
                .unwrap()
                .kvs()
                .len(),
            1
        );
        assert_eq!(c.get("b", None).await.unwrap().kvs().len(), 0);

        // A Txn whose chosen branch writes nothing (or deletes nothing) does not take a revision.
        let t = c
            .txn(
                Txn::new()
                    .when([Compare::version("x", CompareOp::Equal, 1)])
                    .and_then([TxnOp::delete("missing", None)])
                    .or_else([TxnOp::put("w", "1", None)]),
            )
            .await
            .unwrap();
        assert!(t.succeeded());
        assert_eq!(t.header().unwrap().revision(), 7);
        assert_eq!(rev(&mut c).await, 7);
    })
    .await;
}

// ---------------------------------------------------------------------------------------------
// Range
// ---------------------------------------------------------------------------------------------

async fn load_range_fixture(c: &mut Client) {
    for (k, v) in [
        ("foo", "0"),
        ("foo/a", "1"),
        ("foo/b", "2"),
        ("foo/c", "3"),
        ("fop", "4"),
        ("zzz", "5"),
    ] {
        c.put(k, v, None).await.unwrap();
    }
}

#[tokio::test]
async fn range_key_conventions() {
    on_both("range_key_conventions", |mut c, _| async move {
        load_range_fixture(&mut c).await;
        let g = c.get("foo/a", None).await.unwrap();
        assert_eq!(
            (keys(&g), values(&g), g.count(), g.more()),
            (vec!["foo/a".into()], vec!["1".into()], 1, false)
        );
        let g = c.get("foo/", None).await.unwrap();
        assert_eq!((g.kvs().len(), g.count()), (0, 0), "no key is exactly foo/");

        let g = c
            .get("foo/", Some(GetOptions::new().with_prefix()))
            .await
            .unwrap();
        assert_eq!(keys(&g), ["foo/a", "foo/b", "foo/c"]);
        assert_eq!(g.count(), 3);
        let g = c
            .get("foo", Some(GetOptions::new().with_prefix()))
            .await
            .unwrap();
        assert_eq!(keys(&g), ["foo", "foo/a", "foo/b", "foo/c"]);

        // range_end "\0": every key >= key.
        let g = c
            .get("foo/b", Some(GetOptions::new().with_from_key()))
            .await
            .unwrap();
        assert_eq!(keys(&g), ["foo/b", "foo/c", "fop", "zzz"]);
        // key "\0", range_end "\0": every key.
        let g = c
            .get("", Some(GetOptions::new().with_all_keys()))
            .await
            .unwrap();
        assert_eq!(keys(&g), ["foo", "foo/a", "foo/b", "foo/c", "fop", "zzz"]);
        assert_eq!(g.count(), 6);
        // An explicit [key, range_end).
        let g = c
            .get("foo/a", Some(GetOptions::new().with_range("foo/c")))
            .await
            .unwrap();
        assert_eq!(keys(&g), ["foo/a", "foo/b"]);
        // An inverted range is empty.
        let g = c
            .get("zzz", Some(GetOptions::new().with_range("foo")))
            .await
            .unwrap();
        assert_eq!((g.kvs().len(), g.count(), g.more()), (0, 0, false));
        let g = c
            .get("foo", Some(GetOptions::new().with_range("foo")))
            .await
            .unwrap();
        assert_eq!((g.kvs().len(), g.count()), (0, 0));

        // Serializable reads see the same data.
        let g = c
            .get(
                "foo",
                Some(GetOptions::new().with_prefix().with_serializable()),
            )
            .await
            .unwrap();
        assert_eq!(keys(&g), ["foo", "foo/a", "foo/b", "foo/c"]);
        assert_eq!(g.header().unwrap().revision(), 7);

        // The empty key is refused.
        assert_eq!(
            status(c.get("", None).await),
            err(Code::InvalidArgument, "etcdserver: key is not provided")
        );
    })
    .await;
}

#[tokio::test]
async fn range_limit_count_keys_only_count_only() {
    on_both(
        "range_limit_count_keys_only_count_only",
        |mut c, _| async move {
            load_range_fixture(&mut c).await;
            let prefix = || GetOptions::new().with_prefix();
            let g = c.get("foo", Some(prefix().with_limit(2))).await.unwrap();
            assert_eq!(
                (keys(&g), g.more(), g.count()),
                (vec!["foo".into(), "foo/a".into()], true, 4)
            );
            let g = c.get("foo", Some(prefix().with_limit(3))).await.unwrap();
            assert_eq!((g.kvs().len(), g.more(), g.count()), (3, true, 4));
            let g = c.get("foo", Some(prefix().with_limit(4))).await.unwrap();
            assert_eq!((g.kvs().len(), g.more(), g.count()), (4, false, 4));
            let g = c.get("foo", Some(prefix().with_limit(10))).await.unwrap();
            assert_eq!((g.kvs().len(), g.more(), g.count()), (4, false, 4));
            let g = c
                .get("", Some(GetOptions::new().with_all_keys().with_limit(1)))
                .await
                .unwrap();
            assert_eq!(
                (keys(&g), g.more(), g.count()),
                (vec!["foo".into()], true, 6)
            );

            // count_only: no kvs, the full count, never `more`.
            let g = c
                .get("foo", Some(prefix().with_count_only()))
                .await
                .unwrap();
            assert_eq!((g.kvs().len(), g.count(), g.more()), (0, 4, false));
            let g = c
                .get("foo", Some(prefix().with_count_only().with_limit(1)))
                .await
                .unwrap();
            assert_eq!((g.kvs().len(), g.count()), (0, 4));

            // keys_only: values dropped, everything else kept.
            let g = c
                .get("foo/", Some(prefix().with_keys_only()))
                .await
                .unwrap();
            assert_eq!(keys(&g), ["foo/a", "foo/b", "foo/c"]);
            assert!(g.kvs().iter().all(|kv| kv.value().is_empty()));
            assert_eq!(
                g.kvs()
                    .iter()
                    .map(|kv| (kv.create_revision(), kv.mod_revision(), kv.version()))
                    .collect::<Vec<_>>(),
                [(3, 3, 1), (4, 4, 1), (5, 5, 1)]
            );
            let g = c
                .get("foo/", Some(prefix().with_keys_only().with_limit(1)))
                .await
                .unwrap();
            assert_eq!(
                (keys(&g), g.more(), g.count()),
                (vec!["foo/a".into()], true, 3)
            );
        },
    )
    .await;
}

#[tokio::test]
async fn range_at_revisions_and_compaction() {
    on_both("range_at_revisions_and_compaction", |mut c, _| async move {
        assert_eq!(put(&mut c, "k", "v1").await, 2);
        assert_eq!(put(&mut c, "k", "v2").await, 3);
        assert_eq!(put(&mut c, "k", "v3").await, 4);
        assert_eq!(
            c.delete("k", None)
                .await
                .unwrap()
                .header()
                .unwrap()
                .revision(),
            5
        );
        assert_eq!(put(&mut c, "k", "v5").await, 6);
        assert_eq!(put(&mut c, "other", "o").await, 7);

        let at = |r: i64| Some(GetOptions::new().with_revision(r));
        for (r, want) in [
            (1, None),
            (2, Some(("v1", (2, 2, 1)))),
            (3, Some(("v2", (2, 3, 2)))),
            (4, Some(("v3", (2, 4, 3)))),
            (5, None),
            (6, Some(("v5", (6, 6, 1)))),
        ] {
            let g = c.get("k", at(r)).await.unwrap();
            // The header always carries the current revision, not the one read at.
            assert_eq!(g.header().unwrap().revision(), 7, "header at rev {r}");
            match want {
                None => assert_eq!(g.kvs().len(), 0, "k at rev {r}"),
                Some((v, m)) => {
                    assert_eq!(values(&g), [v], "k at rev {r}");
                    assert_eq!(meta(&g), m, "k at rev {r}");
                }
            }
        }
        let g = c
            .get(
                "",
                Some(
                    GetOptions::new()
                        .with_all_keys()
                        .with_revision(6)
                        .with_count_only(),
                ),
            )
            .await
            .unwrap();
        assert_eq!(g.count(), 1);

        assert_eq!(
            status(c.get("k", at(8)).await),
            err(Code::OutOfRange, FUTURE)
        );
        assert_eq!(
            status(c.get("k", at(1000)).await),
            err(Code::OutOfRange, FUTURE)
        );

        let cr = c.compact(4, None).await.unwrap();
        assert_eq!(
            cr.header().unwrap().revision(),
            7,
            "compaction takes no revision"
        );
        assert_eq!(
            status(c.get("k", at(3)).await),
            err(Code::OutOfRange, COMPACTED)
        );
        assert_eq!(
            status(c.get("k", at(1)).await),
            err(Code::OutOfRange, COMPACTED)
        );
        assert_eq!(
            status(
                c.get(
                    "",
                    Some(
                        GetOptions::new()
                            .with_all_keys()
                            .with_revision(2)
                            .with_count_only()
                    )
                )
                .await
            ),
            err(Code::OutOfRange, COMPACTED)
        );
        // Exactly at the compact revision is allowed, and sees the newest version <= it.
        let g = c.get("k", at(4)).await.unwrap();
        assert_eq!((values(&g), meta(&g)), (vec!["v3".into()], (2, 4, 3)));
        assert_eq!(
            c.get("k", at(5)).await.unwrap().kvs().len(),
            0,
            "the delete at 5 stays visible"
        );
        assert_eq!(values(&c.get("k", at(6)).await.unwrap()), ["v5"]);
        assert_eq!(values(&c.get("k", at(0)).await.unwrap()), ["v5"]);

        // Compacting again at or below the compact revision, or into the future, is refused.
        assert_eq!(
            status(c.compact(4, None).await),
            err(Code::OutOfRange, COMPACTED)
        );
        assert_eq!(
            status(c.compact(2, None).await),
            err(Code::OutOfRange, COMPACTED)
        );
        assert_eq!(
            status(c.compact(8, None).await),
            err(Code::OutOfRange, FUTURE)
        );

        // Physical compaction past the delete: the key's old life is gone, the new one stays.
        c.compact(
            6,
            Some(etcd_client::CompactionOptions::new().with_physical()),
        )
        .await
        .unwrap();
        assert_eq!(
            status(c.get("k", at(5)).await),
            err(Code::OutOfRange, COMPACTED)
        );
        let g = c.get("k", at(6)).await.unwrap();
        assert_eq!((values(&g), meta(&g)), (vec!["v5".into()], (6, 6, 1)));
        let g = c
            .get("", Some(GetOptions::new().with_all_keys()))
            .await
            .unwrap();
        assert_eq!(keys(&g), ["k", "other"]);
        assert_eq!(rev(&mut c).await, 7);

        // A Txn reading below the compact revision is refused as a whole.
        assert_eq!(
            status(c.txn(Txn::new().and_then([TxnOp::get("k", at(3))])).await),
            err(Code::OutOfRange, COMPACTED)
        );
        assert_eq!(
            status(
                c.txn(Txn::new().and_then([TxnOp::put("t", "1", None), TxnOp::get("k", at(3))]))
                    .await
            ),
            err(Code::OutOfRange, COMPACTED)
        );
        assert_eq!(
            c.get("t", None).await.unwrap().kvs().len(),
            0,
            "a refused Txn writes nothing"
        );
        assert_eq!(rev(&mut c).await, 7);
    })
    .await;
}

/// Builds keys whose sort targets all order differently:
/// s/a: create 4, mod 4, version 1, value "k"; s/b: create 2, mod 6, version 3, value "q";
/// s/c: create 3, mod 7, version 2, value "b".
async fn load_sort_fixture(c: &mut Client) {
    for (k, v) in [
        ("s/b", "m"),
        ("s/c", "z"),
        ("s/a", "k"),
        ("s/b", "a"),
        ("s/b", "q"),
        ("s/c", "b"),
    ] {
        c.put(k, v, None).await.unwrap();
    }
}

#[tokio::test]
async fn range_sort_targets_orders_and_filters() {
    on_both(
        "range_sort_targets_orders_and_filters",
        |mut c, _| async move {
            load_sort_fixture(&mut c).await;
            let sorted =
                |t: SortTarget, o: SortOrder| GetOptions::new().with_prefix().with_sort(t, o);
            use SortOrder::*;
            use SortTarget::*;
            let cases: Vec<(SortTarget, SortOrder, [&str; 3])> = vec![
                (Key, None, ["s/a", "s/b", "s/c"]),
                (Key, Ascend, ["s/a", "s/b", "s/c"]),
                (Key, Descend, ["s/c", "s/b", "s/a"]),
                (Version, Ascend, ["s/a", "s/c", "s/b"]),
                (Version, Descend, ["s/b", "s/c", "s/a"]),
                // A target other than KEY with order NONE sorts ascending.
                (Version, None, ["s/a", "s/c", "s/b"]),
                (Create, Ascend, ["s/b", "s/c", "s/a"]),
                (Create, Descend, ["s/a", "s/c", "s/b"]),
                (Create, None, ["s/b", "s/c", "s/a"]),
                (Mod, Ascend, ["s/a", "s/b", "s/c"]),
                (Mod, Descend, ["s/c", "s/b", "s/a"]),
                (Mod, None, ["s/a", "s/b", "s/c"]),
                (Value, Ascend, ["s/c", "s/a", "s/b"]),
                (Value, Descend, ["s/b", "s/a", "s/c"]),
                (Value, None, ["s/c", "s/a", "s/b"]),
            ];
            for (t, o, want) in &cases {
                let g = c.get("s/", Some(sorted(*t, *o))).await.unwrap();
                assert_eq!(keys(&g), want, "sort {t:?} {o:?}");
                assert_eq!((g.count(), g.more()), (3, false));
                // With a limit the server sorts first, then truncates -- except for etcd's quirk:
                // with order NONE (and no filter) etcd pushes the limit down to its key-ordered scan,
                // reads limit+1 keys, and only sorts those (server/etcdserver/txn/range.go).
                for limit in 1..=3 {
                    let g = c
                        .get("s/", Some(sorted(*t, *o).with_limit(limit)))
                        .await
                        .unwrap();
                    let want: Vec<&str> = if *t != Key && *o == None && limit == 1 {
                        // limit+1 = 2 keys read (s/a, s/b); the first of them in target order wins.
                        want.iter()
                            .copied()
                            .filter(|k| *k != "s/c")
                            .take(1)
                            .collect()
                    } else {
                        want[..limit as usize].to_vec()
                    };
                    assert_eq!(keys(&g), want, "sort {t:?} {o:?} limit {limit}");
                    assert_eq!(
                        (g.count(), g.more()),
                        (3, limit < 3),
                        "sort {t:?} {o:?} limit {limit}"
                    );
                }
            }

            // Revision filters; `count` ignores them (and the limit).
            let f = || GetOptions::new().with_prefix();
            let g = c
                .get("s/", Some(f().with_min_mod_revision(6)))
                .await
                .unwrap();
            assert_eq!(
                (keys(&g), g.count(), g.more()),
                (vec!["s/b".into(), "s/c".into()], 3, false)
            );
            let g = c
                .get("s/", Some(f().with_max_mod_revision(6)))
                .await
                .unwrap();
            assert_eq!(keys(&g), ["s/a", "s/b"]);
            let g = c
                .get("s/", Some(f().with_min_create_revision(3)))
                .await
                .unwrap();
            assert_eq!(keys(&g), ["s/a", "s/c"]);
            let g = c
                .get("s/", Some(f().with_max_create_revision(3)))
                .await
                .unwrap();
            assert_eq!(keys(&g), ["s/b", "s/c"]);
            let g = c
                .get(
                    "s/",
                    Some(f().with_min_create_revision(3).with_max_mod_revision(6)),
                )
                .await
                .unwrap();
            assert_eq!((keys(&g), g.count()), (vec!["s/a".into()], 3));
            let g = c
                .get("s/", Some(f().with_min_mod_revision(8)))
                .await
                .unwrap();
            assert_eq!((g.kvs().len(), g.count(), g.more()), (0, 3, false));
            // Filters with a limit: `more` says the filtered result was truncated.
            let g = c
                .get("s/", Some(f().with_min_mod_revision(5).with_limit(1)))
                .await
                .unwrap();
            assert_eq!(
                (keys(&g), g.count(), g.more()),
                (vec!["s/b".into()], 3, true)
            );
            let g = c
                .get("s/", Some(f().with_min_mod_revision(7).with_limit(1)))
                .await
                .unwrap();
            assert_eq!(
                (keys(&g), g.count(), g.more()),
                (vec!["s/c".into()], 3, false)
            );
            let g = c
                .get(
                    "s/",
                    Some(
                        f().with_max_create_revision(3)
                            .with_sort(Value, Descend)
                            .with_limit(1),
                    ),
                )
                .await
                .unwrap();
            assert_eq!(
                (keys(&g), g.count(), g.more()),
                (vec!["s/b".into()], 3, true)
            );
            // count_only with a filter still counts the whole range.
            let g = c
                .get("s/", Some(f().with_min_mod_revision(7).with_count_only()))
                .await
                .unwrap();
            assert_eq!((g.kvs().len(), g.count()), (0, 3));
            // Sorting and filtering a past revision.
            let g = c
                .get("s/", Some(f().with_revision(5).with_sort(Mod, Descend)))
                .await
                .unwrap();
            assert_eq!(keys(&g), ["s/b", "s/a", "s/c"]);
            assert_eq!(values(&g), ["a", "k", "z"]);
        },
    )
    .await;
}

// ---------------------------------------------------------------------------------------------
// Put
// ---------------------------------------------------------------------------------------------

#[tokio::test]
async fn put_options_and_errors() {
    on_both("put_options_and_errors", |mut c, _| async move {
        let p = c
            .put("k", "v1", Some(PutOptions::new().with_prev_key()))
            .await
            .unwrap();
        assert!(p.prev_key().is_none());
        assert_eq!(p.header().unwrap().revision(), 2);
        let p = c
            .put("k", "v2", Some(PutOptions::new().with_prev_key()))
            .await
            .unwrap();
        let prev = p.prev_key().unwrap();
        assert_eq!(
            (
                prev.key(),
                prev.value(),
                prev.create_revision(),
                prev.mod_revision(),
                prev.version()
            ),
            (&b"k"[..], &b"v1"[..], 2, 2, 1)
        );
        // Without prev_kv nothing comes back.
        assert!(c.put("k", "v3", None).await.unwrap().prev_key().is_none());

        // ignore_value keeps the value and bumps version and mod_revision.
        let p = c
            .put(
                "k",
                "",
                Some(PutOptions::new().with_ignore_value().with_prev_key()),
            )
            .await
            .unwrap();
        assert_eq!(p.header().unwrap().revision(), 5);
        assert_eq!(p.prev_key().unwrap().value(), b"v3");
        let g = c.get("k", None).await.unwrap();
        assert_eq!((values(&g), meta(&g)), (vec!["v3".into()], (2, 5, 4)));
        // ignore_lease keeps the lease (none) and takes the new value.
        c.put("k", "v6", Some(PutOptions::new().with_ignore_lease()))
            .await
            .unwrap();
        let g = c.get("k", None).await.unwrap();
        assert_eq!(
            (values(&g), meta(&g), g.kvs()[0].lease()),
            (vec!["v6".into()], (2, 6, 5), 0)
        );
        // An empty value is a value.
        c.put("empty", "", None).await.unwrap();
        let g = c.get("empty", None).await.unwrap();
        assert_eq!((values(&g), meta(&g)), (vec!["".into()], (7, 7, 1)));

        // Errors, none of which takes a revision.
        assert_eq!(
            status(
                c.put("k", "x", Some(PutOptions::new().with_ignore_value()))
                    .await
            ),
            err(Code::InvalidArgument, "etcdserver: value is provided")
        );
        assert_eq!(
            status(
                c.put("missing", "", Some(PutOptions::new().with_ignore_value()))
                    .await
            ),
            err(Code::InvalidArgument, "etcdserver: key not found")
        );
        assert_eq!(
            status(
                c.put("missing", "x", Some(PutOptions::new().with_ignore_lease()))
                    .await
            ),
            err(Code::InvalidArgument, "etcdserver: key not found")
        );
        assert_eq!(
            status(
                c.put(
                    "k",
                    "x",
                    Some(PutOptions::new().with_ignore_lease().with_lease(5))
                )
                .await
            ),
            err(Code::InvalidArgument, "etcdserver: lease is provided")
        );
        assert_eq!(
            status(
                c.put("k", "x", Some(PutOptions::new().with_lease(0x1234_5678)))
                    .await
            ),
            err(Code::NotFound, "etcdserver: requested lease not found")
        );
        assert_eq!(
            status(c.put("", "x", None).await),
            err(Code::InvalidArgument, "etcdserver: key is not provided")
        );
        // The same checks inside a Txn.
        assert_eq!(
            status(
                c.txn(Txn::new().and_then([TxnOp::put(
                    "missing",
                    "",
                    Some(PutOptions::new().with_ignore_value())
                )]))
                .await
            ),
            err(Code::InvalidArgument, "etcdserver: key not found")
        );
        assert_eq!(
            status(
                c.txn(Txn::new().and_then([
                    TxnOp::put("n", "1", None),
                    TxnOp::put("k", "x", Some(PutOptions::new().with_lease(99)))
                ]))
                .await
            ),
            err(Code::NotFound, "etcdserver: requested lease not found")
        );
        assert_eq!(
            status(
                c.txn(Txn::new().and_then([TxnOp::put("", "1", None)]))
                    .await
            ),
            err(Code::InvalidArgument, "etcdserver: key is not provided")
        );
        assert_eq!(c.get("n", None).await.unwrap().kvs().len(), 0);
        assert_eq!(rev(&mut c).await, 7);
        let g = c.get("k", None).await.unwrap();
        assert_eq!((values(&g), meta(&g)), (vec!["v6".into()], (2, 6, 5)));
    })
    .await;
}

// ---------------------------------------------------------------------------------------------
// DeleteRange
// ---------------------------------------------------------------------------------------------

#[tokio::test]
async fn delete_range_forms() {
    on_both("delete_range_forms", |mut c, _| async move {
        for k in ["d/a", "d/b", "d/c", "d/d", "e", "f"] {
            c.put(k, format!("v-{k}"), None).await.unwrap();
        }
        assert_eq!(rev(&mut c).await, 7);
        let d = c
            .delete("d/a", Some(DeleteOptions::new().with_prev_key()))
            .await
            .unwrap();
        assert_eq!((d.deleted(), d.header().unwrap().revision()), (1, 8));
        let prev = &d.prev_kvs()[0];
        assert_eq!(
            (
                d.prev_kvs().len(),
                prev.key(),
                prev.value(),
                prev.mod_revision()
            ),
            (1, &b"d/a"[..], &b"v-d/a"[..], 2)
        );

        let d = c
            .delete("d/", Some(DeleteOptions::new().with_prefix()))
            .await
            .unwrap();
        assert_eq!(
            (
                d.deleted(),
                d.prev_kvs().len(),
                d.header().unwrap().revision()
            ),
            (3, 0, 9)
        );
        // One revision for the whole range: all three were there at 8 and are gone at 9.
        let at = |r| Some(GetOptions::new().with_prefix().with_revision(r));
        assert_eq!(
            keys(&c.get("d/", at(8)).await.unwrap()),
            ["d/b", "d/c", "d/d"]
        );
        assert_eq!(c.get("d/", at(9)).await.unwrap().count(), 0);

        // Inverted and empty ranges delete nothing and take no revision.
        let d = c
            .delete("f", Some(DeleteOptions::new().with_range("e")))
            .await
            .unwrap();
        assert_eq!((d.deleted(), d.header().unwrap().revision()), (0, 9));
        let d = c
            .delete("e", Some(DeleteOptions::new().with_range("e")))
            .await
            .unwrap();
        assert_eq!((d.deleted(), d.header().unwrap().revision()), (0, 9));

        for k in ["a", "b", "c"] {
            c.put(k, "x", None).await.unwrap();
        }
        // [b, f) with prev_kv.
        let d = c
            .delete(
                "b",
                Some(DeleteOptions::new().with_range("f").with_prev_key()),
            )
            .await
            .unwrap();
        assert_eq!(d.deleted(), 3);
        assert_eq!(
            d.prev_kvs()
                .iter()
                .map(|kv| kv.key().to_vec())
                .collect::<Vec<_>>(),
            [b"b".to_vec(), b"c".to_vec(), b"e".to_vec()]
        );
        // From-key.
        let d = c
            .delete(
                "b",
                Some(DeleteOptions::new().with_from_key().with_prev_key()),
            )
            .await
            .unwrap();
        assert_eq!(
            d.prev_kvs()
                .iter()
                .map(|kv| kv.key().to_vec())
                .collect::<Vec<_>>(),
            [b"f".to_vec()]
        );
        // Everything.
        c.put("z", "x", None).await.unwrap();
        let d = c
            .delete("", Some(DeleteOptions::new().with_all_keys()))
            .await
            .unwrap();
        assert_eq!(d.deleted(), 2);
        assert_eq!(
            c.get(
                "",
                Some(GetOptions::new().with_all_keys().with_count_only())
            )
            .await
            .unwrap()
            .count(),
            0
        );
        assert_eq!(
            status(c.delete("", None).await),
            err(Code::InvalidArgument, "etcdserver: key is not provided")
        );
    })
    .await;
}

// ---------------------------------------------------------------------------------------------
// Txn
// ---------------------------------------------------------------------------------------------

async fn holds(c: &mut Client, cmp: Compare) -> bool {
    let before = rev(c).await;
    let t = c.txn(Txn::new().when([cmp])).await.unwrap();
    assert_eq!(
        t.header().unwrap().revision(),
        before,
        "a compare-only Txn takes no revision"
    );
    t.succeeded()
}

#[tokio::test]
async fn txn_compare_targets_and_results() {
    on_both("txn_compare_targets_and_results", |mut c, _| async move {
        put(&mut c, "c/k", "v").await; // rev 2
        put(&mut c, "c/k", "w").await; // rev 3: create 2, mod 3, version 2, value w, lease 0
        use CompareOp::*;
        let k = "c/k";
        let cases: Vec<(Compare, bool)> = vec![
            (Compare::version(k, Equal, 2), true),
            (Compare::version(k, Equal, 1), false),
            (Compare::version(k, Greater, 1), true),
            (Compare::version(k, Greater, 2), false),
            (Compare::version(k, Less, 3), true),
            (Compare::version(k, Less, 2), false),
            (Compare::version(k, NotEqual, 2), false),
            (Compare::version(k, NotEqual, 7), true),
            (Compare::create_revision(k, Equal, 2), true),
            (Compare::create_revision(k, Greater, 2), false),
            (Compare::create_revision(k, Greater, 1), true),
            (Compare::create_revision(k, Less, 3), true),
            (Compare::create_revision(k, NotEqual, 3), true),
            (Compare::mod_revision(k, Equal, 3), true),
            (Compare::mod_revision(k, Equal, 2), false),
            (Compare::mod_revision(k, Greater, 2), true),
            (Compare::mod_revision(k, Less, 3), false),
            (Compare::mod_revision(k, Less, 4), true),
            (Compare::mod_revision(k, NotEqual, 3), false),
            (Compare::value(k, Equal, "w"), true),
            (Compare::value(k, Equal, "v"), false),
            (Compare::value(k, Greater, "v"), true),
            (Compare::value(k, Greater, "w"), false),
            (Compare::value(k, Less, "x"), true),
            (Compare::value(k, Less, "w"), false),
            (Compare::value(k, NotEqual, "w"), false),
            (Compare::value(k, NotEqual, ""), true),
            (Compare::lease(k, Equal, 0), true),
            (Compare::lease(k, Greater, 0), false),
            (Compare::lease(k, Less, 1), true),
            (Compare::lease(k, NotEqual, 0), false),
            // A missing key: VALUE compares are false, the others compare against 0.
            (Compare::value("c/missing", Equal, ""), false),
            (Compare::value("c/missing", NotEqual, "x"), false),
            (Compare::value("c/missing", Less, "z"), false),
            (Compare::version("c/missing", Equal, 0), true),
            (Compare::version("c/missing", Less, 1), true),
            (Compare::create_revision("c/missing", Equal, 0), true),
            (Compare::mod_revision("c/missing", Equal, 0), true),
            (Compare::mod_revision("c/missing", Greater, 0), false),
            (Compare::lease("c/missing", Equal, 0), true),
        ];
        for (cmp, want) in cases {
            let desc = format!("{cmp:?}");
            assert_eq!(holds(&mut c, cmp).await, want, "{desc}");
        }

        // Several compares: all must hold.
        let t = c
            .txn(Txn::new().when([Compare::version(k, Equal, 2), Compare::value(k, Equal, "w")]))
            .await
            .unwrap();
        assert!(t.succeeded());
        let t = c
            .txn(Txn::new().when([Compare::version(k, Equal, 2), Compare::value(k, Equal, "v")]))
            .await
            .unwrap();
        assert!(!t.succeeded());
    })
    .await;
}

#[tokio::test]
async fn txn_compare_with_range_end() {
    on_both("txn_compare_with_range_end", |mut c, _| async move {
        put(&mut c, "r/a", "1").await; // rev 2
        put(&mut c, "r/b", "1").await; // rev 3
        put(&mut c, "r/b", "2").await; // rev 4: r/b version 2
        use CompareOp::*;
        let cases: Vec<(Compare, bool)> = vec![
            // Every key in the range must satisfy the compare.
            (Compare::version("r/", Greater, 0).with_prefix(), true),
            (Compare::version("r/", Equal, 2).with_prefix(), false),
            (Compare::version("r/", Less, 3).with_prefix(), true),
            (Compare::mod_revision("r/", Less, 5).with_prefix(), true),
            (Compare::mod_revision("r/", Greater, 2).with_prefix(), false),
            (
                Compare::create_revision("r/", NotEqual, 9).with_prefix(),
                true,
            ),
            (Compare::value("r/", Greater, "0").with_prefix(), true),
            (Compare::value("r/", Equal, "1").with_prefix(), false),
            (Compare::lease("r/", Equal, 0).with_prefix(), true),
            // An explicit [key, range_end) covering only r/b.
            (Compare::version("r/b", Equal, 2).with_range("r/c"), true),
            (Compare::version("r/a", Equal, 1).with_range("r/b"), true),
            // A range with no keys behaves like a missing key: VALUE is false, the other targets
            // compare against 0.
            (Compare::version("none/", Equal, 0).with_prefix(), true),
            (Compare::version("none/", Greater, 0).with_prefix(), false),
            (Compare::mod_revision("none/", Less, 1).with_prefix(), true),
            (
                Compare::create_revision("none/", NotEqual, 0).with_prefix(),
                false,
            ),
            (Compare::value("none/", Equal, "x").with_prefix(), false),
            (Compare::value("none/", NotEqual, "x").with_prefix(), false),
        ];
        for (cmp, want) in cases {
            let desc = format!("{cmp:?}");
            assert_eq!(holds(&mut c, cmp).await, want, "{desc}");
        }
    })
    .await;
}

#[tokio::test]
async fn txn_branches_and_nesting() {
    on_both("txn_branches_and_nesting", |mut c, _| async move {
        put(&mut c, "t/a", "1").await; // 2
        put(&mut c, "t/b", "1").await; // 3

        // Success branch: get, put, delete, get (sees its own writes), in order.
        let t = c
            .txn(
                Txn::new()
                    .when([Compare::value("t/a", CompareOp::Equal, "1")])
                    .and_then([
                        TxnOp::get("t/", Some(GetOptions::new().with_prefix())),
                        TxnOp::put("t/c", "1", Some(PutOptions::new().with_prev_key())),
                        TxnOp::delete("t/b", Some(DeleteOptions::new().with_prev_key())),
                        TxnOp::put("t/a", "2", Some(PutOptions::new().with_prev_key())),
                        TxnOp::get("t/", Some(GetOptions::new().with_prefix())),
                    ])
                    .or_else([TxnOp::put("t/failed", "1", None)]),
            )
            .await
            .unwrap();
        assert!(t.succeeded());
        assert_eq!(t.header().unwrap().revision(), 4);
        let ops = t.op_responses();
        assert_eq!(ops.len(), 5);
        match &ops[0] {
            TxnOpResponse::Get(g) => {
                assert_eq!(
                    (keys(g), g.count(), g.header().unwrap().revision()),
                    (vec!["t/a".into(), "t/b".into()], 2, 3)
                )
            }
            o => panic!("{o:?}"),
        }
        match &ops[1] {
            TxnOpResponse::Put(p) => assert!(p.prev_key().is_none()),
            o => panic!("{o:?}"),
        }
        match &ops[2] {
            TxnOpResponse::Delete(d) => {
                assert_eq!((d.deleted(), d.prev_kvs()[0].key()), (1, &b"t/b"[..]))
            }
            o => panic!("{o:?}"),
        }
        match &ops[3] {
            TxnOpResponse::Put(p) => assert_eq!(p.prev_key().unwrap().value(), b"1"),
            o => panic!("{o:?}"),
        }
        match &ops[4] {
            TxnOpResponse::Get(g) => {
                assert_eq!(
                    (keys(g), values(g), g.header().unwrap().revision()),
                    (
                        vec!["t/a".into(), "t/c".into()],
                        vec!["2".into(), "1".into()],
                        4
                    )
                );
                assert_eq!(
                    g.kvs()
                        .iter()
                        .map(|kv| kv.mod_revision())
                        .collect::<Vec<_>>(),
                    [4, 4]
                );
            }
            o => panic!("{o:?}"),
        }
        assert_eq!(c.get("t/failed", None).await.unwrap().kvs().len(), 0);

        // Failure branch.
        let t = c
            .txn(
                Txn::new()
                    .when([Compare::value("t/a", CompareOp::Equal, "1")])
                    .and_then([TxnOp::put("t/never", "1", None)])
                    .or_else([
                        TxnOp::get("t/a", None),
                        TxnOp::delete("t/c", None),
                        TxnOp::put("t/f", "1", None),
                    ]),
            )
            .await
            .unwrap();
        assert!(!t.succeeded());
        assert_eq!(t.header().unwrap().revision(), 5);
        let ops = t.op_responses();
        match &ops[0] {
            TxnOpResponse::Get(g) => assert_eq!(values(g), ["2"]),
            o => panic!("{o:?}"),
        }
        match &ops[1] {
            TxnOpResponse::Delete(d) => assert_eq!(d.deleted(), 1),
            o => panic!("{o:?}"),
        }
        assert_eq!(c.get("t/never", None).await.unwrap().kvs().len(), 0);
        assert_eq!(meta(&c.get("t/f", None).await.unwrap()), (5, 5, 1));

        // A Range inside a Txn at a past revision reads that revision.
        let t = c
            .txn(Txn::new().and_then([TxnOp::get("t/b", Some(GetOptions::new().with_revision(3)))]))
            .await
            .unwrap();
        match &t.op_responses()[0] {
            // etcd's op header carries the store's current revision, not the one read at.
            TxnOpResponse::Get(g) => assert_eq!(
                (values(g), g.header().unwrap().revision()),
                (vec!["1".into()], 5)
            ),
            o => panic!("{o:?}"),
        }

        // Nested Txns: each level picks its own branch; all writes share one revision.
        let inner_fail = Txn::new()
            .when([Compare::version("t/a", CompareOp::Equal, 99)])
            .and_then([TxnOp::put("n/never", "1", None)])
            .or_else([TxnOp::put("n/x", "1", None), TxnOp::get("t/a", None)]);
        let inner_ok = Txn::new()
            .when([Compare::version("t/a", CompareOp::Equal, 2)])
            .and_then([TxnOp::put("n/y", "1", None)]);
        let t = c
            .txn(
                Txn::new()
                    .when([Compare::version("t/a", CompareOp::Equal, 2)])
                    .and_then([
                        TxnOp::txn(inner_fail),
                        TxnOp::put("n/z", "1", None),
                        TxnOp::txn(inner_ok),
                    ]),
            )
            .await
            .unwrap();
        assert!(t.succeeded());
        assert_eq!(t.header().unwrap().revision(), 6);
        let ops = t.op_responses();
        assert_eq!(ops.len(), 3);
        match &ops[0] {
            TxnOpResponse::Txn(inner) => {
                assert!(!inner.succeeded());
                let iops = inner.op_responses();
                assert_eq!(iops.len(), 2);
                match &iops[1] {
                    TxnOpResponse::Get(g) => assert_eq!(values(g), ["2"]),
                    o => panic!("{o:?}"),
                }
            }
            o => panic!("{o:?}"),
        }
        match &ops[2] {
            TxnOpResponse::Txn(inner) => assert!(inner.succeeded()),
            o => panic!("{o:?}"),
        }
        let g = c
            .get("n/", Some(GetOptions::new().with_prefix()))
            .await
            .unwrap();
        assert_eq!(keys(&g), ["n/x", "n/y", "n/z"]);
        assert!(g.kvs().iter().all(|kv| kv.mod_revision() == 6));
    })
    .await;
}

#[tokio::test]
async fn txn_duplicate_keys_and_op_limit() {
    on_both("txn_duplicate_keys_and_op_limit", |mut c, _| async move {
        const DUP: &str = "etcdserver: duplicate key given in txn request";
        const TOO_MANY: &str = "etcdserver: too many operations in txn request";
        let dup = |t: Txn| t;
        let cases = vec![
            dup(Txn::new().and_then([TxnOp::put("a", "1", None), TxnOp::put("a", "2", None)])),
            dup(Txn::new().or_else([TxnOp::put("a", "1", None), TxnOp::put("a", "2", None)])),
            dup(Txn::new().and_then([
                TxnOp::delete("a", Some(DeleteOptions::new().with_prefix())),
                TxnOp::put("ab", "1", None),
            ])),
            dup(Txn::new().and_then([
                TxnOp::put("ab", "1", None),
                TxnOp::delete("a", Some(DeleteOptions::new().with_range("b"))),
            ])),
            dup(Txn::new().and_then([
                TxnOp::put("x", "1", None),
                TxnOp::txn(Txn::new().and_then([TxnOp::put("x", "2", None)])),
            ])),
            dup(Txn::new().and_then([
                TxnOp::txn(Txn::new().or_else([TxnOp::put("x", "2", None)])),
                TxnOp::put("x", "1", None),
            ])),
            dup(Txn::new().and_then([
                TxnOp::delete("x", None),
                TxnOp::txn(Txn::new().and_then([TxnOp::put("x", "2", None)])),
            ])),
        ];
        for t in cases {
            let desc = format!("{t:?}");
            assert_eq!(
                status(c.txn(t).await),
                err(Code::InvalidArgument, DUP),
                "{desc}"
            );
        }
        assert_eq!(rev(&mut c).await, 1, "rejected Txns write nothing");

        // Not duplicates: one key in both branches, two deletes overlapping, reads of written keys,
        // and the same key in a nested Txn's then and else branches.
        let ok = vec![
            Txn::new()
                .and_then([TxnOp::put("a", "1", None)])
                .or_else([TxnOp::put("a", "2", None)]),
            Txn::new().and_then([
                TxnOp::delete("a", Some(DeleteOptions::new().with_prefix())),
                TxnOp::delete("ab", None),
                TxnOp::get("ab", None),
            ]),
            Txn::new().and_then([TxnOp::put("a", "1", None), TxnOp::get("a", None)]),
            Txn::new().and_then([TxnOp::txn(
                Txn::new()
                    .and_then([TxnOp::put("q", "1", None)])
                    .or_else([TxnOp::put("q", "2", None)]),
            )]),
        ];
        for t in ok {
            let desc = format!("{t:?}");
            c.txn(t).await.unwrap_or_else(|e| panic!("{desc}: {e:?}"));
        }

        // --max-txn-ops (128) counts each of compare, success and failure.
        let puts = |n: usize| {
            (0..n)
                .map(|i| TxnOp::put(format!("op/{i:03}"), "v", None))
                .collect::<Vec<_>>()
        };
        let before = rev(&mut c).await;
        assert_eq!(
            status(c.txn(Txn::new().and_then(puts(129))).await),
            err(Code::InvalidArgument, TOO_MANY)
        );
        assert_eq!(
            status(c.txn(Txn::new().or_else(puts(129))).await),
            err(Code::InvalidArgument, TOO_MANY)
        );
        let cmps: Vec<Compare> = (0..129)
            .map(|i| Compare::version(format!("op/{i}"), CompareOp::Equal, 0))
            .collect();
        assert_eq!(
            status(c.txn(Txn::new().when(cmps)).await),
            err(Code::InvalidArgument, TOO_MANY)
        );
        assert_eq!(
            status(
                c.txn(Txn::new().and_then([TxnOp::txn(Txn::new().and_then(puts(129)))]))
                    .await
            ),
            err(Code::InvalidArgument, TOO_MANY)
        );
        // A nested Txn gets what its parent left of the budget: 128 - 1 here.
        assert_eq!(
            status(
                c.txn(Txn::new().and_then([TxnOp::txn(Txn::new().and_then(puts(128)))]))
                    .await
            ),
            err(Code::InvalidArgument, TOO_MANY)
        );
        c.txn(Txn::new().and_then([TxnOp::txn(Txn::new().and_then(puts(127)))]))
            .await
            .unwrap();
        let before = before + 1;
        assert_eq!(rev(&mut c).await, before);
        let t = c
            .txn(Txn::new().and_then(puts(128)).or_else(puts(128)))
            .await
            .unwrap();
        assert_eq!(t.header().unwrap().revision(), before + 1);
        assert_eq!(
            c.get(
                "op/",
                Some(GetOptions::new().with_prefix().with_count_only())
            )
            .await
            .unwrap()
            .count(),
            128
        );
    })
    .await;
}

/// The four Txn shapes kube-apiserver sends (etcd-contract.md section 2).
#[tokio::test]
async fn txn_kubernetes_shapes() {
    on_both("txn_kubernetes_shapes", |mut c, _| async move {
        let key = "/registry/pods/default/p1";
        let create = |v: &str| {
            Txn::new()
                .when([Compare::mod_revision(key, CompareOp::Equal, 0)])
                .and_then([TxnOp::put(key, v, None)])
        };
        let update = |rev: i64, v: &str| {
            Txn::new()
                .when([Compare::mod_revision(key, CompareOp::Equal, rev)])
                .and_then([TxnOp::put(key, v, None)])
                .or_else([TxnOp::get(key, None)])
        };
        let delete = |rev: i64| {
            Txn::new()
                .when([Compare::mod_revision(key, CompareOp::Equal, rev)])
                .and_then([TxnOp::delete(key, None)])
                .or_else([TxnOp::get(key, None)])
        };

        let t = c.txn(create("v1")).await.unwrap();
        assert!(t.succeeded());
        let created = t.header().unwrap().revision();
        assert_eq!(created, 2);
        match &t.op_responses()[0] {
            TxnOpResponse::Put(p) => assert_eq!(p.header().unwrap().revision(), 2),
            o => panic!("{o:?}"),
        }
        // Create again: already exists, nothing written.
        let t = c.txn(create("v1-again")).await.unwrap();
        assert!(!t.succeeded());
        assert!(t.op_responses().is_empty());
        assert_eq!(t.header().unwrap().revision(), 2);

        // Update with a stale revision: fails and returns the current object.
        let t = c.txn(update(1, "stale")).await.unwrap();
        assert!(!t.succeeded());
        match &t.op_responses()[0] {
            TxnOpResponse::Get(g) => {
                assert_eq!((values(g), meta(g)), (vec!["v1".into()], (2, 2, 1)));
                assert_eq!(g.header().unwrap().revision(), 2);
            }
            o => panic!("{o:?}"),
        }
        // Update with the right revision.
        let t = c.txn(update(created, "v2")).await.unwrap();
        assert!(t.succeeded());
        assert_eq!(t.header().unwrap().revision(), 3);
        let g = c
            .get(key, Some(GetOptions::new().with_limit(1)))
            .await
            .unwrap();
        assert_eq!((values(&g), meta(&g)), (vec!["v2".into()], (2, 3, 2)));

        // Delete with a stale revision, then the right one.
        let t = c.txn(delete(2)).await.unwrap();
        assert!(!t.succeeded());
        match &t.op_responses()[0] {
            TxnOpResponse::Get(g) => assert_eq!(g.kvs()[0].mod_revision(), 3),
            o => panic!("{o:?}"),
        }
        let t = c.txn(delete(3)).await.unwrap();
        assert!(t.succeeded());
        assert_eq!(t.header().unwrap().revision(), 4);
        match &t.op_responses()[0] {
            TxnOpResponse::Delete(d) => assert_eq!(d.deleted(), 1),
            o => panic!("{o:?}"),
        }
        // And it can be created again.
        assert!(c.txn(create("v3")).await.unwrap().succeeded());
        assert_eq!(meta(&c.get(key, None).await.unwrap()), (5, 5, 1));

        // The compaction shape: VERSION(compact_rev_key) == t ? Put : Get, then Compact.
        let crk = "compact_rev_key";
        let compact_txn = |t: i64, rev: i64| {
            Txn::new()
                .when([Compare::version(crk, CompareOp::Equal, t)])
                .and_then([TxnOp::put(crk, rev.to_string(), None)])
                .or_else([TxnOp::get(crk, None)])
        };
        let t = c.txn(compact_txn(0, 5)).await.unwrap();
        assert!(t.succeeded());
        c.compact(5, None).await.unwrap();
        let t = c.txn(compact_txn(0, 6)).await.unwrap();
        assert!(!t.succeeded(), "another apiserver already compacted");
        match &t.op_responses()[0] {
            TxnOpResponse::Get(g) => {
                assert_eq!((values(g), g.kvs()[0].version()), (vec!["5".into()], 1))
            }
            o => panic!("{o:?}"),
        }
        // List paging as the apiserver does it: limit, more, count, revision pinned.
        for i in 0..5 {
            c.put(format!("/registry/cm/{i}"), "x", None).await.unwrap();
        }
        let p1 = c
            .get(
                "/registry/cm/",
                Some(GetOptions::new().with_prefix().with_limit(2)),
            )
            .await
            .unwrap();
        let pinned = p1.header().unwrap().revision();
        assert_eq!(
            (keys(&p1), p1.more(), p1.count()),
            (
                vec!["/registry/cm/0".into(), "/registry/cm/1".into()],
                true,
                5
            )
        );
        c.put("/registry/cm/9", "x", None).await.unwrap();
        let p2 = c
            .get(
                "/registry/cm/1\0",
                Some(
                    GetOptions::new()
                        .with_range("/registry/cm0")
                        .with_limit(10)
                        .with_revision(pinned),
                ),
            )
            .await
            .unwrap();
        assert_eq!(
            keys(&p2),
            ["/registry/cm/2", "/registry/cm/3", "/registry/cm/4"]
        );
        assert_eq!((p2.more(), p2.count()), (false, 3));
    })
    .await;
}

// ---------------------------------------------------------------------------------------------
// Bad input (issue 2, item 6)
// ---------------------------------------------------------------------------------------------

#[tokio::test]
async fn oversized_requests_get_etcds_errors() {
    on_both(
        "oversized_requests_get_etcds_errors",
        |mut c, server| async move {
            const TOO_LARGE: &str = "etcdserver: request is too large";
            // Over --max-request-bytes (1.5 MiB) but under the gRPC limit (+512 KiB): etcd's error.
            let big = vec![b'v'; 3 * MIB / 2 + 1024];
            assert_eq!(
                status(c.put("big", big.clone(), None).await),
                err(Code::InvalidArgument, TOO_LARGE)
            );
            assert_eq!(
                status(
                    c.txn(Txn::new().and_then([TxnOp::put("big", big.clone(), None)]))
                        .await
                ),
                err(Code::InvalidArgument, TOO_LARGE)
            );
            let big_key = String::from_utf8(vec![b'k'; 3 * MIB / 2 + 1024]).unwrap();
            assert_eq!(
                status(c.put(big_key.clone(), "v", None).await),
                err(Code::InvalidArgument, TOO_LARGE)
            );
            // Beyond the gRPC receive limit (+512 KiB) the transport refuses the message before the
            // server sees it. grpc-go (etcd) says RESOURCE_EXHAUSTED; tonic (cairn) says OUT_OF_RANGE
            // "Error, decoded message length too large" -- a known difference, reported.
            let huge = vec![b'v'; 5 * MIB / 2];
            let (code, msg) = status(c.put("huge", huge, None).await);
            eprintln!("{}: a 2.5 MiB put gets {code:?}: {msg}", server.name());
            let want = if server.is_etcd {
                Code::ResourceExhausted
            } else {
                Code::OutOfRange
            };
            assert_eq!(code, want, "{}: {msg}", server.name());
            assert_eq!(rev(&mut c).await, 1, "nothing was written");

            // Just under the limit is accepted.
            let fits = vec![b'v'; MIB];
            assert_eq!(
                put(&mut c, "fits", std::str::from_utf8(&fits).unwrap()).await,
                2
            );
            assert_eq!(
                c.get("fits", None).await.unwrap().kvs()[0].value().len(),
                MIB
            );
            // A large key (256 KiB) works like any other key.
            let long_key = format!("long/{}", "x".repeat(256 * 1024));
            assert_eq!(put(&mut c, &long_key, "v").await, 3);
            let g = c
                .get(
                    "long/",
                    Some(GetOptions::new().with_prefix().with_keys_only()),
                )
                .await
                .unwrap();
            assert_eq!(g.kvs()[0].key().len(), long_key.len());
            let d = c.delete(long_key.as_str(), None).await.unwrap();
            assert_eq!(d.deleted(), 1);
        },
    )
    .await;
}

/// Garbage on the client port must not crash the server nor disturb other clients.
#[tokio::test]
async fn garbage_on_the_grpc_port_disturbs_no_one() {
    on_both(
        "garbage_on_the_grpc_port_disturbs_no_one",
        |mut c, server| async move {
            let addr = ("127.0.0.1", server.port);
            put(&mut c, "steady", "0").await;

            // A second client works throughout, concurrently with the garbage.
            let mut other = c.clone();
            let writer = tokio::spawn(async move {
                for i in 1..=100 {
                    let v = i.to_string();
                    other
                        .put("steady", v.clone(), None)
                        .await
                        .expect("concurrent put");
                    let g = other.get("steady", None).await.expect("concurrent get");
                    assert_eq!(values(&g), [v]);
                }
            });

            // Idle connections that never send a byte.
            let mut idle = Vec::new();
            for _ in 0..20 {
                idle.push(tokio::net::TcpStream::connect(addr).await.unwrap());
            }

            let preface = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n".to_vec();
            let mut junk: Vec<u8> = (0..4096u32)
                .map(|i| (i.wrapping_mul(2654435761) >> 13) as u8)
                .collect();
            junk.splice(0..0, *b"\x00\x00\x04\xff\xff\xff\xff\xff"); // a frame header of an unknown type
            let payloads: Vec<Vec<u8>> = vec![
                junk.clone(),
                b"GET / HTTP/1.1\r\nHost: x\r\n\r\n".to_vec(),
                [preface.clone(), junk.clone()].concat(),
                // A valid preface, then a SETTINGS frame whose length is not a multiple of 6.
                [
                    preface.clone(),
                    b"\x00\x00\x05\x04\x00\x00\x00\x00\x00\x01\x02\x03\x04\x05".to_vec(),
                ]
                .concat(),
                // A valid preface, then a HEADERS frame with a garbage HPACK block.
                [
                    preface.clone(),
                    b"\x00\x00\x08\x01\x05\x00\x00\x00\x01\xff\xff\xff\xff\xff\xff\xff\xff"
                        .to_vec(),
                ]
                .concat(),
                // A valid preface, then a frame claiming 16 MiB that never comes.
                [
                    preface.clone(),
                    b"\xff\xff\xff\x00\x00\x00\x00\x00\x01".to_vec(),
                ]
                .concat(),
                preface[..10].to_vec(),
            ];
            for round in 0..5 {
                for (i, p) in payloads.iter().enumerate() {
                    let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
                    let _ = s.write_all(p).await;
                    let _ = s.flush().await;
                    // A complete bad input gets an answer (GOAWAY, an HTTP error) or a close; for the
                    // two truncated inputs waiting for the rest is legitimate.
                    let truncated = i == 5 || i == 6;
                    if round == 0 && !truncated {
                        let mut buf = vec![0u8; 4096];
                        let answered =
                            tokio::time::timeout(Duration::from_secs(10), s.read(&mut buf)).await;
                        assert!(
                            answered.is_ok(),
                            "{}: payload {i} got neither an answer nor a close",
                            server.name()
                        );
                    }
                }
            }
            // The server still answers new and old clients.
            assert_eq!(values(&c.get("steady", None).await.unwrap()).len(), 1);
            writer.await.expect("the concurrent client saw no error");
            let mut fresh = connect(&format!("http://127.0.0.1:{}", server.port)).await;
            let g = fresh.get("steady", None).await.unwrap();
            assert_eq!(
                (values(&g), g.kvs()[0].version()),
                (vec!["100".into()], 101)
            );
            drop(idle);
        },
    )
    .await;
}
