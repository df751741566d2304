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
#       create and random-read rates, a migration cycle with nothing to move
#       and one that demotes 10,000 idle files (next to the same cycle in a
#       store of those 10,000 alone), unmount time of the busy session, mount time after it and
#       after kill -9, daemon RSS per file beyond an empty store's, and a
#       read-only fsck of the unmounted store (time, peak RSS).
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
#   scripts/bench.sh trash [N_FILES] [ROUNDS] [KEPT]
#       two stores alike but for [trash] keep (7d and 0): create, overwrite
#       (O_TRUNC) and unlink of N files of 1 KiB (default 20,000), rounds
#       interleaved, medians and the on/off ratio, and each daemon's CPU per
#       file (user + system, /proc/PID/stat); the same overwrite in process
#       (examples/trashcost.rs: no kernel, no FUSE); then the daemon's RSS
#       after a remount of a store whose trash keeps KEPT files (default
#       1,000,000) next to one whose trash is empty.
#   scripts/bench.sh s3 [N_FILES] [BIG_MIB]
#       the same memories (default 20,000) and a big file (default 1 GiB)
#       with cold packs local and in a 1-node Garage (scripts/garage.sh):
#       the warm→cold pass, cold reads, PUTs per compressed MiB, the first
#       4 KiB and sequential reads of the big file uncached (after a remount
#       with the page cache dropped) and from the frame cache.
set -euo pipefail
cd "$(dirname "$0")/.."

