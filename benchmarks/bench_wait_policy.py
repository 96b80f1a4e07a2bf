"""The tiny-model build's steps with OpenMP's default waiting, with the build's longer spin (``GOMP_SPINCOUNT``, set by
``scripts/make_tiny_model.py``: one4d.runtime.spin_waiting_threads) and with ``OMP_WAIT_POLICY=ACTIVE``, alternating
the three in each round:

    .venv/bin/python benchmarks/bench_wait_policy.py --rounds 2 --threads 2

OpenMP reads these when torch loads it, so each measurement is a child process started with one of them. A child
times the VAE stage's training step (``build_tiny_vae`` at the shipped settings, batch 4 of 32 x 32 crops), the
transformer stages' steps (``tiny_base``, ``tiny_one4d`` on the shipped grid, as the recipe runs them, compiled;
random weights), then, with its OpenMP threads just used as after the build's training stages, the cache stage's
encoding of the clips in two processes (``+cache_workers=2``), per clip. Clips: synthetic, cached once with the
shipped tiny VAE (bench_text_padding's). Run it as the machine's only job."""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from one4d.runtime import SPIN_COUNT, WAIT_VARIABLES

SETTINGS = {"default": {}, "build": {"GOMP_SPINCOUNT": str(SPIN_COUNT)}, "ACTIVE": {"OMP_WAIT_POLICY": "ACTIVE"}}


def child(folder: Path, args) -> dict:
    """Seconds per step of each measured stage, in this process (its OpenMP policy is the one it started with)."""
    import torch

    torch.set_num_threads(args.threads)
    from bench_text_padding import COMPONENTS, stage_overrides
    from bench_train import steps_per_second

    from one4d.data.dataset import ClipDataset
    from one4d.training.tiny_model import build_tiny_vae, default_settings
    from one4d.training.vae import train_vae

    settings = default_settings()
    dataset = ClipDataset(folder / "clips", settings["num_frames"], settings["height"], settings["width"])
    videos = torch.stack([video for index in range(len(dataset)) for video in (dataset[index]["rgb"], dataset[index]["xyz"])])
    vae = build_tiny_vae(settings)
    options = dict(lr=settings["vae_lr"], batch_size=settings["vae_batch"], num_frames=settings["vae_frames"],
                   crop=tuple(settings["vae_crop"]), kl_weight=settings["vae_kl"], seed=0)
    train_vae(vae, videos, steps=2, **options)  # warm-up
    started = time.perf_counter()
    train_vae(vae, videos, steps=args.vae_steps, **options)
    seconds = {"vae": (time.perf_counter() - started) / args.vae_steps}
    for stage in args.stages:
        overrides = stage_overrides(stage, args.preset, folder, folder / "clips", folder / "cache")
        seconds[stage] = 1 / steps_per_second(overrides, args.steps)
    from one4d.training.cache import cache_from_config
    from one4d.training.testing import compose_train_config

    cfg = compose_train_config(["experiment=tiny_base", f"model.components={COMPONENTS}", f"data.roots=[{folder / 'clips'}]",
                                f"run_dir={tempfile.mkdtemp(dir=folder)}", f"+cache_dir={tempfile.mkdtemp(dir=folder)}",
                                "+cache_workers=2"])
    started = time.perf_counter()
    cache_from_config(cfg)
    seconds["cache, 2 processes"] = (time.perf_counter() - started) / args.clips
    return seconds


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--steps", type=int, default=10, help="transformer steps per measurement")
    parser.add_argument("--vae-steps", type=int, default=40)
    parser.add_argument("--clips", type=int, default=48)
    parser.add_argument("--stages", nargs="+", default=["tiny_base", "tiny_one4d"])
    parser.add_argument("--preset", default="demo_patch1", help="the shipped token grid")
    parser.add_argument("--child", default=None, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        print(json.dumps(child(Path(args.child), args)))
        return

    from bench_text_padding import COMPONENTS, stage_overrides, write_clips

    from one4d.training.cache import cache_from_config
    from one4d.training.testing import compose_train_config

    folder = Path(tempfile.mkdtemp())
    clips = write_clips(folder / "clips", args.clips)
    cache_from_config(compose_train_config(
        ["experiment=tiny_one4d", f"data.roots=[{clips}]", f"model.components={COMPONENTS}", f"run_dir={folder}/c",
         f"+cache_dir={folder}/cache"]))
    for stage in args.stages:  # writes the random base the One4D stage loads, once, before the children
        stage_overrides(stage, args.preset, folder, clips, folder / "cache")
    results = {name: [] for name in SETTINGS}
    for _ in range(args.rounds):
        for name, setting in SETTINGS.items():
            env = {key: value for key, value in os.environ.items() if key not in WAIT_VARIABLES}
            command = [sys.executable, __file__, "--child", str(folder), *sys.argv[1:]]
            run = subprocess.run(command, env={**env, **setting}, capture_output=True, text=True, check=True)
            results[name].append(json.loads(run.stdout.strip().splitlines()[-1]))
    print(f"{args.threads} thread(s), preset {args.preset}, {args.clips} clips, {args.rounds} alternating rounds; "
          f"seconds per step or clip, best round (slowest)")
    print(f"| measured | OpenMP default | GOMP_SPINCOUNT={SPIN_COUNT} (the build) | OMP_WAIT_POLICY=ACTIVE |")
    print("|---|---|---|---|")
    for key in results["default"][0]:
        cells = []
        for name in SETTINGS:
            values = [row[key] for row in results[name]]
            ratio = "" if name == "default" else f", {min(row[key] for row in results['default']) / min(values):.2f}x"
            cells.append(f"{min(values):.3f} ({max(values):.3f}){ratio}")
        print(f"| {key} | {' | '.join(cells)} |")

if __name__ == "__main__":
    main()
