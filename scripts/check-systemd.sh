#!/usr/bin/env bash
# Runs the units under a real systemd as PID 1: a minimal Debian tree (mmdebstrap, from
# the Debian mirror and suite this machine's apt uses), booted with systemd-nspawn
# (--boot --register=no --keep-unit, in a cgroup subtree of its own, private network),
# driven from outside with nsenter. Inside: scripts/install.sh installs BINARY, the CDS
# emulator runs as a unit of its own, and the checks are: start and READY (Type=notify),
# the first pass rotates, the store is readable by its group (and only by it),
# `systemctl reload` reloads, a WARN reaches journald at priority warning, a policy error
# stops the service without restarts, stop, the watchdog restarts a hung daemon, the
# one-shot service and its timer, a store outside the state directory (tmpfiles.d line +
# ReadWritePaths= drop-in), and a whole cycle (create, verify, publish, announce,
# retire) under SystemCallErrorNumber=kill without a kill.
#
#   scripts/check-systemd.sh BINARY     (the built cds-rotator, e.g. target/debug/cds-rotator)
#
# Needs root. Installs mmdebstrap and systemd-container with apt-get when missing; when
# it cannot, it fails (it never skips). The tree is cached under
# ~/.cache/cds-rotator/nspawn/, keyed by suite, mirror and package list; each run boots a
# copy. Environment: CDS_ROTATOR_DEBIAN_MIRROR, CDS_ROTATOR_DEBIAN_SUITE override what
# is read from /etc/apt; CDS_ROTATOR_CACHE the cache directory.
set -euo pipefail
cd "$(dirname "$0")/.."
bin="${1:?usage: scripts/check-systemd.sh BINARY (the built cds-rotator)}"
bin="$(realpath "$bin")"
[[ -x "$bin" ]] || { echo "check-systemd: $bin is not an executable" >&2; exit 1; }
fail() {
  if [[ -n "${leader:-}" ]]; then # the container's last journal lines, for the why
    echo "check-systemd: the container's journal, last lines:" >&2
    inside journalctl --no-pager -n 40 >&2 || true
  fi
  echo "check-systemd: $*: FAILED" >&2
  exit 1
}
say() { echo "check-systemd: $*"; }

