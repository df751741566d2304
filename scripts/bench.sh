#!/usr/bin/env bash
# Benchmarks, with their baselines in the same run.
#
#   scripts/bench.sh [N_FILES] [FILE_SIZE] [ROUNDS] [BIG_MIB]
#       tierfs next to a minimal in-RAM fuser filesystem (the ceiling),
#       mergerfs over tmpfs, tmpfs and a plain directory on the disk: small
#       files (create, read with 1 and 2 threads, stat, list), a big file
#       (write, read, 4 KiB random reads), tierfs's warm and cold tiers,
#       daemon CPU and peak RSS; interleaved rounds, medians, ratios.
#       Defaults: 10000 4096 3 1024.
#   scripts/bench.sh micro
#       criterion microbenchmarks of the hot-path pieces (benches/micro.rs).
#   scripts/bench.sh scale [N_FILES] [DIRS]
#       N files of 1 KiB in DIRS directories (default 1,000,000 in 1,000):
#       create, find | wc -l, a full migration cycle, mount time, RSS/file,
#       fsck of the unmounted store (time, peak RSS).
#   scripts/bench.sh latency
#       p50/p99/max latency of stat + readdir of an unrelated file while a
#       1 GiB file moves warm→cold and back, and of a 4 KiB read + 4 KiB
#       write + stat of other files while 1 GiB is written and written back
#       (`dd … conv=fsync`), next to the same operations with nothing else
#       running (python3 times them).
#   scripts/bench.sh tiers [N_FILES]
#       N text memories of 4 KiB: migration passes warm→hot, hot→warm,
#       warm→cold (one cycle each), reads while warm and while cold next to
#       the same files on tmpfs, and cold bytes next to `tar c | zstd -3`.
set -euo pipefail
cd "$(dirname "$0")/.."

if [ "${1:-}" = latency ]; then
  scripts/deps.sh
  cargo build --release -q --bin tierfs
  work=$PWD/target/bench-latency
  rm -rf "$work" && mkdir -p "$work/mnt"
  target/release/tierfs mount "$work/store" "$work/mnt"
  trap 'fusermount3 -u "$work/mnt" 2>/dev/null || true' EXIT
  head -c 1073741824 /dev/urandom > "$work/mnt/big"
  echo small > "$work/mnt/other"
  MNT="$work/mnt" python3 - <<'PY'
import os, subprocess, threading, time
mnt = os.environ["MNT"]
def sample(stop, out):
    while not stop.is_set():
        t = time.perf_counter(); os.stat(mnt + "/other"); os.listdir(mnt)
        out.append(time.perf_counter() - t); time.sleep(0.001)
for label, tier in [("1 GiB warm->cold", "cold"), ("1 GiB cold->warm", "warm")]:
    stop, out = threading.Event(), []
    th = threading.Thread(target=sample, args=(stop, out)); th.start()
    t = time.perf_counter()
    subprocess.run(["setfattr", "-n", "user.tier", "-v", tier, mnt + "/big"], check=True)
    took = time.perf_counter() - t
    stop.set(); th.join(); out.sort()
    q = lambda f: out[min(len(out) - 1, int(f * len(out)))] * 1000
    print(f"{label}: move {took:.2f}s; stat+readdir of another file: n={len(out)} "
          f"p50 {q(0.5):.2f} ms, p99 {q(0.99):.2f} ms, max {out[-1]*1000:.2f} ms")

# 4 KiB read + 4 KiB write + stat of other files while 1 GiB is written back.
with open(mnt + "/rw", "wb") as f:
    f.write(os.urandom(1 << 20)); f.flush(); os.fsync(f.fileno())
def rw(stop, out):
    fd = os.open(mnt + "/rw", os.O_RDWR)
    block, i = os.urandom(4096), 0
    while not stop.is_set():
        t = time.perf_counter()
        os.pread(fd, 4096, (i * 8192) % (1 << 20))
        os.pwrite(fd, block, (i * 4096) % (1 << 20))
        os.stat(mnt + "/other")
        out.append(time.perf_counter() - t); i += 1; time.sleep(0.001)
    os.close(fd)
