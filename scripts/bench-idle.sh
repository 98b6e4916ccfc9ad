#!/usr/bin/env bash
# Measures the daemon at rest: resident memory and wakeups (context switches of all its
# threads) over an idle window, after a start pass that rotates N clients against the
# built-in emulator. Prints numbers; asserts nothing. Usage: scripts/bench-idle.sh [N] [SECONDS]
set -euo pipefail
cd "$(dirname "$0")/.."
n="${1:-10}"; window="${2:-20}"
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-${HOME:-/tmp}/.cache/cds-rotator/target}"
cargo build --locked --release --quiet
bin="$CARGO_TARGET_DIR/release/cds-rotator"
work=$(mktemp -d); trap 'kill $(jobs -p) 2>/dev/null || true; rm -rf "$work"' EXIT
port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
tenant=8c6f1f3e-1d2c-4b5a-9e8f-7a6b5c4d3e2f; admin=2b1f0e9d-8c7b-4a6f-9e5d-4c3b2a1f0e9d
secret="bench-admin-$(od -An -N16 -tx1 /dev/urandom | tr -d ' \n')"
{
  echo "tenant_id: $tenant"; echo "clients:"
  echo "  - { id: $admin, name: admin, kind: client_credentials, roles: [tenant_administrator], secrets: [{ value: \"$secret\", expiration: 2099-01-01T00:00:00Z }] }"
  for i in $(seq 1 "$n"); do printf '  - { id: 0b0c1d2e-3f40-4152-6374-%012d, name: app%d, kind: client_credentials }\n' "$i" "$i"; done
} > "$work/seed.yaml"
( umask 077; printf '%s' "$secret" > "$work/admin" )
{
  echo "connect: { url: http://127.0.0.1:$port, tenant_id: $tenant, credentials: { client_id: $admin, client_secret_file: $work/admin } }"
  echo "lock_dir: $work/locks"
  echo "stores: { local: { type: file, dir: $work/secrets } }"
  echo "clients:"
  for i in $(seq 1 "$n"); do printf '  - { name: app%d, client_id: 0b0c1d2e-3f40-4152-6374-%012d, store: { name: local } }\n' "$i" "$i"; done
} > "$work/policy.yaml"
"$bin" emulator --listen "127.0.0.1:$port" --seed "$work/seed.yaml" > /dev/null &
sleep 0.5
"$bin" --config "$work/policy.yaml" 2> "$work/daemon.log" &
pid=$!
until [ "$(ls "$work/secrets" 2>/dev/null | grep -vc json || true)" -ge "$n" ]; do sleep 0.2; done
sleep 12   # let the blocking-pool threads of the start pass retire
switches() { cat /proc/"$pid"/task/*/status | awk '/^(non)?voluntary_ctxt_switches/ {s+=$2} END {print s}'; }
a=$(switches); sleep "$window"; b=$(switches)
echo "clients rotated at start: $n"
echo "idle window: ${window}s, context switches (all threads): $((b - a))"
grep -E '^(VmRSS|VmHWM|Threads)' /proc/"$pid"/status
