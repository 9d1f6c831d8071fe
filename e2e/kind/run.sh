#!/usr/bin/env bash
# End-to-end check of cairn-operator on kind:
#   build both images, load them into a kind cluster, install the chart, create a 3-member
#   CairnCluster, wait for Available, check the member list, write a key, delete a member pod and
#   check that it comes back with the same name and member id and still has the key.
# Skips (exit 0, "SKIP: ...") where Docker, kind, kubectl or helm are missing.
set -euo pipefail

ROOT="$(cd "$(dirname "$0")/../.." && pwd)"
CLUSTER="${KIND_CLUSTER:-cairn-e2e}"
NS="${E2E_NAMESPACE:-cairn-e2e}"
TAG="${E2E_TAG:-e2e}"
KEEP="${E2E_KEEP:-0}"   # 1: leave the kind cluster running for inspection

skip() { echo "SKIP: $*"; exit 0; }
for tool in docker kind kubectl helm; do
  command -v "$tool" >/dev/null 2>&1 || skip "$tool is not installed; the kind e2e suite needs docker, kind, kubectl and helm"
done
docker info >/dev/null 2>&1 || skip "no Docker engine is reachable (docker info failed)"

log() { echo "==> $*"; }
fail() { echo "FAIL: $*" >&2; kubectl -n "$NS" get cairnclusters,pods,events -o wide >&2 || true; exit 1; }

created_cluster=0
cleanup() {
  if [[ "$created_cluster" == 1 && "$KEEP" != 1 ]]; then kind delete cluster --name "$CLUSTER" >/dev/null 2>&1 || true; fi
}
trap cleanup EXIT

log "building images"
docker build -f "$ROOT/store/Dockerfile" -t "cairn:$TAG" "$ROOT"
docker build -f "$ROOT/operator/Dockerfile" -t "cairn-operator:$TAG" "$ROOT"

if ! kind get clusters | grep -qx "$CLUSTER"; then
  log "creating kind cluster $CLUSTER"
  kind create cluster --name "$CLUSTER" --wait 120s
  created_cluster=1
fi
kubectl config use-context "kind-$CLUSTER" >/dev/null
kind load docker-image --name "$CLUSTER" "cairn:$TAG" "cairn-operator:$TAG"

log "installing the chart"
helm upgrade --install cairn-operator "$ROOT/charts/cairn-operator" \
  --namespace cairn-system --create-namespace \
  --set image.repository=cairn-operator --set image.tag="$TAG" --set image.pullPolicy=Never \
  --set logging.format=text --wait --timeout 3m

log "creating a 3-member cluster"
kubectl create namespace "$NS" --dry-run=client -o yaml | kubectl apply -f -
sed -e "s/^  version: .*/  version: \"$TAG\"/" "$ROOT/charts/cairn-operator/examples/cairncluster.yaml" \
  | kubectl -n "$NS" apply -f -
# kind pulls nothing: the image is cairn:$TAG, loaded above (the operator derives it from version).
kubectl -n "$NS" wait cairncluster/demo --for=condition=Available --timeout=5m || fail "cluster never became Available"

members() { kubectl -n "$NS" get cairncluster demo -o jsonpath='{range .status.members[*]}{.name}={.id},{.isLearner}{"\n"}{end}' | sort; }
log "member list"
before="$(members)"
echo "$before"
[[ "$(echo "$before" | wc -l)" == 3 ]] || fail "expected 3 members, got: $before"
echo "$before" | grep -q ',true$' && fail "learners left in the member list"
# The store's own view, from inside a member (the image ships the cairn CLI).
kubectl -n "$NS" exec demo-0 -- cairn --endpoints=http://demo-client:2379 member list || fail "member list failed"

log "writing a key"
kubectl -n "$NS" exec demo-0 -- cairn --endpoints=http://demo-client:2379 put e2e-key survived || fail "put failed"

log "deleting pod demo-1"
id_before="$(echo "$before" | grep '^demo-1=' | cut -d= -f2 | cut -d, -f1)"
kubectl -n "$NS" delete pod demo-1 --wait=true
kubectl -n "$NS" wait pod/demo-1 --for=condition=Ready --timeout=3m || fail "demo-1 did not come back"
kubectl -n "$NS" wait cairncluster/demo --for=condition=Available --timeout=3m || fail "cluster not Available after pod loss"
id_after="$(members | grep '^demo-1=' | cut -d= -f2 | cut -d, -f1)"
[[ -n "$id_before" && "$id_before" == "$id_after" ]] || fail "demo-1 changed identity: $id_before -> $id_after"
value="$(kubectl -n "$NS" exec demo-1 -- cairn --endpoints=http://127.0.0.1:2379 get e2e-key --print-value-only)"
[[ "$value" == "survived" ]] || fail "demo-1 lost data: got '$value'"

echo "PASS: kind e2e (3 members, Available, pod restart kept identity $id_after and data)"