# The policy of the `tiers` and `s3` runs: only the cycles the benchmark
# asks for, promotion on the first access, no rate limit in the way, room
# for every file in RAM ([cold] last, for `s3` to add its store to it).
bench_policy() {
  cat <<'TOML'
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
[writeback]
interval = "5s"
[cold]
zstd_level = 3
dictionaries = true
TOML
}

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
  old=10000 # files created a minute before the rest: the idle ones of the demotion cycle
  scripts/deps.sh
  cargo build --release -q --bin tierfs --example fsbench
  work=$PWD/target/bench-scale
  mnt=$work/mnt
  rm -rf "$work" && mkdir -p "$mnt"
  trap 'fusermount3 -u "$mnt" 2>/dev/null || true' EXIT
  t() { local s=$(date +%s.%N); "$@" >/dev/null; echo "$(date +%s.%N) - $s" | bc; }
  rss() { awk '/VmRSS/ {print $2}' "/proc/$1/status"; }
  gone() { while kill -0 "$1" 2>/dev/null; do sleep 0.1; done; }
  # Each figure on stderr as it is measured (a long run keeps what it got).
  got() { echo "$(date +%T) $*" >&2; }
  # Cycles only when asked, no rate limit, new files warm (the demotion
  # cycles measure warm files going cold) and no promotion of them, a
  # promotion window of a minute (the access records of files not accessed
  # within it are folded into their inodes by the next cycle).
  quiet() {
    sed -i 's/^interval = "30s"/interval = "1h"/; s/^rate = "64MiB"/rate = "100GiB"/;
            s/^warm_to = "hot"/warm_to = "none"/; s/^window = "10m"/window = "1m"/;
            /^\[new\]/,/^\[/ s/^tier = "hot"/tier = "warm"/' "$1"
    sleep 1 # the mounted daemon reloads it
  }
  umnt() { until fusermount3 -u "$mnt" 2>/dev/null; do sleep 0.2; done; gone "$1"; }
  idle_since() { # warm idle time that makes files last used before $2 idle, and no others
    sed -i "/^\[warm\]/,/^\[/ s/^idle = .*/idle = \"$(( $(date +%s) - $2 ))s\"/" "$1"
    sleep 1
  }
  cold_files() {
    getfattr --only-values -n user.tier.stats "$mnt" |
      python3 -c 'import json, sys; print(json.load(sys.stdin)["tiers"]["cold"]["files"])'
  }

  # An empty store's daemon after mount + find: what the per-file figures exclude.
  target/release/tierfs mount "$work/empty" "$mnt"
  pid=$(cat "$work/empty/tierfs.lock")
  find "$mnt" >/dev/null
  rss_empty=$(rss "$pid")
  umnt "$pid"

  # The demotion cycle among $old files alone, for the ratio.
  target/release/tierfs mount "$work/small" "$mnt"
  pid=$(cat "$work/small/tierfs.lock")
  quiet "$work/small/policy.toml"
  target/release/examples/fsbench many "$mnt/old" "$old" 10 1024 >/dev/null
  sleep 61
  idle_since "$work/small/policy.toml" "$(( $(date +%s) - 30 ))"
  demote_small_s=$(t setfattr -n user.tier.migrate -v 1 "$mnt")
  demoted_small=$(cold_files)
  umnt "$pid"

  target/release/tierfs mount "$work/store" "$mnt"
  pid=$(cat "$work/store/tierfs.lock")
  policy=$work/store/policy.toml
  quiet "$policy"
  target/release/examples/fsbench many "$mnt/old" "$old" 10 1024 >/dev/null
  t_old=$(date +%s)
  sleep 61
  create=$(target/release/examples/fsbench many "$mnt" $((n - old)) "$dirs" 1024)
  got "$create files/s"
  read_rate=$(target/release/examples/fsbench readmany "$mnt" $((n - old)) "$dirs" 100000)
  got "$read_rate files/s"
  sleep 61
  first_s=$(t setfattr -n user.tier.migrate -v 1 "$mnt")
  got "first cycle $first_s s"
  idle_none_s=$(t setfattr -n user.tier.migrate -v 1 "$mnt")
  idle_since "$policy" "$((t_old + 30))"
  demote_s=$(t setfattr -n user.tier.migrate -v 1 "$mnt")
  demoted=$(cold_files)
  got "cycles: nothing $idle_none_s s, demoting $demoted $demote_s s"
  # The unmount of the busy session, until its daemon is gone (it writes
  # sled's snapshot last).
  umount_s=$(t umnt "$pid")
  got "unmount $umount_s s"

  mount_s=$(t target/release/tierfs mount "$work/store" "$mnt")
  pid=$(cat "$work/store/tierfs.lock")
  rss_mounted=$(rss "$pid")
  find_s=$(t sh -c "find '$mnt' | wc -l")
  rss_found=$(rss "$pid")
  got "mount $mount_s s, find $find_s s, RSS $rss_mounted / $rss_found KiB"
  kill -9 "$pid" && gone "$pid"
  crash_ls_s=$(t sh -c "target/release/tierfs mount '$work/store' '$mnt' && ls '$mnt/d1'")
  got "mount + ls after kill -9 $crash_ls_s s"
  pid=$(cat "$work/store/tierfs.lock")
  # The count of the segments' live bytes goes on while the mount serves:
  # its time, from the daemon's log line.
  log=$work/store/tierfs.log
  until grep -q 'chunk records in' "$log" || ! kill -0 "$pid" 2>/dev/null; do sleep 1; done
  live_count=$(grep -o 'counted [0-9]* chunk records in [^ ]*' "$log" | tail -1)
  got "after kill -9, $live_count"
  umnt "$pid"
  meta_mib=$(du -sm "$work/store/meta" | cut -f1)
  # A read-only fsck of the unmounted store: its time and peak RSS. It
  # works on a copy of the metadata: skipped when the disk cannot hold one.
  free_mib=$(df -m --output=avail "$work" | tail -1)
  if [ "$free_mib" -gt $((meta_mib * 11 / 10)) ]; then
    read -r fsck_s fsck_kib fsck_rc < <(python3 - target/release/tierfs fsck "$work/store" <<'PY'
import resource, subprocess, sys, time
t = time.monotonic()
rc = subprocess.run(sys.argv[1:], stdout=subprocess.DEVNULL).returncode
print(f"{time.monotonic() - t:.1f}", resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss, rc)
PY
)
  else
    fsck_s=skipped fsck_kib=0 fsck_rc="its copy of the metadata needs ${meta_mib} MiB, ${free_mib} MiB free"
  fi

  printf '%d files of 1 KiB in %d directories, %s cores, kernel %s\n' "$n" "$dirs" "$(nproc)" "$(uname -r)"
  echo "create (2 threads):                 ${create#create } files/s"
  echo "read 100,000 at random (2 threads): ${read_rate#read } files/s"
  echo "first cycle after the window:       ${first_s} s (saves and folds the statistics of every file read or written)"
  echo "cycle with nothing to move:         $(echo "$idle_none_s * 1000" | bc | xargs printf '%.0f') ms"
  echo "cycle demoting $demoted idle files:   ${demote_s} s"
  echo "  the same among $old files alone:  ${demote_small_s} s ($demoted_small demoted)"
  echo "unmount of the busy session:        ${umount_s} s (until the daemon is gone)"
  echo "mount after a clean unmount:        ${mount_s} s"
  echo "mount + ls after kill -9:           ${crash_ls_s} s"
  echo "  then, while it serves:            ${live_count:-no count logged}"
  echo "find | wc -l after the mount:       ${find_s} s"
  echo "metadata on disk (sled):            ${meta_mib} MiB"
  if [ "$fsck_s" = skipped ]; then
    echo "fsck:                               skipped ($fsck_rc)"
  else
    echo "fsck:                               ${fsck_s} s, peak RSS $((fsck_kib / 1024)) MiB (exit $fsck_rc)"
  fi
  awk -v e="$rss_empty" -v m="$rss_mounted" -v f="$rss_found" -v n="$n" 'BEGIN {
    printf "empty store, mounted + find:        %.0f MiB\n", e/1024
    printf "daemon RSS after mount:             %.0f MiB = %.0f B per file beyond the empty store\n", m/1024, (m-e)*1024/n
    printf "daemon RSS after mount + find:      %.0f MiB = %.0f B per file beyond the empty store\n", f/1024, (f-e)*1024/n }'
  exit 0
