//! Reconcile scenarios against a mock API server (kube's `tower-test` pair), in the style of
//! kube-rs/controller-rs: each scenario lists the calls the operator must make, in order, and
//! checks method, path and body of each; an unexpected or missing call fails the test.

use std::sync::Arc;
use std::time::Duration;

use futures::future::BoxFuture;
use futures::FutureExt;
use http::{Method, Request, Response, StatusCode};
use k8s_openapi::api::apps::v1::{StatefulSet, StatefulSetSpec, StatefulSetStatus};
use kube::client::Body;
use kube::runtime::events::{Recorder, Reporter};
use kube::Client;
use serde_json::{json, Value};

use super::{reconcile, Context, FINALIZER};
use crate::crd::{CairnCluster, CairnClusterStatus};
use crate::members::{MemberHealth, ObservedMember, ObservedStore, StoreError, StoreView};
use crate::metrics::Metrics;

type Handle = tower_test::mock::Handle<Request<Body>, Response<Body>>;

/// A store whose answer the test decides; records that it was asked.
struct FakeStore {
    answer: Option<ObservedStore>,
    asked: std::sync::Mutex<Vec<String>>,
}

impl StoreView for FakeStore {
    fn observe<'a>(
        &'a self,
        endpoint: &'a str,
    ) -> BoxFuture<'a, Result<ObservedStore, StoreError>> {
        if let Ok(mut asked) = self.asked.lock() {
            asked.push(endpoint.to_string());
        }
        let answer = self.answer.clone().ok_or_else(|| StoreError::Rpc {
            call: "MemberList",
            endpoint: endpoint.to_string(),
            status: "unavailable".into(),
        });
        async move { answer }.boxed()
    }
}

fn healthy_store(n: u64) -> ObservedStore {
    ObservedStore {
        cluster_id: 0xc1,
        leader: 1,
        members: (0..n)
            .map(|i| ObservedMember {
                id: i + 1,
                name: format!("demo-{i}"),
                is_learner: false,
                client_urls: vec![],
                health: Some(MemberHealth {
                    leader: 1,
                    errors: vec![],
                }),
            })
            .collect(),
    }
}

fn cluster(spec: Value, finalizer: bool) -> CairnCluster {
    let mut c: CairnCluster = serde_json::from_value(json!({
        "apiVersion": "cairn.dev/v1alpha1",
        "kind": "CairnCluster",
        "metadata": {"name": "demo", "namespace": "db", "uid": "u-1", "generation": 1},
        "spec": spec,
    }))
    .unwrap();
    if finalizer {
        c.metadata.finalizers = Some(vec![FINALIZER.to_string()]);
    }
    c
}

fn sts(replicas: i32, ready: i32) -> StatefulSet {
    StatefulSet {
        metadata: kube::api::ObjectMeta {
            name: Some("demo".into()),
            namespace: Some("db".into()),
            generation: Some(1),
            ..Default::default()
        },
        spec: Some(StatefulSetSpec {
            replicas: Some(replicas),
            ..Default::default()
        }),
        status: Some(StatefulSetStatus {
            replicas,
            ready_replicas: Some(ready),
            updated_replicas: Some(replicas),
            observed_generation: Some(1),
            ..Default::default()
        }),
    }
}

fn testcontext(store: Option<ObservedStore>) -> (Arc<Context>, Handle, Arc<FakeStore>) {
    let (service, handle) = tower_test::mock::pair::<Request<Body>, Response<Body>>();
    let client = Client::new(service, "default");
    let fake = Arc::new(FakeStore {
        answer: store,
        asked: Default::default(),
    });
    let recorder = Recorder::new(
        client.clone(),
        Reporter {
            controller: "cairn-operator".into(),
            instance: None,
        },
    );
    let ctx = Context {
        client,
        recorder,
        store: fake.clone(),
        metrics: Arc::new(Metrics::default()),
    };
    (Arc::new(ctx), handle, fake)
}

/// One expected API call: the request is checked, then answered.
struct Call {
    method: Method,
    path: &'static str,
    /// Checks on the decoded JSON body.
    check: Box<dyn Fn(&Value) + Send>,
    status: StatusCode,
    reply: Value,
}

fn call(
    method: Method,
    path: &'static str,
    check: impl Fn(&Value) + Send + 'static,
    reply: Value,
) -> Call {
    Call {
        method,
        path,
        check: Box::new(check),
        status: StatusCode::OK,
        reply,
    }
}

fn not_found(path: &'static str) -> Call {
    Call {
        method: Method::GET,
        path,
        check: Box::new(|_| {}),
        status: StatusCode::NOT_FOUND,
        reply: json!({"kind": "Status", "apiVersion": "v1", "status": "Failure",
                      "reason": "NotFound", "code": 404, "message": "not found"}),
    }
}

