#!/usr/bin/env python3
"""Plots the GPU figures: the permutation kernels' GB/s against tokens next to the
device-to-device copy measured in the same run (with the 85% target), and, where the file
has them, the fused experts' TFLOP/s against tokens next to dense cuBLAS (with the 60%
target) and torch._grouped_mm.

    python3 benchmarks/cuda/plot_permute.py figures.json figures.png    # scripts/gpu-check.sh's
    python3 benchmarks/cuda/plot_permute.py permute.json docs/images/permute_bandwidth.png

Takes scripts/gpu-check.sh's figures.json (tools/perf/figures_to_tables.py collect) or one
benchmark's own JSON (permute_bench's, experts_bench's).
"""
import json
import sys

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

KERNELS = ["gather", "regroup", "combine"]


def median(values):
    values = sorted(values)
    return values[len(values) // 2]


def benchmarks(doc):
    """The benchmark documents in a figures file, or the one document given."""
    if "benchmarks" in doc:
        return doc["benchmarks"]
    return {doc.get("benchmark", "permute"): doc}


def permute_row(axes, doc):
    rows = [r for r in doc["results"] if r.get("kernel") in KERNELS]
    for ax, kernel in zip(axes, KERNELS):
        mine = [r for r in rows if r["kernel"] == kernel]
        for hidden in sorted({r["hidden"] for r in mine}):
            for top_k in sorted({r["top_k"] for r in mine}):
                # One line per (hidden, top-k): the median over expert counts at each token count.
                points = {}
                for r in mine:
                    if r["hidden"] == hidden and r["top_k"] == top_k:
                        points.setdefault(r["tokens"], []).append(r["gbps"])
                tokens = sorted(points)
                ax.plot(tokens, [median(points[t]) for t in tokens], marker="o", label=f"hidden {hidden}, top-{top_k}")
        if mine:
            copy = median([r["copy_gbps"] for r in mine])
            ax.axhline(copy, color="black", linestyle="--", label="device-to-device copy")
            ax.axhline(0.85 * copy, color="gray", linestyle=":", label="85% of the copy")
        ax.set_xscale("log", base=2)
        ax.set_title(f"{kernel} (bf16)")
        ax.set_xlabel("tokens")
        ax.grid(True, alpha=0.3)
    axes[0].set_ylabel("GB/s (bytes moved / time)")
    axes[-1].legend(fontsize=7, loc="lower right")


def experts_row(axes, experts, torch_doc):
    mine = [r for r in (experts or {}).get("results", []) if "kernel" in r and r.get("routing") == "uniform"]
    theirs = [r for r in (torch_doc or {}).get("results", []) if r.get("kernel") == "torch._grouped_mm"
              and r.get("routing") == "uniform"]
    models = list(dict.fromkeys(r["model"] for r in mine + theirs))[: len(axes)]
    for ax, model in zip(axes, models):
        def line(rows, label, **style):
            points = sorted((r["tokens"], r["tflops"]) for r in rows if r["model"] == model)
            if points:
                ax.plot([p[0] for p in points], [p[1] for p in points], marker="o", label=label, **style)

        line([r for r in mine if r["kernel"] == "dense"], "dense cuBLAS (ceiling)", color="black", linestyle="--")
        dense = [r for r in mine if r["kernel"] == "dense" and r["model"] == model]
        if dense:
            points = sorted((r["tokens"], 0.6 * r["tflops"]) for r in dense)
            ax.plot([p[0] for p in points], [p[1] for p in points], color="gray", linestyle=":", marker="_", markersize=20,
                    label="60% of dense")
        for kernel in sorted({r["kernel"] for r in mine if r["kernel"].startswith("fused-")}):
            line([r for r in mine if r["kernel"] == kernel], kernel)
        line([r for r in mine if r["kernel"] == "per-expert"], "per-expert cuBLAS")
        line(theirs, "torch._grouped_mm", color="red")
        ax.set_xscale("log", base=2)
        ax.set_title(f"experts, {model} (uniform routing)")
        ax.set_xlabel("tokens")
        ax.grid(True, alpha=0.3)
    for ax in axes[len(models):]:
        ax.set_visible(False)
    axes[0].set_ylabel("TFLOP/s (2 x rows x 3 x H x I / time)")
    if models:
        axes[0].legend(fontsize=7, loc="lower right")


def main(source: str, target: str) -> None:
    doc = json.load(open(source))
    docs = benchmarks(doc)
    permute, experts, torch_doc = docs.get("permute"), docs.get("experts"), docs.get("torch")
    rows = [name for name, present in (("permute", permute), ("experts", experts or torch_doc)) if present]
    if not rows:
        sys.exit(f"plot_permute.py: no permutation or expert figures in {source}")
    fig, grid = plt.subplots(len(rows), 3, figsize=(15, 4.5 * len(rows)), squeeze=False)
    for axes, name in zip(grid, rows):
        if name == "permute":
            permute_row(axes, permute)
        else:
            experts_row(axes, experts, torch_doc)
    first = next(d for d in (permute, experts, torch_doc) if d)
    fig.suptitle(f"meshplan on {doc.get('device', first.get('device'))}, {doc.get('date', first.get('date'))}")
    fig.tight_layout()
    fig.savefig(target, dpi=110)


if __name__ == "__main__":
    if len(sys.argv) != 3:
        sys.exit("usage: plot_permute.py figures.json out.png")
    main(sys.argv[1], sys.argv[2])