fi

if [ "${1:-}" = trash ]; then
  n=${2:-20000}
  rounds=${3:-3}
  kept=${4:-1000000}
  scripts/deps.sh
  cargo build --release -q --bin tierfs
  work=$PWD/target/bench-trash
  rm -rf "$work" && mkdir -p "$work"
  mounts=()
  trap 'for m in "${mounts[@]}"; do fusermount3 -u "$m" 2>/dev/null || true; done' EXIT
  # Two stores alike but for [trash] keep: 7 days (the default) and 0.
  for t in on off; do
    mkdir -p "$work/$t/mnt"
    keep=$([ $t = on ] && echo 7d || echo 0)
    python3 - "$work/$t/policy.toml" "$keep" <<'PY'
import re, sys
# The default policy file (src/policy.rs DEFAULT_FILE) with `keep` set.
text = open("src/policy.rs").read()
body = text.split('pub const DEFAULT_FILE: &str = r#"', 1)[1].split('"#;', 1)[0]
open(sys.argv[1], "w").write(re.sub(r'^keep = .*$', 'keep = "%s"' % sys.argv[2], body, flags=re.M))
PY
    target/release/tierfs mount "$work/$t/store" "$work/$t/mnt" --policy "$work/$t/policy.toml"
    mounts+=("$work/$t/mnt")
  done
  # Interleaved rounds: each creates N files of 1 KiB, overwrites each
  # (open with O_TRUNC: one version each with the trash on) and unlinks each.
  python3 - "$work" "$n" "$rounds" <<'PY'
import json, os, statistics, sys, time
work, n, rounds = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
data, data2 = b"m" * 1024, b"n" * 1024
res = {(t, p): [] for t in ("on", "off") for p in ("create", "overwrite", "unlink")}
cpu = {k: [] for k in res}
req = {k: [] for k in res}
pids = {t: json.loads(os.getxattr(os.path.join(work, t, "mnt"), "user.tier.stats"))["daemon"]["pid"]
        for t in ("on", "off")}