const CLUSTER: &str = "/apis/cairn.dev/v1alpha1/namespaces/db/cairnclusters/demo";
const STATUS: &str = "/apis/cairn.dev/v1alpha1/namespaces/db/cairnclusters/demo/status";
const STS: &str = "/apis/apps/v1/namespaces/db/statefulsets/demo";
const PEER: &str = "/api/v1/namespaces/db/services/demo-peer";
const CLIENT: &str = "/api/v1/namespaces/db/services/demo-client";
const PDB: &str = "/apis/policy/v1/namespaces/db/poddisruptionbudgets/demo";
const EVENTS: &str = "/apis/events.k8s.io/v1/namespaces/db/events";

fn is_apply(v: &Value, kind: &str) {
    assert_eq!(v["kind"], kind, "applied object kind");
}

/// The four objects of a cluster, applied in order; `replicas` is the StatefulSet size expected.
fn apply_calls(replicas: i64, quorum: i64) -> Vec<Call> {
    vec![
        call(
            Method::PATCH,
            PEER,
            |v| {
                is_apply(v, "Service");
                assert_eq!(v["spec"]["clusterIP"], "None");
                assert_eq!(v["spec"]["publishNotReadyAddresses"], true);
                assert_eq!(v["metadata"]["ownerReferences"][0]["kind"], "CairnCluster");
            },
            Value::Null,
        ),
        call(
            Method::PATCH,
            CLIENT,
            |v| is_apply(v, "Service"),
            Value::Null,
        ),
        call(
            Method::PATCH,
            STS,
            move |v| {
                is_apply(v, "StatefulSet");
                assert_eq!(v["spec"]["replicas"], replicas);
                let args = v["spec"]["template"]["spec"]["containers"][0]["args"]
                    .as_array()
                    .unwrap();
                let ic = args
                    .iter()
                    .find_map(|a| a.as_str().filter(|a| a.starts_with("--initial-cluster=")))
                    .unwrap();
                assert_eq!(ic.split(',').count() as i64, replicas, "{ic}");
            },
            Value::Null,
        ),
        call(
            Method::PATCH,
            PDB,
            move |v| {
                is_apply(v, "PodDisruptionBudget");
                assert_eq!(v["spec"]["minAvailable"], quorum);
            },
            Value::Null,
        ),
    ]
}

fn status_call(check: impl Fn(&Value) + Send + 'static) -> Call {
    call(
        Method::PATCH,
        STATUS,
        move |v| {
            assert_eq!(v["kind"], "CairnCluster");
            check(&v["status"]);
        },
        Value::Null,
    )
}

fn event_call(reason: &'static str) -> Call {
    call(
        Method::POST,
        EVENTS,
        move |v| assert_eq!(v["reason"], reason, "event reason"),
        Value::Null,
    )
}

fn condition<'a>(status: &'a Value, type_: &str) -> (&'a str, &'a str) {
    let c = status["conditions"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["type"] == type_)
        .unwrap();
    (c["status"].as_str().unwrap(), c["reason"].as_str().unwrap())
}

/// Serves `calls` in order, then checks that nothing else arrives.
async fn serve(mut handle: Handle, calls: Vec<Call>) {
    for expected in calls {
        let (request, send) = handle
            .next_request()
            .await
            .expect("operator stopped calling the API");
        assert_eq!(
            request.method(),
            expected.method,
            "method for {}",
            request.uri()
        );
        assert_eq!(request.uri().path(), expected.path, "call order");
        if expected.method == Method::PATCH && expected.path != CLUSTER {
            let query = request.uri().query().unwrap_or_default();
            assert!(
                query.contains("fieldManager=cairn-operator"),
                "server-side apply: {query}"
            );
        }
        let bytes = request.into_body().collect_bytes().await.unwrap();
        let body: Value = if bytes.is_empty() {
            Value::Null
        } else {
            serde_json::from_slice(&bytes).unwrap()
        };
        (expected.check)(&body);
        // Null reply: answer like server-side apply does, with the object itself.
        let reply = if expected.reply.is_null() {
            let mut echo = body.clone();
            if echo.get("metadata").is_none() {
                echo["metadata"] = json!({"name": "demo", "namespace": "db"});
            }
            if echo["kind"] == "CairnCluster" && echo.get("spec").is_none() {
                echo["spec"] = json!({});
            }
            echo
        } else {
            expected.reply
        };
        let reply = serde_json::to_vec(&reply).unwrap();
        send.send_response(
            Response::builder()
                .status(expected.status)
                .body(Body::from(reply))
                .unwrap(),
        );
    }
}