[[ "$(id -u)" == 0 ]] || fail "needs root (systemd-nspawn boots a container); run it as root"
need=()
command -v mmdebstrap >/dev/null || need+=(mmdebstrap)
command -v systemd-nspawn >/dev/null || need+=(systemd-container)
command -v nsenter >/dev/null || need+=(util-linux)
if ((${#need[@]})); then
  command -v apt-get >/dev/null || fail "${need[*]} missing and no apt-get to install them"
  say "installing Debian packages: ${need[*]}"
  export DEBIAN_FRONTEND=noninteractive
  { apt-get update -qq && apt-get install -y -qq --no-install-recommends "${need[@]}"; } >&2 \
    || fail "cannot install ${need[*]} (apt-get install ${need[*]})"
fi

# The mirror and suite of this machine's Debian apt sources (deb822 or one-line form):
# the first `deb` source that is not the security archive.
sources() {
  local f
  for f in /etc/apt/sources.list.d/*.sources; do
    [[ -f "$f" ]] && awk 'BEGIN { RS = ""; FS = "\n" }
      { t = u = s = ""
        for (i = 1; i <= NF; i++) {
          if ($i ~ /^Types:/) t = $i
          if ($i ~ /^URIs:/) { u = $i; sub(/^URIs:[ \t]*/, "", u); sub(/[ \t].*/, "", u) }
          if ($i ~ /^Suites:/) { s = $i; sub(/^Suites:[ \t]*/, "", s); sub(/[ \t].*/, "", s) }
        }
        if (t ~ /[ \t]deb([ \t]|$)/ && u ~ /debian/ && u !~ /security/ && s != "") print u, s }' "$f"
  done
  for f in /etc/apt/sources.list /etc/apt/sources.list.d/*.list; do
    [[ -f "$f" ]] && awk '$1 == "deb" { i = 2; if ($2 ~ /^\[/) while ($i !~ /\]$/) i++; if ($2 ~ /^\[/) i++
      if ($i ~ /debian/ && $i !~ /security/) print $i, $(i + 1) }' "$f"
  done
}
read -r found_mirror found_suite < <(sources; echo) || true
mirror="${CDS_ROTATOR_DEBIAN_MIRROR:-$found_mirror}"
suite="${CDS_ROTATOR_DEBIAN_SUITE:-$found_suite}"
[[ -n "$mirror" && -n "$suite" ]] \
  || fail "no Debian mirror in /etc/apt/sources.list*: set CDS_ROTATOR_DEBIAN_MIRROR and CDS_ROTATOR_DEBIAN_SUITE"

# systemd as init (systemd-sysv), dbus for systemctl's bus calls; the binary needs only
# libc and libgcc (minbase has them); bash's /dev/tcp stands in for an HTTP client.
packages="systemd,systemd-sysv,dbus"
cache="${CDS_ROTATOR_CACHE:-${HOME:-/tmp}/.cache/cds-rotator}/nspawn"
key="$(printf '%s\n' "$suite" "$mirror" minbase "$packages" | sha256sum | cut -c1-16)"
tree="$cache/tree-$key"
mkdir -p "$cache"
# Copies left by a run that was itself killed.
find "$cache" -maxdepth 1 -name 'run.*' -mmin +120 -exec rm -rf {} +
if [[ ! -x "$tree/lib/systemd/systemd" ]]; then
  say "building a $suite tree from $mirror ($packages) into $tree"
  tmp="$tree.tmp.$$"
  rm -rf "$tmp"
  mmdebstrap --quiet --variant=minbase --include="$packages" "$suite" "$tmp" "$mirror" >&2 \
    || { rm -rf "$tmp"; fail "mmdebstrap $suite from $mirror"; }
  # A run beside this one may have finished the same tree first: keep that one.
  mv -T "$tmp" "$tree" 2>/dev/null || rm -rf "$tmp"
  # Finished trees of other keys are not needed any more.
  find "$cache" -maxdepth 1 -name 'tree-????????????????' ! -name "tree-$key" -exec rm -rf {} +
fi

run="$(mktemp -d "$cache/run.XXXXXX")"
root="$run/root"
cgroups=()
nspawn_pid=""
cleanup() {
  if [[ -n "$nspawn_pid" ]] && kill -0 "$nspawn_pid" 2>/dev/null; then
    kill -TERM "$nspawn_pid" 2>/dev/null || true
    for _ in $(seq 1 60); do kill -0 "$nspawn_pid" 2>/dev/null || break; sleep 0.5; done
    kill -KILL "$nspawn_pid" 2>/dev/null || true
    wait "$nspawn_pid" 2>/dev/null || true
  fi
  local cg
  for cg in "${cgroups[@]}"; do
    [[ -d "$cg" ]] && find "$cg" -depth -type d -exec rmdir {} + 2>/dev/null || true
  done
  rm -rf "$run"
}
trap cleanup EXIT
cp -a --reflink=auto "$tree" "$root"

# Files the run needs, written into the tree before it boots (values in 0600 files only).
tenant=8c6f1f3e-1d2c-4b5a-9e8f-7a6b5c4d3e2f
admin=2b1f0e9d-8c7b-4a6f-9e5d-4c3b2a1f0e9d
app=5a4e3d2c-1b0a-4f9e-8d7c-6b5a4f3e2d1c
far=6b5a4f3e-2d1c-4a0b-9f8e-7d6c5b4a3f2e
ghost=0d0e0a0d-0b0e-4e0f-8a0c-0e0d0e0a0d00
umask 077
secret() { head -c 24 /dev/urandom | base64 | tr -d '/+='; }
admin_secret="$(secret)"
mkdir -p "$root/root/cds" "$root/etc/cds-rotator"
cat > "$root/root/cds/seed.yaml" <<EOF
tenant_id: $tenant
clients:
  - id: $admin
    name: rotator
    kind: client_credentials
    roles: [tenant_administrator]
    secrets:
      - value: "$admin_secret"
        description: made by hand
        expiration: 2099-01-01T00:00:00Z
  - id: $app
    name: app
    kind: client_credentials
    secrets:
      - value: "$(secret)"
        description: made by hand
        expiration: 2099-01-01T00:00:00Z
  - id: $far
    name: far
    kind: client_credentials
EOF
printf '%s' "$admin_secret" > "$root/etc/cds-rotator/admin.secret"
unset admin_secret
# The policy the run uses; $1: more clients (YAML lines), $2: more stores.
policy() {
  cat <<EOF
connect:
  url: http://127.0.0.1:8080
  tenant_id: $tenant
  credentials:
    client_id: $admin
    client_secret_credential: admin
lock_dir: /run/cds-rotator
daemon:
  audit_log: /var/lib/cds-rotator/audit.jsonl
stores:
  local: { type: file, dir: /var/lib/cds-rotator/secrets, mode: "0640", group: cds-rotator }
${2:-}
notifiers:
  ops: { type: log }
defaults:
  grace: 0s
  orphan_grace: 10m
  verify_timeout: 30s
clients:
  - name: app
    client_id: $app
    kind: client_credentials
    store: { name: local, secret: app }
    notify: [ops]
${1:-}
EOF
}
umask 022

# Its own cgroup subtree: a child of this shell's cgroup in each hierarchy that names
# one (the unified one at /sys/fs/cgroup or /sys/fs/cgroup/unified, and the v1 name=systemd
# one of a hybrid host), so that nspawn's payload/supervisor cgroups are made there.
own_cgroups() {
  local line path mount
  while IFS= read -r line; do
    path="${line#*:}"; path="${path#*:}"
    case "$line" in
      0::*) if [[ -f /sys/fs/cgroup/cgroup.controllers ]]; then mount=/sys/fs/cgroup
            elif [[ -f /sys/fs/cgroup/unified/cgroup.controllers ]]; then mount=/sys/fs/cgroup/unified
            else continue; fi ;;
      *:name=systemd:*) mount=/sys/fs/cgroup/systemd ;;
      *) continue ;;
    esac
    [[ -d "$mount$path" ]] || continue
    echo "$mount${path%/}/cds-rotator-check.$$"
  done < /proc/self/cgroup
}
mapfile -t cgroups < <(own_cgroups)
for cg in "${cgroups[@]}"; do mkdir -p "$cg" || fail "cannot make the cgroup $cg"; done
say "booting $suite under systemd-nspawn (cgroups: ${cgroups[*]:-none})"
(
  for cg in "${cgroups[@]}"; do echo "$BASHPID" > "$cg/cgroup.procs"; done
  exec systemd-nspawn --quiet --directory="$root" --boot --register=no --keep-unit \
    --private-network --machine="cdsrot$$" --console=passive \
    --bind-ro="$PWD:/mnt/src" --bind-ro="$bin:/mnt/cds-rotator"
) > "$run/nspawn.log" 2>&1 &
nspawn_pid=$!

leader=""
for _ in $(seq 1 120); do
  leader="$(pgrep -P "$nspawn_pid" 2>/dev/null | head -1 || true)"
  [[ -n "$leader" && "$(cat "/proc/$leader/comm" 2>/dev/null)" == systemd ]] && break
  kill -0 "$nspawn_pid" 2>/dev/null || { cat "$run/nspawn.log" >&2; fail "systemd-nspawn exited"; }
  sleep 0.5
done
[[ -n "$leader" && "$(cat "/proc/$leader/comm" 2>/dev/null)" == systemd ]] \
  || { cat "$run/nspawn.log" >&2; leader=""; fail "no systemd in the container after 60 s"; }
# A command inside the container, with a clean environment.
inside() {
  nsenter --target="$leader" --all -- env -i \
    PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin SYSTEMD_PAGER= \
    SYSTEMD_COLORS=0 LANG=C.UTF-8 "$@"
}
# Until systemd listens on its private socket, systemctl cannot connect: ask again.
for _ in $(seq 1 120); do
  state="$(inside timeout 120 systemctl is-system-running --wait 2>&1 || true)"
  [[ "$state" == *"Failed to connect"* ]] || break
  sleep 0.5
done
case "$state" in
  running) say "booted: systemd is PID 1, system $state" ;;
  degraded) say "booted: systemd is PID 1, system degraded by units the checks do not use:"
    inside systemctl --failed --no-pager --plain --no-legend ;;
  *) inside systemctl --failed --no-pager >&2 || true; fail "the container's system is $state" ;;
esac

show() { inside systemctl show -P "$2" "$1"; }  # UNIT PROPERTY
journal() { inside journalctl --no-pager -o cat "$@"; }
# WHAT SECONDS COMMAND...: retries COMMAND every half second up to SECONDS.
until_ok() {
  local what="$1" n=$(($2 * 2)); shift 2
  for _ in $(seq 1 "$n"); do "$@" >/dev/null 2>&1 && return 0; sleep 0.5; done
  fail "$what"
}
http_get() { # PATH: the emulator's answer body
  inside bash -c 'exec 3<>/dev/tcp/127.0.0.1/8080 && printf "GET %s HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n" "$1" >&3 && sed "1,/^\r$/d" <&3' _ "$1"
}
fingerprint() { # STORE-FILE: the fingerprint its record names (16 hex digits of SHA-256)
  inside sed -n 's/.*"fingerprint": *"\([0-9a-f]\{16\}\)".*/\1/p' "$1.json"
}
in_cds() { # FINGERPRINT: whether the emulator holds a secret with that value
  http_get /_emulator/state | grep -q "\"value_sha256\": *\"$1"
}
# Conditions the checks wait for.
reloaded_with_ghost() { journal -u cds-rotator | grep 'policy reloaded' | grep -q ghost; }
ghost_warned() { journal -u cds-rotator -p warning | grep -q 'WARN.*ghost'; }
emulator_listens() { inside bash -c 'exec 3<>/dev/tcp/127.0.0.1/8080'; }
restarted() { [[ "$(show cds-rotator NRestarts)" -ge 1 && "$(show cds-rotator ActiveState)" == active ]]; }
oneshot_ran() {
  [[ "$(show cds-rotator-oneshot ExecMainExitTimestampMonotonic)" != 0 \
    && "$(show cds-rotator-oneshot ActiveState)" == inactive ]]
}

