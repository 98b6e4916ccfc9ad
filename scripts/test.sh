#!/usr/bin/env bash
# The project's test command (README, .ci/run): formatting, lints, every test.
# Installs what the tests need from this repo's own scripts; builds go to a cache
# outside the clone so repeated runs on one machine reuse them.
set -euo pipefail
cd "$(dirname "$0")/.."
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-${HOME:-/tmp}/.cache/cds-rotator/target}"
export CARGO_TERM_COLOR="${CARGO_TERM_COLOR:-never}"

# The store tests need real servers (moto, OpenBao), the manifest check its validator:
# installed once into a cached venv (and, from Debian, systemd-analyze and promtool).
CDS_ROTATOR_TEST_BIN="$(bash scripts/test-deps.sh)"
export CDS_ROTATOR_TEST_BIN

echo "== cargo fmt --check"
cargo fmt --all -- --check
echo "== module cycles"
# No top-level module imports one that imports it back (docs/ARCHITECTURE.md).
python3 scripts/module-cycles.py
echo "== cargo clippy"
cargo clippy --locked --all-targets -- -D warnings
echo "== systemd units"
# Offline: verify, the exposure score of each service, the sysusers/tmpfiles snippets.
cargo build --locked --quiet
bash scripts/check-units.sh "$CARGO_TARGET_DIR/debug/cds-rotator"
echo "== systemd units under systemd as PID 1"
# Needs root: boots a Debian tree with systemd-nspawn (about a minute when it is cached).
bash scripts/check-systemd.sh "$CARGO_TARGET_DIR/debug/cds-rotator"
echo "== Kubernetes manifests"
bash scripts/check-manifests.sh "$CDS_ROTATOR_TEST_BIN"
echo "== Prometheus alert rules"
bash scripts/check-alerts.sh
echo "== cargo test"
# Unit and integration tests (the crate has no doc tests). The last line sums them up.
log="$(mktemp)"; trap 'rm -f "$log"' EXIT
cargo test --locked --all-targets 2>&1 | tee "$log"
awk '/^test result:/ { p += $4; f += $6 } END { printf "tests: %d passed, %d failed\n", p, f }' "$log"
