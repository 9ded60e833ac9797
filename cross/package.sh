#!/usr/bin/env bash
# Builds the Debian packages for one architecture with cargo-deb, from the real release profile
# (fat LTO, opt-level "s"), stripped (`--strip`: the profile keeps line tables for backtraces,
# and without it cargo-deb shipped a 70 MB unstripped floed for arm64 instead of 11.9 MB):
#   cross/package.sh arm64    # floed and floe for Raspberry Pi 4/5 (64-bit OS), Jetson
#   cross/package.sh armhf    # floed for 32-bit Raspberry Pi OS (ARMv7)
#   cross/package.sh amd64    # floed and floe for x86-64 gateways and servers
# The .deb files land in <target dir>/debian/ and their paths are printed. Install one with
# `apt install ./floed_<version>-1_<arch>.deb`. Needs cargo-deb (`cargo install cargo-deb
# --locked`) and, for arm64/armhf, cross/setup.sh.
set -euo pipefail
case "${1:-}" in
  arm64 | aarch64) triple=aarch64-unknown-linux-gnu; coordinator=yes ;;
  armhf | armv7) triple=armv7-unknown-linux-gnueabihf; coordinator=no ;;
  amd64 | x86_64) triple=x86_64-unknown-linux-gnu; coordinator=yes ;;
  *) echo "usage: cross/package.sh arm64|armhf|amd64" >&2; exit 2 ;;
esac
cd "$(dirname "$0")/.."
command -v cargo-deb >/dev/null || {
  echo "cargo-deb is missing: cargo install cargo-deb --locked" >&2
  exit 1
}
out="${CARGO_TARGET_DIR:-target}/debian"
mkdir -p "$out"
cargo deb --locked --strip -p floe-runtime --target "$triple" --output "$out"
if [ "$coordinator" = yes ]; then
  cargo deb --locked --strip -p floe-coordinator --target "$triple" --output "$out"
fi
ls -l "$out"/*.deb
