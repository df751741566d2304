#!/usr/bin/env python3
"""Renders the ratios of a bench.py results.json as an SVG bar chart:
for each workload, tierfs divided by the FUSE ceiling, by mergerfs and by
tmpfs (higher is better for tierfs; for the time and cost rows, the inverse
ratio is shown so that higher is still better). No dependencies.

usage: bench_chart.py RESULTS.json OUT.svg
"""
import json
import sys

BASELINES = [("ceiling", "#4e79a7"), ("mergerfs", "#f28e2b"), ("tmpfs", "#59a14f")]
# Rows where smaller is better: the ratio is baseline / tierfs.
LOWER_IS_BETTER = {"first4k_ms", "cpu_us_per_file_op", "cpu_us_per_mib", "peak_rss_mib"}
SKIP = {"peak_rss_mib"}  # RAM held hot by design; not a like-for-like ratio


def main():
    data = json.load(open(sys.argv[1]))
    med = data["medians"]
    rows = []
    for r in data["rows"]:
        key = r["key"]
        if key in SKIP:
            continue
        t = med.get("tierfs", {}).get(key)
        vals = []
        for base, _ in BASELINES:
            b = med.get(base, {}).get(key)
            if t and b:
                vals.append(b / t if key in LOWER_IS_BETTER else t / b)
            else:
                vals.append(None)
        if any(v is not None for v in vals):
            rows.append((r["label"], vals))
    bar_h, gap, label_w, plot_w = 9, 10, 290, 420
    group_h = bar_h * len(BASELINES) + gap
    height = 70 + group_h * len(rows) + 30
    top = max([v for _, vals in rows for v in vals if v is not None] + [1.0])
    scale_max = min(max(2.0, top), 4.0)  # ratios past 4 are drawn clipped
    x = lambda v: label_w + plot_w * min(v, scale_max) / scale_max
    run = data["run"]
    out = [
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{label_w + plot_w + 60}" '
        f'height="{height}" font-family="sans-serif" font-size="11">',
        f'<text x="10" y="18" font-size="13" font-weight="bold">tierfs ÷ baseline '
        f'(higher is better for tierfs; 1.0 = equal)</text>',
        f'<text x="10" y="34">{run["files"]:,} files of {run["size"]} B, a {run["big_mib"]} MiB '
        f'file, medians of {run["rounds"]} rounds, {run["cores"]} cores, kernel '
        f'{run["kernel"]}, {run["date"]}</text>',
    ]
    lx = label_w
    for base, color in BASELINES:
        out.append(f'<rect x="{lx}" y="42" width="10" height="10" fill="{color}"/>')
        out.append(f'<text x="{lx + 14}" y="51">÷ {base}</text>')
        lx += 110
    y = 62
    for label, vals in rows:
        out.append(f'<text x="{label_w - 6}" y="{y + group_h / 2}" text-anchor="end">{label}</text>')
        for i, v in enumerate(vals):
            by = y + i * bar_h
            if v is None:
                continue
            w = x(v) - label_w
            out.append(f'<rect x="{label_w}" y="{by}" width="{w:.1f}" height="{bar_h - 1}" '
                       f'fill="{BASELINES[i][1]}"/>')
            out.append(f'<text x="{label_w + w + 3:.1f}" y="{by + bar_h - 1}" font-size="9">'
                       f'{v:.2f}{"+" if v > scale_max else ""}</text>')
        y += group_h
    one = x(1.0)
    out.append(f'<line x1="{one}" y1="58" x2="{one}" y2="{y}" stroke="#333" stroke-dasharray="3,3"/>')
    out.append(f'<text x="{one}" y="{y + 14}" text-anchor="middle">1.0</text>')
    out.append("</svg>")
    with open(sys.argv[2], "w") as f:
        f.write("\n".join(out) + "\n")


main()
