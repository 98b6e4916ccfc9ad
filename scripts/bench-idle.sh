#!/usr/bin/env bash
# Measures the daemon at rest and a one-shot with nothing to do, against the built-in
# emulator: the daemon's resident memory right after its start pass (which rotates N
# clients) and after an idle window, its wakeups (context switches of all its threads)
# over that window, and the wall time of `--run-now` over the same N clients once none is
# due (median of RUNS runs). Prints numbers; asserts nothing.
#   scripts/bench-idle.sh [--listen PORT] [N] [SECONDS]
# --listen PORT adds `daemon: { listen: 127.0.0.1:PORT }` to the policy (the health and
# metrics server); nothing here depends on it answering. RUNS (default 20) sets the
# number of one-shot runs; BIN=path measures that binary instead of a fresh release build
# (to compare two builds).
set -euo pipefail
cd "$(dirname "$0")/.."
listen=""
if [[ "${1:-}" == "--listen" ]]; then listen="${2:?--listen needs a port}"; shift 2; fi
n="${1:-10}"; window="${2:-20}"; runs="${RUNS:-20}"
if [[ -n "${BIN:-}" ]]; then
  bin="$BIN"
else
  export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-${HOME:-/tmp}/.cache/cds-rotator/target}"
  cargo build --locked --release --quiet
  bin="$CARGO_TARGET_DIR/release/cds-rotator"
fi
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
  [[ -z "$listen" ]] || echo "daemon: { listen: 127.0.0.1:$listen }"
  echo "stores: { local: { type: file, dir: $work/secrets } }"
  echo "clients:"
  for i in $(seq 1 "$n"); do printf '  - { name: app%d, client_id: 0b0c1d2e-3f40-4152-6374-%012d, store: { name: local } }\n' "$i" "$i"; done
} > "$work/policy.yaml"
# The emulator runs from a copy: the kernel keeps a code page resident while another
# process maps it, and in production CDS is not on this host.
cp "$bin" "$work/emulator"
"$work/emulator" emulator --listen "127.0.0.1:$port" --seed "$work/seed.yaml" > /dev/null &
sleep 0.5
"$bin" --config "$work/policy.yaml" 2> "$work/daemon.log" &
pid=$!
rss() { awk '/^VmRSS/ {print $2 " " $3}' /proc/"$pid"/status; }
# The start pass is over when every client's pass is logged.
until [ "$(grep -c 'pass rotated the secret\|pass done\|pass failed' "$work/daemon.log" || true)" -ge "$n" ]; do sleep 0.1; done
after_start=$(rss)
sleep 12   # let the blocking-pool threads of the start pass retire
switches() { cat /proc/"$pid"/task/*/status | awk '/^(non)?voluntary_ctxt_switches/ {s+=$2} END {print s}'; }
a=$(switches); sleep "$window"; b=$(switches)
echo "clients rotated at start: $n$([[ -z "$listen" ]] || echo ", daemon.listen 127.0.0.1:$listen")"
echo "VmRSS after the start pass: $after_start"
echo "idle window: ${window}s, context switches (all threads): $((b - a))"
grep -E '^(VmRSS|RssAnon|RssFile|VmHWM|Threads)' /proc/"$pid"/status
if [[ -n "$listen" ]]; then
  # What a scraped sidecar holds: the server's code and buffers come back per scrape.
  for _ in 1 2 3 4 5; do curl -fsS "http://127.0.0.1:$listen/metrics" > /dev/null; done
  echo "after 5 scrapes of /metrics: $(rss) ($(awk '/^RssAnon/ {print "anon " $2 " kB"}' /proc/"$pid"/status))"
fi
# One-shots with nothing due (the daemon has just rotated every client). Its own
# server, if any, would collide with the daemon's port: the one-shot has none.
grep -v '^daemon:' "$work/policy.yaml" > "$work/oneshot.yaml"
times=()
for _ in $(seq 1 "$runs"); do
  t0=$(date +%s%N)
  "$bin" --config "$work/oneshot.yaml" --run-now > /dev/null 2>> "$work/oneshot.log"
  t1=$(date +%s%N)
  times+=($(( (t1 - t0) / 1000 )))
done
median=$(printf '%s\n' "${times[@]}" | sort -n | awk '{a[NR]=$1} END {m=(NR%2)?a[(NR+1)/2]:(a[NR/2]+a[NR/2+1])/2; printf "%.1f", m/1000}')
echo "--run-now with nothing due, $n clients: median ${median} ms of $runs runs"
