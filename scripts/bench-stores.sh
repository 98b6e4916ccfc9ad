#!/usr/bin/env bash
# Times one `--run-now` pass that rotates N emulated clients into the file store, then
# the same into aws_secrets_manager on a local moto server, at max_concurrency C.
# Prints the wall times and moto's own latency for one create + put; asserts nothing.
# Usage: scripts/bench-stores.sh [N] [C]
set -euo pipefail
cd "$(dirname "$0")/.."
n="${1:-100}"; conc="${2:-32}"
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-${HOME:-/tmp}/.cache/cds-rotator/target}"
cargo build --locked --release --quiet
bin="$CARGO_TARGET_DIR/release/cds-rotator"
venv_bin="$(bash scripts/test-deps.sh)"
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
export AWS_ACCESS_KEY_ID=testing AWS_SECRET_ACCESS_KEY=testing AWS_REGION=eu-west-1
moto_port=$(free_port)
"$venv_bin/moto_server" -H 127.0.0.1 -p "$moto_port" > /dev/null 2>&1 &
policy() { # $1 name, $2 store line
  {
    echo "connect: { url: http://127.0.0.1:$3, tenant_id: $tenant, credentials: { client_id: $admin, client_secret_file: $work/admin }, max_concurrency: $conc }"
    echo "lock_dir: $work/locks"
    echo "stores: { s: $2 }"
    echo "clients:"
    for i in $(seq 1 "$n"); do printf '  - { name: app%d, client_id: 0b0c1d2e-3f40-4152-6374-%012d, store: { name: s, secret: cds-app%d } }\n' "$i" "$i" "$i"; done
  } > "$work/$1.yaml"
}
pass() { # $1 policy name; prints seconds
  local port; port=$(free_port)
  "$bin" emulator --listen "127.0.0.1:$port" --seed "$work/seed.yaml" > /dev/null &
  local emu=$!
  sleep 0.5
  policy "$1" "$2" "$port"
  local t0 t1; t0=$(date +%s.%N)
  RUST_LOG=warn "$bin" --config "$work/$1.yaml" --run-now > "$work/$1.out"
  t1=$(date +%s.%N)
  kill "$emu"; wait "$emu" 2>/dev/null || true
  echo "$t1 - $t0" | bc
}
until curl -s "http://127.0.0.1:$moto_port/moto-api/" > /dev/null; do sleep 0.2; done
file_s=$(pass file "{ type: file, dir: $work/secrets }")
aws_s=$(pass aws "{ type: aws_secrets_manager, region: eu-west-1, endpoint_url: http://127.0.0.1:$moto_port }")
# moto's own latency for what one publish sends (CreateSecret, PutSecretValue, GetSecretValue).
lat=$(python3 - "$moto_port" <<'PY'
import json, sys, time, urllib.request
port = sys.argv[1]
def call(target, body):
    req = urllib.request.Request(f"http://127.0.0.1:{port}/", data=json.dumps(body).encode(),
        headers={"X-Amz-Target": f"secretsmanager.{target}", "Content-Type": "application/x-amz-json-1.1",
                 "Authorization": "AWS4-HMAC-SHA256 Credential=testing/20260101/eu-west-1/secretsmanager/aws4_request, SignedHeaders=host, Signature=x"})
    urllib.request.urlopen(req).read()
t = time.time(); k = 20
for i in range(k):
    call("CreateSecret", {"Name": f"lat{i}", "SecretString": "x"})
    call("PutSecretValue", {"SecretId": f"lat{i}", "SecretString": "y"})
    call("GetSecretValue", {"SecretId": f"lat{i}"})
print(f"{(time.time() - t) / k * 1000:.1f}")
PY
)
echo "clients: $n, max_concurrency: $conc"
echo "file store pass:          ${file_s}s"
echo "aws_secrets_manager pass: ${aws_s}s"
echo "moto, one create+put+get: ${lat}ms (sequential)"
echo "ratio aws/file: $(echo "scale=2; $aws_s / $file_s" | bc)"
