#!/usr/bin/env bash
# Run tests/e2e/test_k8s_real.py against a throw-away kind cluster with a local registry.
# Needs: docker, kind (>= 0.20), kubectl, network access to pull kindest/node, registry:2 and busybox.
# Not runnable on the Fornax build machines (no kube-apiserver, no image pulls there): run it elsewhere.
#
#   infra/k8s/e2e-kind.sh            # create, test, delete
#   KEEP=1 infra/k8s/e2e-kind.sh     # keep the cluster and registry afterwards
set -euo pipefail

CLUSTER=${CLUSTER:-fornax-e2e}
REG_NAME=${REG_NAME:-fornax-kind-registry}
REG_PORT=${REG_PORT:-5001}
ROOT=$(cd "$(dirname "$0")/../.." && pwd)
PY=${PY:-$ROOT/.venv/bin/python}
KUBECONFIG_FILE=$(mktemp)

cleanup() {
  if [ -z "${KEEP:-}" ]; then
    kind delete cluster --name "$CLUSTER" >/dev/null 2>&1 || true
    docker rm -f "$REG_NAME" >/dev/null 2>&1 || true
  fi
  rm -f "$KUBECONFIG_FILE"
}
trap cleanup EXIT

# 1. A local registry the nodes can pull from (kind's documented local-registry set-up).
if [ "$(docker inspect -f '{{.State.Running}}' "$REG_NAME" 2>/dev/null || true)" != "true" ]; then
  docker run -d --restart=always -p "127.0.0.1:${REG_PORT}:5000" --network bridge --name "$REG_NAME" registry:2
fi

# 2. The cluster, with containerd reading per-registry hosts.toml files.
if ! kind get clusters | grep -qx "$CLUSTER"; then
  cat <<YAML | kind create cluster --name "$CLUSTER" --config=-
kind: Cluster
apiVersion: kind.x-k8s.io/v1alpha4
containerdConfigPatches:
- |-
  [plugins."io.containerd.grpc.v1.cri".registry]
    config_path = "/etc/containerd/certs.d"
YAML
fi
for node in $(kind get nodes --name "$CLUSTER"); do
  docker exec "$node" mkdir -p "/etc/containerd/certs.d/localhost:${REG_PORT}"
  printf '[host."http://%s:5000"]\n' "$REG_NAME" | docker exec -i "$node" cp /dev/stdin \
    "/etc/containerd/certs.d/localhost:${REG_PORT}/hosts.toml"
done
docker network connect kind "$REG_NAME" 2>/dev/null || true
kind get kubeconfig --name "$CLUSTER" > "$KUBECONFIG_FILE"

# 3. Two tiny long-running images, pushed so that they have digests.
for v in v1 v2; do
  printf 'FROM busybox:1.36\nCMD ["sh", "-c", "echo %s; sleep 3600"]\n' "$v" \
    | docker build -q -t "localhost:${REG_PORT}/fornax-e2e/app:$v" - >/dev/null
  docker push -q "localhost:${REG_PORT}/fornax-e2e/app:$v" >/dev/null
done
digest() { docker inspect --format '{{index .RepoDigests 0}}' "localhost:${REG_PORT}/fornax-e2e/app:$1"; }

# 4. The test, through the real kubernetes client.
cd "$ROOT"
KUBECONFIG="$KUBECONFIG_FILE" \
FORNAX_E2E_K8S_IMAGE1="$(digest v1)" \
FORNAX_E2E_K8S_IMAGE2="$(digest v2)" \
  "$PY" -m pytest tests/e2e/test_k8s_real.py -v -p no:cacheprovider
