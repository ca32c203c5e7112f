#!/bin/sh
# Deploy linters, run by `make lint-deploy` with the tools of .venv-lint (requirements-lint.txt):
#   hadolint  components/Dockerfile, components/Dockerfile.cuda   (settings and justified ignores: .hadolint.yaml)
#   checkov   the kustomize renders of k8s/base, k8s/overlays/{dev,prod,prod-monitoring} (kubernetes framework)
#             and both Dockerfiles (dockerfile framework)          (settings and justified skips: .checkov.yaml)
# Exits non-zero on any finding that is not justified in those files or in a manifest's checkov.io/skip annotation.
#   sh k8s/lint.sh [TOOLS_BIN_DIR]    (default .venv-lint/bin)
set -eu

root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"
bin=${1:-.venv-lint/bin}
case $bin in /*) ;; *) bin="$root/$bin" ;; esac
kubectl=${KUBECTL:-kubectl}
if ! command -v "$kubectl" >/dev/null 2>&1; then
    echo "lint-deploy: kubectl not found; it renders the kustomize overlays (kubectl kustomize)" >&2
    exit 1
fi
for tool in hadolint checkov; do
    if [ ! -x "$bin/$tool" ]; then
        echo "lint-deploy: $bin/$tool missing; run \`make lint-deploy\` (it installs requirements-lint.txt)" >&2
        exit 1
    fi
done

rendered=$(mktemp -d)
trap 'rm -rf "$rendered"' EXIT INT TERM
status=0

echo "== hadolint: components/Dockerfile components/Dockerfile.cuda"
"$bin/hadolint" --config .hadolint.yaml components/Dockerfile components/Dockerfile.cuda || status=1

for dir in base overlays/dev overlays/prod overlays/prod-monitoring; do
    name=$(echo "$dir" | tr / -)
    if ! "$kubectl" kustomize "k8s/$dir" >"$rendered/$name.yaml"; then
        echo "lint-deploy: kubectl kustomize k8s/$dir failed" >&2
        status=1
    fi
done

echo "== checkov (kubernetes): rendered k8s/base, k8s/overlays/dev, k8s/overlays/prod, k8s/overlays/prod-monitoring"
"$bin/checkov" --config-file .checkov.yaml --framework kubernetes -d "$rendered" || status=1

echo "== checkov (dockerfile): components/Dockerfile components/Dockerfile.cuda"
"$bin/checkov" --config-file .checkov.yaml --framework dockerfile \
    -f components/Dockerfile -f components/Dockerfile.cuda || status=1

if [ "$status" -ne 0 ]; then
    echo "lint-deploy: FAILED (fix the finding, or justify a skip in .hadolint.yaml / .checkov.yaml / a checkov.io/skip annotation)" >&2
else
    echo "lint-deploy: clean"
fi
exit "$status"
