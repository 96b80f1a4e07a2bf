"""What a larger tiny model would cost: One4D (DLC) training-step time of the `demo` preset and wider / deeper variants.

One step = forward of both branches, backward, AdamW, at the shipped model's training shapes (batch 8, 3 x 12 x 16
latents, 512 text + 257 image context tokens), random weights. Ratios to the shipped size are what to read; one
CPU thread unless ``--threads`` says otherwise (``make tiny-model`` uses every CPU: compare a run with ``--threads 2``).

    .venv/bin/python benchmarks/bench_demo_size.py [--threads 2]
"""

from __future__ import annotations

import torch
from timing import best_of

from one4d.models.factory import build_model
from one4d.runtime import ArgumentParser, configure_cpu_threads, run_script

VARIANTS = {  # name: (base_overrides, LoRA rank); the shipped model is demo at rank 32
    "shipped (demo, rank 32)": ({}, 32),
    "rank 64": ({}, 64),
    "rank 128": ({}, 128),
    "8 layers": ({"num_layers": 8}, 32),
    "width 192 (6 heads, ffn 384)": ({"num_attention_heads": 6, "ffn_dim": 384, "added_kv_proj_dim": 192}, 32),
    "width 256 (8 heads, ffn 512)": ({"num_attention_heads": 8, "ffn_dim": 512, "added_kv_proj_dim": 256}, 32),
}


def step_seconds(base_overrides: dict, rank: int, batch: int = 8) -> tuple[float, int, int]:
    """Best of 3 steps after a warm-up step, total and trainable parameter counts."""
    torch.manual_seed(0)
    model = build_model("dlc", "demo", base_overrides=base_overrides, lora_rank=rank, num_links=4)
    trainable = model.trainable_parameters()
    optimizer = torch.optim.AdamW(trainable, lr=1e-3)
    rgb, xyz = torch.randn(batch, 36, 3, 12, 16), torch.randn(batch, 16, 3, 12, 16)
    timestep, text, image = torch.rand(batch) * 1000, torch.randn(batch, 512, 32), torch.randn(batch, 257, 32)

    def step():
        rgb_flow, xyz_flow = model(rgb, xyz, timestep, text, image)
        (rgb_flow.square().mean() + xyz_flow.square().mean()).backward()
        optimizer.step()
        optimizer.zero_grad()

    step()  # warm-up
    return best_of(step), sum(p.numel() for p in model.parameters()), sum(p.numel() for p in trainable)


def main() -> None:
    parser = ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=1)
    configure_cpu_threads(parser.parse_args().threads)  # the project's thread rule: a bad count is one line
    reference = None
    print("| variant | step (s) | vs shipped | parameters | trainable |\n|---|---|---|---|---|")
    for name, (overrides, rank) in VARIANTS.items():
        seconds, total, trainable = step_seconds(overrides, rank)
        reference = reference or seconds
        print(f"| {name} | {seconds:.3f} | {seconds / reference:.2f}x | {total / 1e6:.2f} M | {trainable / 1e6:.2f} M |", flush=True)


if __name__ == "__main__":
    run_script(main)  # one4d.runtime: bad input is one line and exit 2