def measure(label, background):
    stop, out = threading.Event(), []
    th = threading.Thread(target=rw, args=(stop, out)); th.start()
    t = time.perf_counter()
    if background:
        subprocess.run(background, check=True, stderr=subprocess.DEVNULL)
    else:
        time.sleep(5)
    took = time.perf_counter() - t
    stop.set(); th.join(); out.sort()
    q = lambda f: out[min(len(out) - 1, int(f * len(out)))] * 1000
    print(f"{label} ({took:.1f}s): 4 KiB read + write + stat of another file: n={len(out)} "
          f"p50 {q(0.5):.2f} ms, p99 {q(0.99):.2f} ms, max {out[-1]*1000:.2f} ms")
measure("idle (baseline)", None)
measure("1 GiB written back", ["dd", "if=/dev/zero", "of=" + mnt + "/wb",
                               "bs=1M", "count=1024", "conv=fsync"])
PY
  exit 0
fi

if [ "${1:-}" = micro ]; then
  exec cargo bench --bench micro
fi

if [ "${1:-}" = scale ]; then
  n=${2:-1000000}
  dirs=${3:-1000}
  scripts/deps.sh
  cargo build --release -q --bin tierfs --example fsbench
  work=$PWD/target/bench-scale
  rm -rf "$work" && mkdir -p "$work/mnt"
  trap 'fusermount3 -u "$work/mnt" 2>/dev/null || true' EXIT
  t() { local s=$(date +%s.%N); "$@" >/dev/null; echo "$(date +%s.%N) - $s" | bc; }
  target/release/tierfs mount "$work/store" "$work/mnt"
  pid=$(cat "$work/store/tierfs.lock")
  policy=$work/store/policy.toml
  sed -i 's/^interval = "30s"/interval = "1h"/; s/^rate = "64MiB"/rate = "100GiB"/' "$policy"
  create=$(target/release/examples/fsbench many "$work/mnt" "$n" "$dirs" 1024)
  find_s=$(t sh -c "find '$work/mnt' | wc -l")
  rss_kib=$(awk '/VmRSS/ {print $2}' /proc/$pid/status)
  # A full cycle that moves every file: warm idle down to 0 s (a live edit).
  sed -i 's/^idle = "1day"/idle = "1s"/' "$policy"
  sleep 2
  cycle_s=$(t setfattr -n user.tier.migrate -v 1 "$work/mnt")
  cold=$(getfattr --only-values -n user.tier.stats "$work/mnt" 2>/dev/null |
    python3 -c 'import json, sys; print(json.load(sys.stdin)["tiers"]["cold"]["files"])')
  fusermount3 -u "$work/mnt"
  while kill -0 "$pid" 2>/dev/null; do sleep 0.1; done
  mount_s=$(t target/release/tierfs mount "$work/store" "$work/mnt")
  pid=$(cat "$work/store/tierfs.lock")
  rss_mounted_kib=$(awk '/VmRSS/ {print $2}' /proc/$pid/status)
  find_cold_s=$(t sh -c "find '$work/mnt' | wc -l")
  rss2_kib=$(awk '/VmRSS/ {print $2}' /proc/$pid/status)
  # A read-only fsck of the unmounted store: its time and peak RSS.
  fusermount3 -u "$work/mnt"
  while kill -0 "$pid" 2>/dev/null; do sleep 0.1; done
  read -r fsck_s fsck_kib fsck_rc < <(python3 - target/release/tierfs fsck "$work/store" <<'PY'
import resource, subprocess, sys, time
t = time.monotonic()
rc = subprocess.run(sys.argv[1:], stdout=subprocess.DEVNULL).returncode
print(f"{time.monotonic() - t:.1f}", resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss, rc)
PY
)
  printf '%d files of 1 KiB in %d directories, %s cores, kernel %s\n' "$n" "$dirs" "$(nproc)" "$(uname -r)"
  echo "create (2 threads):          ${create#create } files/s"
  echo "find | wc -l:                ${find_s} s"
  echo "full migration cycle:        ${cycle_s} s (warm→cold; $cold files now cold)"
  echo "mount of that store:         ${mount_s} s"
  echo "find | wc -l after remount:  ${find_cold_s} s"
  awk -v r="$rss_kib" -v r2="$rss2_kib" -v rm="$rss_mounted_kib" -v n="$n" 'BEGIN {
    printf "daemon RSS after find:       %.0f MiB = %.0f B per file\n", r/1024, r*1024/n
    printf "  beyond sled'"'"'s 64 MiB cache: %.0f B per file\n", (r*1024 - 64*1048576)/n
    printf "after remount, before find:  %.0f MiB = %.0f B per file\n", rm/1024, rm*1024/n
    printf "after remount + find:        %.0f MiB = %.0f B per file (%.0f B beyond the cache)\n", r2/1024, r2*1024/n, (r2*1024 - 64*1048576)/n }'
  echo "fsck:                        ${fsck_s} s, peak RSS $((fsck_kib / 1024)) MiB (exit ${fsck_rc})"
  exit 0
