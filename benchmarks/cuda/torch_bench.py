#!/usr/bin/env python3
"""meshplan's fused experts and MoE block next to PyTorch's and transformers', in one process.

    python3 benchmarks/cuda/torch_bench.py --bridge build/device/benchmarks/libmeshplan_torch_bridge.so \
        [--quick] [--out torch_bench.json]
    python3 benchmarks/cuda/torch_bench.py --dry-run     # the script's own logic, tiny shapes, on the CPU

Experts: for Qwen3-30B-A3B (H 2048, I 768, E 128, k 8), Mixtral-8x7B (H 4096, I 14336, E 8,
k 2) and DeepSeek-V3 (H 7168, I 2048, E 256, k 8) at 4096, 16384 and 65536 tokens, uniform
and skewed routing (expert e drawn with weight 1 / (e + 1)): torch._grouped_mm (gate_up,
SiLU * up, down) against meshplan's fused kernels (libmeshplan_torch_bridge.so through
ctypes) on the same tensors, on the same stream, with and without the gather of the token
rows. Block: transformers' Qwen3MoeSparseMoeBlock (Qwen3-30B-A3B shapes, bf16, its
"grouped_mm" experts implementation) against meshplan's MoEBlock at EP = 1 with the same weights and
inputs. Medians of CUDA-event timings; outputs compared, the largest difference printed.
"""
from __future__ import annotations

import argparse
import ctypes
import datetime
import json
import sys

import torch
import torch.nn.functional as F

SHAPES = {
    "Qwen3-30B-A3B": (2048, 768, 128, 8),
    "Mixtral-8x7B": (4096, 14336, 8, 2),
    "DeepSeek-V3": (7168, 2048, 256, 8),
}


def load_bridge(path: str):
    lib = ctypes.CDLL(path)
    p, i64 = ctypes.c_void_p, ctypes.c_int64
    lib.meshplan_last_error.restype = ctypes.c_char_p
    lib.meshplan_fused_experts.argtypes = [p, p, i64, p, i64, p, p, i64, i64, p, p]
    lib.meshplan_fused_experts.restype = ctypes.c_int
    lib.meshplan_block_create.argtypes = [ctypes.c_char_p, p, p, p]
    lib.meshplan_block_create.restype = p
    lib.meshplan_block_forward.argtypes = [p, p, i64, p, p]
    lib.meshplan_block_forward.restype = ctypes.c_int
    lib.meshplan_block_destroy.argtypes = [p]
    return lib


def check(lib, rc: int) -> None:
    if rc != 0:
        raise RuntimeError(lib.meshplan_last_error().decode())


