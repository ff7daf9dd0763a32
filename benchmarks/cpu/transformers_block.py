#!/usr/bin/env python3
"""transformers' own Qwen3MoeSparseMoeBlock on the CPU, timed on given weights and inputs.

    python3 benchmarks/cpu/transformers_block.py --case case.safetensors --threads 2 [--dtype bf16] [--runs 5]
        [--backward]

Called by the C++ benchmark (benchmarks/cpu/moe_block_bench.cpp) in the same run, with the
block it times: `case.safetensors` holds the block's weights under transformers' names
(gate.weight, experts.gate_up_proj, experts.down_proj), `hidden_states` [tokens, H], and the
config in its metadata (hidden_size, moe_intermediate_size, num_experts,
num_experts_per_tok, norm_topk_prob). Prints one JSON line: {"ms": median forward time,
"out": path of its output (hidden_states, and topk_ids: the experts its router chose)}, or {"skipped": reason} when torch or transformers is missing.
With --backward, also "backward_ms": the median of (forward and autograd backward of
sum(y * dy), dy = the case's `grad_output`) minus the median forward with autograd on:
torch autograd's backward of the same block (benchmarks/cpu/moe_backward_bench.cpp).
"""
from __future__ import annotations

import argparse
import json
import statistics
import sys
import time


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--case", required=True)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--dtype", choices=["f32", "bf16"], default="f32")
    ap.add_argument("--runs", type=int, default=5)
    ap.add_argument("--out", default="")
    ap.add_argument("--backward", action="store_true")
    args = ap.parse_args()
    try:
        import torch
        from safetensors import safe_open
        from safetensors.torch import save_file
        from transformers import Qwen3MoeConfig
        from transformers.models.qwen3_moe.modeling_qwen3_moe import Qwen3MoeSparseMoeBlock
    except ImportError as e:  # the benchmark reports it and goes on
        print(json.dumps({"skipped": f"torch/transformers not importable: {e}"}))
        return 0

    torch.set_num_threads(args.threads)
    with safe_open(args.case, framework="pt") as f:
        meta = f.metadata()
        tensors = {k: f.get_tensor(k) for k in f.keys()}
    cfg = Qwen3MoeConfig(
        hidden_size=int(meta["hidden_size"]),
        moe_intermediate_size=int(meta["moe_intermediate_size"]),
        num_experts=int(meta["num_experts"]),
        num_experts_per_tok=int(meta["num_experts_per_tok"]),
        norm_topk_prob=meta["norm_topk_prob"] == "true",
        num_hidden_layers=1,
        num_attention_heads=8,
        num_key_value_heads=8,
        head_dim=64,
    )
    dtype = torch.bfloat16 if args.dtype == "bf16" else torch.float32
    block = Qwen3MoeSparseMoeBlock(cfg).eval()
    state = {k: v for k, v in tensors.items() if k not in ("hidden_states", "grad_output")}
    block.load_state_dict(state, strict=True)
    block = block.to(dtype)
    x = tensors["hidden_states"].to(dtype).unsqueeze(0)
    times = []
    with torch.no_grad():
        y = block(x)  # warm-up
        for _ in range(args.runs):
            start = time.perf_counter()
            y = block(x)
            times.append(time.perf_counter() - start)
    result = {"ms": statistics.median(times) * 1e3, "torch": torch.__version__,
              "experts_implementation": str(getattr(block.experts.config, "_experts_implementation", None))}
    if args.backward:
        dy = tensors["grad_output"].to(dtype).unsqueeze(0)
        with_grad, train = [], []
        for _ in range(args.runs + 1):  # the first of each is a warm-up
            block.zero_grad(set_to_none=True)
            start = time.perf_counter()
            y = block(x)
            out = y[0] if isinstance(y, tuple) else y
            with_grad.append(time.perf_counter() - start)
            (out * dy).sum().backward()
            train.append(time.perf_counter() - start)
        result["backward_ms"] = (statistics.median(train[1:]) - statistics.median(with_grad[1:])) * 1e3
        result["forward_with_grad_ms"] = statistics.median(with_grad[1:]) * 1e3
    if args.out:
        out = y[0] if isinstance(y, tuple) else y
        with torch.no_grad():  # its expert choice, so that near-ties can be told apart
            _, _, topk_ids = block.gate(x.view(-1, x.shape[-1]))
        save_file({"hidden_states": out.squeeze(0).float().contiguous(),
                   "topk_ids": topk_ids.to(torch.int32).contiguous()}, args.out)
        result["out"] = args.out
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
