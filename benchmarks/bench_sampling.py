"""Sampling speed on CPU: seconds per denoising step, and one CFG+DLC step against one plain base forward.

    .venv/bin/python benchmarks/bench_sampling.py            # tiny preset + 1.3B width with 2 layers
    .venv/bin/python benchmarks/bench_sampling.py --threads 2 --repeats 3

1. tiny preset through One4DPipeline (5 frames x 32 x 32 and 17 x 64 x 64): the time of a call with
   S2 steps minus one with S1 steps, over S2 - S1, so encoding and decoding cancel out.
2. 1.3B width (12 heads x 128, ffn 8960) with 2 layers at 9 frames x 128 x 128 (192 tokens), random
   weights: one batched CFG+DLC forward (batch 2, two branches) against one plain diffusers
   WanTransformer3DModel forward (batch 1, same tokens). The parts are 2 (CFG) x 2 (branches) base
   forwards, so the goal is a ratio of at most 4.
A GPU run of the 14B shape (50 steps, time and peak memory, with and without offload) needs a CUDA device.
"""

from __future__ import annotations

import argparse

import numpy as np
import torch

from one4d.models import build_model
from one4d.models.presets import TEXT_TOKENS, build_base_transformer
from one4d.pipeline import load_pipeline
from timing import best_of


def tiny_step_seconds(frames: int, size: int, repeats: int, steps=(2, 12)) -> float:
    pipe = load_pipeline()
    images = (np.random.default_rng(0).random((1, size, size, 3)) * 255).astype(np.uint8)

    def call(count):
        return lambda: pipe(images, [0], frames, prompt="a car", num_inference_steps=count, output_type="latent",
                            generator=torch.Generator().manual_seed(0), progress=False)

    call(1)()  # warm-up
    return (best_of(call(steps[1]), repeats) - best_of(call(steps[0]), repeats)) / (steps[1] - steps[0])


@torch.no_grad()
def width_ratio(preset: str, layers: int, frames: int, size: int, repeats: int) -> dict:
    torch.manual_seed(0)
    base = build_base_transformer(preset, num_layers=layers).eval()
    config = base.config
    f, h, w = (frames - 1) // 4 + 1, size // 8, size // 8
    text = torch.randn(1, TEXT_TOKENS, config.text_dim)
    image = torch.randn(1, 257, config.image_dim)
    timestep = torch.full((1,), 500.0)
    plain_input = torch.randn(1, 36, f, h, w)
    plain = best_of(lambda: base(plain_input, timestep, text, image, return_dict=False), repeats)

    model = build_model("dlc", preset, base_overrides={"num_layers": layers}, lora_rank=64).eval()
    rgb_input, xyz_input = torch.randn(2, 36, f, h, w), torch.randn(2, 16, f, h, w)
    joint = best_of(lambda: model(rgb_input, xyz_input, timestep.expand(2), text.expand(2, -1, -1), image.expand(2, -1, -1)), repeats)
    tokens = f * (h // 2) * (w // 2)
    return {"tokens": tokens, "plain_s": plain, "cfg_dlc_s": joint, "ratio": joint / plain}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    for frames, size in ((5, 32), (17, 64)):
        seconds = tiny_step_seconds(frames, size, args.repeats)
        print(f"tiny preset, {frames} x {size} x {size}, CFG 6 + DLC: {seconds * 1000:.1f} ms per denoising step")
    result = width_ratio("wan2.1-fun-1.3b-inp", 2, 9, 128, args.repeats)
    print(
        f"1.3B width, 2 layers, {result['tokens']} tokens: plain base forward {result['plain_s'] * 1000:.0f} ms, "
        f"CFG+DLC step {result['cfg_dlc_s'] * 1000:.0f} ms, ratio {result['ratio']:.2f} (parts: 4 base forwards)"
    )
    print(f"(best of {args.repeats} runs; torch {torch.__version__}, {args.threads} threads)")


if __name__ == "__main__":
    main()