def ticks(pid):  # the daemon's user + system time, in clock ticks: (all, request threads)
    f = open("/proc/%d/stat" % pid).read().rsplit(")", 1)[1].split()
    total, served = int(f[11]) + int(f[12]), 0
    for task in os.listdir("/proc/%d/task" % pid):
        try:
            s = open("/proc/%d/task/%s/stat" % (pid, task)).read()
        except OSError:
            continue
        # Threads that serve requests (a "change" thread that has ended is
        # in the total only: none runs without a quota count under way).
        if s.split("(", 1)[1].startswith(("fuser-", "change")):
            f = s.rsplit(")", 1)[1].split()
            served += int(f[11]) + int(f[12])
    return total, served
hz = os.sysconf("SC_CLK_TCK")
for r in range(rounds):
    for t in ("on", "off"):
        d = os.path.join(work, t, "mnt", "r%d" % r)
        os.mkdir(d)
        names = [os.path.join(d, "m%06d" % i) for i in range(n)]
        for phase, fn in (("create", lambda p: open(p, "wb").write(data)),
                          ("overwrite", lambda p: open(p, "wb").write(data2)),
                          ("unlink", os.unlink)):
            (c0, r0), t0 = ticks(pids[t]), time.perf_counter()
            for p in names:
                fn(p)
            res[(t, phase)].append(n / (time.perf_counter() - t0))
            c1, r1 = ticks(pids[t])
            cpu[(t, phase)].append((c1 - c0) / hz / n * 1e6)
            req[(t, phase)].append((r1 - r0) / hz / n * 1e6)
print("%d files of 1 KiB, %d rounds, %d cores; medians: files/s, and the daemon's CPU per file" % (n, rounds, os.cpu_count()))
print("(in all its threads, and in the request threads alone)")
print("%-10s %12s %12s %8s %14s %14s %14s %14s" % ("", "trash on", "trash off", "on/off", "CPU on", "CPU off", "requests on", "requests off"))
for p in ("create", "overwrite", "unlink"):
    on, off = statistics.median(res[("on", p)]), statistics.median(res[("off", p)])
    con, coff = statistics.median(cpu[("on", p)]), statistics.median(cpu[("off", p)])
    ron, roff = statistics.median(req[("on", p)]), statistics.median(req[("off", p)])
    print("%-10s %12.0f %12.0f %8.2f %11.0f us %11.0f us %11.0f us %11.0f us" % (p, on, off, on / off, con, coff, ron, roff))
PY
  # The same overwrite in process, without the kernel and FUSE: what
  # keeping a version costs the daemon itself.
  cargo build --release -q --example trashcost
  target/release/examples/trashcost "$n" "$rounds"
  # RSS with many files kept: both stores create and unlink KEPT files (so
  # that their metadata has the same history); the trash of one keeps
  # them. The daemons' RSS after a remount and a listing of the root.
  rss() { # mountpoint -> daemon RSS in KiB
    pid=$(getfattr --only-values -n user.tier.stats "$1" | python3 -c 'import json,sys; print(json.load(sys.stdin)["daemon"]["pid"])')
    awk '/VmRSS/ {print $2}' "/proc/$pid/status"
  }
  for t in on off; do
  python3 - "$work/$t/mnt" "$kept" <<'PY'
import os, sys
mnt, n = sys.argv[1], int(sys.argv[2])
for d in range(100):
    os.makedirs(os.path.join(mnt, "k", "d%02d" % d), exist_ok=True)
for i in range(n):
    p = os.path.join(mnt, "k", "d%02d" % (i % 100), "m%07d" % i)
    with open(p, "wb") as f:
        f.write(b"k" * 100)
    os.unlink(p)
