#!/usr/bin/env bash
# Builds floed (and floe) for one device architecture:
#   cross/build.sh aarch64   # Raspberry Pi 4/5 on a 64-bit OS, Jetson
#   cross/build.sh armv7     # 32-bit Raspberry Pi OS
# The binaries land in target/<triple>/release/.
set -euo pipefail
case "${1:-}" in
  aarch64) triple=aarch64-unknown-linux-gnu ;;
  armv7) triple=armv7-unknown-linux-gnueabihf ;;
  *) echo "usage: cross/build.sh aarch64|armv7" >&2; exit 2 ;;
esac
cd "$(dirname "$0")/.."
# floed without the laptop demo (`demo` feature), as the Debian package ships it.
cargo build --release --target "$triple" -p floe-runtime --bin floed --no-default-features
cargo build --release --target "$triple" -p floe-coordinator --bin floe
echo "built target/$triple/release/floed and target/$triple/release/floe"
