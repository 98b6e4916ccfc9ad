#!/usr/bin/env bash
# Installs what the tests run against into a venv outside the clone (reused by later
# runs on the same machine): moto (AWS Secrets Manager, KMS) and OpenBao (Vault KV v2);
# and, from Debian, systemd-analyze for the unit checks (package systemd; systemd need
# not be running), promtool for the alert rules (package prometheus: about 19 MB to
# download, 20 s to install on a 2-core machine; its server is not started) and etcd for
# the coordination tests (package etcd-server; the tests start their own on free loopback
# ports, the system service is not used); mmdebstrap and systemd-nspawn (package
# systemd-container) for the run under a real systemd (scripts/check-systemd.sh).
# Prints the venv's bin directory. Re-installs when the requirements change.
set -euo pipefail
cd "$(dirname "$0")/.."
missing=()
command -v systemd-analyze >/dev/null || missing+=(systemd)
command -v promtool >/dev/null || missing+=(prometheus)
command -v etcd >/dev/null || missing+=(etcd-server)
command -v mmdebstrap >/dev/null || missing+=(mmdebstrap)
command -v systemd-nspawn >/dev/null || missing+=(systemd-container)
if ((${#missing[@]})); then
  if [[ "$(id -u)" == 0 ]] && command -v apt-get >/dev/null; then
    echo "== installing test servers and checkers (Debian packages: ${missing[*]})" >&2
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq >&2
    apt-get install -y -qq --no-install-recommends "${missing[@]}" >&2
  else
    echo "test-deps: systemd-analyze, promtool, etcd, mmdebstrap or systemd-nspawn is missing: install Debian's ${missing[*]} (apt-get install ${missing[*]})" >&2
    exit 1
  fi
fi
cache="${CDS_ROTATOR_CACHE:-${HOME:-/tmp}/.cache/cds-rotator}"
venv="$cache/venv"
stamp="$venv/.requirements.sha256"
want="$(sha256sum scripts/test-requirements.txt | cut -d' ' -f1)"
if [[ ! -x "$venv/bin/python" || "$(cat "$stamp" 2>/dev/null)" != "$want" ]]; then
  echo "== installing test servers into $venv" >&2
  rm -rf "$venv"
  python3 -m venv "$venv" >&2
  "$venv/bin/pip" install --quiet --disable-pip-version-check -r scripts/test-requirements.txt >&2
  echo "$want" > "$stamp"
fi
for bin in moto_server bao kubernetes-validate; do
  [[ -x "$venv/bin/$bin" ]] || { echo "test-deps: $venv/bin/$bin is missing after the install" >&2; exit 1; }
done
echo "$venv/bin"
