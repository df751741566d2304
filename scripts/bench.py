#!/usr/bin/env python3
"""Side-by-side benchmark of tierfs and its baselines (called by bench.sh).

Targets, each set up fresh in every round, rounds interleaved:
  tierfs    the release build, small files pinned hot, the big file warm,
            then hot (a live policy edit raises the hot budget), then cold
  ceiling   benches/ceiling.rs: a minimal in-RAM fuser filesystem (and,
            for one more listing figure, the same without attributes:
            --plain-listing)
  mergerfs  mergerfs -o cache.files=partial over a tmpfs branch
  tmpfs     a tmpfs directory
  disk      a plain directory on the disk under target/

Prints one table of medians and the ratios tierfs/baseline, then the tier
figures of tierfs (warm, cold) against its own hot figures and zstd -dc.
Writes the medians as JSON to target/bench/results.json and renders the
ratios as an SVG bar chart, docs/bench/ratios.svg (docs/BENCHMARKS.md shows
it), with scripts/bench_chart.py.
"""
import json
import os
import statistics
import subprocess
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
REL = os.path.join(ROOT, "target", "release")
TIERFS = os.path.join(REL, "tierfs")
MOUNTCTL = os.path.join(REL, "mountctl")
FSBENCH = os.path.join(REL, "examples", "fsbench")
CEILING = os.path.join(REL, "examples", "ceiling")

n_files = int(sys.argv[1]) if len(sys.argv) > 1 else 10000
size = int(sys.argv[2]) if len(sys.argv) > 2 else 4096
rounds = int(sys.argv[3]) if len(sys.argv) > 3 else 3
big_mb = int(sys.argv[4]) if len(sys.argv) > 4 else 1024
work = os.path.join(ROOT, "target", "bench")
TARGETS = ["tierfs", "ceiling", "mergerfs", "tmpfs", "disk"]


def sh(*cmd, **kw):
    return subprocess.run(cmd, check=True, capture_output=True, text=True, **kw).stdout


def drop_caches():
    subprocess.run(["sync"], check=True)
    with open("/proc/sys/vm/drop_caches", "w") as f:
        f.write("3\n")


def run_bench(*args):
    out = sh(FSBENCH, *args)
    return {k: float(v) for k, v in (l.split() for l in out.splitlines())}


def timed(cmd):
    """Seconds `cmd` takes, its output discarded."""
    t0 = time.perf_counter()
    subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL)
    return time.perf_counter() - t0


def cpu_s(pid):
    if pid is None:
        return 0.0
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def peak_rss_mib(pid):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    return 0.0


def wait_mounted(mnt, proc):
    t0 = time.time()
    while not os.path.ismount(mnt):
        if proc.poll() is not None:
            raise SystemExit(f"{mnt}: the daemon exited ({proc.returncode})")
        if time.time() - t0 > 30:
            raise SystemExit(f"{mnt}: mount timed out")
        time.sleep(0.02)


def unmount(mnt, proc):
    subprocess.run(["fusermount3", "-u", mnt], check=False, capture_output=True)
    if proc is not None:
        try:
            proc.wait(timeout=120)
        except subprocess.TimeoutExpired:
            proc.kill()


def setup(target, r):
    """Mounts (or makes) the target; returns (dir, daemon process or None)."""
    base = os.path.join(work, f"{target}-{r}")
    if target == "tmpfs":
        d = os.path.join(work, "tmpfs", f"t{r}")
        os.makedirs(d)
        return d, None
    if target == "disk":
        os.makedirs(base)
        return base, None
    mnt = base + "-mnt"
    os.makedirs(mnt)
    if target == "tierfs":
        p = subprocess.Popen(
            [TIERFS, "mount", "--foreground", base + "-store", mnt],
            stderr=open(base + ".log", "w"))
    elif target == "ceiling":
        p = subprocess.Popen([CEILING, mnt])
    elif target == "ceiling-plain":
        p = subprocess.Popen([CEILING, mnt, "--plain-listing"])
    else:
        branch = os.path.join(work, "tmpfs", f"m{r}")
        os.makedirs(branch)
        p = subprocess.Popen(
            ["mergerfs", "-f", "-o", "cache.files=partial,category.create=mfs",
             branch, mnt])
    wait_mounted(mnt, p)
    return mnt, p


def teardown(target, d, p, r):
    if p is not None:
        unmount(d, p)
    if target == "tmpfs":
        sh("rm", "-rf", d)
    elif target == "mergerfs":
        sh("rm", "-rf", os.path.join(work, "tmpfs", f"m{r}"))


results = {t: {} for t in TARGETS}