/// Runs one reconcile against the scenario and returns its result.
async fn run(
    obj: CairnCluster,
    ctx: Arc<Context>,
    handle: Handle,
    calls: Vec<Call>,
) -> Result<kube::runtime::controller::Action, super::Error> {
    let server = tokio::spawn(serve(handle, calls));
    let result = tokio::time::timeout(Duration::from_secs(5), reconcile(Arc::new(obj), ctx))
        .await
        .expect("reconcile timed out (an expected call never came?)");
    tokio::time::timeout(Duration::from_secs(1), server)
        .await
        .expect("scenario not finished: the operator made fewer calls than expected")
        .expect("scenario assertion failed");
    result
}

fn cluster_json(obj: &CairnCluster) -> Value {
    serde_json::to_value(obj).unwrap()
}

#[tokio::test]
async fn new_object_first_gets_the_finalizer() {
    let (ctx, handle, _) = testcontext(None);
    let obj = cluster(json!({}), false);
    let reply = {
        let mut c = obj.clone();
        c.metadata.finalizers = Some(vec![FINALIZER.into()]);
        cluster_json(&c)
    };
    let calls = vec![call(
        Method::PATCH,
        CLUSTER,
        |v| {
            // A JSON patch that adds our finalizer and nothing else.
            let ops = v.as_array().unwrap();
            assert!(
                ops.iter()
                    .any(|op| op["op"] == "add" && op["value"].to_string().contains(FINALIZER)),
                "{v}"
            );
        },
        reply,
    )];
    run(obj, ctx, handle, calls).await.unwrap();
}

#[tokio::test]
async fn create_applies_services_statefulset_pdb_then_status_and_event() {
    let (ctx, handle, fake) = testcontext(None);
    let obj = cluster(json!({}), true);
    let mut calls = vec![not_found(STS)];
    calls.extend(apply_calls(3, 2));
    calls.push(status_call(|s| {
        assert_eq!(s["phase"], "Pending");
        assert_eq!(s["observedGeneration"], 1);
        assert_eq!(condition(s, "Available"), ("False", "Creating"));
        assert_eq!(condition(s, "Progressing"), ("True", "Creating"));
    }));
    calls.push(event_call("Creating"));
    run(obj, ctx, handle, calls).await.unwrap();
    assert!(
        fake.asked.lock().unwrap().is_empty(),
        "no pods yet: the store is not asked"
    );
}

#[tokio::test]
async fn running_cluster_reports_members_leader_and_available() {
    let (ctx, handle, fake) = testcontext(Some(healthy_store(3)));
    let obj = cluster(json!({}), true);
    let mut calls = vec![call(
        Method::GET,
        STS,
        |_| {},
        serde_json::to_value(sts(3, 3)).unwrap(),
    )];
    calls.extend(apply_calls(3, 2));
    calls.push(status_call(|s| {
        assert_eq!(s["phase"], "Running");
        assert_eq!(s["readyReplicas"], 3);
        assert_eq!(s["leader"], "demo-0");
        assert_eq!(s["clusterId"], "c1");
        assert_eq!(s["members"].as_array().unwrap().len(), 3);
        assert_eq!(s["members"][0]["isLeader"], true);
        assert_eq!(condition(s, "Available"), ("True", "AllMembersHealthy"));
        assert_eq!(condition(s, "Degraded"), ("False", "AsExpected"));
    }));
    calls.push(event_call("Available"));
    run(obj, ctx, handle, calls).await.unwrap();
    assert_eq!(
        fake.asked.lock().unwrap().as_slice(),
        ["http://demo-client.db.svc:2379"]
    );
}

#[tokio::test]
async fn update_reapplies_the_changed_statefulset() {
    let (ctx, handle, _) = testcontext(Some(healthy_store(3)));
    let mut obj = cluster(json!({"version": "0.2.0"}), true);
    obj.metadata.generation = Some(2);
    obj.status = Some(CairnClusterStatus {
        observed_generation: Some(1),
        cluster_id: Some("c1".into()),
        ..Default::default()
    });
    let mut calls = vec![call(
        Method::GET,
        STS,
        |_| {},
        serde_json::to_value(sts(3, 3)).unwrap(),
    )];
    let mut applies = apply_calls(3, 2);
    applies[2] = call(
        Method::PATCH,
        STS,
        |v| {
            assert_eq!(
                v["spec"]["template"]["spec"]["containers"][0]["image"],
                "cairn:0.2.0"
            );
        },
        Value::Null,
    );
    calls.extend(applies);
    calls.push(status_call(|s| assert_eq!(s["observedGeneration"], 2)));
    calls.push(event_call("Updating"));
    calls.push(event_call("Available"));
    run(obj, ctx, handle, calls).await.unwrap();
}

