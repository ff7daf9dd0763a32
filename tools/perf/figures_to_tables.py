#!/usr/bin/env python3
"""The GPU benchmarks' figures, from their JSON to docs/performance.md's tables.

    figures_to_tables.py collect --permute P.json --experts E.json --torch T.json \
        [--device NAME] [--phases PHASES.jsonl] --out figures.json
    figures_to_tables.py tables figures.json                  # the markdown, on stdout
    figures_to_tables.py update figures.json docs/performance.md

`collect` gathers what permute_bench, experts_bench and benchmarks/cuda/torch_bench.py wrote
(any of them may be missing: a phase that ran out of time) into one figures file with the
device and the date. `tables` prints the tables: the permutation kernels' GB/s against the
copy's (target 85% from 16384 tokens), the routers' tokens/s, the fused experts' TFLOP/s
against dense cuBLAS (target 60%) and torch._grouped_mm (target: ahead on every shape), and
the MoE block against transformers'. `update` writes them into a markdown file between the
marker comments `<!-- gpu-figures:NAME -->` and `<!-- /gpu-figures:NAME -->` (NAME:
permute, experts), leaving the rest of the file as it was.

Python's standard library only.
"""
from __future__ import annotations

import argparse
import datetime
import json
import re
import statistics
import sys

COPY_TARGET = 0.85          # of the device-to-device copy's GB/s
COPY_TARGET_FROM = 16384    # tokens
DENSE_TARGET = 0.60         # of the dense cuBLAS GEMM pair's TFLOP/s
PERMUTE_KERNELS = ("gather", "regroup", "combine")


def load(path: str | None):
    if not path:
        return None
    try:
        with open(path) as f:
            return json.load(f)
    except FileNotFoundError:
        return None


def load_lines(path: str | None):
    """A JSON-lines file (one object a line) as a list; None where there is none."""
    if not path:
        return None
    try:
        with open(path) as f:
            return [json.loads(line) for line in f if line.strip()]
    except FileNotFoundError:
        return None


def collect(permute, experts, torch_doc, device: str | None, phases) -> dict:
    """One figures document: the device, the date and each benchmark's own document."""
    docs = {name: doc for name, doc in (("permute", permute), ("experts", experts), ("torch", torch_doc)) if doc}
    device = device or next((d["device"] for d in docs.values() if d.get("device")), "unknown device")
    date = next((d["date"] for d in docs.values() if d.get("date")), datetime.date.today().isoformat())
    figures = {"device": device, "date": date, "benchmarks": docs}
    if phases is not None:
        figures["phases"] = phases
    return figures


def median(values):
    return statistics.median(values) if values else float("nan")


def table(header, rows) -> str:
    lines = ["| " + " | ".join(header) + " |", "| " + " | ".join("---" for _ in header) + " |"]
    lines += ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]
    return "\n".join(lines)


def provenance(figures) -> str:
    extra = ""
    torch_doc = figures["benchmarks"].get("torch")
    if torch_doc and torch_doc.get("torch"):
        extra = f", PyTorch {torch_doc['torch']}"
    return f"Measured on {figures['device']}, {figures['date']} (`scripts/gpu-check.sh all`{extra})."


