#!/usr/bin/env python3
"""Golden gradients of the MoE-block fixtures, made by PyTorch autograd on transformers' own blocks.

For every fixture that tools/golden/make_fixtures.py makes, this rebuilds the same block
(same seeds, same weights, same hidden states; checked against the fixture's files), runs
it forward with autograd on, takes loss = sum(output * dy) with a seeded random dy of the
output's shape, and writes <out>/<name>/gradients.safetensors:

  grad_output                 dy, the output gradient [..., H] (the input's shape), float32
  hidden_states               d loss / d hidden_states, float32
  gate.weight, experts.gate_up_proj, experts.down_proj, shared_experts.*.weight
                              d loss / d parameter under transformers' fused names, float32
                              (the correction bias of DeepSeek-V3 is a buffer: no gradient)

Weights stored as bf16/f16 in a fixture are the fp32 values of the rounded weights, so these
are the fp32 gradients at the file's weights.

Run from the repository root, after make_fixtures.py:
    python tools/golden/make_gradients.py --out tests/data/golden
"""

from __future__ import annotations

import argparse
import os
import sys

import torch
import transformers
from safetensors.torch import load_file

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import make_fixtures as fx  # noqa: E402  (the fixtures' builders and byte-stable writer)

DY_SEED_OFFSET = 1_000_003


def check_same_as_fixture(d: str, block, hidden: torch.Tensor, hub_experts: bool) -> None:
    """The rebuilt block and input are exactly the fixture's (up to the file's storage type)."""
    stored = load_file(os.path.join(d, "block.safetensors"))
    sd = {k: v.detach().to(torch.float32) for k, v in block.state_dict().items()}
    if hub_experts:
        sd = fx.per_expert(sd)
    assert stored.keys() == sd.keys(), f"{d}: parameter names differ from the fixture"
    for k, v in sd.items():
        assert torch.equal(stored[k].to(torch.float32), v), f"{d}: {k} differs from the fixture"
    assert torch.equal(load_file(os.path.join(d, "input.safetensors"))["hidden_states"], hidden), f"{d}: input differs"


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", required=True, help="the fixtures' folder, e.g. tests/data/golden")
    args = ap.parse_args()

    torch.set_num_threads(1)
    torch.use_deterministic_algorithms(True)
    meta = {"torch": torch.__version__, "transformers": transformers.__version__,
            "made_by": "tools/golden/make_gradients.py"}
    jobs = [(f, None, (fx.T,), torch.float32, False) for f in fx.FAMILIES]
    jobs += [(v, make, shape, dtype, hub) for v, (_family, make, shape, dtype, hub) in fx.VARIANTS.items()]
    for name, make, shape, dtype, hub_experts in jobs:
        _cfg, block, hidden = fx.build(name, make, shape, dtype)
        d = os.path.join(args.out, name)
        check_same_as_fixture(d, block, hidden, hub_experts)

        x = hidden.clone().requires_grad_(True)
        out = block(x if x.dim() == 3 else x.unsqueeze(0)).reshape(hidden.shape)
        expected = load_file(os.path.join(d, "expected.safetensors"))["output"]
        assert torch.equal(out.detach(), expected), f"{name}: the forward differs from expected.safetensors"
        gen = torch.Generator().manual_seed(fx.SEEDS[name] + DY_SEED_OFFSET)
        dy = torch.randn(out.shape, generator=gen, dtype=torch.float32)
        (out * dy).sum().backward()

        grads = {"grad_output": dy.contiguous(), "hidden_states": x.grad.detach().contiguous()}
        for pname, p in sorted(block.named_parameters()):
            if p.grad is None:
                raise SystemExit(f"{name}: parameter {pname} got no gradient")
            grads[pname] = p.grad.detach().to(torch.float32).contiguous()
        fx.save_file(grads, os.path.join(d, "gradients.safetensors"), metadata=meta)
        print(f"[{name}] " + ", ".join(f"{k} {list(v.shape)}" for k, v in grads.items()))
    return 0


if __name__ == "__main__":
    sys.exit(main())
