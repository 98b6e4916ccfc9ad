#!/usr/bin/env bash
# Installs cds-rotator: the binary, the systemd units (daemon, one-shot, timer), the
# sysusers.d and tmpfiles.d snippets (the cds-rotator user and its directories), the
# example policy and README.md. Nothing is started or enabled. Run again to upgrade: files
# it installs are replaced, existing directories keep their modes, other files (the
# policy, the credential) are left alone.
#
#   scripts/install.sh [BINARY]     (default: target/release/cds-rotator)
#
# Environment: PREFIX (default /usr/local; a package uses /usr), DESTDIR (a staging root
# for packages), SYSCONFDIR (default /etc). The units name the installed paths.
# A packager runs:
#   cargo build --release --locked
#   DESTDIR="$pkgdir" PREFIX=/usr scripts/install.sh target/release/cds-rotator
set -euo pipefail
cd "$(dirname "$0")/.."
prefix="${PREFIX:-/usr/local}"
sysconfdir="${SYSCONFDIR:-/etc}"
dest="${DESTDIR:-}"
bin="${1:-${CARGO_TARGET_DIR:-target}/release/cds-rotator}"
[[ -x "$bin" ]] || { echo "install: $bin is not an executable: build it first (cargo build --release --locked) or name it" >&2; exit 1; }
for dir in "$prefix" "$sysconfdir"; do
  [[ "$dir" == /* ]] || { echo "install: $dir must be an absolute path" >&2; exit 1; }
done

# The units and snippets are written for PREFIX=/usr/local and SYSCONFDIR=/etc.
place() { sed -e "s|/usr/local/|$prefix/|g" -e "s|/etc/cds-rotator|$sysconfdir/cds-rotator|g" "$1"; }
put() { # MODE SOURCE TARGET [placed]: TARGET under DESTDIR; `placed`: paths rewritten
  # Only a missing directory is made (0755): an upgrade keeps the modes and owners of
  # existing ones (tmpfiles.d makes /etc/cds-rotator 0750 root:cds-rotator).
  [[ -d "$(dirname "$dest$3")" ]] || install -d -m 0755 "$(dirname "$dest$3")"
  if [[ "${4:-}" == placed ]]; then
    place "$2" > "$dest$3.tmp" && chmod "$1" "$dest$3.tmp" && mv "$dest$3.tmp" "$dest$3"
  else
    install -m "$1" "$2" "$dest$3"
  fi
  echo "installed $dest$3"
}

put 0755 "$bin" "$prefix/bin/cds-rotator"
for unit in cds-rotator.service cds-rotator-oneshot.service cds-rotator.timer; do
  put 0644 "systemd/$unit" "$prefix/lib/systemd/system/$unit" placed
done
put 0644 systemd/sysusers.d/cds-rotator.conf "$prefix/lib/sysusers.d/cds-rotator.conf" placed
put 0644 systemd/tmpfiles.d/cds-rotator.conf "$prefix/lib/tmpfiles.d/cds-rotator.conf" placed
put 0644 config/policy.yaml "$sysconfdir/cds-rotator/policy.yaml.example"
put 0644 README.md "$prefix/share/doc/cds-rotator/README.md"

if [[ -z "$dest" ]]; then
  cat <<NEXT
Next (as root): create the user and directories, then see README.md ("Running it"):
  systemd-sysusers cds-rotator.conf && systemd-tmpfiles --create cds-rotator.conf
  systemctl daemon-reload
NEXT
fi
