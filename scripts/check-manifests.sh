#!/usr/bin/env bash
# Checks deploy/*.yaml offline: against the Kubernetes API schemas that
# kubernetes-validate bundles (strict: an unknown or misspelt field is an error), and
# that every pod runs hardened and sized (scripts/check-pods.py). No cluster needed.
#   scripts/check-manifests.sh VENV_BIN   (the bin directory scripts/test-deps.sh prints)
set -euo pipefail
cd "$(dirname "$0")/.."
bin="${1:?usage: scripts/check-manifests.sh VENV_BIN (from scripts/test-deps.sh)}"
# alerts.yaml is a Prometheus rule file, not a Kubernetes object: scripts/check-alerts.sh.
manifests=()
for f in deploy/*.yaml; do [[ "$f" == deploy/alerts.yaml ]] || manifests+=("$f"); done
"$bin/kubernetes-validate" --strict --quiet "${manifests[@]}"
echo "kubernetes-validate --strict: ${manifests[*]} valid"
"$bin/python" scripts/check-pods.py "${manifests[@]}"
