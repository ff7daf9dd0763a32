#!/usr/bin/env python3
"""transformers' own Qwen3-MoE training step on the CPU, and the checkpoint it runs on.

    python3 benchmarks/cpu/model_train_bench.py --make DIR [--layers 4 --hidden 512 --experts 16 --top-k 2
        --moe-inter 256 --heads 8 --kv-heads 4 --head-dim 64 --vocab 4096 --batch 8 --seq 128 --seed 1]
    python3 benchmarks/cpu/model_train_bench.py --model DIR --batch-file FILE --threads 2 [--runs 5] [--lr 1e-3]
        [--attn sdpa|eager] [--experts-impl default|eager|grouped_mm|batched_mm]

Called by the C++ benchmark (benchmarks/cpu/model_train_bench.cpp) in the same run.

--make writes a Qwen3MoeForCausalLM made by transformers from a config (seeded random
init, as transformers initialises it; float32) into DIR with save_pretrained
(config.json and model.safetensors), and DIR/input.safetensors: input_ids and labels,
int64 [B, S] (labels = input_ids: transformers shifts them itself). Prints
{"dir": DIR, "params": count}.

--model times transformers' own training step on that checkpoint and batch with
torch.set_num_threads(--threads): model.train(); loss = model(input_ids=...,
labels=...).loss; loss.backward(); torch.optim.SGD(lr, no momentum, no weight decay)
.step(); optimizer.zero_grad(). One warm-up step, then --runs timed steps, each from the
weights the last one left (as a training loop runs). Prints one JSON line: {"ms": the
median step, "cpu_ms": the median CPU time of a step (every thread of the process),
"forward_ms", "backward_ms", "optimizer_ms": the medians of its three parts, "losses": the loss of every step (the first from the checkpoint's
weights), "attn": the attention implementation, "experts": the experts implementation,
"torch": version, "transformers": version}, or {"skipped": reason} when torch or
transformers is missing. The attention and experts implementations are transformers'
defaults unless --attn / --experts-impl say otherwise (on the CPU: sdpa and grouped_mm
in transformers 5.25).
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time


def make(args) -> int:
    import torch
    from safetensors.torch import save_file
    from transformers import Qwen3MoeConfig, Qwen3MoeForCausalLM

    cfg = Qwen3MoeConfig(
        vocab_size=args.vocab, hidden_size=args.hidden, num_hidden_layers=args.layers,
        num_attention_heads=args.heads, num_key_value_heads=args.kv_heads, head_dim=args.head_dim,
        intermediate_size=4 * args.moe_inter,  # unused: every layer is MoE
        moe_intermediate_size=args.moe_inter, num_experts=args.experts, num_experts_per_tok=args.top_k,
        norm_topk_prob=True, decoder_sparse_step=1, mlp_only_layers=[], max_position_embeddings=max(args.seq, 64),
        rope_parameters={"rope_type": "default", "rope_theta": 1000000.0}, rms_norm_eps=1e-6,
        tie_word_embeddings=False, attention_bias=False, attention_dropout=0.0, use_sliding_window=False,
        output_router_logits=False, pad_token_id=None)
    cfg.dtype = torch.float32
    torch.manual_seed(args.seed)
    model = Qwen3MoeForCausalLM._from_config(cfg, dtype=torch.float32)
    os.makedirs(args.make, exist_ok=True)
    model.save_pretrained(args.make, safe_serialization=True)
    gen = torch.Generator().manual_seed(args.seed + 1)
    ids = torch.randint(0, args.vocab, (args.batch, args.seq), generator=gen, dtype=torch.int64)
    save_file({"input_ids": ids.contiguous(), "labels": ids.clone().contiguous()},
              os.path.join(args.make, "input.safetensors"))
    print(json.dumps({"dir": args.make, "params": sum(p.numel() for p in model.parameters())}))
    return 0


def time_steps(args) -> int:
    import torch
    import transformers
    from safetensors import safe_open
    from transformers import Qwen3MoeForCausalLM

    torch.set_num_threads(args.threads)
    kw = {"dtype": torch.float32}
    if args.attn != "default":
        kw["attn_implementation"] = args.attn
    if args.experts_impl != "default":
        kw["experts_implementation"] = args.experts_impl
    model = Qwen3MoeForCausalLM.from_pretrained(args.model, **kw)
    model.train()
    with safe_open(args.batch_file, framework="pt") as f:
        ids, labels = f.get_tensor("input_ids"), f.get_tensor("labels")
    opt = torch.optim.SGD(model.parameters(), lr=args.lr, momentum=0.0, weight_decay=0.0)
    times, cpu, phases, losses = [], [], [], []
    for _ in range(args.runs + 1):  # the first is a warm-up
        start, start_cpu = time.perf_counter(), time.process_time()
        loss = model(input_ids=ids, labels=labels).loss
        t_forward = time.perf_counter()
        loss.backward()
        t_backward = time.perf_counter()
        opt.step()
        opt.zero_grad(set_to_none=True)
        end = time.perf_counter()
        times.append(end - start)
        cpu.append(time.process_time() - start_cpu)
        phases.append((t_forward - start, t_backward - t_forward, end - t_backward))
        losses.append(loss.item())
    med = lambda xs: statistics.median(xs[1:]) * 1e3  # noqa: E731
    print(json.dumps({"ms": med(times), "cpu_ms": med(cpu), "forward_ms": med([p[0] for p in phases]),
                      "backward_ms": med([p[1] for p in phases]), "optimizer_ms": med([p[2] for p in phases]),
                      "losses": losses,
                      "attn": model.config._attn_implementation,
                      "experts": str(getattr(model.config, "_experts_implementation", None)),
                      "torch": torch.__version__, "transformers": transformers.__version__}))
    return 0


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--make", default="")
    ap.add_argument("--layers", type=int, default=4)
    ap.add_argument("--hidden", type=int, default=512)
    ap.add_argument("--experts", type=int, default=16)
    ap.add_argument("--top-k", type=int, default=2)
    ap.add_argument("--moe-inter", type=int, default=256)
    ap.add_argument("--heads", type=int, default=8)
    ap.add_argument("--kv-heads", type=int, default=4)
    ap.add_argument("--head-dim", type=int, default=64)
    ap.add_argument("--vocab", type=int, default=4096)
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--seq", type=int, default=128)
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--model", default="")
    ap.add_argument("--batch-file", default="")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--runs", type=int, default=5)
    ap.add_argument("--lr", type=float, default=1e-3)
    ap.add_argument("--attn", default="default")
    ap.add_argument("--experts-impl", default="default")
    args = ap.parse_args()
    try:
        import torch  # noqa: F401
        import transformers  # noqa: F401
        from safetensors import safe_open  # noqa: F401
    except ImportError as e:  # the benchmark reports it and goes on
        print(json.dumps({"skipped": f"torch/transformers/safetensors not importable: {e}"}))
        return 0
    if args.make:
        return make(args)
    if args.model:
        return time_steps(args)
    ap.error("give --make DIR or --model DIR")
    return 2


if __name__ == "__main__":
    sys.exit(main())