def permute_tables(figures) -> str:
    doc = figures["benchmarks"].get("permute")
    if not doc:
        return "**Not measured: the permutation benchmark left no figures in the last run.**"
    results = doc["results"]
    parts = [provenance(figures), ""]

    rows, met, judged, worst = [], 0, 0, None
    kernels = [r for r in results if r.get("kernel") in PERMUTE_KERNELS]
    keys = sorted({(PERMUTE_KERNELS.index(r["kernel"]), r["tokens"], r["hidden"]) for r in kernels})
    for k, tokens, hidden in keys:
        group = [r for r in kernels if r["kernel"] == PERMUTE_KERNELS[k] and r["tokens"] == tokens and r["hidden"] == hidden]
        ratios = [r["ratio_to_copy"] for r in group]
        lowest = min(group, key=lambda r: r["ratio_to_copy"])
        if tokens >= COPY_TARGET_FROM:
            judged += len(group)
            met += sum(x >= COPY_TARGET for x in ratios)
            verdict = "met" if lowest["ratio_to_copy"] >= COPY_TARGET else "missed"
            if worst is None or lowest["ratio_to_copy"] < worst["ratio_to_copy"]:
                worst = lowest
        else:
            verdict = "(below 16384 tokens)"
        rows.append([PERMUTE_KERNELS[k], tokens, hidden, f"{median([r['gbps'] for r in group]):.0f}",
                     f"{median([r['copy_gbps'] for r in group]):.0f}", f"{median(ratios):.0%}",
                     f"{lowest['ratio_to_copy']:.0%} (E {lowest['experts']}, top-{lowest['top_k']})", verdict])
    if rows:
        parts.append("Medians over the expert counts and top-k of each row; the worst case is named.")
        parts.append("")
        parts.append(table(["Kernel", "tokens", "hidden", "GB/s", "copy GB/s", "ratio", "worst ratio", "target 85%"], rows))
        parts.append("")
        if judged:
            summary = f"Target (85% of the copy from 16384 tokens): {met} of {judged} cases"
            if worst is not None:
                summary += (f"; the worst: {worst['kernel']}, {worst['tokens']} tokens, hidden {worst['hidden']}, "
                            f"E {worst['experts']}, top-{worst['top_k']}, {worst['ratio_to_copy']:.0%}")
            parts.append(summary + ".")
        else:
            parts.append("Target (85% of the copy from 16384 tokens): not judged, no case of 16384 tokens or more.")
        parts.append("")

    routers = [r for r in results if r.get("kernel") == "router"]
    if routers:
        parts.append(table(["Router", "tokens", "hidden", "experts", "top-k", "tokens/s", "GB/s of hidden states"],
                           [[r["family"], r["tokens"], r["hidden"], r["experts"], r["top_k"],
                             f"{r['tokens_per_s'] / 1e6:.1f} M", f"{r['gbps']:.0f}"]
                            for r in routers]))
        parts.append("")
    return "\n".join(parts).rstrip() + "\n"


def experts_tables(figures) -> str:
    experts_doc = figures["benchmarks"].get("experts")
    torch_doc = figures["benchmarks"].get("torch")
    if not experts_doc and not torch_doc:
        return "**Not measured: the expert benchmarks left no figures in the last run.**"
    parts = [provenance(figures), ""]
    mine = experts_doc["results"] if experts_doc else []
    theirs = torch_doc["results"] if torch_doc else []

    def case_key(r):
        return (r["model"], r["tokens"], r.get("routing", ""))

    # torch_bench.py records a shape it could not fit without its routing: it stands for
    # both routings of that model and token count.
    def same_case(r, key):
        return case_key(r) == key or ("routing" not in r and (r["model"], r["tokens"]) == key[:2])

    order = []
    for r in mine + [t for t in theirs if t.get("kernel") != "block"]:
        if "routing" not in r and any(key[:2] == (r["model"], r["tokens"]) for key in order):
            continue
        if case_key(r) not in order:
            order.append(case_key(r))
    rows, ahead, dense_met, judged_torch, judged_dense = [], 0, 0, 0, 0
    for key in order:
        model, tokens, routing = key
        ours = {r["kernel"]: r for r in mine if case_key(r) == key and "kernel" in r}
        torch_case = {r["kernel"]: r for r in theirs if case_key(r) == key and "kernel" in r}
        skipped = [r["skipped"] for r in mine + theirs if same_case(r, key) and "skipped" in r]
        fused = [r for name, r in ours.items() if name.startswith("fused-") and not name.endswith("+perm")]
        best = max(fused, key=lambda r: r["tflops"]) if fused else None
        perm = ours.get(best["kernel"] + "+perm") if best else None
        grouped_mm, same_tensors = torch_case.get("torch._grouped_mm"), torch_case.get("meshplan fused")
        verdicts = []
        if best:
            judged_dense += 1
            if best["ratio_to_dense"] >= DENSE_TARGET:
                dense_met += 1
            else:
                verdicts.append("< 60% of dense")
        if same_tensors:
            judged_torch += 1
            if same_tensors["speedup_vs_grouped_mm"] > 1.0:
                ahead += 1
            else:
                verdicts.append("behind grouped_mm")
        if skipped:
            verdicts.append("skipped in part: " + skipped[0].split("\n")[0][:60])
        elif not best or not same_tensors:
            verdicts.append("not all measured")

        def tf(r):
            return f"{r['tflops']:.1f}" if r else "-"

        rows.append([model, tokens, routing or "-", tf(ours.get("dense")),
                     f"{best['tflops']:.1f} ({best['kernel'][len('fused-'):]})" if best else "-",
                     f"{best['ratio_to_dense']:.0%}" if best else "-", tf(perm), tf(ours.get("per-expert")),
                     tf(grouped_mm), tf(same_tensors),
                     f"{same_tensors['speedup_vs_grouped_mm']:.2f}x" if same_tensors else "-",
                     "; ".join(verdicts) if verdicts else "met"])
    if rows:
        parts.append("TFLOP/s (2 x rows x 3 x H x I per MLP); dense, per-expert and fused from `experts_bench`, "
                     "torch._grouped_mm and meshplan on the same tensors from `torch_bench.py`.")
        parts.append("")
        parts.append(table(["Model", "tokens", "routing", "dense cuBLAS", "fused (path)", "of dense", "fused+perm",
                            "per-expert cuBLAS", "torch._grouped_mm", "meshplan, same tensors", "vs grouped_mm",
                            "targets"], rows))
        parts.append("")
        parts.append(f"Targets: ahead of torch._grouped_mm on {ahead} of {judged_torch} shapes measured; "
                     f"60% or more of dense cuBLAS on {dense_met} of {judged_dense}.")
        parts.append("")

    blocks = [r for r in theirs if r.get("kernel") == "block"]
    if blocks:
        parts.append(table(["Block", "tokens", "transformers ms", "meshplan ms", "speedup", "max relative difference"],
                           [[f"{r['model']} (transformers: {r.get('transformers_experts_implementation', '?')})",
                             r["tokens"], f"{r['transformers_ms']:.3f}", f"{r['meshplan_ms']:.3f}",
                             f"{r['speedup']:.2f}x", f"{r['max_relative_difference']:.1e}"] for r in blocks]))
        parts.append("")
    return "\n".join(parts).rstrip() + "\n"


