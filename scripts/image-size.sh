#!/usr/bin/env bash
# Builds what deploy/Dockerfile puts in its image, without a container engine: the same
# static (musl) release binary plus the CA bundle, laid out as the image's one layer.
# Runs the binary from that layout alone (chroot: no libc, no /tmp, nothing else), with
# `--version` and a whole `demo` rotation, then prints the layer's size, uncompressed and
# gzipped (what a registry stores). Needs root (chroot), the Rust target
# x86_64-unknown-linux-musl and Debian's musl-tools; asserts nothing else.
#   scripts/image-size.sh
set -euo pipefail
cd "$(dirname "$0")/.."
target=x86_64-unknown-linux-musl
if ! rustup target list --installed 2>/dev/null | grep -qx "$target"; then
  echo "image-size: the Rust target $target is missing: rustup target add $target" >&2
  exit 1
fi
command -v musl-gcc > /dev/null || { echo "image-size: musl-gcc is missing: apt-get install musl-tools" >&2; exit 1; }
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-${HOME:-/tmp}/.cache/cds-rotator/target}"
cargo build --locked --release --quiet --target "$target"
work=$(mktemp -d); trap 'rm -rf "$work"' EXIT
root="$work/root"
install -D -m 0755 "$CARGO_TARGET_DIR/$target/release/cds-rotator" "$root/usr/bin/cds-rotator"
install -D -m 0644 /etc/ssl/certs/ca-certificates.crt "$root/etc/ssl/certs/ca-certificates.crt"
if file "$root/usr/bin/cds-rotator" | grep -q 'dynamically linked'; then
  echo "image-size: the binary is not static" >&2; exit 1
fi
chroot --userspec=65532:65532 "$root" /usr/bin/cds-rotator --version
# demo writes its files under --dir: a directory the image's user may write, as the
# manifests' emptyDir volumes are.
install -d -o 65532 -g 65532 -m 0700 "$root/demo"
chroot --userspec=65532:65532 "$root" /usr/bin/cds-rotator demo --dir /demo > "$work/demo.out"
grep -q . "$work/demo.out"
rm -rf "$root/demo"
tar --numeric-owner --owner=0 --group=0 --sort=name -C "$root" -cf "$work/layer.tar" .
gzip -9 -c "$work/layer.tar" > "$work/layer.tar.gz"
mib() { awk -v b="$(stat -c %s "$1")" 'BEGIN { printf "%.1f MiB", b / 1048576 }'; }
echo "binary: $(mib "$root/usr/bin/cds-rotator"), CA bundle: $(mib "$root/etc/ssl/certs/ca-certificates.crt")"
echo "image layer: $(mib "$work/layer.tar") uncompressed, $(mib "$work/layer.tar.gz") gzipped"
