#!/usr/bin/env bash
# The long versions of the reliability tests that CI runs in short form:
#
#   scripts/soak.sh [CRASH_ROUNDS] [LOAD_SECS]
#
# CRASH_ROUNDS kill -9 rounds (default 500; CI runs 50) and LOAD_SECS seconds
# of the eight-worker load (default 1800; CI runs 40), then fio and stress-ng.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/deps.sh
export TIERFS_CRASH_ROUNDS=${1:-500}
export TIERFS_LOAD_SECS=${2:-1800}
echo "soak: $TIERFS_CRASH_ROUNDS crash rounds, ${TIERFS_LOAD_SECS}s of load" >&2
cargo test --test durability fsynced_data_survives_kill9 -- --nocapture
cargo test --test load -- --nocapture --test-threads 1
