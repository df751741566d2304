#!/usr/bin/env bash
# The main job, from a fresh machine: build tierfs, mount a demo store with a
# few sample memories, and show them (ls -l, getfattr, cat), across a remount.
#
#   scripts/demo.sh          # runs the tour, then unmounts
#   scripts/demo.sh --keep   # leaves the demo mounted at /tmp/tierfs-demo/mnt
set -euo pipefail
cd "$(dirname "$0")/.."
keep=false
[ "${1:-}" = "--keep" ] && keep=true

scripts/deps.sh
cargo build --release -q --workspace
tierfs=$PWD/target/release/tierfs
mountctl=$PWD/target/release/mountctl

demo=${TIERFS_DEMO_DIR:-/tmp/tierfs-demo}
store=$demo/store
mnt=$demo/mnt
mkdir -p "$mnt"
if grep -q " $mnt " /proc/self/mounts; then fusermount3 -u "$mnt" || umount -l "$mnt"; fi

run() { printf '\n$ %s\n' "$*"; eval "$@"; }

run "$tierfs mount $store $mnt"
cd "$mnt"
run "mkdir -p notes facts embeddings"
run "echo 'Standup: the migrator design review is on Thursday.' > notes/2026-11-22-standup.md"
run "printf '{\"user\": \"ada\", \"prefers\": \"short answers\", \"timezone\": \"Europe/London\"}\n' > facts/user.json"
run "head -c 1536 /dev/urandom > embeddings/standup.f32"
run "setfattr -n user.source -v meeting-notes notes/2026-11-22-standup.md"
run "setfattr -n user.model -v all-minilm-l6-v2 embeddings/standup.f32"
run "ln -s ../notes/2026-11-22-standup.md facts/latest-standup"
run "ls -lR ."
run "getfattr -R -d ."
run "setfattr -n user.tier -v cold facts/user.json"
run "setfattr -n user.tier.pin -v hot notes"
run "echo 'Decision: ship the migrator on Monday.' > notes/2026-11-22-decision.md"
run "$mountctl ls -r ."
run "$mountctl explain facts/user.json"
run "$mountctl status"
run "stat -c '%n: inode %i, %s bytes' notes/2026-11-22-standup.md"
cd /
run "$mountctl unmount $mnt"
run "$tierfs fsck $store"
run "$tierfs mount $store $mnt"
run "cat $mnt/facts/latest-standup"
run "getfattr -n user.tier --only-values $mnt/facts/user.json; echo"
run "stat -c '%n: inode %i, %s bytes' $mnt/notes/2026-11-22-standup.md"
if $keep; then
  echo
  echo "tierfs is mounted at $mnt (store: $store, log: $store/tierfs.log)."
  echo "Unmount with: fusermount3 -u $mnt"
else
  run "$mountctl unmount $mnt"
fi
