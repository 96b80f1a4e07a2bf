"""Training throughput of the tiny preset on CPU: steps per second from the latent cache vs from raw clips.

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/bench_train.py --steps 30
The GPU measurement of the 14B step (81 x 352 x 624, bf16, checkpointing) needs an H100-class GPU; run
with --preset wan2.1-fun-14b-inp on one (not done on the 2-core CPU machine).
"""

import argparse
import tempfile
import time
from pathlib import Path

import torch

from one4d.training import Trainer
from one4d.training.cache import cache_from_config
from one4d.training.testing import compose_train_config, write_synthetic_clips


def steps_per_second(overrides: list[str], steps: int) -> float:
    trainer = Trainer(compose_train_config(overrides + ["train.steps=2"])).setup()
    trainer.train()  # warm-up
    trainer.cfg.train.steps = 2 + steps
    started = time.perf_counter()
    trainer.train()
    return steps / (time.perf_counter() - started)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--steps", type=int, default=30)
    parser.add_argument("--frames", type=int, default=5)
    parser.add_argument("--size", type=int, default=32)
    args = parser.parse_args()
    folder = Path(tempfile.mkdtemp())
    clips = write_synthetic_clips(folder / "clips", count=4, num_frames=args.frames, size=args.size)
    common = ["experiment=tiny_cpu", "train.report_to=null", "train.progress_bar=false", "train.checkpoint_every=0",
              "train.log_every=0", f"data.num_frames={args.frames}", f"data.height={args.size}", f"data.width={args.size}"]
    cache = cache_from_config(compose_train_config(common + [f"data.roots=[{clips}]", f"run_dir={folder}/c", f"+cache_dir={folder}/cache"]))
    raw = steps_per_second(common + [f"data.roots=[{clips}]", f"run_dir={folder}/raw"], args.steps)
    cached = steps_per_second(common + [f"data.cache={cache}", f"run_dir={folder}/cached"], args.steps)
    print(f"tiny preset, {args.frames} frames at {args.size}x{args.size}, batch 1, {torch.get_num_threads()} thread(s)")
    print(f"raw clips : {raw:.2f} steps/s")
    print(f"cache     : {cached:.2f} steps/s  ({cached / raw:.1f}x)")


if __name__ == "__main__":
    main()
