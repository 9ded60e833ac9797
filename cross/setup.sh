#!/usr/bin/env bash
# Installs what the cross builds need: Debian's cross compilers and C libraries, qemu-user for
# running the result, and the Rust standard library for both targets. Safe to run again.
set -euo pipefail
pkgs=()
command -v aarch64-linux-gnu-gcc >/dev/null || pkgs+=(gcc-aarch64-linux-gnu libc6-dev-arm64-cross)
command -v arm-linux-gnueabihf-gcc >/dev/null || pkgs+=(gcc-arm-linux-gnueabihf libc6-dev-armhf-cross)
command -v qemu-aarch64 >/dev/null || pkgs+=(qemu-user)
if [ ${#pkgs[@]} -gt 0 ]; then
  sudo_cmd=""
  [ "$(id -u)" -eq 0 ] || sudo_cmd="sudo"
  $sudo_cmd apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo_cmd apt-get install -y -qq "${pkgs[@]}"
fi
rustup target add aarch64-unknown-linux-gnu armv7-unknown-linux-gnueabihf