# Install as a user would, then again (an upgrade keeps what tmpfiles.d made).
inside bash /mnt/src/scripts/install.sh /mnt/cds-rotator >/dev/null || fail "scripts/install.sh"
inside systemd-sysusers >/dev/null
inside systemd-tmpfiles --create >/dev/null
inside bash /mnt/src/scripts/install.sh /mnt/cds-rotator >/dev/null || fail "scripts/install.sh, again"
[[ "$(inside stat -c '%a %U:%G' /etc/cds-rotator)" == "750 root:cds-rotator" ]] \
  || fail "/etc/cds-rotator is $(inside stat -c '%a %U:%G' /etc/cds-rotator) after a second install, not 750 root:cds-rotator"
inside systemctl daemon-reload
inside chown root:root /etc/cds-rotator/admin.secret
inside chmod 0600 /etc/cds-rotator/admin.secret
policy > "$root/etc/cds-rotator/policy.yaml"
inside chmod 0640 /etc/cds-rotator/policy.yaml
inside chgrp cds-rotator /etc/cds-rotator/policy.yaml
say "installed with scripts/install.sh (twice: /etc/cds-rotator stays 0750); user $(inside id -u cds-rotator):$(inside id -g cds-rotator)"

inside systemd-run --quiet --unit=cds-emulator -p Type=exec \
  /usr/local/bin/cds-rotator emulator --listen 127.0.0.1:8080 --seed /root/cds/seed.yaml
