#!/usr/bin/env bash
# Times one `--run-now` pass that rotates N emulated clients (none has a secret yet, so
# every one needs a rotation) into the file store at max_concurrency C, while the
# emulator delays every answer by D ms. Prints, per run: requests per client (from the
# emulator's request log), the wall time of the pass, the latency limit (requests per
# client × D × ⌈N/C⌉, plus the start-up requests × D) and the ratio wall / limit. Each
# row is the best of REPEAT runs (default 3): on shared cores, other work only adds time.
# Prints numbers; asserts nothing.
# Usage: scripts/bench-pass.sh [N] [D_ms] [C...]
#   no arguments: N=1000, D = 20 and 100 ms, C = 8, 32, 64
#   scripts/bench-pass.sh 200 20 64   a quick run
#   BIN=/path/to/cds-rotator times that binary instead of building this tree
set -euo pipefail
cd "$(dirname "$0")/.."
n="${1:-1000}"; repeat="${REPEAT:-3}"
if [ $# -ge 2 ]; then delays=("$2"); else delays=(20 100); fi
if [ $# -ge 3 ]; then concs=("${@:3}"); else concs=(8 32 64); fi
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-${HOME:-/tmp}/.cache/cds-rotator/target}"
# BIN: time that binary instead of building this tree (before/after figures).
bin="${BIN:-}"
if [ -z "$bin" ]; then
  cargo build --locked --release --quiet
  bin="$CARGO_TARGET_DIR/release/cds-rotator"
fi
work=$(mktemp -d); trap 'kill $(jobs -p) 2>/dev/null || true; rm -rf "$work"' EXIT
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
tenant=8c6f1f3e-1d2c-4b5a-9e8f-7a6b5c4d3e2f; admin=2b1f0e9d-8c7b-4a6f-9e5d-4c3b2a1f0e9d
secret="bench-admin-$(od -An -N16 -tx1 /dev/urandom | tr -d ' \n')"
( umask 077; printf '%s' "$secret" > "$work/admin" )
{
  echo "tenant_id: $tenant"; echo "clients:"
  echo "  - { id: $admin, name: admin, kind: client_credentials, roles: [tenant_administrator], secrets: [{ value: \"$secret\", expiration: 2099-01-01T00:00:00Z }] }"
  for i in $(seq 1 "$n"); do printf '  - { id: 0b0c1d2e-3f40-4152-6374-%012d, name: app%d, kind: client_credentials }\n' "$i" "$i"; done
} > "$work/seed.yaml"
clients=$(for i in $(seq 1 "$n"); do printf '  - { name: app%d, client_id: 0b0c1d2e-3f40-4152-6374-%012d, store: { name: local } }\n' "$i" "$i"; done)

run() { # $1 delay ms, $2 concurrency; prints: requests per client, start-up requests, wall
  local d="$1" c="$2" port emu run_dir t0 t1
  port=$(free_port); run_dir="$work/run-$d-$c"; mkdir -p "$run_dir"
  "$bin" emulator --listen "127.0.0.1:$port" --seed "$work/seed.yaml" > /dev/null &
  emu=$!
  until curl -sf "http://127.0.0.1:$port/_emulator/state" > /dev/null; do sleep 0.1; done
  # status 0: the real answer, after the delay; times 0: every request.
  curl -sf -X POST "http://127.0.0.1:$port/_emulator/faults" \
    -H 'Content-Type: application/json' -d "{\"status\": 0, \"delay_ms\": $d}"
  {
    echo "connect: { url: http://127.0.0.1:$port, tenant_id: $tenant, credentials: { client_id: $admin, client_secret_file: $work/admin }, max_concurrency: $c }"
    echo "lock_dir: $run_dir/locks"
    echo "stores: { local: { type: file, dir: $run_dir/secrets } }"
    echo "clients:"
    echo "$clients"
  } > "$run_dir/policy.yaml"
  t0=$(date +%s.%N)
  RUST_LOG=warn "$bin" --config "$run_dir/policy.yaml" --run-now > "$run_dir/out" 2> "$run_dir/err" \
    || { echo "the pass failed (D=$d C=$c):" >&2; tail -5 "$run_dir/err" >&2; }
  t1=$(date +%s.%N)
  curl -sf "http://127.0.0.1:$port/_emulator/state" > "$run_dir/state.json"
  kill "$emu"; wait "$emu" 2>/dev/null || true
  python3 - "$run_dir/state.json" "$n" "$t0" "$t1" <<'PY'
import json, sys
state, n, t0, t1 = sys.argv[1], int(sys.argv[2]), float(sys.argv[3]), float(sys.argv[4])
total = len(json.load(open(state))["requests"])
per_client = round(total / n)          # the rest is the pass's start-up (its own token)
print(per_client, total - per_client * n, f"{t1 - t0:.3f}")
PY
  # Kept until the end (the trap removes $work): on ext4 without a journal, as on the
  # machine this was measured on, a new file skips every inode deleted in the last
  # minute, so removing a run's 4,000 files here made each next run pay for them.
}

echo "    N  D_ms    C req/cli startup   wall_s  limit_s  ratio  (best of $repeat)"
for d in "${delays[@]}"; do
  for c in "${concs[@]}"; do
    for _ in $(seq 1 "$repeat"); do run "$d" "$c"; done | python3 -c '
import math, sys
n, d, c = (int(a) for a in sys.argv[1:4])
runs = [line.split() for line in sys.stdin]
per_client, startup, wall = min(runs, key=lambda r: float(r[2]))
per_client, startup, wall = int(per_client), int(startup), float(wall)
limit = (per_client * math.ceil(n / c) + startup) * d / 1000
print(f"{n:>5} {d:>5} {c:>4} {per_client:>8} {startup:>7} {wall:>8.2f} {limit:>8.2f} {wall / limit:>6.2f}")
' "$n" "$d" "$c"
  done
done
