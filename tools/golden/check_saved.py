#!/usr/bin/env python3
"""Check a model directory written by `meshplan-run --save DIR` with transformers itself.

Loads DIR with transformers' AutoModelForCausalLM.from_pretrained (float32, eager
attention and experts, as tools/golden/make_models.py builds the golden models), refuses
any checkpoint key transformers missed, did not expect or found with another shape (a
missing weight would otherwise be initialised at random), runs it on the input's
input_ids (and labels, if any) and compares its logits, and loss, with an expected file:

    python3 tools/golden/check_saved.py DIR --input input.safetensors \\
        --expected expected.safetensors [--logits logits] [--loss loss] [--tol 1e-5]

Passes when max |logits - expected| <= tol * max |expected| (and the same for the loss).
Exit status: 0 pass; 1 mismatch or a key transformers did not load; 2 bad usage or files;
77 when torch or transformers cannot be imported (skipped).

For example, after `meshplan-run --model tests/data/golden/models/mixtral --input
tests/data/golden/models/mixtral/input.safetensors --mesh ep=2 --save /tmp/saved`:

    python3 tools/golden/check_saved.py /tmp/saved \\
        --input tests/data/golden/models/mixtral/input.safetensors \\
        --expected tests/data/golden/models/mixtral/expected.safetensors

and after `--train --steps 3 --lr 0.1 --save /tmp/saved`, the same with
`--expected .../sgd.safetensors --logits final_logits --loss final_loss`.
"""

from __future__ import annotations

import argparse
import os
import sys


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("dir", help="a directory written by meshplan-run --save (config.json, model.safetensors)")
    ap.add_argument("--input", required=True, help="safetensors with input_ids [B, S] and optionally labels")
    ap.add_argument("--expected", required=True, help="safetensors with the expected logits (and loss)")
    ap.add_argument("--logits", default="logits", help="the expected logits' name (default: logits)")
    ap.add_argument("--loss", default="loss", help="the expected loss' name, compared where both exist "
                                                  "(default: loss)")
    ap.add_argument("--tol", type=float, default=1e-5, help="relative tolerance (default: 1e-5)")
    args = ap.parse_args()

    try:
        import torch
        import transformers
        from safetensors.torch import load_file
    except ImportError as e:
        print(f"check_saved: skipped: {e}")
        return 77

    for path in (os.path.join(args.dir, "config.json"), os.path.join(args.dir, "model.safetensors"), args.input,
                 args.expected):
        if not os.path.isfile(path):
            print(f"check_saved: no file '{path}'", file=sys.stderr)
            return 2
    torch.set_num_threads(1)
    transformers.utils.logging.disable_progress_bar()
    inputs = load_file(args.input)
    expected = load_file(args.expected)
    if "input_ids" not in inputs or args.logits not in expected:
        print(f"check_saved: '{args.input}' needs input_ids and '{args.expected}' {args.logits}", file=sys.stderr)
        return 2
    ids = inputs["input_ids"].to(torch.int64)
    if ids.dim() == 1:
        ids = ids.unsqueeze(0)
    labels = inputs.get("labels")
    if labels is not None:
        labels = labels.to(torch.int64).reshape(ids.shape)

    model, info = transformers.AutoModelForCausalLM.from_pretrained(
        args.dir, dtype=torch.float32, attn_implementation="eager", experts_implementation="eager",
        output_loading_info=True)
    model.eval()
    name = type(model).__name__
    problems = {k: v for k, v in info.items() if v}
    if problems:
        print(f"check_saved: {name} from '{args.dir}': keys not loaded as saved: {problems}")
        return 1
    with torch.no_grad():
        out = model(input_ids=ids, labels=labels)

    ok = True
    def compare(what: str, got, want) -> None:
        nonlocal ok
        got = got.to(torch.float32).reshape(-1)
        want = want.to(torch.float32).reshape(-1)
        if got.shape != want.shape:
            print(f"  {what}: {got.numel()} values, expected {want.numel()}")
            ok = False
            return
        diff = (got - want).abs().max().item() if got.numel() else 0.0
        scale = want.abs().max().item() if want.numel() else 0.0
        passed = diff <= args.tol * scale
        ok = ok and passed
        print(f"  {what}: max |difference| {diff:.3g}, {diff / scale if scale else 0.0:.3g} relative "
              f"(allowed {args.tol:g}){'' if passed else '  FAILED'}")

    print(f"check_saved: {name} from '{args.dir}' (torch {torch.__version__}, transformers "
          f"{transformers.__version__}), every key loaded")
    compare(f"logits {list(out.logits.shape)} vs {args.logits}", out.logits, expected[args.logits])
    if labels is not None and args.loss in expected:
        compare(f"loss {out.loss.item():.6f} vs {args.loss}", out.loss, expected[args.loss])
    print("check_saved: " + ("ok" if ok else "FAILED"))
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
