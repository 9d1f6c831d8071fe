//! Checks of charts/cairn-operator with what runs on every machine, plus real `helm lint` and
//! `helm template` wherever helm is installed.
//!
//! Without helm the templates cannot truly render, so the checks here are: plain YAML files parse,
//! values.yaml (and variations) satisfy values.schema.json, every `.Values.*` path a template uses
//! exists in values.yaml, each template is well-formed YAML once its actions are blanked out, and
//! the ClusterRole grants exactly what the operator calls.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::Command;

use serde_json::{json, Value};

fn chart() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../charts/cairn-operator")
}

fn read(path: impl AsRef<Path>) -> String {
    let path = chart().join(path);
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

fn yaml(path: &str) -> Value {
    serde_yaml::from_str(&read(path)).unwrap_or_else(|e| panic!("{path}: {e}"))
}

fn templates() -> Vec<(String, String)> {
    let mut out: Vec<_> = std::fs::read_dir(chart().join("templates"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| {
            p.extension()
                .is_some_and(|x| x == "yaml" || x == "tpl" || x == "txt")
        })
        .map(|p| {
            (
                p.file_name().unwrap().to_string_lossy().into_owned(),
                std::fs::read_to_string(&p).unwrap(),
            )
        })
        .collect();
    out.sort();
    out
}

fn validator() -> jsonschema::Validator {
    let schema: Value = serde_json::from_str(&read("values.schema.json")).unwrap();
    jsonschema::validator_for(&schema).expect("values.schema.json is a valid JSON schema")
}

fn merged(overrides: Value) -> Value {
    let mut values = yaml("values.yaml");
    merge(&mut values, overrides);
    values
}

fn merge(base: &mut Value, over: Value) {
    match (base, over) {
        (Value::Object(b), Value::Object(o)) => {
            for (k, v) in o {
                merge(b.entry(k).or_insert(Value::Null), v);
            }
        }
        (b, o) => *b = o,
    }
}

#[test]
fn plain_files_parse() {
    let chart_yaml = yaml("Chart.yaml");
    assert_eq!(chart_yaml["apiVersion"], "v2");
    assert_eq!(chart_yaml["name"], "cairn-operator");
    for crd in [
        "crds/cairnclusters.cairn.dev.yaml",
        "crds/cairnbackups.cairn.dev.yaml",
    ] {
        assert_eq!(yaml(crd)["kind"], "CustomResourceDefinition");
    }
}

#[test]
fn example_cluster_is_valid_for_the_operator_and_the_cel_rules() {
    let example: cairn_operator::crd::CairnCluster =
        serde_yaml::from_str(&read("examples/cairncluster.yaml")).expect("example deserializes");
    assert_eq!(example.spec.replicas, 3);
    assert!(cairn_operator::crd::validate::validate(&example.spec).is_empty());
    let mut with_ns = example.clone();
    with_ns.metadata.namespace = Some("default".into());
    assert!(kube::core::cel::validate_cel(&with_ns).is_ok());
}

#[test]
fn default_values_satisfy_the_schema() {
    let v = validator();
    let values = yaml("values.yaml");
    let errors: Vec<String> = v.iter_errors(&values).map(|e| e.to_string()).collect();
    assert!(errors.is_empty(), "{errors:?}");
}

#[test]
fn schema_accepts_sensible_variations() {
    let v = validator();
    for over in [
        json!({"replicas": 2, "leaderElection": {"enabled": true}}),
        json!({"watchNamespaces": ["team-a", "team-b"]}),
        json!({"metrics": {"serviceMonitor": {"enabled": true, "interval": "15s", "labels": {"release": "prom"}}}}),
        json!({"logging": {"format": "text", "level": "cairn_operator=debug"}}),
        json!({"image": {"repository": "registry.example/cairn-operator", "tag": "v1", "pullPolicy": "Always"}}),
    ] {
        let values = merged(over.clone());
        assert!(
            v.is_valid(&values),
            "{over} refused: {:?}",
            v.iter_errors(&values)
                .map(|e| e.to_string())
                .collect::<Vec<_>>()
        );
    }
}

#[test]
fn schema_refuses_mistakes() {
    let v = validator();
    for over in [
        json!({"replicas": 2, "leaderElection": {"enabled": false}}),
        json!({"replicas": 0}),
        json!({"logging": {"format": "xml"}}),
        json!({"image": {"pullPolicy": "Sometimes"}}),
        json!({"metrics": {"port": 70000}}),
        json!({"watchNamespace": ["typo"]}),
    ] {
        assert!(!v.is_valid(&merged(over.clone())), "{over} accepted");
    }
}

/// `.Values.a.b` paths used anywhere in the templates.
fn value_refs(text: &str) -> BTreeSet<String> {
    let mut refs = BTreeSet::new();
    let mut rest = text;
    while let Some(i) = rest.find(".Values.") {
        let tail = &rest[i + ".Values.".len()..];
        let end = tail
            .find(|c: char| !(c.is_alphanumeric() || c == '.' || c == '_'))
            .unwrap_or(tail.len());
        refs.insert(tail[..end].trim_end_matches('.').to_string());
        rest = &tail[end..];
    }
    refs
}

#[test]
fn templates_reference_only_values_that_exist() {
    let values = yaml("values.yaml");
    let mut seen = 0;
    for (file, text) in templates() {
        for path in value_refs(&text) {
            seen += 1;
            let mut node = &values;
            for key in path.split('.') {
                node = node
                    .get(key)
                    .unwrap_or_else(|| panic!("{file}: .Values.{path} is not in values.yaml"));
            }
        }
    }
    assert!(seen > 10, "the scan found only {seen} references");
}

/// The template with every action blanked: whole-line actions dropped, inline ones replaced.
fn blank_actions(text: &str) -> String {
    let mut out = String::new();
    for line in text.lines() {
        let trimmed = line.trim();
        if trimmed.starts_with("{{")
            && trimmed.ends_with("}}")
            && trimmed.matches("{{").count() == 1
        {
            continue;
        }
        let mut l = line.to_string();
        while let (Some(a), Some(b)) = (l.find("{{"), l.find("}}")) {
            if b < a {
                break;
            }
            l.replace_range(a..b + 2, "x");
        }
        out.push_str(&l);
        out.push('\n');
    }
    out
}

fn blanked_docs(file: &str) -> Vec<Value> {
    let text = blank_actions(&read(format!("templates/{file}")));
    serde_yaml::Deserializer::from_str(&text)
        .map(|d| {
            serde::Deserialize::deserialize(d).unwrap_or_else(|e| panic!("{file}: {e}\n{text}"))
        })
        .filter(|v: &Value| !v.is_null())
        .collect()
}

#[test]
fn every_manifest_template_is_well_formed() {
    let mut kinds = BTreeSet::new();
    for (file, _) in templates()
        .into_iter()
        .filter(|(f, _)| f.ends_with(".yaml"))
    {
        for doc in blanked_docs(&file) {
            assert!(doc["apiVersion"].is_string(), "{file}: no apiVersion");
            assert!(doc["metadata"]["name"].is_string(), "{file}: no name");
            kinds.insert(doc["kind"].as_str().unwrap().to_string());
        }
    }
    for kind in [
        "Deployment",
        "ServiceAccount",
        "ClusterRole",
        "ClusterRoleBinding",
        "Role",
        "Service",
        "ServiceMonitor",
    ] {
        assert!(kinds.contains(kind), "chart lacks a {kind}: {kinds:?}");
    }
    assert!(chart().join("templates/NOTES.txt").exists());
}

#[test]
fn cluster_role_grants_exactly_what_the_operator_uses() {
    let role = blanked_docs("clusterrole.yaml")
        .into_iter()
        .find(|d| d["kind"] == "ClusterRole")
        .unwrap();
    let mut granted = BTreeSet::new();
    for rule in role["rules"].as_array().unwrap() {
        for g in rule["apiGroups"].as_array().unwrap() {
            for r in rule["resources"].as_array().unwrap() {
                for v in rule["verbs"].as_array().unwrap() {
                    granted.insert(format!(
                        "{}/{}:{}",
                        g.as_str().unwrap(),
                        r.as_str().unwrap(),
                        v.as_str().unwrap()
                    ));
                }
            }
        }
    }
    // watch/get/patch(finalizer) of clusters; status apply; get + watch of owned StatefulSets;
    // server-side apply (create or patch) of the objects; events through the Recorder.
    let needed: BTreeSet<String> = [
        "cairn.dev/cairnclusters:get",
        "cairn.dev/cairnclusters:list",
        "cairn.dev/cairnclusters:watch",
        "cairn.dev/cairnclusters:patch",
        "cairn.dev/cairnclusters/status:get",
        "cairn.dev/cairnclusters/status:patch",
        "apps/statefulsets:get",
        "apps/statefulsets:list",
        "apps/statefulsets:watch",
        "apps/statefulsets:create",
        "apps/statefulsets:patch",
        "/services:get",
        "/services:create",
        "/services:patch",
        "policy/poddisruptionbudgets:get",
        "policy/poddisruptionbudgets:create",
        "policy/poddisruptionbudgets:patch",
        "events.k8s.io/events:create",
        "events.k8s.io/events:patch",
    ]
    .into_iter()
    .map(String::from)
    .collect();
    assert_eq!(
        granted, needed,
        "ClusterRole drifted from what the operator calls"
    );
    assert!(!role.to_string().contains('*'), "no wildcards");
}

fn helm() -> Option<PathBuf> {
    let ok = Command::new("helm")
        .arg("version")
        .output()
        .is_ok_and(|o| o.status.success());
    ok.then(|| PathBuf::from("helm"))
}

#[test]
fn helm_lint_and_template_when_helm_is_installed() {
    let Some(helm) = helm() else {
        eprintln!("SKIP: helm is not installed; `helm lint` and `helm template` were not run");
        return;
    };
    let lint = Command::new(&helm)
        .arg("lint")
        .arg(chart())
        .output()
        .unwrap();
    assert!(
        lint.status.success(),
        "helm lint: {}",
        String::from_utf8_lossy(&lint.stdout)
    );
    for set in [
        vec![],
        vec!["replicas=2"],
        vec!["metrics.serviceMonitor.enabled=true"],
        vec![
            "leaderElection.enabled=false",
            "serviceAccount.create=false",
        ],
        vec!["watchNamespaces={a,b}"],
    ] {
        let mut cmd = Command::new(&helm);
        cmd.args(["template", "op"])
            .arg(chart())
            .args(["--namespace", "ops"]);
        for s in &set {
            cmd.args(["--set", s]);
        }
        let out = cmd.output().unwrap();
        assert!(
            out.status.success(),
            "helm template {set:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let text = String::from_utf8(out.stdout).unwrap();
        for doc in serde_yaml::Deserializer::from_str(&text) {
            let v: Value = serde::Deserialize::deserialize(doc).unwrap();
            if v.is_null() {
                continue;
            }
            assert!(
                v["kind"].is_string() && v["metadata"]["name"].is_string(),
                "{set:?}: {v}"
            );
        }
    }
}