until_ok "the emulator does not listen on 127.0.0.1:8080" 30 emulator_listens

# Start: `systemctl start` returns once the daemon sent READY=1, after its first pass.
inside timeout 300 systemctl start cds-rotator || { journal -u cds-rotator >&2; fail "systemctl start cds-rotator"; }
[[ "$(show cds-rotator ActiveState)/$(show cds-rotator SubState)" == active/running ]] \
  || fail "cds-rotator is not active/running after start"
status_text="$(show cds-rotator StatusText)"
[[ "$status_text" == *next* ]] || fail "STATUS= is \"$status_text\", not the next client due"
say "start: READY after the first pass, status \"$status_text\""

store=/var/lib/cds-rotator/secrets/app
first="$(fingerprint "$store")"
[[ -n "$first" ]] || fail "the first pass wrote no record to $store.json"
in_cds "$first" || fail "the emulator holds no secret with the published value ($first)"
say "first pass: rotated app, published fingerprint $first"

# The store: 0640 cds-rotator, readable by a service in that group, not by others.
[[ "$(inside stat -c '%a %G' "$store")" == "640 cds-rotator" ]] \
  || fail "the store is $(inside stat -c '%a %U:%G' "$store"), not 0640 group cds-rotator"
consumer() { inside systemd-run --quiet --wait --pipe -p DynamicUser=yes "$@" cat "$store"; }
consumer -p SupplementaryGroups=cds-rotator >/dev/null 2>&1 \
  || fail "a service with SupplementaryGroups=cds-rotator cannot read $store"
consumer >/dev/null 2>&1 && fail "a service outside the group reads $store"
say "store: 0640 cds-rotator, read by a consumer in the group, refused to others"

# Reload: SIGHUP through ExecReload=; the new client fails its pass (a WARN, at priority
# warning in the journal) while the service keeps running.
policy "  - name: ghost
    client_id: $ghost
    kind: client_credentials
    store: { name: local, secret: ghost }" > "$root/etc/cds-rotator/policy.yaml"