#[tokio::test]
async fn scale_before_bootstrap_resizes_statefulset_and_pdb() {
    let (ctx, handle, _) = testcontext(None);
    let obj = cluster(json!({"replicas": 5}), true);
    let mut calls = vec![call(
        Method::GET,
        STS,
        |_| {},
        serde_json::to_value(sts(3, 0)).unwrap(),
    )];
    calls.extend(apply_calls(5, 3));
    calls.push(status_call(|s| {
        assert_eq!(condition(s, "Available"), ("False", "StoreUnreachable"))
    }));
    run(obj, ctx, handle, calls).await.unwrap();
}

#[tokio::test]
async fn scale_after_bootstrap_keeps_the_size_and_says_why() {
    let (ctx, handle, _) = testcontext(Some(healthy_store(3)));
    let mut obj = cluster(json!({"replicas": 5}), true);
    obj.status = Some(CairnClusterStatus {
        observed_generation: Some(1),
        cluster_id: Some("c1".into()),
        ..Default::default()
    });
    let mut calls = vec![call(
        Method::GET,
        STS,
        |_| {},
        serde_json::to_value(sts(3, 3)).unwrap(),
    )];
    calls.extend(apply_calls(3, 2));
    calls.push(status_call(|s| {
        assert_eq!(condition(s, "Progressing"), ("False", "ScaleNotSupported"));
        assert_eq!(condition(s, "Available"), ("True", "AllMembersHealthy"));
    }));
    calls.push(event_call("Available"));
    calls.push(event_call("ScaleNotSupported"));
    run(obj, ctx, handle, calls).await.unwrap();
}

#[tokio::test]
async fn paused_cluster_gets_status_but_no_object_changes() {
    let (ctx, handle, _) = testcontext(Some(healthy_store(3)));
    let obj = cluster(json!({"paused": true}), true);
    let calls = vec![
        call(
            Method::GET,
            STS,
            |_| {},
            serde_json::to_value(sts(3, 3)).unwrap(),
        ),
        // No PATCH of Services, StatefulSet or PDB here.
        status_call(|s| {
            assert_eq!(s["phase"], "Paused");
            assert_eq!(condition(s, "Progressing"), ("False", "Paused"));
        }),
        event_call("Paused"),
        event_call("Available"),
    ];
    run(obj, ctx, handle, calls).await.unwrap();
}

#[tokio::test]
async fn invalid_object_is_reported_not_acted_on() {
    let (ctx, handle, fake) = testcontext(Some(healthy_store(3)));
    let obj = cluster(json!({"replicas": 4}), true);
    let calls = vec![
        status_call(|s| {
            assert_eq!(s["phase"], "Invalid");
            let (st, reason) = condition(s, "Degraded");
            assert_eq!((st, reason), ("True", "InvalidSpec"));
        }),
        call(
            Method::POST,
            EVENTS,
            |v| {
                assert_eq!(v["reason"], "InvalidSpec");
                assert_eq!(v["type"], "Warning");
                assert!(v["note"].as_str().unwrap().contains("replicas is 4"));
            },
            Value::Null,
        ),
    ];
    let action = run(obj, ctx, handle, calls).await.unwrap();
    assert_eq!(action, kube::runtime::controller::Action::await_change());
    assert!(fake.asked.lock().unwrap().is_empty());
}

#[tokio::test]
async fn delete_runs_cleanup_then_removes_the_finalizer() {
    let (ctx, handle, _) = testcontext(None);
    let mut obj = cluster(json!({}), true);
    obj.metadata.deletion_timestamp = Some(k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(
        k8s_openapi::jiff::Timestamp::now(),
    ));
    let reply = cluster_json(&obj);
    let calls = vec![
        event_call("Deleting"),
        call(
            Method::PATCH,
            CLUSTER,
            |v| {
                let ops = v.as_array().unwrap();
                assert!(
                    ops.iter()
                        .any(|op| op["op"] == "remove" && op["path"] == "/metadata/finalizers/0"),
                    "{v}"
                );
            },
            reply,
        ),
    ];
    run(obj, ctx, handle, calls).await.unwrap();
}

#[tokio::test]
async fn api_errors_surface_as_errors_not_panics() {
    let (ctx, handle, _) = testcontext(None);
    let obj = cluster(json!({}), true);
    let calls = vec![Call {
        method: Method::GET,
        path: STS,
        check: Box::new(|_| {}),
        status: StatusCode::FORBIDDEN,
        reply: json!({"kind": "Status", "apiVersion": "v1", "status": "Failure",
                      "reason": "Forbidden", "code": 403, "message": "forbidden"}),
    }];
    let err = run(obj, ctx, handle, calls).await.unwrap_err();
    assert_eq!(err.metric_label(), "finalizer");
    assert!(err.to_string().contains("StatefulSet"), "{err}");
}