fi

if [ "${1:-}" = tiers ]; then
  n=${2:-100000}
  scripts/deps.sh
  command -v zstd >/dev/null || { apt-get install -y -qq zstd >/dev/null; }
  cargo build --release -q --bin tierfs --example tierbench
  work=$PWD/target/bench-tiers
  rm -rf "$work"
  mkdir -p "$work/mnt" "$work/tmpfs"
  mount -t tmpfs -o size=4G tmpfs "$work/tmpfs"
  trap 'fusermount3 -u "$work/mnt" 2>/dev/null || true; umount "$work/tmpfs" 2>/dev/null || true' EXIT
  # Only the cycles the benchmark asks for, promotion on the first access, no
  # rate limit in the way, room for every file in RAM; tierbench changes the
  # idle times to 1 s (a live edit) before the demotion passes.
  cat > "$work/policy.toml" <<'TOML'
[hot]
budget = "2GiB"
high_watermark = 0.9
low_watermark = 0.7
idle = "1h"
[warm]
budget = "64GiB"
high_watermark = 0.9
low_watermark = 0.7
idle = "1h"
[promote]
cold_to = "warm"
warm_to = "hot"
after = 1
window = "10m"
[migration]
rate = "100GiB"
interval = "1h"
[cold]
zstd_level = 3
dictionaries = true
[writeback]
interval = "5s"
TOML
  target/release/tierfs mount "$work/store" "$work/mnt" --policy "$work/policy.toml"
  out=$(target/release/examples/tierbench "$work/mnt" "$n" "$work/tmpfs/copy" "$work/policy.toml")
  stats=$(getfattr --only-values -n user.tier.stats "$work/mnt")
  cold_stored=$(echo "$stats" | grep -o '"cold":{[^}]*}' | grep -o '"stored":[0-9]*' | cut -d: -f2)
  solid=$(tar c -C "$work/tmpfs/copy" . | zstd -3 -q -c | wc -c)
  raw=$(du -sb --apparent-size "$work/tmpfs/copy" | cut -f1)
  get() { echo "$out" | awk -v k="$1" '$1 == k {print $2}'; }
  printf '%d memories of 4 KiB, %s cores, kernel %s\n' "$n" "$(nproc)" "$(uname -r)"
  printf 'migration pass warm→hot   %8s s\n' "$(get pass_warm_to_hot_s)"
  printf 'migration pass hot→warm   %8s s\n' "$(get pass_hot_to_warm_s)"
  printf 'migration pass warm→cold  %8s s\n' "$(get pass_warm_to_cold_s)"
  printf 'read, warm      %10s files/s\n' "$(get read_warm_files_per_s)"
  printf 'read, cold      %10s files/s\n' "$(get read_cold_files_per_s)"
  printf 'read, tmpfs     %10s files/s\n' "$(get read_copy_files_per_s)"
  awk -v w="$(get read_warm_files_per_s)" -v c="$(get read_cold_files_per_s)" -v t="$(get read_copy_files_per_s)" \
    'BEGIN { printf "warm/tmpfs %.2f   cold/tmpfs %.2f\n", w/t, c/t }'
  printf 'bytes: raw %d, tierfs cold (per-chunk zstd -3 with trained dictionaries, record headers included) %d, tar|zstd -3 %d\n' \
    "$raw" "$cold_stored" "$solid"
  awk -v c="$cold_stored" -v s="$solid" 'BEGIN { printf "tierfs cold / solid tar|zstd: %.2f\n", c/s }'
  exit 0
fi

# Default: the side-by-side table (scripts/bench.py does the work).
scripts/deps.sh
need=()
command -v mergerfs >/dev/null || need+=(mergerfs)
command -v zstd >/dev/null || need+=(zstd)
command -v python3 >/dev/null || need+=(python3)
if [ ${#need[@]} -gt 0 ]; then
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need[@]}" >/dev/null
fi
cargo build --release -q --bin tierfs --example fsbench --example ceiling
cargo build --release -q -p mountctl
exec python3 scripts/bench.py "$@"
