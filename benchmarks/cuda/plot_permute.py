#!/usr/bin/env python3
"""Plots permute_bench's JSON: GB/s of gather, regroup and combine against tokens, next to
the device-to-device copy bandwidth measured in the same run, with the 85% target.

    python3 benchmarks/cuda/plot_permute.py results.json docs/images/permute_bandwidth.png
"""
import json
import sys

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402


def main(source: str, target: str) -> None:
    doc = json.load(open(source))
    rows = [r for r in doc["results"] if r["kernel"] in ("gather", "regroup", "combine")]
    kernels = ["gather", "regroup", "combine"]
    fig, axes = plt.subplots(1, len(kernels), figsize=(15, 4.5), sharey=True)
    for ax, kernel in zip(axes, kernels):
        mine = [r for r in rows if r["kernel"] == kernel]
        for hidden in sorted({r["hidden"] for r in mine}):
            for top_k in sorted({r["top_k"] for r in mine}):
                # One line per (hidden, top-k): the median over expert counts at each token count.
                points = {}
                for r in mine:
                    if r["hidden"] == hidden and r["top_k"] == top_k:
                        points.setdefault(r["tokens"], []).append(r["gbps"])
                tokens = sorted(points)
                gbps = [sorted(points[t])[len(points[t]) // 2] for t in tokens]
                ax.plot(tokens, gbps, marker="o", label=f"hidden {hidden}, top-{top_k}")
        copy = sorted(r["copy_gbps"] for r in mine)
        if copy:
            median_copy = copy[len(copy) // 2]
            ax.axhline(median_copy, color="black", linestyle="--", label="device-to-device copy")
            ax.axhline(0.85 * median_copy, color="gray", linestyle=":", label="85% of the copy")
        ax.set_xscale("log", base=2)
        ax.set_title(kernel)
        ax.set_xlabel("tokens")
        ax.grid(True, alpha=0.3)
    axes[0].set_ylabel("GB/s (bytes moved / time)")
    axes[-1].legend(fontsize=7, loc="lower right")
    fig.suptitle(f"meshplan permutation kernels, bf16, {doc['device']}, {doc['date']}")
    fig.tight_layout()
    fig.savefig(target, dpi=120)


if __name__ == "__main__":
    if len(sys.argv) != 3:
        sys.exit("usage: plot_permute.py results.json out.png")
    main(sys.argv[1], sys.argv[2])