inside systemctl reload cds-rotator || fail "systemctl reload cds-rotator"
until_ok "no 'policy reloaded' with the ghost client after systemctl reload" 60 reloaded_with_ghost
until_ok "no WARN at priority warning for the failing client" 120 ghost_warned
journal -u cds-rotator -p info | grep -Eq '^<[0-9]>|^[0-9]{4}-[0-9]{2}-[0-9]{2}T' \
  && fail "journal lines carry a priority prefix or a timestamp of their own"
[[ "$(show cds-rotator ActiveState)" == active ]] || fail "cds-rotator stopped after one client failed"
say "reload: policy reloaded; the failing client's WARN is at priority warning; still active"
policy > "$root/etc/cds-rotator/policy.yaml"
inside systemctl reload cds-rotator

# The watchdog: a hung daemon (SIGSTOP) is killed and restarted after WatchdogSec.
inside mkdir -p /etc/systemd/system/cds-rotator.service.d
printf '[Service]\nWatchdogSec=8s\nRestartSec=1s\nTimeoutAbortSec=2s\n' > "$root/etc/systemd/system/cds-rotator.service.d/watchdog.conf"
inside systemctl daemon-reload
inside timeout 300 systemctl restart cds-rotator || fail "systemctl restart cds-rotator with WatchdogSec=8s"
sleep 18 # more than twice WatchdogSec: the daemon pings at half of it
[[ "$(show cds-rotator ActiveState)" == active && "$(show cds-rotator NRestarts)" == 0 ]] \
  || fail "cds-rotator did not keep the watchdog fed"
inside bash -c 'kill -STOP "$1"' _ "$(show cds-rotator MainPID)" # no /bin/kill in the tree
until_ok "the watchdog did not restart a stopped daemon" 120 restarted
journal -u cds-rotator | grep -q -i watchdog || fail "the journal does not say the watchdog fired"
inside rm /etc/systemd/system/cds-rotator.service.d/watchdog.conf
inside systemctl daemon-reload
say "watchdog: fed while running; a stopped daemon is killed and restarted"

# Stop: a clean exit.
inside systemctl stop cds-rotator
[[ "$(show cds-rotator ActiveState)" == inactive && "$(show cds-rotator Result)" == success ]] \
  || fail "cds-rotator stop: $(show cds-rotator ActiveState) $(show cds-rotator Result)"
say "stop: inactive, result success"

# A policy error stops the service: exit 2, no restart (no auto-restart loop).
printf 'connect: { url: [\n' > "$root/etc/cds-rotator/policy.yaml"
inside systemctl reset-failed cds-rotator 2>/dev/null || true
inside timeout 60 systemctl start cds-rotator 2>/dev/null && fail "cds-rotator started with a broken policy"
# A failure that is retried shows at once as activating/auto-restart.
sub="$(show cds-rotator SubState)"; active="$(show cds-rotator ActiveState)"
[[ "$active" == failed && "$sub" == failed && "$(show cds-rotator NRestarts)" == 0 ]] \
  || fail "a policy error leaves cds-rotator $active/$sub after $(show cds-rotator NRestarts) restarts, not failed without restarts"
[[ "$(show cds-rotator ExecMainStatus)" == 2 ]] || fail "a policy error exits $(show cds-rotator ExecMainStatus), not 2"
say "policy error: exit 2, failed, not restarted"
inside systemctl reset-failed cds-rotator
policy > "$root/etc/cds-rotator/policy.yaml"

# The one-shot service, started by its timer (here due at once).
inside mkdir -p /etc/systemd/system/cds-rotator.timer.d
printf '[Timer]\nOnActiveSec=1s\nRandomizedDelaySec=0\n' > "$root/etc/systemd/system/cds-rotator.timer.d/now.conf"
inside systemctl daemon-reload
inside systemctl start cds-rotator.timer
until_ok "cds-rotator.timer did not run cds-rotator-oneshot.service" 120 oneshot_ran
[[ "$(show cds-rotator-oneshot Result)" == success ]] \
  || { journal -u cds-rotator-oneshot >&2; fail "cds-rotator-oneshot: $(show cds-rotator-oneshot Result)"; }
inside systemctl stop cds-rotator.timer
inside rm /etc/systemd/system/cds-rotator.timer.d/now.conf
say "timer: ran cds-rotator-oneshot.service, result success"

