#!/usr/bin/env python3
"""Golden AdamW losses for the whole-model fixtures.

For each family directory under tests/data/golden/models/ (written by make_models.py),
loads the checkpoint with transformers' AutoModelForCausalLM (float32, eager attention),
runs 3 steps of torch.optim.AdamW(lr=1e-2, betas=(0.9, 0.999), eps=1e-8,
weight_decay=0.01) on the fixture's batch and writes <dir>/adamw.safetensors:

  losses   f32 [3]   the loss before each step

Run from the repository root:
    python3 tools/golden/make_adamw.py --out tests/data/golden/models
"""

import argparse
import os

import torch
import transformers
from safetensors.torch import load_file, save_file

FAMILIES = ["qwen3", "qwen3_moe", "mixtral", "deepseek_v3"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", required=True)
    args = parser.parse_args()
    torch.set_num_threads(1)
    for family in FAMILIES:
        d = os.path.join(args.out, family)
        model = transformers.AutoModelForCausalLM.from_pretrained(d, dtype=torch.float32,
                                                                  attn_implementation="eager")
        model.train()
        batch = load_file(os.path.join(d, "input.safetensors"))
        opt = torch.optim.AdamW(model.parameters(), lr=1e-2, betas=(0.9, 0.999), eps=1e-8, weight_decay=0.01)
        losses = []
        for _ in range(3):
            opt.zero_grad()
            out = model(input_ids=batch["input_ids"], labels=batch["labels"])
            losses.append(out.loss.detach().clone())
            out.loss.backward()
            opt.step()
        save_file({"losses": torch.stack(losses).to(torch.float32)}, os.path.join(d, "adamw.safetensors"),
                  metadata={"torch": torch.__version__, "transformers": transformers.__version__})
        print(family, [float(x) for x in losses])


if __name__ == "__main__":
    main()