def note(target, key, value):
    results[target].setdefault(key, []).append(value)


def one_round(r):
    order = TARGETS[r % len(TARGETS):] + TARGETS[:r % len(TARGETS)]
    for target in order:
        d, p = setup(target, r)
        pid = p.pid if p else None
        small = os.path.join(d, "small")
        os.makedirs(small)
        if target == "tierfs":
            sh("setfattr", "-n", "user.tier.pin", "-v", "hot", small)
        c0 = cpu_s(pid)
        res = run_bench("small", small, str(n_files), str(size))
        if pid:
            note(target, "cpu_us_per_file_op", (cpu_s(pid) - c0) * 1e6 / (4 * n_files))
        for k, v in res.items():
            note(target, k, v)
        # Listings with attributes, from cold kernel caches.
        for key, cmd in [("ls_l", ["ls", "-l", small]),
                         ("find_printf", ["find", small, "-printf", "%s %m %u %T@\n"])]:
            drop_caches()
            note(target, key, n_files / timed(cmd))
        drop_caches()
        note(target, "read1_nocache", run_bench("read", small, str(n_files))["read1"])
        if target == "tierfs":
            for tier in ["warm", "cold"]:
                sh(MOUNTCTL, "pin", tier, "-r", small)
                drop_caches()
                note(target, f"read1_nocache_{tier}",
                     run_bench("read", small, str(n_files))["read1"])
        big = os.path.join(d, "big")
        c0 = cpu_s(pid)
        note(target, "write_mb_s", run_bench("write", big, str(big_mb))["write_mb_s"])
        drop_caches()
        res = run_bench("readbig", big)
        if pid:
            note(target, "cpu_us_per_mib", (cpu_s(pid) - c0) * 1e6 / (2 * big_mb))
        for k, v in res.items():
            note(target, k, v)
        if target == "tierfs":
            # The big file hot: a live policy edit makes room for it in RAM.
            pol = os.path.join(work, f"tierfs-{r}-store", "policy.toml")
            with open(pol) as f:
                text = f.read()
            with open(pol, "w") as f:
                f.write(text.replace('budget = "256MiB"', 'budget = "3GiB"', 1))
            for _ in range(100):
                try:
                    sh("setfattr", "-n", "user.tier", "-v", "hot", big)
                    break
                except subprocess.CalledProcessError:
                    time.sleep(0.1)  # the edit is not loaded yet
            drop_caches()
            for k, v in run_bench("readbig", big).items():
                note(target, k + "_hot", v)
            t0 = time.time()
            sh("setfattr", "-n", "user.tier", "-v", "cold", big)
            note(target, "move_1gib_cold_s", time.time() - t0)
            drop_caches()
            for k, v in run_bench("readbig", big).items():
                note(target, k + "_cold", v)
        if target == "tmpfs":
            # zstd -dc of the same bytes, the cold tier's yardstick.
            zst = os.path.join(work, "tmpfs", "big.zst")
            sh("zstd", "-3", "-q", "-f", "-o", zst, big)
            t0 = time.time()
            subprocess.run(["zstd", "-dc", zst], stdout=subprocess.DEVNULL, check=True)
            note(target, "zstd_dc_mb_s", big_mb / (time.time() - t0))
            os.remove(zst)
        if pid:
            note(target, "peak_rss_mib", peak_rss_mib(pid))
        teardown(target, d, p, r)
        if target == "ceiling":
            # The same listing from a ceiling that lists without attributes.
            d, p = setup("ceiling-plain", r)
            small = os.path.join(d, "small")
            os.makedirs(small)
            note(target, "list_plain",
                 run_bench("small", small, str(n_files), str(size))["list"])
            teardown(target, d, p, r)
        print(f"round {r + 1}/{rounds}: {target} done", file=sys.stderr)


def med(target, key):
    v = results[target].get(key)
    return statistics.median(v) if v else None


def fmt(v):
    if v is None:
        return "-"
    return f"{v:,.0f}" if v >= 100 else f"{v:.2f}"


def ratio(a, b):
    return f"{a / b:.2f}" if a and b else "-"


