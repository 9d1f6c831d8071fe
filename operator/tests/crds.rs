//! The checked-in CRDs (crds/ and the chart's copy) must be exactly what the Rust types generate,
//! and the schema's CEL rules must refuse what the operator refuses.

use std::path::PathBuf;

use cairn_operator::crd::{yaml::crd_files, CairnCluster};
use kube::CustomResourceExt;

fn repo_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..")
}

#[test]
fn crds_dir_matches_the_rust_types() {
    for (file, generated) in crd_files().unwrap() {
        let path = repo_root().join("crds").join(file);
        let on_disk = std::fs::read_to_string(&path).unwrap_or_else(|e| {
            panic!(
                "{}: {e}; run `cairn-operator crd --dir crds`",
                path.display()
            )
        });
        assert!(
            on_disk == generated,
            "{} is stale: run `cargo run -p cairn-operator -- crd --dir crds`",
            path.display()
        );
    }
}

#[test]
fn chart_ships_the_same_crds() {
    for (file, _) in crd_files().unwrap() {
        let a = std::fs::read(repo_root().join("crds").join(file)).unwrap();
        let b = std::fs::read(repo_root().join("charts/cairn-operator/crds").join(file))
            .unwrap_or_else(|e| panic!("chart copy of {file}: {e}"));
        assert!(
            a == b,
            "charts/cairn-operator/crds/{file} differs from crds/{file}"
        );
    }
}

fn cluster(spec: serde_json::Value) -> CairnCluster {
    serde_json::from_value(serde_json::json!({
        "apiVersion": "cairn.dev/v1alpha1",
        "kind": "CairnCluster",
        "metadata": {"name": "demo", "namespace": "db"},
        "spec": spec,
    }))
    .unwrap()
}

#[test]
fn cel_rule_accepts_odd_sizes_from_one_to_nine() {
    for n in [1, 3, 5, 7, 9] {
        let c = cluster(serde_json::json!({"replicas": n}));
        assert!(
            kube::core::cel::validate_cel(&c).is_ok(),
            "{n} refused by CEL"
        );
    }
}

#[test]
fn cel_rule_refuses_even_and_out_of_range_sizes() {
    for n in [-1, 0, 2, 4, 6, 8, 10, 11] {
        let c = cluster(serde_json::json!({"replicas": n}));
        let err = kube::core::cel::validate_cel(&c).expect_err(&format!("{n} accepted by CEL"));
        assert!(
            format!("{err:?}").contains("replicas must be odd"),
            "{n}: {err:?}"
        );
    }
}

#[test]
fn cel_and_operator_agree_on_every_size() {
    for n in -2..=12 {
        let c = cluster(serde_json::json!({"replicas": n}));
        let cel_ok = kube::core::cel::validate_cel(&c).is_ok();
        let op_ok = cairn_operator::crd::validate::replicas_valid(n);
        assert_eq!(cel_ok, op_ok, "CEL and operator disagree on replicas={n}");
    }
}

#[test]
fn cel_rule_refuses_election_timeout_below_five_heartbeats() {
    let bad =
        cluster(serde_json::json!({"store": {"heartbeatInterval": 100, "electionTimeout": 300}}));
    assert!(kube::core::cel::validate_cel(&bad).is_err());
    let ok =
        cluster(serde_json::json!({"store": {"heartbeatInterval": 100, "electionTimeout": 1000}}));
    assert!(kube::core::cel::validate_cel(&ok).is_ok());
    let partial = cluster(serde_json::json!({"store": {"heartbeatInterval": 100}}));
    assert!(kube::core::cel::validate_cel(&partial).is_ok());
}

#[test]
fn crd_has_scale_subresource_short_name_and_columns() {
    let crd = serde_json::to_value(CairnCluster::crd()).unwrap();
    let v = &crd["spec"]["versions"][0];
    assert_eq!(
        v["subresources"]["scale"]["specReplicasPath"],
        ".spec.replicas"
    );
    assert_eq!(
        v["subresources"]["scale"]["labelSelectorPath"],
        ".status.selector"
    );
    assert_eq!(crd["spec"]["names"]["shortNames"][0], "cairn");
    let cols: Vec<_> = v["additionalPrinterColumns"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["name"].as_str().unwrap().to_string())
        .collect();
    for want in ["Replicas", "Ready", "Leader", "Version", "Age"] {
        assert!(
            cols.iter().any(|c| c == want),
            "missing column {want}: {cols:?}"
        );
    }
    let replicas = &v["schema"]["openAPIV3Schema"]["properties"]["spec"]["properties"]["replicas"];
    assert_eq!(replicas["default"], 3);
    assert!(replicas["x-kubernetes-validations"][0]["rule"]
        .as_str()
        .unwrap()
        .contains("% 2 == 1"));
}
