#!/usr/bin/env python3
"""Make golden MoE-block fixtures with Hugging Face transformers' own modules.

For each family (qwen3_moe, mixtral, deepseek_v3) this builds transformers' own
sparse-MoE block class from a tiny config, fills it with seeded random float32
weights, runs it on seeded random hidden states and writes, under
<out>/<family>/:

  config.json          full transformers config (config.to_json_string(use_diff=False))
  block.safetensors    the block's state_dict, keys exactly as transformers names them
                       (no layer prefix), float32
  input.safetensors    hidden_states [T, H] float32
  expected.safetensors output [T, H] f32, router_logits [T, E] f32,
                       topk_ids [T, k] i64, topk_weights [T, k] f32

router_logits / topk_weights / topk_ids are the three outputs of the block's own
router submodule (`block.gate`, captured with a forward hook while the block
runs); `output` is the block's own forward output. Nothing here re-implements
the routing math; the script only checks that the routing has no near-ties.

Run from the repository root:
    python tools/golden/make_fixtures.py --out tests/data/golden
"""

from __future__ import annotations

import argparse
import json
import os
import struct
import sys

import torch
import transformers
from safetensors.torch import load_file, save

T = 16  # tokens
SEEDS = {"qwen3_moe": 1234, "mixtral": 2350, "deepseek_v3": 3456}
WEIGHT_STD = 0.1
BIAS_RANGE = 0.05  # DeepSeek e_score_correction_bias ~ U(-0.05, 0.05)
MIN_MARGIN = 1e-3  # smallest allowed gap at every top-k / top-group boundary


def save_file(tensors: dict, path: str, metadata: dict) -> None:
    """safetensors.torch.save_file, but byte-for-byte reproducible.

    The safetensors writer keeps __metadata__ in a hash map, so its key order
    (and thus the file bytes) changes from run to run. Re-emit the header with
    __metadata__ in the fixed order of `metadata`; tensor entries and data are
    kept exactly as the library laid them out."""
    blob = save(tensors, metadata=metadata)
    (n,) = struct.unpack("<Q", blob[:8])
    header = json.loads(blob[8 : 8 + n])
    header["__metadata__"] = dict(metadata)
    header = {"__metadata__": header.pop("__metadata__"), **header}
    hbytes = json.dumps(header, separators=(",", ":")).encode("utf-8")
    hbytes += b" " * (-len(hbytes) % 8)
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(hbytes)) + hbytes + blob[8 + n :])
    back = load_file(path)  # round-trip check
    assert back.keys() == tensors.keys() and all(torch.equal(back[k], tensors[k]) for k in tensors)


def make_qwen3_moe():
    from transformers import Qwen3MoeConfig
    from transformers.models.qwen3_moe.modeling_qwen3_moe import Qwen3MoeSparseMoeBlock

    cfg = Qwen3MoeConfig(
        vocab_size=64,
        hidden_size=32,
        intermediate_size=64,
        moe_intermediate_size=16,
        num_experts=8,
        num_experts_per_tok=2,
        norm_topk_prob=True,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        head_dim=8,
    )
    return cfg, Qwen3MoeSparseMoeBlock


def make_mixtral():
    from transformers import MixtralConfig
    from transformers.models.mixtral.modeling_mixtral import MixtralSparseMoeBlock

    cfg = MixtralConfig(
        vocab_size=64,
        hidden_size=32,
        intermediate_size=16,
        num_local_experts=8,
        num_experts_per_tok=2,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        head_dim=8,
    )
    return cfg, MixtralSparseMoeBlock


def make_deepseek_v3():
    from transformers import DeepseekV3Config
    from transformers.models.deepseek_v3.modeling_deepseek_v3 import DeepseekV3MoE

    cfg = DeepseekV3Config(
        vocab_size=64,
        hidden_size=32,
        intermediate_size=64,
        moe_intermediate_size=16,
        n_routed_experts=8,
        num_experts_per_tok=2,
        n_group=4,
        topk_group=2,
        routed_scaling_factor=2.5,
        n_shared_experts=1,
        first_k_dense_replace=0,
        norm_topk_prob=True,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=4,
        q_lora_rank=16,
        kv_lora_rank=8,
        qk_nope_head_dim=8,
        qk_rope_head_dim=8,
        v_head_dim=8,
    )
    return cfg, DeepseekV3MoE


FAMILIES = {
    "qwen3_moe": make_qwen3_moe,
    "mixtral": make_mixtral,
    "deepseek_v3": make_deepseek_v3,
}


