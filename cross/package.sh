#!/usr/bin/env bash
# Packs a field-install tarball for one architecture: the binaries, the systemd units and the
# sysusers/tmpfiles snippets, laid out relative to / so that `tar -xzf … -C /` installs them.
#   cross/package.sh aarch64|armv7   ->  target/floe-<version>-<arch>.tar.gz
set -euo pipefail
arch="${1:-}"
case "$arch" in
  aarch64) triple=aarch64-unknown-linux-gnu ;;
  armv7) triple=armv7-unknown-linux-gnueabihf ;;
  *) echo "usage: cross/package.sh aarch64|armv7" >&2; exit 2 ;;
esac
cd "$(dirname "$0")/.."
cross/build.sh "$arch"
version=$(sed -n 's/^version = "\(.*\)"/\1/p' Cargo.toml | head -n1)
stage=$(mktemp -d)
trap 'rm -rf "$stage"' EXIT
install -Dm755 "target/$triple/release/floed" "$stage/usr/bin/floed"
install -Dm755 "target/$triple/release/floe" "$stage/usr/bin/floe"
for unit in systemd/*.service; do
  [ -e "$unit" ] && install -Dm644 "$unit" "$stage/usr/lib/systemd/system/$(basename "$unit")"
done
[ -e systemd/floe.sysusers ] && install -Dm644 systemd/floe.sysusers "$stage/usr/lib/sysusers.d/floe.conf"
[ -e systemd/floe.tmpfiles ] && install -Dm644 systemd/floe.tmpfiles "$stage/usr/lib/tmpfiles.d/floe.conf"
install -Dm644 examples/temperature-alert.json "$stage/usr/share/floe/examples/temperature-alert.json"
out="target/floe-$version-$arch.tar.gz"
tar -czf "$out" -C "$stage" .
echo "$out"
