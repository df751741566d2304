#!/usr/bin/env bash
# Installs the system packages tierfs and its tests use, when they are missing:
# fuse3 (fusermount3), attr (getfattr/setfattr), rsync, and for the load
# tests fio and stress-ng, vim for an editor's save. Needs root for apt-get. And Garage, the S3 store
# the object-store tests run against: `cargo install garage --locked`, a
# long build (about 15 minutes on 2 cores), once per machine.
set -euo pipefail

need=()
command -v fusermount3 >/dev/null 2>&1 || need+=(fuse3)
command -v getfattr >/dev/null 2>&1 || need+=(attr)
command -v rsync >/dev/null 2>&1 || need+=(rsync)
command -v tar >/dev/null 2>&1 || need+=(tar)
command -v fio >/dev/null 2>&1 || need+=(fio)
command -v stress-ng >/dev/null 2>&1 || need+=(stress-ng)
# An editor's save, as users run it (the trash tests).
command -v vim >/dev/null 2>&1 || command -v vim.tiny >/dev/null 2>&1 || need+=(vim-tiny)

if [ ${#need[@]} -gt 0 ]; then
  if [ "$(id -u)" -ne 0 ]; then
    echo "missing system packages: ${need[*]}; install them as root (apt-get install ${need[*]})" >&2
    exit 2
  fi
  echo "installing ${need[*]} ..." >&2
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need[@]}" >/dev/null
fi

if [ ! -e /dev/fuse ]; then
  modprobe fuse 2>/dev/null || true
fi
if [ ! -e /dev/fuse ]; then
  echo "/dev/fuse is missing: this machine cannot mount FUSE filesystems" >&2
  exit 2
fi
if ! command -v cargo >/dev/null 2>&1; then
  echo "cargo is missing: install a Rust toolchain (rustup)" >&2
  exit 2
fi
export PATH="$HOME/.cargo/bin:$PATH"
for tool in curl python3; do
  command -v "$tool" >/dev/null 2>&1 || need_more+=("$tool")
done
if [ -n "${need_more[*]:-}" ]; then
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need_more[@]}" >/dev/null
fi
if ! command -v garage >/dev/null 2>&1; then
  echo "installing garage (cargo install garage --locked: a long build, once per machine) ..." >&2
  cargo install garage --locked --quiet
fi