# Variants: the configs and files an outside user has, at other sizes than the three above.
# Each names its family, a config change, the shape of the input (tokens, or batch x
# tokens), the storage type of the weights and whether the experts are stored one tensor
# per expert as on the hub. Weights stored as bf16/f16 are rounded first and the block runs
# in fp32 on the rounded values, so the expected output is the fp32 function of the file.
def make_qwen3_moe_odd():
    cfg, cls = make_qwen3_moe()
    cfg.hidden_size, cfg.moe_intermediate_size = 24, 10
    cfg.num_experts = cfg.num_local_experts = 12
    cfg.num_experts_per_tok, cfg.norm_topk_prob = 3, False
    return cfg, cls


def make_mixtral_batch():
    cfg, cls = make_mixtral()
    cfg.hidden_size, cfg.intermediate_size = 16, 8
    cfg.num_local_experts, cfg.num_experts_per_tok = 4, 2
    return cfg, cls


def make_deepseek_v3_lite():
    """The parts a DeepSeek-V3 config may lack: no shared experts, no low-rank query, one
    expert group, and transformers' default first_k_dense_replace (3) with 2 layers, so the
    model itself has only dense layers (the block is still DeepseekV3MoE(config))."""
    from transformers import DeepseekV3Config
    from transformers.models.deepseek_v3.modeling_deepseek_v3 import DeepseekV3MoE

    cfg = DeepseekV3Config(
        vocab_size=64,
        hidden_size=40,
        intermediate_size=64,
        moe_intermediate_size=12,
        n_routed_experts=16,
        num_experts_per_tok=6,
        n_group=1,
        topk_group=1,
        routed_scaling_factor=1.5,
        n_shared_experts=0,
        norm_topk_prob=False,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=4,
        q_lora_rank=None,
        kv_lora_rank=8,
        qk_nope_head_dim=8,
        qk_rope_head_dim=8,
        v_head_dim=8,
    )
    return cfg, DeepseekV3MoE


VARIANTS = {
    # name: (family, make, input shape, weight dtype, experts one tensor per expert)
    "qwen3_moe_odd": ("qwen3_moe", make_qwen3_moe_odd, (1, 31), torch.float16, True),
    "mixtral_batch": ("mixtral", make_mixtral_batch, (2, 5), torch.float32, False),
    "deepseek_v3_lite": ("deepseek_v3", make_deepseek_v3_lite, (1, 23), torch.bfloat16, False),
}
SEEDS.update({"qwen3_moe_odd": 4567, "mixtral_batch": 5678, "deepseek_v3_lite": 6789})


def _min_gap_at_k(values: torch.Tensor, k: int) -> float:
    """Smallest gap, over rows, between the k-th and (k+1)-th largest value."""
    s = torch.sort(values, dim=-1, descending=True).values
    return float((s[:, k - 1] - s[:, k]).min())


