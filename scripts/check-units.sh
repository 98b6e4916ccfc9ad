#!/usr/bin/env bash
# Checks the systemd units offline, as installed by scripts/install.sh into a scratch
# directory: `systemd-analyze verify` clean, and `systemd-analyze security --offline=yes`
# at most MAX_EXPOSURE for each service; the example policy agrees with the units; the
# sysusers.d and tmpfiles.d snippets applied to a scratch root; a second install (an
# upgrade) keeps directory modes and the admin's files. Needs systemd-analyze (Debian's `systemd` package; systemd need not be running).
#   scripts/check-units.sh BINARY
set -euo pipefail
cd "$(dirname "$0")/.."
bin="${1:?usage: scripts/check-units.sh BINARY (the built cds-rotator)}"
max="${MAX_EXPOSURE:-1.5}"
command -v systemd-analyze >/dev/null || {
  echo "check-units: systemd-analyze is missing: apt-get install systemd (scripts/test-deps.sh does)" >&2
  exit 1
}
stage="$(mktemp -d)"; trap 'rm -rf "$stage"' EXIT
# The units then name the staged binary, so verify finds every command they run.
PREFIX="$stage/usr" SYSCONFDIR="$stage/etc" bash scripts/install.sh "$bin" >/dev/null
units="$stage/usr/lib/systemd/system"

fail=0
# verify prints only problems; its exit code alone misses some (e.g. unknown keys).
out="$(systemd-analyze verify --man=no "$units"/cds-rotator.service \
  "$units"/cds-rotator-oneshot.service "$units"/cds-rotator.timer 2>&1)" || fail=1
if [[ -n "$out" ]]; then echo "$out" >&2; fail=1; fi
echo "systemd-analyze verify: $([[ $fail == 0 ]] && echo clean || echo FAILED)"

for unit in cds-rotator.service cds-rotator-oneshot.service; do
  score="$(systemd-analyze security --offline=yes --no-pager "$units/$unit" 2>&1 \
    | sed -n 's/.*Overall exposure level for [^:]*: \([0-9.]*\).*/\1/p')"
  if [[ -z "$score" ]]; then
    echo "systemd-analyze security: no score for $unit" >&2; fail=1
  elif awk -v s="$score" -v m="$max" 'BEGIN { exit !(s > m) }'; then
    echo "systemd-analyze security $unit: exposure $score > $max: FAILED" >&2; fail=1
  else
    echo "systemd-analyze security $unit: exposure $score (at most $max)"
  fi
done

# The example policy fits the units: the credential they load, the lock directory they
# keep and the state directory they make.
fits=0
for unit in cds-rotator.service cds-rotator-oneshot.service; do
  for pair in "LoadCredential=admin:|client_secret_credential: admin" \
    "RuntimeDirectory=cds-rotator|lock_dir: /run/cds-rotator" \
    "StateDirectory=cds-rotator|dir: /var/lib/cds-rotator/"; do
    if ! grep -q "^${pair%%|*}" "systemd/$unit" || ! grep -q "^[^#]*${pair#*|}" config/policy.yaml; then
      echo "config/policy.yaml and systemd/$unit disagree: ${pair%%|*} vs ${pair#*|}: FAILED" >&2; fits=1
    fi
  done
done
[[ $fits == 0 ]] && echo "config/policy.yaml: fits the units (credential, lock and state directories)" || fail=1

# The snippets applied to an empty root: the user and group exist, then the directories
# are made with their owners and modes.
root="$stage/root"; mkdir -p "$root/etc"
if systemd-sysusers --root="$root" "$PWD/systemd/sysusers.d/cds-rotator.conf" >/dev/null 2>&1 \
  && systemd-tmpfiles --root="$root" --create "$PWD/systemd/tmpfiles.d/cds-rotator.conf" \
  && ids="$(awk -F: '$1 == "cds-rotator" { print $3 " " $4 }' "$root/etc/passwd")" \
  && [[ -n "$ids" && "$(stat -c '%a %u %g' "$root/var/lib/cds-rotator")" == "750 $ids" ]]; then
  echo "sysusers.d + tmpfiles.d: user, group and directories made"
else
  echo "sysusers.d + tmpfiles.d: the snippets do not make user cds-rotator and its directories: FAILED" >&2; fail=1
fi
# An upgrade (install.sh run again) keeps what the first install and the admin made:
# the modes of existing directories and the files it does not ship.
up="$stage/upgrade"
DESTDIR="$up" bash scripts/install.sh "$bin" >/dev/null
chmod 0750 "$up/etc/cds-rotator"
echo "policy" > "$up/etc/cds-rotator/policy.yaml" && chmod 0640 "$up/etc/cds-rotator/policy.yaml"
DESTDIR="$up" bash scripts/install.sh "$bin" >/dev/null
if [[ "$(stat -c %a "$up/etc/cds-rotator")" == 750 && "$(cat "$up/etc/cds-rotator/policy.yaml")" == policy \
  && "$(stat -c %a "$up/etc/cds-rotator/policy.yaml")" == 640 ]]; then
  echo "install.sh twice: /etc/cds-rotator keeps 0750, the policy is kept"
else
  echo "install.sh twice: /etc/cds-rotator is $(stat -c %a "$up/etc/cds-rotator") (was 0750) or the policy changed: FAILED" >&2; fail=1
fi
exit "$fail"