def main():
    # A fresh work directory: stale mounts of an interrupted run first.
    with open("/proc/self/mounts") as f:
        stale = [l.split()[1] for l in f if l.split()[1].startswith(work + "/")]
    for m in sorted(stale, reverse=True):
        subprocess.run(["umount", "-l", m], check=False)
    sh("rm", "-rf", work)
    os.makedirs(os.path.join(work, "tmpfs"))
    sh("mount", "-t", "tmpfs", "-o", "size=6G", "tmpfs", os.path.join(work, "tmpfs"))
    try:
        for r in range(rounds):
            one_round(r)
    finally:
        subprocess.run(["umount", os.path.join(work, "tmpfs")], check=False)
    kernel = os.uname().release
    print(f"\n{n_files} files of {size} B, a {big_mb} MiB file, {rounds} rounds "
          f"(medians), {os.cpu_count()} cores, kernel {kernel}\n")
    rows = [
        ("create files/s", "create"), ("read files/s, 1 thread", "read1"),
        ("read files/s, 2 threads", "read2"), ("stat files/s", "stat"),
        ("list entries/s", "list"), ("ls -l entries/s, caches dropped", "ls_l"),
        ("find -printf entries/s, caches dropped", "find_printf"),
        ("read files/s, caches dropped", "read1_nocache"),
        ("write MB/s (1 MiB writes + fsync)", "write_mb_s"),
        ("read MB/s, caches dropped", "seqread_mb_s"),
        ("4 KiB random reads/s", "randread4k"), ("first 4 KiB, ms", "first4k_ms"),
        ("daemon CPU µs per small-file op", "cpu_us_per_file_op"),
        ("daemon CPU µs per MiB", "cpu_us_per_mib"), ("daemon peak RSS MiB", "peak_rss_mib"),
    ]
    head = f"{'':40}" + "".join(f"{t:>11}" for t in TARGETS)
    head += f"{'/ceiling':>10}{'/mergerfs':>10}{'/tmpfs':>8}{'/disk':>8}"
    print(head)
    for label, key in rows:
        line = f"{label:40}" + "".join(f"{fmt(med(t, key)):>11}" for t in TARGETS)
        tv = med("tierfs", key)
        line += f"{ratio(tv, med('ceiling', key)):>10}{ratio(tv, med('mergerfs', key)):>10}"
        line += f"{ratio(tv, med('tmpfs', key)):>8}{ratio(tv, med('disk', key)):>8}"
        print(line)
    plain = med("ceiling", "list_plain")
    print(f"\nlist entries/s of a ceiling that lists without attributes (plain "
          f"READDIR): {fmt(plain)}; tierfs = {ratio(med('tierfs', 'list'), plain)} × it")
    hot = med("tierfs", "read1_nocache")
    print("\ntierfs by tier (kernel caches dropped before each read):")
    for tier in ["warm", "cold"]:
        v = med("tierfs", f"read1_nocache_{tier}")
        print(f"  small files, {tier}: {fmt(v)} files/s = {ratio(v, hot)} × hot ({fmt(hot)})")
    cold = med("tierfs", "seqread_mb_s_cold")
    zstd = med("tmpfs", "zstd_dc_mb_s")
    print(f"  {big_mb} MiB file cold: {fmt(cold)} MB/s sequential = {ratio(cold, zstd)} × "
          f"zstd -dc ({fmt(zstd)} MB/s); first 4 KiB {fmt(med('tierfs', 'first4k_ms_cold'))} ms; "
          f"{fmt(med('tierfs', 'randread4k_cold'))} random 4 KiB reads/s")
    hot_big = med("tierfs", "seqread_mb_s_hot")
    print(f"  {big_mb} MiB file hot: {fmt(hot_big)} MB/s sequential = "
          f"{ratio(hot_big, med('ceiling', 'seqread_mb_s'))} × ceiling; first 4 KiB "
          f"{fmt(med('tierfs', 'first4k_ms_hot'))} ms; "
          f"{fmt(med('tierfs', 'randread4k_hot'))} random 4 KiB reads/s")
    print(f"  {big_mb} MiB file hot→cold move: {fmt(med('tierfs', 'move_1gib_cold_s'))} s")

    keys = sorted({k for t in results for k in results[t]})
    out = {
        "run": {"files": n_files, "size": size, "rounds": rounds, "big_mib": big_mb,
                "cores": os.cpu_count(), "kernel": kernel,
                "date": time.strftime("%Y-%m-%d")},
        "rows": [{"label": label, "key": key} for label, key in rows],
        "medians": {t: {k: med(t, k) for k in keys if med(t, k) is not None}
                    for t in results},
    }
    path = os.path.join(work, "results.json")
    with open(path, "w") as f:
        json.dump(out, f, indent=1)
    chart = os.path.join(ROOT, "docs", "bench", "ratios.svg")
    os.makedirs(os.path.dirname(chart), exist_ok=True)
    subprocess.run([sys.executable, os.path.join(ROOT, "scripts", "bench_chart.py"),
                    path, chart], check=True)
    print(f"\nmedians: {path}; chart: {chart}")


main()