SECTIONS = {"permute": permute_tables, "experts": experts_tables}


def tables(figures) -> str:
    """Every section between its markers, as `update` writes it."""
    return "\n".join(f"<!-- gpu-figures:{name} -->\n\n{make(figures)}\n<!-- /gpu-figures:{name} -->\n"
                     for name, make in SECTIONS.items())


def update(text: str, figures) -> str:
    """`text` with each marked section replaced by its tables; every marker must be there."""
    for name, make in SECTIONS.items():
        pattern = re.compile(rf"(<!-- gpu-figures:{name} -->\n).*?(<!-- /gpu-figures:{name} -->)", re.S)
        if not pattern.search(text):
            raise SystemExit(f"figures_to_tables: no '<!-- gpu-figures:{name} -->' ... "
                             f"'<!-- /gpu-figures:{name} -->' markers in the file")
        text = pattern.sub(lambda m: m.group(1) + "\n" + make(figures) + "\n" + m.group(2), text, count=1)
    return text


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = ap.add_subparsers(dest="command", required=True)
    c = sub.add_parser("collect")
    c.add_argument("--permute")
    c.add_argument("--experts")
    c.add_argument("--torch")
    c.add_argument("--device", help="the device's name (nvidia-smi's); else the benchmarks'")
    c.add_argument("--phases", help="the check's phases and their outcome, one JSON object a line")
    c.add_argument("--out", required=True)
    t = sub.add_parser("tables")
    t.add_argument("figures")
    u = sub.add_parser("update")
    u.add_argument("figures")
    u.add_argument("markdown")
    args = ap.parse_args()

    if args.command == "collect":
        figures = collect(load(args.permute), load(args.experts), load(args.torch), args.device,
                          load_lines(args.phases))
        with open(args.out, "w") as f:
            json.dump(figures, f, indent=1)
            f.write("\n")
        print(f"figures: {', '.join(figures['benchmarks']) or 'no benchmark'} on {figures['device']}, {figures['date']}")
        return 0 if figures["benchmarks"] else 1
    figures = load(args.figures)
    if figures is None:
        raise SystemExit(f"figures_to_tables: no file {args.figures}")
    if args.command == "tables":
        sys.stdout.write(tables(figures))
        return 0
    with open(args.markdown) as f:
        text = f.read()
    with open(args.markdown, "w") as f:
        f.write(update(text, figures))
    return 0


if __name__ == "__main__":
    sys.exit(main())