def check_no_ties(family: str, cfg, block, router_logits: torch.Tensor) -> dict:
    """Refuse fixtures whose routing sits on a near-tie (fragile for other implementations).

    Only used as a sanity check; the stored routing comes from transformers itself."""
    k = cfg.num_experts_per_tok
    logits = router_logits.double()
    margins = {}
    if family == "deepseek_v3":
        E, G, KG = cfg.n_routed_experts, cfg.n_group, cfg.topk_group
        c = logits.sigmoid() + block.gate.e_score_correction_bias.double()
        g = c.view(-1, G, E // G).topk(2, dim=-1).values.sum(-1)
        if KG < G:
            margins["group"] = _min_gap_at_k(g, KG)
        keep = torch.zeros_like(g).scatter_(1, g.topk(KG, dim=-1).indices, 1.0)
        keep = keep.unsqueeze(-1).expand(-1, G, E // G).reshape(-1, E).bool()
        margins["expert"] = _min_gap_at_k(c.masked_fill(~keep, float("-inf")), k)
    else:
        margins["expert"] = _min_gap_at_k(logits, k)  # softmax is monotone
    for name, m in margins.items():
        if not m > MIN_MARGIN:
            raise SystemExit(f"{family}: {name} top-k margin {m:.3g} <= {MIN_MARGIN}; change its seed")
    return margins


def build(name: str, make=None, shape=(T,), dtype=torch.float32):
    cfg, block_cls = (make or FAMILIES[name])()
    # Use the plain per-expert loop of the Experts class (no kernels, no hub code).
    cfg._experts_implementation = "eager"
    torch.manual_seed(SEEDS[name])
    block = block_cls(cfg).to(torch.float32).eval()
    # Re-initialise every parameter/buffer in a fixed (sorted-name) order: the
    # module's own init leaves torch.empty() storage and zero router weights.
    # Values are rounded to the storage type (the block still computes in fp32).
    with torch.no_grad():
        for name_, t in sorted(block.state_dict().items()):
            if name_.endswith("e_score_correction_bias"):
                t.copy_((torch.rand(t.shape) * 2.0 - 1.0) * BIAS_RANGE)
            else:
                t.copy_((torch.randn(t.shape) * WEIGHT_STD).to(dtype).to(torch.float32))
    hidden = torch.randn(*shape, cfg.hidden_size, dtype=torch.float32)
    return cfg, block, hidden


def run(block, hidden: torch.Tensor):
    captured = {}

    def hook(_mod, _inp, out):
        captured["out"] = out

    h = block.gate.register_forward_hook(hook)
    try:
        with torch.no_grad():
            batched = hidden if hidden.dim() == 3 else hidden.unsqueeze(0)  # blocks take [B, S, H]
            out = block(batched.clone())
    finally:
        h.remove()
    router_logits, topk_weights, topk_ids = captured["out"]
    return out.reshape(hidden.shape), router_logits, topk_weights, topk_ids


def per_expert(sd: dict) -> dict:
    """The hub's layout of the experts: experts.{i}.{gate,up,down}_proj.weight."""
    out = {k: v for k, v in sd.items() if not k.startswith("experts.")}
    gate_up, down = sd["experts.gate_up_proj"], sd["experts.down_proj"]
    inter = gate_up.shape[1] // 2
    for i in range(gate_up.shape[0]):
        out[f"experts.{i}.gate_proj.weight"] = gate_up[i, :inter].contiguous().clone()
        out[f"experts.{i}.up_proj.weight"] = gate_up[i, inter:].contiguous().clone()
        out[f"experts.{i}.down_proj.weight"] = down[i].contiguous().clone()
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", required=True, help="output folder, e.g. tests/data/golden")
    ap.add_argument("--families", nargs="*", default=list(FAMILIES), choices=list(FAMILIES))
    ap.add_argument("--variants", nargs="*", default=list(VARIANTS), choices=list(VARIANTS))
    args = ap.parse_args()

    torch.set_num_threads(1)
    torch.use_deterministic_algorithms(True)
    meta = {
        "torch": torch.__version__,
        "transformers": transformers.__version__,
        "made_by": "tools/golden/make_fixtures.py",
    }
    print(f"torch {torch.__version__}, transformers {transformers.__version__}")

    jobs = [(f, f, None, (T,), torch.float32, False) for f in args.families]
    jobs += [(v, *VARIANTS[v]) for v in args.variants]
    for name, family, make, shape, dtype, hub_experts in jobs:
        cfg, block, hidden = build(name, make, shape, dtype)
        out, logits, weights, ids = run(block, hidden)
        margins = check_no_ties(family, cfg, block, logits)

        d = os.path.join(args.out, name)
        os.makedirs(d, exist_ok=True)
        with open(os.path.join(d, "config.json"), "w", encoding="utf-8") as f:
            f.write(cfg.to_json_string(use_diff=False))

        sd = {k: v.detach().to(torch.float32).contiguous().clone() for k, v in block.state_dict().items()}
        # Stored as the variant says; the bias of DeepSeek's router is a float32 buffer.
        sd = {k: (v if k.endswith("e_score_correction_bias") else v.to(dtype)) for k, v in sd.items()}
        if hub_experts:
            sd = per_expert(sd)
        save_file(sd, os.path.join(d, "block.safetensors"), metadata=meta)
        save_file({"hidden_states": hidden.contiguous()}, os.path.join(d, "input.safetensors"), metadata=meta)
        expected = {
            "output": out.to(torch.float32).contiguous(),
            "router_logits": logits.to(torch.float32).contiguous(),
            "topk_ids": ids.to(torch.int64).contiguous(),
            "topk_weights": weights.to(torch.float32).contiguous(),
        }
        save_file(expected, os.path.join(d, "expected.safetensors"), metadata=meta)

        print(f"[{name}] {type(block).__name__} (router {type(block.gate).__name__}, "
              f"experts {type(block.experts).__name__})")
        for k, v in sd.items():
            print(f"  block    {k:40s} {list(v.shape)} {v.dtype}")
        print(f"  input    {'hidden_states':40s} {list(hidden.shape)} {hidden.dtype}")
        for k, v in expected.items():
            print(f"  expected {k:40s} {list(v.shape)} {v.dtype}")
        print(f"  min top-k margins: " + ", ".join(f"{n}={m:.4f}" for n, m in margins.items()))
        used = sorted(set(ids.flatten().tolist()))
        print(f"  experts used: {used}")
        if len(used) != block.experts.num_experts:
            raise SystemExit(f"{name}: not every expert is routed to; change its seed")
    return 0


if __name__ == "__main__":
    sys.exit(main())