# A store outside the state directory: the tmpfiles.d line makes its directory (owned by
# the service), the ReadWritePaths= drop-in opens it.
grep -q '^#d /srv/app-secrets ' systemd/tmpfiles.d/cds-rotator.conf \
  || fail "systemd/tmpfiles.d/cds-rotator.conf has no commented example for /srv/app-secrets"
sed -n 's/^#\(d \/srv\/app-secrets .*\)/\1/p' systemd/tmpfiles.d/cds-rotator.conf \
  > "$root/etc/tmpfiles.d/cds-rotator-store.conf"
inside systemd-tmpfiles --create /etc/tmpfiles.d/cds-rotator-store.conf
inside mkdir -p /etc/systemd/system/cds-rotator-oneshot.service.d
printf '[Service]\nReadWritePaths=/srv/app-secrets\n' \
  > "$root/etc/systemd/system/cds-rotator-oneshot.service.d/store.conf"
policy "  - name: far
    client_id: $far
    kind: client_credentials
    store: { name: outside, secret: far }" "  outside: { type: file, dir: /srv/app-secrets }" \
  > "$root/etc/cds-rotator/policy.yaml"
inside systemctl daemon-reload
inside timeout 300 systemctl start cds-rotator-oneshot \
  || { journal -u cds-rotator-oneshot -n 30 >&2; fail "the one-shot with a store in /srv/app-secrets"; }
[[ -n "$(fingerprint /srv/app-secrets/far)" ]] || fail "no record in /srv/app-secrets/far.json"
say "store outside the state directory: tmpfiles.d line + ReadWritePaths= drop-in, published"
policy > "$root/etc/cds-rotator/policy.yaml"

# A whole cycle under SystemCallErrorNumber=kill: a call outside the filter kills the
# process (SIGSYS) instead of failing. The daemon starts (a pass), reloads and stops; the
# one-shot (forced) rotates twice: the second pass retires the first one's predecessor.
for unit in cds-rotator cds-rotator-oneshot; do
  inside mkdir -p "/etc/systemd/system/$unit.service.d"
  printf '[Service]\nSystemCallErrorNumber=kill\n' > "$root/etc/systemd/system/$unit.service.d/kill.conf"
done
printf '[Service]\nExecStart=\nExecStart=/usr/local/bin/cds-rotator --config /etc/cds-rotator/policy.yaml --run-now --force\n' \
  > "$root/etc/systemd/system/cds-rotator-oneshot.service.d/force.conf"
inside systemctl daemon-reload
# "kill" is no errno: systemd 252 shows it as 2147483646 (INT_MAX - 1), others otherwise.
for unit in cds-rotator cds-rotator-oneshot; do
  case "$(show "$unit" SystemCallErrorNumber)" in
    "" | 0 | kill | 2147483646) ;;
    *) fail "$unit: SystemCallErrorNumber=kill not in effect (shows \"$(show "$unit" SystemCallErrorNumber)\")" ;;
  esac
done
cursor="$(inside journalctl -q -n 0 --show-cursor | sed -n 's/^-- cursor: //p')"
before="$(fingerprint "$store")"
inside timeout 300 systemctl start cds-rotator || { journal -u cds-rotator -n 30 >&2; fail "start under SystemCallErrorNumber=kill"; }
inside systemctl reload cds-rotator
sleep 2
inside systemctl stop cds-rotator
[[ "$(show cds-rotator Result)" == success ]] || fail "the daemon under SystemCallErrorNumber=kill: $(show cds-rotator Result)"
for pass in 1 2; do
  inside timeout 300 systemctl start cds-rotator-oneshot \
    || { journal -u cds-rotator-oneshot -n 30 >&2; fail "forced pass $pass under SystemCallErrorNumber=kill"; }
  [[ "$(show cds-rotator-oneshot Result)" == success ]] || fail "pass $pass: $(show cds-rotator-oneshot Result)"
done
after="$(fingerprint "$store")"
[[ -n "$after" && "$after" != "$before" ]] || fail "the forced passes did not publish a new secret"
in_cds "$after" || fail "the emulator holds no secret with the published value ($after)"
in_cds "$before" && fail "the secret published before the forced passes ($before) was not retired"
journal --after-cursor="$cursor" | grep -E 'status=31/SYS|code=killed|code=dumped' \
  && fail "a process was killed by the system call filter"
say "SystemCallErrorNumber=kill: start, reload, stop, two forced passes (create .. retire), no kill"
say "all checks passed"
