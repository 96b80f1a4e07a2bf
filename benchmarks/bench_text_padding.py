"""Training steps of the tiny model's two transformer stages with the prompt padding collapsed (one4d.models.text_padding)
against Wan's stock attention over all 512 text rows, alternating the two in each round:

    .venv/bin/python benchmarks/bench_text_padding.py --steps 20 --rounds 2 --threads 2

Both ``make tiny-model`` transformer stages (``tiny_base``, ``tiny_one4d``: batch 8, 9 frames at 48 x 64, captions of
the synthetic world) on the shipped grid (``demo``, patch 1 x 2 x 2) and on one token per latent pixel
(``demo_patch1``). The weights are random (a step's time does not depend on them); the clips are 16 synthetic ones
cached with the shipped tiny VAE and encoders, so no build is needed.
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

import torch
from bench_train import steps_per_second

import one4d.models.text_padding as text_padding
from one4d.data.clip import write_clip
from one4d.data.synthetic import render_scene
from one4d.models import build_base_transformer
from one4d.training.cache import cache_from_config
from one4d.training.testing import compose_train_config

COMPONENTS = "data/checkpoints/tiny/base"


def write_clips(folder: Path, count: int = 16) -> Path:
    for index in range(count):
        scene = render_scene(index, num_frames=9, height=48, width=64)
        write_clip(folder / f"clip{index:03d}", scene.rgb, scene.pointmaps, scene.depth, scene.intrinsics,
                   scene.world_to_camera, {"caption": scene.caption}, rgb_format="png")
    return folder


def stage_overrides(stage: str, preset: str, folder: Path, clips: Path, cache: Path) -> list[str]:
    overrides = [f"experiment={stage}", f"data.roots=[{clips}]", f"data.cache={cache}", f"model.preset={preset}",
                 f"model.components={COMPONENTS}", f"run_dir={tempfile.mkdtemp(dir=folder)}", "train.log_every=0",
                 "train.checkpoint_every=0", "train.report_to=null", "train.progress_bar=false"]
    if stage == "tiny_one4d":  # the frozen base of this grid, random, as a diffusers folder
        base = folder / f"base_{preset}"
        if not base.exists():
            build_base_transformer(preset).save_pretrained(base)
        overrides.append(f"model.transformer={base}")
    return overrides


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--stages", nargs="+", default=["tiny_base", "tiny_one4d"])
    parser.add_argument("--presets", nargs="+", default=["demo", "demo_patch1"])
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    folder = Path(tempfile.mkdtemp())
    clips = write_clips(folder / "clips")
    cache = cache_from_config(compose_train_config(
        ["experiment=tiny_one4d", f"data.roots=[{clips}]", f"model.components={COMPONENTS}", f"run_dir={folder}/c",
         f"+cache_dir={folder}/cache"]))
    kept_rows = text_padding.kept_text_rows
    print(f"batch 8, 9 frames at 48 x 64, {args.threads} thread(s), {args.steps} steps x {args.rounds} rounds, "
          f"alternating; seconds per step (best round)")
    print("| stage | preset | all 512 text rows | padding collapsed | speed-up |")
    print("|---|---|---|---|---|")
    for stage in args.stages:
        for preset in args.presets:
            overrides = stage_overrides(stage, preset, folder, clips, cache)
            seconds = {"stock": [], "collapsed": []}
            for _ in range(args.rounds):
                for name in seconds:
                    text_padding.kept_text_rows = (lambda text: text.shape[1]) if name == "stock" else kept_rows
                    seconds[name].append(1 / steps_per_second(overrides, args.steps))
            text_padding.kept_text_rows = kept_rows
            stock, collapsed = min(seconds["stock"]), min(seconds["collapsed"])
            print(f"| {stage} | {preset} | {stock:.3f} | {collapsed:.3f} | {stock / collapsed:.2f}x |", flush=True)


if __name__ == "__main__":
    main()
