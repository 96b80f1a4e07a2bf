"""Clips per second the training loader delivers (issue 3 performance).

Renders a few synthetic clips at the requested size once (kept under --root for later runs),
then measures (a) one sample read in the main process, broken into reading the clip folder
and the rest (re-expression, crop/resize, normalisation), and (b) a DataLoader with
--workers workers, batch size 1, from iterator creation to the last sample (worker start-up
included) and in steady state (after the first --workers samples).

    python benchmarks/bench_loader.py --frames 81 --height 352 --width 624 --workers 4 --samples 16
    python benchmarks/bench_loader.py --frames 5 --height 32 --width 32 --workers 0 --samples 64 --tiny-steps 20

--tiny-steps N also times N training steps of the tiny preset (experiment=tiny_cpu) on clips of
that size, data loading included, for comparison with the loader.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import torch
from torch.utils.data import DataLoader

from one4d.data.clip import read_clip
from one4d.data.dataset import ClipDataset
from one4d.data.synthetic import write_synthetic_dataset


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--root", default="/tmp/one4d_bench_clips")
    parser.add_argument("--num-clips", type=int, default=4)
    parser.add_argument("--frames", type=int, default=81)
    parser.add_argument("--height", type=int, default=352)
    parser.add_argument("--width", type=int, default=624)
    parser.add_argument("--workers", type=int, default=4)
    parser.add_argument("--samples", type=int, default=16)
    parser.add_argument("--tiny-steps", type=int, default=0)
    args = parser.parse_args()

    root = Path(args.root) / f"{args.frames}x{args.height}x{args.width}"
    results = {"frames": args.frames, "height": args.height, "width": args.width, "workers": args.workers}
    if len(list(root.glob("*/meta.json"))) < args.num_clips:
        start = time.perf_counter()
        write_synthetic_dataset(root, args.num_clips, args.frames, args.height, args.width)
        results["render_and_write_s_per_clip"] = (time.perf_counter() - start) / args.num_clips
    clip_bytes = sum(path.stat().st_size for path in next(root.iterdir()).iterdir() if path.is_file())
    results["clip_mb_on_disk"] = clip_bytes / 2**20

    dataset = ClipDataset(root, args.frames, args.height, args.width, seed=0, length=args.samples)
    folder = next(root.iterdir())
    read_clip(folder)  # warm the page cache and decoders
    start = time.perf_counter()
    read_clip(folder)
    results["read_clip_s"] = time.perf_counter() - start
    start = time.perf_counter()
    dataset[0]
    results["one_sample_main_process_s"] = time.perf_counter() - start

    loader = DataLoader(dataset, batch_size=1, num_workers=args.workers)
    stamps = []
    start = time.perf_counter()
    for batch in loader:
        assert batch["rgb"].shape == (1, 3, args.frames, args.height, args.width)
        stamps.append(time.perf_counter())
    results["loader_clips_per_s"] = len(stamps) / (stamps[-1] - start)
    steady = stamps[args.workers:] if len(stamps) > args.workers + 1 else stamps
    results["loader_steady_clips_per_s"] = (len(steady) - 1) / (steady[-1] - steady[0])
    results["torch_threads_main"] = torch.get_num_threads()
    if args.tiny_steps:
        results["tiny_train_step_s"] = time_tiny_steps(root, args.tiny_steps)
    print(json.dumps(results, indent=1))


def time_tiny_steps(root: Path, steps: int) -> float:
    """Seconds per optimiser step of the tiny preset on raw clips under ``root`` (after one warm-up run)."""
    from one4d.training import Trainer
    from one4d.training.testing import compose_train_config

    with tempfile.TemporaryDirectory() as run_dir:
        overrides = ["experiment=tiny_cpu", f"run_dir={run_dir}", "train.report_to=null", "train.progress_bar=false",
                     "train.checkpoint_every=0", "train.log_every=0", f"data.roots=[{root}]"]
        Trainer(compose_train_config(overrides + ["train.steps=2"])).setup().train()  # warm-up
        trainer = Trainer(compose_train_config(overrides + [f"train.steps={steps}"])).setup()
        start = time.perf_counter()
        trainer.train()
        return (time.perf_counter() - start) / steps


if __name__ == "__main__":
    main()
