#!/usr/bin/env bash
# Small-file benchmark, side by side in one run: tierfs, tmpfs and a plain
# directory on the disk. ROUNDS rounds, interleaved; prints medians and the
# ratio tierfs/baseline. Reads come after a remount of tierfs / a drop of the
# page cache, so they are served by the daemon, not the kernel cache.
#
#   scripts/bench.sh [N_FILES] [FILE_SIZE] [ROUNDS]
set -euo pipefail
cd "$(dirname "$0")/.."
n=${1:-10000}
size=${2:-4096}
rounds=${3:-5}

scripts/deps.sh
cargo build --release -q --bin tierfs --example smallfiles
tierfs=$PWD/target/release/tierfs
work=$PWD/target/bench
bin=$PWD/target/release/examples/smallfiles
rm -rf "$work"
mkdir -p "$work/tmpfs" "$work/disk" "$work/mnt"
mount -t tmpfs -o size=2G tmpfs "$work/tmpfs"
cleanup() {
  fusermount3 -u "$work/mnt" 2>/dev/null || true
  umount "$work/tmpfs" 2>/dev/null || true
}
trap cleanup EXIT

declare -A create read
for r in $(seq "$rounds"); do
  for target in tierfs tmpfs disk; do
    case $target in
      tierfs)
        rm -rf "$work/store"
        "$tierfs" mount "$work/store" "$work/mnt"
        out=$("$bin" "$work/mnt" "$n" "$size")
        fusermount3 -u "$work/mnt" ;;
      tmpfs) out=$("$bin" "$work/tmpfs" "$n" "$size") ;;
      disk) sync; out=$("$bin" "$work/disk" "$n" "$size") ;;
    esac
    create[$target]+="${out% *} "
    read[$target]+="${out#* } "
  done
done

median() { tr ' ' '\n' | grep -v '^$' | sort -n | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}'; }
printf '%d files of %d bytes, %d rounds, %s cores, kernel %s\n' "$n" "$size" "$rounds" "$(nproc)" "$(uname -r)"
printf '%-8s %14s %14s\n' target create/s read/s
for t in tierfs tmpfs disk; do
  c=$(echo "${create[$t]}" | median); rd=$(echo "${read[$t]}" | median)
  eval "c_$t=$c; r_$t=$rd"
  printf '%-8s %14s %14s\n' "$t" "$c" "$rd"
done
awk -v ct="$c_tierfs" -v rt="$r_tierfs" -v cm="$c_tmpfs" -v rm="$r_tmpfs" -v cd="$c_disk" -v rd="$r_disk" 'BEGIN {
  printf "tierfs/tmpfs  create %.2f  read %.2f\n", ct/cm, rt/rm
  printf "tierfs/disk   create %.2f  read %.2f\n", ct/cd, rt/rd }'
