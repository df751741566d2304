#!/usr/bin/env bash
# Runs every tierfs test: unit tests, and the mount tests that drive the real
# binary through FUSE (std::fs, cp -a, tar, rsync, getfattr/setfattr, kill -9).
# Installs missing system packages first (as root). Mount tests need root:
# they mount with mount(2) and check what other users may do.
#
# Environment: TIERFS_TEST_BIG_GIB (size of the huge-file test, default 4),
# TIERFS_MODEL_CASES (property-test cases, default 64).
set -euo pipefail
cd "$(dirname "$0")/.."

scripts/deps.sh
# Garage (the object-store tests' S3 server) is where cargo installs.
export PATH="$HOME/.cargo/bin:$PATH"
if [ "$(id -u)" -ne 0 ]; then
  echo "scripts/test.sh: the mount tests need root" >&2
  exit 2
fi

cargo fmt --all -- --check
cargo clippy --workspace --all-targets -q -- -D warnings
set +e
cargo test --workspace --no-fail-fast
status=$?
set -e

# Never leave a mount behind, whatever happened above.
stale=$(awk '$3 ~ /^fuse(\.tierfs)?$/ && $2 ~ /tierfs-(test|cli)-/ {print $2}' /proc/self/mounts)
for m in $stale; do
  echo "scripts/test.sh: clearing stale test mount $m" >&2
  umount -l "$m" || true
done
# Nor a Garage server of an object-store test.
pkill -f 'garage -c /tmp/garage-test-' 2>/dev/null && echo "scripts/test.sh: stopped a stray test Garage" >&2
true
exit "$status"
