#!/usr/bin/env bash
# Installs tierfs and mountctl (release builds) into PREFIX/bin (default
# /usr/local), and the mount helper link /sbin/mount.fuse.tierfs, so that
# `mount -t fuse.tierfs STORE MOUNTPOINT` and /etc/fstab lines work. Root only.
set -euo pipefail
cd "$(dirname "$0")/.."
prefix=${PREFIX:-/usr/local}
scripts/deps.sh
cargo build --release -q --workspace
install -m 0755 target/release/tierfs target/release/mountctl "$prefix/bin/"
ln -sf "$prefix/bin/tierfs" /sbin/mount.fuse.tierfs
echo "installed $prefix/bin/tierfs, $prefix/bin/mountctl and /sbin/mount.fuse.tierfs"