PY
  done
  files=$(getfattr --only-values -n user.tier.stats "$work/on/mnt" | python3 -c 'import json,sys; print(json.load(sys.stdin)["trash"]["files"])')
  for t in on off; do fusermount3 -u "$work/$t/mnt"; done
  mounts=(); sleep 1
  for t in on off; do
    target/release/tierfs mount "$work/$t/store" "$work/$t/mnt" --policy "$work/$t/policy.toml"
    mounts+=("$work/$t/mnt")
    ls -l "$work/$t/mnt" > /dev/null
  done
  on=$(rss "$work/on/mnt"); off=$(rss "$work/off/mnt")
  printf 'daemon RSS after remount + ls, both after %d files created and unlinked: %d KiB with %d files in the trash, %d KiB with none (%.2f)\n' "$kept" \
    "$on" "$files" "$off" "$(echo "$on / $off" | bc -l)"
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
  # tierbench changes the idle times to 1 s (a live edit) before the
  # demotion passes.
  bench_policy > "$work/policy.toml"
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

if [ "${1:-}" = s3 ]; then
  n=${2:-20000}
  big_mib=${3:-1024}
  scripts/deps.sh
  export PATH="$HOME/.cargo/bin:$PATH"
  cargo build --release -q --bin tierfs --example tierbench --example s3read
  work=$PWD/target/bench-s3
  for m in "$work"/mnt-*; do fusermount3 -u "$m" 2>/dev/null || true; done
  [ -d "$work/garage" ] && scripts/garage.sh down "$work/garage"
  umount "$work/tmpfs" 2>/dev/null || true
  rm -rf "$work"
  mkdir -p "$work/tmpfs"
  mount -t tmpfs -o size=4G tmpfs "$work/tmpfs"
  scripts/garage.sh up "$work/garage" 1 >/dev/null
  trap 'for m in "$work"/mnt-*; do fusermount3 -u "$m" 2>/dev/null || true; done;
        umount "$work/tmpfs" 2>/dev/null || true; scripts/garage.sh down "$work/garage"' EXIT
  endpoint=$(cat "$work/garage/endpoint")
  # The policy of `tiers`, with cold packs local or in the Garage bucket.
  policy() {
    bench_policy
    if [ "$1" = s3 ]; then
      printf 'store = "s3://tierfs/bench"\nendpoint = "%s"\nregion = "garage"\ncredentials = "%s"\ncache = "2GiB"\n' \
        "$endpoint" "$work/garage/s3.env"
    fi
  }
  stat_of() { getfattr --only-values -n user.tier.stats "$1" | python3 -c "import json,sys; v=json.load(sys.stdin); print($2)"; }
  # The first 4 KiB of FILE (ms), then all of it from the start (MB/s),
  # timed in one process.
  time_reads() {
    python3 - "$1" <<'PY'
import sys, time
path = sys.argv[1]
t = time.perf_counter()
with open(path, "rb", buffering=0) as f:
    f.read(4096)
first = time.perf_counter() - t
n = 0
t = time.perf_counter()
with open(path, "rb", buffering=0) as f:
    while True:
        b = f.read(1 << 20)
        if not b:
            break
        n += len(b)
seq = time.perf_counter() - t
print(f"{first * 1000:.1f} {n / seq / 1e6:.0f}")
PY
  }
  declare -A R
  for mode in local s3; do
    mnt=$work/mnt-$mode
    mkdir -p "$mnt" "$work/tmpfs/copy-$mode"
    policy "$mode" > "$work/policy-$mode.toml"
    target/release/tierfs mount "$work/store-$mode" "$mnt" --policy "$work/policy-$mode.toml"
    out=$(target/release/examples/tierbench "$mnt" "$n" "$work/tmpfs/copy-$mode" "$work/policy-$mode.toml")
    R[$mode.pass]=$(echo "$out" | awk '$1 == "pass_warm_to_cold_s" {print $2}')
    R[$mode.read]=$(echo "$out" | awk '$1 == "read_cold_files_per_s" {print $2}')
    # A second cycle uploads what the first left staged.
    setfattr -n user.tier.migrate -v 1 "$mnt"
    if [ "$mode" = s3 ]; then
      # Pack uploads only (not the snapshot's and dictionaries' PUTs):
      # nothing is deleted yet, so the packs in the bucket.
      R[puts]=$(stat_of "$mnt" 'v["object_store"]["packs"]')
      R[stored]=$(stat_of "$mnt" 'v["tiers"]["cold"]["stored"]')
    fi
    # A big file, cold, read after a remount with the page cache dropped:
    # the first 4 KiB, then all of it (from the bucket), then all of it again
    # (from the frame cache).
    head -c $((big_mib << 20)) /dev/urandom > "$mnt/big"
    setfattr -n user.tier -v cold "$mnt/big"
    setfattr -n user.tier.migrate -v 1 "$mnt"
    fusermount3 -u "$mnt"
    sleep 1
    # Three rounds of: the uncached read after a remount (frame cache
    # emptied, page cache dropped), and with s3 then the store's own speed
    # with nothing mounted: every pack object read from start to end in
    # 8 MiB range GETs, one after another, through the same client in one
    # process. Medians: this machine's speed varies from run to run.
    firsts=(); seqs=(); plains=()
    for _ in 1 2 3; do
      rm -rf "$work/store-$mode/cold/cache"
      target/release/tierfs mount "$work/store-$mode" "$mnt" --policy "$work/policy-$mode.toml"
      echo 3 > /proc/sys/vm/drop_caches
      read -r first seq < <(time_reads "$mnt/big")
      firsts+=("$first"); seqs+=("$seq")
      fusermount3 -u "$mnt"; sleep 1
      if [ "$mode" = s3 ]; then
        read -r plain _ _ < <(target/release/examples/s3read "$endpoint" "$work/garage/s3.env" tierfs bench/packs/)
        plains+=("$plain")
      fi
    done
    median() { printf '%s\n' "$@" | sort -g | sed -n 2p; }
    R[$mode.first]=$(median "${firsts[@]}")
    R[$mode.seq]=$(median "${seqs[@]}")
    [ "$mode" = s3 ] && R[plain]=$(median "${plains[@]}")
    # Then all of it again after a remount: from the frame cache.
    target/release/tierfs mount "$work/store-$mode" "$mnt" --policy "$work/policy-$mode.toml"
    echo 3 > /proc/sys/vm/drop_caches
    read -r _ again < <(time_reads "$mnt/big")
    R[$mode.again]=$again
    if [ "$mode" = s3 ]; then
      R[gets]=$(stat_of "$mnt" 'v["object_store"]["gets"]')
    fi
    fusermount3 -u "$mnt"
  done
  printf '%d memories of 4 KiB and a %d MiB file, cold packs local and in a 1-node Garage on 127.0.0.1; %s cores\n' \
    "$n" "$big_mib" "$(nproc)"
  printf '%-44s %12s %12s %8s\n' "" local s3 ratio
  row() { awk -v a="$2" -v b="$3" -v l="$1" 'BEGIN { printf "%-44s %12s %12s %8.2f\n", l, a, b, (a > 0 ? b / a : 0) }'; }
  row "warm->cold pass (s)" "${R[local.pass]}" "${R[s3.pass]}"
  row "read of the cold memories (files/s)" "${R[local.read]}" "${R[s3.read]}"
  row "first 4 KiB of the cold big file (ms)" "${R[local.first]}" "${R[s3.first]}"
  row "sequential read, uncached (MB/s, median of 3)" "${R[local.seq]}" "${R[s3.seq]}"
  row "sequential read, next mount (MB/s)" "${R[local.again]}" "${R[s3.again]}"
  awk -v p="${R[puts]}" -v s="${R[stored]}" 'BEGIN { printf "memories: %d pack PUTs for %.1f MiB of compressed records (%.1f MiB per PUT)\n", p, s / 1048576, (p > 0 ? s / 1048576 / p : 0) }'
  echo "GETs in the last mount (frame cache hits make none): ${R[gets]}"
  awk -v p="${R[plain]}" -v s="${R[s3.seq]}" 'BEGIN { printf "object_store range GETs of every pack, in one process (median of 3): %d MB/s; the uncached sequential read is %.2f of it\n", p, (p > 0 ? s / p : 0) }'
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