def median_ms(fn, warmup: int = 2, runs: int = 10) -> float:
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(runs):
        start, stop = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        fn()
        stop.record()
        stop.synchronize()
        times.append(start.elapsed_time(stop))
    return sorted(times)[len(times) // 2]


def routing(tokens: int, experts: int, top_k: int, skewed: bool, device) -> torch.Tensor:
    """Expert ids of the tokens * top_k pairs."""
    weights = 1.0 / torch.arange(1, experts + 1, dtype=torch.float64) if skewed else torch.ones(experts, dtype=torch.float64)
    gen = torch.Generator().manual_seed(tokens * 31 + experts)
    ids = torch.multinomial(weights, tokens * top_k, replacement=True, generator=gen)
    return ids.to(device)


def grouped(x: torch.Tensor, ids: torch.Tensor, experts: int, top_k: int):
    """The pairs sorted by expert (stable): the order, the offsets, the gathered rows."""
    _, order = torch.sort(ids, stable=True)
    counts = torch.bincount(ids, minlength=experts)
    offs = torch.cumsum(counts, 0).to(torch.int32)
    rows = x[order // top_k]
    return order, counts, offs, rows


def torch_experts(rows, offs, gate_up, down, inter: int) -> torch.Tensor:
    h = torch._grouped_mm(rows, gate_up.transpose(1, 2), offs=offs)
    act = F.silu(h[:, :inter]) * h[:, inter:]
    return torch._grouped_mm(act, down.transpose(1, 2), offs=offs)


def loop_experts(rows, counts, gate_up, down, inter: int) -> torch.Tensor:
    """The same in a plain loop, fp32: the reference of the dry run."""
    out, at = [], 0
    for e, n in enumerate(counts.tolist()):
        r = rows[at : at + n].float()
        h = r @ gate_up[e].float().T
        out.append((F.silu(h[:, :inter]) * h[:, inter:]) @ down[e].float().T)
        at += n
    return torch.cat(out) if out else rows.new_zeros((0, down.shape[1]), dtype=torch.float32)


def relative_difference(a: torch.Tensor, b: torch.Tensor) -> float:
    scale = b.float().abs().max().clamp_min(1e-30)
    return float((a.float() - b.float()).abs().max() / scale) if b.numel() else 0.0


def experts_case(lib, model: str, tokens: int, skewed: bool, results: list) -> None:
    H, I, E, k = SHAPES[model]
    dev = torch.device("cuda")
    gen = torch.Generator(device=dev).manual_seed(tokens + E)
    x = torch.randn(tokens, H, device=dev, dtype=torch.bfloat16, generator=gen)
    gate_up = (torch.randn(E, 2 * I, H, device=dev, generator=gen) * 0.02).to(torch.bfloat16)
    down = (torch.randn(E, H, I, device=dev, generator=gen) * 0.02).to(torch.bfloat16)
    ids = routing(tokens, E, k, skewed, dev)
    order, counts, offs, rows = grouped(x, ids, E, k)
    offsets = (ctypes.c_int64 * (E + 1))(0, *torch.cumsum(counts, 0).tolist())
    order32 = order.to(torch.int32)
    out = torch.empty(tokens * k, H, device=dev, dtype=torch.bfloat16)
    stream = ctypes.c_void_p(torch.cuda.current_stream().cuda_stream)

    def ours(gather: bool):
        src, idx, kk = (x, order32.data_ptr(), k) if gather else (rows, None, 1)
        check(lib, lib.meshplan_fused_experts(src.data_ptr(), idx, kk, offsets, E, gate_up.data_ptr(),
                                              down.data_ptr(), H, I, out.data_ptr(), stream))

    expected = torch_experts(rows, offs, gate_up, down, I)
    ours(False)
    diff = relative_difference(out, expected)
    flops = 2.0 * tokens * k * 3 * H * I
    timings = {
        "torch._grouped_mm": median_ms(lambda: torch_experts(rows, offs, gate_up, down, I)),
        "torch._grouped_mm+gather": median_ms(lambda: torch_experts(x[order // k], offs, gate_up, down, I)),
        "meshplan fused": median_ms(lambda: ours(False)),
        "meshplan fused+perm": median_ms(lambda: ours(True)),
    }
    base = timings["torch._grouped_mm"]
    for name, ms in timings.items():
        tflops = flops / (ms * 1e-3) / 1e12
        print(f"{model:14s} {tokens:6d} {'skewed' if skewed else 'uniform':7s} {name:26s} {ms:9.3f} ms "
              f"{tflops:7.1f} TFLOP/s  {base / ms:5.2f}x torch._grouped_mm", file=sys.stderr)
        results.append({"model": model, "tokens": tokens, "routing": "skewed" if skewed else "uniform",
                        "kernel": name, "ms": ms, "tflops": tflops, "speedup_vs_grouped_mm": base / ms,
                        "max_relative_difference": diff})


def block_case(lib, tokens: int, results: list) -> None:
    from transformers import Qwen3MoeConfig
    from transformers.models.qwen3_moe.modeling_qwen3_moe import Qwen3MoeSparseMoeBlock

    cfg = Qwen3MoeConfig(hidden_size=2048, moe_intermediate_size=768, num_experts=128, num_experts_per_tok=8,
                         norm_topk_prob=True, num_hidden_layers=1, num_attention_heads=32, num_key_value_heads=4,
                         head_dim=128, intermediate_size=6144, vocab_size=151936)
    # A standalone block gets no experts implementation from a model; take transformers'
    # fastest on GPUs (its own torch grouped_mm path).
    cfg._experts_implementation = "grouped_mm"
    dev = torch.device("cuda")
    torch.manual_seed(tokens)
    block = Qwen3MoeSparseMoeBlock(cfg).to(device=dev, dtype=torch.bfloat16).eval()
    with torch.no_grad():
        for name, t in sorted(block.state_dict().items()):
            t.copy_(torch.randn(t.shape, device=dev) * 0.02)
    sd = block.state_dict()

    def host_bits(t: torch.Tensor):
        return t.detach().contiguous().view(torch.int16).cpu()

    router, gate_up, down = host_bits(sd["gate.weight"]), host_bits(sd["experts.gate_up_proj"]), host_bits(sd["experts.down_proj"])
    handle = lib.meshplan_block_create(cfg.to_json_string(use_diff=False).encode(), router.data_ptr(),
                                       gate_up.data_ptr(), down.data_ptr())
    if not handle:
        raise RuntimeError(lib.meshplan_last_error().decode())
    try:
        x = torch.randn(tokens, cfg.hidden_size, device=dev, dtype=torch.bfloat16)
        out = torch.empty_like(x)
        stream = ctypes.c_void_p(torch.cuda.current_stream().cuda_stream)

        def ours():
            check(lib, lib.meshplan_block_forward(handle, x.data_ptr(), tokens, out.data_ptr(), stream))

        with torch.no_grad():
            theirs = lambda: block(x.unsqueeze(0))  # noqa: E731
            expected = theirs()
            expected = expected[0] if isinstance(expected, tuple) else expected
            ours()
            diff = relative_difference(out, expected.reshape(out.shape))
            t_theirs, t_ours = median_ms(theirs), median_ms(ours)
        impl = getattr(cfg, "_experts_implementation", None)
        print(f"block Qwen3-30B-A3B {tokens:6d} transformers ({impl}) {t_theirs:9.3f} ms, meshplan {t_ours:9.3f} ms "
              f"({t_theirs / t_ours:5.2f}x), max relative difference {diff:.2e}", file=sys.stderr)
        results.append({"model": "Qwen3-30B-A3B", "tokens": tokens, "kernel": "block", "transformers_ms": t_theirs,
                        "transformers_experts_implementation": str(impl), "meshplan_ms": t_ours,
                        "speedup": t_theirs / t_ours, "max_relative_difference": diff})
    finally:
        lib.meshplan_block_destroy(handle)


def dry_run() -> int:
    """The script's own logic on the CPU with tiny shapes: routing, grouping, torch._grouped_mm's use."""
    E, k, H, I, tokens = 4, 2, 16, 8, 9
    x = torch.randn(tokens, H)
    gate_up, down = torch.randn(E, 2 * I, H), torch.randn(E, H, I)
    for skewed in (False, True):
        ids = routing(tokens, E, k, skewed, torch.device("cpu"))
        order, counts, offs, rows = grouped(x, ids, E, k)
        assert int(counts.sum()) == tokens * k and torch.equal(ids[order], torch.sort(ids, stable=True).values)
        reference = loop_experts(rows, counts, gate_up, down, I)
        try:
            got = torch_experts(rows, offs, gate_up, down, I)
        except (RuntimeError, NotImplementedError) as e:  # no CPU kernel in this PyTorch
            print(f"torch._grouped_mm on the CPU: {e}")
            continue
        print(f"skewed={skewed}: torch._grouped_mm against the loop: {relative_difference(got, reference):.2e}")
        assert relative_difference(got, reference) < 1e-4
    print("dry run: ok")
    return 0


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--bridge", help="path to libmeshplan_torch_bridge.so")
    ap.add_argument("--quick", action="store_true", help="4096 tokens only")
    ap.add_argument("--out", help="write the results as JSON here")
    ap.add_argument("--dry-run", action="store_true")
    args = ap.parse_args()
    if args.dry_run:
        return dry_run()
    if not args.bridge or not torch.cuda.is_available():
        sys.exit("needs --bridge and a CUDA device")
    lib = load_bridge(args.bridge)
    results: list = []
    tokens = [4096] if args.quick else [4096, 16384, 65536]
    with torch.no_grad():
        for model in SHAPES:
            for t in tokens:
                for skewed in (False, True):
                    try:
                        experts_case(lib, model, t, skewed, results)
                    except torch.cuda.OutOfMemoryError as e:
                        print(f"{model} {t}: skipped: out of memory", file=sys.stderr)
                        results.append({"model": model, "tokens": t, "skipped": str(e)[:200]})
                    torch.cuda.empty_cache()
        for t in tokens:
            block_case(lib, t, results)
    doc = {"benchmark": "torch", "device": torch.cuda.get_device_name(), "date": datetime.date.today().isoformat(),
           "torch": torch.__version__, "results": results}
    text = json.dumps(doc, indent=2)
    if args.out:
        open(args.out, "w").write(text + "\n")
    else:
        print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
